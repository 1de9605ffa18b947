//! The `senders` column: the addresses a login may send as, forgotten at
//! STARTTLS.

use super::*;

/// auth-sql, then sender-policy reading the senders column (`source =
/// "sql"`), then forwarding to the outbox.
fn senders_from_sql() -> String {
    format!(
        "[[plugins]]\nname = \"auth-sql\"\ngrants = [\"password\", \"sql:users\"]\n[plugins.config]\ndatabase = \"users\"\n\n\
         [[plugins]]\nname = \"sender-policy\"\n[plugins.config]\nsource = \"sql\"\n\n{}",
        smtp_forward("relay = \"outbox\"")
    )
}

fn message(from: &str, subject: &str) -> String {
    format!("From: {from}\nTo: someone@example.org\nSubject: {subject}\n\nhello\n")
}

/// A user's `senders` in mailferry_users (SQLite) let the login send as
/// those addresses, in MAIL FROM and From:, and as nobody else; a user
/// without senders sends as itself only.
#[test]
fn sqlite_senders_column_lets_a_login_send_as_its_aliases_only() {
    let db = TestDb::create(Kind::Sqlite, "senders");
    let s = Server::start(Setup {
        plugins: Some(senders_from_sql()),
        extra: db.section(&db.url, "migrate = true"),
        ..Default::default()
    });
    let conf = s.path("mailferry.toml");
    user_ok(&conf, &["add", "alice@example.com", "--password-stdin"], Some("wonderland"));
    user_ok(&conf, &["add", "bob@example.com", "--password-stdin"], Some("builder"));
    db.exec(
        "UPDATE mailferry_users SET senders = ? WHERE login = ?",
        &["sales@example.com, @alice.example", "alice@example.com"],
    );

    let mut c = tls_session(&s);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    let r = c.send_mail("sales@example.com", &["someone@example.org"], &message("Sales <sales@example.com>", "alias"));
    assert_eq!(r.code, 250, "{r}");
    let r = c.send_mail("news@alice.example", &["someone@example.org"], &message("news@alice.example", "domain"));
    assert_eq!(r.code, 250, "{r}");
    let r = c.send_mail("alice@example.com", &["someone@example.org"], &message("alice@example.com", "herself"));
    assert_eq!(r.code, 250, "{r}");
    for other in ["bob@example.com", "ceo@example.com", "x@sub.alice.example"] {
        let r = c.expect(&format!("MAIL FROM:<{other}>"), 553);
        assert_eq!(
            r.text(),
            format!("5.7.1 <{other}>: not allowed to send as this address (login alice@example.com)"),
            "{r}"
        );
    }
    let line = s.wait_log(&["refused envelope sender", "ceo@example.com"]);
    assert!(line.contains("database (auth.senders): sales@example.com"), "{line}");
    // An allowed envelope does not make another From: allowed.
    let r = c.send_mail("sales@example.com", &["someone@example.org"], &message("bob@example.com", "forged"));
    assert_eq!(r.code, 553, "{r}");
    assert_eq!(
        r.text(),
        "5.7.1 From: <bob@example.com>: not allowed to send as this address (login alice@example.com)"
    );
    c.expect("QUIT", 221);

    // Bob's senders are NULL: himself only, and no failure.
    let mut c = tls_session(&s);
    assert_eq!(c.auth_plain("bob@example.com", "builder").code, 235);
    let r = c.send_mail("bob@example.com", &["someone@example.org"], &message("bob@example.com", "bob"));
    assert_eq!(r.code, 250, "{r}");
    c.expect("MAIL FROM:<sales@example.com>", 553);
    c.expect("QUIT", 221);

    s.wait_queue_empty();
    let outbox = s.outbox();
    let mut subjects: Vec<&str> =
        outbox.iter().filter_map(|m| m.split("\r\n").find_map(|l| l.strip_prefix("Subject: "))).collect();
    subjects.sort();
    assert_eq!(subjects, ["alias", "bob", "domain", "herself"]);
}

/// STARTTLS forgets what was learned before it (RFC 3207), the notes a
/// login left too: on a listener that allows AUTH without TLS, alice's
/// senders must not outlast her login into the TLS session. What the
/// connect hook noted of the client's address stays.
#[test]
fn starttls_forgets_the_senders_of_a_login_made_before_it() {
    let db = TestDb::create(Kind::Sqlite, "starttls");
    let connect_notes = format!(
        "[[plugins]]\nname = \"connect-notes\"\npath = {:?}\n[plugins.config]\nconnect_note = \"connect.ip\"\n\
         log_connection_note = \"connect.ip\"\n\n",
        test_plugin("scripted").display().to_string()
    );
    let s = Server::start(Setup {
        plugins: Some(connect_notes + &plugins("")),
        extra: db.section(&db.url, "migrate = true"),
        listeners: r#"
[[listeners]]
name = "plain-auth"
address = "127.0.0.1:0"
tls = "starttls"
auth_without_tls = true
require_auth = false
"#
        .into(),
        ..Default::default()
    });
    let conf = s.path("mailferry.toml");
    user_ok(&conf, &["add", "alice@example.com", "--password-stdin"], Some("wonderland"));
    db.exec("UPDATE mailferry_users SET senders = ? WHERE login = ?", &["@example.org", "alice@example.com"]);
    let mut c = Client::connect(s.addr("plain-auth")).greeting();
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    c.starttls();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<alice@example.com>", 250);
    s.wait_log(&["connection note auth.senders = None"]);
    assert!(!s.log_text().contains("connection note auth.senders = Some"), "{}", s.log_text());
    s.wait_log(&["connection note connect.ip = Some(Text(\\\"127.0.0.1\\\"))"]);
}
