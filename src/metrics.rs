//! What the server is doing, for Prometheus: counters and histograms the
//! rest of the core updates as mail flows, and the admin HTTP listener that
//! serves them (`/metrics`) with a health check (`/healthz`).
//!
//! The metrics live in one process-wide [`Metrics`] ([`get`]): a server is
//! one process, and passing a handle through every layer would say nothing
//! more. Queue figures are read from the queue when scraped.
//!
//! prometheus-client encodes (OpenMetrics text, which Prometheus reads);
//! hyper speaks HTTP.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: String,
    /// `limit` (too many connections), `tls` (handshake failed or timed
    /// out), `proxy` (no valid PROXY header, or not from a trusted proxy),
    /// `banned` (the address is banned after failed logins).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub listener: String,
    pub mechanism: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub listener: String,
    /// `accepted` or `rejected`.
    pub result: &'static str,
    /// The reply class: `2xx`, `4xx` or `5xx`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub plugin: String,
    pub hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub relay: String,
    /// `delivered`, `temporary` or `permanent`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PasswordLabel {
    /// `cached` (a login verified lately, answered from the cache),
    /// `hashed` (the full scheme ran) or `plain` (a `{PLAIN}` entry).
    pub how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub connections: Family<ListenerLabel, Counter>,
    pub connections_refused: Family<RefusedLabels, Counter>,
    pub sessions_open: Family<ListenerLabel, Gauge>,
    pub auth: Family<AuthLabels, Counter>,
    pub messages: Family<MessageLabels, Counter>,
    pub message_bytes: Family<ListenerLabel, Counter>,
    pub hook_duration: HistogramFamily<HookLabels>,
    pub plugin_faults: Family<HookLabels, Counter>,
    pub upstream: Family<UpstreamLabels, Counter>,
    pub auth_bans: Counter,
    pub rate_limited: Family<PluginLabel, Counter>,
    pub counter_errors: Counter,
    pub password_checks: Family<PasswordLabel, Counter>,
    pub redis_up: Gauge,
    queue_messages: Gauge,
    queue_recipients: Gauge,
    queue_oldest: Gauge,
    queue_bytes: Gauge,
    queue_attempts: Gauge,
}

fn hook_histogram() -> Histogram {
    // 10 µs … ~0.65 s by fours: a do-nothing hook is ~10 µs, a password
    // check tens of ms, a sync relay hundreds.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 9))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mailferry");
        let m = Metrics {
            connections: Family::default(),
            connections_refused: Family::default(),
            sessions_open: Family::default(),
            auth: Family::default(),
            messages: Family::default(),
            message_bytes: Family::default(),
            hook_duration: Family::new_with_constructor(hook_histogram as fn() -> Histogram),
            plugin_faults: Family::default(),
            upstream: Family::default(),
            auth_bans: Counter::default(),
            rate_limited: Family::default(),
            counter_errors: Counter::default(),
            password_checks: Family::default(),
            redis_up: Gauge::default(),
            queue_messages: Gauge::default(),
            queue_recipients: Gauge::default(),
            queue_oldest: Gauge::default(),
            queue_bytes: Gauge::default(),
            queue_attempts: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("connections", "Connections accepted, by listener", m.connections.clone());
        r.register(
            "connections_refused",
            "Connections closed before a session: too many connections (limit), a failed TLS handshake (tls), no valid PROXY header (proxy), an address banned after failed logins (banned)",
            m.connections_refused.clone(),
        );
        r.register("sessions_open", "SMTP sessions open now, by listener", m.sessions_open.clone());
        r.register("auth", "AUTH attempts, by listener, mechanism and result", m.auth.clone());
        r.register("messages", "Messages at the end of DATA, by listener, result and reply class", m.messages.clone());
        r.register_with_unit(
            "received",
            "Size of the messages accepted, by listener",
            Unit::Bytes,
            m.message_bytes.clone(),
        );
        r.register_with_unit(
            "plugin_hook_duration",
            "Time one plugin took for one hook call, host calls included",
            Unit::Seconds,
            m.hook_duration.clone(),
        );
        r.register(
            "plugin_faults",
            "Plugin calls that trapped, ran out of time or memory (answered 451 4.3.0)",
            m.plugin_faults.clone(),
        );
        r.register(
            "upstream_results",
            "Upstream outcomes per recipient: delivered, temporary (4xx, connection failures) or permanent (5xx)",
            m.upstream.clone(),
        );
        r.register(
            "auth_bans",
            "Bans this node placed after failed logins: of an address, or of an address for one login",
            m.auth_bans.clone(),
        );
        r.register(
            "rate_limited",
            "Counter limits a plugin found reached (its take or check refused): the rate-limit plugin's 451 4.7.1",
            m.rate_limited.clone(),
        );
        r.register(
            "counter_errors",
            "Redis counter calls that failed or timed out (then counted locally or refused, per on_redis_error)",
            m.counter_errors.clone(),
        );
        r.register(
            "password_checks",
            "Password verifications for plugins: answered from the cache of verified logins (cached), by the full hash scheme (hashed), or {PLAIN} entries (plain)",
            m.password_checks.clone(),
        );
        r.register(
            "redis_up",
            "1 while the counters' Redis answers, 0 after a failure until it answers again (0 without Redis)",
            m.redis_up.clone(),
        );
        r.register("queue_messages", "Messages in the delivery queue", m.queue_messages.clone());
        r.register(
            "queue_recipients",
            "Recipients in the queue not yet delivered or bounced",
            m.queue_recipients.clone(),
        );
        r.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest queued message",
            Unit::Seconds,
            m.queue_oldest.clone(),
        );
        r.register_with_unit("queue_size", "Size of the queued messages", Unit::Bytes, m.queue_bytes.clone());
        r.register("queue_attempts_running", "Delivery attempts running now", m.queue_attempts.clone());
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric, queue figures read now.
    pub fn render(&self) -> String {
        if let Some(figures) = QUEUE.get() {
            let s = figures();
            self.queue_messages.set(s.messages as i64);
            self.queue_recipients.set(s.recipients_pending as i64);
            self.queue_oldest.set(s.oldest_secs);
            self.queue_bytes.set(s.bytes as i64);
            self.queue_attempts.set(s.in_flight as i64);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn auth(&self, listener: &str, mechanism: &str, ok: bool) {
        self.auth
            .get_or_create(&AuthLabels {
                listener: listener.to_string(),
                mechanism: mechanism.to_ascii_uppercase(),
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    /// A message at the end of DATA got `code`.
    pub fn message(&self, listener: &str, code: u16, size: usize) {
        let class = match code / 100 {
            2 => "2xx",
            4 => "4xx",
            _ => "5xx",
        };
        let result = if code / 100 == 2 { "accepted" } else { "rejected" };
        self.messages.get_or_create(&MessageLabels { listener: listener.to_string(), result, class }).inc();
        if code / 100 == 2 {
            self.message_bytes.get_or_create(&ListenerLabel { listener: listener.to_string() }).inc_by(size as u64);
        }
    }

    pub fn fault(&self, plugin: &str, hook: &'static str) {
        self.plugin_faults.get_or_create(&HookLabels { plugin: plugin.to_string(), hook }).inc();
    }

    pub fn upstream(&self, relay: &str, result: &'static str, recipients: u64) {
        self.upstream.get_or_create(&UpstreamLabels { relay: relay.to_string(), result }).inc_by(recipients);
    }

    pub fn password_check(&self, how: &'static str) {
        self.password_checks.get_or_create(&PasswordLabel { how }).inc();
    }

    pub fn rate_limited(&self, plugin: &str) {
        self.rate_limited.get_or_create(&PluginLabel { plugin: plugin.to_string() }).inc();
    }

    pub fn refused(&self, listener: &str, reason: &'static str) {
        self.connections_refused.get_or_create(&RefusedLabels { listener: listener.to_string(), reason }).inc();
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
/// Reads the queue's figures (set by the queue's owner: metrics sit below
/// the queue and know nothing of it).
static QUEUE: OnceLock<Box<dyn Fn() -> QueueFigures + Send + Sync>> = OnceLock::new();

/// What `/metrics` shows of the queue.
pub struct QueueFigures {
    pub messages: usize,
    pub recipients_pending: usize,
    pub oldest_secs: i64,
    pub bytes: u64,
    pub in_flight: usize,
}

/// The server's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Makes the queue's figures part of `/metrics`.
pub fn watch_queue(figures: impl Fn() -> QueueFigures + Send + Sync + 'static) {
    let _ = QUEUE.set(Box::new(figures));
}

/// Counts an open session until dropped.
pub struct SessionGauge(ListenerLabel);

impl SessionGauge {
    pub fn open(listener: &str) -> SessionGauge {
        let label = ListenerLabel { listener: listener.to_string() };
        get().sessions_open.get_or_create(&label).inc();
        SessionGauge(label)
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        get().sessions_open.get_or_create(&self.0).dec();
    }
}

// ---------------------------------------------------------------------------
// The admin listener.

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one admin connection may stay open, whatever it does (a client
/// that sends requests but never reads the answers would otherwise stay).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Admin connections at once; more are closed at once. Scrapers and health
/// checkers need a handful, and each connection holds a file descriptor
/// the SMTP listeners need too.
const MAX_CONNECTIONS: usize = 32;

/// Serves `/metrics` and `/healthz` on `listener` for the life of the
/// process. Once `shutdown` turns true, `/healthz` answers 503 while the
/// server drains, so a load balancer stops sending new clients.
pub async fn serve(listener: tokio::net::TcpListener, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stopping = Arc::new(AtomicBool::new(*shutdown.borrow()));
    let flag = stopping.clone();
    tokio::spawn(async move {
        // Err: the sender is gone, which only happens on the way out.
        while shutdown.changed().await.is_ok() && !*shutdown.borrow() {}
        flag.store(true, Ordering::SeqCst);
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(peer = %peer, "admin listener: too many connections; closed");
                    continue;
                };
                let stopping = stopping.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    if tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, peer, stopping)).await.is_err() {
                        tracing::debug!(peer = %peer, "admin connection open too long; closed");
                    }
                });
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, stopping: Arc<std::sync::atomic::AtomicBool>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper::service::service_fn(move |req| {
        let stopping = stopping.load(std::sync::atomic::Ordering::SeqCst);
        async move { Ok::<_, std::convert::Infallible>(respond(&req, stopping)) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "admin connection ended with an error");
    }
}

type Body = http_body_util::Full<hyper::body::Bytes>;

fn respond<B>(req: &hyper::Request<B>, stopping: bool) -> hyper::Response<Body> {
    use hyper::{Method, StatusCode};
    let reply = |status: StatusCode, content_type: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("cache-control", "no-store")
            .body(Body::new(body.into()))
            .expect("valid response")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", get().render())
        }
        "/healthz" if stopping => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopping\n".into()),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_text() {
        let m = Metrics::new();
        m.auth("submission", "plain", true);
        m.auth("submission", "plain", false);
        m.auth("submission", "plain", false);
        m.message("submission", 250, 1234);
        m.message("submission", 451, 99);
        m.auth_bans.inc();
        m.rate_limited("rate-limit");
        m.refused("submission", "banned");
        m.hook_duration.get_or_create(&HookLabels { plugin: "dkim-sign".into(), hook: "queue" }).observe(0.000_3);
        let text = m.render();
        assert!(
            text.contains(r#"mailferry_auth_total{listener="submission",mechanism="PLAIN",result="failure"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"mailferry_messages_total{listener="submission",result="rejected",class="4xx"} 1"#));
        assert!(text.contains(r#"mailferry_received_bytes_total{listener="submission"} 1234"#), "{text}");
        assert!(
            text.contains(
                r#"mailferry_plugin_hook_duration_seconds_bucket{le="0.00064",plugin="dkim-sign",hook="queue"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("mailferry_auth_bans_total 1"), "{text}");
        assert!(text.contains(r#"mailferry_rate_limited_total{plugin="rate-limit"} 1"#), "{text}");
        assert!(text.contains(r#"mailferry_connections_refused_total{listener="submission",reason="banned"} 1"#));
        assert!(text.contains("mailferry_redis_up 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
