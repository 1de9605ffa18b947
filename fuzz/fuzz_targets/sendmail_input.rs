//! The message a program pipes to sendmail (`sendmail::input::read`, then
//! `sendmail::input::finish`).
//!
//! Input: one octet of settings (bit 0: `-i`, ignore lone dots; bit 1:
//! `-t`, recipients from the header; bit 2: a full name for From:; bits
//! 3-7: the buffer size of the reader), then the message.
//!
//! Checks, beyond "no panic":
//! - `read` gives the same result whatever the reader's buffer size;
//! - it is a reference line-ending repair: CRLF, bare LF and bare CR all
//!   become CRLF, the text ends with CRLF, a first line starting `From `
//!   is dropped, and without `-i` the text ends before the first lone `.`
//!   line; the size limit refuses exactly the texts over it;
//! - `finish` returns a message with only CRLF line endings, ending in
//!   CRLF, every line within the server's limit, a From: field, no Bcc: or
//!   Resent-Bcc: field, and recipients (with `-t`) that are valid mailboxes.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use mailferry::mail::address::validate_mailbox;
use mailferry::message::Message;
use mailferry::sendmail::input::{finish, read, Finish, InputError};

const LIMIT: usize = 2048;
const TEXT_LINE: usize = 1000;

fuzz_target!(|data: &[u8]| {
    let [settings, input @ ..] = data else { return };
    let ignore_dots = settings & 1 != 0;
    let extract = settings & 2 != 0;
    let full_name = (settings & 4 != 0).then_some("Cron \"Daemon\" \u{e9}");
    let cap = (settings >> 3) as usize + 1;

    let got = outcome(read(input, ignore_dots, LIMIT));
    for capacity in [1, cap] {
        let again = outcome(read(BufReader::with_capacity(capacity, input), ignore_dots, LIMIT));
        assert_eq!(again, got, "a buffer of {capacity} octets changed the result");
    }

    let want = reference(input, ignore_dots);
    match &got {
        Ok(text) => {
            assert_eq!(text, &want, "not the reference repair");
            assert!(text.len() <= LIMIT);
        }
        Err(()) => assert!(want.len() > LIMIT, "refused as too big at {} octets", want.len()),
    }
    let Ok(text) = got else { return };

    let f = Finish { domain: "host.example", extract, from: "me@host.example", full_name, text_line: TEXT_LINE };
    let Ok(done) = finish(text, &f) else { return };
    let m = &done.message;
    assert!(m.ends_with(b"\r\n"), "the message does not end with CRLF");
    assert!(!has_bare(m), "bare CR or LF in the finished message");
    for line in m.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() <= TEXT_LINE - 2, "a line of {} octets was passed on", line.len());
    }
    let parsed = Message::parse(m.clone());
    assert!(parsed.has_header("From"), "no From: field");
    assert!(!parsed.has_header("Bcc") && !parsed.has_header("Resent-Bcc"), "a Bcc: field was passed on");
    for r in &done.recipients {
        assert_eq!(validate_mailbox(r), Ok(()), "recipient {r:?}");
    }
    if !extract {
        assert!(done.recipients.is_empty());
    }
});

fn outcome(r: Result<Vec<u8>, InputError>) -> Result<Vec<u8>, ()> {
    match r {
        Ok(v) => Ok(v),
        Err(InputError::Data(_)) => Err(()),
        Err(InputError::Io(e)) => panic!("reading a slice failed: {e}"),
    }
}

fn has_bare(m: &[u8]) -> bool {
    m.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => m.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || m[i - 1] != b'\r',
        _ => false,
    })
}

/// The text `read` should return (before the size limit): the lines
/// kept, with every CRLF, bare LF and bare CR made CRLF, ending in CRLF.
fn reference(input: &[u8], ignore_dots: bool) -> Vec<u8> {
    let mut kept = Vec::new();
    for (i, line) in input.split_inclusive(|&b| b == b'\n').enumerate() {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !ignore_dots && text == b"." {
            break;
        }
        if i == 0 && text.starts_with(b"From ") {
            continue;
        }
        kept.extend_from_slice(line);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < kept.len() {
        match kept[i] {
            b'\r' if kept.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}
