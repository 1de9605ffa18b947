//! The DATA reader (`smtp::data::DataReader`) and the BDAT checks
//! (`smtp::data::check_bdat`).
//!
//! Input: one octet of settings (bit 0: normalize mode; bits 1-7: the
//! longest line), one for the size limit, one for how many chunk lengths
//! follow, those lengths, then the octets the client sends after `354`.
//!
//! Checks, in both bare-line-ending modes:
//! - the result (step, octets used, message, defects) is the same whether
//!   the input comes at once, in the chunks the input picks, or one octet at
//!   a time, and a chunk that does not finish the message is used whole;
//! - it is what a line-by-line reference reader says: only `CRLF . CRLF`
//!   (or `. CRLF` first) ends the data; in reject mode the first bare CR or
//!   LF before that stops the reading, right where it is seen; in normalize
//!   mode every bare CR or LF becomes CRLF and the line after it is plain
//!   text, neither an end nor dot-stuffed;
//! - the two modes agree: whatever reject mode reads to the end, normalize
//!   mode reads the same way; normalize mode never reports a bare ending;
//! - a message read to the end holds CR and LF only as CRLF pairs, its
//!   defects are those `check_bdat` finds in the same text, and `too_big`
//!   means exactly that the text was cut at the size limit;
//! - BDAT: `check_bdat` refuses (reject mode) exactly the texts with a
//!   bare CR or LF; in normalize mode it returns the reference repair, which
//!   it then accepts unchanged, and the defects it reports are those of the
//!   text it passes on;
//! - DATA and BDAT agree: the same text, dot-stuffed and sent with DATA, is
//!   read (and repaired, and judged) exactly as `check_bdat` does it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry::config::BareLineEndings;
use mailferry::smtp::data::{check_bdat, DataReader, DataStep, Defects};

const BIG: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [settings, size, n, rest @ ..] = data else { return };
    let mode = if settings & 1 == 1 { BareLineEndings::Normalize } else { BareLineEndings::Reject };
    // Lines of 1 to 128 octets (plus CRLF) reach the long-line check often.
    let max_line = 3 + (settings >> 1) as usize;
    let max_size = if *size == 255 { BIG } else { *size as usize * 4 };
    let n = (*n as usize % 16).min(rest.len());
    let (cuts, input) = rest.split_at(n);

    let whole = read(mode, max_size, max_line, input, &[input.len().max(1)]);
    let lens: Vec<usize> = cuts.iter().map(|&c| c as usize % 64 + 1).collect();
    if !lens.is_empty() {
        assert_eq!(read(mode, max_size, max_line, input, &lens), whole, "chunks {lens:?} changed the result");
    }
    assert_eq!(read(mode, max_size, max_line, input, &[1]), whole, "octet by octet changed the result");

    check_against_reference(mode, max_size, max_line, input, &whole);
    check_modes_agree(max_size, max_line, input);
    check_bdat_alone(mode, max_line, input);
    check_data_and_bdat_agree(mode, max_line, input);
});

#[derive(Debug, PartialEq, Eq)]
struct Read {
    step: DataStep,
    used: usize,
    message: Vec<u8>,
    defects: Defects,
}

/// Feeds `input` in chunks of the given lengths (cycled) until the reader
/// stops, as the transport does.
fn read(mode: BareLineEndings, max_size: usize, max_line: usize, input: &[u8], lens: &[usize]) -> Read {
    let mut r = DataReader::new(mode, max_size, max_line);
    let mut at = 0;
    let mut step = DataStep::More;
    for &len in lens.iter().cycle() {
        if at >= input.len() {
            break;
        }
        let chunk = &input[at..(at + len).min(input.len())];
        let (used, s) = r.feed(chunk);
        assert!(used <= chunk.len());
        step = s;
        if s == DataStep::More {
            assert_eq!(used, chunk.len(), "a chunk that does not end the data is used whole");
            at += used;
        } else {
            assert!(used > 0);
            at += used;
            break;
        }
    }
    Read { step, used: at, message: r.message, defects: r.defects }
}

/// What the reader must do, line by line. `message` is the whole text
/// (before the size limit cuts it); it is only meaningful at `End`.
fn reference(mode: BareLineEndings, input: &[u8]) -> (DataStep, usize, Vec<u8>) {
    let normalize = mode == BareLineEndings::Normalize;
    let mut msg = Vec::new();
    let mut i = 0;
    // The line began after a bare CR or LF (normalize mode).
    let mut bare_start = false;
    loop {
        let Some(off) = input[i..].iter().position(|&b| b == b'\r' || b == b'\n') else {
            return (DataStep::More, input.len(), msg);
        };
        let j = i + off;
        let line = &input[i..j];
        let (next, bare) = if input[j] == b'\n' {
            (j + 1, true)
        } else if j + 1 == input.len() {
            // A CR as the last octet: it depends on the next one.
            return (DataStep::More, input.len(), msg);
        } else if input[j + 1] == b'\n' {
            (j + 2, false)
        } else {
            (j + 1, true)
        };
        if bare && !normalize {
            // Seen at the LF itself, or at the octet after the CR.
            let seen = if input[j] == b'\n' { j + 1 } else { j + 2 };
            return (DataStep::BareLineEnding, seen, msg);
        }
        if !bare_start && line == b"." && !bare {
            return (DataStep::End, next, msg);
        }
        let content = if !bare_start && line.first() == Some(&b'.') { &line[1..] } else { line };
        msg.extend_from_slice(content);
        msg.extend_from_slice(b"\r\n");
        bare_start = bare;
        i = next;
    }
}

fn has_bare(m: &[u8]) -> bool {
    m.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => m.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || m[i - 1] != b'\r',
        _ => false,
    })
}

/// The defects of a text whose line endings are all CRLF.
fn defects_of(m: &[u8], max_line: usize, max_size: usize) -> Defects {
    Defects {
        too_big: m.len() > max_size,
        nul: m.contains(&0),
        long_line: m.split(|&b| b == b'\n').any(|l| l.strip_suffix(b"\r").unwrap_or(l).len() > max_line - 2),
    }
}

fn check_against_reference(mode: BareLineEndings, max_size: usize, max_line: usize, input: &[u8], got: &Read) {
    let (step, used, full) = reference(mode, input);
    assert_eq!((got.step, got.used), (step, used), "the reader and the reference disagree");
    if mode == BareLineEndings::Normalize {
        assert_ne!(got.step, DataStep::BareLineEnding);
    }
    if got.step == DataStep::BareLineEnding {
        let seen = &input[..got.used];
        assert!(
            seen.ends_with(b"\n") && !seen.ends_with(b"\r\n") || seen.len() >= 2 && seen[seen.len() - 2] == b'\r',
            "reported a bare line ending that is not there"
        );
    }
    if got.step != DataStep::End {
        return;
    }
    // Only CRLF . CRLF ends the data.
    let seen = &input[..got.used];
    assert!(seen.ends_with(b"\r\n.\r\n") || seen == b".\r\n", "ended at {:?}", seen.escape_ascii().to_string());
    if mode == BareLineEndings::Reject {
        assert!(!has_bare(seen), "reject mode read a bare CR or LF to the end");
    }
    assert!(!has_bare(&full), "the message holds a bare CR or LF");
    let kept = &full[..full.len().min(max_size)];
    assert_eq!(got.message, kept, "the message is not the unstuffed text");
    assert_eq!(got.defects, defects_of(&full, max_line, max_size));
    // check_bdat judges the same text the same way.
    let mut text = full.clone();
    let mut d = Defects::default();
    assert!(check_bdat(&mut text, BareLineEndings::Reject, max_line, &mut d).is_ok());
    assert_eq!(text, full);
    assert_eq!((d.nul, d.long_line), (got.defects.nul, got.defects.long_line));
}

fn check_modes_agree(max_size: usize, max_line: usize, input: &[u8]) {
    let reject = read(BareLineEndings::Reject, max_size, max_line, input, &[input.len().max(1)]);
    let normalize = read(BareLineEndings::Normalize, max_size, max_line, input, &[input.len().max(1)]);
    match reject.step {
        DataStep::End | DataStep::More => assert_eq!(reject, normalize, "the modes differ without a bare ending"),
        DataStep::BareLineEnding => {
            // Normalize mode went past that point without ending before it.
            assert!(normalize.step == DataStep::More || normalize.used > reject.used - 1);
        }
    }
}

/// The reference repair: CRLF stays, any other CR or LF becomes CRLF.
fn repaired(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < m.len() {
        if m[i] == b'\r' && m.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            i += 2;
            continue;
        }
        if m[i] == b'\r' || m[i] == b'\n' {
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(m[i]);
        }
        i += 1;
    }
    out
}

fn check_bdat_alone(mode: BareLineEndings, max_line: usize, input: &[u8]) {
    let bare = has_bare(input);
    let mut m = input.to_vec();
    let mut d = Defects::default();
    let r = check_bdat(&mut m, mode, max_line, &mut d);
    if mode == BareLineEndings::Reject {
        assert_eq!(r.is_err(), bare, "reject mode refuses exactly the texts with a bare ending");
        if !bare {
            assert_eq!(m, input);
        }
    } else {
        assert!(r.is_ok());
        assert_eq!(m, repaired(input));
        assert!(!has_bare(&m));
        let mut again = m.clone();
        let mut d2 = Defects::default();
        assert!(check_bdat(&mut again, BareLineEndings::Reject, max_line, &mut d2).is_ok());
        assert_eq!(again, m);
    }
    if r.is_ok() {
        // The defects are those of the text passed on.
        let want = defects_of(&m, max_line, BIG);
        assert_eq!(
            (d.nul, d.long_line),
            (want.nul, want.long_line),
            "BDAT defects are not those of the text passed on"
        );
    }
}

/// Dot-stuffs a text as a client does (a `.` starting a line after CRLF,
/// or the text, is doubled), ends it with CRLF if need be, and adds the end.
fn as_data(text: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut text = text.to_vec();
    if !text.is_empty() && !text.ends_with(b"\r\n") {
        text.extend_from_slice(b"\r\n");
    }
    let mut wire = Vec::new();
    for (i, &b) in text.iter().enumerate() {
        if b == b'.' && (i == 0 || text[..i].ends_with(b"\r\n")) {
            wire.push(b'.');
        }
        wire.push(b);
    }
    wire.extend_from_slice(b".\r\n");
    (text, wire)
}

fn check_data_and_bdat_agree(mode: BareLineEndings, max_line: usize, input: &[u8]) {
    let (text, wire) = as_data(input);
    let got = read(mode, BIG, max_line, &wire, &[wire.len()]);
    let mut bdat = text.clone();
    let mut d = Defects::default();
    match check_bdat(&mut bdat, mode, max_line, &mut d) {
        Err(_) => {
            assert_eq!(got.step, DataStep::BareLineEnding, "BDAT refused what DATA did not");
        }
        Ok(()) => {
            assert_eq!(got.step, DataStep::End, "DATA did not end where the client ended it");
            assert_eq!(got.used, wire.len());
            assert_eq!(got.message, bdat, "DATA and BDAT pass on different text");
            assert_eq!(
                (got.defects.nul, got.defects.long_line),
                (d.nul, d.long_line),
                "DATA and BDAT judge differently"
            );
        }
    }
}
