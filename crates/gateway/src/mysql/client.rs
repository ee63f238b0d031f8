//! The client's side of the connection phase: greeting, TLS, login, and the server's OK.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sumun_config::{AuthMethod, TlsMode, User};
use sumun_wire::mysql::flags::*;
use sumun_wire::mysql::generic::err_payload;
use sumun_wire::mysql::handshake::{MYSQL_CLEAR_PASSWORD, MYSQL_NATIVE_PASSWORD};
use sumun_wire::mysql::{AuthSwitchRequest, Capabilities, ClientHello, HandshakeV10};
use tokio::io::AsyncWriteExt;

use super::io::{ClientStream, Packets, Stream};
use super::server::{self, Connected};
use super::MysqlFrontEnd;
use crate::conn::{Admitted, Slot};
use crate::frontend::Accepted;
use crate::frontend::{audit_auth_failure, end_session, token_reason, SessionEnd};
use crate::listener::{ListenerRt, ListenerSnapshot};
use crate::metrics::RejectReason;
use crate::Shared;

/// What the gateway offers clients: the protocol as current MySQL and MariaDB clients speak
/// it. Compression is not offered (a client that asks for it anyway does not get it), nor
/// MariaDB's extensions, nor optional result-set metadata and query attributes.
pub(super) const OFFERED: u64 = CLIENT_MYSQL
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_NO_SCHEMA
    | CLIENT_ODBC
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_RESERVED
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF;

/// utf8mb4_general_ci, when no server has been seen yet.
const DEFAULT_CHARSET: u8 = 45;

/// A client that logged in, with its server.
pub(super) struct LoggedIn {
    pub client: Packets<ClientStream>,
    /// Session mode: the client's own server. Transaction mode: none between transactions.
    pub server: Option<Connected>,
    /// The vault secret its servers are logged in to with.
    pub credential: String,
    pub charset: u8,
    pub user: String,
    pub database: String,
    pub connection_id: u32,
    /// What the client negotiated (and the server was asked for).
    pub caps: Capabilities,
    pub admitted: Admitted,
    pub snap: Arc<ListenerSnapshot>,
    pub listener: Arc<ListenerRt>,
    pub shared: Arc<Shared>,
    pub slot: Slot,
}

/// How a login ended without a session (for the flow's `session.end`).
struct Refused {
    end: &'static str,
    user: Option<String>,
}

fn refused(end: &'static str, user: Option<&str>) -> Refused {
    Refused {
        end,
        user: user.map(str::to_string),
    }
}

/// The connection phase, within the handshake deadline.
pub(super) async fn login(fe: &Arc<MysqlFrontEnd>, conn: Accepted) -> Option<LoggedIn> {
    let Accepted {
        stream,
        admitted,
        snap,
        listener,
        shared,
        handshake_deadline,
        slot,
    } = conn;
    let _ = stream.set_nodelay(true);
    let connection_id = fe.connection_id();
    let mut client = Packets::new(Stream::Plain(stream));
    let exchange = crate::workers::timeout_at(
        handshake_deadline,
        exchange(
            fe,
            &mut client,
            connection_id,
            &admitted,
            &snap,
            &listener,
            &shared,
        ),
    )
    .await;
    let outcome = match exchange {
        Err(_) => {
            tracing::info!(listener = %listener.name, client = %admitted.client, "no login before the handshake timeout");
            listener.metrics.reject(RejectReason::HandshakeTimeout);
            Err(refused("handshake_timeout", None))
        }
        Ok(r) => r,
    };
    match outcome {
        Ok((client, user, database, server, caps, credential, charset)) => {
            fe.stats.logins.fetch_add(1, Ordering::Relaxed);
            Some(LoggedIn {
                client,
                server,
                credential,
                charset,
                user,
                database,
                connection_id,
                caps,
                admitted,
                snap,
                listener,
                shared,
                slot,
            })
        }
        Err(r) => {
            let _ = client.stream.shutdown().await;
            end_session(
                &shared,
                &listener,
                &admitted.flow,
                &SessionEnd {
                    end: r.end,
                    user: r.user.as_deref(),
                    ..SessionEnd::default()
                },
            );
            None
        }
    }
}

type Exchanged = (
    Packets<ClientStream>,
    String,
    String,
    Option<Connected>,
    Capabilities,
    String,
    u8,
);

async fn exchange(
    fe: &Arc<MysqlFrontEnd>,
    client: &mut Packets<ClientStream>,
    connection_id: u32,
    admitted: &Admitted,
    snap: &Arc<ListenerSnapshot>,
    listener: &ListenerRt,
    shared: &Arc<Shared>,
) -> Result<Exchanged, Refused> {
    // 1. The greeting, in the words of the group's servers when one has been seen.
    let hello = fe.server_hello(&snap.group.name);
    let tls_ctx = match snap.settings.tls {
        TlsMode::Off => None,
        _ => snap.tls.clone(),
    };
    let mut offered = Capabilities(OFFERED);
    if let Some(h) = &hello {
        // MariaDB clears CLIENT_MYSQL to announce extensions the gateway does not offer.
        offered =
            Capabilities(offered.0 & (h.capabilities.0 | CLIENT_SSL | CLIENT_MYSQL) & 0xFFFF_FFFF);
    }
    if tls_ctx.is_some() {
        offered = offered.with(CLIENT_SSL);
    } else {
        offered = offered.without(CLIENT_SSL);
    }
    let scramble = scramble();
    let version = hello
        .as_ref()
        .map_or(b"8.0.0-sumun".to_vec(), |h| h.version.clone());
    let charset = hello.as_ref().map_or(DEFAULT_CHARSET, |h| h.charset);
    let mut greeting = Vec::with_capacity(128);
    HandshakeV10 {
        server_version: &version,
        connection_id,
        scramble: scramble.to_vec(),
        capabilities: offered,
        charset,
        status: SERVER_STATUS_AUTOCOMMIT,
        auth_plugin: MYSQL_NATIVE_PASSWORD.as_bytes(),
    }
    .write(&mut greeting);
    client
        .write(&greeting)
        .await
        .map_err(|_| refused("client_error", None))?;

    // 2. TLS, when the client asks for it.
    let mut first = match client.read_exact_one().await {
        Ok(p) => p,
        Err(e) => return Err(bad_handshake(client, listener, admitted, &e).await),
    };
    let hello_packet = match ClientHello::parse(&first) {
        Ok(h) => h,
        Err(e) => return Err(bad_handshake(client, listener, admitted, &e).await),
    };
    if let ClientHello::Ssl(_) = hello_packet {
        let Some(ctx) = &tls_ctx else {
            let what = "SSL request on a listener without TLS";
            return Err(bad_handshake(client, listener, admitted, &what).await);
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut client.stream, Stream::Gone) else {
            return Err(refused("protocol_violation", None));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(ctx.server_config());
        match acceptor.accept(tcp).await {
            Ok(tls) => client.stream = Stream::Tls(Box::new(tls)),
            Err(e) => {
                tracing::info!(listener = %listener.name, client = %admitted.client, error = %e, "TLS handshake failed");
                listener.metrics.reject(RejectReason::TlsHandshake);
                return Err(refused("tls_handshake_failed", None));
            }
        }
        first = match client.read().await {
            Ok(p) => p,
            Err(e) => return Err(bad_handshake(client, listener, admitted, &e).await),
        };
    }
    let response = match ClientHello::parse(&first) {
        Ok(ClientHello::Response(r)) => r,
        Ok(ClientHello::Ssl(_)) => {
            let what = "a second SSL request";
            return Err(bad_handshake(client, listener, admitted, &what).await);
        }
        Err(e) => return Err(bad_handshake(client, listener, admitted, &e).await),
    };
    let user = String::from_utf8_lossy(response.user).into_owned();
    let database = response
        .database
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    let caps = Capabilities(response.capabilities.0 & offered.0);
    if !caps.has(CLIENT_PROTOCOL_41) {
        let _ = send_err(client, 1043, b"08S01", "Bad handshake").await;
        return Err(refused("protocol_violation", Some(&user)));
    }
    // `tls = "required"`: a plain-text client is refused before it is asked for anything.
    if snap.settings.tls == TlsMode::Required && !client.stream.is_tls() {
        listener
            .metrics
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
        audit_auth_failure(
            shared,
            &listener.name,
            admitted.client,
            &user,
            "tls_required",
        );
        let _ = send_err(
            client,
            3159,
            b"HY000",
            "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
        )
        .await;
        return Err(refused("tls_required", Some(&user)));
    }

    // 3. The client's login.
    let config = shared.config.load();
    let account = config.users.iter().find(|u| u.name == user);
    let host = admitted.client.ip().to_string();
    let method = authenticate(
        client,
        &scramble,
        &response.auth_plugin.map(<[u8]>::to_vec),
        response.auth_response,
        &user,
        &database,
        account,
        shared,
    )
    .await;
    let account = match (method, account) {
        (Ok(_), Some(account)) => account,
        (outcome, _) => {
            let reason = outcome.err().unwrap_or("unknown_user");
            if reason != "client_closed" {
                tracing::info!(listener = %listener.name, client = %admitted.client, user = %user, reason, "authentication failed");
                listener
                    .metrics
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
                audit_auth_failure(shared, &listener.name, admitted.client, &user, reason);
                let message =
                    format!("Access denied for user '{user}'@'{host}' (using password: YES)");
                let _ = send_err(client, 1045, b"28000", &message).await;
            }
            return Err(refused("auth_failed", Some(&user)));
        }
    };
    if !database.is_empty()
        && !account.databases.is_empty()
        && !account.databases.contains(&database)
    {
        audit_auth_failure(
            shared,
            &listener.name,
            admitted.client,
            &user,
            "database_not_granted",
        );
        let message = format!("Access denied for user '{user}'@'{host}' to database '{database}'");
        let _ = send_err(client, 1044, b"42000", &message).await;
        return Err(refused("auth_failed", Some(&user)));
    }

    // 4. The server, logged in with the vault credential.
    let Some(credential) = account.backend_credential.clone() else {
        let message =
            format!("user '{user}' has no backend_credential to log in to the server with");
        let _ = send_err(client, 1105, b"HY000", &message).await;
        return Err(refused("no_backend", Some(&user)));
    };
    let mode = account.pool_mode.unwrap_or(snap.settings.pool.mode);
    let server = if mode == sumun_config::PoolMode::Transaction {
        // A server from the pool, when one is free, proves the database is there (and
        // reachable), then goes back: the client gets one per transaction.
        match super::txn::attach_for(
            fe,
            shared,
            snap,
            &credential,
            caps,
            response.charset,
            &database,
            true,
        )
        .await
        {
            Ok(Some((pool, conn))) => pool.release(conn, &snap.settings.pool),
            // Every server busy: the login does not wait; the first statement will.
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(listener = %listener.name, client = %admitted.client, user = %user, error = %why, "cannot log in to a server for the client");
                let (code, state) = if why.contains("Unknown database") {
                    (1049, b"42000")
                } else {
                    (1105, b"HY000")
                };
                let _ = send_err(client, code, state, &why).await;
                return Err(refused("no_backend", Some(&user)));
            }
        }
        let ok = super::txn::ok_payload(caps);
        client
            .write(&ok)
            .await
            .map_err(|_| refused("client_error", Some(&user)))?;
        None
    } else {
        let server = server::connect(
            fe,
            shared,
            snap,
            admitted,
            account,
            &database,
            caps,
            response.charset,
            response.attributes,
        )
        .await;
        let server = match server {
            Ok(s) => s,
            Err(fail) => {
                tracing::warn!(listener = %listener.name, client = %admitted.client, user = %user, error = %fail.message, "cannot log in to a server for the client");
                let _ = send_err(client, fail.code, &fail.sql_state, &fail.message).await;
                return Err(refused(fail.end, Some(&user)));
            }
        };
        // 5. The server's own OK (its status and session state) tells the client it is in.
        client
            .write(&server.ok)
            .await
            .map_err(|_| refused("client_error", Some(&user)))?;
        Some(server)
    };
    tracing::debug!(listener = %listener.name, client = %admitted.client, user = %user, "client logged in");
    let client = std::mem::replace(client, Packets::new(Stream::Gone));
    Ok((
        client,
        user,
        database,
        server,
        caps,
        credential,
        response.charset,
    ))
}

/// The client proves who it is. `Ok` with the method when it did (the caller still needs
/// the account), `Err` with the reason (for the audit log) when it did not. Unknown users go
/// through the same exchange as known ones.
#[allow(clippy::too_many_arguments)] // the login's facts, each used once
async fn authenticate(
    client: &mut Packets<ClientStream>,
    scramble: &[u8; 20],
    plugin: &Option<Vec<u8>>,
    first_response: &[u8],
    user: &str,
    database: &str,
    account: Option<&User>,
    shared: &Shared,
) -> Result<&'static str, &'static str> {
    let methods = account.map_or(&[AuthMethod::Token][..], |a| &a.auth[..]);
    if methods.contains(&AuthMethod::Cert) {
        if let Some(der) = client.stream.peer_certificate() {
            if sumun_pki::common_name(&der).as_deref() == Some(user) {
                return Ok("cert");
            }
        }
    }
    let token_ok = methods.contains(&AuthMethod::Token);
    let password_ok = methods.contains(&AuthMethod::Scram);
    let Some(vault) = shared.vault.load_full().map(|v| v.state()) else {
        return Err("no_vault");
    };
    // The gateway-held password, checked against its mysql_native_password verifier (a
    // stand-in that matches nothing for a user without one, after the same exchange).
    // A user without a stored password goes through the same exchange and is refused after it.
    let verifier = vault
        .mysql_native_verifier(user)
        .filter(|_| password_ok && account.is_some());
    if password_ok && !(token_ok && client.stream.is_tls()) {
        // mysql_native_password: the client proves the password against this connection's
        // scramble; nothing reusable crosses the wire.
        let response = if plugin.as_deref() == Some(MYSQL_NATIVE_PASSWORD.as_bytes()) {
            first_response.to_vec()
        } else {
            let mut data = scramble.to_vec();
            data.push(0);
            let mut switch = Vec::new();
            AuthSwitchRequest {
                plugin: MYSQL_NATIVE_PASSWORD.as_bytes(),
                data: &data,
            }
            .write(&mut switch);
            client.write(&switch).await.map_err(|_| "client_closed")?;
            client.read().await.map_err(|_| "client_closed")?
        };
        if account.is_none() {
            return Err("unknown_user");
        }
        return if verifier.is_some_and(|v| v.verify(scramble, &response)) {
            Ok("password")
        } else {
            Err("wrong_password")
        };
    }
    if !token_ok {
        return Err(if account.is_some() {
            "method_not_available"
        } else {
            "unknown_user"
        });
    }
    if !client.stream.is_tls() {
        // A token goes in cleartext: only over TLS (a `tls = "optional"` listener).
        return Err("token_needs_tls");
    }
    // The token in cleartext: the first response when the client chose the cleartext plugin,
    // else after switching it to that plugin.
    let token = if plugin.as_deref() == Some(MYSQL_CLEAR_PASSWORD.as_bytes()) {
        first_response.to_vec()
    } else {
        let mut switch = Vec::new();
        AuthSwitchRequest {
            plugin: MYSQL_CLEAR_PASSWORD.as_bytes(),
            data: &[],
        }
        .write(&mut switch);
        client.write(&switch).await.map_err(|_| "client_closed")?;
        client.read().await.map_err(|_| "client_closed")?
    };
    let token = token.strip_suffix(&[0]).unwrap_or(&token);
    if !sumun_vault::TokenVerifier::looks_like_token(token) {
        if password_ok {
            // Not a token: the user's password, in cleartext over TLS.
            if account.is_none() {
                return Err("unknown_user");
            }
            let response = sumun_vault::mysql::native_password_response(token, scramble);
            return if verifier.is_some_and(|v| v.verify(scramble, &response)) {
                Ok("password")
            } else {
                Err("wrong_password")
            };
        }
        return Err("not_a_token");
    }
    let text = std::str::from_utf8(token).map_err(|_| "token_malformed")?;
    let claims = vault
        .verify_token(text, &shared.config.load().gateway.name)
        .map_err(|e| token_reason(&e))?;
    if claims.user != user {
        return Err("token_user_mismatch");
    }
    // A token for one database logs in to that database only (a login without one would
    // start where the backend account's grants allow).
    if claims.database.as_ref().is_some_and(|d| d != database) {
        return Err("token_database_mismatch");
    }
    if account.is_none() {
        return Err("unknown_user");
    }
    Ok("token")
}

/// A malformed, oversized or out-of-order login packet: refused as MySQL refuses it (`1043
/// Bad handshake`, `1153` for a packet over the limit, `1156` out of order), and the connection
/// closed without reading more.
async fn bad_handshake(
    client: &mut Packets<ClientStream>,
    listener: &ListenerRt,
    admitted: &Admitted,
    what: &(dyn std::fmt::Display + Sync),
) -> Refused {
    tracing::info!(listener = %listener.name, client = %admitted.client, error = %what, "bad MySQL handshake");
    listener.metrics.reject(RejectReason::ProtocolError);
    let text = what.to_string();
    let (code, message) = if text.contains("larger than") || text.contains("exceeds the limit") {
        (1153, "Got a packet bigger than 'max_allowed_packet' bytes")
    } else if text.contains("out of order") || text.contains("sequence") {
        (1156, "Got packets out of order")
    } else {
        (1043, "Bad handshake")
    };
    if !text.contains("connection closed") {
        client.seq = client.seq.max(1);
        let _ = send_err(client, code, b"08S01", message).await;
    }
    refused("protocol_violation", None)
}

async fn send_err(
    client: &mut Packets<ClientStream>,
    code: u16,
    sql_state: &[u8; 5],
    message: &str,
) -> Result<(), super::io::PacketError> {
    client.write(&err_payload(code, sql_state, message)).await
}

/// 20 random printable bytes (clients read the scramble up to a NUL).
fn scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    // The CSPRNG: a scramble is what a password response is bound to.
    if aws_lc_rs::rand::fill(&mut s).is_err() {
        s.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    for b in &mut s {
        *b = 0x21 + (*b % 94);
    }
    s
}
