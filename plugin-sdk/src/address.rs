//! Helpers for envelope addresses and logins (`local@domain`).
//!
//! Domains compare case-insensitively; local parts are compared exactly, as
//! RFC 5321 leaves their meaning to the receiving domain. The null sender is
//! the empty string. A quoted local part (`"john doe"@example.org`) may hold
//! `@`, so addresses are split at the last `@` outside quotes.

use std::borrow::Cow;

/// Splits `local@domain` at the last `@` outside a quoted local part.
/// `None` for the null sender, for a string without such an `@`, and when
/// either side is empty.
///
/// ```
/// use mailferry_plugin_sdk::address::split;
/// assert_eq!(split("alice@example.org"), Some(("alice", "example.org")));
/// assert_eq!(split(r#""a@b"@example.org"#), Some((r#""a@b""#, "example.org")));
/// assert_eq!(split(""), None);
/// assert_eq!(split("postmaster"), None);
/// ```
pub fn split(address: &str) -> Option<(&str, &str)> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut at = None;
    for (i, c) in address.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '@' if !in_quotes => at = Some(i),
            _ => {}
        }
    }
    let at = at?;
    let (local, domain) = (&address[..at], &address[at + 1..]);
    (!local.is_empty() && !domain.is_empty()).then_some((local, domain))
}

/// The local part without its quotes and backslash escapes:
/// `"john\"doe"` becomes `john"doe`; an unquoted part is returned as is.
///
/// ```
/// use mailferry_plugin_sdk::address::unquote_local;
/// assert_eq!(unquote_local(r#""john \"jd\" doe""#), r#"john "jd" doe"#);
/// assert_eq!(unquote_local("john.doe"), "john.doe");
/// ```
pub fn unquote_local(local: &str) -> Cow<'_, str> {
    let Some(inner) = local.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return Cow::Borrowed(local);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The address with its domain in lower case and the local part untouched;
/// the null sender and strings without a domain are returned unchanged.
///
/// ```
/// use mailferry_plugin_sdk::address::normalize;
/// assert_eq!(normalize("Alice@Example.ORG"), "Alice@example.org");
/// assert_eq!(normalize(""), "");
/// ```
pub fn normalize(address: &str) -> String {
    match split(address) {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => address.to_string(),
    }
}

/// True if both name the same mailbox: local parts equal exactly, domains
/// equal ignoring case. Strings without a domain (plain logins such as
/// `alice`) must be equal exactly; the null sender matches only itself.
///
/// ```
/// use mailferry_plugin_sdk::address::same_mailbox;
/// assert!(same_mailbox("alice@Example.org", "alice@example.ORG"));
/// assert!(!same_mailbox("Alice@example.org", "alice@example.org"));
/// assert!(same_mailbox("alice", "alice"));
/// assert!(!same_mailbox("alice", "alice@example.org"));
/// ```
pub fn same_mailbox(a: &str, b: &str) -> bool {
    match (split(a), split(b)) {
        (Some((la, da)), Some((lb, db))) => {
            la == lb && (da.eq_ignore_ascii_case(db) || da.to_lowercase() == db.to_lowercase())
        }
        (None, None) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_handles_quotes_escapes_and_edges() {
        assert_eq!(split("a@b@c.org"), Some(("a@b", "c.org")));
        assert_eq!(split(r#""x\"@y"@z.org"#), Some((r#""x\"@y""#, "z.org")));
        assert_eq!(split(r#""only@quoted""#), None);
        assert_eq!(split("@example.org"), None);
        assert_eq!(split("alice@"), None);
        assert_eq!(split("user@[192.0.2.1]"), Some(("user", "[192.0.2.1]")));
    }

    #[test]
    fn same_mailbox_uses_unicode_case_for_domains() {
        assert!(same_mailbox("u@ÉXAMPLE.org", "u@éxample.ORG"));
        assert!(!same_mailbox("", "a@b"));
        assert!(same_mailbox("", ""));
    }
}
