//! Password key derivation (PBKDF2 for SCRAM logins to servers) off the data-plane event loops.
//!
//! A derivation takes milliseconds of CPU, and its cost is chosen by the server (its iteration
//! count, capped by `sumun_vault::scram::MAX_SERVER_ITERATIONS`). It runs on tokio's blocking
//! threads, at most one per CPU at a time, so a login storm queues there instead of stalling
//! every client of a worker. Results are cached: a server gives every login of a role the same
//! salt and iteration count, so a storm of new server connections derives once. The cache key
//! is an HMAC under a random per-process key, never a plain hash of the password, and the
//! cached values (password-equivalent, like the vault's own copy) are wiped when dropped.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use sumun_vault::SecretBytes;
use tokio::sync::Semaphore;

/// Cached derivations at most (one per vault password, salt and iteration count in use).
const CACHE_MAX: usize = 256;

struct Kdf {
    permits: Semaphore,
    /// `None` when the system RNG could not give a key: nothing is cached then.
    key: Option<[u8; 32]>,
    cache: Mutex<HashMap<[u8; 32], SecretBytes>>,
}

fn kdf() -> &'static Kdf {
    static KDF: OnceLock<Kdf> = OnceLock::new();
    KDF.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut key = [0u8; 32];
        let key = aws_lc_rs::rand::fill(&mut key).ok().map(|()| key);
        Kdf {
            permits: Semaphore::new(cpus),
            key,
            cache: Mutex::new(HashMap::new()),
        }
    })
}

#[derive(Debug, thiserror::Error)]
#[error("password key derivation failed: {0}")]
pub struct KdfError(String);

/// SCRAM's `SaltedPassword` for `password`, `salt` and `iterations`, from the cache or derived
/// on a blocking thread.
pub async fn salted_password(
    password: &SecretBytes,
    salt: &[u8],
    iterations: u32,
) -> Result<SecretBytes, KdfError> {
    let k = kdf();
    let id = k.key.map(|key| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(&(password.len() as u64).to_be_bytes());
        ctx.update(password.expose());
        ctx.update(&(salt.len() as u64).to_be_bytes());
        ctx.update(salt);
        ctx.update(&iterations.to_be_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(ctx.sign().as_ref());
        id
    });
    if let Some(id) = &id {
        let cache = k.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = cache.get(id) {
            return Ok(hit.clone());
        }
    }
    let derived = derive(password.expose(), salt, iterations).await?;
    if let Some(id) = id {
        let mut cache = k.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(id, derived.clone());
    }
    Ok(derived)
}

/// `SaltedPassword` derived on a blocking thread, uncached: for a password a client offers
/// (a guess, until it matches), which must neither stall the worker nor crowd out the cache.
pub async fn derive(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<SecretBytes, KdfError> {
    let _permit = kdf()
        .permits
        .acquire()
        .await
        .map_err(|e| KdfError(e.to_string()))?;
    let password = SecretBytes::from_slice(password);
    let salt = salt.to_vec();
    tokio::task::spawn_blocking(move || {
        sumun_vault::scram::salted_password(password.expose(), &salt, iterations)
    })
    .await
    .map_err(|e| KdfError(e.to_string()))
}
