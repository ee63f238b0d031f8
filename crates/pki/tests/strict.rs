//! The dev certificates pass strict RFC 5280 path validation, as TLS scanners (sslyze, through
//! Python's `cryptography`) and `openssl verify -x509_strict` do it, not only rustls' webpki.
//! Several chains are generated because serial numbers and key identifiers are random: a
//! defect that shows up in one chain out of two must not slip through.

use std::path::{Path, PathBuf};
use std::process::Command;

use sumun_pki::DevPki;

const CHAINS: usize = 8;

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "sumun-pki-strict-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// The first PEM block of `pem` (the leaf of a chain file).
fn first_block(pem: &str) -> String {
    let end = "-----END CERTIFICATE-----";
    let at = pem.find(end).expect("a certificate") + end.len();
    format!("{}\n", &pem[..at])
}

/// `ca.pem`, the server leaf alone (`leaf.pem`) and a client certificate (`client.pem`).
fn write_chain(pki: &DevPki, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let written = pki.write(dir, true).expect("write");
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, first_block(&pki.server().cert_pem)).expect("leaf");
    let client = dir.join("client.pem");
    let issued = pki.issue_client_cert("app-1").expect("client cert");
    std::fs::write(&client, &issued.cert_pem).expect("client");
    (written.ca, leaf, client)
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (install it: apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_strict_verify_accepts_the_chain() {
    let dir = temp_dir("openssl");
    for i in 0..CHAINS {
        let pki = DevPki::generate(&["db.internal".into(), "10.1.2.3".into()], 30).expect("gen");
        let (ca, leaf, client) = write_chain(&pki, &dir.join(i.to_string()));
        let (ca, leaf, client) = (
            ca.to_str().expect("utf-8"),
            leaf.to_str().expect("utf-8"),
            client.to_str().expect("utf-8"),
        );
        for host in ["localhost", "db.internal"] {
            let (ok, text) = openssl(&[
                "verify",
                "-x509_strict",
                "-purpose",
                "sslserver",
                "-verify_hostname",
                host,
                "-CAfile",
                ca,
                leaf,
            ]);
            assert!(ok, "chain {i}, {host}: {text}");
        }
        let (ok, text) = openssl(&[
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-verify_ip",
            "10.1.2.3",
            "-CAfile",
            ca,
            leaf,
        ]);
        assert!(ok, "chain {i}, 10.1.2.3: {text}");
        let (ok, text) = openssl(&[
            "verify",
            "-x509_strict",
            "-purpose",
            "sslclient",
            "-CAfile",
            ca,
            client,
        ]);
        assert!(ok, "chain {i}, client certificate: {text}");
        // A name the certificate was not issued for is refused (the check is real).
        let (ok, _) = openssl(&[
            "verify",
            "-x509_strict",
            "-verify_hostname",
            "other.example",
            "-CAfile",
            ca,
            leaf,
        ]);
        assert!(!ok, "chain {i}: other.example accepted");

        // What the verifier relies on, spelled out: positive serial numbers of at most 20
        // octets, key identifiers, a critical CA constraint with a path length, key usages.
        for (name, cert) in [("ca", ca), ("leaf", leaf), ("client", client)] {
            let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", cert]);
            assert!(ok, "{text}");
            let (ok, serial) = openssl(&["x509", "-noout", "-serial", "-in", cert]);
            assert!(ok, "{serial}");
            let hex = serial.trim().trim_start_matches("serial=");
            assert!(
                !hex.starts_with('-') && hex.len() <= 40 && hex.len() >= 32,
                "chain {i} {name}: serial {hex}"
            );
            assert!(
                u8::from_str_radix(&hex[..2], 16).expect("hex") < 0x80,
                "chain {i} {name}: serial {hex}"
            );
            assert!(
                text.contains("X509v3 Subject Key Identifier"),
                "chain {i} {name}: {text}"
            );
            assert!(
                text.contains("X509v3 Key Usage: critical"),
                "chain {i} {name}: {text}"
            );
            if name == "ca" {
                assert!(
                    text.contains(
                        "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0"
                    ),
                    "{text}"
                );
                assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
            } else {
                assert!(
                    text.contains("X509v3 Authority Key Identifier"),
                    "chain {i} {name}: {text}"
                );
                assert!(text.contains("CA:FALSE"), "chain {i} {name}: {text}");
                assert!(text.contains("Digital Signature"), "{text}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Python's `cryptography` X.509 path validation (RFC 5280 and the CA/Browser Forum rules), as
/// sslyze runs it. Skipped with a note when Python or a recent enough `cryptography` (42 or
/// later) is not installed; `scripts/test` installs it.
#[test]
fn python_cryptography_verifier_accepts_the_chain() {
    let probe = Command::new("python3")
        .args(["-c", "import cryptography.x509.verification"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: python3 with cryptography >= 42 is not installed (pip install cryptography)"
        );
        return;
    }
    let script = r#"
import ipaddress, sys
from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store

ca_pem, leaf_pem = (open(p, "rb").read() for p in sys.argv[1:3])
ca = x509.load_pem_x509_certificate(ca_pem)
leaf = x509.load_pem_x509_certificate(leaf_pem)
store = Store([ca])
for name in ("localhost", "db.internal"):
    PolicyBuilder().store(store).build_server_verifier(DNSName(name)).verify(leaf, [])
ip = IPAddress(ipaddress.ip_address("10.1.2.3"))
PolicyBuilder().store(store).build_server_verifier(ip).verify(leaf, [])
try:
    PolicyBuilder().store(store).build_server_verifier(DNSName("other.example")).verify(leaf, [])
except Exception:
    pass
else:
    sys.exit("other.example accepted")
print("ok")
"#;
    let dir = temp_dir("python");
    for i in 0..CHAINS {
        let pki = DevPki::generate(&["db.internal".into(), "10.1.2.3".into()], 30).expect("gen");
        // Client certificates are left out: this verifier's client policy wants a subject
        // alternative name, and Sumun identifies clients by their common name.
        let (ca, leaf, _) = write_chain(&pki, &dir.join(i.to_string()));
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&ca)
            .arg(&leaf)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "chain {i}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
