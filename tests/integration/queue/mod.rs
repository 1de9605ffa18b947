//! The durable delivery queue end to end: smtp-forward in queue mode (the
//! default) against the stand-in upstream (tests/support/upstream.py). A
//! `250` means "on stable storage"; from there the queue delivers, retries,
//! bounces with a DSN, and survives `kill -9` without losing what it
//! acknowledged. Each test starts its own upstream and its own mailferry.

mod bounce;
mod commands;
mod connections;
mod delivery;
mod durability;
mod relays;

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
