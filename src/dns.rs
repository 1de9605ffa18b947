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
const SPF_MAX_DEPTH: usize = 10;

/// How many SPF records `doctor` fetches while counting, so a pathological include tree cannot
/// keep it busy.
const SPF_MAX_FETCHES: usize = 40;

/// Cloudflare Email Routing's inbound servers. Cloudflare assigns the priorities per zone; these are
/// the ones its documentation shows, and any order works since all three are Cloudflare's.
const CLOUDFLARE_MX: [(&str, u16); 3] =
    [("route1.mx.cloudflare.net", 13), ("route2.mx.cloudflare.net", 86), ("route3.mx.cloudflare.net", 24)];

/// Cloudflare Email Routing's SPF include.
const CLOUDFLARE_SPF: &str = "_spf.mx.cloudflare.net";

/// Total DNS lookups an include costs (itself plus the lookups inside its record), as the providers
/// published them when this was written. `doctor` counts the live records instead.
const INCLUDE_COSTS: &[(&str, u32)] = &[("mailgun.org", 5), ("spf.mtasv.net", 1)];

/// Region used for Resend when none is given: where Resend creates domains by default.
const RESEND_DEFAULT_REGION: &str = "us-east-1";

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

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

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RelayKind::Ses => "ses",
            RelayKind::Sendgrid => "sendgrid",
            RelayKind::Resend => "resend",
            RelayKind::Mailgun => "mailgun",
            RelayKind::Postmark => "postmark",
            RelayKind::Brevo => "brevo",
            RelayKind::Smtp => "smtp",
        }
    }

    /// The name in prose.
    pub fn label(self) -> &'static str {
        match self {
            RelayKind::Ses => "Amazon SES",
            RelayKind::Sendgrid => "SendGrid",
            RelayKind::Resend => "Resend",
            RelayKind::Mailgun => "Mailgun",
            RelayKind::Postmark => "Postmark",
            RelayKind::Brevo => "Brevo",
            RelayKind::Smtp => "your SMTP provider",
        }
    }

    /// The include this relay's setup puts in the SPF record of the domain itself. Resend and
    /// Mailgun authenticate a sending subdomain instead (see [`RelayKind::bounce_label`]).
    fn apex_include(self) -> Option<&'static str> {
        match self {
            RelayKind::Ses => Some("amazonses.com"),
            RelayKind::Sendgrid => Some("sendgrid.net"),
            RelayKind::Postmark => Some("spf.mtasv.net"),
            RelayKind::Brevo => Some("spf.brevo.com"),
            RelayKind::Resend | RelayKind::Mailgun | RelayKind::Smtp => None,
        }
    }

    /// The default subdomain label the relay uses as envelope sender (MAIL FROM, Return-Path).
    fn bounce_label(self) -> Option<&'static str> {
        match self {
            RelayKind::Ses => Some("mail"),
            RelayKind::Resend => Some("send"),
            RelayKind::Mailgun => Some("mg"),
            RelayKind::Postmark => Some("pm-bounces"),
            RelayKind::Sendgrid | RelayKind::Brevo | RelayKind::Smtp => None,
        }
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
    fn ses_region(&self) -> Option<&str> {
        match (&self.region, self.relay) {
            (Some(r), _) => Some(r.as_str()),
            (None, RelayKind::Resend) => Some(RESEND_DEFAULT_REGION),
            (None, _) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `mailferry dns`: the records to publish
// ---------------------------------------------------------------------------------------------

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
fn relative_host(name: &str, domain: &str) -> String {
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
fn spf_includes(args: &DnsArgs) -> BTreeMap<String, Vec<&'static str>> {
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
fn spf_value(includes: &[&str]) -> String {
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
fn lookup_budget(includes: &[&str], unknown_include: bool) -> String {
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
fn rua_authorization_warning(args: &DnsArgs) -> Option<String> {
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
fn relay_records(args: &DnsArgs, includes: &BTreeMap<String, Vec<&'static str>>, plan: &mut Plan) {
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

/// What `mailferry dns` prints.
pub fn render(args: &DnsArgs, plan: &Plan) -> String {
    let domain = args.domain();
    let mut out = String::new();
    out.push_str(&format!("DNS records for {domain}, sending through {}", args.relay.label()));
    if args.inbound == Some(Inbound::Cloudflare) {
        out.push_str(", receiving with Cloudflare Email Routing");
    }
    out.push_str(".\n\n");
    out.push_str(&wrap(
        &format!(
            "Name is the full record name; Host is the same name for DNS panels that add \".{domain}\" themselves \
             (Cloudflare, GoDaddy, Namecheap, Route 53 console, ...), \"@\" meaning {domain} itself. Values with \
             <...> parts are patterns: copy the exact text from the provider's panel."
        ),
        "",
    ));

    let mut heading = "";
    for record in &plan.records {
        if record.purpose != heading {
            heading = record.purpose;
            out.push_str(&format!("\n== {heading} ==\n"));
        } else {
            out.push('\n');
        }
        match &record.key {
            Some(key) => out.push_str(&describe_record(key)),
            None => out.push_str(&render_record(record)),
        }
    }
    if !plan.warnings.is_empty() {
        out.push_str("\n== Warnings ==\n");
        for w in &plan.warnings {
            out.push_str(&wrap(w, "  ! "));
        }
    }
    if !plan.notes.is_empty() {
        out.push_str(&format!("\n== Notes for {} ==\n", args.relay.label()));
        for n in &plan.notes {
            out.push_str(&wrap(n, "  - "));
        }
    }
    out.push_str(&format!("\nOnce published, check them with: mailferry doctor --domain {domain}"));
    if args.relay != RelayKind::Smtp {
        out.push_str(&format!(" --relay {}", args.relay));
    }
    if args.inbound == Some(Inbound::Cloudflare) {
        out.push_str(" --inbound cloudflare");
    }
    if let Some(r) = &args.region {
        out.push_str(&format!(" --region {r}"));
    }
    if let Some(m) = &args.mail_from {
        out.push_str(&format!(" --mail-from {m}"));
    }
    out.push('\n');
    out
}

/// One record in the layout of [`describe_record`].
fn render_record(r: &Record) -> String {
    let mut out = String::new();
    match r.priority {
        Some(p) => out.push_str(&format!("  Type:   {}, priority {p}\n", r.kind)),
        None => out.push_str(&format!("  Type:   {}\n", r.kind)),
    }
    out.push_str(&format!("  Name:   {}\n", r.name));
    out.push_str(&format!("  Host:   {}\n", r.host));
    out.push_str(&format!("  Value:  {}\n", r.value));
    if r.kind == "TXT" && r.value.len() > 255 {
        out.push_str("  As strings of at most 255 characters (zone files):\n");
        for part in split_txt(&r.value) {
            out.push_str(&format!("    \"{part}\"\n"));
        }
    }
    if let Some(note) = &r.note {
        out.push_str(&wrap(note, "  Note:   "));
    }
    out
}

/// Wraps prose, but prints a record value (a line starting with a tag such as `v=` or `k=`) on one
/// line, so it can be copied as is.
fn wrap_prose(text: &str, lead: &str) -> String {
    let is_record = text
        .split_once('=')
        .is_some_and(|(tag, _)| !tag.is_empty() && tag.len() <= 3 && tag.bytes().all(|b| b.is_ascii_alphabetic()));
    if is_record {
        format!("{lead}{text}\n")
    } else {
        wrap(text, lead)
    }
}

/// Wraps `text` at 100 columns, the first line after `lead`, the others aligned under it.
fn wrap(text: &str, lead: &str) -> String {
    crate::text::wrap(text, lead, &" ".repeat(lead.chars().count()), 100)
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

/// Why a lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The name does not exist (NXDOMAIN) or has no record of that type (NODATA).
    NoRecord,
    /// The question could not be answered: timeout, SERVFAIL, refused, unreachable server.
    Failure(String),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NoRecord => f.write_str("no such record"),
            LookupError::Failure(e) => write!(f, "lookup failed: {e}"),
        }
    }
}

/// DNS questions `doctor` asks. Names are given without the final dot.
pub trait Resolver {
    /// Every TXT record at `name`, each one's character-strings joined without separator.
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<String>, LookupError>> + Send;
    /// Every MX record at `name`: (preference, exchange without the final dot, lowercase).
    fn mx(&self, name: &str) -> impl Future<Output = Result<Vec<(u16, String)>, LookupError>> + Send;
    /// The CNAME target of `name`, without the final dot, lowercase.
    fn cname(&self, name: &str) -> impl Future<Output = Result<String, LookupError>> + Send;
}

/// A resolver of the system (`/etc/resolv.conf`) or one given server.
pub struct SystemResolver {
    inner: mail_auth::hickory_resolver::TokioResolver,
}

impl SystemResolver {
    /// The name servers of the system configuration (`/etc/resolv.conf`).
    pub fn system() -> Result<SystemResolver, String> {
        let builder = mail_auth::hickory_resolver::TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system DNS configuration (/etc/resolv.conf): {e}"))?;
        let inner = builder.build().map_err(|e| format!("cannot start the DNS resolver: {e}"))?;
        Ok(SystemResolver { inner })
    }

    /// One name server, over UDP (and TCP for truncated answers) on the given port, e.g.
    /// `127.0.0.1:5353` for a local resolver or a test server.
    pub fn at(addr: SocketAddr) -> Result<SystemResolver, String> {
        use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
        use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;

        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
        for connection in &mut server.connections {
            connection.port = addr.port();
        }
        let config = ResolverConfig::from_name_servers(vec![server]);
        let mut options = ResolverOpts::default();
        // One server answers everything: fail fast instead of retrying for
        // long (`attempts` counts retries after the first try).
        options.timeout = std::time::Duration::from_secs(3);
        options.attempts = 0;
        let inner =
            mail_auth::hickory_resolver::TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| format!("cannot start the DNS resolver for {addr}: {e}"))?;
        Ok(SystemResolver { inner })
    }

    async fn lookup(
        &self,
        name: &str,
        kind: mail_auth::hickory_resolver::proto::rr::RecordType,
    ) -> Result<mail_auth::hickory_resolver::lookup::Lookup, LookupError> {
        // The final dot keeps the resolver from trying the search domains of resolv.conf.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        self.inner.lookup(fqdn.as_str(), kind).await.map_err(|e| {
            if e.is_no_records_found() {
                LookupError::NoRecord
            } else {
                LookupError::Failure(e.to_string())
            }
        })
    }
}

/// A domain name as `doctor` compares them: lowercase, no final dot.
fn plain_name(name: &mail_auth::hickory_resolver::proto::rr::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl Resolver for SystemResolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
        let lookup = self.lookup(name, RecordType::TXT).await?;
        let records: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                // A record longer than 255 octets arrives as several character-strings: one value.
                RData::TXT(txt) => Some(String::from_utf8_lossy(&txt.txt_data.concat()).into_owned()),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Err(LookupError::NoRecord);
        }
        Ok(records)
    }

    async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, LookupError> {
        use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
        let lookup = self.lookup(name, RecordType::MX).await?;
        let records: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, plain_name(&mx.exchange))),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Err(LookupError::NoRecord);
        }
        Ok(records)
    }

    async fn cname(&self, name: &str) -> Result<String, LookupError> {
        use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
        let lookup = self.lookup(name, RecordType::CNAME).await?;
        lookup
            .answers()
            .iter()
            .find_map(|r| match &r.data {
                RData::CNAME(target) => Some(plain_name(&target.0)),
                _ => None,
            })
            .ok_or(LookupError::NoRecord)
    }
}

// ---------------------------------------------------------------------------------------------
// `mailferry doctor`
// ---------------------------------------------------------------------------------------------

/// The verdict on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. "SPF at example.com".
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The exact change to make.
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), status, detail: detail.into(), fix: None }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// What `doctor` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub domain: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// No check failed (warnings allowed); the command exits 1 otherwise.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// Checks with the given status.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The first check whose name contains `name`, for tests and callers.
    pub fn find(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name.contains(name))
    }

    /// What `mailferry doctor` prints.
    pub fn render(&self) -> String {
        let mut out = format!("DNS check of {}\n\n", self.domain);
        for c in &self.checks {
            out.push_str(&format!("{}  {}\n", c.status, c.name));
            for line in c.detail.lines() {
                out.push_str(&wrap_prose(line, "      "));
            }
            if let Some(fix) = &c.fix {
                let mut lead = "      fix: ";
                for line in fix.lines() {
                    out.push_str(&wrap_prose(line, lead));
                    lead = "           ";
                }
            }
        }
        let (pass, warn, fail) = (self.count(Status::Pass), self.count(Status::Warn), self.count(Status::Fail));
        out.push_str(&format!(
            "\n{pass} passed, {warn} warning{}, {fail} failure{}\n",
            if warn == 1 { "" } else { "s" },
            if fail == 1 { "" } else { "s" }
        ));
        out
    }
}

/// Resolves the domain's live records and checks each against what [`plan`] asks for and what
/// receivers require.
pub async fn doctor(args: &DnsArgs, keys: &KeyStore, resolver: &impl Resolver) -> Report {
    let domain = args.domain();
    let mut report = Report { domain: domain.clone(), checks: Vec::new() };
    let apex_mx = resolver.mx(&domain).await;
    check_spf(args, resolver, &apex_mx, &mut report.checks).await;
    check_dkim(args, keys, resolver, &mut report.checks).await;
    check_dmarc(args, resolver, &mut report.checks).await;
    if args.inbound == Some(Inbound::Cloudflare) {
        report.checks.push(check_cloudflare_mx(&domain, &apex_mx));
    }
    check_relay(args, resolver, &mut report.checks).await;
    report
}

// --- SPF ---

/// One term of an SPF record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SpfTerm {
    /// `+`, `-`, `~` or `?` for mechanisms; `=` for modifiers.
    qualifier: char,
    /// Lowercase mechanism or modifier name.
    name: String,
    /// After `:` (mechanisms) or `=` (modifiers).
    arg: Option<String>,
    text: String,
}

/// Whether a TXT record is an SPF record (RFC 7208 §4.5: "v=spf1" alone or followed by a space).
fn is_spf(txt: &str) -> bool {
    let t = txt.trim_start();
    t.get(..6).is_some_and(|v| v.eq_ignore_ascii_case("v=spf1")) && t[6..].chars().next().is_none_or(|c| c == ' ')
}

/// The terms after `v=spf1`.
fn spf_terms(record: &str) -> Vec<SpfTerm> {
    record
        .split_whitespace()
        .skip(1)
        .map(|text| {
            if let Some((name, value)) = text.split_once('=') {
                if !name.is_empty() && !name.contains(':') && !name.contains('/') {
                    return SpfTerm {
                        qualifier: '=',
                        name: name.to_ascii_lowercase(),
                        arg: Some(value.to_string()),
                        text: text.to_string(),
                    };
                }
            }
            let (qualifier, rest) = match text.chars().next() {
                Some(q @ ('+' | '-' | '~' | '?')) => (q, &text[1..]),
                _ => ('+', text),
            };
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            let arg = rest[end..].strip_prefix(':').map(|a| a.split('/').next().unwrap_or(a).to_string());
            SpfTerm { qualifier, name: rest[..end].to_ascii_lowercase(), arg, text: text.to_string() }
        })
        .collect()
}

/// The includes of a record, lowercase.
fn spf_include_targets(terms: &[SpfTerm]) -> Vec<String> {
    terms
        .iter()
        .filter(|t| t.name == "include")
        .filter_map(|t| t.arg.as_ref().map(|a| a.trim_end_matches('.').to_ascii_lowercase()))
        .collect()
}

/// `record` with `include:<i>` added for each missing include, and an `all` term that fails
/// other senders softly unless it already fails them (`-all`, `~all`). Mechanisms keep their order;
/// the new includes go after them, then `all`, then modifiers. A record whose policy comes from
/// `redirect=` gets no `all`, which would override it.
fn spf_with_includes(record: &str, includes: &[&str]) -> String {
    let terms = spf_terms(record);
    let present = spf_include_targets(&terms);
    let mut out: Vec<String> = vec!["v=spf1".into()];
    out.extend(terms.iter().filter(|t| t.name != "all" && t.qualifier != '=').map(|t| t.text.clone()));
    for i in includes {
        if !present.iter().any(|p| p == i) && !out.iter().any(|t| *t == format!("include:{i}")) {
            out.push(format!("include:{i}"));
        }
    }
    let all = terms.iter().find(|t| t.name == "all");
    let redirect = terms.iter().any(|t| t.qualifier == '=' && t.name == "redirect");
    match all {
        Some(t) if t.qualifier == '-' || t.qualifier == '~' => out.push(t.text.clone()),
        None if redirect => {}
        _ => out.push("~all".into()),
    }
    out.extend(terms.iter().filter(|t| t.qualifier == '=').map(|t| t.text.clone()));
    out.join(" ")
}

/// One record merging several: every term once, the wanted includes, the strictest sensible `all`.
fn spf_merge(records: &[String], includes: &[&str]) -> String {
    let mut terms: Vec<String> = Vec::new();
    let mut hard_fail = false;
    for r in records {
        for t in spf_terms(r) {
            if t.name == "all" {
                hard_fail |= t.qualifier == '-';
            } else if !terms.iter().any(|x| x.eq_ignore_ascii_case(&t.text)) {
                terms.push(t.text);
            }
        }
    }
    let merged = format!("v=spf1 {} {}", terms.join(" "), if hard_fail { "-all" } else { "~all" });
    spf_with_includes(&merged.split_whitespace().collect::<Vec<_>>().join(" "), includes)
}

/// What counting an SPF record's lookups found.
#[derive(Debug, Default)]
struct SpfCount {
    lookups: u32,
    /// Problems with included records, worst first after sorting.
    problems: Vec<(Status, String)>,
}

/// Counts the DNS lookups evaluating `record` at `domain` costs, following `include:` and
/// `redirect=` through the records that resolve. Loops and over-deep chains are reported, not
/// followed.
async fn count_spf_lookups(resolver: &impl Resolver, domain: &str, record: &str) -> SpfCount {
    let mut count = SpfCount::default();
    // Depth-first, each entry carrying the chain that led to it, to recognise loops.
    let mut stack: Vec<(String, Option<String>, Vec<String>)> =
        vec![(domain.to_string(), Some(record.to_string()), vec![domain.to_string()])];
    let mut fetches = 0;
    while let Some((name, record, chain)) = stack.pop() {
        let record = match record {
            Some(r) => r,
            None => {
                fetches += 1;
                if fetches > SPF_MAX_FETCHES {
                    count.problems.push((
                        Status::Warn,
                        format!("stopped counting after {SPF_MAX_FETCHES} included records; the total is higher"),
                    ));
                    break;
                }
                match resolver.txt(&name).await {
                    Ok(txts) => {
                        let spf: Vec<&String> = txts.iter().filter(|t| is_spf(t)).collect();
                        match spf.len() {
                            1 => spf[0].clone(),
                            0 => {
                                count.problems.push((
                                    Status::Fail,
                                    format!(
                                        "include:{name} has no SPF record: receivers treat that as a permanent error \
                                         (permerror) and SPF fails for every message"
                                    ),
                                ));
                                continue;
                            }
                            n => {
                                count.problems.push((
                                    Status::Fail,
                                    format!("{name} (included) publishes {n} SPF records: receivers return permerror"),
                                ));
                                continue;
                            }
                        }
                    }
                    Err(LookupError::NoRecord) => {
                        count.problems.push((
                            Status::Fail,
                            format!(
                                "include:{name} does not exist or has no TXT record: receivers treat that as a \
                                 permanent error (permerror) and SPF fails for every message"
                            ),
                        ));
                        continue;
                    }
                    Err(LookupError::Failure(e)) => {
                        count.problems.push((
                            Status::Warn,
                            format!("could not resolve include:{name} ({e}); its own lookups are not counted"),
                        ));
                        continue;
                    }
                }
            }
        };
        let terms = spf_terms(&record);
        let has_all = terms.iter().any(|t| t.name == "all");
        for term in &terms {
            let follow = match (term.qualifier, term.name.as_str()) {
                // Ignored, so not looked up, when `all` is present (RFC 7208 §6.1).
                ('=', "redirect") if has_all => continue,
                ('=', "redirect") => term.arg.clone(),
                ('=', _) => continue,
                (_, "include") => term.arg.clone(),
                (_, "a" | "mx" | "exists") => {
                    count.lookups += 1;
                    continue;
                }
                (_, "ptr") => {
                    count.lookups += 1;
                    count.problems.push((
                        Status::Warn,
                        format!("{name} uses ptr, which RFC 7208 §5.5 says not to use: remove it"),
                    ));
                    continue;
                }
                _ => continue,
            };
            count.lookups += 1;
            let Some(target) = follow else { continue };
            let target = target.trim_end_matches('.').to_ascii_lowercase();
            if target.contains('%') {
                count.problems.push((
                    Status::Warn,
                    format!("{} uses a macro: its lookups depend on each message and are not counted", term.text),
                ));
            } else if chain.contains(&target) {
                let mut path = chain.clone();
                path.push(target.clone());
                count.problems.push((
                    Status::Fail,
                    format!(
                        "include loop: {}: receivers stop at {SPF_LOOKUP_LIMIT} lookups and return permerror",
                        path.join(" -> ")
                    ),
                ));
            } else if chain.len() > SPF_MAX_DEPTH {
                count.problems.push((
                    Status::Warn,
                    format!("includes nest deeper than {SPF_MAX_DEPTH} levels below {domain}; not followed further"),
                ));
            } else {
                let mut next = chain.clone();
                next.push(target.clone());
                stack.push((target, None, next));
            }
        }
    }
    count
}

/// SPF at the domain itself.
async fn check_spf(
    args: &DnsArgs,
    resolver: &impl Resolver,
    apex_mx: &Result<Vec<(u16, String)>, LookupError>,
    checks: &mut Vec<Check>,
) {
    let domain = args.domain();
    let name = format!("SPF at {domain}");
    let wanted = spf_includes(args).remove(&domain).unwrap_or_default();
    let planned = apex_spf(args);
    let mx_at_cloudflare = matches!(apex_mx, Ok(mx) if mx.iter().any(|(_, h)| h.ends_with(".mx.cloudflare.net")));

    let txts = match resolver.txt(&domain).await {
        Ok(t) => t,
        Err(LookupError::NoRecord) => Vec::new(),
        Err(LookupError::Failure(e)) => {
            checks.push(
                Check::new(Status::Fail, name, format!("could not resolve the TXT records of {domain}: {e}"))
                    .fix("check the name server (--dns-server) or the network, then run doctor again"),
            );
            return;
        }
    };
    let spf: Vec<String> = txts.into_iter().filter(|t| is_spf(t)).collect();
    let record = match spf.len() {
        0 => {
            let check = match &planned {
                Some(value) => {
                    Check::new(Status::Fail, name, "no SPF record: receivers cannot tell who may send as the domain")
                        .fix(format!("publish one TXT record at {domain}:\n{value}"))
                }
                None => Check::new(
                    Status::Warn,
                    name,
                    format!(
                        "no SPF record; {} checks SPF on its sending subdomain, so this only matters if something \
                         else sends with {domain} as envelope sender",
                        args.relay.label()
                    ),
                ),
            };
            checks.push(check);
            return;
        }
        1 => spf[0].clone(),
        n => {
            checks.push(
                Check::new(
                    Status::Fail,
                    name,
                    format!(
                        "{n} SPF records: a domain must have exactly one, and with several every message fails SPF \
                         (permerror):\n{}",
                        spf.join("\n")
                    ),
                )
                .fix(format!("delete them and publish this one merged record:\n{}", spf_merge(&spf, &wanted))),
            );
            return;
        }
    };
    checks.push(Check::new(Status::Pass, name, format!("exactly one SPF record:\n{record}")));

    // One corrected record serves every fix below, so applying any of them fixes them all.
    let terms = spf_terms(&record);
    let present = spf_include_targets(&terms);
    let cloudflare = args.inbound == Some(Inbound::Cloudflare) || mx_at_cloudflare;
    let mut all_wanted = wanted.clone();
    if cloudflare && !all_wanted.contains(&CLOUDFLARE_SPF) {
        all_wanted.insert(0, CLOUDFLARE_SPF);
    }
    let replace = format!("replace the record with:\n{}", spf_with_includes(&record, &all_wanted));

    // The relay's include.
    if let Some(include) = args.relay.apex_include() {
        let name = format!("SPF include for {}", args.relay.label());
        if present.iter().any(|p| p == include) {
            checks.push(Check::new(Status::Pass, name, format!("include:{include} is present")));
        } else {
            checks.push(Check::new(Status::Fail, name, format!("include:{include} is missing")).fix(&replace));
        }
    }
    // Cloudflare's include, when Cloudflare receives the domain's mail.
    if cloudflare {
        let name = "SPF include for Cloudflare Email Routing";
        if present.iter().any(|p| p == CLOUDFLARE_SPF) {
            checks.push(Check::new(Status::Pass, name, format!("include:{CLOUDFLARE_SPF} is present")));
        } else {
            checks.push(
                Check::new(
                    Status::Warn,
                    name,
                    format!(
                        "the MX records point at Cloudflare but include:{CLOUDFLARE_SPF} is missing: Cloudflare's \
                         forwarding of mail sent from the domain may fail SPF"
                    ),
                )
                .fix(&replace),
            );
        }
    }

    // The policy for everyone else.
    let all = terms.iter().find(|t| t.name == "all");
    let redirect = terms.iter().find(|t| t.qualifier == '=' && t.name == "redirect");
    let policy = "SPF policy (all)";
    match (all.map(|t| t.qualifier), redirect) {
        (Some('+'), _) => checks.push(
            Check::new(
                Status::Fail,
                policy,
                format!("{} lets every server on the internet pass SPF as {domain}", all.map_or("", |t| &t.text)),
            )
            .fix(&replace),
        ),
        (Some('?'), _) => checks.push(
            Check::new(Status::Warn, policy, "?all (neutral): mail from other servers is neither passed nor failed")
                .fix(&replace),
        ),
        (Some(q), _) => checks.push(Check::new(Status::Pass, policy, format!("{q}all"))),
        (None, Some(r)) => {
            checks.push(Check::new(Status::Pass, policy, format!("no all term: the policy comes from {}", r.text)))
        }
        (None, None) => checks.push(
            Check::new(Status::Warn, policy, "no all term: mail from other servers gets a neutral result")
                .fix(&replace),
        ),
    }

    // The lookup limit.
    let mut count = count_spf_lookups(resolver, &domain, &record).await;
    let name = "SPF DNS lookups";
    if count.lookups > SPF_LOOKUP_LIMIT {
        checks.push(
            Check::new(
                Status::Fail,
                name,
                format!(
                    "{} lookups, over the limit of {SPF_LOOKUP_LIMIT}: receivers return permerror and SPF fails for \
                     every message",
                    count.lookups
                ),
            )
            .fix(
                "remove include:, a, mx or ptr terms that do not send your mail (a and mx are rarely needed), or \
                 move a sender to its own subdomain",
            ),
        );
    } else {
        checks.push(Check::new(
            Status::Pass,
            name,
            format!("{} of {SPF_LOOKUP_LIMIT}, nested includes counted", count.lookups),
        ));
    }
    count.problems.sort_by_key(|(s, _)| std::cmp::Reverse(*s as u8));
    for (status, problem) in count.problems {
        let check = Check::new(status, "SPF included records", problem);
        checks.push(if status == Status::Fail {
            check.fix("remove or correct the include: term named above")
        } else {
            check
        });
    }
}

// --- DKIM ---

/// `tag=value` pairs of a DKIM or DMARC record, names lowercase, values trimmed.
fn tag_list(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|part| {
            let (name, value) = part.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Decodes base64 with or without padding, ignoring whitespace (RFC 6376 §3.6.1 allows folding).
fn decode_base64(value: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(&compact).or_else(|_| STANDARD_NO_PAD.decode(&compact)).ok()
}

/// Whether a published RSA `p=` is the same key as the local SubjectPublicKeyInfo, accepting the
/// SubjectPublicKeyInfo form and the bare PKCS#1 RSAPublicKey form some tools publish.
fn rsa_keys_match(published: &[u8], local_spki: &[u8]) -> Result<bool, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let local = rsa::RsaPublicKey::from_public_key_der(local_spki).map_err(|e| format!("local key: {e}"))?;
    let theirs = rsa::RsaPublicKey::from_public_key_der(published)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(published))
        .map_err(|_| "p= is not an RSA public key (neither SubjectPublicKeyInfo nor PKCS#1)".to_string())?;
    Ok(local == theirs)
}

async fn check_dkim(args: &DnsArgs, keys: &KeyStore, resolver: &impl Resolver, checks: &mut Vec<Check>) {
    let domain = args.domain();
    let local = keys.for_domain(&domain);
    if local.is_empty() {
        checks.push(
            Check::new(
                Status::Fail,
                format!("DKIM keys for {domain}"),
                "no local key: mailferry cannot sign mail from this domain",
            )
            .fix(format!(
                "mailferry dkim keygen --domain {domain}   (and for dual signing: mailferry dkim keygen --domain \
                     {domain} --algorithm ed25519), then publish the record it prints"
            )),
        );
        return;
    }
    for info in local {
        checks.push(check_dkim_key(info, resolver).await);
    }
}

/// The published record of one local key.
async fn check_dkim_key(info: &KeyInfo, resolver: &impl Resolver) -> Check {
    let record_name = info.dns_name();
    let name = format!("DKIM {record_name} ({})", info.algorithm);
    let publish = format!("publish this TXT record at {record_name}:\n{}", info.txt_value());
    let txts = match resolver.txt(&record_name).await {
        Ok(t) => t,
        Err(LookupError::NoRecord) => {
            return Check::new(
                Status::Fail,
                name,
                format!("no record: receivers cannot verify signatures by {}", info.path.display()),
            )
            .fix(publish);
        }
        Err(LookupError::Failure(e)) => {
            return Check::new(Status::Fail, name, format!("could not resolve {record_name}: {e}"))
                .fix("check the name server (--dns-server) or the network, then run doctor again");
        }
    };
    // Ignore unrelated TXT records (verification tokens...) at the name.
    let candidates: Vec<&String> =
        txts.iter().filter(|t| t.trim_start().starts_with("v=DKIM1") || tag(&tag_list(t), "p").is_some()).collect();
    if candidates.is_empty() {
        return Check::new(Status::Fail, name, format!("the TXT record there is not a DKIM key: {}", txts.join(" | ")))
            .fix(publish);
    }
    let mut findings = Vec::new();
    for txt in &candidates {
        let check = check_dkim_record(info, txt);
        if check.status != Status::Fail {
            let mut check = Check { name: name.clone(), ..check };
            if candidates.len() > 1 {
                check.status = Status::Warn;
                check.detail = format!(
                    "{} DKIM records at this name; one matches, but receivers may pick any: {}",
                    candidates.len(),
                    check.detail
                );
                check.fix = Some(format!("keep only this one:\n{}", info.txt_value()));
            }
            return check;
        }
        findings.push(check);
    }
    let mut check = findings.remove(0);
    check.name = name;
    if candidates.len() > 1 {
        check.detail = format!("{} DKIM records at this name, none matches: {}", candidates.len(), check.detail);
        check.fix = Some(format!("delete them and {publish}"));
    }
    check
}

/// One published DKIM record against the local key.
fn check_dkim_record(info: &KeyInfo, txt: &str) -> Check {
    let publish = format!("publish this TXT record at {}:\n{}", info.dns_name(), info.txt_value());
    let fail = |detail: String| Check::new(Status::Fail, "", detail).fix(publish.clone());
    let tags = tag_list(txt);
    if let Some(v) = tag(&tags, "v") {
        if v != "DKIM1" {
            return fail(format!("v={v}: the version must be DKIM1"));
        }
    }
    let k = tag(&tags, "k").unwrap_or("rsa").to_ascii_lowercase();
    if k != info.algorithm.key_type() {
        return fail(match info.algorithm {
            Algorithm::Ed25519 => format!(
                "k={k}: an Ed25519 key needs k=ed25519 ({}), or receivers read it as RSA",
                if tag(&tags, "k").is_none() { "k= is missing and defaults to rsa" } else { "it says otherwise" }
            ),
            Algorithm::Rsa { .. } => format!("k={k}, but {} is an RSA key", info.path.display()),
        });
    }
    let p = match tag(&tags, "p") {
        None => return fail("no p= tag: the record has no key".into()),
        Some(p) if p.chars().all(char::is_whitespace) => {
            return fail("p= is empty: the key is revoked, and signatures by it fail".into());
        }
        Some(p) => p,
    };
    let Some(published) = decode_base64(p) else {
        return fail("p= is not valid base64 (a character was lost or added when copying?)".into());
    };
    let same = match info.algorithm {
        Algorithm::Ed25519 => Ok(published == info.public_key),
        Algorithm::Rsa { .. } => rsa_keys_match(&published, &info.public_key),
    };
    match same {
        Ok(true) => {}
        Ok(false) => {
            return fail(format!(
                "the published key is not the key in {}: signatures by this server fail verification",
                info.path.display()
            ));
        }
        Err(e) => return fail(e),
    }
    let testing = tag(&tags, "t").is_some_and(|t| t.split(':').any(|f| f.trim().eq_ignore_ascii_case("y")));
    if testing {
        return Check::new(
            Status::Warn,
            "",
            "the key matches, but t=y (testing mode) asks receivers to treat signatures as unsigned mail",
        )
        .fix(format!("remove t=y once tests are done:\n{}", info.txt_value()));
    }
    Check::new(Status::Pass, "", format!("matches {}", info.path.display()))
}

// --- DMARC ---

async fn check_dmarc(args: &DnsArgs, resolver: &impl Resolver, checks: &mut Vec<Check>) {
    let domain = args.domain();
    let record_name = format!("_dmarc.{domain}");
    let name = format!("DMARC at {record_name}");
    let publish = format!("publish a TXT record at {record_name}:\n{}", dmarc_value(args));
    let txts = match resolver.txt(&record_name).await {
        Ok(t) => t,
        Err(LookupError::NoRecord) => {
            checks.push(
                Check::new(
                    Status::Fail,
                    name,
                    "no DMARC record: Gmail and Yahoo require one from bulk senders, and nothing tells receivers to \
                     refuse mail forged as the domain",
                )
                .fix(publish),
            );
            return;
        }
        Err(LookupError::Failure(e)) => {
            checks.push(
                Check::new(Status::Fail, name, format!("could not resolve {record_name}: {e}"))
                    .fix("check the name server (--dns-server) or the network, then run doctor again"),
            );
            return;
        }
    };
    let dmarc: Vec<&String> =
        txts.iter().filter(|t| tag_list(t).first().is_some_and(|(n, v)| n == "v" && v == "DMARC1")).collect();
    let record = match dmarc.len() {
        0 => {
            checks.push(
                Check::new(
                    Status::Fail,
                    name,
                    format!("the record does not start with v=DMARC1, so receivers ignore it: {}", txts.join(" | ")),
                )
                .fix(publish),
            );
            return;
        }
        1 => dmarc[0].clone(),
        n => {
            checks.push(
                Check::new(
                    Status::Fail,
                    name,
                    format!(
                        "{n} DMARC records: receivers then apply none of them:\n{}",
                        dmarc.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
                    ),
                )
                .fix("keep exactly one DMARC record at this name"),
            );
            return;
        }
    };
    let tags = tag_list(&record);
    match tag(&tags, "p").map(|p| p.to_ascii_lowercase()) {
        None => checks.push(
            Check::new(Status::Fail, name, format!("no p= tag, which DMARC requires: {record}"))
                .fix(format!("add p=none right after v=DMARC1:\n{}", dmarc_value(args))),
        ),
        Some(p) if p == "none" => checks.push(Check::new(
            Status::Pass,
            name,
            format!(
                "{record}\nMonitoring only (p=none). Once the aggregate reports show all your mail passing, move to \
                 p=quarantine, then p=reject."
            ),
        )),
        Some(p) if p == "quarantine" || p == "reject" => checks.push(Check::new(Status::Pass, name, record.clone())),
        Some(p) => checks.push(
            Check::new(Status::Fail, name, format!("p={p} is not none, quarantine or reject: {record}"))
                .fix(format!("use p=none to start:\n{}", dmarc_value(args))),
        ),
    }
    if tag(&tags, "rua").is_none() {
        checks.push(
            Check::new(
                Status::Warn,
                "DMARC reports (rua)",
                "no rua=: nobody receives the aggregate reports, so you cannot see who sends as the domain",
            )
            .fix(format!("add rua={} to the record", args.rua())),
        );
    }
}

// --- MX ---

fn check_cloudflare_mx(domain: &str, apex_mx: &Result<Vec<(u16, String)>, LookupError>) -> Check {
    let name = format!("MX at {domain} (Cloudflare Email Routing)");
    let enable = "enable Email Routing for the domain in the Cloudflare dashboard (Email > Email Routing), which adds \
                  route1, route2 and route3.mx.cloudflare.net with their priorities";
    let mx = match apex_mx {
        Ok(mx) => mx,
        Err(LookupError::NoRecord) => {
            return Check::new(Status::Fail, name, "no MX record: mail to the domain bounces").fix(enable);
        }
        Err(LookupError::Failure(e)) => {
            return Check::new(Status::Fail, name, format!("could not resolve the MX records: {e}"))
                .fix("check the name server (--dns-server) or the network, then run doctor again");
        }
    };
    let missing: Vec<&str> =
        CLOUDFLARE_MX.iter().map(|(h, _)| *h).filter(|h| !mx.iter().any(|(_, x)| x == h)).collect();
    let others: Vec<String> =
        mx.iter().filter(|(_, h)| !h.ends_with(".mx.cloudflare.net")).map(|(p, h)| format!("{p} {h}")).collect();
    let found = mx.iter().map(|(p, h)| format!("{p} {h}")).collect::<Vec<_>>().join(", ");
    if !missing.is_empty() {
        return Check::new(Status::Fail, name, format!("missing {}; found: {found}", missing.join(", "))).fix(enable);
    }
    if !others.is_empty() {
        return Check::new(
            Status::Warn,
            name,
            format!("also MX records outside Cloudflare ({}): some mail will bypass Email Routing", others.join(", ")),
        )
        .fix("delete the MX records that do not end in .mx.cloudflare.net");
    }
    Check::new(Status::Pass, name, found)
}

// --- Relay records ---

async fn check_relay(args: &DnsArgs, resolver: &impl Resolver, checks: &mut Vec<Check>) {
    let domain = args.domain();
    let includes = spf_includes(args);
    match args.relay {
        RelayKind::Ses => {
            // The MAIL FROM MX names the region: without it there is nothing exact to compare.
            if let (Some(region), Some(bounce)) = (args.region.as_deref(), args.bounce_domain()) {
                let host = format!("feedback-smtp.{region}.amazonses.com");
                checks.push(
                    check_mx_hosts(resolver, &bounce, &[host.as_str()], "Amazon SES MAIL FROM", Status::Fail).await,
                );
                checks.push(check_spf_at(resolver, &bounce, &includes, "Amazon SES MAIL FROM", Status::Fail).await);
            }
        }
        RelayKind::Resend => {
            let bounce = args.bounce_domain().unwrap_or_else(|| format!("send.{domain}"));
            let host = format!("feedback-smtp.{}.amazonses.com", args.ses_region().unwrap_or(RESEND_DEFAULT_REGION));
            checks.push(check_mx_hosts(resolver, &bounce, &[host.as_str()], "Resend", Status::Fail).await);
            checks.push(check_spf_at(resolver, &bounce, &includes, "Resend", Status::Fail).await);
        }
        RelayKind::Mailgun => {
            let bounce = args.bounce_domain().unwrap_or_else(|| format!("mg.{domain}"));
            checks.push(check_spf_at(resolver, &bounce, &includes, "Mailgun", Status::Fail).await);
            checks.push(
                check_mx_hosts(resolver, &bounce, &["mxa.mailgun.org", "mxb.mailgun.org"], "Mailgun", Status::Warn)
                    .await,
            );
        }
        RelayKind::Postmark => {
            let bounce = args.bounce_domain().unwrap_or_else(|| format!("pm-bounces.{domain}"));
            let name = format!("Postmark Return-Path {bounce}");
            let fix = format!("publish a CNAME record at {bounce} pointing to pm.mtasv.net");
            checks.push(match resolver.cname(&bounce).await {
                Ok(t) if t == "pm.mtasv.net" => Check::new(Status::Pass, name, "CNAME pm.mtasv.net"),
                Ok(t) => Check::new(Status::Fail, name, format!("CNAME {t}, not pm.mtasv.net")).fix(fix),
                Err(LookupError::NoRecord) => Check::new(
                    Status::Warn,
                    name,
                    "no CNAME: Postmark uses its own Return-Path, so SPF does not align with your domain",
                )
                .fix(fix),
                Err(LookupError::Failure(e)) => Check::new(Status::Warn, name, format!("could not resolve: {e}")),
            });
        }
        RelayKind::Sendgrid => {
            for s in ["s1", "s2"] {
                let record = format!("{s}._domainkey.{domain}");
                let name = format!("SendGrid {record}");
                let fix = "copy the CNAME records from SendGrid: Settings > Sender Authentication > your domain";
                checks.push(match resolver.cname(&record).await {
                    Ok(t) if t.ends_with(".sendgrid.net") => Check::new(Status::Pass, name, format!("CNAME {t}")),
                    Ok(t) => Check::new(Status::Fail, name, format!("CNAME {t}, not a sendgrid.net name")).fix(fix),
                    Err(LookupError::NoRecord) => {
                        Check::new(Status::Fail, name, "no CNAME: SendGrid does not consider the domain authenticated")
                            .fix(fix)
                    }
                    Err(LookupError::Failure(e)) => Check::new(Status::Warn, name, format!("could not resolve: {e}")),
                });
            }
        }
        RelayKind::Brevo => {
            let name = format!("Brevo code at {domain}");
            checks.push(match resolver.txt(&domain).await {
                Ok(t) if t.iter().any(|v| v.trim_start().starts_with("brevo-code:")) => {
                    Check::new(Status::Pass, name, "present")
                }
                Ok(_) | Err(LookupError::NoRecord) => {
                    Check::new(Status::Warn, name, "no brevo-code TXT record: Brevo cannot verify the domain")
                        .fix("publish the brevo-code TXT record from Brevo: Senders, Domains & Dedicated IPs > Domains")
                }
                Err(LookupError::Failure(e)) => Check::new(Status::Warn, name, format!("could not resolve: {e}")),
            });
        }
        RelayKind::Smtp => {}
    }
}

/// The MX records at `name` include each of `hosts`.
async fn check_mx_hosts(resolver: &impl Resolver, name: &str, hosts: &[&str], what: &str, absent: Status) -> Check {
    let title = format!("{what} MX at {name}");
    let fix =
        format!("publish at {name}: {}", hosts.iter().map(|h| format!("MX 10 {h}")).collect::<Vec<_>>().join(", "));
    match resolver.mx(name).await {
        Ok(mx) => {
            let missing: Vec<&&str> = hosts.iter().filter(|h| !mx.iter().any(|(_, x)| x == **h)).collect();
            let found = mx.iter().map(|(p, h)| format!("{p} {h}")).collect::<Vec<_>>().join(", ");
            if missing.is_empty() {
                Check::new(Status::Pass, title, found)
            } else {
                Check::new(
                    Status::Fail,
                    title,
                    format!("missing {}; found: {found}", missing.iter().map(|h| **h).collect::<Vec<_>>().join(", ")),
                )
                .fix(fix)
            }
        }
        Err(LookupError::NoRecord) => Check::new(absent, title, "no MX record").fix(fix),
        Err(LookupError::Failure(e)) => Check::new(Status::Warn, title, format!("could not resolve: {e}")),
    }
}

/// The SPF record at a sending subdomain has the includes [`plan`] puts there.
async fn check_spf_at(
    resolver: &impl Resolver,
    name: &str,
    includes: &BTreeMap<String, Vec<&'static str>>,
    what: &str,
    absent: Status,
) -> Check {
    let title = format!("{what} SPF at {name}");
    let wanted = includes.get(name).cloned().unwrap_or_default();
    let publish = format!("publish one TXT record at {name}:\n{}", spf_value(&wanted));
    match resolver.txt(name).await {
        Ok(t) => {
            let spf: Vec<&String> = t.iter().filter(|v| is_spf(v)).collect();
            match spf.as_slice() {
                [] => Check::new(absent, title, "no SPF record").fix(publish),
                [one] => {
                    let present = spf_include_targets(&spf_terms(one));
                    let missing: Vec<&&str> = wanted.iter().filter(|w| !present.iter().any(|p| p == **w)).collect();
                    if missing.is_empty() {
                        Check::new(Status::Pass, title, one.to_string())
                    } else {
                        Check::new(Status::Fail, title, format!("{one}: include:{} is missing", missing[0]))
                            .fix(format!("replace the record with:\n{}", spf_with_includes(one, &wanted)))
                    }
                }
                many => Check::new(Status::Fail, title, format!("{} SPF records: SPF fails (permerror)", many.len()))
                    .fix(format!(
                        "delete them and publish:\n{}",
                        spf_merge(&many.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &wanted)
                    )),
            }
        }
        Err(LookupError::NoRecord) => Check::new(absent, title, "no SPF record").fix(publish),
        Err(LookupError::Failure(e)) => Check::new(Status::Warn, title, format!("could not resolve: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::path::Path;

    use super::*;
    use crate::dkim::keygen::{create, KeyKind};

    /// Answers from tables; a name in `failing` answers every question with a failure.
    #[derive(Default, Clone)]
    struct StaticResolver {
        txt: HashMap<String, Vec<String>>,
        mx: HashMap<String, Vec<(u16, String)>>,
        cname: HashMap<String, String>,
        failing: HashSet<String>,
    }

    impl StaticResolver {
        fn txt(mut self, name: &str, value: &str) -> Self {
            self.txt.entry(name.to_string()).or_default().push(value.to_string());
            self
        }

        fn mx(mut self, name: &str, priority: u16, host: &str) -> Self {
            self.mx.entry(name.to_string()).or_default().push((priority, host.to_string()));
            self
        }

        fn cname(mut self, name: &str, target: &str) -> Self {
            self.cname.insert(name.to_string(), target.to_string());
            self
        }

        fn without_txt(mut self, name: &str) -> Self {
            self.txt.remove(name);
            self
        }

        fn fail(&self, name: &str) -> Option<LookupError> {
            self.failing.contains(name).then(|| LookupError::Failure("SERVFAIL".into()))
        }
    }

    impl Resolver for StaticResolver {
        async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
            if let Some(e) = self.fail(name) {
                return Err(e);
            }
            self.txt.get(name).cloned().ok_or(LookupError::NoRecord)
        }

        async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, LookupError> {
            if let Some(e) = self.fail(name) {
                return Err(e);
            }
            self.mx.get(name).cloned().ok_or(LookupError::NoRecord)
        }

        async fn cname(&self, name: &str) -> Result<String, LookupError> {
            if let Some(e) = self.fail(name) {
                return Err(e);
            }
            self.cname.get(name).cloned().ok_or(LookupError::NoRecord)
        }
    }

    const D: &str = "example.com";

    fn ses_args() -> DnsArgs {
        DnsArgs {
            inbound: Some(Inbound::Cloudflare),
            region: Some("eu-west-1".into()),
            ..DnsArgs::new(D, RelayKind::Ses)
        }
    }

    /// A key store with an RSA key `r` and an Ed25519 key `e` for example.com.
    fn keys(dir: &Path) -> KeyStore {
        create(dir, D, "r", KeyKind::Rsa2048).unwrap();
        create(dir, D, "e", KeyKind::Ed25519).unwrap();
        KeyStore::load(dir).unwrap()
    }

    fn rsa_key(store: &KeyStore) -> KeyInfo {
        store.for_domain(D).into_iter().find(|k| k.selector == "r").unwrap().clone()
    }

    fn ed_key(store: &KeyStore) -> KeyInfo {
        store.for_domain(D).into_iter().find(|k| k.selector == "e").unwrap().clone()
    }

    /// Everything the SES + Cloudflare setup of `dns` asks for, published correctly.
    fn healthy(store: &KeyStore) -> StaticResolver {
        let mut r = StaticResolver::default()
            .txt(D, "v=spf1 include:_spf.mx.cloudflare.net include:amazonses.com ~all")
            .txt(D, "google-site-verification=abc")
            .txt("_spf.mx.cloudflare.net", "v=spf1 ip4:104.30.0.0/19 ~all")
            .txt("amazonses.com", "v=spf1 ip4:199.255.192.0/22 -all")
            .txt("_dmarc.example.com", "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com")
            .mx(D, 13, "route1.mx.cloudflare.net")
            .mx(D, 86, "route2.mx.cloudflare.net")
            .mx(D, 24, "route3.mx.cloudflare.net")
            .mx("mail.example.com", 10, "feedback-smtp.eu-west-1.amazonses.com")
            .txt("mail.example.com", "v=spf1 include:amazonses.com ~all");
        for k in store.for_domain(D) {
            r = r.txt(&k.dns_name(), &k.txt_value());
        }
        r
    }

    async fn run(args: &DnsArgs, store: &KeyStore, r: &StaticResolver) -> Report {
        tokio::time::timeout(std::time::Duration::from_secs(10), doctor(args, store, r)).await.expect("doctor hung")
    }

    fn status_of(report: &Report, name: &str) -> Status {
        report.find(name).unwrap_or_else(|| panic!("no check {name:?} in\n{}", report.render())).status
    }

    // --- arguments ---

    #[test]
    fn relay_names_parse_and_errors_list_the_choices() {
        for r in RelayKind::ALL {
            assert_eq!(r.name().parse::<RelayKind>().unwrap(), r);
        }
        assert_eq!("SES".parse::<RelayKind>().unwrap(), RelayKind::Ses);
        let e = "sendmail".parse::<RelayKind>().unwrap_err();
        assert!(e.contains("ses, sendgrid, resend, mailgun, postmark, brevo, smtp"), "{e}");
        assert_eq!("Cloudflare".parse::<Inbound>().unwrap(), Inbound::Cloudflare);
        assert!("gmail".parse::<Inbound>().unwrap_err().contains("cloudflare"));
    }

    #[test]
    fn arguments_are_validated() {
        assert!(ses_args().validate().is_ok());
        assert!(DnsArgs::new("localhost", RelayKind::Ses).validate().unwrap_err().contains("--domain"));
        let bad_region = DnsArgs { region: Some("Ireland".into()), ..ses_args() };
        assert!(bad_region.validate().unwrap_err().contains("--region"));
        let bad_rua = DnsArgs { dmarc_rua: Some("mailto:nobody".into()), ..ses_args() };
        assert!(bad_rua.validate().unwrap_err().contains("--dmarc-rua"));
        let apex = DnsArgs { mail_from: Some(D.into()), ..ses_args() };
        assert!(apex.validate().unwrap_err().contains("needs a subdomain"));
        let foreign = DnsArgs { mail_from: Some("mail.example.org".into()), ..ses_args() };
        assert!(foreign.validate().unwrap_err().contains("--mail-from"));
        let label = DnsArgs { mail_from: Some("bounce".into()), ..ses_args() };
        assert_eq!(label.bounce_domain().unwrap(), "bounce.example.com");
        let rua = DnsArgs { dmarc_rua: Some("reports@example.com".into()), ..ses_args() };
        assert_eq!(rua.rua(), "mailto:reports@example.com");
    }

    // --- `dns` ---

    #[test]
    fn ses_with_cloudflare_plan() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let args = ses_args();
        let plan = plan(&args, &store);
        let spf: Vec<&Record> = plan.records.iter().filter(|r| r.purpose == "SPF").collect();
        assert_eq!(spf.len(), 1, "one merged SPF record");
        assert_eq!(spf[0].value, "v=spf1 include:_spf.mx.cloudflare.net include:amazonses.com ~all");
        assert_eq!((spf[0].name.as_str(), spf[0].host.as_str()), (D, "@"));
        let mx: Vec<(Option<u16>, &str)> = plan
            .records
            .iter()
            .filter(|r| r.kind == "MX" && r.name == D)
            .map(|r| (r.priority, r.value.as_str()))
            .collect();
        assert_eq!(
            mx,
            vec![
                (Some(13), "route1.mx.cloudflare.net"),
                (Some(86), "route2.mx.cloudflare.net"),
                (Some(24), "route3.mx.cloudflare.net")
            ]
        );
        let dmarc = plan.records.iter().find(|r| r.purpose == "DMARC").unwrap();
        assert_eq!(dmarc.value, "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com");
        assert_eq!(dmarc.host, "_dmarc");
        let mail_from: Vec<&Record> = plan.records.iter().filter(|r| r.name == "mail.example.com").collect();
        assert_eq!(mail_from[0].value, "feedback-smtp.eu-west-1.amazonses.com");
        assert_eq!(mail_from[0].priority, Some(10));
        assert_eq!(mail_from[1].value, "v=spf1 include:amazonses.com ~all");
        assert_eq!(mail_from[1].host, "mail");
        assert_eq!(plan.records.iter().filter(|r| r.key.is_some()).count(), 2);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

        let text = render(&args, &plan);
        for expected in [
            "sending through Amazon SES, receiving with Cloudflare Email Routing",
            "Host:   @",
            "Value:  v=spf1 include:_spf.mx.cloudflare.net include:amazonses.com ~all",
            "Type:   MX, priority 13",
            "r._domainkey.example.com",
            "v=DKIM1; k=ed25519; p=",
            "email-smtp.eu-west-1.amazonaws.com",
            "exclude_headers = [\"Message-ID\", \"Date\"]",
            "not IAM access keys",
            "instead of publishing a second record",
            "p=quarantine",
            "mailferry doctor --domain example.com --relay ses --inbound cloudflare --region eu-west-1",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        let note = spf[0].note.as_deref().unwrap();
        assert!(
            note.contains("about 2 (include:_spf.mx.cloudflare.net 1, include:amazonses.com 1), leaving about 8"),
            "{note}"
        );
    }

    #[test]
    fn no_key_means_keygen_advice() {
        let plan = plan(&DnsArgs::new(D, RelayKind::Sendgrid), &KeyStore::default());
        let w = plan.warnings.join("\n");
        assert!(w.contains("mailferry dkim keygen --domain example.com"), "{w}");
        assert!(w.contains("--algorithm ed25519"), "{w}");
        assert_eq!(plan.records[0].value, "v=spf1 include:sendgrid.net ~all");
        assert!(plan.records.iter().any(|r| r.name == "s1._domainkey.example.com" && r.placeholder));
        assert!(render(&DnsArgs::new(D, RelayKind::Sendgrid), &plan).contains("apikey"));
    }

    #[test]
    fn every_relay_has_a_plan() {
        for relay in RelayKind::ALL {
            let args = DnsArgs::new(D, relay);
            let plan = plan(&args, &KeyStore::default());
            let text = render(&args, &plan);
            assert!(text.contains(relay.label()), "{relay}: {text}");
            assert!(plan.records.iter().any(|r| r.purpose == "DMARC"), "{relay}");
            // Never two SPF records at one name.
            let mut names: Vec<&str> =
                plan.records.iter().filter(|r| is_spf(&r.value)).map(|r| r.name.as_str()).collect();
            let total = names.len();
            names.dedup();
            assert_eq!(names.len(), total, "{relay}: {names:?}");
        }
        // Resend and Mailgun carry SPF on their sending subdomain.
        let resend = plan(&DnsArgs::new(D, RelayKind::Resend), &KeyStore::default());
        assert!(!resend.records.iter().any(|r| r.name == D && is_spf(&r.value)));
        assert!(resend
            .records
            .iter()
            .any(|r| r.name == "send.example.com" && r.value == "feedback-smtp.us-east-1.amazonses.com"));
        let mailgun = plan(
            &DnsArgs { inbound: Some(Inbound::Cloudflare), ..DnsArgs::new(D, RelayKind::Mailgun) },
            &KeyStore::default(),
        );
        assert!(mailgun
            .records
            .iter()
            .any(|r| r.name == "mg.example.com" && r.value == "v=spf1 include:mailgun.org ~all"));
        assert!(mailgun.records.iter().any(|r| r.name == D && r.value == "v=spf1 include:_spf.mx.cloudflare.net ~all"));
        let postmark = plan(&DnsArgs::new(D, RelayKind::Postmark), &KeyStore::default());
        assert!(postmark.records.iter().any(|r| r.name == "pm-bounces.example.com" && r.value == "pm.mtasv.net"));
        let smtp = plan(&DnsArgs::new(D, RelayKind::Smtp), &KeyStore::default());
        assert!(smtp.records[0].placeholder && smtp.records[0].value.contains("<your provider's SPF include>"));
        // Without a region, SES says so.
        let ses = plan(&DnsArgs::new(D, RelayKind::Ses), &KeyStore::default());
        assert!(ses.warnings.iter().any(|w| w.contains("--region")));
    }

    #[test]
    fn lookup_budget_uses_known_costs() {
        let text = lookup_budget(&["mailgun.org", "sendgrid.net"], false);
        assert!(text.contains("about 6 (include:mailgun.org 5, include:sendgrid.net 1), leaving about 4"), "{text}");
        assert!(text.contains("assuming no nested lookups: include:sendgrid.net"), "{text}");
    }

    #[test]
    fn reports_to_another_domain_need_its_consent() {
        let args = DnsArgs { dmarc_rua: Some("mailto:x@reports.example.net".into()), ..ses_args() };
        let plan = plan(&args, &KeyStore::default());
        assert!(plan.warnings.iter().any(|w| w.contains("example.com._report._dmarc.")), "{:?}", plan.warnings);
        assert!(rua_authorization_warning(&ses_args()).is_none());
    }

    // --- SPF ---

    #[tokio::test]
    async fn healthy_domain_passes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let report = run(&ses_args(), &store, &healthy(&store)).await;
        assert!(report.ok(), "{}", report.render());
        assert_eq!(report.count(Status::Warn), 0, "{}", report.render());
        assert_eq!(status_of(&report, "SPF DNS lookups"), Status::Pass);
        assert!(report.find("SPF DNS lookups").unwrap().detail.starts_with("2 of 10"));
        assert!(report.render().contains("0 warnings, 0 failures"), "{}", report.render());
    }

    #[tokio::test]
    async fn spf_absent_fails_with_the_record_to_publish() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let r = healthy(&store).without_txt(D);
        let report = run(&ses_args(), &store, &r).await;
        let c = report.find("SPF at example.com").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.as_ref().unwrap().contains("v=spf1 include:_spf.mx.cloudflare.net include:amazonses.com ~all"));
        assert!(!report.ok());
    }

    #[tokio::test]
    async fn two_spf_records_fail_with_one_merged_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let r = healthy(&store)
            .without_txt(D)
            .txt(D, "v=spf1 include:_spf.mx.cloudflare.net ~all")
            .txt(D, "v=spf1 include:amazonses.com -all");
        let report = run(&ses_args(), &store, &r).await;
        let c = report.find("SPF at example.com").unwrap();
        assert_eq!(c.status, Status::Fail);
        let fix = c.fix.as_ref().unwrap();
        assert!(fix.ends_with("v=spf1 include:_spf.mx.cloudflare.net include:amazonses.com -all"), "{fix}");
        assert_eq!(fix.matches("v=spf1").count(), 1);
    }

    #[tokio::test]
    async fn missing_relay_include_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let r = healthy(&store).without_txt(D).txt(D, "v=spf1 include:_spf.mx.cloudflare.net ~all");
        let report = run(&ses_args(), &store, &r).await;
        let c = report.find("SPF include for Amazon SES").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("replace the record with:\nv=spf1 include:_spf.mx.cloudflare.net include:amazonses.com ~all")
        );
        // With the include, it passes.
        let report = run(&ses_args(), &store, &healthy(&store)).await;
        assert_eq!(status_of(&report, "SPF include for Amazon SES"), Status::Pass);
    }

    #[tokio::test]
    async fn cloudflare_mx_without_its_include_warns() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let r = healthy(&store).without_txt(D).txt(D, "v=spf1 include:amazonses.com ~all");
        // No --inbound: the MX records alone show Cloudflare receives the mail.
        let args = DnsArgs { inbound: None, ..ses_args() };
        let report = run(&args, &store, &r).await;
        let c = report.find("SPF include for Cloudflare").unwrap();
        assert_eq!(c.status, Status::Warn, "{}", report.render());
        assert_eq!(
            c.fix.as_deref(),
            Some("replace the record with:\nv=spf1 include:amazonses.com include:_spf.mx.cloudflare.net ~all")
        );
        assert!(report.ok(), "a warning is not a failure");
        // Without Cloudflare MX records, nothing is said about Cloudflare.
        let mut no_cf = r.clone();
        no_cf.mx.remove(D);
        let report = run(&args, &store, &no_cf).await;
        assert!(report.find("SPF include for Cloudflare").is_none());
    }

    #[tokio::test]
    async fn all_qualifiers() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let base = "v=spf1 include:_spf.mx.cloudflare.net include:amazonses.com";
        for (end, status) in [
            ("~all", Status::Pass),
            ("-all", Status::Pass),
            ("+all", Status::Fail),
            ("all", Status::Fail),
            ("?all", Status::Warn),
            ("", Status::Warn),
        ] {
            let r = healthy(&store).without_txt(D).txt(D, &format!("{base} {end}"));
            let report = run(&ses_args(), &store, &r).await;
            let c = report.find("SPF policy").unwrap();
            assert_eq!(c.status, status, "{end:?}: {}", report.render());
            if status != Status::Pass {
                assert_eq!(c.fix.as_deref(), Some(format!("replace the record with:\n{base} ~all").as_str()));
            }
        }
        // A redirect is ignored (and not looked up) beside an all term.
        let r = healthy(&store).without_txt(D).txt(D, "v=spf1 a redirect=_spf.example.com -all");
        let report = run(&DnsArgs::new(D, RelayKind::Smtp), &store, &r).await;
        assert_eq!(report.find("SPF DNS lookups").unwrap().detail, "1 of 10, nested includes counted");
        // A redirect supplies the policy.
        let r = healthy(&store)
            .without_txt(D)
            .txt(D, "v=spf1 redirect=_spf.example.com")
            .txt("_spf.example.com", "v=spf1 -all");
        let report = run(&DnsArgs::new(D, RelayKind::Smtp), &store, &r).await;
        assert_eq!(status_of(&report, "SPF policy"), Status::Pass);
        assert_eq!(report.find("SPF DNS lookups").unwrap().detail, "1 of 10, nested includes counted");
    }

    #[tokio::test]
    async fn spf_lookups_are_counted_through_nested_includes() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        // 1 (a) + 1 (mx) + include:one (1) -> one has include:two, include:three (2) -> two has a, mx,
        // exists (3) -> three has include:four (1) -> four has ip4 only: 9 in all.
        let nine = healthy(&store)
            .without_txt(D)
            .txt(D, "v=spf1 a mx include:one.test ~all")
            .txt("one.test", "v=spf1 include:two.test include:three.test ip4:192.0.2.1 ~all")
            .txt("two.test", "v=spf1 a mx exists:%{i}.x.test -all")
            .txt("three.test", "v=spf1 include:four.test -all")
            .txt("four.test", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all");
        let args = DnsArgs::new(D, RelayKind::Smtp);
        let report = run(&args, &store, &nine).await;
        assert_eq!(
            report.find("SPF DNS lookups").unwrap().detail,
            "9 of 10, nested includes counted",
            "{}",
            report.render()
        );
        assert_eq!(status_of(&report, "SPF DNS lookups"), Status::Pass);

        // Two more at the top make 11.
        let eleven = nine
            .without_txt(D)
            .txt(D, "v=spf1 a mx include:one.test include:five.test ~all")
            .txt("five.test", "v=spf1 a -all");
        let report = run(&args, &store, &eleven).await;
        let c = report.find("SPF DNS lookups").unwrap();
        assert_eq!(c.status, Status::Fail, "{}", report.render());
        assert!(c.detail.starts_with("11 lookups, over the limit of 10"), "{}", c.detail);
        assert!(c.fix.is_some());
    }

    #[tokio::test]
    async fn spf_include_loop_is_reported_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let r = healthy(&store)
            .without_txt(D)
            .txt(D, "v=spf1 include:loop-a.test ~all")
            .txt("loop-a.test", "v=spf1 include:loop-b.test ~all")
            .txt("loop-b.test", "v=spf1 include:loop-a.test ~all");
        let report = run(&DnsArgs::new(D, RelayKind::Smtp), &store, &r).await;
        let c = report
            .checks
            .iter()
            .find(|c| c.detail.contains("include loop"))
            .unwrap_or_else(|| panic!("{}", report.render()));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("example.com -> loop-a.test -> loop-b.test -> loop-a.test"), "{}", c.detail);
        assert!(!report.ok());
        // A domain including itself.
        let r = healthy(&store).without_txt(D).txt(D, "v=spf1 include:example.com ~all");
        let report = run(&DnsArgs::new(D, RelayKind::Smtp), &store, &r).await;
        assert!(report.checks.iter().any(|c| c.detail.contains("include loop: example.com -> example.com")));
    }

    #[tokio::test]
    async fn broken_includes_fail_or_warn() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let mut r =
            healthy(&store).without_txt(D).txt(D, "v=spf1 include:gone.test include:down.test include:plain.test ~all");
        r = r.txt("plain.test", "some other text");
        r.failing.insert("down.test".into());
        let report = run(&DnsArgs::new(D, RelayKind::Smtp), &store, &r).await;
        let find = |s: &str| {
            report.checks.iter().find(|c| c.detail.contains(s)).unwrap_or_else(|| panic!("{s}: {}", report.render()))
        };
        assert_eq!(find("include:gone.test does not exist").status, Status::Fail);
        assert_eq!(find("include:plain.test has no SPF record").status, Status::Fail);
        assert_eq!(find("could not resolve include:down.test").status, Status::Warn);
        assert_eq!(report.find("SPF DNS lookups").unwrap().detail, "3 of 10, nested includes counted");
    }

    #[test]
    fn spf_parsing() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("v=DMARC1; p=none"));
        let terms =
            spf_terms("v=spf1 -ip4:192.0.2.0/24 ~include:x.test mx/24 a:mail.test/24 redirect=r.test exp=e.test");
        let names: Vec<(char, &str, Option<&str>)> =
            terms.iter().map(|t| (t.qualifier, t.name.as_str(), t.arg.as_deref())).collect();
        assert_eq!(
            names,
            vec![
                ('-', "ip4", Some("192.0.2.0")),
                ('~', "include", Some("x.test")),
                ('+', "mx", None),
                ('+', "a", Some("mail.test")),
                ('=', "redirect", Some("r.test")),
                ('=', "exp", Some("e.test")),
            ]
        );
        assert_eq!(
            spf_with_includes("v=spf1 mx -all", &["a.test", "b.test"]),
            "v=spf1 mx include:a.test include:b.test -all"
        );
        assert_eq!(spf_with_includes("v=spf1 include:a.test ?all", &["a.test"]), "v=spf1 include:a.test ~all");
        assert_eq!(
            spf_with_includes("v=spf1 redirect=r.test a", &["b.test"]),
            "v=spf1 a include:b.test redirect=r.test"
        );
        assert_eq!(spf_with_includes("v=spf1 +all", &[]), "v=spf1 ~all");
    }

    // --- DKIM ---

    /// The SubjectPublicKeyInfo of an RSA key re-encoded as a bare PKCS#1 RSAPublicKey.
    fn pkcs1_form(spki: &[u8]) -> String {
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::DecodePublicKey;
        let key = rsa::RsaPublicKey::from_public_key_der(spki).unwrap();
        base64::engine::general_purpose::STANDARD.encode(key.to_pkcs1_der().unwrap().as_bytes())
    }

    async fn dkim_check(store: &KeyStore, key: &KeyInfo, published: Option<&str>) -> Check {
        let mut r = healthy(store);
        r.txt.remove(&key.dns_name());
        if let Some(p) = published {
            r = r.txt(&key.dns_name(), p);
        }
        let report = run(&ses_args(), store, &r).await;
        report.find(&format!("DKIM {}", key.dns_name())).unwrap_or_else(|| panic!("{}", report.render())).clone()
    }

    #[tokio::test]
    async fn dkim_records_are_compared_with_the_local_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let rsa = rsa_key(&store);
        let ed = ed_key(&store);
        let p = base64::engine::general_purpose::STANDARD.encode(&rsa.public_key);

        // The exact record, and the same key as PKCS#1, with folding whitespace and no v=.
        assert_eq!(dkim_check(&store, &rsa, Some(&rsa.txt_value())).await.status, Status::Pass);
        let pkcs1 = pkcs1_form(&rsa.public_key);
        let folded = format!("k=rsa; p={} {}\t{}", &pkcs1[..100], &pkcs1[100..200], &pkcs1[200..]);
        let c = dkim_check(&store, &rsa, Some(&folded)).await;
        assert_eq!(c.status, Status::Pass, "{c:?}");

        // Another key.
        let other_dir = tempfile::tempdir().unwrap();
        let other = create(other_dir.path(), D, "r", KeyKind::Rsa2048).unwrap();
        let c = dkim_check(&store, &rsa, Some(&other.txt_value())).await;
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains(&format!("not the key in {}", rsa.path.display())), "{}", c.detail);
        assert_eq!(
            c.fix.as_deref(),
            Some(format!("publish this TXT record at r._domainkey.example.com:\n{}", rsa.txt_value()).as_str())
        );

        // Absent, revoked, broken, testing.
        let c = dkim_check(&store, &rsa, None).await;
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.as_ref().unwrap().contains(&rsa.txt_value()));
        let c = dkim_check(&store, &rsa, Some("v=DKIM1; k=rsa; p=")).await;
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("revoked"), "{}", c.detail);
        let c = dkim_check(&store, &rsa, Some(&format!("v=DKIM1; k=rsa; p={}", &p[..50]))).await;
        assert_eq!(c.status, Status::Fail);
        let c = dkim_check(&store, &rsa, Some(&format!("v=DKIM1; k=rsa; t=y; p={p}"))).await;
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("t=y"), "{}", c.detail);
        let c = dkim_check(&store, &rsa, Some(&format!("v=DKIM1; k=ed25519; p={p}"))).await;
        assert_eq!(c.status, Status::Fail);

        // Ed25519 needs k=ed25519.
        let ed_p = base64::engine::general_purpose::STANDARD.encode(&ed.public_key);
        assert_eq!(dkim_check(&store, &ed, Some(&ed.txt_value())).await.status, Status::Pass);
        let c = dkim_check(&store, &ed, Some(&format!("v=DKIM1; p={ed_p}"))).await;
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("k=ed25519"), "{}", c.detail);

        // Two records, one right: a warning.
        let mut r = healthy(&store).txt(&rsa.dns_name(), &other.txt_value());
        r.txt.get_mut(&rsa.dns_name()).unwrap().reverse();
        let report = run(&ses_args(), &store, &r).await;
        assert_eq!(status_of(&report, "DKIM r._domainkey"), Status::Warn);
    }

    #[tokio::test]
    async fn no_local_key_fails_with_the_keygen_command() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let report = run(&ses_args(), &KeyStore::default(), &healthy(&store)).await;
        let c = report.find("DKIM keys for example.com").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.as_ref().unwrap().starts_with("mailferry dkim keygen --domain example.com"));
    }

    // --- DMARC ---

    async fn dmarc_report(records: &[&str]) -> Report {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let mut r = healthy(&store).without_txt("_dmarc.example.com");
        for rec in records {
            r = r.txt("_dmarc.example.com", rec);
        }
        run(&ses_args(), &store, &r).await
    }

    #[tokio::test]
    async fn dmarc_rules() {
        let report = dmarc_report(&[]).await;
        let c = report.find("DMARC at").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("publish a TXT record at _dmarc.example.com:\nv=DMARC1; p=none; rua=mailto:dmarc-reports@example.com")
        );

        let report = dmarc_report(&["p=none; v=DMARC1"]).await;
        assert_eq!(status_of(&report, "DMARC at"), Status::Fail);
        assert!(report.find("DMARC at").unwrap().detail.contains("does not start with v=DMARC1"));

        let report = dmarc_report(&["v=DMARC1; p=none; rua=mailto:d@example.com"]).await;
        let c = report.find("DMARC at").unwrap();
        assert_eq!(c.status, Status::Pass);
        assert!(c.detail.contains("p=quarantine"), "p=none gets a note: {}", c.detail);
        assert!(report.find("DMARC reports").is_none());

        let report = dmarc_report(&["v=DMARC1; p=reject"]).await;
        assert_eq!(status_of(&report, "DMARC at"), Status::Pass);
        let c = report.find("DMARC reports (rua)").unwrap();
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.fix.as_deref(), Some("add rua=mailto:dmarc-reports@example.com to the record"));

        let report = dmarc_report(&["v=DMARC1; p=none", "v=DMARC1; p=reject"]).await;
        assert_eq!(status_of(&report, "DMARC at"), Status::Fail);
        assert!(report.find("DMARC at").unwrap().detail.starts_with("2 DMARC records"));

        let report = dmarc_report(&["v=DMARC1; rua=mailto:d@example.com"]).await;
        assert_eq!(status_of(&report, "DMARC at"), Status::Fail);
    }

    // --- MX and relay records ---

    #[tokio::test]
    async fn cloudflare_mx_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let mut r = healthy(&store);
        r.mx.get_mut(D).unwrap().retain(|(_, h)| h != "route2.mx.cloudflare.net");
        let report = run(&ses_args(), &store, &r).await;
        let c = report.find("MX at example.com").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.starts_with("missing route2.mx.cloudflare.net"), "{}", c.detail);

        let r = healthy(&store).mx(D, 5, "mx.old-host.test");
        let report = run(&ses_args(), &store, &r).await;
        assert_eq!(status_of(&report, "MX at example.com"), Status::Warn);

        let mut r = healthy(&store);
        r.mx.remove(D);
        let report = run(&ses_args(), &store, &r).await;
        assert_eq!(status_of(&report, "MX at example.com"), Status::Fail);
    }

    #[tokio::test]
    async fn relay_subdomains_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());

        // SES custom MAIL FROM, with the wrong region published.
        let mut r = healthy(&store);
        r.mx.insert("mail.example.com".into(), vec![(10, "feedback-smtp.us-east-1.amazonses.com".into())]);
        let report = run(&ses_args(), &store, &r).await;
        let c = report.find("Amazon SES MAIL FROM MX").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.as_ref().unwrap().contains("feedback-smtp.eu-west-1.amazonses.com"));

        // Resend: send.example.com.
        let args = DnsArgs::new(D, RelayKind::Resend);
        let base = healthy(&store).without_txt(D).txt(D, "v=spf1 ~all");
        let report = run(&args, &store, &base).await;
        assert_eq!(status_of(&report, "Resend MX at send.example.com"), Status::Fail);
        assert_eq!(status_of(&report, "Resend SPF at send.example.com"), Status::Fail);
        let good = base
            .clone()
            .mx("send.example.com", 10, "feedback-smtp.us-east-1.amazonses.com")
            .txt("send.example.com", "v=spf1 include:amazonses.com ~all");
        let report = run(&args, &store, &good).await;
        assert_eq!(status_of(&report, "Resend MX at send.example.com"), Status::Pass);
        assert_eq!(status_of(&report, "Resend SPF at send.example.com"), Status::Pass);

        // Postmark Return-Path.
        let args = DnsArgs::new(D, RelayKind::Postmark);
        let base = healthy(&store)
            .without_txt(D)
            .txt(D, "v=spf1 include:spf.mtasv.net ~all")
            .txt("spf.mtasv.net", "v=spf1 ip4:50.31.156.96/27 ~all");
        let report = run(&args, &store, &base).await;
        assert_eq!(status_of(&report, "Postmark Return-Path"), Status::Warn);
        let report = run(&args, &store, &base.clone().cname("pm-bounces.example.com", "pm.mtasv.net")).await;
        assert_eq!(status_of(&report, "Postmark Return-Path"), Status::Pass);
        assert!(report.ok(), "{}", report.render());

        // SendGrid DKIM CNAMEs.
        let args = DnsArgs::new(D, RelayKind::Sendgrid);
        let base = healthy(&store)
            .without_txt(D)
            .txt(D, "v=spf1 include:sendgrid.net ~all")
            .txt("sendgrid.net", "v=spf1 ip4:167.89.0.0/17 ~all");
        let report = run(&args, &store, &base).await;
        assert_eq!(status_of(&report, "SendGrid s1._domainkey"), Status::Fail);
        let good = base
            .cname("s1._domainkey.example.com", "s1.domainkey.u1.wl1.sendgrid.net")
            .cname("s2._domainkey.example.com", "s2.domainkey.u1.wl1.sendgrid.net");
        let report = run(&args, &store, &good).await;
        assert!(report.ok(), "{}", report.render());
    }

    #[tokio::test]
    async fn failures_are_not_mistaken_for_absence() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let mut r = healthy(&store);
        r.failing.insert(D.into());
        let report = run(&ses_args(), &store, &r).await;
        let c = report.find("SPF at example.com").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("could not resolve"), "{}", c.detail);
        assert!(c.fix.as_ref().unwrap().contains("--dns-server"));
    }

    #[tokio::test]
    async fn report_renders_status_detail_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let r = healthy(&store).without_txt("_dmarc.example.com");
        let report = run(&ses_args(), &store, &r).await;
        let text = report.render();
        assert!(text.starts_with("DNS check of example.com\n"), "{text}");
        assert!(text.contains("FAIL  DMARC at _dmarc.example.com\n"), "{text}");
        assert!(
            text.contains(
                "      fix: publish a TXT record at _dmarc.example.com:\n           v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com\n"
            ),
            "{text}"
        );
        assert!(text.contains("PASS  SPF at example.com\n"), "{text}");
        assert!(text.trim_end().ends_with("0 warnings, 1 failure"), "{text}");
    }

    // --- SystemResolver against a real server ---

    /// A tiny authoritative server on 127.0.0.1 (UDP, ephemeral port) answering from `zone`; a
    /// name not in the zone is NXDOMAIN, a known name without the asked type is NODATA.
    async fn serve(
        zone: Vec<(&'static str, mail_auth::hickory_resolver::proto::rr::RData)>,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        use mail_auth::hickory_resolver::proto::op::{Message, ResponseCode};
        use mail_auth::hickory_resolver::proto::rr::Record as DnsRecord;

        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
                let Ok(request) = Message::from_vec(&buf[..n]) else { continue };
                let mut response = Message::response(request.metadata.id, request.metadata.op_code);
                response.metadata.authoritative = true;
                response.metadata.recursion_desired = request.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                for query in &request.queries {
                    response.add_query(query.clone());
                    let asked = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
                    let at_name: Vec<_> = zone.iter().filter(|(name, _)| *name == asked).collect();
                    if at_name.is_empty() {
                        response.metadata.response_code = ResponseCode::NXDomain;
                    }
                    for (_, data) in at_name.into_iter().filter(|(_, d)| d.record_type() == query.query_type()) {
                        response.add_answer(DnsRecord::from_rdata(query.name().clone(), 60, data.clone()));
                    }
                }
                let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn system_resolver_against_a_local_server() {
        use mail_auth::hickory_resolver::proto::rr::rdata::{CNAME, MX, TXT};
        use mail_auth::hickory_resolver::proto::rr::{Name, RData};

        let dir = tempfile::tempdir().unwrap();
        let store = keys(dir.path());
        let rsa = rsa_key(&store);
        let ed = ed_key(&store);
        let value = rsa.txt_value();
        assert!(value.len() > 255);
        // The long DKIM record as the zone file line has it: several character-strings.
        let strings: Vec<String> = split_txt(&value).iter().map(|s| s.to_string()).collect();
        assert!(strings.len() > 1);
        let name = |n: &str| Name::from_ascii(n).unwrap();
        let zone = vec![
            (
                "example.com",
                RData::TXT(TXT::new(vec![
                    "v=spf1 include:_spf.mx.cloudflare.net".into(),
                    " include:amazonses.com ~all".into(),
                ])),
            ),
            ("example.com", RData::TXT(TXT::new(vec!["google-site-verification=abc".into()]))),
            ("example.com", RData::MX(MX::new(13, name("route1.mx.cloudflare.net.")))),
            ("example.com", RData::MX(MX::new(86, name("ROUTE2.mx.cloudflare.net.")))),
            ("example.com", RData::MX(MX::new(24, name("route3.mx.cloudflare.net.")))),
            ("_spf.mx.cloudflare.net", RData::TXT(TXT::new(vec!["v=spf1 ip4:104.30.0.0/19 ~all".into()]))),
            ("amazonses.com", RData::TXT(TXT::new(vec!["v=spf1 ip4:199.255.192.0/22 -all".into()]))),
            ("r._domainkey.example.com", RData::TXT(TXT::new(strings.clone()))),
            ("e._domainkey.example.com", RData::TXT(TXT::new(vec![ed.txt_value()]))),
            (
                "_dmarc.example.com",
                RData::TXT(TXT::new(vec!["v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com".into()])),
            ),
            ("mail.example.com", RData::MX(MX::new(10, name("feedback-smtp.eu-west-1.amazonses.com.")))),
            ("mail.example.com", RData::TXT(TXT::new(vec!["v=spf1 include:amazonses.com ~all".into()]))),
            ("pm-bounces.example.com", RData::CNAME(CNAME(name("pm.mtasv.net.")))),
        ];
        let (addr, server) = serve(zone).await;
        let resolver = SystemResolver::at(addr).unwrap();

        // Several character-strings are one value, joined without separator.
        assert_eq!(resolver.txt("r._domainkey.example.com").await.unwrap(), vec![value.clone()]);
        let mut apex = resolver.txt("example.com").await.unwrap();
        apex.sort();
        assert_eq!(
            apex,
            vec!["google-site-verification=abc", "v=spf1 include:_spf.mx.cloudflare.net include:amazonses.com ~all"]
        );
        let mut mx = resolver.mx("example.com").await.unwrap();
        mx.sort();
        assert_eq!(
            mx,
            vec![
                (13, "route1.mx.cloudflare.net".to_string()),
                (24, "route3.mx.cloudflare.net".to_string()),
                (86, "route2.mx.cloudflare.net".to_string())
            ]
        );
        assert_eq!(resolver.cname("pm-bounces.example.com").await.unwrap(), "pm.mtasv.net");
        // NXDOMAIN and NODATA are both "no record".
        assert_eq!(resolver.txt("nothing.example.com").await, Err(LookupError::NoRecord));
        assert_eq!(resolver.mx("_dmarc.example.com").await, Err(LookupError::NoRecord));
        assert_eq!(resolver.cname("example.com").await, Err(LookupError::NoRecord));

        // The whole doctor through the real resolver path.
        let report = tokio::time::timeout(std::time::Duration::from_secs(30), doctor(&ses_args(), &store, &resolver))
            .await
            .expect("doctor hung");
        assert!(report.ok(), "{}", report.render());
        assert_eq!(report.count(Status::Warn), 0, "{}", report.render());
        assert_eq!(status_of(&report, "DKIM r._domainkey.example.com"), Status::Pass);
        server.abort();

        // A server that does not answer is a failure, not an absent record.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let resolver = SystemResolver::at(silent.local_addr().unwrap()).unwrap();
        match resolver.txt("example.com").await {
            Err(LookupError::Failure(_)) => {}
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
