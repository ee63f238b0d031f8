//! The secret store: one file, `DIR/vault.json`, holding every secret version, user password
//! verifier and token signing key, each sealed with its own data key (envelope encryption);
//! data keys are wrapped by the vault's key-encryption key (KEK), and the KEK by the master key.
//! The whole file is authenticated (an unkeyed SHA-256 that catches corruption early, then an
//! HMAC keyed from the KEK), so a flipped byte anywhere is refused before anything is decrypted.
//! Writers take an exclusive lock on `DIR/vault.lock`, re-read the file, change it and replace
//! it atomically (temp file, fsync, rename, fsync of the directory); readers never lock.
//! This module does no network I/O and prints nothing.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::crypto::{self, CryptoError};
use crate::master::{self, KdfParams, MasterKey, MasterKeyError, MasterKeySource};
use crate::scram::PasswordVerifiers;
use crate::secret::SecretBytes;
use crate::token::{TokenSigner, TokenVerifier, VerifyPolicy};

/// File name of the store inside the vault directory.
pub const STORE_FILE: &str = "vault.json";
const LOCK_FILE: &str = "vault.lock";
const MAGIC: &[u8] = b"sumun-vault 1\n";
const FORMAT: u32 = 1;

/// What an error means for whoever handles it: the CLI maps `Input` and `NotFound` to exit
/// status 2, the gateway counts the others as internal failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The operator asked for something malformed (a bad name, a missing or wrong master key).
    Input,
    /// The named vault, secret or user does not exist.
    NotFound,
    /// Integrity failure: a corrupted or tampered file, an unsupported format.
    Integrity,
    /// The file system or the random generator failed.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no vault at '{}' (create one with `sumun vault init --dir {}`)", .0.display(), .0.display())]
    NotFound(PathBuf),
    #[error("a vault already exists at '{}'", .0.display())]
    AlreadyExists(PathBuf),
    #[error("vault '{}' is corrupted or was tampered with", .0.display())]
    Corrupted(PathBuf),
    #[error("vault '{}' has unsupported format '{found}' (this sumun reads format {FORMAT})", .path.display())]
    Unsupported { path: PathBuf, found: String },
    #[error("wrong master key for vault '{}': it was sealed with key {expected}, this key is {got}", .path.display())]
    WrongMasterKey {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("{what} failed to decrypt: vault is corrupted or was tampered with")]
    Decrypt { what: String },
    #[error("secret '{0}' not found")]
    SecretNotFound(String),
    #[error("user '{0}' not found")]
    UserNotFound(String),
    #[error("invalid name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("secret '{0}' has no pending version")]
    NoPending(String),
    #[error("the vault holds no token signing key (run `sumun keys rotate`)")]
    NoSigningKey,
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("encoding the vault failed: {0}")]
    Encode(#[source] serde_json::Error),
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_)
            | StoreError::SecretNotFound(_)
            | StoreError::UserNotFound(_) => ErrorKind::NotFound,
            StoreError::AlreadyExists(_)
            | StoreError::InvalidName { .. }
            | StoreError::NoPending(_)
            | StoreError::NoSigningKey
            | StoreError::WrongMasterKey { .. } => ErrorKind::Input,
            StoreError::MasterKey(e) if e.is_input() => ErrorKind::Input,
            StoreError::Corrupted(_)
            | StoreError::Unsupported { .. }
            | StoreError::Decrypt { .. }
            | StoreError::MasterKey(_) => ErrorKind::Integrity,
            StoreError::Io { .. } | StoreError::Crypto(_) | StoreError::Encode(_) => {
                ErrorKind::Internal
            }
        }
    }
}

/// What a secret's value logs in to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretKind {
    Postgres,
    Mysql,
    Redis,
    Opaque,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Postgres => "postgres",
            SecretKind::Mysql => "mysql",
            SecretKind::Redis => "redis",
            SecretKind::Opaque => "opaque",
        }
    }
}

impl std::str::FromStr for SecretKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "postgres" | "postgresql" => Ok(SecretKind::Postgres),
            "mysql" | "mariadb" => Ok(SecretKind::Mysql),
            "redis" => Ok(SecretKind::Redis),
            "opaque" => Ok(SecretKind::Opaque),
            _ => Err(format!(
                "unknown secret kind '{s}' (expected postgres, mysql, redis or opaque)"
            )),
        }
    }
}

/// Which version of a secret (Secrets Manager's AWSCURRENT / AWSPREVIOUS / AWSPENDING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Current,
    Previous,
    Pending,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Current => "current",
            Stage::Previous => "previous",
            Stage::Pending => "pending",
        }
    }
}

/// Metadata to set on `put`; `None` keeps the existing value (or the default for a new secret).
#[derive(Debug, Clone, Default)]
pub struct SecretMeta {
    pub kind: Option<SecretKind>,
    pub address: Option<String>,
    pub username: Option<String>,
    pub database: Option<String>,
    /// Another secret in this vault to log in with when rotating this one.
    pub admin_secret: Option<String>,
}

/// A secret's metadata and version numbers; never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub kind: SecretKind,
    pub address: Option<String>,
    pub username: Option<String>,
    pub database: Option<String>,
    pub admin_secret: Option<String>,
    pub current_version: u64,
    pub previous_version: Option<u64>,
    pub pending_version: Option<u64>,
    /// Unix seconds when the current version was created.
    pub updated: u64,
}

// ---- on-disk records -------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreBody {
    format: u32,
    /// Bumped on every write, so a reloading reader can tell versions apart.
    revision: u64,
    master: MasterHeader,
    kek: KekRecord,
    #[serde(default)]
    secrets: BTreeMap<String, SecretRecord>,
    #[serde(default)]
    users: BTreeMap<String, UserRecord>,
    #[serde(default)]
    signing_keys: Vec<SigningKeyRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterHeader {
    key_id: String,
    source: MasterKeySource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfParams>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KekRecord {
    generation: u32,
    created: u64,
    /// The KEK wrapped by the master key.
    wrapped: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    /// KEK generation that wrapped `dek`.
    kek: u32,
    /// This item's own data key, wrapped by the KEK.
    dek: String,
    /// The value sealed with the data key.
    ct: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionRecord {
    version: u64,
    created: u64,
    sealed: Envelope,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRecord {
    kind: SecretKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    admin_secret: Option<String>,
    next_version: u64,
    current: VersionRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<VersionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<VersionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    created: u64,
    sealed: Envelope,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningKeyRecord {
    kid: String,
    created: u64,
    /// Raw Ed25519 public key, base64.
    public: String,
    /// PKCS#8 private key, sealed.
    private: Envelope,
    /// When a newer key replaced this one; it keeps verifying until its tokens have expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired: Option<u64>,
}

// ---- associated data: binds each ciphertext to what it is --------------------------------

fn aad_secret(name: &str, version: u64) -> Vec<u8> {
    format!("sumun-vault/1 secret\0{name}\0{version}").into_bytes()
}
fn aad_user(name: &str) -> Vec<u8> {
    format!("sumun-vault/1 user\0{name}").into_bytes()
}
fn aad_signing(kid: &str) -> Vec<u8> {
    format!("sumun-vault/1 signing-key\0{kid}").into_bytes()
}
fn aad_dek(item_aad: &[u8]) -> Vec<u8> {
    let mut v = b"sumun-vault/1 dek\0".to_vec();
    v.extend_from_slice(item_aad);
    v
}
fn aad_kek(generation: u32) -> Vec<u8> {
    format!("sumun-vault/1 kek\0{generation}").into_bytes()
}

/// The current time in unix seconds (what tokens and timestamps use).
pub fn now_unix_secs() -> u64 {
    now_unix()
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a secret or user name: printable, no spaces, at most 256 bytes.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidName {
            name: name.chars().take(64).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 256 {
        return bad("longer than 256 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/@:+".contains(&b))
    {
        return bad("use letters, digits and . _ - / @ : + only");
    }
    Ok(())
}

/// The unwrapped KEK of the loaded store.
struct Kek {
    generation: u32,
    key: SecretBytes,
}

impl Kek {
    fn seal(&self, item_aad: &[u8], plaintext: &[u8]) -> Result<Envelope, StoreError> {
        let dek = crypto::random_key()?;
        let ct = crypto::seal(dek.expose(), item_aad, plaintext)?;
        let wrapped = crypto::seal(self.key.expose(), &aad_dek(item_aad), dek.expose())?;
        Ok(Envelope {
            kek: self.generation,
            dek: crypto::b64(&wrapped),
            ct: crypto::b64(&ct),
        })
    }

    fn open(
        &self,
        env: &Envelope,
        item_aad: &[u8],
        what: impl Fn() -> String,
    ) -> Result<SecretBytes, StoreError> {
        let fail = || StoreError::Decrypt { what: what() };
        if env.kek != self.generation {
            return Err(fail());
        }
        let wrapped = crypto::unb64(&env.dek).ok_or_else(fail)?;
        let ct = crypto::unb64(&env.ct).ok_or_else(fail)?;
        let dek =
            crypto::open(self.key.expose(), &aad_dek(item_aad), &wrapped).map_err(|_| fail())?;
        crypto::open(dek.expose(), item_aad, &ct).map_err(|_| fail())
    }

    /// Re-wraps an envelope's data key under `new` without touching the sealed value.
    fn rewrap(
        &self,
        new: &Kek,
        env: &Envelope,
        item_aad: &[u8],
        what: impl Fn() -> String,
    ) -> Result<Envelope, StoreError> {
        let fail = || StoreError::Decrypt { what: what() };
        let wrapped = crypto::unb64(&env.dek).ok_or_else(fail)?;
        let dek =
            crypto::open(self.key.expose(), &aad_dek(item_aad), &wrapped).map_err(|_| fail())?;
        let rewrapped = crypto::seal(new.key.expose(), &aad_dek(item_aad), dek.expose())?;
        Ok(Envelope {
            kek: new.generation,
            dek: crypto::b64(&rewrapped),
            ct: env.ct.clone(),
        })
    }

    fn mac_key(&self) -> Result<SecretBytes, StoreError> {
        Ok(crypto::derive_key(
            self.key.expose(),
            b"sumun-vault/1 store mac",
        )?)
    }
}

/// Identity of the file a `Vault` was loaded from, to notice replacement cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    ino: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = fs::metadata(path).ok()?;
    Some(FileStamp {
        len: m.len(),
        modified: m.modified().ok(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&m),
    })
}

/// An open vault. Reading (`get`, `list`, `token_verifier`) needs no lock and no write access;
/// the mutating methods lock the directory, re-read the file so concurrent writers never lose
/// each other's changes, and replace the file atomically.
pub struct Vault {
    dir: PathBuf,
    master: Box<dyn MasterKey>,
    body: StoreBody,
    kek: Kek,
    stamp: Option<FileStamp>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("revision", &self.body.revision)
            .field("secrets", &self.body.secrets.len())
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Vault {
    /// Creates a vault in `dir` (created if missing) sealed by `master`, with one KEK and one
    /// token signing key. `kdf` records passphrase parameters when the key came from one.
    pub fn init(
        dir: &Path,
        master: Box<dyn MasterKey>,
        kdf: Option<KdfParams>,
    ) -> Result<Vault, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(STORE_FILE);
        let _lock = lock_dir(dir)?;
        if path.exists() {
            return Err(StoreError::AlreadyExists(dir.to_path_buf()));
        }
        let kek = Kek {
            generation: 1,
            key: crypto::random_key()?,
        };
        let wrapped = master.wrap(kek.key.expose(), &aad_kek(1))?;
        let mut body = StoreBody {
            format: FORMAT,
            revision: 0,
            master: MasterHeader {
                key_id: master.id().to_string(),
                source: master.source(),
                kdf,
            },
            kek: KekRecord {
                generation: 1,
                created: now_unix(),
                wrapped: crypto::b64(&wrapped),
            },
            secrets: BTreeMap::new(),
            users: BTreeMap::new(),
            signing_keys: Vec::new(),
        };
        body.signing_keys.push(new_signing_key(&kek, 1)?);
        let mut vault = Vault {
            dir: dir.to_path_buf(),
            master,
            body,
            kek,
            stamp: None,
        };
        vault.write()?;
        Ok(vault)
    }

    /// Opens the vault in `dir` with the master key picked by [`master::resolve_master_key`].
    pub fn open(dir: &Path) -> Result<Vault, StoreError> {
        Self::open_with_key_file(dir, None)
    }

    /// As [`Vault::open`], with the key file named by the config (`[vault] key_file`).
    pub fn open_with_key_file(dir: &Path, key_file: Option<&Path>) -> Result<Vault, StoreError> {
        let path = dir.join(STORE_FILE);
        let bytes = read_store(dir)?;
        let (body, _, _) = parse_unverified(&path, &bytes)?;
        let master = master::resolve_master_key(dir, body.master.kdf.as_ref(), key_file)?;
        Self::open_with(dir, master)
    }

    /// Opens the vault in `dir` with an explicit master key (a KMS client, a test key).
    pub fn open_with(dir: &Path, master: Box<dyn MasterKey>) -> Result<Vault, StoreError> {
        let path = dir.join(STORE_FILE);
        let before = stamp(&path);
        let bytes = read_store(dir)?;
        let (body, kek) = verify(&path, &bytes, master.as_ref())?;
        Ok(Vault {
            dir: dir.to_path_buf(),
            master,
            body,
            kek,
            stamp: before,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store revision, bumped by every write.
    pub fn revision(&self) -> u64 {
        self.body.revision
    }

    /// The master key's id (for `vault status`; never the key).
    pub fn master_key_id(&self) -> &str {
        &self.body.master.key_id
    }

    /// True when the file on disk is no longer the one this `Vault` was loaded from.
    pub fn has_changed(&self) -> bool {
        stamp(&self.dir.join(STORE_FILE)) != self.stamp
    }

    /// Re-reads the file if it changed; returns whether anything was reloaded. On error the
    /// vault keeps serving the state it had, so a half-copied file cannot take a gateway down.
    pub fn reload(&mut self) -> Result<bool, StoreError> {
        if !self.has_changed() {
            return Ok(false);
        }
        self.reload_now()?;
        Ok(true)
    }

    fn reload_now(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join(STORE_FILE);
        let before = stamp(&path);
        let bytes = read_store(&self.dir)?;
        let (body, kek) = verify(&path, &bytes, self.master.as_ref())?;
        self.body = body;
        self.kek = kek;
        self.stamp = before;
        Ok(())
    }

    // ---- reading --------------------------------------------------------------------------

    /// The current value of secret `name`.
    pub fn get(&self, name: &str) -> Result<SecretBytes, StoreError> {
        self.get_stage(name, Stage::Current)?
            .ok_or_else(|| StoreError::SecretNotFound(name.to_string()))
    }

    /// The value at `stage`, or `None` when the secret has no such version.
    pub fn get_stage(&self, name: &str, stage: Stage) -> Result<Option<SecretBytes>, StoreError> {
        let rec = self
            .body
            .secrets
            .get(name)
            .ok_or_else(|| StoreError::SecretNotFound(name.to_string()))?;
        let v = match stage {
            Stage::Current => Some(&rec.current),
            Stage::Previous => rec.previous.as_ref(),
            Stage::Pending => rec.pending.as_ref(),
        };
        v.map(|v| self.open_version(name, v)).transpose()
    }

    /// Every version that may log in, best first (current, pending, previous): what a client
    /// tries, in order, while a rotation is in flight.
    pub fn login_candidates(&self, name: &str) -> Result<Vec<(Stage, SecretBytes)>, StoreError> {
        let mut out = Vec::new();
        for stage in [Stage::Current, Stage::Pending, Stage::Previous] {
            if let Some(v) = self.get_stage(name, stage)? {
                out.push((stage, v));
            }
        }
        Ok(out)
    }

    fn open_version(&self, name: &str, v: &VersionRecord) -> Result<SecretBytes, StoreError> {
        self.kek.open(&v.sealed, &aad_secret(name, v.version), || {
            format!("secret '{name}' version {}", v.version)
        })
    }

    /// Metadata of one secret.
    pub fn info(&self, name: &str) -> Result<SecretInfo, StoreError> {
        let rec = self
            .body
            .secrets
            .get(name)
            .ok_or_else(|| StoreError::SecretNotFound(name.to_string()))?;
        Ok(info_of(name, rec))
    }

    /// Metadata of every secret, sorted by name.
    pub fn list(&self) -> Vec<SecretInfo> {
        self.body
            .secrets
            .iter()
            .map(|(n, r)| info_of(n, r))
            .collect()
    }

    /// Names of users with a stored password verifier.
    pub fn users(&self) -> Vec<String> {
        self.body.users.keys().cloned().collect()
    }

    /// The password verifiers of `user`, or `None` if the user has none.
    pub fn user_verifiers(&self, user: &str) -> Result<Option<PasswordVerifiers>, StoreError> {
        let Some(rec) = self.body.users.get(user) else {
            return Ok(None);
        };
        let what = || format!("password verifier of user '{user}'");
        let plain = self.kek.open(&rec.sealed, &aad_user(user), what)?;
        let v = serde_json::from_slice(plain.expose())
            .map_err(|_| StoreError::Decrypt { what: what() })?;
        Ok(Some(v))
    }

    /// A verifier holding the public half of every signing key in the vault.
    pub fn token_verifier(&self, policy: VerifyPolicy) -> Result<TokenVerifier, StoreError> {
        let mut keys = Vec::new();
        for k in &self.body.signing_keys {
            let public = crypto::unb64(&k.public).ok_or_else(|| StoreError::Decrypt {
                what: format!("public key '{}'", k.kid),
            })?;
            keys.push((k.kid.clone(), public));
        }
        TokenVerifier::new(keys, policy).map_err(|_| StoreError::Decrypt {
            what: "token public keys".into(),
        })
    }

    /// A signer with the newest (active) signing key.
    pub fn token_signer(&self) -> Result<TokenSigner, StoreError> {
        let k = self
            .body
            .signing_keys
            .iter()
            .rev()
            .find(|k| k.retired.is_none())
            .ok_or(StoreError::NoSigningKey)?;
        let what = || format!("signing key '{}'", k.kid);
        let pkcs8 = self.kek.open(&k.private, &aad_signing(&k.kid), what)?;
        TokenSigner::from_pkcs8(&k.kid, pkcs8.expose())
            .map_err(|_| StoreError::Decrypt { what: what() })
    }

    /// Signing key ids with their creation and retirement times (oldest first).
    pub fn signing_keys(&self) -> Vec<(String, u64, Option<u64>)> {
        self.body
            .signing_keys
            .iter()
            .map(|k| (k.kid.clone(), k.created, k.retired))
            .collect()
    }

    /// The KEK generation in use.
    pub fn kek_generation(&self) -> u32 {
        self.kek.generation
    }

    /// The key of the stand-in SCRAM verifiers a gateway answers unknown users with
    /// ([`crate::ScramVerifier::mock`]). Derived from the KEK, so every gateway sharing this
    /// vault answers an unknown name with the same salt, before and after a restart, and no one
    /// without the vault can tell a made-up salt from a real one; `keys rotate` changes it.
    pub fn mock_scram_key(&self) -> Result<SecretBytes, StoreError> {
        Ok(crypto::derive_key(
            self.kek.key.expose(),
            b"sumun-vault/1 mock scram verifier",
        )?)
    }

    // ---- writing --------------------------------------------------------------------------

    /// Runs `f` on the freshest state under the directory lock, then writes it atomically.
    fn update<T>(
        &mut self,
        f: impl FnOnce(&mut StoreBody, &Kek) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = lock_dir(&self.dir)?;
        self.reload_now()?;
        let mut body = self.body.clone();
        let out = f(&mut body, &self.kek)?;
        let old = std::mem::replace(&mut self.body, body);
        if let Err(e) = self.write() {
            self.body = old;
            return Err(e);
        }
        Ok(out)
    }

    /// Stores `value` as the new current version of `name` (the old current becomes previous),
    /// creating the secret if needed. Returns the new version number. A pending version from an
    /// interrupted rotation is kept: it may be the only one the backend accepts.
    pub fn put(
        &mut self,
        name: &str,
        value: &SecretBytes,
        meta: SecretMeta,
    ) -> Result<u64, StoreError> {
        validate_name(name)?;
        if let Some(a) = &meta.admin_secret {
            validate_name(a)?;
        }
        self.update(|body, kek| {
            let now = now_unix();
            match body.secrets.get_mut(name) {
                Some(rec) => {
                    let version = rec.next_version;
                    let sealed = kek.seal(&aad_secret(name, version), value.expose())?;
                    let new = VersionRecord {
                        version,
                        created: now,
                        sealed,
                    };
                    rec.previous = Some(std::mem::replace(&mut rec.current, new));
                    rec.next_version += 1;
                    apply_meta(rec, meta);
                    Ok(version)
                }
                None => {
                    let sealed = kek.seal(&aad_secret(name, 1), value.expose())?;
                    let mut rec = SecretRecord {
                        kind: SecretKind::Opaque,
                        address: None,
                        username: None,
                        database: None,
                        admin_secret: None,
                        next_version: 2,
                        current: VersionRecord {
                            version: 1,
                            created: now,
                            sealed,
                        },
                        previous: None,
                        pending: None,
                    };
                    apply_meta(&mut rec, meta);
                    body.secrets.insert(name.to_string(), rec);
                    Ok(1)
                }
            }
        })
    }

    /// Removes a secret and all its versions.
    pub fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        self.update(|body, _| {
            body.secrets
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| StoreError::SecretNotFound(name.to_string()))
        })
    }

    /// Stages `value` as the pending version unless one is already staged; returns the pending
    /// version number and whether it was newly staged. Idempotent so that a rerun after a crash
    /// reuses the password that may already be set on the backend.
    pub fn stage_pending(
        &mut self,
        name: &str,
        value: &SecretBytes,
    ) -> Result<(u64, bool), StoreError> {
        self.update(|body, kek| {
            let rec = body
                .secrets
                .get_mut(name)
                .ok_or_else(|| StoreError::SecretNotFound(name.to_string()))?;
            if let Some(p) = &rec.pending {
                return Ok((p.version, false));
            }
            let version = rec.next_version;
            let sealed = kek.seal(&aad_secret(name, version), value.expose())?;
            rec.pending = Some(VersionRecord {
                version,
                created: now_unix(),
                sealed,
            });
            rec.next_version += 1;
            Ok((version, true))
        })
    }

    /// Pending becomes current, current becomes previous.
    pub fn promote_pending(&mut self, name: &str) -> Result<u64, StoreError> {
        self.update(|body, _| {
            let rec = body
                .secrets
                .get_mut(name)
                .ok_or_else(|| StoreError::SecretNotFound(name.to_string()))?;
            let pending = rec
                .pending
                .take()
                .ok_or_else(|| StoreError::NoPending(name.to_string()))?;
            let version = pending.version;
            rec.previous = Some(std::mem::replace(&mut rec.current, pending));
            Ok(version)
        })
    }

    /// Stores password verifiers for `user` (replacing any); the password itself is not kept.
    pub fn set_user_password(
        &mut self,
        user: &str,
        password: &SecretBytes,
    ) -> Result<(), StoreError> {
        validate_name(user)?;
        let verifiers = PasswordVerifiers::derive(password.expose())?;
        let json = SecretBytes::new(serde_json::to_vec(&verifiers).map_err(StoreError::Encode)?);
        self.update(|body, kek| {
            let sealed = kek.seal(&aad_user(user), json.expose())?;
            body.users.insert(
                user.to_string(),
                UserRecord {
                    created: now_unix(),
                    sealed,
                },
            );
            Ok(())
        })
    }

    pub fn delete_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.update(|body, _| {
            body.users
                .remove(user)
                .map(|_| ())
                .ok_or_else(|| StoreError::UserNotFound(user.to_string()))
        })
    }

    /// `sumun keys rotate`: a new KEK generation (every data key re-wrapped under it, values
    /// untouched) and a new token signing key; the previous signing key is retired but keeps
    /// verifying; keys retired more than `retire_grace_secs` ago (the longest token lifetime
    /// plus clock skew) are dropped. One atomic write, so an interruption loses nothing.
    pub fn rotate_keys(&mut self, retire_grace_secs: u64) -> Result<KeyRotation, StoreError> {
        let _lock = lock_dir(&self.dir)?;
        self.reload_now()?;
        let mut body = self.body.clone();
        let old = &self.kek;
        let new = Kek {
            generation: old.generation + 1,
            key: crypto::random_key()?,
        };
        let now = now_unix();
        let mut rewrapped = 0usize;
        for (name, rec) in body.secrets.iter_mut() {
            for v in [
                Some(&mut rec.current),
                rec.previous.as_mut(),
                rec.pending.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                let aad = aad_secret(name, v.version);
                v.sealed = old.rewrap(&new, &v.sealed, &aad, || {
                    format!("secret '{name}' version {}", v.version)
                })?;
                rewrapped += 1;
            }
        }
        for (name, rec) in body.users.iter_mut() {
            rec.sealed = old.rewrap(&new, &rec.sealed, &aad_user(name), || {
                format!("user '{name}'")
            })?;
            rewrapped += 1;
        }
        body.signing_keys.retain(|k| {
            k.retired
                .is_none_or(|r| r.saturating_add(retire_grace_secs) >= now)
        });
        for k in body.signing_keys.iter_mut() {
            k.private = old.rewrap(&new, &k.private, &aad_signing(&k.kid), || {
                format!("signing key '{}'", k.kid)
            })?;
            rewrapped += 1;
            if k.retired.is_none() {
                k.retired = Some(now);
            }
        }
        let serial = body.signing_keys.len() as u64 + u64::from(new.generation);
        let signing = new_signing_key(&new, serial)?;
        let kid = signing.kid.clone();
        body.signing_keys.push(signing);
        let wrapped = self
            .master
            .wrap(new.key.expose(), &aad_kek(new.generation))?;
        body.kek = KekRecord {
            generation: new.generation,
            created: now,
            wrapped: crypto::b64(&wrapped),
        };
        let old_body = std::mem::replace(&mut self.body, body);
        let old_kek = std::mem::replace(&mut self.kek, new);
        if let Err(e) = self.write() {
            self.body = old_body;
            self.kek = old_kek;
            return Err(e);
        }
        Ok(KeyRotation {
            kek_generation: self.kek.generation,
            items_rewrapped: rewrapped,
            signing_kid: kid,
            signing_keys: self.body.signing_keys.len(),
        })
    }

    /// Serializes, authenticates and atomically replaces the store file. Called under the
    /// directory lock (the tests excepted).
    fn write(&mut self) -> Result<(), StoreError> {
        self.body.revision += 1;
        let bytes = encode(&self.body, &self.kek)?;
        let path = self.dir.join(STORE_FILE);
        remove_stale_temps(&self.dir);
        let tmp = self
            .dir
            .join(format!(".{STORE_FILE}.{}.tmp", std::process::id()));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        // Everything in the file is sealed, but there is no reason for others to read it.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        // The rename is durable only once the directory entry is flushed.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.stamp = stamp(&path);
        Ok(())
    }
}

/// What `rotate_keys` did.
#[derive(Debug, Clone)]
pub struct KeyRotation {
    pub kek_generation: u32,
    pub items_rewrapped: usize,
    pub signing_kid: String,
    pub signing_keys: usize,
}

fn apply_meta(rec: &mut SecretRecord, meta: SecretMeta) {
    if let Some(k) = meta.kind {
        rec.kind = k;
    }
    if meta.address.is_some() {
        rec.address = meta.address;
    }
    if meta.username.is_some() {
        rec.username = meta.username;
    }
    if meta.database.is_some() {
        rec.database = meta.database;
    }
    if meta.admin_secret.is_some() {
        rec.admin_secret = meta.admin_secret;
    }
}

fn info_of(name: &str, r: &SecretRecord) -> SecretInfo {
    SecretInfo {
        name: name.to_string(),
        kind: r.kind,
        address: r.address.clone(),
        username: r.username.clone(),
        database: r.database.clone(),
        admin_secret: r.admin_secret.clone(),
        current_version: r.current.version,
        previous_version: r.previous.as_ref().map(|v| v.version),
        pending_version: r.pending.as_ref().map(|v| v.version),
        updated: r.current.created,
    }
}

fn new_signing_key(kek: &Kek, serial: u64) -> Result<SigningKeyRecord, StoreError> {
    let (pkcs8, public) = crate::token::generate_signing_key().map_err(|_| CryptoError::Random)?;
    // A short random suffix keeps kids unique across vaults that share a verifier.
    let suffix = crypto::b64url(&crypto::random_bytes(3)?);
    let kid = format!("k{serial}{suffix}");
    let private = kek.seal(&aad_signing(&kid), pkcs8.expose())?;
    Ok(SigningKeyRecord {
        kid,
        created: now_unix(),
        public: crypto::b64(&public),
        private,
        retired: None,
    })
}

/// Removes temporary files left by writers killed between creating and renaming them. Under
/// the lock no live writer owns one, so all of them are stale; failures are harmless.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{STORE_FILE}.");
    for e in entries.flatten() {
        let name = e.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".tmp"))
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// An exclusive lock on the vault directory, released on drop.
struct DirLock(#[allow(dead_code)] fs::File);

fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    let path = dir.join(LOCK_FILE);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.lock().map_err(io_err(&path))?;
    Ok(DirLock(f))
}

fn read_store(dir: &Path) -> Result<Vec<u8>, StoreError> {
    let path = dir.join(STORE_FILE);
    match fs::read(&path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StoreError::NotFound(dir.to_path_buf()))
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

// ---- file encoding: MAGIC, JSON body, "\n", trailer line ---------------------------------

fn encode(body: &StoreBody, kek: &Kek) -> Result<Vec<u8>, StoreError> {
    let mut content = MAGIC.to_vec();
    serde_json::to_writer_pretty(&mut content, body).map_err(StoreError::Encode)?;
    content.push(b'\n');
    let mac = crypto::hmac_sha256(kek.mac_key()?.expose(), &content);
    let trailer = format!(
        "sha256={} hmac={}\n",
        crypto::b64(&crypto::sha256(&content)),
        crypto::b64(&mac)
    );
    content.extend_from_slice(trailer.as_bytes());
    Ok(content)
}

/// Splits the file and checks the unkeyed checksum; returns the parsed body and the trailer's
/// MAC text. Anything malformed is "corrupted": the check runs before any key is involved.
type Unverified<'a> = (StoreBody, &'a [u8], &'a [u8]);

fn parse_unverified<'a>(path: &Path, bytes: &'a [u8]) -> Result<Unverified<'a>, StoreError> {
    let corrupted = || StoreError::Corrupted(path.to_path_buf());
    if bytes.last() != Some(&b'\n') {
        return Err(corrupted());
    }
    let body_end = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .ok_or_else(corrupted)?;
    let (content, trailer) = bytes.split_at(body_end);
    let expect = format!("sha256={} hmac=", crypto::b64(&crypto::sha256(content)));
    let mac_text = trailer
        .strip_prefix(expect.as_bytes())
        .and_then(|t| t.strip_suffix(b"\n"))
        .ok_or_else(corrupted)?;
    let Some(json) = content.strip_prefix(MAGIC) else {
        // The checksum matched, so this is a deliberate other format, not damage.
        let first = content.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(StoreError::Unsupported {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(first).chars().take(40).collect(),
        });
    };
    let body: StoreBody = serde_json::from_slice(json).map_err(|_| corrupted())?;
    if body.format != FORMAT {
        return Err(StoreError::Unsupported {
            path: path.to_path_buf(),
            found: body.format.to_string(),
        });
    }
    Ok((body, content, mac_text))
}

/// Full verification: checksum, master key id, KEK unwrap, then the HMAC over the content.
fn verify(
    path: &Path,
    bytes: &[u8],
    master: &dyn MasterKey,
) -> Result<(StoreBody, Kek), StoreError> {
    let corrupted = || StoreError::Corrupted(path.to_path_buf());
    let (body, content, mac_text) = parse_unverified(path, bytes)?;
    if body.master.key_id != master.id() {
        return Err(StoreError::WrongMasterKey {
            path: path.to_path_buf(),
            expected: body.master.key_id.clone(),
            got: master.id().to_string(),
        });
    }
    let wrapped = crypto::unb64(&body.kek.wrapped).ok_or_else(corrupted)?;
    let key = master
        .unwrap(&wrapped, &aad_kek(body.kek.generation))
        .map_err(|_| corrupted())?;
    let kek = Kek {
        generation: body.kek.generation,
        key,
    };
    let mac = std::str::from_utf8(mac_text)
        .ok()
        .and_then(crypto::unb64)
        .ok_or_else(corrupted)?;
    // Re-encoding rejects non-canonical base64 (a flipped padding bit would otherwise pass).
    if crypto::b64(&mac).as_bytes() != mac_text {
        return Err(corrupted());
    }
    if !crypto::hmac_sha256_verify(kek.mac_key()?.expose(), content, &mac) {
        return Err(corrupted());
    }
    Ok((body, kek))
}

#[cfg(test)]
pub(crate) mod tests;
