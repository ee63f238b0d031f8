//! One backend connection: connect, log in with a vault credential (trust, cleartext, md5 or
//! SCRAM-SHA-256), and read the messages the gateway itself consumes (startup, resets, session
//! parameter `SET`s). The client never sees the credential or anything of the login.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use sumun_vault::SecretBytes;
use sumun_wire::postgres::{self as pg, auth, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::ServerStream;
pub use crate::backend_tls::TlsTo;
use sumun_config::{BackendAuth, BackendTls};
use zeroize::{Zeroize, Zeroizing};

/// The largest message the gateway reads whole from a server during login or a reset.
const MAX_CONTROL_MESSAGE: usize = 1 << 20;

/// A prepared statement's identity on servers: SHA-256 of its text and parameter types, so
/// two different statements never share a server-side name (a 64-bit hash could be made to
/// collide, and one client's Bind would then run another's statement).
pub type StatementId = [u8; 32];

pub struct ServerConn {
    pub stream: ServerStream,
    pub addr: SocketAddr,
    pub process_id: u32,
    pub secret_key: u32,
    /// Unique in the process (never 0): which connection a client was last shown on
    /// (`ClientInfo::attach`), without comparing addresses and keys.
    pub id: u64,
    /// Session parameters as the server last reported them (ParameterStatus), plus those the
    /// gateway set on it.
    pub params: HashMap<String, String>,
    pub created: Instant,
    pub last_used: Instant,
    /// Bytes read from the server but not yet consumed.
    pub pending: Vec<u8>,
    /// Set when the connection cannot be reused (protocol error, failed reset).
    pub broken: bool,
    /// The startup parameters last applied here (`None`: unknown, check them all). The same
    /// list (usually the very same `Arc`, profiles being interned) means no `SET` is needed.
    pub applied_for: Option<std::sync::Arc<[(String, String)]>>,
    /// The parameters the gateway `SET` here for its last client: the next client that does
    /// not set them gets them `RESET` to the server's defaults first.
    pub applied: Vec<String>,
    /// What the server reported at login (ParameterStatus, sorted, without
    /// `application_name`): shown to clients at their login, before any `SET`.
    pub reported: Vec<(String, String)>,
    /// How the server reads string literals (its `standard_conforming_strings`), for the SQL
    /// analysis and for masking literals in the audit log.
    pub dialect: sumun_wire::sql::Dialect,
    /// The prepared statements that exist on this connection, by identity.
    pub prepared: std::collections::HashSet<StatementId>,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("addr", &self.addr)
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connection to the server was lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("server sent a malformed message: {0}")]
    Protocol(String),
    /// The server answered with an error; `code` is its SQLSTATE.
    #[error("server refused: {message} (SQLSTATE {code})")]
    Refused {
        severity: String,
        code: String,
        message: String,
    },
    #[error("server asks for an authentication method the gateway does not speak ({0})")]
    UnsupportedAuth(u32),
    #[error(
        "no backend credential is configured for this user and the server asks for a password"
    )]
    NoPassword,
    #[error("TLS to the server: {0}")]
    Tls(String),
    /// The server did not prove what it must before getting a session.
    #[error("the server is not trusted: {0}")]
    Untrusted(String),
    /// The server asked for a way of logging in that the target group does not allow.
    #[error("{0}")]
    AuthPolicy(String),
}

impl ServerError {
    /// True when the failure says the password was wrong (try the previous version).
    pub fn is_bad_password(&self) -> bool {
        matches!(self, ServerError::Refused { code, .. } if code == "28P01")
    }

    /// True when the server did not prove itself or asked for a way of logging in the target
    /// group does not allow: a security event, never retried on the same terms.
    pub fn is_untrusted(&self) -> bool {
        matches!(self, ServerError::Untrusted(_) | ServerError::AuthPolicy(_))
    }

    /// True when the target itself failed (not the login), so another target may do better.
    pub fn is_target_failure(&self) -> bool {
        matches!(
            self,
            ServerError::Connect { .. }
                | ServerError::Timeout(_)
                | ServerError::Io(_)
                | ServerError::Tls(_)
        ) || matches!(self, ServerError::Refused { code, .. } if code.starts_with("57P") || code == "53300")
    }
}

/// How the gateway connects and logs in to one target: TLS and the login methods allowed.
#[derive(Debug, Clone)]
pub struct ServerPolicy {
    pub tls: Option<TlsTo>,
    pub auth: AuthPolicy,
}

impl ServerPolicy {
    pub fn for_target(group: &sumun_config::TargetGroup, address: &str) -> ServerPolicy {
        ServerPolicy {
            tls: TlsTo::for_target(group, address),
            auth: AuthPolicy::for_group(group),
        }
    }
}

/// SSLRequest, then a TLS handshake when the server agrees.
async fn start_tls(mut tcp: TcpStream, tls: &TlsTo) -> Result<ServerStream, ServerError> {
    let mut req = Vec::with_capacity(8);
    req.extend_from_slice(&8u32.to_be_bytes());
    req.extend_from_slice(&pg::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(ServerError::Tls(
            "the server does not accept TLS (it answered the SSLRequest with N)".into(),
        ));
    }
    let name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())
        .map_err(|e| ServerError::Tls(format!("bad server name {}: {e}", tls.server_name)))?;
    let connector =
        tokio_rustls::TlsConnector::from(tls.client_config().map_err(ServerError::Tls)?);
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(ServerStream::Tls(Box::new(stream)))
}

/// Who to log in as.
pub struct Login<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub password: Option<&'a SecretBytes>,
    /// What the server may ask for (`backend_auth`).
    pub policy: AuthPolicy,
}

/// The ways of proving the password a target group allows (`backend_auth`). Cleartext also
/// needs a server verified by TLS, whatever the list says.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthPolicy {
    pub scram: bool,
    pub md5: bool,
    pub password: bool,
    pub none: bool,
}

impl AuthPolicy {
    pub fn for_group(group: &sumun_config::TargetGroup) -> AuthPolicy {
        let has = |m| group.backend_auth.contains(&m);
        AuthPolicy {
            scram: has(BackendAuth::ScramSha256),
            md5: has(BackendAuth::Md5),
            password: has(BackendAuth::Password) && group.backend_tls == BackendTls::VerifyFull,
            none: has(BackendAuth::None),
        }
    }
}

/// Where a login is in its exchange with the server.
#[derive(Debug)]
enum AuthState {
    /// Nothing asked yet.
    Start,
    /// In SCRAM: the server has not yet proven itself.
    Scram(Box<ScramStep>),
    /// The exchange allowed by the policy completed (SCRAM: the server's signature is right).
    Proven,
    /// AuthenticationOk received: the session's messages follow.
    Done,
}

enum ScramStep {
    /// client-first sent.
    Sent(sumun_vault::scram::ScramClient),
    /// client-final sent; the server's signature is expected.
    Answered(sumun_vault::scram::ScramClient),
}

impl std::fmt::Debug for ScramStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScramStep::Sent(_) => "Sent",
            ScramStep::Answered(_) => "Answered",
        })
    }
}

impl ServerConn {
    pub async fn connect(
        addr: SocketAddr,
        login: &Login<'_>,
        timeout: std::time::Duration,
        proxy_header: Option<&[u8]>,
        tls: Option<&TlsTo>,
    ) -> Result<ServerConn, ServerError> {
        let mut tcp = match crate::workers::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ServerError::Timeout(addr)),
            Ok(Err(source)) => return Err(ServerError::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let opened = crate::workers::timeout(timeout, async {
            if let Some(h) = proxy_header {
                tcp.write_all(h).await?;
            }
            match tls {
                None => Ok(ServerStream::Plain(tcp)),
                Some(t) => start_tls(tcp, t).await,
            }
        })
        .await;
        let stream = match opened {
            Err(_) => return Err(ServerError::Timeout(addr)),
            Ok(r) => r?,
        };
        let now = Instant::now();
        let mut conn = ServerConn {
            stream,
            addr,
            process_id: 0,
            secret_key: 0,
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            params: HashMap::new(),
            created: now,
            last_used: now,
            pending: Vec::with_capacity(1024),
            broken: false,
            applied_for: None,
            applied: Vec::new(),
            reported: Vec::new(),
            dialect: sumun_wire::sql::Dialect::STANDARD,
            prepared: Default::default(),
        };
        match crate::workers::timeout(timeout, conn.login(login)).await {
            Err(_) => Err(ServerError::Timeout(addr)),
            Ok(r) => r.map(|()| conn),
        }
    }

    /// Log in, trusting the server only as far as it proves itself: with a password to
    /// protect, AuthenticationOk counts only after an exchange `backend_auth` allows has
    /// completed — for SCRAM, after the server's signature checked out — and nothing else
    /// (ParameterStatus, BackendKeyData, ReadyForQuery) is accepted before it.
    async fn login(&mut self, login: &Login<'_>) -> Result<(), ServerError> {
        let mut w = Writer::new();
        w.startup(&[
            ("user", login.user),
            ("database", login.database),
            ("application_name", "sumun"),
        ]);
        self.stream.send(&w.buf).await?;
        let mut state = AuthState::Start;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' if !matches!(state, AuthState::Done) => {
                    if body.len() < 4 {
                        return Err(ServerError::Protocol("short authentication request".into()));
                    }
                    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    state = self.auth_step(login, state, code, &body[4..]).await?;
                }
                b'E' => return Err(refused(&body)),
                b'N' => {}
                _ if !matches!(state, AuthState::Done) => {
                    return Err(ServerError::Untrusted(format!(
                        "the server sent '{}' before the login completed",
                        pg::Tag(tag)
                    )))
                }
                b'S' => self.note_parameter(&body),
                b'K' if body.len() == 8 => {
                    self.process_id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    self.secret_key = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'Z' => {
                    let mut reported: Vec<(String, String)> = self
                        .params
                        .iter()
                        .filter(|(k, _)| k.as_str() != "application_name")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    reported.sort();
                    self.reported = reported;
                    return Ok(());
                }
                other => {
                    return Err(ServerError::Protocol(format!(
                        "unexpected message '{}' during login",
                        pg::Tag(other)
                    )))
                }
            }
        }
    }

    /// One authentication request from the server, answered as `backend_auth` allows.
    async fn auth_step(
        &mut self,
        login: &Login<'_>,
        state: AuthState,
        code: u32,
        data: &[u8],
    ) -> Result<AuthState, ServerError> {
        let policy = &login.policy;
        let mut w = Writer::new();
        let next = match (code, state) {
            (auth::OK, AuthState::Proven) => return Ok(AuthState::Done),
            (auth::OK, AuthState::Start) if login.password.is_none() || policy.none => {
                return Ok(AuthState::Done)
            }
            (auth::OK, AuthState::Start) => {
                return Err(ServerError::Untrusted(
                    "the server let the gateway in without asking for the password, so it proved nothing (trust authentication, or not the real server); list \"none\" in the target group's backend_auth to allow it".into(),
                ))
            }
            (auth::OK, AuthState::Scram(_)) => {
                return Err(ServerError::Untrusted(
                    "the server ended SCRAM without its signature: it did not prove it knows the password".into(),
                ))
            }
            (auth::CLEARTEXT, AuthState::Start) => {
                if !policy.password {
                    return Err(ServerError::AuthPolicy(
                        "the server asks for the password in cleartext, which the gateway sends only to a server verified by TLS (tls = \"verify-full\") whose target group's backend_auth allows \"password\"".into(),
                    ));
                }
                let pw = login.password.ok_or(ServerError::NoPassword)?;
                w.password(pw.expose());
                AuthState::Proven
            }
            (auth::MD5, AuthState::Start) => {
                if !policy.md5 {
                    return Err(ServerError::AuthPolicy(
                        "the server asks for md5 password authentication, which the target group's backend_auth does not allow (add \"md5\" to it for a legacy server, or store the role's password as SCRAM)".into(),
                    ));
                }
                let pw = login.password.ok_or(ServerError::NoPassword)?;
                if data.len() < 4 {
                    return Err(ServerError::Protocol("md5 request without salt".into()));
                }
                let answer = md5_password(login.user, pw.expose(), &data[..4]);
                w.password(&answer[..]);
                AuthState::Proven
            }
            (auth::SASL, AuthState::Start) => {
                if !policy.scram {
                    return Err(ServerError::AuthPolicy(
                        "the server asks for SCRAM-SHA-256, which the target group's backend_auth does not allow".into(),
                    ));
                }
                login.password.ok_or(ServerError::NoPassword)?;
                let offers_scram = data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                if !offers_scram {
                    return Err(ServerError::UnsupportedAuth(code));
                }
                let client = sumun_vault::scram::ScramClient::new()
                    .map_err(|e| ServerError::Protocol(e.to_string()))?;
                w.sasl_initial_response("SCRAM-SHA-256", client.client_first().as_bytes());
                AuthState::Scram(Box::new(ScramStep::Sent(client)))
            }
            (auth::SASL_CONTINUE, AuthState::Scram(step)) => {
                let ScramStep::Sent(mut client) = *step else {
                    return Err(ServerError::Untrusted("a second SASL continue".into()));
                };
                let pw = login.password.ok_or(ServerError::NoPassword)?;
                let server_first = std::str::from_utf8(data)
                    .map_err(|_| ServerError::Protocol("SASL data is not UTF-8".into()))?;
                let first = client
                    .server_first(server_first)
                    .map_err(|e| ServerError::Protocol(format!("SCRAM: {e}")))?;
                let salted = crate::kdf::salted_password(pw, &first.salt, first.iterations)
                    .await
                    .map_err(|e| ServerError::Protocol(e.to_string()))?;
                let fin = client.client_final_salted(&first, &salted);
                w.sasl_response(fin.as_bytes());
                AuthState::Scram(Box::new(ScramStep::Answered(client)))
            }
            (auth::SASL_FINAL, AuthState::Scram(step)) => {
                let ScramStep::Answered(client) = *step else {
                    return Err(ServerError::Untrusted("SASL final before the exchange".into()));
                };
                let server_final = std::str::from_utf8(data)
                    .map_err(|_| ServerError::Protocol("SASL data is not UTF-8".into()))?;
                client.verify_server_final(server_final).map_err(|_| {
                    ServerError::Untrusted(
                        "the server's SCRAM signature is wrong: it does not know the password (a server in the middle?)".into(),
                    )
                })?;
                return Ok(AuthState::Proven);
            }
            (
                auth::CLEARTEXT | auth::MD5 | auth::SASL | auth::SASL_CONTINUE | auth::SASL_FINAL,
                _,
            ) => {
                return Err(ServerError::Untrusted(format!(
                    "the server sent authentication request {code} out of order"
                )))
            }
            (other, _) => return Err(ServerError::UnsupportedAuth(other)),
        };
        self.stream.send(&w.buf).await?;
        // The password went out in `w` (cleartext or md5): wipe it.
        zeroize::Zeroize::zeroize(&mut w.buf);
        Ok(next)
    }

    pub fn note_parameter(&mut self, body: &[u8]) {
        if let Some((name, rest)) = pg::cstr(body) {
            if let Some((value, _)) = pg::cstr(rest) {
                if name == b"standard_conforming_strings" {
                    self.dialect.standard_conforming_strings = value != b"off";
                }
                self.params.insert(
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
    }

    /// Read one whole message (for login, resets and SETs; the relay reads in bulk instead).
    pub async fn read_message(&mut self) -> Result<(u8, Vec<u8>), ServerError> {
        loop {
            match pg::message(&self.pending, MAX_CONTROL_MESSAGE)
                .map_err(|e| ServerError::Protocol(e.to_string()))?
            {
                Some((m, used)) => {
                    let out = (m.tag, m.body.to_vec());
                    self.pending.drain(..used);
                    return Ok(out);
                }
                None => {
                    let n =
                        crate::relay::read_append(&mut self.stream, &mut self.pending, 64 * 1024)
                            .await?;
                    if n == 0 {
                        return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// Run `sql` as a simple query and wait for ReadyForQuery; the first error is returned.
    /// Parameter changes it causes are noted.
    pub async fn simple(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut w = Writer::new();
        w.query(sql);
        self.stream.send(&w.buf).await?;
        let mut error = None;
        let mut rows = Vec::new();
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'S' => self.note_parameter(&body),
                b'E' => error = Some(refused(&body)),
                b'D' => rows.push(data_row(&body)),
                b'Z' => {
                    return match error {
                        Some(e) => Err(e),
                        None if body.first() == Some(&b'I') => Ok(rows),
                        None => Err(ServerError::Protocol(
                            "server is inside a transaction after a control query".into(),
                        )),
                    }
                }
                _ => {}
            }
        }
    }

    pub async fn terminate(mut self) {
        let mut w = Writer::new();
        w.terminate();
        let _ = crate::workers::timeout(std::time::Duration::from_secs(1), async {
            let _ = self.stream.send(&w.buf).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    if body.len() < 2 {
        return out;
    }
    let n = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    for _ in 0..n {
        if at + 4 > body.len() {
            break;
        }
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let end = (at + len as usize).min(body.len());
        out.push(Some(String::from_utf8_lossy(&body[at..end]).into_owned()));
        at = end;
    }
    out
}

fn refused(body: &[u8]) -> ServerError {
    let f = pg::error_fields(body);
    ServerError::Refused {
        severity: f.severity,
        code: f.code,
        message: f.message,
    }
}

/// `md5` + hex(md5(hex(md5(password + user)) + salt)), PostgreSQL's md5 password response.
/// Every intermediate is password-equivalent for md5 servers, so each one is wiped.
fn md5_password(user: &str, password: &[u8], salt: &[u8]) -> Zeroizing<Vec<u8>> {
    use md5::{Digest, Md5};
    let mut inner = Md5::new();
    inner.update(password);
    inner.update(user.as_bytes());
    let mut digest = inner.finalize();
    let mut outer = Zeroizing::new(Vec::with_capacity(32 + salt.len()));
    hex_into(&digest, &mut outer);
    digest.as_mut_slice().zeroize();
    outer.extend_from_slice(salt);
    let mut answer = Zeroizing::new(Vec::with_capacity(35));
    answer.extend_from_slice(b"md5");
    hex_into(&Md5::digest(&outer[..]), &mut answer);
    answer
}

fn hex_into(d: &[u8], out: &mut Vec<u8>) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for b in d {
        out.push(H[(b >> 4) as usize]);
        out.push(H[(b & 15) as usize]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn md5_answer_is_what_postgresql_expects() {
        // PostgreSQL: 'md5' || md5(md5('secret' || 'app') || salt), computed with psql's
        // md5() for password "secret", user "app", salt 01 02 03 04.
        let answer = super::md5_password("app", b"secret", &[1, 2, 3, 4]);
        assert_eq!(
            std::str::from_utf8(&answer).unwrap(),
            "md5911f527656472583a006e7727877b33e"
        );
    }
}
