//! Data-plane worker threads. Each runs its own single-threaded event loop; an accepted
//! connection is handed to one of them (round robin) and stays there until it closes, so its
//! sockets, timers and wake-ups never cross threads and no thread is woken to steal work.
//! This is what a multi-threaded work-stealing runtime costs on a proxy's small transactions:
//! a futex wake and a context switch per hand-over (measured in bench/RESULTS.md).
//!
//! Backend connections remember the worker that opened them (their socket is registered with
//! that worker's event loop), and pools give a client a connection of its own worker first
//! (`postgres::pool`); one of another worker is still correct, only slower.
//!
//! The control plane (accept loops, health checks, the admin API, reloads) stays on the
//! runtime that created the gateway. Without workers (none started yet), connections run there
//! too.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The index of the worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    let i = CURRENT.with(Cell::get);
    (i != usize::MAX).then_some(i)
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Workers {
    /// Start `n` workers (`0`: one per CPU).
    pub fn start(n: u32) -> std::io::Result<Workers> {
        let n = match n {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("sumun-worker-{i}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(i));
                    // Runs the connections spawned onto this worker until the gateway is
                    // dropped; dropping the runtime then closes whatever is left.
                    let _ = rt.block_on(stopped);
                    rt.shutdown_background();
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stops: Mutex::new(stops),
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Run `task` on the next worker.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(task);
    }

    /// Run `task` on worker `i` (the next one when there is no such worker).
    pub fn spawn_on<F>(&self, i: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.handles.get(i) {
            Some(h) => drop(h.spawn(task)),
            None => self.spawn(task),
        }
    }

    /// Stop every worker; their connections are closed.
    pub fn stop(&self) {
        let stops = std::mem::take(&mut *self.stops.lock().unwrap_or_else(|p| p.into_inner()));
        for s in stops {
            let _ = s.send(());
        }
    }
}

/// Run a connection's task (`conn::handle`, or a session woken from its parking lot) so that a
/// panic inside it ends that connection only, and visibly: what the connection held is
/// released as the panic unwinds through its guards (its flow closes with its last record, its
/// target and pool counts and its listener slot go back), the panic is counted in
/// `sumun_panics_total{listener}` and logged as an error. Without this, the runtime would
/// swallow the panic silently.
///
/// The task is pinned inside this future (no allocation) and polled under `catch_unwind`; it
/// is never polled again after a panic.
pub(crate) async fn contained<F>(
    listener: Arc<crate::listener::ListenerRt>,
    peer: Option<SocketAddr>,
    task: F,
) where
    F: Future<Output = ()>,
{
    let mut task = std::pin::pin!(task);
    let panicked = std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(None),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Some(payload)),
        }
    })
    .await;
    let Some(payload) = panicked else {
        return;
    };
    listener
        .metrics
        .panics
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    match peer {
        Some(peer) => {
            tracing::error!(listener = %listener.name, client = %peer, panic = message, "connection panicked; closed it and released its flow")
        }
        None => {
            tracing::error!(listener = %listener.name, panic = message, "connection panicked; closed it and released its flow")
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}
