//! TLS from the gateway to PostgreSQL: a server with `ssl = on` and a certificate from a dev CA;
//! the target group's `tls = "verify-full"` checks it, `"require"` only encrypts, and a
//! certificate from another CA is refused with a clear error.

mod common;

use common::{run, TestDir, TestGateway};
use sumun_testkit::{PgOptions, Postgres};

const BACKEND_PASSWORD: &str = "backend-Secret-1";

fn postgres_uid() -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id -u postgres");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

async fn setup(tls: &str, ca: &str) -> (Postgres, TestGateway, String) {
    let dir = TestDir::new("pg-backend-tls");
    // The server's certificate and key, readable by the postgres user only.
    let pki = sumun_pki::DevPki::generate(&[], 30).expect("pki");
    let server_dir = dir.path("server");
    pki.write(&server_dir, true).expect("write certs");
    let other = sumun_pki::DevPki::generate(&[], 30).expect("other pki");
    other.write(&dir.path("other"), true).expect("write other");
    let uid = postgres_uid();
    std::os::unix::fs::chown(&server_dir, Some(uid), None).expect("chown dir");
    for f in ["server.pem", "server-key.pem", "ca.pem"] {
        std::os::unix::fs::chown(server_dir.join(f), Some(uid), None).expect("chown");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        server_dir.join("server-key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod key");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pg = Postgres::start_with(PgOptions {
        password_auth: true,
        users: vec![("app".into(), BACKEND_PASSWORD.into())],
        databases: vec!["appdb".into()],
        settings: vec![
            ("ssl".into(), "on".into()),
            (
                "ssl_cert_file".into(),
                server_dir.join("server.pem").display().to_string(),
            ),
            (
                "ssl_key_file".into(),
                server_dir.join("server-key.pem").display().to_string(),
            ),
        ],
        ..PgOptions::default()
    })
    .expect("start postgres with ssl");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", "sumun-btls");
    drop(vault);
    let toml = format!(
        r#"
[gateway]
name = "sumun-btls"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
[[listeners]]
name = "pg"
bind = "127.0.0.1:0"
protocol = "postgres"
tls = "off"
target_group = "pg"
security_groups = ["local"]
pool = {{ mode = "transaction", size = 2, checkout_timeout = "3s" }}
[[target_groups]]
name = "pg"
tls = "{tls}"
tls_ca = "{{dir}}/{ca}/ca.pem"
health_check = {{ enabled = false }}
targets = [{{ address = "{addr}" }}]
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
"#,
        addr = pg.addr()
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    (pg, gw, token)
}

async fn ssl_in_use(gw: &TestGateway, token: &str) -> (bool, String, String) {
    let port = gw.addr("pg").port().to_string();
    run(
        "psql",
        &[
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "bob",
            "-d",
            "appdb",
            "-c",
            "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()",
        ],
        &[("PGPASSWORD", token), ("PGSSLMODE", "disable")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_encrypts_and_checks_the_server_certificate() {
    let (_pg, gw, token) = setup("verify-full", "server").await;
    let (ok, out, err) = ssl_in_use(&gw, &token).await;
    assert!(ok, "{err}");
    // The server sees an encrypted connection from the gateway.
    assert!(out.trim().starts_with("t|TLSv1.3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_checking() {
    let (_pg, gw, token) = setup("require", "other").await;
    let (ok, out, err) = ssl_in_use(&gw, &token).await;
    assert!(ok, "{err}");
    assert!(out.trim().starts_with("t|"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let (_pg, gw, token) = setup("verify-full", "other").await;
    let (ok, _, err) = ssl_in_use(&gw, &token).await;
    assert!(!ok);
    assert!(
        err.contains("no backend server is available") && err.contains("TLS"),
        "{err}"
    );
}
