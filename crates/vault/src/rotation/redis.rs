//! A minimal Redis (RESP2) client for rotation. Redis ACL users may hold several passwords at
//! once, which makes rotation gentle: `ACL SETUSER user >new` adds the new password, and only
//! after it is verified and promoted does `ACL SETUSER user resetpass >new` drop the old ones.
//! `ACL SAVE` persists the change when the server has an ACL file (ignored otherwise).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use super::{connect, redact, Backend, BackendError, Login};
use crate::secret::SecretBytes;

/// Redis password operations.
pub struct Redis;

enum Reply {
    Simple,
    Error(String),
    Int,
    Bulk,
    Array,
}

struct Conn {
    reader: BufReader<TcpStream>,
    address: String,
}

impl Conn {
    fn open(address: &str) -> Result<Conn, BackendError> {
        Ok(Conn {
            reader: BufReader::new(connect(address)?),
            address: address.to_string(),
        })
    }

    fn io(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            address: self.address.clone(),
            source,
        }
    }

    fn proto(&self, detail: &str) -> BackendError {
        BackendError::Protocol {
            address: self.address.clone(),
            detail: detail.into(),
        }
    }

    fn command(&mut self, args: &[&[u8]]) -> Result<Reply, BackendError> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        let r = self.reader.get_mut().write_all(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        r.map_err(|e| self.io(e))?;
        self.reply()
    }

    fn line(&mut self) -> Result<String, BackendError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(64 * 1024)
            .read_line(&mut line)
            .map_err(|e| self.io(e))?;
        if n == 0 || !line.ends_with("\r\n") {
            return Err(self.proto("connection closed mid-reply"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn reply(&mut self) -> Result<Reply, BackendError> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" => Ok(Reply::Simple),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => Ok(Reply::Int),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| self.proto("bad bulk length"))?;
                if n >= 0 {
                    let mut skip = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut skip).map_err(|e| self.io(e))?;
                }
                Ok(Reply::Bulk)
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| self.proto("bad array length"))?;
                for _ in 0..n.max(0) {
                    self.reply()?;
                }
                Ok(Reply::Array)
            }
            _ => Err(self.proto("unknown reply type")),
        }
    }

    /// `AUTH user pass`: Ok(true) on success, Ok(false) on bad credentials.
    fn auth(&mut self, login: &Login<'_>) -> Result<bool, BackendError> {
        match self.command(&[b"AUTH", login.username.as_bytes(), login.password.expose()])? {
            Reply::Simple => Ok(true),
            Reply::Error(e)
                if e.starts_with("WRONGPASS") || e.contains("invalid username-password") =>
            {
                Ok(false)
            }
            Reply::Error(e) => Err(self.server(&e, &[])),
            _ => Err(self.proto("unexpected reply to AUTH")),
        }
    }

    fn server(&self, e: &str, secrets: &[&str]) -> BackendError {
        let (code, message) = e.split_once(' ').unwrap_or((e, ""));
        BackendError::Server {
            address: self.address.clone(),
            code: code.to_string(),
            message: redact(message, secrets),
        }
    }

    fn admin(login: &Login<'_>) -> Result<Conn, BackendError> {
        let mut c = Conn::open(login.address)?;
        if !c.auth(login)? {
            return Err(BackendError::LoginRejected {
                address: login.address.to_string(),
                user: login.username.to_string(),
            });
        }
        Ok(c)
    }

    fn setuser(
        &mut self,
        user: &str,
        rules: &[&[u8]],
        secret: &SecretBytes,
    ) -> Result<(), BackendError> {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", user.as_bytes()];
        args.extend_from_slice(rules);
        match self.command(&args)? {
            Reply::Simple => {}
            Reply::Error(e) => return Err(self.server(&e, &[secret.expose_str().unwrap_or("")])),
            _ => return Err(self.proto("unexpected reply to ACL SETUSER")),
        }
        // Persist when an ACL file is configured; without one Redis answers an error we ignore.
        let _ = self.command(&[b"ACL", b"SAVE"]);
        Ok(())
    }
}

fn add_rule(p: &SecretBytes) -> SecretBytes {
    let mut r = b">".to_vec();
    r.extend_from_slice(p.expose());
    SecretBytes::new(r)
}

impl Backend for Redis {
    fn check_login(&self, login: &Login<'_>) -> Result<bool, BackendError> {
        let mut c = Conn::open(login.address)?;
        c.auth(login)
    }

    fn set_password(
        &self,
        admin: &Login<'_>,
        user: &str,
        new: &SecretBytes,
    ) -> Result<(), BackendError> {
        let mut c = Conn::admin(admin)?;
        let rule = add_rule(new);
        c.setuser(user, &[rule.expose()], new)
    }

    fn finish(
        &self,
        admin: &Login<'_>,
        user: &str,
        current: &SecretBytes,
    ) -> Result<(), BackendError> {
        let mut c = Conn::admin(admin)?;
        let rule = add_rule(current);
        c.setuser(user, &[b"resetpass", rule.expose()], current)
    }
}
