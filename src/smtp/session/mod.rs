//! One SMTP session, top to bottom: greeting, command loop, and one handler
//! per command. Policy questions go to the plugin pipeline at each step; the
//! protocol rules (sequence, syntax, limits, TLS before AUTH, no relaying
//! without AUTH or a trusted network) are enforced here and cannot be
//! overridden by configuration mistakes.

#[doc(hidden)]
pub mod auth;
#[cfg(test)]
mod tests;
mod transaction;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use super::command::{self, Command, Param, Path};
use super::data::{check_bdat, DataReader, DataStep, Defects};
use super::transport::{Line, ReadError, Transport};
use crate::config::{Config, Listener, TlsMode};
use crate::limits::auth::{AuthGuard, BanReason};
use crate::mail::Reply;
use crate::message::{Header, Message};
use crate::pipeline::{wit, Call, Outcome, Pipeline, SessionData, SessionPipeline};

/// What all sessions share.
pub struct Shared {
    pub config: Arc<Config>,
    pub pipeline: Arc<Pipeline>,
    /// Brute-force protection for AUTH.
    pub auth: Arc<AuthGuard>,
    pub acceptor: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<bool>,
}

/// What the loop does after a command.
enum Next {
    Continue,
    Close,
}

/// The current mail transaction (after MAIL FROM).
struct Transaction {
    smtputf8: bool,
    /// BDAT chunks received so far, and whether any octets were dropped
    /// because the message grew beyond the size limit.
    bdat: Option<Vec<u8>>,
}

pub struct Session {
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    /// The client: the TCP peer, or on a `proxy_protocol` listener the
    /// address its proxy reported. Everything here (trust, logs,
    /// `Received:`, plugins) uses this one.
    peer: SocketAddr,
    /// The proxy the connection came through, for the logs.
    proxy: Option<SocketAddr>,
    id: String,
    t: Transport,
    helo: Option<String>,
    esmtp: bool,
    auth_user: Option<String>,
    trusted: bool,
    /// Failed AUTHs are neither counted, delayed nor banned (trusted or
    /// exempt networks).
    auth_exempt: bool,
    tx: Option<Transaction>,
    errors: u32,
    /// The connection notes as the connect hook left them: what plugins
    /// learned of the client's address (DNSBL, rDNS), which STARTTLS keeps.
    connect_notes: std::collections::HashMap<String, wit::NoteValue>,
    plugins: SessionPipeline,
    data: Arc<Mutex<SessionData>>,
}

fn session_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    (0..12).map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char).collect()
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        listener: Arc<Listener>,
        peer: SocketAddr,
        local: SocketAddr,
        proxy: Option<SocketAddr>,
        mut t: Transport,
    ) -> Session {
        t.set_write_timeout(shared.config.limits.command_timeout);
        let id = session_id();
        let trusted = listener.trusted_networks.iter().any(|n| n.contains(&peer.ip()));
        let auth_exempt = shared.auth.exempt(peer.ip(), &listener);
        let data = Arc::new(Mutex::new(SessionData::default()));
        data.lock().unwrap().connection = Some(wit::Connection {
            id: id.clone(),
            listener: listener.name.clone(),
            remote_ip: peer.ip().to_string(),
            remote_port: peer.port(),
            local_ip: local.ip().to_string(),
            local_port: local.port(),
            tls: t.is_tls(),
            helo: None,
            auth_user: None,
            trusted,
        });
        let plugins = shared.pipeline.session(data.clone());
        Session {
            shared,
            listener,
            peer,
            proxy,
            id,
            t,
            helo: None,
            esmtp: false,
            auth_user: None,
            trusted,
            auth_exempt,
            tx: None,
            errors: 0,
            connect_notes: Default::default(),
            plugins,
            data,
        }
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    pub async fn run(mut self) {
        let span = tracing::info_span!("session", id = %self.id, peer = %self.peer, listener = %self.listener.name);
        async move {
            let _open = crate::metrics::SessionGauge::open(&self.listener.name);
            match self.proxy {
                Some(proxy) => {
                    tracing::info!(tls = self.t.is_tls(), trusted = self.trusted, proxy = %proxy, "connected")
                }
                None => tracing::info!(tls = self.t.is_tls(), trusted = self.trusted, "connected"),
            }
            if let Next::Continue = self.greet().await {
                self.command_loop().await;
            }
            self.plugins.run(Call::Disconnect).await;
            self.plugins.finish();
            self.t.close().await;
            tracing::info!("disconnected");
        }
        .instrument(span)
        .await
    }

    async fn greet(&mut self) -> Next {
        let host = self.config().server.hostname.clone();
        let outcome = self.plugins.run(Call::Connect).await;
        self.connect_notes = self.data.lock().unwrap().connection_notes.clone();
        match outcome {
            Outcome::Deny(r) | Outcome::DenyDisconnect(r) => {
                self.t.reply(&r.unwrap_or_else(|| Reply::new(554, "5.7.1", format!("{host} no service for you"))));
                Next::Close
            }
            Outcome::DenySoft(r) => {
                self.t.reply(
                    &r.unwrap_or_else(|| Reply::new(421, "4.3.2", format!("{host} service not available, try later"))),
                );
                Next::Close
            }
            Outcome::Accept(_) | Outcome::Continue => {
                self.t.reply(&Reply::new(220, "", format!("{host} ESMTP mailferry ready")));
                Next::Continue
            }
        }
    }

    async fn command_loop(&mut self) {
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            // On shutdown an idle session is told to come back later; one in
            // the middle of a transaction may finish it (within the grace period).
            let stopping = *shutdown.borrow();
            if stopping && self.tx.is_none() && !self.t.has_buffered_input() {
                self.t.reply(&Reply::new(421, "4.3.2", "server shutting down, try again later"));
                return;
            }
            let limit = self.config().limits.command_line;
            let timeout = self.config().limits.command_timeout;
            let line = tokio::select! {
                line = self.t.read_line(limit, timeout) => line,
                _ = shutdown.changed(), if !stopping => continue,
            };
            let line = match line {
                Ok(Line::Ok(line)) => line,
                Ok(Line::TooLong) => {
                    if let Next::Close =
                        self.error(Reply::new(500, "5.5.2", format!("line too long (limit {limit} octets)")))
                    {
                        return;
                    }
                    continue;
                }
                Err(ReadError::Timeout) => {
                    tracing::info!("idle timeout");
                    self.t.reply(&Reply::new(421, "4.4.2", "timeout waiting for a command, closing"));
                    return;
                }
                Err(ReadError::Closed) => return,
                Err(ReadError::Io(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    return;
                }
            };
            let next = match command::parse(&line) {
                Ok(cmd) => self.dispatch(cmd).await,
                Err(reply) => self.error(reply),
            };
            if let Next::Close = next {
                return;
            }
        }
    }

    /// Sends an error reply and counts it; too many errors end the session.
    fn error(&mut self, reply: Reply) -> Next {
        self.t.reply(&reply);
        self.errors += 1;
        if self.errors >= self.config().limits.max_errors {
            tracing::info!(errors = self.errors, "too many errors");
            self.t.reply(&Reply::new(421, "4.7.0", "too many errors, closing"));
            return Next::Close;
        }
        Next::Continue
    }

    async fn dispatch(&mut self, cmd: Command) -> Next {
        match cmd {
            Command::Ehlo(name) => self.ehlo(name, true).await,
            Command::Helo(name) => self.ehlo(name, false).await,
            Command::StartTls => self.starttls().await,
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await,
            Command::Mail { path, params } => self.mail(path, params).await,
            Command::Rcpt { path, params } => self.rcpt(path, params).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => {
                self.reset_transaction();
                self.t.reply(&Reply::new(250, "2.0.0", "OK"));
                Next::Continue
            }
            Command::Noop => {
                self.t.reply(&Reply::new(250, "2.0.0", "OK"));
                Next::Continue
            }
            Command::Quit => {
                self.t.reply(&Reply::new(
                    221,
                    "2.0.0",
                    format!("{} closing connection", self.config().server.hostname),
                ));
                Next::Close
            }
            Command::Vrfy => {
                self.t.reply(&Reply::new(
                    252,
                    "2.5.0",
                    "cannot verify addresses; send the message and it will be tried",
                ));
                Next::Continue
            }
            Command::Expn => self.error(Reply::new(502, "5.5.1", "EXPN is not available")),
            Command::Help => {
                self.t.reply(&Reply::multi(
                    214,
                    vec![
                        "2.0.0 mailferry: a mail submission relay".into(),
                        "2.0.0 commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP".into(),
                    ],
                ));
                Next::Continue
            }
        }
    }

    fn tls_active(&self) -> bool {
        self.t.is_tls()
    }

    fn auth_offered(&self) -> bool {
        (self.tls_active() || self.listener.auth_without_tls) && self.auth_user.is_none()
    }

    /// Keeps the connection record plugins see in step with the session.
    fn sync_connection(&self) {
        let mut d = self.data.lock().unwrap();
        if let Some(c) = d.connection.as_mut() {
            c.tls = self.t.is_tls();
            c.helo = self.helo.clone();
            c.auth_user = self.auth_user.clone();
        }
    }

    fn reset_transaction(&mut self) {
        self.tx = None;
        let mut d = self.data.lock().unwrap();
        d.envelope = None;
        d.message = None;
        d.transaction_notes.clear();
    }

    /// Writes a pipeline refusal (or the default for its kind) and says
    /// whether the session must end.
    fn refuse(&mut self, outcome: Outcome, deny: Reply, soft: Reply) -> Next {
        match outcome {
            Outcome::Deny(r) => self.error(r.unwrap_or(deny)),
            Outcome::DenySoft(r) => {
                self.t.reply(&r.unwrap_or(soft));
                Next::Continue
            }
            Outcome::DenyDisconnect(r) => {
                self.t.reply(&r.unwrap_or_else(|| Reply::new(421, "4.7.0", "closing connection")));
                Next::Close
            }
            Outcome::Accept(_) | Outcome::Continue => unreachable!("refuse() is only called with a refusal"),
        }
    }

    async fn ehlo(&mut self, name: String, esmtp: bool) -> Next {
        self.reset_transaction();
        let outcome = self.plugins.run(Call::Ehlo(&name)).await;
        if matches!(outcome, Outcome::Deny(_) | Outcome::DenySoft(_) | Outcome::DenyDisconnect(_)) {
            return self.refuse(
                outcome,
                Reply::new(550, "5.7.1", "EHLO refused"),
                Reply::new(450, "4.7.1", "EHLO refused, try later"),
            );
        }
        self.helo = Some(name.clone());
        self.esmtp = esmtp;
        self.sync_connection();
        let host = &self.config().server.hostname;
        if !esmtp {
            self.t.reply(&Reply::new(250, "", format!("{host} greets {name}")));
            return Next::Continue;
        }
        let mut lines = vec![
            format!("{host} greets {name}"),
            "PIPELINING".into(),
            format!("SIZE {}", self.config().limits.message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if self.listener.tls == TlsMode::Starttls && !self.tls_active() {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("HELP".into());
        self.t.reply(&Reply::multi(250, lines));
        Next::Continue
    }

    async fn starttls(&mut self) -> Next {
        if self.listener.tls != TlsMode::Starttls {
            return self.error(Reply::new(502, "5.5.1", "STARTTLS is not offered on this port"));
        }
        if self.tls_active() {
            return self.error(Reply::new(503, "5.5.1", "TLS is already active"));
        }
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "send EHLO first"));
        }
        let acceptor = self.shared.acceptor.clone().expect("TLS configured for STARTTLS listener");
        self.t.reply(&Reply::new(220, "2.0.0", "ready to start TLS"));
        if let Err(e) = self.t.start_tls(&acceptor, Duration::from_secs(30)).await {
            tracing::info!(error = %e, "STARTTLS handshake failed");
            return Next::Close;
        }
        // RFC 3207 §4.2: forget everything learned from the client before
        // TLS, the notes plugins made of it too (a login's senders, say);
        // what the connect hook noted of its address stays.
        self.helo = None;
        self.esmtp = false;
        self.auth_user = None;
        self.data.lock().unwrap().connection_notes = self.connect_notes.clone();
        self.reset_transaction();
        self.sync_connection();
        tracing::debug!("TLS started");
        Next::Continue
    }
}
