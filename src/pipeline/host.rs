//! Host capabilities: what a plugin may ask of the host, one import interface
//! each. `log`, `config`, `session`, `notes` and `message` are always linked
//! (they only expose the plugin's own data and the current session);
//! `password`, `outbound`, `dkim`, `counters` and `sql` only when granted in
//! the configuration, so a plugin importing them without a grant fails to
//! load with a clear error. `sql` is further limited to the databases named
//! in the plugin's `sql:NAME` grants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{bail, format_err, Result};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::mailferry::plugin::{config, counters, dkim, log, message, notes, outbound, password, session, sql, types};
use super::output::PluginOutput;
use super::{wit, LoadedPlugin, PluginLimits};
use crate::config::{Config, Grant};
use crate::message::{check_new_header, Header, Message};
use crate::outbound::Relays;

/// What the host capabilities reach beyond the session: shared by every
/// plugin instance.
pub struct Services {
    pub relays: Arc<Relays>,
    pub dkim: Arc<crate::dkim::Keys>,
    /// The delivery queue; `None` outside `serve` (`check`, benchmarks).
    pub queue: Option<Arc<crate::queue::Queue>>,
    pub routes: std::collections::BTreeMap<String, crate::config::Route>,
    /// Bans and rate limits; kept across reloads (`[counters]` needs a restart).
    pub counters: Arc<crate::counters::Counters>,
    /// The `[databases]` pools (connected on first use).
    pub databases: Arc<crate::sql::Databases>,
    /// Password verification: the hashing workers and the cache of
    /// verified logins; kept across reloads (`[passwords]` needs a restart).
    pub passwords: Arc<crate::password::Verifier>,
}

impl Services {
    /// Relays and DKIM keys as configured; a bad key stops the start.
    pub fn from_config(config: &Config) -> anyhow::Result<Services> {
        let relays = Arc::new(Relays::from_config(config)?);
        let dkim = crate::dkim::Keys::load(&config.dkim.keys)
            .map_err(|e| anyhow::anyhow!("DKIM keys (dkim.keys = {}):\n{e}", config.dkim.keys.display()))?;
        let counters = Arc::new(crate::counters::Counters::from_config(&config.counters)?);
        Ok(Services {
            relays,
            dkim: Arc::new(dkim),
            queue: None,
            routes: config.routes.clone(),
            counters,
            databases: Arc::new(crate::sql::Databases::from_config(config, None)),
            passwords: Arc::new(crate::password::Verifier::new(&config.passwords)),
        })
    }

    /// Opens the delivery queue (for `serve`; one server per spool).
    pub fn with_queue(mut self, config: &Config) -> anyhow::Result<Services> {
        self.queue = Some(crate::queue::Queue::open(config, self.relays.clone())?);
        Ok(self)
    }

    /// No relays and no keys (benchmarks, tests).
    pub fn none(config: &Config) -> anyhow::Result<Services> {
        Ok(Services {
            relays: Arc::new(Relays::from_config(config)?),
            dkim: Arc::new(crate::dkim::Keys::none()),
            queue: None,
            routes: config.routes.clone(),
            counters: Arc::new(crate::counters::Counters::memory(config.counters.max_keys)),
            databases: Arc::new(crate::sql::Databases::from_config(config, None)),
            passwords: Arc::new(crate::password::Verifier::new(&config.passwords)),
        })
    }
}

/// Session state shared by the session and all its plugin instances.
#[derive(Default)]
pub struct SessionData {
    pub connection: Option<wit::Connection>,
    pub envelope: Option<wit::Envelope>,
    pub connection_notes: HashMap<String, wit::NoteValue>,
    pub transaction_notes: HashMap<String, wit::NoteValue>,
    pub message: Option<Message>,
}

/// The host side of the `message` resource: the message itself lives in
/// [`SessionData`]; a handle is only valid during a data or queue hook.
pub struct MessageHandle;

/// Per plugin instance state, owned by its wasmtime store.
pub struct HostState {
    wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    plugin: Arc<LoadedPlugin>,
    session: Arc<Mutex<SessionData>>,
    services: Arc<Services>,
    output: PluginOutput,
    /// Guest time of the current hook call, for the CPU budget.
    pub clock: Arc<CallClock>,
    /// Slow host calls (password checks, relaying, SQL) made in the current
    /// hook call. Their time is not charged to the CPU budget, so their number is
    /// bounded instead: a plugin looping on them cannot hold a session forever.
    pub slow_calls: u32,
    /// DKIM signatures made in the current hook call (bounded apart from
    /// slow calls: a domain may well have several keys).
    pub signatures: u32,
    /// Counter calls made in the current hook call.
    pub counter_calls: u32,
    pub call_timeout: Duration,
    message_limit: usize,
}

/// Measures the time a plugin itself uses in one hook call: wall time minus
/// time spent in slow host calls made for it (password hashing, relaying).
/// Shared with the watchdog that runs beside the call, hence atomics.
pub struct CallClock {
    base: Instant,
    started: AtomicU64,
    host: AtomicU64,
    /// When the current slow host call began (+1, so 0 means none).
    in_host_since: AtomicU64,
}

impl CallClock {
    fn new() -> CallClock {
        CallClock {
            base: Instant::now(),
            started: AtomicU64::new(0),
            host: AtomicU64::new(0),
            in_host_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub fn begin(&self) {
        self.started.store(self.now(), Ordering::Relaxed);
        self.host.store(0, Ordering::Relaxed);
        self.in_host_since.store(0, Ordering::Relaxed);
    }

    fn enter_host(&self) {
        self.in_host_since.store(self.now() + 1, Ordering::Relaxed);
    }

    fn leave_host(&self) {
        let since = self.in_host_since.swap(0, Ordering::Relaxed);
        if since > 0 {
            self.host.fetch_add(self.now().saturating_sub(since - 1), Ordering::Relaxed);
        }
    }

    pub fn guest_time(&self) -> Duration {
        let now = self.now();
        let since = self.in_host_since.load(Ordering::Relaxed);
        let current_host = if since > 0 { now.saturating_sub(since - 1) } else { 0 };
        let elapsed = now.saturating_sub(self.started.load(Ordering::Relaxed));
        Duration::from_nanos(elapsed.saturating_sub(self.host.load(Ordering::Relaxed) + current_host))
    }
}

/// Slow host calls allowed in one hook call.
pub const MAX_SLOW_CALLS: u32 = 8;

/// DKIM signatures allowed in one hook call.
pub const MAX_SIGNATURES: u32 = 16;

/// Counter calls allowed in one hook call (a Redis round trip each).
pub const MAX_COUNTER_CALLS: u32 = 16;

/// Longest key a plugin may give a counter.
const MAX_COUNTER_KEY: usize = 512;

impl HostState {
    pub fn new(
        plugin: Arc<LoadedPlugin>,
        session: Arc<Mutex<SessionData>>,
        services: Arc<Services>,
        limits: &PluginLimits,
    ) -> Result<HostState> {
        let output = PluginOutput::default();
        let mut wasi = WasiCtxBuilder::new();
        // No environment, no arguments, no sockets, no files unless granted.
        wasi.stderr(output.clone()).stdout(output.clone());
        // Plugins read small files (a users file, a senders list) from the
        // folders granted to them: on the calling thread, rather than a
        // trip through the blocking pool for each open, stat and read.
        wasi.allow_blocking_current_thread(true);
        for (host_dir, guest_dir) in &plugin.read_dirs {
            wasi.preopened_dir(host_dir, guest_dir, FsPerms::ReadOnly)?;
        }
        Ok(HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory)
                .memories(2)
                .trap_on_grow_failure(true)
                .instances(64)
                .build(),
            plugin,
            session,
            services,
            output,
            clock: Arc::new(CallClock::new()),
            slow_calls: 0,
            signatures: 0,
            counter_calls: 0,
            call_timeout: limits.call_timeout,
            message_limit: limits.message_size,
        })
    }

    fn count_slow_call(&mut self) -> Result<()> {
        self.slow_calls += 1;
        if self.slow_calls > MAX_SLOW_CALLS {
            bail!("made more than {MAX_SLOW_CALLS} password, relay, queue or SQL calls in one hook call");
        }
        Ok(())
    }

    fn session(&self) -> std::sync::MutexGuard<'_, SessionData> {
        self.session.lock().unwrap()
    }

    fn session_id(&self) -> String {
        self.session().connection.as_ref().map(|c| c.id.clone()).unwrap_or_default()
    }

    /// What the plugin wrote to stdout/stderr since the last call (panic
    /// messages among it).
    pub fn take_output(&self) -> String {
        self.output.take()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Adds WASI (deny-by-default) and the interfaces this plugin may use.
pub fn link(linker: &mut Linker<HostState>, grants: &[Grant]) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    session::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    notes::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    message::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    if grants.contains(&Grant::Password) {
        password::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    if grants.contains(&Grant::Outbound) {
        outbound::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    if grants.contains(&Grant::Dkim) {
        dkim::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    if grants.contains(&Grant::Counters) {
        counters::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    if grants.contains(&Grant::Sql) {
        sql::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    Ok(())
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn write(&mut self, level: types::Level, message: String) -> Result<()> {
        let plugin = self.plugin.name.as_str();
        let session = self.session_id();
        // Bound what a plugin can put in one log line.
        let message: String = message.chars().take(2000).map(|c| if c.is_control() { ' ' } else { c }).collect();
        match level {
            types::Level::Trace => tracing::trace!(plugin, session, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, session, "{message}"),
            types::Level::Info => tracing::info!(plugin, session, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, session, "{message}"),
            types::Level::Error => tracing::error!(plugin, session, "{message}"),
        }
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self) -> Result<String> {
        Ok(self.plugin.config_toml.clone())
    }
}

impl session::Host for HostState {
    fn connection(&mut self) -> Result<wit::Connection> {
        self.session().connection.clone().ok_or_else(|| format_err!("no connection"))
    }

    fn envelope(&mut self) -> Result<Option<wit::Envelope>> {
        Ok(self.session().envelope.clone())
    }
}

const MAX_NOTE_KEY: usize = 256;
const MAX_NOTE: usize = 64 * 1024;
const MAX_NOTES_TOTAL: usize = 1024 * 1024;
/// How far plugins' header edits may take a message past the size limit.
const HEADER_GROWTH: usize = 64 * 1024;

fn note_size(key: &str, value: &wit::NoteValue) -> usize {
    key.len()
        + match value {
            wit::NoteValue::Text(t) => t.len(),
            wit::NoteValue::Texts(v) => v.iter().map(|t| t.len() + 8).sum(),
            wit::NoteValue::Integer(_) | wit::NoteValue::Flag(_) => 8,
        }
}

impl notes::Host for HostState {
    fn get(&mut self, scope: notes::Scope, key: String) -> Result<Option<wit::NoteValue>> {
        let s = self.session();
        Ok(match scope {
            notes::Scope::Connection => s.connection_notes.get(&key).cloned(),
            notes::Scope::Transaction => s.transaction_notes.get(&key).cloned(),
        })
    }

    fn set(&mut self, scope: notes::Scope, key: String, value: wit::NoteValue) -> Result<()> {
        let mut s = self.session();
        // Notes live in host memory, outside the plugin's memory cap: bound
        // what plugins can pile up in one session.
        let size = note_size(&key, &value);
        let total: usize =
            s.connection_notes.iter().chain(s.transaction_notes.iter()).map(|(k, v)| note_size(k, v)).sum();
        let replaced = match scope {
            notes::Scope::Connection => s.connection_notes.get(&key),
            notes::Scope::Transaction => s.transaction_notes.get(&key),
        }
        .map(|v| note_size(&key, v))
        .unwrap_or(0);
        let others = total - replaced;
        if key.len() > MAX_NOTE_KEY || size > MAX_NOTE {
            bail!(
                "note {:?}: key over {MAX_NOTE_KEY} or value over {MAX_NOTE} octets",
                key.chars().take(40).collect::<String>()
            );
        }
        if others + size > MAX_NOTES_TOTAL {
            bail!("notes over {MAX_NOTES_TOTAL} octets in one session");
        }
        let map = match scope {
            notes::Scope::Connection => &mut s.connection_notes,
            notes::Scope::Transaction => &mut s.transaction_notes,
        };
        if map.len() >= 1000 && !map.contains_key(&key) {
            bail!("too many notes (limit 1000)");
        }
        map.insert(key, value);
        Ok(())
    }

    fn remove(&mut self, scope: notes::Scope, key: String) -> Result<()> {
        let mut s = self.session();
        match scope {
            notes::Scope::Connection => s.connection_notes.remove(&key),
            notes::Scope::Transaction => s.transaction_notes.remove(&key),
        };
        Ok(())
    }
}

impl HostState {
    /// The transaction's envelope and the message as it will be sent.
    fn envelope_and_message(&self) -> Result<(crate::mail::Envelope, Vec<u8>)> {
        let s = self.session();
        let envelope = s.envelope.as_ref().ok_or_else(|| format_err!("no envelope"))?.into();
        let bytes = s.message.as_ref().ok_or_else(|| format_err!("no message"))?.to_bytes();
        Ok((envelope, bytes))
    }

    fn with_message<R>(&self, f: impl FnOnce(&mut Message) -> R) -> Result<R> {
        let mut s = self.session();
        let m =
            s.message.as_mut().ok_or_else(|| format_err!("message handle used outside the data and queue hooks"))?;
        Ok(f(m))
    }
}

impl message::Host for HostState {}

/// Adds a header field unless the message would grow past the size limit
/// (plus a margin for trace and signature fields).
fn add_checked(m: &mut Message, limit: usize, header: Header, first: bool) -> Result<(), String> {
    if m.size() + header.raw.len() > limit + HEADER_GROWTH {
        return Err("the message would exceed the size limit".into());
    }
    if first {
        m.prepend(header)
    } else {
        m.append(header)
    }
    Ok(())
}

impl message::HostMessage for HostState {
    fn headers(&mut self, _: Resource<MessageHandle>) -> Result<Vec<(String, String)>> {
        self.with_message(|m| m.headers.iter().map(|h| (h.name.clone(), h.value())).collect())
    }

    fn header(&mut self, _: Resource<MessageHandle>, name: String) -> Result<Vec<String>> {
        self.with_message(|m| m.header_values(&name))
    }

    fn add_header(&mut self, _: Resource<MessageHandle>, name: String, value: String) -> Result<Result<(), String>> {
        if let Err(e) = check_new_header(&name, &value) {
            return Ok(Err(e));
        }
        let limit = self.message_limit;
        self.with_message(|m| add_checked(m, limit, Header::new(&name, &value), false))
    }

    fn prepend_header(
        &mut self,
        _: Resource<MessageHandle>,
        name: String,
        value: String,
    ) -> Result<Result<(), String>> {
        if let Err(e) = check_new_header(&name, &value) {
            return Ok(Err(e));
        }
        let limit = self.message_limit;
        self.with_message(|m| add_checked(m, limit, Header::new(&name, &value), true))
    }

    fn remove_header(&mut self, _: Resource<MessageHandle>, name: String) -> Result<u32> {
        self.with_message(|m| m.remove(&name) as u32)
    }

    fn size(&mut self, _: Resource<MessageHandle>) -> Result<u64> {
        self.with_message(|m| m.size() as u64)
    }

    fn read_body(&mut self, _: Resource<MessageHandle>, offset: u64, len: u32) -> Result<Vec<u8>> {
        // Bound one read so a plugin cannot make the host copy a whole
        // message into its memory in a single call by accident.
        let len = (len as usize).min(1024 * 1024);
        self.with_message(|m| {
            let start = (offset as usize).min(m.body.len());
            let end = start.saturating_add(len).min(m.body.len());
            m.body[start..end].to_vec()
        })
    }

    fn drop(&mut self, rep: Resource<MessageHandle>) -> Result<()> {
        // The host owns the handle and deletes it after the hook returns;
        // a guest-side drop of a borrow never reaches here, an owned one may.
        let _ = self.table.delete(rep);
        Ok(())
    }
}

impl password::Host for HostState {
    async fn verify(&mut self, password: String, stored: String) -> Result<Result<bool, String>> {
        self.count_slow_call()?;
        self.clock.enter_host();
        let result = self.services.passwords.verify(password, stored).await;
        self.clock.leave_host();
        Ok(result)
    }
}

impl outbound::Host for HostState {
    async fn send_now(
        &mut self,
        relay: String,
        _msg: Resource<MessageHandle>,
    ) -> Result<Result<wit::Reply, outbound::Failure>> {
        self.count_slow_call()?;
        self.clock.enter_host();
        let (envelope, bytes) = self.envelope_and_message()?;
        let id = self.session_id();
        let result = self.services.relays.send_now(&relay, &envelope, bytes, &id).await;
        self.clock.leave_host();
        Ok(result.map(Into::into).map_err(|f| outbound::Failure { temporary: f.temporary, reply: f.reply.into() }))
    }

    async fn enqueue(
        &mut self,
        route: String,
        _msg: Resource<MessageHandle>,
    ) -> Result<Result<String, outbound::Failure>> {
        self.count_slow_call()?;
        let Some(queue) = self.services.queue.clone() else {
            return Ok(Err(outbound::Failure {
                temporary: true,
                reply: wit::Reply {
                    code: 451,
                    enhanced: Some("4.3.0".into()),
                    text: "message not queued: the queue is not running".into(),
                },
            }));
        };
        let (envelope, bytes) = self.envelope_and_message()?;
        let id = self.session_id();
        self.clock.enter_host();
        let result = queue.enqueue(&route, &envelope, bytes, &id).await;
        self.clock.leave_host();
        Ok(result.map_err(|f| outbound::Failure { temporary: f.temporary, reply: f.reply.into() }))
    }

    fn route_for(&mut self, route: String, sender: String) -> Result<Option<String>> {
        Ok(crate::queue::resolve_route(&self.services.routes, &self.services.relays, &route, &sender).ok())
    }

    fn max_message_size(&mut self, route: String) -> Result<Option<u64>> {
        Ok(crate::queue::route_max_size(&self.services.routes, &self.services.relays, &route).map(|s| s as u64))
    }
}

impl dkim::Host for HostState {
    fn default_options(&mut self) -> Result<dkim::SignOptions> {
        let d = crate::dkim::SignOptions::default();
        Ok(dkim::SignOptions {
            headers: d.headers,
            oversign: d.oversign,
            canonicalization: "relaxed/relaxed".into(),
            expire_secs: 0,
        })
    }

    fn keys(&mut self, domain: String) -> Result<Vec<dkim::Key>> {
        Ok(self
            .services
            .dkim
            .current()
            .for_domain(&domain)
            .into_iter()
            .map(|k| dkim::Key {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                algorithm: k.algorithm.tag().into(),
            })
            .collect())
    }

    async fn sign(
        &mut self,
        _msg: Resource<MessageHandle>,
        domain: String,
        selector: String,
        options: dkim::SignOptions,
    ) -> Result<Result<dkim::Signed, String>> {
        self.signatures += 1;
        if self.signatures > MAX_SIGNATURES {
            return Ok(Err(format!("more than {MAX_SIGNATURES} DKIM signatures in one hook call")));
        }
        let Some(key) = self.services.dkim.current().get(&domain, &selector) else {
            return Ok(Err(format!("no DKIM key for domain {domain:?} selector {selector:?}")));
        };
        let opts = match sign_options(options) {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = self.with_message(|m| {
            if !m.is_separated() {
                return Err("the header section is malformed (a line that is not a header field ends it before any empty line); such a message cannot be signed so that receivers agree".to_string());
            }
            // Obsolete `Name :` syntax: signers and verifiers disagree about
            // it, so fix it as a submission server may (RFC 6409 section 8).
            m.fix_field_names();
            Ok(m.to_bytes())
        })?;
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        // Hashing a large body and an RSA signature take milliseconds of
        // host CPU: bounded by MAX_SIGNATURES, not charged to the plugin.
        self.clock.enter_host();
        let signed = crate::dkim::sign(key, bytes, opts).await;
        self.clock.leave_host();
        let field = match signed {
            Ok(crate::dkim::Signed::Added(field)) => field,
            Ok(crate::dkim::Signed::AlreadySigned) => return Ok(Ok(dkim::Signed::AlreadySigned)),
            Err(e) => return Ok(Err(e)),
        };
        let limit = self.message_limit;
        let header = Header { name: "DKIM-Signature".into(), raw: field };
        Ok(self.with_message(|m| add_checked(m, limit, header, true))?.map(|()| dkim::Signed::Added))
    }
}

impl HostState {
    /// Runs one counter call for the plugin, on its own keys: the host's
    /// keys and other plugins' are out of its reach.
    async fn counter<T>(
        &mut self,
        key: &str,
        window_secs: u32,
        call: impl AsyncFnOnce(&crate::counters::Counters, &str, Duration) -> Result<T, crate::counters::CounterError>,
    ) -> Result<Result<T, String>> {
        self.counter_calls += 1;
        if self.counter_calls > MAX_COUNTER_CALLS {
            return Ok(Err(format!("more than {MAX_COUNTER_CALLS} counter calls in one hook call")));
        }
        if key.is_empty() || key.len() > MAX_COUNTER_KEY {
            return Ok(Err(format!("a counter key must be 1 to {MAX_COUNTER_KEY} octets")));
        }
        let key = format!("plugin:{}:{key}", self.plugin.name);
        let counters = self.services.counters.clone();
        // A Redis round trip is the host's time, not the plugin's.
        self.clock.enter_host();
        let result = call(&counters, &key, Duration::from_secs(window_secs.into())).await;
        self.clock.leave_host();
        Ok(result.map_err(|e| e.to_string()))
    }

    /// A take or check; a refusal is counted in `mailferry_rate_limited_total`.
    async fn limited(
        &mut self,
        key: &str,
        window_secs: u32,
        call: impl AsyncFnOnce(
            &crate::counters::Counters,
            &str,
            Duration,
        ) -> Result<crate::counters::Usage, crate::counters::CounterError>,
    ) -> Result<Result<counters::Usage, String>> {
        let usage = self
            .counter(key, window_secs, async |c, k, w| {
                call(c, k, w).await.map(|u| counters::Usage { allowed: u.allowed, count: u.count })
            })
            .await?;
        if matches!(usage, Ok(ref u) if !u.allowed) {
            crate::metrics::get().rate_limited(&self.plugin.name);
        }
        Ok(usage)
    }
}

impl counters::Host for HostState {
    async fn incr(&mut self, key: String, amount: u64, window_secs: u32) -> Result<Result<u64, String>> {
        self.counter(&key, window_secs, async |c, k, w| c.incr(k, amount, w).await).await
    }

    async fn get(&mut self, key: String, window_secs: u32) -> Result<Result<u64, String>> {
        self.counter(&key, window_secs, async |c, k, w| c.get(k, w).await).await
    }

    async fn take(
        &mut self,
        key: String,
        amount: u64,
        limit: u64,
        window_secs: u32,
    ) -> Result<Result<counters::Usage, String>> {
        self.limited(&key, window_secs, async |c, k, w| c.take(k, amount, limit, w).await).await
    }

    async fn check(
        &mut self,
        key: String,
        amount: u64,
        limit: u64,
        window_secs: u32,
    ) -> Result<Result<counters::Usage, String>> {
        self.limited(&key, window_secs, async |c, k, w| c.check(k, amount, limit, w).await).await
    }
}

impl sql::Host for HostState {
    fn databases(&mut self) -> Result<Vec<String>> {
        Ok(self.plugin.databases.clone())
    }

    async fn query(
        &mut self,
        database: String,
        statement: String,
        params: Vec<(String, sql::SqlValue)>,
    ) -> Result<Result<sql::RowSet, sql::SqlError>> {
        // A plugin reaches only the databases it was granted, whatever
        // name it sends.
        let granted = self.plugin.databases.contains(&database);
        let Some(db) = self.services.databases.get(&database).filter(|_| granted).cloned() else {
            return Ok(Err(sql::SqlError {
                temporary: false,
                message: format!(
                    "database {:?} is not granted to this plugin (grants = [\"sql:NAME\"] in its [[plugins]] entry)",
                    database.chars().take(64).collect::<String>()
                ),
            }));
        };
        self.count_slow_call()?;
        let params: Vec<(String, crate::sql::Value)> = params
            .into_iter()
            .map(|(name, v)| {
                let v = match v {
                    sql::SqlValue::Null => crate::sql::Value::Null,
                    sql::SqlValue::Int(i) => crate::sql::Value::Int(i),
                    sql::SqlValue::Float(f) => crate::sql::Value::Float(f),
                    sql::SqlValue::Text(t) => crate::sql::Value::Text(t),
                    sql::SqlValue::Bytes(b) => crate::sql::Value::Bytes(b),
                    sql::SqlValue::Boolean(b) => crate::sql::Value::Bool(b),
                };
                (name, v)
            })
            .collect();
        // Waiting on the database is not the plugin's CPU time; the number
        // of such calls is bounded instead (count_slow_call).
        self.clock.enter_host();
        let result = db.query(&statement, &params).await;
        self.clock.leave_host();
        Ok(match result {
            Ok(rows) => Ok(sql::RowSet {
                columns: rows.columns,
                rows: rows
                    .rows
                    .into_iter()
                    .map(|row| {
                        row.into_iter()
                            .map(|v| match v {
                                crate::sql::Value::Null => sql::SqlValue::Null,
                                crate::sql::Value::Int(i) => sql::SqlValue::Int(i),
                                crate::sql::Value::Float(f) => sql::SqlValue::Float(f),
                                crate::sql::Value::Text(t) => sql::SqlValue::Text(t),
                                crate::sql::Value::Bytes(b) => sql::SqlValue::Bytes(b),
                                crate::sql::Value::Bool(b) => sql::SqlValue::Boolean(b),
                            })
                            .collect()
                    })
                    .collect(),
                affected: rows.affected,
            }),
            Err(e) => {
                // Values are not logged: they may be what a client typed.
                tracing::warn!(
                    plugin = %self.plugin.name,
                    session = %self.session_id(),
                    database = %db.name,
                    temporary = e.temporary,
                    error = %e.message,
                    "SQL statement failed"
                );
                Err(sql::SqlError { temporary: e.temporary, message: e.message })
            }
        })
    }
}

/// Checks a plugin's signing options.
fn sign_options(o: dkim::SignOptions) -> Result<crate::dkim::SignOptions, String> {
    let (h, b) = crate::dkim::parse_canonicalization(&o.canonicalization)?;
    for name in o.headers.iter().chain(&o.oversign) {
        if name.is_empty() || !name.bytes().all(|c| (33..=126).contains(&c) && c != b':') {
            return Err(format!("{name:?} is not a header field name"));
        }
    }
    if o.headers.len() + o.oversign.len() > 200 {
        return Err("more than 200 header names to sign".into());
    }
    if o.expire_secs != 0 && !(crate::dkim::MIN_EXPIRE_SECS..=crate::dkim::MAX_EXPIRE_SECS).contains(&o.expire_secs) {
        return Err(format!(
            "expire_secs = {}: use 0 (no expiry) or between {} and {}",
            o.expire_secs,
            crate::dkim::MIN_EXPIRE_SECS,
            crate::dkim::MAX_EXPIRE_SECS
        ));
    }
    Ok(crate::dkim::SignOptions {
        headers: o.headers,
        oversign: o.oversign,
        header_canonicalization: h,
        body_canonicalization: b,
        expire: (o.expire_secs > 0).then(|| Duration::from_secs(o.expire_secs)),
    })
}
