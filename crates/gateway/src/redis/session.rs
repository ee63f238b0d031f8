//! A Redis client's connection: TLS, the login, its server, and the checked relay.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sumun_config::TlsMode;
use sumun_policy::redis_acl::{AclRules, RedisAcl};
use sumun_vault::SecretBytes;
use sumun_wire::resp::table::CommandTable;
use sumun_wire::resp::{encode_command, Decoder, Limits, Splitter, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pool::{DedicatedCount, Sink};
use super::relay::{hello_reply, Backend, Dedicated, Owed, Session, Slot};
use super::{ClientRow, RedisFrontEnd};
use crate::backend_tls::TlsTo;
use crate::conn::TargetActive;
use crate::frontend::Accepted;
use crate::listener::ListenerSnapshot;
use crate::metrics::RejectReason;
use crate::targets::Want;
use crate::Shared;

/// The most a client's one argument may be: the gateway holds a command whole before it
/// forwards it (to check its keys), so this bounds a client's buffer.
const MAX_ARGUMENT: u64 = 64 << 20;
const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";

/// A stream that is a plain socket or TLS, either side.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
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
    // Transaction mode (the default for Redis) multiplexes; session mode gives every client a
    // server connection of its own.
    let session_mode =
        account.pool_mode.unwrap_or(snap.settings.pool.mode) == sumun_config::PoolMode::Session;
    // The protocol and name the client's HELLO asks for (`HELLO 3 AUTH u t SETNAME n`).
    let mut proto = 2u8;
    let mut name: Option<Vec<u8>> = None;
    let mut hello_error: Option<&'static [u8]> = None;
    if let Some(args) = &hello {
        let mut i = 1;
        if let Some(p) = args.get(1) {
            match sumun_wire::resp::parse_integer(p) {
                Some(p @ (2 | 3)) => proto = p as u8,
                _ => hello_error = Some(b"-NOPROTO unsupported protocol version\r\n"),
            }
            i = 2;
        }
        while i + 1 < args.len() {
            if args[i].eq_ignore_ascii_case(b"setname")
                && super::classify::valid_client_name(&args[i + 1])
            {
                name = (!args[i + 1].is_empty()).then(|| args[i + 1].clone());
            }
            i += 2;
        }
    }
    if hello_error.is_some() {
        proto = 2;
    }
    let id = fe.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let sink = Arc::new(Sink::default());
    let _sink_closed = SinkClosed(sink.clone());
    // The server: a shared connection of the client's pool, or one of its own.
    let backend = if session_mode {
        match connect(&fe, &shared, &snap, &account).await {
            Ok(server) => match fe.resolve_pool(&shared, &snap, &account, 0, proto) {
                Ok((pool, _)) => Ok((server.table.clone(), server.target.address.clone(), {
                    let Server {
                        stream,
                        target,
                        _active,
                        ..
                    } = server;
                    *flow.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target.addr);
                    Backend::Dedicated(Box::new(Dedicated::new(
                        stream,
                        _active,
                        DedicatedCount::new(&pool, "session"),
                    )))
                })),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    } else {
        match fe.checkout(&shared, &snap, &account, 0, proto).await {
            Ok((pool, opener, conn)) => {
                *flow.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(pool.target.addr);
                pool.target.flows_total.fetch_add(1, Ordering::Relaxed);
                match fe.table(&snap.group.name) {
                    Some(table) => Ok((
                        table,
                        pool.target.address.clone(),
                        Backend::Mux {
                            pool,
                            opener,
                            conn: Some(conn),
                        },
                    )),
                    None => Err("the server's command table is not known".to_string()),
                }
            }
            Err(e) => Err(e),
        }
    };
    let (table, server_address, backend) = match backend {
        Ok(b) => b,
        Err(why) => {
            tracing::warn!(listener = %listener.name, client = %admitted.client, user = %user, error = %why, "no Redis server for the client");
            let _ = reply(&mut client, format!("-ERR {why}\r\n").as_bytes()).await;
            end_flow(&shared, &listener, &flow, "no_backend", Some(&user));
            return;
        }
    };
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
    let limits = Limits::default().with_max_bulk_len(MAX_ARGUMENT);
    let mut s = Session {
        fe: &fe,
        shared: &shared,
        snap: &snap,
        account: &account,
        listener: &listener.name,
        laddr: listener.local_addr,
        client_addr: admitted.client,
        user: &user,
        unrestricted: acl.is_unrestricted(),
        acl,
        table,
        splitter: Splitter::new(limits),
        limits,
        owed: Owed::default(),
        flow: &flow,
        backend,
        sink,
        session_mode,
        id,
        started: std::time::Instant::now(),
        name,
        db: 0,
        proto,
        in_multi: false,
        multi_dirty: false,
        quitting: false,
    };
    // The answer to the login: the client's HELLO (protocol version, name) goes to a
    // dedicated server, which answers it; a multiplexed client's is answered from its pool's
    // HELLO reply with the client's own id.
    let answer = match (&hello, &mut s.backend) {
        (Some(_), _) if hello_error.is_some() => hello_error.map(<[u8]>::to_vec),
        (Some(args), Backend::Dedicated(d)) => {
            let mut cmd = Vec::new();
            encode_command(&mut cmd, args);
            if d.stream.write_all(&cmd).await.is_err() {
                end_flow(&shared, &listener, &flow, "server_lost", Some(&user));
                return;
            }
            s.owed.push_server(Slot::Server);
            None
        }
        (Some(_), Backend::Mux { pool, .. }) => Some(hello_reply(pool.hello().as_deref(), id)),
        (None, _) => Some(b"+OK\r\n".to_vec()),
    };
    if let Some(answer) = answer {
        if reply(&mut client, &answer).await.is_err() {
            end_flow(&shared, &listener, &flow, "client_error", Some(&user));
            return;
        }
    }
    fe.stats.logins.fetch_add(1, Ordering::Relaxed);
    listener.metrics.new_flows.fetch_add(1, Ordering::Relaxed);
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
            server: server_address.clone(),
            pool_mode: if session_mode {
                "session"
            } else {
                "transaction"
            },
            dedicated: session_mode.then_some("session"),
        },
    );
    let _registered = Registered(fe.clone(), id);
    shared
        .records
        .audit("session.start", &listener.name, admitted.client, || {
            let mut extra = serde_json::Map::new();
            extra.insert("user".into(), user.clone().into());
            extra.insert("session_id".into(), session_id.clone().into());
            extra.insert("target".into(), server_address.clone().into());
            extra
        });
    let end = s
        .relay(&mut client, &mut cbuf, snap.settings.idle_limit())
        .await;
    drop(s);
    end_flow(&shared, &listener, &flow, end, Some(&user));
}

/// Tells the shared connections that the client is gone: replies still owed to it are read
/// and dropped.
struct SinkClosed(Arc<Sink>);

impl Drop for SinkClosed {
    fn drop(&mut self) {
        self.0.close();
    }
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

pub(super) async fn reply(client: &mut Box<dyn Io>, bytes: &[u8]) -> std::io::Result<()> {
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

pub(super) struct Server {
    pub stream: Box<dyn Io>,
    pub table: Arc<CommandTable>,
    pub target: Arc<crate::targets::TargetRt>,
    pub _active: TargetActive,
}

/// Connect to a writable target and log in with the account's vault credential; learn the
/// group's command table at the first login.
pub(super) async fn connect(
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
        let table = learn_table(fe, &group.name, &mut stream, &target.address).await?;
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

/// The group's command table: known, or learned from this server's `COMMAND` reply.
async fn learn_table(
    fe: &RedisFrontEnd,
    group: &str,
    stream: &mut Box<dyn Io>,
    address: &str,
) -> Result<Arc<CommandTable>, String> {
    if let Some(t) = fe.table(group) {
        return Ok(t);
    }
    let mut cmd = Vec::new();
    encode_command(&mut cmd, &[b"COMMAND".as_slice()]);
    let reply = request(stream, &cmd)
        .await
        .map_err(|e| format!("the server at {address}: COMMAND: {e}"))?;
    let table = Arc::new(
        CommandTable::from_reply(&reply)
            .map_err(|e| format!("the server at {address}: COMMAND: {e}"))?,
    );
    fe.learn_table(group, table.clone());
    Ok(table)
}

/// How a pool opens its shared connections to `target`: logged in with the vault secret,
/// `HELLO proto` (its reply kept as the template of the gateway's HELLO answers) and `SELECT
/// db`.
pub(super) fn opener(
    fe: Arc<RedisFrontEnd>,
    shared: Arc<Shared>,
    group: Arc<sumun_config::TargetGroup>,
    target: Arc<crate::targets::TargetRt>,
    credential: String,
    db: i64,
    proto: u8,
) -> super::pool::Opener {
    Arc::new(move || {
        let (fe, shared, group, target, credential) = (
            fe.clone(),
            shared.clone(),
            group.clone(),
            target.clone(),
            credential.clone(),
        );
        Box::pin(
            async move { open_shared(&fe, &shared, &group, &target, &credential, db, proto).await },
        )
    })
}

async fn open_shared(
    fe: &RedisFrontEnd,
    shared: &Shared,
    group: &sumun_config::TargetGroup,
    target: &crate::targets::TargetRt,
    credential: &str,
    db: i64,
    proto: u8,
) -> Result<(Box<dyn Io>, Vec<u8>), String> {
    let vault = shared.vault.load_full().ok_or("the gateway has no vault")?;
    let cred = vault
        .backend_credential(credential)
        .map_err(|e| format!("vault secret '{credential}': {e}"))?;
    let tcp = match crate::workers::timeout(group.connect_timeout, TcpStream::connect(target.addr))
        .await
    {
        Ok(Ok(s)) => s,
        _ => {
            target.connect_errors.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "no backend server is available: cannot connect to {}",
                target.address
            ));
        }
    };
    let mut stream = login_on(tcp, group, &target.address, &cred)
        .await
        .map_err(|e| match e {
            Failed::Target(w) | Failed::Login(w) => w,
        })?;
    learn_table(fe, &group.name, &mut stream, &target.address).await?;
    let mut cmd = Vec::new();
    encode_command(
        &mut cmd,
        &[b"HELLO".to_vec(), proto.to_string().into_bytes()],
    );
    let hello = request(&mut stream, &cmd)
        .await
        .map_err(|e| format!("the server at {}: HELLO: {e}", target.address))?;
    if proto == 3 && matches!(hello, Value::Error(_) | Value::BlobError(_)) {
        return Err(format!(
            "the server at {} does not speak RESP3",
            target.address
        ));
    }
    let mut template = Vec::new();
    hello.encode(&mut template);
    if db != 0 {
        let mut cmd = Vec::new();
        encode_command(&mut cmd, &[b"SELECT".to_vec(), db.to_string().into_bytes()]);
        match request(&mut stream, &cmd).await {
            Ok(Value::Error(e)) | Ok(Value::BlobError(e)) => {
                return Err(String::from_utf8_lossy(&e).into_owned())
            }
            Ok(_) => {}
            Err(e) => return Err(format!("the server at {}: SELECT: {e}", target.address)),
        }
    }
    Ok((stream, template))
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
pub(super) async fn request(
    stream: &mut Box<dyn Io>,
    cmd: &[u8],
) -> Result<sumun_wire::resp::Value, String> {
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
pub(super) fn audit_denied(
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
