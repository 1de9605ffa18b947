//! `mailferry dns` and `mailferry doctor`: the DNS records a sending domain needs, and a check of the
//! live ones.
//!
//! Mail relayed through SES, SendGrid and the like reaches inboxes only when the domain's SPF, DKIM
//! and DMARC records agree with how it is sent, and the same few mistakes recur: a second SPF record
//! beside the first, an SPF record over the ten-lookup limit, a DKIM record that is not the key the
//! server signs with, no DMARC record at all. [`plan`] lists every record to publish for a relay
//! (SPF merged into one record per name) and [`render`] prints it; [`doctor`] resolves the live
//! records and reports, record by record, PASS / WARN / FAIL with the exact change to make.
//!
//! Resolution goes through the [`Resolver`] trait: [`SystemResolver`] (hickory, through mail-auth)
//! in production, a table in the tests.
//!
//! - `args`: what the commands are asked (domain, relay, region, inbound);
//! - `plan`: the records a domain needs; `render` prints them;
//! - `resolver`: DNS lookups, behind a trait the tests replace;
//! - `doctor/`: the live records checked, one file per kind of record.

mod args;
mod doctor;
mod plan;
mod render;
mod resolver;

pub use args::*;
pub use doctor::*;
pub use plan::*;
pub use render::*;
pub use resolver::*;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;

use base64::Engine as _;

use crate::dkim::keygen::describe_record;
use crate::dkim::keys::{is_domain, split_txt, Algorithm, KeyInfo, KeyStore};

/// SPF's limit on DNS-querying terms per evaluation (RFC 7208 §4.6.4).
pub const SPF_LOOKUP_LIMIT: u32 = 10;

/// How deep `doctor` follows nested includes; real records stay far shallower, and the lookup
/// limit makes anything deeper fail at receivers anyway.
pub(crate) const SPF_MAX_DEPTH: usize = 10;

/// How many SPF records `doctor` fetches while counting, so a pathological include tree cannot
/// keep it busy.
pub(crate) const SPF_MAX_FETCHES: usize = 40;

/// Cloudflare Email Routing's inbound servers. Cloudflare assigns the priorities per zone; these are
/// the ones its documentation shows, and any order works since all three are Cloudflare's.
pub(crate) const CLOUDFLARE_MX: [(&str, u16); 3] =
    [("route1.mx.cloudflare.net", 13), ("route2.mx.cloudflare.net", 86), ("route3.mx.cloudflare.net", 24)];

/// Cloudflare Email Routing's SPF include.
pub(crate) const CLOUDFLARE_SPF: &str = "_spf.mx.cloudflare.net";

/// Total DNS lookups an include costs (itself plus the lookups inside its record), as the providers
/// published them when this was written. `doctor` counts the live records instead.
pub(crate) const INCLUDE_COSTS: &[(&str, u32)] = &[("mailgun.org", 5), ("spf.mtasv.net", 1)];

/// Region used for Resend when none is given: where Resend creates domains by default.
pub(crate) const RESEND_DEFAULT_REGION: &str = "us-east-1";

#[cfg(test)]
mod tests;
