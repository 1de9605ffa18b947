//! The relay presets: what `provider = "..."` fills in for each mail service (docs/providers.md).

use super::*;

/// A mail service whose SMTP settings `provider = "..."` fills in
/// (see docs/providers.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Ses,
    Sendgrid,
    Resend,
    Mailgun,
    Postmark,
    Brevo,
}

/// Octets in the providers' "MB": the stricter, decimal reading.
pub(crate) const MB: usize = 1000 * 1000;

/// AWS regions with an SES SMTP endpoint, for the error when `region` is
/// missing (not a whitelist: a well-formed region not listed here is used).
pub const SES_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "eu-south-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "sa-east-1",
];

/// What SendGrid's `X-SMTPAPI` field says for every message: no click or open
/// tracking (they rewrite links and add a pixel, which breaks DKIM).
pub const SENDGRID_SMTPAPI: &str =
    r#"{"filters":{"clicktrack":{"settings":{"enable":0}},"opentrack":{"settings":{"enable":0}}}}"#;

impl Provider {
    pub const ALL: [Provider; 6] =
        [Provider::Ses, Provider::Sendgrid, Provider::Resend, Provider::Mailgun, Provider::Postmark, Provider::Brevo];

    /// The value of `provider`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Ses => "ses",
            Provider::Sendgrid => "sendgrid",
            Provider::Resend => "resend",
            Provider::Mailgun => "mailgun",
            Provider::Postmark => "postmark",
            Provider::Brevo => "brevo",
        }
    }

    /// The name in prose.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Ses => "Amazon SES",
            Provider::Sendgrid => "SendGrid",
            Provider::Resend => "Resend",
            Provider::Mailgun => "Mailgun",
            Provider::Postmark => "Postmark",
            Provider::Brevo => "Brevo",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The SMTP host; `region` is SES's AWS region or Mailgun's `"us"`/`"eu"`,
    /// already checked.
    pub fn host(self, region: Option<&str>) -> String {
        match (self, region) {
            (Provider::Ses, Some(region)) => format!("email-smtp.{region}.amazonaws.com"),
            (Provider::Ses, None) => "email-smtp.us-east-1.amazonaws.com".into(),
            (Provider::Sendgrid, _) => "smtp.sendgrid.net".into(),
            (Provider::Resend, _) => "smtp.resend.com".into(),
            (Provider::Mailgun, Some("eu")) => "smtp.eu.mailgun.org".into(),
            (Provider::Mailgun, _) => "smtp.mailgun.org".into(),
            (Provider::Postmark, _) => "smtp.postmarkapp.com".into(),
            (Provider::Brevo, _) => "smtp-relay.brevo.com".into(),
        }
    }

    /// The TLS mode used when `tls` is not set.
    pub fn tls(self) -> TlsMode {
        match self {
            Provider::Resend => TlsMode::Implicit,
            _ => TlsMode::Starttls,
        }
    }

    /// The port for a TLS mode when `port` is not set; `None`: the provider
    /// has no port for it.
    pub fn port(self, tls: TlsMode) -> Option<u16> {
        match (self, tls) {
            (Provider::Postmark, TlsMode::Implicit) => None,
            (_, TlsMode::Implicit) => Some(465),
            _ => Some(587),
        }
    }

    /// The login the provider requires, filled in when `user` is absent.
    pub fn fixed_user(self) -> Option<&'static str> {
        match self {
            Provider::Sendgrid => Some("apikey"),
            Provider::Resend => Some("resend"),
            _ => None,
        }
    }

    /// Recipients per message the provider takes.
    pub fn max_recipients(self) -> usize {
        match self {
            Provider::Ses => 50,
            Provider::Sendgrid => 1000,
            Provider::Resend => 50,
            Provider::Mailgun => 1000,
            Provider::Postmark => 50,
            Provider::Brevo => 99,
        }
    }

    /// Largest message (headers, body and encoded attachments), in octets.
    pub fn max_message_size(self) -> usize {
        match self {
            Provider::Ses => 40 * MB,
            Provider::Sendgrid => 30 * MB,
            Provider::Resend => 40 * MB,
            Provider::Mailgun => 25 * MB,
            Provider::Postmark => 10 * MB,
            Provider::Brevo => 20 * MB,
        }
    }

    /// Header fields put on every message.
    pub fn extra_headers(self) -> Vec<(String, String)> {
        match self {
            Provider::Sendgrid => vec![("X-SMTPAPI".into(), SENDGRID_SMTPAPI.into())],
            _ => Vec::new(),
        }
    }

    /// The include the provider's setup puts in the SPF record of the
    /// sending domain itself. Resend and Mailgun authenticate a sending
    /// subdomain instead (see [`Provider::bounce_label`]).
    pub fn spf_include(self) -> Option<&'static str> {
        match self {
            Provider::Ses => Some("amazonses.com"),
            Provider::Sendgrid => Some("sendgrid.net"),
            Provider::Postmark => Some("spf.mtasv.net"),
            Provider::Brevo => Some("spf.brevo.com"),
            Provider::Resend | Provider::Mailgun => None,
        }
    }

    /// The default subdomain label the provider uses as envelope sender
    /// (MAIL FROM, Return-Path), whose SPF and MX the provider's setup asks for.
    pub fn bounce_label(self) -> Option<&'static str> {
        match self {
            Provider::Ses => Some("mail"),
            Provider::Resend => Some("send"),
            Provider::Mailgun => Some("mg"),
            Provider::Postmark => Some("pm-bounces"),
            Provider::Sendgrid | Provider::Brevo => None,
        }
    }

    /// What the credentials are and where to get them, in prose (for
    /// `init`'s comments); `region` names SES's.
    pub fn credentials(self, region: Option<&str>) -> String {
        match self {
            Provider::Ses => format!(
                "the SES SMTP credentials for {} (SES console > SMTP settings > Create SMTP credentials), not your IAM access keys",
                region.unwrap_or("your region")
            ),
            Provider::Sendgrid => "a SendGrid API key with Mail Send permission".into(),
            Provider::Resend => "a Resend API key".into(),
            Provider::Mailgun => {
                "the SMTP credentials of your Mailgun sending domain (domain settings, SMTP credentials)".into()
            }
            Provider::Postmark => "the Postmark Server API token".into(),
            Provider::Brevo => {
                "your Brevo SMTP login and an SMTP key (not an API key), from the SMTP & API settings".into()
            }
        }
    }

    /// How to fill in the credentials, for errors.
    pub(crate) fn credentials_hint(self) -> &'static str {
        match self {
            Provider::Ses => {
                "user = \"AKIA...\" and password = \"${SES_SMTP_PASSWORD}\": the SES SMTP credentials (SES console, SMTP settings, Create SMTP credentials); they are not your IAM access keys and work in one region only"
            }
            Provider::Sendgrid => "password = \"${SENDGRID_API_KEY}\": an API key with Mail Send permission",
            Provider::Resend => "password = \"${RESEND_API_KEY}\": a Resend API key",
            Provider::Mailgun => {
                "user = \"postmaster@mg.example.com\" and password = \"${MAILGUN_SMTP_PASSWORD}\": the sending domain's SMTP credentials (Mailgun, domain settings, SMTP credentials)"
            }
            Provider::Postmark => {
                "password = \"${POSTMARK_SERVER_TOKEN}\": the Server API token, which is also the user"
            }
            Provider::Brevo => {
                "user = \"<your SMTP login>\" and password = \"${BREVO_SMTP_KEY}\": the SMTP login and an SMTP key (not an API key) from Brevo's SMTP & API settings"
            }
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An AWS region code such as `eu-west-1` (its shape; not a list).
pub fn is_aws_region(region: &str) -> bool {
    region.split('-').count() >= 3
        && region.split('-').all(|part| !part.is_empty())
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.ends_with(|c: char| c.is_ascii_digit())
}
