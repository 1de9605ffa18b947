//! `mailferry init`: a ready folder for one sending domain.

use std::path::PathBuf;

use anyhow::Result;

use super::read_password;
use crate::{dns, init};

#[derive(clap::Args)]
pub(super) struct InitCmd {
    /// The folder to create, e.g. /etc/mailferry; an existing one must be empty.
    pub(super) dir: PathBuf,
    /// The sending domain: the domain of the From: addresses.
    #[arg(long)]
    pub(super) domain: String,
    /// The name mail clients connect to, and the TLS certificate's [default: smtp.DOMAIN].
    #[arg(long)]
    pub(super) hostname: Option<String>,
    /// The upstream: ses, sendgrid, resend, mailgun, postmark, brevo, or smtp (with --relay-host).
    #[arg(long)]
    pub(super) relay: dns::RelayKind,
    /// Amazon SES: the AWS region (required), e.g. eu-west-1. Mailgun: us or eu.
    /// Resend: the region of the domain, for the DNS records.
    #[arg(long)]
    pub(super) region: Option<String>,
    /// The relay's login (SES, Mailgun, Brevo, smtp); without it the
    /// configuration reads ${MAILFERRY_RELAY_USER}.
    #[arg(long)]
    pub(super) relay_user: Option<String>,
    /// With --relay smtp: the smarthost, HOST or HOST:PORT (465: implicit TLS).
    #[arg(long)]
    pub(super) relay_host: Option<String>,
    /// Where inbound mail is handled, for the DNS records: cloudflare.
    #[arg(long)]
    pub(super) inbound: Option<dns::Inbound>,
    /// Create this user (login) too; the password is asked for, or read from standard input.
    #[arg(long)]
    pub(super) user: Option<String>,
    /// Read the user's password from standard input instead of prompting.
    #[arg(long, requires = "user")]
    pub(super) password_stdin: bool,
    /// server.state_dir: the queue and caches (relative: to DIR).
    #[arg(long, default_value = init::DEFAULT_STATE_DIR)]
    pub(super) state_dir: String,
}

pub(super) fn run(a: InitCmd) -> Result<()> {
    let mut args = init::InitArgs::new(a.dir, &a.domain, a.relay);
    args.hostname = a.hostname;
    args.region = a.region;
    args.relay_user = a.relay_user;
    args.relay_host = a.relay_host;
    args.inbound = a.inbound;
    args.user = a.user;
    args.state_dir = a.state_dir;
    // Everything is checked before a password is asked for or a file written.
    let setup = init::check(&args).map_err(anyhow::Error::msg)?;
    let password = match &setup.user {
        Some(_) => Some(read_password(a.password_stdin)?),
        None => None,
    };
    let written = init::write(&setup, password.as_deref()).map_err(anyhow::Error::msg)?;
    let records = init::dns_records(&setup, &written).map_err(anyhow::Error::msg)?;
    print!("{}", init::next_steps(&setup, &written, &records));
    Ok(())
}
