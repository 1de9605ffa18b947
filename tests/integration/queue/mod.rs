//! The durable delivery queue end to end: smtp-forward in queue mode (the
//! default) against the stand-in upstream (tests/support/upstream.py). A
//! `250` means "on stable storage"; from there the queue delivers, retries,
//! bounces with a DSN, and survives `kill -9` without losing what it
//! acknowledged. Each test starts its own upstream and its own mailferry.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::upstream::*;
use crate::common::*;

// ---------------------------------------------------------------------------
// Helpers.

/// The default pipeline with smtp-forward in queue mode, routed to `up`.
fn queue_plugins() -> String {
    DEFAULT_PLUGINS.replace("relay = \"outbox\"", "route = \"up\"")
}

/// `[queue]` with fast retries.
fn queue_section(max_age_secs: Option<u64>) -> String {
    let mut s = "\n[queue]\nretry_schedule_secs = [1]\n".to_string();
    if let Some(age) = max_age_secs {
        s.push_str(&format!("max_age_secs = {age}\n"));
    }
    s
}

fn start_server(relay: String, max_age_secs: Option<u64>) -> Server {
    export_upstream_password();
    Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        extra: format!("{relay}\n{}", queue_section(max_age_secs)),
        ..Default::default()
    })
}

fn send(c: &mut Client, from: &str, rcpts: &[&str], message: &[u8]) -> Resp {
    transaction(c, &format!("MAIL FROM:<{from}>"), rcpts, message)
}

fn assert_queued(r: &Resp) -> String {
    assert_eq!(r.code, 250, "{r}");
    let text = r.text();
    let id = text
        .split("queued as ")
        .nth(1)
        .unwrap_or_else(|| panic!("the 250 reply should say \"queued as <id>\": {r}"))
        .trim()
        .to_string();
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()), "queue id {id:?} in {r}");
    id
}

/// Messages the upstream stored so far, read without racing its writer:
/// `N.json` is renamed into place after `N.eml`, so once it exists both
/// are complete. (`Upstream::messages` counts every file in the folder,
/// including the writer's temporary ones, so it may only be called when
/// the upstream is idle.)
fn stored_in(out: &Path) -> Vec<Stored> {
    let mut stored = Vec::new();
    for n in 1.. {
        let Ok(meta) = std::fs::read(out.join(format!("{n}.json"))) else { break };
        let eml = std::fs::read(out.join(format!("{n}.eml"))).unwrap();
        stored.push(Stored { eml, meta: serde_json::from_slice(&meta).unwrap() });
    }
    stored
}

fn out_of(up: &Upstream) -> PathBuf {
    up.dir.path().join("out")
}

/// Polls until the upstream holds at least `n` messages.
fn wait_stored(out: &Path, n: usize, timeout: Duration, server: &Server) -> Vec<Stored> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = stored_in(out);
        if s.len() >= n {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream holds {} messages after {timeout:?}, expected {n}\nserver log:\n{}",
            s.len(),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `.json`/`.eml` files in a spool folder.
fn spool_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json") || n.ends_with(".eml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until the spool holds no message: no `.json`/`.eml` files and no
/// journal segment.
fn wait_spool_empty(dir: &Path, timeout: Duration, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut files = spool_files(dir);
        files.extend(
            std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with("segment-"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
        if files.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "spool still holds {files:?} after {timeout:?}\nlog:\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How upstream.py's meta shows the null reverse-path.
const NULL_SENDER: &str = "<>";

/// A DSN taken apart by Python's `email` package (an independent MIME
/// parser).
#[derive(Debug)]
struct ParsedDsn {
    json: serde_json::Value,
}

const PARSE_DSN_PY: &str = r#"
import email, json, sys
from email import policy
raw = open(sys.argv[1], 'rb').read()
m = email.message_from_bytes(raw, policy=policy.compat32)
out = {
    "content_type": m.get_content_type(),
    "report_type": m.get_param("report-type"),
    "from": m["From"], "to": m["To"], "subject": m["Subject"],
    "auto_submitted": m["Auto-Submitted"],
    "defects": [type(d).__name__ for d in m.defects],
    "parts": [],
}
for p in (m.get_payload() if m.is_multipart() else []):
    d = {"type": p.get_content_type(), "defects": [type(x).__name__ for x in p.defects]}
    if p.get_content_type() == "message/delivery-status":
        d["blocks"] = [[[k, v] for k, v in b.items()] for b in p.get_payload()]
    else:
        payload = p.get_payload(decode=True)
        d["text"] = payload.decode("utf-8", "replace") if payload is not None else None
    out["parts"].append(d)
print(json.dumps(out))
"#;

fn parse_dsn(eml: &[u8]) -> ParsedDsn {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dsn.eml");
    std::fs::write(&file, eml).unwrap();
    let out = run_bounded(Command::new("python3").args(["-c", PARSE_DSN_PY]).arg(&file), Duration::from_secs(30));
    assert!(
        out.status.success(),
        "python3 could not parse the DSN: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(eml)
    );
    ParsedDsn { json: serde_json::from_slice(&out.stdout).unwrap() }
}

impl ParsedDsn {
    fn part(&self, content_type: &str) -> &serde_json::Value {
        self.json["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == content_type)
            .unwrap_or_else(|| panic!("no {content_type} part in the DSN: {:#}", self.json))
    }

    /// The per-recipient blocks of the delivery-status part, field names
    /// lowercased, values with whitespace collapsed.
    fn recipient_blocks(&self) -> Vec<BTreeMap<String, String>> {
        let blocks = self.part("message/delivery-status")["blocks"].as_array().unwrap().clone();
        assert!(blocks.len() >= 2, "a per-message block and at least one per-recipient block: {:#}", self.json);
        blocks
            .iter()
            .map(|b| {
                b.as_array()
                    .unwrap()
                    .iter()
                    .map(|kv| {
                        let v = kv[1].as_str().unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
                        (kv[0].as_str().unwrap().to_ascii_lowercase(), v)
                    })
                    .collect::<BTreeMap<_, _>>()
            })
            .filter(|b| b.contains_key("final-recipient"))
            .collect()
    }
}

/// Asserts the shape every DSN must have and returns its one recipient block.
fn check_dsn(dsn: &Stored, original_subject: &str, body_marker: &str, rcpt: &str) -> BTreeMap<String, String> {
    // Null reverse-path, to the original sender. aiosmtpd records the null
    // reverse-path of `MAIL FROM:<>` as "<>" (its address parser's
    // addr_spec of an empty angle address); any real address would be bare.
    assert_eq!(dsn.meta["mail_from"], NULL_SENDER, "a DSN goes out with MAIL FROM:<>: {}", dsn.meta);
    assert_eq!(dsn.meta["rcpt_tos"], serde_json::json!(["alice@example.com"]), "{}", dsn.meta);
    let raw = String::from_utf8_lossy(&dsn.eml);
    assert!(!raw.contains(body_marker), "the DSN must not carry the original body:\n{raw}");
    let p = parse_dsn(&dsn.eml);
    assert_eq!(p.json["content_type"], "multipart/report", "{:#}", p.json);
    assert_eq!(p.json["report_type"], "delivery-status", "{:#}", p.json);
    assert_eq!(p.json["defects"], serde_json::json!([]), "MIME defects: {:#}", p.json);
    let headers = p.part("text/rfc822-headers")["text"].as_str().unwrap().to_string();
    assert!(headers.contains(&format!("Subject: {original_subject}")), "original headers returned: {headers}");
    assert!(!headers.contains(body_marker), "body in the returned headers: {headers}");
    let blocks = p.recipient_blocks();
    assert_eq!(blocks.len(), 1, "one recipient reported: {blocks:#?}");
    let b = blocks.into_iter().next().unwrap();
    assert_eq!(b["final-recipient"], format!("rfc822; {rcpt}"), "{b:#?}");
    assert_eq!(b["action"], "failed", "{b:#?}");
    b
}

fn is_status(s: &str, class: char) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[0] == class.to_string()
        && parts[1..].iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------
// An upstream.py started by this file (to restart one on a known port).

struct PyUpstream {
    child: Child,
    port: u16,
}

impl PyUpstream {
    fn start(args: &[std::ffi::OsString], log: &Path) -> PyUpstream {
        let (child, _, port) = spawn_upstream(args, log);
        PyUpstream { child, port }
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Delivery.

#[test]
fn queued_message_reaches_the_upstream() {
    let started = Instant::now();
    let up = Upstream::start();
    let server = start_server(up.verified_relay(), None);
    let mut c = submitter(&server);
    // No Message-ID or Date (mailferry adds them), folding and odd spacing,
    // a dot line, and no 8-bit.
    let original: &[u8] = b"From: \"Alice Liddell\" <alice@example.com>\r\n\
To: bob@example.org,\r\n\tcarol@example.net\r\n\
Subject: a folded\r\n  queued   subject \r\n\
X-Weird:no-space-after-colon\r\n\
\r\n\
line one\r\n.\r\n..two dots\r\n\ttabbed line   \r\n\r\n";
    let rcpts = ["bob@example.org", "carol@example.net"];
    let r = send(&mut c, "alice@example.com", &rcpts, original);
    let id = assert_queued(&r);
    c.expect("QUIT", 221);

    let msgs = wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    let m = &msgs[0];
    assert_eq!(m.meta["mail_from"], "alice@example.com", "{}", m.meta);
    assert_eq!(m.meta["rcpt_tos"], serde_json::json!(rcpts), "{}", m.meta);
    assert_eq!(m.meta["login"], UP_USER, "{}", m.meta);
    assert_eq!(m.meta["tls"], "starttls", "{}", m.meta);
    assert_eq!(m.meta["helo"], "mx.test.example", "{}", m.meta);
    assert_eq!(m.meta["mail_options"], serde_json::json!([]), "{}", m.meta);
    let got = strip_added(&m.eml, original);
    assert_same_bytes(&got, original, "message at the upstream vs. as submitted");

    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(20), &|| server.log_text());
    server.wait_log(&["\"done\"", &id]);
    // Delivered once, not twice.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(up.messages().len(), 1, "{}", up.log());
    eprintln!("queued_message_reaches_the_upstream: {:?}", started.elapsed());
}

#[test]
fn upstream_down_then_back() {
    let started = Instant::now();
    let up = Upstream::start();
    let port = up.port;
    // upstream.py makes a new CA every time it generates a certificate (also
    // into the same --certdir), and mailferry loads ca_file once at start:
    // keep this upstream's certificate, key and CA for the second one.
    let keep = tempfile::tempdir().unwrap();
    let certdir = up.dir.path().join("cert");
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(certdir.join(f), keep.path().join(f)).unwrap();
    }
    let relay = up.relay("starttls", &format!("ca_file = {:?}\n", keep.path().join("ca.pem").to_str().unwrap()));
    drop(up);

    let server = start_server(relay, None);
    let mut c = submitter(&server);
    let original: &[u8] = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: while down\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <down.1@client.example>\r\n\r\nstill here\r\n";
    let id = assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], original));
    c.expect("QUIT", 221);

    let failed = server.wait_log(&["delivery attempt failed", &id]);
    assert!(failed.contains("4.4.1"), "connection refused is 4.4.1: {failed}");
    server.wait_log(&["will retry", &id]);
    let spool = server.path("state/queue");
    assert_eq!(spool_files(&spool), vec![format!("{id}.eml"), format!("{id}.json")]);
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spool.join(format!("{id}.json"))).unwrap()).unwrap();
    assert!(entry["attempts"].as_u64().unwrap() >= 1, "{entry}");
    assert_eq!(entry["rcpts"][0]["state"], "pending", "{entry}");
    // A couple more attempts while it is down.
    std::thread::sleep(Duration::from_millis(2200));
    let attempts =
        server.log_text().lines().filter(|l| l.contains("delivery attempt failed") && l.contains(&id)).count();
    assert!(attempts >= 2, "retried every second while down: {attempts} attempts");

    let out = keep.path().join("out");
    let args: Vec<std::ffi::OsString> = vec![
        "--port".into(),
        port.to_string().into(),
        "--cert".into(),
        keep.path().join("cert.pem").into(),
        "--key".into(),
        keep.path().join("key.pem").into(),
        "--out".into(),
        out.clone().into(),
    ];
    let back = PyUpstream::start(&args, &keep.path().join("upstream.log"));
    assert_eq!(back.port, port);

    let msgs = wait_stored(&out, 1, Duration::from_secs(20), &server);
    assert_eq!(msgs[0].meta["mail_from"], "alice@example.com");
    assert_eq!(msgs[0].meta["rcpt_tos"], serde_json::json!(["bob@example.org"]));
    assert_same_bytes(&strip_added(&msgs[0].eml, original), original, "message delivered after the outage");
    wait_spool_empty(&spool, Duration::from_secs(20), &|| server.log_text());
    server.wait_log(&["\"delivered\"", &id]);
    assert!(!server.log_text().contains("bounce queued"), "nothing bounced");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(stored_in(&out).len(), 1, "delivered exactly once");
    eprintln!("upstream_down_then_back: {attempts}+ failed attempts; {:?}", started.elapsed());
}

#[test]
fn permanent_refusal_bounces_with_a_dsn_to_the_sender() {
    let started = Instant::now();
    let up = Upstream::start();
    let server = start_server(up.verified_relay(), None);
    let mut c = submitter(&server);
    let marker = "BODY-MARKER-c0ffee-never-in-a-bounce";
    let original = format!(
        "From: alice@example.com\r\nTo: good@example.org, permfail-x@example.org\r\nSubject: dsn test 42\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <dsn.42@client.example>\r\n\r\n{marker}\r\nsecond line\r\n"
    );
    let rcpts = ["good@example.org", "permfail-x@example.org"];
    let id = assert_queued(&send(&mut c, "alice@example.com", &rcpts, original.as_bytes()));
    c.expect("QUIT", 221);

    let msgs = wait_stored(&out_of(&up), 2, Duration::from_secs(20), &server);
    let (dsns, mails): (Vec<&Stored>, Vec<&Stored>) = msgs.iter().partition(|m| m.meta["mail_from"] == NULL_SENDER);
    assert_eq!(mails.len(), 1, "one delivery of the message");
    assert_eq!(dsns.len(), 1, "one DSN");
    let m = mails[0];
    assert_eq!(m.meta["mail_from"], "alice@example.com");
    assert_eq!(m.meta["rcpt_tos"], serde_json::json!(["good@example.org"]), "only the good recipient: {}", m.meta);
    assert_same_bytes(&strip_added(&m.eml, original.as_bytes()), original.as_bytes(), "delivered copy");

    let b = check_dsn(dsns[0], "dsn test 42", marker, "permfail-x@example.org");
    assert!(is_status(&b["status"], '5'), "Status: 5.x.x: {b:#?}");
    assert_eq!(b["status"], "5.1.1", "the upstream's enhanced code: {b:#?}");
    let diag = b.get("diagnostic-code").cloned().unwrap_or_default();
    assert!(diag.contains("550") && diag.contains("no such user"), "the upstream's reply as diagnostic: {b:#?}");

    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(20), &|| server.log_text());
    server.wait_log(&["bounce queued", &id]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(up.messages().len(), 2, "nothing more (a bounce of the bounce, a second copy)");
    eprintln!("permanent_refusal_bounces_with_a_dsn_to_the_sender: {:?}", started.elapsed());
}

#[test]
fn temporary_refusal_is_retried_then_expires_into_a_bounce() {
    let started = Instant::now();
    let up = Upstream::start();
    let server = start_server(up.verified_relay(), Some(3));
    let mut c = submitter(&server);
    let marker = "BODY-MARKER-tempfail-7d1e";
    let original = format!(
        "From: alice@example.com\r\nTo: tempfail-x@example.org\r\nSubject: tempfail test 7\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <temp.7@client.example>\r\n\r\n{marker}\r\n"
    );
    let id = assert_queued(&send(&mut c, "alice@example.com", &["tempfail-x@example.org"], original.as_bytes()));
    c.expect("QUIT", 221);
    let submitted = Instant::now();

    let msgs = wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    let bounced_after = submitted.elapsed();
    assert_eq!(msgs.len(), 1, "only the DSN reaches the upstream");
    let b = check_dsn(&msgs[0], "tempfail test 7", marker, "tempfail-x@example.org");
    assert!(is_status(&b["status"], '4'), "Status: 4.x.x for an expired message: {b:#?}");
    let diag = b.get("diagnostic-code").cloned().unwrap_or_default();
    assert!(diag.contains("try later"), "the last upstream reply in the diagnostic: {b:#?}");

    let log = server.log_text();
    let deferred = log.lines().filter(|l| l.contains("\"deferred\"") && l.contains(&id)).count();
    assert!(deferred >= 3, "several attempts before giving up (max_age 3 s, retry every 1 s): {deferred}\n{log}");
    assert!(log.lines().any(|l| l.contains("expired") && l.contains(&id)), "{log}");
    assert!(bounced_after >= Duration::from_secs(2), "bounced too early: {bounced_after:?}");
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(20), &|| server.log_text());
    eprintln!(
        "temporary_refusal_is_retried_then_expires_into_a_bounce: {deferred} attempts, bounce after {bounced_after:?}; {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Durability: kill -9 under load.

/// A mailferry process on a fixed configuration (restartable on the same
/// addresses and state).
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(config: &Path, logs: &Arc<Mutex<Vec<String>>>, generation: usize) -> Daemon {
        for _try in 0..20 {
            let mut child = Command::new(BIN)
                .args(["--log-format", "json", "serve", "--config"])
                .arg(config)
                .env("MAILFERRY_LOG", "debug,wasmtime=warn,cranelift=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let stderr = child.stderr.take().unwrap();
            let sink = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("\"listening\"") {
                        let _ = tx.send(());
                    }
                    sink.lock().unwrap().push(format!("[{generation}] {line}"));
                }
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) => return Daemon { child },
                    Err(_) => {
                        if let Ok(Some(_)) = child.try_wait() {
                            // E.g. the address still in use: try again.
                            std::thread::sleep(Duration::from_millis(200));
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "server did not start:\n{}",
                            logs.lock().unwrap().join("\n")
                        );
                    }
                }
            }
        }
        panic!("server did not start after 20 tries:\n{}", logs.lock().unwrap().join("\n"));
    }

    fn kill9(&mut self) {
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 failed");
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What became of one submitted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Never got as far as the final dot (connection refused or lost).
    NotSent,
    /// The dot was sent but no reply came (the server died): may or may not
    /// have been queued.
    Unknown,
    /// A reply other than 250.
    Refused(u16),
    /// 250: must be delivered.
    Acked,
}

fn load_body(n: usize) -> String {
    // Every 10th message is ~64 KiB, so some kills land mid-transfer.
    let lines = if n.is_multiple_of(10) { 1000 } else { 3 };
    (0..lines)
        .map(|i| {
            format!(
                "message {n} line {i} {:016x}\r\n",
                (n as u64 * 1_000_003 + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .collect()
}

fn load_message(n: usize) -> String {
    format!(
        "From: load@example.com\r\nTo: sink@example.org\r\nSubject: load {n}\r\nDate: Mon, 2 Jun 2025 10:00:00 +0000\r\n\
Message-ID: <load.{n}@client.example>\r\n\r\n{}",
        load_body(n)
    )
}

/// A non-panicking SMTP client line reader.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.set_write_timeout(Some(Duration::from_secs(15)))?;
        let mut c = Conn { r: BufReader::new(s.try_clone()?), w: s };
        c.expect(None, 220)?;
        c.expect(Some("EHLO load.client"), 250)?;
        Ok(c)
    }

    fn reply(&mut self) -> std::io::Result<u16> {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
            }
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad line {line:?}")))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(code);
            }
        }
    }

    fn expect(&mut self, cmd: Option<&str>, code: u16) -> std::io::Result<()> {
        if let Some(cmd) = cmd {
            self.w.write_all(format!("{cmd}\r\n").as_bytes())?;
        }
        let got = self.reply()?;
        if got != code {
            return Err(std::io::Error::other(format!("{cmd:?}: {got}")));
        }
        Ok(())
    }

    /// One message. `Err` = connection trouble before the dot went out.
    fn submit(&mut self, n: usize) -> Fate {
        let before = (|| -> std::io::Result<()> {
            self.expect(Some("MAIL FROM:<load@example.com>"), 250)?;
            self.expect(Some("RCPT TO:<sink@example.org>"), 250)?;
            self.expect(Some("DATA"), 354)?;
            let mut data = load_message(n).into_bytes();
            data.extend_from_slice(b".\r\n");
            self.w.write_all(&data)?;
            self.w.flush()
        })();
        if before.is_err() {
            return Fate::NotSent;
        }
        match self.reply() {
            Ok(250) => Fate::Acked,
            Ok(code) => Fate::Refused(code),
            Err(_) => Fate::Unknown,
        }
    }
}

#[test]
fn kill_minus_9_never_loses_an_acknowledged_message() {
    const MESSAGES: usize = 300;
    const THREADS: usize = 4;
    const PER_SESSION: usize = 5;
    let started = Instant::now();
    export_upstream_password();
    let up = Upstream::start();

    // The server's home, laid out like the harness's.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("auth")).unwrap();
    std::fs::create_dir_all(home.path().join("state")).unwrap();
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&cache, home.path().join("state/plugin-cache")).unwrap();
    std::fs::write(home.path().join("auth/users"), "").unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let setup = Setup {
        listeners: format!(
            "\n[[listeners]]\nname = \"local\"\naddress = \"127.0.0.1:{port}\"\ntls = \"none\"\ntrusted_networks = [\"127.0.0.0/8\"]\n"
        ),
        plugins: Some(queue_plugins()),
        extra: format!("{}\n{}", up.verified_relay(), queue_section(None)),
        ..Default::default()
    };
    let config = home.path().join("mailferry.toml");
    std::fs::write(&config, Server::config_text(&setup)).unwrap();
    let spool = home.path().join("state/queue");
    let logs = Arc::new(Mutex::new(Vec::new()));

    let mut daemon = Daemon::start(&config, &logs, 0);
    let warm = started.elapsed();

    // The load.
    let fates: Arc<Mutex<Vec<Option<Fate>>>> = Arc::new(Mutex::new(vec![None; MESSAGES]));
    let load_started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let fates = fates.clone();
            std::thread::spawn(move || {
                let mut conn: Option<Conn> = None;
                let mut in_session = 0;
                for n in (t..MESSAGES).step_by(THREADS) {
                    if conn.is_none() {
                        conn = Conn::open(addr).ok();
                        in_session = 0;
                    }
                    let fate = match conn.as_mut() {
                        None => Fate::NotSent,
                        Some(c) => c.submit(n),
                    };
                    fates.lock().unwrap()[n] = Some(fate);
                    in_session += 1;
                    if fate != Fate::Acked || in_session >= PER_SESSION {
                        if let Some(mut c) = conn.take() {
                            let _ = c.w.write_all(b"QUIT\r\n");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(if fate == Fate::NotSent { 100 } else { 60 }));
                }
            })
        })
        .collect();

    // The killer: kill -9 every 0.5–1 s while the load runs.
    let pauses = [600u64, 900, 500, 1000, 700, 800, 550, 950];
    let mut kills = 0;
    let mut restarts = Vec::new();
    for (i, pause) in pauses.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(*pause));
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
        daemon.kill9();
        kills += 1;
        let t = Instant::now();
        daemon = Daemon::start(&config, &logs, i + 1);
        restarts.push(t.elapsed());
    }
    for w in workers {
        w.join().unwrap();
    }
    let load_took = load_started.elapsed();

    // The last server drains the queue.
    wait_spool_empty(&spool, Duration::from_secs(30), &|| logs.lock().unwrap().join("\n"));
    let drained = load_started.elapsed();
    std::thread::sleep(Duration::from_millis(500));

    // Compare.
    let fates: Vec<Fate> = fates.lock().unwrap().iter().map(|f| f.expect("every message was tried")).collect();
    let count = |pred: &dyn Fn(Fate) -> bool| fates.iter().filter(|f| pred(**f)).count();
    let acked = count(&|f| f == Fate::Acked);
    let unknown = count(&|f| f == Fate::Unknown);
    let not_sent = count(&|f| f == Fate::NotSent);
    let refused: Vec<(usize, Fate)> =
        fates.iter().copied().enumerate().filter(|(_, f)| matches!(f, Fate::Refused(_))).collect();

    let stored = up.messages();
    let mut copies: BTreeMap<usize, usize> = BTreeMap::new();
    let mut strange = Vec::new();
    for (i, m) in stored.iter().enumerate() {
        let (fields, rest) = split_header(&m.eml);
        let subject = fields
            .iter()
            .find(|f| field_name(f) == "subject")
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .unwrap_or_default();
        let Some(n) =
            subject.strip_prefix("Subject: load ").and_then(|n| n.parse::<usize>().ok()).filter(|n| *n < MESSAGES)
        else {
            strange.push(format!("upstream message {} (from {}): {subject:?}", i + 1, m.meta["mail_from"]));
            continue;
        };
        let body = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        if body != load_body(n).as_bytes() {
            strange.push(format!("upstream message {} (load {n}): body differs from what was submitted", i + 1));
        }
        if m.meta["rcpt_tos"] != serde_json::json!(["sink@example.org"]) || m.meta["mail_from"] != "load@example.com" {
            strange.push(format!("upstream message {} (load {n}): envelope {}", i + 1, m.meta));
        }
        *copies.entry(n).or_default() += 1;
    }
    let lost: Vec<usize> = (0..MESSAGES).filter(|&n| fates[n] == Fate::Acked && !copies.contains_key(&n)).collect();
    let invented: Vec<(usize, Fate)> =
        copies.keys().map(|&n| (n, fates[n])).filter(|(_, f)| !matches!(f, Fate::Acked | Fate::Unknown)).collect();
    let duplicates: usize = copies.values().map(|c| c - 1).sum();
    let dup_list: Vec<(usize, usize)> = copies.iter().filter(|(_, c)| **c > 1).map(|(n, c)| (*n, *c)).collect();
    let unknown_delivered = copies.keys().filter(|&&n| fates[n] == Fate::Unknown).count();
    let leftovers: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The lock file and the running server's control socket belong there.
        .filter(|n| n != "lock" && n != "control.sock")
        .collect();
    let log = logs.lock().unwrap().join("\n");
    let recovered = log.lines().filter(|l| l.contains("queued messages found in the spool")).count();

    println!(
        "kill -9 under load: {MESSAGES} messages, {kills} kills (restarts took {restarts:?}), load {load_took:?}, \
         drained at {drained:?}, first start {warm:?}, total {:?}\n  \
         acked {acked}, no reply after the dot {unknown} ({unknown_delivered} of them delivered anyway), \
         not sent {not_sent}, refused {}\n  \
         upstream copies {}, distinct {}, duplicates {duplicates} {dup_list:?}; restarts that found queued mail: {recovered}",
        started.elapsed(),
        refused.len(),
        stored.len(),
        copies.len(),
    );
    assert!(kills >= 3, "the load ended before a few kills: {kills}");
    assert!(acked >= MESSAGES / 3, "too few messages acknowledged for a meaningful test: {acked}");
    assert!(lost.is_empty(), "LOST: acknowledged (250) but never delivered: {lost:?}\n{log}");
    assert!(invented.is_empty(), "INVENTED: delivered but never submitted to the end of DATA: {invented:?}");
    assert!(strange.is_empty(), "unexpected upstream messages: {strange:#?}");
    assert!(leftovers.is_empty(), "spool leftovers after draining (.broken = set aside): {leftovers:?}\n{log}");
    assert!(refused.is_empty(), "replies other than 250 to DATA: {refused:?}");
    assert!(!log.contains("unreadable queue entry") && !log.contains("without its message file"), "{log}");
    drop(daemon);
}

/// `mailferry queue …` on a running server (through its control socket),
/// then on the spool of a stopped one.
#[test]
fn queue_commands_work_live_and_offline() {
    // An upstream that is gone: messages stay queued.
    let up = Upstream::start();
    // Never reached: nothing to verify.
    let relay = up.relay("starttls", "verify_certificate = false\n");
    drop(up);
    export_upstream_password();
    let mut server = Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        // Long waits: nothing moves unless asked.
        extra: format!("{relay}\n[queue]\nretry_schedule_secs = [3600]\n"),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: stuck\r\n\r\nbody\r\n";
    let a = assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org", "carol@example.org"], m));
    let b = assert_queued(&send(&mut c, "alice@example.com", &["dave@example.org"], m));
    c.expect("QUIT", 221);
    server.wait_log(&["will retry", &a]);
    server.wait_log(&["will retry", &b]);
    let config = server.path("mailferry.toml");
    let cli = |args: &[&str]| {
        let out = Command::new(BIN).arg("queue").args(args).arg("--config").arg(&config).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };

    let (ok, list) = cli(&["list"]);
    assert!(ok, "{list}");
    assert!(list.contains(&a) && list.contains(&b), "{list}");
    assert!(list.contains("bob@example.org, carol@example.org") && list.contains("attempts 1"), "{list}");
    assert!(list.contains("last error: 451 4.4.1"), "{list}");
    let (ok, show) = cli(&["show", &a]);
    assert!(ok && show.contains("route:     up") && show.contains("<carol@example.org>  Pending"), "{show}");
    let (ok, stats) = cli(&["stats"]);
    assert!(ok && stats.contains("messages:            2") && stats.contains("recipients waiting:  3"), "{stats}");
    // The socket belongs to the live server: retry makes it try at once.
    let (ok, retry) = cli(&["retry", &a]);
    assert!(ok && retry.contains("1 message(s)"), "{retry}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.log_text().lines().filter(|l| l.contains("delivery attempt failed") && l.contains(&a)).count() < 2 {
        assert!(Instant::now() < deadline, "no second attempt after retry:\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, del) = cli(&["delete", &b]);
    assert!(ok && del.contains("deleted"), "{del}");
    let (ok, err) = cli(&["show", &b]);
    assert!(!ok && err.contains("no queued message"), "{err}");
    let (ok, err) = cli(&["retry"]);
    assert!(!ok && err.contains("--all"), "{err}");

    // Stopped: the same commands read and change the spool itself.
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    assert!(server.wait_exit(Duration::from_secs(15)).is_some());
    let (ok, list) = cli(&["list"]);
    assert!(ok && list.contains(&a) && !list.contains(&b), "{list}");
    let (ok, retry) = cli(&["retry", "--all"]);
    assert!(ok && retry.contains("1 message(s)"), "{retry}");
    let (ok, del) = cli(&["delete", &a]);
    assert!(ok && del.contains("deleted"), "{del}");
    let (ok, list) = cli(&["list"]);
    assert!(ok && list.contains("The queue is empty."), "{list}");
    assert!(spool_files(&server.path("state/queue")).is_empty());
}

/// SES answers `454 Throttling failure` when sending too fast: the relay
/// is paused briefly and the message tried again after the pause, not after
/// the (long) retry schedule, and without a bounce.
#[test]
fn throttling_pauses_the_relay_and_retries_soon() {
    let up = Upstream::start();
    export_upstream_password();
    let server = Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        // Only the throttle path can deliver within the test.
        extra: format!("{}\n[queue]\nretry_schedule_secs = [600]\n", up.verified_relay()),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: x@example.org\r\nSubject: slow down\r\n\r\nbody\r\n";
    let id = assert_queued(&send(&mut c, "alice@example.com", &["throttle2-x@example.org"], m));
    c.expect("QUIT", 221);
    server.wait_log(&["asks us to slow down", "pause_secs"]);
    let stored = wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    assert_eq!(stored[0].meta["rcpt_tos"], serde_json::json!(["throttle2-x@example.org"]));
    // Paused twice (1 s, then 2 s), never bounced.
    let pauses = server.log_text().lines().filter(|l| l.contains("asks us to slow down")).count();
    assert_eq!(pauses, 2, "{}", server.log_text());
    assert!(!server.log_text().contains("bouncing"));
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(10), &|| server.log_text());
    assert!(server.log_text().contains(&id));
}

/// A relay with `max_recipients` gets the recipients in parts, one
/// transaction each; every recipient is delivered once.
#[test]
fn recipients_over_the_relay_limit_are_split() {
    let up = Upstream::start();
    export_upstream_password();
    let relay = up.verified_relay().replace("timeout_secs = 20", "timeout_secs = 20\nmax_recipients = 2");
    let server = start_server(relay, None);
    let mut c = submitter(&server);
    let rcpts = ["r1@example.org", "r2@example.org", "r3@example.org", "r4@example.org", "r5@example.org"];
    let m = b"From: alice@example.com\r\nTo: list@example.org\r\nSubject: many\r\n\r\nbody\r\n";
    assert_queued(&send(&mut c, "alice@example.com", &rcpts, m));
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 3, Duration::from_secs(20), &server);
    let parts: Vec<Vec<String>> = stored
        .iter()
        .map(|s| s.meta["rcpt_tos"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .collect();
    assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1], "{parts:?}");
    let all: Vec<String> = parts.concat();
    assert_eq!(all, rcpts.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(10), &|| server.log_text());
}

/// A message larger than every relay of its route takes is refused when it
/// is submitted (at MAIL FROM when the client declares its size), not
/// bounced later.
#[test]
fn too_big_for_the_route_is_refused_at_submission() {
    let up = Upstream::start();
    export_upstream_password();
    let relay = up.verified_relay().replace("timeout_secs = 20", "timeout_secs = 20\nmax_message_size = 2048");
    let server = start_server(relay, None);
    let mut c = submitter(&server);
    let line = "y".repeat(70) + "\r\n";
    let big = format!("From: alice@example.com\r\nTo: bob@example.org\r\nSubject: big\r\n\r\n{}", line.repeat(40));
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], big.as_bytes());
    assert_eq!(r.code, 552, "{r}");
    assert!(r.text().contains("5.3.4") && r.text().contains("2048"), "{r}");
    // A client that declares the size hears it at MAIL FROM, before sending.
    let r = c.cmd("MAIL FROM:<alice@example.com> SIZE=5000");
    assert_eq!(r.code, 552, "{r}");
    assert!(r.text().contains("5.3.4") && r.text().contains("2048"), "{r}");
    c.expect("MAIL FROM:<alice@example.com> SIZE=2000", 250);
    c.expect("RSET", 250);
    // A small one still goes.
    let small = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: small\r\n\r\nok\r\n";
    assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], small));
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    assert_eq!(stored.len(), 1);
}

/// Plugins hear about deliveries: `delivered`, `deferred` and `bounced`,
/// with the queue id, recipient, relay and reply, in a queue context.
#[test]
fn plugins_get_delivery_events() {
    let up = Upstream::start();
    export_upstream_password();
    let scripted = test_plugin("scripted");
    let plugins =
        format!("{}\n[[plugins]]\nname = \"watcher\"\npath = {:?}\n", queue_plugins(), scripted.to_str().unwrap());
    let server = Server::start(Setup {
        plugins: Some(plugins),
        users: users_with_all_schemes(),
        extra: format!("{}\n{}", up.verified_relay(), queue_section(Some(2))),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: x@example.org\r\nSubject: events\r\n\r\nbody\r\n";
    let id = assert_queued(&send(
        &mut c,
        "alice@example.com",
        &["good@example.org", "permfail-p@example.org", "tempfail-t@example.org"],
        m,
    ));
    c.expect("QUIT", 221);
    let delivered = server.wait_log(&["event delivered", &id, "rcpt=good@example.org"]);
    assert!(delivered.contains("relay=up") && delivered.contains("listener=queue"), "{delivered}");
    assert!(delivered.contains("envelope_from=alice@example.com") && delivered.contains("attempts=1"), "{delivered}");
    let bounced = server.wait_log(&["event bounced", &id, "rcpt=permfail-p@example.org"]);
    assert!(bounced.contains("550"), "{bounced}");
    server.wait_log(&["event deferred", &id, "rcpt=tempfail-t@example.org"]);
    // The temporary one expires (max_age 2 s) and is bounced in the end.
    server.wait_log(&["event bounced", &id, "rcpt=tempfail-t@example.org", "4.4.7"]);
}

// ---------------------------------------------------------------------------
// A relay that refuses us, and one too small for the message.

/// A fake upstream: greeting, then answers each command line by `answer`.
fn fake_upstream(greeting: &'static str, answer: fn(&str) -> &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let _ = w.write_all(greeting.as_bytes());
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            let _ = w.write_all(answer(".").as_bytes());
                        }
                        continue;
                    }
                    let a = answer(line.trim_end());
                    if a.starts_with("354") {
                        in_data = true;
                    }
                    let _ = w.write_all(a.as_bytes());
                    if line.to_ascii_uppercase().starts_with("QUIT") {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A greeting 554 (e.g. our IP not allowlisted upstream: our configuration)
/// must not bounce the queued mail; it is temporary for the message.
#[test]
fn a_refusal_before_mail_from_keeps_the_message_queued() {
    let port = fake_upstream("554 5.7.1 no service for your address\r\n", |_| "554 5.7.1 no\r\n");
    export_upstream_password();
    let relay = format!(
        "\n[relays.up]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 5\n"
    );
    let server = start_server(relay, None);
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n";
    let id = assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], m));
    c.expect("QUIT", 221);
    server.wait_log(&["the relay refused us before any message was sent"]);
    std::thread::sleep(Duration::from_secs(3));
    let files = spool_files(&server.path("state/queue"));
    assert!(
        files.iter().any(|f| f.starts_with(&id)),
        "acknowledged message {id} gone from the spool, never delivered:\n{}",
        server.log_text()
    );
    assert!(!server.log_text().contains("bouncing"), "{}", server.log_text());
}

/// Route [small, up]: `small` refuses the size (552 at DATA), `up` takes it.
/// The message was accepted because `up` can take it; it must go through
/// `up`, not bounce on `small`'s size refusal.
#[test]
fn a_relay_too_small_is_skipped_for_the_next_one() {
    let small = fake_upstream("220 small ESMTP\r\n", |l| {
        let u = l.to_ascii_uppercase();
        if u.starts_with("EHLO") {
            "250-small\r\n250 SIZE 2048\r\n"
        } else if u.starts_with("DATA") {
            "354 go\r\n"
        } else if l == "." {
            "552 5.3.4 message too big for this relay\r\n"
        } else if u.starts_with("QUIT") {
            "221 bye\r\n"
        } else {
            "250 ok\r\n"
        }
    });
    let up = Upstream::start();
    export_upstream_password();
    let relays = format!(
        "\n[relays.small]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {small}\ntls = \"none\"\ntimeout_secs = 5\nmax_message_size = 2048\n{}\n[routes.r]\nrelays = [\"small\", \"up\"]\n",
        up.verified_relay()
    );
    let server = Server::start(Setup {
        plugins: Some(DEFAULT_PLUGINS.replace("relay = \"outbox\"", "route = \"r\"")),
        users: users_with_all_schemes(),
        extra: format!("{relays}\n{}", queue_section(None)),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let line = "y".repeat(70) + "\r\n";
    let big = format!("From: alice@example.com\r\nTo: bob@example.org\r\nSubject: big\r\n\r\n{}", line.repeat(40));
    assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], big.as_bytes()));
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 1, Duration::from_secs(15), &server);
    assert_eq!(stored[0].meta["mail_from"], "alice@example.com", "{}", server.log_text());
}

// ---------------------------------------------------------------------------
// Upstream connections.

/// The upstream connection each stored message came over, as runs of
/// messages per connection, in order.
fn connection_runs(stored: &[Stored]) -> Vec<usize> {
    let mut runs: Vec<(u64, usize)> = Vec::new();
    for s in stored {
        let conn = s.meta["connection"].as_u64().unwrap_or_else(|| panic!("no connection in {}", s.meta));
        match runs.last_mut() {
            Some((c, n)) if *c == conn => *n += 1,
            _ => runs.push((conn, 1)),
        }
    }
    runs.into_iter().map(|(_, n)| n).collect()
}

/// Queued messages to one relay share connections: up to
/// `connection_max_messages` each, one after another, no new TLS handshake
/// and AUTH per message.
#[test]
fn queued_messages_share_upstream_connections() {
    let up = Upstream::start();
    export_upstream_password();
    let relay = up
        .verified_relay()
        .replace("timeout_secs = 20", "timeout_secs = 20\nconnection_max_messages = 3\nconnection_idle_secs = 30");
    let server = Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        // One attempt at a time, so the messages go one after another.
        extra: format!("{relay}\n[queue]\nretry_schedule_secs = [600]\nconcurrency = 1\n"),
        ..Default::default()
    });
    let mut c = submitter(&server);
    for i in 0..7 {
        let m = format!("From: alice@example.com\r\nTo: bob@example.org\r\nSubject: reuse {i}\r\n\r\nbody {i}\r\n");
        assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], m.as_bytes()));
        // Each delivered before the next is queued: the kept connection is
        // what carries it.
        wait_stored(&out_of(&up), i + 1, Duration::from_secs(20), &server);
    }
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 7, Duration::from_secs(20), &server);
    assert_eq!(connection_runs(&stored), vec![3, 3, 1], "{}", server.log_text());
    let logins = up.log().lines().filter(|l| l.contains("AUTH") && l.contains(": ok")).count();
    assert_eq!(logins, 3, "one AUTH per connection:\n{}", up.log());
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(10), &|| server.log_text());
}

/// A kept connection the upstream closed meanwhile (its idle timeout,
/// shorter than ours) is noticed at MAIL FROM and the message goes over a
/// new connection at once: not deferred, not retried later.
#[test]
fn a_kept_connection_the_upstream_closed_costs_nothing() {
    let up = Upstream::start_with(&["--idle-timeout", "1"]);
    export_upstream_password();
    let relay = up.verified_relay().replace("timeout_secs = 20", "timeout_secs = 20\nconnection_idle_secs = 60");
    let server = Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        // A deferral would wait ten minutes: only the new connection can deliver in time.
        extra: format!("{relay}\n[queue]\nretry_schedule_secs = [600]\n"),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: one\r\n\r\nbody\r\n";
    assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], m));
    wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    // The upstream hangs up on the idle connection after 1 s.
    server.wait_log(&["\"done\""]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        up.log().contains("connection timeout"),
        "the upstream should have closed the idle connection:\n{}",
        up.log()
    );
    let m = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: two\r\n\r\nbody\r\n";
    assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], m));
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 2, Duration::from_secs(20), &server);
    assert_eq!(connection_runs(&stored), vec![1, 1], "a new connection for the second message");
    let log = server.log_text();
    assert!(!log.contains("deferred") && !log.contains("will retry"), "{log}");
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(10), &|| server.log_text());
}
