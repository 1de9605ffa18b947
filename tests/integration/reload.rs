//! SIGHUP reloads the configuration without a restart: new sessions get the
//! new plugins, limits and listener policies; a session already open
//! finishes with what it started with; a configuration that does not load
//! is refused with its reason and the running one keeps serving.

use std::time::Duration;

use crate::common::*;

fn plugin(name: &str, extra: &str) -> String {
    format!("\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n", test_plugin("scripted").display())
}

/// Denies RCPT to addresses containing "blocked".
fn blocker() -> String {
    plugin(
        "blocker",
        "[plugins.config]\nwhen_rcpt_contains = \"blocked\"\nrcpt = { verdict = \"deny\", code = 550, enhanced = \"5.7.1\", text = \"blocked by the new policy\" }",
    )
}

fn hup(server: &Server) {
    // SAFETY: signalling the child process this test started.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
}

fn local(server: &Server) -> Client {
    let mut c = Client::connect(server.addr("local")).greeting();
    c.expect("EHLO client.example", 250);
    c
}

fn rewrite(server: &Server, setup: &Setup) {
    // The listeners' addresses stay as bound: port 0 in the file is what
    // they were configured with, so this is no listener change.
    std::fs::write(server.path("mailferry.toml"), Server::config_text(setup)).unwrap();
}

#[test]
fn new_sessions_get_the_new_configuration_and_open_ones_keep_theirs() {
    let server = Server::start(Setup::default());
    // Open before the reload, in the middle of a transaction.
    let mut old = local(&server);
    old.expect("MAIL FROM:<cron@example.com>", 250);

    let new_setup = Setup {
        plugins: Some(format!("{}{DEFAULT_PLUGINS}", blocker())),
        limits: "recipients = 2".into(),
        ..Default::default()
    };
    rewrite(&server, &new_setup);
    hup(&server);
    server.wait_log(&["configuration reloaded"]);

    // A new session: the new plugin and the new limit.
    let mut c = local(&server);
    c.expect("MAIL FROM:<cron@example.com>", 250);
    let r = c.expect("RCPT TO:<blocked@example.org>", 550);
    assert!(r.text().contains("blocked by the new policy"), "{r}");
    c.expect("RCPT TO:<a@example.org>", 250);
    c.expect("RCPT TO:<b@example.org>", 250);
    assert_eq!(c.cmd("RCPT TO:<c@example.org>").code, 452, "the new recipients limit");
    c.expect("QUIT", 221);

    // The session opened before: old plugins, old limit, and its message goes through.
    old.expect("RCPT TO:<blocked@example.org>", 250);
    old.expect("RCPT TO:<a@example.org>", 250);
    old.expect("RCPT TO:<b@example.org>", 250);
    old.expect("DATA", 354);
    old.send_raw(b"Subject: before the reload\r\n\r\nbody\r\n.\r\n");
    assert_eq!(old.read().code, 250);
    old.expect("QUIT", 221);
    let out = server.outbox();
    assert_eq!(out.len(), 1);
    assert!(out[0].contains("X-Original-To: blocked@example.org"), "{}", out[0]);
}

#[test]
fn listener_policies_reload_too() {
    let server = Server::start(Setup::default());
    // "local" trusts 127.0.0.0/8: relaying without AUTH works.
    let mut c = local(&server);
    c.expect("MAIL FROM:<cron@example.com>", 250);
    c.expect("RCPT TO:<a@example.org>", 250);
    c.expect("QUIT", 221);
    let untrusted = Setup {
        listeners: DEFAULT_LISTENERS.replace("trusted_networks = [\"127.0.0.0/8\"]", "trusted_networks = []"),
        ..Default::default()
    };
    assert_ne!(untrusted.listeners, DEFAULT_LISTENERS);
    rewrite(&server, &untrusted);
    hup(&server);
    server.wait_log(&["configuration reloaded"]);
    let mut c = local(&server);
    c.expect("MAIL FROM:<cron@example.com>", 250);
    assert_eq!(c.cmd("RCPT TO:<a@example.org>").code, 554, "no longer trusted: no relaying");
}

#[test]
fn a_broken_configuration_is_refused_and_the_old_one_keeps_serving() {
    let server = Server::start(Setup::default());
    let good = std::fs::read_to_string(server.path("mailferry.toml")).unwrap();

    // Not TOML at all.
    std::fs::write(server.path("mailferry.toml"), format!("{good}\n[limits\n")).unwrap();
    hup(&server);
    let line = server.wait_log(&["configuration not reloaded"]);
    assert!(line.contains("mailferry.toml"), "names the file: {line}");

    // Valid TOML, but a plugin that refuses its configuration: refused too,
    // with the plugin's reason.
    let bad_plugin = Setup {
        plugins: Some(format!(
            "{}{DEFAULT_PLUGINS}",
            plugin("broken", "[plugins.config]\nrcpt = { verdict = \"no-such-verdict\" }")
        )),
        ..Default::default()
    };
    rewrite(&server, &bad_plugin);
    hup(&server);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = server.log_text().lines().filter(|l| l.contains("configuration not reloaded")).count();
        if n >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log_text();
    let second = log.lines().filter(|l| l.contains("configuration not reloaded")).nth(1).unwrap();
    assert!(second.contains("broken"), "names the plugin: {second}");
    assert!(!log.contains("configuration reloaded;"), "nothing was reloaded: {log}");

    // Still serving, with the old configuration.
    let mut c = local(&server);
    assert_eq!(c.send_mail("cron@example.com", &["blocked@example.org"], "Subject: s\r\n\r\nb\r\n").code, 250);
    c.expect("QUIT", 221);
    assert_eq!(server.outbox().len(), 1);
}

#[test]
fn a_listener_address_change_waits_for_a_restart() {
    let server = Server::start(Setup::default());
    let moved = Setup {
        listeners: DEFAULT_LISTENERS.replacen("address = \"127.0.0.1:0\"", "address = \"127.0.0.1:1\"", 1),
        limits: "recipients = 1".into(),
        ..Default::default()
    };
    rewrite(&server, &moved);
    hup(&server);
    let warning = server.wait_log(&["take effect only after a restart"]);
    assert!(warning.contains("listeners.local.address"), "{warning}");
    server.wait_log(&["configuration reloaded"]);
    // The rest applies: the new limit, on the listener as bound.
    let mut c = local(&server);
    c.expect("MAIL FROM:<cron@example.com>", 250);
    c.expect("RCPT TO:<a@example.org>", 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").code, 452);
}

/// The operator's classic: the upstream password was wrong, so mail piles
/// up in the queue (never bounced); fixing it in the file and sending SIGHUP
/// delivers the queue, without a restart.
#[test]
fn a_fixed_relay_password_delivers_the_queue_after_sighup() {
    use crate::common::upstream::*;
    let up = Upstream::start();
    export_upstream_password();
    let good_relay = up.verified_relay();
    let bad_relay = good_relay.replace(&format!("${{{UP_PASSWORD_VAR}}}"), "not-the-password");
    assert_ne!(bad_relay, good_relay);
    let setup = |relay: &str| Setup {
        plugins: Some(DEFAULT_PLUGINS.replace("relay = \"outbox\"", "route = \"up\"")),
        extra: format!("{relay}\n[queue]\nretry_schedule_secs = [1]\n"),
        ..Default::default()
    };
    let server = Server::start(setup(&bad_relay));
    let mut c = local(&server);
    assert_eq!(c.send_mail("cron@example.com", &["bob@example.org"], "Subject: stuck\r\n\r\nbody\r\n").code, 250);
    c.expect("QUIT", 221);
    server.wait_log(&["upstream rejected our credentials"]);
    assert!(up.messages().is_empty());

    rewrite(&server, &setup(&good_relay));
    hup(&server);
    server.wait_log(&["configuration reloaded"]);
    server.wait_queue_empty();
    let got = up.messages();
    assert_eq!(got.len(), 1, "{}", server.log_text());
    assert!(String::from_utf8_lossy(&got[0].eml).contains("Subject: stuck"));
    assert!(!server.log_text().contains("bouncing"), "never bounced");
}
