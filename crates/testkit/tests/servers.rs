//! Each real server starts on a free port, answers its own client, dies on `kill`, comes back
//! on the same port with its data on `restart`, and is gone after drop.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use sumun_testkit::{
    free_port, Mariadb, MariadbOptions, PgOptions, Postgres, Redis, RedisOptions, TempDir,
};

fn refused(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn postgres_starts_is_killed_and_restarts_on_the_same_port_with_its_data() {
    let mut pg = Postgres::start().expect("start postgres");
    let port = pg.port();
    assert_ne!(port, 5432);
    assert_eq!(pg.psql("select 1").expect("select"), "1");
    assert_eq!(pg.psql("show port").expect("port"), port.to_string());
    assert!(pg.socket_dir().join(format!(".s.PGSQL.{port}")).exists());
    pg.psql("create table t (id int)").expect("create");
    pg.psql("insert into t values (1), (2)").expect("insert");
    // Two statements in one -c are one transaction; the error carries psql's stderr.
    let err = pg.psql("select nope").expect_err("bad sql");
    assert!(err.to_string().contains("nope"), "{err}");

    let pid = pg.pid().expect("running");
    pg.kill();
    assert!(!pg.is_running());
    assert!(gone(pid), "postmaster {pid} still alive");
    assert!(refused(pg.addr()));
    assert!(pg.psql("select 1").is_err());

    pg.restart().expect("restart");
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("select count(*) from t").expect("count"), "2");

    let data = pg.data_dir();
    let pid = pg.pid().expect("running");
    drop(pg);
    assert!(gone(pid));
    assert!(!data.exists(), "temp dir removed on drop");
}

#[test]
fn postgres_with_password_auth_users_and_databases() {
    let pg = Postgres::start_with(PgOptions {
        password_auth: true,
        superuser_password: "super pw".into(),
        users: vec![("app".into(), "s3cr'et".into())],
        databases: vec!["appdb".into()],
        ..PgOptions::default()
    })
    .expect("start postgres");
    assert_eq!(pg.psql("select 1").expect("superuser"), "1");
    assert_eq!(
        pg.psql_as(
            "app",
            "s3cr'et",
            "appdb",
            "select current_user || '@' || current_database()"
        )
        .expect("app login"),
        "app@appdb"
    );
    assert_eq!(
        pg.psql("select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'app'")
            .expect("verifier"),
        "t"
    );
    let err = pg
        .psql_as("app", "wrong", "appdb", "select 1")
        .expect_err("wrong password");
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    // A replica of a password-protected primary streams with the superuser's password.
    pg.psql("create table t (id int)").expect("create");
    let replica = pg.start_replica().expect("replica");
    pg.psql("insert into t values (7)").expect("insert");
    assert!(
        eventually(Duration::from_secs(10), || replica
            .psql("select sum(id) from t")
            .is_ok_and(|c| c == "7")),
        "replica did not follow; log:\n{}",
        replica.log_tail()
    );
    let opts = format!(
        "{:?}",
        PgOptions {
            users: vec![("app".into(), "s3cr'et".into())],
            ..PgOptions::default()
        }
    );
    assert!(!opts.contains("s3cr"), "{opts}");
}

#[test]
fn postgres_replica_follows_and_is_promoted() {
    let mut primary = Postgres::start().expect("primary");
    primary
        .psql("create table t (id int primary key)")
        .expect("create");
    primary.psql("insert into t values (1)").expect("insert");
    let replica = primary.start_replica().expect("replica");
    assert_ne!(replica.port(), primary.port());
    assert!(replica.is_in_recovery().expect("recovery"));
    assert_eq!(replica.psql("select count(*) from t").expect("count"), "1");

    primary.psql("insert into t values (2)").expect("insert 2");
    assert!(
        eventually(Duration::from_secs(10), || replica
            .psql("select count(*) from t")
            .is_ok_and(|c| c == "2")),
        "replica did not receive the second row"
    );
    let err = replica
        .psql("insert into t values (3)")
        .expect_err("standby is read-only");
    assert!(err.to_string().contains("read-only"), "{err}");

    primary.kill();
    replica.promote().expect("promote");
    assert!(!replica.is_in_recovery().expect("recovery"));
    replica.psql("insert into t values (3)").expect("writable");
    assert_eq!(replica.psql("select count(*) from t").expect("count"), "3");
}

#[test]
fn mariadb_starts_is_killed_and_restarts_on_the_same_port_with_its_data() {
    let mut db = Mariadb::start_with(MariadbOptions {
        users: vec![("app".into(), "app pw".into())],
        databases: vec!["appdb".into()],
    })
    .expect("start mariadb");
    let port = db.port();
    assert_ne!(port, 3306);
    assert_eq!(db.mysql("select 1").expect("select"), "1");
    assert_eq!(db.mysql("select @@port").expect("port"), port.to_string());
    assert_eq!(
        db.mysql("select count(*) from mysql.global_priv where User=''")
            .expect("anonymous"),
        "0"
    );
    // The application user logs in over TCP from loopback, as 'app'@'%'.
    assert_eq!(
        db.mysql_as("app", "app pw", "select current_user()")
            .expect("app login"),
        "app@%"
    );
    assert!(db.mysql_as("app", "wrong", "select 1").is_err());
    db.mysql_as(
        "app",
        "app pw",
        "create table appdb.t (id int primary key) engine=innodb; insert into appdb.t values (1),(2)",
    )
    .expect("create");

    let pid = db.pid().expect("running");
    db.kill();
    assert!(gone(pid));
    assert!(refused(db.addr()));
    assert!(db.mysql("select 1").is_err());

    db.restart().expect("restart");
    assert_eq!(db.port(), port);
    assert_eq!(
        db.mysql("select count(*) from appdb.t").expect("count"),
        "2"
    );
}

#[test]
fn redis_starts_is_killed_and_restarts_on_the_same_port() {
    let mut redis = Redis::start().expect("start redis");
    let port = redis.port();
    assert_ne!(port, 6379);
    assert_eq!(redis.cli(&["PING"]).expect("ping"), "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]).expect("set"), "OK");
    assert_eq!(redis.cli(&["GET", "k"]).expect("get"), "v");
    assert_eq!(redis.cli(&["CONFIG", "GET", "save"]).expect("save"), "save");
    assert!(redis.cli(&["NOSUCHCOMMAND"]).is_err());
    // A value that happens to look like an error code is still a value.
    redis.cli(&["SET", "e", "ERR"]).expect("set");
    assert_eq!(redis.cli(&["GET", "e"]).expect("get"), "ERR");

    let pid = redis.pid().expect("running");
    redis.kill();
    assert!(gone(pid));
    assert!(refused(redis.addr()));
    assert!(redis.cli(&["PING"]).is_err());

    redis.restart().expect("restart");
    assert_eq!(redis.port(), port);
    assert_eq!(redis.cli(&["PING"]).expect("ping"), "PONG");
    assert_eq!(
        redis.cli(&["EXISTS", "k"]).expect("exists"),
        "0",
        "no persistence"
    );
}

#[test]
fn redis_with_password_and_acl_user() {
    let mut redis = Redis::start_with(RedisOptions {
        password: Some("topsecret".into()),
        users: vec![("app".into(), "apppw".into())],
    })
    .expect("start redis");
    assert_eq!(redis.cli(&["ACL", "WHOAMI"]).expect("whoami"), "default");
    assert_eq!(
        redis
            .cli_as("app", "apppw", &["ACL", "WHOAMI"])
            .expect("app"),
        "app"
    );
    let err = redis
        .cli_as("app", "nope", &["PING"])
        .expect_err("wrong password");
    assert!(
        err.to_string().contains("NOAUTH") || err.to_string().contains("WRONGPASS"),
        "{err}"
    );
    let err = redis
        .cli_as("default", "nope", &["PING"])
        .expect_err("wrong password");
    assert!(
        err.to_string().contains("NOAUTH") || err.to_string().contains("WRONGPASS"),
        "{err}"
    );
    // The settings survive a restart.
    redis.restart().expect("restart");
    assert_eq!(
        redis
            .cli_as("app", "apppw", &["PING"])
            .expect("app after restart"),
        "PONG"
    );
    assert!(!format!("{redis:?}").contains("topsecret"));
    assert!(Redis::start_with(RedisOptions {
        password: Some("has space".into()),
        users: vec![],
    })
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_starts_work_inside_tokio() {
    let (pg, redis) = tokio::join!(
        Postgres::start_async(PgOptions::default()),
        Redis::start_async(RedisOptions::default())
    );
    let (pg, redis) = (pg.expect("pg"), redis.expect("redis"));
    assert_eq!(pg.psql("select 2").expect("pg"), "2");
    assert_eq!(redis.cli(&["PING"]).expect("redis"), "PONG");
}

#[test]
fn free_ports_and_temp_dirs() {
    let a = free_port();
    assert!(std::net::TcpListener::bind(("127.0.0.1", a)).is_ok());
    let dir = TempDir::new("kit").expect("tempdir");
    let path = dir.path().to_path_buf();
    std::fs::write(dir.join("f"), "x").expect("write");
    let other = TempDir::new("kit").expect("tempdir");
    assert_ne!(other.path(), dir.path());
    drop(dir);
    assert!(!path.exists());
}
