//! User names cannot be probed through the PostgreSQL listener's client authentication: for
//! each way `[[users]]` may be configured, a known user with a wrong password and a name no
//! user has go through the same exchange (the same authentication requests, the same SASL
//! mechanisms and iteration count, one salt per name that does not change) and are refused with
//! the same error. And the vault is watched: a change made with the vault API the CLI uses
//! reaches logins within the watch period, without a login ever reading the disk.
//! A real PostgreSQL behind a real gateway; the client side is spoken by hand.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestDir, TestGateway};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sumun_testkit::{PgOptions, Postgres};
use sumun_vault::scram::ScramClient;
use sumun_vault::{LocalMasterKey, SecretBytes, Vault};
use sumun_wire::postgres::{self as pg, Writer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const BACKEND_PASSWORD: &str = "backend-Secret-1";
const AUDIENCE: &str = "sumun-trust";
const ALICE_PASSWORD: &str = "alice-pw-1";

// ---------------------------------------------------------------------------------------------
// Set-up

struct Setup {
    _pg: Postgres,
    gw: TestGateway,
    /// The CA of the gateway's server certificate.
    ca: PathBuf,
    /// A client certificate (PEM, key) for `erin` from the CA the `pgm` listener trusts.
    erin: (String, String),
}

impl Setup {
    fn vault(&self) -> Vault {
        let key = LocalMasterKey::from_key_file(&self.gw.dir.path("master.key")).expect("key");
        Vault::open_with(&self.gw.dir.path("vault"), Box::new(key)).expect("open vault")
    }
}

/// A PostgreSQL, a vault (backend secret `pg/app`; `alice` and `dave` with passwords) and a
/// gateway with listener `pg` (TLS optional, no client certificates) and `pgm` (TLS required,
/// client certificates from their own CA), with the given `[[users]]`.
async fn setup(users: &str) -> Setup {
    let pg = Postgres::start_async(PgOptions {
        password_auth: true,
        users: vec![("app".into(), BACKEND_PASSWORD.into())],
        databases: vec!["appdb".into()],
        ..PgOptions::default()
    })
    .await
    .expect("start postgres");
    pg.psql("ALTER DATABASE appdb OWNER TO app").expect("owner");
    let dir = TestDir::new("trust");
    let ca = common::dev_certs(&dir.0);
    let clients = sumun_pki::DevPki::generate(&[], 30).expect("client CA");
    std::fs::write(dir.path("clients-ca.pem"), clients.ca_cert_pem()).expect("client CA");
    let erin = clients.issue_client_cert("erin").expect("client cert");
    let mut vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    for (user, password) in [("alice", ALICE_PASSWORD), ("dave", "dave-pw-1")] {
        vault
            .set_user_password(user, &SecretBytes::from_slice(password.as_bytes()))
            .expect("set password");
    }
    drop(vault);
    let toml = format!(
        r#"
[gateway]
name = "{AUDIENCE}"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
[tls.default]
cert = "{{dir}}/certs/server.pem"
key = "{{dir}}/certs/server-key.pem"
[tls.mtls]
cert = "{{dir}}/certs/server.pem"
key = "{{dir}}/certs/server-key.pem"
client_ca = "{{dir}}/clients-ca.pem"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
[[listeners]]
name = "pg"
bind = "127.0.0.1:0"
protocol = "postgres"
tls = "optional"
tls_config = "default"
target_group = "pg"
security_groups = ["local"]
[[listeners]]
name = "pgm"
bind = "127.0.0.1:0"
protocol = "postgres"
tls = "required"
tls_config = "mtls"
target_group = "pg"
security_groups = ["local"]
[[target_groups]]
name = "pg"
health_check = {{ enabled = false }}
targets = [{{ address = "{addr}" }}]
{users}
[audit]
path = "{{dir}}/audit.jsonl"
"#,
        addr = pg.addr()
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    Setup {
        _pg: pg,
        gw,
        ca,
        erin: (erin.cert_pem, erin.key_pem),
    }
}

fn user(name: &str, auth: &str) -> String {
    format!("[[users]]\nname = \"{name}\"\nauth = {auth}\nbackend_credential = \"pg/app\"\n")
}

// ---------------------------------------------------------------------------------------------
// A client that records what the gateway asks

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone, Copy)]
enum Via<'a> {
    Plain,
    Tls,
    /// TLS with a client certificate (PEM, key).
    TlsCert(&'a (String, String)),
}

/// What one login attempt saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transcript {
    /// The authentication request codes, in order (3 cleartext, 10 SASL, 11, 12, 0 OK).
    requests: Vec<u32>,
    /// The SASL mechanisms offered.
    mechanisms: Vec<String>,
    /// SCRAM's `i=` and `s=` from the server-first message.
    iterations: Option<u32>,
    salt: Option<String>,
    /// The refusal: severity, SQLSTATE and message with the user name written `U`.
    error: Option<(String, String, String)>,
}

impl Transcript {
    /// Everything but the salt's value (a real user's and a stand-in's differ by nature).
    fn shape(&self) -> Transcript {
        Transcript {
            salt: self.salt.as_ref().map(|s| "#".repeat(s.len())),
            ..self.clone()
        }
    }
}

async fn connect(addr: SocketAddr, ca: &Path, via: Via<'_>) -> Box<dyn Io> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let cert = match via {
        Via::Plain => return Box::new(tcp),
        Via::Tls => None,
        Via::TlsCert(c) => Some(c),
    };
    let mut req = Vec::new();
    req.extend_from_slice(&8u32.to_be_bytes());
    req.extend_from_slice(&pg::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&req).await.expect("SSLRequest");
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"S");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("pem")).expect("add");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((c, k)) => {
            let chain = CertificateDer::pem_slice_iter(c.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(k.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    Box::new(tls)
}

async fn next_message(stream: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    loop {
        if let Some((m, used)) = pg::message(buf, 1 << 20).expect("framing") {
            let out = (m.tag, m.body.to_vec());
            buf.drain(..used);
            return Some(out);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("an answer within 30 s");
        match n {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Log in as `user` to database `appdb` with `password`, answering whatever the gateway asks
/// (a cleartext password, or SCRAM-SHA-256 without channel binding), and record it.
async fn attempt(
    addr: SocketAddr,
    ca: &Path,
    via: Via<'_>,
    user: &str,
    password: &str,
) -> Transcript {
    let mut stream = connect(addr, ca, via).await;
    let mut w = Writer::new();
    w.startup(&[("user", user), ("database", "appdb")]);
    stream.write_all(&w.buf).await.expect("startup");
    let mut t = Transcript {
        requests: Vec::new(),
        mechanisms: Vec::new(),
        iterations: None,
        salt: None,
        error: None,
    };
    let mut scram: Option<ScramClient> = None;
    let mut buf = Vec::new();
    while let Some((tag, body)) = next_message(&mut stream, &mut buf).await {
        match tag {
            b'R' => {
                let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                t.requests.push(code);
                let data = &body[4..];
                let mut w = Writer::new();
                match code {
                    3 => w.password(password.as_bytes()),
                    10 => {
                        t.mechanisms = data
                            .split(|b| *b == 0)
                            .filter(|m| !m.is_empty())
                            .map(|m| String::from_utf8_lossy(m).into_owned())
                            .collect();
                        let client = ScramClient::new().expect("scram client");
                        w.sasl_initial_response("SCRAM-SHA-256", client.client_first().as_bytes());
                        scram = Some(client);
                    }
                    11 => {
                        let first = std::str::from_utf8(data).expect("server-first");
                        for part in first.split(',') {
                            if let Some(s) = part.strip_prefix("s=") {
                                t.salt = Some(s.to_string());
                            } else if let Some(i) = part.strip_prefix("i=") {
                                t.iterations = Some(i.parse().expect("iterations"));
                            }
                        }
                        let fin = scram
                            .as_mut()
                            .expect("SASL started")
                            .client_final(first, password.as_bytes())
                            .expect("client-final");
                        w.sasl_response(fin.as_bytes());
                    }
                    _ => {}
                }
                if !w.buf.is_empty() {
                    stream.write_all(&w.buf).await.expect("answer");
                }
            }
            b'E' => {
                let f = pg::error_fields(&body);
                let message = f.message.replace(&format!("\"{user}\""), "\"U\"");
                t.error = Some((f.severity, f.code, message));
                break;
            }
            b'Z' => break,
            _ => {}
        }
    }
    t
}

/// A known user with a wrong password and unknown names (twice the same) see the same thing;
/// returns the unknown name's transcript.
async fn same_for_known_and_unknown(
    s: &Setup,
    listener: &str,
    via: Via<'_>,
    known: &str,
    wrong: &str,
) -> Transcript {
    let addr = s.gw.addr(listener);
    let known_t = attempt(addr, &s.ca, via, known, wrong).await;
    let unknown = attempt(addr, &s.ca, via, "mallory", wrong).await;
    let again = attempt(addr, &s.ca, via, "mallory", "another guess").await;
    let other = attempt(addr, &s.ca, via, "mallet", wrong).await;
    assert!(known_t.error.is_some(), "{known}: {known_t:?}");
    assert_eq!(
        known_t.shape(),
        unknown.shape(),
        "{known} against an unknown name"
    );
    assert_eq!(unknown, again, "the same unknown name twice");
    assert_eq!(
        known_t.shape(),
        other.shape(),
        "{known} against another unknown name"
    );
    if unknown.salt.is_some() {
        assert_ne!(unknown.salt, other.salt, "every name has its own salt");
    }
    unknown
}

const PASSWORD_FAILED: &str = "password authentication failed for user \"U\"";

fn password_failed() -> Option<(String, String, String)> {
    Some(("FATAL".into(), "28P01".into(), PASSWORD_FAILED.into()))
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_only_users_and_unknown_names_get_the_same_sasl_exchange() {
    let s = setup(&format!(
        "{}{}{}",
        user("alice", r#"["scram"]"#),
        user("dave", r#"["scram"]"#),
        // Configured, but no password was ever set for him.
        user("nopw", r#"["scram"]"#)
    ))
    .await;
    let addr = s.gw.addr("pg");
    // alice is real: her own password logs her in.
    let ok = attempt(addr, &s.ca, Via::Tls, "alice", ALICE_PASSWORD).await;
    assert_eq!(
        (ok.requests.as_slice(), &ok.error),
        (&[10, 11, 12, 0][..], &None)
    );

    for via in [Via::Plain, Via::Tls] {
        let unknown = same_for_known_and_unknown(&s, "pg", via, "alice", "wrong").await;
        assert_eq!(unknown.requests, [10, 11], "SASL to the end");
        assert_eq!(unknown.iterations, Some(4096));
        assert_eq!(unknown.error, password_failed());
        let nopw = attempt(addr, &s.ca, via, "nopw", "wrong").await;
        assert_eq!(nopw.shape(), unknown.shape(), "a user without a password");
    }
    let plus = attempt(addr, &s.ca, Via::Tls, "mallory", "x").await;
    assert_eq!(plus.mechanisms, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);

    // The stand-in salt comes from the vault's secret, not from the name alone: another
    // gateway with another vault gives the same name another salt (as it would a real user).
    let other = setup(&user("alice", r#"["scram"]"#)).await;
    let here = attempt(addr, &s.ca, Via::Plain, "mallory", "x").await;
    let there = attempt(other.gw.addr("pg"), &other.ca, Via::Plain, "mallory", "x").await;
    assert!(here.salt.is_some() && there.salt.is_some());
    assert_ne!(
        here.salt, there.salt,
        "a salt anyone could compute from the name"
    );

    let audit = s.gw.audit_log();
    assert!(audit.contains("\"reason\":\"unknown_user\""), "{audit}");
    assert!(audit.contains("\"reason\":\"no_password_set\""), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_scram_users_unknown_names_and_cert_only_users_without_one_look_alike() {
    let s = setup(&format!(
        "{}{}{}",
        user("alice", r#"["token", "scram"]"#),
        user("dave", r#"["token", "scram"]"#),
        // A minority that can only log in with a certificate.
        user("carl", r#"["cert"]"#)
    ))
    .await;
    let addr = s.gw.addr("pg");
    let ok = attempt(addr, &s.ca, Via::Tls, "alice", ALICE_PASSWORD).await;
    assert_eq!((ok.requests.as_slice(), &ok.error), (&[3, 0][..], &None));
    let token = common::token(&s.vault(), "alice", AUDIENCE);
    let ok = attempt(addr, &s.ca, Via::Tls, "alice", &token).await;
    assert_eq!((ok.requests.as_slice(), &ok.error), (&[3, 0][..], &None));

    // Over TLS a cleartext password (a token or a password), over plain text SCRAM.
    for (via, requests) in [(Via::Tls, vec![3]), (Via::Plain, vec![10, 11])] {
        let unknown = same_for_known_and_unknown(&s, "pg", via, "alice", "wrong").await;
        assert_eq!(unknown.requests, requests);
        assert_eq!(unknown.error, password_failed());
        // carl without a certificate is told what an unknown name is told.
        let carl = attempt(addr, &s.ca, via, "carl", "wrong").await;
        assert_eq!(carl.shape(), unknown.shape(), "a cert-only user");
    }
    // A token for someone else, presented as an unknown name and as a known one.
    let bob_token = common::token(&s.vault(), "bob", AUDIENCE);
    let known = attempt(addr, &s.ca, Via::Tls, "alice", &bob_token).await;
    let unknown = attempt(addr, &s.ca, Via::Tls, "mallory", &bob_token).await;
    assert_eq!(known, unknown);

    // The time a refusal takes, reported, not asserted: the unknown name does the same work
    // (the password's key derivation against a stand-in verifier, the token's signature).
    for (via, what) in [(Via::Tls, "cleartext"), (Via::Plain, "SCRAM")] {
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..30 {
            for (i, name) in ["alice", "mallory"].into_iter().enumerate() {
                let started = Instant::now();
                let t = attempt(addr, &s.ca, via, name, "wrong").await;
                assert!(t.error.is_some());
                if round >= 5 {
                    times[i].push(started.elapsed());
                }
            }
        }
        for t in &mut times {
            t.sort();
        }
        eprintln!(
            "{what}: median refusal known {:?}, unknown {:?}",
            times[0][times[0].len() / 2],
            times[1][times[1].len() / 2]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_only_users_and_unknown_names_get_the_same_cleartext_request() {
    let s = setup(&format!(
        "{}{}",
        user("bob", r#"["token"]"#),
        user("ops", r#"["token"]"#)
    ))
    .await;
    for via in [Via::Plain, Via::Tls] {
        let unknown = same_for_known_and_unknown(&s, "pg", via, "bob", "not-a-token").await;
        assert_eq!(unknown.requests, [3]);
        assert_eq!(unknown.error, password_failed());
        let expired = s
            .vault()
            .token_signer()
            .expect("signer")
            .issue(
                "bob",
                None,
                AUDIENCE,
                sumun_vault::store::now_unix_secs() - 3600,
                60,
            )
            .expect("issue");
        let expired = expired.expose_str().expect("utf8");
        same_for_known_and_unknown(&s, "pg", via, "bob", expired).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_only_users_and_unknown_names_are_refused_alike() {
    let s = setup(&format!(
        "{}{}",
        user("carl", r#"["cert"]"#),
        user("erin", r#"["cert"]"#)
    ))
    .await;
    // erin's certificate logs her in, with no exchange.
    let ok = attempt(s.gw.addr("pgm"), &s.ca, Via::TlsCert(&s.erin), "erin", "").await;
    assert_eq!((ok.requests.as_slice(), &ok.error), (&[0][..], &None));

    // No certificate: refused at once, no password asked, as PostgreSQL's cert method does.
    for via in [Via::Plain, Via::Tls] {
        let unknown = same_for_known_and_unknown(&s, "pg", via, "carl", "").await;
        assert_eq!(unknown.requests, Vec::<u32>::new());
        assert_eq!(
            unknown.error,
            Some((
                "FATAL".into(),
                "28000".into(),
                "connection requires a valid client certificate".into()
            ))
        );
    }
    // Someone else's certificate.
    let unknown = same_for_known_and_unknown(&s, "pgm", Via::TlsCert(&s.erin), "carl", "").await;
    assert_eq!(
        unknown.error,
        Some((
            "FATAL".into(),
            "28000".into(),
            "certificate authentication failed for user \"U\"".into()
        ))
    );
}

/// Polls `login` every 50 ms until it succeeds; the time it took, or `None` by `within`.
async fn logs_in_within(
    within: Duration,
    mut login: impl AsyncFnMut() -> Transcript,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let t = login().await;
        if t.error.is_none() && t.requests.last() == Some(&0) {
            return Some(started.elapsed());
        }
        if started.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_changes_reach_logins_within_the_watch_period() {
    let s = setup(&format!(
        "{}{}",
        user("newbie", r#"["scram"]"#),
        user("bob", r#"["token"]"#)
    ))
    .await;
    let addr = s.gw.addr("pg");
    let refused = attempt(addr, &s.ca, Via::Plain, "newbie", "newbie-pw").await;
    assert_eq!(refused.error, password_failed());

    // `sumun users set-password newbie`, as the CLI does it.
    s.vault()
        .set_user_password("newbie", &SecretBytes::from_slice(b"newbie-pw"))
        .expect("set password");
    let took = logs_in_within(Duration::from_secs(3), async || {
        attempt(addr, &s.ca, Via::Plain, "newbie", "newbie-pw").await
    })
    .await
    .expect("the new password works within 3 s");
    eprintln!("users set-password reached logins after {took:?}");

    // `sumun keys rotate`, then a token signed with the new key.
    let mut vault = s.vault();
    vault.rotate_keys(3600).expect("rotate keys");
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let took = logs_in_within(Duration::from_secs(3), async || {
        attempt(addr, &s.ca, Via::Plain, "bob", &token).await
    })
    .await
    .expect("a token of the new key verifies within 3 s");
    eprintln!("keys rotate reached logins after {took:?}");
    // And the rotated vault still knows newbie's password.
    let t = attempt(addr, &s.ca, Via::Plain, "newbie", "newbie-pw").await;
    assert_eq!(t.error, None);
}
