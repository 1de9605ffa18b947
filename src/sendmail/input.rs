//! The message a program hands to sendmail: read from standard input, its
//! line endings made SMTP's, and its header section finished the way a
//! local mail submission program does it (RFC 6409 §8 leaves the rest, the
//! `Date:` and `Message-ID:` fields, to the server, which adds them).
//!
//! Programs write what they like: cron and PHP end lines with a bare LF,
//! progress bars leave bare CRs, old scripts end the text with a `.` line,
//! and header addresses may be bare login names (`To: root`). All of it is
//! turned into a message the server takes, or refused here with the reason,
//! before anything is sent.

use std::io::{self, BufRead};

use mail_builder::headers::address::Address as BuiltAddress;
use mail_builder::headers::Header as _;
use mail_parser::{HeaderValue, MessageParser};

use crate::mail::address::{split_address, validate_mailbox};
use crate::message::{Header, Message};

/// Why the input cannot be sent.
#[derive(Debug)]
pub enum InputError {
    /// Reading standard input failed.
    Io(io::Error),
    /// The message itself is unusable; the text says why.
    Data(String),
}

/// Reads the message up to the end of the input, or up to a line holding a
/// single `.` unless `ignore_dots`. Every line ending (CRLF, a bare LF, a
/// bare CR) becomes CRLF, and the text ends with one. A leading mbox
/// `From ` line is dropped, as sendmail and Postfix do: it is not a header
/// field and would end the header section at its first line.
pub fn read(mut input: impl BufRead, ignore_dots: bool, message_size: usize) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).map_err(InputError::Io)? == 0 {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !ignore_dots && text == b"." {
            break;
        }
        if std::mem::take(&mut first) && text.starts_with(b"From ") {
            continue;
        }
        // A CR inside a line (a progress bar redrawing itself) is a line
        // break too: SMTP allows CR only as part of CRLF.
        for piece in text.split(|&b| b == b'\r') {
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        if out.len() > message_size {
            return Err(InputError::Data(format!(
                "the message is larger than the server takes ({message_size} octets, limits.message_size)"
            )));
        }
    }
    Ok(out)
}

/// How to finish the header section.
pub struct Finish<'a> {
    /// Appended to addresses without a domain.
    pub domain: &'a str,
    /// `-t`: collect the recipients from the header.
    pub extract: bool,
    /// The address for a From: field, if the message has none.
    pub from: &'a str,
    /// The full name for that field.
    pub full_name: Option<&'a str>,
    /// Longest line the server takes, CRLF included (`limits.text_line`).
    pub text_line: usize,
}

/// A message ready to send.
#[derive(Debug)]
pub struct Finished {
    /// CRLF text ending in CRLF.
    pub message: Vec<u8>,
    /// With `-t`: the recipients named in the header, qualified, in order.
    pub recipients: Vec<String>,
}

/// Fields holding addresses: those without a domain get one.
const ADDRESS_FIELDS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Bcc",
];

/// Qualifies addresses, collects the recipients (`-t`), removes Bcc:, adds
/// From: when missing, and makes sure every line fits the server's limit.
pub fn finish(raw: Vec<u8>, f: &Finish) -> Result<Finished, String> {
    let mut m = Message::parse(raw);
    for h in &mut m.headers {
        if ADDRESS_FIELDS.iter().any(|n| n.eq_ignore_ascii_case(&h.name)) {
            qualify_field(h, f.domain);
        }
    }
    let mut recipients = Vec::new();
    if f.extract {
        // With Resent- fields the message is being resent: its recipients
        // are the Resent- ones, not the original addressees (RFC 5322
        // §3.6.6; Postfix does the same).
        let resent = m
            .headers
            .iter()
            .any(|h| ["Resent-To", "Resent-Cc", "Resent-Bcc"].iter().any(|n| n.eq_ignore_ascii_case(&h.name)));
        let names: &[&str] = if resent { &["Resent-To", "Resent-Cc", "Resent-Bcc"] } else { &["To", "Cc", "Bcc"] };
        for h in m.headers.iter().filter(|h| names.iter().any(|n| n.eq_ignore_ascii_case(&h.name))) {
            for group in parse_addresses(&h.raw) {
                for (_, address) in group.members {
                    if let Err(why) = validate_mailbox(&address) {
                        return Err(format!("{}: {address:?} is not a usable address ({why})", h.name));
                    }
                    recipients.push(address);
                }
            }
        }
    }
    // Blind copies stay blind whether or not -t was given.
    m.remove("Bcc");
    m.remove("Resent-Bcc");
    if !m.has_header("From") {
        let from = BuiltAddress::new_address(f.full_name, f.from);
        m.append(built_field("From", &from));
    }
    fit_lines(&mut m, f.text_line)?;
    Ok(Finished { message: m.to_bytes(), recipients })
}

/// Parses a recipient argument (`a@x`, `a@x, b@y`, `Name <a@x>`) into
/// addresses, qualified with `domain`; an error names what is wrong.
pub fn parse_argument(arg: &str, domain: &str) -> Result<Vec<String>, String> {
    if arg.contains(['\r', '\n']) {
        return Err(format!("{arg:?}: line breaks in an address"));
    }
    let field = format!("To: {arg}\r\n");
    let mut out = Vec::new();
    for group in parse_addresses(field.as_bytes()) {
        for (_, address) in group.members {
            let address = qualify(&address, domain);
            validate_mailbox(&address).map_err(|why| format!("{arg:?} is not a usable address ({why})"))?;
            out.push(address);
        }
    }
    if out.is_empty() {
        return Err(format!("{arg:?} holds no address"));
    }
    Ok(out)
}

/// `name` with `@domain` when it has no domain.
pub fn qualify(address: &str, domain: &str) -> String {
    if split_address(address).is_some() {
        address.to_string()
    } else {
        format!("{address}@{domain}")
    }
}

/// One group of an address field (a plain list is one group without a name).
struct Group {
    name: Option<String>,
    /// (display name, address)
    members: Vec<(Option<String>, String)>,
}

/// The addresses of one raw header field (`Name: value` CRLF, folding
/// included), by mail-parser: comments, quoted names, groups and encoded
/// words are its business.
fn parse_addresses(field: &[u8]) -> Vec<Group> {
    let mut text = field.to_vec();
    text.extend_from_slice(b"\r\n");
    let Some(parsed) = MessageParser::new().parse_headers(&text) else { return Vec::new() };
    let Some(header) = parsed.headers().first() else { return Vec::new() };
    let HeaderValue::Address(address) = &header.value else { return Vec::new() };
    let member = |a: &mail_parser::Addr| match a.address.as_deref().map(str::trim) {
        Some(address) if !address.is_empty() => Some((a.name.as_deref().map(str::to_string), address.to_string())),
        // A bare login name (`To: root`) reads as a display name without
        // an address; sendmail has always taken it for a local address.
        _ => a.name.as_deref().filter(|n| is_login(n)).map(|n| (None, n.to_string())),
    };
    match address {
        mail_parser::Address::List(list) => {
            vec![Group { name: None, members: list.iter().filter_map(member).collect() }]
        }
        mail_parser::Address::Group(groups) => groups
            .iter()
            .map(|g| Group {
                name: g.name.as_deref().map(str::to_string),
                members: g.addresses.iter().filter_map(member).collect(),
            })
            .collect(),
    }
}

/// Whether `s` reads as a login name: one dot-atom of ASCII atext.
fn is_login(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
}

/// Rewrites an address field whose addresses lack a domain (`To: root`,
/// `From: root (Cron Daemon)`) with the domain appended, as Postfix does for
/// local submissions; DKIM signing and every upstream need a domain there.
/// A field whose addresses all have one is left byte for byte.
fn qualify_field(h: &mut Header, domain: &str) {
    let groups = parse_addresses(&h.raw);
    if groups.iter().all(|g| g.members.iter().all(|(_, a)| split_address(a).is_some())) {
        return;
    }
    let mut items = Vec::new();
    for g in groups {
        let members: Vec<BuiltAddress> = g
            .members
            .into_iter()
            .map(|(name, address)| BuiltAddress::new_address(name, qualify(&address, domain)))
            .collect();
        match g.name {
            Some(name) => items.push(BuiltAddress::new_group(Some(name), members)),
            None => items.extend(members),
        }
    }
    let name = h.name.clone();
    *h = built_field(&name, &BuiltAddress::new_list(items));
}

fn built_field(name: &str, value: &BuiltAddress) -> Header {
    let mut raw = format!("{name}: ").into_bytes();
    value.write_header(&mut raw, name.len() + 2);
    Header { name: name.to_string(), raw }
}

/// Makes every line fit `text_line` octets (CRLF included). A long line in
/// the header is refused. In the body of a single-part text message it is
/// kept intact by re-encoding the body as quoted-printable (lossless, 76
/// octets a line); in any other message it is refused, since changing the
/// body's lines would change its content.
fn fit_lines(m: &mut Message, text_line: usize) -> Result<(), String> {
    let max = text_line.saturating_sub(2);
    for (i, h) in m.headers.iter().enumerate() {
        if let Some(len) = h.raw.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l).len()).max() {
            if len > max {
                return Err(format!(
                    "the {} field (header field {}) has a line of {len} octets; the server takes at most {max} (limits.text_line); fold it",
                    h.name,
                    i + 1
                ));
            }
        }
    }
    let long = m.body.split(|&b| b == b'\n').position(|l| l.strip_suffix(b"\r").unwrap_or(l).len() > max);
    let Some(at) = long else { return Ok(()) };
    if !m.is_separated() {
        // The header section ends at a line that is no field, and the body
        // starts with it. Quoted-printable could make that line a field
        // (`X-\xe9t\xe9:` becomes `X-=C3=A9t=C3=A9:`), and every field-like
        // line after it, a `Bcc:` among them, with it.
        return Err(format!(
            "line {} of the body is longer than the {max} octets the server takes (limits.text_line), and the header section ends at a line that is not a header field instead of an empty line, so the body cannot be re-encoded; end the header section with an empty line, or wrap the line",
            at + 1
        ));
    }
    if !reencodable(m) {
        return Err(format!(
            "line {} of the body is longer than the {max} octets the server takes (limits.text_line), and the message is MIME-encoded already; wrap the line or encode that part as quoted-printable or base64",
            at + 1
        ));
    }
    let charset = if std::str::from_utf8(&m.body).is_ok() { "utf-8" } else { "unknown-8bit" };
    m.body = mail_builder::encoders::quoted_printable::QuotedPrintableEncoder::new()
        .preserve_line_breaks()
        .encode(&m.body)
        .map_err(|e| e.to_string())?;
    if !m.body.ends_with(b"\r\n") {
        m.body.extend_from_slice(b"\r\n");
    }
    m.remove("Content-Transfer-Encoding");
    if !m.has_header("MIME-Version") {
        m.append(Header::new("MIME-Version", "1.0"));
    }
    if !m.has_header("Content-Type") {
        m.append(Header::new("Content-Type", &format!("text/plain; charset={charset}")));
    }
    m.append(Header::new("Content-Transfer-Encoding", "quoted-printable"));
    Ok(())
}

/// Whether the body is one text part in an identity encoding, which
/// quoted-printable can replace without touching anything else.
fn reencodable(m: &Message) -> bool {
    let types = m.header_values("Content-Type");
    let encodings = m.header_values("Content-Transfer-Encoding");
    types.len() <= 1
        && encodings.len() <= 1
        && types.first().is_none_or(|t| t.trim_start().to_ascii_lowercase().starts_with("text/"))
        && encodings
            .first()
            .is_none_or(|e| matches!(e.trim().to_ascii_lowercase().as_str(), "7bit" | "8bit" | "binary"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(s: &str, ignore_dots: bool) -> String {
        String::from_utf8(read(s.as_bytes(), ignore_dots, 1 << 20).unwrap()).unwrap()
    }

    fn finish_str(s: &str, extract: bool) -> (String, Vec<String>) {
        let raw = read(s.as_bytes(), true, 1 << 20).unwrap();
        let f = Finish { domain: "host.example", extract, from: "me@host.example", full_name: None, text_line: 1000 };
        let done = finish(raw, &f).unwrap();
        (String::from_utf8(done.message).unwrap(), done.recipients)
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(read_str("a\nb\r\nc", true), "a\r\nb\r\nc\r\n");
        assert_eq!(read_str("10%\r20%\r100%\n", true), "10%\r\n20%\r\n100%\r\n");
        assert_eq!(read_str("", true), "");
        assert_eq!(read_str("\n\n", true), "\r\n\r\n");
    }

    #[test]
    fn a_lone_dot_ends_the_input_unless_ignored() {
        assert_eq!(read_str("a\n.\nb\n", false), "a\r\n");
        assert_eq!(read_str("a\r\n.\r\nb\r\n", false), "a\r\n");
        assert_eq!(read_str("a\n.\nb\n", true), "a\r\n.\r\nb\r\n");
        assert_eq!(read_str("a\n..\n.b\n", false), "a\r\n..\r\n.b\r\n");
    }

    #[test]
    fn a_leading_mbox_from_line_is_dropped() {
        assert_eq!(
            read_str("From me Tue Jun  3 10:00:00 2025\nSubject: x\n\nFrom here\n", true),
            "Subject: x\r\n\r\nFrom here\r\n"
        );
    }

    #[test]
    fn size_limit() {
        match read(&b"0123456789\n"[..], true, 5) {
            Err(InputError::Data(e)) => assert!(e.contains("limits.message_size"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recipients_from_the_header_and_bcc_removed() {
        let (m, r) = finish_str(
            "From: A <a@x.example>\nTo: b@y.example, \"Sea, C\" <c@y.example>\nCc: d@y.example\nBcc: e@z.example,\n f@z.example\nSubject: s\n\nbody\n",
            true,
        );
        assert_eq!(r, vec!["b@y.example", "c@y.example", "d@y.example", "e@z.example", "f@z.example"]);
        assert!(!m.to_ascii_lowercase().contains("bcc"), "{m}");
        assert!(!m.contains("e@z.example") && !m.contains("f@z.example"), "{m}");
        assert!(m.starts_with("From: A <a@x.example>\r\nTo: b@y.example, \"Sea, C\" <c@y.example>\r\nCc: d@y.example\r\nSubject: s\r\n\r\nbody\r\n"), "{m}");
    }

    #[test]
    fn groups_and_resent_fields() {
        let (_, r) = finish_str("To: undisclosed-recipients:;\nCc: team: a@x.example, b@x.example;\n\nb\n", true);
        assert_eq!(r, vec!["a@x.example", "b@x.example"]);
        let (m, r) =
            finish_str("To: old@x.example\nResent-To: new@x.example\nResent-Bcc: hidden@x.example\n\nb\n", true);
        assert_eq!(r, vec!["new@x.example", "hidden@x.example"]);
        assert!(!m.contains("hidden"), "{m}");
    }

    #[test]
    fn bcc_is_removed_without_t_too() {
        let (m, r) = finish_str("To: a@x.example\nBcc: secret@x.example\n\nb\n", false);
        assert!(r.is_empty());
        assert!(!m.contains("secret"), "{m}");
    }

    #[test]
    fn bare_names_get_the_domain() {
        let (m, r) = finish_str("From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@h> ls\n\nout\n", true);
        assert_eq!(r, vec!["root@host.example"]);
        assert!(m.contains("From: \"Cron Daemon\" <root@host.example>\r\n"), "{m}");
        assert!(m.contains("To: <root@host.example>\r\n"), "{m}");
        assert!(m.contains("Subject: Cron <root@h> ls\r\n"), "the subject is not an address field: {m}");
    }

    #[test]
    fn from_is_added_when_missing() {
        let (m, _) = finish_str("To: a@x.example\n\nb\n", false);
        assert_eq!(m, "To: a@x.example\r\nFrom: <me@host.example>\r\n\r\nb\r\n");
        let raw = read(&b"Subject: s\n\nb\n"[..], true, 1 << 20).unwrap();
        let f = Finish {
            domain: "host.example",
            extract: false,
            from: "me@host.example",
            full_name: Some("Cron Daemon"),
            text_line: 1000,
        };
        let m = String::from_utf8(finish(raw, &f).unwrap().message).unwrap();
        assert!(m.contains("From: \"Cron Daemon\" <me@host.example>\r\n"), "{m}");
        // A body with no header at all gets its blank line.
        let (m, _) = finish_str("just text\n", false);
        assert_eq!(m, "From: <me@host.example>\r\n\r\njust text\r\n");
    }

    #[test]
    fn unusable_header_addresses_are_refused() {
        let raw = read(&b"To: a@b@c\n\nb\n"[..], true, 1 << 20).unwrap();
        let f = Finish { domain: "host.example", extract: true, from: "m@h.example", full_name: None, text_line: 1000 };
        let e = finish(raw, &f).unwrap_err();
        assert!(e.starts_with("To: "), "{e}");
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_argument("root", "h.example").unwrap(), vec!["root@h.example"]);
        assert_eq!(
            parse_argument("a@x.example, B <b@y.example>", "h.example").unwrap(),
            vec!["a@x.example", "b@y.example"]
        );
        assert!(parse_argument("a@", "h.example").is_err());
        assert!(parse_argument("a@x.example\r\nRCPT TO:<b@y>", "h.example").is_err());
        assert!(parse_argument("", "h.example").is_err());
    }

    #[test]
    fn long_body_lines_are_reencoded_losslessly() {
        let long = "x".repeat(1500);
        let (m, _) = finish_str(&format!("To: a@x.example\nSubject: s\n\nshort\n{long}\nend=\n"), false);
        assert!(m.contains("Content-Transfer-Encoding: quoted-printable\r\n"), "{m}");
        assert!(m.contains("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"), "{m}");
        assert!(m.lines().all(|l| l.len() <= 76), "{m}");
        let body = &m[m.find("\r\n\r\n").unwrap() + 4..];
        let decoded = mail_parser::decoders::quoted_printable::quoted_printable_decode(body.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), format!("short\r\n{long}\r\nend=\r\n"));
    }

    #[test]
    fn a_body_after_a_malformed_header_line_is_not_reencoded() {
        // Non-ASCII in a field name: the header section ends at that line.
        let text = "Subject: s\nX-\u{e9}t\u{e9}: no field\nBcc: hidden@x.example\n";
        let long = "x".repeat(1500);
        let raw = read(format!("{text}{long}\n").as_bytes(), true, 1 << 20).unwrap();
        let f = Finish { domain: "h.example", extract: false, from: "m@h.example", full_name: None, text_line: 1000 };
        let e = finish(raw, &f).unwrap_err();
        assert!(e.contains("line 3 of the body") && e.contains("empty line"), "{e}");
        // Within the limit, the body is passed on as written: still no field.
        let (m, _) = finish_str(&format!("{text}body\n"), false);
        assert!(m.ends_with("\r\nX-\u{e9}t\u{e9}: no field\r\nBcc: hidden@x.example\r\nbody\r\n"), "{m}");
        assert!(!Message::parse(m.into_bytes()).has_header("Bcc"));
    }

    #[test]
    fn long_lines_that_cannot_be_reencoded_are_refused() {
        let long = "x".repeat(1500);
        let raw = format!("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n{long}\n--b--\n");
        let raw = read(raw.as_bytes(), true, 1 << 20).unwrap();
        let f = Finish { domain: "h.example", extract: false, from: "m@h.example", full_name: None, text_line: 1000 };
        let e = finish(raw, &f).unwrap_err();
        assert!(e.contains("line 3 of the body") && e.contains("limits.text_line"), "{e}");
        let raw = read(format!("Subject: {long}\n\nb\n").as_bytes(), true, 1 << 20).unwrap();
        let e = finish(raw, &f).unwrap_err();
        assert!(e.contains("Subject field"), "{e}");
        // Within the limit nothing changes.
        let fits = "y".repeat(998);
        let raw = read(format!("Subject: s\n\n{fits}\n").as_bytes(), true, 1 << 20).unwrap();
        let m = finish(raw, &f).unwrap().message;
        assert!(String::from_utf8(m).unwrap().contains(&format!("\r\n\r\n{fits}\r\n")));
    }
}
