//! Alarm rules over the gateway's own metrics, CloudWatch-style (`[[alarms]]`): every period
//! the samples of a metric are reduced by a statistic to one datapoint, compared with a
//! threshold, and `evaluation_periods` breaching datapoints in a row move the alarm to ALARM; a
//! datapoint that does not breach moves it back to OK. Each transition is POSTed to the
//! alarm's webhook (a Slack-compatible `{"text": ...}` or a JSON object), retried with backoff.
//!
//! Every alarm runs on its own task on the control runtime and delivers through its own queue:
//! nothing here is on the data path, and a webhook that is down delays only its own alarm's
//! notifications. A reload that changes the rules restarts them (their state starts over).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sumun_config::{AlarmSettings, AlarmStatistic, WebhookFormat};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Shared;

/// Samples taken per period.
const SAMPLES: u32 = 6;
/// First retry after this; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Attempts per notification before it is dropped (about ten minutes of retries).
const ATTEMPTS: u32 = 25;
/// Notifications queued per alarm; older ones are kept, newer dropped when full.
const QUEUE: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmState {
    InsufficientData,
    Ok,
    Alarm,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
        }
    }
}

#[derive(Debug, Default)]
struct Live {
    /// 0 insufficient data, 1 OK, 2 ALARM.
    state: AtomicU8,
    sent: AtomicU64,
    failed: AtomicU64,
}

/// The rules running, their tasks, and each alarm's live state.
type Running = (
    Vec<AlarmSettings>,
    Vec<JoinHandle<()>>,
    Vec<(String, Arc<Live>)>,
);

/// The running alarms.
#[derive(Debug, Default)]
pub struct Alarms {
    running: Mutex<Running>,
}

impl Drop for Alarms {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|p| p.into_inner());
        for h in &running.1 {
            h.abort();
        }
    }
}

impl Alarms {
    /// Run `rules` (restarting them if they changed). Must be called inside a tokio runtime.
    pub(crate) fn apply(&self, rules: &[AlarmSettings], shared: Weak<Shared>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.0 == rules {
            return;
        }
        for h in running.1.drain(..) {
            h.abort();
        }
        running.2.clear();
        for rule in rules {
            let live = Arc::new(Live::default());
            let (tx, rx) = mpsc::channel(QUEUE);
            running
                .1
                .push(tokio::spawn(deliver(rule.clone(), rx, live.clone())));
            running.1.push(tokio::spawn(evaluate(
                rule.clone(),
                shared.clone(),
                tx,
                live.clone(),
            )));
            running.2.push((rule.name.clone(), live));
        }
        running.0 = rules.to_vec();
    }

    /// `sumun_alarm_state` and `sumun_alarm_notifications_total`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.2.is_empty() {
            return;
        }
        crate::metrics::family(
            out,
            "sumun_alarm_state",
            "gauge",
            "Alarm state: 0 insufficient data, 1 OK, 2 ALARM.",
        );
        for (name, live) in &running.2 {
            let n = crate::metrics::esc(name);
            let _ = writeln!(
                out,
                "sumun_alarm_state{{alarm=\"{n}\"}} {}",
                live.state.load(Ordering::Relaxed)
            );
        }
        crate::metrics::family(
            out,
            "sumun_alarm_notifications_total",
            "counter",
            "Alarm transitions delivered to the webhook, or given up on after every retry.",
        );
        for (name, live) in &running.2 {
            let n = crate::metrics::esc(name);
            let _ = writeln!(
                out,
                "sumun_alarm_notifications_total{{alarm=\"{n}\",result=\"sent\"}} {}",
                live.sent.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "sumun_alarm_notifications_total{{alarm=\"{n}\",result=\"failed\"}} {}",
                live.failed.load(Ordering::Relaxed)
            );
        }
    }

    /// Each alarm's state now.
    pub fn states(&self) -> Vec<(String, AlarmState)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .2
            .iter()
            .map(|(n, l)| {
                let s = match l.state.load(Ordering::Relaxed) {
                    1 => AlarmState::Ok,
                    2 => AlarmState::Alarm,
                    _ => AlarmState::InsufficientData,
                };
                (n.clone(), s)
            })
            .collect()
    }
}

/// The sum of the series of `metric` whose labels include `labels`, in Prometheus text.
/// `None` when no series matches.
pub fn sample(
    text: &str,
    metric: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (series_labels, value) = if let Some(inner) = rest.strip_prefix('{') {
            let Some((l, v)) = inner.rsplit_once('}') else {
                continue;
            };
            (parse_labels(l), v)
        } else if rest.starts_with(' ') {
            (HashMap::new(), rest)
        } else {
            continue;
        };
        if !labels
            .iter()
            .all(|(k, v)| series_labels.get(k.as_str()) == Some(v))
        {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            total = Some(total.unwrap_or(0.0) + v);
        }
    }
    total
}

fn parse_labels(text: &str) -> HashMap<&str, String> {
    let mut out = HashMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim(), value);
        rest = &after[end..];
    }
    out
}

fn reduce(statistic: AlarmStatistic, samples: &[f64]) -> Option<f64> {
    let first = *samples.first()?;
    let last = *samples.last()?;
    Some(match statistic {
        AlarmStatistic::Average => samples.iter().sum::<f64>() / samples.len() as f64,
        AlarmStatistic::Maximum => samples.iter().copied().fold(f64::MIN, f64::max),
        AlarmStatistic::Minimum => samples.iter().copied().fold(f64::MAX, f64::min),
        AlarmStatistic::Increase => (last - first).max(0.0),
    })
}

/// One transition, as sent.
#[derive(Debug, Clone)]
struct Notice {
    body: Vec<u8>,
    state: AlarmState,
}

async fn evaluate(
    rule: AlarmSettings,
    shared: Weak<Shared>,
    tx: mpsc::Sender<Notice>,
    live: Arc<Live>,
) {
    let every = (rule.period / SAMPLES).max(Duration::from_millis(50));
    let mut state = AlarmState::InsufficientData;
    let mut breaches: std::collections::VecDeque<bool> = std::collections::VecDeque::new();
    loop {
        let mut samples = Vec::with_capacity(SAMPLES as usize);
        for _ in 0..SAMPLES {
            crate::workers::sleep(every).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let text = crate::admin::render_metrics(&shared);
            // A series that does not exist (yet) reads as 0: no flows, no findings.
            samples.push(sample(&text, &rule.metric, &rule.labels).unwrap_or(0.0));
        }
        let Some(value) = reduce(rule.statistic, &samples) else {
            continue;
        };
        let breaching = rule.comparison.holds(value, rule.threshold);
        breaches.push_back(breaching);
        while breaches.len() > rule.evaluation_periods as usize {
            breaches.pop_front();
        }
        let alarm =
            breaches.len() == rule.evaluation_periods as usize && breaches.iter().all(|b| *b);
        let next = if alarm {
            AlarmState::Alarm
        } else if !breaching {
            AlarmState::Ok
        } else {
            state
        };
        if next == state {
            continue;
        }
        let previous = state;
        state = next;
        live.state.store(
            match state {
                AlarmState::InsufficientData => 0,
                AlarmState::Ok => 1,
                AlarmState::Alarm => 2,
            },
            Ordering::Relaxed,
        );
        // Starting out fine is not news.
        if previous == AlarmState::InsufficientData && state == AlarmState::Ok {
            continue;
        }
        let gateway = shared
            .upgrade()
            .map(|s| s.config.load().gateway.name.clone())
            .unwrap_or_default();
        let notice = Notice {
            body: body(&rule, previous, state, value, &gateway),
            state,
        };
        tracing::warn!(alarm = %rule.name, state = state.as_str(), previous = previous.as_str(), value, "alarm state changed");
        if tx.try_send(notice).is_err() {
            tracing::error!(alarm = %rule.name, "alarm notification queue full; dropping this transition");
            live.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn body(
    rule: &AlarmSettings,
    previous: AlarmState,
    state: AlarmState,
    value: f64,
    gateway: &str,
) -> Vec<u8> {
    let stat = match rule.statistic {
        AlarmStatistic::Average => "average",
        AlarmStatistic::Maximum => "maximum",
        AlarmStatistic::Minimum => "minimum",
        AlarmStatistic::Increase => "increase",
    };
    let reason = format!(
        "{} {stat} {value} {} {} for {} period(s) of {}s",
        rule.metric,
        if state == AlarmState::Alarm {
            rule.comparison.as_str()
        } else {
            "is no longer"
        },
        rule.threshold,
        rule.evaluation_periods,
        rule.period.as_secs_f64()
    );
    let text = format!("[{}] {} on {gateway}: {reason}", state.as_str(), rule.name);
    let json = match rule.format {
        WebhookFormat::Slack => serde_json::json!({ "text": text }),
        WebhookFormat::Json => serde_json::json!({
            "alarm": rule.name,
            "state": state.as_str(),
            "previous_state": previous.as_str(),
            "gateway": gateway,
            "metric": rule.metric,
            "labels": rule.labels,
            "statistic": stat,
            "comparison": rule.comparison.as_str(),
            "threshold": rule.threshold,
            "value": value,
            "period_s": rule.period.as_secs_f64(),
            "evaluation_periods": rule.evaluation_periods,
            "ts": crate::records::unix_now(),
            "reason": reason,
            "text": text,
        }),
    };
    json.to_string().into_bytes()
}

async fn deliver(rule: AlarmSettings, mut rx: mpsc::Receiver<Notice>, live: Arc<Live>) {
    while let Some(notice) = rx.recv().await {
        let mut backoff = FIRST_BACKOFF;
        let mut delivered = false;
        for attempt in 1..=ATTEMPTS {
            match crate::workers::timeout(REQUEST_TIMEOUT, post(&rule.webhook, &notice.body)).await
            {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    tracing::info!(alarm = %rule.name, state = notice.state.as_str(), attempt, "alarm notification delivered");
                    delivered = true;
                    break;
                }
                Ok(Ok(status)) => {
                    tracing::warn!(alarm = %rule.name, status, attempt, "webhook refused the alarm notification; retrying")
                }
                Ok(Err(e)) => {
                    tracing::warn!(alarm = %rule.name, error = %e, attempt, "cannot deliver the alarm notification; retrying")
                }
                Err(_) => {
                    tracing::warn!(alarm = %rule.name, attempt, "webhook timed out; retrying")
                }
            }
            crate::workers::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if delivered {
            live.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::error!(alarm = %rule.name, state = notice.state.as_str(), "alarm notification given up after every retry");
            live.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook URL is not http(s)://host[:port]/path")]
    Url,
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
}

/// POST `body` (JSON) to `url`; the response status.
async fn post(url: &str, body: &[u8]) -> Result<u16, WebhookError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(WebhookError::Url);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| WebhookError::Url)?)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(WebhookError::Connect)?;
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "sumun-alarms")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|_| WebhookError::Url)?;
    if tls {
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| WebhookError::Tls(e.to_string()))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| WebhookError::Tls(e.to_string()))?;
        send(hyper_util::rt::TokioIo::new(stream), request).await
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await
    }
}

async fn send<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<u16, WebhookError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    driver.abort();
    Ok(status)
}

/// The system's CA bundle (Debian's `ca-certificates`), read once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, WebhookError> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for path in [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
            ] {
                if let Ok(certs) = rustls_pki_types::CertificateDer::pem_file_iter(path) {
                    for c in certs.flatten() {
                        let _ = roots.add(c);
                    }
                }
            }
            if roots.is_empty() {
                return Err("no system CA bundle found for https webhooks".to_string());
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(WebhookError::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_sum_matching_series() {
        let text = "# HELP x\nsumun_active_flows{listener=\"a\"} 2\nsumun_active_flows{listener=\"b\"} 3\nsumun_active_flows_other 9\nsumun_bans_active 4\n";
        let none = std::collections::BTreeMap::new();
        assert_eq!(sample(text, "sumun_active_flows", &none), Some(5.0));
        let mut a = std::collections::BTreeMap::new();
        a.insert("listener".to_string(), "a".to_string());
        assert_eq!(sample(text, "sumun_active_flows", &a), Some(2.0));
        assert_eq!(sample(text, "sumun_bans_active", &none), Some(4.0));
        assert_eq!(sample(text, "sumun_missing", &none), None);
        assert_eq!(
            reduce(AlarmStatistic::Increase, &[3.0, 5.0, 9.0]),
            Some(6.0)
        );
        assert_eq!(reduce(AlarmStatistic::Average, &[1.0, 3.0]), Some(2.0));
    }
}
