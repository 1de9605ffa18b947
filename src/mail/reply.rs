//! SMTP replies: a code, an optional enhanced status (RFC 2034/3463) and text.
//!
//! Every reply the server writes goes through [`Reply`], including replies
//! that come from plugins, so validation (no CR/LF injection, the enhanced
//! status in the same class as the code) happens in exactly one place.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    /// One or more lines of text; several make a multi-line reply.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply { code, enhanced: (!enhanced.is_empty()).then(|| enhanced.to_string()), lines: vec![text.into()] }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, enhanced: None, lines }
    }

    /// The text alone, lines joined by spaces (for logs and records).
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// The reply as wire bytes, CRLF-terminated.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let _ = write!(out, "{}{}", self.code, sep);
            if let Some(e) = &self.enhanced {
                let _ = write!(out, "{e} ");
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        if self.lines.is_empty() {
            let _ = write!(out, "{}\r\n", self.code);
        }
        out.into_bytes()
    }

    /// Checks a reply that came from outside the server (a plugin, an
    /// upstream) before it is written to a client. `class` is the first digit
    /// the code must have.
    pub fn validate(&self, classes: &[u16]) -> Result<(), String> {
        if !(200..600).contains(&self.code) || !classes.contains(&(self.code / 100)) {
            return Err(format!("code {} is not of class {:?}", self.code, classes));
        }
        if let Some(e) = &self.enhanced {
            if !is_enhanced_status(e) {
                return Err(format!("enhanced status {e:?} is not of the form class.subject.detail"));
            }
            if e.as_bytes()[0] - b'0' != (self.code / 100) as u8 {
                return Err(format!("enhanced status {e} does not match code {}", self.code));
            }
        }
        for line in &self.lines {
            if line.len() > 400 {
                return Err("text longer than 400 characters".into());
            }
            if !line.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
                return Err("text must be printable ASCII (no CR, LF or other control characters)".into());
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced {
            write!(f, " {e}")?;
        }
        write!(f, " {}", self.lines.join(" / "))
    }
}

/// `class.subject.detail`, class 2, 4 or 5, each part at most three digits.
pub fn is_enhanced_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..].iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Replaces anything that could break the reply framing or a terminal with
/// `?`, and bounds the length. For text taken from upstream servers.
pub fn sanitize_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() || !(c.is_ascii_graphic() || c == ' ') { '?' } else { c })
        .take(300)
        .collect();
    if out.is_empty() {
        out.push_str("(no text)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_single_and_multi() {
        assert_eq!(Reply::new(250, "2.0.0", "OK").to_wire(), b"250 2.0.0 OK\r\n");
        let r = Reply::multi(250, vec!["a".into(), "b".into()]);
        assert_eq!(r.to_wire(), b"250-a\r\n250 b\r\n");
    }

    #[test]
    fn validation_rejects_injection_and_class_mismatch() {
        assert!(Reply::new(550, "5.7.1", "no").validate(&[5]).is_ok());
        assert!(Reply::new(550, "5.7.1", "no\r\n250 ok").validate(&[5]).is_err());
        assert!(Reply::new(250, "2.0.0", "ok").validate(&[5]).is_err());
        assert!(Reply::new(550, "4.7.1", "no").validate(&[5]).is_err());
        assert!(Reply::new(550, "5.x.1", "no").validate(&[5]).is_err());
        assert!(Reply::new(451, "", "later").validate(&[4]).is_ok());
    }
}
