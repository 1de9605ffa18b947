//! [`Message`]: the current transaction's message, held by the host.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::MessageBackend;
#[cfg(target_arch = "wasm32")]
pub(crate) use crate::wasm::MessageBackend;

/// The message of the current transaction, passed to `data` and `queue`.
///
/// The host keeps the message; this is a handle to it. Header names compare
/// case-insensitively and values come unfolded, without the leading space.
/// Header edits are applied before the message is queued or relayed. The
/// body is read in chunks so a large message never has to be copied whole
/// into the plugin's memory.
pub struct Message<'a> {
    pub(crate) backend: MessageBackend<'a>,
}

/// How much [`Message::body_chunks`] reads per call into the host.
pub const BODY_CHUNK: u32 = 64 * 1024;

impl Message<'_> {
    /// All header fields in order, as `(name, value)`.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.backend.headers()
    }

    /// The values of every field named `name`, in order.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.backend.header(name)
    }

    /// The first value of the field `name`, if any.
    pub fn first_header(&self, name: &str) -> Option<String> {
        self.header(name).into_iter().next()
    }

    /// Appends a field after the existing ones. `Err` if the host refuses
    /// the name or value (not a valid field name, CR or LF in the value).
    pub fn add_header(&self, name: &str, value: &str) -> Result<(), String> {
        self.backend.add_header(name, value)
    }

    /// Inserts a field before the existing ones, where trace fields
    /// (`Received:`, `Authentication-Results:`) belong.
    pub fn prepend_header(&self, name: &str, value: &str) -> Result<(), String> {
        self.backend.prepend_header(name, value)
    }

    /// Removes every field named `name`; returns how many were removed.
    pub fn remove_header(&self, name: &str) -> u32 {
        self.backend.remove_header(name)
    }

    /// Size in octets of the whole message as it will be sent.
    pub fn size(&self) -> u64 {
        self.backend.size()
    }

    /// Up to `len` octets of the body (after the blank line) from `offset`;
    /// empty at the end.
    pub fn read_body(&self, offset: u64, len: u32) -> Vec<u8> {
        self.backend.read_body(offset, len)
    }

    /// The body in chunks of up to [`BODY_CHUNK`] octets, read as the
    /// iterator advances.
    pub fn body_chunks(&self) -> BodyChunks<'_, '_> {
        BodyChunks { msg: self, offset: 0, done: false }
    }
}

/// Iterator over a message body, from [`Message::body_chunks`].
pub struct BodyChunks<'m, 'a> {
    msg: &'m Message<'a>,
    offset: u64,
    done: bool,
}

impl Iterator for BodyChunks<'_, '_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let chunk = self.msg.read_body(self.offset, BODY_CHUNK);
        if chunk.is_empty() {
            self.done = true;
            return None;
        }
        self.offset += chunk.len() as u64;
        Some(chunk)
    }
}
