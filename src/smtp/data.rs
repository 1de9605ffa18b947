//! The DATA reader: dot-unstuffing and end-of-data detection that is safe
//! against SMTP smuggling.
//!
//! Only `<CRLF>.<CRLF>` ends a message. A CR or LF that is not part of a CRLF
//! pair is either refused at once (the default: the session answers and
//! closes, because the client and we no longer agree where the message ends)
//! or, if configured, turned into CRLF so nothing ambiguous is ever passed to
//! an upstream server. NUL octets and over-long lines are refused at the end.
//! The same checks run on BDAT messages with [`check_bdat`].

use crate::config::BareLineEndings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (also the start of the message).
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line.
    DotCr,
}

/// What the reader reports after consuming input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStep {
    /// Needs more input.
    More,
    /// `<CRLF>.<CRLF>` was read: the message is complete.
    End,
    /// A bare CR or LF was found (reject mode): stop reading.
    BareLineEnding,
}

/// Problems found in a complete message that make us refuse it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defects {
    pub too_big: bool,
    pub nul: bool,
    pub long_line: bool,
}

pub struct DataReader {
    state: State,
    mode: BareLineEndings,
    max_size: usize,
    /// Longest allowed line, without its CRLF.
    max_line: usize,
    line_len: usize,
    /// The current line began after a normalised bare CR or LF. Such a line
    /// is plain content: it can neither end the message nor be dot-stuffed,
    /// or `x LF . CRLF` would become an end of data after normalisation.
    bare_start: bool,
    pub message: Vec<u8>,
    pub defects: Defects,
}

impl DataReader {
    /// `max_line` counts the CRLF, as RFC 5321 §4.5.3.1.6 does.
    pub fn new(mode: BareLineEndings, max_size: usize, max_line: usize) -> DataReader {
        DataReader {
            state: State::LineStart,
            mode,
            max_size,
            max_line: max_line.saturating_sub(2),
            line_len: 0,
            bare_start: false,
            message: Vec::new(),
            defects: Defects::default(),
        }
    }

    fn push(&mut self, b: u8) {
        if b == 0 {
            self.defects.nul = true;
        }
        if b == b'\n' {
            self.line_len = 0;
        } else if b != b'\r' {
            self.line_len += 1;
            if self.line_len > self.max_line {
                self.defects.long_line = true;
            }
        }
        if self.message.len() < self.max_size {
            self.message.push(b);
        } else {
            self.defects.too_big = true;
        }
    }

    fn push_crlf(&mut self) {
        self.push(b'\r');
        self.push(b'\n');
    }

    /// Consumes input; returns how many octets were used and what happened.
    /// Octets after the end of data are left for the command reader.
    pub fn feed(&mut self, input: &[u8]) -> (usize, DataStep) {
        let normalize = self.mode == BareLineEndings::Normalize;
        for (i, &b) in input.iter().enumerate() {
            match (self.state, b) {
                (State::LineStart, b'.') if self.bare_start => {
                    self.push(b'.');
                    self.state = State::Mid;
                }
                (State::LineStart, b'.') => self.state = State::Dot,
                (State::LineStart | State::Mid, b'\r') => self.state = State::Cr,
                (State::LineStart | State::Mid, b'\n') => {
                    if !normalize {
                        return (i + 1, DataStep::BareLineEnding);
                    }
                    self.push_crlf();
                    self.state = State::LineStart;
                    self.bare_start = true;
                }
                (State::LineStart | State::Mid, _) => {
                    self.push(b);
                    self.state = State::Mid;
                }
                (State::Cr, b'\n') => {
                    self.push_crlf();
                    self.state = State::LineStart;
                    self.bare_start = false;
                }
                (State::Cr, _) => {
                    if !normalize {
                        return (i + 1, DataStep::BareLineEnding);
                    }
                    self.push_crlf();
                    // The octet after the bare CR starts a new line.
                    self.state = State::LineStart;
                    self.bare_start = true;
                    if let Some(step) = self.reprocess(b) {
                        return (i + 1, step);
                    }
                }
                (State::Dot, b'\r') => self.state = State::DotCr,
                (State::Dot, b'\n') => {
                    if !normalize {
                        return (i + 1, DataStep::BareLineEnding);
                    }
                    // `.` LF is not the end of data: only CRLF.CRLF is.
                    self.push_crlf();
                    self.state = State::LineStart;
                    self.bare_start = true;
                }
                (State::Dot, _) => {
                    // A stuffed dot: drop it and keep the rest of the line.
                    self.push(b);
                    self.state = State::Mid;
                }
                (State::DotCr, b'\n') => return (i + 1, DataStep::End),
                (State::DotCr, _) => {
                    if !normalize {
                        return (i + 1, DataStep::BareLineEnding);
                    }
                    self.push_crlf();
                    self.state = State::LineStart;
                    self.bare_start = true;
                    if let Some(step) = self.reprocess(b) {
                        return (i + 1, step);
                    }
                }
            }
        }
        (input.len(), DataStep::More)
    }

    /// Handles `b` as the first octet of a line (after a normalised bare CR).
    fn reprocess(&mut self, b: u8) -> Option<DataStep> {
        let (_, step) = self.feed(std::slice::from_ref(&b));
        (step != DataStep::More).then_some(step)
    }
}

/// A bare CR or LF found in reject mode.
#[derive(Debug, PartialEq, Eq)]
pub struct BareLineEnding;

/// Checks (and in normalize mode repairs) a message received with BDAT,
/// where no end marker exists but the same rules apply to what we pass on.
/// Fails for a bare CR or LF in reject mode. NUL octets and over-long lines
/// are those of the text passed on, after any repair, as the DATA reader
/// counts them: a bare CR ends a line there too.
pub fn check_bdat(
    message: &mut Vec<u8>,
    mode: BareLineEndings,
    max_line: usize,
    defects: &mut Defects,
) -> Result<(), BareLineEnding> {
    let has_bare = message.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || message[i - 1] != b'\r',
        _ => false,
    });
    if has_bare {
        if mode == BareLineEndings::Reject {
            return Err(BareLineEnding);
        }
        let mut out = Vec::with_capacity(message.len() + 64);
        let mut i = 0;
        while i < message.len() {
            match message[i] {
                b'\r' if message.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        *message = out;
    }
    let max_line = max_line.saturating_sub(2);
    let mut line_len = 0usize;
    for &b in message.iter() {
        match b {
            b'\n' => line_len = 0,
            b'\r' => {}
            _ => {
                if b == 0 {
                    defects.nul = true;
                }
                line_len += 1;
                if line_len > max_line {
                    defects.long_line = true;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(mode: BareLineEndings, input: &[u8]) -> (DataStep, Vec<u8>, usize) {
        let mut r = DataReader::new(mode, 1 << 20, 1000);
        let (used, step) = r.feed(input);
        (step, r.message, used)
    }

    #[test]
    fn plain_message_and_dot_unstuffing() {
        let (step, msg, used) = read(BareLineEndings::Reject, b"Subject: x\r\n\r\n..hidden\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(step, DataStep::End);
        assert_eq!(msg, b"Subject: x\r\n\r\n.hidden\r\nbody\r\n");
        assert_eq!(used, b"Subject: x\r\n\r\n..hidden\r\nbody\r\n.\r\n".len());
    }

    #[test]
    fn empty_message() {
        let (step, msg, _) = read(BareLineEndings::Reject, b".\r\n");
        assert_eq!(step, DataStep::End);
        assert!(msg.is_empty());
    }

    #[test]
    fn split_input_at_every_position() {
        let input = b"a\r\n..b\r\n.\r\n";
        for cut in 0..input.len() {
            let mut r = DataReader::new(BareLineEndings::Reject, 1 << 20, 1000);
            let (u1, s1) = r.feed(&input[..cut]);
            assert_eq!((u1, s1), (cut, DataStep::More));
            let (_, s2) = r.feed(&input[cut..]);
            assert_eq!(s2, DataStep::End, "cut at {cut}");
            assert_eq!(r.message, b"a\r\n.b\r\n");
        }
    }

    const SMUGGLING: &[&[u8]] = &[
        b"x\n.\nMAIL FROM:<a@b>\r\n",
        b"x\n.\r\nMAIL FROM:<a@b>\r\n",
        b"x\r.\rMAIL FROM:<a@b>\r\n",
        b"x\r\n.\rMAIL FROM:<a@b>\r\n",
        b"x\r.\nMAIL FROM:<a@b>\r\n",
        b"x\r\n.\nMAIL FROM:<a@b>\r\n",
    ];

    #[test]
    fn smuggling_sequences_are_refused_in_reject_mode() {
        for case in SMUGGLING {
            let (step, _, _) = read(BareLineEndings::Reject, case);
            assert_eq!(step, DataStep::BareLineEnding, "{:?}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn smuggling_sequences_never_end_data_in_normalize_mode() {
        for case in SMUGGLING {
            let mut input = case.to_vec();
            input.extend_from_slice(b"\r\n.\r\n");
            let (step, msg, used) = read(BareLineEndings::Normalize, &input);
            assert_eq!(step, DataStep::End);
            assert_eq!(used, input.len(), "only the final CRLF.CRLF ends {:?}", String::from_utf8_lossy(case));
            // Every line ending in the result is CRLF, and the smuggled
            // command stayed inside the message.
            for (i, &b) in msg.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(msg[i - 1], b'\r');
                }
                if b == b'\r' {
                    assert_eq!(msg[i + 1], b'\n');
                }
            }
            assert!(msg.windows(9).any(|w| w == b"MAIL FROM"));
        }
    }

    #[test]
    fn nul_and_long_lines_are_defects() {
        let mut r = DataReader::new(BareLineEndings::Reject, 1 << 20, 1000);
        assert_eq!(r.feed(b"a\r\n\x00.\r\n.\r\n").1, DataStep::End);
        assert!(r.defects.nul);
        let mut line = vec![b'a'; 999];
        line.extend_from_slice(b"\r\n.\r\n");
        let mut r = DataReader::new(BareLineEndings::Reject, 1 << 20, 1000);
        assert_eq!(r.feed(&line).1, DataStep::End);
        assert!(r.defects.long_line);
        let mut ok = vec![b'a'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        let mut r = DataReader::new(BareLineEndings::Reject, 1 << 20, 1000);
        assert_eq!(r.feed(&ok).1, DataStep::End);
        assert_eq!(r.defects, Defects::default());
    }

    #[test]
    fn size_limit_keeps_reading_to_the_end() {
        let mut r = DataReader::new(BareLineEndings::Reject, 10, 1000);
        assert_eq!(r.feed(b"0123456789abcdef\r\n.\r\n").1, DataStep::End);
        assert!(r.defects.too_big);
        assert_eq!(r.message.len(), 10);
    }

    #[test]
    fn bdat_checks() {
        let mut d = Defects::default();
        let mut m = b"a\r\nb\nc\rd\r\n".to_vec();
        assert!(check_bdat(&mut m.clone(), BareLineEndings::Reject, 1000, &mut d).is_err());
        check_bdat(&mut m, BareLineEndings::Normalize, 1000, &mut d).unwrap();
        assert_eq!(m, b"a\r\nb\r\nc\r\nd\r\n");
        let mut ok = b"a\r\n".to_vec();
        assert!(check_bdat(&mut ok, BareLineEndings::Reject, 1000, &mut d).is_ok());
    }

    #[test]
    fn bdat_defects_are_those_of_the_repaired_text() {
        // Two 600-octet lines joined by a bare CR: two lines once repaired,
        // each within the limit, as the DATA reader sees them.
        let text = [vec![b'x'; 600], b"\r".to_vec(), vec![b'y'; 600], b"\r\n".to_vec()].concat();
        let mut m = text.clone();
        let mut d = Defects::default();
        check_bdat(&mut m, BareLineEndings::Normalize, 1000, &mut d).unwrap();
        assert_eq!(d, Defects::default());
        let mut r = DataReader::new(BareLineEndings::Normalize, 1 << 20, 1000);
        assert_eq!(r.feed(&[&text[..], b".\r\n"].concat()).1, DataStep::End);
        assert_eq!((r.message, r.defects), (m, d));
        // The fuzzer's smallest case: NUL, bare CR, two octets; lines of at most 2.
        let mut m = b"\0\rdd".to_vec();
        let mut d = Defects::default();
        check_bdat(&mut m, BareLineEndings::Normalize, 4, &mut d).unwrap();
        assert_eq!(m, b"\0\r\ndd");
        assert_eq!(d, Defects { nul: true, ..Defects::default() });
        // Over-long lines and NULs are still found.
        let mut m = [vec![b'x'; 999], b"\r\n\0\r\n".to_vec()].concat();
        let mut d = Defects::default();
        check_bdat(&mut m, BareLineEndings::Reject, 1000, &mut d).unwrap();
        assert_eq!(d, Defects { nul: true, long_line: true, too_big: false });
    }
}
