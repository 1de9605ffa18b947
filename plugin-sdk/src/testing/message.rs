//! [`TestMessage`]: a message in memory standing in for the host's message resource.

use std::cell::RefCell;

/// A message held in memory, standing in for the host's message resource.
///
/// Header edits made through [`Message`] land here and can be inspected.
#[derive(Debug, Clone)]
pub struct TestMessage {
    fields: RefCell<Vec<Field>>,
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    /// The whole field as sent, `Name: value` with folding, ending in CRLF.
    raw: Vec<u8>,
}

impl Field {
    fn new(name: &str, value: &str) -> Field {
        Field { name: name.to_string(), raw: format!("{name}: {value}\r\n").into_bytes() }
    }

    /// Unfolded, without the leading whitespace, as the host presents it.
    fn value(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw[self.name.len() + 1..]);
        text.replace("\r\n", "").trim().to_string()
    }
}

impl TestMessage {
    /// Reads a message: header fields up to the first empty line, then the
    /// body. Bare LF line ends are turned into CRLF first, so tests may
    /// write messages with `\n`. A line that is neither a field nor a
    /// continuation ends the header section, as in the host.
    pub fn parse(bytes: impl AsRef<[u8]>) -> TestMessage {
        let bytes = to_crlf(bytes.as_ref());
        let mut fields: Vec<Field> = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            if rest.starts_with(b"\r\n") {
                pos += 2;
                break;
            }
            let end = rest.windows(2).position(|w| w == b"\r\n").map_or(rest.len(), |i| i + 2);
            let line = &rest[..end];
            let continuation = matches!(line[0], b' ' | b'\t');
            match fields.last_mut() {
                Some(last) if continuation => last.raw.extend_from_slice(line),
                _ => match field_name_len(line) {
                    Some(len) if !continuation => {
                        let name = String::from_utf8_lossy(&line[..len]).into_owned();
                        fields.push(Field { name, raw: line.to_vec() });
                    }
                    _ => break,
                },
            }
            pos += end;
        }
        TestMessage { fields: RefCell::new(fields), body: bytes[pos..].to_vec() }
    }

    /// All header fields in order, as `(name, value)`.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.fields.borrow().iter().map(|f| (f.name.clone(), f.value())).collect()
    }

    /// The values of every field named `name` (any case), in order.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.fields.borrow().iter().filter(|f| f.name.eq_ignore_ascii_case(name)).map(Field::value).collect()
    }

    /// The body, after the empty line.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The whole message as it would be sent now.
    pub fn to_bytes(&self) -> Vec<u8> {
        let fields = self.fields.borrow();
        let mut out = Vec::new();
        for f in fields.iter() {
            out.extend_from_slice(&f.raw);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    fn size(&self) -> u64 {
        let fields = self.fields.borrow();
        (fields.iter().map(|f| f.raw.len()).sum::<usize>() + 2 + self.body.len()) as u64
    }

    pub(crate) fn insert(&self, at_start: bool, name: &str, value: &str) -> Result<(), String> {
        check_field(name, value)?;
        let mut fields = self.fields.borrow_mut();
        let field = Field::new(name, value);
        if at_start {
            fields.insert(0, field);
        } else {
            fields.push(field);
        }
        Ok(())
    }
}

fn to_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Length of the field name if `line` starts a field: printable ASCII but
/// colon (RFC 5322 §3.6.8), then a colon.
fn field_name_len(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|&b| b == b':')?;
    (colon > 0 && line[..colon].iter().all(|&b| (33..=126).contains(&b))).then_some(colon)
}

/// The checks the host applies to added fields.
fn check_field(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("invalid header field name {name:?}"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("header field {name} value contains CR, LF or NUL"));
    }
    Ok(())
}

/// [`Message`] served from a [`TestMessage`].
pub(crate) struct MessageBackend<'a>(pub(crate) &'a TestMessage);

impl MessageBackend<'_> {
    pub(crate) fn headers(&self) -> Vec<(String, String)> {
        self.0.headers()
    }

    pub(crate) fn header(&self, name: &str) -> Vec<String> {
        self.0.header(name)
    }

    pub(crate) fn add_header(&self, name: &str, value: &str) -> Result<(), String> {
        self.0.insert(false, name, value)
    }

    pub(crate) fn prepend_header(&self, name: &str, value: &str) -> Result<(), String> {
        self.0.insert(true, name, value)
    }

    pub(crate) fn remove_header(&self, name: &str) -> u32 {
        let mut fields = self.0.fields.borrow_mut();
        let before = fields.len();
        fields.retain(|f| !f.name.eq_ignore_ascii_case(name));
        (before - fields.len()) as u32
    }

    pub(crate) fn size(&self) -> u64 {
        self.0.size()
    }

    pub(crate) fn read_body(&self, offset: u64, len: u32) -> Vec<u8> {
        let body = &self.0.body;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(body.len());
        let end = start.saturating_add(len as usize).min(body.len());
        body[start..end].to_vec()
    }
}
