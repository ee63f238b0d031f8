//! The master key: the one key that is not in the vault. It only wraps and unwraps the vault's
//! key-encryption key (a handful of calls per process), which is exactly the shape of a KMS
//! `Encrypt`/`Decrypt` API, so [`MasterKey`] is the seam where AWS KMS, GCP KMS or Vault transit
//! plug in later. Local sources: `SUMUN_MASTER_KEY` (base64 of 32 bytes), a key file that must
//! be mode 0600, or a passphrase stretched with Argon2id. This module does no store I/O.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::{self, CryptoError, KEY_LEN};
use crate::secret::SecretBytes;

/// Environment variable holding the master key, base64 of 32 bytes.
pub const ENV_MASTER_KEY: &str = "SUMUN_MASTER_KEY";
/// Environment variable naming a master key file (default: `DIR/master.key`).
pub const ENV_MASTER_KEY_FILE: &str = "SUMUN_MASTER_KEY_FILE";
/// Environment variable holding a passphrase, for vaults created with one.
pub const ENV_MASTER_PASSPHRASE: &str = "SUMUN_MASTER_PASSPHRASE";
/// Name of the key file inside a vault directory.
pub const KEY_FILE_NAME: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("{ENV_MASTER_KEY} must be the base64 encoding of exactly 32 bytes")]
    EnvInvalid,
    #[error("master key file '{}' does not exist (set {ENV_MASTER_KEY}, {ENV_MASTER_KEY_FILE} or create the vault with `sumun vault init`)", .0.display())]
    FileMissing(PathBuf),
    #[error("master key file '{}' has mode {mode:o}; it must be readable by its owner only (chmod 600)", .path.display())]
    FileMode { path: PathBuf, mode: u32 },
    #[error("master key file '{}' must hold the base64 encoding of exactly 32 bytes", .0.display())]
    FileInvalid(PathBuf),
    #[error("master key file '{}': {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("this vault was created with a passphrase: set {ENV_MASTER_PASSPHRASE}")]
    PassphraseMissing,
    #[error("passphrase key derivation failed: {0}")]
    Kdf(String),
    #[error("the master key does not unwrap this vault's key (wrong master key)")]
    Unwrap,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl MasterKeyError {
    /// Whether the operator gave bad input (a missing or malformed key), as opposed to a
    /// runtime failure; the CLI maps this to exit status 2.
    pub fn is_input(&self) -> bool {
        !matches!(self, MasterKeyError::Crypto(_) | MasterKeyError::Io { .. })
    }
}

/// Wraps and unwraps key material. Implementations must bind `context` (associated data) so a
/// wrapped key cannot be replayed for another purpose; a KMS implementation passes it as the
/// encryption context.
pub trait MasterKey: Send + Sync {
    /// A stable, non-secret identifier recorded in the store, so that opening a vault with a
    /// different key says "wrong master key" instead of "tampered". A KMS key uses its ARN.
    fn id(&self) -> &str;
    /// What kind of source this is, recorded in the store to pick the source on open.
    fn source(&self) -> MasterKeySource;
    fn wrap(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, MasterKeyError>;
    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<SecretBytes, MasterKeyError>;
}

/// Where the master key came from when the vault was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterKeySource {
    /// `SUMUN_MASTER_KEY` or a key file: the same 32 raw bytes either way.
    Key,
    /// A passphrase stretched with Argon2id; the salt and cost are in [`KdfParams`].
    Passphrase,
}

/// Argon2id parameters, stored in the vault header (they are not secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub algorithm: String,
    pub salt: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl KdfParams {
    /// OWASP's recommended Argon2id profile (64 MiB, 3 passes, 1 lane) with a fresh salt.
    pub fn new_random() -> Result<Self, MasterKeyError> {
        Ok(KdfParams {
            algorithm: "argon2id".into(),
            salt: crypto::b64(&crypto::random_bytes(16)?),
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        })
    }
}

/// A master key held in this process's memory (env var, key file or passphrase).
pub struct LocalMasterKey {
    key: SecretBytes,
    id: String,
    source: MasterKeySource,
}

impl std::fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMasterKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl LocalMasterKey {
    fn from_bytes(key: SecretBytes, source: MasterKeySource) -> Self {
        // The id is a keyed fingerprint: it reveals nothing about the key but changes with it.
        let fp = crypto::hmac_sha256(key.expose(), b"sumun master key id");
        let id = format!("local:{}", crypto::b64url(&fp[..9]));
        LocalMasterKey { key, id, source }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, MasterKeyError> {
        Ok(Self::from_bytes(
            crypto::random_key()?,
            MasterKeySource::Key,
        ))
    }

    /// From base64 text such as the value of `SUMUN_MASTER_KEY`.
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let raw = SecretBytes::new(crypto::unb64(text.trim()).ok_or(MasterKeyError::EnvInvalid)?);
        if raw.len() != KEY_LEN {
            return Err(MasterKeyError::EnvInvalid);
        }
        Ok(Self::from_bytes(raw, MasterKeySource::Key))
    }

    /// The key as base64, to hand to an operator once (`vault init` with `--print-key`).
    pub fn to_base64(&self) -> SecretBytes {
        SecretBytes::new(crypto::b64(self.key.expose()).into_bytes())
    }

    /// Reads a key file, refusing one that group or others can read.
    pub fn from_key_file(path: &Path) -> Result<Self, MasterKeyError> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MasterKeyError::FileMissing(path.to_path_buf()))
            }
            Err(source) => {
                return Err(MasterKeyError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(MasterKeyError::FileMode {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = SecretBytes::new(fs::read(path).map_err(|source| MasterKeyError::Io {
            path: path.to_path_buf(),
            source,
        })?);
        let text = text
            .expose_str()
            .ok_or_else(|| MasterKeyError::FileInvalid(path.to_path_buf()))?;
        Self::from_base64(text).map_err(|_| MasterKeyError::FileInvalid(path.to_path_buf()))
    }

    /// Writes the key to a new file with mode 0600 (never overwrites an existing one).
    pub fn write_key_file(&self, path: &Path) -> Result<(), MasterKeyError> {
        let io = |source| MasterKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        let mut text = self.to_base64().expose().to_vec();
        text.push(b'\n');
        let text = SecretBytes::new(text);
        f.write_all(text.expose()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(())
    }

    /// Stretches a passphrase with Argon2id.
    pub fn from_passphrase(passphrase: &[u8], params: &KdfParams) -> Result<Self, MasterKeyError> {
        if params.algorithm != "argon2id" {
            return Err(MasterKeyError::Kdf(format!(
                "unsupported algorithm '{}'",
                params.algorithm
            )));
        }
        let salt = crypto::unb64(&params.salt)
            .ok_or_else(|| MasterKeyError::Kdf("salt is not base64".into()))?;
        let argon_params = argon2::Params::new(
            params.m_cost_kib,
            params.t_cost,
            params.p_cost,
            Some(KEY_LEN),
        )
        .map_err(|e| MasterKeyError::Kdf(e.to_string()))?;
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon_params,
        );
        let mut out = vec![0u8; KEY_LEN];
        argon
            .hash_password_into(passphrase, &salt, &mut out)
            .map_err(|e| MasterKeyError::Kdf(e.to_string()))?;
        Ok(Self::from_bytes(
            SecretBytes::new(out),
            MasterKeySource::Passphrase,
        ))
    }
}

impl MasterKey for LocalMasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn source(&self) -> MasterKeySource {
        self.source
    }

    fn wrap(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        Ok(crypto::seal(self.key.expose(), context, plaintext)?)
    }

    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<SecretBytes, MasterKeyError> {
        crypto::open(self.key.expose(), context, wrapped).map_err(|_| MasterKeyError::Unwrap)
    }
}

/// Picks the master key for a vault in `dir`, in this order: `SUMUN_MASTER_KEY`; then, for a
/// passphrase vault, `SUMUN_MASTER_PASSPHRASE`; then the key file (`SUMUN_MASTER_KEY_FILE` or
/// `DIR/master.key`, or `key_file` when the config names one). `kdf` is the vault header's
/// passphrase parameters, if it has any.
pub fn resolve_master_key(
    dir: &Path,
    kdf: Option<&KdfParams>,
    key_file: Option<&Path>,
) -> Result<Box<dyn MasterKey>, MasterKeyError> {
    if let Ok(text) = std::env::var(ENV_MASTER_KEY) {
        return Ok(Box::new(LocalMasterKey::from_base64(&text)?));
    }
    if let Some(params) = kdf {
        let pass =
            std::env::var(ENV_MASTER_PASSPHRASE).map_err(|_| MasterKeyError::PassphraseMissing)?;
        let pass = SecretBytes::new(pass.into_bytes());
        return Ok(Box::new(LocalMasterKey::from_passphrase(
            pass.expose(),
            params,
        )?));
    }
    let path = std::env::var_os(ENV_MASTER_KEY_FILE)
        .map(PathBuf::from)
        .or_else(|| key_file.map(Path::to_path_buf))
        .unwrap_or_else(|| dir.join(KEY_FILE_NAME));
    Ok(Box::new(LocalMasterKey::from_key_file(&path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_ids_differ() {
        let a = LocalMasterKey::generate().unwrap();
        let b = LocalMasterKey::from_base64(a.to_base64().expose_str().unwrap()).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), LocalMasterKey::generate().unwrap().id());
        assert!(LocalMasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(!format!("{a:?}").contains(a.to_base64().expose_str().unwrap()));
    }

    #[test]
    fn wrong_key_does_not_unwrap() {
        let a = LocalMasterKey::generate().unwrap();
        let b = LocalMasterKey::generate().unwrap();
        let w = a.wrap(b"k", b"ctx").unwrap();
        assert_eq!(a.unwrap(&w, b"ctx").unwrap().expose(), b"k");
        assert!(matches!(b.unwrap(&w, b"ctx"), Err(MasterKeyError::Unwrap)));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_must_be_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::store::tests::temp_dir();
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(KEY_FILE_NAME);
        let k = LocalMasterKey::generate().unwrap();
        k.write_key_file(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert!(k.write_key_file(&path).is_err(), "must not overwrite a key");
        assert_eq!(LocalMasterKey::from_key_file(&path).unwrap().id(), k.id());
        let key_text = k.to_base64();
        for bad in [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004, 0o610] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            let err = LocalMasterKey::from_key_file(&path).unwrap_err();
            assert!(
                matches!(err, MasterKeyError::FileMode { mode, .. } if mode == bad),
                "{bad:o}: {err}"
            );
            assert!(err.is_input());
            let msg = err.to_string();
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(!msg.contains(key_text.expose_str().unwrap()));
        }
        for good in [0o600, 0o400] {
            fs::set_permissions(&path, fs::Permissions::from_mode(good)).unwrap();
            assert!(LocalMasterKey::from_key_file(&path).is_ok(), "{good:o}");
        }
        assert!(matches!(
            LocalMasterKey::from_key_file(&dir.join("absent.key")),
            Err(MasterKeyError::FileMissing(_))
        ));
    }

    #[test]
    fn passphrase_is_deterministic_per_salt() {
        let mut p = KdfParams::new_random().unwrap();
        p.m_cost_kib = 1024; // keep the test fast; production uses 64 MiB
        let a = LocalMasterKey::from_passphrase(b"correct horse", &p).unwrap();
        let b = LocalMasterKey::from_passphrase(b"correct horse", &p).unwrap();
        let c = LocalMasterKey::from_passphrase(b"wrong horse", &p).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
    }
}
