//! The gateway's side of a server connection: connect, TLS, and the login with a vault
//! credential, in which the server gets no password it could read unless TLS verified it.
//! Also the health check (`health_check = { protocol = "mysql" }`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sumun_config::{BackendTls, TargetGroup};
use sumun_vault::mysql as scramble;
use sumun_vault::SecretBytes;
use sumun_wire::mysql::codec::Reader;
use sumun_wire::mysql::flags::*;
use sumun_wire::mysql::handshake::{
    auth_packet_kind, AuthPacket, CACHING_SHA2_FAST_AUTH_OK, CACHING_SHA2_PASSWORD,
    CACHING_SHA2_PERFORM_FULL_AUTH, CLIENT_ED25519, MYSQL_CLEAR_PASSWORD, MYSQL_NATIVE_PASSWORD,
};
use sumun_wire::mysql::{
    AuthMoreData, AuthSwitchRequest, Capabilities, ErrPacket, HandshakeResponse, HandshakeV10,
    OkPacket, SslRequest,
};
use tokio::net::TcpStream;

use super::io::{Packets, ServerStream, Stream};
use super::{MysqlFrontEnd, ServerHello};
use crate::backend_tls::TlsTo;
use crate::conn::{Admitted, TargetActive};
use crate::health::{Learned, ProbeFailure};
use crate::listener::ListenerSnapshot;
use crate::targets::TargetRt;
use crate::Shared;

/// What a client's capabilities may include that the server must also have for its answers
/// to be relayed unchanged: everything but what the connection phase itself settles
/// (`CLIENT_MYSQL`, a.k.a. `CLIENT_LONG_PASSWORD`, is what MariaDB clears to announce its
/// extended capabilities).
const SETTLED_AT_LOGIN: u64 = CLIENT_MYSQL
    | CLIENT_SSL
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SECURE_CONNECTION
    | CLIENT_COMPRESS
    | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS;

/// The capabilities a server connection's answers are relayed under: the client's, without
/// what the login settles.
pub(super) fn relayed(caps: Capabilities) -> u64 {
    caps.0 & !SETTLED_AT_LOGIN
}

/// A logged-in server connection.
pub(super) struct Connected {
    pub packets: Packets<ServerStream>,
    pub target: Arc<TargetRt>,
    /// The server's own connection id.
    pub thread_id: u32,
    /// The server's OK at the end of the login, passed on to the client.
    pub ok: Vec<u8>,
    /// Counts the connection in its target's active flows.
    pub _active: TargetActive,
}

/// Why no server could be logged in to: what the client is told.
#[derive(Debug)]
pub(super) struct ServerFail {
    pub code: u16,
    pub sql_state: [u8; 5],
    pub message: String,
    /// For the flow's `session.end`.
    pub end: &'static str,
}

impl ServerFail {
    fn gateway(message: String) -> ServerFail {
        // 2013-style "lost connection" is a client code; servers say 1105 for the unknown.
        ServerFail {
            code: 1105,
            sql_state: *b"HY000",
            message,
            end: "no_backend",
        }
    }

    fn untrusted(message: String) -> ServerFail {
        ServerFail {
            code: 1105,
            sql_state: *b"HY000",
            message,
            end: "backend_untrusted",
        }
    }
}

/// What to log in with.
struct Login<'a> {
    user: &'a str,
    password: Option<&'a SecretBytes>,
    database: &'a str,
    caps: Capabilities,
    charset: u8,
    attributes: &'a [u8],
}

/// Connect to a writable target of the listener's group (trying `connect_retries` more when
/// one cannot be reached) and log in with the account's vault credential: a session-mode
/// client's own server.
#[allow(clippy::too_many_arguments)] // the connection's facts, each used once
pub(super) async fn connect(
    fe: &MysqlFrontEnd,
    shared: &Shared,
    snap: &ListenerSnapshot,
    admitted: &Admitted,
    account: &sumun_config::User,
    database: &str,
    caps: Capabilities,
    charset: u8,
    attributes: &[u8],
) -> Result<Connected, ServerFail> {
    let name = account.backend_credential.as_deref().ok_or_else(|| {
        ServerFail::gateway(format!(
            "user '{}' has no backend_credential to log in to the server with",
            account.name
        ))
    })?;
    let group = snap.group.settings();
    let mut tried = Vec::new();
    let mut last = ServerFail::gateway("no healthy backend server is available".into());
    for _ in 0..=group.connect_retries {
        let Some(target) = snap.group.pick_for(&tried, crate::targets::Want::Writer) else {
            break;
        };
        tried.push(target.addr);
        let login = open_on(
            fe, shared, &group, &target, name, database, caps, charset, attributes,
        )
        .await;
        match login {
            Ok((packets, thread_id, ok)) => {
                *admitted
                    .flow
                    .target
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(target.addr);
                target.flows_total.fetch_add(1, Ordering::Relaxed);
                return Ok(Connected {
                    packets,
                    _active: TargetActive::new(&target),
                    target,
                    thread_id,
                    ok,
                });
            }
            // The target could not be reached: another may be.
            Err(fail) if fail.end == "no_backend" => last = fail,
            Err(fail) => return Err(fail),
        }
    }
    Err(last)
}

/// The login on a fresh connection: greeting, TLS, response, the plugin exchange.
async fn login_on(
    fe: &MysqlFrontEnd,
    stream: TcpStream,
    group: &TargetGroup,
    group_name: &str,
    address: &str,
    login: &Login<'_>,
) -> Result<(Packets<ServerStream>, u32, Vec<u8>), ServerFail> {
    let lost = |e: super::io::PacketError| {
        ServerFail::gateway(format!("the server at {address} failed during login: {e}"))
    };
    let _ = stream.set_nodelay(true);
    let mut server = Packets::new(Stream::Plain(stream));
    let greeting = server.read().await.map_err(lost)?;
    if auth_packet_kind(&greeting) == AuthPacket::Err {
        return Err(server_err(&greeting, address));
    }
    let hs = HandshakeV10::parse(&greeting)
        .map_err(|e| ServerFail::gateway(format!("the server at {address}: {e}")))?;
    fe.learn_server(
        group_name,
        ServerHello {
            version: hs.server_version.to_vec(),
            capabilities: hs.capabilities,
            charset: hs.charset,
        },
    );
    // The client's capabilities, which its answers are relayed under, must be the server's.
    let relayed = login.caps.0 & !SETTLED_AT_LOGIN;
    let missing = relayed & !hs.capabilities.0;
    if missing != 0 {
        return Err(ServerFail::gateway(format!(
            "the server at {address} lacks capabilities the client uses (0x{missing:x})"
        )));
    }
    let mut caps = Capabilities(
        relayed
            | (hs.capabilities.0
                & (CLIENT_PLUGIN_AUTH
                    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
                    | CLIENT_SECURE_CONNECTION
                    | CLIENT_CONNECT_ATTRS)),
    )
    .with(CLIENT_PROTOCOL_41);
    if !login.database.is_empty() {
        caps = caps.with(CLIENT_CONNECT_WITH_DB);
    }
    let tls = TlsTo::for_target(group, address);
    let verified = tls
        .as_ref()
        .is_some_and(|t| t.mode == BackendTls::VerifyFull);
    if let Some(tls) = &tls {
        if !hs.capabilities.has(CLIENT_SSL) {
            return Err(ServerFail::gateway(format!(
                "the server at {address} does not offer TLS (backend_tls is set)"
            )));
        }
        caps = caps.with(CLIENT_SSL);
        let mut req = Vec::new();
        SslRequest {
            capabilities: caps,
            max_packet: 1 << 24,
            charset: login.charset,
        }
        .write(&mut req);
        server.write(&req).await.map_err(lost)?;
        let Stream::Plain(tcp) = std::mem::replace(&mut server.stream, Stream::Gone) else {
            return Err(ServerFail::gateway("TLS started twice".into()));
        };
        let name =
            rustls_pki_types::ServerName::try_from(tls.server_name.clone()).map_err(|e| {
                ServerFail::gateway(format!("bad server name {}: {e}", tls.server_name))
            })?;
        let config = tls.client_config().map_err(ServerFail::gateway)?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| ServerFail::gateway(format!("TLS to {address}: {e}")))?;
        server.stream = Stream::Tls(Box::new(stream));
    }
    let password = login.password.map(SecretBytes::expose).unwrap_or(b"");
    let plugin = hs.auth_plugin.to_vec();
    let first = respond(&plugin, password, &hs.scramble, verified, address)?;
    let mut out = Vec::new();
    HandshakeResponse {
        capabilities: caps,
        max_packet: 1 << 24,
        charset: login.charset,
        user: login.user.as_bytes(),
        auth_response: &first,
        database: (!login.database.is_empty()).then_some(login.database.as_bytes()),
        auth_plugin: Some(&plugin),
        attributes: login.attributes,
        zstd_level: None,
    }
    .write(&mut out);
    server.write(&out).await.map_err(lost)?;
    let mut plugin = plugin;
    // A bounded exchange: a server that keeps switching is not followed forever.
    for _ in 0..8 {
        let packet = server.read().await.map_err(lost)?;
        match auth_packet_kind(&packet) {
            AuthPacket::Ok => {
                OkPacket::parse(&packet, caps)
                    .map_err(|e| ServerFail::gateway(format!("the server at {address}: {e}")))?;
                return Ok((server, hs.connection_id, packet));
            }
            AuthPacket::Err => return Err(server_err(&packet, address)),
            AuthPacket::Switch => {
                let switch = AuthSwitchRequest::parse(&packet)
                    .map_err(|e| ServerFail::gateway(format!("the server at {address}: {e}")))?;
                plugin = switch.plugin.to_vec();
                let nonce = switch
                    .scramble20()
                    .map_or(switch.data.to_vec(), |s| s.to_vec());
                let answer = respond(&plugin, password, &nonce, verified, address)?;
                server.write(&answer).await.map_err(lost)?;
            }
            AuthPacket::MoreData => {
                let more = AuthMoreData::parse(&packet)
                    .map_err(|e| ServerFail::gateway(format!("the server at {address}: {e}")))?;
                match (plugin.as_slice(), more.data) {
                    (p, [CACHING_SHA2_FAST_AUTH_OK]) if p == CACHING_SHA2_PASSWORD.as_bytes() => {}
                    (p, [CACHING_SHA2_PERFORM_FULL_AUTH])
                        if p == CACHING_SHA2_PASSWORD.as_bytes() =>
                    {
                        if !verified {
                            return Err(ServerFail::untrusted(format!(
                                "the server at {address} asked for the password in cleartext \
                                 (caching_sha2_password full authentication) but TLS did not \
                                 verify it: set backend_tls = \"verify-full\" with backend_ca, \
                                 or let the server cache the password (log in once over a \
                                 verified connection)"
                            )));
                        }
                        let mut clear = password.to_vec();
                        clear.push(0);
                        let sent = server.write(&clear).await;
                        zeroize::Zeroize::zeroize(&mut clear);
                        sent.map_err(lost)?;
                    }
                    _ => {
                        return Err(ServerFail::untrusted(format!(
                            "the server at {address} sent plugin data the gateway does not follow"
                        )))
                    }
                }
            }
            AuthPacket::Other => {
                return Err(ServerFail::gateway(format!(
                    "the server at {address} sent an unexpected packet during login"
                )))
            }
        }
    }
    Err(ServerFail::untrusted(format!(
        "the server at {address} did not finish the login exchange"
    )))
}

/// The answer to a plugin's challenge. A cleartext password goes only to a server that TLS
/// verified.
fn respond(
    plugin: &[u8],
    password: &[u8],
    nonce: &[u8],
    verified: bool,
    address: &str,
) -> Result<Vec<u8>, ServerFail> {
    if plugin == MYSQL_NATIVE_PASSWORD.as_bytes() {
        return Ok(scramble::native_password_response(password, nonce));
    }
    if plugin == CACHING_SHA2_PASSWORD.as_bytes() {
        return Ok(scramble::caching_sha2_response(password, nonce));
    }
    if plugin == CLIENT_ED25519.as_bytes() {
        return Ok(scramble::ed25519_response(password, nonce).to_vec());
    }
    if plugin == MYSQL_CLEAR_PASSWORD.as_bytes() {
        if !verified {
            return Err(ServerFail::untrusted(format!(
                "the server at {address} asked for the password in cleartext \
                 (mysql_clear_password) but TLS did not verify it: set backend_tls = \
                 \"verify-full\" with backend_ca"
            )));
        }
        return Ok(scramble::clear_password_response(password)
            .expose()
            .to_vec());
    }
    Err(ServerFail::untrusted(format!(
        "the server at {address} asked for the authentication plugin '{}', which the gateway does not use",
        String::from_utf8_lossy(plugin)
    )))
}

/// The server's ERR, passed on in its own words.
fn server_err(packet: &[u8], address: &str) -> ServerFail {
    match ErrPacket::parse(packet) {
        Ok(e) => ServerFail {
            code: e.code,
            sql_state: e.sql_state.unwrap_or(*b"HY000"),
            message: String::from_utf8_lossy(e.message).into_owned(),
            end: "backend_refused",
        },
        Err(_) => ServerFail::gateway(format!("the server at {address} sent a malformed error")),
    }
}

/// The health check: log in with the check's credential and ask whether the server is
/// read-only (a replica).
pub(super) async fn probe(
    fe: &MysqlFrontEnd,
    hc: &sumun_config::HealthCheck,
    group: &TargetGroup,
    target: &str,
    addr: SocketAddr,
    shared: Option<&Shared>,
) -> Result<Learned, ProbeFailure> {
    let shared = shared.ok_or(ProbeFailure::Error)?;
    let name = hc.credential.as_deref().ok_or(ProbeFailure::Error)?;
    let vault = shared.vault.load_full().ok_or(ProbeFailure::Error)?;
    let cred = vault
        .backend_credential(name)
        .map_err(|_| ProbeFailure::Error)?;
    let user = cred.username.clone().ok_or(ProbeFailure::Error)?;
    let mut last = ProbeFailure::Error;
    for i in 0..cred.passwords.len().max(1) {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ProbeFailure::Refused)
            }
            Err(_) => return Err(ProbeFailure::Error),
        };
        let login = Login {
            user: &user,
            password: cred.passwords.get(i),
            database: &hc.database,
            caps: Capabilities(
                CLIENT_MYSQL | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_LONG_FLAG,
            ),
            charset: 45,
            attributes: &[],
        };
        match login_on(fe, stream, group, &group.name, target, &login).await {
            Ok((mut server, _, _)) => {
                let read_only = query_one(&mut server, b"SELECT @@read_only").await;
                let mut quit = Vec::new();
                server.seq = 0;
                quit.push(COM_QUIT);
                let _ = server.write(&quit).await;
                let read_only = read_only.ok_or(ProbeFailure::Error)?;
                return Ok(Learned {
                    role: if read_only == "1" {
                        sumun_config::Role::Replica
                    } else {
                        sumun_config::Role::Primary
                    },
                    lag_ms: 0,
                });
            }
            Err(fail) => {
                tracing::debug!(target_addr = %addr, error = %fail.message, "mysql health check failed");
                if fail.end == "backend_untrusted" {
                    fe.stats
                        .backend_logins_refused
                        .fetch_add(1, Ordering::Relaxed);
                }
                last = ProbeFailure::Error;
                if fail.code != 1045 {
                    break;
                }
            }
        }
    }
    Err(last)
}

/// The first column of the first row of a text query (on a connection without
/// `CLIENT_DEPRECATE_EOF`).
async fn query_one(server: &mut Packets<ServerStream>, sql: &[u8]) -> Option<String> {
    let mut q = vec![COM_QUERY];
    q.extend_from_slice(sql);
    server.seq = 0;
    server.write(&q).await.ok()?;
    let count = server.read().await.ok()?;
    let columns = Reader::new(&count).lenenc_int()?;
    for _ in 0..columns {
        server.read().await.ok()?;
    }
    server.read().await.ok()?; // EOF after the column definitions
    let row = server.read().await.ok()?;
    let value = Reader::new(&row).lenenc_bytes()?;
    let value = String::from_utf8_lossy(value).into_owned();
    // The rest of the answer: EOF after the rows.
    loop {
        let p = server.read().await.ok()?;
        if p.first() == Some(&0xFE) && p.len() < 9 {
            return Some(value);
        }
    }
}

/// Open a connection to `target` and log in as the account's backend user (each version of
/// its vault password in turn while the server says it is wrong): a new pooled connection.
#[allow(clippy::too_many_arguments)] // the connection's facts, each used once
pub(super) async fn open_on(
    fe: &MysqlFrontEnd,
    shared: &Shared,
    group: &TargetGroup,
    target: &TargetRt,
    credential: &str,
    database: &str,
    caps: Capabilities,
    charset: u8,
    attributes: &[u8],
) -> Result<(Packets<ServerStream>, u32, Vec<u8>), ServerFail> {
    let vault = shared
        .vault
        .load_full()
        .ok_or_else(|| ServerFail::gateway("the gateway has no vault to log in with".into()))?;
    let cred = vault
        .backend_credential(credential)
        .map_err(|e| ServerFail::gateway(format!("vault secret '{credential}': {e}")))?;
    let user = cred.username.clone().ok_or_else(|| {
        ServerFail::gateway(format!("vault secret '{credential}' has no username"))
    })?;
    let attempts = cred.passwords.len().max(1);
    let mut last = None;
    for i in 0..attempts {
        let stream =
            match crate::workers::timeout(group.connect_timeout, TcpStream::connect(target.addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    target.connect_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(ServerFail::gateway(format!(
                        "no backend server is available: cannot connect to {}: {e}",
                        target.address
                    )));
                }
                Err(_) => {
                    target.connect_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(ServerFail::gateway(format!(
                        "no backend server is available: connecting to {} timed out",
                        target.address
                    )));
                }
            };
        let login = Login {
            user: &user,
            password: cred.passwords.get(i),
            database,
            caps,
            charset,
            attributes,
        };
        let done = crate::workers::timeout(
            group.connect_timeout.max(std::time::Duration::from_secs(5)),
            login_on(fe, stream, group, &group.name, &target.address, &login),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ServerFail::gateway(format!(
                "the server at {} did not finish the login in time",
                target.address
            )))
        });
        match done {
            Ok(done) => return Ok(done),
            Err(fail) if fail.code == 1045 && i + 1 < attempts => last = Some(fail),
            Err(fail) => {
                if fail.end == "backend_untrusted" {
                    fe.stats
                        .backend_logins_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(target = %target.address, error = %fail.message, "refusing a MySQL server");
                }
                return Err(fail);
            }
        }
    }
    Err(last.unwrap_or_else(|| ServerFail::gateway("no password to log in with".into())))
}
