//! `mailferry sendmail`: the `/usr/sbin/sendmail` interface that cron, PHP's
//! `mail()` and countless scripts use to send mail, submitting to a
//! listener of the local server over SMTP.
//!
//! Nothing is queued here: the command reads the message, finishes its
//! header, submits it and exits with a sysexits status that tells the
//! caller whether to try again (75) or not (64, 65, 69). The server does
//! everything else (policy, signing, the durable queue). Installed as a
//! `sendmail` symlink to the binary it behaves the same (see [`dispatch`]).
//!
//! - [`args`]: the historical command-line grammar.
//! - [`input`]: reading the message and finishing its header.
//! - [`submit`]: the SMTP transaction and what each reply means.

pub mod args;
pub mod input;
pub mod submit;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{self, Config, TlsMode};
use args::Mode;

/// Where the command looks for the configuration when neither `-C` nor
/// `MAILFERRY_CONFIG` names one: cron and PHP run it from any folder, so a
/// path relative to the working folder (`config::DEFAULT_PATH`, the last
/// resort) rarely finds anything, and the installed file comes first.
pub const SYSTEM_CONFIG: &str = config::SYSTEM_PATH;

/// sysexits(3) statuses, the contract with every program that runs sendmail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Sent: the server answered `250` to the message.
    Ok = 0,
    /// EX_USAGE: the command line is wrong.
    Usage = 64,
    /// EX_DATAERR: the message is unusable (no recipients with `-t`, a line
    /// too long to fix, refused for its content).
    DataErr = 65,
    /// EX_UNAVAILABLE: refused for good, or no usable configuration.
    Unavailable = 69,
    /// EX_IOERR: standard input could not be read.
    IoErr = 74,
    /// EX_TEMPFAIL: try again later (server down, 4xx, timeout).
    TempFail = 75,
}

/// Why the command failed: its status and one line for standard error.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into() }
    }
}

/// Runs the command if the program was invoked as `sendmail`, `newaliases`
/// or `mailq` (a symlink to the binary), or as `mailferry sendmail`. These
/// get the raw arguments: sendmail's grammar is not clap's.
pub fn dispatch(argv: &[OsString]) -> Option<ExitCode> {
    let name = argv.first().map(Path::new).and_then(Path::file_name).and_then(OsStr::to_str).unwrap_or("");
    let rest = argv.get(1..).unwrap_or_default();
    match name {
        "sendmail" => Some(main("sendmail", rest)),
        "newaliases" => Some(main("newaliases", &[OsString::from("-bi")])),
        "mailq" => Some(main("mailq", &[OsString::from("-bp")])),
        _ if argv.get(1).is_some_and(|a| a == "sendmail") => Some(main("mailferry sendmail", &argv[2..])),
        _ => None,
    }
}

/// Runs the command; `program` prefixes every line on standard error.
pub fn main(program: &str, argv: &[OsString]) -> ExitCode {
    match run(program, argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("{program}: {}", f.message);
            ExitCode::from(f.exit as u8)
        }
    }
}

fn run(program: &str, argv: &[OsString]) -> Result<(), Failure> {
    let argv = argv
        .iter()
        .map(|a| a.to_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Failure::new(Exit::Usage, "an argument is not valid UTF-8"))?;
    let a = args::parse(&argv).map_err(|u| Failure::new(Exit::Usage, u.0))?;
    for w in &a.warnings {
        eprintln!("{program}: {w}");
    }
    match a.mode {
        Mode::Help => {
            print!("{}", args::HELP);
            return Ok(());
        }
        Mode::NewAliases => {
            // Package scripts run newaliases after installing: succeed.
            eprintln!("{program}: mailferry keeps no aliases database; nothing to rebuild");
            return Ok(());
        }
        Mode::Deliver => {}
    }
    if !a.extract && a.recipients.is_empty() {
        return Err(Failure::new(
            Exit::Usage,
            "no recipients: name them as arguments, or pass -t to take them from the To:, Cc: and Bcc: fields",
        ));
    }
    let path = config_path(a.config.clone());
    let config = Config::load_for_client(&path).map_err(|e| {
        Failure::new(Exit::Unavailable, format!("{e} (name the file with -C FILE or MAILFERRY_CONFIG=FILE)"))
    })?;
    let target = target(&config)?;
    let domain = config.sendmail.domain.as_str();

    let mut recipients = Vec::new();
    for arg in &a.recipients {
        recipients.extend(input::parse_argument(arg, domain).map_err(|e| Failure::new(Exit::Usage, e))?);
    }
    let account = Account::current();
    let login_address = input::qualify(&account.login, domain);
    let sender = match &a.sender {
        Some(s) => envelope_sender(s, domain)?,
        None => config.sendmail.from.clone().unwrap_or_else(|| login_address.clone()),
    };
    let from_header = if sender.is_empty() { login_address.as_str() } else { sender.as_str() };
    let full_name = a.full_name.clone().or_else(|| std::env::var("NAME").ok().filter(|n| !n.trim().is_empty()));
    let full_name = full_name.or(account.full_name);

    let raw = input::read(std::io::stdin().lock(), a.ignore_dots, config.limits.message_size).map_err(|e| match e {
        input::InputError::Io(e) => {
            Failure::new(Exit::IoErr, format!("cannot read the message on standard input: {e}"))
        }
        input::InputError::Data(e) => Failure::new(Exit::DataErr, e),
    })?;
    let finished = input::finish(
        raw,
        &input::Finish {
            domain,
            extract: a.extract,
            from: from_header,
            full_name: full_name.as_deref(),
            text_line: config.limits.text_line,
        },
    )
    .map_err(|e| Failure::new(Exit::DataErr, e))?;
    // Postfix's reading of -t: recipients named as arguments are added to
    // those of the header (sendmail 8 would leave them out instead).
    recipients.extend(finished.recipients);
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_lowercase()));
    if recipients.is_empty() {
        return Err(Failure::new(Exit::DataErr, "no recipients: the To:, Cc: and Bcc: fields name none"));
    }
    if recipients.len() > config.limits.recipients {
        return Err(Failure::new(
            Exit::DataErr,
            format!(
                "{} recipients; the server takes at most {} per message (limits.recipients)",
                recipients.len(),
                config.limits.recipients
            ),
        ));
    }
    let envelope = submit::Envelope { sender: &sender, recipients: &recipients, body: a.body };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::TempFail, format!("cannot start: {e}")))?;
    let reply = rt.block_on(submit::submit(&target, &config, &envelope, &finished.message))?;
    if a.verbose {
        eprintln!("{program}: sent to {}: {reply}", recipients.join(", "));
    }
    Ok(())
}

/// `-C`, else `$MAILFERRY_CONFIG`, else [`SYSTEM_CONFIG`] if it exists, else
/// `config::DEFAULT_PATH`.
fn config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("MAILFERRY_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from)).unwrap_or_else(
        || {
            let system = Path::new(SYSTEM_CONFIG);
            if system.exists() {
                system.to_path_buf()
            } else {
                PathBuf::from(config::DEFAULT_PATH)
            }
        },
    )
}

/// `-f`: `""` or `<>` is the null sender; a name without a domain gets one.
fn envelope_sender(arg: &str, domain: &str) -> Result<String, Failure> {
    let trimmed = arg.trim();
    if trimmed.is_empty() || trimmed == "<>" {
        return Ok(String::new());
    }
    let mut addresses =
        input::parse_argument(trimmed, domain).map_err(|e| Failure::new(Exit::Usage, format!("-f: {e}")))?;
    if addresses.len() != 1 {
        return Err(Failure::new(Exit::Usage, format!("-f {arg:?}: name one sender address")));
    }
    Ok(addresses.remove(0))
}

/// The listener to submit to: `sendmail.listener`, else the first listener
/// that trusts the address it is reached on (so it relays without AUTH),
/// like the shipped `local` listener.
fn target(config: &Config) -> Result<submit::Target, Failure> {
    let s = &config.sendmail;
    let reached_on = |l: &config::Listener| {
        let ip = match l.address.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        std::net::SocketAddr::new(ip, l.address.port())
    };
    // Connecting to an address of this machine, the kernel uses that same
    // address as the source: the one the listener's trusted_networks see.
    // A PROXY-protocol listener waits for a load balancer's header first:
    // not one this command can submit to.
    let trusted =
        |l: &config::Listener| !l.proxy_protocol && l.trusted_networks.iter().any(|n| n.contains(&reached_on(l).ip()));
    let listener = match &s.listener {
        Some(name) => config.listeners.iter().find(|l| &l.name == name).ok_or_else(|| {
            Failure::new(Exit::Unavailable, format!("sendmail.listener = {name:?}: there is no such listener"))
        })?,
        None => config.listeners.iter().find(|l| trusted(l)).ok_or_else(|| {
            Failure::new(
                Exit::Unavailable,
                format!(
                    "{}: no listener takes mail from this machine without a password; add trusted_networks = [\"127.0.0.0/8\", \"::1/128\"] to one (like the shipped \"local\" listener), or set sendmail.listener, sendmail.user and sendmail.password_file",
                    config.file.display()
                ),
            )
        })?,
    };
    if listener.proxy_protocol {
        return Err(Failure::new(
            Exit::Unavailable,
            format!(
                "listener {} expects a PROXY header from a load balancer (proxy_protocol = true); point sendmail.listener at a listener without it, e.g. a loopback one",
                listener.name
            ),
        ));
    }
    if listener.address.port() == 0 {
        return Err(Failure::new(
            Exit::Unavailable,
            format!("listener {} has port 0 (a port picked at each start): give it a fixed port", listener.name),
        ));
    }
    let credentials = match (&s.user, &s.password_file) {
        (Some(user), Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Failure::new(Exit::Unavailable, format!("sendmail.password_file {}: {e}", file.display()))
            })?;
            let password = text.lines().next().unwrap_or("").to_string();
            Some((user.clone(), password))
        }
        _ => None,
    };
    if credentials.is_none() && listener.require_auth && !trusted(listener) {
        return Err(Failure::new(
            Exit::Unavailable,
            format!(
                "listener {} requires AUTH from this machine: set sendmail.user and sendmail.password_file, or add this machine to its trusted_networks",
                listener.name
            ),
        ));
    }
    if credentials.is_some() && listener.tls == TlsMode::None && !listener.auth_without_tls {
        return Err(Failure::new(
            Exit::Unavailable,
            format!(
                "listener {} offers AUTH only over TLS: pick a listener with tls = \"starttls\" or \"implicit\" for sendmail.user",
                listener.name
            ),
        ));
    }
    Ok(submit::Target {
        listener: listener.name.clone(),
        addr: reached_on(listener),
        tls: listener.tls,
        tls_name: config.server.hostname.clone(),
        helo: config.server.hostname.clone(),
        credentials,
        timeout: s.timeout,
    })
}

/// The user running the command.
struct Account {
    login: String,
    /// The first field of the password entry's GECOS, if any.
    full_name: Option<String>,
}

impl Account {
    /// From the password database by the real user id, as Postfix does (the
    /// environment is only a fallback: PHP-FPM clears it); `$LOGNAME` or
    /// `$USER` when there is no entry.
    fn current() -> Account {
        if let Some(a) = Self::from_passwd() {
            return a;
        }
        let login = ["LOGNAME", "USER"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            // SAFETY: getuid has no preconditions and cannot fail.
            .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }));
        Account { login, full_name: None }
    }

    fn from_passwd() -> Option<Account> {
        use std::ffi::CStr;
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: all-zero is a valid `passwd` (null pointers and zeros).
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is the
        // buffer's size; the strings it fills in point into `buf`, which
        // outlives their use below.
        let rc = unsafe { libc::getpwuid_r(libc::getuid(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated strings inside `buf`.
        let login = unsafe { CStr::from_ptr(entry.pw_name) }.to_str().ok()?.to_string();
        let full_name = (!entry.pw_gecos.is_null())
            // SAFETY: as above.
            .then(|| unsafe { CStr::from_ptr(entry.pw_gecos) }.to_string_lossy().into_owned())
            .and_then(|g| g.split(',').next().map(|n| n.trim().to_string()))
            .filter(|n| !n.is_empty());
        (!login.is_empty()).then_some(Account { login, full_name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml"), Path::new("/tmp")).unwrap()
    }

    #[test]
    fn the_first_listener_trusting_loopback_is_chosen() {
        let c = config(
            "[[listeners]]\nname = \"sub\"\naddress = \"0.0.0.0:587\"\ntls = \"starttls\"\n\
             [[listeners]]\nname = \"local\"\naddress = \"0.0.0.0:2525\"\ntrusted_networks = [\"127.0.0.0/8\"]\n",
        );
        let t = target(&c).unwrap();
        assert_eq!((t.listener.as_str(), t.addr.to_string().as_str()), ("local", "127.0.0.1:2525"));
        assert!(t.credentials.is_none());
        let c = config("[[listeners]]\naddress = \"[::]:25\"\ntrusted_networks = [\"::1/128\"]\n");
        assert_eq!(target(&c).unwrap().addr.to_string(), "[::1]:25");
    }

    #[test]
    fn proxy_protocol_listeners_are_not_for_sendmail() {
        let proxied =
            "[[listeners]]\nname = \"lb\"\naddress = \"127.0.0.1:10587\"\ntrusted_networks = [\"127.0.0.0/8\"]\n\
                       proxy_protocol = true\nproxy_trusted = [\"127.0.0.1/32\"]\n";
        // Skipped when choosing…
        let c = config(&format!("{proxied}[[listeners]]\nname = \"local\"\naddress = \"127.0.0.1:2525\"\ntrusted_networks = [\"127.0.0.0/8\"]\n"));
        assert_eq!(target(&c).unwrap().listener, "local");
        // …and refused, with the reason, when named.
        let c = config(&format!("{proxied}[sendmail]\nlistener = \"lb\"\n"));
        let f = target(&c).err().unwrap();
        assert_eq!(f.exit, Exit::Unavailable);
        assert!(f.message.contains("PROXY header"), "{}", f.message);
    }

    #[test]
    fn no_usable_listener_says_how_to_fix_it() {
        let c = config("[[listeners]]\nname = \"sub\"\naddress = \"127.0.0.1:587\"\ntls = \"starttls\"\n");
        let f = target(&c).err().unwrap();
        assert_eq!(f.exit, Exit::Unavailable);
        assert!(f.message.contains("trusted_networks") && f.message.contains("sendmail.user"), "{}", f.message);
        let c = config(
            "[[listeners]]\nname = \"sub\"\naddress = \"127.0.0.1:587\"\ntls = \"starttls\"\n[sendmail]\nlistener = \"sub\"\n",
        );
        assert!(target(&c).err().unwrap().message.contains("listener sub requires AUTH"));
        let c = config("[[listeners]]\naddress = \"127.0.0.1:0\"\ntrusted_networks = [\"127.0.0.1\"]\n");
        assert!(target(&c).err().unwrap().message.contains("port 0"));
    }

    #[test]
    fn sendmail_keys_are_checked() {
        let e = Config::parse(
            "[[listeners]]\naddress = \"127.0.0.1:25\"\n[sendmail]\nlistener = \"nope\"\nfrom = \"not an address\"\nuser = \"u\"\n",
            Path::new("t.toml"),
            Path::new("/tmp"),
        )
        .unwrap_err()
        .message;
        assert!(e.contains("sendmail.listener = \"nope\": there is no listener of that name"), "{e}");
        assert!(e.contains("sendmail.from = \"not an address\""), "{e}");
        assert!(e.contains("sendmail.user and sendmail.password_file go together"), "{e}");
        let c = config("[server]\nhostname = \"mx.example.com\"\n[[listeners]]\naddress = \"127.0.0.1:25\"\n");
        assert_eq!(c.sendmail.domain, "mx.example.com");
        assert_eq!(c.sendmail.timeout.as_secs(), config::defaults::SENDMAIL_TIMEOUT_SECS);
    }

    #[test]
    fn the_command_needs_no_secrets_of_relays() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(
            &file,
            "[[listeners]]\naddress = \"127.0.0.1:2525\"\ntrusted_networks = [\"127.0.0.1\"]\n\
             [relays.up]\nhost = \"smtp.example.com\"\nuser = \"u\"\npassword = \"${MF_TEST_SENDMAIL_UNSET}\"\n\
             [[plugins]]\nname = \"not-built-in\"\n",
        )
        .unwrap();
        assert!(Config::load(&file).is_err(), "serve needs the secret");
        let c = Config::load_for_client(&file).unwrap();
        assert_eq!(target(&c).unwrap().addr.to_string(), "127.0.0.1:2525");
        // Spelling is still checked everywhere.
        std::fs::write(&file, "[[listeners]]\naddress = \"127.0.0.1:2525\"\n[relays.up]\nhots = \"x\"\n").unwrap();
        assert!(Config::load_for_client(&file).unwrap_err().message.contains("hots"));
    }

    #[test]
    fn envelope_senders() {
        assert_eq!(envelope_sender("", "h.example").unwrap(), "");
        assert_eq!(envelope_sender("<>", "h.example").unwrap(), "");
        assert_eq!(envelope_sender("root", "h.example").unwrap(), "root@h.example");
        assert_eq!(envelope_sender("<a@x.example>", "h.example").unwrap(), "a@x.example");
        assert_eq!(envelope_sender("a@x.example, b@x.example", "h.example").unwrap_err().exit, Exit::Usage);
    }

    #[test]
    fn dispatch_by_program_name() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(dispatch(&os(&["/usr/bin/mailferry", "serve"])).is_none());
        assert!(dispatch(&os(&["mailferry"])).is_none());
        // --help answers without reading anything.
        assert!(dispatch(&os(&["/usr/sbin/sendmail", "--help"])).is_some());
        assert!(dispatch(&os(&["target/debug/mailferry", "sendmail", "--help"])).is_some());
    }
}
