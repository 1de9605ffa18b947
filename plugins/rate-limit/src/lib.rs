//! `rate-limit`: messages and recipients per login and per client address
//! per window, answered with `451 4.7.1`.
//!
//! It protects the upstream account (a provider's sending quota, the
//! domain's reputation) from a stolen password or a runaway script. Counts
//! are kept by the host (`counters` grant): in its memory, or in Redis when
//! `[counters] redis` is set, so every mailferry node behind a load balancer
//! counts the same mail.
//!
//! # Configuration
//!
//! | Key | Default | Meaning |
//! |-----|---------|---------|
//! | `limits` | required | A list of limits, each `{ per = "login" \| "ip", messages = N, recipients = N, window_secs = S }`: `messages`, `recipients` or both; `window_secs` defaults to `3600`; at most 8 limits on messages and 8 on recipients |
//! | `exempt_trusted` | `false` | Leave sessions from the listener's trusted networks unlimited (else they are limited per `ip`; they have no login) |
//!
//! ```toml
//! [[plugins]]
//! name = "rate-limit"
//! grants = ["counters"]
//! [plugins.config]
//! limits = [
//!   { per = "login", messages = 200, recipients = 1000 },
//!   { per = "ip", messages = 1000, recipients = 5000 },
//!   { per = "login", messages = 2000, window_secs = 86400 },
//! ]
//! ```
//!
//! # When mail is counted
//!
//! - `MAIL FROM`: refused if a message limit is already reached, so the
//!   client does not send a body only to have it refused. Nothing is counted.
//! - `RCPT TO`: each recipient is counted, if every recipient limit has room;
//!   else refused and not counted. Pipelined recipients are judged one by
//!   one, so a client cannot get past a limit by sending them all at once.
//! - `DATA` (the data hook, once the message has arrived): the message is
//!   counted, if every message limit has room; else refused and not counted.
//!
//! What the plugin refuses is never counted, so a client retrying a refused
//! message does not push its own limit further away. List the plugin after
//! plugins that may refuse a message at DATA (`dkim-sign` with
//! `on_missing_key = "defer"`), so a message they refuse is not counted.
//!
//! Only sessions that may relay are limited: authenticated ones (per login
//! and per address) and those from trusted networks (per address, unless
//! `exempt_trusted`). An IPv6 client is counted per /64, logins without
//! regard to case.
//!
//! # Replies
//!
//! `451 4.7.1 rate limit: 200 messages per hour for this login, try again
//! later` (or `… recipients …`, `… for this address`). If the host cannot
//! count (its shared store is down and it is set to refuse), `451 4.3.0`.

use mailferry_plugin_sdk::{export_plugin, Address, Connection, Host, Message, Plugin, Verdict};
use serde::Deserialize;

/// Longest window the host keeps (31 days).
const MAX_WINDOW_SECS: u32 = 31 * 24 * 3600;

/// Limits on messages, or on recipients: a step checks each and then counts
/// each, and the host allows 16 counter calls per hook call.
const MAX_LIMITS_PER_KIND: usize = 8;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    Login,
    Ip,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub per: Per,
    pub messages: Option<u64>,
    pub recipients: Option<u64>,
    #[serde(default = "default_window")]
    pub window_secs: u32,
}

fn default_window() -> u32 {
    3600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    #[serde(default)]
    pub exempt_trusted: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum What {
    Messages,
    Recipients,
}

/// One limit: at most `max` of `what` per `per` in `window_secs`.
#[derive(Debug, Clone)]
struct Limit {
    per: Per,
    what: What,
    max: u64,
    window_secs: u32,
}

impl Limit {
    fn what(&self) -> &'static str {
        match self.what {
            What::Messages => "messages",
            What::Recipients => "recipients",
        }
    }

    fn per(&self) -> &'static str {
        match self.per {
            Per::Login => "login",
            Per::Ip => "ip",
        }
    }

    /// The counter of this limit for `subject` (a login or an address).
    fn key(&self, subject: &str) -> String {
        format!("{}:{}:{}:{subject}", self.what(), self.per(), self.window_secs)
    }

    fn describe(&self) -> String {
        format!("{} {} {}", self.max, self.what(), per_window(self.window_secs))
    }

    fn refuse(&self, host: &Host, subject: &str) -> Verdict {
        host.warn(format!("rate limit reached: {} for {} {subject}", self.describe(), self.per()));
        let whom = match self.per {
            Per::Login => "login",
            Per::Ip => "address",
        };
        Verdict::deny_soft(451, "4.7.1", format!("rate limit: {} for this {whom}, try again later", self.describe()))
    }
}

/// "per hour", "per 15 minutes", …
fn per_window(secs: u32) -> String {
    let (n, unit) = match secs {
        s if s % 86400 == 0 => (s / 86400, "day"),
        s if s % 3600 == 0 => (s / 3600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 {
        format!("per {unit}")
    } else {
        format!("per {n} {unit}s")
    }
}

/// The address a client is counted under: an IPv6 client usually has a
/// whole /64, so it is the /64 (as the host's connection limits do).
fn address_key(remote_ip: &str) -> String {
    match remote_ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{}/64", std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        Ok(ip) => ip.to_string(),
        Err(_) => remote_ip.to_string(),
    }
}

pub struct RateLimit {
    limits: Vec<Limit>,
    exempt_trusted: bool,
}

impl Plugin for RateLimit {
    type Config = Config;

    fn new(config: Config, _host: &Host) -> Result<Self, String> {
        if config.limits.is_empty() {
            return Err("no limits: set limits = [{ per = \"login\", messages = 200, recipients = 1000 }, …]".into());
        }
        let mut limits = Vec::new();
        for (i, l) in config.limits.iter().enumerate() {
            if l.messages.is_none() && l.recipients.is_none() {
                return Err(format!("limits[{i}]: set messages, recipients or both"));
            }
            if !(1..=MAX_WINDOW_SECS).contains(&l.window_secs) {
                return Err(format!("limits[{i}].window_secs must be between 1 and {MAX_WINDOW_SECS} (31 days)"));
            }
            for (what, max) in [(What::Messages, l.messages), (What::Recipients, l.recipients)] {
                match max {
                    Some(0) => {
                        return Err(format!("limits[{i}]: a limit of 0 would refuse everything; use at least 1"))
                    }
                    Some(max) => limits.push(Limit { per: l.per, what, max, window_secs: l.window_secs }),
                    None => {}
                }
            }
        }
        for what in [What::Messages, What::Recipients] {
            let n = limits.iter().filter(|l| l.what == what).count();
            if n > MAX_LIMITS_PER_KIND {
                return Err(format!(
                    "{n} limits on {}: at most {MAX_LIMITS_PER_KIND} (each is checked and then counted, and a hook may make 16 counter calls)",
                    match what { What::Messages => "messages", What::Recipients => "recipients" }
                ));
            }
        }
        Ok(RateLimit { limits, exempt_trusted: config.exempt_trusted })
    }

    fn mail(&self, host: &Host, _sender: &Address) -> Verdict {
        let applicable = self.applicable(host, What::Messages);
        self.check(host, &applicable)
    }

    fn rcpt(&self, host: &Host, _recipient: &Address) -> Verdict {
        self.take(host, What::Recipients)
    }

    fn data(&self, host: &Host, _msg: &Message) -> Verdict {
        self.take(host, What::Messages)
    }
}

export_plugin!(RateLimit);

impl RateLimit {
    /// The limits on `what` that apply to this session, each with the
    /// subject it counts (the login or the address).
    fn applicable(&self, host: &Host, what: What) -> Vec<(&Limit, String)> {
        let c: Connection = host.connection();
        // The host refuses relaying for the others; nothing to count.
        if c.auth_user.is_none() && !c.trusted {
            return Vec::new();
        }
        if c.trusted && self.exempt_trusted {
            return Vec::new();
        }
        self.limits
            .iter()
            .filter(|l| l.what == what)
            .filter_map(|l| {
                let subject = match l.per {
                    Per::Login => c.auth_user.as_ref()?.to_lowercase(),
                    Per::Ip => address_key(&c.remote_ip),
                };
                Some((l, subject))
            })
            .collect()
    }

    /// Refuses if one more would not fit in any of `limits`; counts nothing.
    fn check(&self, host: &Host, limits: &[(&Limit, String)]) -> Verdict {
        for (limit, subject) in limits {
            match host.counter_check(&limit.key(subject), 1, limit.max, limit.window_secs) {
                Ok(u) if u.allowed => {}
                Ok(_) => return limit.refuse(host, subject),
                Err(e) => return unavailable(host, &e),
            }
        }
        Verdict::Continue
    }

    /// Counts one more of `what` in every limit, or refuses.
    fn take(&self, host: &Host, what: What) -> Verdict {
        let limits = self.applicable(host, what);
        // With several limits, check them all first: what one refuses is not
        // counted by the others.
        if limits.len() > 1 {
            let v = self.check(host, &limits);
            if !v.is_continue() {
                return v;
            }
        }
        for (limit, subject) in &limits {
            match host.counter_take(&limit.key(subject), 1, limit.max, limit.window_secs) {
                Ok(u) if u.allowed => {}
                // Another session took the last one since the check.
                Ok(_) => return limit.refuse(host, subject),
                Err(e) => return unavailable(host, &e),
            }
        }
        Verdict::Continue
    }
}

fn unavailable(host: &Host, error: &str) -> Verdict {
    host.error(format!("cannot count: {error}; refusing for now"));
    Verdict::deny_soft(451, "4.3.0", "rate limits unavailable, try again later")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailferry_plugin_sdk::testing::{TestHost, TestMessage};
    use mailferry_plugin_sdk::Level;

    fn host(config: &str) -> TestHost {
        let host = TestHost::new().config_toml(config);
        host.update_connection(|c| c.auth_user = Some("Alice@Example.com".into()));
        host
    }

    fn message() -> TestMessage {
        TestMessage::parse("Subject: hi\n\nhello\n")
    }

    /// One message with `rcpts` recipients, as the server would run it.
    fn send(p: &mailferry_plugin_sdk::testing::TestPlugin<RateLimit>, rcpts: usize) -> Option<Verdict> {
        let v = p.mail("alice@example.com").unwrap();
        if !v.is_continue() {
            return Some(v);
        }
        for i in 0..rcpts {
            let v = p.rcpt(format!("r{i}@example.org").as_str()).unwrap();
            if !v.is_continue() {
                return Some(v);
            }
        }
        p.data(&message())
    }

    #[test]
    fn messages_per_login_then_451_at_mail_without_counting_refusals() {
        let h = host(r#"limits = [{ per = "login", messages = 2 }]"#);
        let p = h.instantiate::<RateLimit>().unwrap();
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
        let refused =
            Verdict::deny_soft(451, "4.7.1", "rate limit: 2 messages per hour for this login, try again later");
        for _ in 0..3 {
            assert_eq!(send(&p, 1), Some(refused.clone()));
        }
        assert_eq!(h.counter("messages:login:3600:alice@example.com", 3600), 2);
        h.assert_logged(Level::Warn, "rate limit reached: 2 messages per hour for login alice@example.com");
        // Another login has its own count.
        h.update_connection(|c| c.auth_user = Some("bob@example.com".into()));
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
        // An hour later Alice may send again.
        h.update_connection(|c| c.auth_user = Some("alice@example.com".into()));
        h.advance_clock(3600);
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
    }

    #[test]
    fn recipients_per_address_are_judged_one_by_one() {
        let h = host(r#"limits = [{ per = "ip", recipients = 3, window_secs = 900 }]"#);
        let p = h.instantiate::<RateLimit>().unwrap();
        assert_eq!(p.mail("alice@example.com"), Some(Verdict::Continue));
        for i in 0..3 {
            assert_eq!(p.rcpt(format!("r{i}@example.org").as_str()), Some(Verdict::Continue));
        }
        let refused = Verdict::deny_soft(
            451,
            "4.7.1",
            "rate limit: 3 recipients per 15 minutes for this address, try again later",
        );
        assert_eq!(p.rcpt("r4@example.org"), Some(refused.clone()));
        assert_eq!(p.rcpt("r5@example.org"), Some(refused));
        assert_eq!(h.counter("recipients:ip:900:192.0.2.10", 900), 3);
    }

    #[test]
    fn what_one_limit_refuses_the_others_do_not_count() {
        let h = host(r#"limits = [{ per = "login", recipients = 10 }, { per = "ip", recipients = 1 }]"#);
        let p = h.instantiate::<RateLimit>().unwrap();
        p.mail("alice@example.com");
        assert_eq!(p.rcpt("a@example.org"), Some(Verdict::Continue));
        assert!(!p.rcpt("b@example.org").unwrap().is_continue());
        assert!(!p.rcpt("c@example.org").unwrap().is_continue());
        assert_eq!(h.counter("recipients:login:3600:alice@example.com", 3600), 1);
    }

    #[test]
    fn sessions_that_cannot_relay_are_not_counted_and_trusted_ones_per_address() {
        let h =
            TestHost::new().config_toml(r#"limits = [{ per = "ip", messages = 1 }, { per = "login", messages = 1 }]"#);
        let p = h.instantiate::<RateLimit>().unwrap();
        // Neither authenticated nor trusted: the host refuses relaying anyway.
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
        // Trusted (cron on the same machine): limited per address.
        h.update_connection(|c| c.trusted = true);
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
        assert!(!send(&p, 1).unwrap().is_continue());
        let exempt = TestHost::new().config_toml(
            r#"exempt_trusted = true
limits = [{ per = "ip", messages = 1 }]"#,
        );
        exempt.update_connection(|c| c.trusted = true);
        let p = exempt.instantiate::<RateLimit>().unwrap();
        for _ in 0..3 {
            assert_eq!(send(&p, 1), Some(Verdict::Continue));
        }
    }

    #[test]
    fn an_ipv6_client_is_counted_per_64() {
        let h = host(r#"limits = [{ per = "ip", messages = 1 }]"#);
        let p = h.instantiate::<RateLimit>().unwrap();
        h.update_connection(|c| c.remote_ip = "2001:db8:1:2::10".into());
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
        h.update_connection(|c| c.remote_ip = "2001:db8:1:2:ffff::99".into());
        assert!(!send(&p, 1).unwrap().is_continue());
        h.update_connection(|c| c.remote_ip = "2001:db8:1:3::10".into());
        assert_eq!(send(&p, 1), Some(Verdict::Continue));
        assert_eq!(h.counter("messages:ip:3600:2001:db8:1:2::/64", 3600), 1);
    }

    #[test]
    fn counters_down_is_a_temporary_failure() {
        let h = host(r#"limits = [{ per = "login", messages = 5 }]"#);
        let p = h.instantiate::<RateLimit>().unwrap();
        h.set_counters_error(Some("counters unavailable: Redis did not answer"));
        assert_eq!(
            p.mail("alice@example.com"),
            Some(Verdict::deny_soft(451, "4.3.0", "rate limits unavailable, try again later"))
        );
        h.assert_logged(Level::Error, "Redis did not answer");
    }

    #[test]
    fn configuration_mistakes_are_refused() {
        for (config, expect) in [
            ("", "no limits"),
            (r#"limits = [{ per = "login" }]"#, "limits[0]: set messages, recipients or both"),
            (r#"limits = [{ per = "ip", messages = 0 }]"#, "a limit of 0"),
            (r#"limits = [{ per = "ip", messages = 1, window_secs = 0 }]"#, "window_secs must be between"),
            (r#"limits = [{ per = "domain", messages = 1 }]"#, "unknown variant"),
            (r#"limits = [{ per = "ip", mesages = 1 }]"#, "unknown field"),
        ] {
            let err = TestHost::new().config_toml(config).instantiate::<RateLimit>().err().unwrap();
            assert!(err.contains(expect), "{config}: {err}");
        }
    }

    #[test]
    fn windows_read_naturally() {
        assert_eq!(per_window(3600), "per hour");
        assert_eq!(per_window(86400), "per day");
        assert_eq!(per_window(7 * 86400), "per 7 days");
        assert_eq!(per_window(900), "per 15 minutes");
        assert_eq!(per_window(90), "per 90 seconds");
    }

    #[test]
    fn more_limits_than_a_hook_may_count_are_refused_at_start() {
        let nine = [r#"{ per = "login", messages = 5, window_secs = 60 }"#; 9].join(", ");
        let err = TestHost::new()
            .config_toml(&format!("limits = [{nine}]"))
            .instantiate::<RateLimit>()
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("9 limits on messages: at most 8"), "{err}");
        let eight = [r#"{ per = "ip", messages = 5, recipients = 9, window_secs = 60 }"#; 8].join(", ");
        assert!(TestHost::new().config_toml(&format!("limits = [{eight}]")).instantiate::<RateLimit>().is_ok());
    }
}
