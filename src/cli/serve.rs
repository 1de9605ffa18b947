//! `mailferry serve`: wires the configuration, the relays, the plugin
//! pipeline, the queue and the listeners together, and reloads them on
//! SIGHUP.
//!
//! Its log lines keep the target `mailferry` they had before this file was split out: operators'
//! log filters may match on it.

use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::runtime;
use crate::{config, net, pipeline, sql};

pub(super) fn run(config: config::Config) -> Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(config.state_dir())
        .with_context(|| format!("cannot create the state folder {}", config.state_dir().display()))?;
    let rt = runtime()?;
    rt.block_on(async {
        // Take SIGHUP over first: its default action would end the process
        // if it came while the plugins load.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        // Before the plugins: a bad certificate path fails the start at once.
        let certs = if net::needs_tls(&config) { Some(net::tls::load(&config)?) } else { None };
        let services = Arc::new(pipeline::Services::from_config(&config)?.with_queue(&config)?);
        let pipeline = Arc::new(pipeline::Pipeline::start(config.clone(), services.clone()).await?);
        if let Some(queue) = &services.queue {
            queue.set_events(pipeline.clone());
        }
        migrate_in_background(&services.databases);
        tracing::info!(target: "mailferry", 
            plugins = ?pipeline.plugin_names(),
            relays = ?services.relays.names(),
            dkim_keys = services.dkim.current().len(),
            counters = %services.counters.describe(),
            "plugins loaded"
        );
        // Renewed keys are picked up without a restart: on SIGHUP, and by
        // a periodic look at the keys folder.
        services.dkim.watch(DKIM_RELOAD_CHECK);
        // Renewed certificates too: new handshakes get them, open sessions
        // keep theirs.
        if let Some(certs) = &certs {
            certs.watch(net::tls::RELOAD_CHECK);
        }
        // Every socket before the queue starts delivering: a port conflict
        // must stop the start before any delivery attempt is under way.
        let bound = net::bind(&config).await?;
        let admin = match config.admin.address {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("admin.address {address}: cannot listen"))?;
                if !address.ip().is_loopback() {
                    tracing::warn!(target: "mailferry", %address, "the admin listener is not on a loopback address: anyone who can reach it reads /metrics");
                }
                tracing::info!(target: "mailferry", address = %listener.local_addr()?, "admin listener: /metrics and /healthz");
                Some(listener)
            }
            None => None,
        };
        if let Some(queue) = &services.queue {
            queue.start();
            let queue = queue.clone();
            crate::metrics::watch_queue(move || {
                let s = queue.stats();
                crate::metrics::QueueFigures {
                    messages: s.messages,
                    recipients_pending: s.recipients_pending,
                    oldest_secs: s.oldest_secs,
                    bytes: s.bytes,
                    in_flight: s.in_flight,
                }
            });
        }
        let (live_tx, live) = tokio::sync::watch::channel(net::Generation { config: config.clone(), pipeline });
        let hup_certs = certs.clone();
        let hup_services = services.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = hup else { return };
            // One reload at a time, in order: a second SIGHUP waits.
            while hup.recv().await.is_some() {
                hup_services.dkim.reload_logged("SIGHUP");
                if let Some(certs) = &hup_certs {
                    certs.reload_logged("SIGHUP");
                }
                reload(&live_tx, &hup_services).await;
            }
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        if let Some(listener) = admin {
            tokio::spawn(crate::metrics::serve(listener, rx.clone()));
        }
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(target: "mailferry", "shutdown requested: no new connections");
            let _ = tx.send(true);
        });
        // On a worker, not this thread: every accepted connection and every
        // finished session passes through it, and a hop to a third thread
        // costs a wake-up each time.
        let served = tokio::spawn(net::serve(bound, live, certs, rx)).await.context("the listeners stopped");
        // Even when the listeners failed: the queue writes what it holds.
        if let Some(queue) = &services.queue {
            queue.shutdown(config.server.shutdown_grace).await;
        }
        served?
    })
}

/// Reads the configuration file again (SIGHUP). New sessions get the new
/// plugins, limits and listener policies; the queue the new relays and
/// routes; sessions already open finish with what they started with. A
/// configuration that does not load, or whose plugins do not, is refused
/// with the reason, and the running one stays in use.
async fn reload(live: &tokio::sync::watch::Sender<net::Generation>, services: &Arc<pipeline::Services>) {
    let old = live.borrow().config.clone();
    let path = old.file.clone();
    let new = match config::Config::load(&path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(target: "mailferry", file = %path.display(), error = %e, "configuration not reloaded; the running one stays in use");
            return;
        }
    };
    let restart = needs_restart(&old, &new);
    if !restart.is_empty() {
        tracing::warn!(target: "mailferry", settings = ?restart, "these changes take effect only after a restart; the rest is reloaded");
    }
    // Databases whose settings did not change keep their connections.
    let current = live.borrow().pipeline.services().clone();
    let databases = Arc::new(sql::Databases::from_config(&new, Some(&current.databases)));
    let built = async {
        let relays = Arc::new(crate::outbound::Relays::from_config(&new)?);
        // The DKIM keys and the queue stay: keys reload on their own, and
        // the spool belongs to this process.
        let services = Arc::new(pipeline::Services {
            relays: relays.clone(),
            dkim: services.dkim.clone(),
            queue: services.queue.clone(),
            routes: new.routes.clone(),
            counters: services.counters.clone(),
            databases: databases.clone(),
            passwords: services.passwords.clone(),
        });
        let pipeline = pipeline::Pipeline::start(new.clone(), services).await?;
        anyhow::Ok((relays, Arc::new(pipeline)))
    };
    let (relays, pipeline) = match built.await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(target: "mailferry", file = %path.display(), error = %format!("{e:#}"), "configuration not reloaded; the running one stays in use");
            return;
        }
    };
    if let Some(queue) = &services.queue {
        queue.reconfigure(relays.clone(), new.routes.clone());
        queue.set_events(pipeline.clone());
    }
    let plugins: Vec<String> = pipeline.plugin_names().iter().map(|p| p.to_string()).collect();
    live.send_replace(net::Generation { config: new, pipeline });
    migrate_in_background(&databases);
    tracing::info!(target: "mailferry", ?plugins, relays = ?relays.names(), "configuration reloaded; new sessions use it");
}

/// The settings a reload cannot apply, by name.
fn needs_restart(old: &config::Config, new: &config::Config) -> Vec<String> {
    let mut out = Vec::new();
    for l in &old.listeners {
        match new.listeners.iter().find(|n| n.name == l.name) {
            None => out.push(format!("listener {:?} removed", l.name)),
            Some(n) => {
                if let Some(what) = net::listener_change_needs_restart(l, n) {
                    out.push(format!("listeners.{}.{what}", l.name));
                }
            }
        }
    }
    for n in &new.listeners {
        if !old.listeners.iter().any(|l| l.name == n.name) {
            out.push(format!("listener {:?} added", n.name));
        }
    }
    let mut differs = |name: &str, same: bool| {
        if !same {
            out.push(name.to_string());
        }
    };
    differs("server.state_dir", old.server.state_dir == new.server.state_dir);
    differs("server.shutdown_grace_secs", old.server.shutdown_grace == new.server.shutdown_grace);
    differs("dkim.keys", old.dkim.keys == new.dkim.keys);
    differs("queue", format!("{:?}", old.queue) == format!("{:?}", new.queue));
    differs("admin.address", old.admin.address == new.admin.address);
    differs("tls", format!("{:?}", old.tls) == format!("{:?}", new.tls));
    differs("counters", old.counters == new.counters);
    differs("passwords", old.passwords == new.passwords);
    out
}

/// Creates or upgrades mailferry's users table in the databases that hold
/// it (`migrate = true`), without holding the start up: a database that is
/// down is logged, its logins fail with 454 until it is back, and the next
/// reload or `mailferry user` command migrates it.
fn migrate_in_background(databases: &Arc<sql::Databases>) {
    for db in databases.iter().filter(|d| d.config.migrate) {
        let db = db.clone();
        tokio::spawn(async move {
            match sql::users::migrate(&db).await {
                Ok(version) => tracing::info!(target: "mailferry", database = %db.name, version, "users table ready"),
                Err(e) => tracing::error!(target: "mailferry",
                    database = %db.name,
                    error = %e,
                    "users table not created or upgraded; it is tried again at the next reload"
                ),
            }
        });
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// How often the DKIM keys folder is checked for changes.
const DKIM_RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(5);
