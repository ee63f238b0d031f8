//! A minimal MySQL/MariaDB client for rotation: handshake v10, `mysql_native_password` (and
//! the fast path of `caching_sha2_password`), auth switch, and `COM_QUERY`. Hand-written
//! instead of a full driver to keep the build small. On MariaDB the password is set as a
//! native-password hash (`IDENTIFIED BY PASSWORD '*...'`), so the cleartext never reaches the
//! server; MySQL 8 gets the cleartext. Self-rotation uses `SET PASSWORD`, an admin secret
//! `ALTER USER 'user'@'host'`. No TLS, so no `caching_sha2_password` full auth.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::{connect, redact, Backend, BackendError, Login};
use crate::crypto;
use crate::scram::mysql_native_hash;
use crate::secret::SecretBytes;

/// MySQL / MariaDB password operations.
pub struct Mysql;

const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_MULTI_RESULTS: u32 = 0x20000;
const CLIENT_PLUGIN_AUTH: u32 = 0x80000;
/// ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR
const ACCESS_DENIED: [u16; 2] = [1045, 1698];

struct Conn {
    stream: TcpStream,
    address: String,
    seq: u8,
    server_version: String,
}

enum Auth {
    Ok(Conn),
    Rejected,
}

fn native_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = crypto::sha1(password);
    let h2 = crypto::sha1(&h1);
    let mut m = nonce.to_vec();
    m.extend_from_slice(&h2);
    let h3 = crypto::sha1(&m);
    h1.iter().zip(h3).map(|(a, b)| a ^ b).collect()
}

fn sha2_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = crypto::sha256(password);
    let h2 = crypto::sha256(&h1);
    let mut m = h2.to_vec();
    m.extend_from_slice(nonce);
    let h3 = crypto::sha256(&m);
    h1.iter().zip(h3).map(|(a, b)| a ^ b).collect()
}

impl Conn {
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

    fn send(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        let len = payload.len() as u32;
        let mut buf = Vec::with_capacity(payload.len() + 4);
        buf.extend_from_slice(&len.to_le_bytes()[..3]);
        buf.push(self.seq);
        buf.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        let r = self.stream.write_all(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        r.map_err(|e| self.io(e))
    }

    fn recv(&mut self) -> Result<Vec<u8>, BackendError> {
        let mut head = [0u8; 4];
        self.stream.read_exact(&mut head).map_err(|e| self.io(e))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        self.seq = head[3].wrapping_add(1);
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).map_err(|e| self.io(e))?;
        Ok(body)
    }

    /// Parses an ERR packet: (error code, error).
    fn error(&self, p: &[u8], secrets: &[&str]) -> (u16, BackendError) {
        let code = if p.len() >= 3 {
            u16::from_le_bytes([p[1], p[2]])
        } else {
            0
        };
        let mut msg = p.get(3..).unwrap_or_default();
        if msg.first() == Some(&b'#') && msg.len() >= 6 {
            msg = &msg[6..];
        }
        let err = BackendError::Server {
            address: self.address.clone(),
            code: code.to_string(),
            message: redact(&String::from_utf8_lossy(msg), secrets),
        };
        (code, err)
    }

    fn login(login: &Login<'_>) -> Result<Auth, BackendError> {
        let stream = connect(login.address)?;
        let mut c = Conn {
            stream,
            address: login.address.to_string(),
            seq: 0,
            server_version: String::new(),
        };
        let hs = c.recv()?;
        if hs.first() == Some(&0xff) {
            return Err(c.error(&hs, &[]).1);
        }
        let (nonce, plugin) = c.parse_handshake(&hs)?;
        let caps = CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH;
        let (plugin, auth) = match plugin.as_str() {
            "caching_sha2_password" => (plugin, sha2_scramble(login.password.expose(), &nonce)),
            _ => (
                "mysql_native_password".to_string(),
                native_scramble(login.password.expose(), &nonce),
            ),
        };
        let mut resp = Vec::new();
        resp.extend_from_slice(&caps.to_le_bytes());
        resp.extend_from_slice(&(16u32 << 20).to_le_bytes());
        resp.push(45); // utf8mb4_general_ci
        resp.extend_from_slice(&[0u8; 23]);
        resp.extend_from_slice(login.username.as_bytes());
        resp.push(0);
        resp.push(auth.len() as u8);
        resp.extend_from_slice(&auth);
        resp.extend_from_slice(plugin.as_bytes());
        resp.push(0);
        c.send(&resp)?;
        loop {
            let p = c.recv()?;
            match p.first() {
                Some(0x00) => {
                    c.seq = 0;
                    return Ok(Auth::Ok(c));
                }
                Some(0xff) => {
                    let (code, err) = c.error(&p, &[]);
                    if ACCESS_DENIED.contains(&code) {
                        return Ok(Auth::Rejected);
                    }
                    return Err(err);
                }
                Some(0xfe) => {
                    // Auth switch: plugin name NUL, then the new nonce (NUL-terminated).
                    let rest = &p[1..];
                    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                    let name = String::from_utf8_lossy(&rest[..end]).into_owned();
                    let data = rest.get(end + 1..).unwrap_or_default();
                    let data = data.strip_suffix(&[0]).unwrap_or(data);
                    let auth = match name.as_str() {
                        "mysql_native_password" => native_scramble(login.password.expose(), data),
                        "caching_sha2_password" => sha2_scramble(login.password.expose(), data),
                        _ => {
                            return Err(BackendError::Unsupported {
                                address: c.address.clone(),
                                detail: format!("authentication plugin '{name}' is not supported"),
                            })
                        }
                    };
                    c.send(&auth)?;
                }
                Some(0x01) => match p.get(1) {
                    Some(0x03) => {} // caching_sha2 fast auth succeeded; OK follows
                    _ => {
                        return Err(BackendError::Unsupported {
                            address: c.address.clone(),
                            detail: "caching_sha2_password full authentication needs TLS, which the rotation client lacks".into(),
                        })
                    }
                },
                _ => return Err(c.proto("unexpected packet during authentication")),
            }
        }
    }

    /// Returns the 20-byte nonce and the server's default auth plugin.
    fn parse_handshake(&mut self, p: &[u8]) -> Result<(Vec<u8>, String), BackendError> {
        let bad = || BackendError::Protocol {
            address: self.address.clone(),
            detail: "malformed handshake".into(),
        };
        if p.first() != Some(&10) {
            return Err(bad());
        }
        let mut i = 1;
        let vend = p[i..].iter().position(|&b| b == 0).ok_or_else(bad)?;
        self.server_version = String::from_utf8_lossy(&p[i..i + vend]).into_owned();
        i += vend + 1 + 4; // version NUL, connection id
        let s1 = p.get(i..i + 8).ok_or_else(bad)?.to_vec();
        i += 8 + 1; // filler
        let caps_lo =
            u16::from_le_bytes([*p.get(i).ok_or_else(bad)?, *p.get(i + 1).ok_or_else(bad)?]) as u32;
        i += 2;
        let mut nonce = s1;
        let mut plugin = String::from("mysql_native_password");
        if p.len() > i {
            i += 1 + 2; // charset, status
            let caps_hi =
                u16::from_le_bytes([*p.get(i).ok_or_else(bad)?, *p.get(i + 1).ok_or_else(bad)?])
                    as u32;
            let caps = caps_lo | (caps_hi << 16);
            i += 2;
            let auth_len = *p.get(i).ok_or_else(bad)? as usize;
            i += 1 + 10;
            if caps & CLIENT_SECURE_CONNECTION != 0 {
                let n = auth_len.saturating_sub(8).max(13);
                let s2 = p.get(i..i + n).ok_or_else(bad)?;
                nonce.extend_from_slice(s2.strip_suffix(&[0]).unwrap_or(s2));
                i += n;
            }
            if caps & CLIENT_PLUGIN_AUTH != 0 {
                let rest = p.get(i..).unwrap_or_default();
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                plugin = String::from_utf8_lossy(&rest[..end]).into_owned();
            }
        }
        nonce.truncate(20);
        Ok((nonce, plugin))
    }

    fn query(&mut self, sql: &str, secrets: &[&str]) -> Result<(), BackendError> {
        self.seq = 0;
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        let r = self.send(&p);
        zeroize::Zeroize::zeroize(&mut p);
        r?;
        let resp = self.recv()?;
        match resp.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(self.error(&resp, secrets).1),
            _ => Err(self.proto("unexpected reply to a statement")),
        }
    }

    fn close(mut self) {
        self.seq = 0;
        let _ = self.send(&[0x01]);
    }
}

/// Quotes a string literal for MySQL (backslash and quote escaped).
fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `user` or `user@host` (host defaults to `%`) as an account name.
fn account(user: &str) -> String {
    let (u, h) = user.split_once('@').unwrap_or((user, "%"));
    format!("{}@{}", quote_str(u), quote_str(h))
}

impl Backend for Mysql {
    fn check_login(&self, login: &Login<'_>) -> Result<bool, BackendError> {
        match Conn::login(login)? {
            Auth::Ok(c) => {
                c.close();
                Ok(true)
            }
            Auth::Rejected => Ok(false),
        }
    }

    fn set_password(
        &self,
        admin: &Login<'_>,
        user: &str,
        new: &SecretBytes,
    ) -> Result<(), BackendError> {
        let mut c = match Conn::login(admin)? {
            Auth::Ok(c) => c,
            Auth::Rejected => {
                return Err(BackendError::LoginRejected {
                    address: admin.address.to_string(),
                    user: admin.username.to_string(),
                })
            }
        };
        let self_rotation = admin.username == user.split_once('@').map(|(u, _)| u).unwrap_or(user);
        let pw = new
            .expose_str()
            .ok_or_else(|| c.proto("password is not UTF-8"))?;
        let hash = mysql_native_hash(new.expose());
        let mariadb = c.server_version.contains("MariaDB");
        // `SET PASSWORD` on oneself needs no privilege (ALTER USER needs CREATE USER on
        // MariaDB) and no knowledge of which account host the login matched.
        let sql = SecretBytes::new(
            match (self_rotation && !user.contains('@'), mariadb) {
                (true, true) => format!("SET PASSWORD = '{hash}'"),
                (true, false) => format!("SET PASSWORD = {}", quote_str(pw)),
                (false, true) => format!(
                    "ALTER USER {} IDENTIFIED BY PASSWORD '{hash}'",
                    account(user)
                ),
                (false, false) => format!(
                    "ALTER USER {} IDENTIFIED BY {}",
                    account(user),
                    quote_str(pw)
                ),
            }
            .into_bytes(),
        );
        let r = c.query(sql.expose_str().unwrap_or_default(), &[pw, &hash]);
        c.close();
        r
    }
}
