//! The configuration: one TOML file (`config/mailferry.toml` by default).
//!
//! Loading does all validation up front so `mailferry check` and `serve`
//! report every mistake with the file, the key and how to fix it, instead of
//! failing later in a session. Relative paths resolve against the folder of the
//! config file; `${ENV_VAR}` may stand for any string value (secrets).

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
const MB: usize = 1000 * 1000;

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

    fn parse(s: &str) -> Option<Provider> {
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

    /// How to fill in the credentials, for errors.
    fn credentials_hint(self) -> &'static str {
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

// ---------------------------------------------------------------------------
// The file as written. Kept apart from the types above so defaults and
// validation live in one place (`Config::from_raw`).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    listeners: Vec<RawListener>,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
    #[serde(default)]
    relays: BTreeMap<String, RawRelay>,
    #[serde(default)]
    dkim: RawDkim,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    sendmail: RawSendmail,
    #[serde(default)]
    auth_limits: RawAuthLimits,
    #[serde(default)]
    counters: RawCounters,
    #[serde(default)]
    passwords: RawPasswords,
    #[serde(default)]
    databases: BTreeMap<String, RawDatabase>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuthLimits {
    failures_per_ip: Option<u64>,
    failures_per_login: Option<u64>,
    failure_window_secs: Option<u64>,
    ban_secs: Option<u64>,
    failure_delay_ms: Option<u64>,
    max_failure_delay_ms: Option<u64>,
    exempt_networks: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCounters {
    redis: Option<String>,
    prefix: Option<String>,
    timeout_ms: Option<u64>,
    on_redis_error: Option<OnRedisError>,
    max_keys: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPasswords {
    workers: Option<usize>,
    cache: Option<bool>,
    cache_size: Option<usize>,
    cache_ttl_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
    password: Option<String>,
    max_connections: Option<u32>,
    query_timeout_ms: Option<u64>,
    max_rows: Option<usize>,
    max_result_bytes: Option<usize>,
    migrate: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSendmail {
    listener: Option<String>,
    domain: Option<String>,
    from: Option<String>,
    user: Option<String>,
    password_file: Option<String>,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    dir: Option<String>,
    retry_schedule_secs: Option<Vec<u64>>,
    max_age_secs: Option<u64>,
    concurrency: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    relays: Vec<String>,
    #[serde(default)]
    sender_domains: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDkim {
    keys: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: Option<String>,
    state_dir: Option<String>,
    shutdown_grace_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    command_line: Option<usize>,
    auth_line: Option<usize>,
    text_line: Option<usize>,
    message_size: Option<usize>,
    recipients: Option<usize>,
    command_timeout_secs: Option<u64>,
    data_timeout_secs: Option<u64>,
    max_errors: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    bare_line_endings: Option<BareLineEndings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    #[serde(default)]
    certificates: Vec<RawTlsCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsCertificate {
    cert: String,
    key: String,
    names: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<String>,
    address: String,
    tls: Option<TlsMode>,
    require_auth: Option<bool>,
    #[serde(default)]
    trusted_networks: Vec<String>,
    auth_without_tls: Option<bool>,
    proxy_protocol: Option<bool>,
    proxy_trusted: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    call_timeout_ms: Option<u64>,
    memory_limit_mb: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: String,
    path: Option<String>,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    read_dirs: Vec<String>,
    #[serde(default)]
    config: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    kind: Option<String>,
    dir: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<TlsMode>,
    user: Option<String>,
    password: Option<String>,
    verify_certificate: Option<bool>,
    ca_file: Option<String>,
    timeout_secs: Option<u64>,
    helo: Option<String>,
    provider: Option<String>,
    region: Option<String>,
    max_recipients: Option<usize>,
    max_message_size: Option<usize>,
    connection_max_messages: Option<u32>,
    connection_idle_secs: Option<u64>,
}

/// Defaults, in one place so the docs can be checked against them.
pub mod defaults {
    pub const HOSTNAME: &str = "localhost";
    pub const STATE_DIR: &str = "state";
    pub const SHUTDOWN_GRACE_SECS: u64 = 30;
    pub const COMMAND_LINE: usize = 512;
    pub const AUTH_LINE: usize = 12 * 1024;
    pub const TEXT_LINE: usize = 1000;
    pub const MESSAGE_SIZE: usize = 25 * 1024 * 1024;
    pub const RECIPIENTS: usize = 100;
    pub const COMMAND_TIMEOUT_SECS: u64 = 300;
    pub const DATA_TIMEOUT_SECS: u64 = 600;
    pub const MAX_ERRORS: u32 = 10;
    pub const MAX_CONNECTIONS: usize = 1000;
    pub const MAX_CONNECTIONS_PER_IP: usize = 20;
    pub const CALL_TIMEOUT_MS: u64 = 1000;
    pub const MEMORY_LIMIT_MB: usize = 64;
    pub const RELAY_TIMEOUT_SECS: u64 = 120;
    pub const CONNECTION_MAX_MESSAGES: u32 = 100;
    pub const CONNECTION_IDLE_SECS: u64 = 5;
    pub const DKIM_KEYS: &str = "dkim";
    pub const QUEUE_DIR: &str = "queue";
    pub const RETRY_SCHEDULE_SECS: &[u64] = &[60, 300, 900, 3600, 7200];
    pub const MAX_AGE_SECS: u64 = 5 * 24 * 3600;
    pub const QUEUE_CONCURRENCY: usize = 4;
    pub const SENDMAIL_TIMEOUT_SECS: u64 = 300;
    pub const AUTH_FAILURES_PER_IP: u64 = 5;
    pub const AUTH_FAILURES_PER_LOGIN: u64 = 10;
    pub const AUTH_FAILURE_WINDOW_SECS: u64 = 900;
    pub const AUTH_BAN_SECS: u64 = 3600;
    pub const AUTH_FAILURE_DELAY_MS: u64 = 1000;
    pub const AUTH_MAX_FAILURE_DELAY_MS: u64 = 10_000;
    pub const COUNTERS_PREFIX: &str = "mailferry:";
    pub const COUNTERS_TIMEOUT_MS: u64 = 250;
    pub const COUNTERS_MAX_KEYS: usize = 100_000;
    pub const PASSWORD_CACHE_SIZE: usize = 10_000;
    pub const PASSWORD_CACHE_TTL_SECS: u64 = 3600;
    pub const DB_MAX_CONNECTIONS: u32 = 4;
    pub const QUERY_TIMEOUT_MS: u64 = 3000;
    pub const MAX_ROWS: usize = 1000;
    pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
}

/// Plugins compiled into the binary, usable by name without a `path`.
pub const BUILTIN_PLUGINS: &[&str] =
    &["auth-flat-file", "auth-sql", "dkim-sign", "rate-limit", "sender-policy", "smtp-forward"];

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

    fn from_raw(raw: RawConfig, cx: &mut Resolver) -> Config {
        use defaults::*;
        let server = Server {
            hostname: cx.string("server.hostname", raw.server.hostname).unwrap_or_else(|| HOSTNAME.into()),
            state_dir: cx.path(raw.server.state_dir.as_deref().unwrap_or(STATE_DIR)),
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs.unwrap_or(SHUTDOWN_GRACE_SECS)),
        };
        if !is_domain_or_literal(&server.hostname) {
            cx.error(format!(
                "server.hostname = {:?} is not a valid host name; use the name clients connect to, e.g. \"smtp.example.com\"",
                server.hostname
            ));
        }
        let l = raw.limits;
        let limits = Limits {
            command_line: l.command_line.unwrap_or(COMMAND_LINE),
            auth_line: l.auth_line.unwrap_or(AUTH_LINE),
            text_line: l.text_line.unwrap_or(TEXT_LINE),
            message_size: l.message_size.unwrap_or(MESSAGE_SIZE),
            recipients: l.recipients.unwrap_or(RECIPIENTS),
            command_timeout: Duration::from_secs(l.command_timeout_secs.unwrap_or(COMMAND_TIMEOUT_SECS)),
            data_timeout: Duration::from_secs(l.data_timeout_secs.unwrap_or(DATA_TIMEOUT_SECS)),
            max_errors: l.max_errors.unwrap_or(MAX_ERRORS),
            max_connections: l.max_connections.unwrap_or(MAX_CONNECTIONS),
            max_connections_per_ip: l.max_connections_per_ip.unwrap_or(MAX_CONNECTIONS_PER_IP),
            bare_line_endings: l.bare_line_endings.unwrap_or(BareLineEndings::Reject),
        };
        for (key, value, min) in [
            ("limits.command_line", limits.command_line, 512),
            ("limits.auth_line", limits.auth_line, 512),
            ("limits.text_line", limits.text_line, 1000),
            ("limits.message_size", limits.message_size, 1024),
            ("limits.recipients", limits.recipients, 1),
            ("limits.max_connections", limits.max_connections, 1),
            ("limits.max_connections_per_ip", limits.max_connections_per_ip, 1),
        ] {
            if value < min {
                cx.error(format!("{key} = {value} is below the minimum of {min} (RFC 5321 §4.5.3.1)"));
            }
        }
        if limits.command_timeout.is_zero() || limits.data_timeout.is_zero() {
            cx.error("limits.command_timeout_secs and limits.data_timeout_secs must be above 0".into());
        }

        let mut certificates = Vec::new();
        for (i, rc) in raw.tls.certificates.into_iter().enumerate() {
            let key = format!("tls.certificates[{i}]");
            let names = rc.names.map(|names| {
                if names.is_empty() {
                    cx.error(format!(
                        "{key}.names is empty: list the server names, e.g. [\"smtp.example.org\"], or leave names out to take them from the certificate"
                    ));
                }
                names
                    .iter()
                    .filter_map(|n| match server_name_pattern(n) {
                        Ok(n) => Some(n),
                        Err(why) => {
                            cx.error(format!("{key}.names: {n:?} {why}"));
                            None
                        }
                    })
                    .collect()
            });
            certificates.push(TlsCertificate { cert: cx.path(&rc.cert), key: cx.path(&rc.key), names });
        }
        let tls = Tls { cert: raw.tls.cert.map(|p| cx.path(&p)), key: raw.tls.key.map(|p| cx.path(&p)), certificates };
        if tls.cert.is_some() != tls.key.is_some() {
            cx.error(
                "tls.cert and tls.key go together: set both (PEM certificate chain and its private key) or neither"
                    .into(),
            );
        }

        let mut listeners = Vec::new();
        if raw.listeners.is_empty() {
            cx.error("no [[listeners]]: add at least one, e.g. address = \"127.0.0.1:2525\", tls = \"none\"".into());
        }
        for (i, rl) in raw.listeners.into_iter().enumerate() {
            let name = rl.name.unwrap_or_else(|| format!("listener{}", i + 1));
            let key = format!("listeners[{i}] ({name})");
            let address = match rl.address.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    cx.error(format!(
                        "{key}.address = {:?} is not IP:PORT, e.g. \"0.0.0.0:587\" or \"[::]:465\"",
                        rl.address
                    ));
                    continue;
                }
            };
            let tls_mode = rl.tls.unwrap_or(TlsMode::None);
            let mut trusted = Vec::new();
            for n in &rl.trusted_networks {
                match parse_net(n) {
                    Some(net) => trusted.push(net),
                    None => cx.error(format!(
                        "{key}.trusted_networks: {n:?} is not a CIDR like \"127.0.0.0/8\" or an IP address"
                    )),
                }
            }
            let auth_without_tls = rl.auth_without_tls.unwrap_or(false);
            if auth_without_tls && !address.ip().is_loopback() {
                cx.error(format!(
                    "{key}.auth_without_tls = true is only allowed on a loopback address: passwords would cross the network in clear text; use tls = \"starttls\" or \"implicit\""
                ));
            }
            let require_auth = rl.require_auth.unwrap_or(tls_mode != TlsMode::None);
            if require_auth && tls_mode == TlsMode::None && !auth_without_tls {
                cx.error(format!(
                    "{key}: require_auth = true with tls = \"none\" can never succeed, because AUTH is only offered over TLS; use tls = \"starttls\" or set auth_without_tls = true on a loopback address"
                ));
            }
            let proxy_protocol = rl.proxy_protocol.unwrap_or(false);
            let mut proxy_trusted = Vec::new();
            for n in rl.proxy_trusted.iter().flatten() {
                match parse_net(n) {
                    Some(net) => proxy_trusted.push(net),
                    None => cx.error(format!(
                        "{key}.proxy_trusted: {n:?} is not an IP address or a CIDR range like \"10.0.0.0/8\""
                    )),
                }
            }
            // No default list: whoever may send the header chooses the
            // client address that limits and trusted_networks judge.
            match (proxy_protocol, &rl.proxy_trusted) {
                (true, None) => cx.error(format!(
                    "{key}: proxy_protocol = true needs proxy_trusted, the addresses of your proxies (e.g. [\"127.0.0.1/32\"] for HAProxy on this machine): only they may say who the client is"
                )),
                (true, Some(list)) if list.is_empty() => cx.error(format!(
                    "{key}.proxy_trusted is empty: no proxy could connect; list the addresses of your proxies"
                )),
                (false, Some(_)) => cx.error(format!(
                    "{key}.proxy_trusted is set but proxy_protocol is not: set proxy_protocol = true, or remove proxy_trusted"
                )),
                _ => {}
            }
            if listeners.iter().any(|l: &Listener| l.name == name) {
                cx.error(format!("{key}: the name {name:?} is used twice"));
            }
            listeners.push(Listener {
                name,
                address,
                tls: tls_mode,
                require_auth,
                trusted_networks: trusted,
                auth_without_tls,
                proxy_protocol,
                proxy_trusted,
            });
        }

        let s = raw.sandbox;
        let sandbox = Sandbox {
            call_timeout: Duration::from_millis(s.call_timeout_ms.unwrap_or(CALL_TIMEOUT_MS)),
            memory_limit: s.memory_limit_mb.unwrap_or(MEMORY_LIMIT_MB) * 1024 * 1024,
        };
        if sandbox.call_timeout.is_zero() {
            cx.error("sandbox.call_timeout_ms must be above 0".into());
        }
        if !(1..=4096).contains(&(sandbox.memory_limit / (1024 * 1024))) {
            cx.error("sandbox.memory_limit_mb must be between 1 and 4096".into());
        }

        let mut relays = BTreeMap::new();
        for (name, r) in raw.relays {
            if let Some(relay) = cx.relay(&name, r) {
                relays.insert(name, relay);
            }
        }

        let mut databases = BTreeMap::new();
        for (name, rd) in raw.databases {
            if let Some(db) = cx.database(&name, rd) {
                databases.insert(name, db);
            }
        }

        let mut plugins = Vec::new();
        for (i, rp) in raw.plugins.into_iter().enumerate() {
            let key = format!("plugins[{i}] ({})", rp.name);
            // The name tags the plugin's logs, metrics and counter keys
            // (`<name>:<key>`): a ':' in it could make two plugins share keys.
            if rp.name.is_empty()
                || !rp.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                cx.error(format!("{key}: name {:?}: a plugin name is letters, digits, '-', '_' and '.'", rp.name));
            }
            if plugins.iter().any(|p: &PluginSpec| p.name == rp.name) {
                cx.error(format!("{key}: the name {:?} is used twice; give each plugin entry its own name", rp.name));
            }
            let path = rp.path.as_deref().map(|p| cx.path(p));
            if path.is_none() && !BUILTIN_PLUGINS.contains(&rp.name.as_str()) {
                cx.error(format!(
                    "{key}: no path, and {:?} is not a built-in plugin ({}); set path = \"file.wasm\"",
                    rp.name,
                    BUILTIN_PLUGINS.join(", ")
                ));
            }
            let mut grants = Vec::new();
            let mut plugin_databases: Vec<String> = Vec::new();
            for g in &rp.grants {
                match g.as_str() {
                    "password" => grants.push(Grant::Password),
                    "outbound" => grants.push(Grant::Outbound),
                    "dkim" => grants.push(Grant::Dkim),
                    "counters" => grants.push(Grant::Counters),
                    "sql" => cx.error(format!(
                        "{key}.grants: \"sql\" needs the database it grants: \"sql:NAME\" for a [databases.NAME]{}",
                        known_databases(&databases)
                    )),
                    other => match other.strip_prefix("sql:") {
                        Some(db) if databases.contains_key(db) => {
                            if !grants.contains(&Grant::Sql) {
                                grants.push(Grant::Sql);
                            }
                            if !plugin_databases.iter().any(|d| d == db) {
                                plugin_databases.push(db.to_string());
                            }
                        }
                        Some(db) => cx.error(format!(
                            "{key}.grants: {other:?}: there is no [databases.{db}]{}",
                            known_databases(&databases)
                        )),
                        None => cx.error(format!(
                            "{key}.grants: unknown capability {other:?}; known: \"password\", \"outbound\", \"dkim\", \"counters\", \"sql:NAME\""
                        )),
                    },
                }
            }
            let mut read_dirs = Vec::new();
            for d in &rp.read_dirs {
                let rel = d.trim_matches('/');
                if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
                    cx.error(format!(
                        "{key}.read_dirs: {d:?} must be a plain folder path below the config folder, like \"auth\""
                    ));
                    continue;
                }
                read_dirs.push((cx.base.join(rel), format!("/{rel}")));
            }
            let cfg = cx.expand_table(&key, rp.config);
            plugins.push(PluginSpec {
                name: rp.name,
                path,
                grants,
                databases: plugin_databases,
                read_dirs,
                config: cfg,
            });
        }

        let dkim = Dkim { keys: cx.path(raw.dkim.keys.as_deref().unwrap_or(DKIM_KEYS)) };

        let q = raw.queue;
        let queue = Queue {
            dir: match q.dir {
                Some(d) => cx.path(&d),
                None => server.state_dir.join(QUEUE_DIR),
            },
            retry_schedule: q
                .retry_schedule_secs
                .unwrap_or_else(|| RETRY_SCHEDULE_SECS.to_vec())
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_age: Duration::from_secs(q.max_age_secs.unwrap_or(MAX_AGE_SECS)),
            concurrency: q.concurrency.unwrap_or(QUEUE_CONCURRENCY),
        };
        if queue.retry_schedule.is_empty() || queue.retry_schedule.iter().any(|d| d.is_zero()) {
            cx.error(
                "queue.retry_schedule_secs must list at least one wait, each above 0, e.g. [60, 300, 900, 3600, 7200]"
                    .into(),
            );
        }
        if queue.concurrency == 0 {
            cx.error("queue.concurrency must be at least 1".into());
        }
        let mut routes = BTreeMap::new();
        for (name, r) in raw.routes {
            if r.relays.is_empty() {
                cx.error(format!("routes.{name}.relays is empty: list the relays to try, in order, e.g. [\"ses\"]"));
            }
            for relay in &r.relays {
                if !relays.contains_key(relay) {
                    cx.error(format!(
                        "routes.{name}.relays: there is no [relays.{relay}]; known relays: {}",
                        relays.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            let sender_domains: Vec<String> =
                r.sender_domains.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
            routes.insert(name, Route { relays: r.relays, sender_domains });
        }

        let admin = Admin {
            address: raw.admin.address.and_then(|a| match a.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    cx.error(format!("admin.address = {a:?} is not an IP address and port, e.g. \"127.0.0.1:2580\""));
                    None
                }
            }),
        };
        if let (Some(admin), Some(l)) =
            (admin.address, listeners.iter().find(|l| Some(l.address) == admin.address && l.address.port() != 0))
        {
            cx.error(format!("admin.address {admin} is also the address of listener {:?}", l.name));
        }

        let sm = raw.sendmail;
        let sendmail = Sendmail {
            listener: cx.string("sendmail.listener", sm.listener),
            domain: cx.string("sendmail.domain", sm.domain).unwrap_or_else(|| server.hostname.clone()),
            from: cx.string("sendmail.from", sm.from),
            user: cx.string("sendmail.user", sm.user),
            password_file: sm.password_file.map(|p| cx.path(&p)),
            timeout: Duration::from_secs(sm.timeout_secs.unwrap_or(SENDMAIL_TIMEOUT_SECS)),
        };
        if let Some(name) = &sendmail.listener {
            if !listeners.iter().any(|l| &l.name == name) {
                cx.error(format!(
                    "sendmail.listener = {name:?}: there is no listener of that name; known: {}",
                    listeners.iter().map(|l| format!("{:?}", l.name)).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if !is_domain_or_literal(&sendmail.domain) || sendmail.domain.starts_with('[') {
            cx.error(format!(
                "sendmail.domain = {:?} is not a domain name; use the domain of this machine's mail, e.g. \"example.com\"",
                sendmail.domain
            ));
        }
        if let Some(from) = &sendmail.from {
            if crate::smtp::command::validate_mailbox(from).is_err() {
                cx.error(format!("sendmail.from = {from:?} is not an address like \"cron@example.com\""));
            }
        }
        if sendmail.user.is_some() != sendmail.password_file.is_some() {
            cx.error("sendmail.user and sendmail.password_file go together: set both (for a listener that requires AUTH) or neither".into());
        }
        if sendmail.timeout.is_zero() {
            cx.error("sendmail.timeout_secs must be above 0".into());
        }

        let a = raw.auth_limits;
        let mut exempt_networks = Vec::new();
        for n in a.exempt_networks.iter().flatten() {
            match parse_net(n) {
                Some(net) => exempt_networks.push(net),
                None => cx.error(format!(
                    "auth_limits.exempt_networks: {n:?} is not an IP address or a CIDR range like \"192.0.2.0/24\""
                )),
            }
        }
        let auth_limits = AuthLimits {
            failures_per_ip: a.failures_per_ip.unwrap_or(AUTH_FAILURES_PER_IP),
            failures_per_login: a.failures_per_login.unwrap_or(AUTH_FAILURES_PER_LOGIN),
            failure_window: Duration::from_secs(a.failure_window_secs.unwrap_or(AUTH_FAILURE_WINDOW_SECS)),
            ban: Duration::from_secs(a.ban_secs.unwrap_or(AUTH_BAN_SECS)),
            failure_delay: Duration::from_millis(a.failure_delay_ms.unwrap_or(AUTH_FAILURE_DELAY_MS)),
            max_failure_delay: Duration::from_millis(a.max_failure_delay_ms.unwrap_or(AUTH_MAX_FAILURE_DELAY_MS)),
            exempt_networks,
        };
        let longest = MAX_COUNTER_WINDOW;
        for (key, d) in
            [("auth_limits.failure_window_secs", auth_limits.failure_window), ("auth_limits.ban_secs", auth_limits.ban)]
        {
            if d.is_zero() || d > longest {
                cx.error(format!("{key} must be between 1 and {} (31 days)", longest.as_secs()));
            }
        }
        if auth_limits.max_failure_delay > Duration::from_secs(60) {
            cx.error(
                "auth_limits.max_failure_delay_ms must be at most 60000: clients give up on slower replies".into(),
            );
        }

        let c = raw.counters;
        let counters = Counters {
            redis: cx.string("counters.redis", c.redis).map(RedisUrl),
            prefix: c.prefix.unwrap_or_else(|| COUNTERS_PREFIX.into()),
            timeout: Duration::from_millis(c.timeout_ms.unwrap_or(COUNTERS_TIMEOUT_MS)),
            on_redis_error: c.on_redis_error.unwrap_or(OnRedisError::Local),
            max_keys: c.max_keys.unwrap_or(COUNTERS_MAX_KEYS),
        };
        if let Some(url) = &counters.redis {
            if let Err(e) = redis::Client::open(url.as_str()) {
                cx.error(format!(
                    "counters.redis: {e}; use a URL like \"redis://127.0.0.1:6379/0\" (\"redis://:PASSWORD@host:6379/0\" with a password)"
                ));
            }
        }
        if counters.timeout.is_zero() || counters.timeout > Duration::from_secs(10) {
            cx.error("counters.timeout_ms must be between 1 and 10000".into());
        }
        if counters.max_keys < 1000 {
            cx.error(format!("counters.max_keys = {} is below the minimum of 1000", counters.max_keys));
        }

        let p = raw.passwords;
        let passwords = crate::password::Settings {
            workers: p.workers.unwrap_or(0),
            cache: p.cache.unwrap_or(true),
            cache_size: p.cache_size.unwrap_or(PASSWORD_CACHE_SIZE),
            cache_ttl: Duration::from_secs(p.cache_ttl_secs.unwrap_or(PASSWORD_CACHE_TTL_SECS)),
        };
        if passwords.workers > 256 {
            cx.error(format!(
                "passwords.workers = {} is too many: 0 (one per CPU) or up to the CPU count",
                passwords.workers
            ));
        }
        if passwords.cache && passwords.cache_size == 0 {
            cx.error("passwords.cache_size must be above 0 (or set passwords.cache = false)".into());
        }
        if passwords.cache
            && (passwords.cache_ttl.is_zero() || passwords.cache_ttl > Duration::from_secs(7 * 24 * 3600))
        {
            cx.error("passwords.cache_ttl_secs must be between 1 and 604800 (a week)".into());
        }

        Config {
            file: cx.file.to_path_buf(),
            server,
            limits,
            tls,
            listeners,
            sandbox,
            plugins,
            relays,
            dkim,
            queue,
            routes,
            admin,
            sendmail,
            auth_limits,
            counters,
            passwords,
            databases,
        }
    }

    /// The folder where `serve` keeps its own files (self-signed certificate,
    /// compiled plugin cache).
    pub fn state_dir(&self) -> &Path {
        &self.server.state_dir
    }
}

/// The folder relative paths in the file at `path` resolve against.
fn folder_of(path: &Path) -> PathBuf {
    path.parent()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// A server name a certificate is chosen for: a host name or `*.` and a
/// host name (one label), lower case, without a final dot.
fn server_name_pattern(name: &str) -> Result<String, &'static str> {
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

struct Resolver<'a> {
    file: &'a Path,
    base: &'a Path,
    errors: Vec<String>,
    /// An unset `${VAR}` stays as written ([`Config::load_for_admin`]).
    keep_unset_vars: bool,
}

impl Resolver<'_> {
    fn error(&mut self, e: String) {
        self.errors.push(e);
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Expands `${VAR}` references; an unset variable is an error, never an
    /// empty secret.
    fn string(&mut self, key: &str, value: Option<String>) -> Option<String> {
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

    fn expand_table(&mut self, key: &str, table: toml::Table) -> toml::Table {
        table
            .into_iter()
            .map(|(k, v)| {
                let v = self.expand_value(&format!("{key}.config.{k}"), v);
                (k, v)
            })
            .collect()
    }

    fn expand_value(&mut self, key: &str, v: toml::Value) -> toml::Value {
        match v {
            toml::Value::String(s) => toml::Value::String(self.string(key, Some(s)).unwrap_or_default()),
            toml::Value::Array(a) => toml::Value::Array(a.into_iter().map(|v| self.expand_value(key, v)).collect()),
            toml::Value::Table(t) => toml::Value::Table(self.expand_table(key, t)),
            other => other,
        }
    }

    fn database(&mut self, name: &str, r: RawDatabase) -> Option<Database> {
        let key = format!("databases.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.error(format!("[{key}]: a database name is letters, digits, '-' and '_'"));
            return None;
        }
        let url = self.string(&format!("{key}.url"), Some(r.url))?;
        let password = self.string(&format!("{key}.password"), r.password);
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        let (kind, url) = match scheme.as_str() {
            "sqlite" => {
                let path = url["sqlite:".len()..].trim_start_matches("//");
                if path.is_empty() || path.contains('?') || path == ":memory:" {
                    self.error(format!(
                        "{key}.url = {url:?}: write \"sqlite://FILE\" (relative to the config folder, or \"sqlite:///var/lib/mailferry/users.db\"), without ?options"
                    ));
                    return None;
                }
                if password.is_some() {
                    self.error(format!("{key}.password: SQLite files have no password"));
                }
                let path = self.path(path);
                (DatabaseKind::Sqlite(path.clone()), path.display().to_string())
            }
            "postgres" | "postgresql" => (DatabaseKind::Postgres, url),
            "mysql" | "mariadb" => (DatabaseKind::MySql, url),
            _ => {
                self.error(format!(
                    "{key}.url = {:?}: use \"sqlite://FILE\", \"postgres://USER@HOST/DB\" or \"mysql://USER@HOST/DB\"",
                    redact_url(&url)
                ));
                return None;
            }
        };
        if !matches!(kind, DatabaseKind::Sqlite(_)) {
            if let Err(e) = check_database_url(&kind, &url) {
                self.error(format!("{key}.url = {:?}: {e}", redact_url(&url)));
                return None;
            }
        }
        let db = Database {
            kind,
            url,
            password,
            max_connections: r.max_connections.unwrap_or(defaults::DB_MAX_CONNECTIONS),
            query_timeout: Duration::from_millis(r.query_timeout_ms.unwrap_or(defaults::QUERY_TIMEOUT_MS)),
            max_rows: r.max_rows.unwrap_or(defaults::MAX_ROWS),
            max_result_bytes: r.max_result_bytes.unwrap_or(defaults::MAX_RESULT_BYTES),
            migrate: r.migrate.unwrap_or(false),
        };
        if db.max_connections == 0 {
            self.error(format!("{key}.max_connections must be at least 1"));
        }
        if db.query_timeout.is_zero() {
            self.error(format!("{key}.query_timeout_ms must be above 0"));
        }
        if db.max_rows == 0 || db.max_result_bytes < 1024 {
            self.error(format!("{key}: max_rows must be at least 1 and max_result_bytes at least 1024"));
        }
        Some(db)
    }

    fn relay(&mut self, name: &str, r: RawRelay) -> Option<Relay> {
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
    fn region(
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

/// An AWS region code such as `eu-west-1` (its shape; not a list).
pub fn is_aws_region(region: &str) -> bool {
    region.split('-').count() >= 3
        && region.split('-').all(|part| !part.is_empty())
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.ends_with(|c: char| c.is_ascii_digit())
}

/// "; known: a, b" for errors about database names.
fn known_databases(databases: &BTreeMap<String, Database>) -> String {
    if databases.is_empty() {
        "; add one, e.g. [databases.users] url = \"sqlite://users.db\"".to_string()
    } else {
        format!("; known: {}", databases.keys().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", "))
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// A network or a single address. IPv4-mapped IPv6 ranges
/// (`::ffff:10.0.0.0/104`) become the IPv4 range they mean: clients are
/// matched by their IPv4 address, whatever socket they came in on.
fn parse_net(s: &str) -> Option<IpNet> {
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
fn check_database_url(kind: &DatabaseKind, url: &str) -> Result<(), String> {
    use std::str::FromStr as _;
    // The parsers' messages say what is wrong without repeating the URL.
    match kind {
        DatabaseKind::Postgres => sqlx::postgres::PgConnectOptions::from_str(url).map(drop).map_err(|e| e.to_string()),
        DatabaseKind::MySql => sqlx::mysql::MySqlConnectOptions::from_str(url).map(drop).map_err(|e| e.to_string()),
        DatabaseKind::Sqlite(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), Path::new("/etc/mf"))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse("[[listeners]]\naddress = \"127.0.0.1:2525\"\n").unwrap();
        assert_eq!(c.limits.command_line, 512);
        assert_eq!(c.limits.message_size, 25 * 1024 * 1024);
        assert_eq!(c.listeners[0].tls, TlsMode::None);
        assert!(!c.listeners[0].require_auth);
        assert_eq!(c.server.state_dir, Path::new("/etc/mf/state"));
    }

    #[test]
    fn errors_name_the_key_and_fix() {
        let e = parse(
            "[[listeners]]\naddress = \"nope\"\n[[listeners]]\naddress = \"0.0.0.0:25\"\nauth_without_tls = true\n",
        )
        .unwrap_err();
        assert!(e.message.contains("listeners[0] (listener1).address"), "{e}");
        assert!(e.message.contains("only allowed on a loopback"), "{e}");
    }

    #[test]
    fn proxy_protocol_needs_a_list_of_trusted_proxies() {
        let listener =
            |extra: &str| parse(&format!("[[listeners]]\nname = \"sub\"\naddress = \"127.0.0.1:1\"\n{extra}"));
        let c = listener("").unwrap();
        assert!(!c.listeners[0].proxy_protocol);
        let c = listener("proxy_protocol = true\nproxy_trusted = [\"10.0.0.0/8\", \"::1\"]").unwrap();
        assert!(c.listeners[0].proxy_protocol);
        assert_eq!(c.listeners[0].proxy_trusted, ["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        for (extra, expect) in [
            ("proxy_protocol = true", "listeners[0] (sub): proxy_protocol = true needs proxy_trusted"),
            ("proxy_protocol = true\nproxy_trusted = []", "listeners[0] (sub).proxy_trusted is empty"),
            ("proxy_trusted = [\"10.0.0.1\"]", "proxy_trusted is set but proxy_protocol is not"),
            (
                "proxy_protocol = true\nproxy_trusted = [\"10.0.0.0/8\", \"haproxy.internal\"]",
                "listeners[0] (sub).proxy_trusted: \"haproxy.internal\" is not an IP address or a CIDR range",
            ),
        ] {
            let e = listener(extra).unwrap_err();
            assert!(e.message.contains(expect), "{extra}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("[server]\nhostnme = \"x\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.message.contains("hostnme"), "{e}");
    }

    /// The reference documentation states every default; keep it honest.
    #[test]
    fn documented_defaults_match_the_code() {
        use defaults::*;
        let doc = include_str!("../docs/configuration.md");
        let expect = [
            ("hostname", format!("`\"{HOSTNAME}\"`")),
            ("state_dir", format!("`\"{STATE_DIR}\"`")),
            ("shutdown_grace_secs", format!("`{SHUTDOWN_GRACE_SECS}`")),
            ("message_size", format!("`{MESSAGE_SIZE}`")),
            ("recipients", format!("`{RECIPIENTS}`")),
            ("command_line", format!("`{COMMAND_LINE}`")),
            ("auth_line", format!("`{AUTH_LINE}`")),
            ("text_line", format!("`{TEXT_LINE}`")),
            ("command_timeout_secs", format!("`{COMMAND_TIMEOUT_SECS}`")),
            ("data_timeout_secs", format!("`{DATA_TIMEOUT_SECS}`")),
            ("max_errors", format!("`{MAX_ERRORS}`")),
            ("max_connections", format!("`{MAX_CONNECTIONS}`")),
            ("max_connections_per_ip", format!("`{MAX_CONNECTIONS_PER_IP}`")),
            ("call_timeout_ms", format!("`{CALL_TIMEOUT_MS}`")),
            ("memory_limit_mb", format!("`{MEMORY_LIMIT_MB}`")),
            ("timeout_secs", format!("`{RELAY_TIMEOUT_SECS}`")),
            ("connection_max_messages", format!("`{CONNECTION_MAX_MESSAGES}`")),
            ("connection_idle_secs", format!("`{CONNECTION_IDLE_SECS}`")),
            ("bare_line_endings", "`\"reject\"`".to_string()),
            ("keys", format!("`\"{DKIM_KEYS}\"`")),
            ("retry_schedule_secs", format!("`{RETRY_SCHEDULE_SECS:?}`")),
            ("max_age_secs", format!("`{MAX_AGE_SECS}`")),
            ("concurrency", format!("`{QUEUE_CONCURRENCY}`")),
            ("verify_certificate", "`true`".to_string()),
            ("proxy_protocol", "`false`".to_string()),
            ("proxy_trusted", "none: required with `proxy_protocol`".to_string()),
            ("timeout_secs", format!("`{SENDMAIL_TIMEOUT_SECS}`")),
            ("domain", "`server.hostname`".to_string()),
            ("failures_per_ip", format!("`{AUTH_FAILURES_PER_IP}`")),
            ("failures_per_login", format!("`{AUTH_FAILURES_PER_LOGIN}`")),
            ("failure_window_secs", format!("`{AUTH_FAILURE_WINDOW_SECS}`")),
            ("ban_secs", format!("`{AUTH_BAN_SECS}`")),
            ("failure_delay_ms", format!("`{AUTH_FAILURE_DELAY_MS}`")),
            ("max_failure_delay_ms", format!("`{AUTH_MAX_FAILURE_DELAY_MS}`")),
            ("exempt_networks", "`[]`".to_string()),
            ("redis", "none: counters in memory".to_string()),
            ("prefix", format!("`\"{COUNTERS_PREFIX}\"`")),
            ("timeout_ms", format!("`{COUNTERS_TIMEOUT_MS}`")),
            ("on_redis_error", "`\"local\"`".to_string()),
            ("max_keys", format!("`{COUNTERS_MAX_KEYS}`")),
            ("workers", "`0`: one per CPU".to_string()),
            ("cache", "`true`".to_string()),
            ("cache_size", format!("`{PASSWORD_CACHE_SIZE}`")),
            ("cache_ttl_secs", format!("`{PASSWORD_CACHE_TTL_SECS}`")),
            ("url", "required".to_string()),
            ("max_connections", format!("`{DB_MAX_CONNECTIONS}`")),
            ("query_timeout_ms", format!("`{QUERY_TIMEOUT_MS}`")),
            ("max_rows", format!("`{MAX_ROWS}`")),
            ("max_result_bytes", format!("`{MAX_RESULT_BYTES}`")),
            ("migrate", "`false`".to_string()),
            ("database", "`\"users\"`".to_string()),
            ("preset", "`\"default\"`".to_string()),
        ];
        for (key, default) in expect {
            let row = format!("| `{key}` | {default}");
            assert!(doc.contains(&row), "docs/configuration.md has no row starting {row:?}");
        }
        let c = parse("[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.r]\nhost = \"h.example\"\n").unwrap();
        assert_eq!(c.limits.bare_line_endings, BareLineEndings::Reject);
        let Relay::Smtp(r) = &c.relays["r"] else { panic!() };
        assert!(r.verify_certificate);
        assert_eq!((r.port, r.tls), (587, TlsMode::Starttls));
        assert_eq!(c.counters.on_redis_error, OnRedisError::Local);
        assert!(c.counters.redis.is_none() && c.auth_limits.exempt_networks.is_empty());
    }

    #[test]
    fn auth_limits_and_counters() {
        let c = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[auth_limits]\nfailures_per_ip = 3\nban_secs = 2\nexempt_networks = [\"192.0.2.0/24\", \"2001:db8::1\"]\n[counters]\nredis = \"redis://:secret@127.0.0.1:6379/2\"\nprefix = \"eu:\"\n",
        )
        .unwrap();
        assert_eq!(c.auth_limits.failures_per_ip, 3);
        assert_eq!(c.auth_limits.ban, Duration::from_secs(2));
        assert_eq!(c.auth_limits.exempt_networks.len(), 2);
        assert_eq!(c.counters.prefix, "eu:");
        let shown = format!("{:?}", c.counters);
        assert!(!shown.contains("secret") && shown.contains("@127.0.0.1:6379/2"), "{shown}");
        for (text, expect) in [
            ("[counters]\nredis = \"http://x\"", "counters.redis:"),
            ("[counters]\nmax_keys = 10", "counters.max_keys = 10"),
            ("[counters]\non_redis_error = \"ignore\"", "on_redis_error"),
            ("[auth_limits]\nban_secs = 0", "auth_limits.ban_secs"),
            ("[auth_limits]\nexempt_networks = [\"office\"]", "auth_limits.exempt_networks: \"office\""),
        ] {
            let e = parse(&format!("[[listeners]]\naddress = \"127.0.0.1:1\"\n{text}\n")).unwrap_err();
            assert!(e.message.contains(expect), "{text}: {e}");
        }
    }

    #[test]
    fn tls_certificates_by_name() {
        let c = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             [[tls.certificates]]\ncert = \"/le/b/fullchain.pem\"\nkey = \"/le/b/privkey.pem\"\n\
             [[tls.certificates]]\ncert = \"c.pem\"\nkey = \"c.key\"\nnames = [\"Mail.Example.org.\", \"*.example.net\"]\n",
        )
        .unwrap();
        assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/etc/mf/a.pem")));
        assert_eq!(c.tls.certificates.len(), 2);
        assert_eq!(c.tls.certificates[0].key, Path::new("/le/b/privkey.pem"));
        assert_eq!(c.tls.certificates[0].names, None);
        assert_eq!(
            c.tls.certificates[1].names.as_deref(),
            Some(&["mail.example.org".to_string(), "*.example.net".to_string()][..])
        );
        for (names, why) in [
            ("[]", "tls.certificates[0].names is empty"),
            ("[\"a.*.example\"]", "is not a host name"),
            ("[\"192.0.2.1\"]", "is an IP address"),
            ("[\"*\"]", "is not a host name"),
        ] {
            let e = parse(&format!(
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[tls.certificates]]\ncert = \"c\"\nkey = \"k\"\nnames = {names}\n"
            ))
            .unwrap_err();
            assert!(e.message.contains(why), "{names}: {e}");
        }
        let e = parse("[[listeners]]\naddress = \"127.0.0.1:1\"\n[[tls.certificates]]\ncert = \"c\"\n").unwrap_err();
        assert!(e.message.contains("key"), "{e}");
    }

    #[test]
    fn ipv4_mapped_networks_mean_their_ipv4_range() {
        assert_eq!(parse_net("::ffff:10.0.0.0/104"), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_net("::ffff:192.0.2.7"), Some("192.0.2.7/32".parse().unwrap()));
        assert_eq!(parse_net("2001:db8::/32"), Some("2001:db8::/32".parse().unwrap()));
        assert_eq!(parse_net("::/0"), Some("::/0".parse().unwrap()));
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("MF_TEST_SECRET", "s3cret");
        assert_eq!(expand_env("a${MF_TEST_SECRET}b").unwrap(), "as3cretb");
        assert_eq!(
            expand_env("${MF_TEST_UNSET_VAR}").unwrap_err(),
            "environment variable MF_TEST_UNSET_VAR is not set (referenced as ${MF_TEST_UNSET_VAR})"
        );
        std::env::set_var("MF_TEST_EMPTY_VAR", "");
        assert!(expand_env("x${MF_TEST_EMPTY_VAR}").unwrap_err().contains("MF_TEST_EMPTY_VAR is set but empty"));
    }

    /// One `[relays.r]` table after a minimal listener.
    fn relay(body: &str) -> Result<SmtpRelay, ConfigError> {
        std::env::set_var("MF_TEST_RELAY_SECRET", "s3cret");
        let c = parse(&format!("[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.r]\n{body}"))?;
        let Relay::Smtp(r) = c.relays["r"].clone() else { panic!("not an smtp relay") };
        Ok(r)
    }

    fn relay_err(body: &str) -> String {
        relay(body).map(|r| panic!("accepted: {r:?}")).unwrap_err().message
    }

    #[test]
    fn ses_preset() {
        let r = relay("provider = \"ses\"\nregion = \"eu-west-1\"\nuser = \"AKIAEXAMPLE\"\npassword = \"${MF_TEST_RELAY_SECRET}\"\n")
            .unwrap();
        assert_eq!(r.host, "email-smtp.eu-west-1.amazonaws.com");
        assert_eq!((r.port, r.tls), (587, TlsMode::Starttls));
        assert_eq!((r.user.as_deref(), r.password.as_deref()), (Some("AKIAEXAMPLE"), Some("s3cret")));
        assert_eq!(r.provider, Some(Provider::Ses));
        assert_eq!((r.max_recipients, r.max_message_size), (Some(50), Some(40_000_000)));
        assert!(r.extra_headers.is_empty());
        // Implicit TLS moves the port with it.
        let r = relay(
            "provider = \"ses\"\nregion = \"us-east-2\"\ntls = \"implicit\"\nuser = \"AKIA\"\npassword = \"p\"\n",
        )
        .unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls), ("email-smtp.us-east-2.amazonaws.com", 465, TlsMode::Implicit));
    }

    #[test]
    fn ses_needs_a_region_and_credentials() {
        let e = relay_err("provider = \"ses\"\nuser = \"AKIA\"\npassword = \"p\"\n");
        assert!(e.contains("relays.r: provider = \"ses\" needs region"), "{e}");
        assert!(e.contains("eu-west-1") && e.contains("us-east-1"), "the usual regions are listed: {e}");
        let e = relay_err("provider = \"ses\"\nregion = \"Ireland\"\nuser = \"AKIA\"\npassword = \"p\"\n");
        assert!(e.contains("relays.r.region = \"Ireland\" is not an AWS region"), "{e}");
        let e = relay_err("provider = \"ses\"\nregion = \"eu-west-1\"\npassword = \"p\"\n");
        assert!(e.contains("needs user = \"AKIA...\" and password") && e.contains("not your IAM access keys"), "{e}");
        let e = relay_err("provider = \"ses\"\nregion = \"eu-west-1\"\n");
        assert!(e.contains("SES SMTP credentials"), "{e}");
        // A host of your own (e.g. a VPC endpoint) needs no region.
        let r = relay("provider = \"ses\"\nhost = \"vpce-1.email-smtp.eu-west-1.vpce.amazonaws.com\"\nuser = \"AKIA\"\npassword = \"p\"\n")
            .unwrap();
        assert_eq!(r.host, "vpce-1.email-smtp.eu-west-1.vpce.amazonaws.com");
        assert_eq!(r.max_recipients, Some(50));
    }

    #[test]
    fn sendgrid_preset() {
        let r = relay("provider = \"sendgrid\"\npassword = \"SG.x.y\"\n").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp.sendgrid.net", 587, TlsMode::Starttls));
        assert_eq!((r.user.as_deref(), r.password.as_deref()), (Some("apikey"), Some("SG.x.y")));
        assert_eq!((r.max_recipients, r.max_message_size), (Some(1000), Some(30_000_000)));
        assert_eq!(r.extra_headers, vec![("X-SMTPAPI".to_string(), SENDGRID_SMTPAPI.to_string())]);
        // The header is JSON turning both tracking filters off.
        assert!(SENDGRID_SMTPAPI.contains(r#""clicktrack":{"settings":{"enable":0}}"#));
        assert!(SENDGRID_SMTPAPI.contains(r#""opentrack":{"settings":{"enable":0}}"#));
        // Writing the literal user is fine too.
        assert_eq!(
            relay("provider = \"sendgrid\"\nuser = \"apikey\"\npassword = \"k\"\n").unwrap().user.as_deref(),
            Some("apikey")
        );
    }

    #[test]
    fn sendgrid_logs_in_as_apikey_only() {
        let e = relay_err("provider = \"sendgrid\"\nuser = \"me@example.com\"\npassword = \"k\"\n");
        assert!(
            e.contains("relays.r.user = \"me@example.com\": SendGrid SMTP logs in as the literal user `apikey` with an API key as password"),
            "{e}"
        );
        let e = relay_err("provider = \"sendgrid\"\n");
        assert!(e.contains("needs password = \"${SENDGRID_API_KEY}\""), "{e}");
    }

    #[test]
    fn resend_preset() {
        let r = relay("provider = \"resend\"\npassword = \"re_x\"\n").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp.resend.com", 465, TlsMode::Implicit));
        assert_eq!(r.user.as_deref(), Some("resend"));
        assert_eq!((r.max_recipients, r.max_message_size), (Some(50), Some(40_000_000)));
        let r = relay("provider = \"resend\"\ntls = \"starttls\"\npassword = \"re_x\"\n").unwrap();
        assert_eq!((r.port, r.tls), (587, TlsMode::Starttls));
        let e = relay_err("provider = \"resend\"\nuser = \"apikey\"\npassword = \"re_x\"\n");
        assert!(e.contains("Resend SMTP logs in as the literal user `resend`"), "{e}");
    }

    #[test]
    fn mailgun_preset() {
        let r = relay("provider = \"mailgun\"\nuser = \"postmaster@mg.example.com\"\npassword = \"p\"\n").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp.mailgun.org", 587, TlsMode::Starttls));
        assert_eq!((r.max_recipients, r.max_message_size), (Some(1000), Some(25_000_000)));
        let r =
            relay("provider = \"mailgun\"\nregion = \"eu\"\nuser = \"postmaster@mg.example.com\"\npassword = \"p\"\n")
                .unwrap();
        assert_eq!(r.host, "smtp.eu.mailgun.org");
        assert_eq!(
            relay("provider = \"mailgun\"\nregion = \"us\"\nuser = \"a@b\"\npassword = \"p\"\n").unwrap().host,
            "smtp.mailgun.org"
        );
        let e = relay_err("provider = \"mailgun\"\nregion = \"eu-west-1\"\nuser = \"a@b\"\npassword = \"p\"\n");
        assert!(e.contains("Mailgun's regions are \"us\"") && e.contains("\"eu\""), "{e}");
        let e = relay_err("provider = \"mailgun\"\nuser = \"postmaster\"\npassword = \"p\"\n");
        assert!(e.contains("relays.r.user = \"postmaster\": Mailgun SMTP logins are full addresses"), "{e}");
        let e = relay_err("provider = \"mailgun\"\npassword = \"p\"\n");
        assert!(e.contains("needs user = \"postmaster@mg.example.com\""), "{e}");
    }

    #[test]
    fn postmark_preset() {
        // The Server API token alone: it is the user too.
        let r = relay("provider = \"postmark\"\npassword = \"${MF_TEST_RELAY_SECRET}\"\n").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp.postmarkapp.com", 587, TlsMode::Starttls));
        assert_eq!((r.user.as_deref(), r.password.as_deref()), (Some("s3cret"), Some("s3cret")));
        assert_eq!((r.max_recipients, r.max_message_size), (Some(50), Some(10_000_000)));
        // SMTP tokens (access key and secret) differ, and are taken as written.
        let r = relay("provider = \"postmark\"\nuser = \"access\"\npassword = \"secret\"\n").unwrap();
        assert_eq!((r.user.as_deref(), r.password.as_deref()), (Some("access"), Some("secret")));
        let e = relay_err("provider = \"postmark\"\ntls = \"implicit\"\npassword = \"t\"\n");
        assert!(e.contains("Postmark offers no implicit-TLS port"), "{e}");
        let e = relay_err("provider = \"postmark\"\nuser = \"t\"\n");
        assert!(e.contains("needs password = \"${POSTMARK_SERVER_TOKEN}\""), "{e}");
    }

    #[test]
    fn brevo_preset() {
        let r = relay("provider = \"brevo\"\nuser = \"login@smtp-brevo.com\"\npassword = \"xsmtpsib-k\"\n").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp-relay.brevo.com", 587, TlsMode::Starttls));
        assert_eq!((r.max_recipients, r.max_message_size), (Some(99), Some(20_000_000)));
        let e = relay_err("provider = \"brevo\"\npassword = \"k\"\n");
        assert!(e.contains("an SMTP key (not an API key)"), "{e}");
    }

    #[test]
    fn explicit_keys_override_a_preset() {
        let r = relay(
            "provider = \"postmark\"\nhost = \"smtp-broadcasts.postmarkapp.com\"\nport = 2525\npassword = \"t\"\nmax_recipients = 10\nmax_message_size = 5000000\n",
        )
        .unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls), ("smtp-broadcasts.postmarkapp.com", 2525, TlsMode::Starttls));
        assert_eq!((r.max_recipients, r.max_message_size), (Some(10), Some(5_000_000)));
        // Implicit TLS on an explicit port, even where the preset has none.
        let r = relay("provider = \"postmark\"\ntls = \"implicit\"\nport = 4465\npassword = \"t\"\n").unwrap();
        assert_eq!((r.port, r.tls), (4465, TlsMode::Implicit));
        // Limits on a plain smarthost; none by default.
        let r = relay("host = \"smtp.example.com\"\nmax_recipients = 20\n").unwrap();
        assert_eq!((r.provider, r.max_recipients, r.max_message_size), (None, Some(20), None));
        assert!(r.extra_headers.is_empty());
    }

    #[test]
    fn provider_mistakes_name_the_key() {
        let e = relay_err("provider = \"sparkpost\"\n");
        assert!(
            e.contains("relays.r.provider = \"sparkpost\" is not a known provider; use one of \"ses\", \"sendgrid\""),
            "{e}"
        );
        let e = relay_err("kind = \"outbox\"\ndir = \"out\"\nprovider = \"ses\"\n");
        assert!(e.contains("relays.r: provider = \"ses\" sets up an SMTP relay, but kind = \"outbox\""), "{e}");
        let e = relay_err("host = \"smtp.example.com\"\nregion = \"eu-west-1\"\n");
        assert!(e.contains("relays.r.region is only used with provider = \"ses\" or \"mailgun\""), "{e}");
        let e = relay_err("provider = \"sendgrid\"\nregion = \"eu\"\npassword = \"k\"\n");
        assert!(e.contains("relays.r.region: SendGrid has no regions"), "{e}");
        let e = relay_err("provider = \"sendgrid\"\npassword = \"k\"\nmax_recipients = 0\n");
        assert!(e.contains("relays.r.max_recipients must be at least 1"), "{e}");
        let e = relay_err("provider = \"sendgrid\"\npassword = \"k\"\nmax_message_size = 30\n");
        assert!(e.contains("relays.r.max_message_size = 30 is below the minimum"), "{e}");
        let e = relay_err("provider = \"sendgrid\"\npassword = \"k\"\ntls = \"none\"\n");
        assert!(e.contains("refusing to send the upstream password in clear text to smtp.sendgrid.net"), "{e}");
        let e = relay_err("user = \"u\"\n");
        assert!(e.contains("needs host = \"smtp.example.com\", or provider = \"ses\""), "{e}");
    }

    #[test]
    fn providers_doc_matches_the_presets() {
        let doc = include_str!("../docs/providers.md");
        for p in Provider::ALL {
            let host = match p {
                Provider::Ses => "email-smtp.<region>.amazonaws.com".to_string(),
                _ => p.host(None),
            };
            let tls = match p.tls() {
                TlsMode::Implicit => "implicit",
                _ => "STARTTLS",
            };
            let row = format!(
                "| `{}` | `{host}` | {} | {tls} | {} | {} | {} MB |",
                p.name(),
                p.port(p.tls()).unwrap(),
                match p.fixed_user() {
                    Some(u) => format!("`{u}`"),
                    None if p == Provider::Postmark => "the token".to_string(),
                    None => "yours".to_string(),
                },
                p.max_recipients(),
                p.max_message_size() / MB,
            );
            assert!(doc.contains(&row), "docs/providers.md has no row {row:?}");
        }
        assert!(doc.contains(SENDGRID_SMTPAPI), "docs/providers.md shows the X-SMTPAPI value");
    }

    #[test]
    fn admin_commands_need_no_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mailferry.toml");
        std::fs::write(
            &file,
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[plugins]]\nname = \"auth-flat-file\"\nread_dirs = [\"auth\"]\n\
             [plugins.config]\ndsn = \"${MF_TEST_UNSET_DSN}\"\n[relays.up]\nprovider = \"sendgrid\"\n\
             password = \"${MF_TEST_UNSET_KEY}\"\n[routes.default]\nrelays = [\"up\"]\n[dkim]\nkeys = \"keys\"\n",
        )
        .unwrap();
        let e = Config::load(&file).unwrap_err();
        assert!(e.message.contains("MF_TEST_UNSET_KEY is not set"), "{e}");
        let c = Config::load_for_admin(&file).unwrap();
        assert_eq!(c.plugins[0].read_dirs[0].0, dir.path().join("auth"));
        assert_eq!(c.plugins[0].config["dsn"].as_str(), Some("${MF_TEST_UNSET_DSN}"));
        assert_eq!(c.dkim.keys, dir.path().join("keys"));
        assert!(c.relays.is_empty() && c.routes.is_empty());
        // Mistakes are still reported.
        std::fs::write(&file, "[[listeners]]\naddress = \"127.0.0.1:1\"\n[dkim]\nkeyz = \"k\"\n").unwrap();
        assert!(Config::load_for_admin(&file).unwrap_err().message.contains("keyz"));
    }

    #[test]
    fn databases_and_sql_grants() {
        std::env::set_var("MF_TEST_DB_SECRET", "p@ss:word");
        let c = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n\
             [databases.users]\nurl = \"sqlite://data/users.db\"\nmigrate = true\n\
             [databases.pfa]\nurl = \"postgres://mailferry:${MF_TEST_DB_SECRET}@db.example/postfix?sslmode=require\"\nmax_rows = 10\n\
             [databases.dovecot]\nurl = \"mysql://mailferry@db.example/mail\"\npassword = \"${MF_TEST_DB_SECRET}\"\nquery_timeout_ms = 500\n\
             [[plugins]]\nname = \"auth-sql\"\ngrants = [\"password\", \"sql:pfa\", \"sql:dovecot\", \"sql:pfa\"]\n",
        )
        .unwrap();
        let users = &c.databases["users"];
        assert_eq!(users.kind, DatabaseKind::Sqlite(PathBuf::from("/etc/mf/data/users.db")));
        assert!(users.migrate);
        assert_eq!((users.max_connections, users.max_rows), (defaults::DB_MAX_CONNECTIONS, defaults::MAX_ROWS));
        let pfa = &c.databases["pfa"];
        assert_eq!((pfa.kind.clone(), pfa.max_rows, pfa.migrate), (DatabaseKind::Postgres, 10, false));
        let dovecot = &c.databases["dovecot"];
        assert_eq!(dovecot.kind, DatabaseKind::MySql);
        assert_eq!(dovecot.password.as_deref(), Some("p@ss:word"));
        assert_eq!(dovecot.query_timeout, Duration::from_millis(500));
        assert_eq!(c.plugins[0].grants, [Grant::Password, Grant::Sql]);
        assert_eq!(c.plugins[0].databases, ["pfa", "dovecot"]);
        // The password shows nowhere in what may be logged.
        let shown = format!("{c:?}");
        assert!(!shown.contains("p@ss:word") && shown.contains("mailferry:***@db.example"), "{shown}");
        assert_eq!(
            redact_url("mysql://u@h/db?password=x&ssl-mode=required"),
            "mysql://u@h/db?password=***&ssl-mode=required"
        );

        let err = |body: &str| parse(&format!("[[listeners]]\naddress = \"127.0.0.1:1\"\n{body}")).unwrap_err().message;
        let e = err("[databases.x]\nurl = \"oracle://h/db\"\n");
        assert!(e.contains("databases.x.url = \"oracle://h/db\": use \"sqlite://FILE\""), "{e}");
        let e = err("[databases.x]\nurl = \"postgres://u:secret@h:notaport/db\"\n");
        assert!(e.contains("databases.x.url") && !e.contains("secret"), "{e}");
        let e = err("[databases.x]\nurl = \"sqlite:\"\n");
        assert!(e.contains("write \"sqlite://FILE\""), "{e}");
        let e = err("[databases.x]\nurl = \"sqlite://x.db\"\nmax_connections = 0\n");
        assert!(e.contains("databases.x.max_connections must be at least 1"), "{e}");
        let e = err("[databases.x]\nurl = \"sqlite://x.db\"\n[[plugins]]\nname = \"auth-sql\"\ngrants = [\"sql\"]\n");
        assert!(
            e.contains("\"sql\" needs the database it grants: \"sql:NAME\" for a [databases.NAME]; known: \"x\""),
            "{e}"
        );
        let e = err("[[plugins]]\nname = \"auth-sql\"\ngrants = [\"sql:users\"]\n");
        assert!(e.contains("\"sql:users\": there is no [databases.users]; add one"), "{e}");
        let e = err("[databases.x]\nurl = \"${MF_TEST_UNSET_DB}\"\n");
        assert!(e.contains("MF_TEST_UNSET_DB is not set"), "{e}");
        let e = err("[[plugins]]\nname = \"limits:a\"\npath = \"x.wasm\"\n");
        assert!(e.contains("name \"limits:a\": a plugin name is letters, digits"), "{e}");
    }

    #[test]
    fn missing_env_in_relay_password_is_an_error() {
        let e = parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.up]\nhost = \"smtp.example.com\"\nuser = \"u\"\npassword = \"${MF_TEST_UNSET_PW}\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("MF_TEST_UNSET_PW is not set"), "{e}");
    }
}
