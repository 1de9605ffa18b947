//! The PostfixAdmin and Dovecot presets on tables of their shape, read as
//! read-only users, and MariaDB's collations that fold accents.

use super::*;

/// PostfixAdmin's `domain` and `mailbox` tables, as its schema creates them.
fn postfixadmin_tables(kind: Kind) -> [&'static str; 2] {
    match kind {
        Kind::Postgres => [
            "CREATE TABLE domain (domain varchar(255) NOT NULL PRIMARY KEY, description varchar(255) NOT NULL DEFAULT '', \
             aliases integer NOT NULL DEFAULT 0, mailboxes integer NOT NULL DEFAULT 0, maxquota bigint NOT NULL DEFAULT 0, \
             quota bigint NOT NULL DEFAULT 0, transport varchar(255) DEFAULT NULL, backupmx boolean NOT NULL DEFAULT false, \
             created timestamp with time zone DEFAULT now(), modified timestamp with time zone DEFAULT now(), \
             active boolean NOT NULL DEFAULT true)",
            "CREATE TABLE mailbox (username varchar(255) NOT NULL PRIMARY KEY, password varchar(255) NOT NULL DEFAULT '', \
             name varchar(255) NOT NULL DEFAULT '', maildir varchar(255) NOT NULL DEFAULT '', quota bigint NOT NULL DEFAULT 0, \
             created timestamp with time zone DEFAULT now(), modified timestamp with time zone DEFAULT now(), \
             active boolean NOT NULL DEFAULT true, domain varchar(255) REFERENCES domain, local_part varchar(255) NOT NULL)",
        ],
        // After every upgrade.php step: the address columns are latin1
        // (upgrade_1846_mysql), names and descriptions utf8mb4.
        Kind::MySql => [
            "CREATE TABLE domain (domain varchar(255) COLLATE latin1_general_ci NOT NULL, \
             description varchar(255) CHARACTER SET utf8mb4 NOT NULL, aliases int(10) NOT NULL DEFAULT 0, \
             mailboxes int(10) NOT NULL DEFAULT 0, maxquota bigint(20) NOT NULL DEFAULT 0, quota bigint(20) NOT NULL DEFAULT 0, \
             transport varchar(255) COLLATE latin1_general_ci NOT NULL, backupmx tinyint(1) NOT NULL DEFAULT 0, \
             created datetime NOT NULL DEFAULT '2000-01-01 00:00:00', modified datetime NOT NULL DEFAULT '2000-01-01 00:00:00', \
             active tinyint(1) NOT NULL DEFAULT 1, password_expiry int DEFAULT 0, PRIMARY KEY (domain)) \
             DEFAULT CHARSET=latin1 COLLATE=latin1_general_ci COMMENT='Postfix Admin - Virtual Domains'",
            "CREATE TABLE mailbox (username varchar(255) COLLATE latin1_general_ci NOT NULL, \
             password varchar(255) COLLATE latin1_general_ci NOT NULL, name varchar(255) CHARACTER SET utf8mb4 NOT NULL, \
             maildir varchar(255) COLLATE latin1_general_ci NOT NULL, quota bigint(20) NOT NULL DEFAULT 0, \
             local_part varchar(255) COLLATE latin1_general_ci NOT NULL, domain varchar(255) COLLATE latin1_general_ci NOT NULL, \
             created datetime NOT NULL DEFAULT '2000-01-01 00:00:00', modified datetime NOT NULL DEFAULT '2000-01-01 00:00:00', \
             active tinyint(1) NOT NULL DEFAULT 1, phone varchar(30) CHARACTER SET utf8mb4 NOT NULL DEFAULT '', \
             email_other varchar(255) CHARACTER SET utf8mb4 NOT NULL DEFAULT '', token varchar(255) CHARACTER SET utf8mb4 NOT NULL DEFAULT '', \
             token_validity datetime NOT NULL DEFAULT '2000-01-01 00:00:00', password_expiry datetime NOT NULL DEFAULT '2000-01-01 00:00:00', \
             totp_secret varchar(255) CHARACTER SET utf8mb4 DEFAULT NULL, PRIMARY KEY (username), KEY domain (domain)) \
             DEFAULT CHARSET=latin1 COLLATE=latin1_general_ci COMMENT='Postfix Admin - Virtual Mailboxes'",
        ],
        Kind::Sqlite => unreachable!(),
    }
}

fn postfixadmin(kind: Kind) {
    let mut db = TestDb::create(kind, "pfa");
    for t in postfixadmin_tables(kind) {
        db.exec(t, &[]);
    }
    let (yes, no) = if kind == Kind::Postgres { ("TRUE", "FALSE") } else { ("1", "0") };
    for (domain, active) in [("example.net", yes), ("closed.example", no)] {
        db.exec(
            &format!("INSERT INTO domain (domain, description, transport, active) VALUES (?, '', 'virtual', {active})"),
            &[domain],
        );
    }
    let blf = format!("{{BLF-CRYPT}}{}", bcrypt::hash("pfa pw", 4).unwrap().replacen("$2b$", "$2y$", 1));
    for (login, hash, active) in [
        ("pfa@example.net", blf.as_str(), yes),
        ("crypt@example.net", SHA512, yes),
        ("off@example.net", SHA512, no),
        ("shut@closed.example", SHA512, yes),
    ] {
        let (local, domain) = login.split_once('@').unwrap();
        db.exec(
            &format!(
                "INSERT INTO mailbox (username, password, name, maildir, local_part, domain, active) VALUES (?, ?, '', ?, ?, ?, {active})"
            ),
            &[login, hash, &format!("{domain}/{local}/"), local, domain],
        );
    }
    // mailferry reads as a user that may only read these two tables.
    let (url, password) = db.read_only_user(&["mailbox", "domain"]);
    let s = Server::start(Setup {
        plugins: Some(plugins("preset = \"postfixadmin\"")),
        extra: db.section(&url, &password),
        ..Default::default()
    });
    assert_auth(&s, "pfa@example.net", "pfa pw", 235);
    // PostfixAdmin stores logins in lower case; the preset looks them up so.
    assert_auth(&s, "PFA@Example.NET", "pfa pw", 235);
    assert_auth(&s, "pfa@example.net", "wrong", 535);
    assert_auth(&s, "crypt@example.net", "Hello world!", 235);
    assert_auth(&s, "off@example.net", "Hello world!", 535);
    assert_auth(&s, "shut@closed.example", "Hello world!", 535);
    assert_auth(&s, "nobody@example.net", "pfa pw", 535);
    if kind == Kind::MySql {
        // Latin-1 columns: accents are letters of their own, and a login
        // Latin-1 cannot hold is refused by the database (docs/sql.md).
        assert_auth(&s, "pfä@example.net", "pfa pw", 535);
        assert_auth(&s, "PFA@EXAMPLE.NET", "pfa pw", 235);
        assert_auth(&s, "pfİ@example.net", "pfa pw", 454);
        let line = s.wait_log(&["Illegal mix of collations"]);
        assert!(line.contains("\"temporary\":false"), "a statement that can never work: {line}");
    }
    try_injections(&s);

    // The database refuses (privilege taken away): 454, and logins work
    // again as soon as it is given back, without a reload.
    let revoke = match kind {
        Kind::Postgres => format!("REVOKE SELECT ON mailbox FROM {}", db.read_only_user_name()),
        _ => format!("REVOKE SELECT ON {}.mailbox FROM '{}'@'%'", db.name, db.read_only_user_name()),
    };
    let grant = revoke.replace("REVOKE", "GRANT").replace(" FROM ", " TO ");
    if kind == Kind::Postgres {
        db.exec(&revoke, &[]);
    } else {
        admin(kind, &revoke);
    }
    let r = auth(&s, "pfa@example.net", "pfa pw");
    assert_eq!(r.code, 454, "{r}");
    assert!(r.text().starts_with("4.7.0"), "{r}");
    s.wait_log(&["SQL statement failed", "auth-sql", "denied"]);
    if kind == Kind::Postgres {
        db.exec(&grant, &[]);
    } else {
        admin(kind, &grant);
    }
    assert_auth(&s, "pfa@example.net", "pfa pw", 235);

    // Connections the server drops (a restart) are replaced unnoticed.
    match kind {
        Kind::Postgres => {
            db.exec(
                "SELECT CAST(COUNT(pg_terminate_backend(pid)) AS TEXT) FROM pg_stat_activity WHERE usename = ?",
                &[&db.read_only_user_name()],
            );
        }
        _ => {
            let ids = exec(
                kind,
                MY_ADMIN,
                "SELECT CAST(GROUP_CONCAT(id) AS CHAR) FROM information_schema.processlist WHERE user = ?",
                &[&db.read_only_user_name()],
            )
            .unwrap();
            for id in ids.unwrap_or_default().split(',').filter(|i| !i.is_empty()) {
                admin(kind, &format!("KILL {id}"));
            }
        }
    }
    assert_auth(&s, "pfa@example.net", "pfa pw", 235);
    assert!(!s.log_text().contains("s3cret-"), "the database password is not logged");
}

#[test]
fn postgres_postfixadmin_preset_with_a_read_only_user() {
    postfixadmin(Kind::Postgres);
}

#[test]
fn mariadb_postfixadmin_preset_with_a_read_only_user() {
    postfixadmin(Kind::MySql);
}

#[test]
fn mariadb_dovecot_preset() {
    let mut db = TestDb::create(Kind::MySql, "dovecot");
    // The table of Dovecot's SQL documentation (password wide enough for SHA512-CRYPT).
    db.exec(
        "CREATE TABLE users (userid VARCHAR(128) NOT NULL, domain VARCHAR(128) NOT NULL, password VARCHAR(255) NOT NULL, \
         home VARCHAR(255) NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL)",
        &[],
    );
    for (user, domain, hash) in [
        ("dove", "example.org", format!("{{SHA256-CRYPT}}{SHA256}")),
        ("dove", "other.example", format!("{{SHA512-CRYPT}}{SHA512}")),
    ] {
        db.exec(
            "INSERT INTO users (userid, domain, password, home, uid, gid) VALUES (?, ?, ?, '/var/vmail', 5000, 5000)",
            &[user, domain, &hash],
        );
    }
    let (url, password) = db.read_only_user(&["users"]);
    let s = Server::start(Setup {
        plugins: Some(plugins("preset = \"dovecot\"")),
        extra: db.section(&url, &password),
        ..Default::default()
    });
    assert_auth(&s, "dove@example.org", "Hello world!", 235);
    assert_auth(&s, "dove@EXAMPLE.org", "Hello world!", 235);
    assert_auth(&s, "dove@other.example", "Hello world!", 235);
    assert_auth(&s, "dove@example.org", "wrong", 535);
    assert_auth(&s, "dove", "Hello world!", 535);
    assert_auth(&s, "'OR''='@example.org", "Hello world!", 535);
    try_injections(&s);
}

/// MariaDB's default collations fold accents as well as case: the lookup
/// finds alice's row for `álice@…`. Each spelling would have brute-force
/// counters of its own, so auth-sql takes a row only when its stored login
/// is the one typed (ignoring case): the others are unknown logins, 535
/// even with alice's password.
#[test]
fn mariadb_accent_insensitive_spellings_of_a_login_are_unknown() {
    let db = TestDb::create(Kind::MySql, "collation");
    let ci = "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci";
    // mailferry's table as someone may create it by hand, and Dovecot's.
    db.exec(
        &format!(
            "CREATE TABLE mailferry_users (login VARCHAR(255) NOT NULL PRIMARY KEY, password VARCHAR(255) NOT NULL, \
             active TINYINT(1) NOT NULL DEFAULT 1, senders TEXT) {ci}"
        ),
        &[],
    );
    db.exec(
        &format!(
            "CREATE TABLE users (userid VARCHAR(128) NOT NULL, domain VARCHAR(128) NOT NULL, password VARCHAR(255) NOT NULL, \
             home VARCHAR(255) NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL) {ci}"
        ),
        &[],
    );
    let hash = format!("{{SHA512-CRYPT}}{SHA512}");
    db.exec("INSERT INTO mailferry_users (login, password) VALUES (?, ?)", &["alice@example.org", &hash]);
    db.exec(
        "INSERT INTO users (userid, domain, password, home, uid, gid) VALUES (?, ?, ?, '/var/vmail', 5000, 5000)",
        &["dove", "example.org", &hash],
    );
    // The database does take these spellings for alice.
    for spelling in ["álice@example.org", "ALİCE@example.org"] {
        let found = db.exec("SELECT login FROM mailferry_users WHERE login = ?", &[spelling]);
        assert_eq!(found.as_deref(), Some("alice@example.org"), "{spelling}");
    }

    let s = Server::start(Setup { plugins: Some(plugins("")), extra: db.section(&db.url, ""), ..Default::default() });
    for spelling in
        ["álice@example.org", "ALİCE@example.org", "ÀLICE@example.org", "alıce@example.org", "alicé@example.org"]
    {
        assert_auth(&s, spelling, "Hello world!", 535);
    }
    s.wait_log(&["found the row of \\\"alice@example.org\\\"", "treated as an unknown login"]);
    // Case alone is one login to the counters too: it logs in.
    assert_auth(&s, "alice@example.org", "Hello world!", 235);
    assert_auth(&s, "ALICE@example.org", "Hello world!", 235);
    assert_auth(&s, "alice@example.org", "wrong", 535);

    // The dovecot preset compares the local part and the domain it reads back.
    let s = Server::start(Setup {
        plugins: Some(plugins("preset = \"dovecot\"")),
        extra: db.section(&db.url, ""),
        ..Default::default()
    });
    assert_auth(&s, "dóve@example.org", "Hello world!", 535);
    assert_auth(&s, "dove@éxample.org", "Hello world!", 535);
    assert_auth(&s, "dove@example.org", "Hello world!", 235);
    assert_auth(&s, "Dove@Example.org", "Hello world!", 235);
    s.wait_log(&["found the row of \\\"dove\\\" at \\\"example.org\\\""]);
}
