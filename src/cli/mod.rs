//! The command line: what each `mailferry` command does, one file per
//! command; this file parses the arguments and runs the one asked for.

mod check;
mod dkim;
mod dns;
mod init;
mod queue;
mod serve;
mod user;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::{config, password};

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
    Init(init::InitCmd),
    /// Run the relay.
    Serve(ConfigArg),
    /// Validate the configuration, certificates and plugins, then exit.
    Check(ConfigArg),
    /// Manage users: the users file of the auth-flat-file plugin, or
    /// mailferry's own table in a database with `migrate = true`.
    User {
        #[command(subcommand)]
        action: user::UserCmd,
    },
    /// Read a password on standard input and print its argon2id hash.
    HashPassword,
    /// DKIM keys.
    Dkim {
        #[command(subcommand)]
        action: dkim::DkimCmd,
    },
    /// The delivery queue: works on a running server, or on the spool when
    /// none runs.
    Queue {
        #[command(subcommand)]
        action: queue::QueueCmd,
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
        domain: dns::DomainArgs,
        #[arg(long)]
        dmarc_rua: Option<String>,
    },
    /// Resolve a domain's live DNS records and check them, record by record,
    /// against the relay and the local DKIM keys. Exits 1 if any fails.
    Doctor {
        #[command(flatten)]
        domain: dns::DomainArgs,
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

/// Runs the command the arguments name.
pub fn main() -> ExitCode {
    // sendmail's historical options are not clap's grammar: that command
    // takes the raw arguments, whether invoked as `mailferry sendmail` or
    // through a `sendmail` symlink.
    if let Some(code) = crate::sendmail::dispatch(&std::env::args_os().collect::<Vec<_>>()) {
        return code;
    }
    let cli = Cli::parse();
    if let Cmd::Sendmail { args } = &cli.command {
        return crate::sendmail::main("mailferry sendmail", args);
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
fn init_logging(format: LogFormat) -> crate::logs::Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn,sqlx=warn"));
    let (writer, guard) = crate::logs::stderr();
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
        Cmd::Init(a) => init::run(a),
        Cmd::Serve(a) => serve::run(load_config(&a.path())?),
        Cmd::Check(a) => check::run(load_config(&a.path())?),
        Cmd::User { action } => user::run(action),
        Cmd::Dkim { action } => dkim::run(action),
        Cmd::Queue { action, config } => queue::run(action, &load_config_for_admin(&config::resolve_path(config))?),
        Cmd::Dns { domain, dmarc_rua } => dns::records(&domain, dmarc_rua),
        Cmd::Doctor { domain, dns_server } => dns::doctor(&domain, dns_server),
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
