//! The admin API's bearer token file (`[admin] token_file`), read the same way by `validate`,
//! by the gateway when it applies a config, and by `sumun status`: one line of at least
//! [`ADMIN_TOKEN_MIN_LEN`] printable characters, in a file only its owner can read. A token
//! anyone on the machine can read, or one short enough to guess, protects nothing, so such a
//! file is refused rather than used.

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

/// The shortest token accepted, in characters: 128 bits as hex (`openssl rand -hex 16`).
pub const ADMIN_TOKEN_MIN_LEN: usize = 32;

/// Longest token file read; a token is one short line.
const MAX_FILE_LEN: u64 = 4096;

/// The token, wiped from memory when dropped; never shown by `Debug`.
pub struct AdminToken(Zeroizing<String>);

impl AdminToken {
    /// The token itself, to send or to compare.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why a token file cannot be used. Messages complete "token_file 'PATH' ...".
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("does not exist")]
    Missing,
    #[error("cannot be read: {0}")]
    Io(std::io::Error),
    #[error("is not a regular file")]
    NotAFile,
    #[error("has mode {mode:04o}, so others can read the token; make it readable by its owner only (chmod 600)")]
    Mode { mode: u32 },
    #[error("is empty; write a random token into it, e.g. `openssl rand -hex 32`")]
    Empty,
    #[error("is larger than 4 KiB; it must hold one line, the token")]
    TooLarge,
    #[error(
        "holds more than one line or a non-printable character; it must hold one line, the token"
    )]
    NotOneLine,
    #[error("holds a token of {len} characters; use at least {ADMIN_TOKEN_MIN_LEN} random characters, e.g. `openssl rand -hex 32`")]
    Short { len: usize },
}

/// Read and check the token file at `path`. Leading and trailing white space (the newline an
/// editor adds) is not part of the token.
pub fn read_admin_token(path: &Path) -> Result<AdminToken, TokenFileError> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => TokenFileError::Missing,
        _ => TokenFileError::Io(e),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(TokenFileError::NotAFile);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenFileError::Mode { mode });
        }
    }
    if meta.len() > MAX_FILE_LEN {
        return Err(TokenFileError::TooLarge);
    }
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(TokenFileError::TooLarge);
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| TokenFileError::NotOneLine)?
        .trim();
    if text.is_empty() {
        return Err(TokenFileError::Empty);
    }
    // Printable ASCII without spaces: what an HTTP header carries unchanged.
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenFileError::NotOneLine);
    }
    if text.len() < ADMIN_TOKEN_MIN_LEN {
        return Err(TokenFileError::Short { len: text.len() });
    }
    Ok(AdminToken(Zeroizing::new(text.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn token_files_are_checked() {
        let dir = std::env::temp_dir().join(format!(
            "sumun-config-token-{}-{}",
            std::process::id(),
            line!()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let good = "0123456789abcdef0123456789abcdef";
        let t = read_admin_token(&write(&dir, "ok", &format!("{good}\n"), 0o600)).expect("ok");
        assert_eq!(t.expose(), good);
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
        assert!(read_admin_token(&write(&dir, "ro", good, 0o400)).is_ok());
        let err = |name: &str, text: &str, mode: u32| {
            read_admin_token(&write(&dir, name, text, mode))
                .expect_err(name)
                .to_string()
        };
        assert_eq!(
            err("world", good, 0o644),
            "has mode 0644, so others can read the token; make it readable by its owner only (chmod 600)"
        );
        assert!(err("group", good, 0o640).starts_with("has mode 0640"));
        assert!(err("empty", "\n", 0o600).starts_with("is empty"));
        assert!(err("short", "abc123", 0o600).starts_with("holds a token of 6 characters"));
        assert!(err("two", &format!("{good}\n{good}"), 0o600).starts_with("holds more than one"));
        assert_eq!(
            read_admin_token(&dir.join("absent"))
                .expect_err("absent")
                .to_string(),
            "does not exist"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
