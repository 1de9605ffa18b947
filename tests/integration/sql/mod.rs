//! The `sql` capability and the auth-sql plugin against real databases:
//! PostgreSQL and MariaDB servers on this machine (127.0.0.1, as CI has
//! them) and SQLite files. Each test makes its own database and drops it at
//! the end. Real SMTP AUTH through the server: every hash scheme with right
//! and wrong passwords, inactive users, SQL injection attempts in the login,
//! the PostfixAdmin and Dovecot presets on tables of their shape with
//! read-only database users, a database that is down or refuses (454) and
//! comes back, `mailferry user` on each backend, the cache of verified
//! logins against changes to the table and wrong passwords that ban, and
//! the capability's grants, limits and values through a probe plugin.
//!
//! A server that cannot be reached fails these tests with a message saying
//! so: they are never skipped.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::*;
use sqlx::{AssertSqlSafe, Connection};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
const MY_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Runs one statement on `url` with `binds` for its `?` placeholders
/// (turned into `$n` for PostgreSQL); returns the first column of the first
/// row as text, if any.
fn exec(kind: Kind, url: &str, sql: &str, binds: &[&str]) -> Result<Option<String>, String> {
    let sql = match kind {
        Kind::Postgres => {
            let mut n = 0;
            sql.chars()
                .map(|c| {
                    if c == '?' {
                        n += 1;
                        format!("${n}")
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        }
        _ => sql.to_string(),
    };
    macro_rules! run {
        ($conn:ty) => {{
            block_on(async {
                let mut conn = <$conn>::connect(url).await.map_err(|e| e.to_string())?;
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for b in binds {
                    q = q.bind(b.to_string());
                }
                let row = q.fetch_optional(&mut conn).await.map_err(|e| e.to_string())?;
                use sqlx::Row;
                Ok(row.and_then(|r| {
                    r.try_get::<String, _>(0)
                        .ok()
                        .or_else(|| r.try_get::<i64, _>(0).ok().map(|i| i.to_string()))
                        .or_else(|| r.try_get::<i32, _>(0).ok().map(|i| i.to_string()))
                }))
            })
        }};
    }
    match kind {
        Kind::Postgres => run!(sqlx::PgConnection),
        Kind::MySql => run!(sqlx::MySqlConnection),
        Kind::Sqlite => run!(sqlx::SqliteConnection),
    }
}

/// A database made for one test; dropped, with the users it made, at the end.
struct TestDb {
    kind: Kind,
    name: String,
    url: String,
    /// Statements run as administrator when dropped.
    cleanup: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    fn create(kind: Kind, tag: &str) -> TestDb {
        let name = format!("mf_{tag}_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join(format!("{name}.db")).display());
                TestDb { kind, name, url, cleanup: vec![], _dir: Some(dir) }
            }
            Kind::Postgres => {
                admin(kind, &format!("CREATE DATABASE {name}"));
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                TestDb {
                    kind,
                    name: name.clone(),
                    url,
                    cleanup: vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")],
                    _dir: None,
                }
            }
            Kind::MySql => {
                admin(kind, &format!("CREATE DATABASE {name}"));
                let url = format!("mysql://root@127.0.0.1:3306/{name}");
                TestDb {
                    kind,
                    name: name.clone(),
                    url,
                    cleanup: vec![format!("DROP DATABASE IF EXISTS {name}")],
                    _dir: None,
                }
            }
        }
    }

    /// Runs statements on this database as administrator.
    fn exec(&self, sql: &str, binds: &[&str]) -> Option<String> {
        exec(self.kind, &self.url, sql, binds).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn count(&self, table: &str) -> i64 {
        self.exec(&format!("SELECT COUNT(*) FROM {table}"), &[]).unwrap().parse().unwrap()
    }

    /// A `[databases.users]` table pointing at this database.
    fn section(&self, url: &str, extra: &str) -> String {
        // These tests fail logins on purpose, many from 127.0.0.1: bans
        // (tests/brute_force.rs) would get in their way.
        format!(
            "\n[auth_limits]\nfailures_per_ip = 0\nfailures_per_login = 0\nfailure_delay_ms = 0\n\
             [databases.users]\nurl = \"{url}\"\nquery_timeout_ms = 1500\n{extra}\n"
        )
    }

    /// A user that may only read `tables`, and the URL to log in as it
    /// (MariaDB's with `password = "${VAR}"` beside it, set here).
    fn read_only_user(&mut self, tables: &[&str]) -> (String, String) {
        let user = format!("{}_ro", self.name);
        match self.kind {
            Kind::Postgres => {
                admin(self.kind, &format!("CREATE ROLE {user} LOGIN"));
                // After the database, which holds its privileges.
                self.cleanup.push(format!("DROP ROLE IF EXISTS {user}"));
                for t in tables {
                    self.exec(&format!("GRANT SELECT ON {t} TO {user}"), &[]);
                }
                (format!("postgres://{user}@127.0.0.1:5432/{}", self.name), String::new())
            }
            Kind::MySql => {
                let var = format!("MF_TEST_DB_PASSWORD_{}", self.name.to_uppercase());
                let password = format!("s3cret-{}", std::process::id());
                std::env::set_var(&var, &password);
                admin(self.kind, &format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"));
                self.cleanup.push(format!("DROP USER IF EXISTS '{user}'@'%'"));
                for t in tables {
                    admin(self.kind, &format!("GRANT SELECT ON {}.{t} TO '{user}'@'%'", self.name));
                }
                (format!("mysql://{user}@127.0.0.1:3306/{}", self.name), format!("password = \"${{{var}}}\""))
            }
            Kind::Sqlite => unreachable!("SQLite files have no users"),
        }
    }

    fn read_only_user_name(&self) -> String {
        format!("{}_ro", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        for sql in &self.cleanup {
            let _ = exec(self.kind, admin_url(self.kind), sql, &[]);
        }
    }
}

fn admin_url(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => PG_ADMIN,
        Kind::MySql => MY_ADMIN,
        Kind::Sqlite => unreachable!(),
    }
}

/// Runs a statement as the server's administrator; a server that cannot
/// be reached fails the test, saying which and how to start it.
fn admin(kind: Kind, sql: &str) {
    if let Err(e) = exec(kind, admin_url(kind), sql, &[]) {
        let how = match kind {
            Kind::Postgres => "PostgreSQL on 127.0.0.1:5432, user postgres, trust authentication, database test (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`; .ci/run starts it)",
            Kind::MySql => "MariaDB on 127.0.0.1:3306, user root without password, database test (`service mariadb start`; .ci/run starts it)",
            Kind::Sqlite => unreachable!(),
        };
        panic!("{sql}: {e}\nThese tests need {how}.");
    }
}

/// auth-sql on `users`, then a scripted plugin logging the `auth.senders`
/// note at MAIL FROM, then the usual forwarding to the outbox.
fn plugins(auth_config: &str) -> String {
    format!(
        r#"
[[plugins]]
name = "auth-sql"
grants = ["password", "sql:users"]
[plugins.config]
database = "users"
{auth_config}

[[plugins]]
name = "notes"
path = "{}"
[plugins.config]
log_connection_note = "auth.senders"

{}"#,
        test_plugin("scripted").display(),
        smtp_forward("relay = \"outbox\"")
    )
}

fn tls_session(s: &Server) -> Client {
    let mut c = Client::connect(s.addr("submission")).greeting();
    c.expect("EHLO client.test", 250);
    c.starttls();
    c.expect("EHLO client.test", 250);
    c
}

fn auth(s: &Server, login: &str, password: &str) -> Resp {
    tls_session(s).auth_plain(login, password)
}

#[track_caller]
fn assert_auth(s: &Server, login: &str, password: &str, code: u16) {
    let r = auth(s, login, password);
    assert_eq!(r.code, code, "AUTH {login:?} / {password:?}: {r}\n{}", s.log_text());
}

/// `mailferry user ARGS --config CONFIG`, the password on standard input.
fn user_cmd(config: &Path, args: &[&str], password: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(pw) = password {
        stdin.write_all(format!("{pw}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[track_caller]
fn user_ok(config: &Path, args: &[&str], password: Option<&str>) -> String {
    let out = user_cmd(config, args, password);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mailferry user {args:?}: {text}");
    text
}

fn hup(server: &Server) {
    // SAFETY: signalling the child process this test started.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
}

const SHA512: &str =
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
const SHA256: &str = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";

/// Logins a client may try to smuggle SQL through (without spaces, which
/// the SMTP layer refuses in logins): each is just a login no one has.
const INJECTIONS: &[&str] = &[
    "'OR'1'='1",
    "'/**/OR/**/1=1--",
    "alice@example.com'--",
    "alice@example.com'#",
    "alice@example.com';DROP/**/TABLE/**/mailferry_users;--",
    "\"OR\"\"=\"",
    "x'/**/UNION/**/SELECT/**/'{PLAIN}pw',1,NULL--",
    "%",
    "alice@example.com\\",
    "alice@example.com\\'--",
    ":login",
    "$1",
    "?",
    "'||'",
];

/// Injection attempts the SMTP layer refuses (501) before any lookup.
const REFUSED: &[&str] = &["' OR 1=1 --", "alice@example.com' --", "x'; DROP TABLE mailferry_users; --"];

/// Tries every injection: 535 for those that reach the plugin, 501 for
/// those refused before; never a login, never a database error.
fn try_injections(s: &Server) {
    for login in INJECTIONS {
        assert_auth(s, login, "pw", 535);
    }
    assert_auth(s, &"'OR'1'='1'--".repeat(21), "pw", 535);
    for login in REFUSED {
        assert_auth(s, login, "pw", 501);
    }
}

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

/// The probe plugin's statements, one per MAIL FROM local part.
fn probe_plugin(statements: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "\n[[plugins]]\nname = \"probe\"\npath = \"{}\"\ngrants = [\"sql:probe\"]\n",
        test_plugin("sqlprobe").display()
    );
    for (name, database, sql) in statements {
        let (sql, repeat) = sql.split_once(" #repeat=").map_or((*sql, "1"), |(s, r)| (s, r));
        out.push_str(&format!(
            "[plugins.config.statements.{name}]\ndatabase = \"{database}\"\nsql = {sql:?}\nrepeat = {repeat}\n"
        ));
    }
    out
}

fn probe(s: &Server, name: &str) -> Resp {
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    c.cmd(&format!("MAIL FROM:<{name}@example.com>"))
}

fn capability(kind: Kind) {
    let db = TestDb::create(kind, "probe");
    let other = TestDb::create(Kind::Sqlite, "other");
    let types = match kind {
        Kind::Postgres => "SELECT TRUE AS b, CAST(42 AS int4) AS i, CAST(1.5 AS float8) AS f, 'x' AS t, CAST('\\x00ff' AS bytea) AS y, NULL AS n, :sender AS s, :sender = :sender AS again",
        Kind::MySql => "SELECT TRUE AS b, CAST(42 AS SIGNED) AS i, 1.5e0 AS f, 'x' AS t, X'00FF' AS y, NULL AS n, :sender AS s, :sender = :sender AS again",
        Kind::Sqlite => unreachable!(),
    };
    let sleep = match kind {
        Kind::Postgres => "SELECT pg_sleep(5)",
        _ => "SELECT SLEEP(5)",
    };
    let many = match kind {
        Kind::Postgres => "SELECT generate_series(1, 5) AS n",
        _ => "SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5",
    };
    let native = if kind == Kind::Postgres { "SELECT $1" } else { "SELECT ?" };
    let date = if kind == Kind::Postgres { "SELECT now() AS stamp" } else { "SELECT NOW() AS stamp" };
    let statements = [
        ("types", "probe", types),
        ("many", "probe", many),
        ("other", "other", "SELECT 1"),
        ("nope", "nope", "SELECT 1"),
        ("syntax", "probe", "SELEC 1"),
        ("two", "probe", "SELECT 1; SELECT 2"),
        ("native", "probe", native),
        ("date", "probe", date),
        ("sleep", "probe", sleep),
        ("loop", "probe", "SELECT 1 AS one #repeat=9"),
    ];
    let s = Server::start(Setup {
        plugins: Some(probe_plugin(&statements)),
        extra: format!(
            "\n[databases.probe]\nurl = \"{}\"\nmax_rows = 3\nquery_timeout_ms = 1000\n[databases.other]\nurl = \"{}\"\n",
            db.url, other.url
        ),
        ..Default::default()
    });
    assert_eq!(probe(&s, "types").code, 250);
    let line = s.wait_log(&["sql ok"]);
    let expect_b = if kind == Kind::Postgres { "Bool(true)" } else { "Int(1)" };
    for part in [
        "columns=[\\\"b\\\", \\\"i\\\", \\\"f\\\", \\\"t\\\", \\\"y\\\", \\\"n\\\", \\\"s\\\", \\\"again\\\"]",
        &format!("rows=[[{expect_b}, Int(42), Float(1.5), Text(\\\"x\\\"), Bytes([0, 255]), Null, Text(\\\"types@example.com\\\")"),
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    let expect = |name: &str, code: u16, log: &str| {
        let r = probe(&s, name);
        assert_eq!(r.code, code, "{name}: {r}");
        s.wait_log(&[log]);
    };
    expect("many", 550, "more than 3 rows (max_rows)");
    expect("other", 550, "database \\\"other\\\" is not granted to this plugin");
    expect("nope", 550, "database \\\"nope\\\" is not granted to this plugin");
    expect("syntax", 550, "sql error temporary=false message=");
    expect("two", 550, "only one statement per query");
    expect("native", 550, "write placeholders as :name");
    expect("date", 550, "cast it to text in the statement");
    // The host gives up after query_timeout_ms (PostgreSQL's own
    // statement_timeout, set a little later, stops the statement): temporary.
    expect("sleep", 451, "sql error temporary=true");
    // Eight slow calls per hook call at most: the ninth stops the plugin.
    expect("loop", 451, "more than 8 password, relay, queue or SQL calls");
    // The pool survives all of that.
    assert_eq!(probe(&s, "types").code, 250);
}

#[test]
fn postgres_capability_grants_limits_values_and_errors() {
    capability(Kind::Postgres);
}

#[test]
fn mariadb_capability_grants_limits_values_and_errors() {
    capability(Kind::MySql);
}

#[test]
fn grants_are_checked_at_start() {
    let db = TestDb::create(Kind::Sqlite, "grants");
    let extra = format!("\n[databases.users]\nurl = \"{}\"\n", db.url);
    // Importing sql without a grant: the plugin does not load.
    let plugins = probe_plugin(&[("x", "users", "SELECT 1")]).replace("grants = [\"sql:probe\"]", "");
    let logs = Server::try_start(Setup { plugins: Some(plugins), extra: extra.clone(), ..Default::default() })
        .map(|_| ())
        .unwrap_err();
    assert!(logs.contains("sql:NAME"), "{logs}");
    // A grant for a database that is not configured.
    let plugins = probe_plugin(&[("x", "users", "SELECT 1")]).replace("sql:probe", "sql:nope");
    let logs = Server::try_start(Setup { plugins: Some(plugins), extra: extra.clone(), ..Default::default() })
        .map(|_| ())
        .unwrap_err();
    assert!(logs.contains("\"sql:nope\": there is no [databases.nope]; known: \"users\""), "{logs}");
    // auth-sql on a database it was not granted refuses to start.
    let logs = Server::try_start(Setup {
        plugins: Some(plugins_granting("sql:users", "database = \"other\"")),
        extra: format!("{extra}[databases.other]\nurl = \"{}\"\n", db.url),
        ..Default::default()
    })
    .map(|_| ())
    .unwrap_err();
    assert!(logs.contains("add \"sql:other\" to its grants"), "{logs}");
}

fn plugins_granting(grant: &str, database: &str) -> String {
    plugins("").replace("sql:users", grant).replace("database = \"users\"", database)
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
