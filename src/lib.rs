//! mailferry: an SMTP submission relay whose policy lives in sandboxed
//! WebAssembly plugins.
//!
//! The binary (`src/main.rs`) is the command line; this library holds the
//! parts, so benchmarks and tests can drive them directly.
//!
//! - [`config`]: the TOML configuration, validated up front.
//! - [`net`]: listeners, TLS, connection limits, graceful shutdown.
//! - [`smtp`]: the protocol: commands, replies, the DATA reader, the session.
//! - [`pipeline`]: the wasmtime engine, plugin instances, hooks and verdicts,
//!   and the host capabilities plugins import.
//! - [`outbound`]: relays (upstream SMTP, outbox folder).
//! - [`queue`]: the durable spool and delivery.
//! - [`sql`]: the database pools behind the `sql` capability, and
//!   mailferry's own users table.
//! - [`metrics`]: Prometheus metrics and the admin listener.
//! - [`counters`]: sliding-window counters in memory or Redis;
//!   [`limits`]: connection counts per client, and AUTH brute-force
//!   protection built on the counters.
//! - [`message`], [`password`], [`users`]: message headers, password hashes,
//!   the users file.
//! - [`sendmail`]: the `sendmail` command programs on this machine send with.
//! - [`init`]: `mailferry init`, a ready folder for one sending domain.

pub mod cli;
pub mod config;
pub mod counters;
pub mod dkim;
pub mod dns;
pub mod files;
pub mod init;
pub mod limits;
pub mod logs;
pub mod mail;
pub mod message;
pub mod metrics;
pub mod net;
pub mod outbound;
pub mod password;
pub mod pipeline;
pub mod poll;
pub mod queue;
pub mod sendmail;
pub mod smtp;
pub mod sql;
pub mod text;
pub mod users;
