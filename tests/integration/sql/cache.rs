//! The cache of verified logins: the table stays the truth, and wrong
//! passwords count toward a ban as they do without it.

use super::*;

/// The admin listener, for /metrics.
const ADMIN: &str = "\n[admin]\naddress = \"127.0.0.1:0\"\n";

fn checks(cached: u64, hashed: u64, plain: u64) -> PasswordChecks {
    PasswordChecks { cached, hashed, plain }
}

/// Waits until `n` log lines contain `needle`.
#[track_caller]
fn wait_lines(s: &Server, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.log_text().lines().filter(|l| l.contains(needle)).count() < n {
        assert!(std::time::Instant::now() < deadline, "not {n} lines with {needle:?}:\n{}", s.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Verified logins are cached per stored hash, and the table stays the
/// truth: repeat logins come from the cache; a password changed by
/// `mailferry user passwd` or by an UPDATE from another tool applies at the
/// very next login, to the old password and the new; a user disabled
/// (`mailferry user disable` or an UPDATE) or deleted after a cached login
/// is refused at the next one.
fn cached_logins_follow_the_table(kind: Kind) {
    let db = TestDb::create(kind, "cache");
    let s = Server::start(Setup {
        plugins: Some(plugins("")),
        extra: format!("{}{ADMIN}", db.section(&db.url, "migrate = true")),
        ..Default::default()
    });
    let conf = s.path("mailferry.toml");
    user_ok(&conf, &["add", "alice@example.com", "--password-stdin"], Some("wonderland"));
    for _ in 0..3 {
        assert_auth(&s, "alice@example.com", "wonderland", 235);
    }
    assert_eq!(password_checks(&s), checks(2, 1, 0), "repeat logins came from the cache");

    user_ok(&conf, &["passwd", "alice@example.com", "--password-stdin"], Some("looking glass"));
    assert_auth(&s, "alice@example.com", "wonderland", 535);
    assert_auth(&s, "alice@example.com", "looking glass", 235);
    assert_auth(&s, "alice@example.com", "looking glass", 235);
    assert_eq!(password_checks(&s), checks(3, 3, 0));

    let bcrypt = bcrypt::hash("through the mirror", 4).unwrap();
    db.exec("UPDATE mailferry_users SET password = ? WHERE login = ?", &[&bcrypt, "alice@example.com"]);
    assert_auth(&s, "alice@example.com", "looking glass", 535);
    assert_auth(&s, "alice@example.com", "wonderland", 535);
    assert_auth(&s, "alice@example.com", "through the mirror", 235);
    assert_auth(&s, "alice@example.com", "through the mirror", 235);
    assert_eq!(password_checks(&s), checks(4, 6, 0));

    // Disabled, the stored hash is the same: the password check may come
    // from the cache, and the login is refused all the same.
    user_ok(&conf, &["disable", "alice@example.com"], None);
    assert_auth(&s, "alice@example.com", "through the mirror", 535);
    s.wait_log(&["login \\\"alice@example.com\\\" is inactive"]);
    user_ok(&conf, &["enable", "alice@example.com"], None);
    assert_auth(&s, "alice@example.com", "through the mirror", 235);
    db.exec("UPDATE mailferry_users SET active = FALSE WHERE login = ?", &["alice@example.com"]);
    assert_auth(&s, "alice@example.com", "through the mirror", 535);
    wait_lines(&s, "is inactive", 2);
    assert_eq!(password_checks(&s), checks(7, 6, 0));

    // Deleted: unknown, the plugin checks its dummy hash.
    db.exec("UPDATE mailferry_users SET active = TRUE WHERE login = ?", &["alice@example.com"]);
    assert_auth(&s, "alice@example.com", "through the mirror", 235);
    db.exec("DELETE FROM mailferry_users WHERE login = ?", &["alice@example.com"]);
    assert_auth(&s, "alice@example.com", "through the mirror", 535);
    s.wait_log(&["no user \\\"alice@example.com\\\""]);
    assert_eq!(password_checks(&s), checks(8, 7, 0));
}

#[test]
fn sqlite_a_cached_login_yields_to_a_new_password_or_a_disabled_or_deleted_user() {
    cached_logins_follow_the_table(Kind::Sqlite);
}

#[test]
fn postgres_a_cached_login_yields_to_a_new_password_or_a_disabled_or_deleted_user() {
    cached_logins_follow_the_table(Kind::Postgres);
}

#[test]
fn mariadb_a_cached_login_yields_to_a_new_password_or_a_disabled_or_deleted_user() {
    cached_logins_follow_the_table(Kind::MySql);
}

/// A wrong password after a cached login is checked in full, refused and
/// counted toward a ban exactly as without the cache (`cache = false`):
/// with `failures_per_ip = 2` the second failure bans the address, whose
/// sessions then get 421 even with the right password.
fn wrong_passwords_after_a_cached_login_are_counted(kind: Kind) {
    let db = TestDb::create(kind, "cacheban");
    for cache in [true, false] {
        let s = Server::start(Setup {
            plugins: Some(plugins("")),
            extra: format!(
                "\n[auth_limits]\nfailures_per_ip = 2\nfailure_delay_ms = 0\n[passwords]\ncache = {cache}\n\
                 [databases.users]\nurl = \"{}\"\nmigrate = true\n{ADMIN}",
                db.url
            ),
            ..Default::default()
        });
        if cache {
            s.wait_log(&["users table ready"]);
            let hash = bcrypt::hash("wonderland", 4).unwrap();
            db.exec(
                "INSERT INTO mailferry_users (login, password, active) VALUES (?, ?, TRUE)",
                &["alice@example.com", &hash],
            );
        }
        assert_auth(&s, "alice@example.com", "wonderland", 235);
        assert_auth(&s, "alice@example.com", "wonderland", 235);
        // Opened before the ban, not yet logged in.
        let mut early = tls_session(&s);

        let mut c = tls_session(&s);
        let r = c.auth_plain("alice@example.com", "wonderlanD");
        assert_eq!(r.code, 535, "cache = {cache}: {r}");
        s.wait_log(&["authentication failed", "alice@example.com", "127.0.0.1"]);
        assert!(!s.log_text().contains("address banned"), "cache = {cache}: banned after one failure");
        // The same guess again: a failure is never remembered.
        assert_eq!(c.auth_plain("alice@example.com", "wonderlanD").code, 535, "cache = {cache}");
        let r = c.read();
        assert_eq!(r.code, 421, "cache = {cache}: {r}");
        assert!(r.text().contains("too many failed logins"), "{r}");
        assert!(c.is_closed());
        s.wait_log(&["address banned after failed logins", "127.0.0.1"]);
        let failures = s.log_text().lines().filter(|l| l.contains("authentication failed")).count();
        assert_eq!(failures, 2, "cache = {cache}");

        assert_eq!(early.auth_plain("alice@example.com", "wonderland").code, 421, "cache = {cache}");
        assert_eq!(Client::connect(s.addr("submission")).read().code, 421, "cache = {cache}");
        let expected = if cache { checks(1, 3, 0) } else { checks(0, 4, 0) };
        assert_eq!(password_checks(&s), expected, "cache = {cache}");
        assert!(scrape_metrics(&s).contains("mailferry_auth_bans_total 1"), "cache = {cache}");
    }
}

#[test]
fn sqlite_a_wrong_password_after_a_cached_login_is_refused_and_counted_toward_a_ban() {
    wrong_passwords_after_a_cached_login_are_counted(Kind::Sqlite);
}

#[test]
fn postgres_a_wrong_password_after_a_cached_login_is_refused_and_counted_toward_a_ban() {
    wrong_passwords_after_a_cached_login_are_counted(Kind::Postgres);
}

#[test]
fn mariadb_a_wrong_password_after_a_cached_login_is_refused_and_counted_toward_a_ban() {
    wrong_passwords_after_a_cached_login_are_counted(Kind::MySql);
}
