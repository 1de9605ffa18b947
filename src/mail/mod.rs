//! The mail's own types and rules, with no I/O and nothing of the plugin
//! interface: what every layer may use.

pub mod address;
pub mod envelope;
pub mod reply;

pub use envelope::{Address, Envelope, Param};
pub use reply::Reply;
