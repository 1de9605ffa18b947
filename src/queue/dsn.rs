//! Delivery status notifications: the bounce a sender gets when mail we accepted cannot be delivered, or is late.
//!
//! Once we have answered `250`, the message is ours; if the upstream later refuses it or it waits in the queue too
//! long, a DSN is the only way the sender learns of it (RFC 5321 §6.1). The format is the one every mail client and
//! bounce processor understands, a `multipart/report` (RFC 6522, formerly RFC 3462) of three parts:
//!
//! 1. a short `text/plain` explanation for people;
//! 2. a `message/delivery-status` part for software (RFC 3464, with the field values RFC 3461 §6 asks for);
//! 3. the original header section as `text/rfc822-headers`, never the body: a bounce must not send the content to
//!    whoever forged the sender address, nor double the size of a large message.
//!
//! The machine-readable part stays 7-bit even for internationalized addresses: they get the `utf-8` address type in
//! its ASCII form (`utf-8-addr-xtext`, RFC 6533 §3), which a bounce processor that only knows RFC 3464 still parses.
//! Only the human text and the returned headers may contain 8-bit bytes; [`needs`] tells the caller which SMTP
//! extensions the built message requires.
//!
//! Every value from outside (addresses, the upstream's reply, identifiers) is reduced to one line of printable
//! characters before it is written, so nothing an upstream says can add a header field or a MIME part.

use chrono::{DateTime, Utc};

/// What happened to one recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Given up: the message will not be delivered to this recipient.
    Failed,
    /// Not delivered yet; still being retried.
    Delayed,
    Delivered,
    /// Handed to a system that does not send DSNs itself.
    Relayed,
    /// Delivered to a list or alias that expanded to several recipients.
    Expanded,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

/// One recipient's outcome, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The envelope recipient (becomes `Final-Recipient`); may be UTF-8.
    pub address: String,
    /// The `ORCPT` parameter of `RCPT TO` exactly as the client gave it (`rfc822;bob+2Bx@example.org`, still
    /// xtext-encoded); decoded here. `None` when the client gave none: then no `Original-Recipient` is written.
    pub original: Option<String>,
    pub action: Action,
    /// Enhanced status code (RFC 3463), e.g. `5.1.1` from the upstream's reply, or ours such as `4.4.7` when the
    /// message expired. If it is not a valid code, the one in `diagnostic` is used, else `5.0.0` / `4.0.0` / `2.0.0`.
    pub status: String,
    /// Host name of the upstream server that answered.
    pub remote_mta: Option<String>,
    /// The upstream's reply, e.g. `550 5.1.1 no such user` (multi-line replies are joined into one line), or, when
    /// there was none, what went wrong in a few words (`connection refused`).
    pub diagnostic: Option<String>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// Until when delivery will be retried; written only for [`Action::Delayed`].
    pub will_retry_until: Option<DateTime<Utc>>,
}

/// Everything a DSN says about one queued message.
#[derive(Debug, Clone)]
pub struct Bounce<'a> {
    /// Our host name (`Reporting-MTA`).
    pub reporting_mta: &'a str,
    /// The DSN's `From:` address, e.g. `MAILER-DAEMON@mx.example.com`.
    pub postmaster: &'a str,
    /// The original envelope sender: the DSN's recipient. Never empty: mail from the null sender is not bounced.
    pub to: &'a str,
    /// The `ENVID` parameter of `MAIL FROM` as the client gave it (xtext-encoded); decoded here.
    pub original_envelope_id: Option<&'a str>,
    /// When we accepted the message.
    pub arrival: DateTime<Utc>,
    /// The recipients this report is about (not those still pending without news, nor those delivered).
    pub recipients: Vec<RecipientReport>,
    /// The original message's header section. Passing the whole message is harmless: everything from the first
    /// empty line on is dropped.
    pub original_headers: &'a [u8],
    pub now: DateTime<Utc>,
    /// Right-hand side of the DSN's `Message-ID`.
    pub message_id_domain: &'a str,
}

/// What the envelope carrying a message must declare (RFC 6152, RFC 6531).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// The message has 8-bit bytes: send it with `BODY=8BITMIME`.
    pub eight_bit_mime: bool,
    /// The header section has UTF-8 (the DSN goes to an internationalized address): send it with `SMTPUTF8`.
    pub smtputf8: bool,
}

impl Needs {
    /// The `MAIL FROM` parameters, in the spool's `(name, value)` shape.
    pub fn mail_params(&self) -> Vec<(String, Option<String>)> {
        let mut params = Vec::new();
        if self.eight_bit_mime {
            params.push(("BODY".to_string(), Some("8BITMIME".to_string())));
        }
        if self.smtputf8 {
            params.push(("SMTPUTF8".to_string(), None));
        }
        params
    }
}

/// Which SMTP extensions a message (such as one [`build`] made) needs: 8-bit bytes anywhere need `8BITMIME`, UTF-8
/// in the header section needs `SMTPUTF8` as well. A DSN is 7-bit unless a recipient address or the upstream's
/// reply is non-ASCII (human text), the returned headers have 8-bit bytes, or `to`/`postmaster` is non-ASCII.
pub fn needs(message: &[u8]) -> Needs {
    let header_end = find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let smtputf8 = !message[..header_end].is_ascii();
    Needs { eight_bit_mime: smtputf8 || !message.is_ascii(), smtputf8 }
}

/// The whole DSN: CRLF line endings, no line over 998 octets, ending with CRLF.
///
/// Send it with the null reverse-path (`MAIL FROM:<>`, so that it can never bounce back in a loop), to `b.to`, with
/// the parameters [`needs`] gives and no `NOTIFY`, `RET`, `ENVID` or `ORCPT`. If it cannot be delivered either, drop
/// it; never build a DSN for a message whose own sender was null (RFC 5321 §4.5.5, RFC 3461 §6.2).
pub fn build(b: &Bounce) -> Vec<u8> {
    build_with(b, || format!("=_dsn_{:016x}", random_u64()))
}

/// [`build`] with the boundary candidates given, so a test can force a collision.
fn build_with(b: &Bounce, mut boundary_candidate: impl FnMut() -> String) -> Vec<u8> {
    debug_assert!(!b.to.is_empty(), "no DSN for mail from the null sender");
    let text = human_text(b);
    let status = delivery_status(b);
    let headers = header_section(b.original_headers);
    // A random boundary is practically never in the content, but the content is partly the sender's and the
    // upstream's: check rather than hope.
    let boundary = loop {
        let candidate = boundary_candidate();
        let parts: [&[u8]; 3] = [text.as_bytes(), status.as_bytes(), &headers];
        if !parts.iter().any(|p| find(p, candidate.as_bytes()).is_some()) {
            break candidate;
        }
    };
    let cte = |ascii: bool| if ascii { "7bit" } else { "8bit" };

    let mut top = String::new();
    push_field(&mut top, "From", &format!("Mail Delivery System <{}>", mailbox(b.postmaster)));
    push_field(&mut top, "To", &format!("<{}>", mailbox(b.to)));
    push_field(&mut top, "Subject", subject(&b.recipients));
    push_field(&mut top, "Date", &b.now.to_rfc2822());
    push_field(&mut top, "Message-ID", &message_id(b.now, b.message_id_domain));
    push_field(&mut top, "MIME-Version", "1.0");
    // RFC 3834: tells vacation responders and other robots not to answer.
    push_field(&mut top, "Auto-Submitted", "auto-replied");
    push_field(
        &mut top,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    // A multipart entity declares the widest encoding of its parts (RFC 2045 §6.4).
    push_field(&mut top, "Content-Transfer-Encoding", cte(text.is_ascii() && headers.is_ascii()));
    top.push_str("\r\nThis is a delivery status notification (RFC 3464) in MIME format.\r\n");

    top.push_str(&format!("\r\n--{boundary}\r\n"));
    push_field(&mut top, "Content-Type", "text/plain; charset=utf-8");
    push_field(&mut top, "Content-Description", "Notification");
    push_field(&mut top, "Content-Transfer-Encoding", cte(text.is_ascii()));
    top.push_str("\r\n");
    top.push_str(&text);

    // The extra CRLF before each delimiter keeps the part's last line break (the delimiter's own CRLF belongs to
    // the delimiter, RFC 2046 §5.1.1).
    top.push_str(&format!("\r\n--{boundary}\r\n"));
    push_field(&mut top, "Content-Type", "message/delivery-status");
    push_field(&mut top, "Content-Description", "Delivery report");
    top.push_str("\r\n");
    top.push_str(&status);

    let mut out = top.into_bytes();
    // RFC 6522 makes the third part optional; with nothing to return, leave it out rather than send an empty one.
    if !headers.is_empty() {
        let mut part = format!("\r\n--{boundary}\r\n");
        // text/rfc822-headers has no charset parameter of its own, but MIME readers ignore parameters they do not
        // know, and those that honour it show UTF-8 header fields (RFC 6532) legibly.
        let charset = if !headers.is_ascii() && std::str::from_utf8(&headers).is_ok() { "; charset=utf-8" } else { "" };
        push_field(&mut part, "Content-Type", &format!("text/rfc822-headers{charset}"));
        push_field(&mut part, "Content-Description", "Headers of your message");
        push_field(&mut part, "Content-Transfer-Encoding", cte(headers.is_ascii()));
        part.push_str("\r\n");
        out.extend_from_slice(part.as_bytes());
        out.extend_from_slice(&headers);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

fn subject(recipients: &[RecipientReport]) -> &'static str {
    if recipients.iter().any(|r| r.action == Action::Failed) {
        "Undelivered Mail Returned to Sender"
    } else if recipients.iter().any(|r| r.action == Action::Delayed) {
        "Delayed Mail (still being retried)"
    } else {
        "Delivery Status Notification"
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Part 1: the explanation for people.

/// Width of the human text; lines are wrapped at spaces to stay readable in any client.
const TEXT_WIDTH: usize = 76;

fn human_text(b: &Bounce) -> String {
    let mut t = String::new();
    let of = |action: Action| b.recipients.iter().filter(move |r| r.action == action);
    let failed: Vec<_> = of(Action::Failed).collect();
    let delayed: Vec<_> = of(Action::Delayed).collect();
    let other: Vec<_> = b.recipients.iter().filter(|r| !matches!(r.action, Action::Failed | Action::Delayed)).collect();

    para(&mut t, &format!("This is the mail system at {}.", host_name(b.reporting_mta)), 0);
    if !failed.is_empty() {
        t.push_str("\r\n");
        let who = recipients_phrase(failed.len());
        para(&mut t, &format!("Your message could not be delivered to {who}. It will not be retried."), 0);
        for r in failed {
            recipient_text(&mut t, r);
        }
    }
    if !delayed.is_empty() {
        t.push_str("\r\n");
        let who = recipients_phrase(delayed.len());
        para(
            &mut t,
            &format!(
                "Your message has not been delivered yet to {who}. You do not need to do anything: delivery is \
                 being retried, and you will get another notice if it finally fails."
            ),
            0,
        );
        for r in delayed {
            recipient_text(&mut t, r);
        }
    }
    if !other.is_empty() {
        t.push_str("\r\n");
        para(&mut t, &format!("Delivery report for {}:", recipients_phrase(other.len())), 0);
        for r in other {
            recipient_text(&mut t, r);
        }
    }
    t.push_str("\r\n");
    para(
        &mut t,
        "The technical report and the headers of your message are attached; its content is not. If you need help, \
         forward this notice to your mail administrator.",
        0,
    );
    t
}

fn recipients_phrase(n: usize) -> String {
    if n == 1 {
        "the recipient below".to_string()
    } else {
        format!("the {n} recipients below")
    }
}

fn recipient_text(t: &mut String, r: &RecipientReport) {
    t.push_str("\r\n");
    para(t, &format!("<{}>", mailbox(&r.address)), 0);
    let status = status_code(r);
    let diagnostic = r.diagnostic.as_deref().map(reply_one_line).filter(|d| !d.is_empty());
    match (&diagnostic, r.remote_mta.as_deref().map(host_name).filter(|h| !h.is_empty())) {
        (Some(d), Some(host)) if is_reply(d) => para(t, &format!("The recipient's mail server ({host}) said: {d}"), 4),
        (Some(d), None) if is_reply(d) => para(t, &format!("The recipient's mail server said: {d}"), 4),
        (Some(d), _) => para(t, &format!("Reason: {d}"), 4),
        (None, _) => para(t, &format!("Delivery status: {status}"), 4),
    }
    if let Some(hint) = hint(&status, r.action) {
        para(t, hint, 4);
    }
    if r.action == Action::Delayed {
        if let Some(until) = r.will_retry_until {
            para(t, &format!("Delivery will be retried until {}.", until.format("%a, %-d %b %Y %H:%M UTC")), 4);
        }
    }
}

/// A plain-English reason for the common enhanced status codes (RFC 3463, RFC 7372), so that a non-expert knows
/// what to do next.
fn hint(status: &str, action: Action) -> Option<&'static str> {
    let mut it = status.split('.').skip(1).map(|n| n.parse::<u16>().unwrap_or(0));
    let (subject, detail) = (it.next()?, it.next()?);
    Some(match (subject, detail) {
        (1, 1) => "The address may be misspelled, or the mailbox no longer exists. Check the address and send again.",
        (1, 2) | (1, 10) => "The domain name (after the @) may be misspelled, or it does not receive mail.",
        (1, 3) => "The address is not valid. Check it and send again.",
        (2, 1) => "The recipient's mailbox is disabled and does not accept messages.",
        (2, 2) => "The recipient's mailbox is full.",
        (2, 3) | (3, 4) => "The message is too large for the recipient's server. Send it without large attachments.",
        (4, 7) if action == Action::Failed => "Delivery was tried for too long without success.",
        (4, 7) => return None,
        (4, _) => "The recipient's mail server could not be reached.",
        // 5.7.20-22: DKIM, 5.7.23-24: SPF, 5.7.26: DMARC (RFC 7372).
        (7, 20..=24) | (7, 26) => {
            "The recipient's server could not verify that the message really comes from your domain (SPF, DKIM or \
             DMARC). Your mail administrator should check the domain's DNS records."
        }
        (7, _) => {
            "The recipient's server refused the message by policy, for example because it looked like spam. Try to \
             reach the recipient another way, or ask your mail administrator."
        }
        _ => return None,
    })
}

/// Writes `text` wrapped at spaces, each line indented by `indent`.
fn para(t: &mut String, text: &str, indent: usize) {
    for line in wrap(text, TEXT_WIDTH - indent) {
        t.extend(std::iter::repeat_n(' ', indent));
        t.push_str(&line);
        t.push_str("\r\n");
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        for piece in pieces(word) {
            if !line.is_empty() && line.chars().count() + 1 + piece.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(piece);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

// ---------------------------------------------------------------------------------------------------------------
// Part 2: the machine-readable report (RFC 3464 §2, field order as in its grammar).

fn delivery_status(b: &Bounce) -> String {
    let mut s = String::new();
    if let Some(envid) = b.original_envelope_id.map(|e| ascii_escaped(&one_line(&xtext_decode(e)))) {
        // RFC 3461 §6.3 (a): the ENVID, xtext decoded.
        if !envid.is_empty() {
            push_field(&mut s, "Original-Envelope-Id", &envid);
        }
    }
    push_field(&mut s, "Reporting-MTA", &format!("dns; {}", host_name(b.reporting_mta)));
    push_field(&mut s, "Arrival-Date", &b.arrival.to_rfc2822());
    for r in &b.recipients {
        s.push_str("\r\n");
        if let Some(original) = r.original.as_deref().and_then(original_recipient) {
            push_field(&mut s, "Original-Recipient", &original);
        }
        push_field(&mut s, "Final-Recipient", &typed_address(&r.address));
        push_field(&mut s, "Action", r.action.as_str());
        push_field(&mut s, "Status", &status_code(r));
        if let Some(host) = r.remote_mta.as_deref().map(host_name).filter(|h| !h.is_empty()) {
            push_field(&mut s, "Remote-MTA", &format!("dns; {host}"));
        }
        if let Some(d) = r.diagnostic.as_deref().map(reply_one_line).filter(|d| !d.is_empty()) {
            // `smtp` promises an SMTP reply (RFC 3464 §2.3.6); our own words about a failure that had no reply
            // (a refused connection, say) get a private type instead.
            let kind = if is_reply(&d) { "smtp" } else { "X-mailferry" };
            push_field(&mut s, "Diagnostic-Code", &format!("{kind}; {}", ascii_escaped(&d)));
        }
        if let Some(at) = r.last_attempt {
            push_field(&mut s, "Last-Attempt-Date", &at.to_rfc2822());
        }
        // RFC 3464 §2.3.9: only meaningful while the message is still being retried.
        if r.action == Action::Delayed {
            if let Some(until) = r.will_retry_until {
                push_field(&mut s, "Will-Retry-Until", &until.to_rfc2822());
            }
        }
    }
    s
}

/// `rfc822; addr`, or `utf-8; addr` in its 7-bit form for an internationalized address (RFC 6533 §3).
fn typed_address(address: &str) -> String {
    let a = mailbox(address);
    if a.is_ascii() {
        format!("rfc822; {a}")
    } else {
        format!("utf-8; {}", utf8_addr_xtext(&a))
    }
}

/// The `Original-Recipient` value from a raw `ORCPT` parameter (`addr-type;xtext`), decoded (RFC 3461 §6.3 (d)).
fn original_recipient(orcpt: &str) -> Option<String> {
    let (kind, encoded) = orcpt.trim().split_once(';').unwrap_or(("rfc822", orcpt));
    let kind: String = kind.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let kind = if kind.is_empty() { "rfc822".to_string() } else { kind.to_ascii_lowercase() };
    // The utf-8 type is not xtext but `\x{HEX}` escapes (or raw UTF-8 under SMTPUTF8); either way, decode to the
    // address, then write it in the one 7-bit form.
    let address = if kind == "utf-8" { unitext_decode(encoded.trim()) } else { xtext_decode(encoded.trim()) };
    let address = mailbox(&address);
    if address.is_empty() {
        None
    } else if kind == "utf-8" || !address.is_ascii() {
        Some(format!("utf-8; {}", utf8_addr_xtext(&address)))
    } else {
        Some(format!("{kind}; {address}"))
    }
}

/// The recipient's enhanced status code, checked: a malformed one would make the whole report unparseable.
fn status_code(r: &RecipientReport) -> String {
    if valid_status(r.status.trim()) {
        return r.status.trim().to_string();
    }
    // The upstream's reply usually carries one ("550 5.1.1 ..."); its class must agree with the action, or a
    // "250 2.0.0" echoed by mistake would contradict "failed". A failure may carry a 4.x.x code: the last
    // temporary error before the message expired.
    let (class, also) = match r.action {
        Action::Failed => ('5', '4'),
        Action::Delayed => ('4', '4'),
        _ => ('2', '2'),
    };
    let from_reply = r.diagnostic.as_deref().map(reply_one_line).and_then(|d| {
        d.split(' ')
            .nth(1)
            .filter(|c| valid_status(c) && (c.starts_with(class) || c.starts_with(also)))
            .map(str::to_string)
    });
    from_reply.unwrap_or_else(|| format!("{class}.0.0"))
}

/// Whether a (one-line) diagnostic is an SMTP reply: it starts with a reply code.
fn is_reply(d: &str) -> bool {
    let b = d.as_bytes();
    b.len() >= 3
        && matches!(b[0], b'2'..=b'5')
        && b[1..3].iter().all(u8::is_ascii_digit)
        && matches!(b.get(3), None | Some(b' '))
}

fn valid_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let class_ok = matches!(parts.next(), Some("2" | "4" | "5"));
    let number =
        |p: Option<&str>| p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    class_ok && number(parts.next()) && number(parts.next()) && parts.next().is_none()
}

/// An SMTP reply as one line: continuation lines joined, and their repeated `550-5.1.1` prefixes dropped so the
/// text reads as one sentence.
fn reply_one_line(reply: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut code: Option<&str> = None;
    let mut enhanced: Option<&str> = None;
    for line in reply.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty()) {
        let b = line.as_bytes();
        let has_code =
            b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) && matches!(b.get(3), None | Some(b' ' | b'-'));
        let (this_code, rest) =
            if has_code { (Some(&line[..3]), line.get(4..).unwrap_or("").trim()) } else { (None, line) };
        if out.is_empty() {
            code = this_code;
            if let Some(c) = this_code {
                out.push(c);
            }
            enhanced = rest.split(' ').next().filter(|e| valid_status(e));
            out.push(rest);
            continue;
        }
        let mut rest = if this_code.is_some() && this_code == code { rest } else { line };
        if let Some(e) = enhanced {
            if let Some(after) = rest.strip_prefix(e).filter(|a| a.is_empty() || a.starts_with(' ')) {
                rest = after.trim_start();
            }
        }
        out.push(rest);
    }
    one_line(&out.join(" "))
}

// ---------------------------------------------------------------------------------------------------------------
// Part 3: the returned header section.

/// Longest header line we pass through unchanged; longer ones (invalid already) are folded to fit 998.
const HEADER_LINE_MAX: usize = 990;

/// The header section alone, with CRLF line endings and no NUL, ending with CRLF (or empty).
fn header_section(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut rest = raw;
    while !rest.is_empty() {
        let end = rest.iter().position(|&c| c == b'\r' || c == b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = if rest[end..].starts_with(b"\r\n") { 2 } else { usize::from(end < rest.len()) };
        rest = &rest[end + skip..];
        if line.is_empty() {
            // The end of the header section: the body never leaves, whatever the caller passed.
            break;
        }
        let line: Vec<u8> = line.iter().copied().filter(|&c| c != 0).collect();
        let mut chunk = &line[..];
        while chunk.len() > HEADER_LINE_MAX {
            // Cut on a UTF-8 character boundary, then fold: the continuation line starts with a space.
            let mut cut = HEADER_LINE_MAX;
            while cut > 0 && (chunk[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            out.extend_from_slice(&chunk[..cut]);
            out.extend_from_slice(b"\r\n ");
            chunk = &chunk[cut..];
        }
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Sanitising and encoding.

/// Recommended header line length (RFC 5322 §2.1.1); lines fold at spaces to stay within it where they can.
const FOLD: usize = 78;
/// The longest run written without a place to fold: keeps every line under the hard limit of 998 octets.
const PIECE: usize = 900;

/// Writes `Name: value` folded at spaces (RFC 5322 §2.2.3), so unfolding gives back the value exactly. The value
/// must already be one line: only a word longer than [`PIECE`] octets gains a space where it is cut.
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut len = name.len() + 1;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        for piece in pieces(word) {
            if len > name.len() + 1 && len + 1 + piece.len() > FOLD {
                out.push_str("\r\n");
                len = 0;
            }
            out.push(' ');
            out.push_str(piece);
            len += 1 + piece.len();
        }
    }
    out.push_str("\r\n");
}

/// `word` cut into runs of at most [`PIECE`] octets, on character boundaries.
fn pieces(word: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = word;
    while rest.len() > PIECE {
        let mut cut = PIECE;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

/// One line of printable text: every control and line or paragraph separator becomes a space, runs of spaces
/// become one, and the bidirectional overrides that can disguise an address in the human text are dropped.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' => {}
            c if c.is_control() || c.is_whitespace() => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => out.push(c),
        }
    }
    let len = out.trim_end().len();
    out.truncate(len);
    out
}

/// An address as one line without the angle brackets that would end `<...>` early.
fn mailbox(s: &str) -> String {
    one_line(s).replace(['<', '>'], "")
}

/// A host name for `dns;` fields and the text: ASCII, no spaces.
fn host_name(s: &str) -> String {
    ascii_escaped(&one_line(s)).replace(' ', "")
}

/// ASCII only: each non-ASCII character as `\x{HEX}`, the escape RFC 6533 uses, so nothing is lost.
fn ascii_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", c as u32));
        }
    }
    out
}

/// RFC 6533 `utf-8-addr-xtext`: printable ASCII except `\`, `+` and `=` as is, everything else as `\x{HEX}`.
fn utf8_addr_xtext(address: &str) -> String {
    let mut out = String::with_capacity(address.len() + 16);
    for c in address.chars() {
        if c.is_ascii_graphic() && !matches!(c, '\\' | '+' | '=') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:02X}}}", c as u32));
        }
    }
    out
}

/// Decodes `\x{HEX}` escapes (RFC 6533 `utf-8-addr-unitext` and `-xtext`); anything else is kept as is.
fn unitext_decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\x{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let decoded = after
            .find('}')
            .filter(|&end| (1..=6).contains(&end))
            .and_then(|end| Some((char::from_u32(u32::from_str_radix(&after[..end], 16).ok()?)?, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("\\x{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes xtext (RFC 3461 §4): `+HH` is the octet HH; a malformed `+` is kept as is.
fn xtext_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'+' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A unique `Message-ID`: the time for people reading logs, 64 random bits for uniqueness.
fn message_id(now: DateTime<Utc>, domain: &str) -> String {
    let domain: String = domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'))
        .collect();
    let domain = if domain.is_empty() { "localhost" } else { domain.as_str() };
    format!("<{}.{:016x}.dsn@{domain}>", now.format("%Y%m%d%H%M%S"), random_u64())
}

/// 64 unpredictable bits without a dependency: std's `RandomState` is seeded from the OS, and the counter, clock
/// and process id keep two calls from ever hashing the same input.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
