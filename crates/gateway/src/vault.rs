//! The gateway's handle on the vault: token verification for client logins, password verifiers
//! for SCRAM, and backend credentials. The vault file is re-read when it changes on disk (a
//! `sumun secrets rotate` or `keys rotate` from the CLI), so a rotated backend password is used
//! by the next new backend connection and a new token key verifies at once; connections already
//! open are not touched.

use std::path::PathBuf;
use std::sync::Mutex;

use arc_swap::ArcSwap;
use std::sync::Arc;
use sumun_config::VaultSettings;
use sumun_vault::{
    Claims, PasswordVerifiers, SecretBytes, StoreError, TokenError, TokenVerifier, Vault,
    VerifyPolicy,
};

pub struct VaultRt {
    pub dir: PathBuf,
    pub key_file: Option<PathBuf>,
    vault: Mutex<Vault>,
    verifier: ArcSwap<TokenVerifier>,
    policy: VerifyPolicy,
    /// Users' password verifiers, decrypted once rather than per login (emptied whenever the
    /// vault is re-read; read and filled under the vault's lock, so never stale). They are
    /// what PostgreSQL keeps in `pg_authid`, not passwords.
    verifiers: Mutex<std::collections::HashMap<String, PasswordVerifiers>>,
}

impl std::fmt::Debug for VaultRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultRt")
            .field("dir", &self.dir)
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

impl VaultRt {
    pub fn open(settings: &VaultSettings) -> Result<VaultRt, StoreError> {
        let vault = Vault::open_with_key_file(&settings.dir, settings.key_file.as_deref())?;
        let policy = VerifyPolicy {
            max_ttl_secs: settings.token_max_ttl.as_secs(),
            clock_skew_secs: sumun_vault::token::DEFAULT_SKEW_SECS,
        };
        let verifier = vault.token_verifier(policy)?;
        Ok(VaultRt {
            dir: settings.dir.clone(),
            key_file: settings.key_file.clone(),
            vault: Mutex::new(vault),
            verifier: ArcSwap::from_pointee(verifier),
            policy,
            verifiers: Mutex::default(),
        })
    }

    pub fn same_place(&self, settings: &VaultSettings) -> bool {
        self.dir == settings.dir && self.key_file == settings.key_file
    }

    fn with<T>(&self, f: impl FnOnce(&Vault) -> T) -> T {
        let mut vault = self.vault.lock().unwrap_or_else(|p| p.into_inner());
        if vault.has_changed() {
            match vault.reload() {
                Ok(true) => {
                    self.cached_verifiers().clear();
                    match vault.token_verifier(self.policy) {
                        Ok(v) => {
                            self.verifier.store(Arc::new(v));
                            tracing::info!(dir = %self.dir.display(), "vault changed on disk; reloaded");
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "vault reloaded but its token keys are unusable; keeping the previous ones")
                        }
                    }
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "vault changed on disk but cannot be read; keeping the previous state")
                }
            }
        }
        f(&vault)
    }

    fn cached_verifiers(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, PasswordVerifiers>> {
        self.verifiers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn verify_token(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        self.with(|_| ());
        self.verifier
            .load()
            .verify(token, audience, sumun_vault::store::now_unix_secs())
    }

    pub fn user_verifiers(&self, user: &str) -> Result<Option<PasswordVerifiers>, StoreError> {
        self.with(|v| {
            let mut cache = self.cached_verifiers();
            if let Some(hit) = cache.get(user) {
                return Ok(Some(hit.clone()));
            }
            let found = v.user_verifiers(user)?;
            if let Some(found) = &found {
                cache.insert(user.to_string(), found.clone());
            }
            Ok(found)
        })
    }

    /// The username a backend secret logs in as, without decrypting anything.
    pub fn backend_username(&self, name: &str) -> Option<String> {
        self.with(|v| v.info(name).ok().and_then(|i| i.username))
    }

    pub fn backend_credential(&self, name: &str) -> Result<BackendCredential, StoreError> {
        self.with(|v| {
            let info = v.info(name)?;
            let passwords = v
                .login_candidates(name)?
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            Ok(BackendCredential {
                username: info.username,
                passwords,
            })
        })
    }
}
