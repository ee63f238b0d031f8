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

use sumun_config::QueryAudit;
use sumun_wire::mysql::flags::COM_QUERY;
use sumun_wire::sql;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client::LoggedIn;
use super::io::ClientStream;
use super::{ClientRow, MysqlFrontEnd};
use crate::records::QueryEvent;
use crate::Shared;

/// Statement text kept for the audit log.
const SQL_KEEP: usize = 16 * 1024;

pub(super) async fn run(fe: &Arc<MysqlFrontEnd>, s: LoggedIn) {
    let LoggedIn {
        client,
        server,
        user,
        database,
        connection_id,
        admitted,
        snap,
        listener,
        shared,
        slot,
    } = s;
    let _slot = slot;
    let flow = admitted.flow.clone();
    let session_id = format!("{connection_id:08x}{:08x}", fastrand::u32(..));
    let target = server.target.clone();
    fe.clients.lock().unwrap_or_else(|p| p.into_inner()).insert(
        connection_id,
        ClientRow {
            listener: listener.name.to_string(),
            client: admitted.client.to_string(),
            user: user.clone(),
            database: database.clone(),
            pool_mode: "session",
            session_id: session_id.clone(),
            connected_at: flow.start,
            server: Some(target.address.clone()),
            server_connection_id: server.thread_id,
            connection_id,
        },
    );
    let _registered = Registered(fe.clone(), connection_id);
    listener.metrics.new_flows.fetch_add(1, Ordering::Relaxed);
    shared
        .records
        .audit("session.start", &listener.name, admitted.client, || {
            let mut extra = serde_json::Map::new();
            extra.insert("user".into(), user.clone().into());
            extra.insert("database".into(), database.clone().into());
            extra.insert("session_id".into(), session_id.clone().into());
            extra.insert("target".into(), target.address.clone().into());
            extra.insert("server_connection_id".into(), server.thread_id.into());
            extra
        });
    let mask = match snap.settings.audit_queries {
        QueryAudit::Off => None,
        QueryAudit::Masked => Some(true),
        QueryAudit::Full => Some(false),
    };
    let mut audited = Audited {
        inner: client.stream,
        scan: Scan::default(),
        events: Events {
            fe: fe.clone(),
            shared: shared.clone(),
            mask: mask.filter(|_| shared.records.audits()),
            listener: listener.name.clone(),
            client: admitted.client,
            user,
            database,
            session_id,
            target: target.address.clone(),
        },
    };
    // Whatever the client sent after its login and before this point is already in the
    // buffer: it goes first (through the same scan).
    let early = client.buf;
    let mut server_stream = server.packets.stream;
    if !early.is_empty() {
        audited.observe(&early);
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
    crate::conn::finish(&end, &flow, &listener, &shared);
    drop(server.target);
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
    text: Vec<u8>,
}

/// What an audit event needs to know about the session.
struct Events {
    fe: Arc<MysqlFrontEnd>,
    shared: Arc<Shared>,
    /// `Some(mask literals)` when statements are audited.
    mask: Option<bool>,
    listener: Arc<str>,
    client: std::net::SocketAddr,
    user: String,
    database: String,
    session_id: String,
    target: String,
}

impl Events {
    fn statement(&self, text: &[u8]) {
        self.fe.stats.queries.fetch_add(1, Ordering::Relaxed);
        let Some(mask) = self.mask else {
            return;
        };
        let text = String::from_utf8_lossy(text);
        self.shared.records.audit_query(&QueryEvent {
            listener: &self.listener,
            client: self.client,
            user: &self.user,
            database: &self.database,
            session_id: &self.session_id,
            text: &text,
            mask,
            dialect: sql::Syntax::MYSQL,
            duration_us: 0,
            rows: 0,
            error: None,
            target: Some(&self.target),
        });
    }
}

/// The client's stream, with every byte read from it run through the packet scan.
struct Audited {
    inner: ClientStream,
    scan: Scan,
    events: Events,
}

impl Audited {
    fn observe(&mut self, mut bytes: &[u8]) {
        let s = &mut self.scan;
        while !bytes.is_empty() {
            if s.remaining == 0 && s.have < 4 {
                let take = (4 - s.have).min(bytes.len());
                s.header[s.have..s.have + take].copy_from_slice(&bytes[..take]);
                s.have += take;
                bytes = &bytes[take..];
                if s.have == 4 {
                    s.have = 0;
                    s.remaining = usize::from(s.header[0])
                        | usize::from(s.header[1]) << 8
                        | usize::from(s.header[2]) << 16;
                    s.command_next = s.header[3] == 0;
                    s.query = false;
                }
                continue;
            }
            if s.command_next {
                s.command_next = false;
                s.query = bytes[0] == COM_QUERY;
                s.text.clear();
                s.remaining -= 1;
                bytes = &bytes[1..];
            } else {
                let take = s.remaining.min(bytes.len());
                if s.query {
                    let room = SQL_KEEP.saturating_sub(s.text.len());
                    s.text.extend_from_slice(&bytes[..take.min(room)]);
                }
                s.remaining -= take;
                bytes = &bytes[take..];
            }
            if s.remaining == 0 && s.query {
                s.query = false;
                self.events.statement(&s.text);
                if s.text.capacity() > SQL_KEEP {
                    s.text = Vec::new();
                }
            }
        }
    }
}

impl AsyncRead for Audited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.observe(&buf.filled()[before..]);
        }
        r
    }
}

impl AsyncWrite for Audited {
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
