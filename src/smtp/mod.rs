//! The SMTP protocol: command parsing, the DATA reader, the transport and the
//! session state machine.

pub mod command;
pub mod data;
pub mod session;
pub mod transport;
