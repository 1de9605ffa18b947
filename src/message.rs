//! A received message: its header fields, kept byte for byte, and its body.
//!
//! Header fields are stored as the exact octets the client sent (folding
//! included) so that a relayed message is unchanged apart from the fields we
//! add, which matters for signatures applied before us. Plugins see unfolded
//! values through the `message` resource.

#[derive(Debug, Clone)]
pub struct Header {
    /// The field name as written.
    pub name: String,
    /// The whole field, `Name: value` with folding, ending in CRLF.
    pub raw: Vec<u8>,
}

impl Header {
    /// Builds a field from a name and an unfolded value, folding long values
    /// at spaces so lines stay under 78 octets where possible.
    pub fn new(name: &str, value: &str) -> Header {
        let mut raw = Vec::with_capacity(name.len() + value.len() + 4);
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b":");
        let mut line_len = name.len() + 1;
        for (i, word) in value.split(' ').enumerate() {
            if i > 0 || !word.is_empty() {
                if line_len + 1 + word.len() > 78 && line_len > name.len() + 1 {
                    raw.extend_from_slice(b"\r\n\t");
                    line_len = 1;
                } else {
                    raw.push(b' ');
                    line_len += 1;
                }
            }
            raw.extend_from_slice(word.as_bytes());
            line_len += word.len();
        }
        raw.extend_from_slice(b"\r\n");
        Header { name: name.to_string(), raw }
    }

    /// The value, unfolded, without the leading whitespace or trailing CRLF.
    pub fn value(&self) -> String {
        let colon = self.raw.iter().position(|&b| b == b':').unwrap_or(self.name.len());
        let after = &self.raw[colon + 1..];
        let text = String::from_utf8_lossy(after);
        let unfolded: String = text.replace("\r\n", "");
        unfolded.trim().to_string()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Message {
    pub headers: Vec<Header>,
    /// Everything after the header section (and its blank line, if any).
    pub body: Vec<u8>,
    /// Whether a blank line separates headers and body. A message whose
    /// header section ends in a malformed line keeps that shape: we add
    /// fields, we do not reinterpret the client's text.
    separated: bool,
}

impl Message {
    /// Splits raw CRLF-terminated message text into header fields and body.
    /// A line that is neither a field nor a continuation ends the header
    /// section (the body then starts with it; [`to_bytes`] adds the blank
    /// line that was missing).
    pub fn parse(raw: Vec<u8>) -> Message {
        let mut headers: Vec<Header> = Vec::new();
        let mut pos = 0;
        let mut separated = false;
        loop {
            let rest = &raw[pos..];
            if rest.is_empty() {
                return Message { headers, body: Vec::new(), separated: true };
            }
            if rest.starts_with(b"\r\n") {
                pos += 2;
                separated = true;
                break;
            }
            let line_end = rest.windows(2).position(|w| w == b"\r\n").map(|i| i + 2).unwrap_or(rest.len());
            let line = &rest[..line_end];
            if (line[0] == b' ' || line[0] == b'\t') && !headers.is_empty() {
                headers.last_mut().unwrap().raw.extend_from_slice(line);
            } else if let Some(colon) = field_name_end(line) {
                let name = String::from_utf8_lossy(&line[..colon]).trim_end().to_string();
                headers.push(Header { name, raw: line.to_vec() });
            } else {
                break;
            }
            pos += line_end;
        }
        let body = raw[pos..].to_vec();
        // Without any header field the text is all body: give it the blank
        // line that keeps it apart from the fields we add.
        let separated = separated || headers.is_empty();
        Message { headers, body, separated }
    }

    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(Header::value).collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name))
    }

    pub fn prepend(&mut self, header: Header) {
        self.headers.insert(0, header);
    }

    pub fn append(&mut self, header: Header) {
        self.headers.push(header);
    }

    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.headers.len();
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
        before - self.headers.len()
    }

    /// Whether a blank line separates the header section from the body as
    /// received (a malformed header section ends at a line that is not a
    /// field).
    pub fn is_separated(&self) -> bool {
        self.separated
    }

    /// Rewrites `Name :` (obsolete white space before the colon, RFC 5322
    /// §4.5.3) as `Name:` in every field; returns how many changed. A
    /// submission server may fix such syntax (RFC 6409 §8), and signers and
    /// verifiers disagree about the obsolete form.
    pub fn fix_field_names(&mut self) -> usize {
        let mut fixed = 0;
        for h in &mut self.headers {
            let Some(colon) = h.raw.iter().position(|&b| b == b':') else { continue };
            if colon > h.name.len() {
                h.raw.drain(h.name.len()..colon);
                fixed += 1;
            }
        }
        fixed
    }

    pub fn header_size(&self) -> usize {
        self.headers.iter().map(|h| h.raw.len()).sum::<usize>() + if self.separated { 2 } else { 0 }
    }

    pub fn size(&self) -> usize {
        self.header_size() + self.body.len()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        self.write_to(&mut out);
        out
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        for h in &self.headers {
            out.extend_from_slice(&h.raw);
        }
        if self.separated {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.body);
    }
}

/// If `line` starts a header field, the index of its colon. Field names are
/// printable ASCII except colon (RFC 5322 §3.6.8), optionally followed by
/// spaces or tabs before the colon (obsolete syntax, §4.5.3).
fn field_name_end(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let trimmed = name.iter().rposition(|&b| b != b' ' && b != b'\t').map(|i| &name[..=i])?;
    trimmed.iter().all(|&b| (33..=126).contains(&b)).then_some(colon)
}

/// Validates a header field a plugin wants to add.
pub fn check_new_header(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("invalid header name {name:?}"));
    }
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err("header values may not contain CR, LF or NUL".into());
    }
    if name.len() + value.len() > 16 * 1024 {
        return Err("header field too long".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_byte_exact() {
        let raw = b"Subject: a\r\n folded\r\nFrom: x@y.example\r\n\r\nbody\r\n".to_vec();
        let m = Message::parse(raw.clone());
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.header_values("subject"), vec!["a folded"]);
        assert_eq!(m.to_bytes(), raw);
    }

    #[test]
    fn a_malformed_header_section_keeps_its_shape() {
        let mut m = Message::parse(b"Subject: a\r\nthis is not a field\r\n".to_vec());
        assert_eq!(m.headers.len(), 1);
        m.append(Header::new("Date", "x"));
        assert_eq!(m.to_bytes(), b"Subject: a\r\nDate: x\r\nthis is not a field\r\n");
        let mut m = Message::parse(b"no headers at all\r\n".to_vec());
        assert!(m.headers.is_empty());
        m.prepend(Header::new("Received", "r"));
        assert_eq!(m.to_bytes(), b"Received: r\r\n\r\nno headers at all\r\n");
    }

    #[test]
    fn obsolete_space_before_colon_is_a_field() {
        let raw = b"Subject : x\r\nFrom\t: a@b.example\r\n\r\nbody\r\n".to_vec();
        let m = Message::parse(raw.clone());
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.header_values("subject"), vec!["x"]);
        assert_eq!(m.header_values("from"), vec!["a@b.example"]);
        assert_eq!(m.to_bytes(), raw);
    }

    #[test]
    fn new_header_folds_long_values() {
        let long = "word ".repeat(40);
        let h = Header::new("X-Long", long.trim());
        for line in h.raw.split(|&b| b == b'\n') {
            assert!(line.len() <= 80, "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(h.value().replace('\t', " "), long.trim());
    }
}
