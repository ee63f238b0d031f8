//! The server's SCRAM-SHA-256 messages as a client (the gateway logging in to PostgreSQL)
//! reads them (RFC 5802 section 7): `server-first-message` (`r=nonce,s=salt,i=iterations`) and
//! `server-final-message` (`v=signature` or `e=error`). Text only: the salt and the signature
//! stay base64 and the nonce is not checked against ours; `sumun-vault`'s SCRAM client does
//! the decoding, the checks and the cryptography.

/// A server message that is not one SCRAM allows here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed SCRAM message from the server")]
pub struct Malformed;

/// What `server-first-message` says, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFirst<'a> {
    /// The combined nonce (ours followed by the server's), as sent.
    pub nonce: &'a str,
    /// The salt, base64 as sent.
    pub salt: &'a str,
    /// The iteration count, never 0.
    pub iterations: u32,
}

/// Reads `server-first-message`. Attributes other than `r`, `s` and `i` are passed over; each
/// of those three must be there exactly once (a second nonce would leave open which one the
/// client checks and which one it echoes), and the count must be a positive decimal `u32`.
pub fn parse_server_first(message: &str) -> Result<ServerFirst<'_>, Malformed> {
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for part in message.split(',') {
        let slot = if let Some(v) = part.strip_prefix("r=") {
            nonce.replace(v).map(|_| ())
        } else if let Some(v) = part.strip_prefix("s=") {
            salt.replace(v).map(|_| ())
        } else if let Some(v) = part.strip_prefix("i=") {
            iterations.replace(v).map(|_| ())
        } else {
            None
        };
        if slot.is_some() {
            return Err(Malformed);
        }
    }
    let iterations = iterations
        .and_then(|i| i.parse::<u32>().ok())
        .filter(|&i| i > 0)
        .ok_or(Malformed)?;
    Ok(ServerFirst {
        nonce: nonce.ok_or(Malformed)?,
        salt: salt.ok_or(Malformed)?,
        iterations,
    })
}

/// What `server-final-message` says, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFinal<'a> {
    /// `v=`: the server signature, base64 as sent.
    Verifier(&'a str),
    /// `e=`: the server's error (`invalid-proof`, `other-error`, ...).
    Error(&'a str),
}

/// Reads `server-final-message`: its first `v=` attribute, else its first `e=` one.
pub fn parse_server_final(message: &str) -> Result<ServerFinal<'_>, Malformed> {
    let attribute = |name: &str| message.split(',').find_map(|p| p.strip_prefix(name));
    attribute("v=")
        .map(ServerFinal::Verifier)
        .or_else(|| attribute("e=").map(ServerFinal::Error))
        .ok_or(Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_first_is_read() {
        // RFC 7677 section 3.
        let m = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            parse_server_first(m),
            Ok(ServerFirst {
                nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
                iterations: 4096,
            })
        );
        // Order and extensions do not matter.
        assert_eq!(
            parse_server_first("i=1,x=y,s=,r=n").map(|f| (f.nonce, f.salt, f.iterations)),
            Ok(("n", "", 1))
        );
    }

    #[test]
    fn malformed_server_first_is_refused() {
        for m in [
            "",
            "r=n,s=AAAA",
            "r=n,i=4096",
            "s=AAAA,i=4096",
            "r=n,s=AAAA,i=0",
            "r=n,s=AAAA,i=-1",
            "r=n,s=AAAA,i=4294967296",
            "r=n,s=AAAA,i=four",
            // A second nonce, salt or count.
            "r=abc1,s=AAAA,i=4096,r=abc123",
            "r=n,s=AAAA,s=BBBB,i=4096",
            "r=n,s=AAAA,i=4096,i=1",
        ] {
            assert_eq!(parse_server_first(m), Err(Malformed), "{m}");
        }
    }

    #[test]
    fn server_final_is_read() {
        assert_eq!(
            parse_server_final("v=AAAA"),
            Ok(ServerFinal::Verifier("AAAA"))
        );
        assert_eq!(
            parse_server_final("e=invalid-proof"),
            Ok(ServerFinal::Error("invalid-proof"))
        );
        assert_eq!(
            parse_server_final("e=x,v=AAAA"),
            Ok(ServerFinal::Verifier("AAAA"))
        );
        assert_eq!(parse_server_final("x=y"), Err(Malformed));
        assert_eq!(parse_server_final(""), Err(Malformed));
    }
}
