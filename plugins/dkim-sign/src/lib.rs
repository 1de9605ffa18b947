//! `dkim-sign`: signs each message with DKIM for the domain of its `From:`
//! address, so DMARC aligns at Gmail, Yahoo and Outlook.
//!
//! The plugin decides *what* to sign; the host holds the keys
//! (`dkim.keys`, `<domain>/<selector>.pem`) and signs. It runs in the `data`
//! hook: list it after every plugin that edits headers and before
//! `smtp-forward`. Header fields added after signing are not covered.
//!
//! # Choosing the signing domain
//!
//! For each domain among the `From:` addresses, in order:
//! 1. the keys of that domain (every selector: an RSA and an Ed25519 key
//!    give two signatures);
//! 2. with `parent_domains = true`, the keys of the nearest parent domain
//!    (`example.com` signs `news.example.com`; DMARC's relaxed alignment
//!    accepts it);
//! 3. the keys of `default_domain`, if set (the signature is valid but does
//!    not align with `From:`, so DMARC relies on SPF).
//!
//! When nothing can be signed (no key, no `From:`, or signing failed),
//! `on_missing_key` decides: `"continue"` sends the message unsigned with a
//! warning in the log; `"defer"` answers `451 4.3.5` so the client retries
//! once the key is in place. A message already signed by the same key is
//! not signed again.
//!
//! # Configuration
//!
//! | Key | Default | Meaning |
//! |-----|---------|---------|
//! | `default_domain` | none | Domain whose keys sign mail whose `From:` domain has none |
//! | `parent_domains` | `false` | Let a parent domain's key sign a subdomain's mail |
//! | `on_missing_key` | `"continue"` | `"continue"` (send unsigned, log) or `"defer"` (451 4.3.5) |
//! | `headers` | the host's list | Header fields to sign when present |
//! | `exclude_headers` | `[]` | Removed from `headers` (e.g. `["Message-ID", "Date"]` behind SES) |
//! | `oversign` | `["From"]` | Signed once more than present, so none can be added later |
//! | `canonicalization` | `"relaxed/relaxed"` | `header/body`: `relaxed` or `simple` each |
//! | `expire_secs` | `0` | Signature lifetime (`x=`); 0 for none |
//! | `routes.<name>.exclude_headers` | `[]` | Also excluded when the transaction note `route` is `<name>` (`smtp-forward` sets it to its relay) |
//!
//! ```toml
//! [[plugins]]
//! name = "dkim-sign"
//! grants = ["dkim"]
//! [plugins.config]
//! on_missing_key = "defer"
//! [plugins.config.routes.ses]
//! exclude_headers = ["Message-ID", "Date"]   # SES rewrites them
//! ```

use std::collections::BTreeMap;

use mailferry_plugin_sdk::headers::parse_mailboxes;
use mailferry_plugin_sdk::{
    address, export_plugin, DkimKey, Host, Message, NoteValue, Plugin, Scope, SignOptions, Signed, Verdict,
};
use serde::Deserialize;

/// The transaction note naming the route the message will take.
pub const ROUTE_NOTE: &str = "route";

/// The longest signature lifetime accepted: ten years.
const MAX_EXPIRE_SECS: u64 = 10 * 366 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub default_domain: Option<String>,
    #[serde(default)]
    pub parent_domains: bool,
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    pub headers: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_headers: Vec<String>,
    pub oversign: Option<Vec<String>>,
    pub canonicalization: Option<String>,
    #[serde(default)]
    pub expire_secs: u64,
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub exclude_headers: Vec<String>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum OnMissingKey {
    #[default]
    Continue,
    Defer,
}

pub struct DkimSign {
    default_domain: Option<String>,
    parent_domains: bool,
    on_missing_key: OnMissingKey,
    /// Options with the global exclusions applied.
    options: SignOptions,
    /// Per route: the options with that route's exclusions applied too.
    routes: BTreeMap<String, SignOptions>,
}

impl Plugin for DkimSign {
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, String> {
        let defaults = host.dkim_default_options();
        let mut options = SignOptions {
            headers: config.headers.unwrap_or(defaults.headers),
            oversign: config.oversign.unwrap_or(defaults.oversign),
            canonicalization: config.canonicalization.unwrap_or(defaults.canonicalization),
            expire_secs: config.expire_secs,
        };
        if !matches!(
            options.canonicalization.to_ascii_lowercase().as_str(),
            "relaxed/relaxed" | "relaxed/simple" | "simple/relaxed" | "simple/simple"
        ) {
            return Err(format!(
                "canonicalization = {:?}: use \"relaxed/relaxed\" (recommended), \"relaxed/simple\", \"simple/relaxed\" or \"simple/simple\"",
                options.canonicalization
            ));
        }
        if config.expire_secs != 0 && !(3600..=MAX_EXPIRE_SECS).contains(&config.expire_secs) {
            return Err(format!(
                "expire_secs = {}: use 0 (no expiry) or between 3600 (an hour: mail can sit in queues) and {MAX_EXPIRE_SECS} (ten years)",
                config.expire_secs
            ));
        }
        for name in options.headers.iter().chain(&options.oversign).chain(&config.exclude_headers) {
            check_field_name(name)?;
        }
        if config.exclude_headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            return Err("exclude_headers may not name From: DKIM always signs it (RFC 6376 section 5.4)".into());
        }
        exclude(&mut options, &config.exclude_headers);
        let mut routes = BTreeMap::new();
        for (name, route) in config.routes {
            for h in &route.exclude_headers {
                check_field_name(h)?;
                if h.eq_ignore_ascii_case("From") {
                    return Err(format!("routes.{name}.exclude_headers may not name From"));
                }
            }
            let mut o = options.clone();
            exclude(&mut o, &route.exclude_headers);
            routes.insert(name, o);
        }
        let default_domain = match config.default_domain {
            Some(d) if address::split(&format!("x@{d}")).is_none() || !d.contains('.') => {
                return Err(format!("default_domain = {d:?} is not a domain like \"example.com\""));
            }
            Some(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if host.dkim_keys(&d).is_empty() {
                    host.warn(format!(
                        "default_domain {d:?} has no DKIM key yet; create one with: mailferry dkim keygen --domain {d}"
                    ));
                }
                Some(d)
            }
            None => None,
        };
        Ok(DkimSign {
            default_domain,
            parent_domains: config.parent_domains,
            on_missing_key: config.on_missing_key,
            options,
            routes,
        })
    }

    fn data(&self, host: &Host, msg: &Message) -> Verdict {
        let from = msg.header("From");
        let domains = from_domains(&from);
        let keys = self.choose_keys(host, &domains);
        if keys.is_empty() {
            let why = if domains.is_empty() {
                "the message has no usable From: address".to_string()
            } else {
                format!(
                    "no DKIM key for {} (create one with: mailferry dkim keygen --domain {})",
                    domains.join(", "),
                    domains[0]
                )
            };
            return self.unsigned(host, &why);
        }
        let options = match host.note(Scope::Transaction, ROUTE_NOTE) {
            Some(NoteValue::Text(route)) => self.routes.get(&route).unwrap_or(&self.options),
            _ => {
                if !self.routes.is_empty() {
                    // A plugin before smtp-forward answered MAIL FROM itself,
                    // so the route is unknown: the per-route exclusions
                    // cannot apply. Say so rather than sign what a provider
                    // may rewrite without a word.
                    host.warn(
                        "no `route` note (set by smtp-forward at MAIL FROM); signing without per-route exclusions",
                    );
                }
                &self.options
            }
        };
        let mut signed = Vec::new();
        let mut failures = Vec::new();
        for key in &keys {
            match host.dkim_sign(msg, &key.domain, &key.selector, options) {
                Ok(Signed::Added) => signed.push(format!("{}/{} ({})", key.domain, key.selector, key.algorithm)),
                Ok(Signed::AlreadySigned) => {
                    host.info(format!("already signed by {}/{}; not signing again", key.domain, key.selector));
                    signed.push(format!("{}/{} (already)", key.domain, key.selector));
                }
                Err(e) => failures.push(format!("{}/{}: {e}", key.domain, key.selector)),
            }
        }
        for f in &failures {
            host.error(format!("DKIM signing failed with {f}"));
        }
        if signed.is_empty() {
            return self.unsigned(host, &format!("signing failed ({})", failures.join("; ")));
        }
        host.info(format!("DKIM-signed with {}", signed.join(", ")));
        Verdict::Continue
    }
}

export_plugin!(DkimSign);

impl DkimSign {
    /// Every key to sign with, without repeats: for each From domain its own
    /// keys, else its nearest parent's (if allowed); else the default
    /// domain's.
    fn choose_keys(&self, host: &Host, domains: &[String]) -> Vec<DkimKey> {
        let mut keys: Vec<DkimKey> = Vec::new();
        let add = |found: Vec<DkimKey>, keys: &mut Vec<DkimKey>| {
            for k in found {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        };
        for domain in domains {
            let mut found = host.dkim_keys(domain);
            if found.is_empty() && self.parent_domains {
                let mut d = domain.as_str();
                while let Some((_, parent)) = d.split_once('.') {
                    // A bare TLD is never a signing domain.
                    if !parent.contains('.') {
                        break;
                    }
                    found = host.dkim_keys(parent);
                    if !found.is_empty() {
                        break;
                    }
                    d = parent;
                }
            }
            add(found, &mut keys);
        }
        if keys.is_empty() {
            if let Some(d) = &self.default_domain {
                let found = host.dkim_keys(d);
                if !found.is_empty() {
                    host.warn(format!(
                        "no key for the From: domain {}; signing with the default domain {d}, which does not align with From: for DMARC",
                        if domains.is_empty() { "(none)".to_string() } else { domains.join(", ") }
                    ));
                }
                add(found, &mut keys);
            }
        }
        keys
    }

    fn unsigned(&self, host: &Host, why: &str) -> Verdict {
        match self.on_missing_key {
            OnMissingKey::Continue => {
                host.warn(format!("sending unsigned: {why}"));
                Verdict::Continue
            }
            OnMissingKey::Defer => {
                host.warn(format!("deferring the message (on_missing_key = \"defer\"): {why}"));
                Verdict::deny_soft(451, "4.3.5", "message not signed: DKIM is not set up for the sender domain yet")
            }
        }
    }
}

/// The distinct domains of the `From:` addresses, lowercase, in order.
/// Every `From:` field counts (a message with several is malformed, but
/// receivers apply DMARC to each domain they find).
pub fn from_domains(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        let Ok(mailboxes) = parse_mailboxes(value) else { continue };
        for m in mailboxes {
            if let Some((_, domain)) = address::split(&m.address) {
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                if !domain.is_empty() && !domain.starts_with('[') && !out.contains(&domain) {
                    out.push(domain);
                }
            }
        }
    }
    out
}

fn exclude(options: &mut SignOptions, names: &[String]) {
    options.headers.retain(|h| !names.iter().any(|n| n.eq_ignore_ascii_case(h)));
    options.oversign.retain(|h| !names.iter().any(|n| n.eq_ignore_ascii_case(h)));
}

fn check_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("{name:?} is not a header field name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailferry_plugin_sdk::testing::{TestHost, TestMessage};

    fn message(from: &str) -> TestMessage {
        TestMessage::parse(format!("From: {from}\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"))
    }

    fn signed_with(host: &TestHost) -> Vec<(String, String)> {
        host.signatures().into_iter().filter(|s| s.result.is_ok()).map(|s| (s.domain, s.selector)).collect()
    }

    #[test]
    fn signs_for_the_from_domain_with_every_key() {
        let host = TestHost::new()
            .dkim_key("example.com", "r1", "rsa-sha256")
            .dkim_key("example.com", "e1", "ed25519-sha256")
            .dkim_key("other.org", "x", "rsa-sha256");
        let p = host.instantiate::<DkimSign>().unwrap();
        let m = message("\"Doe, John\" (work) <John@Example.COM>");
        assert_eq!(p.data(&m), Some(Verdict::Continue));
        assert_eq!(signed_with(&host), vec![("example.com".into(), "r1".into()), ("example.com".into(), "e1".into())]);
        assert_eq!(m.header("DKIM-Signature").len(), 2);
        // The default options come from the host and keep From over-signed.
        let opts = &host.signatures()[0].options;
        assert_eq!(opts.oversign, vec!["From".to_string()]);
        assert_eq!(opts.canonicalization, "relaxed/relaxed");
    }

    #[test]
    fn does_not_sign_twice() {
        let host = TestHost::new().dkim_key("example.com", "r1", "rsa-sha256");
        let p = host.instantiate::<DkimSign>().unwrap();
        let m = message("a@example.com");
        p.data(&m);
        p.data(&m);
        assert_eq!(m.header("DKIM-Signature").len(), 1);
        assert_eq!(host.signatures()[1].result, Ok(Signed::AlreadySigned));
    }

    #[test]
    fn missing_key_continues_or_defers() {
        let host = TestHost::new().dkim_key("example.com", "r1", "rsa-sha256");
        let p = host.instantiate::<DkimSign>().unwrap();
        assert_eq!(p.data(&message("a@nokey.example")), Some(Verdict::Continue));
        host.assert_logged(mailferry_plugin_sdk::Level::Warn, "no DKIM key for nokey.example");
        assert!(host.signatures().is_empty());

        let host = TestHost::new().config_toml("on_missing_key = \"defer\"");
        let p = host.instantiate::<DkimSign>().unwrap();
        assert_eq!(
            p.data(&message("a@nokey.example")),
            Some(Verdict::deny_soft(451, "4.3.5", "message not signed: DKIM is not set up for the sender domain yet"))
        );
        // No From: at all is the same case.
        let m = TestMessage::parse("Subject: x\r\n\r\nbody\r\n");
        assert!(matches!(p.data(&m), Some(Verdict::DenySoft(_))));
    }

    #[test]
    fn parent_domain_only_when_allowed() {
        let keys = |cfg: &str| {
            let host = TestHost::new().config_toml(cfg).dkim_key("example.com", "r1", "rsa-sha256");
            let p = host.instantiate::<DkimSign>().unwrap();
            p.data(&message("a@news.eu.example.com"));
            signed_with(&host)
        };
        assert!(keys("").is_empty());
        assert_eq!(keys("parent_domains = true"), vec![("example.com".into(), "r1".into())]);
        // Never climbs to the TLD.
        let host = TestHost::new().config_toml("parent_domains = true").dkim_key("com", "r1", "rsa-sha256");
        let p = host.instantiate::<DkimSign>().unwrap();
        p.data(&message("a@example.com"));
        assert!(signed_with(&host).is_empty());
    }

    #[test]
    fn default_domain_is_the_fallback() {
        let host = TestHost::new()
            .config_toml("default_domain = \"Relay.Example\"")
            .dkim_key("relay.example", "s", "rsa-sha256")
            .dkim_key("example.com", "r1", "rsa-sha256");
        let p = host.instantiate::<DkimSign>().unwrap();
        p.data(&message("a@unknown.example"));
        assert_eq!(signed_with(&host), vec![("relay.example".into(), "s".into())]);
        host.assert_logged(mailferry_plugin_sdk::Level::Warn, "does not align");
        // A From domain with its own key does not use the default.
        p.data(&message("a@example.com"));
        assert_eq!(signed_with(&host).last().unwrap(), &("example.com".to_string(), "r1".to_string()));
    }

    #[test]
    fn several_from_domains_each_get_their_keys() {
        let host =
            TestHost::new().dkim_key("example.com", "a", "rsa-sha256").dkim_key("example.net", "b", "rsa-sha256");
        let p = host.instantiate::<DkimSign>().unwrap();
        p.data(&message("x@example.com, y@example.net, z@example.com"));
        assert_eq!(signed_with(&host), vec![("example.com".into(), "a".into()), ("example.net".into(), "b".into())]);
    }

    #[test]
    fn route_exclusions_apply_by_note() {
        let host = TestHost::new()
            .config_toml("exclude_headers = [\"Cc\"]\n[routes.ses]\nexclude_headers = [\"Message-ID\", \"date\"]\n")
            .dkim_key("example.com", "r1", "rsa-sha256");
        let p = host.instantiate::<DkimSign>().unwrap();
        p.data(&message("a@example.com"));
        host.set_note(Scope::Transaction, ROUTE_NOTE, "ses");
        p.data(&TestMessage::parse("From: a@example.com\r\n\r\nx\r\n"));
        let sigs = host.signatures();
        let plain = &sigs[0].options.headers;
        let ses = &sigs[1].options.headers;
        assert!(!plain.iter().any(|h| h == "Cc"));
        assert!(plain.iter().any(|h| h == "Message-ID") && plain.iter().any(|h| h == "Date"));
        assert!(!ses.iter().any(|h| h == "Message-ID" || h == "Date" || h == "Cc"), "{ses:?}");
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        for (cfg, needle) in [
            ("canonicalization = \"loose\"", "canonicalization"),
            ("exclude_headers = [\"From\"]", "may not name From"),
            ("headers = [\"Bad Name\"]", "not a header field name"),
            ("on_missing_key = \"drop\"", "unknown variant"),
            ("default_domain = \"nodots\"", "not a domain"),
            ("[routes.ses]\nexclude_headers = [\"from\"]", "may not name From"),
            ("expire_secs = 60", "expire_secs = 60"),
            ("expire_secs = 18446744073709551615", "expire_secs"),
        ] {
            let err = TestHost::new().config_toml(cfg).instantiate::<DkimSign>().err().unwrap_or_default();
            assert!(err.contains(needle), "{cfg}: {err}");
        }
    }

    #[test]
    fn from_domains_reads_display_names_groups_and_comments() {
        assert_eq!(
            from_domains(&[
                "\"Doe, John\" (work) <john@Example.com> (c)".into(),
                "team: a@x.org, b@EXAMPLE.com;".into()
            ]),
            vec!["example.com".to_string(), "x.org".to_string()]
        );
        assert!(from_domains(&["undisclosed".into()]).is_empty());
    }
}
