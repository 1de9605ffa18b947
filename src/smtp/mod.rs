//! The SMTP protocol: command parsing, replies, the DATA reader and the
//! session state machine.

pub mod command;
pub mod data;
pub mod reply;
pub mod session;
pub mod transport;
