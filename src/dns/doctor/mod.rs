//! `mailferry doctor`: the live records resolved and checked against the plan, record by record,
//! PASS / WARN / FAIL with the exact change to make; one file per kind of record.

mod dkim;
mod dmarc;
mod mx;
mod relay;
mod spf;

use dkim::*;
use dmarc::*;
use mx::*;
use relay::*;
pub(crate) use spf::*;

use super::*;

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
