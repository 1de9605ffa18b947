//! Test harness: starts the real `mailferry` binary on ephemeral ports with a
//! configuration written for the test, and speaks SMTP to it over plain TCP
//! or TLS. Shared by every end-to-end test module.

pub mod upstream;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailferry");

/// A running server. Killed when dropped.
pub struct Server {
    pub dir: tempfile::TempDir,
    /// The configuration file it serves.
    pub config: PathBuf,
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub addrs: std::collections::HashMap<String, SocketAddr>,
}

/// What a test wants in its configuration.
pub struct Setup {
    /// Extra TOML appended to the generated configuration (plugins, relays…).
    pub extra: String,
    /// `[limits]` lines.
    pub limits: String,
    /// Replace the default plugin list (auth-flat-file + smtp-forward to the outbox).
    pub plugins: Option<String>,
    /// Users file content.
    pub users: String,
    pub listeners: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            extra: String::new(),
            limits: String::new(),
            plugins: None,
            users: String::new(),
            listeners: DEFAULT_LISTENERS.into(),
        }
    }
}

pub const DEFAULT_LISTENERS: &str = r#"
[[listeners]]
name = "local"
address = "127.0.0.1:0"
tls = "none"
trusted_networks = ["127.0.0.0/8"]

[[listeners]]
name = "open"
address = "127.0.0.1:0"
tls = "none"
require_auth = false

[[listeners]]
name = "submission"
address = "127.0.0.1:0"
tls = "starttls"
require_auth = true

[[listeners]]
name = "submissions"
address = "127.0.0.1:0"
tls = "implicit"
require_auth = true
"#;

/// alice and bob, with passwords in the clear, for tests of AUTH limits.
pub const PLAIN_USERS: &str = "alice@example.com:{PLAIN}wonderland\nbob@example.com:{PLAIN}builder\n";

/// "direct": AUTH without TLS on loopback. "proxied": the same behind a
/// PROXY header. "local": the trusted networks of a cron listener.
pub const PLAIN_AUTH_LISTENERS: &str = r#"
[[listeners]]
name = "direct"
address = "127.0.0.1:0"
tls = "none"
auth_without_tls = true
require_auth = true

[[listeners]]
name = "proxied"
address = "127.0.0.1:0"
tls = "none"
auth_without_tls = true
require_auth = true
proxy_protocol = true
proxy_trusted = ["127.0.0.1/32"]

[[listeners]]
name = "local"
address = "127.0.0.1:0"
tls = "none"
auth_without_tls = true
require_auth = false
trusted_networks = ["127.0.0.0/8"]
"#;

pub const DEFAULT_PLUGINS: &str = r#"
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
relay = "outbox"
"#;

/// [`DEFAULT_PLUGINS`] with `middle` (more `[[plugins]]` entries) between
/// auth-flat-file and smtp-forward, whose config is `forward`, e.g.
/// `relay = "outbox"` or `mode = "sync"\nrelay = "up"`.
pub fn plugins_with(middle: &str, forward: &str) -> String {
    let (auth, _) = DEFAULT_PLUGINS.split_once("[[plugins]]\nname = \"smtp-forward\"").unwrap();
    format!("{auth}{middle}\n{}", smtp_forward(forward))
}

/// The `[[plugins]]` entry of smtp-forward with `config` as its table.
pub fn smtp_forward(config: &str) -> String {
    format!("[[plugins]]\nname = \"smtp-forward\"\ngrants = [\"outbound\"]\n[plugins.config]\n{config}\n")
}

/// `alice@example.com` / `wonderland` as an argon2id hash, and other schemes.
pub fn users_with_all_schemes() -> String {
    let argon = hash_password("wonderland");
    format!(
        "# test users\nalice@example.com:{argon}\n\
         sha512@example.com:{{SHA512-CRYPT}}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1\n\
         sha256@example.com:$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5\n\
         plain@example.com:{{PLAIN}}clear text\n\
         broken@example.com:$6$\n"
    )
}

pub fn hash_password(pw: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{pw}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A shared compiled-plugin cache so each test does not compile the
/// built-in plugins again.
pub fn shared_cache() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

static INSTALL: Once = Once::new();

pub fn install_crypto() {
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Server {
    pub fn start(setup: Setup) -> Server {
        Self::try_start(setup).unwrap_or_else(|logs| panic!("server did not start:\n{logs}"))
    }

    pub fn config_text(setup: &Setup) -> String {
        format!(
            "[server]\nhostname = \"mx.test.example\"\nstate_dir = \"state\"\nshutdown_grace_secs = 5\n\n[limits]\n{}\n{}\n{}\n\n[relays.outbox]\nkind = \"outbox\"\ndir = \"outbox\"\n{}\n",
            setup.limits,
            setup.listeners,
            setup.plugins.as_deref().unwrap_or(DEFAULT_PLUGINS),
            setup.extra
        )
    }

    /// Starts the server; on failure returns its output.
    pub fn try_start(setup: Setup) -> Result<Server, String> {
        install_crypto();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("auth")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::os::unix::fs::symlink(shared_cache(), dir.path().join("state/plugin-cache")).unwrap();
        std::fs::write(dir.path().join("auth/users"), &setup.users).unwrap();
        let config = dir.path().join("mailferry.toml");
        std::fs::write(&config, Self::config_text(&setup)).unwrap();
        let expected = setup.listeners.matches("[[listeners]]").count();
        Self::try_serve(dir, &config, expected)
    }

    /// Serves a configuration file the test made itself (in `dir`, which the
    /// server owns from now on), once its `expected` listeners listen.
    pub fn try_serve(dir: tempfile::TempDir, config: &Path, expected: usize) -> Result<Server, String> {
        Self::try_serve_with_env(dir, config, expected, &[])
    }

    /// [`Server::try_serve`] with `env` added to the environment the server
    /// inherits, for the `${VAR}`s its configuration reads. The test
    /// process's own environment is shared by every test: a value that is
    /// not the same for all of them goes to its server here.
    pub fn try_serve_with_env(
        dir: tempfile::TempDir,
        config: &Path,
        expected: usize,
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        install_crypto();
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config)
            .env("MAILFERRY_LOG", "debug,wasmtime=warn,cranelift=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("\"listening\"") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut addrs = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while addrs.len() < expected {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let name = v["listener"].as_str().unwrap().to_string();
                    let addr = v["address"].as_str().unwrap().parse().unwrap();
                    addrs.insert(name, addr);
                }
                Err(_) => {
                    if let Ok(Some(_)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(200));
                        return Err(logs.lock().unwrap().join("\n"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        return Err(format!("timeout\n{}", logs.lock().unwrap().join("\n")));
                    }
                }
            }
        }
        Ok(Server { dir, config: config.to_path_buf(), child, logs, addrs })
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs[listener]
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Waits until the delivery queue is empty (every accepted message
    /// delivered or bounced).
    pub fn wait_queue_empty(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let queued = self.queued();
            if queued == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{queued} messages still queued:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages in the outbox, oldest first, once the queue has delivered
    /// everything it accepted.
    pub fn outbox(&self) -> Vec<String> {
        self.wait_queue_empty();
        let mut files: Vec<_> = match std::fs::read_dir(self.path("outbox")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().map(|x| x == "eml").unwrap_or(false))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files.iter().map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()).collect()
    }

    /// Messages in the delivery queue: what the running server's queue says
    /// on its control socket, or with the server stopped what `mailferry
    /// queue stats` reads from the spool.
    pub fn queued(&self) -> usize {
        if let Some(n) = queue_stats(&self.path("state/queue")) {
            return n;
        }
        let out = Command::new(BIN).args(["queue", "stats", "--config"]).arg(&self.config).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("messages:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("mailferry queue stats: {text}{}", String::from_utf8_lossy(&out.stderr)))
    }

    /// Waits until a log line containing every needle appears.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.logs.lock().unwrap().iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?}:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Any stream an SMTP client speaks over.
pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A minimal scripted SMTP client, for checking exact replies.
pub struct Client {
    stream: Option<Box<dyn Stream>>,
    tcp: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Resp {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let stream: Box<dyn Stream> = Box::new(tcp.try_clone().unwrap());
        Client { stream: Some(stream), tcp, buf: Vec::new() }
    }

    /// Connects with implicit TLS.
    pub fn connect_tls(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        c.wrap_tls();
        c
    }

    /// Connects and sends `preamble` before anything else, as a load
    /// balancer sends its PROXY header.
    pub fn connect_after(addr: SocketAddr, preamble: &[u8]) -> Client {
        let mut c = Client::connect(addr);
        c.send_raw(preamble);
        c
    }

    /// [`Client::connect_after`], then implicit TLS.
    pub fn connect_tls_after(addr: SocketAddr, preamble: &[u8]) -> Client {
        let mut c = Client::connect_after(addr, preamble);
        c.wrap_tls();
        c
    }

    fn wrap_tls(&mut self) {
        install_crypto();
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(config), "mx.test.example".try_into().unwrap()).unwrap();
        let tcp = self.tcp.try_clone().unwrap();
        self.stream = Some(Box::new(rustls::StreamOwned::new(conn, tcp)));
        self.buf.clear();
    }

    /// Connects with implicit TLS using `config` (resumption is turned
    /// off, so every handshake is a full one) and asking for `name`; returns
    /// the client and the end-entity certificate the server presented.
    pub fn connect_tls_with(addr: SocketAddr, config: rustls::ClientConfig, name: &str) -> (Client, Vec<u8>) {
        let mut c = Client::connect(addr);
        let leaf = c.handshake(config, name);
        (c, leaf)
    }

    /// STARTTLS with `config`, as [`Client::connect_tls_with`].
    pub fn starttls_with(&mut self, config: rustls::ClientConfig, name: &str) -> Vec<u8> {
        self.expect("STARTTLS", 220);
        self.handshake(config, name)
    }

    /// Runs the whole TLS handshake now, so the server's certificate can be
    /// looked at before anything is sent.
    fn handshake(&mut self, mut config: rustls::ClientConfig, name: &str) -> Vec<u8> {
        install_crypto();
        config.resumption = rustls::client::Resumption::disabled();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name.to_string().try_into().unwrap()).unwrap();
        let mut tcp = self.tcp.try_clone().unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap_or_else(|e| panic!("TLS handshake asking for {name}: {e}"));
        }
        while conn.wants_write() {
            conn.write_tls(&mut tcp).unwrap();
        }
        let leaf = conn.peer_certificates().expect("the server sent no certificate")[0].to_vec();
        self.stream = Some(Box::new(rustls::StreamOwned::new(conn, tcp)));
        self.buf.clear();
        leaf
    }

    pub fn send_raw(&mut self, data: &[u8]) {
        self.stream.as_mut().unwrap().write_all(data).unwrap();
        self.stream.as_mut().unwrap().flush().unwrap();
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// Reads one reply (all its lines). Panics on EOF.
    pub fn read(&mut self) -> Resp {
        self.try_read().expect("connection closed while waiting for a reply")
    }

    pub fn try_read(&mut self) -> Option<Resp> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            let code: u16 =
                line.get(..3).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad reply line {line:?}"));
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Some(Resp { code, lines });
            }
        }
    }

    fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            let mut chunk = [0u8; 4096];
            let n = match self.stream.as_mut().unwrap().read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command and returns the reply.
    pub fn cmd(&mut self, line: &str) -> Resp {
        self.send(line);
        self.read()
    }

    /// Sends a command and asserts the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Resp {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line:?} got {r}");
        r
    }

    pub fn greeting(mut self) -> Client {
        let r = self.read();
        assert_eq!(r.code, 220, "greeting: {r}");
        self
    }

    pub fn starttls(&mut self) {
        self.expect("STARTTLS", 220);
        self.wrap_tls();
    }

    pub fn auth_plain(&mut self, login: &str, password: &str) -> Resp {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"));
        self.cmd(&format!("AUTH PLAIN {token}"))
    }

    /// Whether the server closed the connection.
    pub fn is_closed(&mut self) -> bool {
        self.read_line().is_none()
    }

    /// MAIL, RCPTs and DATA with a CRLF message body; returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Resp {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for r in to {
            self.expect(&format!("RCPT TO:<{r}>"), 250);
        }
        self.expect("DATA", 354);
        let mut data = body.replace("\r\n", "\n").replace('\n', "\r\n");
        if !data.ends_with("\r\n") {
            data.push_str("\r\n");
        }
        // Dot-stuff as a client must.
        let stuffed: String = data
            .split_inclusive("\r\n")
            .map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_string() })
            .collect();
        self.send_raw(stuffed.as_bytes());
        self.send_raw(b".\r\n");
        self.read()
    }
}

#[path = "../../support/no_verify.rs"]
mod no_verify;
use no_verify::NoVerify;

/// A TLS client configuration that takes any certificate, for tests that
/// look at the certificate themselves.
pub fn insecure_client_config() -> rustls::ClientConfig {
    install_crypto();
    rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify))
        .with_no_client_auth()
}

/// Path of a test-only plugin built from tests/plugins (built once per run).
pub fn test_plugin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/wasm");
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("tests/plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .unwrap();
        assert!(status.success(), "building tests/plugins failed");
    });
    target.join("wasm32-wasip2/release").join(format!("{name}.wasm"))
}

impl Client {
    /// Switches to TLS after the 220 reply to STARTTLS was already read.
    pub fn starttls_after_reply(&mut self) {
        self.wrap_tls();
    }
}

/// Undoes header folding, for assertions on header text.
pub fn unfold(m: &str) -> String {
    m.replace("\r\n\t", " ").replace("\r\n ", "  ")
}

/// Makes sure an external program a test drives (swaks, curl, python3…) is
/// installed; panics with `hint` otherwise, so a missing tool is a failure,
/// never a silent skip. `check` are the arguments of a run that must
/// succeed, e.g. `["-c", "import aiosmtpd"]`.
pub fn require_program(program: &str, check: &[&str], hint: &str) {
    match Command::new(program).args(check).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{program} {}` failed ({}): {hint}\n{}{}",
            check.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run {program} ({e}): {hint}"),
    }
}

/// Runs a command to completion with its output captured, killing it and
/// panicking if it takes longer than `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (out.join().unwrap(), err.join().unwrap());
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

impl Client {
    /// MAIL FROM, one RCPT TO and DATA, each expected to succeed.
    pub fn begin_data(&mut self, from: &str, to: &str) {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        self.expect(&format!("RCPT TO:<{to}>"), 250);
        self.expect("DATA", 354);
    }
}

/// The Redis the shared-counter tests use (127.0.0.1:6379, database 0).
/// Panics if it does not answer: `.ci/run` starts it; by hand,
/// `redis-server --daemonize yes`.
pub fn redis_url() -> &'static str {
    require_program(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", "6379", "ping"],
        "start Redis: redis-server --daemonize yes",
    );
    "redis://127.0.0.1:6379/0"
}

/// A key prefix no other test run shares, so runs against one Redis never
/// see each other's counts.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("mailferry-test:{test}:{}:{nanos}:", std::process::id())
}

/// `GET /metrics` from the admin listener a server logged, as text.
pub fn scrape_metrics(server: &Server) -> String {
    let line = server.wait_log(&["admin listener"]);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = v["address"].as_str().unwrap().parse().unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    text
}

/// The message count a running server's queue gives on its control socket
/// (as `mailferry queue stats` asks); `None` without a server.
pub fn queue_stats(spool: &Path) -> Option<usize> {
    let mut s = std::os::unix::net::UnixStream::connect(spool.join("control.sock")).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"{\"op\":\"stats\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    v["stats"]["messages"].as_u64().map(|n| n as usize)
}

/// `mailferry_password_checks_total` by `how`, from a server's /metrics:
/// how its password checks were answered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PasswordChecks {
    /// From the cache of verified logins.
    pub cached: u64,
    /// By the full hash scheme.
    pub hashed: u64,
    /// `{PLAIN}` entries.
    pub plain: u64,
}

/// The server's [`PasswordChecks`] (0 for a `how` not counted yet: the
/// family has no samples until then); it needs an `[admin]` listener.
pub fn password_checks(server: &Server) -> PasswordChecks {
    let metrics = scrape_metrics(server);
    let count = |how: &str| {
        let series = format!("mailferry_password_checks_total{{how=\"{how}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |n| n.trim().parse().unwrap())
    };
    PasswordChecks { cached: count("cached"), hashed: count("hashed"), plain: count("plain") }
}
