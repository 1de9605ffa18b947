//! `[relays.NAME]`: a preset or a smarthost, its credentials, limits and region.

use super::*;

impl Resolver<'_> {
    pub(crate) fn relay(&mut self, name: &str, r: RawRelay) -> Option<Relay> {
        let key = format!("relays.{name}");
        let provider = match self.string(&format!("{key}.provider"), r.provider) {
            None => None,
            Some(p) => match Provider::parse(&p) {
                Some(p) => Some(p),
                None => {
                    self.error(format!(
                        "{key}.provider = {p:?} is not a known provider; use one of {} (or leave provider out and set host)",
                        Provider::ALL.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ")
                    ));
                    return None;
                }
            },
        };
        let region = self.string(&format!("{key}.region"), r.region);
        match r.kind.as_deref().unwrap_or("smtp") {
            "outbox" => {
                if let Some(p) = provider {
                    self.error(format!(
                        "{key}: provider = \"{p}\" sets up an SMTP relay, but kind = \"outbox\" writes to a folder; remove one of them"
                    ));
                    return None;
                }
                if region.is_some() {
                    self.error(format!("{key}.region is for provider = \"ses\" or \"mailgun\", not kind = \"outbox\""));
                }
                let Some(dir) = r.dir else {
                    self.error(format!("{key}: kind = \"outbox\" needs dir = \"folder\""));
                    return None;
                };
                Some(Relay::Outbox { dir: self.path(&dir) })
            }
            "smtp" => {
                let explicit_host = self.string(&format!("{key}.host"), r.host);
                let region = self.region(&key, provider, region, explicit_host.is_some())?;
                let host = match (explicit_host, provider) {
                    (Some(host), _) => host,
                    (None, Some(p)) => p.host(region.as_deref()),
                    (None, None) => {
                        self.error(format!(
                            "{key}: kind = \"smtp\" needs host = \"smtp.example.com\", or provider = \"ses\" (or another preset, see docs/providers.md)"
                        ));
                        return None;
                    }
                };
                let tls = r.tls.unwrap_or(provider.map(Provider::tls).unwrap_or(TlsMode::Starttls));
                let port = match (r.port, provider) {
                    (Some(port), _) => port,
                    (None, Some(p)) => match p.port(tls) {
                        Some(port) => port,
                        None => {
                            self.error(format!(
                                "{key}: {} offers no implicit-TLS port; use tls = \"starttls\" (port 587), or set port if you know better",
                                p.label()
                            ));
                            return None;
                        }
                    },
                    (None, None) => match tls {
                        TlsMode::Implicit => 465,
                        _ => 587,
                    },
                };
                let (user_given, password_given) = (r.user.is_some(), r.password.is_some());
                let mut user = self.string(&format!("{key}.user"), r.user);
                let password = self.string(&format!("{key}.password"), r.password);
                match provider {
                    Some(p) => {
                        if let Some(fixed) = p.fixed_user() {
                            match &user {
                                None if !user_given => user = Some(fixed.to_string()),
                                Some(u) if u != fixed => self.error(format!(
                                    "{key}.user = {u:?}: {} SMTP logs in as the literal user `{fixed}` with an API key as password; remove user (it defaults to \"{fixed}\") and set password = the API key",
                                    p.label()
                                )),
                                _ => {}
                            }
                        }
                        if p == Provider::Postmark && !user_given {
                            // The Server API token is both user and password.
                            user = password.clone();
                        }
                        if p == Provider::Mailgun {
                            if let Some(u) = user.as_deref().filter(|u| !u.contains('@')) {
                                self.error(format!(
                                    "{key}.user = {u:?}: Mailgun SMTP logins are full addresses on your sending domain, e.g. \"postmaster@mg.example.com\""
                                ));
                            }
                        }
                        let needs_user = p.fixed_user().is_none() && p != Provider::Postmark;
                        if !password_given || (needs_user && !user_given) {
                            self.error(format!("{key}: provider = \"{p}\" needs {}", p.credentials_hint()));
                        }
                    }
                    None => {
                        if user_given != password_given {
                            self.error(format!("{key}: user and password go together"));
                        }
                    }
                }
                if user.is_some() && tls == TlsMode::None && !is_loopback_host(&host) {
                    self.error(format!(
                        "{key}: refusing to send the upstream password in clear text to {host}; use tls = \"starttls\" or \"implicit\""
                    ));
                }
                let max_recipients = r.max_recipients.or(provider.map(Provider::max_recipients));
                if max_recipients == Some(0) {
                    self.error(format!("{key}.max_recipients must be at least 1"));
                }
                let max_message_size = r.max_message_size.or(provider.map(Provider::max_message_size));
                if let Some(size) = max_message_size.filter(|s| *s < 1024) {
                    self.error(format!(
                        "{key}.max_message_size = {size} is below the minimum of 1024 octets; it counts octets, e.g. 10000000 for 10 MB"
                    ));
                }
                let connection_max_messages = r.connection_max_messages.unwrap_or(defaults::CONNECTION_MAX_MESSAGES);
                if connection_max_messages == 0 {
                    self.error(format!(
                        "{key}.connection_max_messages must be at least 1 (1: a new connection for every message)"
                    ));
                }
                Some(Relay::Smtp(SmtpRelay {
                    host,
                    port,
                    tls,
                    user,
                    password,
                    verify_certificate: r.verify_certificate.unwrap_or(true),
                    ca_file: r.ca_file.map(|p| self.path(&p)),
                    timeout: Duration::from_secs(r.timeout_secs.unwrap_or(defaults::RELAY_TIMEOUT_SECS)),
                    helo: r.helo,
                    provider,
                    max_recipients,
                    max_message_size,
                    extra_headers: provider.map(Provider::extra_headers).unwrap_or_default(),
                    connection_max_messages,
                    connection_idle: Duration::from_secs(
                        r.connection_idle_secs.unwrap_or(defaults::CONNECTION_IDLE_SECS),
                    ),
                }))
            }
            other => {
                self.error(format!("{key}.kind = {other:?}: use \"smtp\" or \"outbox\""));
                None
            }
        }
    }

    /// Checks `region` against the provider: SES needs an AWS region (unless
    /// `host` is set), Mailgun takes `"us"` or `"eu"`, the others none.
    /// `None` (with an error recorded) when the relay cannot be built.
    pub(crate) fn region(
        &mut self,
        key: &str,
        provider: Option<Provider>,
        region: Option<String>,
        has_host: bool,
    ) -> Option<Option<String>> {
        match (provider, region) {
            (Some(Provider::Ses), None) if !has_host => {
                self.error(format!(
                    "{key}: provider = \"ses\" needs region = \"...\", the AWS region of your SES account and SMTP credentials, e.g. {}",
                    SES_REGIONS.join(", ")
                ));
                None
            }
            (Some(Provider::Ses), Some(region)) => {
                if !is_aws_region(&region) {
                    self.error(format!(
                        "{key}.region = {region:?} is not an AWS region name; use the code, e.g. \"eu-west-1\" (Ireland) or \"us-east-1\" (N. Virginia)"
                    ));
                    return None;
                }
                Some(Some(region))
            }
            (Some(Provider::Mailgun), Some(region)) => match region.as_str() {
                "us" | "eu" => Some(Some(region)),
                _ => {
                    self.error(format!(
                        "{key}.region = {region:?}: Mailgun's regions are \"us\" (the default, smtp.mailgun.org) and \"eu\" (smtp.eu.mailgun.org)"
                    ));
                    None
                }
            },
            (Some(p), Some(_)) => {
                self.error(format!(
                    "{key}.region: {} has no regions to choose from; remove region (it is for provider = \"ses\" or \"mailgun\")",
                    p.label()
                ));
                None
            }
            (None, Some(_)) => {
                self.error(format!(
                    "{key}.region is only used with provider = \"ses\" or \"mailgun\"; with host set, the host name already says the region"
                ));
                None
            }
            (_, None) => Some(None),
        }
    }
}
