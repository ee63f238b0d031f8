//! The life of one client connection on a `tcp` or `tls` listener, in the order that cannot be
//! skipped: PROXY header (when accepted, only from trusted proxies) → security-group decision
//! on the real client address → TLS termination → checkout of a target → relay → flow record.
//!
//! Each stage returns a type the next one requires: only an [`Admitted`] connection can be given
//! a target, so no code path forwards bytes for a connection the policy did not allow. The
//! protocol-aware front ends (PostgreSQL, MySQL, Redis) insert their handshake and
//! authentication between TLS and checkout and reuse the rest.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};
use sumun_config::{Protocol, ProxyProtocolMode};
use sumun_policy::Decision;
use sumun_wire::proxy::{self, Decoded};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::health;
use crate::listener::{ListenerRt, ListenerSnapshot};
use crate::metrics::RejectReason;
use crate::records::ActiveFlow;
use crate::relay::{self, RelayEnd};
use crate::targets::{Observation, TargetRt};
use crate::{Phase, Shared};

/// A connection whose client address passed the listener's security groups.
pub struct Admitted {
    pub client: SocketAddr,
    /// The address the client connected to (from the PROXY header when there is one).
    pub local: SocketAddr,
    pub rule: sumun_policy::Allowed,
    /// Its flow, open from admission on: whatever happens next (a refusal, a failed login, a
    /// relay, a session), the connection ends with exactly one closing flow record.
    pub flow: Arc<ActiveFlow>,
}

/// A connected target, counted in its active flows until dropped.
pub struct Checkout {
    pub stream: TcpStream,
    pub target: Arc<TargetRt>,
    _active: TargetActive,
}

/// One flow counted in a target's active flows (what `least_conn` balances on, what
/// `sumun_target_active_flows` shows, what draining waits for) for as long as it is held:
/// released however the flow ends, a panic unwinding through it included.
#[derive(Debug)]
pub(crate) struct TargetActive(Arc<TargetRt>);

impl TargetActive {
    pub(crate) fn new(target: &Arc<TargetRt>) -> TargetActive {
        target.active.fetch_add(1, Ordering::Relaxed);
        TargetActive(target.clone())
    }
}

impl Drop for TargetActive {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds one of the listener's `max_connections` slots, for as long as the client is connected
/// (a protocol session takes it along, also while it is parked).
pub struct Slot(Arc<ListenerRt>);

impl Slot {
    pub(crate) fn listener(&self) -> &Arc<ListenerRt> {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    listener: Arc<ListenerRt>,
    shared: Arc<Shared>,
) {
    let snap = listener.snapshot();
    let metrics = listener.metrics.clone();
    let reject = |client: SocketAddr, local: SocketAddr, reason: RejectReason| {
        metrics.reject(reason);
        shared
            .records
            .reject(&listener.name, client, local, reason.as_str());
    };

    let open = listener.open.fetch_add(1, Ordering::Relaxed) + 1;
    let slot = Slot(listener.clone());
    if open > snap.settings.max_connections {
        tracing::warn!(listener = %listener.name, client = %peer, "connection limit reached; refusing");
        reject(peer, local, RejectReason::MaxConnections);
        return;
    }
    let handshake_deadline = Instant::now() + snap.settings.handshake_timeout;
    let mut stream = stream;

    // 1. PROXY header: who the client really is.
    let (client, local) = match snap.settings.proxy_protocol {
        ProxyProtocolMode::Off => (peer, local),
        ProxyProtocolMode::Accept => {
            let trusted = snap
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&sumun_policy::canonical(peer.ip())));
            if !trusted {
                tracing::warn!(listener = %listener.name, peer = %peer, "PROXY header sender is not a trusted proxy; closing");
                reject(peer, local, RejectReason::ProxyUntrusted);
                return;
            }
            // Boxed, like every other handshake step: a connection's task keeps only what its
            // relay needs, not the largest state any step ever had (idle memory).
            let header = Box::pin(crate::workers::timeout_at(
                handshake_deadline,
                read_proxy_header(&mut stream),
            ));
            match header.await {
                Err(_) => {
                    tracing::warn!(listener = %listener.name, peer = %peer, "no complete PROXY header before the handshake timeout");
                    reject(peer, local, RejectReason::HandshakeTimeout);
                    return;
                }
                Ok(Err(err)) => {
                    tracing::warn!(listener = %listener.name, peer = %peer, error = %err, "malformed PROXY header; closing");
                    reject(peer, local, RejectReason::ProxyMalformed);
                    return;
                }
                Ok(Ok(header)) => (
                    header.source.unwrap_or(peer),
                    header.destination.unwrap_or(local),
                ),
            }
        }
    };

    // 2. Security groups, before a single byte is read or sent: a source no rule admits is
    //    closed without a word (it learns nothing, not even which protocol listens here).
    let rule = match snap.policy.decide(client.ip()) {
        Decision::Allowed(rule) => rule,
        Decision::Denied(denied) => {
            tracing::info!(listener = %listener.name, client = %client, reason = denied.reason.as_str(), "connection rejected by security groups");
            let reason = match denied.reason {
                sumun_policy::DenyReason::NoSecurityGroup => RejectReason::NoSecurityGroup,
                sumun_policy::DenyReason::NoMatchingRule => RejectReason::SecurityGroup,
            };
            reject(client, local, reason);
            return;
        }
    };

    // 3. Protection at the door: bans, rate limits, IP set and geo rules, before any protocol
    //    work. A source the security groups admit is told why in its protocol's words.
    if let Err(refusal) = shared.protection().admit(client, local, &listener.name) {
        let reason = refusal.reason();
        tracing::info!(listener = %listener.name, client = %client, reason = reason.as_str(), "connection refused by protection");
        reject(client, local, reason);
        Box::pin(crate::refuse::answer(
            stream,
            snap.settings.protocol,
            &refusal,
            handshake_deadline,
        ))
        .await;
        return;
    }
    let admitted = Admitted {
        client,
        local,
        rule,
        flow: shared.records.open(&listener, client, local),
    };
    if *shared.phase.borrow() != Phase::Running {
        reject_admitted(&listener, &shared, &admitted, RejectReason::ShuttingDown);
        return;
    }

    // Raw relays are the core's; every other protocol goes to its registered front end, and one
    // without a front end is refused, never relayed: its clients would skip the TLS and login
    // they were promised.
    match snap.settings.protocol {
        // 3. TLS termination, then 4. checkout and 5. relay.
        Protocol::Tls => match &snap.tls {
            Some(tls) => {
                // Boxed as a whole: the TLS stream then lives in this allocation only.
                let tls = tls.clone();
                Box::pin(terminate_tls(
                    stream,
                    &tls,
                    admitted,
                    &snap,
                    &listener,
                    &shared,
                    handshake_deadline,
                ))
                .await;
            }
            None => {
                tracing::error!(listener = %listener.name, client = %admitted.client, "tls listener has no TLS settings; refusing rather than relaying plain text");
                reject_admitted(&listener, &shared, &admitted, RejectReason::NoFrontEnd);
            }
        },
        Protocol::Tcp => Box::pin(forward(stream, admitted, &snap, &listener, &shared)).await,
        // Protocol front ends negotiate TLS, authenticate and pick targets themselves.
        protocol => match shared.front_ends.get(protocol).cloned() {
            Some(front_end) => {
                front_end
                    .serve(crate::frontend::Accepted {
                        stream,
                        admitted,
                        snap,
                        listener: listener.clone(),
                        shared: shared.clone(),
                        handshake_deadline,
                        slot,
                    })
                    .await
            }
            None => {
                tracing::error!(listener = %listener.name, client = %admitted.client, protocol = protocol.as_str(), "no front end for this protocol; refusing rather than relaying unauthenticated bytes");
                reject_admitted(&listener, &shared, &admitted, RejectReason::NoFrontEnd);
            }
        },
    }
}

/// Count and record an admitted connection that is closed before it is relayed.
pub(crate) fn reject_admitted(
    listener: &ListenerRt,
    shared: &Shared,
    admitted: &Admitted,
    reason: RejectReason,
) {
    listener.metrics.reject(reason);
    shared.records.reject(
        &listener.name,
        admitted.client,
        admitted.local,
        reason.as_str(),
    );
    // The REJECT record is the flow's closing record.
    shared.records.discard(&admitted.flow);
}

/// A `tls` listener: the TLS handshake within the deadline, then the relay.
async fn terminate_tls(
    stream: TcpStream,
    tls: &crate::tls::TlsContext,
    admitted: Admitted,
    snap: &ListenerSnapshot,
    listener: &ListenerRt,
    shared: &Shared,
    deadline: Instant,
) {
    let reject = |reason| reject_admitted(listener, shared, &admitted, reason);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    let tls_stream = match crate::workers::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(err)) => {
            tracing::info!(listener = %listener.name, client = %admitted.client, error = %err, "TLS handshake failed");
            reject(RejectReason::TlsHandshake);
            return;
        }
        Err(_) => {
            tracing::info!(listener = %listener.name, client = %admitted.client, "TLS handshake timed out");
            reject(RejectReason::HandshakeTimeout);
            return;
        }
    };
    let (version, group) = crate::tls::handshake_labels(tls_stream.get_ref().1);
    listener.metrics.tls_handshake(version, group);
    forward(tls_stream, admitted, snap, listener, shared).await;
}

/// Read exactly one PROXY header, consuming no byte beyond it.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<proxy::ProxyHeader, ProxyReadError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match proxy::decode(&buf)? {
            Decoded::Complete { header, .. } => return Ok(header),
            Decoded::Incomplete { needed_at_least } => {
                // Read what is there, up to what the decoder needs: never past the header, and
                // a bad prefix is judged as soon as it arrives rather than at the timeout.
                let start = buf.len();
                buf.resize(start + needed_at_least.max(1), 0);
                let n = stream.read(&mut buf[start..]).await?;
                buf.truncate(start + n);
                if n == 0 {
                    return Err(ProxyReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ProxyReadError {
    #[error(transparent)]
    Decode(#[from] proxy::ProxyError),
    #[error("connection closed inside the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

async fn forward<C>(
    mut client: C,
    admitted: Admitted,
    snap: &ListenerSnapshot,
    listener: &ListenerRt,
    shared: &Shared,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = &listener.metrics;
    let Some(mut checkout) = checkout(&admitted, snap, listener).await else {
        shared.records.reject(
            &listener.name,
            admitted.client,
            admitted.local,
            RejectReason::NoHealthyTarget.as_str(),
        );
        shared.records.discard(&admitted.flow);
        let _ = client.shutdown().await;
        return;
    };
    let flow = &admitted.flow;
    *flow.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(checkout.target.addr);
    metrics.new_flows.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(listener = %listener.name, client = %admitted.client, target = %checkout.target.address, rule = %admitted.rule.cidr, "flow open");

    let stop = stop_signal(checkout.target.drain_watch(), shared.phase.clone());
    let end = relay::relay(
        &mut client,
        &mut checkout.stream,
        &flow.counters,
        metrics,
        snap.settings.idle_limit(),
        stop,
    )
    .await;
    finish(&end, flow, listener, shared);
}

pub(crate) fn finish(end: &RelayEnd, flow: &ActiveFlow, listener: &ListenerRt, shared: &Shared) {
    let how = match end {
        RelayEnd::Finished => "closed",
        RelayEnd::IdleTimeout => "idle_timeout",
        RelayEnd::Stopped => "drained",
        RelayEnd::ClientError(_) => "client_error",
        RelayEnd::TargetError(_) => "target_error",
    };
    match end {
        RelayEnd::ClientError(e) | RelayEnd::TargetError(e) => {
            tracing::debug!(listener = %listener.name, client = %flow.client, end = how, error = %e, "flow closed");
        }
        _ => {
            tracing::debug!(listener = %listener.name, client = %flow.client, end = how, "flow closed")
        }
    }
    shared.records.close(flow);
    shared.protection().session_end(
        &shared.records,
        &listener.name,
        flow.client,
        None,
        flow.counters.bytes_out.load(Ordering::Relaxed),
        flow.start,
    );
    let c = &flow.counters;
    shared
        .records
        .audit("session.end", &listener.name, flow.client, || {
            let mut extra = Map::new();
            extra.insert("end".into(), Value::from(how));
            extra.insert(
                "duration_ms".into(),
                Value::from(crate::records::unix_now().saturating_sub(flow.start) * 1000),
            );
            extra.insert(
                "bytes_in".into(),
                Value::from(c.bytes_in.load(Ordering::Relaxed)),
            );
            extra.insert(
                "bytes_out".into(),
                Value::from(c.bytes_out.load(Ordering::Relaxed)),
            );
            if let Some(target) = *flow.target.lock().unwrap_or_else(|p| p.into_inner()) {
                extra.insert("target".into(), Value::from(target.to_string()));
            }
            extra
        });
}

/// Connect to a healthy target, trying others when a connect fails or times out.
pub(crate) async fn checkout(
    admitted: &Admitted,
    snap: &ListenerSnapshot,
    listener: &ListenerRt,
) -> Option<Checkout> {
    let group = &snap.group;
    let settings = group.settings();
    let mut tried: Vec<SocketAddr> = Vec::new();
    for _ in 0..=settings.connect_retries {
        let Some(target) = group.pick(&tried) else {
            break;
        };
        tried.push(target.addr);
        // Counted while connecting too, so concurrent picks see the target busy.
        let active = TargetActive::new(&target);
        let connected =
            crate::workers::timeout(settings.connect_timeout, TcpStream::connect(target.addr))
                .await;
        let failure = match connected {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let mut checkout = Checkout {
                    stream,
                    target,
                    _active: active,
                };
                if settings.proxy_protocol_v2 {
                    let mut header = Vec::with_capacity(52);
                    proxy::encode_v2(admitted.client, admitted.local, &mut header);
                    if let Err(err) = checkout.stream.write_all(&header).await {
                        tracing::warn!(listener = %listener.name, target = %checkout.target.address, error = %err, "cannot send PROXY header to target");
                        continue;
                    }
                }
                checkout.target.flows_total.fetch_add(1, Ordering::Relaxed);
                return Some(checkout);
            }
            Ok(Err(err)) => {
                tracing::warn!(listener = %listener.name, target = %target.address, error = %err, "cannot connect to target; trying another");
                "connection failures"
            }
            Err(_) => {
                tracing::warn!(listener = %listener.name, target = %target.address, timeout = ?settings.connect_timeout, "connect to target timed out; trying another");
                "connect timeouts"
            }
        };
        drop(active);
        target.connect_errors.fetch_add(1, Ordering::Relaxed);
        let hc = &settings.health_check;
        if let Some((health, reason)) = target.observe(
            Observation::Failure(failure),
            hc.healthy_threshold,
            hc.unhealthy_threshold,
        ) {
            health::log_change(&group.name, &target.address, health, &reason);
        }
    }
    let reason = if tried.is_empty() {
        RejectReason::NoHealthyTarget
    } else {
        RejectReason::TargetConnect
    };
    tracing::warn!(listener = %listener.name, client = %admitted.client, target_group = %group.name, reason = reason.as_str(), "no target available; closing");
    listener.metrics.reject(reason);
    None
}

/// Resolves when the flow must end: its target's drain deadline passed, or the gateway is
/// stopping immediately.
pub(crate) async fn stop_signal(
    mut drain: watch::Receiver<Option<Instant>>,
    mut phase: watch::Receiver<Phase>,
) {
    let drained = async {
        loop {
            let deadline = *drain.borrow_and_update();
            if let Some(deadline) = deadline {
                crate::workers::sleep_until(deadline).await;
                return;
            }
            if drain.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let forced = async {
        loop {
            if *phase.borrow_and_update() == Phase::Stopped {
                return;
            }
            if phase.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = drained => {}
        () = forced => {}
    }
}
