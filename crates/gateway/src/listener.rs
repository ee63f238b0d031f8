//! Listeners: a bound socket, an accept loop, and a snapshot of everything a new connection
//! needs (settings, compiled security groups, TLS context, target group), swapped atomically on
//! reload so established connections keep the snapshot they started with.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use sumun_config::Listener;
use sumun_policy::SecurityPolicy;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::metrics::ListenerMetrics;
use crate::targets::TargetGroupRt;
use crate::tls::TlsContext;
use crate::Shared;

/// Pending connections the kernel may queue before `accept`: bursts of thousands of clients
/// connecting at once are queued rather than refused.
const BACKLOG: u32 = 4096;

/// What a new connection on a listener is handled with.
#[derive(Debug)]
pub struct ListenerSnapshot {
    pub settings: Listener,
    pub policy: SecurityPolicy,
    pub trusted_proxies: Vec<IpNet>,
    pub tls: Option<Arc<TlsContext>>,
    pub group: Arc<TargetGroupRt>,
}

#[derive(Debug)]
pub struct ListenerRt {
    pub name: Arc<str>,
    /// The address in the config (may have port 0).
    pub configured_bind: SocketAddr,
    /// The address actually bound.
    pub local_addr: SocketAddr,
    pub metrics: Arc<ListenerMetrics>,
    snapshot: ArcSwap<ListenerSnapshot>,
    /// Client connections currently held (for `max_connections`).
    pub open: AtomicU32,
    stop: watch::Sender<bool>,
}

impl ListenerRt {
    pub fn snapshot(&self) -> Arc<ListenerSnapshot> {
        self.snapshot.load_full()
    }

    pub fn update(&self, snapshot: ListenerSnapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Stop accepting; established connections are not affected.
    pub fn close(&self) {
        self.stop.send_replace(true);
    }
}

/// Bind a listening socket (SO_REUSEADDR, large backlog).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Start serving on an already-bound socket.
pub fn start(
    socket: TcpListener,
    configured_bind: SocketAddr,
    snapshot: ListenerSnapshot,
    metrics: Arc<ListenerMetrics>,
    shared: Arc<Shared>,
) -> std::io::Result<Arc<ListenerRt>> {
    let local_addr = socket.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let rt = Arc::new(ListenerRt {
        name: Arc::from(snapshot.settings.name.as_str()),
        configured_bind,
        local_addr,
        metrics,
        snapshot: ArcSwap::from_pointee(snapshot),
        open: AtomicU32::new(0),
        stop,
    });
    tokio::spawn(accept_loop(socket, rt.clone(), shared, stop_rx));
    Ok(rt)
}

/// Give an accepted connection to a data-plane worker (or run it here when there are none).
fn hand_over(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    listener: &Arc<ListenerRt>,
    shared: &Arc<Shared>,
) {
    let (listener, shared) = (listener.clone(), shared.clone());
    let Some(workers) = shared.workers.get() else {
        let task = crate::conn::handle(stream, peer, local, listener.clone(), shared);
        tokio::spawn(crate::workers::contained(listener, Some(peer), task));
        return;
    };
    // The socket moves to the worker's event loop: deregistered here, registered there.
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(listener = %listener.name, client = %peer, error = %err, "cannot hand an accepted connection to a worker");
            return;
        }
    };
    let task_shared = shared.clone();
    workers.spawn(async move {
        match TcpStream::from_std(std_stream) {
            Ok(stream) => {
                let task = crate::conn::handle(stream, peer, local, listener.clone(), task_shared);
                crate::workers::contained(listener, Some(peer), task).await
            }
            Err(err) => {
                tracing::warn!(listener = %listener.name, client = %peer, error = %err, "worker cannot take an accepted connection");
            }
        }
    });
}

async fn accept_loop(
    socket: TcpListener,
    listener: Arc<ListenerRt>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(listener = %listener.name, addr = %listener.local_addr, "listening");
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(listener.local_addr);
                hand_over(stream, peer, local, &listener, &shared);
            }
            Err(err) => {
                // EMFILE/ENFILE and friends: back off instead of spinning, keep serving.
                tracing::error!(listener = %listener.name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(listener = %listener.name, addr = %listener.local_addr, "stopped listening");
}
