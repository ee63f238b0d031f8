//! Certificates for development and tests: a dev CA, server certificates for local names and
//! client certificates for mTLS, plus reading a certificate's expiry for the
//! `sumun_certificate_expiry_days` metric. Nothing here touches the network, and this is not a
//! production CA: there is no revocation, no CSR handling and no loading of an existing CA key.
//!
//! The certificates follow RFC 5280 as strict verifiers read it (`openssl verify -x509_strict`,
//! Python's `cryptography` used by TLS scanners such as sslyze): random positive serial numbers,
//! subject and authority key identifiers, a critical CA constraint with a path length of 0 (the
//! CA signs leaves only), key usages on every certificate and an extended key usage on leaves.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// How long the dev CA itself is valid: long enough that only the leaves ever need renewing.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of client certificates from [`DevPki::issue_client_cert`].
const CLIENT_VALIDITY_DAYS: i64 = 30;
/// Certificates start an hour in the past so that a peer whose clock lags a little accepts them.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// Random octets in a serial number: 128 bits, well within RFC 5280's limit of 20 octets.
const SERIAL_LEN: usize = 16;

/// Names every dev server certificate carries, so local clients work without `--host`.
pub const DEFAULT_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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
    #[error("cannot read PEM certificate: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("cannot parse certificate: {0}")]
    Parse(#[from] x509_parser::error::X509Error),
    #[error("certificate has trailing data after its DER encoding")]
    TrailingData,
    #[error("certificate validity ends before it begins")]
    EmptyValidity,
    #[error("cannot generate certificate: the system random number generator failed")]
    Random,
}

/// A certificate and its private key, PEM encoded. `Debug` never shows the key.
#[derive(Clone)]
pub struct Pem {
    /// The certificate, followed by its issuing CA for server certificates.
    pub cert_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What a server certificate is issued for and how long it lives.
#[derive(Debug, Clone)]
pub struct ServerCertSpec {
    /// Extra DNS names or IP addresses; [`DEFAULT_SERVER_NAMES`] are always added.
    pub hosts: Vec<String>,
    pub not_before: OffsetDateTime,
    /// Tests set this in the past (expired) or soon (about to expire).
    pub not_after: OffsetDateTime,
}

impl ServerCertSpec {
    /// Valid from an hour ago for `days` days from now.
    pub fn valid_for_days(hosts: &[String], days: u32) -> ServerCertSpec {
        let now = OffsetDateTime::now_utc();
        ServerCertSpec {
            hosts: hosts.to_vec(),
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// A dev CA and a server certificate it signed. The CA stays in memory so that more server
/// and client certificates can be issued from it.
pub struct DevPki {
    ca: Pem,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    server: Pem,
}

impl fmt::Debug for DevPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevPki")
            .field("ca_cert_pem", &self.ca.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Where [`DevPki::write`] put the files.
#[derive(Debug, Clone)]
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
    /// [`DEFAULT_SERVER_NAMES`]. Hosts that parse as IP addresses become IP SANs.
    pub fn generate(hosts: &[String], days: u32) -> Result<DevPki, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut ca_params = conformant_params()?;
        // Path length 0: the CA signs leaf certificates only, never another CA.
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Sumun dev CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = now - CLOCK_SKEW;
        ca_params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = Pem {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let mut pki = DevPki {
            ca,
            ca_cert,
            ca_key,
            server: Pem {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
        };
        pki.server = pki.issue_server_cert(&ServerCertSpec::valid_for_days(hosts, days))?;
        Ok(pki)
    }

    /// The CA certificate, PEM encoded: what clients put in their trust store.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The CA certificate and key.
    pub fn ca(&self) -> &Pem {
        &self.ca
    }

    /// The server certificate made by [`DevPki::generate`]; `cert_pem` is the leaf then the CA.
    pub fn server(&self) -> &Pem {
        &self.server
    }

    /// Another server certificate from the same CA, with the given names and validity (to
    /// test expiry warnings, rejection of expired certificates and certificate rotation).
    /// `cert_pem` is the leaf followed by the CA certificate.
    pub fn issue_server_cert(&self, spec: &ServerCertSpec) -> Result<Pem, PkiError> {
        if spec.not_after <= spec.not_before {
            return Err(PkiError::EmptyValidity);
        }
        let mut names: Vec<String> = DEFAULT_SERVER_NAMES.iter().map(|n| n.to_string()).collect();
        for h in &spec.hosts {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        let key = KeyPair::generate()?;
        let mut params = leaf_params(&key)?;
        let common_name = spec.hosts.first().map_or("localhost", String::as_str);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok(Pem {
            cert_pem: format!("{}{}", cert.pem(), self.ca.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate (client-auth usage, valid 30 days) with this common name, signed
    /// by the CA, for mTLS listeners whose `client_ca` is this CA.
    pub fn issue_client_cert(&self, common_name: &str) -> Result<Pem, PkiError> {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate()?;
        let mut params = leaf_params(&key)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + Duration::days(CLIENT_VALIDITY_DAYS);
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok(Pem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Write `ca.pem`, `ca-key.pem`, `server.pem` (leaf then CA) and `server-key.pem` into
    /// `dir`, creating it. Key files get mode 0600. Without `overwrite`, nothing is written
    /// when any of the four files exists. Each file is written beside and renamed into place,
    /// so a gateway watching for rotation never reads half a certificate.
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
        // Keys first: a watcher that sees the new certificate must find its key already there.
        for (path, body, secret) in files.iter().filter(|f| f.2) {
            write_file(path, body, *secret)?;
        }
        for (path, body, secret) in files.iter().filter(|f| !f.2) {
            write_file(path, body, *secret)?;
        }
        Ok(paths)
    }
}

/// What every certificate carries: a random positive serial number and its issuer's key
/// identifier (rcgen adds the subject key identifier of a CA).
fn conformant_params() -> Result<CertificateParams, PkiError> {
    let mut serial = [0u8; SERIAL_LEN];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| PkiError::Random)?;
    // DER integers are signed: a clear top bit keeps the number positive, a non-zero first
    // octet keeps it at full length.
    serial[0] = (serial[0] & 0x7f).max(1);
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// [`conformant_params`] for an end-entity certificate with this key: a critical
/// `basicConstraints` saying it is no CA and its subject key identifier, written by hand
/// because rcgen writes neither for a leaf in DER that strict parsers accept (it encodes the
/// default `cA FALSE`, which DER forbids).
fn leaf_params(key: &KeyPair) -> Result<CertificateParams, PkiError> {
    let mut params = conformant_params()?;
    params.is_ca = IsCa::NoCa;
    // SEQUENCE {}: cA is FALSE by default and left out.
    let mut no_ca = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    no_ca.set_criticality(true);
    // OCTET STRING of the key identifier: the first 160 bits of the SHA-256 of the public key
    // (RFC 7093, section 2, method 1), as rcgen derives the CA's.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key_raw());
    let mut key_id = vec![0x04, 20];
    key_id.extend_from_slice(&digest.as_ref()[..20]);
    let ski = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 14], key_id);
    params.custom_extensions = vec![no_ca, ski];
    Ok(params)
}

fn write_file(path: &Path, body: &str, secret: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A leftover from an interrupted run keeps its old mode: `mode` applies only on creation.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    f.write_all(body.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The first certificate's `notAfter`. Accepts PEM (the first `CERTIFICATE` block, so a chain
/// file gives the leaf) or DER.
pub fn cert_not_after(pem_or_der: &[u8]) -> Result<OffsetDateTime, PkiError> {
    let der = first_der(pem_or_der)?;
    let (rest, cert) = parse_cert(der.as_ref())?;
    if !rest.is_empty() {
        return Err(PkiError::TrailingData);
    }
    Ok(cert.validity().not_after.to_datetime())
}

/// Parse one DER certificate, giving back what follows it.
fn parse_cert(
    der: &[u8],
) -> Result<(&[u8], x509_parser::certificate::X509Certificate<'_>), PkiError> {
    x509_parser::parse_x509_certificate(der).map_err(|e| {
        PkiError::from(match e {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
            x509_parser::nom::Err::Incomplete(_) => {
                x509_parser::error::X509Error::InvalidCertificate
            }
        })
    })
}

/// The subject common name of a certificate (DER or PEM), when it has one: the identity a
/// `cert`-authenticated user is known by.
pub fn common_name(pem_or_der: &[u8]) -> Option<String> {
    let der = first_der(pem_or_der).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The hash a certificate's signature uses, as far as `tls-server-end-point` channel binding
/// (RFC 5929 §4.1) cares: MD5, SHA-1 and anything unrecognised (Ed25519, RSA-PSS) map to
/// SHA-256, as PostgreSQL and libpq do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

/// [`EndPointHash`] of a certificate (PEM or DER).
pub fn end_point_hash(pem_or_der: &[u8]) -> Result<EndPointHash, PkiError> {
    let der = first_der(pem_or_der)?;
    let (_, cert) = parse_cert(der.as_ref())?;
    Ok(
        match cert.signature_algorithm.algorithm.to_id_string().as_str() {
            // sha384WithRSAEncryption, ecdsa-with-SHA384
            "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => EndPointHash::Sha384,
            // sha512WithRSAEncryption, ecdsa-with-SHA512
            "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => EndPointHash::Sha512,
            _ => EndPointHash::Sha256,
        },
    )
}

/// [`cert_not_after`] as a [`SystemTime`].
pub fn cert_not_after_system(pem_or_der: &[u8]) -> Result<SystemTime, PkiError> {
    Ok(SystemTime::from(cert_not_after(pem_or_der)?))
}

/// Days (fractional) until the certificate expires, counted from now; negative when already
/// expired. Accepts PEM or DER like [`cert_not_after`].
pub fn days_left(pem_or_der: &[u8]) -> Result<f64, PkiError> {
    days_left_at(pem_or_der, OffsetDateTime::now_utc())
}

/// [`days_left`] counted from `now`.
pub fn days_left_at(pem_or_der: &[u8], now: OffsetDateTime) -> Result<f64, PkiError> {
    let left = cert_not_after(pem_or_der)? - now;
    Ok(left.as_seconds_f64() / 86_400.0)
}

fn first_der(pem_or_der: &[u8]) -> Result<CertificateDer<'static>, PkiError> {
    let text = pem_or_der.trim_ascii_start();
    if text.starts_with(b"-----BEGIN") {
        Ok(CertificateDer::from_pem_slice(text)?)
    } else {
        Ok(CertificateDer::from(pem_or_der.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
    use std::sync::Arc;

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let self_signed = |alg: &'static rcgen::SignatureAlgorithm| {
            let key = rcgen::KeyPair::generate_for(alg).expect("key");
            let params =
                rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            params.self_signed(&key).expect("cert").der().to_vec()
        };
        assert_eq!(
            end_point_hash(&self_signed(&rcgen::PKCS_ECDSA_P256_SHA256)).expect("p256"),
            EndPointHash::Sha256
        );
        assert_eq!(
            end_point_hash(&self_signed(&rcgen::PKCS_ECDSA_P384_SHA384)).expect("p384"),
            EndPointHash::Sha384
        );
        // Ed25519 signs without a separate hash: SHA-256, as libpq does.
        assert_eq!(
            end_point_hash(&self_signed(&rcgen::PKCS_ED25519)).expect("ed25519"),
            EndPointHash::Sha256
        );
        // The dev certificates are P-256 with SHA-256.
        let pki = DevPki::generate(&["localhost".to_string()], 1).expect("pki");
        assert_eq!(
            end_point_hash(pki.server().cert_pem.as_bytes()).expect("dev"),
            EndPointHash::Sha256
        );
        assert!(end_point_hash(b"not a certificate").is_err());
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("pem chain")
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn roots(pki: &DevPki) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for c in chain(pki.ca_cert_pem()) {
            roots.add(c).expect("add root");
        }
        Arc::new(roots)
    }

    fn verify_server(pki: &DevPki, server: &Pem, name: &str) -> Result<(), rustls::Error> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(pki), provider())
                .build()
                .expect("verifier");
        let certs = chain(&server.cert_pem);
        let name = ServerName::try_from(name.to_string()).expect("server name");
        verifier
            .verify_server_cert(&certs[0], &certs[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("sumun-pki-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn server_chain_verifies_for_every_name_and_only_those() {
        let pki = DevPki::generate(&["db.internal".into(), "10.1.2.3".into()], 7).expect("gen");
        for name in ["localhost", "127.0.0.1", "::1", "db.internal", "10.1.2.3"] {
            verify_server(&pki, pki.server(), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = verify_server(&pki, pki.server(), "other.example").expect_err("wrong name");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { .. }
                    )
            ),
            "{err:?}"
        );
        // A certificate from another dev CA is not trusted.
        let other = DevPki::generate(&[], 7).expect("other");
        assert!(verify_server(&pki, other.server(), "localhost").is_err());
        // The key parses as the key rustls will load.
        PrivateKeyDer::from_pem_slice(pki.server().key_pem.as_bytes()).expect("server key");
    }

    #[test]
    fn expired_and_rotated_server_certificates() {
        let pki = DevPki::generate(&[], 30).expect("gen");
        let now = OffsetDateTime::now_utc();
        let expired = pki
            .issue_server_cert(&ServerCertSpec {
                hosts: vec![],
                not_before: now - Duration::days(10),
                not_after: now - Duration::days(1),
            })
            .expect("expired");
        let err = verify_server(&pki, &expired, "localhost").expect_err("expired");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredContext { .. }
                    )
            ),
            "{err:?}"
        );
        assert!(days_left(expired.cert_pem.as_bytes()).expect("days") < -0.99);

        let soon = pki
            .issue_server_cert(&ServerCertSpec {
                hosts: vec!["db.internal".into()],
                not_before: now - Duration::hours(1),
                not_after: now + Duration::hours(12),
            })
            .expect("soon");
        verify_server(&pki, &soon, "db.internal").expect("still valid");
        assert_ne!(soon.cert_pem, pki.server().cert_pem);
        let days = days_left(soon.cert_pem.as_bytes()).expect("days");
        assert!((0.49..=0.51).contains(&days), "{days}");

        let backwards = ServerCertSpec {
            hosts: vec![],
            not_before: now,
            not_after: now - Duration::days(1),
        };
        assert!(matches!(
            pki.issue_server_cert(&backwards),
            Err(PkiError::EmptyValidity)
        ));
    }

    #[test]
    fn client_certificate_verifies_for_client_auth() {
        let pki = DevPki::generate(&[], 7).expect("gen");
        let client = pki.issue_client_cert("app-1").expect("client");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&pki), provider())
                .build()
                .expect("verifier");
        let certs = chain(&client.cert_pem);
        assert_eq!(certs.len(), 1);
        verifier
            .verify_client_cert(&certs[0], &[], UnixTime::now())
            .expect("client cert verifies");
        // The server certificate lacks the client-auth usage and is refused as a client.
        let server = chain(&pki.server().cert_pem);
        assert!(verifier
            .verify_client_cert(&server[0], &server[1..], UnixTime::now())
            .is_err());
        let (_, parsed) = x509_parser::parse_x509_certificate(&certs[0]).expect("parse");
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok());
        assert_eq!(cn, Some("app-1"));
    }

    #[test]
    fn not_after_matches_what_was_generated_in_pem_and_der() {
        let before = OffsetDateTime::now_utc();
        let pki = DevPki::generate(&["db.internal".into()], 7).expect("generate");
        let after = OffsetDateTime::now_utc();
        let pem = pki.server().cert_pem.as_bytes();
        let not_after = cert_not_after(pem).expect("pem");
        // X.509 times have whole seconds.
        assert!(not_after >= before + Duration::days(7) - Duration::seconds(1));
        assert!(not_after <= after + Duration::days(7));
        let der = chain(&pki.server().cert_pem).remove(0);
        assert_eq!(cert_not_after(&der).expect("der"), not_after);
        assert_eq!(
            cert_not_after_system(pem).expect("system"),
            SystemTime::from(not_after)
        );
        let days = days_left(&der).expect("days");
        assert!((6.99..=7.0).contains(&days), "{days}");
        assert_eq!(
            days_left_at(pem, not_after - Duration::days(2)).expect("at"),
            2.0
        );
        // The CA lives ten years.
        let ca_days = days_left(pki.ca_cert_pem().as_bytes()).expect("ca");
        assert!((3649.0..=3650.0).contains(&ca_days), "{ca_days}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(cert_not_after(b""), Err(PkiError::Parse(_))));
        assert!(cert_not_after(b"\x30\x03abc").is_err());
        assert!(matches!(
            cert_not_after(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(PkiError::Pem(_))
        ));
    }

    #[test]
    fn write_creates_private_keys_0600_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("write");
        let out = dir.join("certs");
        let pki = DevPki::generate(&[], 7).expect("generate");
        let paths = pki.write(&out, false).expect("write");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&paths.ca_key), 0o600);
        assert_eq!(mode(&paths.server_key), 0o600);
        assert_eq!(mode(&paths.ca), 0o644);
        assert_eq!(mode(&paths.server), 0o644);
        let server = std::fs::read_to_string(&paths.server).expect("read");
        assert_eq!(server, pki.server().cert_pem);
        assert_eq!(chain(&server).len(), 2, "leaf then CA");
        assert_eq!(
            std::fs::read_to_string(&paths.ca).expect("ca"),
            pki.ca_cert_pem()
        );

        let other = DevPki::generate(&[], 7).expect("other");
        match other.write(&out, false) {
            Err(PkiError::Exists { path }) => assert_eq!(path, paths.ca),
            r => panic!("expected Exists, got {r:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(&paths.server).expect("read"),
            pki.server().cert_pem,
            "nothing replaced"
        );
        other.write(&out, true).expect("overwrite");
        assert_eq!(
            std::fs::read_to_string(&paths.server_key).expect("read"),
            other.server().key_pem
        );
        assert_eq!(mode(&paths.server_key), 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let pki = DevPki::generate(&[], 7).expect("generate");
        let client = pki.issue_client_cert("x").expect("client");
        for s in [
            format!("{pki:?}"),
            format!("{:?}", pki.server()),
            format!("{:?}", pki.ca()),
            format!("{client:?}"),
        ] {
            assert!(!s.contains("PRIVATE KEY"), "{s}");
        }
    }
}
