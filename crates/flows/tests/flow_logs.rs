//! Flow log lines as users meet them: what the gateway writes, AWS default-format logs, S3
//! deliveries with a header line and a custom format, NODATA/SKIPDATA rows, and broken lines
//! with the exact message a user would see.

use std::net::IpAddr;

use sumun_flows::{
    parse_line, Action, Field, FlowParseError, FlowRecord, Format, FormatError, LogStatus,
    ReadError, Reader,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The record the gateway writes when a connection to listener `pg` closes.
fn gateway_record() -> FlowRecord {
    FlowRecord {
        version: 2,
        account_id: "edge-1".into(),
        interface_id: "pg".into(),
        srcaddr: ip("10.0.3.17"),
        dstaddr: ip("10.0.0.5"),
        srcport: 51544,
        dstport: 5432,
        protocol: 6,
        packets: 38,
        bytes: 12877,
        start: 1_717_401_600,
        end: 1_717_401_642,
        action: Action::Accept,
        log_status: LogStatus::Ok,
    }
}

#[test]
fn gateway_record_golden_line() {
    let golden =
        "2 edge-1 pg 10.0.3.17 10.0.0.5 51544 5432 6 38 12877 1717401600 1717401642 ACCEPT OK";
    let record = gateway_record();
    assert_eq!(record.to_string(), golden);

    let mut out = String::from("prefix|");
    record.write_line(&mut out);
    assert_eq!(out, format!("prefix|{golden}"));

    assert_eq!(parse_line(golden), Ok(record));
}

#[test]
fn reject_and_ipv6_records() {
    let reject = FlowRecord {
        srcaddr: ip("2001:db8:7::42"),
        dstaddr: ip("2001:db8::5"),
        packets: 1,
        bytes: 0,
        end: 1_717_401_600,
        action: Action::Reject,
        ..gateway_record()
    };
    let line =
        "2 edge-1 pg 2001:db8:7::42 2001:db8::5 51544 5432 6 1 0 1717401600 1717401600 REJECT OK";
    assert_eq!(reject.to_string(), line);
    assert_eq!(parse_line(line), Ok(reject));
}

/// Lines shaped like AWS's own default-format records (values made up).
const AWS_DEFAULT: &[&str] = &[
    "2 210987654321 eni-0b2c3d4e5f6a7b8c9 10.20.1.15 10.20.2.40 51234 5432 6 41 18234 1717401600 1717401660 ACCEPT OK",
    "2 210987654321 eni-0b2c3d4e5f6a7b8c9 198.51.100.23 10.20.2.40 44321 22 6 1 60 1717401600 1717401660 REJECT OK",
    "2 210987654321 eni-0b2c3d4e5f6a7b8c9 10.20.2.40 10.20.0.2 0 0 1 4 336 1717401600 1717401660 ACCEPT OK",
    "2 210987654321 eni-0b2c3d4e5f6a7b8c9 10.20.2.40 10.20.0.2 53011 53 17 2 148 1717401600 1717401660 ACCEPT OK",
    "2 210987654321 eni-0b2c3d4e5f6a7b8c9 - - - - - - - 1717401660 1717401720 - NODATA",
    "2 210987654321 eni-0b2c3d4e5f6a7b8c9 - - - - - - - 1717401720 1717401780 - SKIPDATA",
];

#[test]
fn aws_default_lines_round_trip() {
    for line in AWS_DEFAULT {
        let record = parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(record.to_string(), *line);
    }
}

#[test]
fn aws_default_fields_are_read() {
    let icmp = parse_line(AWS_DEFAULT[2]).expect("icmp line");
    assert_eq!((icmp.protocol, icmp.srcport, icmp.dstport), (1, 0, 0));

    let reject = parse_line(AWS_DEFAULT[1]).expect("reject line");
    assert_eq!(reject.action, Action::Reject);
    assert_eq!(reject.srcaddr, ip("198.51.100.23"));
    assert_eq!((reject.packets, reject.bytes), (1, 60));

    let nodata = parse_line(AWS_DEFAULT[4]).expect("nodata line");
    assert_eq!(nodata.log_status, LogStatus::NoData);
    assert_eq!(nodata.interface_id, "eni-0b2c3d4e5f6a7b8c9");
    assert_eq!((nodata.start, nodata.end), (1_717_401_660, 1_717_401_720));
    assert_eq!((nodata.packets, nodata.bytes), (0, 0));

    assert_eq!(
        parse_line(AWS_DEFAULT[5]).expect("skipdata").log_status,
        LogStatus::SkipData
    );
}

#[test]
fn malformed_lines_give_clear_errors() {
    let ok = "2 edge-1 pg 10.0.3.17 10.0.0.5 51544 5432 6 38 12877 1717401600 1717401642 ACCEPT OK";
    let with = |i: usize, v: &str| {
        let mut f: Vec<&str> = ok.split(' ').collect();
        f[i] = v;
        f.join(" ")
    };
    let cases = [
        ("".to_string(), "empty flow log line"),
        ("   ".to_string(), "empty flow log line"),
        (
            "2 edge-1 pg 10.0.3.17".to_string(),
            "expected 14 fields, found 4",
        ),
        (format!("{ok} extra"), "expected 14 fields, found 15"),
        (
            with(0, "two"),
            "invalid version 'two': expected a number from 0 to 255",
        ),
        (
            with(3, "10.0.3"),
            "invalid srcaddr '10.0.3': expected an IP address",
        ),
        (
            with(4, "db.internal"),
            "invalid dstaddr 'db.internal': expected an IP address",
        ),
        (
            with(5, "70000"),
            "invalid srcport '70000': expected a port from 0 to 65535",
        ),
        (
            with(6, "+5432"),
            "invalid dstport '+5432': expected a port from 0 to 65535",
        ),
        (
            with(7, "tcp"),
            "invalid protocol 'tcp': expected a number from 0 to 255",
        ),
        (
            with(8, "-3"),
            "invalid packets '-3': expected an unsigned integer",
        ),
        (
            with(9, "99999999999999999999999"),
            "invalid bytes '99999999999999999999999': expected an unsigned integer",
        ),
        (
            with(12, "ALLOW"),
            "invalid action 'ALLOW': expected ACCEPT or REJECT",
        ),
        (
            with(12, "accept"),
            "invalid action 'accept': expected ACCEPT or REJECT",
        ),
        (
            with(13, "FINE"),
            "invalid log-status 'FINE': expected OK, NODATA or SKIPDATA",
        ),
        (
            with(13, "-"),
            "invalid log-status '-': expected OK, NODATA or SKIPDATA",
        ),
        (
            with(3, "-"),
            "srcaddr is '-' in a record whose log-status is OK",
        ),
        (
            with(12, "-"),
            "action is '-' in a record whose log-status is OK",
        ),
        (
            with(3, &"9".repeat(100)),
            "invalid srcaddr '9999999999999999999999999999999999999999...': expected an IP address",
        ),
    ];
    for (line, message) in cases {
        let e = parse_line(&line).expect_err(&line);
        assert_eq!(e.to_string(), message, "line: {line}");
    }
    assert_eq!(
        parse_line("2 a b - - - - - - - 1 2 - OK"),
        Err(FlowParseError::Missing { field: "srcaddr" })
    );
}

/// An S3 delivery with a custom format: header line first, fields reordered, extra fields.
const S3_CUSTOM: &str = "\
version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags log-status
5 vpc-0f1e2d3c4b5a69788 subnet-0aa11bb22cc33dd44 i-0123abcd4567ef890 eni-0b2c3d4e5f6a7b8c9 210987654321 IPv4 10.20.1.15 10.20.2.40 51234 5432 10.20.1.15 10.20.2.40 6 18234 41 1717401600 1717401660 ACCEPT 19 OK
5 vpc-0f1e2d3c4b5a69788 subnet-0aa11bb22cc33dd44 i-0123abcd4567ef890 eni-0b2c3d4e5f6a7b8c9 210987654321 IPv4 10.20.3.9 10.20.2.40 38211 443 203.0.113.77 10.20.2.40 6 5120 12 1717401600 1717401660 ACCEPT 3 OK
5 vpc-0f1e2d3c4b5a69788 subnet-0aa11bb22cc33dd44 - eni-0c3d4e5f6a7b8c9d0 210987654321 - - - - - - - - - - 1717401600 1717401660 - - NODATA
";

#[test]
fn reader_follows_a_header_line_and_keeps_extra_fields() {
    let flows: Vec<_> = Reader::new(S3_CUSTOM.as_bytes())
        .collect::<Result<_, _>>()
        .expect("valid custom-format file");
    assert_eq!(flows.len(), 3);

    let first = &flows[0];
    assert_eq!(first.record.version, 5);
    assert_eq!(first.record.account_id, "210987654321");
    assert_eq!(first.record.interface_id, "eni-0b2c3d4e5f6a7b8c9");
    assert_eq!(
        (first.record.srcaddr, first.record.dstport),
        (ip("10.20.1.15"), 5432)
    );
    // bytes comes before packets in this format; they must not be swapped.
    assert_eq!((first.record.packets, first.record.bytes), (41, 18234));
    assert_eq!(first.extra("vpc-id"), Some("vpc-0f1e2d3c4b5a69788"));
    assert_eq!(first.extra("tcp-flags"), Some("19"));
    assert_eq!(first.extra("type"), Some("IPv4"));
    assert_eq!(
        first.extra("srcaddr"),
        None,
        "default fields live in the record"
    );

    // Behind a NAT or load balancer the packet's source differs from the interface's view.
    assert_eq!(flows[1].extra("pkt-srcaddr"), Some("203.0.113.77"));

    let nodata = &flows[2];
    assert_eq!(nodata.record.log_status, LogStatus::NoData);
    assert_eq!(nodata.extra("instance-id"), Some("-"));
    assert_eq!(nodata.extra("tcp-flags"), Some("-"));
}

#[test]
fn reader_can_ignore_extra_fields() {
    let flows: Vec<_> = Reader::new(S3_CUSTOM.as_bytes())
        .ignore_extra_fields()
        .collect::<Result<_, _>>()
        .expect("valid custom-format file");
    assert!(flows.iter().all(|f| f.extra.is_empty()));
    assert_eq!(flows[0].record.bytes, 18234);
}

#[test]
fn reader_reads_concatenated_files_with_different_headers() {
    let default_header = Format::default_v2().to_string();
    let input = format!(
        "{default_header}\r\n{}\r\n\r\n{S3_CUSTOM}{}\n{}\n",
        AWS_DEFAULT[0],
        "version srcaddr dstaddr action log_status",
        "3 10.1.1.1 10.2.2.2 REJECT OK"
    );
    let mut reader = Reader::new(input.as_bytes());
    let flows: Vec<_> = reader.by_ref().collect::<Result<_, _>>().expect("valid");
    assert_eq!(flows.len(), 5);
    assert_eq!(
        flows[0].record,
        parse_line(AWS_DEFAULT[0]).expect("default")
    );
    assert_eq!(flows[1].extra("vpc-id"), Some("vpc-0f1e2d3c4b5a69788"));
    let last = &flows[4].record;
    assert_eq!(
        (last.version, last.action, last.dstaddr),
        (3, Action::Reject, ip("10.2.2.2"))
    );
    // Fields the format leaves out keep their blank values.
    assert_eq!(
        (last.account_id.as_str(), last.srcport, last.bytes),
        ("", 0, 0)
    );
    assert_eq!(
        reader.format().to_string(),
        "version srcaddr dstaddr action log-status"
    );
}

#[test]
fn reader_reports_bad_lines_with_their_number_and_goes_on() {
    let input = format!(
        "{}\n2 edge-1 pg 10.0.3.17 nowhere 1 2 6 1 1 1 2 ACCEPT OK\n@\n{}\n",
        AWS_DEFAULT[0], AWS_DEFAULT[1]
    );
    let mut bytes = input.into_bytes();
    // Line 3 becomes a byte that is not UTF-8.
    let at = bytes.iter().position(|&b| b == b'@').expect("marker");
    bytes[at] = 0xff;

    let results: Vec<_> = Reader::new(&bytes[..]).collect();
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().map(|_| ()).map_err(ToString::to_string),
        Err("line 2: invalid dstaddr 'nowhere': expected an IP address".to_string())
    );
    assert!(matches!(results[2], Err(ReadError::NotUtf8 { line: 3 })));
    assert_eq!(
        results[3].as_ref().expect("line 4").record.action,
        Action::Reject
    );
}

#[test]
fn reader_skips_overlong_lines_without_buffering_them() {
    let mut input = vec![b'9'; sumun_flows::MAX_LINE * 3];
    input.push(b'\n');
    input.extend_from_slice(AWS_DEFAULT[0].as_bytes());
    let results: Vec<_> = Reader::new(&input[..]).collect();
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0].as_ref().map(|_| ()).map_err(ToString::to_string),
        Err(format!(
            "line 1: longer than {} bytes",
            sumun_flows::MAX_LINE
        ))
    );
    assert!(
        results[1].is_ok(),
        "the line after is read: {:?}",
        results[1]
    );
}

#[test]
fn reader_reads_what_the_gateway_writes() {
    let mut log = String::new();
    for record in [
        gateway_record(),
        FlowRecord {
            action: Action::Reject,
            ..gateway_record()
        },
    ] {
        record.write_line(&mut log);
        log.push('\n');
    }
    let flows: Vec<_> = Reader::new(log.as_bytes())
        .collect::<Result<_, _>>()
        .expect("valid");
    assert_eq!(flows[0].record, gateway_record());
    assert_eq!(flows[1].record.action, Action::Reject);
}

#[test]
fn headers_are_told_from_records() {
    assert!(Format::is_header(&Format::default_v2().to_string()));
    assert!(Format::is_header("version account_id interface_id srcaddr"));
    assert!(Format::is_header("${version} ${vpc-id} ${srcaddr}"));
    assert!(Format::is_header("vpc-id custom-thing"));
    assert!(
        !Format::is_header("custom-thing other-thing"),
        "no known name"
    );
    assert!(!Format::is_header(AWS_DEFAULT[0]));
    assert!(!Format::is_header(
        "vpc-0f1e2d3c4b5a69788 ingress ACCEPT OK"
    ));
    assert!(!Format::is_header(""));
}

#[test]
fn bad_headers_are_reported() {
    assert_eq!(
        Format::from_header("version srcaddr srcaddr"),
        Err(FormatError::Duplicate("srcaddr".into()))
    );
    assert_eq!(
        Format::from_header("version log_status log-status").map_err(|e| e.to_string()),
        Err("field 'log-status' appears twice in flow log header".into())
    );
    assert_eq!(
        Format::from_header("version Src").map_err(|e| e.to_string()),
        Err("invalid field name 'Src' in flow log header".into())
    );
    assert_eq!(Format::from_header("  "), Err(FormatError::Empty));

    let input = "version srcaddr srcaddr vpc-id\n";
    let results: Vec<_> = Reader::new(input.as_bytes()).collect();
    assert_eq!(
        results[0].as_ref().map(|_| ()).map_err(ToString::to_string),
        Err("line 1: field 'srcaddr' appears twice in flow log header".to_string())
    );
}

#[test]
fn field_names() {
    assert_eq!(Field::from_name("log_status"), Ok(Field::LogStatus));
    assert_eq!(
        Field::from_name("pkt_srcaddr"),
        Ok(Field::Other("pkt-srcaddr".into()))
    );
    assert_eq!(Field::LogStatus.name(), "log-status");
    let custom = Format::new(vec![Field::Start, Field::Other("tcp-flags".into())]).expect("format");
    assert_eq!(custom.to_string(), "start tcp-flags");
    // Without log-status, `-` is accepted anywhere: nothing says the record has data.
    let flow = custom.parse("- 2").expect("line");
    assert_eq!((flow.record.start, flow.extra("tcp-flags")), (0, Some("2")));
}

/// The fast path: one `Flow` reused for every record; a header switching the format drops the
/// old format's extra fields; tabs, repeated spaces and CRLF separate fields as spaces do.
#[test]
fn read_into_reuses_one_flow_across_format_switches() {
    let text = "version srcaddr dstaddr action log-status tcp-flags\n\
                2 10.0.0.1 10.0.0.2 ACCEPT OK 2\n\
                version srcaddr dstaddr action log-status vpc-id\n\
                2 10.0.0.3 10.0.0.4 REJECT OK vpc-1\n\
                2\t10.0.0.5  10.0.0.6 ACCEPT OK vpc-2\r\n";
    let mut reader = Reader::new(text.as_bytes());
    let mut flow = sumun_flows::Flow::default();
    let mut seen = Vec::new();
    while let Some(result) = reader.read_into(&mut flow) {
        result.expect("valid line");
        seen.push(flow.clone());
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].extra("tcp-flags"), Some("2"));
    assert_eq!(seen[1].extra("tcp-flags"), None);
    assert_eq!(seen[1].extra("vpc-id"), Some("vpc-1"));
    assert_eq!(seen[1].record.action, Action::Reject);
    assert_eq!(seen[2].record.srcaddr, ip("10.0.0.5"));
    assert_eq!(seen[2].extra("vpc-id"), Some("vpc-2"));
    // The iterator gives the same records.
    let iterated: Vec<_> = Reader::new(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("valid lines");
    assert_eq!(iterated, seen);
}
