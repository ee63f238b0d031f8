//! A Redis client's connection: TLS, the login, its server, and the checked relay.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sumun_config::TlsMode;
use sumun_policy::redis_acl::{AclRules, RedisAcl, Verdict, Wording};
use sumun_vault::SecretBytes;
use sumun_wire::resp::table::CommandTable;
use sumun_wire::resp::{encode_command, Decoder, FrameKind, Limits, ReplyFramer, Splitter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ClientRow, RedisFrontEnd};
use crate::backend_tls::TlsTo;
use crate::conn::TargetActive;
use crate::frontend::{count, Accepted};
use crate::listener::ListenerSnapshot;
use crate::metrics::RejectReason;
use crate::targets::Want;
use crate::Shared;

/// The most a client's one argument may be: the gateway holds a command whole before it
/// forwards it (to check its keys), so this bounds a client's buffer.
const MAX_ARGUMENT: u64 = 64 << 20;
/// Replies owed to a client (commands sent and not yet answered) before it is read no more.
const MAX_PENDING: usize = 16 * 1024;
/// The most bytes of a client's commands held (a command is held whole before it is checked).
const MAX_QUERY_BUFFER: usize = 256 << 20;
const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";

/// A stream that is a plain socket or TLS, either side.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) async fn serve(fe: Arc<RedisFrontEnd>, conn: Accepted) {
    let Accepted {
        stream,
        admitted,
        snap,
        listener,
        shared,
        handshake_deadline,
        slot,
    } = conn;
    let _slot = slot;
    let flow = admitted.flow.clone();
    let _ = stream.set_nodelay(true);
    // TLS from the first byte, as Redis speaks it.
    let tls = match snap.settings.tls {
        TlsMode::Off => None,
        _ => snap.tls.clone(),
    };
    let mut first = [0u8; 1];
    let peeked = crate::workers::timeout_at(handshake_deadline, stream.peek(&mut first)).await;
    let hello_is_tls = matches!(peeked, Ok(Ok(1))) && first[0] == 0x16;
    let mut client: Box<dyn Io> = match (&tls, hello_is_tls) {
        (Some(ctx), true) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(ctx.server_config());
            match crate::workers::timeout_at(handshake_deadline, acceptor.accept(stream)).await {
                Ok(Ok(s)) => Box::new(s),
                _ => {
                    listener.metrics.reject(RejectReason::TlsHandshake);
                    end_flow(&shared, &listener, &flow, "tls_handshake_failed", None);
                    return;
                }
            }
        }
        (_, false) if snap.settings.tls == TlsMode::Required && tls.is_some() => {
            // A plain-text client: told why in words redis-cli prints, and closed.
            let mut s = stream;
            let _ = s
                .write_all(b"-ERR this listener requires TLS: connect with --tls\r\n")
                .await;
            listener
                .metrics
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            end_flow(&shared, &listener, &flow, "tls_required", None);
            return;
        }
        _ => Box::new(stream),
    };
    let is_tls = hello_is_tls && tls.is_some();
    let login = crate::workers::timeout_at(
        handshake_deadline,
        login(
            &fe,
            &mut client,
            is_tls,
            &snap,
            &shared,
            admitted.client,
            &listener.name,
        ),
    )
    .await;
    let (login, mut cbuf) = match login {
        Ok(Ok(done)) => done,
        Ok(Err(end)) => {
            end_flow(&shared, &listener, &flow, end, None);
            return;
        }
        Err(_) => {
            listener.metrics.reject(RejectReason::HandshakeTimeout);
            end_flow(&shared, &listener, &flow, "handshake_timeout", None);
            return;
        }
    };
    let Login {
        user,
        account,
        hello,
    } = login;
    // The server, logged in with the vault credential.
    let server = match connect(&fe, &shared, &snap, &account).await {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!(listener = %listener.name, client = %admitted.client, user = %user, error = %why, "no Redis server for the client");
            let _ = reply(&mut client, format!("-ERR {why}\r\n").as_bytes()).await;
            end_flow(&shared, &listener, &flow, "no_backend", Some(&user));
            return;
        }
    };
    let Server {
        mut stream,
        table,
        target,
        _active,
    } = server;
    *flow.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target.addr);
    let rules = account
        .redis_acl
        .as_deref()
        .map(AclRules::parse)
        .unwrap_or_else(|| Ok(AclRules::default_rules()));
    let acl = match rules.and_then(|r| RedisAcl::compile(&r, &table)) {
        Ok(a) => a,
        Err(e) => {
            let _ = reply(
                &mut client,
                format!("-ERR the gateway cannot use redis_acl of user '{user}': {e}\r\n")
                    .as_bytes(),
            )
            .await;
            end_flow(&shared, &listener, &flow, "refused", Some(&user));
            return;
        }
    };
    // The client's own HELLO (protocol version, name) goes to the server, which answers it.
    let mut pending = VecDeque::new();
    match hello {
        Some(args) => {
            let mut cmd = Vec::new();
            encode_command(&mut cmd, &args);
            if stream.write_all(&cmd).await.is_err() {
                end_flow(&shared, &listener, &flow, "server_lost", Some(&user));
                return;
            }
            pending.push_back(Slot::Server);
        }
        None => {
            if reply(&mut client, b"+OK\r\n").await.is_err() {
                end_flow(&shared, &listener, &flow, "client_error", Some(&user));
                return;
            }
        }
    }
    fe.stats.logins.fetch_add(1, Ordering::Relaxed);
    listener.metrics.new_flows.fetch_add(1, Ordering::Relaxed);
    let id = fe.next_id.fetch_add(1, Ordering::Relaxed);
    let session_id = format!("{id:08x}{:08x}", fastrand::u32(..));
    fe.clients.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id,
        ClientRow {
            protocol: "redis",
            listener: listener.name.to_string(),
            client: admitted.client.to_string(),
            user: user.clone(),
            session_id: session_id.clone(),
            connected_at: flow.start,
            server: target.address.clone(),
        },
    );
    let _registered = Registered(fe.clone(), id);
    shared
        .records
        .audit("session.start", &listener.name, admitted.client, || {
            let mut extra = serde_json::Map::new();
            extra.insert("user".into(), user.clone().into());
            extra.insert("session_id".into(), session_id.clone().into());
            extra.insert("target".into(), target.address.clone().into());
            extra
        });
    let mut s = Session {
        fe: &fe,
        shared: &shared,
        listener: &listener.name,
        client_addr: admitted.client,
        user: &user,
        unrestricted: acl.is_unrestricted(),
        acl,
        table,
        splitter: Splitter::new(Limits::default().with_max_bulk_len(MAX_ARGUMENT)),
        framer: ReplyFramer::new(Limits::default()),
        pending,
        passthrough: false,
        flow: &flow,
    };
    let end = s
        .relay(
            &mut client,
            &mut stream,
            &mut cbuf,
            snap.settings.idle_limit(),
        )
        .await;
    end_flow(&shared, &listener, &flow, end, Some(&user));
}

/// Removes the client from `/api/clients` however the session ends.
struct Registered(Arc<RedisFrontEnd>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

async fn reply(client: &mut Box<dyn Io>, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

struct Login {
    user: String,
    account: sumun_config::User,
    /// The client's `HELLO` without its `AUTH` part, for the server to answer.
    hello: Option<Vec<Vec<u8>>>,
}

/// Serve the client until it logs in: `AUTH [user] token`, `HELLO proto AUTH user token
/// [SETNAME name]`, `QUIT`; anything else is `-NOAUTH`. A refused login is `-WRONGPASS`, and the
/// client may try again until the handshake deadline.
async fn login(
    fe: &RedisFrontEnd,
    client: &mut Box<dyn Io>,
    is_tls: bool,
    snap: &ListenerSnapshot,
    shared: &Shared,
    client_addr: std::net::SocketAddr,
    listener: &str,
) -> Result<(Login, Vec<u8>), &'static str> {
    let _ = (fe, snap);
    let mut splitter = Splitter::new(Limits::unauthenticated());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut at = 0;
        loop {
            let cmd = match splitter.split(&buf[at..]) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let _ = reply(client, format!("-{}\r\n", e.reply()).as_bytes()).await;
                    return Err("protocol_error");
                }
            };
            let len = cmd.len();
            if cmd.is_empty() {
                at += len;
                continue;
            }
            let name = cmd.name().unwrap_or_default().to_ascii_lowercase();
            let args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
            at += len;
            let (user, token, hello) = match name.as_slice() {
                b"quit" => {
                    let _ = reply(client, b"+OK\r\n").await;
                    return Err("closed");
                }
                b"auth" if args.len() == 2 => (None, args[1].clone(), None),
                b"auth" if args.len() == 3 => (Some(args[1].clone()), args[2].clone(), None),
                b"auth" => {
                    let _ = reply(
                        client,
                        b"-ERR wrong number of arguments for 'auth' command\r\n",
                    )
                    .await;
                    continue;
                }
                b"hello" => match parse_hello(&args) {
                    Some((user, token, rest)) => (Some(user), token, Some(rest)),
                    None => {
                        let _ = reply(client, b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n").await;
                        continue;
                    }
                },
                _ => {
                    if reply(client, NOAUTH).await.is_err() {
                        return Err("client_error");
                    }
                    continue;
                }
            };
            let token = SecretBytes::new(token);
            match check(shared, is_tls, user.as_deref(), &token) {
                Ok((user, account)) => {
                    buf.drain(..at);
                    return Ok((
                        Login {
                            user,
                            account,
                            hello,
                        },
                        buf,
                    ));
                }
                Err(reason) => {
                    let who = user
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                        .into_owned();
                    tracing::info!(listener, client = %client_addr, user = %who, reason, "authentication failed");
                    crate::frontend::audit_auth_failure(
                        shared,
                        listener,
                        client_addr,
                        &who,
                        reason,
                    );
                    if let Some(l) = shared
                        .registry
                        .load()
                        .listeners
                        .iter()
                        .find(|l| &*l.name == listener)
                    {
                        l.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    if reply(client, WRONGPASS).await.is_err() {
                        return Err("client_error");
                    }
                }
            }
        }
        buf.drain(..at);
        let n = client.read(&mut chunk).await.map_err(|_| "client_error")?;
        if n == 0 {
            return Err("closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A `HELLO ... AUTH` taken apart: the user, the password, and the command without `AUTH`.
type HelloAuth = (Vec<u8>, Vec<u8>, Vec<Vec<u8>>);

/// `HELLO proto AUTH user pass [SETNAME name]`: the user, the password, and the command
/// without its `AUTH` part. `None` when there is no `AUTH`.
fn parse_hello(args: &[Vec<u8>]) -> Option<HelloAuth> {
    let mut rest = vec![args.first()?.clone()];
    let mut auth = None;
    let mut i = 1;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"auth") && i + 2 < args.len() {
            auth = Some((args[i + 1].clone(), args[i + 2].clone()));
            i += 3;
        } else {
            rest.push(args[i].clone());
            i += 1;
        }
    }
    let (user, pass) = auth?;
    Some((user, pass, rest))
}

/// Whether `token` logs `user` (or, for `AUTH token`, the token's own user) in.
fn check(
    shared: &Shared,
    is_tls: bool,
    user: Option<&[u8]>,
    token: &SecretBytes,
) -> Result<(String, sumun_config::User), &'static str> {
    if !is_tls {
        // A token goes in cleartext: only over TLS.
        return Err("token_needs_tls");
    }
    let vault = shared
        .vault
        .load_full()
        .map(|v| v.state())
        .ok_or("no_vault")?;
    let text = std::str::from_utf8(token.expose()).map_err(|_| "token_malformed")?;
    if !sumun_vault::TokenVerifier::looks_like_token(text.as_bytes()) {
        return Err("not_a_token");
    }
    let claims = vault
        .verify_token(text, &shared.config.load().gateway.name)
        .map_err(|_| "token_invalid")?;
    if let Some(u) = user {
        // `default` is what `AUTH token` means in Redis: the token names the user.
        if u != claims.user.as_bytes() && u != b"default" {
            return Err("token_user_mismatch");
        }
    }
    let config = shared.config.load();
    let account = config
        .users
        .iter()
        .find(|u| u.name == claims.user)
        .ok_or("unknown_user")?;
    if !account.auth.contains(&sumun_config::AuthMethod::Token) {
        return Err("method_not_available");
    }
    Ok((claims.user, account.clone()))
}

struct Server {
    stream: Box<dyn Io>,
    table: Arc<CommandTable>,
    target: Arc<crate::targets::TargetRt>,
    _active: TargetActive,
}

/// Connect to a writable target and log in with the account's vault credential; learn the
/// group's command table at the first login.
async fn connect(
    fe: &RedisFrontEnd,
    shared: &Shared,
    snap: &ListenerSnapshot,
    account: &sumun_config::User,
) -> Result<Server, String> {
    let group = snap.group.settings();
    let name = account
        .backend_credential
        .as_deref()
        .ok_or_else(|| format!("user '{}' has no backend_credential", account.name))?;
    let vault = shared.vault.load_full().ok_or("the gateway has no vault")?;
    let cred = vault
        .backend_credential(name)
        .map_err(|e| format!("vault secret '{name}': {e}"))?;
    let mut tried = Vec::new();
    let mut last = "no healthy backend server is available".to_string();
    for _ in 0..=group.connect_retries {
        let Some(target) = snap.group.pick_for(&tried, Want::Writer) else {
            break;
        };
        tried.push(target.addr);
        let tcp =
            match crate::workers::timeout(group.connect_timeout, TcpStream::connect(target.addr))
                .await
            {
                Ok(Ok(s)) => s,
                _ => {
                    target.connect_errors.fetch_add(1, Ordering::Relaxed);
                    last = format!(
                        "no backend server is available: cannot connect to {}",
                        target.address
                    );
                    continue;
                }
            };
        let mut stream = match login_on(tcp, &group, &target.address, &cred).await {
            Ok(s) => s,
            Err(Failed::Target(why)) => {
                last = why;
                continue;
            }
            Err(Failed::Login(why)) => return Err(why),
        };
        let table = match fe.table(&group.name) {
            Some(t) => t,
            None => {
                let mut cmd = Vec::new();
                encode_command(&mut cmd, &[b"COMMAND".as_slice()]);
                let reply = request(&mut stream, &cmd)
                    .await
                    .map_err(|e| format!("the server at {}: COMMAND: {e}", target.address))?;
                let table = Arc::new(
                    CommandTable::from_reply(&reply)
                        .map_err(|e| format!("the server at {}: COMMAND: {e}", target.address))?,
                );
                fe.learn_table(&group.name, table.clone());
                table
            }
        };
        target.flows_total.fetch_add(1, Ordering::Relaxed);
        return Ok(Server {
            stream,
            table,
            _active: TargetActive::new(&target),
            target,
        });
    }
    Err(last)
}

/// Why a server login failed: the target (another may do), or the login itself.
enum Failed {
    Target(String),
    Login(String),
}

/// TLS when the group asks for it, then `AUTH` with each stored version of the password while
/// the server says it is wrong (none for a secret without a password).
async fn login_on(
    tcp: TcpStream,
    group: &sumun_config::TargetGroup,
    address: &str,
    cred: &crate::vault::BackendCredential,
) -> Result<Box<dyn Io>, Failed> {
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Io> = match TlsTo::for_target(group, address) {
        None => Box::new(tcp),
        Some(tls) => {
            let server_name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())
                .map_err(|e| Failed::Login(format!("bad server name {}: {e}", tls.server_name)))?;
            let config = tls.client_config().map_err(Failed::Login)?;
            match tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await
            {
                Ok(s) => Box::new(s),
                Err(e) => return Err(Failed::Target(format!("TLS to {address}: {e}"))),
            }
        }
    };
    let mut last = String::new();
    let mut logged_in = cred.passwords.is_empty();
    for password in &cred.passwords {
        if password.expose().is_empty() {
            logged_in = true;
            break;
        }
        let mut cmd = Vec::new();
        match cred.username.as_deref() {
            Some(u) if u != "default" => encode_command(
                &mut cmd,
                &[b"AUTH".as_slice(), u.as_bytes(), password.expose()],
            ),
            _ => encode_command(&mut cmd, &[b"AUTH".as_slice(), password.expose()]),
        }
        let answer = request(&mut stream, &cmd).await;
        zeroize::Zeroize::zeroize(&mut cmd);
        match answer {
            Ok(sumun_wire::resp::Value::Simple(ok)) if ok.eq_ignore_ascii_case(b"OK") => {
                logged_in = true;
                break;
            }
            Ok(sumun_wire::resp::Value::Error(e)) => {
                last = format!(
                    "the server at {address} refused the gateway's login: {}",
                    String::from_utf8_lossy(&e)
                );
            }
            Ok(_) | Err(_) => {
                return Err(Failed::Target(format!(
                    "the server at {address} failed during login"
                )))
            }
        }
    }
    if logged_in {
        Ok(stream)
    } else {
        Err(Failed::Login(last))
    }
}

/// The `redis` health check: connect, `AUTH` with the check's credential (when it names one),
/// and `ROLE`: a server that answers is healthy, `master` a primary and `slave` a replica.
pub(super) async fn probe(
    hc: &sumun_config::HealthCheck,
    group: &sumun_config::TargetGroup,
    target: &str,
    addr: std::net::SocketAddr,
    shared: Option<&Shared>,
) -> Result<crate::health::Learned, crate::health::ProbeFailure> {
    use crate::health::ProbeFailure;
    let cred = match &hc.credential {
        Some(name) => {
            let vault = shared
                .and_then(|s| s.vault.load_full())
                .ok_or(ProbeFailure::Error)?;
            vault
                .backend_credential(name)
                .map_err(|_| ProbeFailure::Error)?
        }
        None => crate::vault::BackendCredential {
            username: None,
            passwords: Vec::new(),
        },
    };
    let tcp = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ProbeFailure::Refused)
        }
        Err(_) => return Err(ProbeFailure::Error),
    };
    let mut stream = login_on(tcp, group, target, &cred)
        .await
        .map_err(|_| ProbeFailure::Error)?;
    let mut cmd = Vec::new();
    encode_command(&mut cmd, &[b"ROLE".as_slice()]);
    let role = request(&mut stream, &cmd)
        .await
        .map_err(|_| ProbeFailure::Error)?;
    let first = match &role {
        sumun_wire::resp::Value::Array(items) => items.first(),
        _ => None,
    };
    let role = match first {
        Some(sumun_wire::resp::Value::Bulk(b)) if b.as_slice() == b"master" => {
            sumun_config::Role::Primary
        }
        Some(sumun_wire::resp::Value::Bulk(b)) if b.as_slice() == b"slave" => {
            sumun_config::Role::Replica
        }
        _ => return Err(ProbeFailure::Error),
    };
    let _ = stream.shutdown().await;
    Ok(crate::health::Learned { role, lag_ms: 0 })
}

/// Send one command the gateway makes and read its one reply.
async fn request(stream: &mut Box<dyn Io>, cmd: &[u8]) -> Result<sumun_wire::resp::Value, String> {
    stream.write_all(cmd).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16384];
    loop {
        if let Some((value, _)) = decoder.decode(&buf).map_err(|e| e.to_string())? {
            return Ok(value);
        }
        let n =
            crate::workers::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .map_err(|_| "no answer within 10 s".to_string())?
                .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 << 20 {
            return Err("an answer over 64 MiB".into());
        }
    }
}

/// A reply the client is owed, in order: the server's next one, or one the gateway made.
enum Slot {
    Server,
    Local(Vec<u8>),
}

struct Session<'a> {
    fe: &'a RedisFrontEnd,
    shared: &'a Shared,
    listener: &'a str,
    client_addr: std::net::SocketAddr,
    user: &'a str,
    acl: RedisAcl,
    /// The user's rules allow everything (no scripting restriction needed).
    unrestricted: bool,
    table: Arc<CommandTable>,
    splitter: Splitter,
    framer: ReplyFramer,
    pending: VecDeque<Slot>,
    /// The server may send without being asked (RESP2 pub/sub, `MONITOR`, `CLIENT REPLY
    /// OFF`): its frames are passed on as they come and no longer matched to commands.
    passthrough: bool,
    flow: &'a crate::records::ActiveFlow,
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Timer,
    Stop,
}

/// Close the flow with a `session.end` event.
fn end_flow(
    shared: &Shared,
    listener: &crate::listener::ListenerRt,
    flow: &crate::records::ActiveFlow,
    end: &str,
    user: Option<&str>,
) {
    crate::frontend::end_session(
        shared,
        listener,
        flow,
        &crate::frontend::SessionEnd {
            end,
            user,
            ..Default::default()
        },
    );
}

/// A `command.denied` audit event: the command and why, never its keys.
fn audit_denied(
    shared: &Shared,
    listener: &str,
    client: std::net::SocketAddr,
    user: &str,
    command: &str,
    reason: &str,
) {
    shared
        .records
        .audit("command.denied", listener, client, || {
            let mut extra = serde_json::Map::new();
            extra.insert("user".into(), user.into());
            extra.insert("command".into(), command.into());
            extra.insert("reason".into(), reason.into());
            extra
        });
}

impl Session<'_> {
    async fn relay(
        &mut self,
        client: &mut Box<dyn Io>,
        server: &mut Box<dyn Io>,
        cbuf: &mut Vec<u8>,
        idle: std::time::Duration,
    ) -> &'static str {
        let stop = self.shared.stop.wait();
        tokio::pin!(stop);
        // The data plane's alarm (worker event loops have no tokio timers): it rings at the
        // deadline as of its last setting; a client read only moves `deadline` on.
        let mut deadline = std::time::Instant::now().checked_add(idle);
        let mut timer = crate::workers::Alarm::new();
        if let Some(at) = deadline {
            timer.set(at);
        }
        let mut cchunk = vec![0u8; 16384];
        let mut schunk = vec![0u8; 16384];
        let mut sbuf: Vec<u8> = Vec::new();
        loop {
            match self.on_client(client, server, cbuf).await {
                Ok(true) => {}
                Ok(false) => return "closed",
                Err(end) => return end,
            }
            let event = tokio::select! {
                biased;
                r = server.read(&mut schunk) => Event::Server(r),
                // A client far ahead of its replies is not read until they catch up (as Redis
                // stops reading a client whose output is backed up).
                r = client.read(&mut cchunk), if self.pending.len() < MAX_PENDING => Event::Client(r),
                () = timer.rung() => Event::Timer,
                () = &mut stop => Event::Stop,
            };
            match event {
                Event::Server(Ok(0)) | Event::Server(Err(_)) => return "server_lost",
                Event::Server(Ok(n)) => {
                    sbuf.extend_from_slice(&schunk[..n]);
                    if let Err(end) = self.on_server(client, &mut sbuf).await {
                        return end;
                    }
                }
                Event::Client(Ok(0)) => return "closed",
                Event::Client(Err(_)) => return "client_error",
                Event::Client(Ok(n)) => {
                    count(&self.flow.counters, true, n);
                    cbuf.extend_from_slice(&cchunk[..n]);
                    if cbuf.len() > MAX_QUERY_BUFFER {
                        // Redis's client-query-buffer-limit (1 GiB there): the client is closed.
                        tracing::info!(listener = %self.listener, client = %self.client_addr, "closing a client that reached the query buffer limit");
                        return "query_buffer_limit";
                    }
                    deadline = std::time::Instant::now().checked_add(idle);
                }
                Event::Timer => {
                    let now = std::time::Instant::now();
                    match deadline {
                        // Rang for an earlier deadline: a client read moved it on.
                        Some(at) if now < at => timer.set(at),
                        _ => {
                            if self.pending.is_empty() {
                                return "idle_timeout";
                            }
                            deadline = now.checked_add(idle);
                            if let Some(at) = deadline {
                                timer.set(at);
                            }
                        }
                    }
                }
                Event::Stop => return "drained",
            }
        }
    }

    /// Split what the client sent into commands, check each, forward the allowed ones in one
    /// write, and answer the refused ones in their place. `Ok(false)`: the client quit.
    async fn on_client(
        &mut self,
        client: &mut Box<dyn Io>,
        server: &mut Box<dyn Io>,
        cbuf: &mut Vec<u8>,
    ) -> Result<bool, &'static str> {
        let mut out = Vec::new();
        let mut at = 0;
        let mut quit = false;
        loop {
            let cmd = match self.splitter.split(&cbuf[at..]) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let _ = reply(client, format!("-{}\r\n", e.reply()).as_bytes()).await;
                    return Err("protocol_error");
                }
            };
            let len = cmd.len();
            if cmd.is_empty() {
                at += len;
                continue;
            }
            let name = cmd.name().unwrap_or_default().to_ascii_lowercase();
            let local = match name.as_slice() {
                b"quit" => {
                    quit = true;
                    Some(b"+OK\r\n".to_vec())
                }
                b"auth" => Some(
                    b"-ERR Sumun: AUTH on an open connection is not supported; open a new connection to log in as another user\r\n"
                        .to_vec(),
                ),
                b"hello" if cmd.args().any(|a| a.eq_ignore_ascii_case(b"auth")) => Some(
                    b"-ERR Sumun: HELLO with AUTH on an open connection is not supported; open a new connection to log in as another user\r\n"
                        .to_vec(),
                ),
                _ => match self.acl.check(&self.table, &cmd) {
                    // A script runs with the server-side user's rights, not the client's: a
                    // user with rules could reach through it what the rules keep out
                    // (`EVAL "return redis.call('FLUSHALL')" 0`). Only users without rules may
                    // run scripts.
                    Verdict::Allowed(info)
                        if !self.unrestricted
                            && info.categories.iter().any(|c| c == "scripting") =>
                    {
                        self.fe.stats.denied.fetch_add(1, Ordering::Relaxed);
                        audit_denied(
                            self.shared,
                            self.listener,
                            self.client_addr,
                            self.user,
                            &info.name,
                            "scripting",
                        );
                        Some(format!(
                            "-NOPERM User {} has no permissions to run the '{}' command: scripts run with the gateway's server-side rights, so the gateway refuses them to users with redis_acl rules\r\n",
                            self.user,
                            info.name
                        )
                        .into_bytes())
                    }
                    Verdict::Allowed(_) => None,
                    Verdict::Denied(denial) => {
                        self.fe.stats.denied.fetch_add(1, Ordering::Relaxed);
                        audit_denied(
                            self.shared,
                            self.listener,
                            self.client_addr,
                            self.user,
                            &denial.command,
                            denial.kind.as_str(),
                        );
                        Some(format!("-{}\r\n", denial.reply(self.user, Wording::Redis70)).into_bytes())
                    }
                },
            };
            match local {
                Some(bytes) => self.pending.push_back(Slot::Local(bytes)),
                None => {
                    // Commands after which the server speaks unasked (RESP2 pub/sub, MONITOR,
                    // CLIENT REPLY OFF|SKIP): from then on its frames go through as they come.
                    let sub = matches!(
                        name.as_slice(),
                        b"subscribe" | b"psubscribe" | b"ssubscribe" | b"monitor"
                    ) || (name == b"client"
                        && cmd.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"reply")));
                    out.extend_from_slice(&cbuf[at..at + len]);
                    self.fe.stats.commands.fetch_add(1, Ordering::Relaxed);
                    // A subscription's confirmations are not matched to it (in RESP3 they are
                    // pushes): from here on frames go through as they come.
                    if !self.passthrough && !sub {
                        self.pending.push_back(Slot::Server);
                    }
                    if sub {
                        self.passthrough = true;
                    }
                }
            }
            at += len;
            if quit {
                break;
            }
        }
        cbuf.drain(..at);
        if !out.is_empty() {
            server.write_all(&out).await.map_err(|_| "server_lost")?;
            server.flush().await.map_err(|_| "server_lost")?;
        }
        // The gateway's own answers that nothing of the server's is ahead of.
        let mut local = Vec::new();
        while let Some(Slot::Local(_)) = self.pending.front() {
            if let Some(Slot::Local(bytes)) = self.pending.pop_front() {
                local.extend_from_slice(&bytes);
            }
        }
        if !local.is_empty() {
            count(&self.flow.counters, false, local.len());
            reply(client, &local).await.map_err(|_| "client_error")?;
        }
        Ok(!quit)
    }

    /// Pass the server's frames to the client, each reply followed by the gateway's own
    /// answers queued behind it.
    async fn on_server(
        &mut self,
        client: &mut Box<dyn Io>,
        sbuf: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        let mut out = Vec::with_capacity(sbuf.len());
        let mut pos = 0;
        loop {
            let adv = self
                .framer
                .advance(&sbuf[pos..])
                .map_err(|_| "server_protocol_error")?;
            out.extend_from_slice(&sbuf[pos..pos + adv.consumed]);
            pos += adv.consumed;
            match adv.complete {
                None => break,
                Some(FrameKind::Push) => {}
                Some(FrameKind::Reply | FrameKind::Error) => {
                    if !self.passthrough || matches!(self.pending.front(), Some(Slot::Server)) {
                        if let Some(Slot::Server) = self.pending.front() {
                            self.pending.pop_front();
                        }
                    }
                    while let Some(Slot::Local(_)) = self.pending.front() {
                        if let Some(Slot::Local(bytes)) = self.pending.pop_front() {
                            out.extend_from_slice(&bytes);
                        }
                    }
                }
            }
            if pos == sbuf.len() {
                break;
            }
        }
        sbuf.drain(..pos);
        if !out.is_empty() {
            count(&self.flow.counters, false, out.len());
            reply(client, &out).await.map_err(|_| "client_error")?;
        }
        Ok(())
    }
}
