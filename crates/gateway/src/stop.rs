//! The gateway's stop, as a future a connection can poll on every event for the price of one
//! atomic load (a `watch` receiver's `wait_for` takes locks on each poll, which a session's
//! relay loop pays per message).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// Fired once, when the gateway stops (`Phase::Stopped`) or goes away.
#[derive(Debug, Default)]
pub struct StopSignal {
    fired: AtomicBool,
    waiters: Mutex<Slab<Waker>>,
}

impl StopSignal {
    /// Wake every waiter; later waits end at once.
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *self.lock());
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Ready once the signal has fired.
    pub fn wait(&self) -> StopWait<'_> {
        StopWait {
            signal: self,
            key: None,
            waker: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// See [`StopSignal::wait`]. Registers its waker once (again only if the task's waker
/// changes), and after that costs an atomic load per poll.
pub struct StopWait<'a> {
    signal: &'a StopSignal,
    key: Option<usize>,
    waker: Option<Waker>,
}

impl Future for StopWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.signal.is_fired() {
            return Poll::Ready(());
        }
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let mut waiters = this.signal.lock();
        // Checked again under the lock `fire` empties the list with, so no wake is lost.
        if this.signal.is_fired() {
            return Poll::Ready(());
        }
        if let Some(key) = this.key.take() {
            waiters.try_remove(key);
        }
        this.key = Some(waiters.insert(cx.waker().clone()));
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for StopWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.signal.lock().try_remove(key);
        }
    }
}
