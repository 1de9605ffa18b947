//! mailferry: an SMTP submission relay whose policy lives in sandboxed
//! WebAssembly plugins. This file is the command line; `serve` wires the
//! configuration, the relays, the plugin pipeline and the listeners together.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use mailferry::{config, dkim, dns, init, net, password, pipeline, queue, sql, users};

#[derive(Parser)]
#[command(name = "mailferry", version, about = "SMTP submission relay with sandboxed WebAssembly plugins")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The main configuration file [default: $MAILFERRY_CONFIG, else
    /// config/mailferry.toml in this folder, else /etc/mailferry/mailferry.toml]
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        config::resolve_path(self.config.clone())
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a folder with a configuration for one sending domain, its
    /// users file, a DKIM key and an env file for the relay's secrets, then
    /// print the steps left (DNS, certificate, credentials, service).
    Init(InitCmd),
    /// Run the relay.
    Serve(ConfigArg),
    /// Validate the configuration, certificates and plugins, then exit.
    Check(ConfigArg),
    /// Manage users: the users file of the auth-flat-file plugin, or
    /// mailferry's own table in a database with `migrate = true`.
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// Read a password on standard input and print its argon2id hash.
    HashPassword,
    /// DKIM keys.
    Dkim {
        #[command(subcommand)]
        action: DkimCmd,
    },
    /// The delivery queue: works on a running server, or on the spool when
    /// none runs.
    Queue {
        #[command(subcommand)]
        action: QueueCmd,
        /// The main configuration file (it says where the spool is) [default:
        /// $MAILFERRY_CONFIG, else config/mailferry.toml in this folder, else
        /// /etc/mailferry/mailferry.toml]
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Print every DNS record a sending domain needs: one merged SPF, the
    /// DKIM keys, DMARC, and what the relay asks for.
    Dns {
        #[command(flatten)]
        domain: DomainArgs,
        #[arg(long)]
        dmarc_rua: Option<String>,
    },
    /// Resolve a domain's live DNS records and check them, record by record,
    /// against the relay and the local DKIM keys. Exits 1 if any fails.
    Doctor {
        #[command(flatten)]
        domain: DomainArgs,
        /// Ask this DNS server (IP:PORT) instead of the system's resolver,
        /// e.g. the domain's authoritative server right after a change.
        #[arg(long)]
        dns_server: Option<std::net::SocketAddr>,
    },
    /// Send a message from standard input through the local server, with
    /// sendmail's options (-t, -i, -f, -F …); also run as a `sendmail` symlink.
    #[command(disable_help_flag = true)]
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct InitCmd {
    /// The folder to create, e.g. /etc/mailferry; an existing one must be empty.
    dir: PathBuf,
    /// The sending domain: the domain of the From: addresses.
    #[arg(long)]
    domain: String,
    /// The name mail clients connect to, and the TLS certificate's [default: smtp.DOMAIN].
    #[arg(long)]
    hostname: Option<String>,
    /// The upstream: ses, sendgrid, resend, mailgun, postmark, brevo, or smtp (with --relay-host).
    #[arg(long)]
    relay: dns::RelayKind,
    /// Amazon SES: the AWS region (required), e.g. eu-west-1. Mailgun: us or eu.
    /// Resend: the region of the domain, for the DNS records.
    #[arg(long)]
    region: Option<String>,
    /// The relay's login (SES, Mailgun, Brevo, smtp); without it the
    /// configuration reads ${MAILFERRY_RELAY_USER}.
    #[arg(long)]
    relay_user: Option<String>,
    /// With --relay smtp: the smarthost, HOST or HOST:PORT (465: implicit TLS).
    #[arg(long)]
    relay_host: Option<String>,
    /// Where inbound mail is handled, for the DNS records: cloudflare.
    #[arg(long)]
    inbound: Option<dns::Inbound>,
    /// Create this user (login) too; the password is asked for, or read from standard input.
    #[arg(long)]
    user: Option<String>,
    /// Read the user's password from standard input instead of prompting.
    #[arg(long, requires = "user")]
    password_stdin: bool,
    /// server.state_dir: the queue and caches (relative: to DIR).
    #[arg(long, default_value = init::DEFAULT_STATE_DIR)]
    state_dir: String,
}

#[derive(Subcommand)]
enum QueueCmd {
    /// One line per queued message: id, age, attempts, next try, sender, waiting recipients, last error.
    List,
    /// Everything about one message: envelope, each recipient's state and last reply.
    Show { id: String },
    /// Try a message (or, with --all, every message) now.
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a message without delivering or bouncing it.
    Delete { id: String },
    /// Counts: messages, recipients waiting, oldest, bytes, fsyncs.
    Stats,
}

#[derive(clap::Args)]
struct DomainArgs {
    /// The sending domain (of the From: addresses).
    #[arg(long)]
    domain: String,
    /// The relay mail leaves through: ses, sendgrid, resend, mailgun, postmark, brevo or smtp.
    #[arg(long, default_value = "smtp")]
    relay: dns::RelayKind,
    /// Where inbound mail is handled: cloudflare (Email Routing).
    #[arg(long)]
    inbound: Option<dns::Inbound>,
    /// The provider's region (Amazon SES, Resend), e.g. eu-west-1.
    #[arg(long)]
    region: Option<String>,
    /// The bounce (MAIL FROM) subdomain, if not the provider's usual one.
    #[arg(long)]
    mail_from: Option<String>,
    /// The DKIM keys folder, instead of `dkim.keys` of the configuration.
    #[arg(long)]
    keys: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

impl DomainArgs {
    fn dns_args(&self, dmarc_rua: Option<String>) -> Result<dns::DnsArgs> {
        let mut a = dns::DnsArgs::new(&self.domain, self.relay);
        a.inbound = self.inbound;
        a.region = self.region.clone();
        a.mail_from = self.mail_from.clone();
        a.dmarc_rua = dmarc_rua;
        a.validate().map_err(anyhow::Error::msg)?;
        Ok(a)
    }

    fn keys(&self) -> Result<dkim::KeyStore> {
        let dir = keys_dir(self.keys.clone(), &self.config)?;
        dkim::KeyStore::load(&dir).map_err(anyhow::Error::msg)
    }
}

#[derive(Subcommand)]
enum DkimCmd {
    /// Create a signing key where the server looks for it (`dkim.keys`) and
    /// print the DNS record to publish.
    Keygen {
        /// The signing domain: the domain of the From: addresses.
        #[arg(long)]
        domain: String,
        /// The selector; by default `mf<YYYYMM>` (`mf<YYYYMM>e` for Ed25519).
        #[arg(long)]
        selector: Option<String>,
        /// rsa2048 (accepted everywhere), rsa4096, or ed25519 (RFC 8463;
        /// sign with it beside an RSA key, as not every receiver checks it).
        #[arg(long, default_value = "rsa2048")]
        algorithm: String,
        /// The keys folder, instead of `dkim.keys` of the configuration.
        #[arg(long)]
        keys: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the loaded keys and their DNS records.
    List {
        #[arg(long)]
        keys: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Where `mailferry user` keeps users.
#[derive(clap::Args)]
struct UserStoreArg {
    /// Work on mailferry's users table in this `[databases.NAME]` (one with
    /// `migrate = true`). Without it: the auth-flat-file users file if that
    /// plugin is configured, else the one database with `migrate = true`.
    #[arg(long)]
    database: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user.
    Add {
        login: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// Change a user's password.
    Passwd {
        login: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// Remove a user.
    Remove {
        login: String,
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// List users and their hash schemes.
    List {
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// Let a user log in again (database only).
    Enable {
        login: String,
        #[command(flatten)]
        store: UserStoreArg,
    },
    /// Keep a user from logging in without removing it (database only).
    Disable {
        login: String,
        #[command(flatten)]
        store: UserStoreArg,
    },
}

/// mimalloc rather than glibc's allocator: a few percent less CPU on the
/// message path (glibc spent it consolidating free lists), and memory freed
/// goes back to the system instead of staying in per-thread arenas (what
/// kept argon2's 19 MiB blocks resident, one per thread that ever hashed).
/// Built without transparent huge pages: they made the idle server larger
/// by tens of MB for no gain here.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // sendmail's historical options are not clap's grammar: that command
    // takes the raw arguments, whether invoked as `mailferry sendmail` or
    // through a `sendmail` symlink.
    if let Some(code) = mailferry::sendmail::dispatch(&std::env::args_os().collect::<Vec<_>>()) {
        return code;
    }
    let cli = Cli::parse();
    if let Cmd::Sendmail { args } = &cli.command {
        return mailferry::sendmail::main("mailferry sendmail", args);
    }
    let logs = init_logging(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = run(cli.command);
    // The lines logged before, then the error that ended it.
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<AlreadyReported>() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mailferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A failure whose explanation is already printed: exit 1, saying nothing
/// more (after the log lines are written, which `process::exit` would skip).
#[derive(Debug)]
struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed (see above)")
    }
}

impl std::error::Error for AlreadyReported {}

/// Logs to stderr (systemd's journal, the container's log) through a writer
/// thread; the guard writes what is left when dropped.
fn init_logging(format: LogFormat) -> mailferry::logs::Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn,sqlx=warn"));
    let (writer, guard) = mailferry::logs::stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
    guard
}

fn load_config(path: &std::path::Path) -> Result<config::Config> {
    Ok(config::Config::load(path)?)
}

/// The configuration for commands that need its folders, not the relays'
/// secrets: they run from an operator's shell without the server's
/// environment.
fn load_config_for_admin(path: &std::path::Path) -> Result<config::Config> {
    Ok(config::Config::load_for_admin(path)?)
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Init(a) => init_command(a),
        Cmd::Serve(a) => serve(load_config(&a.path())?),
        Cmd::Check(a) => check(load_config(&a.path())?),
        Cmd::User { action } => user(action),
        Cmd::Dkim { action } => dkim_command(action),
        Cmd::Queue { action, config } => queue_command(action, &load_config_for_admin(&config::resolve_path(config))?),
        Cmd::Dns { domain, dmarc_rua } => {
            let args = domain.dns_args(dmarc_rua)?;
            let plan = dns::plan(&args, &domain.keys()?);
            print!("{}", dns::render(&args, &plan));
            Ok(())
        }
        Cmd::Doctor { domain, dns_server } => {
            let args = domain.dns_args(None)?;
            let keys = domain.keys()?;
            let report = runtime()?.block_on(async {
                let resolver = match dns_server {
                    Some(addr) => dns::SystemResolver::at(addr),
                    None => dns::SystemResolver::system(),
                }
                .map_err(anyhow::Error::msg)?;
                anyhow::Ok(dns::doctor(&args, &keys, &resolver).await)
            })?;
            print!("{}", report.render());
            if report.ok() {
                Ok(())
            } else {
                // The report already says what is wrong and how to fix it.
                Err(AlreadyReported.into())
            }
        }
        Cmd::Sendmail { .. } => unreachable!("handled in main"),
        Cmd::HashPassword => {
            let password = read_password(true)?;
            println!("{}", password::hash(&password).map_err(anyhow::Error::msg)?);
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn serve(config: config::Config) -> Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(config.state_dir())
        .with_context(|| format!("cannot create the state folder {}", config.state_dir().display()))?;
    let rt = runtime()?;
    rt.block_on(async {
        // Take SIGHUP over first: its default action would end the process
        // if it came while the plugins load.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        // Before the plugins: a bad certificate path fails the start at once.
        let certs = if net::needs_tls(&config) { Some(net::tls::load(&config)?) } else { None };
        let services = Arc::new(pipeline::Services::from_config(&config)?.with_queue(&config)?);
        let pipeline = {
            let config = config.clone();
            let services = services.clone();
            // Compiling plugins is CPU work; keep it off the async workers.
            tokio::task::spawn_blocking(move || pipeline::Pipeline::load(&config, services)).await??
        };
        pipeline.init_plugins().await?;
        let pipeline = Arc::new(pipeline);
        if let Some(queue) = &services.queue {
            queue.set_pipeline(pipeline.clone());
        }
        migrate_in_background(&services.databases);
        tracing::info!(
            plugins = ?pipeline.plugin_names(),
            relays = ?services.relays.names(),
            dkim_keys = services.dkim.current().len(),
            counters = %services.counters.describe(),
            "plugins loaded"
        );
        // Renewed keys are picked up without a restart: on SIGHUP, and by
        // a periodic look at the keys folder.
        services.dkim.watch(DKIM_RELOAD_CHECK);
        // Renewed certificates too: new handshakes get them, open sessions
        // keep theirs.
        if let Some(certs) = &certs {
            certs.watch(net::tls::RELOAD_CHECK);
        }
        // Every socket before the queue starts delivering: a port conflict
        // must stop the start before any delivery attempt is under way.
        let bound = net::bind(&config).await?;
        let admin = match config.admin.address {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("admin.address {address}: cannot listen"))?;
                if !address.ip().is_loopback() {
                    tracing::warn!(%address, "the admin listener is not on a loopback address: anyone who can reach it reads /metrics");
                }
                tracing::info!(address = %listener.local_addr()?, "admin listener: /metrics and /healthz");
                Some(listener)
            }
            None => None,
        };
        if let Some(queue) = &services.queue {
            queue.start();
            let queue = queue.clone();
            mailferry::metrics::watch_queue(move || {
                let s = queue.stats();
                mailferry::metrics::QueueFigures {
                    messages: s.messages,
                    recipients_pending: s.recipients_pending,
                    oldest_secs: s.oldest_secs,
                    bytes: s.bytes,
                    in_flight: s.in_flight,
                }
            });
        }
        let (live_tx, live) = tokio::sync::watch::channel(net::Generation { config: config.clone(), pipeline });
        let hup_certs = certs.clone();
        let hup_services = services.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = hup else { return };
            // One reload at a time, in order: a second SIGHUP waits.
            while hup.recv().await.is_some() {
                hup_services.dkim.reload_logged("SIGHUP");
                if let Some(certs) = &hup_certs {
                    certs.reload_logged("SIGHUP");
                }
                reload(&live_tx, &hup_services).await;
            }
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        if let Some(listener) = admin {
            tokio::spawn(mailferry::metrics::serve(listener, rx.clone()));
        }
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: no new connections");
            let _ = tx.send(true);
        });
        // On a worker, not this thread: every accepted connection and every
        // finished session passes through it, and a hop to a third thread
        // costs a wake-up each time.
        let served = tokio::spawn(net::serve(bound, live, certs, rx)).await.context("the listeners stopped");
        // Even when the listeners failed: the queue writes what it holds.
        if let Some(queue) = &services.queue {
            queue.shutdown(config.server.shutdown_grace).await;
        }
        served?
    })
}

/// Reads the configuration file again (SIGHUP). New sessions get the new
/// plugins, limits and listener policies; the queue the new relays and
/// routes; sessions already open finish with what they started with. A
/// configuration that does not load, or whose plugins do not, is refused
/// with the reason, and the running one stays in use.
async fn reload(live: &tokio::sync::watch::Sender<net::Generation>, services: &Arc<pipeline::Services>) {
    let old = live.borrow().config.clone();
    let path = old.file.clone();
    let new = match config::Config::load(&path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "configuration not reloaded; the running one stays in use");
            return;
        }
    };
    let restart = needs_restart(&old, &new);
    if !restart.is_empty() {
        tracing::warn!(settings = ?restart, "these changes take effect only after a restart; the rest is reloaded");
    }
    // Databases whose settings did not change keep their connections.
    let current = live.borrow().pipeline.services().clone();
    let databases = Arc::new(sql::Databases::from_config(&new, Some(&current.databases)));
    let built = async {
        let relays = Arc::new(mailferry::outbound::Relays::from_config(&new)?);
        // The DKIM keys and the queue stay: keys reload on their own, and
        // the spool belongs to this process.
        let services = Arc::new(pipeline::Services {
            relays: relays.clone(),
            dkim: services.dkim.clone(),
            queue: services.queue.clone(),
            routes: new.routes.clone(),
            counters: services.counters.clone(),
            databases: databases.clone(),
            passwords: services.passwords.clone(),
        });
        let pipeline = {
            let (config, services) = (new.clone(), services.clone());
            tokio::task::spawn_blocking(move || pipeline::Pipeline::load(&config, services)).await??
        };
        pipeline.init_plugins().await?;
        anyhow::Ok((relays, Arc::new(pipeline)))
    };
    let (relays, pipeline) = match built.await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %format!("{e:#}"), "configuration not reloaded; the running one stays in use");
            return;
        }
    };
    if let Some(queue) = &services.queue {
        queue.reconfigure(relays.clone(), new.routes.clone());
        queue.set_pipeline(pipeline.clone());
    }
    let plugins: Vec<String> = pipeline.plugin_names().iter().map(|p| p.to_string()).collect();
    live.send_replace(net::Generation { config: new, pipeline });
    migrate_in_background(&databases);
    tracing::info!(?plugins, relays = ?relays.names(), "configuration reloaded; new sessions use it");
}

/// The settings a reload cannot apply, by name.
fn needs_restart(old: &config::Config, new: &config::Config) -> Vec<String> {
    let mut out = Vec::new();
    for l in &old.listeners {
        match new.listeners.iter().find(|n| n.name == l.name) {
            None => out.push(format!("listener {:?} removed", l.name)),
            Some(n) => {
                if let Some(what) = net::listener_change_needs_restart(l, n) {
                    out.push(format!("listeners.{}.{what}", l.name));
                }
            }
        }
    }
    for n in &new.listeners {
        if !old.listeners.iter().any(|l| l.name == n.name) {
            out.push(format!("listener {:?} added", n.name));
        }
    }
    let mut differs = |name: &str, same: bool| {
        if !same {
            out.push(name.to_string());
        }
    };
    differs("server.state_dir", old.server.state_dir == new.server.state_dir);
    differs("server.shutdown_grace_secs", old.server.shutdown_grace == new.server.shutdown_grace);
    differs("dkim.keys", old.dkim.keys == new.dkim.keys);
    differs("queue", format!("{:?}", old.queue) == format!("{:?}", new.queue));
    differs("admin.address", old.admin.address == new.admin.address);
    differs("tls", format!("{:?}", old.tls) == format!("{:?}", new.tls));
    differs("counters", old.counters == new.counters);
    differs("passwords", old.passwords == new.passwords);
    out
}

/// Creates or upgrades mailferry's users table in the databases that hold
/// it (`migrate = true`), without holding the start up: a database that is
/// down is logged, its logins fail with 454 until it is back, and the next
/// reload or `mailferry user` command migrates it.
fn migrate_in_background(databases: &Arc<sql::Databases>) {
    for db in databases.iter().filter(|d| d.config.migrate) {
        let db = db.clone();
        tokio::spawn(async move {
            match sql::users::migrate(&db).await {
                Ok(version) => tracing::info!(database = %db.name, version, "users table ready"),
                Err(e) => tracing::error!(
                    database = %db.name,
                    error = %e,
                    "users table not created or upgraded; it is tried again at the next reload"
                ),
            }
        });
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// How often the DKIM keys folder is checked for changes.
const DKIM_RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

fn check(config: config::Config) -> Result<()> {
    let services = Arc::new(pipeline::Services::from_config(&config)?);
    for w in &services.dkim.current().warnings {
        println!("warning: {w}");
    }
    if net::tls::configured(&config) {
        let certs = net::tls::load(&config)?;
        for line in net::tls::describe(&certs) {
            println!("{line}");
        }
    } else if net::needs_tls(&config) {
        println!(
            "warning: no tls.cert/tls.key: serve will use a self-signed certificate, which Gmail and most clients refuse"
        );
    }
    let rt = runtime()?;
    let pipeline = rt.block_on(async {
        let config = config.clone();
        let pipeline = tokio::task::spawn_blocking(move || pipeline::Pipeline::load(&config, services)).await??;
        pipeline.init_plugins().await?;
        anyhow::Ok(pipeline)
    })?;
    let keys = dkim::KeyStore::load(&config.dkim.keys).map_err(anyhow::Error::msg)?;
    rt.block_on(check_databases(&config));
    println!(
        "{}: OK ({} listeners; plugins: {}; relays: {}; DKIM keys: {})",
        config.file.display(),
        config.listeners.len(),
        pipeline.plugin_names().join(", "),
        config.relays.keys().cloned().collect::<Vec<_>>().join(", "),
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.all().map(|k| format!("{}/{}", k.domain, k.selector)).collect::<Vec<_>>().join(", ")
        }
    );
    Ok(())
}

fn init_command(a: InitCmd) -> Result<()> {
    let mut args = init::InitArgs::new(a.dir, &a.domain, a.relay);
    args.hostname = a.hostname;
    args.region = a.region;
    args.relay_user = a.relay_user;
    args.relay_host = a.relay_host;
    args.inbound = a.inbound;
    args.user = a.user;
    args.state_dir = a.state_dir;
    // Everything is checked before a password is asked for or a file written.
    let setup = init::check(&args).map_err(anyhow::Error::msg)?;
    let password = match &setup.user {
        Some(_) => Some(read_password(a.password_stdin)?),
        None => None,
    };
    let written = init::write(&setup, password.as_deref()).map_err(anyhow::Error::msg)?;
    let records = init::dns_records(&setup, &written).map_err(anyhow::Error::msg)?;
    print!("{}", init::next_steps(&setup, &written, &records));
    Ok(())
}

/// Tries each database once: one that cannot be reached now is a warning,
/// not an error (it may be down for a moment; logins fail with 454 meanwhile).
async fn check_databases(config: &config::Config) {
    let databases = sql::Databases::from_config(config, None);
    for db in databases.iter() {
        let what = format!("database {} ({})", db.name, db.config.kind.label());
        match db.query("SELECT 1 AS ok", &[]).await {
            // Only looked at: check changes nothing.
            Ok(_) if db.config.migrate => match sql::users::schema_version(db).await {
                Ok(v) if v == sql::users::latest_version() => {
                    println!("{what}: reachable; users table at schema version {v}")
                }
                Ok(v) => println!(
                    "{what}: reachable; users table at schema version {v}, serve upgrades it to {}",
                    sql::users::latest_version()
                ),
                Err(_) => println!("{what}: reachable; no users table yet (serve or `mailferry user add` creates it)"),
            },
            Ok(_) => println!("{what}: reachable"),
            Err(e) => println!("warning: {what}: {e}"),
        }
    }
}

/// Reads a password from standard input (one line) or, on a terminal, from
/// a prompt without echo, asked twice.
fn read_password(from_stdin: bool) -> Result<String> {
    let stdin = std::io::stdin();
    let password = if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let a = rpassword::prompt_password("Password: ")?;
        let b = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(a == b, "the passwords differ");
        a
    };
    anyhow::ensure!(!password.is_empty(), "empty password");
    Ok(password)
}

/// Where `mailferry user` works.
enum UserStore {
    File(PathBuf),
    Database(Arc<sql::Database>),
}

impl UserStore {
    fn open(arg: &UserStoreArg) -> Result<UserStore> {
        let config = load_config_for_admin(&arg.config.path())?;
        let managed: Vec<&String> = config.databases.iter().filter(|(_, d)| d.migrate).map(|(n, _)| n).collect();
        let name = match &arg.database {
            Some(name) => {
                let db = config.databases.get(name).with_context(|| {
                    format!("--database {name}: there is no [databases.{name}] in {}", config.file.display())
                })?;
                anyhow::ensure!(
                    db.migrate,
                    "--database {name}: mailferry only reads that database (migrate is not true); `mailferry user` manages mailferry's own users table, in a database with migrate = true"
                );
                name.clone()
            }
            None if config.plugins.iter().any(|p| p.name == "auth-flat-file") || managed.is_empty() => {
                return Ok(UserStore::File(users::users_file(&config).context(
                    "or keep users in a database: [databases.NAME] with migrate = true, and --database NAME",
                )?));
            }
            None if managed.len() == 1 => managed[0].clone(),
            None => anyhow::bail!(
                "several databases hold users ({}): pass --database NAME",
                managed.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            ),
        };
        Ok(UserStore::Database(Arc::new(sql::Database::new(&name, config.databases[&name].clone()))))
    }

    fn describe(&self) -> String {
        match self {
            UserStore::File(path) => path.display().to_string(),
            UserStore::Database(db) => format!("database {} ({})", db.name, db.config.kind.label()),
        }
    }
}

fn user(action: UserCmd) -> Result<()> {
    match action {
        UserCmd::Add { login, password_stdin, store } => {
            let store = UserStore::open(&store)?;
            users::validate_login(&login)?;
            let hash = password::hash(&read_password(password_stdin)?).map_err(anyhow::Error::msg)?;
            match &store {
                UserStore::File(path) => users::set(path, &login, &hash, false)?,
                UserStore::Database(db) => block_on(sql::users::add(db, &login, &hash))?,
            }
            println!("added {login} to {}", store.describe());
        }
        UserCmd::Passwd { login, password_stdin, store } => {
            let store = UserStore::open(&store)?;
            let hash = password::hash(&read_password(password_stdin)?).map_err(anyhow::Error::msg)?;
            match &store {
                UserStore::File(path) => users::set(path, &login, &hash, true)?,
                UserStore::Database(db) => block_on(sql::users::set_password(db, &login, &hash))?,
            }
            println!("changed the password of {login} in {}", store.describe());
        }
        UserCmd::Remove { login, store } => {
            let store = UserStore::open(&store)?;
            match &store {
                UserStore::File(path) => users::remove(path, &login)?,
                UserStore::Database(db) => block_on(sql::users::remove(db, &login))?,
            }
            println!("removed {login} from {}", store.describe());
        }
        UserCmd::List { store } => match UserStore::open(&store)? {
            UserStore::File(path) => {
                for (login, scheme) in users::list(&path)? {
                    println!("{login}\t{scheme}");
                }
            }
            UserStore::Database(db) => {
                let listed = block_on(sql::users::list(&db))?;
                for u in listed {
                    println!("{}\t{}{}", u.login, u.scheme, if u.active { "" } else { "\tdisabled" });
                }
            }
        },
        UserCmd::Enable { login, store } => set_active(&login, &store, true)?,
        UserCmd::Disable { login, store } => set_active(&login, &store, false)?,
    }
    Ok(())
}

fn set_active(login: &str, store: &UserStoreArg, active: bool) -> Result<()> {
    match UserStore::open(store)? {
        UserStore::File(path) => anyhow::bail!(
            "{} has no way to disable a user: remove the user instead, or keep users in a database (--database NAME)",
            path.display()
        ),
        UserStore::Database(db) => {
            block_on(sql::users::set_active(&db, login, active))?;
            println!(
                "{} {login} in database {} ({})",
                if active { "enabled" } else { "disabled" },
                db.name,
                db.config.kind.label()
            );
        }
    }
    Ok(())
}

/// Runs a database command to its end.
fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T> {
    runtime()?.block_on(f).map_err(anyhow::Error::msg)
}

/// The keys folder: `--keys`, else `dkim.keys` of the configuration.
fn keys_dir(keys: Option<PathBuf>, config: &ConfigArg) -> Result<PathBuf> {
    match keys {
        Some(k) => Ok(k),
        None => Ok(load_config_for_admin(&config.path())
            .context("cannot find the keys folder; pass --keys DIR or --config FILE")?
            .dkim
            .keys),
    }
}

fn dkim_command(action: DkimCmd) -> Result<()> {
    match action {
        DkimCmd::Keygen { domain, selector, algorithm, keys, config } => {
            let kind = dkim::keygen::KeyKind::parse(&algorithm)
                .with_context(|| format!("--algorithm {algorithm:?}: use rsa2048, rsa4096 or ed25519"))?;
            let dir = keys_dir(keys, &config)?;
            let selector = selector.unwrap_or_else(|| dkim::keygen::default_selector(kind));
            let info = dkim::keygen::create(&dir, &domain, &selector, kind).map_err(anyhow::Error::msg)?;
            println!("Wrote the {} key {} (readable by you only).", info.algorithm, info.path.display());
            println!();
            println!("Publish this DNS record for {}:", info.domain);
            println!();
            print!("{}", dkim::keygen::describe_record(&info));
            println!();
            println!("A running server picks the key up within seconds (or on SIGHUP). Once the record is");
            println!("published, check it with: mailferry doctor --domain {}", info.domain);
            Ok(())
        }
        DkimCmd::List { keys, config } => {
            let dir = keys_dir(keys, &config)?;
            let store = dkim::KeyStore::load(&dir).map_err(anyhow::Error::msg)?;
            for w in &store.warnings {
                println!("warning: {w}");
            }
            if store.is_empty() {
                println!(
                    "No DKIM keys in {}. Create one with: mailferry dkim keygen --domain example.com",
                    dir.display()
                );
            }
            for info in store.all() {
                println!("{}/{} ({}, {})", info.domain, info.selector, info.algorithm, info.path.display());
                print!("{}", dkim::keygen::describe_record(info));
                println!();
            }
            Ok(())
        }
    }
}

fn queue_command(action: QueueCmd, config: &config::Config) -> Result<()> {
    use queue::control::{Request, Response};
    let req = match action {
        QueueCmd::List => Request::List,
        QueueCmd::Show { id } => Request::Show { id },
        QueueCmd::Retry { id, all } => {
            if id.is_none() && !all {
                anyhow::bail!("name a message id, or pass --all");
            }
            Request::Retry { id }
        }
        QueueCmd::Delete { id } => Request::Delete { id },
        QueueCmd::Stats => Request::Stats,
    };
    let dir = &config.queue.dir;
    let response = match queue::control::ask(dir, &req) {
        Some(r) => r,
        None => queue::control::offline(dir, &req),
    }
    .map_err(anyhow::Error::msg)?;
    let now = chrono::Utc::now().timestamp();
    let ago = |t: i64| human_secs(now - t);
    match response {
        Response::Entries(entries) => {
            if entries.is_empty() {
                println!("The queue is empty.");
            }
            for e in entries {
                let waiting: Vec<&str> = e.pending().map(|r| r.address.as_str()).collect();
                let next = if e.next_attempt <= now {
                    "now".to_string()
                } else {
                    format!("in {}", human_secs(e.next_attempt - now))
                };
                println!(
                    "{}  age {}  {} bytes  attempts {}  next {}  from <{}>  to {}{}",
                    e.id,
                    ago(e.created),
                    e.size,
                    e.attempts,
                    next,
                    e.mail_from,
                    waiting.join(", "),
                    e.last_error.as_deref().map(|x| format!("  last error: {x}")).unwrap_or_default()
                );
            }
        }
        Response::Entry(e) => {
            println!("id:        {}", e.id);
            println!("queued:    {} ago (session {})", ago(e.created), e.session);
            println!("route:     {}", e.route);
            println!("from:      <{}>", e.mail_from);
            println!("size:      {} bytes", e.size);
            println!("attempts:  {}", e.attempts);
            if e.next_attempt > now {
                println!("next try:  in {}", human_secs(e.next_attempt - now));
            }
            for r in &e.rcpts {
                println!(
                    "to:        <{}>  {:?}{}{}",
                    r.address,
                    r.state,
                    r.relay.as_deref().map(|x| format!("  via {x}")).unwrap_or_default(),
                    r.last_reply.as_deref().map(|x| format!("  last reply: {x}")).unwrap_or_default()
                );
            }
        }
        Response::Retried(n) => println!("{n} message(s) will be tried now."),
        Response::Deleted(id) => println!("{id} deleted."),
        Response::Stats(s) => {
            println!("messages:            {}", s.messages);
            println!("recipients waiting:  {}", s.recipients_pending);
            println!("oldest:              {}", human_secs(s.oldest_secs));
            println!("being delivered:     {}", s.in_flight);
            println!("bytes:               {}", s.bytes);
            println!("fsyncs since start:  {}", s.fsyncs);
        }
        Response::Error(e) => anyhow::bail!(e),
    }
    Ok(())
}

fn human_secs(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
