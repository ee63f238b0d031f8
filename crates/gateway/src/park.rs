//! Parked clients: a logged-in client that has sat idle for `[gateway] park_after`, holding
//! no server and with nothing in flight, leaves its task. Its socket waits in its worker's
//! parking lot — an epoll set of its own, watched by one task per worker — and its session
//! waits as a small boxed record (a [`Dormant`]), so 10,000 idle clients cost their records,
//! not 10,000 tasks, futures and event-loop registrations.
//!
//! A parked client wakes when its socket becomes readable (a request, or the client closing),
//! when its idle deadline passes, or when the gateway stops: the lot puts the socket back on
//! the worker's event loop and spawns the session again, which then finds out for itself what
//! happened (reads the request, times out, or says goodbye). The lot never reads a byte and
//! never decides anything about a session.
//!
//! Parking costs four `epoll_ctl` calls and a task spawn per idle period longer than
//! `park_after`, and the first request after it waits one more event-loop turn; a busy client
//! never parks.
//!
//! Deliberately not here: any protocol or TLS knowledge. A front end implements [`Dormant`]
//! and hands over the bare socket (a TLS client's socket is taken out from under its TLS
//! stream, which waits in the record; see `postgres::stream::ClientIo`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

use crate::{Phase, Shared};

/// A parked session, resumed with its socket back on an event loop.
pub(crate) trait Dormant: Send + 'static {
    /// The session again, as the future to run (until it ends or parks again). `readable`:
    /// woken by its socket rather than by its deadline or a stop.
    fn wake(
        self: Box<Self>,
        client: TcpStream,
        readable: bool,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// The session ends without its socket: it could not go back on an event loop (out of
    /// file descriptors for epoll, say). Writes the session's last records.
    fn abandon(self: Box<Self>, why: io::Error);

    /// The listener the session came in on (a panic in it is counted there).
    fn listener(&self) -> &Arc<crate::listener::ListenerRt>;
}

/// Events taken from the lot's epoll set per turn.
const EVENTS: usize = 256;
/// How often parked clients' idle deadlines are checked.
const SWEEP: Duration = Duration::from_secs(1);

/// A gateway's parking lots: one per worker (and one for connections run outside workers),
/// each started by the first client that parks there.
#[derive(Default)]
pub struct Lots {
    lots: Mutex<Vec<(Option<usize>, Arc<Lot>)>>,
}

impl std::fmt::Debug for Lots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lots")
            .field("parked", &self.parked())
            .finish()
    }
}

impl Lots {
    /// Clients parked now, in every lot.
    pub fn parked(&self) -> usize {
        self.lots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, lot)| lot.lock().clients.len())
            .sum()
    }

    /// This worker's lot; made, and its task spawned on this worker, on first use.
    fn here(&self, phase: &tokio::sync::watch::Receiver<Phase>) -> io::Result<Arc<Lot>> {
        let worker = crate::workers::current();
        let mut lots = self.lots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, lot)) = lots.iter().find(|(w, _)| *w == worker) {
            return Ok(lot.clone());
        }
        let poll = Poll::new()?;
        let lot = Arc::new(Lot {
            registry: poll.registry().try_clone()?,
            inner: Mutex::new(Inner {
                clients: Slab::new(),
                closed: false,
            }),
            epoch: Instant::now(),
        });
        // The event loop watches the lot's epoll descriptor like any socket. The AsyncFd owns
        // the Poll, so the descriptor stays open for as long as it is registered: the I/O
        // safety that the deprecation of `with_interest` is about holds here.
        #[allow(deprecated)]
        let watcher = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        tokio::spawn(watch(lot.clone(), watcher, phase.clone()));
        lots.push((worker, lot.clone()));
        Ok(lot)
    }
}

/// Park `client`'s socket and `session` until the socket is readable, `deadline` passes or the
/// gateway stops. Both are given back when they cannot be parked (the gateway is stopping, or
/// the socket cannot join the lot); the caller then carries on serving.
pub(crate) fn park<D: Dormant>(
    shared: &Arc<Shared>,
    client: TcpStream,
    session: Box<D>,
    deadline: Instant,
) -> Result<(), (TcpStream, Box<D>)> {
    if *shared.phase.borrow() != Phase::Running {
        return Err((client, session));
    }
    let lot = match shared.lots.here(&shared.phase) {
        Ok(lot) => lot,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start a parking lot for idle clients");
            return Err((client, session));
        }
    };
    lot.park(client, session, deadline)
}

/// One worker's parked clients.
struct Lot {
    /// Where sockets join and leave the lot's epoll set.
    registry: Registry,
    inner: Mutex<Inner>,
    /// Deadlines are kept as seconds since this (4 bytes a client).
    epoch: Instant,
}

struct Inner {
    clients: Slab<Parked>,
    /// Set once the lot's task ends (the gateway stops): nothing parks any more.
    closed: bool,
}

struct Parked {
    socket: mio::net::TcpStream,
    session: Box<dyn Dormant>,
    /// Seconds since the lot's epoch at which the session is woken to time out.
    deadline: u32,
}

impl Lot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn park<D: Dormant>(
        &self,
        client: TcpStream,
        session: Box<D>,
        deadline: Instant,
    ) -> Result<(), (TcpStream, Box<D>)> {
        let mut inner = self.lock();
        if inner.closed {
            return Err((client, session));
        }
        // Off the worker's event loop (its registration is freed), onto the lot's epoll set.
        let std = match client.into_std() {
            Ok(s) => s,
            Err(err) => {
                drop(inner);
                session.abandon(err);
                return Ok(());
            }
        };
        let mut socket = mio::net::TcpStream::from_std(std);
        let key = inner.clients.vacant_key();
        // Readable also reports a hang-up or an error; a socket that is readable already when
        // it joins is reported at once (epoll looks on insertion), so nothing is missed.
        if let Err(err) = self
            .registry
            .register(&mut socket, Token(key), Interest::READABLE)
        {
            drop(inner);
            tracing::debug!(error = %err, "cannot park an idle client; it stays on its event loop");
            return match TcpStream::from_std(socket.into()) {
                Ok(client) => Err((client, session)),
                Err(err) => {
                    session.abandon(err);
                    Ok(())
                }
            };
        }
        inner.clients.insert(Parked {
            socket,
            session,
            deadline: self.seconds_ceil(deadline),
        });
        Ok(())
    }

    fn seconds(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs()
    }

    /// Rounded up, so a client is never woken before its deadline.
    fn seconds_ceil(&self, at: Instant) -> u32 {
        let d = at.saturating_duration_since(self.epoch);
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// Take these clients out of the lot.
    fn take(&self, inner: &mut Inner, keys: impl Iterator<Item = usize>) -> Vec<Parked> {
        keys.filter_map(|key| inner.clients.try_remove(key))
            .map(|mut p| {
                // A failure only leaves an entry that dies with the socket.
                let _ = self.registry.deregister(&mut p.socket);
                p
            })
            .collect()
    }

    /// Clients whose sockets became readable.
    fn take_ready(&self, poll: &mut Poll, events: &mut Events) -> Option<Vec<Parked>> {
        if poll.poll(events, Some(Duration::ZERO)).is_err() || events.is_empty() {
            return None;
        }
        let mut inner = self.lock();
        Some(self.take(&mut inner, events.iter().map(|e| e.token().0)))
    }

    /// Clients whose idle deadline has passed (every one when `all`).
    fn take_due(&self, all: bool) -> Vec<Parked> {
        let now = self.seconds(Instant::now());
        let mut inner = self.lock();
        let due: Vec<usize> = inner
            .clients
            .iter()
            .filter(|(_, p)| all || u64::from(p.deadline) <= now)
            .map(|(key, _)| key)
            .collect();
        self.take(&mut inner, due.into_iter())
    }
}

/// Back on this worker's event loop, and the session spawned again.
fn resume(parked: Parked, readable: bool) {
    let Parked {
        socket, session, ..
    } = parked;
    match TcpStream::from_std(socket.into()) {
        Ok(client) => {
            let listener = session.listener().clone();
            let task = session.wake(client, readable);
            drop(tokio::spawn(crate::workers::contained(
                listener, None, task,
            )));
        }
        Err(err) => session.abandon(err),
    }
}

/// Wakes every parked session when the lot's task ends, however it ends (the gateway stops,
/// or the worker's runtime is dropped and the task with it).
struct CloseOnDrop(Arc<Lot>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        for parked in self.0.take_due(true) {
            // Outside a runtime (it is being dropped) the session cannot run again; it ends
            // with its records written.
            if tokio::runtime::Handle::try_current().is_ok() {
                resume(parked, false);
            } else {
                parked
                    .session
                    .abandon(io::Error::other("the gateway stopped"));
            }
        }
    }
}

/// The lot's task: wake clients as their sockets become readable, as their idle deadlines
/// pass, and all of them when the gateway stops.
async fn watch(
    lot: Arc<Lot>,
    mut watcher: AsyncFd<Poll>,
    mut phase: tokio::sync::watch::Receiver<Phase>,
) {
    let _close = CloseOnDrop(lot.clone());
    let mut events = Events::with_capacity(EVENTS);
    // The data plane's alarm, not a tokio interval: a pending tokio timer would make every
    // park of the worker's event loop scan the timer wheel (see `crate::workers::Alarm`).
    let mut sweep = crate::workers::Alarm::new();
    sweep.set(Instant::now() + SWEEP);
    loop {
        tokio::select! {
            ready = watcher.readable_mut() => {
                let Ok(mut guard) = ready else { break };
                // Take what the set has now; only an empty set clears the readiness (a client
                // parked meanwhile makes the descriptor readable again).
                match lot.take_ready(guard.get_inner_mut(), &mut events) {
                    Some(woken) => woken.into_iter().for_each(|p| resume(p, true)),
                    None => guard.clear_ready(),
                }
            }
            () = sweep.rung() => {
                lot.take_due(false).into_iter().for_each(|p| resume(p, false));
                sweep.set(Instant::now() + SWEEP);
            }
            _ = phase.wait_for(|p| *p == Phase::Stopped) => break,
        }
    }
}
