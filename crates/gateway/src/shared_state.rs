//! `[protection] shared = "redis://..."`: bans shared by gateway replicas through Redis (a
//! well-known store; no home-made cluster protocol). Each replica, once a second:
//!
//! - publishes the bans it made (`ZADD sumun:<gateway name>:bans <until> <addr>`) and the bans
//!   lifted through its admin API (`ZREM`);
//! - reads the bans in force (`ZRANGEBYSCORE ... <now> +inf WITHSCORES`) and enforces them
//!   locally; a ban it took from Redis that is gone there (lifted elsewhere) is lifted here;
//! - drops ended bans (`ZREMRANGEBYSCORE ... -inf <now>`).
//!
//! The door never waits for Redis: admission reads only the local view. When Redis is lost the
//! replica keeps enforcing what it knows and its own new bans, logs it once, and catches up
//! when Redis is back. Written with our own RESP codec (`sumun_wire::resp`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sumun_wire::resp::{encode_command, Decoder, Limits, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protection::Protection;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What `redis://[user:password@]host:port[/db]` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl RedisUrl {
    pub fn parse(url: &str) -> Option<RedisUrl> {
        let rest = url.strip_prefix("redis://")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (addr, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, d)) => (a, d.parse().ok()?),
            None => (rest, 0),
        };
        let addr = if addr.contains(':') && !addr.ends_with(']') {
            addr.to_string()
        } else {
            format!("{addr}:6379")
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        Some(RedisUrl {
            addr,
            user,
            password,
            db,
        })
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl Conn {
    async fn open(url: &RedisUrl) -> Result<Conn, String> {
        let stream = crate::workers::timeout(IO_TIMEOUT, TcpStream::connect(&url.addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            decoder: Decoder::new(Limits::default()),
        };
        if let Some(p) = &url.password {
            let reply = match &url.user {
                Some(u) => conn.call(&["AUTH", u, p]).await?,
                None => conn.call(&["AUTH", p]).await?,
            };
            if reply.is_error() {
                return Err("AUTH refused".into());
            }
        }
        if url.db != 0 {
            let reply = conn.call(&["SELECT", &url.db.to_string()]).await?;
            if reply.is_error() {
                return Err(format!("SELECT {} refused", url.db));
            }
        }
        Ok(conn)
    }

    async fn call(&mut self, args: &[&str]) -> Result<Value, String> {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        crate::workers::timeout(IO_TIMEOUT, async {
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| e.to_string())?;
            loop {
                if let Some((value, used)) =
                    self.decoder.decode(&self.buf).map_err(|e| e.to_string())?
                {
                    self.buf.drain(..used);
                    return Ok(value);
                }
                let mut chunk = [0u8; 4096];
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed".to_string());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .map_err(|_| "timed out".to_string())?
    }
}

/// The sync loop for `url`, until the protection is gone or `stop` says so.
pub(crate) async fn run(
    protection: Weak<Protection>,
    url: RedisUrl,
    key: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut conn: Option<Conn> = None;
    let mut lost = false;
    // Bans this replica took from Redis (lifted here when they are gone there).
    let mut imported: HashSet<IpAddr> = HashSet::new();
    loop {
        tokio::select! {
            _ = crate::workers::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(p) = protection.upgrade() else {
            return;
        };
        if conn.is_none() {
            match Conn::open(&url).await {
                Ok(c) => {
                    if lost {
                        tracing::info!(redis = %url.addr, "shared protection state: Redis is back");
                    }
                    lost = false;
                    conn = Some(c);
                }
                Err(e) => {
                    if !lost {
                        tracing::error!(redis = %url.addr, error = %e, "shared protection state: Redis unreachable; enforcing the local view until it is back");
                    }
                    lost = true;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Err(e) = sync(&p, c, &key, &mut imported).await {
            tracing::error!(redis = %url.addr, error = %e, "shared protection state: Redis lost; enforcing the local view until it is back");
            lost = true;
            conn = None;
        }
    }
}

async fn sync(
    p: &Arc<Protection>,
    c: &mut Conn,
    key: &str,
    imported: &mut HashSet<IpAddr>,
) -> Result<(), String> {
    let (bans, unbans) = p.take_shared_changes();
    let result = exchange(p, c, key, imported, &bans, &unbans).await;
    if result.is_err() {
        // Published next time Redis answers.
        p.requeue(bans, unbans);
    }
    result
}

async fn exchange(
    p: &Arc<Protection>,
    c: &mut Conn,
    key: &str,
    imported: &mut HashSet<IpAddr>,
    bans: &[sumun_protect::Ban],
    unbans: &[IpAddr],
) -> Result<(), String> {
    let now = crate::records::unix_now();
    for ban in bans {
        c.call(&["ZADD", key, &ban.until.to_string(), &ban.addr.to_string()])
            .await?;
    }
    for addr in unbans {
        c.call(&["ZREM", key, &addr.to_string()]).await?;
        imported.remove(addr);
    }
    c.call(&["ZREMRANGEBYSCORE", key, "-inf", &format!("({now}")])
        .await?;
    let reply = c
        .call(&["ZRANGEBYSCORE", key, &now.to_string(), "+inf", "WITHSCORES"])
        .await?;
    let items = reply.as_array().ok_or("unexpected ZRANGEBYSCORE reply")?;
    let mut remote = HashSet::new();
    for pair in items.chunks(2) {
        let [member, score] = pair else { continue };
        let (Some(addr), Some(until)) = (
            member.as_str().and_then(|s| s.parse::<IpAddr>().ok()),
            score
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .or(match score {
                    Value::Double(d) => Some(*d),
                    _ => None,
                }),
        ) else {
            continue;
        };
        remote.insert(addr);
        if p.import_ban(addr, until as u64) {
            imported.insert(addr);
        }
    }
    // Lifted elsewhere: lift here too.
    let gone: Vec<IpAddr> = imported.difference(&remote).copied().collect();
    for addr in gone {
        imported.remove(&addr);
        p.lift_imported(addr);
    }
    // Bans made here that another replica lifted.
    for addr in p.local_bans_missing_from(&remote) {
        p.lift_imported(addr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RedisUrl;

    #[test]
    fn urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380/2").expect("url");
        assert_eq!(
            (u.addr.as_str(), u.db, u.password),
            ("127.0.0.1:6380", 2, None)
        );
        let u = RedisUrl::parse("redis://:pw@cache").expect("url");
        assert_eq!(
            (u.addr.as_str(), u.password.as_deref(), u.user),
            ("cache:6379", Some("pw"), None)
        );
        let u = RedisUrl::parse("redis://app:pw@cache:1/").expect("url");
        assert_eq!(u.user.as_deref(), Some("app"));
        assert!(RedisUrl::parse("http://x").is_none());
    }
}
