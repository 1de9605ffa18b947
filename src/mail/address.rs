//! Addresses: RFC 5321 mailboxes, with RFC 6531 UTF-8 allowed (whoever
//! accepts one checks that SMTPUTF8 was asked for).

/// Splits `local@domain` at the last `@` outside quotes.
pub fn split_address(addr: &str) -> Option<(&str, &str)> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut at = None;
    for (i, c) in addr.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == '@' && !in_quotes {
            at = Some(i);
        }
    }
    at.map(|i| (&addr[..i], &addr[i + 1..]))
}

/// RFC 5321 Mailbox (with RFC 6531 UTF-8 allowed; the caller checks SMTPUTF8).
pub fn validate_mailbox(s: &str) -> Result<(), &'static str> {
    let (local, domain) = split_address(s).ok_or("expected local-part@domain")?;
    if local.is_empty() || local.len() > 64 {
        return Err("the local part must be 1 to 64 octets");
    }
    if local.starts_with('"') {
        if !(local.len() >= 2 && local.ends_with('"')) {
            return Err("unterminated quoted local part");
        }
        if local.chars().any(|c| c.is_control()) {
            return Err("control character in local part");
        }
    } else {
        let atext = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
        if local.split('.').any(|atom| atom.is_empty() || !atom.chars().all(atext)) {
            return Err("invalid character or dot placement in the local part");
        }
    }
    if domain.is_empty() || domain.len() > 255 {
        return Err("the domain must be 1 to 255 octets");
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal.strip_suffix(']').ok_or("unterminated address literal")?;
        let ok = literal.parse::<std::net::Ipv4Addr>().is_ok()
            || literal.strip_prefix("IPv6:").map(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()).unwrap_or(false);
        if !ok {
            return Err("invalid address literal");
        }
    } else {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii())
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !domain.split('.').all(label_ok) {
            return Err("invalid domain");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_at_outside_quotes_splits() {
        assert_eq!(split_address("a@b.example"), Some(("a", "b.example")));
        assert_eq!(split_address("\"x@y\"@b.example"), Some(("\"x@y\"", "b.example")));
        assert_eq!(split_address("\"x\\\"@y\"@b.example"), Some(("\"x\\\"@y\"", "b.example")));
        assert_eq!(split_address("postmaster"), None);
    }

    #[test]
    fn mailboxes() {
        for good in [
            "a@b.example",
            "a.b+c@d.example",
            "\"odd >user\"@d.example",
            "u@[192.0.2.1]",
            "u@[IPv6:2001:db8::1]",
            "josé@exämple.com",
        ] {
            assert_eq!(validate_mailbox(good), Ok(()), "{good}");
        }
        for bad in [
            "nodomain",
            "@b.example",
            "a..b@c.example",
            ".a@c.example",
            "a@-b.example",
            "a@[999.1.1.1]",
            "a@[192.0.2.1",
            "\"a@b.example",
        ] {
            assert!(validate_mailbox(bad).is_err(), "{bad}");
        }
        assert!(validate_mailbox(&format!("{}@b.example", "x".repeat(65))).is_err());
    }
}
