//! `mailferry user`: non-ASCII domains, and which store the commands pick.

use super::*;

/// `mailferry user add` lowers a non-ASCII domain as auth-sql looks it up
/// (Unicode rules): the user logs in, however the domain is typed.
#[test]
fn sqlite_a_user_with_a_non_ascii_domain_logs_in() {
    let db = TestDb::create(Kind::Sqlite, "idn");
    let s = Server::start(Setup {
        plugins: Some(plugins("")),
        extra: db.section(&db.url, "migrate = true"),
        ..Default::default()
    });
    let conf = s.path("mailferry.toml");
    user_ok(&conf, &["add", "jörg@BÜCHER.Example", "--password-stdin"], Some("lesen"));
    assert_eq!(db.exec("SELECT login FROM mailferry_users", &[]).as_deref(), Some("jörg@bücher.example"));
    assert_auth(&s, "jörg@bücher.example", "lesen", 235);
    assert_auth(&s, "jörg@BÜCHER.EXAMPLE", "lesen", 235);
    assert_auth(&s, "JÖRG@bücher.example", "lesen", 535);
}

#[test]
fn user_commands_pick_the_store_and_refuse_databases_they_only_read() {
    let db = TestDb::create(Kind::Sqlite, "cli");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mailferry.toml");
    let write =
        |body: &str| std::fs::write(&conf, format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{body}")).unwrap();
    // A relative SQLite path resolves against the configuration's folder.
    write("[databases.users]\nurl = \"sqlite://data/users.db\"\nmigrate = true\n[databases.pfa]\nurl = \"sqlite://pfa.db\"\n");
    user_ok(&conf, &["add", "a@example.com", "--password-stdin"], Some("pw"));
    assert!(dir.path().join("data/users.db").exists());
    let out = user_cmd(&conf, &["list", "--database", "pfa"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("mailferry only reads that database"), "{out:?}");
    let out = user_cmd(&conf, &["list", "--database", "nope"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no [databases.nope]"), "{out:?}");
    // Two databases with users: say which.
    write(&format!(
        "[databases.users]\nurl = \"sqlite://data/users.db\"\nmigrate = true\n[databases.more]\nurl = \"{}\"\nmigrate = true\n",
        db.url
    ));
    let out = user_cmd(&conf, &["list"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --database NAME"), "{out:?}");
    assert!(user_ok(&conf, &["list", "--database", "users"], None).contains("a@example.com\targon2"));
    // The users file keeps its place when auth-flat-file is configured.
    write("[[plugins]]\nname = \"auth-flat-file\"\ngrants = [\"password\"]\nread_dirs = [\"auth\"]\n[databases.users]\nurl = \"sqlite://data/users.db\"\nmigrate = true\n");
    std::fs::create_dir_all(dir.path().join("auth")).unwrap();
    assert!(user_ok(&conf, &["add", "f@example.com", "--password-stdin"], Some("pw")).contains("auth/users"));
    let out = user_cmd(&conf, &["disable", "f@example.com"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no way to disable"), "{out:?}");
    assert!(user_ok(&conf, &["list", "--database", "users"], None).contains("a@example.com"));
}
