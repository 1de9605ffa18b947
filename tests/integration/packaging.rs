//! The systemd unit (dist/systemd/mailferry.service) and the Dockerfile: the
//! unit passes `systemd-analyze verify`, and both agree with what
//! `mailferry init` writes and the server does (configuration and env file
//! paths, state folder, admin port, stop timeout above the shutdown grace).
//! The image itself is not built here: that compiles wasmtime in release.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use mailferry::config::defaults::SHUTDOWN_GRACE_SECS;
use mailferry::init::{ADMIN_ADDRESS, DEFAULT_STATE_DIR, SERVICE_CONFIG_DIR};

fn file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const UNIT: &str = "dist/systemd/mailferry.service";

/// Every `Key=value` of the unit, in order (a key may repeat).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not Key=value: {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn value<'a>(d: &'a [(String, String)], key: &str) -> &'a str {
    let v: Vec<_> = d.iter().filter(|(k, _)| k == key).collect();
    assert_eq!(v.len(), 1, "{key}= should appear once in {UNIT}");
    &v[0].1
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    require_program("systemd-analyze", &["--version"], "systemd-analyze is needed (apt-get install systemd)");
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's program exists: use the binary under test.
    let unit = file(UNIT).replace("/usr/local/bin/mailferry", BIN);
    let path = dir.path().join("mailferry.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // Unknown keys and bad values are only warnings, on lines naming the file.
    let about_us: Vec<&str> = stderr.lines().filter(|l| l.contains("mailferry.service")).collect();
    assert!(about_us.is_empty(), "systemd-analyze verify warns:\n{}", about_us.join("\n"));
}

#[test]
fn systemd_unit_agrees_with_init_and_the_server() {
    let d = directives(&file(UNIT));
    assert_eq!(value(&d, "User"), "mailferry");
    assert_eq!(
        value(&d, "ExecStart"),
        format!("/usr/local/bin/mailferry serve --config {SERVICE_CONFIG_DIR}/mailferry.toml")
    );
    assert_eq!(value(&d, "EnvironmentFile"), format!("-{SERVICE_CONFIG_DIR}/env"));
    // SIGHUP reloads the configuration, certificates and DKIM keys.
    assert_eq!(value(&d, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(format!("/var/lib/{}", value(&d, "StateDirectory")), DEFAULT_STATE_DIR);
    assert_eq!(value(&d, "ReadWritePaths"), DEFAULT_STATE_DIR);
    // 587 and 465 without root, and no other capability.
    assert_eq!(value(&d, "AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(value(&d, "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    for (key, want) in
        [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes")]
    {
        assert_eq!(value(&d, key), want, "{key}");
    }
    // Cranelift's code must become executable: see the comment in the unit.
    assert!(!d.iter().any(|(k, _)| k == "MemoryDenyWriteExecute"), "MemoryDenyWriteExecute breaks plugin loading");
    let stop: u64 = value(&d, "TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(
        stop > SHUTDOWN_GRACE_SECS,
        "TimeoutStopSec={stop} must exceed shutdown_grace_secs ({SHUTDOWN_GRACE_SECS})"
    );
}

#[test]
fn dockerfile_agrees_with_init_cargo_and_the_server() {
    let docker = file("Dockerfile");
    let lines: Vec<&str> = docker.lines().map(str::trim).collect();
    let has = |l: &str| lines.contains(&l);
    let rust = env!("CARGO_PKG_RUST_VERSION");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("FROM rust:{rust}-")) && l.ends_with(" AS build")),
        "the builder is not rust:{rust} (Cargo.toml's rust-version)"
    );
    assert!(has("RUN rustup target add wasm32-wasip2"));
    assert!(docker.contains("cargo build --release --locked"));
    assert!(has("USER mailferry"), "the server must not run as root");
    assert!(has("EXPOSE 587 465"));
    assert!(has(&format!("VOLUME [\"{SERVICE_CONFIG_DIR}\", \"{DEFAULT_STATE_DIR}\"]")));
    assert!(has("STOPSIGNAL SIGTERM"));
    assert!(has(&format!("CMD [\"serve\", \"--config\", \"{SERVICE_CONFIG_DIR}/mailferry.toml\"]")));
    assert!(
        docker.contains(&format!("curl -fsS http://{ADMIN_ADDRESS}/healthz")),
        "the health check asks the admin listener init configures"
    );
    let ignore = file(".dockerignore");
    for entry in ["target/", ".git/", "config/dkim/"] {
        assert!(ignore.lines().any(|l| l == entry), ".dockerignore lacks {entry}");
    }
}
