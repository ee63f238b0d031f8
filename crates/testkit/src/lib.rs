//! Real servers for tests, stopped on drop: PostgreSQL (`initdb` + `postgres`, with streaming
//! replicas), MariaDB (`mariadbd`) and `redis-server`, each on a free loopback port in its own
//! temporary directory, plus [`FaultProxy`], an in-process TCP proxy that delays, cuts or
//! blackholes traffic on command. The machine's default instances on their standard ports are
//! never touched, and nothing here mocks a database.
//!
//! Lifecycle calls (`start`, `kill`, `restart`) block: they spawn processes and wait until the
//! server answers a real login. From a `#[tokio::test]` use the multi-threaded flavour, or the
//! `start_async` variants which run the blocking part on tokio's blocking pool.

mod fault;
mod impostor;
mod mariadb;
mod postgres;
mod process;
mod redis;
mod tempdir;

pub use fault::{Fault, FaultProxy};
pub use impostor::{Impostor, Seen, Trick};
pub use mariadb::{Mariadb, MariadbOptions};
pub use postgres::{PgOptions, Postgres};
pub use redis::{Redis, RedisOptions};
pub use tempdir::TempDir;

use std::net::{SocketAddr, TcpListener};

/// A port that was free on 127.0.0.1 a moment ago. Servers started by this crate retry with
/// another port when someone else took it in between.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the kernel hands out an ephemeral port on 127.0.0.1")
}

/// Whether two paths name the same directory: how a server's readiness probe knows it
/// reached *its* server, not another test's that took the same free port a moment earlier.
pub(crate) fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
