//! The SMTP command parser (`smtp::command::parse`), fed one command line
//! as the session's reader hands it over (without its CRLF; it may hold a
//! bare CR, NUL or any other octet).
//!
//! Checks, beyond "no panic":
//! - errors are 500 or 501 with a matching enhanced status, and their text
//!   holds no control character (a CR or LF there would forge replies);
//! - a MAIL path is empty (`<>`) or a mailbox `validate_mailbox` accepts; a
//!   RCPT path is never empty and is a valid mailbox or `postmaster`; no
//!   path holds an ASCII control character or starts a source route;
//! - parameter keywords are non-empty, uppercase letters, digits and `-`;
//!   values hold no white space;
//! - EHLO/HELO names are what the `Received:` field may carry (ASCII
//!   letters, digits, `-._`, or an address literal), at most 255 octets;
//! - AUTH mechanisms are uppercase, one token, and so is the initial response;
//! - every command parsed, written back in its canonical form, parses to the
//!   same command (what was accepted is what it means);
//! - the verb is case-insensitive: the line with its verb upper-cased or
//!   lower-cased parses to the same result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry::mail::address::validate_mailbox;
use mailferry::smtp::command::{parse, Command, Param, Path};
use mailferry::smtp::reply::{is_enhanced_status, Reply};

fuzz_target!(|data: &[u8]| {
    let result = parse(data);
    match &result {
        Ok(cmd) => check_command(data, cmd),
        Err(reply) => check_error(data, reply),
    }

    // The verb (up to the first space) in either case gives the same result.
    let verb_end = data.iter().position(|&b| b == b' ').unwrap_or(data.len());
    for upper in [true, false] {
        let mut line = data.to_vec();
        for b in &mut line[..verb_end] {
            *b = if upper { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() };
        }
        assert_eq!(parse(&line), result, "verb case changed the result of {:?}", show(data));
    }
});

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn check_error(data: &[u8], reply: &Reply) {
    let line = show(data);
    assert!(matches!(reply.code, 500 | 501), "{line}: unexpected code {}", reply.code);
    let enhanced = reply.enhanced.as_deref().unwrap_or_else(|| panic!("{line}: no enhanced status"));
    assert!(is_enhanced_status(enhanced) && enhanced.starts_with('5'), "{line}: bad enhanced status {enhanced}");
    for text in &reply.lines {
        assert!(!text.chars().any(char::is_control), "{line}: control character in the reply {text:?}");
    }
    if std::str::from_utf8(data).is_err() {
        assert_eq!(reply.code, 500, "{line}: non-UTF-8 lines are 500");
    }
}

fn check_command(data: &[u8], cmd: &Command) {
    let line = show(data);
    assert!(std::str::from_utf8(data).is_ok(), "{line}: parsed from non-UTF-8");
    match cmd {
        Command::Ehlo(name) | Command::Helo(name) => {
            assert!(helo_name_ok(name), "{line}: HELO name {name:?}");
        }
        Command::Auth { mechanism, initial } => {
            assert!(!mechanism.is_empty(), "{line}: empty mechanism");
            assert_eq!(mechanism, &mechanism.to_ascii_uppercase(), "{line}");
            assert!(!mechanism.bytes().any(|b| b.is_ascii_whitespace()), "{line}");
            if let Some(i) = initial {
                assert!(!i.is_empty() && !i.bytes().any(|b| b.is_ascii_whitespace()), "{line}: initial {i:?}");
            }
        }
        Command::Mail { path, params } => {
            if !path.address.is_empty() {
                check_mailbox(&line, path);
            }
            check_params(&line, params);
        }
        Command::Rcpt { path, params } => {
            assert!(!path.address.is_empty(), "{line}: empty recipient");
            if !path.address.eq_ignore_ascii_case("postmaster") {
                check_mailbox(&line, path);
            }
            check_params(&line, params);
        }
        Command::Bdat { size, .. } => {
            assert!(*size < 1_000_000_000_000_000_000, "{line}: BDAT size {size} has over 18 digits");
        }
        _ => {}
    }
    // Written back in its canonical form, it parses to the same command.
    if let Some(canonical) = canonical(cmd) {
        assert_eq!(parse(canonical.as_bytes()).as_ref(), Ok(cmd), "{line}: canonical form {canonical:?} differs");
    }
}

fn check_mailbox(line: &str, path: &Path) {
    let a = &path.address;
    assert_eq!(validate_mailbox(a), Ok(()), "{line}: path {a:?} is not a valid mailbox");
    assert!(!a.chars().any(|c| c.is_ascii_control()), "{line}: control character in path {a:?}");
    assert!(!a.starts_with('@'), "{line}: source route left in {a:?}");
}

fn check_params(line: &str, params: &[Param]) {
    for p in params {
        assert!(
            !p.key.is_empty() && p.key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'),
            "{line}: parameter keyword {:?}",
            p.key
        );
        if let Some(v) = &p.value {
            assert!(!v.bytes().any(|b| b.is_ascii_whitespace()), "{line}: white space in parameter value {v:?}");
        }
    }
}

/// What `is_helo_name` in src/smtp/command.rs documents.
fn helo_name_ok(name: &str) -> bool {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return literal.parse::<std::net::Ipv4Addr>().is_ok()
            || literal.strip_prefix("IPv6:").is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn canonical(cmd: &Command) -> Option<String> {
    let params = |ps: &[Param]| {
        ps.iter()
            .map(|p| match &p.value {
                Some(v) => format!(" {}={v}", p.key),
                None => format!(" {}", p.key),
            })
            .collect::<String>()
    };
    Some(match cmd {
        Command::Ehlo(n) => format!("EHLO {n}"),
        Command::Helo(n) => format!("HELO {n}"),
        Command::Auth { mechanism, initial: None } => format!("AUTH {mechanism}"),
        Command::Auth { mechanism, initial: Some(i) } => format!("AUTH {mechanism} {i}"),
        Command::Mail { path, params: ps } => format!("MAIL FROM:<{}>{}", path.address, params(ps)),
        Command::Rcpt { path, params: ps } => format!("RCPT TO:<{}>{}", path.address, params(ps)),
        Command::Bdat { size, last } => format!("BDAT {size}{}", if *last { " LAST" } else { "" }),
        _ => return None,
    })
}
