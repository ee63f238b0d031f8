//! TLS termination with rustls and the aws-lc-rs provider. A [`TlsContext`] is one `[tls.NAME]`
//! section made live: a rustls `ServerConfig` built for its policy, swapped atomically when the
//! certificate, key or client CA files change on disk (polled), so renewals take effect for new
//! handshakes while established sessions continue untouched.
//!
//! Policies: `tls13-pq` is TLS 1.3 only with X25519MLKEM768 preferred, then X25519, then
//! secp256r1; `tls12-compat` adds TLS 1.2 restricted to ECDHE suites with AEAD ciphers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs as provider;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ProtocolVersion, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sumun_config::{TlsPolicy, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot parse {path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("client CA {path} is not usable: {source}")]
    ClientCa {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("certificate and key of tls config '{name}' do not form a usable pair: {source}")]
    Rustls { name: String, source: rustls::Error },
}

/// One live `[tls.NAME]` section.
pub struct TlsContext {
    pub settings: TlsSettings,
    config: ArcSwap<ServerConfig>,
    /// The same with a protocol's ALPN identifier (`postgresql`...), made on first use and
    /// dropped when the certificate changes.
    with_alpn: Mutex<Vec<(&'static [u8], Arc<ServerConfig>)>>,
    /// SHA-256 of the served leaf certificate, for SCRAM `tls-server-end-point` binding.
    endpoint: Mutex<EndPoint>,
    /// Modification times of the files the current config was built from.
    stamps: Mutex<Vec<Option<SystemTime>>>,
    expiry_days: Mutex<f64>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    pub fn load(settings: &TlsSettings) -> Result<TlsContext, TlsError> {
        let stamps = stamps(settings);
        let (config, expiry, endpoint) = build(settings)?;
        Ok(TlsContext {
            settings: settings.clone(),
            endpoint: Mutex::new(endpoint),
            with_alpn: Mutex::new(Vec::new()),
            config: ArcSwap::from_pointee(config),
            stamps: Mutex::new(stamps),
            expiry_days: Mutex::new(expiry),
        })
    }

    /// The config new handshakes use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// The config for clients of a protocol with an ALPN identifier (PostgreSQL's
    /// `postgresql`: required for its direct TLS, accepted after an SSLRequest; clients that
    /// send no ALPN are still served).
    pub fn config_with_alpn(&self, alpn: &'static [u8]) -> Arc<ServerConfig> {
        let mut made = self.with_alpn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, config)) = made.iter().find(|(a, _)| *a == alpn) {
            return config.clone();
        }
        let config = Arc::new(with_alpn(&self.config.load(), alpn));
        made.push((alpn, config.clone()));
        config
    }

    /// The channel-binding data (`tls-server-end-point`) of the certificate now served: its
    /// hash with the hash function of its signature (SHA-256 for MD5, SHA-1 and the rest), as
    /// RFC 5929 prescribes and libpq computes it.
    pub fn endpoint_hash(&self) -> EndPoint {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn expiry_days(&self) -> f64 {
        *self
            .expiry_days
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Rebuild when any file changed since the last build. Returns `Ok(true)` when a new
    /// certificate was installed; on error the previous config stays in service.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.settings);
        let mut seen = self
            .stamps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if *seen == now {
            return Ok(false);
        }
        // Remember the stamps even on failure so a broken file is reported once, not every poll;
        // the next write to it changes the stamp again and triggers another attempt.
        *seen = now;
        let (config, expiry, endpoint) = build(&self.settings)?;
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = endpoint;
        let mut made = self.with_alpn.lock().unwrap_or_else(|p| p.into_inner());
        self.config.store(Arc::new(config));
        made.clear();
        drop(made);
        *self
            .expiry_days
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = expiry;
        Ok(true)
    }
}

fn stamps(settings: &TlsSettings) -> Vec<Option<SystemTime>> {
    let mut paths: Vec<&Path> = vec![&settings.cert, &settings.key];
    if let Some(ca) = &settings.client_ca {
        paths.push(ca);
    }
    paths
        .into_iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// The provider for a policy: the aws-lc-rs suites and groups, narrowed.
pub fn provider_for(policy: TlsPolicy) -> CryptoProvider {
    let mut base = provider::default_provider();
    base.kx_groups = vec![
        provider::kx_group::X25519MLKEM768,
        provider::kx_group::X25519,
        provider::kx_group::SECP256R1,
        provider::kx_group::SECP384R1,
    ];
    match policy {
        TlsPolicy::Tls13Pq => {
            base.kx_groups.truncate(3);
            base.cipher_suites
                .retain(|s| s.version().version == ProtocolVersion::TLSv1_3);
        }
        TlsPolicy::Tls12Compat => {
            // aws-lc-rs' TLS 1.2 suites are all ECDHE with AES-GCM or ChaCha20-Poly1305: forward
            // secret and AEAD. Keep that true if the provider's list ever grows.
            base.cipher_suites.retain(|s| {
                let name = format!("{:?}", s.suite());
                s.version().version == ProtocolVersion::TLSv1_3
                    || (name.contains("ECDHE")
                        && (name.contains("GCM") || name.contains("CHACHA20")))
            });
        }
    }
    base
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn with_alpn(config: &ServerConfig, protocol: &[u8]) -> ServerConfig {
    let mut c = config.clone();
    c.alpn_protocols = vec![protocol.to_vec()];
    c
}

/// What a config build produces: the rustls config, days until the certificate expires, and the
/// SHA-256 of the leaf certificate (SCRAM channel binding `tls-server-end-point`).
type Built = (ServerConfig, f64, EndPoint);

/// A `tls-server-end-point` hash (SHA-256, -384 or -512 of the leaf certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndPoint {
    bytes: [u8; 64],
    len: u8,
}

impl EndPoint {
    pub fn of(cert_der: &[u8]) -> EndPoint {
        use aws_lc_rs::digest;
        let alg = match sumun_pki::end_point_hash(cert_der) {
            Ok(sumun_pki::EndPointHash::Sha384) => &digest::SHA384,
            Ok(sumun_pki::EndPointHash::Sha512) => &digest::SHA512,
            _ => &digest::SHA256,
        };
        let d = digest::digest(alg, cert_der);
        let mut bytes = [0u8; 64];
        bytes[..d.as_ref().len()].copy_from_slice(d.as_ref());
        EndPoint {
            bytes,
            len: d.as_ref().len() as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

fn build(settings: &TlsSettings) -> Result<Built, TlsError> {
    let certs = read_certs(&settings.cert)?;
    let key_pem = read_file(&settings.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Pem {
        path: settings.key.clone(),
        source,
    })?;
    let expiry = sumun_pki::days_left(&certs[0]).unwrap_or(f64::NAN);
    let rustls_err = |source| TlsError::Rustls {
        name: settings.name.clone(),
        source,
    };
    let provider = Arc::new(provider_for(settings.policy));
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.policy {
        TlsPolicy::Tls13Pq => &[&rustls::version::TLS13],
        TlsPolicy::Tls12Compat => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(rustls_err)?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(ca_path)? {
                roots.add(ca).map_err(rustls_err)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsError::ClientCa {
                    path: ca_path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let endpoint = EndPoint::of(certs[0].as_ref());
    let mut config = builder.with_single_cert(certs, key).map_err(rustls_err)?;
    // Session tickets let reconnecting clients skip the full handshake (cheap connection storms).
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    config.ticketer = provider::Ticketer::new().map_err(rustls_err)?;
    Ok((config, expiry, endpoint))
}

/// Metric labels for a finished handshake.
pub fn handshake_labels(conn: &rustls::ServerConnection) -> (&'static str, String) {
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    };
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_else(|| "none".to_string());
    (version, group)
}
