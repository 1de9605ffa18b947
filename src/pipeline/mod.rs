//! The plugin pipeline: loading WebAssembly components, instantiating them
//! per connection, and running a hook through every plugin in order.
//!
//! One wasmtime [`Engine`] (pooling allocator, epoch interruption) compiles
//! each component once (cached on disk by content hash) into an
//! [`InstancePre`]; each connection then instantiates plugins lazily, in its
//! own [`Store`] per plugin so a plugin that traps, spins or exhausts its
//! memory is discarded alone. A fault becomes `451 4.3.0` for that step.

mod cache;
mod convert;
mod delivery;
mod host;
mod output;
mod sandbox;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use wasmtime::component::{Linker, Resource};
use wasmtime::{Engine, Store};

use crate::config::{Config, PluginSpec};
use crate::mail::Reply;

pub use host::{HostState, MessageHandle, Services, SessionData};

wasmtime::component::bindgen!({
    path: "plugin-sdk/wit",
    world: "plugin",
    imports: {
        "mailferry:plugin/password.verify": async | trappable,
        "mailferry:plugin/outbound.send-now": async | trappable,
        "mailferry:plugin/outbound.enqueue": async | trappable,
        "mailferry:plugin/dkim.sign": async | trappable,
        "mailferry:plugin/counters.incr": async | trappable,
        "mailferry:plugin/counters.get": async | trappable,
        "mailferry:plugin/counters.take": async | trappable,
        "mailferry:plugin/counters.check": async | trappable,
        "mailferry:plugin/sql.query": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: { "mailferry:plugin/message.message": MessageHandle },
});

pub use self::mailferry::plugin::types as wit;

/// The hooks, in session order. The discriminant indexes per-plugin bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Connect = 0,
    Ehlo = 1,
    Auth = 2,
    Mail = 3,
    Rcpt = 4,
    Data = 5,
    Queue = 6,
    Disconnect = 7,
    Delivered = 8,
    Deferred = 9,
    Bounced = 10,
}

impl Hook {
    pub const ALL: [Hook; 11] = [
        Hook::Connect,
        Hook::Ehlo,
        Hook::Auth,
        Hook::Mail,
        Hook::Rcpt,
        Hook::Data,
        Hook::Queue,
        Hook::Disconnect,
        Hook::Delivered,
        Hook::Deferred,
        Hook::Bounced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Ehlo => "ehlo",
            Hook::Auth => "auth",
            Hook::Mail => "mail",
            Hook::Rcpt => "rcpt",
            Hook::Data => "data",
            Hook::Queue => "queue",
            Hook::Disconnect => "disconnect",
            Hook::Delivered => "delivered",
            Hook::Deferred => "deferred",
            Hook::Bounced => "bounced",
        }
    }

    /// Hooks whose outcome answers nobody: every plugin is told, a failing
    /// one is logged and skipped.
    fn is_notice(self) -> bool {
        matches!(self, Hook::Disconnect | Hook::Delivered | Hook::Deferred | Hook::Bounced)
    }
}

/// A hook's arguments.
pub enum Call<'a> {
    Connect,
    Ehlo(&'a str),
    Auth {
        mechanism: &'a str,
        login: &'a str,
        password: &'a str,
    },
    Mail(&'a wit::Address),
    Rcpt(&'a wit::Address),
    Data,
    Queue,
    Disconnect,
    /// Delivery events of the queue, outside client sessions.
    Delivered(&'a DeliveryEvent),
    Deferred(&'a DeliveryEvent),
    Bounced(&'a DeliveryEvent),
}

pub use self::exports::mailferry::plugin::hooks::DeliveryEvent;

impl Call<'_> {
    fn hook(&self) -> Hook {
        match self {
            Call::Connect => Hook::Connect,
            Call::Ehlo(_) => Hook::Ehlo,
            Call::Auth { .. } => Hook::Auth,
            Call::Mail(_) => Hook::Mail,
            Call::Rcpt(_) => Hook::Rcpt,
            Call::Data => Hook::Data,
            Call::Queue => Hook::Queue,
            Call::Disconnect => Hook::Disconnect,
            Call::Delivered(_) => Hook::Delivered,
            Call::Deferred(_) => Hook::Deferred,
            Call::Bounced(_) => Hook::Bounced,
        }
    }
}

/// The outcome of running a hook through the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every plugin continued.
    Continue,
    Accept(Option<Reply>),
    Deny(Option<Reply>),
    DenySoft(Option<Reply>),
    DenyDisconnect(Option<Reply>),
}

/// A compiled plugin, shared by all connections.
pub struct LoadedPlugin {
    pub name: String,
    pub config_toml: String,
    /// The databases its `sql:NAME` grants name.
    pub databases: Vec<String>,
    pub read_dirs: Vec<(std::path::PathBuf, String)>,
    pre: PluginPre<HostState>,
    /// Bit per [`Hook`]: set once the plugin said it does not implement it.
    unimplemented: AtomicU16,
    /// Its hook duration histogram per [`Hook`], looked up on the first call
    /// rather than on every call (and only for hooks that run).
    durations: [std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>; Hook::ALL.len()],
}

/// Everything the pipeline needs, built once at start-up.
pub struct Pipeline {
    engine: Engine,
    plugins: Vec<Arc<LoadedPlugin>>,
    services: Arc<Services>,
    limits: PluginLimits,
    _ticker: sandbox::Ticker,
}

/// Bounds on every plugin instance.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// CPU time per hook call.
    pub call_timeout: Duration,
    /// Linear memory per instance.
    pub memory: usize,
    /// The message size limit, which header edits may not push a message far past.
    pub message_size: usize,
}

// `BUILTIN_COMPONENTS`: the components `build.rs` compiled into the binary.
include!(concat!(env!("OUT_DIR"), "/builtin_components.rs"));

/// A built-in plugin's component.
pub fn builtin_component(name: &str) -> Option<&'static [u8]> {
    BUILTIN_COMPONENTS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

impl Pipeline {
    /// Compiles (or loads from the cache) every configured plugin and links
    /// it with exactly the capabilities it was granted.
    pub fn load(config: &Config, services: Arc<Services>) -> Result<Pipeline> {
        // Sessions hold one instance per plugin at most; leave headroom for
        // sessions that are closing while new ones start.
        let slots = (config.limits.max_connections as u32).saturating_mul(2).max(16);
        let engine = sandbox::engine(config, slots, config.plugins.len().max(1) as u32)?;
        let cache_dir = config.state_dir().join("plugin-cache");
        let mut plugins = Vec::new();
        for spec in &config.plugins {
            let plugin = load_plugin(&engine, spec, &cache_dir).with_context(|| format!("plugin {:?}", spec.name))?;
            plugins.push(Arc::new(plugin));
        }
        Ok(Pipeline {
            _ticker: sandbox::Ticker::start(engine.clone()),
            engine,
            plugins,
            services,
            limits: PluginLimits {
                call_timeout: config.sandbox.call_timeout,
                memory: config.sandbox.memory_limit,
                message_size: config.limits.message_size,
            },
        })
    }

    /// Loads the plugins on a blocking thread (compiling them is CPU work,
    /// kept off the async workers), then calls their `init`: what `serve`,
    /// a reload and `check` each do.
    pub async fn start(config: Arc<Config>, services: Arc<Services>) -> Result<Pipeline> {
        let pipeline = tokio::task::spawn_blocking(move || Pipeline::load(&config, services)).await??;
        pipeline.init_plugins().await?;
        Ok(pipeline)
    }

    /// Calls every plugin's `init` once on a probe instance, so a plugin
    /// whose configuration it cannot use stops the start with its reason.
    pub async fn init_plugins(&self) -> Result<()> {
        for plugin in &self.plugins {
            let data = Arc::new(Mutex::new(SessionData {
                connection: Some(wit::Connection {
                    id: "startup".into(),
                    listener: String::new(),
                    remote_ip: "0.0.0.0".into(),
                    remote_port: 0,
                    local_ip: "0.0.0.0".into(),
                    local_port: 0,
                    tls: false,
                    helo: None,
                    auth_user: None,
                    trusted: false,
                }),
                ..Default::default()
            }));
            let failed = |e: wasmtime::Error, output: String| {
                anyhow::anyhow!(
                    "plugin {:?} failed while starting: {} {output}",
                    plugin.name,
                    sandbox::describe_fault(&e)
                )
            };
            let mut slot = self.instantiate(plugin, data).await.map_err(|e| failed(e, String::new()))?;
            sandbox::begin_call(&mut slot.store);
            let clock = slot.store.data().clock.clone();
            let init = slot.bindings.mailferry_plugin_hooks().call_init(&mut slot.store);
            match sandbox::watch(init, &clock, self.limits.call_timeout).await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    anyhow::bail!("plugin {:?} cannot start: {message} (check its [plugins.config])", plugin.name)
                }
                Err(e) => return Err(failed(e, slot.store.data().take_output())),
            }
        }
        Ok(())
    }

    /// A new, sandboxed instance of `plugin` sharing `data`.
    async fn instantiate(&self, plugin: &Arc<LoadedPlugin>, data: Arc<Mutex<SessionData>>) -> wasmtime::Result<Slot> {
        let state = HostState::new(plugin.clone(), data, self.services.clone(), &self.limits)?;
        let mut store = Store::new(&self.engine, state);
        sandbox::configure_store(&mut store);
        sandbox::begin_call(&mut store);
        let bindings = plugin.pre.instantiate_async(&mut store).await?;
        Ok(Slot { store, bindings })
    }

    /// The counters behind bans and the `counters` capability.
    pub fn counters(&self) -> &Arc<crate::counters::Counters> {
        &self.services.counters
    }

    /// What the host capabilities of this pipeline's plugins reach.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub fn plugin_names(&self) -> Vec<&str> {
        self.plugins.iter().map(|p| p.name.as_str()).collect()
    }

    /// A fresh per-connection view of the pipeline.
    pub fn session(self: &Arc<Self>, data: Arc<Mutex<SessionData>>) -> SessionPipeline {
        SessionPipeline { pipeline: self.clone(), slots: (0..self.plugins.len()).map(|_| None).collect(), data }
    }
}

fn load_plugin(engine: &Engine, spec: &PluginSpec, cache_dir: &std::path::Path) -> Result<LoadedPlugin> {
    let bytes: std::borrow::Cow<[u8]> = match &spec.path {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read {} (check plugins[].path)", path.display()))?
            .into(),
        None => builtin_component(&spec.name).context("not a built-in plugin")?.into(),
    };
    let component = cache::compile(engine, &bytes, cache_dir)?;
    let mut linker: Linker<HostState> = Linker::new(engine);
    host::link(&mut linker, &spec.grants)?;
    let pre = linker.instantiate_pre(&component).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n  (a plugin may only import what it is granted: add the capability to its `grants`: \"password\", \"outbound\", \"dkim\", \"counters\" or \"sql:NAME\")"
        )
    })?;
    let pre = PluginPre::new(pre)
        .map_err(anyhow::Error::from)
        .context("the component does not export the mailferry:plugin/hooks interface")?;
    let config_toml = toml::to_string(&spec.config).context("plugin config")?;
    for (host_dir, _) in &spec.read_dirs {
        if !host_dir.is_dir() {
            anyhow::bail!("read_dirs: {} is not a folder", host_dir.display());
        }
    }
    Ok(LoadedPlugin {
        name: spec.name.clone(),
        config_toml,
        databases: spec.databases.clone(),
        read_dirs: spec.read_dirs.clone(),
        pre,
        unimplemented: AtomicU16::new(0),
        durations: Default::default(),
    })
}

struct Slot {
    store: Store<HostState>,
    bindings: Plugin,
}

/// The pipeline as one connection sees it: its plugin instances and the
/// session data they share.
pub struct SessionPipeline {
    pipeline: Arc<Pipeline>,
    slots: Vec<Option<Slot>>,
    pub data: Arc<Mutex<SessionData>>,
}

impl SessionPipeline {
    /// Runs `call` through every plugin in order; the first verdict other
    /// than continue wins. A faulty plugin yields `DenySoft(451 4.3.0)`.
    pub async fn run(&mut self, call: Call<'_>) -> Outcome {
        let hook = call.hook();
        for i in 0..self.pipeline.plugins.len() {
            let plugin = self.pipeline.plugins[i].clone();
            if plugin.unimplemented.load(Ordering::Relaxed) & (1 << hook as u16) != 0 {
                continue;
            }
            // Nothing to say goodbye to if the plugin never ran here.
            if hook == Hook::Disconnect && self.slots[i].is_none() {
                continue;
            }
            let started = Instant::now();
            let result = self.call_one(i, &call).await;
            let took = started.elapsed();
            if result.as_ref().is_ok_and(Option::is_some) {
                plugin.durations[hook as usize]
                    .get_or_init(|| {
                        let labels = crate::metrics::HookLabels { plugin: plugin.name.clone(), hook: hook.name() };
                        crate::metrics::get().hook_duration.get_or_create(&labels).clone()
                    })
                    .observe(took.as_secs_f64());
            }
            tracing::trace!(plugin = %plugin.name, hook = hook.name(), elapsed_us = took.as_micros() as u64, "hook");
            match result {
                Ok(None) => {
                    plugin.unimplemented.fetch_or(1 << hook as u16, Ordering::Relaxed);
                }
                Ok(Some(wit::Verdict::Continue)) => {}
                Ok(Some(verdict)) => {
                    if hook.is_notice() {
                        continue;
                    }
                    return self.checked(&plugin.name, hook, verdict);
                }
                Err(e) => {
                    crate::metrics::get().fault(&plugin.name, hook.name());
                    // Discard the instance: its state may be corrupt.
                    let stderr = self.slots[i].take().map(|s| s.store.data().take_output()).unwrap_or_default();
                    tracing::error!(
                        plugin = %plugin.name,
                        hook = hook.name(),
                        error = %sandbox::describe_fault(&e),
                        stderr = %stderr,
                        "plugin failed; answering 451 4.3.0 for this step"
                    );
                    if hook.is_notice() {
                        continue;
                    }
                    return Outcome::DenySoft(Some(Reply::new(
                        451,
                        "4.3.0",
                        "temporary local problem, please try again later",
                    )));
                }
            }
        }
        Outcome::Continue
    }

    async fn call_one(&mut self, i: usize, call: &Call<'_>) -> wasmtime::Result<Option<wit::Verdict>> {
        if self.slots[i].is_none() {
            let slot = self.pipeline.instantiate(&self.pipeline.plugins[i], self.data.clone()).await?;
            self.slots[i] = Some(slot);
        }
        let slot = self.slots[i].as_mut().unwrap();
        let store = &mut slot.store;
        sandbox::begin_call(store);
        let clock = store.data().clock.clone();
        let timeout = self.pipeline.limits.call_timeout;
        let hooks = slot.bindings.mailferry_plugin_hooks();
        let call = async {
            Ok(match call {
                Call::Connect => hooks.call_connect(&mut *store).await?,
                Call::Ehlo(name) => hooks.call_ehlo(&mut *store, name).await?,
                Call::Auth { mechanism, login, password } => {
                    hooks.call_auth(&mut *store, mechanism, login, password).await?
                }
                Call::Mail(addr) => hooks.call_mail(&mut *store, addr).await?,
                Call::Rcpt(addr) => hooks.call_rcpt(&mut *store, addr).await?,
                Call::Data | Call::Queue => {
                    let handle: Resource<MessageHandle> = store.data_mut().table.push(MessageHandle)?;
                    let rep = handle.rep();
                    let borrowed = Resource::new_borrow(rep);
                    let v = if matches!(call, Call::Data) {
                        hooks.call_data(&mut *store, borrowed).await
                    } else {
                        hooks.call_queue(&mut *store, borrowed).await
                    };
                    let _ = store.data_mut().table.delete(handle);
                    v?
                }
                Call::Disconnect => {
                    hooks.call_disconnect(&mut *store).await?;
                    Some(wit::Verdict::Continue)
                }
                Call::Delivered(e) => hooks.call_delivered(&mut *store, e).await?.then_some(wit::Verdict::Continue),
                Call::Deferred(e) => hooks.call_deferred(&mut *store, e).await?.then_some(wit::Verdict::Continue),
                Call::Bounced(e) => hooks.call_bounced(&mut *store, e).await?.then_some(wit::Verdict::Continue),
            })
        };
        let verdict = sandbox::watch(call, &clock, timeout).await?;
        let output = slot.store.data().take_output();
        if !output.is_empty() {
            tracing::info!(plugin = %self.pipeline.plugins[i].name, output = %output, "plugin output");
        }
        Ok(verdict)
    }

    /// Converts a plugin's verdict, validating any reply it carries.
    fn checked(&self, plugin: &str, hook: Hook, verdict: wit::Verdict) -> Outcome {
        let check = |reply: Option<wit::Reply>, classes: &[u16]| -> Option<Reply> {
            let reply = reply?;
            let r = Reply::from(reply);
            match r.validate(classes) {
                Ok(()) => Some(r),
                Err(why) => {
                    tracing::warn!(plugin, hook = hook.name(), reply = ?r, "invalid reply from plugin ({why}); using the default");
                    None
                }
            }
        };
        // A positive reply must be the one the step calls for: 235 after
        // AUTH, 250/251 elsewhere (a 221 to RCPT would tell the client we
        // are closing).
        let expected: &[u16] = if hook == Hook::Auth { &[235] } else { &[250, 251] };
        let accept_ok = |r: Option<Reply>| match r {
            Some(r) if !expected.contains(&r.code) => {
                tracing::warn!(plugin, hook = hook.name(), reply = ?r, "invalid accept reply from plugin; using the default");
                None
            }
            other => other,
        };
        match verdict {
            wit::Verdict::Continue => Outcome::Continue,
            wit::Verdict::Accept(r) => Outcome::Accept(accept_ok(check(r, &[2]))),
            wit::Verdict::Deny(r) => Outcome::Deny(check(r, &[5])),
            wit::Verdict::DenySoft(r) => Outcome::DenySoft(check(r, &[4])),
            wit::Verdict::DenyDisconnect(r) => Outcome::DenyDisconnect(check(r, &[4, 5])),
        }
    }

    /// Drops every plugin instance (after the disconnect hook).
    pub fn finish(&mut self) {
        self.slots.clear();
    }
}
