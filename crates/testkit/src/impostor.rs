//! [`Impostor`]: a fake PostgreSQL server for testing what a client (the gateway) trusts. It
//! speaks just enough of the v3 protocol to take a login and answer queries, and it cheats in
//! the way a test chooses ([`Trick`]): it asks for the password in cleartext or as md5, starts
//! SCRAM and then skips or forges the proof that it knows the password, or lets the client in
//! without asking at all. It records everything the client sent, so a test can assert that no
//! password and no query ever reached it.
//!
//! It does not know any password: a real client that checks the server must refuse it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the impostor pretends to log the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trick {
    /// AuthenticationCleartextPassword, then in.
    Cleartext,
    /// AuthenticationMD5Password (salt 1 2 3 4), then in.
    Md5,
    /// SCRAM-SHA-256 up to the client's proof, then AuthenticationOk without the
    /// server-final message (no proof of knowing the password).
    ScramSkipFinal,
    /// SCRAM-SHA-256 with a server-final message whose signature is made up.
    ScramForgedFinal,
    /// AuthenticationOk at once (a `trust` server, or someone pretending to be one).
    Trust,
    /// ReadyForQuery without any authentication message at all.
    NoAuth,
}

/// What one connection sent the impostor.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The body of every PasswordMessage/SASL message the client sent, in order.
    pub auth_messages: Vec<Vec<u8>>,
    /// The text of every Query the client sent after it was let in.
    pub queries: Vec<String>,
    /// Every message tag received after the login.
    pub session_tags: Vec<u8>,
}

/// The impostor, listening on `127.0.0.1:<free port>` until dropped.
#[derive(Debug)]
pub struct Impostor {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    acceptor: JoinHandle<()>,
}

impl Impostor {
    /// Start it on the current tokio runtime.
    pub async fn start(trick: Trick) -> std::io::Result<Impostor> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut conn = Conn {
                        stream,
                        buf: Vec::new(),
                    };
                    let index = {
                        let mut all = log.lock().unwrap_or_else(|p| p.into_inner());
                        all.push(Seen::default());
                        all.len() - 1
                    };
                    let _ = conn.serve(trick, &log, index).await;
                });
            }
        });
        Ok(Impostor {
            addr,
            seen,
            acceptor,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What every connection so far sent.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True when any connection sent `needle` anywhere in an authentication message.
    pub fn received(&self, needle: &[u8]) -> bool {
        self.seen().iter().any(|s| {
            s.auth_messages
                .iter()
                .any(|m| m.windows(needle.len().max(1)).any(|w| w == needle))
        })
    }

    /// Every query any connection sent after being let in.
    pub fn queries(&self) -> Vec<String> {
        self.seen().into_iter().flat_map(|s| s.queries).collect()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn note(log: &Log, index: usize, f: impl FnOnce(&mut Seen)) {
    let mut all = log.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = all.get_mut(index) {
        f(s);
    }
}

impl Conn {
    async fn fill(&mut self, n: usize) -> std::io::Result<()> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let got = self.stream.read(&mut chunk).await?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    /// A startup-phase packet (length-prefixed, no tag).
    async fn untagged(&mut self) -> std::io::Result<Vec<u8>> {
        self.fill(4).await?;
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = (len as usize).clamp(4, 1 << 20);
        self.fill(len).await?;
        let body = self.buf[4..len].to_vec();
        self.buf.drain(..len);
        Ok(body)
    }

    async fn message(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        self.fill(5).await?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let total = (len as usize).clamp(4, 1 << 24) + 1;
        self.fill(total).await?;
        let out = (self.buf[0], self.buf[5..total].to_vec());
        self.buf.drain(..total);
        Ok(out)
    }

    async fn send(&mut self, tag: u8, body: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(body.len() + 5);
        out.push(tag);
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        self.stream.write_all(&out).await
    }

    async fn auth(&mut self, code: u32, data: &[u8]) -> std::io::Result<()> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(data);
        self.send(b'R', &body).await
    }

    async fn serve(&mut self, trick: Trick, log: &Log, index: usize) -> std::io::Result<()> {
        // StartupMessage, after refusing any SSLRequest/GSSENCRequest.
        loop {
            let body = self.untagged().await?;
            let code = body
                .get(..4)
                .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
            if code == 80_877_103 || code == 80_877_104 {
                self.stream.write_all(b"N").await?;
                continue;
            }
            break;
        }
        match trick {
            Trick::Cleartext => {
                self.auth(3, &[]).await?;
                let (_, body) = self.message().await?;
                note(log, index, |s| s.auth_messages.push(body));
                self.auth(0, &[]).await?;
            }
            Trick::Md5 => {
                self.auth(5, &[1, 2, 3, 4]).await?;
                let (_, body) = self.message().await?;
                note(log, index, |s| s.auth_messages.push(body));
                self.auth(0, &[]).await?;
            }
            Trick::ScramSkipFinal | Trick::ScramForgedFinal => {
                self.auth(10, b"SCRAM-SHA-256\0\0").await?;
                let (_, first) = self.message().await?;
                note(log, index, |s| s.auth_messages.push(first.clone()));
                // SASLInitialResponse: mechanism\0, i32 length, client-first-message.
                let text = String::from_utf8_lossy(&first).into_owned();
                let nonce = text
                    .split(',')
                    .find_map(|p| p.strip_prefix("r="))
                    .unwrap_or("")
                    .trim_end_matches('\0')
                    .to_string();
                let server_first = format!("r={nonce}impostor,s=c2FsdHNhbHRzYWx0,i=4096");
                self.auth(11, server_first.as_bytes()).await?;
                let (_, fin) = self.message().await?;
                note(log, index, |s| s.auth_messages.push(fin));
                if trick == Trick::ScramForgedFinal {
                    self.auth(12, b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                        .await?;
                }
                self.auth(0, &[]).await?;
            }
            Trick::Trust => self.auth(0, &[]).await?,
            Trick::NoAuth => {}
        }
        for (k, v) in [
            ("server_version", "15.0"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("standard_conforming_strings", "on"),
            ("integer_datetimes", "on"),
        ] {
            self.send(b'S', format!("{k}\0{v}\0").as_bytes()).await?;
        }
        self.send(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]).await?;
        self.send(b'Z', b"I").await?;
        loop {
            let (tag, body) = self.message().await?;
            note(log, index, |s| s.session_tags.push(tag));
            match tag {
                b'X' => return Ok(()),
                b'Q' => {
                    let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body))
                        .into_owned();
                    note(log, index, |s| s.queries.push(sql));
                    // One text column "impostor" with one row.
                    let mut desc = 1u16.to_be_bytes().to_vec();
                    desc.extend_from_slice(b"impostor\0");
                    desc.extend_from_slice(&0u32.to_be_bytes()); // table
                    desc.extend_from_slice(&0u16.to_be_bytes()); // column
                    desc.extend_from_slice(&25u32.to_be_bytes()); // text
                    desc.extend_from_slice(&(-1i16).to_be_bytes()); // length
                    desc.extend_from_slice(&(-1i32).to_be_bytes()); // modifier
                    desc.extend_from_slice(&0u16.to_be_bytes()); // text format
                    self.send(b'T', &desc).await?;
                    let mut row = 1u16.to_be_bytes().to_vec();
                    row.extend_from_slice(&8u32.to_be_bytes());
                    row.extend_from_slice(b"impostor");
                    self.send(b'D', &row).await?;
                    self.send(b'C', b"SELECT 1\0").await?;
                    self.send(b'Z', b"I").await?;
                }
                b'S' => self.send(b'Z', b"I").await?,
                _ => {}
            }
        }
    }
}
