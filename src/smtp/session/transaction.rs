//! The mail transaction: MAIL, RCPT, DATA and BDAT, and what happens to a message once it
//! has all arrived.
//!
//! Its log lines keep the target `mailferry::smtp::session` they had before this file was split out: operators'
//! filters match on it (fail2ban, docs/abuse.md).

use super::*;

impl Session {
    pub(super) fn may_relay(&self) -> bool {
        self.auth_user.is_some() || self.trusted
    }

    pub(super) async fn mail(&mut self, path: Path, params: Vec<Param>) -> Next {
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

    pub(super) async fn rcpt(&mut self, path: Path, params: Vec<Param>) -> Next {
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
                tracing::info!(target: "mailferry::smtp::session", rcpt = %path.address, "relay denied: not authenticated and not in trusted networks");
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

    pub(super) fn rcpt_count(&self) -> usize {
        self.data.lock().unwrap().envelope.as_ref().map(|e| e.rcpt_to.len()).unwrap_or(0)
    }

    pub(super) async fn data(&mut self) -> Next {
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
                tracing::warn!(target: "mailferry::smtp::session", "bare CR or LF in message: refused and closing");
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

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> Next {
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
    pub(super) async fn finish_message(&mut self, raw: Vec<u8>, defects: Defects) -> Next {
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
            tracing::info!(target: "mailferry::smtp::session", reply = %r, "message refused");
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
                tracing::info!(target: "mailferry::smtp::session", from = %from, rcpts, size, reply = %reply, "message accepted");
                crate::metrics::get().message(&self.listener.name, reply.code, size);
                self.t.reply(&reply);
                Next::Continue
            }
            Outcome::Continue => {
                tracing::error!(target: "mailferry::smtp::session", from = %from, "no plugin took the message in the queue hook (add smtp-forward to [[plugins]])");
                self.t.reply(&Reply::new(451, "4.3.0", "message not queued: no delivery is configured"));
                crate::metrics::get().message(&self.listener.name, 451, size);
                Next::Continue
            }
            outcome => {
                tracing::info!(target: "mailferry::smtp::session", from = %from, rcpts, size, outcome = ?outcome, "message refused");
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
    pub(super) fn add_trace_headers(&self, message: &mut Message) {
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
