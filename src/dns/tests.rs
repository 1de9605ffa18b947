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
    DnsArgs { inbound: Some(Inbound::Cloudflare), region: Some("eu-west-1".into()), ..DnsArgs::new(D, RelayKind::Ses) }
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
    let mx: Vec<(Option<u16>, &str)> =
        plan.records.iter().filter(|r| r.kind == "MX" && r.name == D).map(|r| (r.priority, r.value.as_str())).collect();
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
        let mut names: Vec<&str> = plan.records.iter().filter(|r| is_spf(&r.value)).map(|r| r.name.as_str()).collect();
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
    assert!(mailgun.records.iter().any(|r| r.name == "mg.example.com" && r.value == "v=spf1 include:mailgun.org ~all"));
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
    let terms = spf_terms("v=spf1 -ip4:192.0.2.0/24 ~include:x.test mx/24 a:mail.test/24 redirect=r.test exp=e.test");
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
    assert_eq!(spf_with_includes("v=spf1 redirect=r.test a", &["b.test"]), "v=spf1 a include:b.test redirect=r.test");
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
