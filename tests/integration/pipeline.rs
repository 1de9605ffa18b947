//! The plugin pipeline through the real server: verdict order, host-checked
//! replies, notes, header edits, capability grants, and fault isolation with
//! deliberately bad plugins (tests/plugins: trap, spin, hog).

use crate::common::*;

fn plugin(name: &str, path_of: &str, extra: &str) -> String {
    format!("\n[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n", test_plugin(path_of).display())
}

fn with_plugins(first: &str) -> Setup {
    Setup { plugins: Some(format!("{first}\n{DEFAULT_PLUGINS}")), ..Default::default() }
}

fn local(s: &Server) -> Client {
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    c
}

/// A bad plugin in `hook` answers 451 4.3.0 for that step, is named in the
/// log, and the server goes on serving this and other sessions.
fn assert_isolated(kind: &str, what_in_log: &str) {
    let s = Server::start(Setup {
        limits: String::new(),
        ..with_plugins(&plugin(kind, kind, "[plugins.config]\nhook = \"rcpt\""))
    });
    let mut c = local(&s);
    c.expect("MAIL FROM:<a@example.com>", 250);
    let r = c.cmd("RCPT TO:<b@example.org>");
    assert_eq!(r.code, 451, "{kind}: {r}");
    assert!(r.text().starts_with("4.3.0"), "{kind}: {r}");
    let line = s.wait_log(&["plugin failed", &format!("\"plugin\":\"{kind}\""), "\"hook\":\"rcpt\""]);
    assert!(line.contains(what_in_log), "{kind}: {line}");
    // The same session goes on (a fresh instance is made)…
    c.expect("NOOP", 250);
    assert_eq!(c.cmd("RCPT TO:<c@example.org>").code, 451);
    c.expect("QUIT", 221);
    // …and so do other sessions, concurrently and later.
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let addr = s.addr("local");
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).greeting();
                c.expect("EHLO client.test", 250);
                c.expect("MAIL FROM:<a@example.com>", 250);
                c.cmd("RCPT TO:<b@example.org>").code
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 451);
    }
    let mut c = local(&s);
    c.expect("NOOP", 250);
}

#[test]
fn trapping_plugin_is_isolated() {
    assert_isolated("trap", "unreachable");
}

#[test]
fn spinning_plugin_is_interrupted() {
    assert_isolated("spin", "CPU time budget");
}

#[test]
fn memory_hog_is_stopped() {
    assert_isolated("hog", "memory");
}

#[test]
fn first_verdict_other_than_continue_wins_and_replies_are_checked() {
    let first = plugin(
        "deny-blocked",
        "scripted",
        "[plugins.config]\nwhen_rcpt_contains = \"blocked\"\nrcpt = { verdict = \"deny\", code = 550, enhanced = \"5.1.1\", text = \"no such user here\" }",
    );
    let second = plugin("accept-all", "scripted", "[plugins.config]\nrcpt = { verdict = \"accept\" }");
    let s = Server::start(Setup { plugins: Some(format!("{first}{second}{DEFAULT_PLUGINS}")), ..Default::default() });
    // On the untrusted listener the second plugin's accept lets a recipient
    // through (explicit plugin policy), but the first plugin's deny wins.
    let mut c = Client::connect(s.addr("open")).greeting();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@example.com>", 250);
    let r = c.expect("RCPT TO:<blocked@example.org>", 550);
    assert_eq!(r.text(), "5.1.1 no such user here");
    c.expect("RCPT TO:<fine@example.org>", 250);
}

#[test]
fn invalid_plugin_replies_are_replaced_by_defaults() {
    for (step, expect) in [
        // Wrong class for the verdict.
        ("{ verdict = \"deny\", code = 250, text = \"ok really\" }", 550),
        // Enhanced code of another class.
        ("{ verdict = \"deny-soft\", code = 451, enhanced = \"5.1.1\", text = \"x\" }", 451),
    ] {
        let s =
            Server::start(with_plugins(&plugin("bad-reply", "scripted", &format!("[plugins.config]\nmail = {step}"))));
        let mut c = local(&s);
        let r = c.cmd("MAIL FROM:<a@example.com>");
        assert_eq!(r.code, expect, "{step}: {r}");
        s.wait_log(&["invalid reply from plugin", "bad-reply"]);
    }
    // CR/LF in a reply text cannot inject a second reply.
    let s = Server::start(with_plugins(&plugin(
        "inject",
        "scripted",
        "[plugins.config]\nmail = { verdict = \"deny\", code = 550, text = \"no\\r\\n250 2.0.0 fake\" }",
    )));
    let mut c = local(&s);
    let r = c.cmd("MAIL FROM:<a@example.com>");
    assert_eq!(r.code, 550);
    assert!(!r.text().contains("fake"), "{r}");
    c.expect("NOOP", 250);
}

#[test]
fn deny_disconnect_closes_the_session() {
    let s = Server::start(with_plugins(&plugin(
        "bye",
        "scripted",
        "[plugins.config]\nehlo = { verdict = \"deny-disconnect\", code = 421, enhanced = \"4.7.0\", text = \"go away\" }",
    )));
    let mut c = Client::connect(s.addr("local")).greeting();
    let r = c.cmd("EHLO client.test");
    assert_eq!(r.code, 421);
    assert!(c.is_closed());
}

#[test]
fn data_hook_edits_headers_and_notes_flow_between_hooks() {
    let s = Server::start(with_plugins(&plugin(
        "tagger",
        "scripted",
        "[plugins.config]\nadd_header = [\"X-Scripted\", \"yes\"]\nnote = \"sender\"",
    )));
    let mut c = local(&s);
    let r = c.send_mail("a@example.com", &["b@example.org"], "Subject: t\n\nbody\n");
    assert_eq!(r.code, 250, "{r}");
    let m = &s.outbox()[0];
    assert!(m.contains("\r\nX-Scripted: yes\r\n\r\nbody"), "{m}");
    s.wait_log(&["tagger", "a@example.com"]);
}

#[test]
fn queue_with_no_taker_is_451() {
    let s = Server::start(Setup { plugins: Some(plugin("only", "scripted", "")), ..Default::default() });
    let mut c = local(&s);
    c.begin_data("a@example.com", "b@example.org");
    c.send_raw(b"Subject: x\r\n\r\ny\r\n.\r\n");
    let r = c.read();
    assert_eq!(r.code, 451, "{r}");
}

#[test]
fn auth_with_no_auth_plugin_is_535() {
    let s = Server::start(Setup { plugins: Some(plugin("only", "scripted", "")), ..Default::default() });
    let mut c = Client::connect(s.addr("submission")).greeting();
    c.expect("EHLO client.test", 250);
    c.starttls();
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain("alice@example.com", "x").code, 535);
}

#[test]
fn ungranted_capability_fails_at_start_with_a_clear_error() {
    // smtp-forward imports `outbound`; without the grant it must not load.
    let err = Server::try_start(Setup {
        plugins: Some("[[plugins]]\nname = \"smtp-forward\"\n[plugins.config]\nrelay = \"outbox\"\n".into()),
        ..Default::default()
    })
    .err()
    .expect("server started with an ungranted capability");
    assert!(err.contains("smtp-forward") && err.contains("grants"), "{err}");
}

#[test]
fn check_command_validates_the_configuration() {
    let s = Server::start(Setup::default());
    let out =
        std::process::Command::new(BIN).args(["check", "--config"]).arg(s.path("mailferry.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = s.path("bad.toml");
    std::fs::write(
        &bad,
        "[[listeners]]\naddress = \"0.0.0.0:25\"\ntls = \"none\"\nrequire_auth = true\n[[plugins]]\nname = \"nope\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("require_auth = true with tls = \"none\""), "{err}");
    assert!(err.contains("not a built-in plugin"), "{err}");
}

#[test]
fn bad_plugin_config_stops_the_start_with_the_reason() {
    let err = Server::try_start(Setup {
        plugins: Some(
            "[[plugins]]\nname = \"smtp-forward\"\ngrants = [\"outbound\"]\n[plugins.config]\nrelya = \"outbox\"\n"
                .into(),
        ),
        ..Default::default()
    })
    .err()
    .expect("server started with a misspelt plugin setting");
    assert!(err.contains("smtp-forward") && err.contains("relya"), "{err}");
}

#[test]
fn slow_host_calls_per_hook_are_bounded() {
    // Time in password checks is not charged to the CPU budget, so a plugin
    // looping on them is stopped by a count instead.
    let looping = plugin("looper", "pwloop", "grants = [\"password\"]\n[plugins.config]\nchecks = 100");
    let s = Server::start(Setup { plugins: Some(looping), ..Default::default() });
    let mut c = Client::connect(s.addr("submission")).greeting();
    c.expect("EHLO client.test", 250);
    c.starttls();
    c.expect("EHLO client.test", 250);
    let r = c.auth_plain("a@example.com", "x");
    assert_eq!(r.code, 451, "{r}");
    s.wait_log(&["plugin failed", "looper", "more than 8 password, relay, queue or SQL calls"]);
    // A plugin within the bound works.
    let fine = plugin("fine", "pwloop", "grants = [\"password\"]\n[plugins.config]\nchecks = 8");
    let s = Server::start(Setup { plugins: Some(fine), ..Default::default() });
    let mut c = Client::connect(s.addr("submission")).greeting();
    c.expect("EHLO client.test", 250);
    c.starttls();
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain("a@example.com", "x").code, 235);
}

#[test]
fn a_plugin_blocked_in_a_host_call_is_stopped_by_the_wall_clock() {
    let s = Server::start(Setup {
        extra: String::new(),
        ..with_plugins(&plugin("sleeper", "scripted", "[plugins.config]\nsleep_ms = 60000"))
    });
    let mut c = local(&s);
    let started = std::time::Instant::now();
    let r = c.cmd("MAIL FROM:<a@example.com>");
    assert_eq!(r.code, 451, "{r}");
    // The default budget is 1 s; a minute's sleep must not hold the session.
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    s.wait_log(&["plugin failed", "sleeper", "CPU time budget"]);
    c.expect("NOOP", 250);
}

#[test]
fn plugin_output_goes_to_the_log_and_never_fills_up() {
    let s = Server::start(with_plugins(&plugin("chatty", "scripted", "[plugins.config]\nprint = 6000")));
    let mut c = local(&s);
    for _ in 0..5 {
        c.expect("MAIL FROM:<a@example.com>", 250);
        c.expect("RSET", 250);
    }
    s.wait_log(&["plugin output", "chatty", "oooooooo"]);
}
