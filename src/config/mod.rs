//! The configuration: one TOML file (`config/mailferry.toml` by default).
//!
//! Loading does all validation up front so `mailferry check` and `serve`
//! report every mistake with the file, the key and how to fix it, instead of
//! failing later in a session. Relative paths resolve against the folder of the
//! config file; `${ENV_VAR}` may stand for any string value (secrets).
//!
//! - `raw`: the file as written (serde), `defaults`: every default in one place;
//! - `resolve`: paths, `${VAR}`, and the checks shared by every section;
//! - `sections`: the file turned into [`Config`], section by section;
//! - `database`, `relay`: the sections with the most to check; `provider`: the relay presets.

mod database;
pub mod defaults;
mod provider;
mod raw;
mod relay;
mod resolve;
mod sections;

pub use provider::*;
use raw::*;
use resolve::*;
pub use resolve::{expand_env, is_domain_or_literal, MAX_COUNTER_WINDOW};

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Default location of the main configuration file.
pub const DEFAULT_PATH: &str = "config/mailferry.toml";

/// Where an installed server's configuration lives.
pub const SYSTEM_PATH: &str = "/etc/mailferry/mailferry.toml";

/// The configuration file of a command given `arg` (`--config`): else
/// `$MAILFERRY_CONFIG`, else [`DEFAULT_PATH`] when the working folder has it
/// (a checkout, the quick start), else [`SYSTEM_PATH`] when it exists (an
/// operator's shell anywhere on an installed server), else [`DEFAULT_PATH`],
/// which then is the file the error names.
pub fn resolve_path(arg: Option<PathBuf>) -> PathBuf {
    if let Some(p) = arg.or_else(|| std::env::var_os("MAILFERRY_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from)) {
        return p;
    }
    let local = Path::new(DEFAULT_PATH);
    if !local.exists() && Path::new(SYSTEM_PATH).exists() {
        return PathBuf::from(SYSTEM_PATH);
    }
    local.to_path_buf()
}

/// A configuration error, already phrased for the operator.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub file: PathBuf,
    pub server: Server,
    pub limits: Limits,
    pub tls: Tls,
    pub listeners: Vec<Listener>,
    pub sandbox: Sandbox,
    pub plugins: Vec<PluginSpec>,
    pub relays: BTreeMap<String, Relay>,
    pub dkim: Dkim,
    pub queue: Queue,
    pub routes: BTreeMap<String, Route>,
    pub admin: Admin,
    pub sendmail: Sendmail,
    pub auth_limits: AuthLimits,
    pub counters: Counters,
    pub passwords: crate::password::Settings,
    pub databases: BTreeMap<String, Database>,
}

/// Brute-force protection for AUTH (see docs/abuse.md).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthLimits {
    /// Failed AUTHs from one client address (IPv6: its /64) within the
    /// window that ban it; 0: no bans by address.
    pub failures_per_ip: u64,
    /// Failed AUTHs on one login, from anywhere, within the window after
    /// which a failure from an address that never logged in as it bans that
    /// address at once; 0: off.
    pub failures_per_login: u64,
    pub failure_window: Duration,
    pub ban: Duration,
    /// Wait before answering a failed AUTH, times the failures counted.
    pub failure_delay: Duration,
    pub max_failure_delay: Duration,
    /// Never counted, delayed or banned (besides each listener's trusted networks).
    pub exempt_networks: Vec<IpNet>,
}

/// Where counters live (bans, rate limits).
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    /// Redis shared by several nodes; `None`: this process's memory.
    pub redis: Option<RedisUrl>,
    /// Put before every key, so deployments can share one Redis.
    pub prefix: String,
    /// Limit for one Redis call.
    pub timeout: Duration,
    pub on_redis_error: OnRedisError,
    /// Keys kept in memory at most.
    pub max_keys: usize,
}

/// A Redis URL; shown without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl RedisUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => write!(f, "\"{}://***{}\"", &self.0[..scheme], &self.0[at..]),
            _ => write!(f, "{:?}", self.0),
        }
    }
}

/// A `[databases.NAME]` table: a pool of connections the host owns, which
/// plugins granted `sql:NAME` query through the `sql` capability.
#[derive(Clone, PartialEq)]
pub struct Database {
    pub kind: DatabaseKind,
    /// PostgreSQL and MySQL: the URL as written, `${VAR}` expanded. SQLite:
    /// the file's path, resolved against the config folder.
    pub url: String,
    /// Overrides the URL's password (no percent-encoding needed).
    pub password: Option<String>,
    pub max_connections: u32,
    /// For acquiring a connection and running one statement, together.
    pub query_timeout: Duration,
    /// Most rows one statement may return to a plugin.
    pub max_rows: usize,
    /// Most octets of values one statement may return to a plugin.
    pub max_result_bytes: usize,
    /// Holds mailferry's own users table: created and upgraded by `serve`
    /// and `mailferry user`.
    pub migrate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite(PathBuf),
    Postgres,
    MySql,
}

impl DatabaseKind {
    pub fn label(&self) -> &'static str {
        match self {
            DatabaseKind::Sqlite(_) => "SQLite",
            DatabaseKind::Postgres => "PostgreSQL",
            DatabaseKind::MySql => "MySQL/MariaDB",
        }
    }
}

/// What counters do while Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// Count in this node's memory: limits hold per node.
    Local,
    /// Fail: AUTH and counted mail are refused for now (4xx).
    Refuse,
}

// Written by hand so a logged or printed configuration never shows the
// database password.
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("kind", &self.kind)
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .field("query_timeout", &self.query_timeout)
            .field("max_rows", &self.max_rows)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("migrate", &self.migrate)
            .finish()
    }
}

/// The URL with any password in it (`user:secret@`, `?password=secret`)
/// replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let (start, end) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
                out.replace_range(start..end, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let query: Vec<String> = out[q + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{}?{}", &out[..q], query.join("&"));
    }
    out
}

/// The admin HTTP listener (`/metrics`, `/healthz`).
#[derive(Debug, Clone, Default)]
pub struct Admin {
    /// Where it listens; `None`: no admin listener.
    pub address: Option<SocketAddr>,
}

/// The `sendmail` command: how programs on this machine submit to the
/// server (see docs/sendmail.md).
#[derive(Debug, Clone, Default)]
pub struct Sendmail {
    /// The listener to submit to; `None`: the first one that trusts the
    /// loopback address it is reached on.
    pub listener: Option<String>,
    /// Appended to addresses without a domain (`root`, `www-data`).
    pub domain: String,
    /// The envelope sender when `-f` is not given; `None`: `<login>@domain`.
    pub from: Option<String>,
    /// AUTH login, for a listener that requires it.
    pub user: Option<String>,
    /// File holding the AUTH password (its first line).
    pub password_file: Option<PathBuf>,
    /// Limit for connecting and for each reply of the server.
    pub timeout: Duration,
}

/// The delivery queue.
#[derive(Debug, Clone)]
pub struct Queue {
    /// The spool folder.
    pub dir: PathBuf,
    /// Waits before each retry; the last repeats.
    pub retry_schedule: Vec<Duration>,
    /// Give up (bounce) after this long in the queue.
    pub max_age: Duration,
    /// Delivery attempts running at once, per relay.
    pub concurrency: usize,
}

/// Where queued mail goes: relays tried in order (failover).
#[derive(Debug, Clone)]
pub struct Route {
    pub relays: Vec<String>,
    /// Envelope sender domains that always take this route.
    pub sender_domains: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Dkim {
    /// Folder of `<domain>/<selector>.pem` private keys.
    pub keys: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub hostname: String,
    pub state_dir: PathBuf,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub command_line: usize,
    pub auth_line: usize,
    pub text_line: usize,
    pub message_size: usize,
    pub recipients: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub max_errors: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub bare_line_endings: BareLineEndings,
}

/// What to do with a bare CR or LF inside a message (SMTP smuggling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Refuse the message with 550 5.6.0 and close (the default).
    Reject,
    /// Turn every bare CR or LF into CRLF. Only `<CRLF>.<CRLF>` still ends DATA.
    Normalize,
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// The default certificate: for clients that send no server name (SNI)
    /// or one no other certificate is for.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// More certificates, chosen by the name the client asks for.
    pub certificates: Vec<TlsCertificate>,
}

/// One `[[tls.certificates]]` entry.
#[derive(Debug, Clone)]
pub struct TlsCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Server names it is for, lower case, `*.` wildcards allowed; `None`:
    /// the DNS names the certificate itself lists (read again at each reload).
    pub names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Implicit,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub tls: TlsMode,
    pub require_auth: bool,
    pub trusted_networks: Vec<IpNet>,
    pub auth_without_tls: bool,
    /// Every connection opens with a PROXY header (v1 or v2) naming the client.
    pub proxy_protocol: bool,
    /// The peers allowed to send that header: the operator's proxies.
    pub proxy_trusted: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct Sandbox {
    pub call_timeout: Duration,
    pub memory_limit: usize,
}

#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    /// `None` for a plugin built into the binary.
    pub path: Option<PathBuf>,
    pub grants: Vec<Grant>,
    /// The databases it may query (its `sql:NAME` grants).
    pub databases: Vec<String>,
    /// Host folders preopened read-only, as (host path, guest path).
    pub read_dirs: Vec<(PathBuf, String)>,
    /// The plugin's own table, handed to it as TOML text.
    pub config: toml::Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    Password,
    Outbound,
    Dkim,
    Counters,
    /// One or more `sql:NAME` grants; the names are in `PluginSpec::databases`.
    Sql,
}

#[derive(Debug, Clone)]
pub enum Relay {
    Smtp(SmtpRelay),
    Outbox { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: Option<String>,
    pub password: Option<String>,
    pub verify_certificate: bool,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub helo: Option<String>,
    /// The preset (`provider = "..."`) this relay was set up from, if any.
    pub provider: Option<Provider>,
    /// Most recipients the upstream takes in one transaction: split larger
    /// envelopes. `None`: no known limit. The provider's limit unless the
    /// `max_recipients` key says otherwise.
    pub max_recipients: Option<usize>,
    /// Largest message, in octets, the upstream takes. `None`: no known
    /// limit. The provider's limit unless the `max_message_size` key says
    /// otherwise.
    pub max_message_size: Option<usize>,
    /// Header fields (name, value) put on top of every message sent through
    /// this relay, unless the message already has a field of that name. They
    /// are added after DKIM signing and are not in any signature's `h=` list,
    /// so signatures stay valid. SendGrid: `X-SMTPAPI` turning click and open
    /// tracking off (both rewrite the body, which breaks DKIM).
    pub extra_headers: Vec<(String, String)>,
    /// Messages sent over one upstream connection before it is closed
    /// (1: a new connection per message).
    pub connection_max_messages: u32,
    /// How long an upstream connection is kept open, idle, for the next
    /// message (0: closed after each delivery attempt).
    pub connection_idle: Duration,
}

// `BUILTIN_PLUGINS`: the names of the plugins `build.rs` compiled into the binary.
include!(concat!(env!("OUT_DIR"), "/builtin_names.rs"));

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError { file: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!("cannot read the configuration file: {e} (pass another one with --config PATH)"))
        })?;
        Self::parse(&text, path, &folder_of(path))
    }

    /// Reads the file for a client of the server (the `sendmail` command):
    /// every key is checked for spelling, but only `[server]`, `[limits]`,
    /// `[tls]`, `[[listeners]]` and `[sendmail]` are validated and kept. The
    /// command runs as any user, without the server's environment, so the
    /// `${VAR}` secrets of relays and plugins are neither needed nor read.
    pub fn load_for_client(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError { file: path.to_path_buf(), message };
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot read the configuration file: {e}")))?;
        let base = folder_of(path);
        let mut raw: RawConfig = toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        raw.sandbox = RawSandbox::default();
        raw.plugins.clear();
        raw.relays.clear();
        raw.dkim = RawDkim::default();
        raw.queue = RawQueue::default();
        raw.routes.clear();
        raw.admin = RawAdmin::default();
        raw.databases.clear();
        raw.counters = RawCounters::default();
        let mut cx = Resolver { file: path, base: &base, errors: Vec::new(), keep_unset_vars: false };
        let config = Config::from_raw(raw, &mut cx);
        if cx.errors.is_empty() {
            Ok(config)
        } else {
            Err(err(cx.errors.join("\n")))
        }
    }

    /// Reads the file for the commands that need its folders, not its
    /// secrets (`user`, `dkim`, `dns`, `doctor`, `queue`): an operator runs
    /// them from a shell that does not have the server's environment. Every
    /// key is checked for spelling and everything is validated as by
    /// [`Config::load`], except that relays and routes are left out and an
    /// unset `${VAR}` stays as written instead of being an error.
    pub fn load_for_admin(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError { file: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!("cannot read the configuration file: {e} (pass another one with --config PATH)"))
        })?;
        let base = folder_of(path);
        let mut raw: RawConfig = toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        raw.relays.clear();
        raw.routes.clear();
        let mut cx = Resolver { file: path, base: &base, errors: Vec::new(), keep_unset_vars: true };
        let config = Config::from_raw(raw, &mut cx);
        if cx.errors.is_empty() {
            Ok(config)
        } else {
            Err(err(cx.errors.join("\n")))
        }
    }

    /// Parses configuration text; `base` is the folder relative paths resolve against.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError { file: file.to_path_buf(), message: e.to_string().trim_end().to_string() })?;
        let mut cx = Resolver { file, base, errors: Vec::new(), keep_unset_vars: false };
        let config = Config::from_raw(raw, &mut cx);
        if cx.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { file: file.to_path_buf(), message: cx.errors.join("\n") })
        }
    }
    /// The folder where `serve` keeps its own files (self-signed certificate,
    /// compiled plugin cache).
    pub fn state_dir(&self) -> &Path {
        &self.server.state_dir
    }
}

#[cfg(test)]
mod tests;
