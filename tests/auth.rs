//! SMTP AUTH on the submission listeners: PLAIN and LOGIN, initial response
//! and continuation, cancel, bad input, every stored hash scheme, and the
//! `mailferry user` commands against a running server.

mod common;
use base64::Engine as _;
use common::*;

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
