//! `mailferry init` end to end, with the real binary: the folder it writes
//! passes `mailferry check` for every relay preset, the commands its next
//! steps print work as printed, and the server starts on it and relays an
//! authenticated submission through the preset's relay (pointed at the
//! stand-in upstream). It refuses bad arguments before writing anything and
//! never overwrites a file.
//!
//! Every test passes `--state-dir state` (inside the folder) so nothing is
//! written to /var/lib/mailferry, the production default.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::upstream::*;
use crate::common::*;
use mailferry::init::PASSWORD_VAR;

/// The relay's password, which the server under test and the commands read
/// from their environment, like the systemd unit's EnvironmentFile gives it.
const RELAY_ENV: [(&str, &str); 1] = [(PASSWORD_VAR, UP_PASSWORD)];

/// `mailferry ARGS` with [`RELAY_ENV`]; commands that must do without the
/// password remove it.
fn mailferry(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).envs(RELAY_ENV);
    c
}

/// Runs `cmd` with `stdin`, bounded in time.
fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}\nstdout:\n{}\nstderr:\n{}", out.status, stdout(out), String::from_utf8_lossy(&out.stderr))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mailferry init DIR ARGS --state-dir state`; asserts it succeeded.
fn init(dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = run(mailferry(&["init"]).arg(dir).args(args).args(["--state-dir", "state"]), stdin);
    assert!(out.status.success(), "init {args:?}: {}", text(&out));
    // The compiled plugins of every test are shared (see tests/integration/common).
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::os::unix::fs::symlink(shared_cache(), dir.join("state/plugin-cache")).unwrap();
    stdout(&out)
}

fn check(config: &Path) -> Output {
    run(mailferry(&["check", "--config"]).arg(config), "")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Replaces `from` with `to` in `text`, failing if it is not there: the test
/// must notice when init's output changes shape.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "no {from:?} in:\n{text}");
    text.replacen(from, to, 1)
}

/// The generated configuration, changed only where a test machine needs it:
/// listeners on free loopback ports (587 and 465 need privileges and may be
/// taken) and the relay pointed at the stand-in upstream, its CA trusted.
/// The relay table keeps everything init wrote (preset, region, login, the
/// ${MAILFERRY_RELAY_PASSWORD} reference); explicit keys win over a preset.
fn for_this_machine(config: &str, relay: &str, upstream: &Upstream) -> String {
    let mut c = config.to_string();
    for address in ["127.0.0.1:2525", "0.0.0.0:587", "0.0.0.0:465", "127.0.0.1:2580"] {
        c = replace(&c, &format!("address = \"{address}\""), "address = \"127.0.0.1:0\"");
    }
    replace(
        &c,
        &format!("[relays.{relay}]\n"),
        &format!(
            "[relays.{relay}]\nhost = \"127.0.0.1\"\nport = {}\nca_file = {:?}\ntimeout_secs = 20\n",
            upstream.port,
            upstream.ca.to_str().unwrap()
        ),
    )
}

/// Waits until the upstream stored `n` messages.
fn upstream_messages(upstream: &Upstream, n: usize, server: &Server) -> Vec<Stored> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = upstream.messages();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream has {} of {n} messages\nupstream:\n{}\nserver:\n{}",
            got.len(),
            upstream.log(),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn header_value(message: &str, name: &str) -> Option<String> {
    let unfolded = unfold(message);
    unfolded
        .split("\r\n")
        .take_while(|l| !l.is_empty())
        .find(|l| {
            l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name) && l[name.len()..].starts_with(':')
        })
        .map(|l| l[name.len() + 1..].trim().to_string())
}

#[test]
fn ses_folder_passes_check_serves_and_relays() {
    let upstream = Upstream::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mailferry");
    let out = init(
        &dir,
        &[
            "--domain",
            "Example.COM",
            "--hostname",
            "smtp.example.com",
            "--relay",
            "ses",
            "--region",
            "eu-west-1",
            "--relay-user",
            UP_USER,
            "--user",
            "alice@example.com",
            "--password-stdin",
        ],
        "wonderland\n",
    );
    let config = dir.join("mailferry.toml");
    let shown = |p: &Path| std::fs::canonicalize(p).unwrap().display().to_string();

    // The files, private where they hold secrets or hashes; the configuration
    // holds none and stays readable by the users `mailferry sendmail` runs as.
    let config_text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(mode(&config), 0o644);
    assert_eq!(mode(&dir.join("env")), 0o600);
    assert_eq!(mode(&dir.join("auth")), 0o700);
    assert_eq!(mode(&dir.join("auth/users")), 0o600);
    assert_eq!(mode(&dir.join("auth/senders")), 0o600);
    assert_eq!(mode(&dir.join("dkim")), 0o700);
    let keys: Vec<PathBuf> =
        std::fs::read_dir(dir.join("dkim/example.com")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(mode(&keys[0]), 0o600);
    let selector = keys[0].file_stem().unwrap().to_str().unwrap().to_string();
    assert!(config_text.contains(&format!("password = \"${{{PASSWORD_VAR}}}\"")), "{config_text}");
    assert!(!config_text.contains(UP_PASSWORD));
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    assert!(env.contains(&format!("\n#{PASSWORD_VAR}=\n")), "{env}");
    let users = std::fs::read_to_string(dir.join("auth/users")).unwrap();
    assert!(users.contains("\nalice@example.com:$argon2id$"), "{users}");

    // The DNS records are exactly what `mailferry dns` prints for the folder.
    let dns = run(
        mailferry(&["dns", "--domain", "example.com", "--relay", "ses", "--region", "eu-west-1", "--config"])
            .arg(&config)
            .env_remove(PASSWORD_VAR),
        "",
    );
    assert!(dns.status.success(), "{}", text(&dns));
    let dns = stdout(&dns);
    let records = dns.trim_end().rsplit_once('\n').unwrap().0;
    assert!(records.contains(&format!("{selector}._domainkey.example.com")), "{dns}");
    assert!(out.contains(records), "init's records differ from `mailferry dns`:\n{out}");
    let doctor =
        format!("mailferry doctor --domain example.com --relay ses --region eu-west-1 --config {}", shown(&config));
    assert!(out.contains(&doctor), "no {doctor:?} in:\n{out}");

    // Without the secret, check says which variable is missing.
    let o = run(mailferry(&["check", "--config"]).arg(&config).env_remove(PASSWORD_VAR), "");
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("relays.ses.password: environment variable {PASSWORD_VAR} is not set")),
        "{}",
        text(&o)
    );
    // With it: OK as written.
    let o = check(&config);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains(&format!(
            "OK (3 listeners; plugins: auth-flat-file, sender-policy, dkim-sign, smtp-forward; relays: ses; DKIM keys: example.com/{selector})"
        )),
        "{}",
        text(&o)
    );
    // The check command as the next steps print it, with the env file filled
    // in as they say, and nothing else in the environment.
    std::fs::write(
        dir.join("env"),
        replace(&env, &format!("#{PASSWORD_VAR}="), &format!("{PASSWORD_VAR}={UP_PASSWORD}")),
    )
    .unwrap();
    let printed = out.lines().map(str::trim).find(|l| l.contains("exec mailferry check")).expect(&out).to_string();
    assert_eq!(
        printed,
        format!("sh -c 'set -a; . {}; exec mailferry check --config {}'", shown(&dir.join("env")), shown(&config))
    );
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let o = run(Command::new("sh").args(["-c", &printed]).env("PATH", path).env_remove(PASSWORD_VAR), "");
    assert!(o.status.success(), "{printed}: {}", text(&o));

    // Users are added without the relay's secret in the environment.
    let o = run(
        mailferry(&["user", "add", "bob@example.com", "--password-stdin", "--config"])
            .arg(&config)
            .env_remove(PASSWORD_VAR),
        "builder\n",
    );
    assert!(o.status.success(), "{}", text(&o));

    std::fs::write(&config, for_this_machine(&config_text, "ses", &upstream)).unwrap();
    let server =
        Server::try_serve_with_env(tmp, &config, 3, &RELAY_ENV).unwrap_or_else(|logs| panic!("serve failed:\n{logs}"));
    server.wait_log(&["plugins loaded", "dkim_keys\":1"]);

    // 587: STARTTLS, then AUTH as the user init created.
    let mut c = Client::connect(server.addr("submission")).greeting();
    let ehlo = c.expect("EHLO laptop.example", 250);
    assert!(ehlo.lines[0].starts_with("smtp.example.com"), "{ehlo}");
    assert!(!ehlo.text().contains("AUTH"), "AUTH before TLS: {ehlo}");
    c.starttls();
    c.expect("EHLO laptop.example", 250);
    let r = c.expect("MAIL FROM:<alice@example.com>", 530);
    assert!(r.text().contains("5.7.0"), "{r}");
    let r = c.auth_plain("alice@example.com", "wonderland");
    assert_eq!(r.code, 235, "{r}");
    let r = c.send_mail(
        "alice@example.com",
        &["rcpt@example.org"],
        "From: Alice <alice@example.com>\r\nTo: rcpt@example.org\r\nSubject: through init\r\n\r\nhello\r\n",
    );
    assert_eq!(r.code, 250, "{r}");
    assert!(r.text().contains("queued as"), "{r}");

    // The sender policy: a login sends as itself, not as another user.
    c.expect("MAIL FROM:<bob@example.com>", 553);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<alice@example.com>", 250);
    c.expect("RCPT TO:<rcpt@example.org>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"From: bob@example.com\r\nSubject: forged\r\n\r\nno\r\n.\r\n");
    let r = c.read();
    assert_eq!(r.code, 553, "a forged From: is refused: {r}");

    // 465: TLS from the first byte, the user added afterwards.
    let mut c = Client::connect_tls(server.addr("submissions")).greeting();
    c.expect("EHLO laptop.example", 250);
    assert_eq!(c.auth_plain("bob@example.com", "builder").code, 235);
    let r =
        c.send_mail("bob@example.com", &["rcpt@example.org"], "From: bob@example.com\r\nSubject: 465\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250, "{r}");

    // The loopback listener: no AUTH for programs on this machine.
    let mut c = Client::connect(server.addr("local")).greeting();
    c.expect("EHLO cron.example", 250);
    let r =
        c.send_mail("root@example.com", &["ops@example.org"], "From: root@example.com\r\nSubject: cron\r\n\r\nok\r\n");
    assert_eq!(r.code, 250, "{r}");

    let stored = upstream_messages(&upstream, 3, &server);
    for s in &stored {
        // Through the SES preset's login and the password from the environment.
        assert_eq!(s.meta["login"], UP_USER);
        assert_eq!(s.meta["tls"], "starttls");
    }
    // Delivered concurrently: find Alice's by its envelope.
    let alice = stored.iter().find(|s| s.meta["mail_from"] == "alice@example.com").expect("alice's message");
    let first = String::from_utf8_lossy(&alice.eml).into_owned();
    assert!(first.contains("by smtp.example.com"), "{first}");
    // Signed with init's key; the SES route leaves Message-ID and Date out.
    let sig = header_value(&first, "DKIM-Signature").expect(&first);
    let tags: Vec<String> = sig.split(';').map(|t| t.split_whitespace().collect::<String>()).collect();
    assert!(tags.contains(&"d=example.com".to_string()), "{sig}");
    assert!(tags.contains(&format!("s={selector}")), "{sig}");
    let h = tags.iter().find(|t| t.starts_with("h=")).expect(&sig).to_ascii_lowercase();
    assert!(h.contains("from") && h.contains("subject"), "{sig}");
    assert!(!h.contains("message-id") && !h.split(':').any(|f| f == "date" || f == "h=date"), "{sig}");
}

#[test]
fn every_preset_passes_check() {
    for (relay, extra, name) in [
        ("sendgrid", &[][..], "sendgrid"),
        ("resend", &["--region", "eu-west-1"][..], "resend"),
        ("mailgun", &["--region", "eu", "--relay-user", "postmaster@mg.example.com"][..], "mailgun"),
        ("postmark", &[][..], "postmark"),
        ("brevo", &["--relay-user", "login@smtp-brevo.com"][..], "brevo"),
        ("smtp", &["--relay-host", "smtp.example.net:587", "--relay-user", "me"][..], "smarthost"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mf");
        let mut args = vec!["--domain", "example.com", "--relay", relay];
        args.extend_from_slice(extra);
        let out = init(&dir, &args, "");
        assert!(out.contains("Next steps"), "{relay}: {out}");
        let config = dir.join("mailferry.toml");
        let o = check(&config);
        assert!(o.status.success(), "{relay}: {}\n{}", text(&o), std::fs::read_to_string(&config).unwrap());
        assert!(stdout(&o).contains(&format!("relays: {name}; DKIM keys: example.com/mf")), "{relay}: {}", text(&o));
    }
}

/// Without --config: $MAILFERRY_CONFIG, else config/mailferry.toml in the
/// working folder. (The installed /etc/mailferry/mailferry.toml comes after
/// both; this machine has none to find.)
#[test]
fn commands_find_the_configuration_without_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    init(&dir, &["--domain", "example.com", "--relay", "sendgrid"], "");
    let o = run(mailferry(&["check"]).current_dir(tmp.path()).env_remove("MAILFERRY_CONFIG"), "");
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("\nconfig/mailferry.toml: OK"), "{}", text(&o));
    let elsewhere = tempfile::tempdir().unwrap();
    let o = run(
        mailferry(&["dkim", "list"]).current_dir(elsewhere.path()).env("MAILFERRY_CONFIG", dir.join("mailferry.toml")),
        "",
    );
    assert!(o.status.success() && stdout(&o).contains("example.com"), "{}", text(&o));
    let o = run(mailferry(&["check"]).current_dir(elsewhere.path()).env_remove("MAILFERRY_CONFIG"), "");
    assert!(!o.status.success());
    assert!(text(&o).contains("config/mailferry.toml: cannot read the configuration file"), "{}", text(&o));
}

#[test]
fn a_relay_login_not_given_comes_from_the_env_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mf");
    let out = init(&dir, &["--domain", "example.com", "--relay", "ses", "--region", "us-east-1"], "");
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("remove the # before MAILFERRY_RELAY_USER and MAILFERRY_RELAY_PASSWORD"), "{out}");
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    assert!(env.contains("\n#MAILFERRY_RELAY_USER=\n"), "{env}");
    let config = dir.join("mailferry.toml");
    let o = check(&config);
    assert!(text(&o).contains("environment variable MAILFERRY_RELAY_USER is not set"), "{}", text(&o));
    let o = run(mailferry(&["check", "--config"]).arg(&config).env("MAILFERRY_RELAY_USER", "AKIAEXAMPLE"), "");
    assert!(o.status.success(), "{}", text(&o));
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    // A folder with anything in it is refused, and left as it was.
    let dir = tmp.path().join("etc");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("mailferry.toml"), "# mine\n").unwrap();
    let args = ["--domain", "example.com", "--relay", "sendgrid", "--state-dir", "state"];
    let o = run(mailferry(&["init"]).arg(&dir).args(args), "");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is not empty; init never overwrites anything"), "{}", text(&o));
    assert_eq!(snapshot(&dir), vec![(dir.join("mailferry.toml"), b"# mine\n".to_vec())]);

    // A second init into a folder the first one filled changes nothing.
    let dir = tmp.path().join("mf");
    init(&dir, &["--domain", "example.com", "--relay", "sendgrid"], "");
    let before = snapshot(&dir);
    let o = run(mailferry(&["init"]).arg(&dir).args(["--domain", "example.org", "--relay", "brevo"]), "");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(snapshot(&dir), before);

    // An empty folder (a fresh mount, /etc/mailferry made by hand) is fine.
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    init(&dir, &["--domain", "example.com", "--relay", "sendgrid"], "");
    assert!(dir.join("mailferry.toml").is_file());

    // A file in the way.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = run(mailferry(&["init"]).arg(&file).args(args), "");
    assert!(text(&o).contains("exists and is not a folder"), "{}", text(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn bad_arguments_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, expect) in [
        (&["--domain", "example", "--relay", "sendgrid"][..], "--domain \"example\" is not a domain name"),
        (&["--domain", "exa_mple.com", "--relay", "sendgrid"][..], "is not a domain name"),
        (&["--domain", "example.com", "--hostname", "smtp host", "--relay", "sendgrid"][..], "--hostname"),
        (&["--domain", "example.com", "--relay", "ses"][..], "--relay ses needs --region"),
        (&["--domain", "example.com", "--relay", "ses", "--region", "Frankfurt"][..], "not an AWS region"),
        (&["--domain", "example.com", "--relay", "sendgrid", "--region", "eu-west-1"][..], "SendGrid has no regions"),
        (&["--domain", "example.com", "--relay", "sendgrid", "--relay-user", "me"][..], "literal user `apikey`"),
        (&["--domain", "example.com", "--relay", "smtp"][..], "--relay smtp needs --relay-host"),
        (&["--domain", "example.com", "--relay", "sparkpost"][..], "unknown relay \"sparkpost\""),
        (&["--domain", "example.com", "--relay", "brevo", "--user", "a:b"][..], "--user: invalid login"),
    ] {
        let dir = tmp.path().join("mf");
        let o = run(mailferry(&["init"]).arg(&dir).args(args), "");
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(text(&o).contains(expect), "{args:?}: {}", text(&o));
        assert!(!dir.exists(), "{args:?} wrote {}", dir.display());
    }
    // An empty password for the first user: nothing is left behind either.
    let dir = tmp.path().join("mf");
    let o = run(
        mailferry(&["init"]).arg(&dir).args([
            "--domain",
            "example.com",
            "--relay",
            "sendgrid",
            "--user",
            "a@example.com",
            "--password-stdin",
        ]),
        "\n",
    );
    assert!(text(&o).contains("empty password"), "{}", text(&o));
    assert!(!dir.exists());
}
