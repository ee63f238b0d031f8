//! A tiny raw PostgreSQL frontend: one connection speaking the v3 protocol by hand, over plain
//! TCP or TLS, for tests that need to see (or send) exactly what goes over the wire.

use std::net::SocketAddr;
use std::time::Duration;

use sumun_wire::postgres::{self as pg, Writer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One connection speaking the v3 protocol by hand, over plain TCP or TLS.
pub struct Raw<S> {
    pub stream: S,
    pub buf: Vec<u8>,
}

pub type Msg = (u8, Vec<u8>);

impl Raw<TcpStream> {
    pub async fn tcp(addr: SocketAddr) -> Raw<TcpStream> {
        Raw::new(TcpStream::connect(addr).await.expect("connect"))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub fn new(stream: S) -> Raw<S> {
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, messages: &[(u8, &[u8])]) {
        let mut w = Writer::new();
        for (tag, body) in messages {
            w.raw(*tag, body);
        }
        self.write(&w.buf).await;
    }

    /// Write; a connection the gateway already closed shows in the reads that follow.
    pub async fn write(&mut self, bytes: &[u8]) {
        if self.stream.write_all(bytes).await.is_ok() {
            let _ = self.stream.flush().await;
        }
    }

    /// The next message, or `None` when the gateway closed the connection.
    pub async fn message(&mut self) -> Option<Msg> {
        loop {
            if let Some((m, used)) = pg::message(&self.buf, 1 << 24).expect("framing") {
                let out = (m.tag, m.body.to_vec());
                self.buf.drain(..used);
                return Some(out);
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
                .await
                .expect("an answer within 30 s");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Messages up to and including ReadyForQuery, or up to a FATAL error / the close.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some((tag, body)) = self.message().await {
            let fatal = tag == b'E' && pg::error_fields(&body).severity == "FATAL";
            out.push((tag, body));
            if tag == b'Z' || fatal {
                break;
            }
        }
        out
    }

    /// StartupMessage and a cleartext password (a token). The messages up to ReadyForQuery
    /// or the refusal.
    pub async fn login(&mut self, user: &str, db: &str, password: &str) -> Vec<Msg> {
        self.login_with(user, db, &[], password).await
    }

    /// `login` with more startup parameters (`options`, `application_name`...).
    pub async fn login_with(
        &mut self,
        user: &str,
        db: &str,
        params: &[(&str, &str)],
        password: &str,
    ) -> Vec<Msg> {
        let mut all = vec![("user", user), ("database", db)];
        all.extend_from_slice(params);
        let mut w = Writer::new();
        w.startup(&all);
        self.write(&w.buf).await;
        let mut out = Vec::new();
        while let Some((tag, body)) = self.message().await {
            if tag == b'R' && body[..4] == [0, 0, 0, 3] {
                let mut w = Writer::new();
                w.password(password.as_bytes());
                self.write(&w.buf).await;
                continue;
            }
            let fatal = tag == b'E' && pg::error_fields(&body).severity == "FATAL";
            out.push((tag, body));
            if tag == b'Z' || fatal {
                break;
            }
        }
        out
    }

    /// A simple query: every column of every row joined with `|`, or (SQLSTATE, message) of
    /// the first error.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<String>, (String, String)> {
        let mut w = Writer::new();
        w.query(sql);
        self.write(&w.buf).await;
        let reply = self.until_ready().await;
        if let Some(e) = first_error(&reply) {
            return Err(e);
        }
        assert_eq!(reply.last().map(|m| m.0), Some(b'Z'), "{reply:?}");
        Ok(super::data_rows(&reply, "NULL"))
    }

    /// Bind and Execute the named statement `name` (no parameters), then Sync: the reply.
    pub async fn execute(&mut self, name: &str) -> Vec<Msg> {
        self.send(&[(b'B', &bind_body(name)), (b'E', b"\0\0\0\0\0"), (b'S', b"")])
            .await;
        self.until_ready().await
    }

    /// True when the gateway has closed the connection (reads EOF or an error) and sent
    /// nothing more before that.
    pub async fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && self.message().await.is_none()
    }
}

pub fn first_error(messages: &[Msg]) -> Option<(String, String)> {
    messages.iter().find(|(t, _)| *t == b'E').map(|(_, b)| {
        let f = pg::error_fields(b);
        (f.code, f.message)
    })
}

/// A Bind body for statement `name`: unnamed portal, no parameters, text results.
pub fn bind_body(name: &str) -> Vec<u8> {
    [&[0u8][..], name.as_bytes(), &[0], &[0, 0, 0, 0, 0, 0]].concat()
}

/// A Parse body: statement `name`, `sql`, no parameter types.
pub fn parse_body(name: &str, sql: &str) -> Vec<u8> {
    [name.as_bytes(), &[0], sql.as_bytes(), &[0], &[0, 0]].concat()
}

pub fn tags(messages: &[Msg]) -> String {
    messages.iter().map(|(t, _)| *t as char).collect()
}
