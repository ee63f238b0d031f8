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
//! User names cannot be probed: a name that cannot log in goes through the exchange the usual
//! user gets (the `auth` set most `[[users]]` have), against a stand-in SCRAM verifier derived
//! from a vault secret and the name (PostgreSQL's mock verifier), with the same work and the
//! same refusal at the same step. Every failure looks the same to the client (28P01, as
//! PostgreSQL answers, or 28000 where `cert` refuses at once); the reason goes to the audit log
//! and the metrics. Vault state is read from memory (`crate::vault`): no login touches the disk.

use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use sumun_config::{AuthMethod, User};
use sumun_vault::ScramVerifier;
use sumun_wire::postgres::{self as pg, auth as code, Writer};
use tokio::io::AsyncReadExt;

use super::stream::ClientStream;
use super::{audit_auth_failure, fatal, ClientStartup};
use crate::conn::Admitted;
use crate::listener::{ListenerRt, ListenerSnapshot};
use crate::vault::VaultState;
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
    let user = config.users.iter().find(|u| u.name == startup.user);
    let result = check(client, startup, user, &config.users, shared).await;
    match result {
        Ok(method) => {
            let Some(user) = user.cloned() else {
                return None; // unreachable: check() fails for unknown users
            };
            // Only now, the user having proved who they are, may the answer tell more.
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
                    Answer::DatabaseNotGranted,
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
        Err(AuthFail::Refused(reason, answer)) => {
            fail(client, startup, listener, shared, admitted, reason, answer).await;
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
    answer: Answer,
) {
    tracing::info!(listener = %listener.name, client = %admitted.client, user = %startup.user, database = %startup.database, reason, "authentication failed");
    listener
        .metrics
        .auth_failures
        .fetch_add(1, Ordering::Relaxed);
    audit_auth_failure(shared, listener, admitted, &startup.user, reason);
    // The SQLSTATEs and messages PostgreSQL uses for the same refusals.
    let (sqlstate, message) = match answer {
        Answer::DatabaseNotGranted => (
            "28000",
            format!(
                "user \"{}\" may not connect to database \"{}\"",
                startup.user, startup.database
            ),
        ),
        Answer::NoCertificate => (
            "28000",
            "connection requires a valid client certificate".to_string(),
        ),
        Answer::CertificateMismatch => (
            "28000",
            format!(
                "certificate authentication failed for user \"{}\"",
                startup.user
            ),
        ),
        Answer::Password => (
            "28P01",
            format!(
                "password authentication failed for user \"{}\"",
                startup.user
            ),
        ),
    };
    fatal(client, sqlstate, &message).await;
}

/// What a refused client is told. It depends only on what the client can see anyway (the
/// exchange it went through, whether it sent a certificate), never on why it was refused.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Password,
    NoCertificate,
    CertificateMismatch,
    /// Only after a successful authentication.
    DatabaseNotGranted,
}

enum AuthFail {
    /// The client went away mid-exchange.
    Closed,
    /// Refused; the reason is for the audit log only.
    Refused(&'static str, Answer),
}

fn refused(reason: &'static str) -> AuthFail {
    AuthFail::Refused(reason, Answer::Password)
}

/// A set of `auth` methods, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Methods(u8);

impl Methods {
    const TOKEN: u8 = 1;
    const SCRAM: u8 = 2;
    const CERT: u8 = 4;

    fn of(auth: &[AuthMethod]) -> Methods {
        Methods(auth.iter().fold(0, |m, a| {
            m | match a {
                AuthMethod::Token => Self::TOKEN,
                AuthMethod::Scram => Self::SCRAM,
                AuthMethod::Cert => Self::CERT,
            }
        }))
    }

    fn has(self, method: u8) -> bool {
        self.0 & method != 0
    }

    fn cert_only(self) -> bool {
        self.0 == Self::CERT
    }
}

/// The methods a name that cannot log in (an unknown user) is answered as having: the set most
/// `[[users]]` entries have, the first in the file on a tie, so where every user logs in the
/// same way an unknown name cannot be told from a known one. It depends on the configuration
/// only, never on the name. With no users, token and scram.
fn usual_methods(users: &[User]) -> Methods {
    let mut counts = [0u32; 8];
    for u in users {
        counts[usize::from(Methods::of(&u.auth).0)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(0);
    users
        .iter()
        .map(|u| Methods::of(&u.auth))
        .find(|m| counts[usize::from(m.0)] == most)
        .unwrap_or(Methods(Methods::TOKEN | Methods::SCRAM))
}

/// A per-process key for stand-in verifiers when the gateway has no vault (then no one logs in
/// with a password, but the exchange still looks like any other).
fn process_mock_key() -> Option<&'static [u8]> {
    static KEY: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| sumun_vault::crypto::random_bytes(32).ok())
        .as_deref()
}

/// The verifier an exchange checks the client against, and, when it is a stand-in, the
/// reason the login is refused once the check has run.
struct Against {
    verifier: ScramVerifier,
    refuse: Option<&'static str>,
}

fn against(
    vault: Option<&VaultState>,
    account: Option<&User>,
    name: &str,
    nobody: &'static str,
) -> Result<Against, AuthFail> {
    if let (Some(_), Some(v)) = (account, vault) {
        if let Some(verifier) = v.scram_verifier(name) {
            return Ok(Against {
                verifier: verifier.clone(),
                refuse: None,
            });
        }
    }
    let verifier = match vault {
        Some(v) => v.mock_scram_verifier(name),
        None => ScramVerifier::mock(process_mock_key().ok_or_else(|| refused("internal"))?, name),
    };
    Ok(Against {
        verifier,
        refuse: Some(match (account, vault) {
            (None, _) => nobody,
            (Some(_), None) => "no_vault",
            (Some(_), Some(_)) => "no_password_set",
        }),
    })
}

/// Runs the exchange and returns the method that succeeded.
///
/// The exchange is chosen from the user's `auth` methods and the connection. A name that
/// cannot log in goes through the exchange of the usual methods ([`usual_methods`]) against
/// a stand-in verifier, doing the same verification work, and is refused at its end with the
/// same answer: an unknown name, and a `cert`-only user without its certificate where most
/// users log in otherwise (told what an unknown name is told, not that a certificate is
/// wanted). Where most users are `cert`-only, an unknown name is refused at once, exactly as a
/// `cert`-only user without its certificate is.
async fn check(
    client: &mut ClientStream,
    startup: &ClientStartup,
    user: Option<&User>,
    users: &[User],
    shared: &Shared,
) -> Result<&'static str, AuthFail> {
    let usual = usual_methods(users);
    // A certificate naming a `cert` user logs it in with no exchange.
    if let Some(u) = user {
        if Methods::of(&u.auth).has(Methods::CERT) {
            if let Some(der) = client.peer_certificate() {
                if sumun_pki::common_name(&der).as_deref() == Some(startup.user.as_str()) {
                    send_ok(client).await?;
                    return Ok("cert");
                }
            }
        }
    }
    let (cert_reason, cert_answer) = if client.peer_certificate().is_some() {
        ("certificate_name_mismatch", Answer::CertificateMismatch)
    } else {
        ("no_client_certificate", Answer::NoCertificate)
    };
    // `account` is who the exchange can log in; `nobody` why it cannot when there is none.
    let (methods, account, nobody) = match user {
        None => (usual, None, "unknown_user"),
        Some(u) if Methods::of(&u.auth).cert_only() && !usual.cert_only() => {
            (usual, None, cert_reason)
        }
        Some(u) => (Methods::of(&u.auth), Some(u), "unknown_user"),
    };
    if methods.cert_only() {
        // Nothing to exchange: refused at once, as PostgreSQL's `cert` method does.
        let reason = if account.is_some() {
            cert_reason
        } else {
            nobody
        };
        return Err(AuthFail::Refused(reason, cert_answer));
    }
    let vault = shared.vault.load_full().map(|v| v.state());
    let vault = vault.as_deref();
    let scram = methods.has(Methods::SCRAM);
    let token = methods.has(Methods::TOKEN);
    if scram && (!token || !client.is_tls()) {
        let against = against(vault, account, &startup.user, nobody)?;
        return scram_exchange(client, against, startup.tls_endpoint).await;
    }
    // Cleartext password: a token, or a password checked against the SCRAM verifier.
    let mut w = Writer::new();
    w.auth(code::CLEARTEXT, &[]);
    client.send(&w.buf).await.map_err(|_| AuthFail::Closed)?;
    let body = read_password_message(client).await?;
    let password = pg::cstr(&body).map_or(&body[..], |(p, _)| p);
    let Some(vault) = vault else {
        return Err(refused("no_vault"));
    };
    if token && sumun_vault::TokenVerifier::looks_like_token(password) {
        let verdict = match std::str::from_utf8(password) {
            Err(_) => Err("token_malformed"),
            Ok(text) => match vault.verify_token(text, &shared.config.load().gateway.name) {
                Err(e) => Err(crate::frontend::token_reason(&e)),
                Ok(claims) if claims.user != startup.user => Err("token_user_mismatch"),
                Ok(claims)
                    if claims
                        .database
                        .as_ref()
                        .is_some_and(|d| *d != startup.database) =>
                {
                    Err("token_database_mismatch")
                }
                Ok(_) => Ok(()),
            },
        };
        if account.is_none() {
            return Err(refused(nobody));
        }
        verdict.map_err(refused)?;
        send_ok(client).await?;
        return Ok("token");
    }
    if scram {
        let against = against(Some(vault), account, &startup.user, nobody)?;
        let v = &against.verifier;
        // PBKDF2 on the blocking pool, not on this worker (and not cached: these are guesses).
        let salted = crate::kdf::derive(password, &v.salt, v.iterations)
            .await
            .map_err(|_| refused("internal"))?;
        let derived = ScramVerifier::from_salted(&salted, &v.salt, v.iterations);
        let matches = constant_time_eq(&derived.stored_key, &v.stored_key);
        if let Some(reason) = against.refuse {
            return Err(refused(reason));
        }
        if !matches {
            return Err(refused("wrong_password"));
        }
        send_ok(client).await?;
        return Ok("password");
    }
    Err(refused(if account.is_none() {
        nobody
    } else {
        "not_a_token"
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Constant time: the comparison must not tell how much of a guess was right.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn send_ok(client: &mut ClientStream) -> Result<(), AuthFail> {
    let mut w = Writer::new();
    w.auth(code::OK, &[]);
    client.send(&w.buf).await.map_err(|_| AuthFail::Closed)
}

/// The client's PasswordMessage body: a password or a token, wiped when dropped.
async fn read_password_message(
    client: &mut ClientStream,
) -> Result<zeroize::Zeroizing<Vec<u8>>, AuthFail> {
    let mut head = [0u8; 5];
    client
        .read_exact(&mut head)
        .await
        .map_err(|_| AuthFail::Closed)?;
    if head[0] != b'p' {
        return Err(refused("protocol_violation"));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=MAX_PASSWORD_MESSAGE).contains(&len) {
        return Err(refused("protocol_violation"));
    }
    let mut body = zeroize::Zeroizing::new(vec![0u8; len - 4]);
    client
        .read_exact(&mut body)
        .await
        .map_err(|_| AuthFail::Closed)?;
    Ok(body)
}

/// The server side of SCRAM-SHA-256 (RFC 5802/7677), and over TLS SCRAM-SHA-256-PLUS with
/// `tls-server-end-point` channel binding (RFC 5929), which proves the client's TLS session
/// ends at this gateway and not at a machine in the middle. Against a stand-in verifier (an
/// unknown user, no password set) every step is the same, the proof included, and the login is
/// refused where a wrong password would be.
async fn scram_exchange(
    client: &mut ClientStream,
    against: Against,
    endpoint: Option<crate::tls::EndPoint>,
) -> Result<&'static str, AuthFail> {
    let verifier = against.verifier;
    let mut w = Writer::new();
    if endpoint.is_some() {
        w.auth_sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
    } else {
        w.auth_sasl(&["SCRAM-SHA-256"]);
    }
    client.send(&w.buf).await.map_err(|_| AuthFail::Closed)?;

    let body = read_password_message(client).await?;
    let (mechanism, first) =
        pg::sasl_initial_response(&body).map_err(|_| refused("protocol_violation"))?;
    let plus = match (mechanism, endpoint) {
        (b"SCRAM-SHA-256", _) => false,
        (b"SCRAM-SHA-256-PLUS", Some(_)) => true,
        _ => return Err(refused("unsupported_sasl_mechanism")),
    };
    let first = std::str::from_utf8(first).map_err(|_| refused("protocol_violation"))?;
    // gs2 header: "n,," (no binding), "y,," (client could bind but thinks the server cannot —
    // a downgrade when the server offered -PLUS), "p=tls-server-end-point,," (binding).
    const BIND: &str = "p=tls-server-end-point,,";
    let (gs2, bare) = if plus {
        match first.strip_prefix(BIND) {
            Some(b) => (BIND, b),
            None => return Err(refused("unsupported_channel_binding")),
        }
    } else if let Some(b) = first.strip_prefix("n,,") {
        ("n,,", b)
    } else if let Some(b) = first.strip_prefix("y,,") {
        if endpoint.is_some() {
            return Err(refused("channel_binding_downgrade"));
        }
        ("y,,", b)
    } else {
        return Err(refused("unsupported_channel_binding"));
    };
    let client_nonce = bare
        .split(',')
        .find_map(|p| p.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| refused("protocol_violation"))?;
    let server_nonce = sumun_vault::crypto::random_bytes(18)
        .map(|b| sumun_vault::crypto::b64(&b))
        .map_err(|_| refused("internal"))?;
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        sumun_vault::crypto::b64(&verifier.salt),
        verifier.iterations
    );
    let mut w = Writer::new();
    w.auth(code::SASL_CONTINUE, server_first.as_bytes());
    client.send(&w.buf).await.map_err(|_| AuthFail::Closed)?;

    let body = read_password_message(client).await?;
    let fin = std::str::from_utf8(&body).map_err(|_| refused("protocol_violation"))?;
    let (without_proof, proof) = fin
        .rsplit_once(",p=")
        .ok_or_else(|| refused("protocol_violation"))?;
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
        return Err(refused("protocol_violation"));
    }
    if channel != Some(expected_channel.as_str()) {
        return Err(refused(if plus {
            "channel_binding_mismatch"
        } else {
            "protocol_violation"
        }));
    }
    let proof = sumun_vault::crypto::unb64(proof).ok_or_else(|| refused("protocol_violation"))?;
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let proved = verifier.verify_client_proof(auth_message.as_bytes(), &proof);
    if let Some(reason) = against.refuse {
        return Err(refused(reason));
    }
    if !proved {
        return Err(refused("wrong_password"));
    }
    let signature = verifier.server_signature(auth_message.as_bytes());
    let mut w = Writer::new();
    w.auth(
        code::SASL_FINAL,
        format!("v={}", sumun_vault::crypto::b64(&signature)).as_bytes(),
    );
    w.auth(code::OK, &[]);
    client.send(&w.buf).await.map_err(|_| AuthFail::Closed)?;
    Ok(if plus { "scram-plus" } else { "scram" })
}

#[allow(dead_code)]
fn _unused(_: &ListenerSnapshot) {}
