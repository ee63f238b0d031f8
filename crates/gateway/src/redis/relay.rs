//! A logged-in client's session: its commands checked and routed, its replies in order.
//!
//! A client is served in one of two ways. **Multiplexed** (transaction mode): its commands go
//! to a shared server connection of its pool, a batch at a time, and its replies come back
//! through its [`Sink`]. **Dedicated**: a server connection of its own (session mode, or a
//! multiplexed client that needs connection state: pub/sub, `WATCH`, a transaction split over
//! round trips, blocking commands, client tracking, `MONITOR`, `CLIENT REPLY`). A dedicated
//! client keeps its connection until it disconnects or sends `RESET`.
//!
//! Commands that change what a shared connection must be (another db, another protocol, a
//! dedicated connection, `RESET`) are *barriers*: the client's earlier commands are answered
//! first, then the switch is made, so a client's commands always run in order on one
//! connection at a time.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sumun_policy::redis_acl::{RedisAcl, Verdict, Wording};
use sumun_wire::resp::table::CommandTable;
use sumun_wire::resp::{
    encode_command, CommandKind, FrameKind, Limits, ReplyFramer, Splitter, Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::classify::{classify, valid_client_name, Class, LocalCmd};
use super::pool::{Batch, DedicatedCount, MuxPool, Opener, SharedConn, Sink, SinkStatus};
use super::session::{self, audit_denied, Io};
use super::RedisFrontEnd;
use crate::conn::TargetActive;
use crate::frontend::count;
use crate::listener::ListenerSnapshot;
use crate::Shared;

/// Replies owed to a client (commands sent and not yet answered) before it is read no more.
pub(super) const MAX_PENDING: usize = 16 * 1024;
/// The most bytes of a client's commands held (a command is held whole before it is checked).
pub(super) const MAX_QUERY_BUFFER: usize = 256 << 20;
const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";

/// A reply the client is owed, in order.
pub(super) enum Slot {
    /// The server's next reply.
    Server,
    /// The server's next reply is dropped and this sent instead (`EXEC` of a transaction the
    /// gateway refused a command of went to the server as `DISCARD`).
    Replace(Vec<u8>),
    /// One the gateway made.
    Local(Vec<u8>),
}

/// The replies a client is owed.
#[derive(Default)]
pub(super) struct Owed {
    pub pending: VecDeque<Slot>,
    /// `Server` and `Replace` slots in `pending`.
    pub server: usize,
    /// The server may send without being asked (RESP2 pub/sub, `MONITOR`, `CLIENT REPLY
    /// OFF`): its frames are passed on as they come and no longer matched to commands.
    pub passthrough: bool,
}

impl Owed {
    pub fn push_server(&mut self, slot: Slot) {
        self.pending.push_back(slot);
        self.server += 1;
    }

    /// The gateway's own answers that nothing of the server's is ahead of.
    pub fn flush_locals(&mut self, out: &mut Vec<u8>) {
        while let Some(Slot::Local(_)) = self.pending.front() {
            if let Some(Slot::Local(bytes)) = self.pending.pop_front() {
                out.extend_from_slice(&bytes);
            }
        }
    }

    /// Bytes of the server's current reply (`complete` when they end it).
    fn segment(&mut self, seg: &[u8], complete: bool, push: bool, out: &mut Vec<u8>) {
        let replaced = matches!(self.pending.front(), Some(Slot::Replace(_)));
        if push || !replaced {
            out.extend_from_slice(seg);
        }
        if complete && !push {
            match self.pending.front() {
                Some(Slot::Server) => {
                    self.pending.pop_front();
                    self.server -= 1;
                }
                Some(Slot::Replace(_)) => {
                    if let Some(Slot::Replace(bytes)) = self.pending.pop_front() {
                        out.extend_from_slice(&bytes);
                    }
                    self.server -= 1;
                }
                // A frame nobody asked for (pub/sub, MONITOR): passed on as it is.
                _ => {}
            }
        }
        if complete {
            self.flush_locals(out);
        }
    }

    /// Whether replies from a shared connection (`ends` of them complete, and part of one
    /// more when `partial`) are all the server's own, with no answer of the gateway's to slot in: then
    /// they go to the client as they are, and their slots are taken here.
    pub fn take_plain(&mut self, ends: usize, partial: bool) -> bool {
        let need = ends + usize::from(partial);
        let plain = self.pending.len() >= need
            && self
                .pending
                .iter()
                .take(need)
                .all(|s| matches!(s, Slot::Server))
            // Answers of the gateway's right behind the last complete reply go out with it.
            && (partial || !matches!(self.pending.get(ends), Some(Slot::Local(_))));
        if plain {
            self.pending.drain(..ends);
            self.server -= ends;
        }
        plain
    }

    /// Replies from a shared connection: `bytes`, each whole reply ending at an offset in
    /// `ends` (the last may be unfinished).
    pub fn deliver(&mut self, bytes: &[u8], ends: &[usize], out: &mut Vec<u8>) {
        let mut i = 0;
        for &e in ends {
            self.segment(&bytes[i..e], true, false, out);
            i = e;
        }
        if i < bytes.len() {
            self.segment(&bytes[i..], false, false, out);
        }
    }
}

/// A server connection of the client's own.
pub(super) struct Dedicated {
    pub stream: Box<dyn Io>,
    pub framer: ReplyFramer,
    pub sbuf: Vec<u8>,
    /// The frame being read is a RESP3 push.
    pub push: bool,
    pub _active: TargetActive,
    pub _count: DedicatedCount,
}

impl Dedicated {
    pub fn new(stream: Box<dyn Io>, active: TargetActive, count: DedicatedCount) -> Dedicated {
        Dedicated {
            stream,
            framer: ReplyFramer::new(Limits::default()),
            sbuf: Vec::new(),
            push: false,
            _active: active,
            _count: count,
        }
    }
}

pub(super) enum Backend {
    Mux {
        pool: Arc<MuxPool>,
        opener: Opener,
        conn: Option<Arc<SharedConn>>,
    },
    Dedicated(Box<Dedicated>),
}

pub(super) struct Session<'a> {
    pub fe: &'a Arc<RedisFrontEnd>,
    pub shared: &'a Arc<Shared>,
    pub snap: &'a ListenerSnapshot,
    pub account: &'a sumun_config::User,
    pub listener: &'a str,
    pub laddr: std::net::SocketAddr,
    pub client_addr: std::net::SocketAddr,
    pub user: &'a str,
    pub acl: RedisAcl,
    /// The user's rules allow everything (no scripting restriction needed).
    pub unrestricted: bool,
    pub table: Arc<CommandTable>,
    pub splitter: Splitter,
    /// The splitter's limits.
    pub limits: Limits,
    pub owed: Owed,
    pub flow: &'a crate::records::ActiveFlow,
    pub backend: Backend,
    pub sink: Arc<Sink>,
    /// Session mode: every client dedicated from its login.
    pub session_mode: bool,
    /// The gateway's id of this client (`CLIENT ID`).
    pub id: u64,
    pub started: std::time::Instant,
    pub name: Option<Vec<u8>>,
    pub db: i64,
    pub proto: u8,
    pub in_multi: bool,
    /// A command of the open transaction was refused: `EXEC` aborts it.
    pub multi_dirty: bool,
    /// `QUIT` (or `CLIENT KILL` of itself) was answered: end once every reply is out.
    pub quitting: bool,
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Sink,
    Timer,
    Stop,
}

/// What to do with the command at hand.
enum Step {
    /// Send it to the server (replace `EXEC` with `DISCARD` when `abort` holds the answer).
    Forward { abort: Option<Vec<u8>> },
    /// Answer it here.
    Local(Vec<u8>),
    /// Stop here until the client's earlier replies are out (then do this).
    Barrier(Switch),
    /// The command needs more of the client's bytes to decide (a transaction still arriving).
    Wait,
}

enum Switch {
    Dedicate(&'static str),
    Select(i64),
    Hello,
    Reset,
    OneOff,
}

impl Session<'_> {
    fn dedicated(&self) -> bool {
        matches!(self.backend, Backend::Dedicated(_))
    }

    pub async fn relay(
        &mut self,
        client: &mut Box<dyn Io>,
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
        let sink = self.sink.clone();
        let mut cchunk = vec![0u8; 16384];
        let mut schunk = vec![0u8; 16384];
        let mut sbytes = Vec::new();
        let mut sends = Vec::new();
        loop {
            if let Err(end) = self.on_client(client, cbuf).await {
                return end;
            }
            if self.quitting && self.owed.pending.is_empty() {
                return "closed";
            }
            let can_read = self.owed.pending.len() < MAX_PENDING && !self.quitting;
            let event = match &mut self.backend {
                Backend::Dedicated(d) => tokio::select! {
                    biased;
                    r = d.stream.read(&mut schunk) => Event::Server(r),
                    // A client far ahead of its replies is not read until they catch up (as
                    // Redis stops reading a client whose output is backed up).
                    r = client.read(&mut cchunk), if can_read => Event::Client(r),
                    () = timer.rung() => Event::Timer,
                    () = &mut stop => Event::Stop,
                },
                Backend::Mux { .. } => tokio::select! {
                    biased;
                    () = sink.notify.notified() => Event::Sink,
                    r = client.read(&mut cchunk), if can_read => Event::Client(r),
                    () = timer.rung() => Event::Timer,
                    () = &mut stop => Event::Stop,
                },
            };
            match event {
                Event::Server(Ok(0)) | Event::Server(Err(_)) => return "server_lost",
                Event::Server(Ok(n)) => {
                    if let Err(end) = self.on_server(client, &schunk[..n]).await {
                        return end;
                    }
                }
                Event::Sink => {
                    let status = sink.take(&mut sbytes, &mut sends);
                    let mut out = Vec::new();
                    let partial = sends
                        .last()
                        .map_or(!sbytes.is_empty(), |&e| e < sbytes.len());
                    let bytes = if self.owed.take_plain(sends.len(), partial) {
                        &sbytes
                    } else {
                        self.owed.deliver(&sbytes, &sends, &mut out);
                        &out
                    };
                    if !bytes.is_empty() {
                        count(&self.flow.counters, false, bytes.len());
                        if session::reply(client, bytes).await.is_err() {
                            return "client_error";
                        }
                    }
                    match status {
                        SinkStatus::Ok => {}
                        SinkStatus::Failed => return "server_lost",
                        SinkStatus::Overflow => {
                            tracing::info!(listener = %self.listener, client = %self.client_addr, "closing a client that did not read its replies (output buffer limit)");
                            return "output_buffer_limit";
                        }
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
                            if self.owed.pending.is_empty() {
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
    /// batch, and answer the rest in their place.
    async fn on_client(
        &mut self,
        client: &mut Box<dyn Io>,
        cbuf: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        if self.quitting {
            cbuf.clear();
            return Ok(());
        }
        let mut splitter = std::mem::take(&mut self.splitter);
        let result = self.split_and_route(&mut splitter, client, cbuf).await;
        self.splitter = splitter;
        result
    }

    async fn split_and_route(
        &mut self,
        splitter: &mut Splitter,
        client: &mut Box<dyn Io>,
        cbuf: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        let mut out = Vec::new();
        let mut replies = 0usize;
        let mut at = 0;
        let table = self.table.clone();
        loop {
            let cmd = match splitter.split(&cbuf[at..]) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let _ = session::reply(client, format!("-{}\r\n", e.reply()).as_bytes()).await;
                    return Err("protocol_error");
                }
            };
            let len = cmd.len();
            if cmd.is_empty() {
                at += len;
                continue;
            }
            let name = cmd.name().unwrap_or_default().to_ascii_lowercase();
            let step = match name.as_slice() {
                b"quit" => {
                    self.quitting = true;
                    Step::Local(b"+OK\r\n".to_vec())
                }
                b"auth" => Step::Local(
                    b"-ERR Sumun: AUTH on an open connection is not supported; open a new connection to log in as another user\r\n"
                        .to_vec(),
                ),
                b"hello" if cmd.args().any(|a| a.eq_ignore_ascii_case(b"auth")) => Step::Local(
                    b"-ERR Sumun: HELLO with AUTH on an open connection is not supported; open a new connection to log in as another user\r\n"
                        .to_vec(),
                ),
                _ => match self.acl.check(&table, &cmd) {
                    // A script runs with the server-side user's rights, not the client's: a
                    // user with rules could reach through it what the rules keep out
                    // (`EVAL "return redis.call('FLUSHALL')" 0`). Only users without rules may
                    // run scripts.
                    Verdict::Allowed(info)
                        if !self.unrestricted
                            && info.categories.iter().any(|c| c == "scripting") =>
                    {
                        self.refused(&info.name, "scripting");
                        Step::Local(format!(
                            "-NOPERM User {} has no permissions to run the '{}' command: scripts run with the gateway's server-side rights, so the gateway refuses them to users with redis_acl rules\r\n",
                            self.user,
                            info.name
                        )
                        .into_bytes())
                    }
                    Verdict::Allowed(info) => {
                        let class = classify(info, &cmd);
                        self.decide(class, &cmd, &cbuf[at..], &table)
                    }
                    Verdict::Denied(denial) => {
                        self.refused(&denial.command, denial.kind.as_str());
                        Step::Local(
                            format!("-{}\r\n", denial.reply(self.user, Wording::Redis70))
                                .into_bytes(),
                        )
                    }
                },
            };
            match step {
                Step::Wait => break,
                Step::Local(bytes) => {
                    self.owed.pending.push_back(Slot::Local(bytes));
                    at += len;
                }
                Step::Forward { abort } => {
                    match abort {
                        Some(answer) => {
                            encode_command(&mut out, &[b"DISCARD".as_slice()]);
                            self.owed.push_server(Slot::Replace(answer));
                            replies += 1;
                        }
                        None => {
                            if cmd.kind() == CommandKind::Inline {
                                // Sent as RESP, the one form whose ends the gateway and the
                                // server cannot read differently: on a shared connection one
                                // command more or less than counted would hand a reply to the
                                // wrong client.
                                let args: Vec<&[u8]> = cmd.args().collect();
                                encode_command(&mut out, &args);
                            } else {
                                out.extend_from_slice(&cbuf[at..at + len]);
                            }
                            if !self.owed.passthrough {
                                self.owed.push_server(Slot::Server);
                                replies += 1;
                            }
                        }
                    }
                    self.fe.stats.commands.fetch_add(1, Ordering::Relaxed);
                    at += len;
                }
                Step::Barrier(switch) => {
                    // Everything the client sent before goes out and is answered first.
                    if self.owed.server > 0 || !out.is_empty() {
                        break;
                    }
                    let args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
                    match self.switch(switch, &args).await {
                        // Dedicated now: the command is taken again, forwarded this time.
                        Ok(None) => {}
                        Ok(Some(answer)) => {
                            self.owed.pending.push_back(Slot::Local(answer));
                            at += len;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if self.quitting {
                break;
            }
        }
        cbuf.drain(..at);
        if !out.is_empty() {
            self.send(out, replies).await?;
        }
        let mut local = Vec::new();
        self.owed.flush_locals(&mut local);
        if !local.is_empty() {
            count(&self.flow.counters, false, local.len());
            session::reply(client, &local)
                .await
                .map_err(|_| "client_error")?;
        }
        Ok(())
    }

    fn refused(&mut self, command: &str, reason: &str) {
        self.fe.stats.denied.fetch_add(1, Ordering::Relaxed);
        audit_denied(
            self.shared,
            self.listener,
            self.client_addr,
            self.user,
            command,
            reason,
        );
        // Redis flags a transaction whose command was refused: its EXEC aborts.
        if self.in_multi {
            self.multi_dirty = true;
        }
    }

    /// What an allowed command needs, in the client's current state.
    fn decide(
        &mut self,
        class: Class,
        cmd: &sumun_wire::resp::Command<'_>,
        rest: &[u8],
        table: &CommandTable,
    ) -> Step {
        let dedicated = self.dedicated();
        match class {
            Class::Local(which) => {
                if self.in_multi {
                    return match which {
                        // Queued by the server like any command.
                        LocalCmd::Id | LocalCmd::Getname | LocalCmd::Setname | LocalCmd::Info
                            if dedicated =>
                        {
                            Step::Forward { abort: None }
                        }
                        _ => {
                            self.multi_dirty = true;
                            Step::Local(b"-ERR Sumun: this CLIENT subcommand is not supported inside MULTI\r\n".to_vec())
                        }
                    };
                }
                self.local(which, cmd)
            }
            Class::Plain => Step::Forward { abort: None },
            Class::EndMulti { exec } => {
                let abort = (exec && self.in_multi && self.multi_dirty).then(|| EXECABORT.to_vec());
                self.in_multi = false;
                self.multi_dirty = false;
                Step::Forward { abort }
            }
            Class::Multi => {
                if dedicated || self.in_multi {
                    // (MULTI inside MULTI is the server's error to give.)
                    self.in_multi = true;
                    return Step::Forward { abort: None };
                }
                match self.whole_transaction(rest, table) {
                    Some(true) => {
                        self.in_multi = true;
                        Step::Forward { abort: None }
                    }
                    Some(false) => Step::Barrier(Switch::Dedicate("multi")),
                    None => Step::Wait,
                }
            }
            Class::Dedicate(reason) => {
                if dedicated {
                    if self.in_multi {
                        return Step::Forward { abort: None };
                    }
                    let name = cmd.name().unwrap_or_default();
                    let unasked = matches!(reason, "monitor" | "client_reply")
                        || (reason == "pubsub"
                            && [b"subscribe".as_slice(), b"psubscribe", b"ssubscribe"]
                                .iter()
                                .any(|n| name.eq_ignore_ascii_case(n)));
                    if unasked {
                        // The confirmations of a subscription are not matched to it (in RESP3
                        // they are pushes): from here on frames go through as they come.
                        self.owed.passthrough = true;
                    }
                    Step::Forward { abort: None }
                } else if self.in_multi {
                    // Cannot happen: a shared transaction was checked whole before it began.
                    Step::Local(b"-ERR Sumun: command not allowed in this transaction\r\n".to_vec())
                } else {
                    Step::Barrier(Switch::Dedicate(reason))
                }
            }
            Class::Select => {
                let db = cmd.arg(1).and_then(sumun_wire::resp::parse_integer);
                if dedicated || self.in_multi {
                    if let (Some(db), false) = (db, self.in_multi) {
                        self.db = db;
                    }
                    return Step::Forward { abort: None };
                }
                match db {
                    None => {
                        Step::Local(b"-ERR value is not an integer or out of range\r\n".to_vec())
                    }
                    Some(db) if db == self.db => Step::Local(b"+OK\r\n".to_vec()),
                    Some(db) if !(0..=i32::MAX as i64).contains(&db) => {
                        Step::Local(b"-ERR DB index is out of range\r\n".to_vec())
                    }
                    Some(db) => Step::Barrier(Switch::Select(db)),
                }
            }
            Class::Hello => {
                if dedicated || self.in_multi {
                    if let Some(p) = cmd.arg(1).and_then(sumun_wire::resp::parse_integer) {
                        if (p == 2 || p == 3) && !self.in_multi {
                            self.proto = p as u8;
                        }
                    }
                    return Step::Forward { abort: None };
                }
                Step::Barrier(Switch::Hello)
            }
            Class::Reset => Step::Barrier(Switch::Reset),
            Class::OneOff if dedicated || self.in_multi => Step::Forward { abort: None },
            Class::OneOff => Step::Barrier(Switch::OneOff),
        }
    }

    /// For `MULTI` on a shared connection: whether the whole transaction, up to its `EXEC` or
    /// `DISCARD`, is in `rest` and may run on a shared connection (`Some(true)`), cannot
    /// (`Some(false)`: a dedicated connection), or is still arriving (`None`).
    fn whole_transaction(&self, rest: &[u8], table: &CommandTable) -> Option<bool> {
        let mut s = Splitter::new(self.limits);
        let mut at = 0;
        let mut first = true;
        loop {
            let cmd = match s.split(&rest[at..]) {
                Ok(Some(c)) => c,
                // More is coming when the buffer ends inside a command; when it ends between
                // commands the client may be waiting for MULTI's +OK.
                Ok(None) => return if at < rest.len() { None } else { Some(false) },
                Err(_) => return Some(false),
            };
            let len = cmd.len();
            at += len;
            if cmd.is_empty() {
                continue;
            }
            if first {
                first = false;
                continue;
            }
            let name = cmd.name().unwrap_or_default();
            if name.eq_ignore_ascii_case(b"quit") {
                return Some(false);
            }
            match self.acl.check(table, &cmd) {
                Verdict::Allowed(info) => match classify(info, &cmd) {
                    Class::EndMulti { .. } => return Some(true),
                    Class::Plain => {}
                    _ => return Some(false),
                },
                // Refused here (NOPERM in its place); EXEC then aborts.
                Verdict::Denied(_) => {
                    if name.eq_ignore_ascii_case(b"exec") || name.eq_ignore_ascii_case(b"discard") {
                        return Some(false);
                    }
                }
            }
        }
    }

    /// A command the gateway answers for the client.
    fn local(&mut self, which: LocalCmd, cmd: &sumun_wire::resp::Command<'_>) -> Step {
        match which {
            LocalCmd::Id => Step::Local(format!(":{}\r\n", self.id).into_bytes()),
            LocalCmd::Getname => Step::Local(match &self.name {
                Some(n) => {
                    let mut v = Vec::new();
                    sumun_wire::resp::encode_bulk(&mut v, n);
                    v
                }
                None if self.proto == 3 => b"_\r\n".to_vec(),
                None => b"$-1\r\n".to_vec(),
            }),
            LocalCmd::Setname => {
                let name = cmd.arg(2).unwrap_or_default();
                if !valid_client_name(name) {
                    return Step::Local(b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n".to_vec());
                }
                self.name = (!name.is_empty()).then(|| name.to_vec());
                if self.dedicated() {
                    // The server's connection carries the name too (its CLIENT LIST, logs).
                    Step::Forward { abort: None }
                } else {
                    Step::Local(b"+OK\r\n".to_vec())
                }
            }
            LocalCmd::Info => Step::Local(self.text_reply(&self.client_line("client|info"))),
            LocalCmd::List => {
                // Only the client itself: other clients' connections are not its to see.
                let args: Vec<&[u8]> = cmd.args().skip(2).collect();
                let mut show = true;
                let mut i = 0;
                while i < args.len() {
                    if args[i].eq_ignore_ascii_case(b"id") {
                        show = args[i + 1..]
                            .iter()
                            .any(|a| sumun_wire::resp::parse_integer(a) == Some(self.id as i64));
                        break;
                    } else if args[i].eq_ignore_ascii_case(b"type") && i + 1 < args.len() {
                        let t = args[i + 1].to_ascii_lowercase();
                        let mine: &[u8] = if self.owed.passthrough {
                            b"pubsub"
                        } else {
                            b"normal"
                        };
                        show = t == mine;
                        i += 2;
                    } else {
                        return Step::Local(b"-ERR syntax error\r\n".to_vec());
                    }
                }
                let text = if show {
                    self.client_line("client|list")
                } else {
                    String::new()
                };
                Step::Local(self.text_reply(&text))
            }
            LocalCmd::Kill => self.kill(cmd),
            // Unblocking goes by server connection id, which would reach other clients'
            // connections: no other client is this client's to unblock.
            LocalCmd::Unblock => Step::Local(b":0\r\n".to_vec()),
        }
    }

    /// `CLIENT KILL`: the only connection a client may kill through the gateway is its own.
    fn kill(&mut self, cmd: &sumun_wire::resp::Command<'_>) -> Step {
        let args: Vec<&[u8]> = cmd.args().skip(2).collect();
        if args.len() == 1 {
            // The old form: CLIENT KILL addr:port.
            return if args[0] == self.client_addr.to_string().as_bytes() {
                self.quitting = true;
                Step::Local(b"+OK\r\n".to_vec())
            } else {
                Step::Local(b"-ERR No such client\r\n".to_vec())
            };
        }
        if args.is_empty() || !args.len().is_multiple_of(2) {
            return Step::Local(b"-ERR syntax error\r\n".to_vec());
        }
        let mut skipme = true;
        let mut matches = true;
        for pair in args.chunks(2) {
            let (k, v) = (pair[0].to_ascii_lowercase(), pair[1]);
            match k.as_slice() {
                b"id" => matches &= sumun_wire::resp::parse_integer(v) == Some(self.id as i64),
                b"addr" => matches &= v == self.client_addr.to_string().as_bytes(),
                b"laddr" => matches &= v == self.laddr.to_string().as_bytes(),
                b"user" => matches &= v == self.user.as_bytes(),
                b"type" => {
                    let mine: &[u8] = if self.owed.passthrough {
                        b"pubsub"
                    } else {
                        b"normal"
                    };
                    matches &= v.eq_ignore_ascii_case(mine)
                }
                b"skipme" => {
                    if v.eq_ignore_ascii_case(b"yes") {
                        skipme = true
                    } else if v.eq_ignore_ascii_case(b"no") {
                        skipme = false
                    } else {
                        return Step::Local(b"-ERR syntax error\r\n".to_vec());
                    }
                }
                b"maxage" => {
                    let age = self.started.elapsed().as_secs() as i64;
                    matches &= sumun_wire::resp::parse_integer(v).is_some_and(|m| age >= m)
                }
                _ => return Step::Local(b"-ERR syntax error\r\n".to_vec()),
            }
        }
        if matches && !skipme {
            self.quitting = true;
            Step::Local(b":1\r\n".to_vec())
        } else {
            Step::Local(b":0\r\n".to_vec())
        }
    }

    /// The client's line of `CLIENT LIST` / `CLIENT INFO`, as Redis writes it.
    fn client_line(&self, cmd: &str) -> String {
        let name = self
            .name
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let flags = if self.owed.passthrough {
            "P"
        } else if self.in_multi {
            "x"
        } else {
            "N"
        };
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle=0 flags={} db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={}\n",
            self.id,
            self.client_addr,
            self.laddr,
            name,
            self.started.elapsed().as_secs(),
            flags,
            self.db,
            if self.in_multi { 0 } else { -1 },
            cmd,
            self.user,
            self.proto
        )
    }

    /// A text reply: a verbatim string in RESP3, a bulk string in RESP2 (as Redis does).
    fn text_reply(&self, text: &str) -> Vec<u8> {
        let mut v = Vec::new();
        if self.proto == 3 {
            v.extend_from_slice(format!("={}\r\ntxt:", text.len() + 4).as_bytes());
            v.extend_from_slice(text.as_bytes());
            v.extend_from_slice(b"\r\n");
        } else {
            sumun_wire::resp::encode_bulk(&mut v, text.as_bytes());
        }
        v
    }

    /// Make a switch the client asked for, its earlier replies all out. `Ok(None)`: take the
    /// command again (now dedicated); `Ok(Some(answer))`: the command's answer.
    async fn switch(
        &mut self,
        switch: Switch,
        args: &[Vec<u8>],
    ) -> Result<Option<Vec<u8>>, &'static str> {
        match switch {
            Switch::Dedicate(reason) => match self.dedicate(reason).await {
                Ok(()) => Ok(None),
                Err(e) => Ok(Some(format!("-ERR {e}\r\n").into_bytes())),
            },
            Switch::Select(db) => match self.use_pool(db, self.proto).await {
                Ok(()) => {
                    self.db = db;
                    Ok(Some(b"+OK\r\n".to_vec()))
                }
                Err(e) => Ok(Some(error_reply(&e))),
            },
            Switch::Hello => Ok(Some(self.hello(args).await)),
            Switch::OneOff => {
                let answer =
                    match session::connect(self.fe, self.shared, self.snap, self.account).await {
                        Ok(mut server) => {
                            let mut cmd = Vec::new();
                            encode_command(&mut cmd, args);
                            let answer = session::request(&mut server.stream, &cmd).await;
                            let _ = server.stream.shutdown().await;
                            match answer {
                                Ok(v) => {
                                    let mut out = Vec::new();
                                    v.encode(&mut out);
                                    out
                                }
                                Err(e) => format!("-ERR {e}\r\n").into_bytes(),
                            }
                        }
                        Err(e) => format!("-ERR {e}\r\n").into_bytes(),
                    };
                Ok(Some(answer))
            }
            Switch::Reset => {
                // The client's state as a new connection's; a dedicated connection is closed
                // (its subscriptions, transaction, watches and tracking go with it).
                self.name = None;
                self.db = 0;
                self.proto = 2;
                self.in_multi = false;
                self.multi_dirty = false;
                self.owed.passthrough = false;
                // Replies the old connection still owed (none: this is a barrier, but for
                // frames of a subscription) go with it.
                self.owed.pending.retain(|s| matches!(s, Slot::Local(_)));
                self.owed.server = 0;
                self.fe.set_dedicated(self.id, None);
                if let Err(e) = self.use_pool(0, 2).await {
                    return Ok(Some(error_reply(&e)));
                }
                if self.session_mode {
                    if let Err(e) = self.dedicate("session").await {
                        return Ok(Some(format!("-ERR {e}\r\n").into_bytes()));
                    }
                }
                Ok(Some(b"+RESET\r\n".to_vec()))
            }
        }
    }

    /// `HELLO [proto [SETNAME name]]` of a multiplexed client: answered by the gateway from
    /// the server's own HELLO reply, with the client's id; the protocol picks the pool.
    async fn hello(&mut self, args: &[Vec<u8>]) -> Vec<u8> {
        let mut proto = self.proto;
        let mut i = 1;
        if let Some(p) = args.get(1) {
            match sumun_wire::resp::parse_integer(p) {
                Some(p @ (2 | 3)) => proto = p as u8,
                _ => return b"-NOPROTO unsupported protocol version\r\n".to_vec(),
            }
            i = 2;
        }
        let mut name = None;
        while i < args.len() {
            if args[i].eq_ignore_ascii_case(b"setname") && i + 1 < args.len() {
                if !valid_client_name(&args[i + 1]) {
                    return b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n".to_vec();
                }
                name = Some(args[i + 1].clone());
                i += 2;
            } else {
                return format!(
                    "-ERR Syntax error in HELLO option '{}'\r\n",
                    String::from_utf8_lossy(&args[i])
                )
                .into_bytes();
            }
        }
        if let Err(e) = self.use_pool(self.db, proto).await {
            return error_reply(&e);
        }
        self.proto = proto;
        if let Some(n) = name {
            self.name = (!n.is_empty()).then_some(n);
        }
        match &self.backend {
            Backend::Mux { pool, .. } => hello_reply(pool.hello().as_deref(), self.id),
            Backend::Dedicated(_) => b"-ERR Sumun: no HELLO reply\r\n".to_vec(),
        }
    }

    /// Serve the client from the pool for `db` and `proto` (checking a connection out of it).
    async fn use_pool(&mut self, db: i64, proto: u8) -> Result<(), String> {
        if self.session_mode {
            let (pool, opener) =
                self.fe
                    .resolve_pool(self.shared, self.snap, self.account, db, proto)?;
            self.backend = Backend::Mux {
                pool,
                opener,
                conn: None,
            };
        } else {
            let (pool, opener, conn) = self
                .fe
                .checkout(self.shared, self.snap, self.account, db, proto)
                .await?;
            self.backend = Backend::Mux {
                pool,
                opener,
                conn: Some(conn),
            };
        }
        Ok(())
    }

    /// Move the client to a server connection of its own, in the state it had: its protocol,
    /// db and name.
    pub async fn dedicate(&mut self, reason: &'static str) -> Result<(), String> {
        let server = session::connect(self.fe, self.shared, self.snap, self.account).await?;
        let session::Server {
            mut stream,
            target,
            _active,
            ..
        } = server;
        let mut setup: Vec<Vec<Vec<u8>>> = Vec::new();
        if self.proto == 3 {
            setup.push(vec![b"HELLO".to_vec(), b"3".to_vec()]);
        }
        if self.db != 0 {
            setup.push(vec![b"SELECT".to_vec(), self.db.to_string().into_bytes()]);
        }
        if let Some(n) = &self.name {
            setup.push(vec![b"CLIENT".to_vec(), b"SETNAME".to_vec(), n.clone()]);
        }
        for args in setup {
            let mut cmd = Vec::new();
            encode_command(&mut cmd, &args);
            match session::request(&mut stream, &cmd).await {
                Ok(Value::Error(e)) | Ok(Value::BlobError(e)) => {
                    return Err(format!(
                        "the server refused to set up a connection for the client: {}",
                        String::from_utf8_lossy(&e)
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("the server at {}: {e}", target.address)),
            }
        }
        let (pool, _) =
            self.fe
                .resolve_pool(self.shared, self.snap, self.account, self.db, self.proto)?;
        let counted = DedicatedCount::new(&pool, reason);
        self.backend = Backend::Dedicated(Box::new(Dedicated::new(stream, _active, counted)));
        self.fe
            .set_dedicated(self.id, Some((reason, target.address.clone())));
        *self.flow.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target.addr);
        Ok(())
    }

    /// Send a batch of whole commands owing `replies` replies.
    async fn send(&mut self, out: Vec<u8>, replies: usize) -> Result<(), &'static str> {
        let before = self.owed.server - replies.min(self.owed.server);
        match &mut self.backend {
            Backend::Dedicated(d) => {
                d.stream.write_all(&out).await.map_err(|_| "server_lost")?;
                d.stream.flush().await.map_err(|_| "server_lost")?;
                Ok(())
            }
            Backend::Mux { pool, opener, conn } => {
                let mut batch = Batch {
                    bytes: out,
                    replies,
                    sink: self.sink.clone(),
                };
                for _ in 0..3 {
                    let usable = conn.as_ref().is_some_and(|c| c.alive());
                    if before > 0 {
                        // Earlier replies are owed on the current connection: it alone may
                        // take this batch, or order would be lost.
                        let Some(c) = conn.as_ref().filter(|_| usable) else {
                            return Err("server_lost");
                        };
                        return c.submit(batch).map_err(|_| "server_lost");
                    }
                    if !usable
                        || !pool.target.is_routable()
                        || pool.target.effective_role() == sumun_config::Role::Replica
                    {
                        // The connection or its target failed (or was demoted): a pool on
                        // the group's current writable target.
                        match self
                            .fe
                            .checkout(self.shared, self.snap, self.account, self.db, self.proto)
                            .await
                        {
                            Ok((p, o, c)) => {
                                *pool = p;
                                *opener = o;
                                *conn = Some(c);
                            }
                            Err(e) => {
                                tracing::warn!(listener = %self.listener, client = %self.client_addr, error = %e, "no Redis server connection for a multiplexed client");
                                return Err("no_backend");
                            }
                        }
                    } else if conn.as_ref().is_some_and(|c| c.busy()) {
                        let timeout = self.snap.settings.pool.checkout_timeout;
                        match pool.get(opener, timeout).await {
                            Ok(c) => *conn = Some(c),
                            Err(e) => {
                                tracing::warn!(listener = %self.listener, client = %self.client_addr, error = %e, "no Redis server connection for a multiplexed client");
                                return Err("no_backend");
                            }
                        }
                    }
                    let Some(c) = conn.as_ref() else {
                        return Err("no_backend");
                    };
                    match c.submit(batch) {
                        Ok(()) => return Ok(()),
                        Err(b) => {
                            // Closed before anything of it was written: another connection.
                            batch = b;
                            *conn = None;
                        }
                    }
                }
                Err("server_lost")
            }
        }
    }

    /// Bytes from a dedicated server connection: each reply followed by the gateway's own
    /// answers queued behind it.
    async fn on_server(
        &mut self,
        client: &mut Box<dyn Io>,
        data: &[u8],
    ) -> Result<(), &'static str> {
        let Backend::Dedicated(d) = &mut self.backend else {
            return Ok(());
        };
        d.sbuf.extend_from_slice(data);
        let mut out = Vec::with_capacity(d.sbuf.len());
        let mut pos = 0;
        while pos < d.sbuf.len() {
            if !d.framer.in_frame() {
                d.push = d.sbuf[pos] == b'>';
            }
            let adv = d
                .framer
                .advance(&d.sbuf[pos..])
                .map_err(|_| "server_protocol_error")?;
            let seg = &d.sbuf[pos..pos + adv.consumed];
            pos += adv.consumed;
            match adv.complete {
                None => {
                    self.owed.segment(seg, false, d.push, &mut out);
                    break;
                }
                Some(FrameKind::Push) => self.owed.segment(seg, true, true, &mut out),
                Some(FrameKind::Reply | FrameKind::Error) => {
                    self.owed.segment(seg, true, false, &mut out)
                }
            }
        }
        d.sbuf.drain(..pos);
        if !out.is_empty() {
            count(&self.flow.counters, false, out.len());
            session::reply(client, &out)
                .await
                .map_err(|_| "client_error")?;
        }
        Ok(())
    }
}

/// An error reply for an error text (the server's own, or the gateway's).
fn error_reply(e: &str) -> Vec<u8> {
    let e = e.trim();
    if e.split_whitespace()
        .next()
        .is_some_and(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_uppercase()))
    {
        format!("-{e}\r\n").into_bytes()
    } else {
        format!("-ERR {e}\r\n").into_bytes()
    }
}

/// The server's HELLO reply with the client's id in place of the connection's.
pub(super) fn hello_reply(template: Option<&[u8]>, id: u64) -> Vec<u8> {
    let Some(template) = template else {
        return b"-ERR Sumun: the server's HELLO reply is not known\r\n".to_vec();
    };
    let Ok(Some((mut value, _))) = sumun_wire::resp::decode(template, &Limits::default()) else {
        return b"-ERR Sumun: the server's HELLO reply could not be read\r\n".to_vec();
    };
    let is_id = |v: &Value| matches!(v, Value::Bulk(k) | Value::Simple(k) if k.as_slice() == b"id");
    match &mut value {
        Value::Map(pairs) => {
            for (k, v) in pairs.iter_mut() {
                if is_id(k) {
                    *v = Value::Integer(id as i64);
                }
            }
        }
        Value::Array(items) => {
            let mut i = 0;
            while i + 1 < items.len() {
                if is_id(&items[i]) {
                    items[i + 1] = Value::Integer(id as i64);
                }
                i += 2;
            }
        }
        _ => {}
    }
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}
