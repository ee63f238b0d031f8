use super::*;

fn startup_bytes(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

#[test]
fn startup_round_trip_through_the_writer() {
    let mut w = Writer::new();
    w.startup(&[
        ("user", "alice"),
        ("database", "app"),
        ("application_name", "psql"),
    ]);
    let (packet, used) = decode_startup(&w.buf).expect("valid").expect("complete");
    assert_eq!(used, w.buf.len());
    let StartupPacket::Startup(s) = packet else {
        panic!("not a startup: {packet:?}")
    };
    assert_eq!(s.version, PROTOCOL_3_0);
    assert_eq!(s.param("user"), Some("alice"));
    assert_eq!(s.param("database"), Some("app"));
    assert_eq!(s.param("application_name"), Some("psql"));
    assert_eq!(s.param("options"), None);
}

#[test]
fn startup_packets_arrive_in_pieces() {
    let full = startup_bytes(PROTOCOL_3_0, &[("user", "bob")]);
    for cut in 0..full.len() {
        assert_eq!(decode_startup(&full[..cut]), Ok(None), "cut at {cut}");
    }
    assert!(decode_startup(&full).expect("valid").is_some());
}

#[test]
fn special_requests() {
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    assert_eq!(
        decode_startup(&ssl),
        Ok(Some((StartupPacket::SslRequest, 8)))
    );
    let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    assert_eq!(
        decode_startup(&gss),
        Ok(Some((StartupPacket::GssEncRequest, 8)))
    );
    let mut w = Writer::new();
    w.cancel_request(42, 0xdead_beef);
    assert_eq!(
        decode_startup(&w.buf),
        Ok(Some((
            StartupPacket::Cancel {
                process_id: 42,
                secret_key: 0xdead_beef
            },
            16
        )))
    );
}

#[test]
fn hostile_startup_packets_are_errors() {
    // A 2 GiB length is refused before anything is read or allocated.
    assert_eq!(
        decode_startup(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]),
        Err(PgError::BadStartupLength(0x7fff_ffff))
    );
    assert_eq!(
        decode_startup(&[0, 0, 0, 3]),
        Err(PgError::BadStartupLength(3))
    );
    assert!(matches!(
        decode_startup(&startup_bytes(2 << 16, &[])),
        Err(PgError::UnsupportedProtocol { major: 2, minor: 0 })
    ));
    // Unterminated parameter list.
    let mut bad = startup_bytes(PROTOCOL_3_0, &[("user", "x")]);
    bad.pop();
    let len = bad.len() as u32;
    bad[..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(
        decode_startup(&bad),
        Err(PgError::MalformedStartup(_))
    ));
    // Name without a value.
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0");
    let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    pkt.extend_from_slice(&body);
    assert!(decode_startup(&pkt).is_err());
    // Cancel with a short body.
    let short = [0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1];
    assert!(decode_startup(&short).is_err());
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20_000 {
        let len = rng.usize(0..64);
        let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if len >= 4 && rng.bool() {
            let l = (len as u32).to_be_bytes();
            b[..4].copy_from_slice(&l);
        }
        let _ = decode_startup(&b);
        let _ = message(&b, 1 << 20);
        let _ = error_fields(&b);
        let _ = command_rows(&b);
        let _ = sasl_initial_response(&b);
        let _ = parse_message(&b);
        let _ = bind_message(&b);
    }
}

#[test]
fn typed_message_framing() {
    let mut w = Writer::new();
    w.query("select 1");
    w.terminate();
    let (m, used) = message(&w.buf, 1024).expect("valid").expect("whole");
    assert_eq!(m.tag, b'Q');
    assert_eq!(m.body, b"select 1\0");
    let (m2, used2) = message(&w.buf[used..], 1024)
        .expect("valid")
        .expect("whole");
    assert_eq!(
        (m2.tag, m2.body, used + used2),
        (b'X', &b""[..], w.buf.len())
    );
    assert_eq!(message(&w.buf[..used - 1], 1024), Ok(None));
    // Length field under 4 or over the limit.
    assert!(matches!(
        header(&[b'Q', 0, 0, 0, 3], 1024),
        Err(PgError::BadLength { len: 3, .. })
    ));
    let err = header(&[b'Q', 0x7f, 0xff, 0xff, 0xff], 1 << 20).expect_err("too big");
    assert_eq!(
        err.to_string(),
        "message length 2147483647 for 'Q' is out of range (4..=1048576)"
    );
}

#[test]
fn errors_and_command_tags() {
    let mut w = Writer::new();
    w.error(
        "FATAL",
        "28P01",
        "password authentication failed for user \"x\"",
    );
    let (m, _) = message(&w.buf, 1024).expect("valid").expect("whole");
    assert_eq!(m.tag, b'E');
    let f = error_fields(m.body);
    assert_eq!(f.severity, "FATAL");
    assert_eq!(f.code, "28P01");
    assert_eq!(f.message, "password authentication failed for user \"x\"");
    assert_eq!(command_rows(b"SELECT 5\0"), Some(5));
    assert_eq!(command_rows(b"INSERT 0 3\0"), Some(3));
    assert_eq!(command_rows(b"BEGIN\0"), None);
    assert_eq!(command_rows(b"COPY 10\0"), Some(10));
}

#[test]
fn sasl_and_parse_bodies() {
    let mut w = Writer::new();
    w.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc");
    let (m, _) = message(&w.buf, 1024).expect("valid").expect("whole");
    assert_eq!(
        sasl_initial_response(m.body),
        Ok((&b"SCRAM-SHA-256"[..], &b"n,,n=,r=abc"[..]))
    );
    assert!(sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x09abc").is_err());
    assert_eq!(
        parse_message(b"s1\0select $1\0\0\0"),
        Ok((&b"s1"[..], &b"select $1"[..], &b"\0\0"[..]))
    );
    assert_eq!(
        bind_message(b"\0s1\0rest"),
        Ok((&b""[..], &b"s1"[..], &b"rest"[..]))
    );
}

#[test]
fn rows_for_the_admin_console() {
    let mut w = Writer::new();
    w.row_description(&["a", "b"]);
    w.data_row(&[Some("1"), None]);
    w.command_complete("SHOW");
    w.ready_for_query(b'I');
    let mut at = 0;
    let mut tags = Vec::new();
    while let Some((m, used)) = message(&w.buf[at..], 1024).expect("valid") {
        tags.push(m.tag);
        at += used;
    }
    assert_eq!(tags, b"TDCZ");
    assert_eq!(at, w.buf.len());
}
