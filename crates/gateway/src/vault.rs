//! The gateway's handle on the vault: token verification for client logins, password verifiers
//! for SCRAM, and backend credentials. A login only loads the current [`VaultState`] (one
//! lock-free `ArcSwap` load), already unsealed: it never touches the disk, takes no lock and
//! decrypts nothing. The vault file is watched from the control plane ([`watch`]): its metadata
//! is checked every [`WATCH_INTERVAL`], and when it changed (`sumun secrets rotate`,
//! `keys rotate`, `users set-password`) it is re-read and unsealed on a blocking thread and the
//! new state swapped in, so a rotated backend password is used by the next new backend
//! connection and a new token key verifies within that period. A file that cannot be read
//! keeps the previous state. Connections already open are not touched.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use sumun_config::VaultSettings;
use sumun_vault::{
    Claims, ScramVerifier, SecretBytes, StoreError, TokenError, TokenVerifier, Vault, VerifyPolicy,
};

/// How often the watcher checks whether the vault file changed: the longest a change made by
/// the CLI takes to reach logins (plus the time to unseal it).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

pub struct VaultRt {
    pub dir: PathBuf,
    pub key_file: Option<PathBuf>,
    policy: VerifyPolicy,
    /// What logins read.
    state: ArcSwap<VaultState>,
    /// The open store. Only [`VaultRt::open`] and the watcher touch it, never a login.
    store: Mutex<Vault>,
}

impl std::fmt::Debug for VaultRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultRt")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// One revision of the vault, unsealed for the data plane. Users' verifiers are what
/// PostgreSQL keeps in `pg_authid` (not passwords); backend passwords are held as the
/// gateway holds the KEK that opens them anyway, in buffers wiped on drop.
pub struct VaultState {
    revision: u64,
    tokens: Arc<TokenVerifier>,
    scram: HashMap<String, ScramVerifier>,
    /// MySQL's `mysql_native_password` verifiers (SHA1(SHA1(password))) of the same users.
    mysql_native: HashMap<String, sumun_vault::mysql::NativeVerifier>,
    backends: HashMap<String, Backend>,
    /// Keys the stand-in SCRAM verifiers of unknown users (see `ScramVerifier::mock`).
    mock_key: SecretBytes,
}

struct Backend {
    username: Option<String>,
    /// Every version that may log in, best first; or why they could not be unsealed.
    passwords: Result<Vec<SecretBytes>, Arc<StoreError>>,
}

impl std::fmt::Debug for VaultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultState")
            .field("revision", &self.revision)
            .field("users", &self.scram.len())
            .field("secrets", &self.backends.len())
            .finish_non_exhaustive()
    }
}

/// A backend login: who to log in as and the passwords to try, best first.
pub struct BackendCredential {
    pub username: Option<String>,
    pub passwords: Vec<SecretBytes>,
}

impl std::fmt::Debug for BackendCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendCredential")
            .field("username", &self.username)
            .field("passwords", &self.passwords.len())
            .finish()
    }
}

impl VaultState {
    /// Unseals what logins need from `vault`. An item that fails to unseal is left out (and
    /// logged) rather than failing the whole revision; token keys and the mock key that fail
    /// keep `previous`'s, and fail the load only when there is none.
    fn unseal(
        vault: &Vault,
        policy: VerifyPolicy,
        previous: Option<&VaultState>,
    ) -> Result<VaultState, StoreError> {
        let tokens = match (vault.token_verifier(policy), previous) {
            (Ok(v), _) => Arc::new(v),
            (Err(err), Some(p)) => {
                tracing::warn!(error = %err, "vault token keys are unusable; keeping the previous ones");
                p.tokens.clone()
            }
            (Err(err), None) => return Err(err),
        };
        let mock_key = match (vault.mock_scram_key(), previous) {
            (Ok(k), _) => k,
            (Err(_), Some(p)) => p.mock_key.clone(),
            (Err(err), None) => return Err(err),
        };
        let mut scram = HashMap::new();
        let mut mysql_native = HashMap::new();
        for user in vault.users() {
            if let Ok(Some(v)) = vault.user_verifiers(&user) {
                if let Ok(native) =
                    sumun_vault::mysql::NativeVerifier::from_hash_text(&v.mysql_native)
                {
                    mysql_native.insert(user.clone(), native);
                }
            }
            match vault.user_verifiers(&user).map(|v| v.map(|v| v.scram())) {
                Ok(Some(Ok(v))) => {
                    scram.insert(user, v);
                }
                Ok(None) => {}
                Ok(Some(Err(err))) => {
                    tracing::warn!(user = %user, error = %err, "unusable SCRAM verifier in the vault; this user cannot log in with a password")
                }
                Err(err) => {
                    tracing::warn!(user = %user, error = %err, "cannot unseal a password verifier; this user cannot log in with a password")
                }
            }
        }
        let backends = vault
            .list()
            .into_iter()
            .map(|info| {
                let passwords = vault
                    .login_candidates(&info.name)
                    .map(|c| c.into_iter().map(|(_, s)| s).collect())
                    .map_err(Arc::new);
                let backend = Backend {
                    username: info.username,
                    passwords,
                };
                (info.name, backend)
            })
            .collect();
        Ok(VaultState {
            revision: vault.revision(),
            tokens,
            scram,
            mysql_native,
            backends,
            mock_key,
        })
    }

    /// The store revision this state was read from.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn verify_token(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        self.tokens
            .verify(token, audience, sumun_vault::store::now_unix_secs())
    }

    /// The SCRAM-SHA-256 verifier `sumun users set-password` stored for `user`.
    pub fn scram_verifier(&self, user: &str) -> Option<&ScramVerifier> {
        self.scram.get(user)
    }

    /// The `mysql_native_password` verifier `sumun users set-password` stored for `user`.
    pub fn mysql_native_verifier(&self, user: &str) -> Option<&sumun_vault::mysql::NativeVerifier> {
        self.mysql_native.get(user)
    }

    /// The stand-in verifier for a user without one: the same for a name on every gateway
    /// sharing this vault, and matching no password.
    pub fn mock_scram_verifier(&self, user: &str) -> ScramVerifier {
        ScramVerifier::mock(self.mock_key.expose(), user)
    }
}

impl VaultRt {
    pub fn open(settings: &VaultSettings) -> Result<VaultRt, StoreError> {
        let vault = Vault::open_with_key_file(&settings.dir, settings.key_file.as_deref())?;
        let policy = VerifyPolicy {
            max_ttl_secs: settings.token_max_ttl.as_secs(),
            clock_skew_secs: sumun_vault::token::DEFAULT_SKEW_SECS,
        };
        let state = VaultState::unseal(&vault, policy, None)?;
        Ok(VaultRt {
            dir: settings.dir.clone(),
            key_file: settings.key_file.clone(),
            policy,
            state: ArcSwap::from_pointee(state),
            store: Mutex::new(vault),
        })
    }

    pub fn same_place(&self, settings: &VaultSettings) -> bool {
        self.dir == settings.dir && self.key_file == settings.key_file
    }

    /// The current state: one lock-free load.
    pub fn state(&self) -> Arc<VaultState> {
        self.state.load_full()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Vault> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the vault file is no longer the one loaded (one `stat`; control plane only).
    pub fn changed_on_disk(&self) -> bool {
        self.store().has_changed()
    }

    /// Re-reads the vault file if it changed and swaps in its unsealed state; returns the new
    /// revision, or `None` when nothing changed. Reads the disk and decrypts: call it off the
    /// data plane. On error the previous state stays.
    pub fn refresh(&self) -> Result<Option<u64>, StoreError> {
        let mut store = self.store();
        if !store.reload()? {
            return Ok(None);
        }
        let previous = self.state.load_full();
        let state = VaultState::unseal(&store, self.policy, Some(previous.as_ref()))?;
        let revision = state.revision;
        self.state.store(Arc::new(state));
        Ok(Some(revision))
    }

    pub fn verify_token(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        self.state.load().verify_token(token, audience)
    }

    /// The username a backend secret logs in as.
    pub fn backend_username(&self, name: &str) -> Option<String> {
        self.state
            .load()
            .backends
            .get(name)
            .and_then(|b| b.username.clone())
    }

    /// A backend secret's login, from memory.
    pub fn backend_credential(&self, name: &str) -> Result<BackendCredential, Arc<StoreError>> {
        let state = self.state.load();
        let backend = state
            .backends
            .get(name)
            .ok_or_else(|| Arc::new(StoreError::SecretNotFound(name.to_string())))?;
        Ok(BackendCredential {
            username: backend.username.clone(),
            passwords: backend.passwords.clone()?,
        })
    }
}

/// The control-plane task that keeps the gateway's vault state current: every
/// [`WATCH_INTERVAL`] it checks the vault file's metadata and, when it changed, reloads it on
/// a blocking thread. Ends when the gateway is dropped.
pub(crate) async fn watch(shared: Weak<crate::Shared>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last failure reported, so a broken file is logged once, not every tick.
    let mut failing: Option<String> = None;
    loop {
        tick.tick().await;
        let Some(rt) = shared.upgrade().map(|s| s.vault.load_full()) else {
            return;
        };
        let Some(rt) = rt else {
            continue;
        };
        if !rt.changed_on_disk() {
            continue;
        }
        let dir = rt.dir.clone();
        let outcome = tokio::task::spawn_blocking(move || rt.refresh()).await;
        match outcome {
            Ok(Ok(Some(revision))) => {
                failing = None;
                tracing::info!(dir = %dir.display(), revision, "vault changed on disk; reloaded");
            }
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                let text = err.to_string();
                if failing.as_deref() != Some(text.as_str()) {
                    tracing::warn!(dir = %dir.display(), error = %text, "vault changed on disk but cannot be read; keeping the previous state");
                    failing = Some(text);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "vault reload task failed; keeping the previous state")
            }
        }
    }
}
