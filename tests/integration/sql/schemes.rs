//! The default schema on SQLite, PostgreSQL and MariaDB: every hash scheme
//! with right and wrong passwords, inactive users, SQL injection attempts,
//! and `mailferry user` on each backend.

use super::*;

/// The default schema on `kind`, through the CLI and SMTP AUTH.
fn every_scheme_and_outcome(kind: Kind) {
    let db = TestDb::create(kind, "schemes");
    let s = Server::start(Setup {
        plugins: Some(plugins("")),
        extra: db.section(&db.url, "migrate = true"),
        ..Default::default()
    });
    let conf = s.path("mailferry.toml");
    // The CLI creates the table (and the SQLite file) if serve has not yet.
    let out = user_ok(&conf, &["add", "alice@Example.COM", "--password-stdin"], Some("wonderland"));
    assert!(out.contains("added alice@Example.COM to database users"), "{out}");
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600, "{path}");
    }
    let argon = hash_password("wonderland");
    let bcrypt = bcrypt::hash("b-crypt pw", 4).unwrap().replacen("$2b$", "$2y$", 1);
    let users: Vec<(&str, String, &str, bool)> = vec![
        ("argon@example.com", format!("{{ARGON2ID}}{argon}"), "wonderland", true),
        ("bcrypt@example.com", bcrypt.clone(), "b-crypt pw", true),
        ("blf@example.com", format!("{{BLF-CRYPT}}{bcrypt}"), "b-crypt pw", true),
        ("sha512@example.com", format!("{{SHA512-CRYPT}}{SHA512}"), "Hello world!", true),
        ("sha256@example.com", SHA256.to_string(), "Hello world!", true),
        ("plain@example.com", "{PLAIN}clear text".to_string(), "clear text", true),
        // `openssl passwd -1 -salt saltsalt 'md5 pw'`: PostfixAdmin's old md5crypt.
        ("md5@example.com", "{MD5-CRYPT}$1$saltsalt$lAu4Yl1EiCfuGFoLFgSVa1".to_string(), "md5 pw", true),
        ("inactive@example.com", argon.clone(), "wonderland", false),
        ("broken@example.com", "$6$".to_string(), "x", true),
    ];
    for (login, hash, _, active) in &users {
        let sql = if *active {
            "INSERT INTO mailferry_users (login, password, active) VALUES (?, ?, TRUE)"
        } else {
            "INSERT INTO mailferry_users (login, password, active) VALUES (?, ?, FALSE)"
        };
        db.exec(sql, &[login, hash]);
    }
    db.exec(
        "UPDATE mailferry_users SET senders = ? WHERE login = ?",
        &["alice@example.com, @example.org", "alice@example.com"],
    );
    let list = user_ok(&conf, &["list"], None);
    for line in
        ["alice@example.com\targon2\n", "sha512@example.com\tsha512crypt\n", "inactive@example.com\targon2\tdisabled\n"]
    {
        assert!(list.contains(line), "{line:?} in:\n{list}");
    }

    // Every scheme: the right password logs in, a wrong one is 535.
    assert_auth(&s, "alice@example.com", "wonderland", 235);
    for (login, _, password, active) in &users {
        if *active && !login.starts_with("broken") {
            assert_auth(&s, login, password, 235);
            let r = auth(&s, login, "wrong");
            assert_eq!(r.code, 535, "{login}: {r}");
            assert!(r.text().starts_with("5.7.8"), "{r}");
        }
    }
    // Domains compare without regard to case, local parts exactly.
    assert_auth(&s, "alice@EXAMPLE.com", "wonderland", 235);
    assert_auth(&s, "Alice@example.com", "wonderland", 535);
    // Inactive: 535 like a wrong password, and the log says why.
    assert_auth(&s, "inactive@example.com", "wonderland", 535);
    s.wait_log(&["login \\\"inactive@example.com\\\" is inactive"]);
    // A hash that cannot be verified: temporary failure, never a login.
    assert_auth(&s, "broken@example.com", "x", 454);
    assert_auth(&s, "nobody@example.com", "wonderland", 535);

    // Injection attempts are logins no one has; the table is untouched.
    try_injections(&s);
    // A very long one, sent as a continuation line (the AUTH command
    // itself is held to 512 octets): refused before any lookup too.
    let mut c = tls_session(&s);
    c.expect("AUTH PLAIN", 334);
    let long = format!("\0{}\0pw", "'OR'1'='1'--".repeat(300));
    let r = c.cmd(&base64::Engine::encode(&base64::engine::general_purpose::STANDARD, long));
    assert!(r.code == 501 || r.code == 535, "{r}");
    // NUL and line breaks never reach a plugin (refused at the SASL layer).
    for login in ["alice@example.com\0x", "a\r\nb"] {
        let r = auth(&s, login, "wonderland");
        assert!(r.code == 501 || r.code == 535, "{login:?}: {r}");
    }
    assert_eq!(db.count("mailferry_users"), 10);
    assert_auth(&s, "alice@example.com", "wonderland", 235);

    // The senders column reaches the sender policy as a connection note.
    let mut c = tls_session(&s);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    c.expect("MAIL FROM:<alice@example.com>", 250);
    s.wait_log(&["connection note auth.senders = Some(Texts([\\\"alice@example.com\\\", \\\"@example.org\\\"]))"]);
    let mut c = tls_session(&s);
    assert_eq!(c.auth_plain("sha256@example.com", "Hello world!").code, 235);
    c.expect("MAIL FROM:<sha256@example.com>", 250);
    s.wait_log(&["connection note auth.senders = None"]);

    // Neither passwords nor hashes are logged.
    let logs = s.log_text();
    for secret in [
        "wonderland",
        "Hello world",
        "b-crypt pw",
        "clear text",
        &argon,
        &bcrypt,
        "svn8UoSVapNtMuq1uk",
        "5B8vYYiY",
        "md5 pw",
        "lAu4Yl1EiCfu",
    ] {
        assert!(!logs.contains(secret), "{secret:?} is in the log");
    }

    // passwd, disable, enable, remove.
    user_ok(&conf, &["passwd", "alice@example.com", "--password-stdin"], Some("looking glass"));
    assert_auth(&s, "alice@example.com", "wonderland", 535);
    assert_auth(&s, "alice@example.com", "looking glass", 235);
    user_ok(&conf, &["disable", "alice@example.com"], None);
    assert_auth(&s, "alice@example.com", "looking glass", 535);
    user_ok(&conf, &["enable", "alice@example.com"], None);
    assert_auth(&s, "alice@example.com", "looking glass", 235);
    user_ok(&conf, &["remove", "alice@example.com", "--database", "users"], None);
    assert_auth(&s, "alice@example.com", "looking glass", 535);
    let out = user_cmd(&conf, &["remove", "alice@example.com"], None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no user alice@example.com"));
    let out = user_cmd(&conf, &["add", "sha256@example.com", "--password-stdin"], Some("x"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"), "{out:?}");
}

#[test]
fn sqlite_every_scheme_inactive_users_and_injections() {
    every_scheme_and_outcome(Kind::Sqlite);
}

#[test]
fn postgres_every_scheme_inactive_users_and_injections() {
    every_scheme_and_outcome(Kind::Postgres);
}

#[test]
fn mariadb_every_scheme_inactive_users_and_injections() {
    every_scheme_and_outcome(Kind::MySql);
}
