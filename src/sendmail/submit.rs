//! One SMTP transaction with the local server, and what its replies mean
//! for sendmail's exit status.
//!
//! mail-send speaks the protocol; the steps are driven here one by one so
//! that each reply can be judged where it came: a refusal of the message's
//! content is the caller's data error (65), any other 5xx a refusal (69),
//! and every 4xx, timeout or lost connection a temporary failure (75), on
//! which cron, PHP's queues and mail user agents try again later. Delivery
//! is all or nothing: if the server refuses any recipient, nothing is sent
//! and the status says so, never a `0` that hides a dropped recipient.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mail_send::{Credentials, SmtpClient};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Exit, Failure};
use crate::config::{Config, TlsMode};

/// Where and how to submit.
pub struct Target {
    /// The listener's name, for messages.
    pub listener: String,
    pub addr: SocketAddr,
    pub tls: TlsMode,
    /// The name the server's certificate is checked against (`server.hostname`).
    pub tls_name: String,
    /// The EHLO name.
    pub helo: String,
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
}

/// What to submit.
pub struct Envelope<'a> {
    /// Empty for the null sender.
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// `-B`.
    pub body: Option<super::args::BodyType>,
}

/// A reply of the server.
struct Reply {
    code: u16,
    esc: [u8; 3],
    text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text.split_whitespace().collect::<Vec<_>>().join(" ");
        if self.esc[0] == 0 {
            write!(f, "{} {text}", self.code)
        } else {
            write!(f, "{} {}.{}.{} {text}", self.code, self.esc[0], self.esc[1], self.esc[2])
        }
    }
}

/// Submits `message` (CRLF text ending in CRLF); on success returns the
/// server's reply to the final dot.
pub async fn submit(t: &Target, config: &Config, env: &Envelope<'_>, message: &[u8]) -> Result<String, Failure> {
    let stream = match tokio::time::timeout(t.timeout, TcpStream::connect(t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let hint =
                if e.kind() == std::io::ErrorKind::ConnectionRefused { "; is `mailferry serve` running?" } else { "" };
            return Err(Failure::new(
                Exit::TempFail,
                format!("cannot connect to the mail server at {} (listener {}): {e}{hint}", t.addr, t.listener),
            ));
        }
        Err(_) => {
            return Err(Failure::new(
                Exit::TempFail,
                format!("cannot connect to the mail server at {} (listener {}): timed out", t.addr, t.listener),
            ))
        }
    };
    // The final dot goes out apart from the text; without this it would
    // wait for the server's delayed ACK.
    let _ = stream.set_nodelay(true);
    let mut c = SmtpClient { stream, timeout: t.timeout };
    match t.tls {
        TlsMode::None => {
            greeting(&mut c, t).await?;
            session(c, t, env, message).await
        }
        TlsMode::Starttls => {
            greeting(&mut c, t).await?;
            c.ehlo(&t.helo).await.map_err(|e| ehlo_failed(e, t))?;
            let connector = tls_connector(config);
            let c = c.start_tls(&connector, &t.tls_name).await.map_err(|e| transport(e, "STARTTLS", t))?;
            session(c, t, env, message).await
        }
        TlsMode::Implicit => {
            let connector = tls_connector(config);
            let mut c = c.into_tls(&connector, &t.tls_name).await.map_err(|e| transport(e, "TLS", t))?;
            greeting(&mut c, t).await?;
            session(c, t, env, message).await
        }
    }
}

async fn greeting<T: AsyncRead + AsyncWrite + Unpin>(c: &mut SmtpClient<T>, t: &Target) -> Result<(), Failure> {
    let r = match tokio::time::timeout(t.timeout, c.read()).await {
        Ok(r) => r.map_err(|e| transport(e, "the greeting", t))?,
        Err(_) => return Err(transport(mail_send::Error::Timeout, "the greeting", t)),
    };
    let r = Reply { code: r.code, esc: r.esc, text: r.message };
    if r.code != 220 {
        return Err(refused(format!("the server (listener {}) refused the connection: {r}", t.listener), &r, false));
    }
    Ok(())
}

/// An EHLO refused or failed.
fn ehlo_failed(e: mail_send::Error, t: &Target) -> Failure {
    match e {
        mail_send::Error::UnexpectedReply(r) => {
            let r = Reply { code: r.code, esc: r.esc, text: r.message };
            refused(format!("EHLO refused: {r}"), &r, false)
        }
        e => transport(e, "EHLO", t),
    }
}

/// EHLO (again, after TLS), AUTH if configured, then the transaction.
async fn session<T: AsyncRead + AsyncWrite + Unpin>(
    mut c: SmtpClient<T>,
    t: &Target,
    env: &Envelope<'_>,
    message: &[u8],
) -> Result<String, Failure> {
    let caps = c.ehlo(&t.helo).await.map_err(|e| ehlo_failed(e, t))?;
    if let Some((user, password)) = &t.credentials {
        let credentials = Credentials::new(user.as_str(), password.as_str());
        if let Err(e) = c.authenticate(&credentials, &caps).await {
            return Err(match e {
                mail_send::Error::AuthenticationFailed(r) | mail_send::Error::UnexpectedReply(r) => {
                    let r = Reply { code: r.code, esc: r.esc, text: r.message };
                    refused(format!("the server refused the login of sendmail.user {user:?}: {r}"), &r, false)
                }
                mail_send::Error::UnsupportedAuthMechanism => Failure::new(
                    Exit::Unavailable,
                    format!(
                        "listener {} offers no AUTH PLAIN or LOGIN here (AUTH needs TLS, or auth_without_tls on a loopback listener)",
                        t.listener
                    ),
                ),
                e => transport(e, "AUTH", t),
            });
        }
    }
    let result = transaction(&mut c, t, env, message).await;
    let _ = c.quit().await;
    result
}

async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    t: &Target,
    env: &Envelope<'_>,
    message: &[u8],
) -> Result<String, Failure> {
    let mut params = format!(" SIZE={}", message.len());
    let eight_bit = message.iter().any(|&b| b >= 0x80);
    match (eight_bit, env.body) {
        (true, _) | (false, Some(super::args::BodyType::EightBitMime)) => params.push_str(" BODY=8BITMIME"),
        (false, Some(super::args::BodyType::SevenBit)) => params.push_str(" BODY=7BIT"),
        (false, None) => {}
    }
    if !env.sender.is_ascii() || env.recipients.iter().any(|r| !r.is_ascii()) {
        params.push_str(" SMTPUTF8");
    }
    let r = command(c, format!("MAIL FROM:<{}>{params}\r\n", env.sender), "MAIL FROM", t).await?;
    if r.code != 250 {
        let hint = if r.code == 530 || r.esc == [5, 7, 0] {
            format!(
                " (listener {} wants AUTH from this machine: add its address to the listener's trusted_networks, or set sendmail.user and sendmail.password_file)",
                t.listener
            )
        } else {
            String::new()
        };
        return Err(refused(format!("the server refused the sender <{}>: {r}{hint}", env.sender), &r, false));
    }
    let mut refusals = Vec::new();
    let mut permanent = false;
    for rcpt in env.recipients {
        let r = command(c, format!("RCPT TO:<{rcpt}>\r\n"), "RCPT TO", t).await?;
        if r.code != 250 && r.code != 251 {
            permanent |= r.code >= 500;
            refusals.push(format!("recipient <{rcpt}> refused: {r}"));
        }
    }
    if !refusals.is_empty() {
        let _ = c.rset().await;
        let exit = if permanent { Exit::Unavailable } else { Exit::TempFail };
        return Err(Failure::new(exit, format!("{}; nothing was sent", refusals.join("; "))));
    }
    let r = command(c, "DATA\r\n".to_string(), "DATA", t).await?;
    if r.code != 354 {
        return Err(refused(format!("the server refused DATA: {r}"), &r, false));
    }
    // mail-send dot-stuffs and writes CRLF "." CRLF itself; the message's
    // own last CRLF would otherwise become an extra empty line.
    let text = message.strip_suffix(b"\r\n").unwrap_or(message);
    let sent = tokio::time::timeout(t.timeout, async {
        c.write_message(text).await.map_err(mail_send::Error::Io)?;
        c.read().await
    })
    .await
    .unwrap_or(Err(mail_send::Error::Timeout))
    .map_err(|e| transport(e, "the message", t))?;
    let r = Reply { code: sent.code, esc: sent.esc, text: sent.message };
    if r.code != 250 {
        return Err(refused(format!("the server refused the message: {r}"), &r, true));
    }
    Ok(r.to_string())
}

async fn command<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    line: String,
    step: &str,
    t: &Target,
) -> Result<Reply, Failure> {
    let r = c.cmd(line.as_bytes()).await.map_err(|e| transport(e, step, t))?;
    Ok(Reply { code: r.code, esc: r.esc, text: r.message })
}

/// A refusal: 4xx is temporary; a 5xx about the message's content
/// (5.6.x: media and encoding, 5.3.4: too big) is the caller's data error;
/// any other 5xx a refusal.
fn refused(message: String, r: &Reply, about_content: bool) -> Failure {
    let exit = if r.code < 500 {
        Exit::TempFail
    } else if about_content && (r.esc[..2] == [5, 6] || r.esc == [5, 3, 4]) {
        Exit::DataErr
    } else {
        Exit::Unavailable
    };
    Failure::new(exit, message)
}

/// The connection failed under us: always worth another try later, except
/// for a configuration that can never work.
fn transport(e: mail_send::Error, step: &str, t: &Target) -> Failure {
    use mail_send::Error as E;
    let what = match e {
        E::Timeout => format!("no answer within {} s", t.timeout.as_secs()),
        E::UnparseableReply => "the connection was closed or the reply was not SMTP".to_string(),
        E::Io(e) => e.to_string(),
        E::Tls(e) => format!(
            "TLS failed: {e} (the certificate must be valid for server.hostname {:?}, from a public CA or the tls.cert file)",
            t.tls_name
        ),
        E::InvalidTLSName => {
            return Failure::new(
                Exit::Unavailable,
                format!("server.hostname {:?} cannot be checked against a TLS certificate", t.tls_name),
            )
        }
        E::UnexpectedReply(r) => {
            let r = Reply { code: r.code, esc: r.esc, text: r.message };
            return refused(format!("{step} refused: {r}"), &r, false);
        }
        other => other.to_string(),
    };
    Failure::new(
        Exit::TempFail,
        format!("{step} failed with the mail server at {} (listener {}): {what}", t.addr, t.listener),
    )
}

/// The certificates trusted for the server: the public roots and the
/// system's, plus the server's own certificate file (`tls.cert`, or the
/// self-signed one `serve` made in `state_dir/tls/`) when this user may read
/// it, so a self-signed or private-CA certificate on loopback is verified
/// rather than waved through.
fn tls_connector(config: &Config) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let own = config.tls.cert.clone().unwrap_or_else(|| config.state_dir().join("tls/cert.pem"));
    for file in [Path::new("/etc/ssl/certs/ca-certificates.crt"), own.as_path()] {
        if let Ok(pem) = std::fs::read(file) {
            for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}
