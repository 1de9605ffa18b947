//! AUTH: the SASL exchange (PLAIN, LOGIN), then the plugins, with the brute-force limits
//! around them.
//!
//! Its log lines keep the target `mailferry::smtp::session` they had before this file was split out: operators'
//! filters match on it (fail2ban, docs/abuse.md).

use super::*;

impl Session {
    pub(super) async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Next {
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
                tracing::info!(target: "mailferry::smtp::session", login = ?login, mechanism = %mechanism, "authenticated");
                crate::metrics::get().auth(&self.listener.name, &mechanism, true);
                if !self.auth_exempt {
                    if let Err(e) = self.shared.auth.succeeded(self.peer.ip(), &login).await {
                        tracing::warn!(target: "mailferry::smtp::session", error = %e, "cannot remember the login's address");
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
                tracing::warn!(target: "mailferry::smtp::session", ip = %self.peer.ip(), login = ?login, mechanism = %mechanism, "authentication failed");
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
    pub(super) async fn refused_by_bans(&mut self, login: Option<&str>) -> Option<Next> {
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
                tracing::info!(target: "mailferry::smtp::session", ip = %ip, "AUTH refused: address banned after failed logins");
                self.t.reply(&Reply::new(421, "4.7.0", "too many failed logins from your address, closing"));
                return Some(Next::Close);
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(None) => None,
            Ok(Some((left, login))) => {
                tracing::info!(target: "mailferry::smtp::session", ip = %ip, login = ?login, "AUTH refused: login barred for this address after failed logins");
                let wait = crate::limits::auth::minutes(left);
                Some(self.error(Reply::new(
                    454,
                    "4.7.0",
                    format!("too many failed logins for this login from your address, try again in {wait}"),
                )))
            }
            Err(e) => {
                tracing::warn!(target: "mailferry::smtp::session", error = %e, "AUTH refused: cannot check for bans");
                Some(self.error(Reply::new(454, "4.7.0", "temporary authentication failure, try again later")))
            }
        }
    }

    /// Counts a failed AUTH against the address and the login, waits the
    /// growing delay, and says what this failure banned, if anything;
    /// `Err` when it could not be counted.
    pub(super) async fn penalize(
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
                tracing::warn!(target: "mailferry::smtp::session", error = %e, "failed AUTH not counted: closing the session");
                return Err(());
            }
        };
        tracing::debug!(target: "mailferry::smtp::session",
            ip_failures = penalty.ip_failures,
            login_failures = penalty.login_failures,
            delay_ms = penalty.delay.as_millis() as u64,
            "failed AUTH answered after a delay"
        );
        tokio::time::sleep(penalty.delay).await;
        let Some(reason) = penalty.ban else { return Ok(None) };
        let ban = self.shared.auth.limits().ban;
        let until = chrono::Utc::now() + ban;
        tracing::warn!(target: "mailferry::smtp::session",
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
    pub(super) async fn auth_continue(&mut self, challenge: &str) -> Result<Vec<u8>, AuthAbort> {
        self.t.reply(&Reply::new(334, "", challenge));
        let limit = self.config().limits.auth_line;
        let timeout = self.config().limits.command_timeout;
        match self.t.read_line(limit, timeout).await {
            Ok(Line::Ok(l)) if l == b"*" => Err(AuthAbort::Reply(Reply::new(501, "5.0.0", "authentication cancelled"))),
            Ok(Line::Ok(l)) => Ok(decode_b64(&l)?),
            Ok(Line::TooLong) => {
                Err(AuthAbort::Reply(Reply::new(500, "5.5.6", "authentication exchange line too long")))
            }
            Err(_) => Err(AuthAbort::Close),
        }
    }

    pub(super) async fn auth_plain(&mut self, initial: Option<String>) -> Result<(String, String), AuthAbort> {
        let raw = match initial {
            Some(s) => plain_initial(&s)?,
            None => self.auth_continue("").await?,
        };
        Ok(plain_credentials(&raw)?)
    }

    pub(super) async fn auth_login(&mut self, initial: Option<String>) -> Result<(String, String), AuthAbort> {
        let login = match initial {
            Some(s) => decode_b64(s.as_bytes())?,
            None => self.auth_continue("VXNlcm5hbWU6").await?,
        };
        let password = self.auth_continue("UGFzc3dvcmQ6").await?;
        Ok(login_credentials(&login, &password)?)
    }
}

pub(super) enum AuthAbort {
    Reply(Reply),
    Close,
}

impl From<Reply> for AuthAbort {
    fn from(r: Reply) -> AuthAbort {
        AuthAbort::Reply(r)
    }
}

// The decoding below is pure (no session, no I/O): the fuzz targets call it.

/// PLAIN's initial response on the AUTH line, decoded: `=` is an empty one.
pub fn plain_initial(s: &str) -> Result<Vec<u8>, Reply> {
    if s == "=" {
        Ok(Vec::new())
    } else {
        decode_b64(s.as_bytes())
    }
}

/// The login and password in a decoded PLAIN response (RFC 4616):
/// `authzid NUL login NUL password`, the authzid empty or the login.
pub fn plain_credentials(raw: &[u8]) -> Result<(String, String), Reply> {
    let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    let [authzid, authcid, password] = parts.as_slice() else {
        return Err(Reply::new(501, "5.5.2", "malformed PLAIN response: expected authzid NUL login NUL password"));
    };
    let login = check_login(utf8(authcid)?)?;
    let password = check_password(utf8(password)?)?;
    let authzid = utf8(authzid)?;
    if !authzid.is_empty() && authzid != login {
        return Err(Reply::new(535, "5.7.8", "authorization identity must be empty or equal the login"));
    }
    Ok((login, password))
}

/// The login and password of a LOGIN exchange, from its two decoded responses.
pub fn login_credentials(login: &[u8], password: &[u8]) -> Result<(String, String), Reply> {
    Ok((check_login(utf8(login)?)?, check_password(utf8(password)?)?))
}

/// One base64 response (an initial response or a continuation line).
pub fn decode_b64(s: &[u8]) -> Result<Vec<u8>, Reply> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Reply::new(501, "5.5.2", "cannot decode base64 response"))
}

/// A login is one printable token: it becomes the session's identity and
/// goes into logs (a newline in it could forge a fail2ban line).
pub fn check_login(login: String) -> Result<String, Reply> {
    if login.is_empty() || login.len() > 256 || login.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Reply::new(501, "5.5.2", "the login must be 1 to 256 printable characters without spaces"));
    }
    Ok(login)
}

/// Longer passwords are refused before any hashing: some schemes
/// (SHA-crypt) cost time in proportion to the password's length.
pub fn check_password(password: String) -> Result<String, Reply> {
    if password.len() > MAX_PASSWORD {
        return Err(Reply::new(535, "5.7.8", "authentication credentials invalid"));
    }
    Ok(password)
}

pub const MAX_PASSWORD: usize = 1024;

pub fn utf8(b: &[u8]) -> Result<String, Reply> {
    String::from_utf8(b.to_vec()).map_err(|_| Reply::new(501, "5.5.2", "credentials must be UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn plain_responses() {
        let raw = plain_initial(&b64(b"\0alice\0secret")).unwrap();
        assert_eq!(plain_credentials(&raw).unwrap(), ("alice".into(), "secret".into()));
        let raw = plain_initial(&b64(b"alice\0alice\0pw with spaces")).unwrap();
        assert_eq!(plain_credentials(&raw).unwrap(), ("alice".into(), "pw with spaces".into()));
        assert_eq!(plain_credentials(b"bob\0alice\0pw").unwrap_err().code, 535);
        assert_eq!(plain_initial("=").unwrap(), b"");
        for bad in [&b""[..], b"\0alice", b"\0alice\0pw\0", b"\0\0pw", b"\0al ice\0pw", b"\0al\nice\0pw", b"\0\xff\0pw"]
        {
            assert_eq!(plain_credentials(bad).unwrap_err().code, 501, "{:?}", bad.escape_ascii().to_string());
        }
        assert_eq!(plain_initial("not base64!").unwrap_err().code, 501);
        let long = format!("\0alice\0{}", "p".repeat(MAX_PASSWORD + 1));
        assert_eq!(plain_credentials(long.as_bytes()).unwrap_err().code, 535);
    }

    #[test]
    fn login_responses() {
        assert_eq!(login_credentials(b"alice", b"").unwrap(), ("alice".into(), "".into()));
        assert_eq!(login_credentials(b"", b"pw").unwrap_err().code, 501);
        assert_eq!(login_credentials(&[b'a'; 257], b"pw").unwrap_err().code, 501);
        assert_eq!(login_credentials(b"alice", b"\xc3").unwrap_err().code, 501);
        assert_eq!(decode_b64(b"YWxpY2U=").unwrap(), b"alice");
        assert_eq!(decode_b64(b"YWxpY2U").unwrap_err().code, 501);
    }
}
