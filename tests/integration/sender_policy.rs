//! The `sender-policy` plugin through the real server, with the harness's
//! SMTP client and swaks: a login may send as itself (Gmail "Send mail
//! as"), its aliases and domains, never as another user, in the envelope or
//! in `From:`; unauthenticated trusted-network senders only as
//! `trusted_senders`. And the shipped configuration runs it before
//! `dkim-sign`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

const SENDER_POLICY: &str = r#"
[[plugins]]
name = "sender-policy"
read_dirs = ["auth"]
[plugins.config]
file = "/auth/senders"
trusted_senders = ["*@mx.test.example", "cron@example.com"]
"#;

const SENDERS: &str = "\
# login: allowed senders
alice@example.com: sales@example.com, *@alice.example
bob@example.com: bob.builder@example.com
";

const PASSWORD: &str = "wonderland";

fn start() -> Server {
    let hash = hash_password(PASSWORD);
    let s = Server::start(Setup {
        plugins: Some(plugins_with(SENDER_POLICY, "relay = \"outbox\"")),
        users: format!("alice@example.com:{hash}\nbob@example.com:{hash}\n"),
        ..Default::default()
    });
    // Read at every transaction, so it may be written once the server runs.
    std::fs::write(s.path("auth/senders"), SENDERS).unwrap();
    s
}

/// A STARTTLS session on `submission`, logged in as `login`.
fn logged_in(s: &Server, login: &str) -> Client {
    let mut c = Client::connect(s.addr("submission")).greeting();
    c.expect("EHLO client.test", 250);
    c.starttls();
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain(login, PASSWORD).code, 235);
    c
}

fn message(from_field: &str, subject: &str) -> String {
    format!("From: {from_field}\nTo: someone@example.org\nSubject: {subject}\n\nhello\n")
}

fn swaks(args: &[&str]) -> Output {
    require_program("swaks", &["--version"], "swaks is needed for this test: apt-get install swaks");
    run_bounded(Command::new("swaks").args(["--timeout", "30"]).args(args), Duration::from_secs(60))
}

fn transcript(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn field<'a>(eml: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    eml.split("\r\n\r\n").next()?.split("\r\n").find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// Gmail's "Send mail as": AUTH as the address, MAIL FROM and From: the
/// same address. Accepted and delivered.
#[test]
fn gmail_send_as_the_login_itself_is_delivered() {
    let s = start();
    let server = format!("127.0.0.1:{}", s.addr("submission").port());
    let out = swaks(&[
        "--server",
        &server,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.com",
        "--auth-password",
        PASSWORD,
        "--from",
        "alice@example.com",
        "--to",
        "bob@example.org",
        "--header",
        "Subject: send as",
    ]);
    assert!(out.status.success(), "swaks failed:\n{}", transcript(&out));
    let outbox = s.outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(field(&outbox[0], "From"), Some("alice@example.com"), "{}", outbox[0]);
    assert_eq!(field(&outbox[0], "Subject"), Some("send as"));
    assert_eq!(field(&outbox[0], "Return-Path"), Some("<alice@example.com>"));
}

/// A listed alias and an address of a listed domain, with matching From:.
#[test]
fn an_alias_and_a_domain_wildcard_are_accepted() {
    let s = start();
    let mut c = logged_in(&s, "alice@example.com");
    let r = c.send_mail("sales@example.com", &["bob@example.org"], &message("Sales <sales@example.com>", "alias"));
    assert_eq!(r.code, 250, "{r}");
    let r = c.send_mail("news@alice.example", &["bob@example.org"], &message("news@alice.example", "domain"));
    assert_eq!(r.code, 250, "{r}");
    c.expect("QUIT", 221);
    let outbox = s.outbox();
    assert_eq!(outbox.len(), 2);
    let from: Vec<_> = outbox.iter().map(|m| field(m, "Return-Path").unwrap()).collect();
    assert!(from.contains(&"<sales@example.com>") && from.contains(&"<news@alice.example>"), "{from:?}");
}

/// Another user's address (or alias) in MAIL FROM: 553 5.7.1 naming the
/// address and the login, a warning in the log, and the session goes on.
#[test]
fn another_users_address_is_refused_at_mail_from() {
    let s = start();
    let mut c = logged_in(&s, "alice@example.com");
    for other in ["bob@example.com", "bob.builder@example.com", "ceo@example.com", "alice@example.org"] {
        let r = c.expect(&format!("MAIL FROM:<{other}>"), 553);
        assert_eq!(
            r.text(),
            format!("5.7.1 <{other}>: not allowed to send as this address (login alice@example.com)"),
            "{r}"
        );
    }
    let line = s.wait_log(&["refused envelope sender", "bob.builder@example.com", "alice@example.com"]);
    assert!(line.contains("\"level\":\"WARN\"") && line.contains("sender-policy"), "{line}");
    // Refused at MAIL: no transaction, so RCPT is out of sequence.
    c.expect("RCPT TO:<x@example.org>", 503);
    // Bob may use his own alias.
    let mut bob = logged_in(&s, "bob@example.com");
    bob.expect("MAIL FROM:<bob.builder@example.com>", 250);
    bob.expect("RSET", 250);
    // And the refused session still sends as itself.
    let r = c.send_mail("alice@example.com", &["x@example.org"], &message("alice@example.com", "after"));
    assert_eq!(r.code, 250, "{r}");
    assert_eq!(s.outbox().len(), 1);
}

/// An allowed envelope with a forged From: is refused at the end of DATA
/// and nothing reaches the outbox; the same session then sends a good one.
#[test]
fn forged_from_is_refused_at_end_of_data_and_nothing_is_queued() {
    let s = start();
    let mut c = logged_in(&s, "alice@example.com");
    let forged = [
        ("CEO <ceo@example.com>", "5.7.1 From: <ceo@example.com>: not allowed"),
        ("alice@example.com, ceo@example.com", "5.7.1 From: <ceo@example.com>: not allowed"),
        ("\"ceo@example.com\" <alice@example.com>", "5.7.1 From: display name shows <ceo@example.com>: not allowed"),
        ("=?utf-8?q?ceo=40example=2Ecom?= <alice@example.com>", "5.7.1 From: display name shows <ceo@example.com>"),
        ("\"bob@example.com\" <attacker@evil.example>", "5.7.1 From: <attacker@evil.example>: not allowed"),
    ];
    for (from_field, expect) in forged {
        let r = c.send_mail("alice@example.com", &["x@example.org"], &message(from_field, "forged"));
        assert_eq!(r.code, 553, "{from_field}: {r}");
        assert!(r.text().starts_with(expect), "{from_field}: {r}");
    }
    let r = c.send_mail(
        "alice@example.com",
        &["x@example.org"],
        "From: alice@example.com\nFrom: ceo@example.com\nSubject: two\n\nx\n",
    );
    assert_eq!(r.code, 550, "{r}");
    assert!(r.text().starts_with("5.6.0 message refused: 2 From: fields"), "{r}");
    assert!(s.outbox().is_empty(), "a refused message was delivered");
    s.wait_log(&["refused From: display name", "ceo@example.com", "alice@example.com"]);

    let r = c.send_mail("alice@example.com", &["x@example.org"], &message("Alice <alice@example.com>", "genuine"));
    assert_eq!(r.code, 250, "{r}");
    let outbox = s.outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(field(&outbox[0], "Subject"), Some("genuine"));
}

/// swaks with an allowed envelope and a forged From: header sees the 553
/// after the final dot.
#[test]
fn swaks_forged_from_header_is_refused() {
    let s = start();
    let server = format!("127.0.0.1:{}", s.addr("submissions").port());
    let out = swaks(&[
        "--server",
        &server,
        "--tlsc",
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice@example.com",
        "--auth-password",
        PASSWORD,
        "--from",
        "alice@example.com",
        "--to",
        "bob@example.org",
        "--header",
        "From: The CEO <ceo@example.com>",
    ]);
    assert!(!out.status.success(), "swaks should fail:\n{}", transcript(&out));
    let text = transcript(&out);
    assert!(text.contains("<~  250"), "MAIL FROM should pass:\n{text}");
    assert!(text.contains("<~* 553 5.7.1 From: <ceo@example.com>: not allowed"), "{text}");
    assert!(s.outbox().is_empty());
}

/// Without AUTH, from a trusted network: only `trusted_senders`, in the
/// envelope and in From:.
#[test]
fn trusted_network_submissions_are_limited_to_trusted_senders() {
    let s = start();
    let server = format!("127.0.0.1:{}", s.addr("local").port());
    let send = |from: &str, header: Option<&str>| {
        let mut args = vec!["--server", &server, "--from", from, "--to", "bob@example.org"];
        if let Some(h) = header {
            args.extend(["--header", h]);
        }
        swaks(&args)
    };
    for allowed in ["cron@example.com", "root@mx.test.example"] {
        let out = send(allowed, None);
        assert!(out.status.success(), "{allowed}:\n{}", transcript(&out));
    }
    let out = send("ceo@example.com", None);
    assert!(!out.status.success());
    let text = transcript(&out);
    assert!(
        text.contains("<** 553 5.7.1 <ceo@example.com>: not allowed to send as this address without authentication"),
        "{text}"
    );
    // Another user's address is no better without their login.
    assert!(!send("alice@example.com", None).status.success());
    let out = send("cron@example.com", Some("From: ceo@example.com"));
    assert!(!out.status.success());
    assert!(transcript(&out).contains("<** 553 5.7.1 From: <ceo@example.com>"), "{}", transcript(&out));
    s.wait_log(&["unauthenticated client 127.0.0.1 (trusted network)", "ceo@example.com"]);
    let outbox = s.outbox();
    assert_eq!(outbox.len(), 2);
    assert!(outbox.iter().all(|m| !m.contains("ceo@example.com")));
}

/// A session neither authenticated nor trusted is the host's to refuse: the
/// plugin has no opinion at MAIL FROM, the relay rule answers at RCPT.
#[test]
fn untrusted_unauthenticated_sessions_meet_the_relay_rule() {
    let s = start();
    let mut c = Client::connect(s.addr("open")).greeting();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<ceo@example.com>", 250);
    c.expect("RCPT TO:<bob@example.org>", 554);
}

/// The senders file is read at every transaction: an alias added while the
/// server runs works at once, a removed one stops working.
#[test]
fn edits_to_the_senders_file_apply_at_once() {
    let s = start();
    let mut c = logged_in(&s, "alice@example.com");
    c.expect("MAIL FROM:<support@example.com>", 553);
    std::fs::write(s.path("auth/senders"), "alice@example.com: support@example.com\n").unwrap();
    c.expect("MAIL FROM:<support@example.com>", 250);
    c.expect("RSET", 250);
    c.expect("MAIL FROM:<sales@example.com>", 553);
    // Without the file, an alias is a temporary failure, never a pass…
    std::fs::remove_file(s.path("auth/senders")).unwrap();
    let r = c.expect("MAIL FROM:<support@example.com>", 451);
    assert!(r.text().starts_with("4.3.0"), "{r}");
    s.wait_log(&["cannot read senders file /auth/senders"]);
    // …and the login itself does not need it.
    c.expect("MAIL FROM:<alice@example.com>", 250);
}

/// The shipped configuration runs sender-policy after authentication and
/// before dkim-sign (nothing spoofed gets signed), and it loads.
#[test]
fn shipped_config_runs_sender_policy_before_dkim_sign() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/mailferry.toml")).unwrap();
    let at = |name: &str| text.find(&format!("name = \"{name}\"")).unwrap_or_else(|| panic!("no {name} in the config"));
    assert!(at("auth-flat-file") < at("sender-policy"), "sender-policy must follow auth-flat-file");
    assert!(at("sender-policy") < at("dkim-sign"), "sender-policy must come before dkim-sign");
    assert!(at("dkim-sign") < at("smtp-forward"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("auth")).unwrap();
    std::fs::copy(root.join("config/mailferry.toml"), config.join("mailferry.toml")).unwrap();
    for file in ["users", "senders"] {
        std::fs::copy(root.join("config/auth").join(file), config.join("auth").join(file))
            .unwrap_or_else(|e| panic!("config/auth/{file}: {e}"));
    }
    // The shipped state_dir is ../var: share the compiled-plugin cache.
    std::fs::create_dir_all(dir.path().join("var")).unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&cache, dir.path().join("var/plugin-cache")).unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(config.join("mailferry.toml")).output().unwrap();
    let text = transcript(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("plugins: auth-flat-file, sender-policy, dkim-sign, rate-limit, smtp-forward"), "{text}");
}
