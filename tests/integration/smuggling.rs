//! SMTP smuggling: only <CRLF>.<CRLF> ends DATA. Each sequence a vulnerable
//! server would take as the end of the message is followed by a smuggled
//! transaction; we must refuse the message (reject mode, the default) and
//! never treat the smuggled commands as commands, or keep them inside the
//! one message with every line ending repaired (normalize mode).

use crate::common::*;

/// (name, the bytes between the first message's text and the smuggled MAIL FROM)
const CASES: &[(&str, &[u8])] = &[
    ("LF.LF", b"\n.\n"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CR.CR", b"\r.\r"),
    ("CRLF.CR", b"\r\n.\r"),
    ("CR.LF", b"\r.\n"),
    ("CRLF.LF", b"\r\n.\n"),
];

const SMUGGLED: &[u8] =
    b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsend money\r\n";

/// Sends `text`, then `seq`, the smuggled transaction and a real end of data.
fn send_smuggling(c: &mut Client, text: &[u8], seq: &[u8]) {
    let mut data = text.to_vec();
    data.extend_from_slice(seq);
    data.extend_from_slice(SMUGGLED);
    data.extend_from_slice(b"\r\n.\r\n");
    c.send_raw(&data);
}

fn session(s: &Server) -> Client {
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    c.begin_data("a@example.com", "b@example.org");
    c
}

#[test]
fn reject_mode_refuses_and_closes_for_every_sequence() {
    let s = Server::start(Setup::default());
    for (name, seq) in CASES {
        let mut c = session(&s);
        send_smuggling(&mut c, b"Subject: first\r\n\r\nhello", seq);
        let r = c.read();
        assert_eq!(r.code, 550, "{name}: {r}");
        assert!(r.text().starts_with("5.6.0") && r.text().contains("bare CR or LF"), "{name}: {r}");
        assert!(c.is_closed(), "{name}: the session must end");
    }
    assert!(s.outbox().is_empty(), "nothing may be delivered: {:?}", s.outbox());
}

#[test]
fn nul_before_the_dot_is_not_an_end_and_is_refused() {
    let s = Server::start(Setup::default());
    let mut c = session(&s);
    send_smuggling(&mut c, b"Subject: first\r\n\r\nhello", b"\r\n\x00.\r\n");
    let r = c.read();
    assert_eq!(r.code, 550, "{r}");
    // Exactly one reply for the whole thing: the smuggled MAIL/RCPT/DATA were data.
    c.expect("NOOP", 250);
    assert!(s.outbox().is_empty());
}

#[test]
fn normalize_mode_keeps_smuggled_text_inside_one_message() {
    let s = Server::start(Setup { limits: "bare_line_endings = \"normalize\"".into(), ..Default::default() });
    for (name, seq) in CASES {
        let mut c = session(&s);
        send_smuggling(&mut c, format!("Subject: {name}\r\n\r\nhello").as_bytes(), seq);
        let r = c.read();
        assert_eq!(r.code, 250, "{name}: {r}");
        // The smuggled commands did not run as commands: the next reply is ours.
        c.expect("NOOP", 250);
        c.expect("QUIT", 221);
    }
    let out = s.outbox();
    assert_eq!(out.len(), CASES.len(), "one message per case, no smuggled extra");
    for m in &out {
        assert!(m.contains("MAIL FROM:<ceo@bank.example>\r\n"), "smuggled text stays in the body: {m:?}");
        let b = m.as_bytes();
        for (i, &ch) in b.iter().enumerate() {
            if ch == b'\n' {
                assert_eq!(b[i - 1], b'\r', "bare LF left in {m:?}");
            }
            if ch == b'\r' {
                assert_eq!(b[i + 1], b'\n', "bare CR left in {m:?}");
            }
        }
    }
}

#[test]
fn bdat_with_bare_lf_is_refused() {
    let s = Server::start(Setup::default());
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect("RCPT TO:<b@example.org>", 250);
    let body = b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<x@y.example>\r\n";
    c.send_raw(format!("BDAT {} LAST\r\n", body.len()).as_bytes());
    c.send_raw(body);
    let r = c.read();
    assert_eq!(r.code, 550, "{r}");
    c.expect("NOOP", 250);
    assert!(s.outbox().is_empty());
}
