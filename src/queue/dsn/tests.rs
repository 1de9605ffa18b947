use super::*;
use chrono::TimeZone;
use std::io::Write as _;
use std::process::{Command, Stdio};

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, h, 15, 9).unwrap()
}

const ORIGINAL: &[u8] = b"Received: from client (client [192.0.2.7]) by mx.example.com\r\n\
        From: Alice <alice@example.com>\r\n\
        To: Bob <bob@example.org>\r\n\
        Subject: Quarterly numbers\r\n\
        Message-ID: <1234@example.com>\r\n";

fn failed(address: &str, diagnostic: &str) -> RecipientReport {
    RecipientReport {
        address: address.to_string(),
        original: None,
        action: Action::Failed,
        status: "5.1.1".to_string(),
        remote_mta: Some("mx1.example.org".to_string()),
        diagnostic: Some(diagnostic.to_string()),
        last_attempt: Some(at(11)),
        will_retry_until: None,
    }
}

fn delayed(address: &str) -> RecipientReport {
    RecipientReport {
        address: address.to_string(),
        original: None,
        action: Action::Delayed,
        status: "4.4.1".to_string(),
        remote_mta: Some("mx2.example.net".to_string()),
        diagnostic: Some("421 4.4.1 try again later".to_string()),
        last_attempt: Some(at(11)),
        will_retry_until: Some(Utc.with_ymd_and_hms(2025, 3, 19, 10, 15, 9).unwrap()),
    }
}

fn bounce(recipients: Vec<RecipientReport>) -> Bounce<'static> {
    Bounce {
        reporting_mta: "mx.example.com",
        postmaster: "MAILER-DAEMON@mx.example.com",
        to: "alice@example.com",
        original_envelope_id: None,
        arrival: at(10),
        recipients,
        original_headers: ORIGINAL,
        now: at(12),
        message_id_domain: "mx.example.com",
    }
}

/// Parses with Python's `email` package (an independent MIME parser) and prints what it understood, one fact
/// per line: `defects N`, `header NAME: VALUE`, `part I TYPE`, `block I NAME: VALUE`, `text JSON`, `returned JSON`.
fn parse_with_python(message: &[u8]) -> String {
    const SCRIPT: &str = r#"
import sys, json, email, email.policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
print("defects", sum(len(p.defects) for p in m.walk()))
print("multipart", m.is_multipart())
print("type", m.get_content_type())
print("report-type", m.get_param("report-type"))
for k, v in m.items():
    print("header %s: %s" % (k, v))
parts = m.get_payload()
for i, p in enumerate(parts):
    print("part", i, p.get_content_type())
for i, block in enumerate(parts[1].get_payload()):
    for k, v in block.items():
        print("block %d %s: %s" % (i, k, v))
print("text", json.dumps(parts[0].get_content()))
if len(parts) > 2:
    print("returned", json.dumps(parts[2].get_payload(decode=True).decode("utf-8", "replace")))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to check the DSN with an independent MIME parser");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Whether a dump line is a header field (top level or in a status block) with this name.
fn is_field(line: &str, name: &str) -> bool {
    let field = match line.split_once(' ') {
        Some(("header", rest)) => rest,
        Some(("block", rest)) => rest.split_once(' ').map_or("", |(_, f)| f),
        _ => return false,
    };
    field.split_once(':').is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
}

fn has_line(dump: &str, line: &str) -> bool {
    dump.lines().any(|l| l == line)
}

fn assert_lines(dump: &str, lines: &[&str]) {
    for line in lines {
        assert!(has_line(dump, line), "missing {line:?} in:\n{dump}");
    }
}

/// The text part as Python decoded it, with line breaks and indents made single spaces so that checks do not
/// depend on where lines wrap.
fn text_of(dump: &str) -> String {
    let json = dump.lines().find_map(|l| l.strip_prefix("text ")).unwrap();
    // A JSON string; its \r\n escapes are all that matter for searching in it.
    json.replace("\\r\\n", " ").split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// CRLF only, every line within 998 octets, ending with CRLF.
fn assert_wire_format(m: &[u8]) {
    assert!(m.ends_with(b"\r\n"));
    for (i, &c) in m.iter().enumerate() {
        if c == b'\n' {
            assert!(i > 0 && m[i - 1] == b'\r', "bare LF at {i}");
        }
        if c == b'\r' {
            assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    for line in m.split(|&c| c == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len() - 1);
    }
}

fn status_part(m: &[u8]) -> String {
    let s = String::from_utf8_lossy(m);
    let start = s.find("Content-Type: message/delivery-status").unwrap();
    let end = start + s[start..].find("\r\n--=_").unwrap();
    s[start..end].to_string()
}

#[test]
fn failed_bounce_parses_as_a_multipart_report() {
    let mut r = failed("bob@example.org", "550 5.1.1 <bob@example.org>: no such user");
    r.original = Some("rfc822;bob+2Btag@example.org".to_string());
    let mut b = bounce(vec![r]);
    b.original_envelope_id = Some("QQ+2B314159");
    let m = build(&b);
    assert_wire_format(&m);
    let dump = parse_with_python(&m);
    assert_lines(
        &dump,
        &[
            "defects 0",
            "multipart True",
            "type multipart/report",
            "report-type delivery-status",
            "header From: Mail Delivery System <MAILER-DAEMON@mx.example.com>",
            "header To: alice@example.com",
            "header Subject: Undelivered Mail Returned to Sender",
            "header Date: Fri, 14 Mar 2025 12:15:09 +0000",
            "header MIME-Version: 1.0",
            "header Auto-Submitted: auto-replied",
            "part 0 text/plain",
            "part 1 message/delivery-status",
            "part 2 text/rfc822-headers",
            "block 0 Original-Envelope-Id: QQ+314159",
            "block 0 Reporting-MTA: dns; mx.example.com",
            "block 0 Arrival-Date: Fri, 14 Mar 2025 10:15:09 +0000",
            "block 1 Original-Recipient: rfc822; bob+tag@example.org",
            "block 1 Final-Recipient: rfc822; bob@example.org",
            "block 1 Action: failed",
            "block 1 Status: 5.1.1",
            "block 1 Remote-MTA: dns; mx1.example.org",
            "block 1 Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: no such user",
            "block 1 Last-Attempt-Date: Fri, 14 Mar 2025 11:15:09 +0000",
        ],
    );
    assert!(!dump.contains("block 2"), "one block per recipient:\n{dump}");
    assert!(!dump.contains("Will-Retry-Until"), "only for delayed recipients");
    let id = dump.lines().find_map(|l| l.strip_prefix("header Message-ID: ")).unwrap();
    assert!(id.starts_with("<20250314121509.") && id.ends_with(".dsn@mx.example.com>"), "{id}");
    let text = text_of(&dump);
    assert!(text.contains("<bob@example.org>"), "{text}");
    assert!(text.contains("(mx1.example.org) said: 550 5.1.1 <bob@example.org>: no such user"), "{text}");
    assert!(text.contains("misspelled"), "{text}");
    assert!(text.contains("will not be retried"), "{text}");
    let returned = dump.lines().find_map(|l| l.strip_prefix("returned ")).unwrap();
    assert!(returned.contains("Subject: Quarterly numbers"), "{returned}");
    assert!(returned.contains("Message-ID: <1234@example.com>"), "{returned}");
    assert_eq!(needs(&m), Needs::default(), "an ASCII bounce is 7-bit");
}

#[test]
fn delayed_report_says_until_when_it_retries() {
    let m = build(&bounce(vec![delayed("carol@example.net")]));
    assert_wire_format(&m);
    let dump = parse_with_python(&m);
    assert_lines(
        &dump,
        &[
            "defects 0",
            "header Subject: Delayed Mail (still being retried)",
            "block 1 Final-Recipient: rfc822; carol@example.net",
            "block 1 Action: delayed",
            "block 1 Status: 4.4.1",
            "block 1 Diagnostic-Code: smtp; 421 4.4.1 try again later",
            "block 1 Will-Retry-Until: Wed, 19 Mar 2025 10:15:09 +0000",
        ],
    );
    let text = text_of(&dump);
    assert!(text.contains("not been delivered yet"), "{text}");
    assert!(text.contains("retried until Wed, 19 Mar 2025 10:15 UTC"), "{text}");
    assert!(!text.contains("will not be retried"), "{text}");
}

#[test]
fn a_failure_among_delays_gets_the_failure_subject_and_a_block_each() {
    let m = build(&bounce(vec![delayed("carol@example.net"), failed("bob@example.org", "550 5.1.1 unknown")]));
    let dump = parse_with_python(&m);
    assert_lines(
        &dump,
        &[
            "defects 0",
            "header Subject: Undelivered Mail Returned to Sender",
            "block 1 Action: delayed",
            "block 2 Action: failed",
        ],
    );
    assert!(!dump.contains("block 2 Will-Retry-Until"), "{dump}");
    let text = text_of(&dump);
    assert!(text.contains("could not be delivered to the recipient below"), "{text}");
    assert!(text.contains("not been delivered yet to the recipient below"), "{text}");
}

#[test]
fn header_injection_in_the_reply_stays_inside_the_field() {
    let m = build(&bounce(vec![failed("bob@example.org", "550 bad\r\nBcc: x@evil\r\n\r\n--=_dsn_ boom")]));
    assert_wire_format(&m);
    let s = String::from_utf8_lossy(&m);
    assert!(!s.lines().any(|l| l.starts_with("Bcc:")), "{s}");
    let dump = parse_with_python(&m);
    assert!(!dump.lines().any(|l| is_field(l, "Bcc")), "{dump}");
    assert_lines(&dump, &["defects 0", "block 1 Diagnostic-Code: smtp; 550 bad Bcc: x@evil --=_dsn_ boom"]);
}

#[test]
fn injection_through_addresses_and_host_names_is_flattened() {
    let mut r = failed("bob@example.org\r\nBcc: x@evil", "550 5.1.1 no");
    r.remote_mta = Some("mx.example.org\r\nX-Evil: 1".to_string());
    r.original = Some("rfc822;bob@example.org+0D+0ABcc:+20y@evil".to_string());
    let mut b = bounce(vec![r]);
    b.to = "alice@example.com>\r\nBcc: z@evil";
    b.postmaster = "MAILER-DAEMON@mx\nCc: w@evil";
    b.reporting_mta = "mx.example.com\r\nX-Evil: 2";
    b.original_envelope_id = Some("id\r\nX-Evil: 3");
    let m = build(&b);
    assert_wire_format(&m);
    let s = String::from_utf8_lossy(&m);
    for bad in ["Bcc:", "Cc:", "X-Evil:"] {
        assert!(!s.lines().any(|l| l.starts_with(bad)), "{bad} in\n{s}");
    }
    assert!(s.contains("\r\nTo: <alice@example.com Bcc: z@evil>\r\n"), "{s}");
    let dump = parse_with_python(&m);
    for bad in ["Bcc", "Cc", "X-Evil"] {
        assert!(!dump.lines().any(|l| is_field(l, bad)), "{bad} in\n{dump}");
    }
    assert_lines(
        &dump,
        &[
            "defects 0",
            "block 0 Original-Envelope-Id: id X-Evil: 3",
            "block 0 Reporting-MTA: dns; mx.example.comX-Evil:2",
            "block 1 Original-Recipient: rfc822; bob@example.org Bcc: y@evil",
            "block 1 Final-Recipient: rfc822; bob@example.org Bcc: x@evil",
        ],
    );
}

#[test]
fn long_replies_fold_at_spaces_and_unfold_to_the_same_text() {
    let words: Vec<String> = (0..300).map(|i| format!("word{i}")).collect();
    let reply = format!("550 5.7.1 {}", words.join(" "));
    let mut r = failed("bob@example.org", &reply);
    r.status = "5.7.1".to_string();
    let m = build(&bounce(vec![r]));
    assert_wire_format(&m);
    for line in status_part(&m).lines() {
        assert!(line.len() <= 78, "{line:?}");
    }
    for line in String::from_utf8_lossy(&m).lines() {
        assert!(line.chars().count() <= 78, "{line:?}");
    }
    let dump = parse_with_python(&m);
    assert_lines(&dump, &["defects 0", &format!("block 1 Diagnostic-Code: smtp; {reply}")]);
    assert!(text_of(&dump).contains("by policy"), "hint for 5.7.1");
}

#[test]
fn a_word_longer_than_a_line_is_cut_under_998_octets() {
    let reply = format!("550 5.1.1 {}", "x".repeat(5000));
    let mut r = failed(&format!("{}@example.org", "b".repeat(2000)), &reply);
    r.remote_mta = Some("h".repeat(1500));
    let mut headers = ORIGINAL.to_vec();
    headers.extend_from_slice(format!("X-Long: {}\r\n", "é".repeat(1000)).as_bytes());
    let mut b = bounce(vec![r]);
    b.original_headers = &headers;
    let m = build(&b);
    assert_wire_format(&m);
    let dump = parse_with_python(&m);
    assert!(has_line(&dump, "defects 0"), "{dump}");
    assert!(has_line(&dump, "block 1 Action: failed"), "{dump}");
}

#[test]
fn utf8_recipient_uses_the_utf8_address_type() {
    let mut r = failed("jörg+x@bücher.example", "550 5.1.1 unknown");
    r.original = Some("utf-8;j\\x{F6}rg\\x{2B}x@b\\x{FC}cher.example".to_string());
    let m = build(&bounce(vec![r]));
    assert_wire_format(&m);
    assert!(status_part(&m).is_ascii(), "the machine-readable part stays 7-bit");
    let dump = parse_with_python(&m);
    assert_lines(
        &dump,
        &[
            "defects 0",
            "block 1 Original-Recipient: utf-8; j\\x{F6}rg\\x{2B}x@b\\x{FC}cher.example",
            "block 1 Final-Recipient: utf-8; j\\x{F6}rg\\x{2B}x@b\\x{FC}cher.example",
        ],
    );
    // People read the address as written; that makes the text part 8-bit.
    assert!(String::from_utf8_lossy(&m).contains("<jörg+x@bücher.example>"));
    assert_eq!(needs(&m), Needs { eight_bit_mime: true, smtputf8: false });
    assert_eq!(needs(&m).mail_params(), vec![("BODY".to_string(), Some("8BITMIME".to_string()))]);
}

#[test]
fn utf8_envelope_sender_needs_smtputf8() {
    let mut b = bounce(vec![failed("bob@example.org", "550 5.1.1 unknown")]);
    b.to = "пользователь@пример.рф";
    let m = build(&b);
    let dump = parse_with_python(&m);
    assert_lines(&dump, &["defects 0", "header To: пользователь@пример.рф"]);
    assert_eq!(needs(&m), Needs { eight_bit_mime: true, smtputf8: true });
    assert_eq!(
        needs(&m).mail_params(),
        vec![("BODY".to_string(), Some("8BITMIME".to_string())), ("SMTPUTF8".to_string(), None)]
    );
}

#[test]
fn eight_bit_original_headers_are_kept_and_flagged() {
    let headers = "From: Jörg <j@example.com>\r\nSubject: Grüße\r\n".as_bytes();
    let mut b = bounce(vec![failed("bob@example.org", "550 5.1.1 unknown")]);
    b.original_headers = headers;
    let m = build(&b);
    assert_wire_format(&m);
    assert!(find(&m, "Subject: Grüße\r\n".as_bytes()).is_some(), "kept byte for byte");
    let s = String::from_utf8_lossy(&m);
    assert!(s.contains("Content-Type: text/rfc822-headers; charset=utf-8\r\n"), "{s}");
    let top = &s[..s.find("\r\n\r\n").unwrap()];
    assert!(top.contains("Content-Transfer-Encoding: 8bit"), "{top}");
    assert_eq!(needs(&m), Needs { eight_bit_mime: true, smtputf8: false });
    let dump = parse_with_python(&m);
    assert!(has_line(&dump, "defects 0"), "{dump}");
    assert!(dump.contains("Subject: Gr\\u00fc\\u00dfe"), "{dump}");
}

#[test]
fn the_body_is_never_returned() {
    let whole = b"From: a@example.com\nSubject: secret plans\n\nThe launch code is 0000.\r\n";
    let mut b = bounce(vec![failed("bob@example.org", "550 5.1.1 unknown")]);
    b.original_headers = whole;
    let m = build(&b);
    assert_wire_format(&m);
    let s = String::from_utf8_lossy(&m);
    assert!(!s.contains("launch code"), "{s}");
    assert!(s.contains("From: a@example.com\r\nSubject: secret plans\r\n"), "bare LF became CRLF:\n{s}");
}

#[test]
fn without_original_headers_there_is_no_third_part() {
    let mut b = bounce(vec![failed("bob@example.org", "550 5.1.1 unknown")]);
    b.original_headers = b"";
    let m = build(&b);
    assert_wire_format(&m);
    let dump = parse_with_python(&m);
    assert!(has_line(&dump, "defects 0") && !dump.contains("part 2"), "{dump}");
}

#[test]
fn the_boundary_never_occurs_in_the_content() {
    let mut headers = ORIGINAL.to_vec();
    headers.extend_from_slice(b"X-Trap: =_dsn_taken\r\n");
    let mut b = bounce(vec![failed("bob@example.org", "550 5.1.1 see =_dsn_also_taken")]);
    b.original_headers = &headers;
    let mut candidates = ["=_dsn_taken", "=_dsn_also_taken", "=_dsn_free"].into_iter().map(String::from);
    let m = build_with(&b, || candidates.next().unwrap());
    let s = String::from_utf8_lossy(&m);
    assert!(s.contains("boundary=\"=_dsn_free\""), "{s}");
    let dump = parse_with_python(&m);
    assert_lines(&dump, &["defects 0", "part 2 text/rfc822-headers", "block 1 Action: failed"]);

    // And the real generator's boundary is absent from the original headers.
    let m = build(&bounce(vec![failed("bob@example.org", "550 5.1.1 unknown")]));
    let s = String::from_utf8_lossy(&m);
    let at = s.find("boundary=\"").unwrap() + 10;
    let boundary = &s[at..at + s[at..].find('"').unwrap()];
    assert!(find(ORIGINAL, boundary.as_bytes()).is_none());
}

#[test]
fn message_ids_are_unique() {
    let b = bounce(vec![failed("bob@example.org", "550 5.1.1 unknown")]);
    let id = |m: &[u8]| {
        let s = String::from_utf8_lossy(m).into_owned();
        s.lines().find_map(|l| l.strip_prefix("Message-ID: ")).unwrap().to_string()
    };
    let (a, c) = (id(&build(&b)), id(&build(&b)));
    assert_ne!(a, c);
    assert!(a.starts_with("<20250314121509.") && a.ends_with(".dsn@mx.example.com>"), "{a}");
}

#[test]
fn multiline_replies_read_as_one_sentence() {
    let reply = "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
                     550-5.1.1 double-checking the recipient's email address for typos.\r\n\
                     550 5.1.1 https://support.example/NoSuchUser";
    assert_eq!(
        reply_one_line(reply),
        "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the \
             recipient's email address for typos. https://support.example/NoSuchUser"
    );
    assert_eq!(
        reply_one_line("421 4.3.2\tService\u{7}\u{202E}resu  shutting down\n"),
        "421 4.3.2 Service resu shutting down"
    );
    assert_eq!(reply_one_line("550 non-ASCII: ünknown"), "550 non-ASCII: ünknown");
    let m = build(&bounce(vec![failed("bob@example.org", "550 5.1.1 ünknown")]));
    assert!(status_part(&m).contains("Diagnostic-Code: smtp; 550 5.1.1 \\x{FC}nknown\r\n"));
}

#[test]
fn a_malformed_status_falls_back_to_the_reply_or_the_class() {
    let mut r = failed("bob@example.org", "550 5.2.2 mailbox full");
    r.status = "garbage\r\nX: y".to_string();
    assert_eq!(status_code(&r), "5.2.2");
    r.diagnostic = Some("550 mailbox full".to_string());
    assert_eq!(status_code(&r), "5.0.0");
    let mut d = delayed("carol@example.net");
    d.status = "4.4".to_string();
    d.diagnostic = Some("550 5.1.1 a permanent reply cannot explain a delay".to_string());
    assert_eq!(status_code(&d), "4.0.0");
    d.diagnostic = None;
    assert_eq!(status_code(&d), "4.0.0");
    r.diagnostic = Some("421 4.4.2 the last temporary error before expiry".to_string());
    assert_eq!(status_code(&r), "4.4.2");
    r.diagnostic = Some("250 2.0.0 ok".to_string());
    assert_eq!(status_code(&r), "5.0.0");
    assert!(valid_status("4.4.7") && valid_status("5.7.26") && !valid_status("3.1.1") && !valid_status("5.1.1.1"));
}

#[test]
fn a_failure_without_a_reply_is_not_labelled_smtp() {
    let mut r = delayed("carol@example.net");
    r.diagnostic = Some("connect to mx2.example.net[192.0.2.9]:25: Connection refused".to_string());
    let m = build(&bounce(vec![r]));
    let dump = parse_with_python(&m);
    assert_lines(
        &dump,
        &[
            "defects 0",
            "block 1 Diagnostic-Code: X-mailferry; connect to mx2.example.net[192.0.2.9]:25: Connection refused",
        ],
    );
    assert!(text_of(&dump).contains("Reason: connect to mx2.example.net[192.0.2.9]:25: Connection refused"));
    assert!(is_reply("554 5.7.1 no") && is_reply("421") && !is_reply("4211 x") && !is_reply("connection lost"));
}

#[test]
fn xtext_and_unitext_decode() {
    assert_eq!(xtext_decode("QQ+2B314159+3D"), "QQ+314159=");
    assert_eq!(xtext_decode("a+zz+2"), "a+zz+2");
    assert_eq!(unitext_decode("j\\x{F6}rg\\x{1F600}\\x{zz}"), "jörg\u{1F600}\\x{zz}");
    assert_eq!(utf8_addr_xtext("a b+c=\\ö@x"), "a\\x{20}b\\x{2B}c\\x{3D}\\x{5C}\\x{F6}@x");
    assert_eq!(original_recipient("bob@example.org").as_deref(), Some("rfc822; bob@example.org"));
    assert_eq!(original_recipient("RFC822;bob@example.org").as_deref(), Some("rfc822; bob@example.org"));
    assert_eq!(original_recipient("rfc822;"), None);
}
