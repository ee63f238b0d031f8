//! The server side of the MySQL codec, with the real `mariadb` command-line client
//! (libmariadb): a one-connection server built only from `sumun_wire::mysql` and
//! `sumun_vault::mysql` greets the client, authenticates it with `mysql_native_password`
//! (directly and after switching), `client_ed25519`, `caching_sha2_password` (fast path, and
//! full authentication with the RSA public key the client asks for), refuses a wrong password
//! with 1045 as MySQL words it, and answers a query with a text result set the client prints.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1};
use sumun_vault::mysql::{CachingSha2Verifier, Ed25519Verifier, NativeVerifier};
use sumun_wire::mysql::command::Command as Cmd;
use sumun_wire::mysql::errors;
use sumun_wire::mysql::flags::*;
use sumun_wire::mysql::generic::{err_payload, OkPacket};
use sumun_wire::mysql::handshake::*;
use sumun_wire::mysql::packet::{decode_payload, write_packet, DEFAULT_MAX_PAYLOAD};
use sumun_wire::mysql::resultset::{write_text_result_set, ColumnDefinition};

const PW: &str = "cli-Pw-3";

/// How the test server checks the password.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    Native,
    Ed25519,
    /// `caching_sha2_password`; `full` forces full authentication.
    Sha2 {
        full: bool,
    },
}

/// What the server saw.
#[derive(Debug, Default)]
struct Seen {
    plugins: Vec<String>,
    user: String,
    attributes: Vec<(String, String)>,
    queries: Vec<String>,
    accepted: bool,
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    seq: u8,
}

impl Conn {
    fn read(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(p) = decode_payload(&self.buf, DEFAULT_MAX_PAYLOAD, Some(self.seq)).unwrap()
            {
                let data = p.data.into_owned();
                self.seq = p.next_seq;
                let n = p.consumed;
                self.buf.drain(..n);
                return Some(data);
            }
            let mut tmp = [0u8; 16 * 1024];
            let n = self.s.read(&mut tmp).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    fn send(&mut self, payload: &[u8]) {
        let mut out = Vec::new();
        self.seq = write_packet(&mut out, self.seq, payload);
        self.s.write_all(&out).unwrap();
    }
}

fn server_caps() -> Capabilities {
    Capabilities(
        CLIENT_MYSQL
            | CLIENT_LONG_FLAG
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_STATEMENTS
            | CLIENT_MULTI_RESULTS
            | CLIENT_PS_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH
            | CLIENT_CONNECT_ATTRS
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_SESSION_TRACK
            | CLIENT_DEPRECATE_EOF,
    )
}

fn nonce(n: usize) -> Vec<u8> {
    // Printable, never NUL, as servers make them.
    (0..n).map(|_| fastrand::u8(b'!'..=b'~')).collect()
}

/// Serve one connection; return what was seen.
fn serve(mut c: Conn, stored: Stored, greeting_plugin: &str) -> Seen {
    let mut seen = Seen::default();
    let scramble = nonce(20);
    let mut out = Vec::new();
    HandshakeV10 {
        server_version: b"5.5.5-10.11.99-sumun-test",
        connection_id: 77,
        scramble: scramble.clone(),
        capabilities: server_caps(),
        charset: 45,
        status: SERVER_STATUS_AUTOCOMMIT,
        auth_plugin: greeting_plugin.as_bytes(),
    }
    .write(&mut out);
    c.send(&out);
    let hello = c.read().unwrap();
    let ClientHello::Response(resp) = ClientHello::parse(&hello).unwrap() else {
        panic!("the client asked for TLS")
    };
    let caps = server_caps().intersect(resp.capabilities);
    seen.user = String::from_utf8_lossy(resp.user).into_owned();
    seen.attributes = resp
        .attributes()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let first_plugin = String::from_utf8_lossy(resp.auth_plugin.unwrap_or_default()).into_owned();
    seen.plugins.push(first_plugin.clone());
    let wanted = match stored {
        Stored::Native => MYSQL_NATIVE_PASSWORD,
        Stored::Ed25519 => CLIENT_ED25519,
        Stored::Sha2 { .. } => CACHING_SHA2_PASSWORD,
    };
    // The first answer, or the answer after switching the client to the stored plugin.
    let (nonce_used, answer) = if first_plugin == wanted {
        (scramble.clone(), resp.auth_response.to_vec())
    } else {
        let fresh = if stored == Stored::Ed25519 {
            nonce(32)
        } else {
            nonce(20)
        };
        let mut data = fresh.clone();
        if stored != Stored::Ed25519 {
            data.push(0);
        }
        let mut out = Vec::new();
        AuthSwitchRequest {
            plugin: wanted.as_bytes(),
            data: &data,
        }
        .write(&mut out);
        c.send(&out);
        seen.plugins.push(wanted.to_string());
        (fresh, c.read().unwrap())
    };
    let ok = match stored {
        Stored::Native => NativeVerifier::from_password(PW.as_bytes()).verify(&nonce_used, &answer),
        Stored::Ed25519 => {
            Ed25519Verifier::from_password(PW.as_bytes()).verify(&nonce_used, &answer)
        }
        Stored::Sha2 { full } => {
            let v = CachingSha2Verifier::from_password(PW.as_bytes());
            if !full {
                let ok = v.verify(&nonce_used, &answer);
                if ok {
                    c.send(&[AUTH_MORE_DATA_HEADER, CACHING_SHA2_FAST_AUTH_OK]);
                }
                ok
            } else {
                // No cache entry: ask for the password; without TLS the client asks for our
                // RSA key and sends the password encrypted with it.
                c.send(&[AUTH_MORE_DATA_HEADER, CACHING_SHA2_PERFORM_FULL_AUTH]);
                let req = c.read().unwrap();
                assert_eq!(req, [CACHING_SHA2_REQUEST_PUBLIC_KEY]);
                let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
                let der = key.public_key().as_der().unwrap();
                let b64 = sumun_vault::crypto::b64(der.as_ref());
                let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
                for line in b64.as_bytes().chunks(64) {
                    pem.push_str(std::str::from_utf8(line).unwrap());
                    pem.push('\n');
                }
                pem.push_str("-----END PUBLIC KEY-----\n");
                let mut out = Vec::new();
                AuthMoreData {
                    data: pem.as_bytes(),
                }
                .write(&mut out);
                c.send(&out);
                let sealed = c.read().unwrap();
                let oaep = OaepPrivateDecryptingKey::new(key).unwrap();
                let mut plain = vec![0u8; sealed.len()];
                let plain = oaep
                    .decrypt(&OAEP_SHA1_MGF1SHA1, &sealed, &mut plain, None)
                    .unwrap();
                let clear: Vec<u8> = plain
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ nonce_used[i % nonce_used.len()])
                    .collect();
                v.verify_cleartext(&clear)
            }
        }
    };
    if !ok {
        c.send(&errors::access_denied(&seen.user, "localhost", true).payload());
        return seen;
    }
    seen.accepted = true;
    let mut out = Vec::new();
    OkPacket {
        status: SERVER_STATUS_AUTOCOMMIT,
        ..OkPacket::default()
    }
    .write(&mut out, caps);
    c.send(&out);
    // Commands: echo each query back as a one-row result set.
    while let Some(cmd) = {
        c.seq = 0;
        c.read()
    } {
        c.seq = 1;
        match Cmd::parse(&cmd).unwrap() {
            Cmd::Quit => break,
            Cmd::Query(sql) => {
                let sql = String::from_utf8_lossy(sql).into_owned();
                let mut out = Vec::new();
                write_text_result_set(
                    &mut out,
                    1,
                    caps,
                    &[ColumnDefinition::text("echo", 255)],
                    &[vec![Some(sql.as_bytes())]],
                    SERVER_STATUS_AUTOCOMMIT,
                );
                c.s.write_all(&out).unwrap();
                seen.queries.push(sql);
            }
            Cmd::InitDb(_) | Cmd::Ping => {
                let mut out = Vec::new();
                OkPacket {
                    status: SERVER_STATUS_AUTOCOMMIT,
                    ..OkPacket::default()
                }
                .write(&mut out, caps);
                c.send(&out);
            }
            other => {
                c.send(&err_payload(
                    1047,
                    b"08S01",
                    &format!("unknown command {other:?}"),
                ));
            }
        }
    }
    seen
}

/// Run `mariadb` against a one-connection server; the client's (stdout, stderr) and what the
/// server saw.
fn session(
    stored: Stored,
    greeting_plugin: &'static str,
    password: &str,
) -> (String, String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        // A guard against a hung test, not synchronisation.
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        serve(
            Conn {
                s,
                buf: Vec::new(),
                seq: 0,
            },
            stored,
            greeting_plugin,
        )
    });
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .args(["--protocol=TCP", "-h", "127.0.0.1", "-P", &port.to_string()])
        .args([
            "-u",
            "app",
            "--skip-ssl",
            "-N",
            "-B",
            "--connect-timeout=10",
        ])
        .args(["-e", "select 'sumun'"])
        .env("MYSQL_PWD", password)
        .output()
        .expect("the mariadb client runs");
    let seen = server.join().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        seen,
    )
}

#[test]
fn the_mariadb_client_logs_in_and_queries() {
    let cases = [
        (
            Stored::Native,
            MYSQL_NATIVE_PASSWORD,
            vec![MYSQL_NATIVE_PASSWORD],
        ),
        (
            Stored::Native,
            CACHING_SHA2_PASSWORD,
            vec![CACHING_SHA2_PASSWORD, MYSQL_NATIVE_PASSWORD],
        ),
        (
            Stored::Ed25519,
            MYSQL_NATIVE_PASSWORD,
            vec![MYSQL_NATIVE_PASSWORD, CLIENT_ED25519],
        ),
        (
            Stored::Sha2 { full: false },
            CACHING_SHA2_PASSWORD,
            vec![CACHING_SHA2_PASSWORD],
        ),
        (
            Stored::Sha2 { full: true },
            CACHING_SHA2_PASSWORD,
            vec![CACHING_SHA2_PASSWORD],
        ),
    ];
    for (stored, greeting, plugins) in cases {
        let (stdout, stderr, seen) = session(stored, greeting, PW);
        assert!(seen.accepted, "{stored:?}: {stderr}");
        assert_eq!(seen.plugins, plugins, "{stored:?}");
        assert_eq!(seen.user, "app");
        assert!(
            seen.attributes.iter().any(|(k, _)| k == "_client_name"),
            "{seen:?}"
        );
        assert_eq!(stdout.trim_end(), "select 'sumun'", "{stored:?}: {stderr}");
        assert_eq!(seen.queries, ["select 'sumun'"]);
    }
}

#[test]
fn a_wrong_password_gets_mysqls_error() {
    for stored in [
        Stored::Native,
        Stored::Ed25519,
        Stored::Sha2 { full: false },
    ] {
        let (stdout, stderr, seen) = session(stored, MYSQL_NATIVE_PASSWORD, "wrong");
        assert!(!seen.accepted);
        assert!(stdout.is_empty());
        assert!(
            stderr.contains("ERROR 1045 (28000): Access denied for user 'app'@'localhost' (using password: YES)"),
            "{stored:?}: {stderr}"
        );
    }
}
