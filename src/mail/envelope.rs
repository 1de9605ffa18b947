//! The envelope: who a message is from and to, as the session accepted it
//! and as the queue and the relays carry it.

/// An address with the ESMTP parameters given with it (`SIZE=`, `NOTIFY=`…).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    /// The mailbox, or empty for the null reverse-path `<>`.
    pub address: String,
    pub params: Vec<Param>,
}

impl Address {
    /// An address without parameters.
    pub fn bare(address: impl Into<String>) -> Address {
        Address { address: address.into(), params: Vec::new() }
    }
}

/// One ESMTP parameter: `KEY` or `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// `MAIL FROM` and the accepted `RCPT TO`s of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    pub mail_from: Address,
    pub rcpt_to: Vec<Address>,
}
