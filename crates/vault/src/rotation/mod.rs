//! Backend password rotation (`sumun secrets rotate`). The protocol, designed so that a crash
//! at any point followed by a rerun converges, and so that at every moment at least one
//! version held in the vault logs in:
//!
//! 1. **stage**: a fresh password is stored as the secret's *pending* version (reused if a
//!    previous run already staged one: it may already be set on the backend).
//! 2. **set**: unless the pending password already logs in, log in with a working credential
//!    (the secret's own current/previous version, or the admin secret named in its metadata)
//!    and set the pending password on the backend (PostgreSQL sends a SCRAM verifier, MariaDB a
//!    native-password hash, so the cleartext never crosses the wire; Redis *adds* a password).
//! 3. **verify**: a fresh login with the pending password must succeed.
//! 4. **promote**: pending becomes current, current becomes previous (one atomic vault write).
//! 5. **finish**: Redis only, every password of the user but the current one is removed.
//!
//! The backend clients are small synchronous ones written for this job (startup + SCRAM for
//! PostgreSQL, handshake v10 + native password for MariaDB/MySQL, RESP for Redis) behind the
//! [`Backend`] trait, so protocol crates can reuse or replace them. They speak plaintext TCP.

pub mod mysql;
pub mod postgres;
pub mod redis;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::crypto::{self, CryptoError};
use crate::scram::ScramError;
use crate::secret::SecretBytes;
use crate::store::{SecretInfo, SecretKind, Stage, StoreError, Vault};

/// Length of generated passwords (alphanumeric, ~190 bits).
pub const PASSWORD_LEN: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot resolve backend address '{0}'")]
    Address(String),
    #[error("cannot connect to backend {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o error talking to backend {address}: {source}")]
    Io {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected reply from backend {address}: {detail}")]
    Protocol { address: String, detail: String },
    #[error("backend {address} refused the login as '{user}'")]
    LoginRejected { address: String, user: String },
    #[error("backend {address} returned error {code}: {message}")]
    Server {
        address: String,
        code: String,
        message: String,
    },
    #[error("backend {address}: {detail}")]
    Unsupported { address: String, detail: String },
    #[error(transparent)]
    Scram(#[from] ScramError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Where and as whom to log in.
#[derive(Clone, Copy)]
pub struct Login<'a> {
    pub address: &'a str,
    pub username: &'a str,
    pub password: &'a SecretBytes,
    /// Database to connect to (PostgreSQL; default `postgres`).
    pub database: Option<&'a str>,
}

impl std::fmt::Debug for Login<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("address", &self.address)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One backend kind's password operations.
pub trait Backend {
    /// A fresh login: `Ok(true)` accepted, `Ok(false)` refused for bad credentials; any other
    /// failure (unreachable, protocol error) is an `Err`, never mistaken for a wrong password.
    fn check_login(&self, login: &Login<'_>) -> Result<bool, BackendError>;
    /// Logged in as `admin`, sets `user`'s password so that `new` logs in. For Redis this adds
    /// a password; for SQL servers it replaces it.
    fn set_password(
        &self,
        admin: &Login<'_>,
        user: &str,
        new: &SecretBytes,
    ) -> Result<(), BackendError>;
    /// After promotion: remove any other password the user still has (Redis); a no-op where
    /// setting a password already replaced the old one.
    fn finish(
        &self,
        _admin: &Login<'_>,
        _user: &str,
        _current: &SecretBytes,
    ) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The backend implementation for a secret kind.
pub fn backend_for(kind: SecretKind) -> Option<Box<dyn Backend>> {
    match kind {
        SecretKind::Postgres => Some(Box::new(postgres::Postgres)),
        SecretKind::Mysql => Some(Box::new(mysql::Mysql)),
        SecretKind::Redis => Some(Box::new(redis::Redis)),
        SecretKind::Opaque => None,
    }
}

pub(crate) fn connect(address: &str) -> Result<TcpStream, BackendError> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|_| BackendError::Address(address.to_string()))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(BackendError::Connect {
        address: address.to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("no address")),
    })
}

/// Replaces every occurrence of the given secrets in a server message, so an error that echoes
/// a statement cannot leak a password into our error text.
pub(crate) fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out: String = message.chars().take(300).collect();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("secret '{name}' cannot be rotated: {reason}")]
    NotRotatable { name: String, reason: &'static str },
    #[error("no version of secret '{name}' logs in to {address} as '{user}' (fix the backend or `sumun secrets put` a working password, then rerun)")]
    NoWorkingLogin {
        name: String,
        address: String,
        user: String,
    },
    #[error("backend {address} did not accept the new password for secret '{name}'; the pending version is kept, rerun `sumun secrets rotate {name}`")]
    NotAccepted { name: String, address: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The points after which the protocol's state is durable; the fault-injection hook of the
/// CLI can stop the process right after any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Staged,
    Set,
    Verified,
    Promoted,
    Finished,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Staged,
        Step::Set,
        Step::Verified,
        Step::Promoted,
        Step::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Staged => "staged",
            Step::Set => "set",
            Step::Verified => "verified",
            Step::Promoted => "promoted",
            Step::Finished => "finished",
        }
    }
}

/// What a completed rotation did.
#[derive(Debug, Clone)]
pub struct RotationReport {
    pub name: String,
    pub new_version: u64,
    /// False when a previous, interrupted run had already set the password on the backend.
    pub set_on_backend: bool,
    pub via_admin: bool,
}

/// Rotates secret `name` (see the module docs). `on_step` is called after each durable step
/// with a short non-secret description.
pub fn rotate(
    vault: &mut Vault,
    name: &str,
    on_step: &mut dyn FnMut(Step, &str),
) -> Result<RotationReport, RotationError> {
    let info = vault.info(name)?;
    let not = |reason| RotationError::NotRotatable {
        name: name.to_string(),
        reason,
    };
    let backend = backend_for(info.kind)
        .ok_or_else(|| not("its kind is opaque (set --kind postgres|mysql|redis)"))?;
    let address = info
        .address
        .clone()
        .ok_or_else(|| not("it has no --address"))?;
    let user = info
        .username
        .clone()
        .ok_or_else(|| not("it has no --username"))?;
    let database = info.database.clone();
    let login = |password| Login {
        address: &address,
        username: login_user(info.kind, &user),
        password,
        database: database.as_deref(),
    };

    // 1. stage
    let fresh = crypto::generate_password(PASSWORD_LEN)?;
    let (version, newly) = vault.stage_pending(name, &fresh)?;
    drop(fresh);
    let pending = vault
        .get_stage(name, Stage::Pending)?
        .ok_or_else(|| StoreError::NoPending(name.to_string()))?;
    on_step(
        Step::Staged,
        &if newly {
            format!("staged pending version {version}")
        } else {
            format!("reusing pending version {version} from an interrupted rotation")
        },
    );

    // 2. set, unless an interrupted run already did
    let admin = admin_candidates(vault, &info)?;
    let via_admin = admin.is_some();
    let already = backend.check_login(&login(&pending))?;
    let mut set_on_backend = false;
    if !already {
        let candidates: Vec<(String, SecretBytes, Option<String>)> = match admin {
            Some(c) => c,
            None => vault
                .login_candidates(name)?
                .into_iter()
                .filter(|(s, _)| *s != Stage::Pending)
                .map(|(_, v)| (user.clone(), v, database.clone()))
                .collect(),
        };
        let mut done = false;
        for (admin_user, pw, admin_db) in &candidates {
            let admin_login = Login {
                address: &address,
                username: login_user(info.kind, admin_user),
                password: pw,
                database: admin_db.as_deref().or(database.as_deref()),
            };
            if !backend.check_login(&admin_login)? {
                continue;
            }
            backend.set_password(&admin_login, &user, &pending)?;
            done = true;
            break;
        }
        if !done {
            return Err(RotationError::NoWorkingLogin {
                name: name.to_string(),
                address,
                user: candidates.first().map(|c| c.0.clone()).unwrap_or(user),
            });
        }
        set_on_backend = true;
        on_step(Step::Set, "set the pending password on the backend");
    } else {
        on_step(
            Step::Set,
            "the backend already accepts the pending password",
        );
    }

    // 3. verify with a fresh login
    if !backend.check_login(&login(&pending))? {
        return Err(RotationError::NotAccepted {
            name: name.to_string(),
            address,
        });
    }
    on_step(
        Step::Verified,
        "a fresh login with the pending password works",
    );

    // 4. promote
    let version = vault.promote_pending(name)?;
    on_step(Step::Promoted, &format!("version {version} is now current"));

    // 5. finish: drop other passwords where the backend keeps several (Redis)
    let finisher: (String, SecretBytes, Option<String>) = match admin_candidates(vault, &info)? {
        Some(mut c) if !c.is_empty() => c.remove(0),
        _ => (user.clone(), pending.clone(), database.clone()),
    };
    let fin_login = Login {
        address: &address,
        username: login_user(info.kind, &finisher.0),
        password: &finisher.1,
        database: finisher.2.as_deref().or(database.as_deref()),
    };
    backend.finish(&fin_login, &user, &pending)?;
    on_step(Step::Finished, "rotation complete");

    Ok(RotationReport {
        name: name.to_string(),
        new_version: version,
        set_on_backend,
        via_admin,
    })
}

/// For MySQL, a username may carry a host (`app@%`), used in `ALTER USER`; logins use the
/// user part only.
fn login_user(kind: SecretKind, user: &str) -> &str {
    match kind {
        SecretKind::Mysql => user.split_once('@').map(|(u, _)| u).unwrap_or(user),
        _ => user,
    }
}

type Candidate = (String, SecretBytes, Option<String>);

/// The admin secret's login candidates (user, password, database), if metadata names one.
fn admin_candidates(
    vault: &Vault,
    info: &SecretInfo,
) -> Result<Option<Vec<Candidate>>, RotationError> {
    let Some(admin) = &info.admin_secret else {
        return Ok(None);
    };
    let a = vault.info(admin)?;
    let user = a.username.clone().ok_or(RotationError::NotRotatable {
        name: info.name.clone(),
        reason: "its admin secret has no --username",
    })?;
    Ok(Some(
        vault
            .login_candidates(admin)?
            .into_iter()
            .map(|(_, v)| (user.clone(), v, a.database.clone()))
            .collect(),
    ))
}
