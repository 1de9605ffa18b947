//! The session's state machine, driven in memory: the server side runs over
//! one end of a `tokio::io::duplex` pipe, a scripted client over the other,
//! with the real plugins (auth-flat-file, smtp-forward to an outbox folder)
//! and real TLS for STARTTLS. No sockets, no binary: the plugins are
//! compiled once for all the tests, and each test shows the protocol
//! rules one by one.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use super::{Session, Shared};
use crate::config::Config;
use crate::limits::auth::AuthGuard;
use crate::pipeline::{Pipeline, Services};
use crate::smtp::transport::{Conn, Stream, Transport};

const USER: &str = "alice@example.com";
const PASSWORD: &str = "correct horse";

/// A server configuration, its plugins loaded, and a certificate for
/// `localhost` that the test client trusts.
struct Server {
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    roots: Arc<rustls::RootCertStore>,
    /// Keeps the shutdown channel open; sending `true` asks sessions to end.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// One state folder for all the tests, so the plugins are compiled once
/// (its `plugin-cache`); the lock keeps two tests from compiling them at
/// the same moment.
fn shared_state() -> &'static (tempfile::TempDir, tokio::sync::Mutex<()>) {
    static STATE: std::sync::OnceLock<(tempfile::TempDir, tokio::sync::Mutex<()>)> = std::sync::OnceLock::new();
    STATE.get_or_init(|| (tempfile::tempdir().unwrap(), tokio::sync::Mutex::new(())))
}

/// `listener` is the body of the one `[[listeners]]` table.
async fn server(listener: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (state_dir, compiling) = shared_state();
    std::fs::create_dir_all(root.join("auth")).unwrap();
    std::fs::write(root.join("auth/users"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
    let text = format!(
        r#"
[server]
hostname = "mx.test"
state_dir = {state_dir:?}

[limits]
max_errors = 8

[auth_limits]
failure_delay_ms = 0

[[listeners]]
name = "test"
address = "127.0.0.1:0"
{listener}

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
mode = "sync"
relay = "outbox"

[relays.outbox]
kind = "outbox"
dir = "outbox"
"#,
        state_dir = state_dir.path().display().to_string(),
    );
    let config = Arc::new(Config::parse(&text, &root.join("mailferry.toml"), root).unwrap());
    let services = Arc::new(Services::none(&config).unwrap());
    let pipeline = {
        let _compiling = compiling.lock().await;
        Arc::new(Pipeline::start(config.clone(), services).await.unwrap())
    };

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();

    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        auth: Arc::new(AuthGuard::new(config.auth_limits.clone(), pipeline.counters().clone())),
        config,
        pipeline,
        acceptor: Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))),
        shutdown: shutdown_rx,
    });
    Server { dir, shared, roots: Arc::new(roots), shutdown }
}

impl Server {
    /// A session from `peer`, running in the background; the client end.
    fn connect(&self, peer: &str) -> Client {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = peer.parse().unwrap();
        let local: SocketAddr = "127.0.0.1:587".parse().unwrap();
        let listener = Arc::new(self.shared.config.listeners[0].clone());
        let session =
            Session::new(self.shared.clone(), listener, peer, local, None, Transport::new(Conn::plain(server)));
        let task = tokio::spawn(session.run());
        Client { io: Box::new(client), buf: Vec::new(), roots: self.roots.clone(), task }
    }

    fn outbox(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.dir.path().join("outbox")) else { return Vec::new() };
        dir.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
    }
}

struct Client {
    io: Box<dyn Stream>,
    buf: Vec<u8>,
    roots: Arc<rustls::RootCertStore>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn send(&mut self, text: &str) {
        self.io.write_all(text.as_bytes()).await.unwrap();
    }

    /// One whole reply (all its lines), or `None` once the server closed.
    async fn reply(&mut self) -> Option<String> {
        let mut lines = String::new();
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                let line = String::from_utf8(line).unwrap();
                lines.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Some(lines);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), self.io.read(&mut chunk))
                .await
                .expect("the server answers within 10 s")
                .unwrap_or(0);
            if n == 0 {
                assert!(self.buf.is_empty() && lines.is_empty(), "closed in the middle of a reply");
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command and returns its reply.
    async fn say(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await.unwrap_or_else(|| panic!("closed after {line:?}"))
    }

    /// The TLS handshake, after the server's `220` to STARTTLS.
    async fn start_tls(&mut self) {
        assert!(self.buf.is_empty(), "no plaintext may be left unread before TLS");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        // A placeholder while the pipe is handed to the handshake.
        let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, plain).await.unwrap();
        self.io = Box::new(tls);
    }

    /// Greeting, EHLO, STARTTLS and EHLO again.
    async fn secured(&mut self) {
        assert!(self.reply().await.unwrap().starts_with("220 "));
        assert!(self.say("EHLO client.test").await.starts_with("250"));
        assert!(self.say("STARTTLS").await.starts_with("220 "));
        self.start_tls().await;
        assert!(self.say("EHLO client.test").await.starts_with("250"));
    }

    /// One recipient and the message, after MAIL FROM: it is relayed.
    async fn rcpt_and_data(&mut self) {
        assert!(self.say("RCPT TO:<b@example.org>").await.starts_with("250"));
        assert!(self.say("DATA").await.starts_with("354"));
        self.send(MESSAGE).await;
        assert!(self.reply().await.unwrap().starts_with("250 2.0.0 queued upstream"));
    }

    /// Waits for the session to end (the server closed its side).
    async fn closed(mut self) {
        assert_eq!(self.reply().await, None);
        tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task).await.unwrap().unwrap();
    }
}

fn plain_auth(login: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"))
}

const LOCAL: &str = "tls = \"none\"\nrequire_auth = false\ntrusted_networks = [\"127.0.0.0/8\"]";
const SUBMISSION: &str = "tls = \"starttls\"\nrequire_auth = true";

const MESSAGE: &str = "From: <a@mx.test>\r\nTo: <b@example.org>\r\nSubject: hi\r\n\r\nHello.\r\n.\r\n";

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_and_the_message_is_relayed() {
    let s = server(LOCAL).await;
    let mut c = s.connect("127.0.0.1:40000");
    assert!(c.reply().await.unwrap().starts_with("220 mx.test ESMTP"));
    let ehlo = c.say("EHLO client.test").await;
    assert!(ehlo.contains("250-PIPELINING\r\n") && ehlo.ends_with("250 HELP\r\n"), "{ehlo}");
    // RFC 2920: the whole group in one write, the replies in order.
    c.send("MAIL FROM:<a@mx.test>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n").await;
    assert_eq!(c.reply().await.unwrap(), "250 2.1.0 sender OK\r\n");
    assert_eq!(c.reply().await.unwrap(), "250 2.1.5 recipient OK\r\n");
    assert_eq!(c.reply().await.unwrap(), "250 2.1.5 recipient OK\r\n");
    assert!(c.reply().await.unwrap().starts_with("354 "));
    c.send(MESSAGE).await;
    let done = c.reply().await.unwrap();
    assert!(done.starts_with("250 2.0.0 queued upstream: saved to outbox as "), "{done}");
    assert!(c.say("QUIT").await.starts_with("221 2.0.0"));
    c.closed().await;
    let saved = s.outbox();
    assert_eq!(saved.len(), 1);
    assert!(saved[0]
        .starts_with("Return-Path: <a@mx.test>\r\nX-Original-To: b@example.org\r\nX-Original-To: c@example.org\r\n"));
    assert!(saved[0].contains("\r\nReceived: from client.test ([127.0.0.1]) by mx.test (mailferry)"), "{}", saved[0]);
    assert!(saved[0].contains("\r\nSubject: hi\r\n") && saved[0].ends_with("\r\n\r\nHello.\r\n"), "{}", saved[0]);
}

#[tokio::test]
async fn rset_ends_the_transaction_and_the_session_goes_on() {
    let s = server(LOCAL).await;
    let mut c = s.connect("127.0.0.1:40000");
    c.reply().await.unwrap();
    c.say("EHLO client.test").await;
    assert!(c.say("MAIL FROM:<a@mx.test>").await.starts_with("250"));
    assert!(c.say("MAIL FROM:<a@mx.test>").await.starts_with("503 5.5.1 sender already given"));
    assert_eq!(c.say("RSET").await, "250 2.0.0 OK\r\n");
    assert!(c.say("RCPT TO:<b@example.org>").await.starts_with("503 5.5.1 need MAIL FROM first"));
    assert!(c.say("DATA").await.starts_with("503 5.5.1 need MAIL FROM first"));
    assert!(c.say("MAIL FROM:<a@mx.test>").await.starts_with("250"));
    assert!(c.say("DATA").await.starts_with("554 5.5.1 no valid recipients"));
    c.rcpt_and_data().await;
    assert_eq!(s.outbox().len(), 1);
}

#[tokio::test]
async fn an_untrusted_client_may_not_relay_or_log_in_without_tls() {
    let s = server("tls = \"none\"\nrequire_auth = false").await;
    let mut c = s.connect("192.0.2.7:40000");
    c.reply().await.unwrap();
    let ehlo = c.say("EHLO client.test").await;
    assert!(!ehlo.contains("AUTH"), "AUTH is not offered in the clear: {ehlo}");
    let auth = c.say(&format!("AUTH PLAIN {}", plain_auth(USER, PASSWORD))).await;
    assert!(auth.starts_with("538 5.7.11 encryption required"), "{auth}");
    assert!(c.say("MAIL FROM:<a@mx.test>").await.starts_with("250"));
    let rcpt = c.say("RCPT TO:<b@example.org>").await;
    assert!(rcpt.starts_with("554 5.7.1 relay access denied"), "{rcpt}");
    assert!(c.say("DATA").await.starts_with("554 5.5.1 no valid recipients"));
    assert!(s.outbox().is_empty());
}

#[tokio::test]
async fn starttls_forgets_what_came_before_it_and_then_auth_works() {
    let s = server(SUBMISSION).await;
    let mut c = s.connect("192.0.2.7:40000");
    c.reply().await.unwrap();
    let ehlo = c.say("EHLO client.test").await;
    assert!(ehlo.contains("250-STARTTLS\r\n") && !ehlo.contains("AUTH"), "{ehlo}");
    assert!(c.say("MAIL FROM:<a@mx.test>").await.starts_with("530 5.7.0 authentication required"));
    // A command sent in the same packet as STARTTLS (the injection of
    // CVE-2011-0411) is discarded, never answered inside TLS.
    c.send("STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await.unwrap(), "220 2.0.0 ready to start TLS\r\n");
    c.start_tls().await;
    // RFC 3207 §4.2: the EHLO before TLS is forgotten.
    assert!(c.say("MAIL FROM:<a@mx.test>").await.starts_with("503 5.5.1 send EHLO or HELO first"));
    let ehlo = c.say("EHLO client.test").await;
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n") && !ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(c.say("STARTTLS").await.starts_with("503 5.5.1 TLS is already active"));
    let wrong = c.say(&format!("AUTH PLAIN {}", plain_auth(USER, "wrong"))).await;
    assert!(wrong.starts_with("535 5.7.8"), "{wrong}");
    assert!(c.say("MAIL FROM:<a@mx.test>").await.starts_with("530"));
    assert!(c.say(&format!("AUTH PLAIN {}", plain_auth(USER, PASSWORD))).await.starts_with("235 2.7.0"));
    assert!(c
        .say(&format!("AUTH PLAIN {}", plain_auth(USER, PASSWORD)))
        .await
        .starts_with("503 5.5.1 already authenticated"));
    assert!(!c.say("EHLO client.test").await.contains("AUTH"), "no AUTH offered once logged in");
    assert!(c.say("MAIL FROM:<a@mx.test>").await.starts_with("250"));
    c.rcpt_and_data().await;
    assert_eq!(s.outbox().len(), 1);
}

#[tokio::test]
async fn auth_login_takes_its_answers_after_the_challenges() {
    let s = server(SUBMISSION).await;
    let mut c = s.connect("192.0.2.7:40000");
    c.secured().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(c.say("AUTH LOGIN").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.say(&b64(USER)).await, "334 UGFzc3dvcmQ6\r\n");
    assert!(c.say(&b64(PASSWORD)).await.starts_with("235"));
    // A cancelled exchange is an error, and the session goes on.
    let mut c = s.connect("192.0.2.8:40000");
    c.secured().await;
    assert!(c.say("AUTH PLAIN").await.starts_with("334"));
    assert!(c.say("*").await.starts_with("501 5.0.0 authentication cancelled"));
    assert_eq!(c.say("NOOP").await, "250 2.0.0 OK\r\n");
}

#[tokio::test]
async fn too_long_lines_are_answered_and_too_many_errors_end_the_session() {
    let s = server(LOCAL).await;
    let mut c = s.connect("127.0.0.1:40000");
    c.reply().await.unwrap();
    let long = format!("NOOP {}", "x".repeat(600));
    assert!(c.say(&long).await.starts_with("500 5.5.2 line too long (limit 512 octets)"));
    assert_eq!(c.say("NOOP").await, "250 2.0.0 OK\r\n", "the rest of the long line was not run as a command");
    for _ in 0..6 {
        assert!(c.say("BOGUS").await.starts_with("5"));
    }
    // The eighth error (max_errors = 8) is answered, then the session closes.
    c.send("BOGUS\r\n").await;
    assert!(c.reply().await.unwrap().starts_with("5"));
    assert_eq!(c.reply().await.unwrap(), "421 4.7.0 too many errors, closing\r\n");
    c.closed().await;
}

#[tokio::test]
async fn shutdown_sends_idle_sessions_away_and_lets_a_transaction_finish() {
    let s = server(LOCAL).await;
    let mut idle = s.connect("127.0.0.1:40000");
    idle.reply().await.unwrap();
    let mut busy = s.connect("127.0.0.1:40001");
    busy.reply().await.unwrap();
    busy.say("EHLO client.test").await;
    assert!(busy.say("MAIL FROM:<a@mx.test>").await.starts_with("250"));
    s.shutdown.send(true).unwrap();
    assert_eq!(idle.reply().await.unwrap(), "421 4.3.2 server shutting down, try again later\r\n");
    idle.closed().await;
    assert!(busy.say("RCPT TO:<b@example.org>").await.starts_with("250"));
    assert!(busy.say("DATA").await.starts_with("354"));
    busy.send(MESSAGE).await;
    assert!(busy.reply().await.unwrap().starts_with("250 2.0.0 queued upstream"));
    // The transaction is over: the goodbye follows without another command.
    assert_eq!(busy.reply().await.unwrap(), "421 4.3.2 server shutting down, try again later\r\n");
    busy.closed().await;
    assert_eq!(s.outbox().len(), 1);
}
