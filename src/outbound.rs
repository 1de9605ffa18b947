//! Relays: where the `outbound` capability hands messages.
//!
//! `smtp` relays deliver to an upstream server (SES, SendGrid, any
//! smarthost) with mail-send; `outbox` relays write each message to a file in
//! a folder, fsynced, so a fresh install shows the whole path working with
//! nothing else installed. Secrets (upstream passwords) stay here in the host.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use mail_send::smtp::message::{Address, Message as SmtpMessage, Parameter, Parameters};
use mail_send::SmtpClientBuilder;
use tokio_rustls::TlsConnector;

use crate::config::{Config, Relay, SmtpRelay, TlsMode};
use crate::mail::reply::sanitize_text;
use crate::mail::{self, Reply};

mod pool;

/// Why a relay did not take a message.
#[derive(Debug, Clone)]
pub struct SendFailure {
    pub temporary: bool,
    pub reply: Reply,
}

fn failure(temporary: bool, code: u16, enhanced: &str, text: String) -> SendFailure {
    SendFailure { temporary, reply: Reply::new(code, enhanced, sanitize_text(&text)) }
}

enum RelayImpl {
    Smtp { cfg: Box<SmtpRelay>, tls: TlsConnector },
    Outbox { dir: PathBuf },
}

pub struct Relays {
    relays: HashMap<String, RelayImpl>,
    hostname: String,
    /// Connections kept open between queued deliveries.
    pool: Arc<pool::Pool>,
}

impl Relays {
    pub fn from_config(config: &Config) -> Result<Relays> {
        let mut relays = HashMap::new();
        for (name, relay) in &config.relays {
            let r = match relay {
                Relay::Outbox { dir } => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("relays.{name}: cannot create {}", dir.display()))?;
                    RelayImpl::Outbox { dir: dir.clone() }
                }
                Relay::Smtp(cfg) => {
                    let tls = tls_connector(cfg).with_context(|| format!("relays.{name}"))?;
                    RelayImpl::Smtp { cfg: Box::new(cfg.clone()), tls }
                }
            };
            relays.insert(name.clone(), r);
        }
        Ok(Relays { relays, hostname: config.server.hostname.clone(), pool: Arc::default() })
    }

    /// Closes the upstream connections kept open between deliveries.
    pub async fn close_idle(&self) {
        self.pool.close_all().await;
    }

    pub fn names(&self) -> Vec<&str> {
        self.relays.keys().map(String::as_str).collect()
    }

    /// Delivers now and reports the upstream's final answer.
    pub async fn send_now(
        &self,
        relay: &str,
        envelope: &mail::Envelope,
        message: Vec<u8>,
        session: &str,
    ) -> Result<Reply, SendFailure> {
        let Some(r) = self.relays.get(relay) else {
            tracing::error!(session, relay, "no relay of that name in the configuration ([relays.{relay}])");
            return Err(failure(true, 451, "4.3.5", format!("relay {relay} is not configured")));
        };
        let result = match r {
            RelayImpl::Outbox { dir } => {
                let dir = dir.clone();
                let envelope = envelope.clone();
                let id = session.to_string();
                tokio::task::spawn_blocking(move || write_outbox(&dir, &envelope, &message, &id))
                    .await
                    .map_err(|e| failure(true, 451, "4.3.0", format!("outbox writer failed: {e}")))
                    .and_then(|r| {
                        r.map_err(|e| failure(true, 451, "4.3.0", format!("cannot write to the outbox: {e}")))
                    })
            }
            RelayImpl::Smtp { cfg, tls } => send_smtp(relay, cfg, tls, &self.hostname, envelope, message).await,
        };
        let rcpts = envelope.rcpt_to.len() as u64;
        match &result {
            Ok(reply) => {
                crate::metrics::get().upstream(relay, "delivered", rcpts);
                tracing::info!(session, relay, code = reply.code, text = %reply.text(), "relayed")
            }
            Err(f) => {
                crate::metrics::get().upstream(relay, if f.temporary { "temporary" } else { "permanent" }, rcpts);
                tracing::warn!(session, relay, temporary = f.temporary, code = f.reply.code, text = %f.reply.text(), "relay refused or failed")
            }
        }
        result
    }
}

/// What became of one recipient in a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The upstream took the message for this recipient (its reply).
    Delivered(String),
    /// Try again later (4xx, or the transaction failed before this recipient
    /// was settled).
    Temporary(String),
    /// The upstream refused this recipient for good (5xx).
    Permanent(String),
}

/// One recipient for [`Relays::deliver`].
pub struct DeliveryRcpt<'a> {
    pub address: &'a str,
    pub params: &'a [(String, Option<String>)],
}

impl Relays {
    /// Whether a relay of this name exists.
    pub fn has(&self, relay: &str) -> bool {
        self.relays.contains_key(relay)
    }

    /// Most recipients the relay takes in one transaction (`max_recipients`,
    /// or its provider's limit); `None`: no known limit (outbox relays, plain
    /// smarthosts, unknown names).
    pub fn max_recipients(&self, relay: &str) -> Option<usize> {
        match self.relays.get(relay)? {
            RelayImpl::Smtp { cfg, .. } => cfg.max_recipients,
            RelayImpl::Outbox { .. } => None,
        }
    }

    /// Largest message, in octets, to hand to the relay as stored (before the
    /// relay's extra header fields are put on top: their size is already taken
    /// off); `None`: no known limit.
    pub fn max_message_size(&self, relay: &str) -> Option<usize> {
        match self.relays.get(relay)? {
            RelayImpl::Smtp { cfg, .. } => cfg.max_message_size.map(|max| {
                let extra: usize = cfg.extra_headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
                max.saturating_sub(extra)
            }),
            RelayImpl::Outbox { .. } => None,
        }
    }

    /// One delivery attempt of a queued message through `relay`, with an
    /// outcome per recipient (in order). `Err` when the attempt failed as a
    /// whole (connection, TLS, credentials, MAIL FROM or DATA refused):
    /// then it applies to every recipient.
    pub async fn deliver(
        &self,
        relay: &str,
        mail_from: &str,
        mail_params: &[(String, Option<String>)],
        rcpts: &[DeliveryRcpt<'_>],
        message: &[u8],
        id: &str,
    ) -> Result<Vec<RcptOutcome>, SendFailure> {
        let Some(r) = self.relays.get(relay) else {
            return Err(failure(true, 451, "4.3.5", format!("relay {relay} is not configured")));
        };
        match r {
            RelayImpl::Outbox { dir } => {
                let envelope = mail::Envelope {
                    mail_from: mail::Address { address: mail_from.to_string(), params: vec![] },
                    rcpt_to: rcpts
                        .iter()
                        .map(|r| mail::Address { address: r.address.to_string(), params: vec![] })
                        .collect(),
                };
                let (dir, message, id) = (dir.clone(), message.to_vec(), id.to_string());
                let reply = tokio::task::spawn_blocking(move || write_outbox(&dir, &envelope, &message, &id))
                    .await
                    .map_err(|e| failure(true, 451, "4.3.0", format!("outbox writer failed: {e}")))?
                    .map_err(|e| failure(true, 451, "4.3.0", format!("cannot write to the outbox: {e}")))?;
                Ok(rcpts.iter().map(|_| RcptOutcome::Delivered(format!("250 {}", reply.text()))).collect())
            }
            RelayImpl::Smtp { cfg, tls } => {
                let where_ = format!("{}:{}", cfg.host, cfg.port);
                let message: Cow<'_, [u8]> = if cfg.extra_headers.is_empty() {
                    Cow::Borrowed(message)
                } else {
                    Cow::Owned(with_extra_headers(message, &cfg.extra_headers))
                };
                let message = &*message;
                let (max_messages, max_idle) = (cfg.connection_max_messages, cfg.connection_idle);
                if let Some(mut conn) = self.pool.take(relay, max_idle) {
                    // A kept connection may have been closed by the upstream
                    // (its own idle timeout) or have died silently: that
                    // shows at MAIL FROM, before anything of the message was
                    // sent, so a new connection is safe and costs the message
                    // nothing. A shorter wait there keeps a dead connection
                    // from costing the whole reply timeout.
                    let probe = cfg.timeout.min(REUSE_PROBE_TIMEOUT);
                    match transaction(&mut conn, probe, mail_from, mail_params, rcpts, message).await {
                        Ok(done) => {
                            conn.uses += 1;
                            self.keep_or_close(relay, conn, done.reusable, max_messages, max_idle);
                            return Ok(done.outcomes);
                        }
                        Err(e) if e.at_mail && upstream_gone(&e.error) => {
                            tracing::debug!(relay, upstream = %where_, error = %e.error, "a kept connection was closed by the upstream; opening a new one");
                        }
                        Err(e) => return Err(self.failed(relay, &where_, e)),
                    }
                }
                // A refusal before MAIL FROM (greeting, EHLO, STARTTLS, AUTH)
                // says something about our configuration, never about the
                // message: always temporary, so no queued mail is bounced
                // for it.
                let mut conn = self
                    .connect(cfg, tls)
                    .await
                    .map_err(|error| self.failed(relay, &where_, TxError { error, at_mail: true, ours: true }))?;
                match transaction(&mut conn, cfg.timeout, mail_from, mail_params, rcpts, message).await {
                    Ok(done) => {
                        conn.uses += 1;
                        self.keep_or_close(relay, conn, done.reusable, max_messages, max_idle);
                        Ok(done.outcomes)
                    }
                    Err(e) => Err(self.failed(relay, &where_, e)),
                }
            }
        }
    }

    /// Back to the pool when the transaction is known to have ended;
    /// otherwise closed (its SMTP state is unknown).
    fn keep_or_close(&self, relay: &str, conn: pool::Conn, reusable: bool, max_messages: u32, max_idle: Duration) {
        if reusable {
            self.pool.put(relay, conn, max_messages, max_idle);
        } else {
            tokio::spawn(pool::quit(conn));
        }
    }

    /// A new connection, through TLS and AUTH as configured.
    async fn connect(&self, cfg: &SmtpRelay, tls: &TlsConnector) -> mail_send::Result<pool::Conn> {
        open(cfg, tls, &self.hostname).await
    }

    /// The failure of a whole attempt, made temporary (and logged loudly)
    /// when it is about our side of the connection.
    fn failed(&self, relay: &str, upstream: &str, e: TxError) -> SendFailure {
        let mut f = map_error(e.error, relay, upstream);
        if e.ours && !f.temporary {
            tracing::error!(relay, upstream, code = f.reply.code, text = %f.reply.text(), "the relay refused us before any message was sent: check relays.{relay} (address, tls, credentials, allowed IPs); messages stay queued");
            f.temporary = true;
        }
        f
    }
}

/// The message with `headers` (name, value) put on top, in order, each as one
/// `Name: value` line, except a name the message's header section already has
/// (compared without regard to case): the sender's own field wins. A field added
/// on top is not in any DKIM signature's `h=` list, so signatures made before
/// stay valid. CR and LF in a value become spaces; a name that is not a valid
/// field name is left out.
pub fn with_extra_headers(message: &[u8], headers: &[(String, String)]) -> Vec<u8> {
    let present = header_names(message);
    let mut out = Vec::with_capacity(message.len() + headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>());
    for (name, value) in headers {
        let valid = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
        if !valid {
            tracing::warn!(name, "not a valid header field name; not added");
            continue;
        }
        if present.iter().any(|p| p.eq_ignore_ascii_case(name.as_bytes())) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend(value.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(message);
    out
}

/// The field names of a message's header section (up to the first empty line).
fn header_names(message: &[u8]) -> Vec<&[u8]> {
    let mut names = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue; // folded continuation
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = &line[..colon];
            let end = name.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
            names.push(&name[..end]);
        }
    }
    names
}

fn params_of(list: &[(String, Option<String>)]) -> Parameters<'static> {
    let mut params = Parameters::new();
    for (k, v) in list {
        params.add(match v {
            Some(v) => Parameter::from((k.clone(), v.clone())),
            None => Parameter::from(k.clone()),
        });
    }
    params
}

/// How long MAIL FROM on a kept connection may take before the connection
/// is taken for dead (and the message goes over a new one).
const REUSE_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// A transaction that failed as a whole.
struct TxError {
    error: mail_send::Error,
    /// It failed at MAIL FROM (or before): nothing of the message was sent.
    at_mail: bool,
    /// The failure is about us (our address, TLS, credentials), not the
    /// message.
    ours: bool,
}

/// Whether an error on a kept connection means the upstream closed it.
fn upstream_gone(e: &mail_send::Error) -> bool {
    use mail_send::Error as E;
    match e {
        E::Io(_) | E::UnparseableReply | E::Timeout => true,
        // 503 (bad sequence) at MAIL FROM: the kept connection is not
        // between transactions after all; nothing was sent yet.
        E::UnexpectedReply(r) => r.code == 421 || r.code == 503,
        _ => false,
    }
}

/// MAIL, a RCPT per recipient (each answered on its own), DATA. `Ok` leaves
/// the connection between transactions, ready for the next message; after
/// an `Err` its state is unknown and it must be dropped. MAIL FROM is given
/// `mail_timeout`, the rest the client's own timeout.
async fn transaction(
    conn: &mut pool::Conn,
    mail_timeout: Duration,
    mail_from: &str,
    mail_params: &[(String, Option<String>)],
    rcpts: &[DeliveryRcpt<'_>],
    message: &[u8],
) -> Result<TxDone, TxError> {
    if conn.pipelining {
        return pipelined(&mut conn.client, mail_timeout, mail_from, mail_params, rcpts, message).await;
    }
    let client = &mut conn.client;
    let timeout = std::mem::replace(&mut client.timeout, mail_timeout);
    let mail = client.mail_from(mail_from, &params_of(mail_params)).await;
    client.timeout = timeout;
    match mail {
        Ok(()) => {}
        Err(mail_send::Error::UnexpectedReply(r)) => return Err(refused_at_mail(r)),
        Err(error) => return Err(TxError { error, at_mail: true, ours: false }),
    }
    transaction_rest(client, rcpts, message).await.map_err(|error| TxError { error, at_mail: false, ours: false })
}

/// MAIL FROM refused: an authentication demand is about our configuration,
/// not the message.
fn refused_at_mail(r: smtp_proto::Response<String>) -> TxError {
    let ours = r.code == 530 || r.esc == [5, 7, 0] || r.esc == [5, 7, 8];
    TxError { error: mail_send::Error::UnexpectedReply(r), at_mail: true, ours }
}

/// The same transaction in two round trips instead of three plus one per
/// recipient (RFC 2920): MAIL, every RCPT and DATA in one write, their
/// replies read in order, then the message. The replies mean what they mean
/// one at a time; a refused MAIL makes the upstream refuse the rest too.
/// Nothing of the message is sent before a `354`, so an error before it
/// is, as with MAIL FROM alone, one that cost the message nothing.
async fn pipelined(
    client: &mut pool::Client,
    first_timeout: Duration,
    mail_from: &str,
    mail_params: &[(String, Option<String>)],
    rcpts: &[DeliveryRcpt<'_>],
    message: &[u8],
) -> Result<TxDone, TxError> {
    use tokio::io::AsyncWriteExt as _;
    let mut batch = format!("MAIL FROM:<{mail_from}>{}\r\n", params_of(mail_params));
    for r in rcpts {
        batch.push_str(&format!("RCPT TO:<{}>{}\r\n", r.address, params_of(r.params)));
    }
    batch.push_str("DATA\r\n");
    let sent = tokio::time::timeout(first_timeout, async {
        client.stream.write_all(batch.as_bytes()).await?;
        client.stream.flush().await
    })
    .await;
    let (mut replies, lost) = match sent {
        Err(_) => (Vec::new(), Some(mail_send::Error::Timeout)),
        Ok(Err(e)) => (Vec::new(), Some(e.into())),
        Ok(Ok(())) => read_replies(&mut client.stream, rcpts.len() + 2, first_timeout, client.timeout).await,
    };
    let complete = replies.len() == rcpts.len() + 2;
    let go = if complete { replies.pop() } else { None };
    let mut replies = replies.into_iter();
    let Some(mail) = replies.next() else {
        return Err(TxError { error: lost.unwrap_or(mail_send::Error::UnparseableReply), at_mail: true, ours: false });
    };
    if !(200..300).contains(&mail.code) {
        return Err(refused_at_mail(mail));
    }
    // The connection went before every reply came: what was answered
    // stands, the rest waits for the next attempt.
    let lost = (!complete).then(|| {
        let why = lost.map_or_else(|| "no reply".to_string(), |e| e.to_string());
        RcptOutcome::Temporary(sanitize_text(&format!("451 4.4.2 connection lost before every reply came: {why}")))
    });
    let mut outcomes = Vec::with_capacity(rcpts.len());
    let mut accepted = Vec::new();
    for i in 0..rcpts.len() {
        outcomes.push(match replies.next() {
            Some(r) if (200..300).contains(&r.code) => {
                accepted.push(i);
                // Settled below, by DATA and the message.
                lost.clone().unwrap_or_else(|| RcptOutcome::Temporary(String::new()))
            }
            Some(r) => outcome_of(r.code, &r.esc, &r.message),
            None => lost.clone().expect("incomplete"),
        });
    }
    let Some(go) = go else { return Ok(TxDone { outcomes, reusable: false }) };
    let after = |error| TxError { error, at_mail: false, ours: false };
    if go.code != 354 {
        // Nothing of the message was sent: never `Delivered`, whatever the
        // code. RSET ends the transaction upstream whatever it holds.
        let line = reply_line(go.code, &go.esc, &go.message);
        let outcome = if go.code >= 500 { RcptOutcome::Permanent(line) } else { RcptOutcome::Temporary(line) };
        for &i in &accepted {
            outcomes[i] = outcome.clone();
        }
        let reusable = client.rset().await.is_ok();
        return Ok(TxDone { outcomes, reusable });
    }
    if accepted.is_empty() {
        // DATA accepted with no recipient (RFC 2920 section 3.1): end an
        // empty message, which goes to nobody. Whatever the upstream
        // answers, the data phase is over.
        client.cmd(b".\r\n").await.map_err(after)?;
        return Ok(TxDone { outcomes, reusable: true });
    }
    let settled = send_body(client, message).await.map_err(after)?;
    for i in accepted {
        outcomes[i] = settled.clone();
    }
    Ok(TxDone { outcomes, reusable: true })
}

/// Reads `n` replies (pipelined commands' answers, in order), or as many as
/// come before the connection fails, with the failure.
async fn read_replies(
    stream: &mut Box<dyn pool::Stream>,
    n: usize,
    first_timeout: Duration,
    timeout: Duration,
) -> (Vec<smtp_proto::Response<String>>, Option<mail_send::Error>) {
    use tokio::io::AsyncReadExt as _;
    let mut replies = Vec::with_capacity(n);
    let mut parser = smtp_proto::response::parser::ResponseReceiver::default();
    let mut buf = [0u8; 4096];
    // Each reply has its own wait, as when the commands go one at a time:
    // an upstream that checks every recipient may take a while for each.
    let mut deadline = tokio::time::Instant::now() + first_timeout;
    while replies.len() < n {
        let read = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (replies, Some(mail_send::Error::Timeout)),
            Ok(Ok(0)) => return (replies, Some(closed_by_upstream())),
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return (replies, Some(e.into())),
        };
        let mut bytes = buf[..read].iter();
        loop {
            match parser.parse(&mut bytes) {
                Ok(reply) => {
                    replies.push(reply);
                    parser.reset();
                    deadline = tokio::time::Instant::now() + timeout;
                    if replies.len() == n {
                        break;
                    }
                }
                Err(smtp_proto::Error::NeedsMoreData { .. }) => break,
                Err(_) => return (replies, Some(mail_send::Error::UnparseableReply)),
            }
        }
    }
    (replies, None)
}

/// The upstream closed the connection where a reply was due.
fn closed_by_upstream() -> mail_send::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the upstream closed the connection").into()
}

/// Sends the message after a `354` (dot-stuffed, with the final dot, in
/// one write) and reads the final reply.
async fn send_body(client: &mut pool::Client, message: &[u8]) -> mail_send::Result<RcptOutcome> {
    use tokio::io::AsyncWriteExt as _;
    let data = dot_stuffed(message);
    let resp = tokio::time::timeout(client.timeout, async {
        client.stream.write_all(&data).await?;
        client.stream.flush().await?;
        client.read().await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)??;
    Ok(outcome_of(resp.code, &resp.esc, &resp.message))
}

/// The DATA payload of a message: a `.` beginning a line doubled (RFC 5321
/// section 4.5.2), then `.` CRLF. The queue holds CRLF lines only (the
/// session and sendmail refuse or mend bare line ends); a bare CR or LF is
/// made CRLF all the same, so that no line end the upstream might see can
/// hide a `.` from the stuffing (SMTP smuggling).
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut line_start = true;
    let mut bytes = message.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' | b'\n' => {
                if b == b'\r' && bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            _ => {
                if line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                line_start = false;
            }
        }
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// What a transaction that ran to its end left.
struct TxDone {
    outcomes: Vec<RcptOutcome>,
    /// The connection is known to be between transactions.
    reusable: bool,
}

fn outcome_of(code: u16, esc: &[u8; 3], message: &str) -> RcptOutcome {
    let line = reply_line(code, esc, message);
    match code {
        200..=299 => RcptOutcome::Delivered(line),
        500.. => RcptOutcome::Permanent(line),
        _ => RcptOutcome::Temporary(line),
    }
}

async fn transaction_rest(
    client: &mut pool::Client,
    rcpts: &[DeliveryRcpt<'_>],
    message: &[u8],
) -> mail_send::Result<TxDone> {
    let mut outcomes = Vec::with_capacity(rcpts.len());
    let mut accepted = Vec::new();
    for (i, r) in rcpts.iter().enumerate() {
        match client.rcpt_to(r.address, &params_of(r.params)).await {
            Ok(()) => {
                accepted.push(i);
                outcomes.push(RcptOutcome::Temporary("not sent yet".into()));
            }
            Err(mail_send::Error::UnexpectedReply(resp)) => {
                let text = reply_line(resp.code, &resp.esc, &resp.message);
                outcomes.push(if resp.code >= 500 {
                    RcptOutcome::Permanent(text)
                } else {
                    RcptOutcome::Temporary(text)
                });
            }
            Err(e) => return Err(e),
        }
    }
    if accepted.is_empty() {
        // Ends the transaction, so the connection can carry the next one.
        // The recipients' outcomes stand whatever RSET gets.
        let reusable = client.rset().await.is_ok();
        return Ok(TxDone { outcomes, reusable });
    }
    // The reply to DATA apart from the reply to the message: a refused DATA
    // leaves the transaction open upstream (Postfix: the next MAIL gets
    // "503 nested MAIL command"), the final reply ends it.
    let go = client.cmd(b"DATA\r\n").await?;
    let (settled, reusable) = if go.code != 354 {
        // Nothing of the message was sent: never `Delivered`, whatever the code.
        let line = reply_line(go.code, &go.esc, &go.message);
        let outcome = if go.code >= 500 { RcptOutcome::Permanent(line) } else { RcptOutcome::Temporary(line) };
        (outcome, client.rset().await.is_ok())
    } else {
        (send_body(client, message).await?, true)
    };
    for i in accepted {
        outcomes[i] = settled.clone();
    }
    Ok(TxDone { outcomes, reusable })
}

/// `code x.y.z text`, one printable line.
fn reply_line(code: u16, esc_code: &[u8; 3], message: &str) -> String {
    sanitize_text(&format!("{code} {} {message}", esc(esc_code, code)))
}

fn tls_connector(cfg: &SmtpRelay) -> Result<TlsConnector> {
    if !cfg.verify_certificate {
        let builder =
            SmtpClientBuilder::new(cfg.host.as_str(), cfg.port).map_err(|e| anyhow::anyhow!(e))?.allow_invalid_certs();
        return Ok(builder.tls_connector);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &cfg.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("ca_file {}", ca.display()))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.with_context(|| format!("ca_file {}: bad PEM", ca.display()))?)?;
            n += 1;
        }
        if n == 0 {
            anyhow::bail!("ca_file {} holds no PEM certificate", ca.display());
        }
    } else if let Ok(native) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") {
        // The system's roots too, where it has them (private CAs installed
        // by the operator live there).
        for cert in rustls_pemfile::certs(&mut native.as_slice()).flatten() {
            let _ = roots.add(cert);
        }
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn smtp_address(a: &mail::Address) -> Address<'static> {
    let mut params = Parameters::new();
    for p in &a.params {
        // Pass through what changes how the upstream must treat the message.
        if matches!(p.key.as_str(), "BODY" | "SMTPUTF8") {
            params.add(match &p.value {
                Some(v) => Parameter::from((p.key.clone(), v.clone())),
                None => Parameter::from(p.key.clone()),
            });
        }
    }
    Address::new(a.address.clone(), params)
}

async fn send_smtp(
    relay: &str,
    cfg: &SmtpRelay,
    tls: &TlsConnector,
    hostname: &str,
    envelope: &mail::Envelope,
    mut body: Vec<u8>,
) -> Result<Reply, SendFailure> {
    if !cfg.extra_headers.is_empty() {
        body = with_extra_headers(&body, &cfg.extra_headers);
    }
    // mail-send ends the data with CRLF "." CRLF itself; the message's own
    // final CRLF would otherwise become an extra empty line upstream.
    if body.ends_with(b"\r\n") {
        body.truncate(body.len() - 2);
    }
    let mut msg = SmtpMessage::empty().from(smtp_address(&envelope.mail_from)).body(body);
    for r in &envelope.rcpt_to {
        msg = msg.to(smtp_address(r));
    }
    let where_ = format!("{}:{}", cfg.host, cfg.port);
    let client = open(cfg, tls, hostname).await.map(|c| c.client);
    deliver(client, msg).await.map_err(|e| map_error(e, relay, &where_))
}

/// A new connection to an upstream, through TLS and AUTH as configured, with
/// what its EHLO offers. Every step, the greeting included, is bounded by
/// the relay's `timeout_secs`: an upstream that accepts TCP and then says
/// nothing must not hold a delivery slot.
async fn open(cfg: &SmtpRelay, tls: &TlsConnector, hostname: &str) -> mail_send::Result<pool::Conn> {
    use mail_send::smtp::AssertReply as _;
    use mail_send::SmtpClient;
    let helo = cfg.helo.clone().unwrap_or_else(|| hostname.to_string());
    let credentials = match (&cfg.user, &cfg.password) {
        (Some(user), Some(pass)) => Some(mail_send::Credentials::new(user.clone(), pass.clone())),
        _ => None,
    };
    let timeout = cfg.timeout;
    let steps = async {
        let tcp = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
        // Replies are small and each is waited for: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let mut client = SmtpClient { stream: tcp, timeout };
        let mut client: SmtpClient<Box<dyn pool::Stream>> = match cfg.tls {
            TlsMode::None => {
                client.read().await?.assert_positive_completion()?;
                SmtpClient { stream: Box::new(client.stream), timeout }
            }
            TlsMode::Implicit => {
                let mut c = client.into_tls(tls, &cfg.host).await?;
                c.read().await?.assert_positive_completion()?;
                SmtpClient { stream: Box::new(c.stream), timeout }
            }
            TlsMode::Starttls => {
                client.read().await?.assert_positive_completion()?;
                if !client.ehlo(&helo).await?.has_capability(smtp_proto::EXT_START_TLS) {
                    return Err(mail_send::Error::MissingStartTls);
                }
                let c = client.start_tls(tls, &cfg.host).await?;
                SmtpClient { stream: Box::new(c.stream), timeout }
            }
        };
        let capabilities = client.ehlo(&helo).await?;
        if let Some(credentials) = &credentials {
            client.authenticate(credentials, &capabilities).await?;
        }
        Ok(pool::Conn::new(client, capabilities.has_capability(smtp_proto::EXT_PIPELINING)))
    };
    tokio::time::timeout(timeout, steps).await.map_err(|_| mail_send::Error::Timeout)?
}

/// Sends one message on a fresh connection (plain or TLS) and says goodbye.
async fn deliver<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    client: mail_send::Result<mail_send::SmtpClient<T>>,
    msg: SmtpMessage<'_>,
) -> mail_send::Result<Reply> {
    let mut client = client?;
    let result = client.send(msg).await;
    let _ = client.quit().await;
    let resp = result?;
    Ok(Reply::new(resp.code, &esc(&resp.esc, resp.code), sanitize_text(&resp.message)))
}

fn esc(esc: &[u8; 3], code: u16) -> String {
    if esc[0] == 0 {
        format!("{}.0.0", code / 100)
    } else {
        format!("{}.{}.{}", esc[0], esc[1], esc[2])
    }
}

/// Turns a mail-send error into the reply for the client. The client sees
/// what went wrong but not where: the upstream's address and our
/// credentials problems go to the log only.
fn map_error(e: mail_send::Error, relay: &str, upstream: &str) -> SendFailure {
    use mail_send::Error as E;
    let f = match e {
        E::UnexpectedReply(r) => {
            let temporary = r.code < 500;
            let code = if (400..600).contains(&r.code) { r.code } else { 451 };
            let enhanced = esc(&r.esc, code);
            failure(temporary, code, &enhanced, format!("upstream said: {}", r.message))
        }
        E::AuthenticationFailed(r) => {
            // Our credentials are wrong: the sender's message is fine, so
            // this is temporary for them and loud for the operator.
            tracing::error!(relay, upstream, code = r.code, text = %r.message, "upstream rejected our credentials: check relays.{relay}.user and password");
            failure(
                true,
                451,
                "4.7.0",
                "the upstream relay refused our credentials; the operator must fix the relay configuration".into(),
            )
        }
        E::Timeout => failure(true, 451, "4.4.2", "the upstream relay timed out".into()),
        E::Io(io) => failure(true, 451, "4.4.1", format!("cannot reach the upstream relay: {}", io.kind())),
        E::Tls(t) => failure(true, 451, "4.7.5", format!("TLS with the upstream relay failed: {t}")),
        E::MissingStartTls => failure(true, 451, "4.7.4", "the upstream relay does not offer STARTTLS".into()),
        other => failure(true, 451, "4.3.0", format!("upstream relay error: {other:?}")),
    };
    tracing::debug!(relay, upstream, "upstream delivery failed");
    f
}
/// Writes one message to the outbox: `<time>-<session>.eml`, with the
/// envelope as `Return-Path:` and `X-Original-To:` fields on top (as a local
/// delivery agent would), via a temporary file, fsynced, renamed into place,
/// and the folder fsynced, so an acknowledged message survives a crash.
fn write_outbox(dir: &Path, envelope: &mail::Envelope, message: &[u8], session: &str) -> std::io::Result<Reply> {
    use std::io::Write;
    let now = chrono::Utc::now();
    let name = format!("{}-{}-{}.eml", now.format("%Y%m%dT%H%M%S%.6fZ"), session, rand::random::<u32>());
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // Mail is private: readable by the relay's user only.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let mut head = format!("Return-Path: <{}>\r\n", envelope.mail_from.address);
        for r in &envelope.rcpt_to {
            head.push_str(&format!("X-Original-To: {}\r\n", r.address));
        }
        f.write_all(head.as_bytes())?;
        f.write_all(message)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(&name))?;
        std::fs::File::open(dir)?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Reply::new(250, "2.0.0", format!("saved to outbox as {name}")))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod reuse_tests;
