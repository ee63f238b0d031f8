//! Certificates for development and tests: a dev CA, server certificates for local names and
//! client certificates for mTLS, plus reading a certificate's expiry for the
//! `sumun_certificate_expiry_days` metric. Nothing here touches the network.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path} already exists (use --force to replace it)")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse certificate: {0}")]
    Parse(String),
}

/// A certificate and its private key, PEM encoded. `Debug` never shows the key.
pub struct Pem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pem")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A dev CA and a server certificate it signed.
pub struct DevPki {
    ca: Pem,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    server: Pem,
}

impl fmt::Debug for DevPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevPki").finish_non_exhaustive()
    }
}

/// Where `write` put the files.
#[derive(Debug)]
pub struct WrittenPaths {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server: PathBuf,
    pub server_key: PathBuf,
}

impl fmt::Display for WrittenPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "CA certificate:     {}", self.ca.display())?;
        writeln!(f, "CA key:             {}", self.ca_key.display())?;
        writeln!(f, "server certificate: {}", self.server.display())?;
        write!(f, "server key:         {}", self.server_key.display())
    }
}

impl DevPki {
    /// A new CA (valid 10 years) and a server certificate valid `days` days for `hosts` plus
    /// localhost, 127.0.0.1 and ::1.
    pub fn generate(hosts: &[String], days: u32) -> Result<DevPki, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Sumun dev CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = now - Duration::hours(1);
        ca_params.not_after = now + Duration::days(3650);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = Pem {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };

        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for h in hosts {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(i64::from(days));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        let server = Pem {
            cert_pem: format!("{}{}", cert.pem(), ca.cert_pem),
            key_pem: key.serialize_pem(),
        };
        Ok(DevPki {
            ca,
            ca_cert,
            ca_key,
            server,
        })
    }

    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    pub fn server(&self) -> &Pem {
        &self.server
    }

    /// A client certificate (client-auth usage) with this common name, signed by the CA.
    pub fn issue_client_cert(&self, common_name: &str) -> Result<Pem, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(30);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok(Pem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Write `ca.pem`, `ca-key.pem`, `server.pem` (leaf then CA) and `server-key.pem` into
    /// `dir`; key files are created with mode 0600.
    pub fn write(&self, dir: &Path, overwrite: bool) -> Result<WrittenPaths, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let paths = WrittenPaths {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        };
        let files = [
            (&paths.ca, &self.ca.cert_pem, false),
            (&paths.ca_key, &self.ca.key_pem, true),
            (&paths.server, &self.server.cert_pem, false),
            (&paths.server_key, &self.server.key_pem, true),
        ];
        if !overwrite {
            if let Some((p, _, _)) = files.iter().find(|(p, _, _)| p.exists()) {
                return Err(PkiError::Exists { path: (*p).clone() });
            }
        }
        for (path, body, secret) in files {
            write_file(path, body, secret)?;
        }
        Ok(paths)
    }
}

fn write_file(path: &Path, body: &str, secret: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Write beside and rename, so a reader polling the file never sees half a certificate.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    f.write_all(body.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Days (fractional) until the DER certificate expires; negative when already expired.
pub fn days_left(der: &[u8]) -> Result<f64, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let not_after = cert.validity().not_after.timestamp();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Ok((not_after - now) as f64 / 86_400.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certificate_expiry_matches_the_requested_validity() {
        let pki = DevPki::generate(&["db.internal".into()], 7).expect("generate");
        let der =
            rustls_pki_types::pem::PemObject::from_pem_slice(pki.server().cert_pem.as_bytes())
                .map(|c: rustls_pki_types::CertificateDer<'static>| c)
                .expect("pem");
        let days = days_left(&der).expect("parse");
        assert!((6.9..=7.01).contains(&days), "{days}");
        assert!(!format!("{pki:?}").contains("PRIVATE"));
    }
}
