//! SMTP AUTH on the submission listeners: PLAIN and LOGIN, initial response
//! and continuation, cancel, bad input, every stored hash scheme, the
//! `mailferry user` commands against a running server, and the cache of
//! verified logins (`[passwords]`): repeat logins answered from it, as
//! /metrics counts them, while a changed password, a removed user and a
//! wrong password (counted toward a ban) get past it at once.

use crate::common::*;
use base64::Engine as _;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn server() -> Server {
    Server::start(Setup { users: users_with_all_schemes(), ..Default::default() })
}

fn tls_session(s: &Server) -> Client {
    let mut c = Client::connect(s.addr("submission")).greeting();
    c.expect("EHLO client.test", 250);
    c.starttls();
    c.expect("EHLO client.test", 250);
    c
}

#[test]
fn plain_with_initial_response_then_send() {
    let s = server();
    let mut c = tls_session(&s);
    let r = c.auth_plain("alice@example.com", "wonderland");
    assert_eq!(r.code, 235, "{r}");
    assert!(r.text().starts_with("2.7.0"));
    let r = c.send_mail("alice@example.com", &["bob@example.org"], "Subject: hi\n\nhello\n");
    assert_eq!(r.code, 250, "{r}");
    let m = unfold(&s.outbox()[0]);
    assert!(m.contains("with ESMTPSA id"), "{m}");
}

#[test]
fn plain_with_continuation_and_login_both_ways() {
    let s = server();
    let mut c = tls_session(&s);
    let r = c.expect("AUTH PLAIN", 334);
    assert_eq!(r.text(), "");
    c.expect(&b64("\0alice@example.com\0wonderland"), 235);

    let mut c = tls_session(&s);
    let r = c.expect("AUTH LOGIN", 334);
    assert_eq!(r.text(), "VXNlcm5hbWU6");
    let r = c.expect(&b64("alice@example.com"), 334);
    assert_eq!(r.text(), "UGFzc3dvcmQ6");
    c.expect(&b64("wonderland"), 235);

    let mut c = tls_session(&s);
    c.expect(&format!("AUTH LOGIN {}", b64("alice@example.com")), 334);
    c.expect(&b64("wonderland"), 235);
    c.expect("AUTH LOGIN", 503); // already authenticated
}

#[test]
fn every_hash_scheme() {
    let s = server();
    for (login, pw) in [
        ("alice@example.com", "wonderland"),
        ("sha512@example.com", "Hello world!"),
        ("sha256@example.com", "Hello world!"),
        ("plain@example.com", "clear text"),
    ] {
        let mut c = tls_session(&s);
        assert_eq!(c.auth_plain(login, pw).code, 235, "{login}");
        let mut c = tls_session(&s);
        let r = c.auth_plain(login, "wrong");
        assert_eq!(r.code, 535, "{login}: {r}");
        assert!(r.text().starts_with("5.7.8"), "{r}");
    }
    // A broken stored hash is a temporary failure, never a login.
    let mut c = tls_session(&s);
    let r = c.auth_plain("broken@example.com", "anything");
    assert_eq!(r.code, 454, "{r}");
    // An unknown user: 535, like a wrong password.
    let mut c = tls_session(&s);
    assert_eq!(c.auth_plain("nobody@example.com", "x").code, 535);
    s.wait_log(&["authentication failed", "nobody@example.com", "127.0.0.1"]);
}

#[test]
fn cancel_bad_base64_bad_mechanism_and_sequence() {
    let s = server();
    let mut c = tls_session(&s);
    c.expect("AUTH PLAIN", 334);
    let r = c.expect("*", 501);
    assert!(r.text().contains("cancel"), "{r}");
    c.expect("AUTH PLAIN !!!notbase64", 501);
    c.expect("AUTH LOGIN", 334);
    c.expect("%%%", 501);
    c.expect("AUTH CRAM-MD5", 504);
    c.expect(&format!("AUTH PLAIN {}", b64("other\0alice@example.com\0wonderland")), 535);
    c.expect(&format!("AUTH PLAIN {}", b64("no-nul-separators")), 501);
    c.expect("MAIL FROM:<alice@example.com>", 530);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    c.expect("MAIL FROM:<alice@example.com>", 250);
}

#[test]
fn auth_during_transaction_is_out_of_sequence() {
    let s = Server::start(Setup {
        users: users_with_all_schemes(),
        listeners: r#"
[[listeners]]
name = "local"
address = "127.0.0.1:0"
tls = "starttls"
require_auth = false
trusted_networks = ["127.0.0.0/8"]
"#
        .into(),
        ..Default::default()
    });
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    c.starttls();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect(&format!("AUTH PLAIN {}", b64("\0alice@example.com\0wonderland")), 503);
}

#[test]
fn implicit_tls_listener() {
    let s = server();
    let mut c = Client::connect_tls(s.addr("submissions")).greeting();
    let r = c.expect("EHLO client.test", 250);
    assert!(r.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"));
    assert!(!r.text().contains("STARTTLS"));
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
}

#[test]
fn starttls_discards_pipelined_plaintext_and_resets_state() {
    let s = server();
    let mut c = Client::connect(s.addr("submission")).greeting();
    c.expect("EHLO client.test", 250);
    // A man in the middle appends a command after STARTTLS in clear text.
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n");
    let r = c.read();
    assert_eq!(r.code, 220);
    c.starttls_after_reply();
    // The injected MAIL must not have been executed: a MAIL now is not
    // "sender already given", and EHLO is needed again.
    c.expect("MAIL FROM:<a@example.com>", 503);
}

#[test]
fn edits_to_the_users_file_apply_without_restart() {
    let s = server();
    let conf = s.path("mailferry.toml");
    let mut child = std::process::Command::new(BIN)
        .args(["user", "add", "new@example.com", "--password-stdin", "--config"])
        .arg(&conf)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"fresh-pass\n").unwrap();
    assert!(child.wait().unwrap().success());
    let mut c = tls_session(&s);
    assert_eq!(c.auth_plain("new@example.com", "fresh-pass").code, 235);

    let out = std::process::Command::new(BIN).args(["user", "list", "--config"]).arg(&conf).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("new@example.com\targon2"), "{list}");

    let st = std::process::Command::new(BIN)
        .args(["user", "remove", "new@example.com", "--config"])
        .arg(&conf)
        .status()
        .unwrap();
    assert!(st.success());
    let mut c = tls_session(&s);
    assert_eq!(c.auth_plain("new@example.com", "fresh-pass").code, 535);
}

#[test]
fn loopback_listener_may_opt_into_auth_without_tls() {
    let s = Server::start(Setup {
        users: users_with_all_schemes(),
        listeners: "[[listeners]]\nname = \"lo\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\nrequire_auth = true\nauth_without_tls = true\n".into(),
        ..Default::default()
    });
    let mut c = Client::connect(s.addr("lo")).greeting();
    let r = c.expect("EHLO client.test", 250);
    assert!(r.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"), "{r}");
    c.expect("MAIL FROM:<alice@example.com>", 530);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    let r = c.send_mail("alice@example.com", &["bob@example.org"], "Subject: lo\n\nx\n");
    assert_eq!(r.code, 250, "{r}");
}

#[test]
fn logins_with_control_characters_are_refused_before_any_lookup() {
    let s = server();
    let mut c = tls_session(&s);
    // A newline in the login could forge a log line for fail2ban.
    let forged = "bob\n2026-01-01T00:00:00Z WARN authentication failed ip=10.9.8.7";
    let r = c.cmd(&format!("AUTH PLAIN {}", b64(&format!("\0{forged}\0pw"))));
    assert_eq!(r.code, 501, "{r}");
    assert!(!s.log_text().contains("ip=10.9.8.7"), "forged line in the log");
    // Over-long passwords (sent as a continuation: RFC 4954 keeps the AUTH
    // command itself within the 512-octet limit) fail before any hashing.
    c.expect("AUTH PLAIN", 334);
    let r = c.cmd(&b64(&format!("\0alice@example.com\0{}", "p".repeat(2000))));
    assert_eq!(r.code, 535, "{r}");
}

/// An AUTH that does not succeed leaves no connection notes behind: a plugin
/// noted the login tried, the next plugin refused the password, and the
/// note is gone; after a login that succeeds it stays.
#[test]
fn a_failed_auth_leaves_no_notes() {
    let notes = format!(
        "[[plugins]]\nname = \"notes\"\npath = {:?}\n[plugins.config]\nauth_note = \"auth.tried\"\n\
         log_connection_note = \"auth.tried\"\n\n",
        test_plugin("scripted").display().to_string()
    );
    let s = Server::start(Setup {
        users: users_with_all_schemes(),
        plugins: Some(notes + DEFAULT_PLUGINS),
        // MAIL without a login, so the mail hook shows the notes either way.
        listeners: "[[listeners]]\nname = \"plain\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\
                    auth_without_tls = true\nrequire_auth = false\n"
            .into(),
        ..Default::default()
    });
    let mut c = Client::connect(s.addr("plain")).greeting();
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain("mallory@example.com", "guess").code, 535);
    c.expect("MAIL FROM:<mallory@example.com>", 250);
    s.wait_log(&["connection note auth.tried = None"]);
    c.expect("RSET", 250);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    c.expect("MAIL FROM:<alice@example.com>", 250);
    s.wait_log(&["connection note auth.tried = Some(Text(\\\"alice@example.com\\\"))"]);
}

/// A server with the admin listener (for /metrics), `users`, and `extra`
/// TOML after it (`[auth_limits]`, `[passwords]`). Failed logins are
/// answered at once unless `extra` says otherwise.
fn server_with(users: &str, extra: &str) -> Server {
    let limits = if extra.contains("[auth_limits]") { "" } else { "[auth_limits]\nfailure_delay_ms = 0\n" };
    Server::start(Setup {
        users: users.into(),
        extra: format!("\n[admin]\naddress = \"127.0.0.1:0\"\n{limits}{extra}"),
        ..Default::default()
    })
}

/// `mailferry user ARGS --config` for server `s`, `password` on standard
/// input; it must succeed.
fn user_cmd(s: &Server, args: &[&str], password: Option<&str>) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new(BIN)
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(&s.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(pw) = password {
        stdin.write_all(format!("{pw}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mailferry user {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[track_caller]
fn assert_auth(s: &Server, login: &str, password: &str, code: u16) {
    let r = tls_session(s).auth_plain(login, password);
    assert_eq!(r.code, code, "AUTH {login:?} / {password:?}: {r}\n{}", s.log_text());
}

fn checks(cached: u64, hashed: u64, plain: u64) -> PasswordChecks {
    PasswordChecks { cached, hashed, plain }
}

/// Verified logins are cached per stored hash: a password changed in the
/// users file, by `mailferry user passwd` or by hand, takes effect at the
/// very next login, for the old password and the new.
#[test]
fn a_password_change_applies_at_the_next_login_despite_the_cache() {
    let s = server_with(&users_with_all_schemes(), "");
    assert_auth(&s, "alice@example.com", "wonderland", 235);
    assert_auth(&s, "alice@example.com", "wonderland", 235);
    assert_eq!(password_checks(&s), checks(1, 1, 0), "the second login came from the cache");

    user_cmd(&s, &["passwd", "alice@example.com", "--password-stdin"], Some("looking glass"));
    assert_auth(&s, "alice@example.com", "wonderland", 535);
    assert_auth(&s, "alice@example.com", "looking glass", 235);
    // Both checked against the new hash in full: nothing cached matched it.
    assert_eq!(password_checks(&s), checks(1, 3, 0));
    assert_auth(&s, "alice@example.com", "looking glass", 235);
    assert_eq!(password_checks(&s), checks(2, 3, 0));

    // An administrator writes another line (bcrypt) into the file.
    let users = std::fs::read_to_string(s.path("auth/users")).unwrap();
    let line = users.lines().find(|l| l.starts_with("alice@example.com:")).unwrap();
    let bcrypt = bcrypt::hash("through the mirror", 4).unwrap();
    std::fs::write(s.path("auth/users"), users.replace(line, &format!("alice@example.com:{bcrypt}"))).unwrap();
    assert_auth(&s, "alice@example.com", "looking glass", 535);
    assert_auth(&s, "alice@example.com", "wonderland", 535);
    assert_auth(&s, "alice@example.com", "through the mirror", 235);
    assert_auth(&s, "alice@example.com", "through the mirror", 235);
    assert_eq!(password_checks(&s), checks(3, 6, 0));
}

/// A wrong password after a cached login is checked in full, refused, and
/// counted toward a ban exactly as without the cache: with
/// `failures_per_ip = 2` the second failure bans the address, whose
/// sessions then get 421 even with the right password.
#[test]
fn a_wrong_password_after_a_cached_login_is_refused_and_counted_toward_a_ban() {
    let users = format!("alice@example.com:{}\n", bcrypt::hash("wonderland", 4).unwrap());
    for cache in [true, false] {
        let s = server_with(
            &users,
            &format!("[auth_limits]\nfailures_per_ip = 2\nfailure_delay_ms = 0\n[passwords]\ncache = {cache}\n"),
        );
        assert_auth(&s, "alice@example.com", "wonderland", 235);
        assert_auth(&s, "alice@example.com", "wonderland", 235);
        // Opened before the ban, not yet logged in.
        let mut early = tls_session(&s);

        let mut c = tls_session(&s);
        let r = c.auth_plain("alice@example.com", "wonderlanD");
        assert_eq!(r.code, 535, "cache = {cache}: {r}");
        assert!(r.text().starts_with("5.7.8"), "{r}");
        s.wait_log(&["authentication failed", "alice@example.com", "127.0.0.1"]);
        assert!(!s.log_text().contains("address banned"), "cache = {cache}: banned after one failure");
        // The same guess again: a failure is never remembered, as a
        // success or at all.
        assert_eq!(c.auth_plain("alice@example.com", "wonderlanD").code, 535, "cache = {cache}");
        let r = c.read();
        assert_eq!(r.code, 421, "cache = {cache}: {r}");
        assert!(r.text().contains("too many failed logins"), "{r}");
        assert!(c.is_closed());
        s.wait_log(&["address banned after failed logins", "127.0.0.1"]);
        let failures = s.log_text().lines().filter(|l| l.contains("authentication failed")).count();
        assert_eq!(failures, 2, "cache = {cache}");

        // The right password, cached or not, does not get past the ban.
        let r = early.auth_plain("alice@example.com", "wonderland");
        assert_eq!(r.code, 421, "cache = {cache}: {r}");
        assert_eq!(Client::connect(s.addr("submission")).read().code, 421, "cache = {cache}");
        // The wrong guesses ran the scheme: they were not answered (nor
        // cached) as the login they followed.
        let expected = if cache { checks(1, 3, 0) } else { checks(0, 4, 0) };
        assert_eq!(password_checks(&s), expected, "cache = {cache}");
        assert!(scrape_metrics(&s).contains("mailferry_auth_bans_total 1"), "cache = {cache}");
    }
}

/// The cache answers repeat logins without hashing, for every scheme it
/// keeps; `{PLAIN}` entries and unknown logins (the dummy hash) never come
/// from it; entries expire after `cache_ttl_secs`; and with `cache = false`
/// every login is hashed.
#[test]
fn repeat_logins_come_from_the_cache_unless_it_is_off_or_expired() {
    let s = server_with(&users_with_all_schemes(), "");
    assert_eq!(password_checks(&s), checks(0, 0, 0));
    for _ in 0..4 {
        assert_auth(&s, "alice@example.com", "wonderland", 235);
    }
    assert_eq!(password_checks(&s), checks(3, 1, 0));
    for _ in 0..2 {
        assert_auth(&s, "sha512@example.com", "Hello world!", 235);
        assert_auth(&s, "plain@example.com", "clear text", 235);
        assert_auth(&s, "nobody@example.com", "wonderland", 535);
    }
    assert_eq!(password_checks(&s), checks(4, 4, 2));

    let s = server_with(&users_with_all_schemes(), "[passwords]\ncache = false\n");
    for _ in 0..3 {
        assert_auth(&s, "alice@example.com", "wonderland", 235);
    }
    assert_eq!(password_checks(&s), checks(0, 3, 0));

    let s = server_with(&users_with_all_schemes(), "[passwords]\ncache_ttl_secs = 1\n");
    assert_auth(&s, "alice@example.com", "wonderland", 235);
    assert_auth(&s, "alice@example.com", "wonderland", 235);
    assert_eq!(password_checks(&s), checks(1, 1, 0));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_auth(&s, "alice@example.com", "wonderland", 235);
    assert_eq!(password_checks(&s), checks(1, 2, 0), "expired: hashed again");
    assert_auth(&s, "alice@example.com", "wonderland", 235);
    assert_eq!(password_checks(&s), checks(2, 2, 0));
}

/// A user removed from the users file after a cached login (by `mailferry
/// user remove`, or by commenting the line out) is refused at the next
/// login; added again, with the same password, the new hash is checked.
#[test]
fn a_user_removed_after_a_cached_login_is_refused() {
    let s = server_with(&users_with_all_schemes(), "");
    user_cmd(&s, &["add", "new@example.com", "--password-stdin"], Some("fresh-pass"));
    assert_auth(&s, "new@example.com", "fresh-pass", 235);
    assert_auth(&s, "new@example.com", "fresh-pass", 235);
    assert_eq!(password_checks(&s), checks(1, 1, 0));
    user_cmd(&s, &["remove", "new@example.com"], None);
    assert_auth(&s, "new@example.com", "fresh-pass", 535);
    s.wait_log(&["authentication failed", "new@example.com"]);

    assert_auth(&s, "alice@example.com", "wonderland", 235);
    assert_auth(&s, "alice@example.com", "wonderland", 235);
    let users = std::fs::read_to_string(s.path("auth/users")).unwrap();
    std::fs::write(s.path("auth/users"), users.replace("alice@example.com:", "# alice@example.com:")).unwrap();
    assert_auth(&s, "alice@example.com", "wonderland", 535);
    // Hashed: the two first logins, and the two refused, which checked
    // the plugin's dummy hash as for any unknown login.
    assert_eq!(password_checks(&s), checks(2, 4, 0));

    user_cmd(&s, &["add", "new@example.com", "--password-stdin"], Some("fresh-pass"));
    assert_auth(&s, "new@example.com", "fresh-pass", 235);
    assert_eq!(password_checks(&s), checks(2, 5, 0), "a new hash: checked in full");
}
