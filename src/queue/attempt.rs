//! One delivery attempt: the route's relays in order, one outcome per recipient, then what
//! follows (done, a retry by the schedule, a bounce), and the pauses a throttling upstream asks for.
//!
//! Its log lines keep the target `mailferry::queue` they had before this file was split out: operators'
//! log filters may match on it.

use super::*;

impl Queue {
    /// One delivery attempt of one message through its route.
    pub(super) async fn attempt(&self, id: &str) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Some(mut entry) = self.state.lock().unwrap().entries.get(id).cloned() else { return };
        if !entry.dsn_pending.is_empty() {
            if !self.retry_bounces(&mut entry).await {
                // Delivery waits until the sender can be told about the failures.
                self.reschedule(entry, Some("the bounce could not be queued yet".into())).await;
                return;
            }
            if entry.is_done() {
                return; // removed by retry_bounces
            }
        }
        let message = match self.message_of(id).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(target: "mailferry::queue", queue_id = id, error = %e, "cannot read the queued message; will retry");
                self.reschedule(entry, Some(format!("spool read error: {e}"))).await;
                return;
            }
        };
        let mut bounced_now = Vec::new();
        let touched: Vec<usize> =
            (0..entry.rcpts.len()).filter(|&i| entry.rcpts[i].state == RcptState::Pending).collect();
        // When the only obstacle was a relay asking us to slow down, try
        // again right after its pause rather than by the retry schedule.
        let mut throttled_for: Option<Duration> = None;
        let mut other_failure = false;
        let delivery = self.delivery();
        let relays = &delivery.relays;
        for relay in relays_of(&delivery.routes, &entry.route) {
            if let Some(wait) = self.paused(&relay) {
                throttled_for = Some(throttled_for.map_or(wait, |t| t.min(wait)));
                continue;
            }
            let pending: Vec<usize> =
                (0..entry.rcpts.len()).filter(|&i| entry.rcpts[i].state == RcptState::Pending).collect();
            if pending.is_empty() {
                break;
            }
            if relays.max_message_size(&relay).is_some_and(|limit| message.len() > limit) {
                // Another relay of the route takes it (checked at submission).
                continue;
            }
            let slot = self.slot(&relay);
            let _permit = slot.acquire_owned().await;
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            // Providers cap recipients per message (SES: 50): one
            // transaction per part.
            let per_message = relays.max_recipients(&relay).unwrap_or(usize::MAX).max(1);
            for part in pending.chunks(per_message) {
                let rcpts: Vec<DeliveryRcpt> = part
                    .iter()
                    .map(|&i| DeliveryRcpt { address: &entry.rcpts[i].address, params: &entry.rcpts[i].params })
                    .collect();
                let result = relays.deliver(&relay, &entry.mail_from, &entry.mail_params, &rcpts, &message, id).await;
                drop(rcpts);
                let mut throttle = false;
                match result {
                    Ok(outcomes) => {
                        for (&i, outcome) in part.iter().zip(outcomes) {
                            let r = &mut entry.rcpts[i];
                            r.relay = Some(relay.clone());
                            match outcome {
                                RcptOutcome::Delivered(reply) => {
                                    crate::metrics::get().upstream(&relay, "delivered", 1);
                                    tracing::info!(target: "mailferry::queue", queue_id = id, relay = %relay, rcpt = %r.address, reply = %reply, "delivered");
                                    r.state = RcptState::Delivered;
                                    r.last_reply = Some(reply);
                                    self.unthrottle(&relay);
                                }
                                RcptOutcome::Permanent(reply) => {
                                    crate::metrics::get().upstream(&relay, "permanent", 1);
                                    tracing::warn!(target: "mailferry::queue", queue_id = id, relay = %relay, rcpt = %r.address, reply = %reply, "refused for good; bouncing");
                                    r.state = RcptState::Bounced;
                                    r.last_reply = Some(reply);
                                    bounced_now.push(i);
                                }
                                RcptOutcome::Temporary(reply) => {
                                    crate::metrics::get().upstream(&relay, "temporary", 1);
                                    tracing::info!(target: "mailferry::queue", queue_id = id, relay = %relay, rcpt = %r.address, reply = %reply, "deferred");
                                    if is_throttling(&reply) {
                                        throttle = true;
                                    } else {
                                        other_failure = true;
                                    }
                                    r.last_reply = Some(reply);
                                }
                            }
                        }
                    }
                    Err(f) => {
                        let result = if f.temporary { "temporary" } else { "permanent" };
                        crate::metrics::get().upstream(&relay, result, part.len() as u64);
                        let reply = format!(
                            "{} {} {}",
                            f.reply.code,
                            f.reply.enhanced.as_deref().unwrap_or(""),
                            f.reply.text()
                        );
                        for &i in part {
                            let r = &mut entry.rcpts[i];
                            r.relay = Some(relay.clone());
                            r.last_reply = Some(reply.clone());
                            if !f.temporary {
                                r.state = RcptState::Bounced;
                                bounced_now.push(i);
                            }
                        }
                        tracing::warn!(target: "mailferry::queue", queue_id = id, relay = %relay, temporary = f.temporary, reply = %reply, "delivery attempt failed");
                        if f.temporary && is_throttling(&reply) {
                            throttle = true;
                        } else if f.temporary {
                            other_failure = true;
                        }
                        entry.last_error = Some(reply);
                    }
                }
                if throttle {
                    let wait = self.throttle(&relay);
                    throttled_for = Some(throttled_for.map_or(wait, |t| t.min(wait)));
                    break;
                }
            }
        }
        entry.attempts += 1;
        let expired = !entry.is_done() && now() - entry.created >= self.cfg.max_age.as_secs() as i64;
        if expired {
            for (i, r) in entry.rcpts.iter_mut().enumerate() {
                if r.state == RcptState::Pending {
                    let last = r.last_reply.clone().unwrap_or_else(|| "no answer".into());
                    r.last_reply = Some(format!("4.4.7 gave up after {} attempts; last: {last}", entry.attempts));
                    r.state = RcptState::Bounced;
                    bounced_now.push(i);
                }
            }
            tracing::warn!(target: "mailferry::queue", queue_id = id, attempts = entry.attempts, "expired; bouncing what was not delivered");
        }
        self.report_events(&entry, &touched);
        if !bounced_now.is_empty() && !self.bounce(&entry, &bounced_now, &message).await {
            // Kept until the bounce is queued: the sender must hear of it.
            entry.dsn_pending.extend(bounced_now.iter().copied());
        }
        if entry.is_done() && entry.dsn_pending.is_empty() {
            if let Err(e) = self.spool.remove(id).await {
                tracing::error!(target: "mailferry::queue", queue_id = id, error = %e, "cannot remove a finished message from the spool");
            }
            self.state.lock().unwrap().entries.remove(id);
            tracing::info!(target: "mailferry::queue", queue_id = id, attempts = entry.attempts, "done");
        } else if let (Some(wait), false) = (throttled_for, other_failure) {
            self.reschedule_in(entry, wait).await;
        } else {
            self.reschedule(entry, None).await;
        }
    }

    /// How long `relay` is still paused for, if it is.
    pub(super) fn paused(&self, relay: &str) -> Option<Duration> {
        let t = self.throttled.lock().unwrap().get(relay).copied()?;
        let left = t.until.saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Pauses `relay`: 1 s at first, doubling while it keeps throttling.
    pub(super) fn throttle(&self, relay: &str) -> Duration {
        let mut map = self.throttled.lock().unwrap();
        let wait = map.get(relay).map_or(Duration::from_secs(1), |t| (t.wait * 2).min(MAX_THROTTLE_PAUSE));
        map.insert(relay.to_string(), Throttle { until: tokio::time::Instant::now() + wait, wait });
        tracing::warn!(target: "mailferry::queue", relay, pause_secs = wait.as_secs(), "the relay asks us to slow down; pausing it");
        wait
    }

    pub(super) fn unthrottle(&self, relay: &str) {
        self.throttled.lock().unwrap().remove(relay);
    }

    /// Tries again after `wait` without moving along the retry schedule.
    pub(super) async fn reschedule_in(&self, mut entry: Entry, wait: Duration) {
        entry.attempts = entry.attempts.saturating_sub(1);
        entry.next_attempt = now() + wait.as_secs().max(1) as i64;
        if let Err(e) = self.spool.update(&entry).await {
            tracing::error!(target: "mailferry::queue", queue_id = %entry.id, error = %e, "cannot update the spool entry");
        }
        tracing::info!(target: "mailferry::queue", queue_id = %entry.id, next_in_secs = wait.as_secs().max(1), "relay throttled; will retry after its pause");
        self.state.lock().unwrap().entries.insert(entry.id.clone(), entry);
    }

    pub(super) async fn reschedule(&self, mut entry: Entry, error: Option<String>) {
        if error.is_some() {
            entry.last_error = error;
        }
        let schedule = &self.cfg.retry_schedule;
        let step = (entry.attempts.max(1) as usize - 1).min(schedule.len() - 1);
        entry.next_attempt = now() + schedule[step].as_secs() as i64;
        if let Err(e) = self.spool.update(&entry).await {
            tracing::error!(target: "mailferry::queue", queue_id = %entry.id, error = %e, "cannot update the spool entry");
        }
        tracing::info!(target: "mailferry::queue", queue_id = %entry.id, attempts = entry.attempts, next_in_secs = schedule[step].as_secs(), "will retry");
        self.state.lock().unwrap().entries.insert(entry.id.clone(), entry);
    }

    /// Sends a DSN for the given recipients to the envelope sender, through
    /// the same route. Bounces of bounces (null sender) are only logged.
    /// `false` if the bounce could not be queued (it is tried again later).
    pub(super) async fn bounce(&self, entry: &Entry, which: &[usize], message: &[u8]) -> bool {
        if entry.mail_from.is_empty() {
            for &i in which {
                tracing::warn!(target: "mailferry::queue", queue_id = %entry.id, rcpt = %entry.rcpts[i].address, "a bounce could not be delivered; dropped (never bounce a bounce)");
            }
            return true;
        }
        // RFC 3461: NOTIFY without FAILURE (e.g. NEVER) asks for no bounce.
        let which: Vec<usize> = which
            .iter()
            .copied()
            .filter(|&i| {
                let notify = entry.rcpts[i].params.iter().find(|(k, _)| k == "NOTIFY").and_then(|(_, v)| v.clone());
                notify.is_none_or(|n| n.to_ascii_uppercase().split(',').any(|w| w == "FAILURE"))
            })
            .collect();
        if which.is_empty() {
            return true;
        }
        let header_end = message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or(message.len());
        let recipients = which
            .iter()
            .map(|&i| {
                let r = &entry.rcpts[i];
                let reply = r.last_reply.clone().unwrap_or_default();
                dsn::RecipientReport {
                    address: r.address.clone(),
                    original: r.params.iter().find(|(k, _)| k == "ORCPT").and_then(|(_, v)| v.clone()),
                    action: dsn::Action::Failed,
                    status: status_of(&reply),
                    remote_mta: r.relay.clone(),
                    diagnostic: Some(reply),
                    last_attempt: Some(chrono::Utc::now()),
                    will_retry_until: None,
                }
            })
            .collect();
        let postmaster = format!("MAILER-DAEMON@{}", self.hostname);
        let report = dsn::Bounce {
            reporting_mta: &self.hostname,
            postmaster: &postmaster,
            to: &entry.mail_from,
            original_envelope_id: entry.mail_params.iter().find(|(k, _)| k == "ENVID").and_then(|(_, v)| v.as_deref()),
            arrival: chrono::DateTime::from_timestamp(entry.created, 0).unwrap_or_else(chrono::Utc::now),
            recipients,
            original_headers: &message[..header_end],
            now: chrono::Utc::now(),
            message_id_domain: &self.hostname,
        };
        let bytes = dsn::build(&report);
        let params = dsn::needs(&bytes).mail_params().into_iter().map(|(key, value)| Param { key, value }).collect();
        let envelope = Envelope {
            mail_from: Address { address: String::new(), params },
            rcpt_to: vec![Address::bare(entry.mail_from.clone())],
        };
        match Box::pin(self.enqueue(&entry.route, &envelope, bytes, &entry.session)).await {
            Ok(dsn_id) => {
                tracing::info!(target: "mailferry::queue", queue_id = %entry.id, dsn = %dsn_id, to = %entry.mail_from, "bounce queued");
                true
            }
            Err(f) => {
                tracing::error!(target: "mailferry::queue", queue_id = %entry.id, reply = %f.reply.text(), "cannot queue the bounce; keeping the message to try again");
                false
            }
        }
    }

    /// Queues bounces that could not be queued before; `true` once none is
    /// left.
    pub(super) async fn retry_bounces(&self, entry: &mut Entry) -> bool {
        let which = std::mem::take(&mut entry.dsn_pending);
        let message = self.read_message(&entry.id).await.unwrap_or_default();
        if self.bounce(entry, &which, &message).await {
            if entry.is_done() {
                if let Err(e) = self.spool.remove(&entry.id).await {
                    tracing::error!(target: "mailferry::queue", queue_id = %entry.id, error = %e, "cannot remove a finished message from the spool");
                }
                self.state.lock().unwrap().entries.remove(&entry.id);
            }
            true
        } else {
            entry.dsn_pending = which;
            false
        }
    }
}
