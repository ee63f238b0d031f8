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
//! Time on the data plane comes from here as well ([`Alarm`], [`timeout`], [`timeout_at`],
//! [`sleep`], [`sleep_until`], [`coarse_ms`]), not from tokio's timers: with tokio's time
//! driver, every park of an event loop scans the timer wheel and reads the clock twice, timer
//! pending or not (about 800 instructions of a `pgbench -S` transaction's 7,100,
//! bench/postgres/INSTRUCTIONS.md). The workers' event loops are built without it, so
//! **`tokio::time::{sleep, timeout, interval, ..}` panic on a worker**: code that may run in a
//! connection's task uses this module's versions (they work on any runtime). One process-wide
//! clock thread keeps the alarms (a session sets one about once per `park_after`) and a
//! coarse clock that the pools read for the price of an atomic load.

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
            // I/O only: no time driver (see `timeout_at`), so a park of the event loop is one
            // epoll_wait, without a timer-wheel scan and two clock reads around it.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
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

    /// An alarm set for `at`.
    pub(crate) fn new_at(at: Instant) -> Alarm {
        let mut alarm = Alarm::new();
        alarm.set(at);
        alarm
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

/// A deadline on the data plane passed ([`timeout`], [`timeout_at`]); says what tokio's
/// `Elapsed` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// `fut`, or [`Elapsed`] once `deadline` has passed (`None`: never), on the data plane's
/// clock. The worker event loops run without tokio's time driver (its wheel scan and clock
/// reads cost every park of the loop, timer pending or not), so code that runs on a worker
/// waits with this, [`timeout`], [`sleep`] and [`sleep_until`], never with `tokio::time`'s
/// (which would panic there). As with tokio's, `fut` is polled first, so a ready future wins
/// over a passed deadline; the alarm is only set once `fut` has to wait.
pub(crate) fn timeout_at<F: Future>(
    deadline: impl Into<Instant>,
    fut: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    within(Some(deadline.into()), fut)
}

/// [`timeout_at`] `after` from now (the deadline is taken now, not at the first poll).
pub(crate) fn timeout<F: Future>(
    after: Duration,
    fut: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    // A deadline too far to represent is no deadline.
    within(Instant::now().checked_add(after), fut)
}

/// Ready at `deadline`, on the data plane's clock (see [`timeout_at`]).
pub(crate) async fn sleep_until(deadline: impl Into<Instant>) {
    let _ = timeout_at(deadline, std::future::pending::<()>()).await;
}

/// Ready `after` from now, on the data plane's clock (see [`timeout_at`]).
pub(crate) fn sleep(after: Duration) -> impl Future<Output = ()> {
    let deadline = Instant::now().checked_add(after);
    async move {
        let _ = within(deadline, std::future::pending::<()>()).await;
    }
}

async fn within<F: Future>(deadline: Option<Instant>, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let Some(deadline) = deadline else {
        return Ok(fut.await);
    };
    let mut alarm: Option<Alarm> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let alarm = match alarm.as_mut() {
            Some(alarm) => alarm,
            None => {
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(Elapsed));
                }
                alarm.insert(Alarm::new_at(deadline))
            }
        };
        match alarm.poll_rung(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event loop like a worker's: I/O only, no tokio time driver (a tokio timer panics).
    fn worker_like() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime")
    }

    #[test]
    fn timeouts_and_sleeps_run_without_tokio_timers() {
        worker_like().block_on(async {
            let started = Instant::now();
            sleep(Duration::from_millis(30)).await;
            assert!(started.elapsed() >= Duration::from_millis(30));

            let waited = timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
            assert_eq!(waited, Err(Elapsed));
            assert_eq!(Elapsed.to_string(), "deadline has elapsed");

            let ready = timeout(Duration::from_secs(60), async { 7 }).await;
            assert_eq!(ready, Ok(7));

            // A deadline already passed: a ready future still wins, a pending one is late.
            let past = Instant::now();
            assert_eq!(timeout_at(past, async { 1 }).await, Ok(1));
            assert_eq!(
                timeout_at(past, std::future::pending::<()>()).await,
                Err(Elapsed)
            );

            // Finishing before the deadline: the value, and the alarm is gone.
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                let _ = tx.send(5);
            });
            assert_eq!(timeout(Duration::from_secs(60), rx).await, Ok(Ok(5)));

            sleep_until(Instant::now() + Duration::from_millis(5)).await;
            // Too far to represent: no deadline at all.
            assert_eq!(timeout(Duration::MAX, async { 3 }).await, Ok(3));
        });
    }

    /// A tokio timer in code that runs on a worker panics there (the workers have no time
    /// driver), and only when that line runs: a timeout path a test never takes would ship.
    /// So tokio's timers may appear only in the control plane's files.
    #[test]
    fn tokio_timers_appear_only_in_control_plane_code() {
        const CONTROL_PLANE: [&str; 4] = ["health.rs", "lib.rs", "listener.rs", "vault.rs"];
        const TIMERS: [&str; 6] = [
            "sleep",
            "sleep_until",
            "timeout",
            "timeout_at",
            "interval",
            "interval_at",
        ];
        fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        assert!(all.len() > 20, "{} source files found", all.len());
        let mut found = Vec::new();
        for path in all {
            let rel = path.strip_prefix(&src).expect("under src");
            if CONTROL_PLANE.iter().any(|c| rel == std::path::Path::new(c)) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                // `tokio::time::Instant` is a clock read, not a timer.
                let uses_timer = code.match_indices("time::").any(|(i, _)| {
                    let rest = &code[i + "time::".len()..];
                    let word: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    TIMERS.contains(&word.as_str())
                        || (rest.starts_with('{')
                            && TIMERS.iter().any(|t| {
                                rest.split(['{', '}', ',', ' '])
                                    .any(|item| item.trim() == *t)
                            }))
                }) && code.contains("tokio");
                if uses_timer {
                    found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "tokio timers in code that may run on a worker (use crate::workers::{{timeout, \
             timeout_at, sleep, sleep_until, Alarm}}):\n{}",
            found.join("\n")
        );
    }
}
