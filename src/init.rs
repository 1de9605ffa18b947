//! `mailferry init`: a new folder holding everything a relay for one sending
//! domain needs (the configuration, the users file, a DKIM key and a file
//! for the relay's secrets) and the steps left to the operator: DNS, the
//! certificate, the credentials, users, the service.
//!
//! The configuration is the production shape: 587 (STARTTLS) and 465
//! (implicit TLS) with AUTH for mail clients, a loopback listener without
//! AUTH for programs on the machine, the provider's preset as the relay
//! behind the durable queue, and state in `/var/lib/mailferry`, the systemd
//! unit's `StateDirectory=`. Secrets are `${VAR}` references to the env file,
//! never written into the configuration, so it may be readable by every user
//! who runs `mailferry sendmail`.
//!
//! Arguments are checked before anything is written, and nothing is ever
//! overwritten: the folder must be new or empty. If writing fails halfway,
//! what was written is removed again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{self, Provider};
use crate::dkim::keygen::{self, KeyKind};
use crate::dkim::keys::{is_domain, KeyInfo, KeyStore};
use crate::dns::{self, DnsArgs, Inbound, RelayKind};

/// The variable the relay's password (or API key, or token) is read from.
pub const PASSWORD_VAR: &str = "MAILFERRY_RELAY_PASSWORD";
/// The variable the relay's login is read from when `--relay-user` was not given.
pub const USER_VAR: &str = "MAILFERRY_RELAY_USER";
/// Where state lives by default: the systemd unit's `StateDirectory=mailferry`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mailferry";
/// Where certbot keeps the current certificate of each name.
pub const LETSENCRYPT_LIVE: &str = "/etc/letsencrypt/live";
/// The folder the systemd unit and the container image read the configuration from.
pub const SERVICE_CONFIG_DIR: &str = "/etc/mailferry";
/// The loopback listener programs on this machine (`mailferry sendmail`) submit to.
pub const LOCAL_ADDRESS: &str = "127.0.0.1:2525";
/// The admin listener (`/metrics`, `/healthz`), on this machine only.
pub const ADMIN_ADDRESS: &str = "127.0.0.1:2580";

/// What `mailferry init` was asked for.
#[derive(Debug, Clone)]
pub struct InitArgs {
    /// The folder to create (or an empty one to fill).
    pub dir: PathBuf,
    /// The sending domain: the domain of the From: addresses.
    pub domain: String,
    /// The name clients connect to; `smtp.<domain>` when absent.
    pub hostname: Option<String>,
    pub relay: RelayKind,
    /// SES: the AWS region (required). Resend: its AWS region, for the DNS
    /// records only. Mailgun: `us` or `eu`.
    pub region: Option<String>,
    /// The relay's login, for relays whose login is not fixed; without it the
    /// configuration reads `${MAILFERRY_RELAY_USER}`.
    pub relay_user: Option<String>,
    /// `--relay smtp`: the smarthost, `HOST` or `HOST:PORT`.
    pub relay_host: Option<String>,
    pub inbound: Option<Inbound>,
    /// A first user to create (its password is given to [`write`]).
    pub user: Option<String>,
    /// `server.state_dir`, written as given (relative: to the folder).
    pub state_dir: String,
    /// Where to look for an existing certificate of the host name.
    pub letsencrypt_live: PathBuf,
}

impl InitArgs {
    /// Arguments with the defaults `mailferry init` uses.
    pub fn new(dir: impl Into<PathBuf>, domain: &str, relay: RelayKind) -> InitArgs {
        InitArgs {
            dir: dir.into(),
            domain: domain.to_string(),
            hostname: None,
            relay,
            region: None,
            relay_user: None,
            relay_host: None,
            inbound: None,
            user: None,
            state_dir: DEFAULT_STATE_DIR.to_string(),
            letsencrypt_live: PathBuf::from(LETSENCRYPT_LIVE),
        }
    }
}

/// Checked arguments: everything the files are made from.
#[derive(Debug, Clone)]
pub struct Setup {
    pub dir: PathBuf,
    pub domain: String,
    pub hostname: String,
    pub relay: RelayKind,
    pub provider: Option<Provider>,
    /// The `[relays.NAME]` table (and route) name.
    pub relay_name: String,
    /// `region` of the relay table.
    pub relay_region: Option<String>,
    pub relay_user: Option<String>,
    /// `--relay smtp`: host, port and TLS mode.
    pub smarthost: Option<(String, u16, config::TlsMode)>,
    /// What `mailferry dns` and `doctor` are asked.
    pub dns: DnsArgs,
    pub user: Option<String>,
    pub state_dir: String,
    /// `limits.message_size`: the default, or the provider's limit if smaller.
    pub message_size: usize,
    /// The certificate and key, if they exist already (then `[tls]` is active).
    pub tls_files: (PathBuf, PathBuf),
    pub tls_active: bool,
}

/// Checks the arguments; the error names the option and says what to give.
pub fn check(args: &InitArgs) -> Result<Setup, String> {
    let provider = args.relay.provider();
    let region = args.region.as_deref().map(str::trim).filter(|r| !r.is_empty()).map(str::to_string);
    let mut dns = DnsArgs::new(&args.domain, args.relay);
    dns.inbound = args.inbound;
    let mut relay_region = None;
    match (args.relay, &region) {
        (RelayKind::Ses, None) => {
            return Err(format!(
                "--relay ses needs --region, the AWS region of your SES account and SMTP credentials, e.g. {}",
                config::SES_REGIONS.join(", ")
            ))
        }
        (RelayKind::Ses, Some(r)) => {
            if !config::is_aws_region(r) {
                return Err(format!("--region {r:?} is not an AWS region code like eu-west-1 or us-east-1"));
            }
            dns.region = Some(r.clone());
            relay_region = Some(r.clone());
        }
        // Resend sends through SES in the region of the domain: it shows in
        // the DNS records only.
        (RelayKind::Resend, Some(r)) => dns.region = Some(r.clone()),
        (RelayKind::Mailgun, Some(r)) => match r.as_str() {
            "us" | "eu" => relay_region = Some(r.clone()),
            _ => return Err(format!("--region {r:?}: Mailgun's regions are \"us\" (the default) and \"eu\"")),
        },
        (other, Some(_)) => return Err(format!("--region: {} has no regions to choose from", other.label())),
        (_, None) => {}
    }
    dns.validate()?;
    let domain = dns.domain();
    let hostname = match &args.hostname {
        Some(h) => h.trim().trim_end_matches('.').to_ascii_lowercase(),
        None => format!("smtp.{domain}"),
    };
    if !is_domain(&hostname) {
        return Err(format!(
            "--hostname {:?} is not a host name like smtp.{domain}: it is the name mail clients connect to and the TLS certificate's",
            args.hostname.as_deref().unwrap_or_default()
        ));
    }
    let relay_user = args.relay_user.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_string);
    if let (Some(p), Some(_)) = (provider, &relay_user) {
        if let Some(fixed) = p.fixed_user() {
            return Err(format!(
                "--relay-user: {} logs in as the literal user `{fixed}`, filled in for you; leave --relay-user out",
                p.label()
            ));
        }
    }
    if let Some(u) = &relay_user {
        if u.contains(['"', '\\', '$']) || u.chars().any(char::is_control) {
            return Err(format!("--relay-user {u:?}: quotes, backslashes, '$' and control characters are not allowed"));
        }
        if provider == Some(Provider::Mailgun) && !u.contains('@') {
            return Err(format!(
                "--relay-user {u:?}: Mailgun SMTP logins are full addresses on your sending domain, e.g. postmaster@mg.{domain}"
            ));
        }
    }
    let smarthost = match (args.relay, &args.relay_host) {
        (RelayKind::Smtp, None) => {
            return Err("--relay smtp needs --relay-host, your provider's SMTP server: HOST or HOST:PORT".into())
        }
        (RelayKind::Smtp, Some(h)) => Some(parse_smarthost(h)?),
        (_, Some(_)) => {
            return Err(format!("--relay-host is for --relay smtp; the {} preset knows its host", args.relay.label()))
        }
        (_, None) => None,
    };
    if let Some(login) = &args.user {
        crate::users::validate_login(login).map_err(|e| format!("--user: {e}"))?;
    }
    let state_dir = args.state_dir.trim().to_string();
    if state_dir.is_empty() || state_dir.chars().any(char::is_control) {
        return Err(format!("--state-dir {:?} is not a folder path", args.state_dir));
    }
    let live = args.letsencrypt_live.join(&hostname);
    let tls_files = (live.join("fullchain.pem"), live.join("privkey.pem"));
    let tls_active = tls_files.0.is_file() && tls_files.1.is_file();
    let message_size = match provider {
        Some(p) => p.max_message_size().min(config::defaults::MESSAGE_SIZE),
        None => config::defaults::MESSAGE_SIZE,
    };
    Ok(Setup {
        dir: args.dir.clone(),
        relay_name: provider.map(|p| p.name().to_string()).unwrap_or_else(|| "smarthost".into()),
        domain,
        hostname,
        relay: args.relay,
        provider,
        relay_region,
        relay_user,
        smarthost,
        dns,
        user: args.user.clone(),
        state_dir,
        message_size,
        tls_files,
        tls_active,
    })
}

/// `HOST` or `HOST:PORT`; port 465 means TLS from the first byte.
fn parse_smarthost(s: &str) -> Result<(String, u16, config::TlsMode), String> {
    let s = s.trim();
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("--relay-host {s:?}: bad port {p:?}"))?,
        ),
        None => (s, 587),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if !(is_domain(&host) || host.parse::<std::net::Ipv4Addr>().is_ok()) {
        return Err(format!("--relay-host {s:?} is not HOST or HOST:PORT, e.g. smtp.example.net:587"));
    }
    let tls = if port == 465 { config::TlsMode::Implicit } else { config::TlsMode::Starttls };
    Ok((host, port, tls))
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl Setup {
    /// Whether the relay needs a login besides the password.
    fn needs_user(&self) -> bool {
        match self.provider {
            Some(p) => p.fixed_user().is_none() && p != Provider::Postmark,
            None => true,
        }
    }

    /// The relay's label in prose, with its region.
    pub fn relay_label(&self) -> String {
        match (&self.smarthost, &self.relay_region) {
            (Some((host, port, _)), _) => format!("{host}:{port}"),
            (None, Some(r)) => format!("{} ({r})", self.relay.label()),
            (None, None) => self.relay.label().to_string(),
        }
    }

    /// What the credentials are and where they come from.
    fn credentials(&self) -> String {
        match self.provider {
            Some(p) => p.credentials(self.relay_region.as_deref()),
            None => "the login and password of your SMTP provider".into(),
        }
    }

    /// The `[relays.NAME]` table.
    fn relay_table(&self) -> String {
        let mut t = comment(&format!("{}. Credentials: {}.", self.relay_label(), self.credentials()));
        if let Some(p) = self.provider {
            t.push_str("# The preset fills in host, port, TLS and the limits (docs/providers.md).\n");
            t.push_str(&format!("[relays.{}]\nprovider = {}\n", self.relay_name, q(p.name())));
            if let Some(r) = &self.relay_region {
                t.push_str(&format!("region = {}\n", q(r)));
            }
        } else if let Some((host, port, tls)) = &self.smarthost {
            let tls = match tls {
                config::TlsMode::Implicit => "implicit",
                _ => "starttls",
            };
            t.push_str(&format!("[relays.{}]\nhost = {}\nport = {port}\ntls = {}\n", self.relay_name, q(host), q(tls)));
        }
        match self.provider.and_then(Provider::fixed_user) {
            Some(fixed) => t.push_str(&format!("# user = \"{fixed}\", filled in by the preset\n")),
            None if self.needs_user() => {
                let user = self.relay_user.clone().unwrap_or_else(|| format!("${{{USER_VAR}}}"));
                t.push_str(&format!("user = {}\n", q(&user)));
            }
            None => match &self.relay_user {
                Some(u) => t.push_str(&format!("user = {}\n", q(u))),
                None => t.push_str("# user: the token below, unless you use an SMTP token pair\n"),
            },
        }
        t.push_str(&format!("password = \"${{{PASSWORD_VAR}}}\"   # from the env file\n"));
        t
    }

    /// `mailferry.toml`.
    pub fn config_text(&self) -> String {
        let h = &self.hostname;
        let tls = {
            let (cert, key) = (self.tls_files.0.display().to_string(), self.tls_files.1.display().to_string());
            let lines = format!("[tls]\ncert = {}\nkey = {}\n", q(&cert), q(&key));
            if self.tls_active {
                format!("# The certificate for {h} (docs/tls.md).\n{lines}")
            } else {
                let commented: String = lines.lines().map(|l| format!("# {l}\n")).collect();
                let why = comment(&format!(
                    "The certificate for {h} (docs/tls.md). Until these lines are active the server makes a \
                     self-signed one, which Gmail and most mail clients refuse."
                ));
                format!("{why}{commented}")
            }
        };
        let size_note = match self.provider {
            Some(p) if p.max_message_size() < config::defaults::MESSAGE_SIZE => {
                format!("   # {}'s limit; larger messages are refused when submitted", p.label())
            }
            _ => "   # 25 MiB, advertised in EHLO SIZE".into(),
        };
        let dkim_route = if self.provider == Some(Provider::Ses) {
            format!(
                "# SES rewrites Message-ID and Date: keep them out of the signature.\n[plugins.config.routes.{}]\nexclude_headers = [\"Message-ID\", \"Date\"]\n",
                self.relay_name
            )
        } else {
            String::new()
        };
        format!(
            r#"# mailferry for {domain}, written by `mailferry init`.
# Every key is documented in docs/configuration.md (with its default).
# Relative paths resolve against this file's folder. Secrets are ${{VAR}}
# references to the env file beside it, never written here.

[server]
# The name mail clients connect to; the TLS certificate must be for it.
hostname = {hostname}
# The queue, the compiled-plugin cache and the self-signed certificate. The
# systemd unit's StateDirectory=mailferry creates /var/lib/mailferry.
state_dir = {state_dir}

[limits]
message_size = {message_size}{size_note}

# Programs on this machine: cron, PHP and scripts, through `mailferry
# sendmail` (docs/sendmail.md). No TLS and no AUTH, so loopback only, and
# relaying only for these networks. Remove it if nothing local sends mail.
[[listeners]]
name = "local"
address = {local}
tls = "none"
require_auth = false
trusted_networks = ["127.0.0.0/8", "::1/128"]

# Mail clients and Gmail "Send mail as": STARTTLS, then AUTH.
[[listeners]]
name = "submission"
address = "0.0.0.0:587"
tls = "starttls"
require_auth = true

# The same with TLS from the first byte ("SSL" in Gmail's dialog).
[[listeners]]
name = "submissions"
address = "0.0.0.0:465"
tls = "implicit"
require_auth = true

{tls}
# /metrics (Prometheus) and /healthz, for this machine only.
[admin]
address = {admin}

# Plugins run in this order at every step of a session.
[[plugins]]
name = "auth-flat-file"
grants = ["password"]
read_dirs = ["auth"]          # visible to the plugin, read-only, as /auth
[plugins.config]
users = "/auth/users"         # manage with `mailferry user add LOGIN`

# Who may send as whom, in MAIL FROM and in From:/Sender:. A login sends as
# itself and as the addresses listed for it in auth/senders; programs on the
# "local" listener (no login) only as trusted_senders. Before dkim-sign, so
# nothing is signed for a sender the login may not use.
[[plugins]]
name = "sender-policy"
read_dirs = ["auth"]
[plugins.config]
file = "/auth/senders"        # login: alias@{domain}, *@example.org
# Cron and `mailferry sendmail` send as <user>@{domain} ([sendmail] below).
trusted_senders = [{trusted}]

# Signs each message with the keys of its From: domain, in dkim/<domain>/.
[[plugins]]
name = "dkim-sign"
grants = ["dkim"]
[plugins.config]
on_missing_key = "continue"   # a From: domain without a key: sent unsigned, logged
{dkim_route}
# Queues each message on disk (the client's 250 comes once it is fsynced),
# then delivers it through the relay with retries and bounces (docs/queue.md).
[[plugins]]
name = "smtp-forward"
grants = ["outbound"]
[plugins.config]
route = {route}

{relay}
[dkim]
keys = "dkim"

# `mailferry sendmail`: names without a domain (root, www-data) get this one.
[sendmail]
domain = {domain_q}
"#,
            domain = self.domain,
            hostname = q(h),
            state_dir = q(&self.state_dir),
            message_size = self.message_size,
            local = q(LOCAL_ADDRESS),
            admin = q(ADMIN_ADDRESS),
            route = q(&self.relay_name),
            trusted = q(&format!("*@{}", self.domain)),
            relay = self.relay_table(),
            domain_q = q(&self.domain),
        )
    }

    /// The env file: the relay's secrets, commented out until filled in, so
    /// a forgotten one stops the start instead of sending an empty password.
    pub fn env_text(&self) -> String {
        let mut t = format!(
            "# Secrets of {config}: it refers to them as ${{NAME}}.\n\
             # Read by the systemd unit (EnvironmentFile=/etc/mailferry/env) and by\n\
             # `docker run --env-file`; in a shell: set -a; . ./env; set +a\n\
             # One NAME=value a line, no quotes. Keep this file readable by root only.\n#\n\
             {what}\
             # Remove the # and write the value after the =.\n",
            config = self.dir.join("mailferry.toml").display(),
            what = comment(&format!("{}.", upper_first(&self.credentials()))),
        );
        if self.needs_user() && self.relay_user.is_none() {
            t.push_str(&format!("#{USER_VAR}=\n"));
        }
        t.push_str(&format!("#{PASSWORD_VAR}=\n"));
        t
    }
}

/// `text` wrapped at 78 columns, each line starting with `first` (the
/// first) or `rest` (the others).
fn wrap(text: &str, first: &str, rest: &str) -> String {
    crate::text::wrap(text, first, rest, 78)
}

/// A TOML comment paragraph.
fn comment(text: &str) -> String {
    wrap(text, "# ", "# ")
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The senders file `sender-policy` reads (docs/configuration.md#sender-policy).
const SENDERS: &str = "\
# mailferry senders: the addresses each login may send as besides itself
# (plugin sender-policy), in MAIL FROM and in From:/Sender:. One line per
# login; several lines for one login add up:
#
#   login: sender, sender, ...
#
# A sender is an address, *@domain (every address of that domain),
# *@*.domain (every address of its subdomains) or * (anyone). Read at every
# message: edits apply at once.
#
# alice@example.com: alice.smith@example.com, sales@example.com
";

/// What [`write`] made.
#[derive(Debug, Clone)]
pub struct Written {
    /// The folder, absolute.
    pub dir: PathBuf,
    pub config: PathBuf,
    pub env: PathBuf,
    pub users: PathBuf,
    pub key: KeyInfo,
}

/// Writes the folder; `password` is the first user's. Refuses a folder that
/// exists and is not empty; on failure, removes what it wrote.
pub fn write(setup: &Setup, password: Option<&str>) -> Result<Written, String> {
    let dir = &setup.dir;
    let created_dir = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty; init never overwrites anything: name a new folder, or empty this one",
                    dir.display()
                ));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(format!("{} exists and is not a folder", dir.display()))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut created = Vec::new();
    let result = write_files(setup, password, &mut created);
    if result.is_err() {
        // Only what this run created, newest first: a file someone else
        // put there meanwhile stays.
        for path in created.iter().rev() {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir_all(path));
        }
        if created_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// Writes the files, recording each one it creates in `created`.
fn write_files(setup: &Setup, password: Option<&str>, created: &mut Vec<PathBuf>) -> Result<Written, String> {
    let dir = std::fs::canonicalize(&setup.dir).map_err(|e| format!("{}: {e}", setup.dir.display()))?;
    let setup = Setup { dir: dir.clone(), ..setup.clone() };
    let config = dir.join("mailferry.toml");
    create_file(&config, setup.config_text().as_bytes(), 0o644)?;
    created.push(config.clone());
    let env = dir.join("env");
    create_file(&env, setup.env_text().as_bytes(), 0o600)?;
    created.push(env.clone());

    let auth = dir.join("auth");
    create_private_dir(&auth)?;
    created.push(auth.clone());
    let users = auth.join("users");
    let mut text = String::from("# mailferry users: login:password-hash (Dovecot passwd-file format)\n");
    if let (Some(login), Some(password)) = (&setup.user, password) {
        let hash = crate::password::hash(password)?;
        text.push_str(&format!("{login}:{hash}\n"));
    }
    create_file(&users, text.as_bytes(), 0o600)?;
    let senders = auth.join("senders");
    create_file(&senders, SENDERS.as_bytes(), 0o600)?;

    let keys = dir.join("dkim");
    create_private_dir(&keys)?;
    created.push(keys.clone());
    let selector = keygen::default_selector(KeyKind::Rsa2048);
    let key = keygen::create(&keys, &setup.domain, &selector, KeyKind::Rsa2048)?;
    Ok(Written { dir, config, env, users, key })
}

fn create_private_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Creates a new file (never replacing one) with `mode`, durably.
fn create_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The DNS records to publish, exactly as `mailferry dns` prints them for
/// this domain and the keys just made, without its closing `doctor` hint
/// (the next steps give that command with `--config`).
pub fn dns_records(setup: &Setup, written: &Written) -> Result<String, String> {
    let keys = KeyStore::load(&written.dir.join("dkim"))?;
    let text = dns::render(&setup.dns, &dns::plan(&setup.dns, &keys));
    Ok(match text.trim_end().rsplit_once('\n') {
        Some((before, last)) if last.starts_with("Once published") => format!("{}\n", before.trim_end()),
        _ => text,
    })
}

/// The arguments of `mailferry doctor` (and `dns`) for this setup.
pub fn doctor_args(setup: &Setup) -> String {
    let mut a = format!("--domain {} --relay {}", setup.domain, setup.relay);
    if let Some(r) = &setup.dns.region {
        a.push_str(&format!(" --region {r}"));
    }
    if setup.dns.inbound == Some(Inbound::Cloudflare) {
        a.push_str(" --inbound cloudflare");
    }
    a
}

/// Everything `mailferry init` prints after writing the folder.
pub fn next_steps(setup: &Setup, written: &Written, dns_records: &str) -> String {
    let dir = written.dir.display().to_string();
    let config = written.config.display().to_string();
    let env = written.env.display().to_string();
    let h = &setup.hostname;
    let key_rel = written.key.path.strip_prefix(&written.dir).unwrap_or(&written.key.path).display().to_string();
    let users_line = match &setup.user {
        Some(login) => format!("logins: {login}"),
        None => "logins: none yet".into(),
    };
    let mut o = format!("Created {dir} for {}, relaying through {}:\n", setup.domain, setup.relay_label());
    for (file, what) in [
        ("mailferry.toml", "the configuration: ports 587 and 465 for mail clients (AUTH),".to_string()),
        ("", format!("{LOCAL_ADDRESS} for programs on this machine")),
        ("env", "the relay's credentials, still to fill in".into()),
        ("auth/users", users_line),
        ("auth/senders", "the addresses each login may send as besides itself".into()),
        (key_rel.as_str(), String::new()),
        ("", format!("the DKIM key ({}, selector {})", written.key.algorithm, written.key.selector)),
    ] {
        o.push_str(format!("  {file:16} {what}").trim_end());
        o.push('\n');
    }

    o.push_str(&format!(
        "\nNext steps\n\n1. DNS. Point {h} at this machine (an A record, and AAAA for IPv6), then publish\n   these records:\n\n"
    ));
    o.push_str(dns_records);

    o.push_str(&format!("\n2. Certificate. Clients check it against {h} (docs/tls.md).\n"));
    if setup.tls_active {
        o.push_str(&format!(
            "   {} is in use ([tls]); the user the server runs as must be able to read it.\n",
            setup.tls_files.0.parent().unwrap_or(Path::new("")).display()
        ));
    } else {
        o.push_str(&format!(
            "   For example: certbot certonly --standalone -d {h}\n   \
             then remove the \"# \" before [tls], cert and key in {config}.\n   \
             Until then the server uses a self-signed certificate, which Gmail and most clients refuse.\n"
        ));
    }

    let vars = if setup.needs_user() && setup.relay_user.is_none() {
        format!("{USER_VAR} and {PASSWORD_VAR}")
    } else {
        PASSWORD_VAR.to_string()
    };
    o.push('\n');
    o.push_str(&wrap(
        &format!(
            "Relay credentials: {}. In {env}, remove the # before {vars} and write the values after the =.",
            setup.credentials()
        ),
        "3. ",
        "   ",
    ));

    o.push('\n');
    match &setup.user {
        Some(login) => {
            o.push_str(&wrap(
                &format!(
                    "Users. {login} is in auth/users. More, each login being the address it sends as (docs/gmail.md):"
                ),
                "4. ",
                "   ",
            ));
            o.push_str(&format!("     mailferry user add other@{} --config {config}\n", setup.domain));
        }
        None => {
            o.push_str("4. Users. The login is the address it sends as (docs/gmail.md):\n");
            o.push_str(&format!("     mailferry user add you@{} --config {config}\n", setup.domain));
        }
    }

    o.push_str(&format!(
        "\n5. Check, then start:\n     sh -c 'set -a; . {env}; exec mailferry check --config {config}'\n"
    ));
    o.push_str("   As a systemd service (docs/install.md):\n");
    o.push_str("     useradd --system --home-dir /var/lib/mailferry --shell /usr/sbin/nologin mailferry\n");
    o.push_str(&format!("     chown -R mailferry:mailferry {dir}/auth {dir}/dkim\n"));
    o.push_str("     install -m 644 dist/systemd/mailferry.service /etc/systemd/system/\n");
    o.push_str("     systemctl daemon-reload && systemctl enable --now mailferry\n");
    if written.dir != Path::new(SERVICE_CONFIG_DIR) {
        o.push_str(&format!(
            "   (the unit reads {SERVICE_CONFIG_DIR}/mailferry.toml and {SERVICE_CONFIG_DIR}/env: move this folder there,\n   or change ExecStart= and EnvironmentFile=)\n"
        ));
    }
    o.push_str(&format!(
        "   Or in the foreground, as root for ports 587 and 465:\n     sh -c 'set -a; . {env}; exec mailferry serve --config {config}'\n"
    ));

    o.push_str(&format!(
        "\n6. Once the records are published:\n     mailferry doctor {} --config {config}\n",
        doctor_args(setup)
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(relay: RelayKind, f: impl FnOnce(&mut InitArgs)) -> Result<Setup, String> {
        let mut a = InitArgs::new("/nonexistent/mf", "Example.COM", relay);
        a.letsencrypt_live = PathBuf::from("/nonexistent/live");
        f(&mut a);
        check(&a)
    }

    /// Parses the generated configuration as `check` does, with the secrets set.
    fn parse(s: &Setup) -> config::Config {
        std::env::set_var(PASSWORD_VAR, "pw");
        std::env::set_var(USER_VAR, "postmaster@mg.example.com");
        config::Config::parse(&s.config_text(), Path::new("mailferry.toml"), Path::new("/etc/mailferry"))
            .unwrap_or_else(|e| panic!("{e}\n{}", s.config_text()))
    }

    #[test]
    fn every_relay_gives_a_valid_configuration() {
        for relay in RelayKind::ALL {
            let s = setup(relay, |a| match relay {
                RelayKind::Ses => a.region = Some("eu-west-1".into()),
                RelayKind::Smtp => a.relay_host = Some("smtp.example.net".into()),
                _ => {}
            })
            .unwrap();
            let c = parse(&s);
            assert_eq!(c.server.hostname, "smtp.example.com");
            assert_eq!(c.server.state_dir, Path::new("/var/lib/mailferry"));
            let ports: Vec<_> = c.listeners.iter().map(|l| (l.name.as_str(), l.address.port(), l.tls)).collect();
            assert_eq!(
                ports,
                [
                    ("local", 2525, config::TlsMode::None),
                    ("submission", 587, config::TlsMode::Starttls),
                    ("submissions", 465, config::TlsMode::Implicit)
                ]
            );
            assert!(c.listeners[0].address.ip().is_loopback() && !c.listeners[0].require_auth);
            assert!(c.listeners[1].require_auth && c.listeners[2].require_auth);
            assert!(c.tls.cert.is_none());
            let names: Vec<_> = c.plugins.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["auth-flat-file", "sender-policy", "dkim-sign", "smtp-forward"]);
            assert_eq!(c.plugins[3].config["route"].as_str(), Some(s.relay_name.as_str()));
            // Cron mail is sent as <user>@example.com: the policy takes it.
            assert_eq!(c.plugins[1].config["trusted_senders"][0].as_str(), Some("*@example.com"));
            let config::Relay::Smtp(r) = &c.relays[&s.relay_name] else { panic!("{relay}: not smtp") };
            assert_eq!(r.password.as_deref(), Some("pw"), "{relay}");
            assert_eq!(r.provider, relay.provider());
            assert_eq!(c.sendmail.domain, "example.com");
            assert_eq!(c.dkim.keys, Path::new("/etc/mailferry/dkim"));
            assert_eq!(c.admin.address.map(|a| a.to_string()).as_deref(), Some(ADMIN_ADDRESS));
            assert!(c.limits.message_size <= r.max_message_size.unwrap_or(usize::MAX), "{relay}");
            // The secrets are references, never values.
            assert!(s.config_text().contains("password = \"${MAILFERRY_RELAY_PASSWORD}\""));
            assert!(s.env_text().contains("\n#MAILFERRY_RELAY_PASSWORD=\n"), "{}", s.env_text());
        }
    }

    #[test]
    fn provider_specifics() {
        let s = setup(RelayKind::Ses, |a| {
            a.region = Some("us-east-2".into());
            a.relay_user = Some("AKIAEXAMPLE".into());
        })
        .unwrap();
        let c = parse(&s);
        let config::Relay::Smtp(r) = &c.relays["ses"] else { panic!() };
        assert_eq!((r.host.as_str(), r.user.as_deref()), ("email-smtp.us-east-2.amazonaws.com", Some("AKIAEXAMPLE")));
        assert_eq!(c.plugins[2].config["routes"]["ses"]["exclude_headers"][0].as_str(), Some("Message-ID"));
        assert!(!s.env_text().contains(USER_VAR), "the login was given");

        let s = setup(RelayKind::Mailgun, |a| a.region = Some("eu".into())).unwrap();
        let c = parse(&s);
        let config::Relay::Smtp(r) = &c.relays["mailgun"] else { panic!() };
        assert_eq!(r.host, "smtp.eu.mailgun.org");
        assert_eq!(r.user.as_deref(), Some("postmaster@mg.example.com"), "from ${{{USER_VAR}}}");
        assert!(s.env_text().contains(&format!("\n#{USER_VAR}=\n")));
        assert_eq!(c.limits.message_size, 25_000_000, "Mailgun's limit is below the default");

        let s = setup(RelayKind::Postmark, |_| {}).unwrap();
        assert_eq!(parse(&s).limits.message_size, 10_000_000);

        let s = setup(RelayKind::Resend, |a| a.region = Some("eu-west-1".into())).unwrap();
        assert_eq!(s.dns.region.as_deref(), Some("eu-west-1"));
        assert!(!s.config_text().contains("region"), "Resend's region is for DNS only");

        let s = setup(RelayKind::Smtp, |a| a.relay_host = Some("mail.example.net:465".into())).unwrap();
        let c = parse(&s);
        let config::Relay::Smtp(r) = &c.relays["smarthost"] else { panic!() };
        assert_eq!((r.host.as_str(), r.port, r.tls), ("mail.example.net", 465, config::TlsMode::Implicit));
    }

    #[test]
    fn an_existing_certificate_is_used() {
        let live = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(live.path().join("mx.example.com")).unwrap();
        for f in ["fullchain.pem", "privkey.pem"] {
            std::fs::write(live.path().join("mx.example.com").join(f), "x").unwrap();
        }
        let s = setup(RelayKind::Sendgrid, |a| {
            a.hostname = Some("MX.example.com".into());
            a.letsencrypt_live = live.path().to_path_buf();
        })
        .unwrap();
        assert!(s.tls_active);
        assert_eq!(parse(&s).tls.cert, Some(live.path().join("mx.example.com/fullchain.pem")));
        let s = setup(RelayKind::Sendgrid, |a| a.letsencrypt_live = live.path().to_path_buf()).unwrap();
        assert!(!s.tls_active, "no certificate for smtp.example.com");
        assert!(s.config_text().contains("# [tls]\n# cert = \"/"), "{}", s.config_text());
    }

    #[test]
    fn mistakes_name_the_option() {
        for (relay, f, expect) in [
            (RelayKind::Ses, None, "--relay ses needs --region"),
            (RelayKind::Ses, Some(("region", "Ireland")), "--region \"Ireland\" is not an AWS region"),
            (RelayKind::Sendgrid, Some(("region", "eu")), "--region: SendGrid has no regions"),
            (RelayKind::Mailgun, Some(("region", "eu-west-1")), "Mailgun's regions are"),
            (RelayKind::Sendgrid, Some(("relay_user", "me")), "literal user `apikey`"),
            (RelayKind::Mailgun, Some(("relay_user", "postmaster")), "full addresses"),
            (RelayKind::Smtp, None, "--relay smtp needs --relay-host"),
            (RelayKind::Brevo, Some(("relay_host", "smtp.example.net")), "--relay-host is for --relay smtp"),
            (RelayKind::Smtp, Some(("relay_host", "smtp.example.net:x")), "bad port"),
            (RelayKind::Brevo, Some(("domain", "localhost")), "--domain \"localhost\" is not a domain name"),
            (RelayKind::Brevo, Some(("domain", "exa mple.com")), "is not a domain name"),
            (RelayKind::Brevo, Some(("hostname", "smtp")), "--hostname \"smtp\" is not a host name"),
            (RelayKind::Brevo, Some(("user", "a b")), "--user: invalid login"),
        ] {
            let e = setup(relay, |a| match f {
                Some(("region", v)) => a.region = Some(v.into()),
                Some(("relay_user", v)) => a.relay_user = Some(v.into()),
                Some(("relay_host", v)) => a.relay_host = Some(v.into()),
                Some(("domain", v)) => a.domain = v.into(),
                Some(("hostname", v)) => a.hostname = Some(v.into()),
                Some(("user", v)) => a.user = Some(v.into()),
                _ => {}
            })
            .unwrap_err();
            assert!(e.contains(expect), "{relay} {f:?}: {e}");
        }
    }
}
