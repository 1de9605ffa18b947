//! The file as written: kept apart from the resolved types so defaults and validation live in
//! one place (`sections.rs`).

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    #[serde(default)]
    pub(crate) tls: RawTls,
    #[serde(default)]
    pub(crate) listeners: Vec<RawListener>,
    #[serde(default)]
    pub(crate) sandbox: RawSandbox,
    #[serde(default)]
    pub(crate) plugins: Vec<RawPlugin>,
    #[serde(default)]
    pub(crate) relays: BTreeMap<String, RawRelay>,
    #[serde(default)]
    pub(crate) dkim: RawDkim,
    #[serde(default)]
    pub(crate) queue: RawQueue,
    #[serde(default)]
    pub(crate) routes: BTreeMap<String, RawRoute>,
    #[serde(default)]
    pub(crate) admin: RawAdmin,
    #[serde(default)]
    pub(crate) sendmail: RawSendmail,
    #[serde(default)]
    pub(crate) auth_limits: RawAuthLimits,
    #[serde(default)]
    pub(crate) counters: RawCounters,
    #[serde(default)]
    pub(crate) passwords: RawPasswords,
    #[serde(default)]
    pub(crate) databases: BTreeMap<String, RawDatabase>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthLimits {
    pub(crate) failures_per_ip: Option<u64>,
    pub(crate) failures_per_login: Option<u64>,
    pub(crate) failure_window_secs: Option<u64>,
    pub(crate) ban_secs: Option<u64>,
    pub(crate) failure_delay_ms: Option<u64>,
    pub(crate) max_failure_delay_ms: Option<u64>,
    pub(crate) exempt_networks: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCounters {
    pub(crate) redis: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) on_redis_error: Option<OnRedisError>,
    pub(crate) max_keys: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPasswords {
    pub(crate) workers: Option<usize>,
    pub(crate) cache: Option<bool>,
    pub(crate) cache_size: Option<usize>,
    pub(crate) cache_ttl_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    pub(crate) url: String,
    pub(crate) password: Option<String>,
    pub(crate) max_connections: Option<u32>,
    pub(crate) query_timeout_ms: Option<u64>,
    pub(crate) max_rows: Option<usize>,
    pub(crate) max_result_bytes: Option<usize>,
    pub(crate) migrate: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) address: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSendmail {
    pub(crate) listener: Option<String>,
    pub(crate) domain: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) password_file: Option<String>,
    pub(crate) timeout_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub(crate) dir: Option<String>,
    pub(crate) retry_schedule_secs: Option<Vec<u64>>,
    pub(crate) max_age_secs: Option<u64>,
    pub(crate) concurrency: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) relays: Vec<String>,
    #[serde(default)]
    pub(crate) sender_domains: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDkim {
    pub(crate) keys: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) hostname: Option<String>,
    pub(crate) state_dir: Option<String>,
    pub(crate) shutdown_grace_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) command_line: Option<usize>,
    pub(crate) auth_line: Option<usize>,
    pub(crate) text_line: Option<usize>,
    pub(crate) message_size: Option<usize>,
    pub(crate) recipients: Option<usize>,
    pub(crate) command_timeout_secs: Option<u64>,
    pub(crate) data_timeout_secs: Option<u64>,
    pub(crate) max_errors: Option<u32>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) bare_line_endings: Option<BareLineEndings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    #[serde(default)]
    pub(crate) certificates: Vec<RawTlsCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTlsCertificate {
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) names: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub(crate) name: Option<String>,
    pub(crate) address: String,
    pub(crate) tls: Option<TlsMode>,
    pub(crate) require_auth: Option<bool>,
    #[serde(default)]
    pub(crate) trusted_networks: Vec<String>,
    pub(crate) auth_without_tls: Option<bool>,
    pub(crate) proxy_protocol: Option<bool>,
    pub(crate) proxy_trusted: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSandbox {
    pub(crate) call_timeout_ms: Option<u64>,
    pub(crate) memory_limit_mb: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugin {
    pub(crate) name: String,
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) grants: Vec<String>,
    #[serde(default)]
    pub(crate) read_dirs: Vec<String>,
    #[serde(default)]
    pub(crate) config: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRelay {
    pub(crate) kind: Option<String>,
    pub(crate) dir: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) tls: Option<TlsMode>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) verify_certificate: Option<bool>,
    pub(crate) ca_file: Option<String>,
    pub(crate) timeout_secs: Option<u64>,
    pub(crate) helo: Option<String>,
    pub(crate) provider: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) max_recipients: Option<usize>,
    pub(crate) max_message_size: Option<usize>,
    pub(crate) connection_max_messages: Option<u32>,
    pub(crate) connection_idle_secs: Option<u64>,
}
