//! Allowed-sender patterns (`alice@example.com`, `*@example.com`,
//! `*@*.example.com`, `*`) and how an address is matched against them.

use std::fmt;

use mailferry_plugin_sdk::address;

/// One allowed-sender pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every address (never the null sender).
    Any,
    /// `*@example.com`: every address of exactly this domain.
    Domain(String),
    /// `*@*.example.com`: every address of a subdomain, not of the domain itself.
    Subdomains(String),
    /// `alice@example.com`: one mailbox. The local part is stored unquoted,
    /// the domain in lower case.
    Mailbox { local: String, domain: String },
}

impl Pattern {
    /// Reads a pattern as written in the senders file or `trusted_senders`.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Pattern::Any);
        }
        let Some((local, domain)) = address::split(text) else {
            return Err(format!("{text:?} is not an address, *@domain, *@*.domain or *"));
        };
        let domain = normalize_domain(domain);
        let (wild_sub, bare) = match domain.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, domain),
        };
        let bad_domain = bare.is_empty()
            || bare.starts_with('.')
            || bare.contains("..")
            || bare.chars().any(|c| c == '*' || c == '@' || c.is_whitespace() || c.is_control());
        if bad_domain {
            return Err(format!("{text:?}: the domain is not valid (wildcards: *@example.com, *@*.example.com)"));
        }
        match (local, wild_sub) {
            ("*", false) => Ok(Pattern::Domain(bare)),
            ("*", true) => Ok(Pattern::Subdomains(bare)),
            (_, true) => Err(format!("{text:?}: *.domain is only allowed with a * local part (*@*.example.com)")),
            (local, false) if local.contains('*') => {
                Err(format!("{text:?}: * stands only for a whole local part (*@example.com)"))
            }
            (local, false) => Ok(Pattern::Mailbox { local: address::unquote_local(local).into_owned(), domain: bare }),
        }
    }

    /// The pattern for a login, if the login is an address.
    pub fn for_login(login: &str) -> Option<Pattern> {
        match Pattern::parse(login) {
            Ok(p @ Pattern::Mailbox { .. }) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => write!(f, "*"),
            Pattern::Domain(d) => write!(f, "*@{d}"),
            Pattern::Subdomains(d) => write!(f, "*@*.{d}"),
            Pattern::Mailbox { local, domain } => write!(f, "{local}@{domain}"),
        }
    }
}

/// How addresses compare with mailbox patterns.
#[derive(Debug, Clone)]
pub struct Matching {
    /// Compare local parts exactly instead of ignoring case.
    pub case_sensitive_local_parts: bool,
    /// Characters that start a subaddress (`alice+tag`); empty: none.
    pub subaddress_separators: Vec<char>,
}

impl Matching {
    /// True if `pattern` allows `address` (an addr-spec; the null sender
    /// and strings without a domain match nothing).
    pub fn matches(&self, pattern: &Pattern, address: &str) -> bool {
        let Some((local, domain)) = address::split(address) else {
            return false;
        };
        let domain = normalize_domain(domain);
        match pattern {
            Pattern::Any => true,
            Pattern::Domain(d) => domain == *d,
            Pattern::Subdomains(d) => domain.strip_suffix(d.as_str()).is_some_and(|head| head.ends_with('.')),
            Pattern::Mailbox { local: want, domain: want_domain } => {
                if domain != *want_domain {
                    return false;
                }
                let local = address::unquote_local(local);
                self.same_local(&local, want) || self.base(&local).is_some_and(|base| self.same_local(base, want))
            }
        }
    }

    fn same_local(&self, a: &str, b: &str) -> bool {
        if self.case_sensitive_local_parts {
            a == b
        } else {
            a == b || a.to_lowercase() == b.to_lowercase()
        }
    }

    /// `alice` of `alice+tag`; `None` without a separator or when nothing
    /// precedes it (`+tag` is not anybody's subaddress).
    fn base<'a>(&self, local: &'a str) -> Option<&'a str> {
        let at = local.find(|c| self.subaddress_separators.contains(&c))?;
        (at > 0).then(|| &local[..at])
    }
}

/// Lower case, without the trailing dot of an absolute name (`example.com.`
/// is the same domain as `example.com`).
fn normalize_domain(domain: &str) -> String {
    domain.strip_suffix('.').unwrap_or(domain).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Matching {
        Matching { case_sensitive_local_parts: false, subaddress_separators: vec!['+'] }
    }

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(p("*"), Pattern::Any);
        assert_eq!(p("*@Example.COM"), Pattern::Domain("example.com".into()));
        assert_eq!(p("*@*.Example.com."), Pattern::Subdomains("example.com".into()));
        assert_eq!(p("Alice@Example.com"), Pattern::Mailbox { local: "Alice".into(), domain: "example.com".into() });
        assert_eq!(p(r#""a b"@example.com"#), Pattern::Mailbox { local: "a b".into(), domain: "example.com".into() });
        assert_eq!(p("user@[192.0.2.1]"), Pattern::Mailbox { local: "user".into(), domain: "[192.0.2.1]".into() });
        assert_eq!(p("*@*.example.com").to_string(), "*@*.example.com");
    }

    #[test]
    fn refuses_malformed_patterns() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a*@example.com",
            "*a@example.com",
            "alice@*.example.com",
            "*@*",
            "*@*.",
            "*@.example.com",
            "*@exa*mple.com",
            "*@example..com",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn domains_ignore_case_and_the_trailing_dot() {
        assert!(m().matches(&p("*@example.com"), "x@EXAMPLE.Com"));
        assert!(m().matches(&p("*@example.com"), "x@example.com."));
        assert!(!m().matches(&p("*@example.com"), "x@example.com.evil"));
        assert!(!m().matches(&p("*@example.com"), "x@sub.example.com"));
        assert!(!m().matches(&p("*@example.com"), "x@notexample.com"));
    }

    #[test]
    fn subdomain_wildcard_needs_a_real_label_boundary() {
        let s = p("*@*.example.com");
        assert!(m().matches(&s, "x@a.example.com"));
        assert!(m().matches(&s, "x@a.b.Example.com"));
        assert!(!m().matches(&s, "x@example.com"));
        assert!(!m().matches(&s, "x@evilexample.com"));
    }

    #[test]
    fn mailboxes_unquote_fold_case_and_strip_subaddresses() {
        let alice = p("alice@example.com");
        assert!(m().matches(&alice, "alice@example.com"));
        assert!(m().matches(&alice, "Alice@Example.com"));
        assert!(m().matches(&alice, r#""alice"@example.com"#));
        assert!(m().matches(&alice, "alice+news@example.com"));
        assert!(m().matches(&alice, "ALICE+x+y@example.com"));
        assert!(!m().matches(&alice, "+alice@example.com"));
        assert!(!m().matches(&alice, "alicex@example.com"));
        assert!(!m().matches(&alice, "alice-news@example.com"));
        assert!(!m().matches(&alice, r#""alice@evil.example"@example.com"#));
        assert!(!m().matches(&alice, "alice@example.org"));
        assert!(!m().matches(&alice, ""));
        assert!(!m().matches(&alice, "alice"));
        let strict = Matching { case_sensitive_local_parts: true, subaddress_separators: Vec::new() };
        assert!(strict.matches(&alice, "alice@EXAMPLE.com"));
        assert!(!strict.matches(&alice, "Alice@example.com"));
        assert!(!strict.matches(&alice, "alice+news@example.com"));
    }

    #[test]
    fn a_listed_subaddress_is_itself_exact() {
        let news = p("alice+news@example.com");
        assert!(m().matches(&news, "alice+news@example.com"));
        assert!(!m().matches(&news, "alice@example.com"));
        assert!(!m().matches(&news, "alice+other@example.com"));
    }

    #[test]
    fn any_matches_addresses_only() {
        assert!(m().matches(&Pattern::Any, "whoever@wherever.example"));
        assert!(!m().matches(&Pattern::Any, ""));
        assert!(!m().matches(&Pattern::Any, "postmaster"));
    }

    #[test]
    fn logins_that_are_not_addresses_give_no_pattern() {
        assert_eq!(Pattern::for_login("alice"), None);
        assert_eq!(Pattern::for_login("*@example.com"), None);
        assert!(Pattern::for_login("alice@example.com").is_some());
    }
}
