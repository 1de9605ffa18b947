//! What `dns`, `doctor` and `init` are asked: the domain, its relay and region, where inbound mail goes.

use super::*;
use crate::config::Provider;

/// The relay the domain sends through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayKind {
    Ses,
    Sendgrid,
    Resend,
    Mailgun,
    Postmark,
    Brevo,
    /// Any other smarthost: its SPF include is not known here.
    Smtp,
}

impl RelayKind {
    pub const ALL: [RelayKind; 7] = [
        RelayKind::Ses,
        RelayKind::Sendgrid,
        RelayKind::Resend,
        RelayKind::Mailgun,
        RelayKind::Postmark,
        RelayKind::Brevo,
        RelayKind::Smtp,
    ];

    /// The preset behind this relay; `None` for any other smarthost.
    pub fn provider(self) -> Option<Provider> {
        match self {
            RelayKind::Ses => Some(Provider::Ses),
            RelayKind::Sendgrid => Some(Provider::Sendgrid),
            RelayKind::Resend => Some(Provider::Resend),
            RelayKind::Mailgun => Some(Provider::Mailgun),
            RelayKind::Postmark => Some(Provider::Postmark),
            RelayKind::Brevo => Some(Provider::Brevo),
            RelayKind::Smtp => None,
        }
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        self.provider().map_or("smtp", Provider::name)
    }

    /// The name in prose.
    pub fn label(self) -> &'static str {
        self.provider().map_or("your SMTP provider", Provider::label)
    }

    /// The include this relay's setup puts in the SPF record of the domain
    /// itself (see [`Provider::spf_include`]).
    pub(crate) fn apex_include(self) -> Option<&'static str> {
        self.provider().and_then(Provider::spf_include)
    }

    /// The default subdomain label the relay uses as envelope sender.
    fn bounce_label(self) -> Option<&'static str> {
        self.provider().and_then(Provider::bounce_label)
    }
}

impl fmt::Display for RelayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RelayKind {
    type Err = String;

    fn from_str(s: &str) -> Result<RelayKind, String> {
        let wanted = s.trim().to_ascii_lowercase();
        let wanted = match wanted.as_str() {
            "amazon-ses" | "aws" | "amazonses" => "ses",
            other => other,
        };
        RelayKind::ALL.into_iter().find(|r| r.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = RelayKind::ALL.iter().map(|r| r.name()).collect();
            format!(
                "unknown relay {s:?}: choose one of {} (smtp: any other provider, whose SPF include you add yourself)",
                names.join(", ")
            )
        })
    }
}

/// Where the domain receives mail, when `mailferry dns` should include it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Cloudflare Email Routing.
    Cloudflare,
}

impl FromStr for Inbound {
    type Err = String;

    fn from_str(s: &str) -> Result<Inbound, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cloudflare" => Ok(Inbound::Cloudflare),
            _ => Err(format!("unknown inbound {s:?}: the only choice is cloudflare (Cloudflare Email Routing)")),
        }
    }
}

/// What `mailferry dns` and `mailferry doctor` are asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsArgs {
    /// The sending domain (the domain of the `From:` addresses).
    pub domain: String,
    /// The relay; `doctor` without `--relay` passes [`RelayKind::Smtp`] (nothing relay-specific).
    pub relay: RelayKind,
    pub inbound: Option<Inbound>,
    /// SES or Resend region, e.g. `eu-west-1`.
    pub region: Option<String>,
    /// Where DMARC aggregate reports go (`mailto:...`); `mailto:dmarc-reports@<domain>` when absent.
    pub dmarc_rua: Option<String>,
    /// The relay's envelope-sender (MAIL FROM / Return-Path) domain, when not the default
    /// (`mail.D` for SES, `send.D` for Resend, `mg.D` for Mailgun, `pm-bounces.D` for Postmark).
    /// A bare label is taken relative to the domain.
    pub mail_from: Option<String>,
}

impl DnsArgs {
    /// Arguments for `domain` and `relay`, everything else unset.
    pub fn new(domain: &str, relay: RelayKind) -> DnsArgs {
        DnsArgs { domain: domain.to_string(), relay, inbound: None, region: None, dmarc_rua: None, mail_from: None }
    }

    /// Refuses arguments that would produce nonsense records, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        let domain = self.domain();
        if !is_domain(&domain) {
            return Err(format!("--domain {:?} is not a domain name like example.com", self.domain));
        }
        if let Some(region) = &self.region {
            let ok = !region.is_empty()
                && region.split('-').count() >= 3
                && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(format!("--region {region:?} is not an AWS region name like eu-west-1 or us-east-1"));
            }
        }
        if let Some(rua) = &self.dmarc_rua {
            for uri in rua.split(',') {
                let address = uri.trim().strip_prefix("mailto:").unwrap_or(uri.trim());
                let ok =
                    address.split_once('@').is_some_and(|(l, d)| !l.is_empty() && is_domain(&d.to_ascii_lowercase()));
                if !ok {
                    return Err(format!("--dmarc-rua {rua:?}: expected an address like mailto:dmarc@{domain}"));
                }
            }
        }
        if let Some(m) = &self.mail_from {
            let name = self.resolve_name(m);
            if !is_domain(&name) || !(name == domain || name.ends_with(&format!(".{domain}"))) {
                return Err(format!("--mail-from {m:?} must be {domain} or a subdomain of it, e.g. mail.{domain}"));
            }
            // SES and Resend want a subdomain for MAIL FROM, and a CNAME cannot sit at the domain itself.
            if name == domain && matches!(self.relay, RelayKind::Ses | RelayKind::Resend | RelayKind::Postmark) {
                return Err(format!(
                    "--mail-from {m:?}: {} needs a subdomain of {domain} here, e.g. mail.{domain}",
                    self.relay.label()
                ));
            }
        }
        Ok(())
    }

    /// The domain, lowercase, without a final dot.
    pub fn domain(&self) -> String {
        self.domain.trim().trim_end_matches('.').to_ascii_lowercase()
    }

    /// A name given as a label (`mail`) or a full name (`mail.example.com`), as a full name.
    fn resolve_name(&self, name: &str) -> String {
        let domain = self.domain();
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if name == domain || name.ends_with(&format!(".{domain}")) || (name.contains('.') && is_domain(&name)) {
            name
        } else {
            format!("{name}.{domain}")
        }
    }

    /// The relay's envelope-sender domain, if it uses one of the domain's names.
    pub fn bounce_domain(&self) -> Option<String> {
        match &self.mail_from {
            Some(m) => Some(self.resolve_name(m)),
            None => self.relay.bounce_label().map(|l| format!("{l}.{}", self.domain())),
        }
    }

    /// The `rua=` value: the given addresses with `mailto:` added where missing.
    pub fn rua(&self) -> String {
        match &self.dmarc_rua {
            Some(r) => r
                .split(',')
                .map(|u| {
                    let u = u.trim();
                    if u.starts_with("mailto:") {
                        u.to_string()
                    } else {
                        format!("mailto:{u}")
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            None => format!("mailto:dmarc-reports@{}", self.domain()),
        }
    }

    /// The region for SES-based relays: given, else Resend's default, else none.
    pub(crate) fn ses_region(&self) -> Option<&str> {
        match (&self.region, self.relay) {
            (Some(r), _) => Some(r.as_str()),
            (None, RelayKind::Resend) => Some(RESEND_DEFAULT_REGION),
            (None, _) => None,
        }
    }
}
