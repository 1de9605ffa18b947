//! `auth-sql`: SMTP AUTH against users in an SQL database the host holds
//! (SQLite, PostgreSQL, MySQL/MariaDB): mailferry's own users table, an
//! existing PostfixAdmin database, a Dovecot-style users table, or any
//! table a query can read.
//!
//! # Configuration
//!
//! | Key | Default | Meaning |
//! |-----|---------|---------|
//! | `database` | `"users"` | The `[databases.NAME]` to query; the plugin needs the grant `"sql:NAME"` |
//! | `preset` | `"default"` (unless `query` is set) | A ready-made query: `"default"`, `"postfixadmin"` or `"dovecot"` (below) |
//! | `query` | the preset's | Your own query, instead of a preset |
//! | `lowercase` | `true` with `preset = "postfixadmin"`, else `false` | Look the whole login up in lower case (the domain always is) |
//! | `dummy_hash` | an argon2id hash (m=19456, t=2, p=1) | Checked for unknown logins so timing does not tell which logins exist; set it to a hash of the same scheme and cost as your users' |
//!
//! ```toml
//! [databases.users]
//! url = "sqlite://users.db"
//! migrate = true
//!
//! [[plugins]]
//! name = "auth-sql"
//! grants = ["password", "sql:users"]
//! [plugins.config]
//! database = "users"
//! ```
//!
//! # The query
//!
//! It is run with three values bound, never written into its text:
//! `:login` (the login, trimmed, its domain in lower case), `:local` (the
//! part before the last `@`, or the whole login) and `:domain` (the part
//! after, in lower case, or empty). It must use at least one of them. It
//! returns a column `password` (else its first column is taken) with the
//! stored hash, and optionally:
//!
//! - `login`, or `local` and `domain`: the login as stored. A row is
//!   taken only when it equals the login looked up, ignoring case (below);
//!   any other row is treated as an unknown login;
//! - `active`: the user may log in when it is true, a non-zero number, or
//!   `1`/`t`/`true`/`y`/`yes`/`on`; NULL or anything else is inactive;
//! - `senders`: the addresses (or `@domain`s) the user may send as, comma-
//!   or space-separated. After a successful login they are put in the
//!   connection note `auth.senders` (a list of texts) for a sender policy
//!   plugin to read; a NULL or missing column sets no note.
//!
//! The presets:
//!
//! | `preset` | Query |
//! |----------|-------|
//! | `default` | `SELECT login, password, active, senders FROM mailferry_users WHERE login = :login` (the table `mailferry user` manages) |
//! | `postfixadmin` | `mailbox.username AS login` and the mailbox's `password`, active when both the mailbox and its domain are, by `mailbox.username = :login` |
//! | `dovecot` | `SELECT userid AS local, domain, password FROM users WHERE userid = :local AND domain = :domain` (the `users` table of Dovecot's SQL documentation) |
//!
//! # The stored login
//!
//! The host counts failed logins and rate-limits per login, in lower case.
//! A database may compare more loosely than that: MySQL's and MariaDB's
//! accent-insensitive collations (`utf8mb4_general_ci`,
//! `utf8mb4_unicode_ci`, …) find `alice@example.org`'s row for
//! `álice@example.org` or `ALİCE@example.org`, and every `PAD SPACE`
//! collation ignores trailing spaces. Each spelling would have counters of
//! its own, so a password could be guessed under endless spellings of one
//! login. So a row counts only when its stored login, in lower case,
//! equals the login looked up, in lower case: with a `login` column, the
//! whole login; with `local` and `domain` columns, each part. Any other
//! row is treated exactly as an unknown login (dummy hash, `continue`)
//! and logged with both spellings. The presets return these columns; a
//! query that returns neither is trusted to compare exactly, so make yours
//! return `login` (or `local` and `domain`) unless its table compares
//! binary.
//!
//! Stored hashes are what the host's password capability verifies:
//! argon2id, bcrypt (`$2y$`, PostfixAdmin's `php_crypt:BLOWFISH`),
//! SHA512-CRYPT and SHA256-CRYPT, each optionally behind a Dovecot
//! `{SCHEME}` prefix (PostfixAdmin's `dovecot:SHA512-CRYPT`), `{PLAIN}`,
//! and, for databases that still hold it, MD5-CRYPT (`$1$`, PostfixAdmin's
//! old default `md5crypt`; weak: rehash such users).
//!
//! # Outcomes
//!
//! | Situation | Verdict |
//! |-----------|---------|
//! | Known, active login, right password | `accept`; `auth.senders` noted if the query returned senders |
//! | Known login, wrong password | `deny` 535 5.7.8 |
//! | Known login, inactive | `deny` 535 5.7.8, whatever the password (it is checked all the same, so timing tells nothing), logged |
//! | Unknown login | `continue` (after checking the dummy hash), so a later auth plugin may know it; the host answers 535 if none does |
//! | A row whose stored login is another spelling (or NULL) | as an unknown login, logged with both spellings |
//! | Login over 320 octets or with control characters | as an unknown login, without querying |
//! | Stored hash malformed, NULL or of an unknown scheme | `deny-soft` 454 4.7.0, logged |
//! | Database unreachable, slow, or the query failing | `deny-soft` 454 4.7.0, logged (the client tries again later) |
//!
//! Passwords and hashes are never logged.

use mailferry_plugin_sdk::{address, export_plugin, Host, Plugin, Scope, SqlRows, SqlValue, Verdict};
use serde::Deserialize;

/// Verified for unknown logins. The password it was made from was random
/// and thrown away, so nothing matches it.
const DEFAULT_DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$5pFblK3oUfhc5XXr/iN3yg$Mnbfhz1/1HQgZR6Br2s7OmtHXOqDHK75QsMrX0DtF8U";

/// The connection note that carries the senders a user may use.
pub const SENDERS_NOTE: &str = "auth.senders";

/// Longest login looked up (an address is at most 254 octets; some room
/// for odd logins). Longer ones are unknown without a query.
const MAX_LOGIN: usize = 320;

/// mailferry's own table (`mailferry user add`).
pub const DEFAULT_QUERY: &str = "SELECT login, password, active, senders FROM mailferry_users WHERE login = :login";

/// PostfixAdmin's `mailbox` and `domain` tables: a mailbox logs in only
/// while it and its domain are active. `AND` of the two works on MySQL's
/// TINYINT(1) and PostgreSQL's BOOLEAN columns alike.
pub const POSTFIXADMIN_QUERY: &str = "SELECT mailbox.username AS login, mailbox.password, \
CASE WHEN mailbox.active AND domain.active THEN 1 ELSE 0 END AS active \
FROM mailbox JOIN domain ON domain.domain = mailbox.domain \
WHERE mailbox.username = :login";

/// The `users` table of Dovecot's SQL authentication documentation
/// (`userid`, `domain`, `password`).
pub const DOVECOT_QUERY: &str =
    "SELECT userid AS local, domain, password FROM users WHERE userid = :local AND domain = :domain";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_database")]
    pub database: String,
    pub preset: Option<String>,
    pub query: Option<String>,
    pub lowercase: Option<bool>,
    #[serde(default = "default_dummy_hash")]
    pub dummy_hash: String,
}

fn default_database() -> String {
    "users".into()
}

fn default_dummy_hash() -> String {
    DEFAULT_DUMMY_HASH.into()
}

pub struct AuthSql {
    database: String,
    query: String,
    lowercase: bool,
    dummy_hash: String,
}

/// The values bound to the query's placeholders.
#[derive(Debug, PartialEq, Eq)]
struct Lookup {
    login: String,
    local: String,
    domain: String,
}

impl Lookup {
    /// `None` for a login no table should be asked about.
    fn new(login: &str, lowercase: bool) -> Option<Lookup> {
        let login = login.trim();
        if login.is_empty() || login.len() > MAX_LOGIN || login.chars().any(char::is_control) {
            return None;
        }
        let login = if lowercase { login.to_lowercase() } else { login.to_string() };
        let (local, domain) = match address::split(&login) {
            Some((local, domain)) => (local.to_string(), domain.to_lowercase()),
            None => (login.clone(), String::new()),
        };
        let login = if domain.is_empty() { login } else { format!("{local}@{domain}") };
        Some(Lookup { login, local, domain })
    }
}

impl Plugin for AuthSql {
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, String> {
        let query = match (config.preset.as_deref(), config.query) {
            (Some(_), Some(_)) => return Err("set either `preset` or `query`, not both".into()),
            (_, Some(query)) => query,
            (None | Some("default"), None) => DEFAULT_QUERY.to_string(),
            (Some("postfixadmin"), None) => POSTFIXADMIN_QUERY.to_string(),
            (Some("dovecot"), None) => DOVECOT_QUERY.to_string(),
            (Some(other), None) => {
                return Err(format!("preset = {other:?}: use \"default\", \"postfixadmin\" or \"dovecot\""));
            }
        };
        // A query without the login in it would find the same row for
        // everyone.
        if ![":login", ":local", ":domain"].iter().any(|p| query.contains(p)) {
            return Err("`query` must look the user up with :login, or :local and :domain".into());
        }
        let granted = host.sql_databases();
        if !granted.contains(&config.database) {
            return Err(format!(
                "database = {:?} is not granted to this plugin: add \"sql:{}\" to its grants (granted: {})",
                config.database,
                config.database,
                if granted.is_empty() { "none".to_string() } else { granted.join(", ") }
            ));
        }
        Ok(AuthSql {
            database: config.database,
            query,
            lowercase: config.lowercase.unwrap_or(config.preset.as_deref() == Some("postfixadmin")),
            dummy_hash: config.dummy_hash,
        })
    }

    fn auth(&self, host: &Host, _mechanism: &str, login: &str, password: &str) -> Verdict {
        let Some(lookup) = Lookup::new(login, self.lowercase) else {
            host.debug("login too long or with control characters: treated as unknown");
            return self.unknown(host, password);
        };
        let params = [
            ("login", SqlValue::from(lookup.login.as_str())),
            ("local", SqlValue::from(lookup.local.as_str())),
            ("domain", SqlValue::from(lookup.domain.as_str())),
        ];
        let rows = match host.sql_query(&self.database, &self.query, &params) {
            Ok(rows) => rows,
            Err(e) => {
                host.error(format!("cannot look up login {:?} in database {:?}: {e}", lookup.login, self.database));
                return temporary_failure();
            }
        };
        if rows.is_empty() {
            host.debug(format!("no user {:?} in database {:?}", lookup.login, self.database));
            return self.unknown(host, password);
        }
        let Some(row) = self.matching_row(host, &lookup, &rows) else {
            return self.unknown(host, password);
        };
        let password_column = rows.column("password").unwrap_or(0);
        let Some(stored) = rows.rows[row].get(password_column).and_then(SqlValue::as_str) else {
            host.error(format!("login {:?}: the stored password is NULL or not text", lookup.login));
            return temporary_failure();
        };
        let active = is_active(&rows, row);
        match host.verify_password(password, stored) {
            Ok(true) if active => {
                host.info(format!("login {:?} authenticated (database {:?})", lookup.login, self.database));
                if let Some(senders) = senders(&rows, row) {
                    host.set_note(Scope::Connection, SENDERS_NOTE, senders);
                }
                Verdict::accept()
            }
            Ok(right) => {
                if !active {
                    // Said only in the log: the client gets the same 535 as
                    // for a wrong password.
                    host.info(format!(
                        "login {:?} is inactive{}",
                        lookup.login,
                        if right { "" } else { " (and the password was wrong)" }
                    ));
                } else {
                    host.info(format!("wrong password for login {:?}", lookup.login));
                }
                Verdict::deny(535, "5.7.8", "authentication credentials invalid")
            }
            Err(e) => {
                host.error(format!("login {:?}: cannot verify the stored hash: {e}", lookup.login));
                temporary_failure()
            }
        }
    }
}

impl AuthSql {
    /// Same work as for a known login, so response time does not reveal
    /// which logins exist; the result is meaningless.
    fn unknown(&self, host: &Host, password: &str) -> Verdict {
        if let Err(e) = host.verify_password(password, &self.dummy_hash) {
            host.error(format!("dummy_hash cannot be verified: {e}"));
        }
        Verdict::Continue
    }

    /// The first row whose stored login is the one looked up (see "The
    /// stored login"); the first row when the query returns no stored
    /// login. `None`, logged, when every row is another spelling.
    fn matching_row(&self, host: &Host, lookup: &Lookup, rows: &SqlRows) -> Option<usize> {
        let stored: Vec<Stored> = (0..rows.len()).map(|row| Stored::of(rows, row)).collect();
        let found = stored.iter().position(|s| s.is(lookup));
        if rows.len() > 1 {
            host.warn(format!(
                "{} rows for login {:?} in database {:?}; {}",
                rows.len(),
                lookup.login,
                self.database,
                if found.is_some() { "the first of that login is used" } else { "none is of that login" }
            ));
        }
        if found.is_none() {
            let spellings: Vec<String> = stored.iter().map(Stored::describe).collect();
            // Info, as a wrong password is: someone may be trying spellings
            // of a login the database folds together.
            host.info(format!(
                "login {:?} found the row of {} in database {:?} (the database compares more loosely \
                 than mailferry): treated as an unknown login",
                lookup.login,
                spellings.join(", "),
                self.database
            ));
        }
        found
    }
}

/// The login a row says it belongs to.
enum Stored {
    /// The query returns no `login`, nor `local` and `domain`: not checked.
    Unchecked,
    Login(String),
    Parts {
        local: String,
        domain: String,
    },
    /// NULL or not text: matches nothing.
    Unreadable,
}

impl Stored {
    fn of(rows: &SqlRows, row: usize) -> Stored {
        let text = |column: &str| rows.get(row, column).map(|v| v.as_str().map(str::to_string));
        match (text("login"), text("local"), text("domain")) {
            (Some(Some(login)), _, _) => Stored::Login(login),
            (Some(None), _, _) => Stored::Unreadable,
            (None, Some(Some(local)), Some(Some(domain))) => Stored::Parts { local, domain },
            (None, Some(_), Some(_)) => Stored::Unreadable,
            _ => Stored::Unchecked,
        }
    }

    /// Equal ignoring case, as the host's counters key logins: anything a
    /// database folds beyond that (accents, trailing spaces) is another login.
    fn is(&self, lookup: &Lookup) -> bool {
        match self {
            Stored::Unchecked => true,
            Stored::Login(login) => login.to_lowercase() == lookup.login.to_lowercase(),
            Stored::Parts { local, domain } => {
                local.to_lowercase() == lookup.local.to_lowercase()
                    && domain.to_lowercase() == lookup.domain.to_lowercase()
            }
            Stored::Unreadable => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Stored::Unchecked => "a row".into(),
            Stored::Login(login) => format!("{login:?}"),
            Stored::Parts { local, domain } => format!("{local:?} at {domain:?}"),
            Stored::Unreadable => "a row whose stored login is NULL or not text".into(),
        }
    }
}

/// The row's `active` column; true when there is none.
fn is_active(rows: &SqlRows, row: usize) -> bool {
    match rows.get(row, "active") {
        None if rows.column("active").is_none() => true,
        None | Some(SqlValue::Null) => false,
        Some(SqlValue::Bool(b)) => *b,
        Some(SqlValue::Int(i)) => *i != 0,
        Some(SqlValue::Float(f)) => *f != 0.0,
        Some(v) => v
            .as_str()
            .is_some_and(|t| ["1", "t", "true", "y", "yes", "on"].iter().any(|yes| t.trim().eq_ignore_ascii_case(yes))),
    }
}

/// The row's `senders`, split; `None` when absent or NULL.
fn senders(rows: &SqlRows, row: usize) -> Option<Vec<String>> {
    let text = rows.get(row, "senders")?.as_str()?;
    Some(text.split([',', ' ', '\t', '\n', '\r']).filter(|s| !s.is_empty()).map(str::to_string).collect())
}

fn temporary_failure() -> Verdict {
    Verdict::deny_soft(454, "4.7.0", "temporary authentication failure")
}

export_plugin!(AuthSql);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use mailferry_plugin_sdk::testing::{SqlQuery, TestHost, TestPlugin};
    use mailferry_plugin_sdk::{Level, NoteValue, Reply, SqlError};

    use super::*;

    /// `$test$<password>` matches that password; the dummy hash nothing.
    fn verifier(password: &str, stored: &str) -> Result<bool, String> {
        if let Some(expected) = stored.strip_prefix("$test$") {
            return Ok(expected == password);
        }
        if stored.starts_with("$argon2id$") {
            return Ok(false);
        }
        Err("unknown password scheme".into())
    }

    type Table = Rc<RefCell<Vec<(String, Vec<SqlValue>)>>>;

    /// A test host whose database `users` answers from `table`: rows whose
    /// key equals the bound `:login`, compared exactly (SQLite, PostgreSQL,
    /// a `_bin` collation).
    fn setup(
        config: &str,
        columns: &'static [&'static str],
        rows: &[(&str, Vec<SqlValue>)],
    ) -> (TestHost, TestPlugin<AuthSql>) {
        setup_collated(config, columns, rows, str::to_string)
    }

    /// The same, with keys and `:login` compared after `fold`: a database
    /// collation.
    fn setup_collated(
        config: &str,
        columns: &'static [&'static str],
        rows: &[(&str, Vec<SqlValue>)],
        fold: fn(&str) -> String,
    ) -> (TestHost, TestPlugin<AuthSql>) {
        let table: Table = Rc::new(RefCell::new(rows.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()));
        let host = TestHost::new().config_toml(config).password_verifier(verifier).sql_database("users").sql(
            move |q: &SqlQuery| {
                let login = fold(q.param("login").and_then(SqlValue::as_str).unwrap_or_default());
                let found = table.borrow().iter().filter(|(k, _)| fold(k) == login).map(|(_, v)| v.clone()).collect();
                Ok(SqlRows::new(columns, found))
            },
        );
        let plugin = host.instantiate::<AuthSql>().unwrap();
        (host, plugin)
    }

    /// Roughly MariaDB's `utf8mb4_general_ci`: case and accents folded,
    /// trailing spaces ignored (`PAD SPACE`).
    fn general_ci(s: &str) -> String {
        s.trim_end_matches(' ')
            .chars()
            .map(|c| match c {
                'á' | 'à' | 'Á' | 'ä' => 'a',
                'İ' | 'ı' | 'í' => 'i',
                'é' | 'É' => 'e',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    }

    fn text(s: &str) -> SqlValue {
        SqlValue::Text(s.into())
    }

    const COLUMNS: &[&str] = &["login", "password", "active", "senders"];

    fn users() -> Vec<(&'static str, Vec<SqlValue>)> {
        let row = |login: &'static str, rest: Vec<SqlValue>| (login, [vec![text(login)], rest].concat());
        vec![
            row(
                "alice@example.org",
                vec![text("$test$wonderland"), SqlValue::Int(1), text("alice@example.org, @example.net")],
            ),
            row("bob@example.org", vec![text("$test$builder"), SqlValue::Bool(false), SqlValue::Null]),
            row("carol@example.org", vec![text("$md5$x"), SqlValue::Int(1), SqlValue::Null]),
            row("dave@example.org", vec![SqlValue::Null, SqlValue::Int(1), SqlValue::Null]),
        ]
    }

    fn deny_535() -> Option<Verdict> {
        Some(Verdict::deny(535, "5.7.8", "authentication credentials invalid"))
    }

    fn deny_454() -> Option<Verdict> {
        Some(Verdict::DenySoft(Some(Reply::new(454, "4.7.0", "temporary authentication failure"))))
    }

    #[test]
    fn right_password_accepts_and_notes_the_senders() {
        let (host, p) = setup("", COLUMNS, &users());
        assert_eq!(p.auth("PLAIN", "alice@Example.ORG", "wonderland"), Some(Verdict::accept()));
        assert_eq!(
            host.note(Scope::Connection, SENDERS_NOTE),
            Some(NoteValue::Texts(vec!["alice@example.org".into(), "@example.net".into()]))
        );
        let q = &host.sql_queries()[0];
        assert_eq!((q.database.as_str(), q.statement.as_str()), ("users", DEFAULT_QUERY));
        assert_eq!(q.param("login"), Some(&text("alice@example.org")));
        assert_eq!(q.param("local"), Some(&text("alice")));
        assert_eq!(q.param("domain"), Some(&text("example.org")));
        host.assert_logged(Level::Info, "login \"alice@example.org\" authenticated");
    }

    #[test]
    fn wrong_password_denies_and_sets_no_note() {
        let (host, p) = setup("", COLUMNS, &users());
        assert_eq!(p.auth("PLAIN", "alice@example.org", "looking-glass"), deny_535());
        assert_eq!(host.note(Scope::Connection, SENDERS_NOTE), None);
        assert!(!host.logs().iter().any(|r| r.message.contains("looking-glass") || r.message.contains("$test$")));
    }

    #[test]
    fn inactive_users_get_535_after_the_same_work() {
        let (host, p) = setup("", COLUMNS, &users());
        assert_eq!(p.auth("PLAIN", "bob@example.org", "builder"), deny_535());
        assert_eq!(p.auth("PLAIN", "bob@example.org", "wrong"), deny_535());
        assert_eq!(host.password_checks().len(), 2, "the password is checked either way");
        host.assert_logged(Level::Info, "login \"bob@example.org\" is inactive");
    }

    #[test]
    fn unknown_and_unusable_logins_check_the_dummy_hash_then_continue() {
        let (host, p) = setup("", COLUMNS, &users());
        assert_eq!(p.auth("PLAIN", "mallory@example.org", "guess"), Some(Verdict::Continue));
        for login in ["' OR 1=1 --", "x\0y", &"a".repeat(5000), "a\r\nb", ""] {
            assert_eq!(p.auth("PLAIN", login, "guess"), Some(Verdict::Continue), "{login:?}");
        }
        let checks = host.password_checks();
        assert_eq!(checks.len(), 6);
        assert!(checks.iter().all(|c| c.stored == DEFAULT_DUMMY_HASH));
        // Only the first two were worth a query; the injection attempt is just a value.
        let queries = host.sql_queries();
        assert_eq!(queries.len(), 2);
        assert_eq!(queries[1].param("login"), Some(&text("' OR 1=1 --")));
        assert_eq!(queries[1].statement, DEFAULT_QUERY);
    }

    #[test]
    fn unusable_hashes_and_database_errors_are_temporary_failures() {
        let (host, p) = setup("", COLUMNS, &users());
        assert_eq!(p.auth("PLAIN", "carol@example.org", "x"), deny_454());
        host.assert_logged(Level::Error, "cannot verify the stored hash");
        assert_eq!(p.auth("PLAIN", "dave@example.org", "x"), deny_454());
        host.assert_logged(Level::Error, "stored password is NULL");
        let host = TestHost::new()
            .password_verifier(verifier)
            .sql_database("users")
            .sql(|_| Err(SqlError { temporary: true, message: "no connection to the database in time".into() }));
        let p = host.instantiate::<AuthSql>().unwrap();
        assert_eq!(p.auth("PLAIN", "alice@example.org", "wonderland"), deny_454());
        host.assert_logged(Level::Error, "no connection to the database in time");
        assert!(host.password_checks().is_empty());
    }

    #[test]
    fn presets_and_their_placeholders() {
        let (host, p) = setup("preset = \"dovecot\"", &["local", "domain", "password"], &[]);
        assert_eq!(p.auth("PLAIN", "Eve@Example.org", "x"), Some(Verdict::Continue));
        let q = &host.sql_queries()[0];
        assert_eq!(q.statement, DOVECOT_QUERY);
        assert_eq!((q.param("local"), q.param("domain")), (Some(&text("Eve")), Some(&text("example.org"))));
        // PostfixAdmin stores logins in lower case: so are they looked up.
        let (host, p) = setup(
            "preset = \"postfixadmin\"",
            &["login", "password", "active"],
            &[("frank@example.org", vec![text("frank@example.org"), text("$test$pw"), SqlValue::Int(1)])],
        );
        assert_eq!(p.auth("PLAIN", "Frank@Example.org", "pw"), Some(Verdict::accept()));
        assert_eq!(host.sql_queries()[0].statement, POSTFIXADMIN_QUERY);
        assert_eq!(host.note(Scope::Connection, SENDERS_NOTE), None, "no senders column, no note");
        // A login without a domain.
        let (host, p) = setup("preset = \"dovecot\"", &["local", "domain", "password"], &[]);
        p.auth("PLAIN", "root", "x");
        let q = &host.sql_queries()[0];
        assert_eq!(
            (q.param("login"), q.param("local"), q.param("domain")),
            (Some(&text("root")), Some(&text("root")), Some(&text("")))
        );
    }

    #[test]
    fn other_spellings_a_collation_folds_together_are_unknown_logins() {
        let (host, p) = setup_collated("", COLUMNS, &users(), general_ci);
        for spelling in ["álice@example.org", "ALİCE@example.org", "alıce@example.org", "Álice@example.org"] {
            assert_eq!(p.auth("PLAIN", spelling, "wonderland"), Some(Verdict::Continue), "{spelling}");
            host.assert_logged(
                Level::Info,
                &format!("login {spelling:?} found the row of \"alice@example.org\" in database \"users\""),
            );
        }
        assert!(host.password_checks().iter().all(|c| c.stored == DEFAULT_DUMMY_HASH), "only the dummy hash");
        assert_eq!(host.note(Scope::Connection, SENDERS_NOTE), None);
        // Case alone is the same login to the host's counters: accepted.
        assert_eq!(p.auth("PLAIN", "ALICE@example.org", "wonderland"), Some(Verdict::accept()));
        assert_eq!(p.auth("PLAIN", "alice@example.org", "wonderland"), Some(Verdict::accept()));
        assert!(!host.logs().iter().any(|r| r.message.contains("wonderland")));
    }

    #[test]
    fn a_stored_login_with_trailing_spaces_is_another_login() {
        // PAD SPACE collations find "bob@example.org " for "bob@example.org".
        let rows =
            [("bob@example.org ", vec![text("bob@example.org "), text("$test$pw"), SqlValue::Int(1), SqlValue::Null])];
        let (host, p) = setup_collated("", COLUMNS, &rows, general_ci);
        assert_eq!(p.auth("PLAIN", "bob@example.org", "pw"), Some(Verdict::Continue));
        host.assert_logged(Level::Info, "found the row of \"bob@example.org \"");
    }

    #[test]
    fn among_several_rows_the_one_of_that_login_is_taken() {
        let rows = [
            ("alice@example.org", vec![text("alice@example.org"), text("$test$a"), SqlValue::Int(1), SqlValue::Null]),
            ("álice@example.org", vec![text("álice@example.org"), text("$test$b"), SqlValue::Int(1), SqlValue::Null]),
        ];
        let (host, p) = setup_collated("", COLUMNS, &rows, general_ci);
        assert_eq!(p.auth("PLAIN", "álice@example.org", "b"), Some(Verdict::accept()));
        assert_eq!(p.auth("PLAIN", "álice@example.org", "a"), deny_535());
        assert_eq!(p.auth("PLAIN", "alice@example.org", "a"), Some(Verdict::accept()));
        host.assert_logged(
            Level::Warn,
            "2 rows for login \"álice@example.org\" in database \"users\"; the first of that login is used",
        );
        assert_eq!(p.auth("PLAIN", "alíce@example.org", "a"), Some(Verdict::Continue));
        host.assert_logged(Level::Warn, "none is of that login");
    }

    #[test]
    fn local_and_domain_columns_are_compared_part_by_part() {
        let rows = [("dove@example.org", vec![text("dove"), text("Example.ORG"), text("$test$pw")])];
        let (host, p) = setup_collated("preset = \"dovecot\"", &["local", "domain", "password"], &rows, general_ci);
        assert_eq!(p.auth("PLAIN", "dove@example.org", "pw"), Some(Verdict::accept()));
        assert_eq!(p.auth("PLAIN", "DOVE@example.org", "pw"), Some(Verdict::accept()));
        assert_eq!(p.auth("PLAIN", "dové@example.org", "pw"), Some(Verdict::Continue));
        host.assert_logged(Level::Info, "login \"dové@example.org\" found the row of \"dove\" at \"Example.ORG\"");
    }

    #[test]
    fn a_null_stored_login_matches_nothing() {
        let rows = [("eve@example.org", vec![SqlValue::Null, text("$test$pw"), SqlValue::Int(1), SqlValue::Null])];
        let (host, p) = setup("", COLUMNS, &rows);
        assert_eq!(p.auth("PLAIN", "eve@example.org", "pw"), Some(Verdict::Continue));
        host.assert_logged(Level::Info, "a row whose stored login is NULL or not text");
        assert_eq!(host.password_checks()[0].stored, DEFAULT_DUMMY_HASH);
    }

    #[test]
    fn custom_query_with_other_column_names_and_active_spellings() {
        let rows = vec![
            ("a@x.org", vec![text("$test$a"), text("yes")]),
            ("b@x.org", vec![text("$test$b"), text("N")]),
            ("c@x.org", vec![text("$test$c"), SqlValue::Null]),
        ];
        let (_host, p) = setup(
            "query = \"SELECT pw AS hash, enabled AS Active FROM t WHERE name = :login\"",
            &["hash", "Active"],
            &rows,
        );
        assert_eq!(p.auth("PLAIN", "a@x.org", "a"), Some(Verdict::accept()), "first column, case-insensitive names");
        assert_eq!(p.auth("PLAIN", "b@x.org", "b"), deny_535());
        assert_eq!(p.auth("PLAIN", "c@x.org", "c"), deny_535(), "NULL is inactive");
        // No active column at all: active.
        let (_host, p) =
            setup("query = \"SELECT pw FROM t WHERE name = :login\"", &["pw"], &[("d@x.org", vec![text("$test$d")])]);
        assert_eq!(p.auth("PLAIN", "d@x.org", "d"), Some(Verdict::accept()));
    }

    #[test]
    fn configuration_errors() {
        let start = |config: &str| {
            TestHost::new().config_toml(config).sql_database("users").instantiate::<AuthSql>().map(|_| ()).unwrap_err()
        };
        assert!(start("preset = \"vpopmail\"").contains("\"postfixadmin\""));
        assert!(start("preset = \"dovecot\"\nquery = \"SELECT 1 WHERE :login\"").contains("not both"));
        assert!(start("query = \"SELECT password FROM users\"").contains("with :login"));
        assert!(start("database = \"other\"").contains("add \"sql:other\" to its grants (granted: users)"));
        assert!(start("databse = \"users\"").contains("databse"));
        let p = TestHost::new().sql_database("users").instantiate::<AuthSql>().unwrap();
        assert_eq!((p.plugin().query.as_str(), p.plugin().lowercase), (DEFAULT_QUERY, false));
        assert_eq!(p.plugin().dummy_hash, DEFAULT_DUMMY_HASH);
        assert_eq!(p.connect(), None);
        assert_eq!(p.mail("a@example.org"), None);
    }

    #[test]
    fn lookups() {
        let l = Lookup::new(" \"a@b\"@X.org ", false).unwrap();
        assert_eq!(l, Lookup { login: "\"a@b\"@x.org".into(), local: "\"a@b\"".into(), domain: "x.org".into() });
        assert_eq!(Lookup::new("A@X.org", true).unwrap().login, "a@x.org");
        assert_eq!(Lookup::new(&"a".repeat(MAX_LOGIN + 1), false), None);
    }
}
