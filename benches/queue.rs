//! The durable queue under load: authenticated submission through the real
//! server, into the spool, and on to a local sink, with 8 and with 64
//! concurrent clients in one run (machine noise affects both alike: compare
//! the ratios, not the absolute numbers).
//!
//! Run: `cargo bench --bench queue` (builds the release server first).
//!
//! Each scenario starts the real `mailferry` binary afresh (so the fsync
//! count it reports covers that scenario alone), with a temporary
//! configuration: one STARTTLS submission listener with `require_auth`,
//! `auth-flat-file` with one user, no `dkim-sign`, `smtp-forward` in queue
//! mode to the relay `sink` (plain SMTP on loopback, no credentials) and
//! `[queue] concurrency = 8`. The sink is a minimal SMTP server in this
//! bench (220, EHLO, MAIL/RCPT 250, DATA 354 … 250, QUIT 221) that counts
//! the messages it receives.
//!
//! Every client is a thread with one connection: STARTTLS (certificate not
//! verified), AUTH PLAIN, a few warm-up messages (not measured; the bench
//! waits until the sink has them all), then its share of ~4 KiB messages,
//! one MAIL/RCPT/DATA transaction at a time, without pipelining.
//!
//! What it reports, per scenario:
//! - submitted msg/s: measured messages / time from the start signal until
//!   the last client got its last `250`;
//! - p50/p99 submission latency: from sending `MAIL FROM` to reading the
//!   `250` after the final dot (the `250` is only sent once the message is
//!   fsynced in the spool, so this includes the queue's durability cost);
//! - delivered msg/s (end to end): measured messages / time from the start
//!   signal until the sink has received every message;
//! - fsyncs per message: the server's spool fsync count, logged at shutdown
//!   (SIGTERM) in the `"queue stopped"` line as `fsyncs`, divided by every
//!   message queued in that server's life (warm-up included: it runs at the
//!   same concurrency). New messages are appended to the spool's journal,
//!   and sessions finishing together share one `fdatasync` (group commit),
//!   so this falls below one as concurrency grows; removing a delivered
//!   message costs none. Printed as `n/a` if the server does not log it.
//! - sink connections: how many connections the server opened to the sink
//!   (delivery connections are kept open between messages).
//!
//! - CPU ms per message of the server process, and of this bench process
//!   (clients and sink), over the same window as delivered/s;
//! - the server's peak resident memory (VmHWM) over its whole life: it
//!   grows with the open sessions (their plugin instances) and the queue.
//!
//! Note that the clients, the TLS on both ends, the server and the sink all
//! share this machine's cores.
//!
//! `MF_BENCH_SINK_QUICKACK=1` makes the sink acknowledge received data at
//! once (TCP_QUICKACK) instead of delaying its ACKs as Linux does: a
//! diagnostic for a client that sends a small segment after a large one
//! without TCP_NODELAY (Nagle's algorithm then waits for the delayed ACK).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// (clients, measured messages per client).
const SCENARIOS: &[(usize, usize)] = &[(8, 250), (64, 40)];
/// Unmeasured messages each client sends first.
const WARMUP_PER_CLIENT: usize = 3;
/// Target size of each message, headers included.
const MESSAGE_SIZE: usize = 4096;
const QUEUE_CONCURRENCY: usize = 8;

const BIN: &str = env!("CARGO_BIN_EXE_mailferry");
const USER: &str = "alice@example.com";
const PASSWORD: &str = "wonderland";
const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// The sink: a minimal, fast SMTP server that accepts and counts everything.

struct Sink {
    port: u16,
    received: Arc<AtomicU64>,
    /// Connections the server opened to the sink.
    connections: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl Sink {
    fn start() -> Sink {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sink")
            .enable_io()
            .build()
            .expect("sink runtime");
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("sink bind");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let opened = connections.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                opened.fetch_add(1, Ordering::SeqCst);
                let count = count.clone();
                tokio::spawn(async move {
                    if let Err(e) = sink_session(stream, count).await {
                        eprintln!("sink: session error: {e}");
                    }
                });
            }
        });
        Sink { port, received, connections, _rt: rt }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Waits until the sink holds `n` messages; returns when it did.
    fn wait_for(&self, n: u64, server: &Server) -> Instant {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.received() >= n {
                return Instant::now();
            }
            if Instant::now() > deadline {
                panic!(
                    "the sink received {} of {n} messages in {TIMEOUT:?}\nserver log tail:\n{}",
                    self.received(),
                    server.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

fn quickack_wanted() -> bool {
    std::env::var("MF_BENCH_SINK_QUICKACK").is_ok_and(|v| !v.is_empty() && v != "0")
}

async fn sink_session(stream: tokio::net::TcpStream, count: Arc<AtomicU64>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    stream.set_nodelay(true)?;
    let fd = stream.as_raw_fd();
    let quickack = quickack_wanted();
    // TCP_QUICKACK does not stick: set it again before each read from the socket.
    let ack_now = || {
        if quickack {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt on a socket this session owns, with an int option.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    };
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::with_capacity(64 * 1024, r);
    w.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if r.buffer().is_empty() {
            ack_now();
        }
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).map(|v| v.to_ascii_uppercase()).unwrap_or_default();
        let reply: &[u8] = match &verb[..] {
            b"EHLO" => b"250-sink.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n",
            b"HELO" => b"250 sink.test\r\n",
            b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => b"250 2.0.0 OK\r\n",
            b"DATA" => {
                w.write_all(b"354 go ahead\r\n").await?;
                // Only <CRLF>.<CRLF> ends the data: a line that is just ".".
                loop {
                    line.clear();
                    if r.buffer().is_empty() {
                        ack_now();
                    }
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Err(std::io::Error::other("connection closed in DATA"));
                    }
                    if line == b".\r\n" {
                        break;
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                b"250 2.0.0 accepted\r\n"
            }
            b"QUIT" => {
                w.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.1 not implemented\r\n",
        };
        w.write_all(reply).await?;
    }
}

// ---------------------------------------------------------------------------
// The server.

struct Server {
    _dir: tempfile::TempDir,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

fn hash_password(pw: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("mailferry hash-password");
    child.stdin.take().unwrap().write_all(format!("{pw}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mailferry hash-password failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn config_text(sink_port: u16) -> String {
    format!(
        r#"[server]
hostname = "mx.bench.example"
state_dir = "state"
shutdown_grace_secs = 20

[limits]
max_connections_per_ip = 1000

[[listeners]]
name = "submission"
address = "127.0.0.1:0"
tls = "starttls"
require_auth = true

[[plugins]]
name = "auth-flat-file"
grants = ["password"]
read_dirs = ["auth"]
[plugins.config]
users = "/auth/users"

[[plugins]]
name = "smtp-forward"
grants = ["outbound"]
[plugins.config]
route = "sink"

[relays.sink]
kind = "smtp"
host = "127.0.0.1"
port = {sink_port}
tls = "none"

[queue]
concurrency = {QUEUE_CONCURRENCY}
"#
    )
}

impl Server {
    fn start(users: &str, sink_port: u16) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("auth")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        // Plugins compiled once for every run of this bench.
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-queue-plugin-cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::os::unix::fs::symlink(&cache, dir.path().join("state/plugin-cache")).unwrap();
        std::fs::write(dir.path().join("auth/users"), users).unwrap();
        let config = dir.path().join("mailferry.toml");
        std::fs::write(&config, config_text(sink_port)).unwrap();
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config)
            .env("MAILFERRY_LOG", "info,wasmtime=warn,cranelift=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start mailferry");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("\"listening\"") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
                    break v["address"].as_str().expect("listening address").parse().unwrap();
                }
                Err(_) => {
                    let exited = child.try_wait().unwrap();
                    if exited.is_some() || Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        std::thread::sleep(Duration::from_millis(200));
                        panic!("mailferry did not start ({exited:?}):\n{}", logs.lock().unwrap().join("\n"));
                    }
                }
            }
        };
        Server { _dir: dir, child, logs, reader: Some(reader), addr }
    }

    fn log_tail(&self, n: usize) -> String {
        let logs = self.logs.lock().unwrap();
        logs[logs.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then waits for the exit and the end of its log.
    fn stop(&mut self) -> Vec<String> {
        // SAFETY: plain kill(2) on the child we started.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if !status.success() {
            eprintln!("warning: mailferry exited with {status}; log tail:\n{}", self.log_tail(20));
        }
        std::mem::take(&mut *self.logs.lock().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: state is the 3rd
    // field of the line, utime the 14th and stime the 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Peak resident memory of a process, MiB, from /proc.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds this process (clients and sink) has used so far.
fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What the server's log says about one scenario.
struct LogFacts {
    queued: usize,
    delivered: usize,
    retries: usize,
    fsyncs: Option<u64>,
}

fn log_facts(lines: &[String]) -> LogFacts {
    let mut facts = LogFacts { queued: 0, delivered: 0, retries: 0, fsyncs: None };
    for line in lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let message = v["message"].as_str().or_else(|| v["fields"]["message"].as_str()).unwrap_or("");
        match message {
            "queued" => facts.queued += 1,
            "delivered" => facts.delivered += 1,
            "will retry" => facts.retries += 1,
            "queue stopped" => {
                let f = if v["fsyncs"].is_null() { &v["fields"]["fsyncs"] } else { &v["fsyncs"] };
                facts.fsyncs = f.as_u64().or_else(|| f.as_str().and_then(|s| s.parse().ok()));
            }
            _ => {}
        }
    }
    facts
}

// ---------------------------------------------------------------------------
// The clients.

#[path = "../tests/support/no_verify.rs"]
mod no_verify;
use no_verify::NoVerify;

enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// A blocking SMTP client on one connection.
struct Client {
    io: Transport,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).expect("connect to mailferry");
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut c = Client { io: Transport::Plain(tcp), buf: Vec::with_capacity(4096) };
        c.expect_reply(220, "greeting");
        c
    }

    fn starttls(&mut self, config: &Arc<rustls::ClientConfig>) {
        self.cmd("STARTTLS", 220);
        let Transport::Plain(tcp) = &self.io else { panic!("STARTTLS twice") };
        let tcp = tcp.try_clone().unwrap();
        let conn = rustls::ClientConnection::new(config.clone(), "mx.bench.example".try_into().unwrap()).unwrap();
        self.io = Transport::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
        self.buf.clear();
    }

    fn write(&mut self, bytes: &[u8]) {
        let r = match &mut self.io {
            Transport::Plain(s) => s.write_all(bytes).and_then(|_| s.flush()),
            Transport::Tls(s) => s.write_all(bytes).and_then(|_| s.flush()),
        };
        r.expect("write to mailferry");
    }

    /// Reads one reply (all its lines); returns its code and last line.
    fn read_reply(&mut self) -> (u16, String) {
        let mut start = 0;
        loop {
            while let Some(i) = self.buf[start..].windows(2).position(|w| w == b"\r\n") {
                let end = start + i;
                let line = &self.buf[start..end];
                let code = std::str::from_utf8(line.get(..3).unwrap_or(b"")).ok().and_then(|c| c.parse().ok());
                let Some(code) = code else { panic!("bad reply line {:?}", String::from_utf8_lossy(line)) };
                if line.get(3) != Some(&b'-') {
                    let text = String::from_utf8_lossy(line).into_owned();
                    self.buf.drain(..end + 2);
                    return (code, text);
                }
                start = end + 2;
            }
            let mut chunk = [0u8; 4096];
            let n = match &mut self.io {
                Transport::Plain(s) => s.read(&mut chunk),
                Transport::Tls(s) => s.read(&mut chunk),
            }
            .expect("read from mailferry");
            assert!(n > 0, "mailferry closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn expect_reply(&mut self, code: u16, what: &str) -> String {
        let (got, text) = self.read_reply();
        assert_eq!(got, code, "{what}: {text}");
        text
    }

    fn cmd(&mut self, line: &str, code: u16) -> String {
        self.write(format!("{line}\r\n").as_bytes());
        self.expect_reply(code, line)
    }

    /// One transaction; `data` is dot-stuffed and ends with CRLF "." CRLF.
    fn send(&mut self, rcpt: &str, data: &[u8]) {
        self.cmd(&format!("MAIL FROM:<{USER}>"), 250);
        self.cmd(&format!("RCPT TO:<{rcpt}>"), 250);
        self.cmd("DATA", 354);
        self.write(data);
        self.expect_reply(250, "end of data");
    }
}

/// A ~4 KiB message, dot-stuffed, with the final CRLF "." CRLF.
fn message(client: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <{USER}>\r\nTo: Bob <bob@example.org>\r\nSubject: queue bench from client {client}\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <bench-{client}@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog; the queue keeps every word of it.\r\n";
    while m.len() + line.len() <= MESSAGE_SIZE {
        m.extend_from_slice(line);
    }
    // No body line starts with '.', so no stuffing is needed.
    debug_assert!(!m.split(|&b| b == b'\n').any(|l| l.starts_with(b".")));
    m.extend_from_slice(b".\r\n");
    m
}

struct Scenario {
    sink_connections: u64,
    clients: usize,
    per_client: usize,
    measured: usize,
    latencies: Vec<Duration>,
    submit_elapsed: Duration,
    deliver_elapsed: Duration,
    received: u64,
    facts: LogFacts,
    server_cpu: f64,
    bench_cpu: f64,
    peak_rss: Option<f64>,
}

fn run(clients: usize, per_client: usize, users: &str) -> Scenario {
    let sink = Sink::start();
    let mut server = Server::start(users, sink.port);
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
            .with_no_client_auth(),
    );
    let warmed = Arc::new(Barrier::new(clients + 1));
    let go = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (tls, warmed, go, addr) = (tls.clone(), warmed.clone(), go.clone(), server.addr);
            std::thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || {
                    let data = message(i);
                    let rcpt = format!("bob{i}@example.org");
                    let mut c = Client::connect(addr);
                    c.cmd("EHLO client.bench.example", 250);
                    c.starttls(&tls);
                    c.cmd("EHLO client.bench.example", 250);
                    use base64::Engine as _;
                    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
                    c.cmd(&format!("AUTH PLAIN {token}"), 235);
                    for _ in 0..WARMUP_PER_CLIENT {
                        c.send(&rcpt, &data);
                    }
                    warmed.wait();
                    go.wait();
                    let mut latencies = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let started = Instant::now();
                        c.send(&rcpt, &data);
                        latencies.push(started.elapsed());
                    }
                    let finished = Instant::now();
                    c.cmd("QUIT", 221);
                    (latencies, finished)
                })
                .expect("client thread")
        })
        .collect();
    warmed.wait();
    let warmup = (clients * WARMUP_PER_CLIENT) as u64;
    sink.wait_for(warmup, &server);
    let cpu0 = (process_cpu_secs(server.child.id()), own_cpu_secs());
    go.wait();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(clients * per_client);
    let mut last = started;
    for t in threads {
        let (l, finished) = t.join().expect("a client failed");
        latencies.extend(l);
        last = last.max(finished);
    }
    let measured = clients * per_client;
    let delivered_at = sink.wait_for(warmup + measured as u64, &server);
    let cpu1 = (process_cpu_secs(server.child.id()), own_cpu_secs());
    // Let the queue record the last deliveries (and remove them) before
    // stopping, so the fsync count covers the whole life of each message.
    let deadline = Instant::now() + TIMEOUT;
    while log_facts(&server.logs.lock().unwrap()).delivered < warmup as usize + measured && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let peak_rss = peak_rss_mib(server.child.id());
    let lines = server.stop();
    let received = sink.received();
    let sink_connections = sink.connections.load(Ordering::SeqCst);
    Scenario {
        sink_connections,
        clients,
        per_client,
        measured,
        latencies,
        submit_elapsed: last - started,
        deliver_elapsed: delivered_at - started,
        received,
        facts: log_facts(&lines),
        server_cpu: cpu1.0 - cpu0.0,
        bench_cpu: cpu1.1 - cpu0.1,
        peak_rss,
    }
}

fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let users = format!("{USER}:{}\n", hash_password(PASSWORD));
    let mut results = Vec::new();
    for &(clients, per_client) in SCENARIOS {
        eprintln!("queue bench: {clients} clients × {per_client} messages…");
        results.push(run(clients, per_client, &users));
    }

    println!();
    println!(
        "durable queue: STARTTLS + AUTH submission of ~{} KiB messages → spool → local sink ([queue] concurrency = {QUEUE_CONCURRENCY})",
        MESSAGE_SIZE / 1024
    );
    println!(
        "{} cores; sink ACKs {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if quickack_wanted() { "at once (MF_BENCH_SINK_QUICKACK)" } else { "delayed (the kernel's default)" }
    );
    println!(
        "{:<18} {:>10} {:>12} {:>9} {:>9} {:>9} {:>12} {:>8} {:>9} {:>8} {:>12} {:>12} {:>9}",
        "clients × msgs",
        "submit/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "fsyncs/msg",
        "queued",
        "received",
        "retries",
        "srv CPU ms",
        "bench CPU ms",
        "srv MiB"
    );
    for s in &mut results {
        s.latencies.sort();
        let fsyncs = match s.facts.fsyncs {
            Some(f) if s.facts.queued > 0 => format!("{:.2}", f as f64 / s.facts.queued as f64),
            _ => "n/a".into(),
        };
        println!(
            "{:<18} {:>10.0} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>12} {:>8} {:>9} {:>8} {:>12.2} {:>12.2} {:>9}",
            format!("{} × {}", s.clients, s.per_client),
            s.measured as f64 / s.submit_elapsed.as_secs_f64(),
            s.measured as f64 / s.deliver_elapsed.as_secs_f64(),
            pct_ms(&s.latencies, 0.50),
            pct_ms(&s.latencies, 0.99),
            pct_ms(&s.latencies, 1.0),
            fsyncs,
            s.facts.queued,
            s.received,
            s.facts.retries,
            s.server_cpu / s.measured as f64 * 1e3,
            s.bench_cpu / s.measured as f64 * 1e3,
            s.peak_rss.map_or("n/a".into(), |m| format!("{m:.0}")),
        );
    }
    println!("(srv/bench CPU ms: CPU time per measured message of the server, and of the clients + sink; srv MiB: its peak RSS)");
    println!();
    for s in &results {
        let queued = s.facts.queued as u64;
        match s.facts.fsyncs {
            Some(f) => {
                // 2 file fsyncs per store (plus 1 per retry update); the
                // rest are group commits.
                let commits = f.saturating_sub(2 * queued + s.facts.retries as u64);
                let per_commit = if commits > 0 { format!("{:.1}", queued as f64 / commits as f64) } else { "-".into() };
                println!(
                    "{:>2} clients: fsyncs: {f} for {queued} messages queued ({:.2}/message; ~{commits} group commits, {per_commit} messages each)",
                    s.clients,
                    f as f64 / queued.max(1) as f64
                );
            }
            None => println!("{:>2} clients: fsyncs: n/a (no \"queue stopped\" line with fsyncs=N in the log); {queued} messages queued", s.clients),
        }
        println!("   sink connections: {} for {} messages", s.sink_connections, s.received);
        if s.received != queued {
            println!("   warning: the sink received {} messages but the server queued {queued}", s.received);
        }
    }
    if let [a, b] = &results[..] {
        let rate = |s: &Scenario| s.measured as f64 / s.submit_elapsed.as_secs_f64();
        let e2e = |s: &Scenario| s.measured as f64 / s.deliver_elapsed.as_secs_f64();
        println!();
        println!(
            "{} vs {} clients: submit/s ×{:.2}, delivered/s ×{:.2}, p50 latency ×{:.2}, p99 latency ×{:.2}",
            b.clients,
            a.clients,
            rate(b) / rate(a),
            e2e(b) / e2e(a),
            pct_ms(&b.latencies, 0.5) / pct_ms(&a.latencies, 0.5),
            pct_ms(&b.latencies, 0.99) / pct_ms(&a.latencies, 0.99),
        );
    }
}
