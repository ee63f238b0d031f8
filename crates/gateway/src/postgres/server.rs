//! One backend connection: connect, log in with a vault credential (trust, cleartext, md5 or
//! SCRAM-SHA-256), and read the messages the gateway itself consumes (startup, resets, session
//! parameter `SET`s). The client never sees the credential or anything of the login.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use sumun_vault::SecretBytes;
use sumun_wire::postgres::{self as pg, auth, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::ServerStream;
use sumun_config::BackendTls;

/// The largest message the gateway reads whole from a server during login or a reset.
const MAX_CONTROL_MESSAGE: usize = 1 << 20;

pub struct ServerConn {
    pub stream: ServerStream,
    pub addr: SocketAddr,
    pub process_id: u32,
    pub secret_key: u32,
    /// Session parameters as the server last reported them (ParameterStatus), plus those the
    /// gateway set on it.
    pub params: HashMap<String, String>,
    pub created: Instant,
    pub last_used: Instant,
    /// Bytes read from the server but not yet consumed.
    pub pending: Vec<u8>,
    /// Set when the connection cannot be reused (protocol error, failed reset).
    pub broken: bool,
    /// The startup parameters of the last client whose values were applied here; 0 when
    /// unknown. Equal stamps mean no `SET` is needed.
    pub params_stamp: u64,
    /// What the server reported at login (ParameterStatus, sorted, without
    /// `application_name`): shown to clients at their login, before any `SET`.
    pub reported: Vec<(String, String)>,
    /// How the server reads string literals (its `standard_conforming_strings`), for the SQL
    /// analysis and for masking literals in the audit log.
    pub dialect: sumun_wire::sql::Dialect,
    /// Server-side names of prepared statements that exist on this connection.
    pub prepared: std::collections::HashSet<u64>,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("addr", &self.addr)
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connection to the server was lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("server sent a malformed message: {0}")]
    Protocol(String),
    /// The server answered with an error; `code` is its SQLSTATE.
    #[error("server refused: {message} (SQLSTATE {code})")]
    Refused {
        severity: String,
        code: String,
        message: String,
    },
    #[error("server asks for an authentication method the gateway does not speak ({0})")]
    UnsupportedAuth(u32),
    #[error(
        "no backend credential is configured for this user and the server asks for a password"
    )]
    NoPassword,
    #[error("TLS to the server: {0}")]
    Tls(String),
}

impl ServerError {
    /// True when the failure says the password was wrong (try the previous version).
    pub fn is_bad_password(&self) -> bool {
        matches!(self, ServerError::Refused { code, .. } if code == "28P01")
    }

    /// True when the target itself failed (not the login), so another target may do better.
    pub fn is_target_failure(&self) -> bool {
        matches!(
            self,
            ServerError::Connect { .. }
                | ServerError::Timeout(_)
                | ServerError::Io(_)
                | ServerError::Tls(_)
        ) || matches!(self, ServerError::Refused { code, .. } if code.starts_with("57P") || code == "53300")
    }
}

/// How to encrypt the connection to a server.
#[derive(Debug, Clone)]
pub struct TlsTo {
    pub mode: BackendTls,
    pub ca: Option<std::path::PathBuf>,
    /// The name the certificate must carry (`verify-full`): the target's host.
    pub server_name: String,
}

impl TlsTo {
    /// For a target group's settings and one target address (`host:port`).
    pub fn for_target(group: &sumun_config::TargetGroup, address: &str) -> Option<TlsTo> {
        if group.backend_tls == BackendTls::Off {
            return None;
        }
        let host = match address.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => address.rsplit_once(':').map_or(address, |(h, _)| h),
        };
        Some(TlsTo {
            mode: group.backend_tls,
            ca: group.backend_ca.clone(),
            server_name: host.to_string(),
        })
    }

    fn client_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, ServerError> {
        use std::sync::Arc;
        let provider = Arc::new(crate::tls::provider_for(
            sumun_config::TlsPolicy::Tls12Compat,
        ));
        let tls_err = |e: rustls::Error| ServerError::Tls(e.to_string());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let config = match self.mode {
            BackendTls::VerifyFull => {
                use rustls_pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                let path = self
                    .ca
                    .as_ref()
                    .ok_or_else(|| ServerError::Tls("verify-full needs tls_ca".into()))?;
                let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| {
                    ServerError::Tls(format!("cannot read {}: {e}", path.display()))
                })?;
                for cert in certs {
                    let cert = cert.map_err(|e| {
                        ServerError::Tls(format!("cannot read {}: {e}", path.display()))
                    })?;
                    roots.add(cert).map_err(tls_err)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// `tls = "require"`: encrypt without checking who the server is (libpq `sslmode=require`).
#[derive(Debug)]
struct AcceptAnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// SSLRequest, then a TLS handshake when the server agrees.
async fn start_tls(mut tcp: TcpStream, tls: &TlsTo) -> Result<ServerStream, ServerError> {
    let mut req = Vec::with_capacity(8);
    req.extend_from_slice(&8u32.to_be_bytes());
    req.extend_from_slice(&pg::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(ServerError::Tls(
            "the server does not accept TLS (it answered the SSLRequest with N)".into(),
        ));
    }
    let name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())
        .map_err(|e| ServerError::Tls(format!("bad server name {}: {e}", tls.server_name)))?;
    let connector = tokio_rustls::TlsConnector::from(tls.client_config()?);
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(ServerStream::Tls(Box::new(stream)))
}

/// Who to log in as.
pub struct Login<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub password: Option<&'a SecretBytes>,
}

impl ServerConn {
    pub async fn connect(
        addr: SocketAddr,
        login: &Login<'_>,
        timeout: std::time::Duration,
        proxy_header: Option<&[u8]>,
        tls: Option<&TlsTo>,
    ) -> Result<ServerConn, ServerError> {
        let mut tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ServerError::Timeout(addr)),
            Ok(Err(source)) => return Err(ServerError::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let opened = tokio::time::timeout(timeout, async {
            if let Some(h) = proxy_header {
                tcp.write_all(h).await?;
            }
            match tls {
                None => Ok(ServerStream::Plain(tcp)),
                Some(t) => start_tls(tcp, t).await,
            }
        })
        .await;
        let stream = match opened {
            Err(_) => return Err(ServerError::Timeout(addr)),
            Ok(r) => r?,
        };
        let now = Instant::now();
        let mut conn = ServerConn {
            stream,
            addr,
            process_id: 0,
            secret_key: 0,
            params: HashMap::new(),
            created: now,
            last_used: now,
            pending: Vec::with_capacity(1024),
            broken: false,
            params_stamp: 0,
            reported: Vec::new(),
            dialect: sumun_wire::sql::Dialect::STANDARD,
            prepared: Default::default(),
        };
        match tokio::time::timeout(timeout, conn.login(login)).await {
            Err(_) => Err(ServerError::Timeout(addr)),
            Ok(r) => r.map(|()| conn),
        }
    }

    async fn login(&mut self, login: &Login<'_>) -> Result<(), ServerError> {
        let mut w = Writer::new();
        w.startup(&[
            ("user", login.user),
            ("database", login.database),
            ("application_name", "sumun"),
        ]);
        self.stream.write_all(&w.buf).await?;
        let mut scram: Option<sumun_vault::scram::ScramClient> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(ServerError::Protocol("short authentication request".into()));
                    }
                    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let data = &body[4..];
                    let mut w = Writer::new();
                    match code {
                        auth::OK => continue,
                        auth::CLEARTEXT => {
                            let pw = login.password.ok_or(ServerError::NoPassword)?;
                            w.password(pw.expose());
                        }
                        auth::MD5 => {
                            let pw = login.password.ok_or(ServerError::NoPassword)?;
                            if data.len() < 4 {
                                return Err(ServerError::Protocol(
                                    "md5 request without salt".into(),
                                ));
                            }
                            w.password(
                                md5_password(login.user, pw.expose(), &data[..4]).as_bytes(),
                            );
                        }
                        auth::SASL => {
                            let pw = login.password.ok_or(ServerError::NoPassword)?;
                            let _ = pw;
                            let offers_scram =
                                data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                            if !offers_scram {
                                return Err(ServerError::UnsupportedAuth(code));
                            }
                            let client = sumun_vault::scram::ScramClient::new()
                                .map_err(|e| ServerError::Protocol(e.to_string()))?;
                            w.sasl_initial_response(
                                "SCRAM-SHA-256",
                                client.client_first().as_bytes(),
                            );
                            scram = Some(client);
                        }
                        auth::SASL_CONTINUE => {
                            let (Some(client), Some(pw)) = (scram.as_mut(), login.password) else {
                                return Err(ServerError::Protocol(
                                    "unexpected SASL continue".into(),
                                ));
                            };
                            let server_first = std::str::from_utf8(data).map_err(|_| {
                                ServerError::Protocol("SASL data is not UTF-8".into())
                            })?;
                            let fin = client
                                .client_final(server_first, pw.expose())
                                .map_err(|e| ServerError::Protocol(format!("SCRAM: {e}")))?;
                            w.sasl_response(fin.as_bytes());
                        }
                        auth::SASL_FINAL => {
                            let Some(client) = scram.as_ref() else {
                                return Err(ServerError::Protocol("unexpected SASL final".into()));
                            };
                            let server_final = std::str::from_utf8(data).map_err(|_| {
                                ServerError::Protocol("SASL data is not UTF-8".into())
                            })?;
                            client.verify_server_final(server_final).map_err(|_| {
                                ServerError::Protocol(
                                    "the server's SCRAM signature is wrong: it does not know the password (a server in the middle?)".into(),
                                )
                            })?;
                            continue;
                        }
                        other => return Err(ServerError::UnsupportedAuth(other)),
                    }
                    self.stream.write_all(&w.buf).await?;
                }
                b'S' => self.note_parameter(&body),
                b'K' if body.len() == 8 => {
                    self.process_id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    self.secret_key = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'E' => return Err(refused(&body)),
                b'N' => {}
                b'Z' => {
                    let mut reported: Vec<(String, String)> = self
                        .params
                        .iter()
                        .filter(|(k, _)| k.as_str() != "application_name")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    reported.sort();
                    self.reported = reported;
                    return Ok(());
                }
                other => {
                    return Err(ServerError::Protocol(format!(
                        "unexpected message '{}' during login",
                        pg::Tag(other)
                    )))
                }
            }
        }
    }

    pub fn note_parameter(&mut self, body: &[u8]) {
        if let Some((name, rest)) = pg::cstr(body) {
            if let Some((value, _)) = pg::cstr(rest) {
                if name == b"standard_conforming_strings" {
                    self.dialect.standard_conforming_strings = value != b"off";
                }
                self.params.insert(
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
    }

    /// Read one whole message (for login, resets and SETs; the relay reads in bulk instead).
    pub async fn read_message(&mut self) -> Result<(u8, Vec<u8>), ServerError> {
        loop {
            match pg::message(&self.pending, MAX_CONTROL_MESSAGE)
                .map_err(|e| ServerError::Protocol(e.to_string()))?
            {
                Some((m, used)) => {
                    let out = (m.tag, m.body.to_vec());
                    self.pending.drain(..used);
                    return Ok(out);
                }
                None => {
                    let n =
                        crate::relay::read_append(&mut self.stream, &mut self.pending, 64 * 1024)
                            .await?;
                    if n == 0 {
                        return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// Run `sql` as a simple query and wait for ReadyForQuery; the first error is returned.
    /// Parameter changes it causes are noted.
    pub async fn simple(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut w = Writer::new();
        w.query(sql);
        self.stream.write_all(&w.buf).await?;
        let mut error = None;
        let mut rows = Vec::new();
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'S' => self.note_parameter(&body),
                b'E' => error = Some(refused(&body)),
                b'D' => rows.push(data_row(&body)),
                b'Z' => {
                    return match error {
                        Some(e) => Err(e),
                        None if body.first() == Some(&b'I') => Ok(rows),
                        None => Err(ServerError::Protocol(
                            "server is inside a transaction after a control query".into(),
                        )),
                    }
                }
                _ => {}
            }
        }
    }

    pub async fn terminate(mut self) {
        let mut w = Writer::new();
        w.terminate();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let _ = self.stream.write_all(&w.buf).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    if body.len() < 2 {
        return out;
    }
    let n = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    for _ in 0..n {
        if at + 4 > body.len() {
            break;
        }
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let end = (at + len as usize).min(body.len());
        out.push(Some(String::from_utf8_lossy(&body[at..end]).into_owned()));
        at = end;
    }
    out
}

fn refused(body: &[u8]) -> ServerError {
    let f = pg::error_fields(body);
    ServerError::Refused {
        severity: f.severity,
        code: f.code,
        message: f.message,
    }
}

/// `md5` + hex(md5(hex(md5(password + user)) + salt)), PostgreSQL's md5 password response.
fn md5_password(user: &str, password: &[u8], salt: &[u8]) -> String {
    let mut inner = Vec::with_capacity(password.len() + user.len());
    inner.extend_from_slice(password);
    inner.extend_from_slice(user.as_bytes());
    let first = hex(&md5::compute(&inner));
    zeroize_vec(&mut inner);
    let mut outer = first.into_bytes();
    outer.extend_from_slice(salt);
    format!("md5{}", hex(&md5::compute(&outer)))
}

fn zeroize_vec(v: &mut [u8]) {
    for b in v.iter_mut() {
        *b = 0;
    }
}

fn hex(d: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// MD5 (RFC 1321), only for PostgreSQL's legacy `md5` password exchange with servers that still
/// use it. Not used for anything else.
mod md5 {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];

    pub fn compute(data: &[u8]) -> [u8; 16] {
        let k: Vec<u32> = (0..64)
            .map(|i: u32| ((f64::from(i) + 1.0).sin().abs() * 4_294_967_296.0) as u32)
            .collect();
        let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
        let mut msg = data.to_vec();
        let bit_len = (data.len() as u64).wrapping_mul(8);
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bit_len.to_le_bytes());
        for chunk in msg.chunks_exact(64) {
            let m: Vec<u32> = chunk
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            let (mut a, mut b, mut c, mut d) = (h[0], h[1], h[2], h[3]);
            for i in 0..64 {
                let (f, g) = match i / 16 {
                    0 => ((b & c) | (!b & d), i),
                    1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                    2 => (b ^ c ^ d, (3 * i + 5) % 16),
                    _ => (c ^ (b | !d), (7 * i) % 16),
                };
                let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
                a = d;
                d = c;
                c = b;
                b = b.wrapping_add(f.rotate_left(S[i]));
            }
            h[0] = h[0].wrapping_add(a);
            h[1] = h[1].wrapping_add(b);
            h[2] = h[2].wrapping_add(c);
            h[3] = h[3].wrapping_add(d);
        }
        let mut out = [0u8; 16];
        for (i, v) in h.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn rfc1321_vectors() {
            let hex = |d: [u8; 16]| super::super::hex(&d);
            assert_eq!(hex(super::compute(b"")), "d41d8cd98f00b204e9800998ecf8427e");
            assert_eq!(
                hex(super::compute(b"abc")),
                "900150983cd24fb0d6963f7d28e17f72"
            );
            assert_eq!(
                hex(super::compute(
                    b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
                )),
                "57edf4a22be3c955ac49da2e2107b67a"
            );
        }
    }
}
