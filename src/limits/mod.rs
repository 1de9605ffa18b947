//! Limits on clients: how many connections each may hold, and how many
//! logins it may fail. Below the listeners and the session, which both use
//! them; above only the configuration and the counters.

pub mod auth;
pub mod connections;

pub use connections::client_key;
