//! A minimal PostgreSQL client for rotation: protocol 3.0 startup, SCRAM-SHA-256 authentication
//! in which the server must prove it knows the password (its signature is checked before
//! anything else is sent; cleartext, md5 and trust are refused), and simple queries. It sets passwords with `ALTER ROLE ... PASSWORD
//! 'SCRAM-SHA-256$...'`, a verifier computed here, so the cleartext never reaches the server or
//! its statement log. No TLS and no MD5 (PostgreSQL 14+ stores SCRAM verifiers by default).

use std::io::{Read, Write};
use std::net::TcpStream;

use super::{connect, redact, Backend, BackendError, Login};
use crate::scram::{ScramClient, ScramVerifier};
use crate::secret::SecretBytes;

/// PostgreSQL password operations.
pub struct Postgres;

struct Conn {
    stream: TcpStream,
    address: String,
}

enum Auth {
    Ok(Conn),
    Rejected,
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
            detail: detail.to_string(),
        }
    }

    fn send(&mut self, tag: Option<u8>, body: &[u8]) -> Result<(), BackendError> {
        let mut buf = Vec::with_capacity(body.len() + 5);
        if let Some(t) = tag {
            buf.push(t);
        }
        buf.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        buf.extend_from_slice(body);
        let r = self.stream.write_all(&buf);
        // The buffer may hold a password (cleartext auth); wipe it.
        zeroize::Zeroize::zeroize(&mut buf);
        r.map_err(|e| self.io(e))
    }

    fn recv(&mut self) -> Result<(u8, Vec<u8>), BackendError> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).map_err(|e| self.io(e))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=1 << 24).contains(&len) {
            return Err(self.proto("bad message length"));
        }
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).map_err(|e| self.io(e))?;
        Ok((head[0], body))
    }

    fn error(&self, body: &[u8], secrets: &[&str]) -> (String, BackendError) {
        let mut code = String::new();
        let mut message = String::new();
        for field in body.split(|&b| b == 0) {
            if let Some((&t, v)) = field.split_first() {
                let v = String::from_utf8_lossy(v);
                match t {
                    b'C' => code = v.into_owned(),
                    b'M' => message = v.into_owned(),
                    _ => {}
                }
            }
        }
        let err = BackendError::Server {
            address: self.address.clone(),
            code: code.clone(),
            message: redact(&message, secrets),
        };
        (code, err)
    }

    fn login(login: &Login<'_>) -> Result<Auth, BackendError> {
        let stream = connect(login.address)?;
        let mut c = Conn {
            stream,
            address: login.address.to_string(),
        };
        let mut startup = Vec::new();
        startup.extend_from_slice(&196608u32.to_be_bytes());
        for (k, v) in [
            ("user", login.username),
            ("database", login.database.unwrap_or("postgres")),
            ("application_name", "sumun-rotate"),
        ] {
            startup.extend_from_slice(k.as_bytes());
            startup.push(0);
            startup.extend_from_slice(v.as_bytes());
            startup.push(0);
        }
        startup.push(0);
        c.send(None, &startup)?;
        let mut scram: Option<ScramClient> = None;
        // The server must prove it knows the password (SCRAM's server signature) before the
        // rotation trusts it with a new one: no cleartext (this client has no TLS), no md5, and
        // no AuthenticationOk or ReadyForQuery before the proof.
        let mut proven = false;
        let mut authenticated = false;
        loop {
            let (tag, body) = c.recv()?;
            match tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(c.proto("short authentication message"));
                    }
                    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let data = &body[4..];
                    match code {
                        0 if proven && !authenticated => authenticated = true,
                        0 => {
                            return Err(BackendError::Unsupported {
                                address: c.address.clone(),
                                detail: "the server accepted the login without proving it knows the password (trust authentication, or not a real server); rotation needs scram-sha-256".into(),
                            })
                        }
                        3 => {
                            return Err(BackendError::Unsupported {
                                address: c.address.clone(),
                                detail: "the server asks for the password in cleartext; the rotation client never sends it (use scram-sha-256)".into(),
                            })
                        }
                        10 if scram.is_none() => {
                            let mechs: Vec<&[u8]> = data.split(|&b| b == 0).collect();
                            if !mechs.contains(&&b"SCRAM-SHA-256"[..]) {
                                return Err(BackendError::Unsupported {
                                    address: c.address.clone(),
                                    detail: "server offers no SCRAM-SHA-256".into(),
                                });
                            }
                            let client = ScramClient::new()?;
                            let first = client.client_first();
                            let mut msg = b"SCRAM-SHA-256\0".to_vec();
                            msg.extend_from_slice(&(first.len() as u32).to_be_bytes());
                            msg.extend_from_slice(first.as_bytes());
                            c.send(Some(b'p'), &msg)?;
                            scram = Some(client);
                        }
                        11 if !proven => {
                            let client = scram
                                .as_mut()
                                .ok_or_else(|| c.proto("SASL continue without start"))?;
                            let server_first = std::str::from_utf8(data)
                                .map_err(|_| c.proto("non-UTF-8 SCRAM message"))?;
                            let fin = client.client_final(server_first, login.password.expose())?;
                            c.send(Some(b'p'), fin.as_bytes())?;
                        }
                        12 if !proven => {
                            let client = scram
                                .as_ref()
                                .ok_or_else(|| c.proto("SASL final without start"))?;
                            let server_final = std::str::from_utf8(data)
                                .map_err(|_| c.proto("non-UTF-8 SCRAM message"))?;
                            client.verify_server_final(server_final)?;
                            proven = true;
                        }
                        5 => return Err(BackendError::Unsupported {
                            address: c.address.clone(),
                            detail:
                                "MD5 password authentication is not supported; use scram-sha-256"
                                    .into(),
                        }),
                        _ => return Err(c.proto("unexpected authentication request")),
                    }
                }
                b'E' => {
                    let (code, err) = c.error(&body, &[]);
                    // invalid_password, invalid_authorization_specification
                    if code == "28P01" || code == "28000" {
                        return Ok(Auth::Rejected);
                    }
                    return Err(err);
                }
                b'Z' if authenticated => return Ok(Auth::Ok(c)),
                b'Z' | b'K' | b'S' if !authenticated => {
                    return Err(c.proto("session messages before the login completed"))
                }
                // ParameterStatus, BackendKeyData, NoticeResponse
                _ => {}
            }
        }
    }

    fn query(&mut self, sql: &str, secrets: &[&str]) -> Result<(), BackendError> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(Some(b'Q'), &body)?;
        let mut failure = None;
        loop {
            let (tag, body) = self.recv()?;
            match tag {
                b'E' => failure = Some(self.error(&body, secrets).1),
                b'Z' => break,
                _ => {}
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn close(mut self) {
        let _ = self.send(Some(b'X'), &[]);
    }
}

/// Quotes an identifier for SQL (`"` doubled).
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Backend for Postgres {
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
        let verifier = ScramVerifier::derive(new.expose())?.to_postgres();
        // A verifier is base64 and `$:`, never a quote, so it embeds safely in a literal.
        let sql = format!("ALTER ROLE {} PASSWORD '{}'", quote_ident(user), verifier);
        let r = c.query(&sql, &[&verifier]);
        c.close();
        r
    }
}
