//! A database that is down or a SQLite file that is missing: 454, never an
//! accept, until it is fixed.

use super::*;

/// A database that is down: 454 (never a crash or an accept); fixed in the
/// configuration and reloaded, logins work.
fn down_then_reloaded(kind: Kind) {
    let db = TestDb::create(kind, "down");
    let down = db.url.replace(if kind == Kind::Postgres { ":5432/" } else { ":3306/" }, ":1/");
    let mut setup =
        Setup { plugins: Some(plugins("")), extra: db.section(&down, "migrate = true"), ..Default::default() };
    let s = Server::start(Setup { plugins: setup.plugins.clone(), extra: setup.extra.clone(), ..Default::default() });
    s.wait_log(&["users table not created or upgraded"]);
    let started = std::time::Instant::now();
    let mut c = tls_session(&s);
    let r = c.auth_plain("alice@example.com", "wonderland");
    assert_eq!(r.code, 454, "{r}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "bounded by query_timeout_ms");
    // The session goes on: the client may try again later.
    c.expect("NOOP", 250);
    let line = s.wait_log(&["SQL statement failed", "\"temporary\":true"]);
    assert!(!line.contains(":1/"), "the URL is not logged: {line}");

    setup.extra = db.section(&db.url, "migrate = true");
    std::fs::write(s.path("mailferry.toml"), Server::config_text(&setup)).unwrap();
    user_ok(&s.path("mailferry.toml"), &["add", "alice@example.com", "--password-stdin"], Some("wonderland"));
    hup(&s);
    s.wait_log(&["configuration reloaded"]);
    assert_auth(&s, "alice@example.com", "wonderland", 235);
}

#[test]
fn postgres_down_is_454_and_a_reload_recovers() {
    down_then_reloaded(Kind::Postgres);
}

#[test]
fn mariadb_down_is_454_and_a_reload_recovers() {
    down_then_reloaded(Kind::MySql);
}

#[test]
fn sqlite_file_missing_is_454_until_it_is_created() {
    let db = TestDb::create(Kind::Sqlite, "missing");
    // serve only reads this database (no migrate): the file stays missing.
    let s = Server::start(Setup { plugins: Some(plugins("")), extra: db.section(&db.url, ""), ..Default::default() });
    assert_auth(&s, "alice@example.com", "wonderland", 454);
    s.wait_log(&["SQL statement failed", "\"temporary\":true"]);
    // The administrator creates it with another configuration.
    let admin_conf = s.path("admin.toml");
    std::fs::write(
        &admin_conf,
        format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n[databases.users]\nurl = \"{}\"\nmigrate = true\n", db.url),
    )
    .unwrap();
    user_ok(&admin_conf, &["add", "alice@example.com", "--password-stdin"], Some("wonderland"));
    assert_auth(&s, "alice@example.com", "wonderland", 235);
}
