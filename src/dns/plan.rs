//! `mailferry dns`: the records to publish, SPF merged into one record per name.

use super::*;

/// One DNS record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What the record is for, as a heading: "SPF", "DKIM", "DMARC", ...
    pub purpose: &'static str,
    /// `TXT`, `MX` or `CNAME`.
    pub kind: &'static str,
    /// The full name, without the final dot.
    pub name: String,
    /// The name relative to the domain, for DNS panels that append it; `@` for the domain itself.
    pub host: String,
    pub value: String,
    /// MX preference.
    pub priority: Option<u16>,
    pub note: Option<String>,
    /// The name or value is a pattern (`<...>` parts) to copy exactly from the provider's panel.
    pub placeholder: bool,
    /// The local DKIM key this record publishes.
    pub key: Option<KeyInfo>,
}

impl Record {
    fn new(purpose: &'static str, kind: &'static str, domain: &str, name: &str, value: impl Into<String>) -> Record {
        Record {
            purpose,
            kind,
            name: name.to_string(),
            host: relative_host(name, domain),
            value: value.into(),
            priority: None,
            note: None,
            placeholder: false,
            key: None,
        }
    }

    fn priority(mut self, p: u16) -> Record {
        self.priority = Some(p);
        self
    }

    fn note(mut self, note: impl Into<String>) -> Record {
        self.note = Some(note.into());
        self
    }

    fn placeholder(mut self) -> Record {
        self.placeholder = true;
        self
    }
}

/// `name` relative to `domain`: `@` for the domain itself.
pub(crate) fn relative_host(name: &str, domain: &str) -> String {
    if name == domain {
        "@".to_string()
    } else {
        name.strip_suffix(&format!(".{domain}")).unwrap_or(name).to_string()
    }
}

/// Everything `mailferry dns` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub records: Vec<Record>,
    /// Things that need the operator's attention before publishing.
    pub warnings: Vec<String>,
    /// Relay-specific facts: endpoints, credentials, header rewriting.
    pub notes: Vec<String>,
}

/// The SPF includes each name needs, in order; one record per name, merged.
pub(crate) fn spf_includes(args: &DnsArgs) -> BTreeMap<String, Vec<&'static str>> {
    let domain = args.domain();
    let mut by_name: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    if args.inbound == Some(Inbound::Cloudflare) {
        by_name.entry(domain.clone()).or_default().push(CLOUDFLARE_SPF);
    }
    if let Some(include) = args.relay.apex_include() {
        by_name.entry(domain.clone()).or_default().push(include);
    }
    let bounce_include = match args.relay {
        RelayKind::Ses | RelayKind::Resend => Some("amazonses.com"),
        RelayKind::Mailgun => Some("mailgun.org"),
        _ => None,
    };
    if let (Some(include), Some(bounce)) = (bounce_include, args.bounce_domain()) {
        let list = by_name.entry(bounce).or_default();
        if !list.contains(&include) {
            list.push(include);
        }
    }
    by_name
}

/// The merged SPF record for `includes`.
pub(crate) fn spf_value(includes: &[&str]) -> String {
    let mut value = String::from("v=spf1");
    for i in includes {
        value.push_str(" include:");
        value.push_str(i);
    }
    value.push_str(" ~all");
    value
}

/// The SPF record `mailferry dns` asks for at the domain itself, if any.
pub fn apex_spf(args: &DnsArgs) -> Option<String> {
    let includes = spf_includes(args).remove(&args.domain()).unwrap_or_default();
    if args.relay == RelayKind::Smtp {
        let mut value = spf_value(&includes);
        value.insert_str(value.len() - " ~all".len(), " include:<your provider's SPF include>");
        return Some(value);
    }
    (!includes.is_empty()).then(|| spf_value(&includes))
}

/// The DMARC record `mailferry dns` asks for.
pub fn dmarc_value(args: &DnsArgs) -> String {
    format!("v=DMARC1; p=none; rua={}", args.rua())
}

/// Every record the domain needs for sending through `args.relay` (and receiving through
/// Cloudflare with `--inbound cloudflare`), with what to watch out for.
pub fn plan(args: &DnsArgs, keys: &KeyStore) -> Plan {
    let domain = args.domain();
    let mut plan = Plan::default();
    let includes = spf_includes(args);

    // SPF at the domain itself: one record, every sender's include in it.
    if let Some(value) = apex_spf(args) {
        let apex = includes.get(&domain).cloned().unwrap_or_default();
        let mut record = Record::new("SPF", "TXT", &domain, &domain, value).note(format!(
            "The only SPF record of {domain}: if one already exists, add these include: terms to it instead of \
             publishing a second record (two make SPF fail for every message). {}",
            lookup_budget(&apex, args.relay == RelayKind::Smtp)
        ));
        if args.relay == RelayKind::Smtp {
            record = record.placeholder();
        }
        plan.records.push(record);
    } else {
        plan.notes.push(format!(
            "{} authenticates SPF on its own sending subdomain (below), so {domain} itself needs no SPF record for \
             it. If anything else sends with {domain} as envelope sender, that sender's include goes in one SPF \
             record at {domain}.",
            args.relay.label()
        ));
    }

    // Cloudflare Email Routing.
    if args.inbound == Some(Inbound::Cloudflare) {
        for (host, priority) in CLOUDFLARE_MX {
            plan.records.push(
                Record::new("Inbound mail: Cloudflare Email Routing", "MX", &domain, &domain, host).priority(priority),
            );
        }
        plan.notes.push(format!(
            "Cloudflare Email Routing adds its MX records (and its SPF include) itself when you enable it for \
             {domain}; it picks the MX priorities per zone, so keep the ones it shows. It also adds a DKIM record \
             (cf2024-1._domainkey) for forwarded mail: keep it. Its own SPF TXT must be merged into the one above, \
             not kept beside it."
        ));
    }

    // DKIM: the keys this server signs with.
    let local = keys.for_domain(&domain);
    if local.is_empty() {
        plan.warnings.push(format!(
            "No DKIM key for {domain}: without one, mailferry sends unsigned mail and DMARC relies on SPF alone. \
             Create one with `mailferry dkim keygen --domain {domain}` (and for dual signing, a second with \
             `mailferry dkim keygen --domain {domain} --algorithm ed25519`), then run `mailferry dns` again."
        ));
    }
    for info in local {
        let mut record = Record::new("DKIM", "TXT", &domain, &info.dns_name(), info.txt_value());
        record.key = Some(info.clone());
        plan.records.push(record);
    }

    // DMARC.
    plan.records.push(Record::new("DMARC", "TXT", &domain, &format!("_dmarc.{domain}"), dmarc_value(args)).note(
        "p=none asks receivers for daily aggregate reports without changing what they do with failing mail. \
             Read the reports for two to four weeks (a DMARC report viewer helps); once every legitimate source \
             passes SPF or DKIM aligned with your domain, move to p=quarantine (pct=25, then 100) and later to \
             p=reject, which is what stops others from sending as your domain.",
    ));
    if let Some(w) = rua_authorization_warning(args) {
        plan.warnings.push(w);
    }

    relay_records(args, &includes, &mut plan);

    // Values over 255 characters.
    if plan.records.iter().any(|r| r.value.len() > 255) {
        plan.notes.push(
            "A TXT value over 255 characters is stored as several strings of at most 255; DNS panels split a long \
             value themselves, zone files need the quoted strings shown with the record."
                .to_string(),
        );
    }
    plan
}

/// The lookup budget of the apex SPF, as a sentence.
pub(crate) fn lookup_budget(includes: &[&str], unknown_include: bool) -> String {
    let mut total = 0;
    let mut parts = Vec::new();
    let mut assumed = Vec::new();
    for i in includes {
        match INCLUDE_COSTS.iter().find(|(name, _)| name == i) {
            Some((_, cost)) => {
                total += cost;
                parts.push(format!("include:{i} {cost}"));
            }
            None => {
                total += 1;
                parts.push(format!("include:{i} 1"));
                assumed.push(*i);
            }
        }
    }
    if unknown_include {
        total += 1;
        parts.push("your provider's include at least 1".to_string());
    }
    let mut s = format!(
        "SPF allows at most {SPF_LOOKUP_LIMIT} DNS lookups: this record uses about {total} ({}), leaving about {} \
         for other senders.",
        parts.join(", "),
        SPF_LOOKUP_LIMIT.saturating_sub(total)
    );
    if !assumed.is_empty() {
        s.push_str(&format!(
            " Counted as 1 each, assuming no nested lookups: {}.",
            assumed.iter().map(|i| format!("include:{i}")).collect::<Vec<_>>().join(", ")
        ));
    }
    s.push_str(" `mailferry doctor` counts the live records, nested includes too.");
    s
}

/// Reports for another domain are dropped unless that domain agrees to receive them (RFC 7489 §7.1).
pub(crate) fn rua_authorization_warning(args: &DnsArgs) -> Option<String> {
    let domain = args.domain();
    let foreign: Vec<String> = args
        .rua()
        .split(',')
        .filter_map(|u| u.trim().strip_prefix("mailto:")?.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
        .filter(|d| *d != domain && !d.ends_with(&format!(".{domain}")) && !domain.ends_with(&format!(".{d}")))
        .collect();
    if foreign.is_empty() {
        return None;
    }
    Some(format!(
        "DMARC reports go to another domain ({}): receivers send them only if that domain publishes a TXT record \
         \"v=DMARC1\" at {domain}._report._dmarc.<that domain> (report services do this for you).",
        foreign.join(", ")
    ))
}

/// The relay's own records and notes.
pub(crate) fn relay_records(args: &DnsArgs, includes: &BTreeMap<String, Vec<&'static str>>, plan: &mut Plan) {
    let domain = args.domain();
    let bounce = args.bounce_domain();
    let bounce_spf = |name: &str| includes.get(name).map(|i| spf_value(i)).unwrap_or_else(|| spf_value(&[]));
    let cloudflare = args.inbound == Some(Inbound::Cloudflare);
    let mx_conflict = |plan: &mut Plan, name: &str| {
        if cloudflare && name == domain {
            plan.warnings.push(format!(
                "The {} MX records above are at {domain} itself, where Cloudflare Email Routing receives mail: \
                 use a subdomain (--mail-from) so inbound mail keeps going to Cloudflare.",
                args.relay.label()
            ));
        }
    };
    match args.relay {
        RelayKind::Ses => {
            let region = args.region.clone();
            let region_text = region.clone().unwrap_or_else(|| "<region>".into());
            let bounce = bounce.unwrap_or_else(|| format!("mail.{domain}"));
            let mut mx = Record::new(
                "Amazon SES custom MAIL FROM",
                "MX",
                &domain,
                &bounce,
                format!("feedback-smtp.{region_text}.amazonses.com"),
            )
            .priority(10)
            .note(format!(
                "Bounces and complaints come back through this subdomain. In the SES console: Verified identities \
                 > {domain} > Custom MAIL FROM domain > {bounce}. It must not receive other mail."
            ));
            if region.is_none() {
                mx = mx.placeholder();
                plan.warnings.push(
                    "No --region given: the SES MAIL FROM MX and the SMTP endpoint depend on the SES region \
                     (e.g. --region eu-west-1)."
                        .into(),
                );
            }
            mx_conflict(plan, &bounce);
            plan.records.push(mx);
            plan.records.push(
                Record::new("Amazon SES custom MAIL FROM", "TXT", &domain, &bounce, bounce_spf(&bounce))
                    .note("SPF for the MAIL FROM subdomain: with it, SPF aligns with your domain under DMARC."),
            );
            for n in 1..=3 {
                plan.records.push(
                    Record::new(
                        "Amazon SES domain verification (Easy DKIM)",
                        "CNAME",
                        &domain,
                        &format!("<token{n}>._domainkey.{domain}"),
                        format!("<token{n}>.dkim.amazonses.com"),
                    )
                    .placeholder(),
                );
            }
            plan.notes.extend([
                format!(
                    "SES verifies {domain} through Easy DKIM: the console shows three CNAME records like the ones \
                     above with your tokens; copy them exactly. SES then adds its own signature beside mailferry's; \
                     both are fine."
                ),
                format!(
                    "SMTP endpoint: email-smtp.{region_text}.amazonaws.com, port 587 (STARTTLS) or 465 (TLS). SES \
                     SMTP credentials are not IAM access keys: create them in the SES console (SMTP settings > \
                     Create SMTP credentials); they belong to one region."
                ),
                "SES replaces the Message-ID and Date header fields, which breaks a DKIM signature covering them. \
                 Tell dkim-sign not to sign them for this relay: under [plugins.config.routes.<relay name>] set \
                 exclude_headers = [\"Message-ID\", \"Date\"] (or exclude_headers in [plugins.config] when every \
                 message goes through SES)."
                    .into(),
            ]);
        }
        RelayKind::Sendgrid => {
            let purpose = "SendGrid domain authentication";
            plan.records.push(
                Record::new(
                    purpose,
                    "CNAME",
                    &domain,
                    &format!("em<NNNN>.{domain}"),
                    "u<NNNNNNN>.wl<NNN>.sendgrid.net",
                )
                .placeholder()
                .note("Return-Path subdomain: SPF for SendGrid's envelope sender."),
            );
            for s in ["s1", "s2"] {
                plan.records.push(
                    Record::new(
                        purpose,
                        "CNAME",
                        &domain,
                        &format!("{s}._domainkey.{domain}"),
                        format!("{s}.domainkey.u<NNNNNNN>.wl<NNN>.sendgrid.net"),
                    )
                    .placeholder(),
                );
            }
            plan.notes.extend([
                "SendGrid: Settings > Sender Authentication > Authenticate Your Domain, with automated security on, \
                 shows three CNAME records (em<NNNN>, s1._domainkey, s2._domainkey) whose targets belong to your \
                 account; copy them exactly. On Cloudflare, leave them DNS-only (grey cloud)."
                    .to_string(),
                "SMTP: smtp.sendgrid.net port 587 (STARTTLS) or 465 (TLS); the user is the literal string apikey \
                 and the password an API key with Mail Send permission."
                    .into(),
            ]);
        }
        RelayKind::Resend => {
            let region = args.ses_region().unwrap_or(RESEND_DEFAULT_REGION);
            let bounce = bounce.unwrap_or_else(|| format!("send.{domain}"));
            mx_conflict(plan, &bounce);
            plan.records.push(
                Record::new(
                    "Resend sending subdomain",
                    "MX",
                    &domain,
                    &bounce,
                    format!("feedback-smtp.{region}.amazonses.com"),
                )
                .priority(10)
                .note(format!(
                    "Resend sends through Amazon SES in the domain's region ({region}{}); bounces come back here.",
                    if args.region.is_none() {
                        ", Resend's default: pass --region if the dashboard shows another"
                    } else {
                        ""
                    }
                )),
            );
            plan.records.push(Record::new("Resend sending subdomain", "TXT", &domain, &bounce, bounce_spf(&bounce)));
            plan.records.push(
                Record::new(
                    "Resend sending subdomain",
                    "TXT",
                    &domain,
                    &format!("resend._domainkey.{domain}"),
                    "p=<key from the Resend dashboard>",
                )
                .placeholder()
                .note("Resend's own DKIM key, required to verify the domain in Resend."),
            );
            plan.notes.push(
                "SMTP: smtp.resend.com, port 465 (TLS) or 587 (STARTTLS); the user is resend and the password an \
                 API key."
                    .into(),
            );
        }
        RelayKind::Mailgun => {
            let bounce = bounce.unwrap_or_else(|| format!("mg.{domain}"));
            mx_conflict(plan, &bounce);
            let purpose = "Mailgun sending domain";
            plan.records.push(
                Record::new(purpose, "TXT", &domain, &bounce, bounce_spf(&bounce))
                    .note(format!("Add {bounce} (not {domain}) as the domain in Mailgun: SPF is checked here.")),
            );
            for host in ["mxa.mailgun.org", "mxb.mailgun.org"] {
                plan.records.push(Record::new(purpose, "MX", &domain, &bounce, host).priority(10));
            }
            plan.records.push(
                Record::new(
                    purpose,
                    "TXT",
                    &domain,
                    &format!("<selector>._domainkey.{bounce}"),
                    "k=rsa; p=<key from the Mailgun panel>",
                )
                .placeholder()
                .note("Mailgun's own DKIM record; the name and key are under Domain settings > DNS records."),
            );
            plan.records.push(
                Record::new(purpose, "CNAME", &domain, &format!("email.{bounce}"), "mailgun.org")
                    .note("Optional: only for Mailgun's open and click tracking."),
            );
            plan.notes.push(format!(
                "SMTP: smtp.mailgun.org (EU domains: smtp.eu.mailgun.org), port 587 (STARTTLS) or 465 (TLS); the \
                 login is an SMTP user of the Mailgun domain (e.g. postmaster@{bounce}) with its own password."
            ));
        }
        RelayKind::Postmark => {
            let bounce = bounce.unwrap_or_else(|| format!("pm-bounces.{domain}"));
            plan.records.push(Record::new("Postmark Return-Path", "CNAME", &domain, &bounce, "pm.mtasv.net").note(
                "Custom Return-Path: bounces come back through your subdomain and SPF aligns with your domain. \
                     Set the same name as Return-Path domain in Postmark (Sender Signatures > your domain).",
            ));
            plan.records.push(
                Record::new(
                    "Postmark Return-Path",
                    "TXT",
                    &domain,
                    &format!("<date>pm._domainkey.{domain}"),
                    "k=rsa; p=<key from Postmark>",
                )
                .placeholder()
                .note("Postmark's own DKIM record: Sender Signatures > your domain > DNS Settings."),
            );
            plan.notes.push(
                "SMTP: smtp.postmarkapp.com, port 587 or 2525 (STARTTLS); the Server API Token is both the user name \
                 and the password."
                    .into(),
            );
        }
        RelayKind::Brevo => {
            plan.records.push(
                Record::new(
                    "Brevo domain authentication",
                    "TXT",
                    &domain,
                    &domain,
                    "brevo-code:<code from the Brevo panel>",
                )
                .placeholder()
                .note("Proves you own the domain; a separate TXT record, not part of the SPF record."),
            );
            plan.notes.extend([
                "Brevo: Senders, Domains & Dedicated IPs > Domains > Authenticate shows the brevo-code and its DKIM \
                 record(s) (names and values belong to your account); copy them exactly."
                    .to_string(),
                "SMTP: smtp-relay.brevo.com port 587 (STARTTLS); the login is the SMTP login shown on the SMTP & API \
                 page and the password an SMTP key (not the account password, not an API key)."
                    .into(),
            ]);
        }
        RelayKind::Smtp => {
            plan.notes.push(
                "Use your provider's SPF include (their documentation calls it the SPF record or include:...) in \
                 place of the placeholder, in the same single record; also publish any DKIM or return-path records \
                 the provider asks for."
                    .into(),
            );
        }
    }
}
