//! The admin listener: `/metrics` in OpenMetrics text, checked by the
//! Prometheus project's own parser (tests/support/parse_metrics.py), with
//! counters that move as mail flows; `/healthz` for load balancers; fetched
//! with curl, as a scraper or health checker would.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn start() -> (Server, SocketAddr) {
    let server = Server::start(Setup {
        users: users_with_all_schemes(),
        extra: "\n[admin]\naddress = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    });
    let line = server.wait_log(&["admin listener"]);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = v["address"].as_str().unwrap().parse().unwrap();
    (server, addr)
}

/// `curl -s` the URL: (HTTP status, body).
fn curl(addr: SocketAddr, path: &str, extra: &[&str]) -> (u16, String) {
    require_program("curl", &["--version"], "curl is needed: apt-get install curl");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("http://{addr}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap_or(0), body.to_string())
}

struct Sample {
    name: String,
    labels: serde_json::Map<String, serde_json::Value>,
    value: f64,
}

fn scrape(addr: SocketAddr) -> Vec<Sample> {
    require_program(
        "python3",
        &["-c", "import prometheus_client"],
        "python3 with prometheus_client is needed: pip install prometheus-client",
    );
    let (status, body) = curl(addr, "/metrics", &[]);
    assert_eq!(status, 200, "{body}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/parse_metrics.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"].as_object().unwrap().clone(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the sample with this name and these labels (others may
/// differ); 0 when absent (a counter not touched yet).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).and_then(|x| x.as_str()) == Some(*v)))
        .collect();
    assert!(found.len() <= 1 || labels.is_empty(), "{name} {labels:?} matches several samples");
    found.first().map_or(0.0, |s| s.value)
}

fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).and_then(|x| x.as_str()) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

#[test]
fn metrics_move_as_mail_flows() {
    let (server, admin) = start();
    let before = scrape(admin);
    assert!(before.iter().any(|s| s.name == "mailferry_queue_messages"), "queue figures are there");

    // A failed login, a good one and a message through submission.
    let mut c = Client::connect(server.addr("submission")).greeting();
    c.expect("EHLO client.example", 250);
    c.starttls();
    c.expect("EHLO client.example", 250);
    assert_eq!(c.auth_plain("alice@example.com", "wrong").code, 535);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    let body = "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: counted\r\n\r\nhello\r\n";
    assert_eq!(c.send_mail("alice@example.com", &["bob@example.org"], body).code, 250);
    // A message the server refuses at the end of DATA (NUL octet): 5xx.
    c.expect("MAIL FROM:<alice@example.com>", 250);
    c.expect("RCPT TO:<bob@example.org>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: nul\r\n\r\nbad \0 byte\r\n.\r\n");
    assert_eq!(c.read().code, 550);
    // Open while scraping: one session on submission.
    server.outbox();
    let during = scrape(admin);
    assert_eq!(value(&during, "mailferry_sessions_open", &[("listener", "submission")]), 1.0);
    c.expect("QUIT", 221);

    let after = scrape(admin);
    let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    let sub = ("listener", "submission");
    assert_eq!(delta("mailferry_connections_total", &[sub]), 1.0);
    assert_eq!(delta("mailferry_auth_total", &[sub, ("mechanism", "PLAIN"), ("result", "failure")]), 1.0);
    assert_eq!(delta("mailferry_auth_total", &[sub, ("mechanism", "PLAIN"), ("result", "success")]), 1.0);
    assert_eq!(delta("mailferry_messages_total", &[sub, ("result", "accepted"), ("class", "2xx")]), 1.0);
    assert_eq!(delta("mailferry_messages_total", &[sub, ("result", "rejected"), ("class", "5xx")]), 1.0);
    let bytes = delta("mailferry_received_bytes_total", &[sub]);
    assert!(bytes > body.len() as f64, "the accepted message's size (with the added header fields): {bytes}");
    // Delivered by the queue to the outbox relay.
    assert_eq!(delta("mailferry_upstream_results_total", &[("relay", "outbox"), ("result", "delivered")]), 1.0);
    // The plugins' hook calls are timed: auth-flat-file ran its auth hook twice.
    let auth_calls =
        sum(&after, "mailferry_plugin_hook_duration_seconds_count", &[("plugin", "auth-flat-file"), ("hook", "auth")]);
    assert_eq!(auth_calls, 2.0);
    let queue_calls =
        sum(&after, "mailferry_plugin_hook_duration_seconds_count", &[("plugin", "smtp-forward"), ("hook", "queue")]);
    assert_eq!(queue_calls, 1.0);
    assert_eq!(value(&after, "mailferry_sessions_open", &[sub]), 0.0, "the session closed");
    assert_eq!(value(&after, "mailferry_queue_messages", &[]), 0.0);
}

#[test]
fn healthz_and_the_rest_of_the_admin_listener() {
    let (mut server, admin) = start();
    assert_eq!(curl(admin, "/healthz", &[]), (200, "ok\n".to_string()));
    assert_eq!(curl(admin, "/nope", &[]).0, 404);
    assert_eq!(curl(admin, "/metrics", &["-X", "POST"]).0, 405);
    let (_, head) = curl(admin, "/metrics", &["-I"]);
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");

    // While the server drains its sessions after SIGTERM, /healthz says so,
    // so a load balancer sends new clients elsewhere. A session in the middle
    // of DATA keeps the server draining (an idle one is closed at once).
    let mut c = Client::connect(server.addr("local")).greeting();
    c.expect("EHLO client.example", 250);
    c.expect("MAIL FROM:<cron@example.com>", 250);
    c.expect("RCPT TO:<bob@example.org>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: draining\r\n\r\nfirst half\r\n");
    // SAFETY: signalling the child process this test started.
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    server.wait_log(&["shutting down: waiting for open sessions"]);
    assert_eq!(curl(admin, "/healthz", &[]), (503, "stopping\n".to_string()));
    c.send_raw(b"second half\r\n.\r\n");
    assert_eq!(c.read().code, 250, "the message in flight is still taken");
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
}

#[test]
fn a_bad_admin_address_is_a_configuration_error() {
    let err =
        Server::try_start(Setup { extra: "\n[admin]\naddress = \"localhost:80\"\n".into(), ..Default::default() })
            .err()
            .expect("must not start");
    assert!(err.contains("admin.address") && err.contains("127.0.0.1:2580"), "{err}");
}
