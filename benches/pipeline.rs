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
//! Then DKIM signing, which is real work rather than overhead:
//! - the host's signing call alone (`mailferry::dkim::sign_now`), RSA-2048
//!   and Ed25519, on a small message and a 1 MiB one;
//! - per message through the pipeline with the built-in `dkim-sign` plugin
//!   (one RSA-2048 key, then RSA-2048 + Ed25519 dual signing), against the
//!   empty pipeline.
//!
//! Run: `cargo bench --bench pipeline` (builds the test plugins first).
//! Budget (DESIGN.md §3): ≤ 150 µs per connection, ≤ 25 µs per message.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailferry::config::Config;
use mailferry::dkim::keygen::{self, KeyKind};
use mailferry::dkim::{KeyStore, SignOptions};
use mailferry::message::Message;
use mailferry::pipeline::{wit, Call, Pipeline, Services, SessionData};

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
    let mut text = String::new();
    for i in 0..plugins {
        text.push_str(&format!("[[plugins]]\nname = \"p{i}\"\npath = \"{}\"\n", wasm.display()));
    }
    load(&text, state, None)
}

/// The built-in dkim-sign plugin alone, signing with the keys in `keys`.
fn dkim_pipeline(state: &Path, keys: &Path) -> Arc<Pipeline> {
    load("[[plugins]]\nname = \"dkim-sign\"\ngrants = [\"dkim\"]\n", state, Some(keys))
}

fn load(plugins: &str, state: &Path, keys: Option<&Path>) -> Arc<Pipeline> {
    let mut text = format!("[server]\nstate_dir = \"{}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n", state.display());
    text.push_str(plugins);
    if let Some(k) = keys {
        text.push_str(&format!("[dkim]\nkeys = \"{}\"\n", k.display()));
    }
    let config = Config::parse(&text, Path::new("bench.toml"), state).expect("config");
    let services = Arc::new(Services::from_config(&config).expect("services"));
    Arc::new(Pipeline::load(&config, services).expect("pipeline"))
}

/// Signing calls of the host alone: mean µs per signature.
fn host_signing(keys: &KeyStore, selector: &str, message: &[u8], rounds: usize) -> f64 {
    let key = keys.get("example.com", selector).expect("key");
    let opts = SignOptions::default();
    let started = Instant::now();
    for _ in 0..rounds {
        mailferry::dkim::sign_now(&key, message, &opts).expect("sign");
    }
    started.elapsed().as_secs_f64() / rounds as f64 * 1e6
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

async fn per_message(p: &Arc<Pipeline>, messages: usize) -> Stats {
    let data = session_data();
    let mut s = p.session(data.clone());
    s.run(Call::Connect).await;
    let sender = wit::Address { address: "alice@example.com".into(), params: vec![] };
    let rcpt = wit::Address { address: "bob@example.org".into(), params: vec![] };
    let body = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: bench\r\n\r\nhello\r\n".to_vec();
    let mut samples = Vec::with_capacity(messages);
    for _ in 0..messages {
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
        per_message(&four, MESSAGES).await;
        let mut c0 = per_connection(&none).await;
        let mut c4 = per_connection(&four).await;
        let mut m0 = per_message(&none, MESSAGES).await;
        let mut m4 = per_message(&four, MESSAGES).await;
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
    dkim(&rt, state.path());
}

const SIGNED_MESSAGES: usize = 500;

fn dkim(rt: &tokio::runtime::Runtime, state: &Path) {
    let keys_rsa = tempfile::tempdir().unwrap();
    let keys_both = tempfile::tempdir().unwrap();
    keygen::create(keys_rsa.path(), "example.com", "rsa", KeyKind::Rsa2048).unwrap();
    keygen::create(keys_both.path(), "example.com", "rsa", KeyKind::Rsa2048).unwrap();
    keygen::create(keys_both.path(), "example.com", "ed", KeyKind::Ed25519).unwrap();
    let store = KeyStore::load(keys_both.path()).unwrap();

    let small = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: bench\r\n\r\nhello\r\n".to_vec();
    let mut big = small.clone();
    while big.len() < 1024 * 1024 {
        big.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.  \r\n");
    }
    println!();
    println!("DKIM signing in the host, one signature");
    println!("{:<34} {:>10}", "", "mean µs");
    for (name, sel, msg, rounds) in [
        ("RSA-2048, small message", "rsa", &small, 300),
        ("Ed25519, small message", "ed", &small, 3000),
        ("RSA-2048, 1 MiB message", "rsa", &big, 30),
        ("Ed25519, 1 MiB message", "ed", &big, 30),
    ] {
        host_signing(&store, sel, msg, rounds / 10 + 1);
        println!("{:<34} {:>10.1}", name, host_signing(&store, sel, msg, rounds));
    }

    let none = pipeline_none(state);
    let rsa = dkim_pipeline(state, keys_rsa.path());
    let both = dkim_pipeline(state, keys_both.path());
    rt.block_on(async {
        let none = checked(none).await;
        let rsa = checked(rsa).await;
        let both = checked(both).await;
        per_message(&both, 50).await;
        let mut m0 = per_message(&none, SIGNED_MESSAGES).await;
        let mut m1 = per_message(&rsa, SIGNED_MESSAGES).await;
        let mut m2 = per_message(&both, SIGNED_MESSAGES).await;
        println!();
        println!("DKIM signing per message through the pipeline ({SIGNED_MESSAGES} messages, small)");
        println!("{:<34} {:>10} {:>10} {:>10}", "", "mean µs", "p50 µs", "p99 µs");
        for (name, s) in
            [("no plugins", &mut m0), ("dkim-sign, RSA-2048", &mut m1), ("dkim-sign, RSA-2048 + Ed25519", &mut m2)]
        {
            println!("{:<34} {:>10.1} {:>10.1} {:>10.1}", name, s.mean_us(), s.pct_us(0.5), s.pct_us(0.99));
        }
        println!();
        println!(
            "added by signing: RSA-2048 {:.1} µs, RSA-2048 + Ed25519 {:.1} µs per message",
            m1.mean_us() - m0.mean_us(),
            m2.mean_us() - m0.mean_us()
        );
    });
}

fn pipeline_none(state: &Path) -> Arc<Pipeline> {
    load("", state, None)
}
