//! A logged-in client's session (session mode): the bytes relayed both ways as they come,
//! with the client's commands followed packet by packet so each `COM_QUERY` is audited and
//! counted. The server's answers are passed through unchanged; its errors reach the client in
//! its own words, and when the server closes the connection (`KILL`, a restart) the client's
//! connection closes with it, as it would directly.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use sumun_config::QueryAudit;
use sumun_wire::mysql::flags::COM_QUERY;
use sumun_wire::mysql::packet::MAX_CHUNK;
use sumun_wire::mysql::response::expects_response;
use sumun_wire::mysql::{Capabilities, ResponseTracker, Step};
use sumun_wire::sql;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client::LoggedIn;
use super::{ClientRow, MysqlFrontEnd};
use crate::records::QueryEvent;
use crate::Shared;

/// Statement text kept for the audit log.
const SQL_KEEP: usize = 16 * 1024;

pub(super) async fn run(fe: &Arc<MysqlFrontEnd>, s: LoggedIn) {
    let LoggedIn {
        client,
        server,
        credential,
        charset,
        user,
        database,
        connection_id,
        caps: s_caps,
        admitted,
        snap,
        listener,
        shared,
        slot,
    } = s;
    let _slot = slot;
    let flow = admitted.flow.clone();
    let session_id = format!("{connection_id:08x}{:08x}", fastrand::u32(..));
    let target = server.as_ref().map(|s| s.target.clone());
    let thread_id = server.as_ref().map(|s| s.thread_id);
    fe.clients.lock().unwrap_or_else(|p| p.into_inner()).insert(
        connection_id,
        ClientRow {
            listener: listener.name.to_string(),
            client: admitted.client.to_string(),
            user: user.clone(),
            database: database.clone(),
            pool_mode: if server.is_some() {
                "session"
            } else {
                "transaction"
            },
            session_id: session_id.clone(),
            connected_at: flow.start,
            server: target.as_ref().map(|t| t.address.clone()),
            server_connection_id: thread_id.unwrap_or(0),
            connection_id,
        },
    );
    let _registered = Registered(fe.clone(), connection_id);
    let started = std::time::Instant::now();
    let session_id_copy = session_id.clone();
    listener.metrics.new_flows.fetch_add(1, Ordering::Relaxed);
    shared
        .records
        .audit("session.start", &listener.name, admitted.client, || {
            let mut extra = serde_json::Map::new();
            extra.insert("user".into(), user.clone().into());
            extra.insert("database".into(), database.clone().into());
            extra.insert("session_id".into(), session_id.clone().into());
            if let (Some(t), Some(id)) = (&target, thread_id) {
                extra.insert("target".into(), t.address.clone().into());
                extra.insert("server_connection_id".into(), id.into());
            }
            extra
        });
    let mask = match snap.settings.audit_queries {
        QueryAudit::Off => None,
        QueryAudit::Masked => Some(true),
        QueryAudit::Full => Some(false),
    };
    let database_copy = database.clone();
    let events = Events {
        fe: fe.clone(),
        shared: shared.clone(),
        mask: mask.filter(|_| shared.records.wants_statements()),
        listener: listener.name.clone(),
        client: admitted.client,
        user: user.clone(),
        database: database.clone(),
        session_id,
        target: target.as_ref().map_or(String::new(), |t| t.address.clone()),
    };
    let (Some(server), Some(target)) = (server, target) else {
        // Transaction mode.
        let idle = snap.settings.idle_limit();
        let ctx = super::txn::Context {
            fe: fe.clone(),
            shared: shared.clone(),
            snap: snap.clone(),
            credential,
            caps: s_caps,
            charset,
            database,
            events,
            flow: flow.clone(),
            connection_id,
        };
        let (end, queries) = super::txn::run(ctx, client, idle).await;
        crate::frontend::end_session(
            &shared,
            &listener,
            &flow,
            &crate::frontend::SessionEnd {
                end,
                user: Some(&user),
                database: Some(&database_copy),
                session_id: Some(&session_id_copy),
                queries: Some(queries),
                started: Some(started),
                target: None,
            },
        );
        return;
    };
    let _ = (credential, charset);
    let track = Arc::new(Mutex::new(Track {
        pending: VecDeque::new(),
        queries: 0,
        quit: false,
        lost: false,
        events,
    }));
    let mut audited = Watched {
        inner: client.stream,
        observer: Commands {
            scan: Scan::default(),
            track: track.clone(),
            caps: s_caps,
            kill: KillRoute {
                fe: fe.clone(),
                target: target.address.clone(),
            },
        },
    };
    let mut server_stream = Watched {
        inner: server.packets.stream,
        observer: Answers {
            scan: ServerScan::default(),
            track,
        },
    };
    // Whatever the client sent after its login and before this point is already in the
    // buffer: it goes first (through the same scan).
    let mut early = client.buf;
    if !early.is_empty() {
        audited.observer.observe(&mut early);
        if tokio::io::AsyncWriteExt::write_all(&mut server_stream, &early)
            .await
            .is_err()
        {
            return;
        }
    }
    let mut server_early = server.packets.buf;
    if !server_early.is_empty()
        && tokio::io::AsyncWriteExt::write_all(&mut audited.inner, &server_early)
            .await
            .is_err()
    {
        return;
    }
    server_early.clear();
    let stop = crate::conn::stop_signal(target.drain_watch(), shared.phase.clone());
    let end = crate::relay::relay(
        &mut audited,
        &mut server_stream,
        &flow.counters,
        &listener.metrics,
        snap.settings.idle_limit(),
        stop,
    )
    .await;
    let (queries, quit) = {
        let t = audited
            .observer
            .track
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (t.queries, t.quit)
    };
    let how = match &end {
        crate::relay::RelayEnd::Finished => "closed",
        // A client that sent COM_QUIT and then reset the connection left normally.
        crate::relay::RelayEnd::ClientError(_) if quit => "closed",
        crate::relay::RelayEnd::IdleTimeout => "idle_timeout",
        crate::relay::RelayEnd::Stopped => "drained",
        crate::relay::RelayEnd::ClientError(_) => "client_error",
        crate::relay::RelayEnd::TargetError(_) => "server_lost",
    };
    crate::frontend::end_session(
        &shared,
        &listener,
        &flow,
        &crate::frontend::SessionEnd {
            end: how,
            user: Some(&user),
            database: Some(&database),
            session_id: Some(&session_id_copy),
            queries: Some(queries),
            started: Some(started),
            target: Some(&target.address),
        },
    );
}

/// Removes the client from `/api/clients` however the session ends.
struct Registered(Arc<MysqlFrontEnd>, u32);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// Where the scan of the client's packets is.
#[derive(Default)]
struct Scan {
    header: [u8; 4],
    have: usize,
    /// Payload bytes of the current packet not yet seen.
    remaining: usize,
    /// The next payload byte is a command (the packet has sequence id 0).
    command_next: bool,
    /// The current packet is a `COM_QUERY` whose text is being kept.
    query: bool,
    /// Where the current `COM_QUERY`'s text starts in the chunk being scanned, when it does.
    text_at: Option<usize>,
    text: Vec<u8>,
}

/// Where the scan of the server's packets is.
#[derive(Default)]
pub(super) struct ServerScan {
    header: [u8; 4],
    have: usize,
    remaining: usize,
    /// The current packet's length.
    len: usize,
    /// The current packet continues the previous one (which was 16 MiB − 1 long).
    continuation: bool,
    /// The first bytes of the current packet's payload (what the tracker looks at).
    head: Vec<u8>,
}

/// The first bytes of a server packet the tracker is given: all of an OK, ERR, EOF or column
/// definition, the start of a row.
const HEAD_MAX: usize = 64 * 1024;

/// A command sent and not yet answered.
struct Pending {
    /// The statement of a `COM_QUERY`.
    text: Option<Vec<u8>>,
    started: Instant,
    tracker: ResponseTracker,
}

/// What the two directions share: the commands in flight, for audit events with outcomes.
struct Track {
    pending: VecDeque<Pending>,
    /// Statements sent, for `session.end`.
    queries: u64,
    /// The client sent `COM_QUIT`: a reset after it is how it left, not an error.
    quit: bool,
    /// The answers could not be followed (a tracker error): statements are audited as sent,
    /// without outcomes, from then on.
    lost: bool,
    events: Events,
}

/// What an audit event needs to know about the session.
pub(super) struct Events {
    pub(super) fe: Arc<MysqlFrontEnd>,
    pub(super) shared: Arc<Shared>,
    /// `Some(mask literals)` when statements are audited.
    pub(super) mask: Option<bool>,
    pub(super) listener: Arc<str>,
    pub(super) client: std::net::SocketAddr,
    pub(super) user: String,
    pub(super) database: String,
    pub(super) session_id: String,
    pub(super) target: String,
}

impl Events {
    /// An audit event for a statement sent as `text`, answered after `duration_us`.
    pub(super) fn statement(&self, text: &[u8], duration_us: u64, error: Option<u16>) {
        let Some(mask) = self.mask else {
            return;
        };
        let text = String::from_utf8_lossy(text);
        let code = error.map(|c| c.to_string());
        self.shared.records.audit_query(&QueryEvent {
            listener: &self.listener,
            client: self.client,
            user: &self.user,
            database: &self.database,
            session_id: &self.session_id,
            text: &text,
            mask,
            dialect: sql::Syntax::MYSQL,
            duration_us,
            rows: 0,
            error: code.as_deref(),
            target: Some(&self.target),
        });
    }
}

impl Track {
    /// A command started: follow its answer.
    fn command(&mut self, command: u8, caps: Capabilities, query: bool) {
        if query {
            self.events.fe.stats.queries.fetch_add(1, Ordering::Relaxed);
            self.queries += 1;
        }
        if command == sumun_wire::mysql::flags::COM_QUIT {
            self.quit = true;
        }
        if !expects_response(command) {
            return;
        }
        if self.lost {
            return;
        }
        match ResponseTracker::new(command, caps) {
            Ok(tracker) => self.pending.push_back(Pending {
                text: query.then(Vec::new),
                started: Instant::now(),
                tracker,
            }),
            Err(e) => self.lose(&e.to_string()),
        }
    }

    /// The statement of the last command is complete.
    fn text(&mut self, text: &[u8]) {
        if self.lost {
            self.events.statement(text, 0, None);
            return;
        }
        if let Some(p) = self.pending.back_mut() {
            p.text = Some(text.to_vec());
        }
    }

    /// One whole server packet (or the first `HEAD_MAX` bytes of a longer one).
    fn answer(&mut self, packet: &[u8]) {
        if self.lost {
            return;
        }
        let Some(front) = self.pending.front_mut() else {
            // Said without being asked (an ERR before the server closes): nothing to follow.
            return;
        };
        match front.tracker.feed(packet) {
            Ok(Step::More | Step::LocalInfile | Step::ClientTurn) => {}
            Ok(Step::Done(outcome)) => {
                if let Some(p) = self.pending.pop_front() {
                    if let Some(text) = &p.text {
                        let us = p.started.elapsed().as_micros() as u64;
                        self.events.statement(text, us, outcome.error);
                    }
                }
            }
            Err(e) => self.lose(&e.to_string()),
        }
    }

    fn lose(&mut self, why: &str) {
        tracing::debug!(listener = %self.events.listener, client = %self.events.client, error = why, "cannot follow the server's answers; statements are audited without outcomes");
        for p in self.pending.drain(..) {
            if let Some(text) = &p.text {
                self.events.statement(text, 0, None);
            }
        }
        self.lost = true;
    }
}

/// `KILL [QUERY | CONNECTION] <id>` with a gateway connection id (what `mysql_thread_id()`
/// returned: the mysql client's Ctrl-C sends it) becomes the same statement with that client's
/// server connection id, when the client is the same user's on the same server; any other id
/// goes to the server as it is (which answers for its own ids).
struct KillRoute {
    fe: Arc<MysqlFrontEnd>,
    /// This session's server.
    target: String,
}

impl KillRoute {
    fn route(&self, text: &mut [u8], user: &str) {
        route_kill(&self.fe, text, user, &self.target);
    }
}

/// Rewrite `text` in place (same length) when it kills a gateway connection id of `user`'s
/// client that is on `target` (the server the statement goes to).
pub(super) fn route_kill(fe: &MysqlFrontEnd, text: &mut [u8], user: &str, target: &str) {
    let Some((digits, id)) = kill_target(text) else {
        return;
    };
    if id < 0x4000_0000 {
        return;
    }
    let row = fe
        .clients
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(id as u32))
        .cloned();
    let Some(row) = row else {
        return;
    };
    if row.user != user || row.server.as_deref() != Some(target) {
        return;
    }
    let real = row.server_connection_id.to_string();
    if real.len() > digits.len() {
        return;
    }
    let field = &mut text[digits];
    field.fill(b' ');
    field[..real.len()].copy_from_slice(real.as_bytes());
}

/// The range of the id's digits and the id, for `KILL [QUERY|CONNECTION] <digits>` with
/// nothing else but spaces and a `;`.
fn kill_target(text: &[u8]) -> Option<(std::ops::Range<usize>, u64)> {
    let words: Vec<(usize, &[u8])> = {
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            while i < text.len() && text[i].is_ascii_whitespace() {
                i += 1;
            }
            let start = i;
            while i < text.len() && !text[i].is_ascii_whitespace() && text[i] != b';' {
                i += 1;
            }
            if i > start {
                out.push((start, &text[start..i]));
            }
            if i < text.len() && text[i] == b';' {
                if text[i + 1..].iter().any(|b| !b.is_ascii_whitespace()) {
                    return None;
                }
                break;
            }
            if out.len() > 3 {
                return None;
            }
        }
        out
    };
    let (first, rest) = words.split_first()?;
    if !first.1.eq_ignore_ascii_case(b"kill") {
        return None;
    }
    let id = match rest {
        [id] => id,
        [kind, id]
            if kind.1.eq_ignore_ascii_case(b"query")
                || kind.1.eq_ignore_ascii_case(b"connection") =>
        {
            id
        }
        _ => return None,
    };
    if id.1.is_empty() || id.1.len() > 10 || !id.1.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = std::str::from_utf8(id.1).ok()?.parse().ok()?;
    Some((id.0..id.0 + id.1.len(), value))
}

/// What looks at the bytes read from one side of the relay, and may rewrite them in place.
trait Observe {
    fn observe(&mut self, bytes: &mut [u8]);
}

/// A stream whose reads go through an observer; writes pass straight through.
struct Watched<S, O> {
    inner: S,
    observer: O,
}

impl<S: AsyncRead + Unpin, O: Observe + Unpin> AsyncRead for Watched<S, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.observer.observe(&mut buf.filled_mut()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, O: Unpin> AsyncWrite for Watched<S, O> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The client's commands, scanned packet by packet as they pass.
struct Commands {
    scan: Scan,
    track: Arc<Mutex<Track>>,
    caps: Capabilities,
    kill: KillRoute,
}

impl Observe for Commands {
    fn observe(&mut self, chunk: &mut [u8]) {
        let mut track = self.track.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut self.scan;
        let mut pos = 0;
        s.text_at = if s.query { None } else { s.text_at };
        while pos < chunk.len() {
            if s.remaining == 0 && s.have < 4 {
                let take = (4 - s.have).min(chunk.len() - pos);
                s.header[s.have..s.have + take].copy_from_slice(&chunk[pos..pos + take]);
                s.have += take;
                pos += take;
                if s.have == 4 {
                    s.have = 0;
                    s.remaining = usize::from(s.header[0])
                        | usize::from(s.header[1]) << 8
                        | usize::from(s.header[2]) << 16;
                    // An empty packet carries no command.
                    s.command_next = s.header[3] == 0 && s.remaining > 0;
                    s.query = false;
                }
                continue;
            }
            if s.command_next {
                s.command_next = false;
                let command = chunk[pos];
                s.query = command == COM_QUERY;
                track.command(command, self.caps, s.query);
                s.text.clear();
                s.remaining -= 1;
                pos += 1;
                s.text_at = Some(pos);
            } else {
                let take = s.remaining.min(chunk.len() - pos);
                if s.query {
                    let room = SQL_KEEP.saturating_sub(s.text.len());
                    s.text.extend_from_slice(&chunk[pos..pos + take.min(room)]);
                }
                s.remaining -= take;
                pos += take;
            }
            if s.remaining == 0 && s.query {
                s.query = false;
                // A whole statement in this chunk may be a KILL to route.
                if let Some(at) = s.text_at.take() {
                    if pos - at == s.text.len() && pos - at <= 64 {
                        self.kill.route(&mut chunk[at..pos], &track.events.user);
                    }
                }
                track.text(&s.text);
                if s.text.capacity() > SQL_KEEP {
                    s.text = Vec::new();
                }
            }
        }
    }
}

/// The server's answers, scanned packet by packet to end each command's.
struct Answers {
    scan: ServerScan,
    track: Arc<Mutex<Track>>,
}

impl Observe for Answers {
    fn observe(&mut self, bytes: &mut [u8]) {
        let mut track = self.track.lock().unwrap_or_else(|p| p.into_inner());
        self.scan.scan(bytes, |packet| track.answer(packet));
    }
}

impl ServerScan {
    /// Run `bytes` (the next bytes from the server) through the scan: `packet` is called with
    /// each physical packet's payload (its first `HEAD_MAX` bytes) when its last byte has
    /// passed; packets that continue a 16 MiB − 1 one are passed over.
    pub(super) fn scan(&mut self, mut bytes: &[u8], mut packet: impl FnMut(&[u8])) {
        let s = self;
        while !bytes.is_empty() {
            if s.remaining == 0 && s.have < 4 {
                let take = (4 - s.have).min(bytes.len());
                s.header[s.have..s.have + take].copy_from_slice(&bytes[..take]);
                s.have += take;
                bytes = &bytes[take..];
                if s.have == 4 {
                    s.have = 0;
                    let was = s.len;
                    s.len = usize::from(s.header[0])
                        | usize::from(s.header[1]) << 8
                        | usize::from(s.header[2]) << 16;
                    s.remaining = s.len;
                    s.continuation = was == MAX_CHUNK;
                    s.head.clear();
                    if s.remaining == 0 && !s.continuation {
                        packet(&[]);
                    }
                }
                continue;
            }
            let take = s.remaining.min(bytes.len());
            if !s.continuation {
                let room = HEAD_MAX.saturating_sub(s.head.len());
                s.head.extend_from_slice(&bytes[..take.min(room)]);
            }
            s.remaining -= take;
            bytes = &bytes[take..];
            if s.remaining == 0 && !s.continuation {
                packet(&s.head);
                if s.head.capacity() > HEAD_MAX {
                    s.head = Vec::new();
                }
            }
        }
    }

    /// Between packets: nothing of one is pending.
    pub(super) fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.have == 0
    }
}

#[cfg(test)]
mod tests {
    use super::kill_target;

    #[test]
    fn kill_statements_are_recognised_with_their_id_digits() {
        assert_eq!(
            kill_target(b"KILL QUERY 1073741825"),
            Some((11..21, 1073741825))
        );
        assert_eq!(kill_target(b"kill 42 ;"), Some((5..7, 42)));
        assert_eq!(kill_target(b"  Kill Connection 7"), Some((18..19, 7)));
        for not in [
            &b"KILL QUERY 1; DROP TABLE t"[..],
            b"KILL QUERY",
            b"KILL QUERY x1",
            b"KILLQUERY 1",
            b"KILL QUERY 1 2",
            b"KILL QUERY 99999999999",
            b"select 1",
            b"",
        ] {
            assert_eq!(kill_target(not), None, "{}", String::from_utf8_lossy(not));
        }
    }
}
