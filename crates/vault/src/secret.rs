//! Secret-bearing byte buffers. Every plaintext secret the vault hands out (a backend password,
//! a data key, a signing key) lives in a [`SecretBytes`], which is wiped on drop and whose
//! `Debug` prints `[redacted]`, so a stray `{:?}` or a panic message cannot leak it. This module
//! deliberately offers no `Display` and no `Serialize`.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// Plaintext secret bytes, zeroized on drop, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the caller's buffer is moved, not copied.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret buffer (the caller wipes its own copy).
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes(Zeroizing::new(bytes.to_vec()))
    }

    /// The plaintext. Callers should use it in place and not copy it into unmanaged memory.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The plaintext as UTF-8, for passwords sent over text protocols.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

impl Zeroize for SecretBytes {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let s = SecretBytes::from_slice(b"hunter2");
        assert_eq!(format!("{s:?}"), "SecretBytes([redacted])");
        assert_eq!(s.expose_str(), Some("hunter2"));
    }
}
