//! End-to-end tests: the real `mailferry` binary on ephemeral ports, driven
//! by real clients and services (see `common`, the shared harness). One test
//! crate, one module per area; run one area with
//! `cargo test --test integration queue::`.
//!
//! Every test shares this process with the others: what one test needs in
//! the environment of a server or command it starts goes to that child
//! (`Server::try_serve_with_env`, `Command::env`), and files, ports and
//! database names are each test's own.

mod common;

mod auth;
mod brute_force;
mod clients;
mod dkim;
mod doctor;
mod forward;
mod guides;
mod init;
mod metrics;
mod open_relay;
mod packaging;
mod pipeline;
mod protocol;
mod proxy;
mod queue;
mod rate_limit;
mod reload;
mod sender_policy;
mod sendmail;
mod smuggling;
mod sql;
mod sql_limits;
mod tls_reload;
