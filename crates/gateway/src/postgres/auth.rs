//! Client authentication for PostgreSQL listeners, per `[[users]]`:
//!
//! - `token`: the client sends a Sumun token as its password (AuthenticationCleartextPassword,
//!   as RDS IAM auth does); it is verified with the vault's token keys: signature, audience
//!   (the gateway name), lifetime, user, and database when the token names one.
//! - `scram`: SCRAM-SHA-256 against the verifier `sumun users set-password` stored in the vault.
//!   When the user also accepts tokens and the connection is TLS, the gateway asks for a
//!   cleartext password instead (a token cannot go through SCRAM) and checks a non-token
//!   password against the same verifier.
//! - `cert`: a client certificate (mTLS) whose subject common name is the user name.
//!
//! Every failure looks the same to the client (28P01, as PostgreSQL answers), whether the user
//! exists or not; the reason goes to the audit log and the metrics.

use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use sumun_config::{AuthMethod, User};
use sumun_vault::ScramVerifier;
use sumun_wire::postgres::{self as pg, auth as code, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::ClientStream;
use super::{audit_auth_failure, fatal, ClientStartup};
use crate::conn::Admitted;
use crate::listener::{ListenerRt, ListenerSnapshot};
use crate::Shared;

/// Who the client proved to be.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: User,
    pub method: &'static str,
}

/// Longest password message accepted (a token is well under 1 KiB).
const MAX_PASSWORD_MESSAGE: usize = 8192;

pub(crate) async fn authenticate(
    client: &mut ClientStream,
    startup: &ClientStartup,
    snap: &ListenerSnapshot,
    listener: &ListenerRt,
    shared: &Shared,
    admitted: &Admitted,
) -> Option<Identity> {
    let config = shared.config.load();
    let user = config
        .users
        .iter()
        .find(|u| u.name == startup.user)
        .cloned();
    let result = check(client, startup, user.as_ref(), shared).await;
    match result {
        Ok(method) => {
            let Some(user) = user else {
                return None; // unreachable: check() fails for unknown users
            };
            let console = user.admin && startup.database == super::console::DATABASE;
            if !console && !user.databases.is_empty() && !user.databases.contains(&startup.database)
            {
                fail(
                    client,
                    startup,
                    listener,
                    shared,
                    admitted,
                    "database_not_granted",
                )
                .await;
                return None;
            }
            let tls = client.is_tls();
            shared
                .records
                .audit("auth.success", &listener.name, admitted.client, || {
                    let mut extra = Map::new();
                    extra.insert("user".into(), Value::from(startup.user.as_str()));
                    extra.insert("database".into(), Value::from(startup.database.as_str()));
                    extra.insert("method".into(), Value::from(method));
                    extra.insert("tls".into(), Value::from(tls));
                    extra
                });
            let _ = snap;
            Some(Identity { user, method })
        }
        Err(AuthFail::Closed) => None,
        Err(AuthFail::Refused(reason)) => {
            fail(client, startup, listener, shared, admitted, reason).await;
            None
        }
    }
}

async fn fail(
    client: &mut ClientStream,
    startup: &ClientStartup,
    listener: &ListenerRt,
    shared: &Shared,
    admitted: &Admitted,
    reason: &'static str,
) {
    tracing::info!(listener = %listener.name, client = %admitted.client, user = %startup.user, database = %startup.database, reason, "authentication failed");
    listener
        .metrics
        .auth_failures
        .fetch_add(1, Ordering::Relaxed);
    audit_auth_failure(shared, listener, admitted, &startup.user, reason);
    // The SQLSTATEs and messages PostgreSQL uses for the same refusals.
    let (sqlstate, message) = match reason {
        "database_not_granted" => (
            "28000",
            format!(
                "user \"{}\" may not connect to database \"{}\"",
                startup.user, startup.database
            ),
        ),
        "no_client_certificate" => (
            "28000",
            "connection requires a valid client certificate".to_string(),
        ),
        "certificate_name_mismatch" => (
            "28000",
            format!(
                "certificate authentication failed for user \"{}\"",
                startup.user
            ),
        ),
        _ => (
            "28P01",
            format!(
                "password authentication failed for user \"{}\"",
                startup.user
            ),
        ),
    };
    fatal(client, sqlstate, &message).await;
}

enum AuthFail {
    /// The client went away mid-exchange.
    Closed,
    /// Refused; the reason is for the audit log only.
    Refused(&'static str),
}

async fn check(
    client: &mut ClientStream,
    startup: &ClientStartup,
    user: Option<&User>,
    shared: &Shared,
) -> Result<&'static str, AuthFail> {
    // Unknown users go through the same exchange as known ones and fail at its end.
    let methods: &[AuthMethod] = user.map_or(&[AuthMethod::Token, AuthMethod::Scram], |u| &u.auth);
    if methods.contains(&AuthMethod::Cert) && user.is_some() {
        if let Some(der) = client.peer_certificate() {
            if sumun_pki::common_name(&der).as_deref() == Some(startup.user.as_str()) {
                send_ok(client).await?;
                return Ok("cert");
            }
        }
        if methods == [AuthMethod::Cert] {
            // Nothing else to try: refuse at once, as PostgreSQL's `cert` method does.
            return Err(AuthFail::Refused(if client.peer_certificate().is_some() {
                "certificate_name_mismatch"
            } else {
                "no_client_certificate"
            }));
        }
    }
    let vault = shared.vault.load_full();
    let scram = methods.contains(&AuthMethod::Scram);
    let token = methods.contains(&AuthMethod::Token);
    if scram && (!token || !client.is_tls()) {
        let verifier = match (&vault, user) {
            (Some(v), Some(_)) => v
                .user_verifiers(&startup.user)
                .ok()
                .flatten()
                .and_then(|pv| pv.scram().ok()),
            _ => None,
        };
        return scram_exchange(client, &startup.user, verifier, startup.tls_endpoint).await;
    }
    // Cleartext password: a token, or a password checked against the SCRAM verifier.
    let mut w = Writer::new();
    w.auth(code::CLEARTEXT, &[]);
    client
        .write_all(&w.buf)
        .await
        .map_err(|_| AuthFail::Closed)?;
    let body = read_password_message(client).await?;
    let password = pg::cstr(&body).map_or(&body[..], |(p, _)| p);
    let Some(vault) = &vault else {
        return Err(AuthFail::Refused("no_vault"));
    };
    if user.is_none() {
        return Err(AuthFail::Refused("unknown_user"));
    }
    if token && sumun_vault::TokenVerifier::looks_like_token(password) {
        let text =
            std::str::from_utf8(password).map_err(|_| AuthFail::Refused("token_malformed"))?;
        let config = shared.config.load();
        return match vault.verify_token(text, &config.gateway.name) {
            Err(e) => Err(AuthFail::Refused(token_reason(&e))),
            Ok(claims) if claims.user != startup.user => {
                Err(AuthFail::Refused("token_user_mismatch"))
            }
            Ok(claims)
                if claims
                    .database
                    .as_ref()
                    .is_some_and(|d| *d != startup.database) =>
            {
                Err(AuthFail::Refused("token_database_mismatch"))
            }
            Ok(_) => {
                send_ok(client).await?;
                Ok("token")
            }
        };
    }
    if scram {
        let verifier = vault
            .user_verifiers(&startup.user)
            .ok()
            .flatten()
            .and_then(|pv| pv.scram().ok())
            .ok_or(AuthFail::Refused("no_password_set"))?;
        let derived = ScramVerifier::derive_with(password, &verifier.salt, verifier.iterations);
        if aws_lc_rs_eq(&derived.stored_key, &verifier.stored_key) {
            send_ok(client).await?;
            return Ok("password");
        }
        return Err(AuthFail::Refused("wrong_password"));
    }
    Err(AuthFail::Refused("not_a_token"))
}

fn token_reason(e: &sumun_vault::TokenError) -> &'static str {
    match e.reason() {
        "malformed" => "token_malformed",
        "unknown_key" => "token_unknown_key",
        "bad_signature" => "token_bad_signature",
        "expired" => "token_expired",
        "not_yet_valid" => "token_not_yet_valid",
        "wrong_audience" => "token_wrong_audience",
        "lifetime_too_long" => "token_lifetime_too_long",
        _ => "token_invalid",
    }
}

fn aws_lc_rs_eq(a: &[u8], b: &[u8]) -> bool {
    // Constant time: the comparison must not tell how much of a guess was right.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn send_ok(client: &mut ClientStream) -> Result<(), AuthFail> {
    let mut w = Writer::new();
    w.auth(code::OK, &[]);
    client.write_all(&w.buf).await.map_err(|_| AuthFail::Closed)
}

async fn read_password_message(client: &mut ClientStream) -> Result<Vec<u8>, AuthFail> {
    let mut head = [0u8; 5];
    client
        .read_exact(&mut head)
        .await
        .map_err(|_| AuthFail::Closed)?;
    if head[0] != b'p' {
        return Err(AuthFail::Refused("protocol_violation"));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=MAX_PASSWORD_MESSAGE).contains(&len) {
        return Err(AuthFail::Refused("protocol_violation"));
    }
    let mut body = vec![0u8; len - 4];
    client
        .read_exact(&mut body)
        .await
        .map_err(|_| AuthFail::Closed)?;
    Ok(body)
}

/// The server side of SCRAM-SHA-256 (RFC 5802/7677), and over TLS SCRAM-SHA-256-PLUS with
/// `tls-server-end-point` channel binding (RFC 5929), which proves the client's TLS session
/// ends at this gateway and not at a machine in the middle. With no verifier (unknown user, no
/// password set) a made-up salt keeps the exchange looking the same, and it fails at the proof.
async fn scram_exchange(
    client: &mut ClientStream,
    user: &str,
    verifier: Option<ScramVerifier>,
    endpoint: Option<crate::tls::EndPoint>,
) -> Result<&'static str, AuthFail> {
    let has_verifier = verifier.is_some();
    let verifier = match verifier {
        Some(v) => v,
        None => {
            let salt = sumun_vault::crypto::sha256(format!("sumun-mock-salt:{user}").as_bytes());
            ScramVerifier {
                iterations: 4096,
                salt: salt[..16].to_vec(),
                stored_key: [0; 32],
                server_key: [0; 32],
            }
        }
    };
    let mut w = Writer::new();
    if endpoint.is_some() {
        w.auth_sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
    } else {
        w.auth_sasl(&["SCRAM-SHA-256"]);
    }
    client
        .write_all(&w.buf)
        .await
        .map_err(|_| AuthFail::Closed)?;

    let body = read_password_message(client).await?;
    let (mechanism, first) =
        pg::sasl_initial_response(&body).map_err(|_| AuthFail::Refused("protocol_violation"))?;
    let plus = match (mechanism, endpoint) {
        (b"SCRAM-SHA-256", _) => false,
        (b"SCRAM-SHA-256-PLUS", Some(_)) => true,
        _ => return Err(AuthFail::Refused("unsupported_sasl_mechanism")),
    };
    let first = std::str::from_utf8(first).map_err(|_| AuthFail::Refused("protocol_violation"))?;
    // gs2 header: "n,," (no binding), "y,," (client could bind but thinks the server cannot —
    // a downgrade when the server offered -PLUS), "p=tls-server-end-point,," (binding).
    const BIND: &str = "p=tls-server-end-point,,";
    let (gs2, bare) = if plus {
        match first.strip_prefix(BIND) {
            Some(b) => (BIND, b),
            None => return Err(AuthFail::Refused("unsupported_channel_binding")),
        }
    } else if let Some(b) = first.strip_prefix("n,,") {
        ("n,,", b)
    } else if let Some(b) = first.strip_prefix("y,,") {
        if endpoint.is_some() {
            return Err(AuthFail::Refused("channel_binding_downgrade"));
        }
        ("y,,", b)
    } else {
        return Err(AuthFail::Refused("unsupported_channel_binding"));
    };
    let client_nonce = bare
        .split(',')
        .find_map(|p| p.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or(AuthFail::Refused("protocol_violation"))?;
    let server_nonce = sumun_vault::crypto::random_bytes(18)
        .map(|b| sumun_vault::crypto::b64(&b))
        .map_err(|_| AuthFail::Refused("internal"))?;
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        sumun_vault::crypto::b64(&verifier.salt),
        verifier.iterations
    );
    let mut w = Writer::new();
    w.auth(code::SASL_CONTINUE, server_first.as_bytes());
    client
        .write_all(&w.buf)
        .await
        .map_err(|_| AuthFail::Closed)?;

    let body = read_password_message(client).await?;
    let fin = std::str::from_utf8(&body).map_err(|_| AuthFail::Refused("protocol_violation"))?;
    let (without_proof, proof) = fin
        .rsplit_once(",p=")
        .ok_or(AuthFail::Refused("protocol_violation"))?;
    let mut channel = None;
    let mut final_nonce = None;
    for part in without_proof.split(',') {
        if let Some(c) = part.strip_prefix("c=") {
            channel = Some(c);
        } else if let Some(r) = part.strip_prefix("r=") {
            final_nonce = Some(r);
        }
    }
    let mut binding = gs2.as_bytes().to_vec();
    if plus {
        if let Some(e) = &endpoint {
            binding.extend_from_slice(e.as_bytes());
        }
    }
    let expected_channel = sumun_vault::crypto::b64(&binding);
    if final_nonce != Some(nonce.as_str()) {
        return Err(AuthFail::Refused("protocol_violation"));
    }
    if channel != Some(expected_channel.as_str()) {
        return Err(AuthFail::Refused(if plus {
            "channel_binding_mismatch"
        } else {
            "protocol_violation"
        }));
    }
    let proof = sumun_vault::crypto::unb64(proof).ok_or(AuthFail::Refused("protocol_violation"))?;
    let auth_message = format!("{bare},{server_first},{without_proof}");
    if !has_verifier {
        return Err(AuthFail::Refused(if verifier.stored_key == [0; 32] {
            "unknown_user_or_no_password"
        } else {
            "wrong_password"
        }));
    }
    if !verifier.verify_client_proof(auth_message.as_bytes(), &proof) {
        return Err(AuthFail::Refused("wrong_password"));
    }
    let signature = verifier.server_signature(auth_message.as_bytes());
    let mut w = Writer::new();
    w.auth(
        code::SASL_FINAL,
        format!("v={}", sumun_vault::crypto::b64(&signature)).as_bytes(),
    );
    w.auth(code::OK, &[]);
    client
        .write_all(&w.buf)
        .await
        .map_err(|_| AuthFail::Closed)?;
    Ok(if plus { "scram-plus" } else { "scram" })
}

#[allow(dead_code)]
fn _unused(_: &ListenerSnapshot) {}
