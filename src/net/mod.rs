//! Listeners: accept connections, enforce connection limits, start sessions,
//! and shut down gracefully.

pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Listener, TlsMode};
use crate::pipeline::Pipeline;
use crate::smtp::reply::Reply;
use crate::smtp::session::{Session, Shared};
use crate::smtp::transport::{Conn, Transport};

/// Counts open connections, in total and per client address.
#[derive(Default)]
pub struct ConnectionCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Releases a connection's place in [`ConnectionCounts`] when dropped.
pub struct ConnectionPermit {
    counts: Arc<Mutex<ConnectionCounts>>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap();
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

fn admit(counts: &Arc<Mutex<ConnectionCounts>>, ip: IpAddr, config: &Config) -> Result<ConnectionPermit, Reply> {
    let mut c = counts.lock().unwrap();
    if c.total >= config.limits.max_connections {
        return Err(Reply::new(
            421,
            "4.7.0",
            format!("{} too many connections, try again later", config.server.hostname),
        ));
    }
    let mine = c.per_ip.get(&ip).copied().unwrap_or(0);
    if mine >= config.limits.max_connections_per_ip {
        return Err(Reply::new(
            421,
            "4.7.0",
            format!("{} too many connections from your address, try again later", config.server.hostname),
        ));
    }
    c.total += 1;
    *c.per_ip.entry(ip).or_default() += 1;
    Ok(ConnectionPermit { counts: counts.clone(), ip })
}

/// Binds every listener first (so a port conflict fails start-up before any
/// mail is accepted), then serves until `shutdown` flips to true.
pub async fn serve(config: Arc<Config>, pipeline: Arc<Pipeline>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let needs_tls = config.listeners.iter().any(|l| l.tls != TlsMode::None);
    let acceptor = if needs_tls { Some(TlsAcceptor::from(tls::server_config(&config)?)) } else { None };
    let mut bound = Vec::new();
    for l in &config.listeners {
        let listener = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("listener {}: cannot listen on {}", l.name, l.address))?;
        let local = listener.local_addr()?;
        tracing::info!(listener = %l.name, address = %local, tls = ?l.tls, require_auth = l.require_auth, "listening");
        bound.push((listener, l.clone()));
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        pipeline,
        acceptor,
        counts: Arc::new(Mutex::new(ConnectionCounts::default())),
        shutdown: shutdown.clone(),
    });
    let mut sessions = JoinSet::new();
    let mut accept_loops = JoinSet::new();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr, Arc<Listener>)>(64);
    for (listener, l) in bound {
        let tx = conn_tx.clone();
        let l = Arc::new(l);
        accept_loops.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if tx.send((stream, peer, l.clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::error!(listener = %l.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    drop(conn_tx);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some((stream, peer, listener)) = conn_rx.recv() => {
                let shared = shared.clone();
                sessions.spawn(async move { handle(shared, stream, peer, listener).await });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    accept_loops.abort_all();
    let open = sessions.len();
    if open > 0 {
        tracing::info!(open, grace = ?config.server.shutdown_grace, "shutting down: waiting for open sessions");
        let drained =
            tokio::time::timeout(config.server.shutdown_grace, async { while sessions.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            tracing::warn!(left = sessions.len(), "grace period over: closing remaining sessions");
            sessions.abort_all();
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn handle(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, listener: Arc<Listener>) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(listener.address);
    let permit = match admit(&shared.counts, peer.ip(), &shared.config) {
        Ok(p) => p,
        Err(reply) => {
            tracing::warn!(listener = %listener.name, peer = %peer, "{reply}");
            refuse(stream, &listener, &shared, reply).await;
            return;
        }
    };
    let conn = if listener.tls == TlsMode::Implicit {
        let acceptor = shared.acceptor.clone().expect("TLS configured for implicit listener");
        match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Conn::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::info!(listener = %listener.name, peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(listener = %listener.name, peer = %peer, "TLS handshake timed out");
                return;
            }
        }
    } else {
        Conn::Plain(stream)
    };
    Session::new(shared, listener, peer, local, Transport::new(conn)).run().await;
    drop(permit);
}

async fn refuse(stream: TcpStream, listener: &Listener, shared: &Shared, reply: Reply) {
    let conn = if listener.tls == TlsMode::Implicit {
        match &shared.acceptor {
            Some(a) => match tokio::time::timeout(Duration::from_secs(10), a.clone().accept(stream)).await {
                Ok(Ok(tls)) => Conn::Tls(Box::new(tls)),
                _ => return,
            },
            None => return,
        }
    } else {
        Conn::Plain(stream)
    };
    let mut t = Transport::new(conn);
    t.reply(&reply);
    t.close().await;
}
