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

mod cache;
mod capability;
mod outages;
mod presets;
mod schemes;
mod senders;
mod users;

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
        // (tests/integration/brute_force.rs) would get in their way.
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
