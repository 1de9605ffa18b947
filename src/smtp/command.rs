//! Parsing of SMTP command lines (RFC 5321 §4.1) into [`Command`].
//!
//! Hand-written on purpose: the grammar is small, the error replies must be
//! exact (500 unknown, 501 syntax, 555 unsupported parameter), and the address
//! rules are security policy (source routes, quoting, SMTPUTF8), so we keep
//! them in one readable place rather than behind a general parser crate.

use crate::mail::address::validate_mailbox;
use crate::mail::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    StartTls,
    Auth { mechanism: String, initial: Option<String> },
    Mail { path: Path, params: Vec<Param> },
    Rcpt { path: Path, params: Vec<Param> },
    Data,
    Bdat { size: usize, last: bool },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
}

/// A reverse or forward path: the address without angle brackets and without
/// any source route. Empty for the null sender `<>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let line = std::str::from_utf8(line).map_err(|_| Reply::new(500, "5.5.2", "command is not valid UTF-8"))?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let syntax = |usage: &str| Reply::new(501, "5.5.4", format!("syntax: {usage}"));
    let no_args = |cmd: Command, usage: &str| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(syntax(usage))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" | "HELO" => {
            let name = rest.trim();
            if !is_helo_name(name) {
                return Err(syntax(&format!("{} your.host.name", verb.to_ascii_uppercase())));
            }
            Ok(if verb.eq_ignore_ascii_case("EHLO") {
                Command::Ehlo(name.to_string())
            } else {
                Command::Helo(name.to_string())
            })
        }
        "STARTTLS" => no_args(Command::StartTls, "STARTTLS"),
        "AUTH" => {
            let mut parts = rest.split_ascii_whitespace();
            let mechanism = parts.next().ok_or_else(|| syntax("AUTH mechanism [initial-response]"))?;
            let initial = parts.next().map(str::to_string);
            if parts.next().is_some() {
                return Err(syntax("AUTH mechanism [initial-response]"));
            }
            Ok(Command::Auth { mechanism: mechanism.to_ascii_uppercase(), initial })
        }
        "MAIL" => {
            let arg = strip_prefix_ci(rest, "FROM:").ok_or_else(|| syntax("MAIL FROM:<address> [parameters]"))?;
            let (path, params) = parse_path_and_params(arg, true)?;
            Ok(Command::Mail { path, params })
        }
        "RCPT" => {
            let arg = strip_prefix_ci(rest, "TO:").ok_or_else(|| syntax("RCPT TO:<address> [parameters]"))?;
            let (path, params) = parse_path_and_params(arg, false)?;
            Ok(Command::Rcpt { path, params })
        }
        "DATA" => no_args(Command::Data, "DATA"),
        "BDAT" => {
            let mut parts = rest.split_ascii_whitespace();
            let size = parts
                .next()
                .and_then(
                    |s| if s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 18 { s.parse().ok() } else { None },
                )
                .ok_or_else(|| syntax("BDAT size [LAST]"))?;
            let last = match parts.next() {
                None => false,
                Some(s) if s.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(syntax("BDAT size [LAST]")),
            };
            if parts.next().is_some() {
                return Err(syntax("BDAT size [LAST]"));
            }
            Ok(Command::Bdat { size, last })
        }
        "RSET" => no_args(Command::Rset, "RSET"),
        // NOOP and HELP may carry an argument, which is ignored (RFC 5321 §4.1.1.9, §4.1.1.8).
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        _ => Err(Reply::new(500, "5.5.1", "command not recognized")),
    }
}

/// A host name or address literal, as EHLO/HELO take. The name goes into
/// our `Received:` field, so only ASCII letters, digits, `-`, `.` and `_` are
/// taken (underscores, though not valid in host names, are common in the
/// names Windows machines send), or a bracketed address literal.
fn is_helo_name(name: &str) -> bool {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return literal.parse::<std::net::Ipv4Addr>().is_ok()
            || literal.strip_prefix("IPv6:").is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let s = s.trim_start();
    // Compared as octets: `s` may hold a multi-octet character where the
    // prefix ends (`RCPT TO\u{85}`). The prefix is ASCII, so a match ends
    // on a character boundary.
    if s.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes())) {
        // RFC 5321 allows no space after the colon, but many clients send one.
        Some(s[prefix.len()..].trim_start())
    } else {
        None
    }
}

fn parse_path_and_params(arg: &str, reverse: bool) -> Result<(Path, Vec<Param>), Reply> {
    let bad = |why: &str| Reply::new(501, "5.1.7", format!("bad address syntax: {why}"));
    if !arg.starts_with('<') {
        return Err(bad("the address must be in angle brackets, like <user@example.com>"));
    }
    // Find the closing bracket outside a quoted local part.
    let bytes = arg.as_bytes();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut end = None;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if escaped {
            escaped = false;
        } else if in_quotes && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            in_quotes = !in_quotes;
        } else if b == b'>' && !in_quotes {
            end = Some(i);
            break;
        }
    }
    let end = end.ok_or_else(|| bad("missing '>'"))?;
    let mut inner = &arg[1..end];
    // A source route (`@a,@b:user@c`) is obsolete; RFC 5321 §4.1.1.3 says to
    // ignore it. It never decides where mail goes.
    if inner.starts_with('@') {
        let colon = inner.find(':').ok_or_else(|| bad("source route without ':'"))?;
        inner = &inner[colon + 1..];
    }
    if inner.is_empty() {
        if !reverse {
            return Err(bad("a recipient cannot be empty"));
        }
    } else if !reverse && inner.eq_ignore_ascii_case("postmaster") {
        // RFC 5321 section 4.5.1: <postmaster> without a domain is valid.
    } else {
        validate_mailbox(inner).map_err(bad)?;
    }
    let rest = &arg[end + 1..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(bad("text after '>' must be separated by a space"));
    }
    let mut params = Vec::new();
    for p in rest.split_ascii_whitespace() {
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (p, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Reply::new(501, "5.5.4", format!("bad parameter {p:?}")));
        }
        params.push(Param { key: key.to_ascii_uppercase(), value });
    }
    Ok((Path { address: inner.to_string() }, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> String {
        match parse(s.as_bytes()).unwrap() {
            Command::Mail { path, .. } | Command::Rcpt { path, .. } => path.address,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse(b"ehlo client.example").unwrap(), Command::Ehlo("client.example".into()));
        assert_eq!(parse(b"QuIt").unwrap(), Command::Quit);
        assert_eq!(parse(b"FOO").unwrap_err().code, 500);
        assert_eq!(parse(b"EHLO").unwrap_err().code, 501);
        assert_eq!(parse(b"EHLO DESKTOP_1A.local").unwrap(), Command::Ehlo("DESKTOP_1A.local".into()));
        assert_eq!(parse(b"HELO [192.0.2.1]").unwrap(), Command::Helo("[192.0.2.1]".into()));
        assert_eq!(parse(b"EHLO a;b(c)").unwrap_err().code, 501);
        assert_eq!(parse(b"EHLO [not.an.ip]").unwrap_err().code, 501);
        assert_eq!(parse("EHLO hôte".as_bytes()).unwrap_err().code, 501);
    }

    #[test]
    fn mail_paths_and_params() {
        assert_eq!(path("MAIL FROM:<>"), "");
        assert_eq!(path("MAIL FROM: <a@b.example>"), "a@b.example");
        assert_eq!(path("RCPT TO:<@relay.example:user@dest.example>"), "user@dest.example");
        assert_eq!(path("RCPT TO:<\"odd >user\"@dest.example>"), "\"odd >user\"@dest.example");
        assert_eq!(path("RCPT TO:<user@[192.0.2.1]>"), "user@[192.0.2.1]");
        assert_eq!(path("RCPT TO:<Postmaster>"), "Postmaster");
        assert_eq!(path("RCPT TO:<josé@exämple.com>"), "josé@exämple.com");
        match parse(b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME SMTPUTF8").unwrap() {
            Command::Mail { params, .. } => {
                assert_eq!(params.len(), 3);
                assert_eq!(params[0], Param { key: "SIZE".into(), value: Some("100".into()) });
                assert_eq!(params[2], Param { key: "SMTPUTF8".into(), value: None });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_addresses_are_501() {
        for bad in [
            "MAIL FROM:a@b.example",
            "MAIL FROM:<a@b.example",
            "RCPT TO:<>",
            "RCPT TO:<nodomain>",
            "RCPT TO:<a..b@c.example>",
            "RCPT TO:<a@-bad.example>",
            "RCPT TO:<a@[999.1.1.1]>",
            "RCPT TO:<a@b.example>SIZE=1",
        ] {
            assert_eq!(parse(bad.as_bytes()).unwrap_err().code, 501, "{bad}");
        }
    }

    #[test]
    fn a_character_across_the_end_of_from_or_to_is_a_syntax_error() {
        for line in ["RCPT TO\u{85}", "RCPT TO\u{85}:<a@b.example>", "MAIL FROM\u{e9}:<>", "MAIL FRO\u{20ac}"] {
            assert_eq!(parse(line.as_bytes()).unwrap_err().code, 501, "{line:?}");
        }
    }

    #[test]
    fn bdat() {
        assert_eq!(parse(b"BDAT 10 LAST").unwrap(), Command::Bdat { size: 10, last: true });
        assert_eq!(parse(b"BDAT 0").unwrap(), Command::Bdat { size: 0, last: false });
        assert_eq!(parse(b"BDAT -1").unwrap_err().code, 501);
        assert_eq!(parse(b"BDAT 10 NOW").unwrap_err().code, 501);
    }
}
