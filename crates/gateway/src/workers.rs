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
//!
//! Time on the data plane comes from here as well ([`Alarm`], [`coarse_ms`]), not from tokio's
//! timers: while a tokio timer is pending, every park of an event loop scans the timer wheel
//! and reads the clock twice, and a session's idle timer is pending for as long as the session
//! lives. One process-wide clock thread keeps the alarms instead (a session sets one about
//! once per `park_after`) and a coarse clock that the pools read for the price of an atomic
//! load, so a worker's event loop parks with an empty timer wheel.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

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
        start_clock();
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

/// How far the coarse clock may lag behind (plus the clock thread's scheduling delay).
const TICK: Duration = Duration::from_millis(250);

/// The data plane's clock: alarms, and a coarse "now" refreshed every [`TICK`].
struct Clock {
    epoch: Instant,
    /// Milliseconds since `epoch`, as of the clock thread's last look.
    coarse: AtomicU64,
    alarms: Mutex<BinaryHeap<Reverse<Setting>>>,
    /// Alarms in existence: settings beyond twice as many are stale (replaced, or of alarms
    /// dropped since, as a session's is when it ends or parks) and are swept out, so settings
    /// far in the future (no idle timeout) cannot pile up.
    live: AtomicUsize,
    /// Wakes the clock thread for an alarm due before its next tick.
    changed: Condvar,
}

/// One setting of an alarm, in the clock's queue until it is due. A setting replaced by a
/// later one (`seq`), or of an alarm dropped since, rings nobody.
struct Setting {
    at: Instant,
    seq: u64,
    alarm: Weak<AlarmState>,
}

impl PartialEq for Setting {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Setting {}
impl PartialOrd for Setting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Setting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct AlarmState {
    /// The current setting; older ones still queued are ignored.
    seq: AtomicU64,
    rung: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    static STARTED: std::sync::Once = std::sync::Once::new();
    let clock = CLOCK.get_or_init(|| Clock {
        epoch: Instant::now(),
        coarse: AtomicU64::new(0),
        alarms: Mutex::new(BinaryHeap::new()),
        live: AtomicUsize::new(0),
        changed: Condvar::new(),
    });
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("sumun-clock".into())
            .spawn(move || clock.run());
        if let Err(err) = spawned {
            // Alarms would never ring: idle clients would neither time out nor park.
            tracing::error!(error = %err, "cannot start the data plane's clock thread");
        }
    });
    clock
}

impl Clock {
    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<Setting>>> {
        self.alarms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn run(&self) {
        let mut due: Vec<Waker> = Vec::new();
        let mut alarms = self.lock();
        loop {
            let now = Instant::now();
            self.coarse.store(self.ms(now), Ordering::Relaxed);
            while alarms.peek().is_some_and(|Reverse(s)| s.at <= now) {
                let Some(Reverse(setting)) = alarms.pop() else {
                    break;
                };
                let Some(alarm) = setting.alarm.upgrade() else {
                    continue;
                };
                if alarm.seq.load(Ordering::Acquire) != setting.seq {
                    continue;
                }
                alarm.rung.store(true, Ordering::Release);
                let waker = alarm.waker.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(w) = waker.as_ref() {
                    due.push(w.clone());
                }
            }
            if !due.is_empty() {
                drop(alarms);
                due.drain(..).for_each(Waker::wake);
                alarms = self.lock();
                continue;
            }
            let wait = alarms
                .peek()
                .map_or(TICK, |Reverse(s)| s.at.saturating_duration_since(now))
                .min(TICK);
            alarms = self
                .changed
                .wait_timeout(alarms, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Milliseconds on the data plane's coarse clock: at most [`TICK`] (and the clock thread's
/// scheduling delay) behind the real time, for the price of an atomic load. Good for ages
/// measured in seconds (a pooled connection's lifetime, its idle time), not for deadlines.
pub(crate) fn coarse_ms() -> u64 {
    clock().coarse.load(Ordering::Relaxed)
}

/// `at` on the scale of [`coarse_ms`].
pub(crate) fn ms_of(at: Instant) -> u64 {
    clock().ms(at)
}

/// Start the clock thread now rather than at the first alarm (so a failure shows at startup).
pub(crate) fn start_clock() {
    clock();
}

/// A timer that costs the event loop nothing while it waits: kept by the clock thread, which
/// wakes the task that polled it last once it is due. Setting it takes a lock, so it is for
/// deadlines set now and then (a session's idle check), not per message.
pub(crate) struct Alarm {
    state: Arc<AlarmState>,
    /// The waker the clock holds, to skip handing it over again.
    waker: Option<Waker>,
}

impl Drop for Alarm {
    fn drop(&mut self) {
        clock().live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm::new()
    }
}

impl Alarm {
    /// An alarm that is not set (it never rings until [`Alarm::set`]).
    pub(crate) fn new() -> Alarm {
        clock().live.fetch_add(1, Ordering::Relaxed);
        Alarm {
            state: Arc::new(AlarmState::default()),
            waker: None,
        }
    }

    /// Ring at `at` (or at once, if that has passed), instead of whenever it was set for.
    pub(crate) fn set(&mut self, at: Instant) {
        let seq = self.state.seq.fetch_add(1, Ordering::AcqRel) + 1;
        self.state.rung.store(false, Ordering::Release);
        let clock = clock();
        let mut alarms = clock.lock();
        if alarms.len() >= 2 * clock.live.load(Ordering::Relaxed) + 64 {
            alarms.retain(|Reverse(s)| {
                s.alarm
                    .upgrade()
                    .is_some_and(|a| a.seq.load(Ordering::Acquire) == s.seq)
            });
        }
        alarms.push(Reverse(Setting {
            at,
            seq,
            alarm: Arc::downgrade(&self.state),
        }));
        // The clock thread looks again within a tick anyway; only an earlier alarm needs it
        // now.
        let first = alarms
            .peek()
            .is_some_and(|Reverse(s)| s.seq == seq && s.at == at);
        drop(alarms);
        if first && at < Instant::now() + TICK {
            clock.changed.notify_one();
        }
    }

    /// Ready once the alarm has rung (and until it is set again).
    pub(crate) fn poll_rung(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.rung.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        *self.state.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        self.waker = Some(cx.waker().clone());
        // Rung before the waker was there: the clock found none to wake.
        if self.state.rung.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// [`Alarm::poll_rung`] as a future.
    pub(crate) fn rung(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_rung(cx))
    }
}
