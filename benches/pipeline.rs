//! Pipeline overhead: what the plugin machinery itself costs, apart from the
//! work plugins do.
//!
//! Compares a pipeline of four plugins that implement every hook and always
//! continue (`tests/plugins/scripted` with an empty config) with an empty
//! pipeline, in one run (so machine noise affects both alike):
//! - per connection: creating the session's pipeline and running `connect`
//!   (which instantiates all four plugins) and `disconnect`;
//! - per message: `mail`, `rcpt`, `data` and `queue` on a live session.
//!
//! Run: `cargo bench --bench pipeline` (builds the test plugins first).
//! Budget (DESIGN.md §3): ≤ 150 µs per connection, ≤ 25 µs per message.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailferry::config::Config;
use mailferry::message::Message;
use mailferry::outbound::Relays;
use mailferry::pipeline::{wit, Call, Pipeline, SessionData};

const CONNECTIONS: usize = 2000;
const MESSAGES: usize = 5000;

fn build_scripted() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/wasm");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("tests/plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo");
    assert!(status.success());
    target.join("wasm32-wasip2/release/scripted.wasm")
}

fn pipeline(plugins: usize, wasm: &Path, state: &Path) -> Arc<Pipeline> {
    let mut text = format!("[server]\nstate_dir = \"{}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n", state.display());
    for i in 0..plugins {
        text.push_str(&format!("[[plugins]]\nname = \"p{i}\"\npath = \"{}\"\n", wasm.display()));
    }
    let config = Config::parse(&text, Path::new("bench.toml"), state).expect("config");
    let relays = Arc::new(Relays::from_config(&config).unwrap());
    Arc::new(Pipeline::load(&config, relays).expect("pipeline"))
}

async fn checked(p: Arc<Pipeline>) -> Arc<Pipeline> {
    p.init_plugins().await.expect("plugins start");
    p
}

fn session_data() -> Arc<Mutex<SessionData>> {
    let data = SessionData {
        connection: Some(wit::Connection {
            id: "bench".into(),
            listener: "bench".into(),
            remote_ip: "127.0.0.1".into(),
            remote_port: 1,
            local_ip: "127.0.0.1".into(),
            local_port: 2,
            tls: true,
            helo: Some("client.example".into()),
            auth_user: Some("alice@example.com".into()),
            trusted: false,
        }),
        ..Default::default()
    };
    Arc::new(Mutex::new(data))
}

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn mean_us(&self) -> f64 {
        self.samples.iter().map(|d| d.as_secs_f64()).sum::<f64>() / self.samples.len() as f64 * 1e6
    }
    fn pct_us(&mut self, p: f64) -> f64 {
        self.samples.sort();
        self.samples[((self.samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
    }
}

async fn per_connection(p: &Arc<Pipeline>) -> Stats {
    let mut samples = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let started = Instant::now();
        let mut s = p.session(session_data());
        s.run(Call::Connect).await;
        s.run(Call::Disconnect).await;
        s.finish();
        samples.push(started.elapsed());
    }
    Stats { samples }
}

async fn per_message(p: &Arc<Pipeline>) -> Stats {
    let data = session_data();
    let mut s = p.session(data.clone());
    s.run(Call::Connect).await;
    let sender = wit::Address { address: "alice@example.com".into(), params: vec![] };
    let rcpt = wit::Address { address: "bob@example.org".into(), params: vec![] };
    let body = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: bench\r\n\r\nhello\r\n".to_vec();
    let mut samples = Vec::with_capacity(MESSAGES);
    for _ in 0..MESSAGES {
        let started = Instant::now();
        {
            let mut d = data.lock().unwrap();
            d.envelope = Some(wit::Envelope { mail_from: sender.clone(), rcpt_to: vec![] });
        }
        s.run(Call::Mail(&sender)).await;
        s.run(Call::Rcpt(&rcpt)).await;
        {
            let mut d = data.lock().unwrap();
            d.envelope.as_mut().unwrap().rcpt_to.push(rcpt.clone());
            d.message = Some(Message::parse(body.clone()));
        }
        s.run(Call::Data).await;
        s.run(Call::Queue).await;
        samples.push(started.elapsed());
    }
    Stats { samples }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let wasm = build_scripted();
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let none = pipeline(0, &wasm, state.path());
    let four = pipeline(4, &wasm, state.path());
    rt.block_on(async {
        let none = checked(none).await;
        let four = checked(four).await;
        // Warm up: compile caches, page in code, fill the instance pool.
        per_connection(&four).await;
        per_message(&four).await;
        let mut c0 = per_connection(&none).await;
        let mut c4 = per_connection(&four).await;
        let mut m0 = per_message(&none).await;
        let mut m4 = per_message(&four).await;
        println!("pipeline overhead ({CONNECTIONS} connections, {MESSAGES} messages)");
        println!("{:<34} {:>10} {:>10} {:>10}", "", "mean µs", "p50 µs", "p99 µs");
        for (name, s) in [
            ("connection, no plugins", &mut c0),
            ("connection, 4 plugins", &mut c4),
            ("message, no plugins", &mut m0),
            ("message, 4 plugins", &mut m4),
        ] {
            println!("{:<34} {:>10.1} {:>10.1} {:>10.1}", name, s.mean_us(), s.pct_us(0.5), s.pct_us(0.99));
        }
        let conn = c4.mean_us() - c0.mean_us();
        let msg = m4.mean_us() - m0.mean_us();
        println!();
        println!(
            "per connection, 4-plugin pipeline setup: {conn:.1} µs (budget 150 µs) {}",
            if conn <= 150.0 { "OK" } else { "OVER BUDGET" }
        );
        println!(
            "per message, 4 plugins × 4 hooks:       {msg:.1} µs (budget 25 µs) {}",
            if msg <= 25.0 { "OK" } else { "OVER BUDGET" }
        );
    });
}
