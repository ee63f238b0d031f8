use super::codec::*;
use super::flags::*;
use super::generic::*;
use super::handshake::*;
use super::packet::*;
use super::response::*;
use super::stmt::*;

fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_packet(&mut out, seq, payload);
    out
}

#[test]
fn one_packet_is_borrowed_and_incomplete_ones_wait() {
    let wire = frame(3, b"\x03select 1");
    assert_eq!(&wire[..4], &[9, 0, 0, 3]);
    for cut in 0..wire.len() {
        assert_eq!(
            decode_payload(&wire[..cut], DEFAULT_MAX_PAYLOAD, None),
            Ok(None)
        );
        assert!(cut < 4 || next_packet(&wire[..cut]).is_none());
    }
    let p = decode_payload(&wire, DEFAULT_MAX_PAYLOAD, Some(3))
        .unwrap()
        .unwrap();
    assert!(matches!(p.data, std::borrow::Cow::Borrowed(_)));
    assert_eq!(&*p.data, b"\x03select 1");
    assert_eq!((p.seq, p.next_seq, p.consumed), (3, 4, wire.len()));
}

#[test]
fn large_payloads_split_and_reassemble() {
    for len in [MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 2 * MAX_CHUNK] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        let next = write_packet(&mut wire, 255, &payload);
        let packets = len / MAX_CHUNK + 1;
        assert_eq!(wire.len(), len + 4 * packets, "len {len}");
        assert_eq!(next, 255u8.wrapping_add(packets as u8));
        // Incomplete until the very last byte.
        assert_eq!(
            decode_payload(&wire[..wire.len() - 1], DEFAULT_MAX_PAYLOAD * 2, None),
            Ok(None)
        );
        let p = decode_payload(&wire, DEFAULT_MAX_PAYLOAD * 2, Some(255))
            .unwrap()
            .unwrap();
        assert_eq!(p.data.len(), len);
        assert!(p.data == payload);
        assert_eq!((p.next_seq, p.consumed), (next, wire.len()));
        // The same through begin/finish.
        let mut built = Vec::new();
        let start = begin_packet(&mut built);
        built.extend_from_slice(&payload);
        assert_eq!(finish_packet(&mut built, start, 255), next);
        assert!(built == wire);
    }
}

#[test]
fn empty_payload_is_one_empty_packet() {
    assert_eq!(frame(0, b""), vec![0, 0, 0, 0]);
    let p = decode_payload(&[0, 0, 0, 7], 10, None).unwrap().unwrap();
    assert!(p.data.is_empty());
    assert_eq!(p.next_seq, 8);
}

#[test]
fn a_claimed_4gib_payload_fails_at_the_headers_it_shows() {
    // A full-size first packet header and nothing else: already past a 1 MiB limit.
    let wire = [0xFF, 0xFF, 0xFF, 0];
    assert_eq!(
        decode_payload(&wire, 1 << 20, None),
        Err(FrameError::TooLarge {
            at_least: MAX_CHUNK,
            max: 1 << 20
        })
    );
    // Under the default limit, the second chunk header pushes it over, before its bytes.
    let mut wire = vec![0xFF, 0xFF, 0xFF, 0];
    wire.resize(4 + MAX_CHUNK, 0);
    wire.extend_from_slice(&[2, 0, 0, 1]);
    assert!(matches!(
        decode_payload(&wire, DEFAULT_MAX_PAYLOAD, None),
        Err(FrameError::TooLarge { at_least, .. }) if at_least == MAX_CHUNK + 2
    ));
    // One byte fewer fits exactly.
    let last = wire.len() - 4;
    wire[last] = 1;
    wire.push(9);
    let p = decode_payload(&wire, DEFAULT_MAX_PAYLOAD, None)
        .unwrap()
        .unwrap();
    assert_eq!(p.data.len(), DEFAULT_MAX_PAYLOAD);
}

#[test]
fn out_of_order_sequence_ids_are_errors() {
    let wire = frame(5, b"abc");
    assert_eq!(
        decode_payload(&wire, 100, Some(4)),
        Err(FrameError::OutOfOrder {
            expected: 4,
            got: 5
        })
    );
    // A continuation packet that skips a number.
    let mut wire = vec![0xFF, 0xFF, 0xFF, 1];
    wire.resize(4 + MAX_CHUNK, 0);
    wire.extend_from_slice(&[0, 0, 0, 3]);
    assert_eq!(
        decode_payload(&wire, DEFAULT_MAX_PAYLOAD, None),
        Err(FrameError::OutOfOrder {
            expected: 2,
            got: 3
        })
    );
}

#[test]
fn lenenc_round_trip_and_bounds() {
    for n in [
        0,
        1,
        250,
        251,
        0xFFFF,
        0x1_0000,
        0xFF_FFFF,
        0x100_0000,
        u64::MAX,
    ] {
        let mut out = Vec::new();
        put_lenenc_int(&mut out, n);
        assert_eq!(out.len(), lenenc_int_len(n));
        let mut r = Reader::new(&out);
        assert_eq!(r.lenenc_int(), Some(n));
        assert!(r.is_empty());
        // Truncated: None, and the cursor stays.
        let mut r = Reader::new(&out[..out.len() - 1]);
        assert_eq!(r.lenenc_int(), None);
        assert_eq!(r.position(), 0);
    }
    assert_eq!(Reader::new(&[0xFB]).lenenc_int(), None);
    assert_eq!(Reader::new(&[0xFF]).lenenc_int(), None);
    // A string claiming 2^64-1 bytes is refused, not allocated.
    let mut huge = vec![0xFE];
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(Reader::new(&huge).lenenc_bytes(), None);
}

fn mariadb_caps() -> Capabilities {
    Capabilities(
        CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_CONNECT_ATTRS
            | CLIENT_SSL
            | CLIENT_TRANSACTIONS
            | CLIENT_MULTI_RESULTS
            | CLIENT_SESSION_TRACK
            | CLIENT_DEPRECATE_EOF
            | MARIADB_CLIENT_PROGRESS
            | MARIADB_CLIENT_STMT_BULK_OPERATIONS,
    )
}

#[test]
fn handshake_round_trips_with_mariadb_capabilities() {
    let scramble: Vec<u8> = (1..=20).collect();
    let hs = HandshakeV10 {
        server_version: b"5.5.5-10.11.19-MariaDB",
        connection_id: 0x0102_0304,
        scramble: scramble.clone(),
        capabilities: mariadb_caps(),
        charset: 45,
        status: SERVER_STATUS_AUTOCOMMIT,
        auth_plugin: b"mysql_native_password",
    };
    let mut out = Vec::new();
    hs.write(&mut out);
    // Fixed layout: version, NUL, id, part 1, filler, and the scramble length byte 21.
    assert_eq!(out[0], 10);
    let at = 1 + hs.server_version.len() + 1;
    assert_eq!(&out[at..at + 4], &[4, 3, 2, 1]);
    assert_eq!(&out[at + 4..at + 12], &scramble[..8]);
    assert_eq!(out[at + 20], 21);
    let back = HandshakeV10::parse(&out).unwrap();
    assert_eq!(back, hs);
    // Without CLIENT_MYSQL cleared, the extended capabilities are not read.
    let mysql = HandshakeV10 {
        capabilities: Capabilities(mariadb_caps().0 & 0xFFFF_FFFF | CLIENT_MYSQL),
        ..hs.clone()
    };
    out.clear();
    mysql.write(&mut out);
    assert_eq!(HandshakeV10::parse(&out).unwrap(), mysql);
    // Every truncation is an error or a shorter greeting, never a panic.
    for cut in 0..out.len() {
        let _ = HandshakeV10::parse(&out[..cut]);
    }
}

#[test]
fn handshake_from_a_server_error_is_named() {
    let err = err_payload(1130, b"HY000", "Host is not allowed");
    assert_eq!(
        HandshakeV10::parse(&err).unwrap_err().what,
        "the server sent an error instead"
    );
}

#[test]
fn ssl_request_and_response_parse() {
    let caps = mariadb_caps();
    let mut out = Vec::new();
    SslRequest {
        capabilities: caps,
        max_packet: 1 << 24,
        charset: 33,
    }
    .write(&mut out);
    assert_eq!(out.len(), SSL_REQUEST_LEN);
    match ClientHello::parse(&out).unwrap() {
        ClientHello::Ssl(s) => {
            assert_eq!(s.capabilities, caps);
            assert_eq!(s.max_packet, 1 << 24);
        }
        other => panic!("{other:?}"),
    }
    let mut attrs = Vec::new();
    put_attribute(&mut attrs, b"_client_name", b"libmariadb");
    put_attribute(&mut attrs, b"program_name", b"mysql");
    let long_auth = [7u8; 300];
    let resp = HandshakeResponse {
        capabilities: caps,
        max_packet: 1 << 24,
        charset: 45,
        user: b"app",
        auth_response: &long_auth,
        database: Some(b"shop"),
        auth_plugin: Some(b"client_ed25519"),
        attributes: &attrs,
        zstd_level: None,
    };
    out.clear();
    resp.write(&mut out);
    let ClientHello::Response(back) = ClientHello::parse(&out).unwrap() else {
        panic!("not a response")
    };
    assert_eq!(back, resp);
    let pairs: Vec<_> = back.attributes().collect();
    assert_eq!(pairs[1], (&b"program_name"[..], &b"mysql"[..]));
    // Debug never shows the auth response.
    let dbg = format!("{back:?}");
    assert!(dbg.contains("auth_response_len: 300") && !dbg.contains("7, 7"));
    // SECURE_CONNECTION form (one length byte), no database, no attributes.
    let plain = HandshakeResponse {
        capabilities: Capabilities(CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_MYSQL),
        user: b"root",
        auth_response: &[1; 20],
        ..HandshakeResponse::default()
    };
    out.clear();
    plain.write(&mut out);
    assert_eq!(HandshakeResponse::parse(&out).unwrap(), plain);
    for cut in 0..out.len() {
        let _ = ClientHello::parse(&out[..cut]);
    }
    // A pre-4.1 client is refused by name.
    assert_eq!(
        ClientHello::parse(&[0x05, 0x00, 0, 0, 0]).unwrap_err().what,
        "client does not speak protocol 4.1"
    );
}

#[test]
fn auth_switch_and_more_data() {
    let mut data = (1..=20).collect::<Vec<u8>>();
    data.push(0);
    let mut out = Vec::new();
    AuthSwitchRequest {
        plugin: MYSQL_NATIVE_PASSWORD.as_bytes(),
        data: &data,
    }
    .write(&mut out);
    let sw = AuthSwitchRequest::parse(&out).unwrap();
    assert_eq!(sw.plugin, MYSQL_NATIVE_PASSWORD.as_bytes());
    assert_eq!(sw.scramble20().unwrap().to_vec(), data[..20].to_vec());
    assert!(AuthSwitchRequest::parse(&[0xFE]).is_err());
    let more = AuthMoreData::parse(&[1, CACHING_SHA2_FAST_AUTH_OK]).unwrap();
    assert_eq!(more.data, &[3]);
    assert_eq!(auth_packet_kind(&out), AuthPacket::Switch);
}

#[test]
fn ok_err_eof_round_trip() {
    let caps = mariadb_caps();
    let ok = OkPacket {
        header: 0,
        affected_rows: 300,
        last_insert_id: 7,
        status: SERVER_STATUS_IN_TRANS | SERVER_SESSION_STATE_CHANGED,
        warnings: 1,
        info: b"",
        session_state: b"\x00\x0f\x0aautocommit\x03OFF",
    };
    let mut out = Vec::new();
    ok.write(&mut out, caps);
    assert_eq!(OkPacket::parse(&out, caps).unwrap(), ok);
    // The minimal OK a server sends: no info at all.
    let plain = [0, 0, 0, 2, 0, 0, 0];
    let p = OkPacket::parse(&plain, caps).unwrap();
    assert_eq!((p.status, p.info), (SERVER_STATUS_AUTOCOMMIT, &b""[..]));
    let err = err_payload(1146, b"42S02", "Table 'x.y' doesn't exist");
    let e = ErrPacket::parse(&err).unwrap();
    assert_eq!((e.code, e.sql_state_str()), (1146, Some("42S02")));
    assert_eq!(e.message, b"Table 'x.y' doesn't exist");
    // Without the marker (an error sent before capabilities).
    let e = ErrPacket::parse(b"\xff\x6a\x04Host not allowed").unwrap();
    assert_eq!((e.code, e.sql_state), (1130, None));
    let mut out = Vec::new();
    EofPacket {
        warnings: 0,
        status: SERVER_MORE_RESULTS_EXISTS,
    }
    .write(&mut out, caps);
    assert!(is_eof(&out));
    assert_eq!(
        EofPacket::parse(&out, caps).unwrap().status,
        SERVER_MORE_RESULTS_EXISTS
    );
}

/// Feed server payloads; return the step after each.
fn run(command: u8, caps: Capabilities, packets: &[Vec<u8>]) -> Vec<Step> {
    let mut t = ResponseTracker::new(command, caps).unwrap();
    packets.iter().map(|p| t.feed(p).unwrap()).collect()
}

fn ok(caps: Capabilities, header: u8, status: u16) -> Vec<u8> {
    let mut out = Vec::new();
    OkPacket {
        header,
        status,
        ..OkPacket::default()
    }
    .write(&mut out, caps);
    out
}

fn eof(status: u16) -> Vec<u8> {
    let mut out = Vec::new();
    EofPacket {
        warnings: 0,
        status,
    }
    .write(&mut out, Capabilities(CLIENT_PROTOCOL_41));
    out
}

fn coldef() -> Vec<u8> {
    b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00".to_vec()
}

fn done(status: Option<u16>, results: u32) -> Step {
    Step::Done(Outcome {
        status,
        error: None,
        prepared: None,
        results,
    })
}

#[test]
fn result_sets_with_and_without_eof_and_more_results() {
    let caps41 = Capabilities(CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS);
    // SELECT 1; SELECT 2 (two columns) without DEPRECATE_EOF; the first ends MORE_RESULTS.
    let more = SERVER_MORE_RESULTS_EXISTS | SERVER_STATUS_AUTOCOMMIT;
    let steps = run(
        COM_QUERY,
        caps41,
        &[
            vec![1],
            coldef(),
            eof(0),
            b"\x011".to_vec(),
            eof(more),
            vec![2],
            coldef(),
            coldef(),
            eof(0),
            b"\xfe\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(), // a 0xFE row of 10 bytes
            eof(SERVER_STATUS_IN_TRANS),
        ],
    );
    assert!(steps[..10].iter().all(|s| *s == Step::More), "{steps:?}");
    assert_eq!(steps[10], done(Some(SERVER_STATUS_IN_TRANS), 2));
    // DEPRECATE_EOF: no EOF after columns, OK with 0xFE at the end.
    let caps = caps41.with(CLIENT_DEPRECATE_EOF);
    let steps = run(
        COM_QUERY,
        caps,
        &[vec![1], coldef(), b"\x011".to_vec(), ok(caps, 0xFE, 2)],
    );
    assert_eq!(steps[3], done(Some(2), 1));
    // An OK for an UPDATE, then an ERR for the second statement.
    let mut t = ResponseTracker::new(COM_QUERY, caps).unwrap();
    assert_eq!(t.feed(&ok(caps, 0, more)).unwrap(), Step::More);
    let err = err_payload(1146, b"42S02", "no table");
    assert_eq!(
        t.feed(&err).unwrap(),
        Step::Done(Outcome {
            status: None,
            error: Some(1146),
            prepared: None,
            results: 1
        })
    );
    assert_eq!(t.feed(&err), Err(TrackError::AfterEnd));
}

#[test]
fn local_infile_progress_and_long_rows() {
    let caps = mariadb_caps();
    let mut t = ResponseTracker::new(COM_QUERY, caps).unwrap();
    assert_eq!(t.feed(b"\xfb/tmp/x.csv").unwrap(), Step::LocalInfile);
    // A progress report is not the end.
    assert_eq!(t.feed(b"\xff\xff\xff\x01\x02\x03").unwrap(), Step::More);
    assert_eq!(t.feed(&ok(caps, 0, 2)).unwrap(), done(Some(2), 1));
    // A row of 16 MiB - 1 bytes starting with 0xFE is a row; its continuation is not looked at.
    let mut t = ResponseTracker::new(COM_QUERY, caps).unwrap();
    t.feed(&[1]).unwrap();
    t.feed(&coldef()).unwrap();
    let mut big = vec![0u8; MAX_CHUNK];
    big[0] = 0xFE;
    assert_eq!(t.feed(&big).unwrap(), Step::More);
    assert_eq!(t.feed(&ok(caps, 0xFE, 0)).unwrap(), Step::More);
    assert_eq!(t.feed(&ok(caps, 0xFE, 0)).unwrap(), done(Some(0), 1));
}

#[test]
fn prepare_and_cursor() {
    let prep = |params, columns| {
        let mut out = Vec::new();
        PrepareOk {
            statement_id: 9,
            columns,
            params,
            warnings: 0,
        }
        .write(&mut out);
        out
    };
    let caps41 = Capabilities(CLIENT_PROTOCOL_41);
    // 2 params, 1 column, with EOFs: 1 + 2 + 1 + 1 + 1 packets.
    let steps = run(
        COM_STMT_PREPARE,
        caps41,
        &[prep(2, 1), coldef(), coldef(), eof(0), coldef(), eof(0)],
    );
    let Step::Done(o) = steps[5] else {
        panic!("{steps:?}")
    };
    assert!(steps[..5].iter().all(|s| *s == Step::More));
    assert_eq!(o.prepared.unwrap().statement_id, 9);
    // No params, no columns: done at once.
    assert!(matches!(
        run(COM_STMT_PREPARE, caps41, &[prep(0, 0)])[0],
        Step::Done(_)
    ));
    // DEPRECATE_EOF: no EOFs.
    let caps = caps41.with(CLIENT_DEPRECATE_EOF);
    let steps = run(COM_STMT_PREPARE, caps, &[prep(1, 1), coldef(), coldef()]);
    assert!(matches!(steps[2], Step::Done(_)));
    // An execute that opens a cursor ends after the column definitions' EOF.
    let steps = run(
        COM_STMT_EXECUTE,
        caps41,
        &[vec![1], coldef(), eof(SERVER_STATUS_CURSOR_EXISTS)],
    );
    assert_eq!(steps[2], done(Some(SERVER_STATUS_CURSOR_EXISTS), 1));
    let steps = run(
        COM_STMT_FETCH,
        caps41,
        &[b"\x00\x00\x01".to_vec(), eof(SERVER_STATUS_LAST_ROW_SENT)],
    );
    assert_eq!(steps[1], done(Some(SERVER_STATUS_LAST_ROW_SENT), 0));
}

#[test]
fn commands_without_answer_simple_ones_and_refusals() {
    let caps = mariadb_caps();
    for c in [COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA] {
        assert!(!expects_response(c));
        let mut t = ResponseTracker::new(c, caps).unwrap();
        assert!(t.is_done());
        assert_eq!(t.feed(&[0]), Err(TrackError::AfterEnd));
    }
    assert!(matches!(
        run(COM_PING, caps, &[ok(caps, 0, 2)])[0],
        Step::Done(_)
    ));
    assert_eq!(run(COM_SET_OPTION, caps, &[eof(2)])[0], done(Some(2), 1));
    assert!(matches!(
        run(COM_STATISTICS, caps, &[b"Uptime: 5".to_vec()])[0],
        Step::Done(_)
    ));
    assert!(matches!(
        ResponseTracker::new(COM_BINLOG_DUMP, caps),
        Err(TrackError::Unsupported(COM_BINLOG_DUMP, "binlog_dump"))
    ));
    assert!(ResponseTracker::new(COM_QUERY, caps.with(MARIADB_CLIENT_CACHE_METADATA)).is_err());
    let mut t = ResponseTracker::new(COM_PING, caps).unwrap();
    assert!(matches!(
        t.feed(b"\x05abc"),
        Err(TrackError::Unexpected { byte: 5, .. })
    ));
    // COM_CHANGE_USER: switch, the client answers, then fast-auth-ok and the OK.
    let steps = run(
        COM_CHANGE_USER,
        caps,
        &[
            b"\xfecaching_sha2_password\x00abc".to_vec(),
            vec![1, 3],
            ok(caps, 0, 2),
        ],
    );
    assert_eq!(steps[0], Step::ClientTurn);
    assert_eq!(steps[1], Step::More);
    assert!(matches!(steps[2], Step::Done(_)));
}

#[test]
fn statement_ids_read_and_rewrite() {
    let mut exec = vec![COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0];
    assert_eq!(statement_id(&exec), Some(1));
    assert_eq!(set_statement_id(&mut exec, 0xABCD), Some(1));
    assert_eq!(&exec[1..5], &[0xCD, 0xAB, 0, 0]);
    assert_eq!(statement_id(&[COM_STMT_CLOSE, 1, 2]), None);
    assert_eq!(statement_id(&[COM_QUERY, 1, 2, 3, 4]), None);
    let mut q = vec![COM_QUERY, 1, 2, 3, 4];
    assert_eq!(set_statement_id(&mut q, 5), None);
    assert_eq!(q, vec![COM_QUERY, 1, 2, 3, 4]);
}

#[test]
fn text_result_sets_write_and_track() {
    use super::resultset::*;
    for caps in [
        Capabilities(CLIENT_PROTOCOL_41),
        Capabilities(CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF | CLIENT_SESSION_TRACK),
    ] {
        let cols = [
            ColumnDefinition::text("name", 64),
            ColumnDefinition::integer("n"),
        ];
        let rows = vec![
            vec![Some(&b"a"[..]), Some(&b"1"[..])],
            vec![None, Some(&b"2"[..])],
        ];
        let mut out = Vec::new();
        let next = write_text_result_set(&mut out, 1, caps, &cols, &rows, SERVER_STATUS_AUTOCOMMIT);
        // Read it back as a client would: the tracker ends at the last packet exactly.
        let mut t = ResponseTracker::new(COM_QUERY, caps).unwrap();
        let mut at = 0;
        let mut payloads = Vec::new();
        let mut step = Step::More;
        while let Some(p) = next_packet(&out[at..]) {
            assert_eq!(step, Step::More);
            step = t.feed(p.payload).unwrap();
            payloads.push(p.payload.to_vec());
            at += p.wire_len();
        }
        assert_eq!(at, out.len());
        assert_eq!(step, done(Some(SERVER_STATUS_AUTOCOMMIT), 1));
        assert_eq!(next, 1 + payloads.len() as u8);
        assert_eq!(ColumnDefinition::parse(&payloads[1]).unwrap(), cols[0]);
        assert_eq!(
            ColumnDefinition::parse(&payloads[2]).unwrap().column_type,
            TYPE_LONGLONG
        );
        let eofs = usize::from(!caps.has(CLIENT_DEPRECATE_EOF));
        let row: Vec<_> = text_row(&payloads[4 + eofs]).map(Result::unwrap).collect();
        assert_eq!(row, [None, Some(&b"2"[..])]);
    }
    assert!(text_row(&[0x05, b'a']).next().unwrap().is_err());
    assert!(ColumnDefinition::parse(b"\x03abc").is_err());
}

#[test]
fn commands_parse() {
    use super::command::*;
    assert_eq!(
        Command::parse(b"\x03select 1").unwrap(),
        Command::Query(b"select 1")
    );
    assert_eq!(
        Command::parse(&[COM_PROCESS_KILL, 7, 0, 0, 0]).unwrap(),
        Command::ProcessKill(7)
    );
    assert_eq!(
        Command::parse(&[COM_STMT_FETCH, 1, 0, 0, 0, 10, 0, 0, 0]).unwrap(),
        Command::StmtFetch {
            statement_id: 1,
            rows: 10
        }
    );
    assert!(Command::parse(&[COM_STMT_CLOSE, 1]).is_err());
    assert!(Command::parse(&[]).is_err());
    assert_eq!(
        Command::parse(&[COM_BINLOG_DUMP]).unwrap(),
        Command::Other(COM_BINLOG_DUMP)
    );

    // Execute with 2 params, types bound; then the same without types, rewritten with them.
    let mut with = vec![
        COM_STMT_EXECUTE,
        5,
        0,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0b10,
        1,
        8,
        0,
        253,
        0,
    ];
    with.extend_from_slice(&7i64.to_le_bytes());
    let ex = StmtExecute::parse(&with, 2).unwrap();
    assert_eq!((ex.statement_id, ex.new_params_bound), (5, true));
    assert_eq!(ex.types, &[8, 0, 253, 0]);
    assert_eq!(ex.null_bitmap, &[0b10]);
    let mut without = vec![COM_STMT_EXECUTE, 5, 0, 0, 0, 0, 1, 0, 0, 0, 0b10, 0];
    without.extend_from_slice(&7i64.to_le_bytes());
    let ex2 = StmtExecute::parse(&without, 2).unwrap();
    assert!(!ex2.new_params_bound);
    let mut out = Vec::new();
    ex2.write_with_types(&mut out, 9, ex.types);
    let mut want = with.clone();
    want[1] = 9;
    assert_eq!(out, want);
    assert!(StmtExecute::parse(&with[..12], 2).is_err());
    let none = StmtExecute::parse(&[COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0], 0).unwrap();
    assert!(none.values.is_empty());

    // Session state: a system variable and a schema change.
    let state = b"\x00\x0f\x0aautocommit\x03OFF\x01\x05\x04shop";
    let changes: Vec<_> = session_changes(state).collect();
    assert_eq!(changes.len(), 2);
    assert_eq!(
        changes[0].name_value(),
        Some((&b"autocommit"[..], &b"OFF"[..]))
    );
    assert_eq!(changes[1].kind, SESSION_TRACK_SCHEMA);
    assert_eq!(changes[1].name_value(), Some((&b"shop"[..], &b""[..])));
}
