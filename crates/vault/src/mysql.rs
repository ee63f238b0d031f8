//! MySQL/MariaDB password authentication, both sides: what a client sends for each plugin and
//! what a server checks it against.
//!
//! | plugin | client sends | server keeps ([`MysqlVerifiers`]) |
//! |---|---|---|
//! | `mysql_native_password` | `SHA1(pw) XOR SHA1(nonce ‖ SHA1(SHA1(pw)))` | `SHA1(SHA1(pw))` |
//! | `caching_sha2_password` (fast path) | `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) ‖ nonce)` | `SHA256(SHA256(pw))` |
//! | `caching_sha2_password` (full, no TLS) | RSA-OAEP(SHA-1) of `(pw ‖ NUL) XOR nonce` with the server's key | as above |
//! | `client_ed25519` (MariaDB) | Ed25519 signature of the nonce, secret key expanded as `SHA512(pw)` | the public key |
//! | `mysql_clear_password` | `pw ‖ NUL` (over TLS only) | any of the above |
//!
//! MariaDB's ed25519 differs from RFC 8032 only in where the 64-byte expanded secret comes
//! from: `SHA512(password)` of any length instead of `SHA512(32-byte seed)`. aws-lc-rs signs
//! only from a 32-byte seed, so signing uses `ed25519-dalek`'s `hazmat` layer (which signs with
//! an expanded key); verifying uses aws-lc-rs.
//!
//! Nothing here does I/O. Password-equivalent intermediates (`SHA1(pw)`, `SHA256(pw)`, the
//! expanded key) are wiped after use, the verifiers are wiped on drop and their `Debug` shows
//! nothing. Comparisons are constant-time.

use std::fmt;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1};
use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto;
use crate::secret::SecretBytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MysqlAuthError {
    #[error("the server's RSA public key is not a PEM or DER SubjectPublicKeyInfo RSA key")]
    PublicKey,
    #[error("the password is too long for the server's RSA key ({max} bytes at most)")]
    PasswordTooLong { max: usize },
    #[error("RSA encryption failed")]
    Encrypt,
    #[error("malformed {0} verifier")]
    Verifier(&'static str),
}

fn xor_into(out: &mut [u8], with: &[u8]) {
    for (o, w) in out.iter_mut().zip(with) {
        *o ^= w;
    }
}

fn sha256_2(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(a);
    ctx.update(b);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn sha1_2(a: &[u8], b: &[u8]) -> [u8; 20] {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(a);
    ctx.update(b);
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

// ---- mysql_native_password ----

/// The client's `mysql_native_password` answer to `nonce` (the 20-byte scramble). An empty
/// password answers with nothing, as clients do.
pub fn native_password_response(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Zeroizing::new(crypto::sha1(password));
    let stage2 = crypto::sha1(&*stage1);
    let mut out = sha1_2(nonce, &stage2);
    xor_into(&mut out, &*stage1);
    out.to_vec()
}

/// What a server keeps for `mysql_native_password`: `SHA1(SHA1(password))`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct NativeVerifier {
    stage2: [u8; 20],
}

impl fmt::Debug for NativeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NativeVerifier([redacted])")
    }
}

impl NativeVerifier {
    pub fn from_password(password: &[u8]) -> Self {
        let stage1 = Zeroizing::new(crypto::sha1(password));
        NativeVerifier {
            stage2: crypto::sha1(&*stage1),
        }
    }

    /// From MySQL's text form, `*` and 40 hex digits (`mysql.user`, `PASSWORD()`,
    /// [`crate::scram::mysql_native_hash`]).
    pub fn from_hash_text(text: &str) -> Result<Self, MysqlAuthError> {
        let bad = MysqlAuthError::Verifier("mysql_native_password");
        let hex = text.strip_prefix('*').ok_or(bad.clone())?;
        let stage2 = decode_hex::<20>(hex).ok_or(bad)?;
        Ok(NativeVerifier { stage2 })
    }

    /// MySQL's text form (`*` and 40 upper-case hex digits).
    pub fn to_hash_text(&self) -> String {
        let mut s = String::with_capacity(41);
        s.push('*');
        for b in self.stage2 {
            s.push_str(&format!("{b:02X}"));
        }
        s
    }

    /// Whether `response` is the client's answer to `nonce` for this password. An empty
    /// response (the empty password) never passes.
    pub fn verify(&self, nonce: &[u8], response: &[u8]) -> bool {
        if response.len() != 20 {
            return false;
        }
        // response XOR SHA1(nonce ‖ stage2) is SHA1(pw) if the client knew it.
        let mut stage1 = Zeroizing::new(sha1_2(nonce, &self.stage2));
        xor_into(&mut *stage1, response);
        verify_slices_are_equal(&crypto::sha1(&*stage1), &self.stage2).is_ok()
    }
}

fn decode_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let b = hex.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

// ---- caching_sha2_password ----

/// The client's `caching_sha2_password` fast-path answer to `nonce`. An empty password
/// answers with nothing.
pub fn caching_sha2_response(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Zeroizing::new(crypto::sha256(password));
    let stage2 = crypto::sha256(&*stage1);
    let mut out = sha256_2(&stage2, nonce);
    xor_into(&mut out, &*stage1);
    out.to_vec()
}

/// What a server keeps to check `caching_sha2_password` logins: `SHA256(SHA256(password))`
/// (what MySQL holds in its cache; the gateway holds it instead of the salted crypt form).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct CachingSha2Verifier {
    stage2: [u8; 32],
}

impl fmt::Debug for CachingSha2Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CachingSha2Verifier([redacted])")
    }
}

impl CachingSha2Verifier {
    pub fn from_password(password: &[u8]) -> Self {
        let stage1 = Zeroizing::new(crypto::sha256(password));
        CachingSha2Verifier {
            stage2: crypto::sha256(&*stage1),
        }
    }

    /// From 64 hex digits of `SHA256(SHA256(password))`.
    pub fn from_hex(hex: &str) -> Result<Self, MysqlAuthError> {
        let stage2 = decode_hex::<32>(hex).ok_or(MysqlAuthError::Verifier("caching_sha2"))?;
        Ok(CachingSha2Verifier { stage2 })
    }

    /// 64 lower-case hex digits (what [`CachingSha2Verifier::from_hex`] reads).
    pub fn to_hex(&self) -> String {
        self.stage2.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Fast path: whether `response` answers `nonce` for this password.
    pub fn verify(&self, nonce: &[u8], response: &[u8]) -> bool {
        if response.len() != 32 {
            return false;
        }
        let mut stage1 = Zeroizing::new(sha256_2(&self.stage2, nonce));
        xor_into(&mut *stage1, response);
        verify_slices_are_equal(&crypto::sha256(&*stage1), &self.stage2).is_ok()
    }

    /// Full authentication: the password itself (sent over TLS, with or without its NUL).
    pub fn verify_cleartext(&self, password: &[u8]) -> bool {
        let password = password.strip_suffix(&[0]).unwrap_or(password);
        let other = CachingSha2Verifier::from_password(password);
        verify_slices_are_equal(&other.stage2, &self.stage2).is_ok()
    }
}

/// Full `caching_sha2_password` (or `sha256_password`) authentication without TLS: the
/// password and a NUL, XORed with the nonce (repeated), encrypted with RSA-OAEP (SHA-1, MGF1
/// SHA-1, as MySQL does) under the server's public key (PEM `BEGIN PUBLIC KEY`, or its DER).
///
/// Only a key the caller trusts protects the password: a key fetched from the server in the
/// clear (request `0x02`) lets a man in the middle read it.
pub fn caching_sha2_rsa_encrypt(
    password: &[u8],
    nonce: &[u8],
    public_key: &[u8],
) -> Result<Vec<u8>, MysqlAuthError> {
    let der = pem_to_der(public_key).ok_or(MysqlAuthError::PublicKey)?;
    let key = PublicEncryptingKey::from_der(&der).map_err(|_| MysqlAuthError::PublicKey)?;
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| MysqlAuthError::PublicKey)?;
    let mut plain = Zeroizing::new(Vec::with_capacity(password.len() + 1));
    plain.extend_from_slice(password);
    plain.push(0);
    if !nonce.is_empty() {
        for (i, b) in plain.iter_mut().enumerate() {
            *b ^= nonce[i % nonce.len()];
        }
    }
    let max = key.max_plaintext_size(&OAEP_SHA1_MGF1SHA1);
    if plain.len() > max {
        return Err(MysqlAuthError::PasswordTooLong {
            max: max.saturating_sub(1),
        });
    }
    let mut out = vec![0u8; key.ciphertext_size()];
    let n = key
        .encrypt(&OAEP_SHA1_MGF1SHA1, &plain, &mut out, None)
        .map_err(|_| MysqlAuthError::Encrypt)?
        .len();
    out.truncate(n);
    Ok(out)
}

/// The DER inside a PEM block, or the bytes themselves when they are not PEM.
fn pem_to_der(key: &[u8]) -> Option<Vec<u8>> {
    let text = match std::str::from_utf8(key) {
        Ok(t) if t.contains("-----BEGIN") => t,
        _ => return Some(key.to_vec()),
    };
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    crypto::unb64(&body)
}

// ---- client_ed25519 (MariaDB) ----

/// The expanded secret key MariaDB derives from a password: `SHA512(password)`.
fn ed25519_expanded(password: &[u8]) -> ed25519_dalek::hazmat::ExpandedSecretKey {
    let digest = digest::digest(&digest::SHA512, password);
    let mut bytes = Zeroizing::new([0u8; 64]);
    bytes.copy_from_slice(digest.as_ref());
    // Clamps the scalar half, as RFC 8032 key generation does; wiped on drop.
    ed25519_dalek::hazmat::ExpandedSecretKey::from_bytes(&bytes)
}

/// The Ed25519 public key MariaDB stores for `IDENTIFIED VIA ed25519 USING PASSWORD('pw')`.
pub fn ed25519_public_key(password: &[u8]) -> [u8; 32] {
    let esk = ed25519_expanded(password);
    ed25519_dalek::VerifyingKey::from(&esk).to_bytes()
}

/// The client's `client_ed25519` answer: the 64-byte signature of `nonce` (32 bytes from the
/// server).
pub fn ed25519_response(password: &[u8], nonce: &[u8]) -> [u8; 64] {
    let esk = ed25519_expanded(password);
    let public = ed25519_dalek::VerifyingKey::from(&esk);
    ed25519_dalek::hazmat::raw_sign::<sha2::Sha512>(&esk, nonce, &public).to_bytes()
}

/// What a server keeps for `client_ed25519`: the public key.
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519Verifier {
    public: [u8; 32],
}

impl fmt::Debug for Ed25519Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519Verifier([redacted])")
    }
}

impl Ed25519Verifier {
    pub fn from_password(password: &[u8]) -> Self {
        Ed25519Verifier {
            public: ed25519_public_key(password),
        }
    }

    /// From MariaDB's `authentication_string`: base64 of the key, without padding (43
    /// characters).
    pub fn from_base64(text: &str) -> Result<Self, MysqlAuthError> {
        let bad = || MysqlAuthError::Verifier("ed25519");
        let padded = format!("{}=", text.trim_end_matches('='));
        let key = crypto::unb64(&padded).ok_or_else(bad)?;
        let public: [u8; 32] = key.try_into().map_err(|_| bad())?;
        Ok(Ed25519Verifier { public })
    }

    /// MariaDB's `authentication_string` form.
    pub fn to_base64(&self) -> String {
        crypto::b64(&self.public).trim_end_matches('=').to_string()
    }

    pub fn verify(&self, nonce: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(nonce, signature)
            .is_ok()
    }
}

// ---- mysql_clear_password ----

/// The `mysql_clear_password` answer: the password and a NUL. Send it only over TLS to a
/// verified server.
pub fn clear_password_response(password: &[u8]) -> SecretBytes {
    let mut out = Vec::with_capacity(password.len() + 1);
    out.extend_from_slice(password);
    out.push(0);
    SecretBytes::new(out)
}

/// Everything a MySQL front end needs to check a gateway-held password with any plugin.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlVerifiers {
    pub native: NativeVerifier,
    pub caching_sha2: CachingSha2Verifier,
    pub ed25519: Ed25519Verifier,
}

impl fmt::Debug for MysqlVerifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MysqlVerifiers([redacted])")
    }
}

impl MysqlVerifiers {
    pub fn from_password(password: &[u8]) -> Self {
        MysqlVerifiers {
            native: NativeVerifier::from_password(password),
            caching_sha2: CachingSha2Verifier::from_password(password),
            ed25519: Ed25519Verifier::from_password(password),
        }
    }
}

#[cfg(test)]
mod tests;
