//! Short-lived tokens used as passwords. Format (printable ASCII, about 150 bytes):
//! `sumun1.` + base64url(payload) + `.` + base64url(Ed25519 signature over `sumun1.` + payload),
//! where payload is a compact binary record: format byte, key id, issued-at, lifetime, an 8-byte
//! SHA-256 prefix of the audience (the gateway name), user and optional database. A binary
//! payload keeps tokens short enough for any client's password field (RDS IAM tokens, at
//! ~1 KiB, famously are not). Verification costs one Ed25519 check against a key parsed once.
//! This module has no clock of its own: callers pass `now`, which keeps it testable.

use std::collections::HashMap;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, ParsedPublicKey, ED25519};

use crate::crypto;
use crate::secret::SecretBytes;

/// Every token starts with this; it also prefixes the signed message (domain separation).
pub const TOKEN_PREFIX: &str = "sumun1.";
/// Default lifetime of a token (as RDS IAM auth).
pub const DEFAULT_TTL_SECS: u64 = 15 * 60;
/// Default longest lifetime a verifier accepts.
pub const DEFAULT_MAX_TTL_SECS: u64 = 60 * 60;
/// Default clock skew tolerated between issuer and verifier.
pub const DEFAULT_SKEW_SECS: u64 = 30;
/// Anything longer is refused before any parsing.
const MAX_TOKEN_LEN: usize = 1024;
const PAYLOAD_FORMAT: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed by unknown key '{kid}'")]
    UnknownKey { kid: String },
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired for user '{user}'")]
    Expired { user: String },
    #[error("token for user '{user}' is not valid yet")]
    NotYetValid { user: String },
    #[error("token for user '{user}' was issued for another gateway")]
    WrongAudience { user: String },
    #[error("token for user '{user}' has a lifetime longer than the allowed maximum")]
    LifetimeTooLong { user: String },
    #[error("cannot issue a token: {0}")]
    Issue(&'static str),
}

impl TokenError {
    /// A short label for metrics and audit records (`reason="expired"`).
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnknownKey { .. } => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired { .. } => "expired",
            TokenError::NotYetValid { .. } => "not_yet_valid",
            TokenError::WrongAudience { .. } => "wrong_audience",
            TokenError::LifetimeTooLong { .. } => "lifetime_too_long",
            TokenError::Issue(_) => "issue",
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user: String,
    pub database: Option<String>,
    /// Unix seconds; also the not-before time.
    pub issued_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    pub kid: String,
}

/// Verification limits, normally from the config (`max TTL`) and fixed skew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    pub max_ttl_secs: u64,
    pub clock_skew_secs: u64,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            max_ttl_secs: DEFAULT_MAX_TTL_SECS,
            clock_skew_secs: DEFAULT_SKEW_SECS,
        }
    }
}

fn audience_tag(audience: &str) -> [u8; 8] {
    let h = crypto::sha256(audience.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h[..8]);
    out
}

/// Generates an Ed25519 key pair: (PKCS#8 private key, raw public key).
pub(crate) fn generate_signing_key() -> Result<(SecretBytes, Vec<u8>), aws_lc_rs::error::Unspecified>
{
    let kp = Ed25519KeyPair::generate()?;
    let pkcs8 = kp.to_pkcs8()?;
    Ok((
        SecretBytes::from_slice(pkcs8.as_ref()),
        kp.public_key().as_ref().to_vec(),
    ))
}

/// Issues tokens with one signing key.
pub struct TokenSigner {
    kid: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<Self, TokenError> {
        let key =
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| TokenError::Issue("bad signing key"))?;
        Ok(TokenSigner {
            kid: kid.to_string(),
            key,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Issues a token for `user` (and optionally `database`) valid from `now` for `ttl_secs`.
    pub fn issue(
        &self,
        user: &str,
        database: Option<&str>,
        audience: &str,
        now: u64,
        ttl_secs: u64,
    ) -> Result<SecretBytes, TokenError> {
        let db = database.unwrap_or("");
        if user.is_empty() || user.len() > 255 || db.len() > 255 || self.kid.len() > 255 {
            return Err(TokenError::Issue(
                "user, database and key id must be 1..255 bytes",
            ));
        }
        let ttl = u32::try_from(ttl_secs).map_err(|_| TokenError::Issue("lifetime too long"))?;
        let mut payload = Vec::with_capacity(32 + user.len() + db.len() + self.kid.len());
        payload.push(PAYLOAD_FORMAT);
        payload.push(self.kid.len() as u8);
        payload.extend_from_slice(self.kid.as_bytes());
        payload.extend_from_slice(&now.to_be_bytes());
        payload.extend_from_slice(&ttl.to_be_bytes());
        payload.extend_from_slice(&audience_tag(audience));
        payload.push(user.len() as u8);
        payload.extend_from_slice(user.as_bytes());
        payload.push(db.len() as u8);
        payload.extend_from_slice(db.as_bytes());
        let mut msg = TOKEN_PREFIX.as_bytes().to_vec();
        msg.extend_from_slice(&payload);
        let sig = self.key.sign(&msg);
        let token = format!(
            "{TOKEN_PREFIX}{}.{}",
            crypto::b64url(&payload),
            crypto::b64url(sig.as_ref())
        );
        Ok(SecretBytes::new(token.into_bytes()))
    }
}

/// Verifies tokens against the public keys of a vault. Built once, shared across threads.
pub struct TokenVerifier {
    keys: HashMap<String, ParsedPublicKey>,
    policy: VerifyPolicy,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("policy", &self.policy)
            .finish()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }
    fn str8(&mut self) -> Result<&'a str, TokenError> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| TokenError::Malformed)
    }
}

impl TokenVerifier {
    /// From (kid, raw Ed25519 public key) pairs.
    pub fn new(keys: Vec<(String, Vec<u8>)>, policy: VerifyPolicy) -> Result<Self, TokenError> {
        let mut map = HashMap::new();
        for (kid, public) in keys {
            let parsed =
                ParsedPublicKey::new(&ED25519, &public).map_err(|_| TokenError::Malformed)?;
            map.insert(kid, parsed);
        }
        Ok(TokenVerifier { keys: map, policy })
    }

    pub fn policy(&self) -> VerifyPolicy {
        self.policy
    }

    /// Cheap check for "this password looks like a token", so a gateway can route between
    /// token and password authentication without attempting a verification.
    pub fn looks_like_token(candidate: &[u8]) -> bool {
        candidate.starts_with(TOKEN_PREFIX.as_bytes())
    }

    /// Verifies `token` for `audience` at `now` (unix seconds): signature first, then
    /// audience, not-before and expiry (each with the skew allowance) and the maximum lifetime.
    pub fn verify(&self, token: &str, audience: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Malformed)?;
        let (p64, s64) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = crypto::unb64url(p64).ok_or(TokenError::Malformed)?;
        let sig = crypto::unb64url(s64).ok_or(TokenError::Malformed)?;
        if sig.len() != 64 {
            return Err(TokenError::Malformed);
        }
        let mut r = Reader(&payload);
        if r.u8()? != PAYLOAD_FORMAT {
            return Err(TokenError::Malformed);
        }
        let kid = r.str8()?;
        let iat = u64::from_be_bytes(r.take(8)?.try_into().map_err(|_| TokenError::Malformed)?);
        let ttl = u32::from_be_bytes(r.take(4)?.try_into().map_err(|_| TokenError::Malformed)?);
        let aud = r.take(8)?;
        let user = r.str8()?;
        let db = r.str8()?;
        if !r.0.is_empty() || user.is_empty() {
            return Err(TokenError::Malformed);
        }
        let key = self.keys.get(kid).ok_or_else(|| TokenError::UnknownKey {
            kid: kid.chars().take(32).collect(),
        })?;
        let mut msg = Vec::with_capacity(TOKEN_PREFIX.len() + payload.len());
        msg.extend_from_slice(TOKEN_PREFIX.as_bytes());
        msg.extend_from_slice(&payload);
        key.verify_sig(&msg, &sig)
            .map_err(|_| TokenError::BadSignature)?;
        let user = user.to_string();
        if aud != audience_tag(audience) {
            return Err(TokenError::WrongAudience { user });
        }
        let ttl = u64::from(ttl);
        if ttl > self.policy.max_ttl_secs {
            return Err(TokenError::LifetimeTooLong { user });
        }
        let skew = self.policy.clock_skew_secs;
        if now.saturating_add(skew) < iat {
            return Err(TokenError::NotYetValid { user });
        }
        let exp = iat.saturating_add(ttl);
        if now >= exp.saturating_add(skew) {
            return Err(TokenError::Expired { user });
        }
        Ok(Claims {
            user,
            database: (!db.is_empty()).then(|| db.to_string()),
            issued_at: iat,
            expires_at: exp,
            kid: kid.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(kid: &str) -> (TokenSigner, (String, Vec<u8>)) {
        let (pkcs8, public) = generate_signing_key().unwrap();
        (
            TokenSigner::from_pkcs8(kid, pkcs8.expose()).unwrap(),
            (kid.to_string(), public),
        )
    }

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn round_trip_and_size() {
        let (s, k) = pair("k1abcd");
        let v = TokenVerifier::new(vec![k], VerifyPolicy::default()).unwrap();
        let t = s
            .issue("app_user", Some("app"), "prod-db-gateway", NOW, 900)
            .unwrap();
        let t = t.expose_str().unwrap();
        assert!(t.len() < 250, "token is {} bytes", t.len());
        assert!(t.bytes().all(|b| b.is_ascii_graphic()));
        let c = v.verify(t, "prod-db-gateway", NOW + 10).unwrap();
        assert_eq!(c.user, "app_user");
        assert_eq!(c.database.as_deref(), Some("app"));
        assert_eq!(c.expires_at, NOW + 900);
        assert_eq!(c.kid, "k1abcd");
        let t2 = s.issue("u", None, "g", NOW, 900).unwrap();
        assert_eq!(
            v.verify(t2.expose_str().unwrap(), "g", NOW)
                .unwrap()
                .database,
            None
        );
    }

    #[test]
    fn refusals() {
        let (s, k) = pair("k1");
        let v = TokenVerifier::new(vec![k], VerifyPolicy::default()).unwrap();
        let t = s.issue("u", None, "gw", NOW, 900).unwrap();
        let t = t.expose_str().unwrap();
        // Expiry, with the 30 s skew allowance.
        assert!(v.verify(t, "gw", NOW + 900 + 29).is_ok());
        assert_eq!(
            v.verify(t, "gw", NOW + 900 + 30).unwrap_err().reason(),
            "expired"
        );
        // Not before, with skew.
        assert!(v.verify(t, "gw", NOW - 30).is_ok());
        assert_eq!(
            v.verify(t, "gw", NOW - 31).unwrap_err().reason(),
            "not_yet_valid"
        );
        // Wrong audience.
        assert_eq!(
            v.verify(t, "other", NOW).unwrap_err().reason(),
            "wrong_audience"
        );
        // Too long a lifetime.
        let long = s.issue("u", None, "gw", NOW, 7200).unwrap();
        assert_eq!(
            v.verify(long.expose_str().unwrap(), "gw", NOW)
                .unwrap_err()
                .reason(),
            "lifetime_too_long"
        );
        // Unknown key id.
        let (other, _) = pair("k9");
        let t9 = other.issue("u", None, "gw", NOW, 900).unwrap();
        assert_eq!(
            v.verify(t9.expose_str().unwrap(), "gw", NOW)
                .unwrap_err()
                .reason(),
            "unknown_key"
        );
        // A different key under a known kid.
        let (forger, _) = pair("k1");
        let tf = forger.issue("u", None, "gw", NOW, 900).unwrap();
        assert_eq!(
            v.verify(tf.expose_str().unwrap(), "gw", NOW).unwrap_err(),
            TokenError::BadSignature
        );
        // Garbage.
        for g in [
            "",
            "sumun1.",
            "sumun1..",
            "sumun1.AAAA.BBBB",
            "password",
            &"x".repeat(5000),
        ] {
            assert_eq!(v.verify(g, "gw", NOW).unwrap_err(), TokenError::Malformed);
        }
    }

    #[test]
    fn every_flipped_character_is_refused() {
        let (s, k) = pair("k1");
        let v = TokenVerifier::new(vec![k], VerifyPolicy::default()).unwrap();
        let t = s.issue("admin", Some("db"), "gw", NOW, 900).unwrap();
        let t = t.expose_str().unwrap().to_string();
        for i in 0..t.len() {
            for repl in [b'A', b'z', b'0', b'-', b'.'] {
                let mut b = t.clone().into_bytes();
                if b[i] == repl {
                    continue;
                }
                b[i] = repl;
                let tampered = String::from_utf8(b).unwrap();
                match v.verify(&tampered, "gw", NOW) {
                    // base64url's last character carries spare bits that decoding ignores only
                    // if non-canonical; the decoder rejects those, so nothing may pass.
                    Ok(c) => panic!("tampered token at {i} accepted: {c:?}"),
                    Err(e) => assert!(
                        matches!(
                            e,
                            TokenError::Malformed
                                | TokenError::BadSignature
                                | TokenError::UnknownKey { .. }
                        ),
                        "{e:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn debug_does_not_leak() {
        let (s, _) = pair("k1");
        let t = s.issue("u", None, "gw", NOW, 900).unwrap();
        assert!(!format!("{t:?}").contains("sumun1."));
        assert!(format!("{s:?}").contains("k1"));
    }
}
