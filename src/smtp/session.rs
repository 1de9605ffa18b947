//! One SMTP session, top to bottom: greeting, command loop, and one handler
//! per command. Policy questions go to the plugin pipeline at each step; the
//! protocol rules (sequence, syntax, limits, TLS before AUTH, no relaying
//! without AUTH or a trusted network) are enforced here and cannot be
//! overridden by configuration mistakes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use super::command::{self, Command, Param, Path};
use super::data::{check_bdat, DataReader, DataStep, Defects};
use super::reply::Reply;
use super::transport::{Line, ReadError, Transport};
use crate::config::{Config, Listener, TlsMode};
use crate::limits::auth::{AuthGuard, BanReason};
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

    async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Next {
        if self.helo.is_none() || !self.esmtp {
            return self.error(Reply::new(503, "5.5.1", "send EHLO first"));
        }
        if self.auth_user.is_some() {
            return self.error(Reply::new(503, "5.5.1", "already authenticated"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "AUTH is not allowed during a mail transaction"));
        }
        if !self.tls_active() && !self.listener.auth_without_tls {
            return self.error(Reply::new(
                538,
                "5.7.11",
                "encryption required: use STARTTLS (or port 465) before AUTH",
            ));
        }
        // A session opened before its address was banned ends here.
        if let Some(next) = self.refused_by_bans(None).await {
            return next;
        }
        let creds = match mechanism.as_str() {
            "PLAIN" => self.auth_plain(initial).await,
            "LOGIN" => self.auth_login(initial).await,
            _ => {
                return self.error(Reply::new(
                    504,
                    "5.5.4",
                    "unrecognized authentication mechanism; use PLAIN or LOGIN",
                ))
            }
        };
        let (login, password) = match creds {
            Ok(c) => c,
            Err(AuthAbort::Reply(r)) => return self.error(r),
            Err(AuthAbort::Close) => return Next::Close,
        };
        // From here until the failure is counted, the address's other
        // connections wait: each sees the bans the one before placed.
        let turn = if self.auth_exempt { None } else { Some(self.shared.auth.turn(self.peer.ip()).await) };
        // Bans placed while this one waited, and a login under attack that
        // barred this address: no plugin is asked, so no password is tried.
        if let Some(next) = self.refused_by_bans(Some(&login)).await {
            return next;
        }
        // A login that does not succeed leaves no notes behind (a plugin
        // that noted senders and then trapped, say).
        let notes_before = self.data.lock().unwrap().connection_notes.clone();
        let outcome = self.plugins.run(Call::Auth { mechanism: &mechanism, login: &login, password: &password }).await;
        drop(password);
        match outcome {
            Outcome::Accept(r) => {
                tracing::info!(login = ?login, mechanism = %mechanism, "authenticated");
                crate::metrics::get().auth(&self.listener.name, &mechanism, true);
                if !self.auth_exempt {
                    if let Err(e) = self.shared.auth.succeeded(self.peer.ip(), &login).await {
                        tracing::warn!(error = %e, "cannot remember the login's address");
                    }
                }
                drop(turn);
                self.auth_user = Some(login);
                self.sync_connection();
                self.t.reply(&r.unwrap_or_else(|| Reply::new(235, "2.7.0", "authentication successful")));
                Next::Continue
            }
            other => {
                self.data.lock().unwrap().connection_notes = notes_before;
                // One line per failure with the address, for fail2ban.
                tracing::warn!(ip = %self.peer.ip(), login = ?login, mechanism = %mechanism, "authentication failed");
                crate::metrics::get().auth(&self.listener.name, &mechanism, false);
                // Wrong credentials are counted toward a ban; a temporary
                // failure (the password backend is down) is not the client's.
                let guessed = !matches!(other, Outcome::DenySoft(_));
                let ban = if guessed && !self.auth_exempt { self.penalize(&login, turn).await } else { Ok(None) };
                let Ok(ban) = ban else {
                    // Not counted: no more guesses on this connection.
                    self.t.reply(&Reply::new(454, "4.7.0", "temporary authentication failure, try again later"));
                    return Next::Close;
                };
                if ban == Some(BanReason::Address) {
                    self.t.reply(&match &other {
                        Outcome::Deny(Some(r)) | Outcome::DenyDisconnect(Some(r)) => r.clone(),
                        _ => Reply::new(535, "5.7.8", "authentication credentials invalid"),
                    });
                    self.t.reply(&Reply::new(421, "4.7.0", "too many failed logins from your address, closing"));
                    return Next::Close;
                }
                // Every failed attempt counts toward max_errors, temporary
                // ones too, so a session cannot guess passwords forever.
                match other {
                    Outcome::Continue => self.error(Reply::new(535, "5.7.8", "authentication credentials invalid")),
                    Outcome::DenySoft(r) => {
                        self.error(r.unwrap_or_else(|| Reply::new(454, "4.7.0", "temporary authentication failure")))
                    }
                    o => self.refuse(
                        o,
                        Reply::new(535, "5.7.8", "authentication credentials invalid"),
                        Reply::new(454, "4.7.0", "temporary authentication failure"),
                    ),
                }
            }
        }
    }

    /// The answer to an AUTH its address may not make now: the address is
    /// banned (`421`, closing), or barred from `login` (`454`); `None` to go
    /// on. Exempt clients are never refused.
    async fn refused_by_bans(&mut self, login: Option<&str>) -> Option<Next> {
        if self.auth_exempt {
            return None;
        }
        let ip = self.peer.ip();
        let checked = match self.shared.auth.banned(ip).await {
            Ok(None) => match login {
                Some(login) => self.shared.auth.login_banned(ip, login).await.map(|left| left.map(|l| (l, login))),
                None => Ok(None),
            },
            Ok(Some(_)) => {
                tracing::info!(ip = %ip, "AUTH refused: address banned after failed logins");
                self.t.reply(&Reply::new(421, "4.7.0", "too many failed logins from your address, closing"));
                return Some(Next::Close);
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(None) => None,
            Ok(Some((left, login))) => {
                tracing::info!(ip = %ip, login = ?login, "AUTH refused: login barred for this address after failed logins");
                let wait = crate::limits::auth::minutes(left);
                Some(self.error(Reply::new(
                    454,
                    "4.7.0",
                    format!("too many failed logins for this login from your address, try again in {wait}"),
                )))
            }
            Err(e) => {
                tracing::warn!(error = %e, "AUTH refused: cannot check for bans");
                Some(self.error(Reply::new(454, "4.7.0", "temporary authentication failure, try again later")))
            }
        }
    }

    /// Counts a failed AUTH against the address and the login, waits the
    /// growing delay, and says what this failure banned, if anything;
    /// `Err` when it could not be counted.
    async fn penalize(
        &mut self,
        login: &str,
        turn: Option<crate::limits::auth::Turn>,
    ) -> Result<Option<BanReason>, ()> {
        let ip = self.peer.ip();
        let counted = self.shared.auth.failed(ip, login).await;
        // Counted (and banned if need be): the next connection may try; the
        // delay below is this client's alone.
        drop(turn);
        let penalty = match counted {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "failed AUTH not counted: closing the session");
                return Err(());
            }
        };
        tracing::debug!(
            ip_failures = penalty.ip_failures,
            login_failures = penalty.login_failures,
            delay_ms = penalty.delay.as_millis() as u64,
            "failed AUTH answered after a delay"
        );
        tokio::time::sleep(penalty.delay).await;
        let Some(reason) = penalty.ban else { return Ok(None) };
        let ban = self.shared.auth.limits().ban;
        let until = chrono::Utc::now() + ban;
        tracing::warn!(
            ip = %ip,
            login = ?login,
            reason = reason.as_str(),
            ip_failures = penalty.ip_failures,
            login_failures = penalty.login_failures,
            ban_secs = ban.as_secs(),
            until = %until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "{}",
            match reason {
                BanReason::Address => "address banned after failed logins",
                BanReason::Login => "login barred for this address after failed logins",
            }
        );
        crate::metrics::get().auth_bans.inc();
        Ok(Some(reason))
    }

    /// Reads one AUTH continuation line; `*` cancels.
    async fn auth_continue(&mut self, challenge: &str) -> Result<Vec<u8>, AuthAbort> {
        self.t.reply(&Reply::new(334, "", challenge));
        let limit = self.config().limits.auth_line;
        let timeout = self.config().limits.command_timeout;
        match self.t.read_line(limit, timeout).await {
            Ok(Line::Ok(l)) if l == b"*" => Err(AuthAbort::Reply(Reply::new(501, "5.0.0", "authentication cancelled"))),
            Ok(Line::Ok(l)) => decode_b64(&l),
            Ok(Line::TooLong) => {
                Err(AuthAbort::Reply(Reply::new(500, "5.5.6", "authentication exchange line too long")))
            }
            Err(_) => Err(AuthAbort::Close),
        }
    }

    async fn auth_plain(&mut self, initial: Option<String>) -> Result<(String, String), AuthAbort> {
        let raw = match initial {
            Some(s) if s == "=" => Vec::new(),
            Some(s) => decode_b64(s.as_bytes())?,
            None => self.auth_continue("").await?,
        };
        let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
        let [authzid, authcid, password] = parts.as_slice() else {
            return Err(AuthAbort::Reply(Reply::new(
                501,
                "5.5.2",
                "malformed PLAIN response: expected authzid NUL login NUL password",
            )));
        };
        let login = check_login(utf8(authcid)?)?;
        let password = check_password(utf8(password)?)?;
        let authzid = utf8(authzid)?;
        if !authzid.is_empty() && authzid != login {
            return Err(AuthAbort::Reply(Reply::new(
                535,
                "5.7.8",
                "authorization identity must be empty or equal the login",
            )));
        }
        Ok((login, password))
    }

    async fn auth_login(&mut self, initial: Option<String>) -> Result<(String, String), AuthAbort> {
        let login = match initial {
            Some(s) => decode_b64(s.as_bytes())?,
            None => self.auth_continue("VXNlcm5hbWU6").await?,
        };
        let password = self.auth_continue("UGFzc3dvcmQ6").await?;
        Ok((check_login(utf8(&login)?)?, check_password(utf8(&password)?)?))
    }

    fn may_relay(&self) -> bool {
        self.auth_user.is_some() || self.trusted
    }

    async fn mail(&mut self, path: Path, params: Vec<Param>) -> Next {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "send EHLO or HELO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "sender already given; use RSET to start over"));
        }
        if self.listener.require_auth && !self.may_relay() {
            return self.error(Reply::new(530, "5.7.0", "authentication required"));
        }
        let mut smtputf8 = false;
        for p in &params {
            if !self.esmtp {
                return self.error(Reply::new(555, "5.5.4", "parameters need EHLO, not HELO"));
            }
            match (p.key.as_str(), p.value.as_deref()) {
                ("SIZE", Some(v)) => {
                    let Ok(size) = v.parse::<u64>() else {
                        return self.error(Reply::new(501, "5.5.4", "SIZE must be a number"));
                    };
                    let max = self.config().limits.message_size as u64;
                    if size > max {
                        return self.error(Reply::new(
                            552,
                            "5.3.4",
                            format!("message size {size} exceeds the limit of {max} octets"),
                        ));
                    }
                }
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                ("BODY", _) => return self.error(Reply::new(555, "5.5.4", "BODY must be 7BIT or 8BITMIME")),
                ("SMTPUTF8", None) => smtputf8 = true,
                // RFC 4954 §5: accepted, and ignored unless we trust the client.
                ("AUTH", Some(_)) => {}
                (key, _) => return self.error(Reply::new(555, "5.5.4", format!("unsupported MAIL parameter {key}"))),
            }
        }
        if !smtputf8 && !path.address.is_ascii() {
            return self.error(Reply::new(553, "5.6.7", "non-ASCII address requires the SMTPUTF8 parameter"));
        }
        let sender = wit::Address {
            address: path.address.clone(),
            params: params.iter().map(|p| wit::Param { key: p.key.clone(), value: p.value.clone() }).collect(),
        };
        {
            let mut d = self.data.lock().unwrap();
            d.transaction_notes.clear();
            d.envelope = Some(wit::Envelope { mail_from: sender.clone(), rcpt_to: Vec::new() });
        }
        let outcome = self.plugins.run(Call::Mail(&sender)).await;
        let accepted = match outcome {
            Outcome::Accept(r) => Ok(r),
            Outcome::Continue => Ok(None),
            refusal => Err(refusal),
        };
        match accepted {
            Ok(r) => {
                self.tx = Some(Transaction { smtputf8, bdat: None });
                self.t.reply(&r.unwrap_or_else(|| Reply::new(250, "2.1.0", "sender OK")));
                Next::Continue
            }
            Err(outcome) => {
                self.reset_transaction();
                self.refuse(
                    outcome,
                    Reply::new(550, "5.7.1", "sender refused"),
                    Reply::new(451, "4.7.1", "sender temporarily refused"),
                )
            }
        }
    }

    async fn rcpt(&mut self, path: Path, params: Vec<Param>) -> Next {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, "5.5.1", "need MAIL FROM first"));
        };
        if tx.bdat.is_some() {
            return self.error(Reply::new(503, "5.5.1", "RCPT is not allowed during BDAT"));
        }
        let smtputf8 = tx.smtputf8;
        if let Some(p) = params.first() {
            return self.error(Reply::new(555, "5.5.4", format!("unsupported RCPT parameter {}", p.key)));
        }
        if !smtputf8 && !path.address.is_ascii() {
            return self.error(Reply::new(553, "5.6.7", "non-ASCII address requires the SMTPUTF8 parameter"));
        }
        if self.rcpt_count() >= self.config().limits.recipients {
            self.t.reply(&Reply::new(
                452,
                "4.5.3",
                format!("too many recipients (limit {})", self.config().limits.recipients),
            ));
            return Next::Continue;
        }
        let rcpt = wit::Address { address: path.address.clone(), params: Vec::new() };
        let outcome = self.plugins.run(Call::Rcpt(&rcpt)).await;
        let accepted = match outcome {
            Outcome::Accept(r) => Some(r),
            // The relay rule: nothing is accepted from an unauthenticated,
            // untrusted client unless a plugin explicitly accepts it.
            Outcome::Continue if self.may_relay() => Some(None),
            Outcome::Continue => {
                tracing::info!(rcpt = %path.address, "relay denied: not authenticated and not in trusted networks");
                return self.error(Reply::new(554, "5.7.1", "relay access denied: authenticate first"));
            }
            outcome => {
                return self.refuse(
                    outcome,
                    Reply::new(550, "5.7.1", "recipient refused"),
                    Reply::new(450, "4.7.1", "recipient temporarily refused"),
                )
            }
        };
        if let Some(env) = self.data.lock().unwrap().envelope.as_mut() {
            env.rcpt_to.push(rcpt);
        }
        self.t.reply(&accepted.flatten().unwrap_or_else(|| Reply::new(250, "2.1.5", "recipient OK")));
        Next::Continue
    }

    fn rcpt_count(&self) -> usize {
        self.data.lock().unwrap().envelope.as_ref().map(|e| e.rcpt_to.len()).unwrap_or(0)
    }

    async fn data(&mut self) -> Next {
        match &self.tx {
            None => return self.error(Reply::new(503, "5.5.1", "need MAIL FROM first")),
            Some(tx) if tx.bdat.is_some() => {
                return self.error(Reply::new(503, "5.5.1", "DATA is not allowed after BDAT"))
            }
            _ => {}
        }
        if self.rcpt_count() == 0 {
            return self.error(Reply::new(554, "5.5.1", "no valid recipients"));
        }
        let limits = self.config().limits.clone();
        self.t.reply(&Reply::new(354, "", "end data with <CR><LF>.<CR><LF>"));
        let mut reader = DataReader::new(limits.bare_line_endings, limits.message_size, limits.text_line);
        match self.t.read_data(&mut reader, limits.data_timeout).await {
            Ok(DataStep::End) => {}
            Ok(DataStep::BareLineEnding) => {
                // We and the client may disagree on where the message ends
                // (SMTP smuggling): refuse it and read nothing more.
                tracing::warn!("bare CR or LF in message: refused and closing");
                crate::metrics::get().message(&self.listener.name, 550, 0);
                self.t.reply(&Reply::new(
                    550,
                    "5.6.0",
                    "message refused: bare CR or LF found; lines must end with CRLF. Nothing was accepted",
                ));
                return Next::Close;
            }
            Ok(DataStep::More) => unreachable!(),
            Err(ReadError::Timeout) => {
                self.t.reply(&Reply::new(421, "4.4.2", "timeout reading message data, closing"));
                return Next::Close;
            }
            Err(_) => return Next::Close,
        }
        let defects = reader.defects;
        self.finish_message(reader.message, defects).await
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Next {
        let limits = self.config().limits.clone();
        // The chunk is always read, even when refused, to stay in step.
        let mut buf = match self.tx.as_mut() {
            Some(tx) => tx.bdat.take().unwrap_or_default(),
            None => Vec::new(),
        };
        let ok_state = self.tx.is_some() && self.rcpt_count() > 0;
        let limit = if ok_state { limits.message_size } else { 0 };
        match self.t.read_chunk(size, &mut buf, limit, limits.data_timeout).await {
            Ok(kept_all) => {
                if !ok_state {
                    let reply = if self.tx.is_none() {
                        Reply::new(503, "5.5.1", "need MAIL FROM first")
                    } else {
                        Reply::new(554, "5.5.1", "no valid recipients")
                    };
                    return self.error(reply);
                }
                if !kept_all {
                    self.reset_transaction();
                    crate::metrics::get().message(&self.listener.name, 552, 0);
                    return self.error(Reply::new(
                        552,
                        "5.3.4",
                        format!("message exceeds the limit of {} octets", limits.message_size),
                    ));
                }
            }
            Err(ReadError::Timeout) => {
                self.t.reply(&Reply::new(421, "4.4.2", "timeout reading BDAT chunk, closing"));
                return Next::Close;
            }
            Err(_) => return Next::Close,
        }
        if !last {
            self.t.reply(&Reply::new(250, "2.0.0", format!("{size} octets received")));
            if let Some(tx) = self.tx.as_mut() {
                tx.bdat = Some(buf);
            }
            return Next::Continue;
        }
        let mut defects = Defects::default();
        if check_bdat(&mut buf, limits.bare_line_endings, limits.text_line, &mut defects).is_err() {
            self.reset_transaction();
            crate::metrics::get().message(&self.listener.name, 550, 0);
            return self.error(Reply::new(
                550,
                "5.6.0",
                "message refused: bare CR or LF found; lines must end with CRLF",
            ));
        }
        self.finish_message(buf, defects).await
    }

    /// Checks a complete message, adds our header fields, and runs the data
    /// and queue hooks. The transaction ends here whatever happens.
    async fn finish_message(&mut self, raw: Vec<u8>, defects: Defects) -> Next {
        let limits = self.config().limits.clone();
        let refusal = if defects.too_big {
            Some(Reply::new(552, "5.3.4", format!("message exceeds the limit of {} octets", limits.message_size)))
        } else if defects.nul {
            Some(Reply::new(550, "5.6.0", "message refused: it contains NUL characters"))
        } else if defects.long_line {
            Some(Reply::new(
                550,
                "5.6.0",
                format!(
                    "message refused: a line is longer than {} octets (RFC 5322 section 2.1.1)",
                    limits.text_line - 2
                ),
            ))
        } else {
            None
        };
        if let Some(r) = refusal {
            tracing::info!(reply = %r, "message refused");
            crate::metrics::get().message(&self.listener.name, r.code, 0);
            self.reset_transaction();
            return self.error(r);
        }
        let mut message = Message::parse(raw);
        self.add_trace_headers(&mut message);
        let size = message.size();
        self.data.lock().unwrap().message = Some(message);

        let outcome = match self.plugins.run(Call::Data).await {
            Outcome::Accept(_) | Outcome::Continue => self.plugins.run(Call::Queue).await,
            refusal => refusal,
        };
        let (from, rcpts) = {
            let d = self.data.lock().unwrap();
            let e = d.envelope.as_ref();
            (e.map(|e| e.mail_from.address.clone()).unwrap_or_default(), e.map(|e| e.rcpt_to.len()).unwrap_or(0))
        };
        let next = match outcome {
            Outcome::Accept(r) => {
                let reply = r.unwrap_or_else(|| Reply::new(250, "2.0.0", "message accepted"));
                tracing::info!(from = %from, rcpts, size, reply = %reply, "message accepted");
                crate::metrics::get().message(&self.listener.name, reply.code, size);
                self.t.reply(&reply);
                Next::Continue
            }
            Outcome::Continue => {
                tracing::error!(from = %from, "no plugin took the message in the queue hook (add smtp-forward to [[plugins]])");
                self.t.reply(&Reply::new(451, "4.3.0", "message not queued: no delivery is configured"));
                crate::metrics::get().message(&self.listener.name, 451, size);
                Next::Continue
            }
            outcome => {
                tracing::info!(from = %from, rcpts, size, outcome = ?outcome, "message refused");
                let code = match &outcome {
                    Outcome::Deny(r) => r.as_ref().map_or(550, |r| r.code),
                    Outcome::DenySoft(r) => r.as_ref().map_or(451, |r| r.code),
                    Outcome::DenyDisconnect(r) => r.as_ref().map_or(421, |r| r.code),
                    Outcome::Accept(_) | Outcome::Continue => 250,
                };
                crate::metrics::get().message(&self.listener.name, code, size);
                self.refuse(
                    outcome,
                    Reply::new(550, "5.7.1", "message refused"),
                    Reply::new(451, "4.3.0", "message temporarily refused"),
                )
            }
        };
        self.reset_transaction();
        next
    }

    /// `Received:` always; `Message-ID:` and `Date:` when missing (RFC 6409 §8).
    fn add_trace_headers(&self, message: &mut Message) {
        let host = &self.config().server.hostname;
        let now = chrono::Utc::now();
        // RFC 3848 and RFC 6531 section 3.7.3 protocol names.
        let utf8 = if self.tx.as_ref().is_some_and(|t| t.smtputf8) { "UTF8" } else { "E" };
        let proto = match (self.esmtp, self.tls_active(), self.auth_user.is_some()) {
            (false, _, _) => "SMTP".to_string(),
            (true, tls, auth) => format!("{utf8}SMTP{}{}", if tls { "S" } else { "" }, if auth { "A" } else { "" }),
        };
        let ip = match self.peer.ip() {
            std::net::IpAddr::V4(v4) => format!("[{v4}]"),
            std::net::IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        };
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let received =
            format!("from {helo} ({ip}) by {host} (mailferry) with {proto} id {}; {}", self.id, now.to_rfc2822());
        message.prepend(Header::new("Received", &received));
        if !message.has_header("Message-ID") {
            let id = format!("<{}.{}@{}>", now.format("%Y%m%d%H%M%S"), session_id(), host);
            message.append(Header::new("Message-ID", &id));
        }
        if !message.has_header("Date") {
            message.append(Header::new("Date", &now.to_rfc2822()));
        }
    }
}

enum AuthAbort {
    Reply(Reply),
    Close,
}

fn decode_b64(s: &[u8]) -> Result<Vec<u8>, AuthAbort> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| AuthAbort::Reply(Reply::new(501, "5.5.2", "cannot decode base64 response")))
}

/// A login is one printable token: it becomes the session's identity and
/// goes into logs (a newline in it could forge a fail2ban line).
fn check_login(login: String) -> Result<String, AuthAbort> {
    if login.is_empty() || login.len() > 256 || login.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AuthAbort::Reply(Reply::new(
            501,
            "5.5.2",
            "the login must be 1 to 256 printable characters without spaces",
        )));
    }
    Ok(login)
}

/// Longer passwords are refused before any hashing: some schemes
/// (SHA-crypt) cost time in proportion to the password's length.
fn check_password(password: String) -> Result<String, AuthAbort> {
    if password.len() > MAX_PASSWORD {
        return Err(AuthAbort::Reply(Reply::new(535, "5.7.8", "authentication credentials invalid")));
    }
    Ok(password)
}

const MAX_PASSWORD: usize = 1024;

fn utf8(b: &[u8]) -> Result<String, AuthAbort> {
    String::from_utf8(b.to_vec()).map_err(|_| AuthAbort::Reply(Reply::new(501, "5.5.2", "credentials must be UTF-8")))
}
