//! Host capabilities: what a plugin may ask of the host, one import interface
//! each. `log`, `config`, `session`, `notes` and `message` are always linked
//! (they only expose the plugin's own data and the current session);
//! `password` and `outbound` only when granted in the configuration, so a
//! plugin importing them without a grant fails to load with a clear error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{bail, format_err, Result};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::mailferry::plugin::{config, log, message, notes, outbound, password, session, types};
use super::{wit, LoadedPlugin};
use crate::config::Grant;
use crate::message::{check_new_header, Header, Message};
use crate::outbound::Relays;

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
    relays: Arc<Relays>,
    stderr: MemoryOutputPipe,
    /// Start of the current hook call and the host time spent inside it;
    /// the CPU budget counts only the difference.
    pub call_started: Instant,
    pub host_time: Duration,
    /// Slow host calls (password checks, relaying) made in the current hook
    /// call. Their time is not charged to the CPU budget, so their number is
    /// bounded instead: a plugin looping on them cannot hold a session forever.
    pub slow_calls: u32,
    pub call_timeout: Duration,
}

/// Slow host calls allowed in one hook call.
pub const MAX_SLOW_CALLS: u32 = 8;

impl HostState {
    pub fn new(
        plugin: Arc<LoadedPlugin>,
        session: Arc<Mutex<SessionData>>,
        relays: Arc<Relays>,
        call_timeout: Duration,
        memory_limit: usize,
    ) -> Result<HostState> {
        let stderr = MemoryOutputPipe::new(8 * 1024);
        let mut wasi = WasiCtxBuilder::new();
        // No environment, no arguments, no sockets, no files unless granted.
        wasi.stderr(stderr.clone()).stdout(stderr.clone());
        for (host_dir, guest_dir) in &plugin.read_dirs {
            wasi.preopened_dir(host_dir, guest_dir, FsPerms::ReadOnly)?;
        }
        Ok(HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .trap_on_grow_failure(true)
                .instances(64)
                .build(),
            plugin,
            session,
            relays,
            stderr,
            call_started: Instant::now(),
            host_time: Duration::ZERO,
            slow_calls: 0,
            call_timeout,
        })
    }

    fn count_slow_call(&mut self) -> Result<()> {
        self.slow_calls += 1;
        if self.slow_calls > MAX_SLOW_CALLS {
            bail!("made more than {MAX_SLOW_CALLS} password or relay calls in one hook call");
        }
        Ok(())
    }

    fn session(&self) -> std::sync::MutexGuard<'_, SessionData> {
        self.session.lock().unwrap()
    }

    fn session_id(&self) -> String {
        self.session().connection.as_ref().map(|c| c.id.clone()).unwrap_or_default()
    }

    /// What the plugin wrote to stdout/stderr (panic messages), for fault logs.
    pub fn take_stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_string()
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
        let map = match scope {
            notes::Scope::Connection => &mut s.connection_notes,
            notes::Scope::Transaction => &mut s.transaction_notes,
        };
        // Bound the notes a plugin can pile up in one session.
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
    fn with_message<R>(&self, f: impl FnOnce(&mut Message) -> R) -> Result<R> {
        let mut s = self.session();
        let m =
            s.message.as_mut().ok_or_else(|| format_err!("message handle used outside the data and queue hooks"))?;
        Ok(f(m))
    }
}

impl message::Host for HostState {}

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
        self.with_message(|m| m.append(Header::new(&name, &value))).map(Ok)
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
        self.with_message(|m| m.prepend(Header::new(&name, &value))).map(Ok)
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
        let started = Instant::now();
        // Hashing is deliberately slow: keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || crate::password::verify(&password, &stored)).await?;
        self.host_time += started.elapsed();
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
        let started = Instant::now();
        let (envelope, bytes) = {
            let s = self.session();
            let envelope = s.envelope.clone().ok_or_else(|| format_err!("no envelope"))?;
            let bytes = s.message.as_ref().ok_or_else(|| format_err!("no message"))?.to_bytes();
            (envelope, bytes)
        };
        let id = self.session_id();
        let result = self.relays.send_now(&relay, &envelope, bytes, &id).await;
        self.host_time += started.elapsed();
        Ok(result.map_err(|f| outbound::Failure { temporary: f.temporary, reply: f.reply }))
    }
}
