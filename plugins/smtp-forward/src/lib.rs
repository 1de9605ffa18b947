//! `smtp-forward`: hands each message to the host for delivery upstream.
//!
//! Two modes:
//! - `"queue"` (the default): the message goes into the host's durable
//!   queue and the client gets `250` once it is on stable storage; the host
//!   then delivers it through the route's relays, retrying and bouncing as
//!   needed. Nothing acknowledged is lost if the upstream is down or the
//!   server dies.
//! - `"sync"`: the message is relayed before answering DATA, so the client's
//!   reply is the upstream's decision (`250` means the upstream has it).
//!   No local copy is kept; all or nothing per message.
//!
//! # Configuration
//!
//! | Key | Default | Meaning |
//! |-----|---------|---------|
//! | `mode` | `"queue"` | `"queue"` or `"sync"` |
//! | `route` | `relay`, else `"default"` | Queue mode: the `[routes.NAME]` (or relay name) to deliver through |
//! | `relay` | `"outbox"` | Sync mode: the `[relays.NAME]` to relay to |
//!
//! Needs the `outbound` grant:
//!
//! ```toml
//! [[plugins]]
//! name = "smtp-forward"
//! grants = ["outbound"]
//! config = { route = "default" }
//! ```
//!
//! # Outcomes
//!
//! Queue mode: `250 2.0.0 queued as <id>`, or `451 4.3.x` if the message
//! could not be stored (the client retries).
//!
//! Sync mode:
//!
//! | Upstream | Reply to the client |
//! |----------|---------------------|
//! | accepted | `250 2.0.0 queued upstream: <upstream text>` |
//! | temporary failure (4xx, connection failure, timeout) | `451` with the upstream's `4.x.x` enhanced code (else `4.4.0`) and its code and text |
//! | permanent failure | the upstream's `5xx` code (else `554`) with its `5.x.x` enhanced code (else `5.0.0`) and its code and text |
//!
//! Upstream text is reduced to printable ASCII on one line and shortened, so
//! whatever the upstream says cannot break the reply. Every outcome is
//! logged.
//!
//! At `MAIL FROM` a declared size (`SIZE=n`) larger than every relay of the
//! route takes (`max_message_size`, or the provider's limit) is refused with
//! `552 5.3.4`, before the client sends the message.
//!
//! At `MAIL FROM` the plugin sets the transaction note `route` to the route
//! (queue mode) or relay (sync mode) the message will take, so plugins that
//! act before the queue hook can adapt to it (`dkim-sign` leaves out the
//! header fields a provider rewrites).

use mailferry_plugin_sdk::{export_plugin, Address, Host, Message, Plugin, Reply, Scope, Verdict};
use serde::Deserialize;

/// The transaction note naming the route of the message.
pub const ROUTE_NOTE: &str = "route";

/// Longest upstream text passed on to the client; replies stay well under
/// the 512-octet SMTP line limit.
const MAX_UPSTREAM_TEXT: usize = 200;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Queue,
    Sync,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    pub route: Option<String>,
    pub relay: Option<String>,
}

pub struct SmtpForward {
    mode: Mode,
    /// The route (queue mode) or relay (sync mode).
    target: String,
}

impl Plugin for SmtpForward {
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, String> {
        let target = match config.mode {
            Mode::Queue => config.route.or(config.relay).unwrap_or_else(|| "default".into()),
            Mode::Sync => {
                if config.route.is_some() {
                    return Err("`route` is for mode = \"queue\"; in sync mode name the relay with `relay`".into());
                }
                config.relay.unwrap_or_else(|| "outbox".into())
            }
        };
        if target.trim().is_empty() {
            return Err("`route`/`relay` must name a route or relay of the host configuration".into());
        }
        if config.mode == Mode::Queue && host.route_for(&target, "").is_none() {
            return Err(format!(
                "route {target:?} is neither a [routes.{target}] nor a [relays.{target}] of the host configuration"
            ));
        }
        Ok(SmtpForward { mode: config.mode, target })
    }

    fn mail(&self, host: &Host, sender: &Address) -> Verdict {
        let route = match self.mode {
            Mode::Queue => host.route_for(&self.target, &sender.address).unwrap_or_else(|| self.target.clone()),
            Mode::Sync => self.target.clone(),
        };
        // A client that announces the size (`MAIL FROM:<…> SIZE=n`) learns at
        // once that the route cannot take it, before sending the message.
        let announced =
            sender.params.iter().find(|p| p.key.eq_ignore_ascii_case("SIZE")).and_then(|p| p.value.as_deref());
        if let (Some(announced), Some(limit)) =
            (announced.and_then(|v| v.parse::<u64>().ok()), host.max_message_size(&route))
        {
            if announced > limit {
                host.info(format!(
                    "route {route:?}: announced size {announced} is over the relays' limit of {limit} octets"
                ));
                return Verdict::deny(
                    552,
                    "5.3.4",
                    format!("message too big: the relays of this server take at most {limit} octets"),
                );
            }
        }
        host.set_note(Scope::Transaction, ROUTE_NOTE, route);
        Verdict::Continue
    }

    fn queue(&self, host: &Host, msg: &Message) -> Verdict {
        match self.mode {
            Mode::Queue => self.enqueue(host, msg),
            Mode::Sync => self.relay_now(host, msg),
        }
    }
}

export_plugin!(SmtpForward);

impl SmtpForward {
    fn enqueue(&self, host: &Host, msg: &Message) -> Verdict {
        match host.enqueue(&self.target, msg) {
            Ok(id) => Verdict::accept_with(250, "2.0.0", format!("queued as {id}")),
            Err(failure) if failure.temporary => {
                host.warn(format!("route {:?}: not queued: {}", self.target, describe(&failure.reply)));
                let enhanced = enhanced_of_class(&failure.reply, '4').unwrap_or("4.3.0");
                Verdict::deny_soft(451, enhanced, with_upstream_text("message not queued", &failure.reply.text))
            }
            Err(failure) => {
                // Refused for good (too big for every relay of the route).
                host.info(format!("route {:?}: refused: {}", self.target, describe(&failure.reply)));
                let code = if (500..=599).contains(&failure.reply.code) { failure.reply.code } else { 554 };
                let enhanced = enhanced_of_class(&failure.reply, '5').unwrap_or("5.0.0");
                Verdict::deny(code, enhanced, sanitize(&failure.reply.text))
            }
        }
    }

    fn relay_now(&self, host: &Host, msg: &Message) -> Verdict {
        let relay = &self.target;
        match host.send_now(relay, msg) {
            Ok(upstream) => {
                host.info(format!("relay {relay:?} accepted the message: {}", describe(&upstream)));
                Verdict::accept_with(250, "2.0.0", with_upstream_text("queued upstream", &upstream.text))
            }
            Err(failure) if failure.temporary => {
                host.warn(format!("relay {relay:?} failed temporarily: {}", describe(&failure.reply)));
                let enhanced = enhanced_of_class(&failure.reply, '4').unwrap_or("4.4.0");
                let text = format!("upstream temporarily failed: {}", upstream_summary(&failure.reply));
                Verdict::deny_soft(451, enhanced, text)
            }
            Err(failure) => {
                host.warn(format!("relay {relay:?} refused the message: {}", describe(&failure.reply)));
                let code = if (500..=599).contains(&failure.reply.code) { failure.reply.code } else { 554 };
                let enhanced = enhanced_of_class(&failure.reply, '5').unwrap_or("5.0.0");
                let text = format!("upstream refused: {}", upstream_summary(&failure.reply));
                Verdict::deny(code, enhanced, text)
            }
        }
    }
}

/// The reply for the log: code, enhanced code, and the text with control
/// characters escaped (it came from the network).
fn describe(reply: &Reply) -> String {
    match &reply.enhanced {
        Some(enhanced) => format!("{} {} {:?}", reply.code, enhanced.escape_debug(), reply.text),
        None => format!("{} {:?}", reply.code, reply.text),
    }
}

/// `prefix: text`, or just `prefix` when the upstream said nothing.
fn with_upstream_text(prefix: &str, text: &str) -> String {
    let text = sanitize(text);
    if text.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}: {text}")
    }
}

/// The upstream's code and text, since the client gets our code instead.
fn upstream_summary(reply: &Reply) -> String {
    let text = sanitize(&reply.text);
    if text.is_empty() {
        reply.code.to_string()
    } else {
        format!("{} {text}", reply.code)
    }
}

/// The reply's enhanced code if it is well-formed (`c.d{1,3}.d{1,3}`) and
/// of class `class`.
fn enhanced_of_class(reply: &Reply, class: char) -> Option<&str> {
    let enhanced = reply.enhanced.as_deref()?;
    let number = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = enhanced.split('.').collect();
    let well_formed = matches!(parts[..], [c, subject, detail]
        if c.len() == 1 && c.starts_with(class) && number(subject) && number(detail));
    well_formed.then_some(enhanced)
}

/// One line of printable ASCII: whitespace runs become one space, other
/// characters outside printable ASCII become `?`, and the result is cut to
/// [`MAX_UPSTREAM_TEXT`].
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_UPSTREAM_TEXT));
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(if c.is_ascii_graphic() { c } else { '?' });
        if out.len() > MAX_UPSTREAM_TEXT {
            out.truncate(MAX_UPSTREAM_TEXT - 3);
            out.push_str("...");
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mailferry_plugin_sdk::testing::{TestHost, TestMessage};
    use mailferry_plugin_sdk::{Failure, Level};

    use super::*;

    /// A host for sync mode, as most of these tests are about relaying now.
    fn sync_host() -> TestHost {
        TestHost::new().config_toml("mode = \"sync\"")
    }

    fn message() -> TestMessage {
        TestMessage::parse("From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
    }

    fn reply_of(verdict: Option<Verdict>) -> Reply {
        verdict.expect("queue is implemented").reply().expect("verdict carries a reply").clone()
    }

    #[test]
    fn accepted_upstream_accepts_with_its_text() {
        let host = sync_host()
            .envelope("a@example.org", ["b@example.org"])
            .relay(|_, _| Ok(Reply::new(250, "2.0.0", "Ok: queued as 4F2A1")));
        let p = host.instantiate::<SmtpForward>().unwrap();
        assert_eq!(
            p.queue(&message()),
            Some(Verdict::accept_with(250, "2.0.0", "queued upstream: Ok: queued as 4F2A1"))
        );
        let sent = host.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].relay, "outbox", "default relay");
        assert_eq!(sent[0].message, message().to_bytes());
        host.assert_logged(Level::Info, "relay \"outbox\" accepted the message: 250 2.0.0 \"Ok: queued as 4F2A1\"");
    }

    #[test]
    fn configured_relay_is_used() {
        let host = sync_host().config_toml("mode = \"sync\"\nrelay = \"smarthost\"").relay(|relay, _| {
            if relay == "smarthost" {
                Ok(Reply::new(250, "", ""))
            } else {
                panic!("relay {relay}")
            }
        });
        let p = host.instantiate::<SmtpForward>().unwrap();
        assert_eq!(p.queue(&message()), Some(Verdict::accept_with(250, "2.0.0", "queued upstream")));
        assert_eq!(host.sent()[0].relay, "smarthost");
    }

    #[test]
    fn temporary_failure_is_451_keeping_a_class_4_enhanced_code() {
        let host =
            sync_host().relay(|_, _| Err(Failure { temporary: true, reply: Reply::new(452, "4.2.2", "mailbox full") }));
        let p = host.instantiate::<SmtpForward>().unwrap();
        assert_eq!(
            p.queue(&message()),
            Some(Verdict::deny_soft(451, "4.2.2", "upstream temporarily failed: 452 mailbox full"))
        );
        host.assert_logged(Level::Warn, "relay \"outbox\" failed temporarily: 452 4.2.2 \"mailbox full\"");
    }

    #[test]
    fn temporary_failure_without_usable_enhanced_code_is_4_4_0() {
        for (code, enhanced) in
            [(421, ""), (451, "5.1.1"), (450, "4.x.1"), (450, "4.1"), (450, "4.1.1.1"), (450, "4.1234.1")]
        {
            let host = sync_host().relay(move |_, _| {
                Err(Failure { temporary: true, reply: Reply::new(code, enhanced, "connection refused") })
            });
            let reply = reply_of(host.instantiate::<SmtpForward>().unwrap().queue(&message()));
            assert_eq!(reply.code, 451, "{code} {enhanced}");
            assert_eq!(reply.enhanced.as_deref(), Some("4.4.0"), "{code} {enhanced}");
            assert_eq!(reply.text, format!("upstream temporarily failed: {code} connection refused"));
        }
    }

    #[test]
    fn permanent_failure_keeps_the_upstream_5xx() {
        let host = sync_host()
            .relay(|_, _| Err(Failure { temporary: false, reply: Reply::new(550, "5.1.1", "no such user") }));
        let p = host.instantiate::<SmtpForward>().unwrap();
        assert_eq!(p.queue(&message()), Some(Verdict::deny(550, "5.1.1", "upstream refused: 550 no such user")));
        host.assert_logged(Level::Warn, "relay \"outbox\" refused the message: 550 5.1.1 \"no such user\"");
    }

    #[test]
    fn permanent_failure_with_a_non_5xx_code_is_554() {
        let host =
            sync_host().relay(|_, _| Err(Failure { temporary: false, reply: Reply::new(421, "4.4.2", "weird") }));
        let reply = reply_of(host.instantiate::<SmtpForward>().unwrap().queue(&message()));
        assert_eq!(reply, Reply::new(554, "5.0.0", "upstream refused: 421 weird"));
    }

    #[test]
    fn upstream_text_is_sanitized_and_shortened() {
        let long = format!("line one\r\n\tline\x07two ünïcode {}", "x".repeat(500));
        let host = sync_host().relay(move |_, _| Ok(Reply::new(250, "2.0.0", long.clone())));
        let reply = reply_of(host.instantiate::<SmtpForward>().unwrap().queue(&message()));
        assert!(reply.text.starts_with("queued upstream: line one line?two ?n?code xxx"), "{}", reply.text);
        assert!(reply.text.ends_with("..."));
        assert!(reply.text.len() <= "queued upstream: ".len() + MAX_UPSTREAM_TEXT);
        assert!(reply.text.bytes().all(|b| (0x20..0x7f).contains(&b)));
        host.assert_logged(Level::Info, "\\r\\n\\tline\\u{7}two");
    }

    #[test]
    fn sanitize_edges() {
        assert_eq!(sanitize("  \r\n "), "");
        assert_eq!(sanitize("  a  b  "), "a b");
        assert_eq!(sanitize(&"y".repeat(MAX_UPSTREAM_TEXT)), "y".repeat(MAX_UPSTREAM_TEXT));
        assert_eq!(sanitize(&"y".repeat(MAX_UPSTREAM_TEXT + 1)).len(), MAX_UPSTREAM_TEXT);
    }

    #[test]
    fn configuration_defaults_and_errors() {
        let p = sync_host().instantiate::<SmtpForward>().unwrap();
        assert_eq!(p.plugin().target, "outbox");
        assert!(sync_host().config_toml("relays = \"x\"").instantiate::<SmtpForward>().is_err());
        assert!(sync_host().config_toml("relay = \" \"").instantiate::<SmtpForward>().is_err());
    }

    #[test]
    fn only_mail_and_queue_are_implemented() {
        let p = sync_host().instantiate::<SmtpForward>().unwrap();
        assert_eq!(p.connect(), None);
        assert_eq!(p.mail("a@example.org"), Some(Verdict::Continue));
        assert_eq!(p.data(&message()), None);
    }

    #[test]
    fn queue_mode_is_the_default_and_answers_with_the_queue_id() {
        let host = TestHost::new().route("default").envelope("a@example.org", ["b@example.org"]);
        let p = host.instantiate::<SmtpForward>().unwrap();
        assert_eq!(p.queue(&message()), Some(Verdict::accept_with(250, "2.0.0", "queued as TESTQ1")));
        let q = host.queued();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].route, "default");
        assert_eq!(q[0].message, message().to_bytes());
        assert!(host.sent().is_empty());
    }

    #[test]
    fn a_declared_size_over_the_route_limit_is_refused_at_mail_from() {
        let host = TestHost::new().config_toml("route = \"ses\"").route("ses").route_max_size("ses", 1000);
        let p = host.instantiate::<SmtpForward>().unwrap();
        let big = Address::new("a@example.org").with_param("SIZE", Some("1001"));
        let v = p.mail(big).unwrap();
        let r = v.reply().expect("a refusal").clone();
        assert_eq!((r.code, r.enhanced.as_deref()), (552, Some("5.3.4")), "{r:?}");
        assert!(r.text.contains("at most 1000 octets"), "{r:?}");
        // At the limit, without SIZE, or with a malformed one: the end of
        // DATA decides.
        for sender in [
            Address::new("a@example.org").with_param("size", Some("1000")),
            Address::new("a@example.org"),
            Address::new("a@example.org").with_param("SIZE", Some("lots")),
        ] {
            assert_eq!(p.mail(sender), Some(Verdict::Continue));
        }
        // No known limit: nothing to check.
        let host = TestHost::new().config_toml("route = \"ses\"").route("ses");
        let p = host.instantiate::<SmtpForward>().unwrap();
        assert_eq!(
            p.mail(Address::new("a@example.org").with_param("SIZE", Some("99999999999"))),
            Some(Verdict::Continue)
        );
    }

    #[test]
    fn queue_mode_sets_the_route_note_and_checks_the_route_exists() {
        let host = TestHost::new().config_toml("route = \"ses\"").route("ses");
        let p = host.instantiate::<SmtpForward>().unwrap();
        assert_eq!(p.mail("a@example.org"), Some(Verdict::Continue));
        assert_eq!(host.note(Scope::Transaction, ROUTE_NOTE), Some("ses".into()));
        let err = TestHost::new().config_toml("route = \"nope\"").instantiate::<SmtpForward>().err().unwrap();
        assert!(err.contains("neither a [routes.nope] nor a [relays.nope]"), "{err}");
        let err =
            TestHost::new().config_toml("mode = \"sync\"\nroute = \"x\"").instantiate::<SmtpForward>().err().unwrap();
        assert!(err.contains("`route` is for mode"), "{err}");
    }
}
