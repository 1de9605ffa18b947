//! Listeners: accept connections, read PROXY headers where configured,
//! enforce connection limits, start sessions, and shut down gracefully.

pub mod proxy;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Listener, TlsMode};
use crate::limits::auth::AuthGuard;
use crate::limits::connections::{Connections, OverLimit, Permit};
use crate::mail::Reply;
use crate::pipeline::Pipeline;
use crate::smtp::session::{Session, Shared};
use crate::smtp::transport::{Conn, Stream, Transport};

/// The reply to a connection over a limit.
fn over_limit(limit: OverLimit, config: &Config) -> Reply {
    let what = match limit {
        OverLimit::Total => "too many connections",
        OverLimit::PerClient => "too many connections from your address",
    };
    Reply::new(421, "4.7.0", format!("{} {what}, try again later", config.server.hostname))
}

/// Whether any listener speaks TLS (and so needs certificates).
pub fn needs_tls(config: &Config) -> bool {
    config.listeners.iter().any(|l| l.tls != TlsMode::None)
}

/// What new sessions run with: the configuration and the plugin pipeline
/// built from it. A reload sends a new one; sessions already open keep
/// theirs to the end.
#[derive(Clone)]
pub struct Generation {
    pub config: Arc<Config>,
    pub pipeline: Arc<Pipeline>,
}

/// The settings of a listener that only a restart can change (the socket
/// is bound once); `None` when `new` may replace `old` for new sessions.
pub fn listener_change_needs_restart(old: &Listener, new: &Listener) -> Option<&'static str> {
    if old.address != new.address {
        Some("address")
    } else if old.tls != new.tls {
        Some("tls")
    } else {
        None
    }
}

/// The session-wide state for one generation, and its listeners' settings
/// by name (a reload may change `require_auth`, trusted networks, PROXY
/// settings, but not what the socket is).
struct Current {
    shared: Arc<Shared>,
    listeners: std::collections::HashMap<String, Arc<Listener>>,
}

impl Current {
    fn new(generation: &Generation, template: &Shared, bound: &[Arc<Listener>]) -> Current {
        let shared = Arc::new(Shared {
            config: generation.config.clone(),
            pipeline: generation.pipeline.clone(),
            auth: Arc::new(AuthGuard::new(
                generation.config.auth_limits.clone(),
                generation.pipeline.counters().clone(),
            )),
            acceptor: template.acceptor.clone(),
            shutdown: template.shutdown.clone(),
        });
        let listeners = bound
            .iter()
            .map(|old| {
                let new = generation.config.listeners.iter().find(|l| l.name == old.name);
                let chosen = match new {
                    Some(new) if listener_change_needs_restart(old, new).is_none() => Arc::new(new.clone()),
                    _ => old.clone(),
                };
                (old.name.clone(), chosen)
            })
            .collect();
        Current { shared, listeners }
    }
}

/// The listeners' sockets, bound.
pub struct Bound(Vec<(TcpListener, Listener)>);

/// Binds every listener, so a port conflict fails the start before any mail
/// is accepted or delivered.
pub async fn bind(config: &Config) -> Result<Bound> {
    let mut bound = Vec::new();
    for l in &config.listeners {
        let listener = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("listener {}: cannot listen on {}", l.name, l.address))?;
        let local = listener.local_addr()?;
        tracing::info!(
            listener = %l.name,
            address = %local,
            tls = ?l.tls,
            require_auth = l.require_auth,
            proxy_protocol = l.proxy_protocol,
            "listening"
        );
        bound.push((listener, l.clone()));
    }
    Ok(Bound(bound))
}

/// Serves the [`bind`]-bound listeners until `shutdown` flips to true.
/// `certs` are required when a listener speaks TLS. New sessions take the
/// latest [`Generation`] from `live`.
pub async fn serve(
    Bound(bound): Bound,
    mut live: watch::Receiver<Generation>,
    certs: Option<Arc<tls::Certificates>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let Generation { config, pipeline } = live.borrow_and_update().clone();
    let acceptor = match certs {
        Some(certs) => Some(TlsAcceptor::from(tls::server_config(certs))),
        None if needs_tls(&config) => anyhow::bail!("a listener speaks TLS but no certificate is loaded"),
        None => None,
    };
    let shared = Shared {
        config: config.clone(),
        pipeline: pipeline.clone(),
        auth: Arc::new(AuthGuard::new(config.auth_limits.clone(), pipeline.counters().clone())),
        acceptor,
        shutdown: shutdown.clone(),
    };
    let bound_listeners: Vec<Arc<Listener>> = bound.iter().map(|(_, l)| Arc::new(l.clone())).collect();
    let mut current = Current::new(&Generation { config: config.clone(), pipeline }, &shared, &bound_listeners);
    let connections = Connections::default();
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
                if live.has_changed().unwrap_or(false) {
                    let generation = live.borrow_and_update().clone();
                    current = Current::new(&generation, &shared, &bound_listeners);
                }
                let shared = current.shared.clone();
                let listener = current.listeners.get(&listener.name).cloned().unwrap_or(listener);
                let connections = connections.clone();
                sessions.spawn(async move { handle(shared, &connections, stream, peer, listener).await });
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

async fn handle(
    shared: Arc<Shared>,
    connections: &Connections,
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
) {
    let _ = stream.set_nodelay(true);
    // From here on (trust, limits, bans, logs, plugins) an IPv4 client of a
    // `[::]` listener is the IPv4 address it is.
    let peer = proxy::canonical(peer);
    let local = proxy::canonical(stream.local_addr().unwrap_or(listener.address));
    let metrics = crate::metrics::get();
    metrics.connections.get_or_create(&crate::metrics::ListenerLabel { listener: listener.name.clone() }).inc();
    let (permit, client, local, proxy) = if listener.proxy_protocol {
        match accept_proxied(&shared, connections, &mut stream, peer, local, &listener).await {
            Ok((permit, client, local)) => (permit, client, local, Some(peer)),
            Err(Refused::OverLimit(client, reply)) => {
                tracing::warn!(listener = %listener.name, peer = %client, proxy = %peer, "{reply}");
                metrics.refused(&listener.name, "limit");
                refuse(stream, &listener, reply).await;
                return;
            }
            Err(Refused::Closed(reason)) => {
                metrics.refused(&listener.name, reason);
                return;
            }
        }
    } else {
        let limits = &shared.config.limits;
        match connections.admit(peer.ip(), limits.max_connections, limits.max_connections_per_ip) {
            Ok(p) => (p, peer, local, None),
            Err(limit) => {
                let reply = over_limit(limit, &shared.config);
                tracing::warn!(listener = %listener.name, peer = %peer, "{reply}");
                metrics.refused(&listener.name, "limit");
                refuse(stream, &listener, reply).await;
                return;
            }
        }
    };
    if let Some(reply) = ban_reply(&shared, client.ip(), &listener).await {
        tracing::info!(listener = %listener.name, peer = %client, "connection refused: address banned after failed logins");
        metrics.refused(&listener.name, "banned");
        refuse(stream, &listener, reply).await;
        return;
    }
    let conn = if listener.tls == TlsMode::Implicit {
        let acceptor = shared.acceptor.clone().expect("TLS configured for implicit listener");
        match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(Box::new(stream) as Box<dyn Stream>)).await
        {
            Ok(Ok(tls)) => Conn::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::info!(listener = %listener.name, peer = %client, error = %e, "TLS handshake failed");
                metrics.refused(&listener.name, "tls");
                return;
            }
            Err(_) => {
                tracing::info!(listener = %listener.name, peer = %client, "TLS handshake timed out");
                metrics.refused(&listener.name, "tls");
                return;
            }
        }
    } else {
        Conn::plain(stream)
    };
    Session::new(shared, listener, client, local, proxy, Transport::new(conn)).run().await;
    drop(permit);
}

/// The reply for a client whose address is banned after failed logins;
/// `None` to let it in.
async fn ban_reply(shared: &Shared, ip: IpAddr, listener: &Listener) -> Option<Reply> {
    if shared.auth.exempt(ip, listener) {
        return None;
    }
    // Counters unavailable (on_redis_error = "refuse"): let it in; its AUTH
    // is refused until they are back.
    let left = shared.auth.banned(ip).await.ok().flatten()?;
    Some(Reply::new(
        421,
        "4.7.0",
        format!(
            "{} too many failed logins from your address, try again in {}",
            shared.config.server.hostname,
            crate::limits::auth::minutes(left)
        ),
    ))
}

/// Why [`accept_proxied`] turned a connection away.
enum Refused {
    /// Close it without a word (already logged); the metrics reason.
    Closed(&'static str),
    /// The client the header named is over its limit: tell it so.
    OverLimit(SocketAddr, Reply),
}

/// On a `proxy_protocol` listener: lets only trusted proxies in, reads the
/// header, and counts the connection under the client it names. Returns the
/// client's address and the one it connected to.
async fn accept_proxied(
    shared: &Shared,
    connections: &Connections,
    stream: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    listener: &Listener,
) -> Result<(Permit, SocketAddr, SocketAddr), Refused> {
    let name = &listener.name;
    // Before reading anything: a header decides who the client is, so only
    // the operator's proxies may send one.
    if !listener.proxy_trusted.iter().any(|n| n.contains(&peer.ip())) {
        tracing::warn!(listener = %name, peer = %peer, "connection refused: the peer is not in proxy_trusted");
        return Err(Refused::Closed("proxy"));
    }
    // Until its header names the client, the connection counts toward the
    // total only: a peer that never sends one still holds a bounded place.
    let mut permit = match connections.admit_total(shared.config.limits.max_connections) {
        Ok(p) => p,
        Err(limit) => {
            let reply = over_limit(limit, &shared.config);
            // Closed without a reply: the unread header would turn our
            // close into a reset that may drop any reply anyway.
            tracing::warn!(listener = %name, proxy = %peer, "{reply}");
            return Err(Refused::Closed("limit"));
        }
    };
    let timeout = shared.config.limits.command_timeout.min(proxy::HEADER_TIMEOUT);
    let (client, local) = match proxy::read_header(stream, timeout).await {
        Ok(proxy::Header::Proxied { client, server }) => (client, server),
        Ok(proxy::Header::Local) => (peer, local),
        Err(e @ proxy::Error::Empty) => {
            tracing::debug!(listener = %name, peer = %peer, "PROXY header: {e}");
            return Err(Refused::Closed("proxy"));
        }
        Err(e) => {
            tracing::warn!(listener = %name, peer = %peer, error = %e, "PROXY header refused: connection closed");
            return Err(Refused::Closed("proxy"));
        }
    };
    match permit.assign(client.ip(), shared.config.limits.max_connections_per_ip) {
        Ok(()) => Ok((permit, client, local)),
        Err(limit) => Err(Refused::OverLimit(client, over_limit(limit, &shared.config))),
    }
}

/// Answers a connection over the limits with `reply` and closes it. On an
/// implicit-TLS port it is just closed: a TLS handshake per refused
/// connection would let the excess cost us CPU.
async fn refuse(stream: TcpStream, listener: &Listener, reply: Reply) {
    if listener.tls == TlsMode::Implicit {
        return;
    }
    let mut t = Transport::new(Conn::plain(stream));
    t.set_write_timeout(Duration::from_secs(5));
    t.reply(&reply);
    t.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_over_a_limit_hears_which() {
        let text = "[server]\nhostname = \"mx.example\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\n";
        let config = Config::parse(text, std::path::Path::new("t.toml"), std::path::Path::new("/")).unwrap();
        let reply = over_limit(OverLimit::PerClient, &config);
        assert_eq!(reply.code, 421);
        assert_eq!(reply.to_string(), "421 4.7.0 mx.example too many connections from your address, try again later");
    }
}
