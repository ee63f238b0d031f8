//! TLS from the gateway to its servers (`backend_tls = "require" | "verify-full"`, `backend_ca`),
//! shared by every protocol front end: what a target needs ([`TlsTo`]) and the rustls client
//! configurations, built once per CA file and rebuilt by the control plane when the file
//! changes, so a data-plane worker never reads a CA file. How a protocol starts TLS on its
//! connection (PostgreSQL's SSLRequest, MySQL's SSL request packet) is the front end's.

use std::collections::HashMap;

use sumun_config::BackendTls;

/// Load the client configurations the target groups need (and reload changed CA files), off
/// the data plane: at every apply and every second.
pub(crate) fn refresh(config: &sumun_config::Config) {
    client_configs().refresh(config.target_groups.iter());
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

    /// The rustls client configuration for this mode and CA, from the cache; see
    /// [`client_configs`].
    pub fn client_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
        client_configs().get(self.mode, self.ca.as_deref())
    }
}

/// TLS client configurations for connections to servers, built once per CA file and rebuilt
/// only when the file changes, by the control plane: a data-plane worker never reads a CA
/// file (only the very first connection before the first refresh does, once).
pub struct ClientConfigs {
    map: std::sync::Mutex<HashMap<Option<std::path::PathBuf>, CachedConfig>>,
}

struct CachedConfig {
    config: std::sync::Arc<rustls::ClientConfig>,
    /// The CA file's modification time and length when it was read.
    stamp: Option<(std::time::SystemTime, u64)>,
}

pub fn client_configs() -> &'static ClientConfigs {
    static CONFIGS: std::sync::OnceLock<ClientConfigs> = std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| ClientConfigs {
        map: std::sync::Mutex::new(HashMap::new()),
    })
}

fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl ClientConfigs {
    fn get(
        &self,
        mode: BackendTls,
        ca: Option<&std::path::Path>,
    ) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
        let key = match mode {
            BackendTls::VerifyFull => Some(
                ca.ok_or_else(|| String::from("verify-full needs tls_ca"))?
                    .to_path_buf(),
            ),
            _ => None,
        };
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.config.clone());
        }
        let built = build_client_config(key.as_deref())?;
        self.lock().insert(key, built.clone_shallow());
        Ok(built.config)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<std::path::PathBuf>, CachedConfig>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Build the configurations `groups` need that are missing, and rebuild those whose CA
    /// file changed (a rotated CA verifies the next connection); forget unused ones. Run by the
    /// control plane at every apply and every second.
    pub fn refresh<'a>(&self, groups: impl Iterator<Item = &'a sumun_config::TargetGroup>) {
        let wanted: std::collections::HashSet<Option<std::path::PathBuf>> = groups
            .filter(|g| g.backend_tls != BackendTls::Off)
            .map(|g| match g.backend_tls {
                BackendTls::VerifyFull => g.backend_ca.clone(),
                _ => None,
            })
            .collect();
        let stale: Vec<Option<std::path::PathBuf>> = {
            let mut map = self.lock();
            map.retain(|k, _| wanted.contains(k));
            wanted
                .iter()
                .filter(|k| match (map.get(*k), k) {
                    (None, _) => true,
                    (Some(c), Some(path)) => file_stamp(path) != c.stamp,
                    (Some(_), None) => false,
                })
                .cloned()
                .collect()
        };
        for key in stale {
            match build_client_config(key.as_deref()) {
                Ok(built) => {
                    if let Some(path) = &key {
                        tracing::debug!(ca = %path.display(), "backend TLS CA loaded");
                    }
                    self.lock().insert(key, built);
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot load a backend TLS CA; keeping the previous one");
                }
            }
        }
    }
}

impl CachedConfig {
    fn clone_shallow(&self) -> CachedConfig {
        CachedConfig {
            config: self.config.clone(),
            stamp: self.stamp,
        }
    }
}

fn build_client_config(ca: Option<&std::path::Path>) -> Result<CachedConfig, String> {
    use std::sync::Arc;
    let provider = Arc::new(crate::tls::provider_for(
        sumun_config::TlsPolicy::Tls12Compat,
    ));
    let tls_err = |e: rustls::Error| e.to_string();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let (config, stamp) = match ca {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let stamp = file_stamp(path);
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                roots.add(cert).map_err(tls_err)?;
            }
            (
                builder.with_root_certificates(roots).with_no_client_auth(),
                stamp,
            )
        }
        None => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth(),
            None,
        ),
    };
    Ok(CachedConfig {
        config: Arc::new(config),
        stamp,
    })
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
