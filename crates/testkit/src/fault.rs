//! [`FaultProxy`]: an in-process TCP proxy placed between a client (or the gateway) and a
//! server, whose behaviour a test switches while traffic flows: pass bytes through, add
//! latency, cut every connection, or blackhole (accept and never answer). It forwards bytes
//! only; it knows no protocol.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic, switched with [`FaultProxy::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways untouched.
    Pass,
    /// Hold every chunk this long before forwarding it (both ways), and hold new connections
    /// this long before connecting upstream.
    Delay(Duration),
    /// Reset every open connection now, and reset new ones right after accepting them.
    Cut,
    /// Swallow bytes in both directions on open connections; accept new connections but never
    /// connect upstream nor answer. Clients see their timeouts fire.
    Blackhole,
}

/// A TCP proxy on `127.0.0.1:<free port>` in front of `upstream`, running on the current tokio
/// runtime until dropped (dropping it closes the listener and every connection).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicU64>,
    acceptor: JoinHandle<()>,
}

impl FaultProxy {
    /// Bind a free loopback port and start forwarding to `upstream` in [`Fault::Pass`] mode.
    /// Must be called inside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let acceptor = tokio::spawn(accept_loop(
            listener,
            upstream,
            fault.clone(),
            accepted.clone(),
        ));
        Ok(FaultProxy {
            addr,
            upstream,
            fault,
            accepted,
            acceptor,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switch behaviour; applies at once to open connections and to new ones.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Connections accepted so far, whatever happened to them.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        // Connection tasks end when they see the channel close (they hold receivers only);
        // the acceptor held a sender clone, which the abort drops.
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(client, upstream, fault.subscribe()));
    }
}

/// Close with a reset rather than an orderly FIN, like a dropped network path or a crashed
/// peer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve(client: TcpStream, upstream: SocketAddr, mut fault: watch::Receiver<Fault>) {
    let _ = client.set_nodelay(true);
    let mode = *fault.borrow_and_update();
    match mode {
        Fault::Cut => return reset(client),
        Fault::Blackhole => return blackhole(client, fault).await,
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Pass => {}
    }
    let server = tokio::select! {
        s = TcpStream::connect(upstream) => s,
        _ = until_cut(fault.clone()) => return reset(client),
    };
    let Ok(server) = server else {
        return reset(client);
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, fault.clone());
    let down = pump(server_read, client_write, fault.clone());
    let both = async { tokio::join!(up, down) };
    tokio::select! {
        (a, b) = both => {
            // Reunite only to reset; halves that cannot be reunited just drop.
            if let (Some((r1, w1)), Some((r2, w2))) = (a, b) {
                if let Ok(s) = r1.reunite(w2) { reset(s) }
                if let Ok(s) = r2.reunite(w1) { reset(s) }
            }
        }
        _ = until_cut(fault) => {}
    }
}

/// Resolves when the fault becomes `Cut` or the proxy is dropped.
async fn until_cut(mut fault: watch::Receiver<Fault>) {
    loop {
        if *fault.borrow_and_update() == Fault::Cut {
            return;
        }
        if fault.changed().await.is_err() {
            return;
        }
    }
}

/// Read and discard until the client leaves, the fault becomes `Cut` or the proxy is dropped.
async fn blackhole(mut client: TcpStream, fault: watch::Receiver<Fault>) {
    let mut buf = vec![0u8; 16 * 1024];
    tokio::select! {
        _ = async { while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
        _ = until_cut(fault) => {}
    }
    reset(client);
}

/// Copy one direction, applying the current fault to each chunk. On end of input, passes
/// the half-close on and returns `None`; on a cut (seen by the caller) it is dropped
/// mid-way. Returns the halves when an I/O error asks for a reset of both sockets.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    fault: watch::Receiver<Fault>,
) -> Option<(OwnedReadHalf, OwnedWriteHalf)> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return None;
            }
            Ok(n) => n,
            Err(_) => return Some((from, to)),
        };
        let mode = *fault.borrow();
        match mode {
            Fault::Pass => {}
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::Blackhole => continue,
            // `serve` is dropping this future right now.
            Fault::Cut => return Some((from, to)),
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return Some((from, to));
        }
    }
}
