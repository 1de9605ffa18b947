//! Lookups, behind [`Resolver`]: hickory (through mail-auth) in production, a table in the tests.

use super::*;

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
pub(crate) fn plain_name(name: &mail_auth::hickory_resolver::proto::rr::Name) -> String {
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
