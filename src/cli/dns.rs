//! `mailferry dns` (the records a sending domain needs) and `mailferry
//! doctor` (the live records checked against them).

use std::path::PathBuf;

use anyhow::Result;

use super::{keys_dir, runtime, AlreadyReported, ConfigArg};
use crate::{dkim, dns};

#[derive(clap::Args)]
pub(super) struct DomainArgs {
    /// The sending domain (of the From: addresses).
    #[arg(long)]
    pub(super) domain: String,
    /// The relay mail leaves through: ses, sendgrid, resend, mailgun, postmark, brevo or smtp.
    #[arg(long, default_value = "smtp")]
    pub(super) relay: dns::RelayKind,
    /// Where inbound mail is handled: cloudflare (Email Routing).
    #[arg(long)]
    pub(super) inbound: Option<dns::Inbound>,
    /// The provider's region (Amazon SES, Resend), e.g. eu-west-1.
    #[arg(long)]
    pub(super) region: Option<String>,
    /// The bounce (MAIL FROM) subdomain, if not the provider's usual one.
    #[arg(long)]
    pub(super) mail_from: Option<String>,
    /// The DKIM keys folder, instead of `dkim.keys` of the configuration.
    #[arg(long)]
    pub(super) keys: Option<PathBuf>,
    #[command(flatten)]
    pub(super) config: ConfigArg,
}

impl DomainArgs {
    fn dns_args(&self, dmarc_rua: Option<String>) -> Result<dns::DnsArgs> {
        let mut a = dns::DnsArgs::new(&self.domain, self.relay);
        a.inbound = self.inbound;
        a.region = self.region.clone();
        a.mail_from = self.mail_from.clone();
        a.dmarc_rua = dmarc_rua;
        a.validate().map_err(anyhow::Error::msg)?;
        Ok(a)
    }

    fn keys(&self) -> Result<dkim::KeyStore> {
        let dir = keys_dir(self.keys.clone(), &self.config)?;
        dkim::KeyStore::load(&dir).map_err(anyhow::Error::msg)
    }
}

/// Prints every record the domain needs.
pub(super) fn records(domain: &DomainArgs, dmarc_rua: Option<String>) -> Result<()> {
    let args = domain.dns_args(dmarc_rua)?;
    let plan = dns::plan(&args, &domain.keys()?);
    print!("{}", dns::render(&args, &plan));
    Ok(())
}

/// Checks the live records; fails (exit 1) when any is wrong.
pub(super) fn doctor(domain: &DomainArgs, dns_server: Option<std::net::SocketAddr>) -> Result<()> {
    let args = domain.dns_args(None)?;
    let keys = domain.keys()?;
    let report = runtime()?.block_on(async {
        let resolver = match dns_server {
            Some(addr) => dns::SystemResolver::at(addr),
            None => dns::SystemResolver::system(),
        }
        .map_err(anyhow::Error::msg)?;
        anyhow::Ok(dns::doctor(&args, &keys, &resolver).await)
    })?;
    print!("{}", report.render());
    if report.ok() {
        Ok(())
    } else {
        // The report already says what is wrong and how to fix it.
        Err(AlreadyReported.into())
    }
}
