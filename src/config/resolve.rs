//! Paths relative to the file, `${VAR}` in strings, and the checks several sections share.

use super::*;

/// The folder relative paths in the file at `path` resolve against.
pub(crate) fn folder_of(path: &Path) -> PathBuf {
    path.parent()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// A server name a certificate is chosen for: a host name or `*.` and a
/// host name (one label), lower case, without a final dot.
pub(crate) fn server_name_pattern(name: &str) -> Result<String, &'static str> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let host = name.strip_prefix("*.").unwrap_or(&name);
    if host.parse::<IpAddr>().is_ok() {
        return Err("is an IP address: clients send only host names as SNI");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err("is not a host name (letters, digits, '-' and dots; a wildcard only as a whole first label, \"*.example.org\")");
    }
    Ok(name)
}

pub(crate) struct Resolver<'a> {
    pub(crate) file: &'a Path,
    pub(crate) base: &'a Path,
    pub(crate) errors: Vec<String>,
    /// An unset `${VAR}` stays as written ([`Config::load_for_admin`]).
    pub(crate) keep_unset_vars: bool,
}

impl Resolver<'_> {
    pub(crate) fn error(&mut self, e: String) {
        self.errors.push(e);
    }

    pub(crate) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Expands `${VAR}` references; an unset variable is an error, never an
    /// empty secret.
    pub(crate) fn string(&mut self, key: &str, value: Option<String>) -> Option<String> {
        let value = value?;
        match expand_env(&value) {
            Ok(v) => Some(v),
            Err(_) if self.keep_unset_vars => Some(value),
            Err(e) => {
                self.error(format!("{key}: {e}"));
                None
            }
        }
    }

    pub(crate) fn expand_table(&mut self, key: &str, table: toml::Table) -> toml::Table {
        table
            .into_iter()
            .map(|(k, v)| {
                let v = self.expand_value(&format!("{key}.config.{k}"), v);
                (k, v)
            })
            .collect()
    }

    pub(crate) fn expand_value(&mut self, key: &str, v: toml::Value) -> toml::Value {
        match v {
            toml::Value::String(s) => toml::Value::String(self.string(key, Some(s)).unwrap_or_default()),
            toml::Value::Array(a) => toml::Value::Array(a.into_iter().map(|v| self.expand_value(key, v)).collect()),
            toml::Value::Table(t) => toml::Value::Table(self.expand_table(key, t)),
            other => other,
        }
    }
}

/// "; known: a, b" for errors about database names.
pub(crate) fn known_databases(databases: &BTreeMap<String, Database>) -> String {
    if databases.is_empty() {
        "; add one, e.g. [databases.users] url = \"sqlite://users.db\"".to_string()
    } else {
        format!("; known: {}", databases.keys().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", "))
    }
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// A network or a single address. IPv4-mapped IPv6 ranges
/// (`::ffff:10.0.0.0/104`) become the IPv4 range they mean: clients are
/// matched by their IPv4 address, whatever socket they came in on.
pub(crate) fn parse_net(s: &str) -> Option<IpNet> {
    let net = s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))?;
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok().map(|n| IpNet::V4(n.trunc()));
        }
    }
    Some(net)
}

/// Replaces `${NAME}` with the environment variable's value. The error
/// names the first variable that is unset or empty.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let var = &after[..end];
                match std::env::var(var) {
                    // An empty secret is a line of the env file left
                    // unfinished, not a password: say so now rather than
                    // at the first delivery.
                    Ok(v) if v.is_empty() => {
                        return Err(format!("environment variable {var} is set but empty (referenced as ${{{var}}})"))
                    }
                    Ok(v) => out.push_str(&v),
                    Err(_) => return Err(format!("environment variable {var} is not set (referenced as ${{{var}}})")),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A host name as used in EHLO/greetings: letters, digits, hyphens and dots,
/// or an address literal.
pub fn is_domain_or_literal(s: &str) -> bool {
    if s.starts_with('[') && s.ends_with(']') {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Longest window or mark the counters keep (31 days).
pub const MAX_COUNTER_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// Checks a PostgreSQL or MySQL URL as the pool will read it, so
/// `mailferry check` reports it.
pub(crate) fn check_database_url(kind: &DatabaseKind, url: &str) -> Result<(), String> {
    use std::str::FromStr as _;
    // The parsers' messages say what is wrong without repeating the URL.
    match kind {
        DatabaseKind::Postgres => sqlx::postgres::PgConnectOptions::from_str(url).map(drop).map_err(|e| e.to_string()),
        DatabaseKind::MySql => sqlx::mysql::MySqlConnectOptions::from_str(url).map(drop).map_err(|e| e.to_string()),
        DatabaseKind::Sqlite(_) => Ok(()),
    }
}
