//! Moving bytes between a client and a target until both sides are done.
//!
//! Both directions run in one task. Reads go into a per-thread scratch buffer and are written
//! straight on; only when the peer cannot take everything at once is the remainder copied into
//! a per-direction buffer (and reading that direction pauses until it drains). An idle
//! connection therefore holds no relay buffer at all, which keeps 10,000 idle clients cheap.
//!
//! Half-close is honoured: when one side finishes sending, the other side's write half is shut
//! down and the reverse direction keeps flowing until it finishes too. The relay also ends on
//! the listener's idle timeout or when `stop` resolves (drain deadline, forced shutdown).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::metrics::ListenerMetrics;

const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Byte and segment counts of one flow, shared with the flow-log aggregator.
#[derive(Debug, Default)]
pub struct FlowCounters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed their sending halves.
    Finished,
    IdleTimeout,
    /// `stop` resolved (drain deadline or forced shutdown).
    Stopped,
    ClientError(io::Error),
    TargetError(io::Error),
}

#[derive(Default)]
struct Half {
    pending: Vec<u8>,
    pos: usize,
    read_done: bool,
    shut_down: bool,
    needs_flush: bool,
}

enum Step {
    Moved,
    Done,
}

impl Half {
    fn finished(&self) -> bool {
        self.shut_down
    }

    /// Drive one direction as far as it goes without blocking. `Ready(Ok(Moved))` means bytes
    /// moved (call again), `Ready(Ok(Done))` means this direction is finished.
    fn poll_step<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        count: &mut dyn FnMut(usize),
    ) -> Poll<Result<Step, (bool, io::Error)>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        // 1. Bytes left over from an earlier partial write go first.
        while self.pos < self.pending.len() {
            let n = ready!(writer.as_mut().poll_write(cx, &self.pending[self.pos..]))
                .map_err(|e| (false, e))?;
            if n == 0 {
                return Poll::Ready(Err((false, io::ErrorKind::WriteZero.into())));
            }
            self.pos += n;
            self.needs_flush = true;
        }
        if !self.pending.is_empty() {
            // Release the memory: an idle flow should hold nothing.
            self.pending = Vec::new();
            self.pos = 0;
        }
        if self.needs_flush {
            ready!(writer.as_mut().poll_flush(cx)).map_err(|e| (false, e))?;
            self.needs_flush = false;
        }
        if self.read_done {
            if !self.shut_down {
                // The peer may already be gone; a failed shutdown of a half is not an error
                // worth ending the other direction for.
                let _ = ready!(writer.as_mut().poll_shutdown(cx));
                self.shut_down = true;
            }
            return Poll::Ready(Ok(Step::Done));
        }
        // 2. Read into the thread's scratch buffer and write straight through.
        SCRATCH_BUF.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match ready!(reader.as_mut().poll_read(cx, &mut buf)) {
                Ok(()) => {}
                // A TLS peer that closes without close_notify (most clients do) ends its
                // stream; it is not an error.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Poll::Ready(Err((true, e))),
            }
            let data = buf.filled();
            if data.is_empty() {
                self.read_done = true;
                return Poll::Ready(Ok(Step::Moved));
            }
            count(data.len());
            let mut written = 0;
            while written < data.len() {
                match writer.as_mut().poll_write(cx, &data[written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err((false, io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        self.needs_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((false, e))),
                    Poll::Pending => break,
                }
            }
            if written < data.len() {
                self.pending.extend_from_slice(&data[written..]);
                self.pos = 0;
            }
            Poll::Ready(Ok(Step::Moved))
        })
    }
}

/// Relay until both directions finish, the flow idles out, or `stop` resolves.
pub async fn relay<C, T, S>(
    client: &mut C,
    target: &mut T,
    counters: &FlowCounters,
    listener: &ListenerMetrics,
    idle_timeout: Duration,
    stop: S,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    T: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: Future<Output = ()>,
{
    let mut up = Half::default();
    let mut down = Half::default();
    let mut last_activity = Instant::now();
    // The data plane's alarm (worker event loops have no tokio timers): set for the idle
    // deadline as of its last look, and moved on when it rings early.
    let mut idle = crate::workers::Alarm::new();
    if let Some(at) = last_activity.checked_add(idle_timeout) {
        idle.set(at.into_std());
    }
    let mut stop = std::pin::pin!(stop);
    std::future::poll_fn(|cx| {
        let mut moved = false;
        let mut exhausted = true;
        // Bound the work per poll so one busy flow cannot starve the task scheduler.
        for _ in 0..32 {
            let mut progressed = false;
            if !up.finished() {
                let mut count = |n: usize| {
                    counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    counters.packets_in.fetch_add(1, Ordering::Relaxed);
                    listener.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                };
                match up.poll_step(
                    cx,
                    Pin::new(&mut *client),
                    Pin::new(&mut *target),
                    &mut count,
                ) {
                    Poll::Ready(Ok(Step::Moved)) => progressed = true,
                    Poll::Ready(Ok(Step::Done)) => {}
                    Poll::Ready(Err((on_read, e))) => {
                        return Poll::Ready(if on_read {
                            RelayEnd::ClientError(e)
                        } else {
                            RelayEnd::TargetError(e)
                        })
                    }
                    Poll::Pending => {}
                }
            }
            if !down.finished() {
                let mut count = |n: usize| {
                    counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    counters.packets_out.fetch_add(1, Ordering::Relaxed);
                    listener.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                };
                match down.poll_step(
                    cx,
                    Pin::new(&mut *target),
                    Pin::new(&mut *client),
                    &mut count,
                ) {
                    Poll::Ready(Ok(Step::Moved)) => progressed = true,
                    Poll::Ready(Ok(Step::Done)) => {}
                    // A client that has finished sending and hung up before the last answer
                    // reached it closed normally.
                    Poll::Ready(Err((false, e))) if up.read_done && is_hang_up(&e) => {
                        return Poll::Ready(RelayEnd::Finished)
                    }
                    Poll::Ready(Err((on_read, e))) => {
                        return Poll::Ready(if on_read {
                            RelayEnd::TargetError(e)
                        } else {
                            RelayEnd::ClientError(e)
                        })
                    }
                    Poll::Pending => {}
                }
            }
            if up.finished() && down.finished() {
                return Poll::Ready(RelayEnd::Finished);
            }
            if !progressed {
                exhausted = false;
                break;
            }
            moved = true;
        }
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(RelayEnd::Stopped);
        }
        if moved {
            last_activity = Instant::now();
        }
        if idle.poll_rung(cx).is_ready() {
            let deadline = last_activity + idle_timeout;
            if Instant::now() >= deadline {
                return Poll::Ready(RelayEnd::IdleTimeout);
            }
            idle.set(deadline.into_std());
            // Register for the new setting.
            let _ = idle.poll_rung(cx);
        }
        if exhausted {
            // We stopped at the work bound, not because both sides were pending: yield and
            // come back rather than sleeping without a registered waker.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}

fn is_hang_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

/// Read what is available from `reader` and append it to `buf`, going through the per-thread
/// scratch buffer so a connection waiting for input holds no buffer of its own. `Ok(0)` is
/// end of stream.
pub(crate) async fn read_append<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_append(cx, reader, buf, limit)).await
}

/// [`read_append`] as a poll, for a hand-written loop over several sources.
pub(crate) fn poll_read_append<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Poll<io::Result<usize>> {
    SCRATCH_BUF.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let room = limit.clamp(1, scratch.len());
        let mut rb = ReadBuf::new(&mut scratch[..room]);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        buf.extend_from_slice(rb.filled());
        Poll::Ready(Ok(n))
    })
}
