//! The few cryptographic primitives the vault is built from, all from aws-lc-rs: AES-256-GCM
//! with random 96-bit nonces, HMAC-SHA-256, HKDF-SHA-256, SHA-256 and the system CSPRNG. Keeping
//! them here means the rest of the crate never touches nonces or key objects directly. This
//! module knows nothing about files, names or formats.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::{digest, hkdf, hmac, rand};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

/// Length of every symmetric key in the vault (AES-256).
pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: wrong key, or the bytes or their associated data were altered.
    #[error("decryption failed: wrong key or altered data")]
    Open,
    #[error("the system random generator failed")]
    Random,
    #[error("invalid key length")]
    KeyLength,
}

/// `n` bytes from the system CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut buf = vec![0u8; n];
    rand::fill(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(buf)
}

/// A fresh random 256-bit key.
pub fn random_key() -> Result<SecretBytes, CryptoError> {
    Ok(SecretBytes::new(random_bytes(KEY_LEN)?))
}

fn aead_key(key: &[u8]) -> Result<LessSafeKey, CryptoError> {
    if key.len() != KEY_LEN {
        return Err(CryptoError::KeyLength);
    }
    let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::KeyLength)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypts `plaintext` under `key`, binding `aad`. Output: nonce || ciphertext || tag.
/// A random nonce is safe here because each key encrypts few messages (one per data key, or
/// one per key generation for the key-encryption key), far below the 2^32 birthday bound.
pub fn seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = aead_key(key)?;
    let nonce_bytes = random_bytes(NONCE_LEN)?;
    let mut nonce_arr = [0u8; NONCE_LEN];
    nonce_arr.copy_from_slice(&nonce_bytes);
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(&nonce_arr);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_arr),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| CryptoError::Open)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decrypts what [`seal`] produced; fails unless key, bytes and `aad` all match.
pub fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
    let key = aead_key(key)?;
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Open);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
    // The buffer holds plaintext after decryption, so it is wiped on every path.
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Open)?
        .len();
    buf.truncate(len);
    Ok(SecretBytes::new(std::mem::take(&mut *buf)))
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time HMAC check.
pub fn hmac_sha256_verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, data, tag).is_ok()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn sha1(data: &[u8]) -> [u8; 20] {
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

/// Derives a 256-bit subkey of `ikm` for one purpose (`info`), so one key never serves two
/// algorithms.
pub fn derive_key(ikm: &[u8], info: &[u8]) -> Result<SecretBytes, CryptoError> {
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            KEY_LEN
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sumun-vault").extract(ikm);
    let info = [info];
    let okm = prk.expand(&info, Len).map_err(|_| CryptoError::KeyLength)?;
    let mut out = vec![0u8; KEY_LEN];
    okm.fill(&mut out).map_err(|_| CryptoError::KeyLength)?;
    Ok(SecretBytes::new(out))
}

/// A random password of `len` characters from [A-Za-z0-9]: no character needs quoting in SQL,
/// RESP, URLs or shells, and 32 characters carry about 190 bits.
pub fn generate_password(len: usize) -> Result<SecretBytes, CryptoError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let chunk = random_bytes(64)?;
        // Rejection sampling: 248 = 4 * 62 keeps the distribution uniform.
        for b in chunk {
            if b < 248 && out.len() < len {
                out.push(ALPHABET[(b % 62) as usize]);
            }
        }
    }
    Ok(SecretBytes::new(out))
}

pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn unb64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let k = random_key().unwrap();
        let ct = seal(k.expose(), b"a", b"hello").unwrap();
        assert_eq!(open(k.expose(), b"a", &ct).unwrap().expose(), b"hello");
        assert!(open(k.expose(), b"b", &ct).is_err());
        let other = random_key().unwrap();
        assert!(open(other.expose(), b"a", &ct).is_err());
        let mut bad = ct.clone();
        bad[14] ^= 1;
        assert!(open(k.expose(), b"a", &bad).is_err());
    }

    #[test]
    fn passwords_are_alphanumeric() {
        let p = generate_password(32).unwrap();
        assert_eq!(p.len(), 32);
        assert!(p.expose().iter().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(p, generate_password(32).unwrap());
    }
}
