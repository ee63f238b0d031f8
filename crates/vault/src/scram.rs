//! Password verifiers for gateway users, and the client half of SCRAM-SHA-256 used to log in to
//! PostgreSQL during rotation. A [`ScramVerifier`] is exactly what PostgreSQL keeps in
//! `pg_authid` (salt, 4096 iterations, StoredKey, ServerKey, RFC 5802/7677), so the gateway can
//! run the server side of SCRAM without ever holding the password; `mysql_native` is MySQL's
//! `SHA1(SHA1(password))`. Passwords are used as raw UTF-8 bytes: SASLprep is the identity for
//! ASCII, and PostgreSQL itself falls back to raw bytes when SASLprep fails.

use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, CryptoError};
use crate::secret::SecretBytes;

/// PostgreSQL's default SCRAM iteration count.
pub const SCRAM_ITERATIONS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message from the server")]
    Malformed,
    #[error("the server's SCRAM nonce does not extend ours")]
    Nonce,
    #[error("the server's SCRAM signature is wrong (it does not know this password)")]
    ServerSignature,
    #[error("malformed SCRAM verifier")]
    Verifier,
    #[error("the server asks for {0} SCRAM iterations, more than the {MAX_SERVER_ITERATIONS} a client accepts")]
    Iterations(u32),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// SCRAM-SHA-256 verifier: salt, iterations, StoredKey and ServerKey.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The most iterations a client derives for a server (PostgreSQL's default is 4096; OWASP's
/// PBKDF2-HMAC-SHA256 recommendation is 600,000). A server asking for more would make every
/// login burn CPU for nothing: the exchange is refused instead.
pub const MAX_SERVER_ITERATIONS: u32 = 600_000;

/// `SaltedPassword` = PBKDF2-HMAC-SHA256(SASLprep(password), salt, iterations), the costly
/// step of a SCRAM login (milliseconds): run it off any event loop. The password is normalized
/// with SASLprep (RFC 4013) as PostgreSQL, libpq and the drivers do, so `IX-Ⅸ` and `IX-IX` are
/// one password; bytes that are not UTF-8 or that SASLprep refuses are used as they are, as
/// PostgreSQL does.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> SecretBytes {
    let prepared: Option<zeroize::Zeroizing<String>> = std::str::from_utf8(password)
        .ok()
        .and_then(|text| stringprep::saslprep(text).ok())
        .and_then(|p| match p {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(changed) => Some(zeroize::Zeroizing::new(changed)),
        });
    let input = prepared.as_deref().map_or(password, |p| p.as_bytes());
    let mut out = vec![0u8; 32];
    let iters = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iters, salt, input, &mut out);
    SecretBytes::new(out)
}

impl ScramVerifier {
    /// Derives a verifier with a fresh 16-byte salt and 4096 iterations.
    pub fn derive(password: &[u8]) -> Result<Self, CryptoError> {
        let salt = crypto::random_bytes(16)?;
        Ok(Self::derive_with(password, &salt, SCRAM_ITERATIONS))
    }

    pub fn derive_with(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        Self::from_salted(
            &salted_password(password, salt, iterations),
            salt,
            iterations,
        )
    }

    /// The verifier for a `SaltedPassword` already derived (`salted_password`).
    pub fn from_salted(sp: &SecretBytes, salt: &[u8], iterations: u32) -> Self {
        let client_key = crypto::hmac_sha256(sp.expose(), b"Client Key");
        let stored_key = crypto::sha256(&client_key);
        let server_key = crypto::hmac_sha256(sp.expose(), b"Server Key");
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        }
    }

    /// A stand-in for a user who has no verifier (an unknown name), made as PostgreSQL makes
    /// its mock verifiers: salt, StoredKey and ServerKey are HMACs of the user name under `key`
    /// (a server secret), so the same name always gets the same salt and the usual iteration
    /// count, and nothing tells it from a real one. No password is known to match it; callers
    /// refuse the login after checking the proof anyway, so the work done is the same.
    pub fn mock(key: &[u8], user: &str) -> Self {
        let part = |label: &str| crypto::hmac_sha256(key, format!("{label}\0{user}").as_bytes());
        ScramVerifier {
            iterations: SCRAM_ITERATIONS,
            salt: part("salt")[..16].to_vec(),
            stored_key: part("stored-key"),
            server_key: part("server-key"),
        }
    }

    /// PostgreSQL's text form, `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`, which
    /// `ALTER ROLE ... PASSWORD` accepts as-is so the cleartext never reaches the server.
    pub fn to_postgres(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            crypto::b64(&self.salt),
            crypto::b64(&self.stored_key),
            crypto::b64(&self.server_key)
        )
    }

    pub fn from_postgres(s: &str) -> Result<Self, ScramError> {
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::Verifier)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::Verifier)?;
        let (iter, salt) = params.split_once(':').ok_or(ScramError::Verifier)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::Verifier)?;
        let arr = |t: &str| -> Result<[u8; 32], ScramError> {
            crypto::unb64(t)
                .and_then(|v| v.try_into().ok())
                .ok_or(ScramError::Verifier)
        };
        Ok(ScramVerifier {
            iterations: iter.parse().map_err(|_| ScramError::Verifier)?,
            salt: crypto::unb64(salt).ok_or(ScramError::Verifier)?,
            stored_key: arr(stored)?,
            server_key: arr(server)?,
        })
    }

    /// Server side: checks a client proof against this verifier for `auth_message`.
    pub fn verify_client_proof(&self, auth_message: &[u8], proof: &[u8]) -> bool {
        if proof.len() != 32 {
            return false;
        }
        let sig = crypto::hmac_sha256(&self.stored_key, auth_message);
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ sig[i];
        }
        let ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            &crypto::sha256(&client_key),
            &self.stored_key,
        )
        .is_ok();
        zeroize::Zeroize::zeroize(&mut client_key);
        ok
    }

    /// Server side: the `v=` signature proving the server knows the verifier.
    pub fn server_signature(&self, auth_message: &[u8]) -> [u8; 32] {
        crypto::hmac_sha256(&self.server_key, auth_message)
    }
}

/// MySQL `mysql_native_password` hash text: `*` + hex(SHA1(SHA1(password))), as accepted by
/// MariaDB's `IDENTIFIED BY PASSWORD '...'`.
pub fn mysql_native_hash(password: &[u8]) -> String {
    let h = crypto::sha1(&crypto::sha1(password));
    let mut s = String::with_capacity(41);
    s.push('*');
    for b in h {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Everything the gateway needs to check a user's password, and nothing that reveals it
/// without an offline attack (the same exposure as `pg_authid` / `mysql.user`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordVerifiers {
    /// PostgreSQL text form of the SCRAM-SHA-256 verifier.
    pub scram_sha256: String,
    /// `*HEX` of SHA1(SHA1(password)) for MySQL's native password scramble.
    pub mysql_native: String,
}

impl std::fmt::Debug for PasswordVerifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordVerifiers([redacted])")
    }
}

impl PasswordVerifiers {
    pub fn derive(password: &[u8]) -> Result<Self, CryptoError> {
        Ok(PasswordVerifiers {
            scram_sha256: ScramVerifier::derive(password)?.to_postgres(),
            mysql_native: mysql_native_hash(password),
        })
    }

    pub fn scram(&self) -> Result<ScramVerifier, ScramError> {
        ScramVerifier::from_postgres(&self.scram_sha256)
    }
}

/// What the server's first message asked for.
pub struct ServerFirst {
    message: String,
    /// The combined nonce, checked to extend ours.
    nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// The client side of one SCRAM-SHA-256 exchange (no channel binding: `n,,`).
pub struct ScramClient {
    nonce: String,
    client_first_bare: String,
    expected_server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    pub fn new() -> Result<Self, CryptoError> {
        let nonce = crypto::b64(&crypto::random_bytes(18)?);
        // PostgreSQL ignores the SCRAM user name (it uses the startup packet's), so send none.
        let client_first_bare = format!("n=,r={nonce}");
        Ok(ScramClient {
            nonce,
            client_first_bare,
            expected_server_signature: None,
        })
    }

    /// `client-first-message`.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Reads `server-first-message`: the salt and iteration count to derive the salted
    /// password with (`salted_password`), checked against our nonce and the iteration cap.
    pub fn server_first(&self, server_first: &str) -> Result<ServerFirst, ScramError> {
        let parsed = sumun_wire::postgres::scram::parse_server_first(server_first)
            .map_err(|_| ScramError::Malformed)?;
        let nonce = parsed.nonce;
        let salt = crypto::unb64(parsed.salt).ok_or(ScramError::Malformed)?;
        let iterations = parsed.iterations;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        if iterations > MAX_SERVER_ITERATIONS {
            return Err(ScramError::Iterations(iterations));
        }
        Ok(ServerFirst {
            message: server_first.to_string(),
            nonce: nonce.to_string(),
            salt,
            iterations,
        })
    }

    /// `client-final-message` for `first`, from the salted password derived for it.
    pub fn client_final_salted(&mut self, first: &ServerFirst, salted: &SecretBytes) -> String {
        let without_proof = format!("c=biws,r={}", first.nonce);
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, first.message, without_proof
        );
        let client_key =
            SecretBytes::new(crypto::hmac_sha256(salted.expose(), b"Client Key").to_vec());
        let stored_key = crypto::sha256(client_key.expose());
        let sig = crypto::hmac_sha256(&stored_key, auth_message.as_bytes());
        let mut proof = [0u8; 32];
        for (p, (a, b)) in proof.iter_mut().zip(client_key.expose().iter().zip(sig)) {
            *p = a ^ b;
        }
        let server_key = crypto::hmac_sha256(salted.expose(), b"Server Key");
        self.expected_server_signature =
            Some(crypto::hmac_sha256(&server_key, auth_message.as_bytes()));
        let out = format!("{without_proof},p={}", crypto::b64(&proof));
        zeroize::Zeroize::zeroize(&mut proof);
        out
    }

    /// Consumes `server-first-message`, returns `client-final-message` (deriving the salted
    /// password inline: for the CLI and rotation, not for an event loop).
    pub fn client_final(
        &mut self,
        server_first: &str,
        password: &[u8],
    ) -> Result<String, ScramError> {
        let first = self.server_first(server_first)?;
        let sp = salted_password(password, &first.salt, first.iterations);
        Ok(self.client_final_salted(&first, &sp))
    }

    /// Checks `server-final-message` (`v=...`).
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        use sumun_wire::postgres::scram::{parse_server_final, ServerFinal};
        let v = match parse_server_final(server_final) {
            Ok(ServerFinal::Verifier(v)) => crypto::unb64(v).ok_or(ScramError::Malformed)?,
            Ok(ServerFinal::Error(_)) | Err(_) => return Err(ScramError::Malformed),
        };
        match self.expected_server_signature {
            Some(e) if aws_lc_rs::constant_time::verify_slices_are_equal(&e, &v).is_ok() => Ok(()),
            _ => Err(ScramError::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = crypto::unb64("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::derive_with(b"pencil", &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_wo = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let am = format!("{client_first_bare},{server_first},{final_wo}");
        let proof = crypto::unb64("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        assert!(v.verify_client_proof(am.as_bytes(), &proof));
        assert_eq!(
            crypto::b64(&v.server_signature(am.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let text = v.to_postgres();
        assert_eq!(ScramVerifier::from_postgres(&text).unwrap(), v);
    }

    #[test]
    fn client_and_server_agree() {
        let v = ScramVerifier::derive(b"s3cret").unwrap();
        let mut c = ScramClient::new().unwrap();
        let first = c.client_first();
        let cnonce = first.split("r=").nth(1).unwrap();
        let server_first = format!("r={cnonce}XYZ,s={},i=4096", crypto::b64(&v.salt));
        let fin = c.client_final(&server_first, b"s3cret").unwrap();
        let (wo, proof) = fin.rsplit_once(",p=").unwrap();
        let am = format!("{},{},{}", &first[3..], server_first, wo);
        assert!(v.verify_client_proof(am.as_bytes(), &crypto::unb64(proof).unwrap()));
        let sf = format!("v={}", crypto::b64(&v.server_signature(am.as_bytes())));
        c.verify_server_final(&sf).unwrap();
        assert!(c.verify_server_final("v=AAAA").is_err());
    }

    #[test]
    fn a_server_asking_for_too_many_iterations_is_refused() {
        let mut c = ScramClient::new().unwrap();
        let first = c.client_first();
        let cnonce = first.split("r=").nth(1).unwrap();
        let greedy = format!("r={cnonce}XYZ,s=AAAA,i={}", MAX_SERVER_ITERATIONS + 1);
        assert!(matches!(
            c.client_final(&greedy, b"pw"),
            Err(ScramError::Iterations(_))
        ));
        let fine = format!("r={cnonce}XYZ,s=AAAA,i=4096");
        assert!(c.server_first(&fine).is_ok());
        // A nonce that does not extend ours is refused before any work.
        assert!(matches!(
            c.server_first("r=someoneelse,s=AAAA,i=4096"),
            Err(ScramError::Nonce)
        ));
        // Two nonces (ours extended twice, of different lengths): which one would be checked
        // and which one echoed is left open, so the message is refused (a debug build used to
        // panic on it in `client_final_salted`).
        let twice = format!("r={cnonce}X,s=AAAA,i=4096,r={cnonce}XYZ");
        assert!(matches!(
            c.client_final(&twice, b"pw"),
            Err(ScramError::Malformed)
        ));
    }

    #[test]
    fn a_mock_verifier_depends_on_the_key_and_the_name_only() {
        let a = ScramVerifier::mock(b"key one", "mallory");
        assert_eq!(a, ScramVerifier::mock(b"key one", "mallory"));
        assert_eq!((a.salt.len(), a.iterations), (16, SCRAM_ITERATIONS));
        assert_ne!(a.salt, ScramVerifier::mock(b"key two", "mallory").salt);
        assert_ne!(a.salt, ScramVerifier::mock(b"key one", "mallet").salt);
    }

    #[test]
    fn passwords_are_saslprepped_as_postgresql_does() {
        let salt = b"0123456789abcdef";
        // U+2168 ROMAN NUMERAL NINE is IX after NFKC; a non-ASCII space is a space.
        assert_eq!(
            salted_password("IX-\u{2168}".as_bytes(), salt, 16),
            salted_password(b"IX-IX", salt, 16)
        );
        assert_eq!(
            salted_password("a\u{00A0}b".as_bytes(), salt, 16),
            salted_password(b"a b", salt, 16)
        );
        // ASCII is left alone; bytes that are not UTF-8, or that SASLprep refuses (a control
        // character), are used as they are.
        assert_ne!(
            salted_password(b"IX-IX", salt, 16),
            salted_password(b"ix-ix", salt, 16)
        );
        let raw = b"\xff\xfe";
        let _ = salted_password(raw, salt, 16);
        assert_ne!(
            salted_password(b"a\x07b", salt, 16),
            salted_password(b"ab", salt, 16)
        );
    }

    #[test]
    fn mysql_native_known_value() {
        // MySQL's PASSWORD('password').
        assert_eq!(
            mysql_native_hash(b"password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }
}
