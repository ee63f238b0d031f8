//! The MySQL codec against a real MariaDB (started by testkit): a small blocking client built
//! only from `sumun_wire::mysql` and `sumun_vault::mysql` logs in with
//! `mysql_native_password` (directly and through an auth switch) and with MariaDB's ed25519,
//! and runs multi-result queries, `LOAD DATA LOCAL INFILE`, prepared statements (with and
//! without a cursor) and a 16 MiB row, once with `CLIENT_DEPRECATE_EOF` and once without.
//! After every answer the response tracker says is complete, a `COM_PING` must be answered
//! with sequence id 1: a tracker that stopped early or late would leave a packet behind or
//! wait for one that never comes.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sumun_testkit::{Mariadb, MariadbOptions};
use sumun_vault::mysql as auth;
use sumun_wire::mysql::command::{session_changes, StmtExecute};
use sumun_wire::mysql::errors::{self, ServerError};
use sumun_wire::mysql::flags::*;
use sumun_wire::mysql::generic::{ErrPacket, OkPacket};
use sumun_wire::mysql::handshake::ChangeUser;
use sumun_wire::mysql::handshake::*;
use sumun_wire::mysql::packet::{
    decode_payload, next_packet, write_packet, FrameError, DEFAULT_MAX_PAYLOAD, MAX_CHUNK,
};
use sumun_wire::mysql::response::{Outcome, ResponseTracker, Step};
use sumun_wire::mysql::resultset::{text_row, ColumnDefinition};
use sumun_wire::mysql::stmt::set_statement_id;

const APP_PW: &str = "app-Pw-1";
const ED_PW: &str = "ed-Pw-2";

#[derive(Debug)]
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    seq: u8,
    caps: Capabilities,
    /// The greeting's scramble (COM_CHANGE_USER answers it again).
    scramble: Vec<u8>,
}

/// A server's refusal.
#[derive(Debug)]
struct Refused {
    code: u16,
    sql_state: Option<String>,
    message: String,
}

fn base_caps() -> Capabilities {
    Capabilities(
        CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_TRANSACTIONS
            | CLIENT_MULTI_STATEMENTS
            | CLIENT_MULTI_RESULTS
            | CLIENT_PS_MULTI_RESULTS
            | CLIENT_LOCAL_FILES
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_CONNECT_ATTRS
            | CLIENT_SESSION_TRACK
            | MARIADB_CLIENT_PROGRESS
            | MARIADB_CLIENT_STMT_BULK_OPERATIONS,
    )
}

impl Client {
    fn connect(db: &Mariadb) -> Client {
        let stream = TcpStream::connect(db.addr()).unwrap();
        // A guard against a hung test, not synchronisation.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
            seq: 0,
            caps: Capabilities(0),
            scramble: Vec::new(),
        }
    }

    fn fill(&mut self) {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp).expect("read from the server");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&tmp[..n]);
    }

    /// One logical payload, with its sequence id checked.
    fn payload(&mut self) -> Vec<u8> {
        loop {
            match decode_payload(&self.buf, DEFAULT_MAX_PAYLOAD, Some(self.seq)).unwrap() {
                Some(p) => {
                    let data = p.data.into_owned();
                    self.seq = p.next_seq;
                    let n = p.consumed;
                    self.buf.drain(..n);
                    return data;
                }
                None => self.fill(),
            }
        }
    }

    /// The next payload whatever its sequence id, parsed as an ERR (for tests of refusals).
    fn error(&mut self) -> ServerError {
        loop {
            if let Some(p) = decode_payload(&self.buf, DEFAULT_MAX_PAYLOAD, None).unwrap() {
                let e = ErrPacket::parse(&p.data)
                    .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&p.data)));
                return ServerError::new(
                    e.code,
                    &e.sql_state.expect("a SQL state"),
                    String::from_utf8_lossy(e.message),
                );
            }
            self.fill();
        }
    }

    /// One physical packet, with its sequence id checked.
    fn packet(&mut self) -> Vec<u8> {
        loop {
            if let Some(p) = next_packet(&self.buf) {
                assert_eq!(p.seq, self.seq, "sequence id");
                let (data, n) = (p.payload.to_vec(), p.wire_len());
                self.seq = self.seq.wrapping_add(1);
                self.buf.drain(..n);
                return data;
            }
            self.fill();
        }
    }

    fn send(&mut self, payload: &[u8]) {
        let mut out = Vec::new();
        self.seq = write_packet(&mut out, self.seq, payload);
        self.stream.write_all(&out).unwrap();
    }

    /// Log in as `user`, opening with `first_plugin` (the server may switch us to another).
    fn login(
        db: &Mariadb,
        user: &str,
        password: &str,
        first_plugin: &str,
        caps: Capabilities,
    ) -> Result<(Client, Vec<String>), Refused> {
        let mut c = Client::connect(db);
        let greeting = c.payload();
        let hs = HandshakeV10::parse(&greeting).unwrap();
        assert_eq!(hs.scramble.len(), 20);
        assert!(String::from_utf8_lossy(hs.server_version).contains("MariaDB"));
        // MariaDB announces its extended capabilities by clearing CLIENT_MYSQL.
        assert!(!hs.capabilities.has(CLIENT_MYSQL));
        assert!(hs.capabilities.has(MARIADB_CLIENT_PROGRESS));
        c.caps = caps.intersect(hs.capabilities);
        c.scramble = hs.scramble.clone();
        assert!(c.caps.has(MARIADB_CLIENT_PROGRESS));
        let first = plugin_response(first_plugin, password, &hs.scramble);
        let mut attrs = Vec::new();
        put_attribute(&mut attrs, b"_client_name", b"sumun-wire-test");
        let resp = HandshakeResponse {
            capabilities: c.caps,
            max_packet: 1 << 30,
            charset: 45,
            user: user.as_bytes(),
            auth_response: &first,
            database: Some(b"shop"),
            auth_plugin: Some(first_plugin.as_bytes()),
            attributes: &attrs,
            zstd_level: None,
        };
        let mut out = Vec::new();
        resp.write(&mut out);
        c.send(&out);
        let mut plugins = vec![first_plugin.to_string()];
        loop {
            let p = c.payload();
            match auth_packet_kind(&p) {
                AuthPacket::Ok => {
                    let ok = OkPacket::parse(&p, c.caps).unwrap();
                    assert!(ok.status & SERVER_STATUS_AUTOCOMMIT != 0);
                    return Ok((c, plugins));
                }
                AuthPacket::Err => {
                    let e = ErrPacket::parse(&p).unwrap();
                    return Err(Refused {
                        code: e.code,
                        sql_state: e.sql_state_str().map(str::to_string),
                        message: String::from_utf8_lossy(e.message).into_owned(),
                    });
                }
                AuthPacket::Switch => {
                    let sw = AuthSwitchRequest::parse(&p).unwrap();
                    let plugin = String::from_utf8(sw.plugin.to_vec()).unwrap();
                    let nonce = match plugin.as_str() {
                        CLIENT_ED25519 => sw.data.to_vec(),
                        _ => sw.scramble20().expect("a 20-byte scramble").to_vec(),
                    };
                    let answer = plugin_response(&plugin, password, &nonce);
                    c.send(&answer);
                    plugins.push(plugin);
                }
                other => panic!("unexpected {other:?} packet in login: {p:?}"),
            }
        }
    }

    /// Send a command and follow its answer to the first step that is not `More`.
    fn command(&mut self, payload: &[u8]) -> (ResponseTracker, Vec<Vec<u8>>, Step) {
        self.seq = 0;
        self.send(payload);
        let mut t = ResponseTracker::new(payload[0], self.caps).unwrap();
        if t.is_done() {
            return (t, Vec::new(), Step::Done(Outcome::default()));
        }
        let (packets, step) = self.follow(&mut t);
        (t, packets, step)
    }

    fn follow(&mut self, t: &mut ResponseTracker) -> (Vec<Vec<u8>>, Step) {
        let mut packets = Vec::new();
        loop {
            let p = self.packet();
            let step = t.feed(&p).unwrap();
            packets.push(p);
            if step != Step::More {
                return (packets, step);
            }
        }
    }

    /// A command whose answer must end in `Done`: its packets and outcome, and then a ping
    /// proves nothing of the answer was left unread.
    fn run(&mut self, payload: &[u8]) -> (Vec<Vec<u8>>, Outcome) {
        let (_, packets, step) = self.command(payload);
        let Step::Done(outcome) = step else {
            panic!("{step:?}")
        };
        self.ping();
        (packets, outcome)
    }

    fn ping(&mut self) {
        self.seq = 0;
        self.send(&[COM_PING]);
        let p = self.payload();
        assert_eq!(p[0], 0x00, "COM_PING answered with {p:?}");
        assert_eq!(self.seq, 2);
        assert!(self.buf.is_empty(), "bytes after the ping's OK");
    }

    fn query(&mut self, sql: &str) -> (Vec<Vec<u8>>, Outcome) {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        self.run(&payload)
    }
}

fn plugin_response(plugin: &str, password: &str, nonce: &[u8]) -> Vec<u8> {
    let pw = password.as_bytes();
    match plugin {
        MYSQL_NATIVE_PASSWORD => auth::native_password_response(pw, nonce),
        CACHING_SHA2_PASSWORD => auth::caching_sha2_response(pw, nonce),
        CLIENT_ED25519 => auth::ed25519_response(pw, nonce).to_vec(),
        other => panic!("no plugin {other}"),
    }
}

/// The text values of a text-protocol row.
fn strings(p: &[u8]) -> Vec<Option<String>> {
    text_row(p)
        .map(|v| v.unwrap().map(|b| String::from_utf8_lossy(b).into_owned()))
        .collect()
}

fn start() -> Mariadb {
    let db = Mariadb::start_with(MariadbOptions {
        users: vec![("app".into(), APP_PW.into())],
        databases: vec!["shop".into()],
    })
    .unwrap();
    db.mysql(&format!(
        "INSTALL SONAME 'auth_ed25519'; \
         CREATE USER ed@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{ED_PW}'); \
         GRANT ALL ON *.* TO ed@'%'; \
         CREATE TABLE shop.li (a INT, b VARCHAR(10)); \
         CREATE TABLE shop.bulk (a INT, b VARCHAR(10))"
    ))
    .unwrap();
    db
}

#[test]
fn logins_commands_and_the_tracker_against_mariadb() {
    let db = start();

    // The public key MariaDB stored for the ed25519 user is the one we derive.
    let stored = db
        .mysql("SELECT JSON_VALUE(Priv, '$.authentication_string') FROM mysql.global_priv WHERE User='ed'")
        .unwrap();
    assert_eq!(
        stored,
        auth::Ed25519Verifier::from_password(ED_PW.as_bytes()).to_base64()
    );

    // Logins: native directly, native through a switch, ed25519 through a switch.
    let (_, plugins) =
        Client::login(&db, "app", APP_PW, MYSQL_NATIVE_PASSWORD, base_caps()).unwrap();
    assert_eq!(plugins, [MYSQL_NATIVE_PASSWORD]);
    let (_, plugins) = Client::login(&db, "app", APP_PW, CLIENT_ED25519, base_caps()).unwrap();
    assert_eq!(plugins, [CLIENT_ED25519, MYSQL_NATIVE_PASSWORD]);
    let (_, plugins) = Client::login(&db, "ed", ED_PW, MYSQL_NATIVE_PASSWORD, base_caps()).unwrap();
    assert_eq!(plugins, [MYSQL_NATIVE_PASSWORD, CLIENT_ED25519]);
    // Wrong passwords: 1045, 28000, whatever the plugin.
    for (user, plugin) in [
        ("app", MYSQL_NATIVE_PASSWORD),
        ("ed", MYSQL_NATIVE_PASSWORD),
    ] {
        let e = Client::login(&db, user, "wrong", plugin, base_caps()).unwrap_err();
        assert_eq!(e.code, 1045, "{user}");
        assert_eq!(e.sql_state.as_deref(), Some("28000"));
    }

    for deprecate_eof in [false, true] {
        let caps = if deprecate_eof {
            base_caps().with(CLIENT_DEPRECATE_EOF)
        } else {
            base_caps()
        };
        let (mut c, _) = Client::login(&db, "app", APP_PW, MYSQL_NATIVE_PASSWORD, caps).unwrap();
        assert_eq!(c.caps.has(CLIENT_DEPRECATE_EOF), deprecate_eof);
        commands(&mut c, deprecate_eof);
    }
}

fn commands(c: &mut Client, deprecate_eof: bool) {
    let eofs = usize::from(!deprecate_eof);
    // Three results: two result sets and an OK. Packets: (count, 2 columns, [EOF], 1 row,
    // end) + (count, 1 column, [EOF], 2 rows, end) + OK.
    let (packets, o) = c.query("SELECT 1 AS a, 'x' AS b; SELECT 2 UNION SELECT 3; DO 1");
    assert_eq!(o.results, 3);
    assert_eq!(o.error, None);
    assert_eq!(packets.len(), (5 + eofs) + (5 + eofs) + 1);
    assert_eq!(
        strings(&packets[3 + eofs]),
        [Some("1".into()), Some("x".into())]
    );
    assert_eq!(o.status.unwrap() & SERVER_MORE_RESULTS_EXISTS, 0);

    // A health check's answer, read with the result set helpers.
    let (packets, _) = c.query("SELECT @@read_only AS ro, @@version AS v, NULL AS n");
    let col = ColumnDefinition::parse(&packets[1]).unwrap();
    assert_eq!(col.name, b"ro");
    let row: Vec<_> = text_row(&packets[4 + eofs]).map(Result::unwrap).collect();
    assert_eq!(row[0], Some(&b"0"[..]));
    assert!(String::from_utf8_lossy(row[1].unwrap()).contains("MariaDB"));
    assert_eq!(row[2], None);

    // Session state tracking: autocommit and the schema come back in OK packets.
    let caps = c.caps;
    let changes = move |p: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        let ok = OkPacket::parse(p, caps).unwrap();
        session_changes(ok.session_state)
            .filter_map(|ch| ch.name_value())
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    };
    let (packets, _) = c.query("SET autocommit = 0");
    let seen = changes(&packets[0]);
    assert!(
        seen.contains(&(b"autocommit".to_vec(), b"OFF".to_vec())),
        "{seen:?}"
    );
    let (packets, _) = c.query("SET autocommit = 1");
    assert!(changes(&packets[0]).contains(&(b"autocommit".to_vec(), b"ON".to_vec())));
    let (packets, _) = c.run(b"\x02mysql");
    assert!(changes(&packets[0]).contains(&(b"mysql".to_vec(), Vec::new())));
    c.run(b"\x02shop");

    // An XA transaction shows in the status flags until its commit; an open HANDLER does not
    // (so the SQL analysis pins it).
    for (sql, in_trans) in [
        ("XA START 'sumun'", true),
        ("SELECT 1", true),
        ("XA END 'sumun'", true),
        ("XA PREPARE 'sumun'", true),
        ("XA COMMIT 'sumun'", false),
        ("HANDLER shop.li OPEN", false),
    ] {
        let (_, o) = c.query(sql);
        assert_eq!(
            o.status.unwrap() & SERVER_STATUS_IN_TRANS != 0,
            in_trans,
            "{sql}"
        );
    }
    let (_, o) = c.query("HANDLER li CLOSE");
    assert_eq!(o.error, None);

    // Transaction state from the status flags.
    let (_, o) = c.query("START TRANSACTION READ ONLY");
    let s = o.status.unwrap();
    assert!(s & SERVER_STATUS_IN_TRANS != 0 && s & SERVER_STATUS_IN_TRANS_READONLY != 0);
    let (_, o) = c.query("SELECT 1");
    assert!(o.status.unwrap() & SERVER_STATUS_IN_TRANS != 0);
    let (_, o) = c.query("COMMIT");
    assert_eq!(o.status.unwrap() & SERVER_STATUS_IN_TRANS, 0);

    // An error ends the answer, with code and SQL state; in a batch, after the first result.
    let (packets, o) = c.query("SELECT * FROM shop.missing");
    assert_eq!(o.error, Some(1146));
    let e = ErrPacket::parse(packets.last().unwrap()).unwrap();
    assert_eq!(e.sql_state_str(), Some("42S02"));
    assert!(String::from_utf8_lossy(e.message).contains("shop.missing"));
    let (packets, o) = c.query("SELECT 1; SELECT * FROM shop.missing; SELECT 2");
    assert_eq!((o.error, o.results), (Some(1146), 1));
    assert_eq!(packets.len(), 4 + eofs + 1);

    // LOAD DATA LOCAL INFILE: the server asks for the file, we send it and an empty packet.
    let mut payload = vec![COM_QUERY];
    payload.extend_from_slice(
        b"LOAD DATA LOCAL INFILE 'rows.csv' INTO TABLE shop.li FIELDS TERMINATED BY ','",
    );
    let (mut t, packets, step) = c.command(&payload);
    assert_eq!(step, Step::LocalInfile);
    assert_eq!(packets.last().unwrap(), b"\xfbrows.csv");
    c.send(b"1,a\n2,b\n3,c\n");
    c.send(b"");
    let (packets, step) = c.follow(&mut t);
    let Step::Done(o) = step else {
        panic!("{step:?}")
    };
    assert_eq!(o.error, None);
    // MariaDB reports progress (ERR 0xFFFF) before the OK: not the end of the answer.
    for p in &packets[..packets.len() - 1] {
        assert!(ErrPacket::parse(p).unwrap().is_progress());
    }
    let ok = OkPacket::parse(packets.last().unwrap(), c.caps).unwrap();
    assert_eq!(ok.affected_rows, 3);
    c.ping();
    // Refusing the file (what a gateway does when policy forbids it): an empty packet at once
    // is an empty file, and the server answers OK with no rows.
    let (mut t, _, step) = c.command(&payload);
    assert_eq!(step, Step::LocalInfile);
    c.send(b"");
    let (packets, step) = c.follow(&mut t);
    assert!(matches!(step, Step::Done(Outcome { error: None, .. })));
    let ok = OkPacket::parse(packets.last().unwrap(), c.caps).unwrap();
    assert_eq!(ok.affected_rows, 0);
    c.ping();
    let (packets, _) = c.query("SELECT COUNT(*) FROM shop.li");
    assert_eq!(
        strings(&packets[2 + eofs])[0].as_deref(),
        Some(if deprecate_eof { "6" } else { "3" })
    );

    // A row of 16 MiB - 1 + 4 bytes spans two packets; the tracker looks at the first only.
    let (packets, o) = c.query("SELECT REPEAT('a', 16777215)");
    assert_eq!(o.error, None, "max_allowed_packet too small?");
    assert_eq!(packets[2 + eofs].len(), MAX_CHUNK);
    assert_eq!(packets.len(), 2 + eofs + 2 + 1);

    prepared(c, eofs);
}

/// `COM_STMT_EXECUTE` for a statement of one BIGINT parameter.
fn execute(id: u32, flags: u8, value: i64) -> Vec<u8> {
    let mut p = vec![COM_STMT_EXECUTE];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(flags);
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&[0x00, 0x01, 0x08, 0x00]); // null bitmap, new params, LONGLONG
    p.extend_from_slice(&value.to_le_bytes());
    p
}

fn prepared(c: &mut Client, eofs: usize) {
    let mut payload = vec![COM_STMT_PREPARE];
    payload
        .extend_from_slice(b"SELECT CAST(? AS SIGNED) + 1 AS x, 'y' AS z UNION ALL SELECT 0, 'w'");
    let (packets, o) = c.run(&payload);
    let prep = o.prepared.unwrap();
    assert_eq!((prep.params, prep.columns), (1, 2));
    // PREPARE_OK, 1 parameter [+ EOF], 2 columns [+ EOF].
    assert_eq!(packets.len(), 1 + (1 + eofs) + (2 + eofs));

    // Binary rows: header 0x00, null bitmap, then the BIGINT. The execute, parsed and written
    // again with its types (as a re-prepare on another server would), is the same bytes.
    let exec = execute(prep.statement_id, 0, 41);
    let parsed = StmtExecute::parse(&exec, prep.params).unwrap();
    let mut again = Vec::new();
    parsed.write_with_types(&mut again, prep.statement_id, parsed.types);
    assert_eq!(again, exec);
    let (packets, o) = c.run(&again);
    assert_eq!((o.error, o.results), (None, 1));
    assert_eq!(packets.len(), 1 + 2 + eofs + 2 + 1);
    let row = &packets[3 + eofs];
    assert_eq!(row[0], 0x00);
    assert_eq!(&row[2..10], &42i64.to_le_bytes());

    // With a read-only cursor the answer ends after the column definitions; rows come with
    // COM_STMT_FETCH.
    let (packets, o) = c.run(&execute(prep.statement_id, 1, 1));
    assert!(o.status.unwrap() & SERVER_STATUS_CURSOR_EXISTS != 0);
    assert_eq!(packets.len(), 1 + 2 + 1);
    let mut fetch = vec![COM_STMT_FETCH];
    fetch.extend_from_slice(&prep.statement_id.to_le_bytes());
    fetch.extend_from_slice(&10u32.to_le_bytes());
    let (packets, o) = c.run(&fetch);
    assert_eq!(packets.len(), 2 + 1);
    assert!(o.status.unwrap() & SERVER_STATUS_LAST_ROW_SENT != 0);

    // Statement ids rewritten in place reach the server: an unknown one is error 1243.
    let mut bad = execute(prep.statement_id, 0, 1);
    set_statement_id(&mut bad, prep.statement_id + 1000);
    let (_, o) = c.run(&bad);
    assert_eq!(o.error, Some(1243));

    // COM_STMT_CLOSE has no answer (the ping in `run` proves it); then the id is gone.
    let mut close = vec![COM_STMT_CLOSE];
    close.extend_from_slice(&prep.statement_id.to_le_bytes());
    let (packets, _) = c.run(&close);
    assert!(packets.is_empty());
    let (_, o) = c.run(&execute(prep.statement_id, 0, 1));
    assert_eq!(o.error, Some(1243));

    // COM_INIT_DB and COM_RESET_CONNECTION: one OK.
    let (packets, o) = c.run(b"\x02shop");
    assert_eq!((packets.len(), o.error), (1, None));
    let (packets, o) = c.run(&[COM_RESET_CONNECTION]);
    assert_eq!((packets.len(), o.error), (1, None));

    more_commands(c, eofs);
}

fn more_commands(c: &mut Client, eofs: usize) {
    // A procedure's results: two result sets, then the OK of the CALL.
    c.query("CREATE OR REPLACE PROCEDURE shop.p() BEGIN SELECT 1; SELECT 2, 3; END");
    let (packets, o) = c.query("CALL shop.p()");
    assert_eq!((o.results, o.error), (3, None));
    assert_eq!(packets.len(), (4 + eofs) + (5 + eofs) + 1);

    // MariaDB's COM_STMT_BULK_EXECUTE: three rows in one command, one OK.
    let mut payload = vec![COM_STMT_PREPARE];
    payload.extend_from_slice(b"INSERT INTO shop.bulk VALUES (?, ?)");
    let (_, o) = c.run(&payload);
    let id = o.prepared.unwrap().statement_id;
    let mut bulk = vec![COM_STMT_BULK_EXECUTE];
    bulk.extend_from_slice(&id.to_le_bytes());
    bulk.extend_from_slice(&128u16.to_le_bytes()); // SEND_TYPES_TO_SERVER
    bulk.extend_from_slice(&[0x03, 0x00, 0xFD, 0x00]); // LONG, VAR_STRING
    for (n, s) in [(10i32, "x"), (11, "y"), (12, "z")] {
        bulk.push(0);
        bulk.extend_from_slice(&n.to_le_bytes());
        bulk.push(0);
        bulk.push(s.len() as u8);
        bulk.extend_from_slice(s.as_bytes());
    }
    let (packets, o) = c.run(&bulk);
    assert_eq!(o.error, None);
    assert_eq!(
        OkPacket::parse(&packets[0], c.caps).unwrap().affected_rows,
        3
    );
    // COM_STMT_SEND_LONG_DATA has no answer; COM_STMT_RESET one OK.
    let mut long = vec![COM_STMT_SEND_LONG_DATA];
    long.extend_from_slice(&id.to_le_bytes());
    long.extend_from_slice(&1u16.to_le_bytes());
    long.extend_from_slice(b"long");
    let (packets, _) = c.run(&long);
    assert!(packets.is_empty());
    let mut reset = vec![COM_STMT_RESET];
    reset.extend_from_slice(&id.to_le_bytes());
    let (packets, o) = c.run(&reset);
    assert_eq!((packets.len(), o.error), (1, None));

    // COM_FIELD_LIST: definitions, then the end; COM_STATISTICS: one string.
    let (packets, o) = c.run(b"\x04li\x00");
    assert_eq!((packets.len(), o.error), (2 + 1, None));
    let (packets, _) = c.run(&[COM_STATISTICS]);
    assert!(String::from_utf8_lossy(&packets[0]).starts_with("Uptime"));
    // COM_SET_OPTION answers with an EOF; killing an unknown thread is error 1094.
    let (packets, o) = c.run(&[COM_SET_OPTION, 0, 0]);
    assert_eq!((packets.len(), o.error, packets[0][0]), (1, None, 0xFE));
    let (_, o) = c.run(&[COM_PROCESS_KILL, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert_eq!(o.error, Some(1094));

    // COM_CHANGE_USER to the ed25519 user: opened with native, switched, signed, OK.
    let native = auth::native_password_response(ED_PW.as_bytes(), &c.scramble);
    let mut cu = Vec::new();
    ChangeUser {
        user: b"ed",
        auth_response: &native,
        database: b"shop",
        charset: Some(45),
        auth_plugin: Some(MYSQL_NATIVE_PASSWORD.as_bytes()),
        attributes: b"",
    }
    .write(&mut cu, c.caps);
    let (mut t, packets, step) = c.command(&cu);
    assert_eq!(step, Step::ClientTurn);
    let sw = AuthSwitchRequest::parse(packets.last().unwrap()).unwrap();
    assert_eq!(sw.plugin, CLIENT_ED25519.as_bytes());
    c.send(&auth::ed25519_response(ED_PW.as_bytes(), sw.data));
    let (_, step) = c.follow(&mut t);
    let Step::Done(o) = step else {
        panic!("{step:?}")
    };
    assert_eq!(o.error, None);
    c.ping();
    let (packets, _) = c.query("SELECT CURRENT_USER()");
    assert_eq!(strings(&packets[2 + eofs])[0].as_deref(), Some("ed@%"));
}

#[test]
fn decoder_errors_on_a_real_greeting() {
    let db = Mariadb::start().unwrap();
    let mut c = Client::connect(&db);
    while next_packet(&c.buf).is_none() {
        c.fill();
    }
    let len = next_packet(&c.buf).unwrap().payload.len();
    // The greeting is sequence 0: expecting 1 is an out-of-order error.
    assert_eq!(
        decode_payload(&c.buf, DEFAULT_MAX_PAYLOAD, Some(1)),
        Err(FrameError::OutOfOrder {
            expected: 1,
            got: 0
        })
    );
    // A limit below its length refuses it, naming the length.
    assert_eq!(
        decode_payload(&c.buf, len - 1, None),
        Err(FrameError::TooLarge {
            at_least: len,
            max: len - 1
        })
    );
    assert!(decode_payload(&c.buf, len, Some(0)).unwrap().is_some());
}

/// The gateway's errors are the server's, word for word.
#[test]
fn errors_in_the_servers_words() {
    let db = Mariadb::start_with(MariadbOptions {
        users: vec![("app".into(), APP_PW.into())],
        databases: vec!["shop".into()],
    })
    .unwrap();
    let login = || {
        Client::login(&db, "app", APP_PW, MYSQL_NATIVE_PASSWORD, base_caps())
            .unwrap()
            .0
    };

    // 1045 for a wrong password and for an unknown user: the same text shape.
    for user in ["app", "nobody"] {
        let e = Client::login(&db, user, "wrong", MYSQL_NATIVE_PASSWORD, base_caps()).unwrap_err();
        let want = errors::access_denied(user, "127.0.0.1", true);
        assert_eq!(
            (e.code, e.message.as_str()),
            (want.code, want.message.as_str())
        );
        assert_eq!(e.sql_state.unwrap().as_bytes(), want.sql_state);
    }

    // 1043: a login packet that cannot be read.
    let mut c = Client::connect(&db);
    c.payload();
    c.send(&[0x00, 0x02]);
    assert_eq!(c.error(), errors::bad_handshake());

    // 1047: a command byte the server does not know.
    let mut c = login();
    c.seq = 0;
    c.send(&[0x40]);
    assert_eq!(c.error(), errors::unknown_command());

    // 1156: a command with the wrong sequence id.
    let mut c = login();
    c.seq = 3;
    c.send(&[COM_PING]);
    assert_eq!(c.error(), errors::packets_out_of_order());

    // 1243: an unknown statement.
    let mut c = login();
    let (_, o) = c.run(&execute(4242, 0, 1));
    assert_eq!(o.error, Some(errors::ER_UNKNOWN_STMT_HANDLER));
    c.seq = 0;
    c.send(&execute(4242, 0, 1));
    assert_eq!(
        c.error(),
        errors::unknown_statement(4242, "mysqld_stmt_execute")
    );

    // 1153: a payload over max_allowed_packet (set for new connections).
    db.mysql("SET GLOBAL max_allowed_packet = 4096").unwrap();
    let mut c = login();
    let mut big = vec![COM_QUERY];
    big.extend_from_slice(b"SELECT '");
    big.resize(100_000, b'x');
    big.push(b'\'');
    c.seq = 0;
    c.send(&big);
    assert_eq!(c.error(), errors::packet_too_large());

    // MariaDB's require_secure_transport refuses a plain login (right password) with 1045.
    db.mysql("SET GLOBAL require_secure_transport = ON")
        .unwrap();
    let e = Client::login(&db, "app", APP_PW, MYSQL_NATIVE_PASSWORD, base_caps()).unwrap_err();
    let want = errors::access_denied("app", "127.0.0.1", true);
    assert_eq!(
        (e.code, e.message.as_str()),
        (want.code, want.message.as_str())
    );
    assert_eq!(e.sql_state.unwrap().as_bytes(), want.sql_state);
}
