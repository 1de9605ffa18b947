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

/// The address connections are counted under: an IPv6 client usually has a
/// whole /64, so the limit applies to the /64, not to each address in it.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn admit(counts: &Arc<Mutex<ConnectionCounts>>, ip: IpAddr, config: &Config) -> Result<ConnectionPermit, Reply> {
    let ip = client_key(ip);
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

/// Whether any listener speaks TLS (and so needs certificates).
pub fn needs_tls(config: &Config) -> bool {
    config.listeners.iter().any(|l| l.tls != TlsMode::None)
}

/// Binds every listener first (so a port conflict fails start-up before any
/// mail is accepted), then serves until `shutdown` flips to true. `certs`
/// are required when a listener speaks TLS.
pub async fn serve(
    config: Arc<Config>,
    pipeline: Arc<Pipeline>,
    certs: Option<Arc<tls::Certificates>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let acceptor = match certs {
        Some(certs) => Some(TlsAcceptor::from(tls::server_config(certs))),
        None if needs_tls(&config) => anyhow::bail!("a listener speaks TLS but no certificate is loaded"),
        None => None,
    };
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
            refuse(stream, &listener, reply).await;
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

/// Answers a connection over the limits with `reply` and closes it. On an
/// implicit-TLS port it is just closed: a TLS handshake per refused
/// connection would let the excess cost us CPU.
async fn refuse(stream: TcpStream, listener: &Listener, reply: Reply) {
    if listener.tls == TlsMode::Implicit {
        return;
    }
    let mut t = Transport::new(Conn::Plain(stream));
    t.set_write_timeout(Duration::from_secs(5));
    t.reply(&reply);
    t.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
