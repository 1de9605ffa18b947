//! mailferry's own users table, for new installs that keep their users in
//! a database (`[databases.NAME]` with `migrate = true`): its schema, the
//! migrations that create and upgrade it, and what `mailferry user` does on
//! it. The `auth-sql` plugin's `default` preset reads it.
//!
//! ```sql
//! mailferry_users (
//!     login      -- primary key; the domain part in lower case
//!     password   -- a hash `mailferry hash-password` prints, or any scheme the host verifies
//!     active     -- 1/true: may log in
//!     senders    -- optional: comma-separated addresses (or @domain) the user may send as
//!     created_at, updated_at
//! )
//! ```
//!
//! The tables are prefixed `mailferry_` so they can share a database with
//! others (Dovecot's own `users` table, say). Migrations are numbered; the
//! applied ones are rows of `mailferry_schema`. Each is written so running it
//! twice does no harm, since `serve` and `mailferry user` may meet.

use super::{Database, Limits, QueryError, Value};
use crate::config::DatabaseKind;

pub const TABLE: &str = "mailferry_users";

/// One step of the schema, in each backend's dialect.
struct Migration {
    version: i64,
    description: &'static str,
    sqlite: &'static [&'static str],
    postgres: &'static [&'static str],
    mysql: &'static [&'static str],
}

const VERSION_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS mailferry_schema (version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)";
const VERSION_TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS mailferry_schema (version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())";
const VERSION_TABLE_MYSQL: &str = "CREATE TABLE IF NOT EXISTS mailferry_schema (version INT NOT NULL PRIMARY KEY, description VARCHAR(200) NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "mailferry_users: login, password, active, senders",
    sqlite: &["CREATE TABLE IF NOT EXISTS mailferry_users (
        login TEXT NOT NULL PRIMARY KEY,
        password TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        senders TEXT,
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"],
    postgres: &["CREATE TABLE IF NOT EXISTS mailferry_users (
        login TEXT NOT NULL PRIMARY KEY,
        password TEXT NOT NULL,
        active BOOLEAN NOT NULL DEFAULT TRUE,
        senders TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"],
    // utf8mb4_bin: logins compare exactly, as on the other backends.
    mysql: &["CREATE TABLE IF NOT EXISTS mailferry_users (
        login VARCHAR(255) NOT NULL PRIMARY KEY,
        password VARCHAR(255) NOT NULL,
        active TINYINT(1) NOT NULL DEFAULT 1,
        senders TEXT,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"],
}];

/// The schema version this build writes and reads.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn p(name: &str, v: Value) -> (String, Value) {
    (name.to_string(), v)
}

fn err(db: &Database, e: QueryError) -> String {
    format!("database {:?} ({}): {e}", db.name, db.config.kind.label())
}

/// Brings the schema up to date; returns the version it is at. A SQLite
/// file that does not exist yet is created, readable by its owner only.
pub async fn migrate(db: &Database) -> Result<i64, String> {
    // `serve` and `mailferry user` may migrate at the same moment, and
    // PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against that: the
    // loser fails on the catalog. Every step can be run again, so try again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match migrate_once(db).await {
            Err(e) if attempt < 3 => {
                tracing::debug!(database = %db.name, error = %e, "schema migration raced; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            other => return other,
        }
    }
}

async fn migrate_once(db: &Database) -> Result<i64, String> {
    if let DatabaseKind::Sqlite(path) = &db.config.kind {
        // Before a connection opens it: SQLite would create it with the
        // umask's mode, readable by all.
        super::create_private_file(path).map_err(|e| format!("database {:?}: {e}", db.name))?;
    }
    let create = match db.config.kind {
        DatabaseKind::Sqlite(_) => VERSION_TABLE_SQLITE,
        DatabaseKind::Postgres => VERSION_TABLE_POSTGRES,
        DatabaseKind::MySql => VERSION_TABLE_MYSQL,
    };
    db.query(create, &[]).await.map_err(|e| err(db, e))?;
    let mut current = current_version(db).await?;
    if current > latest_version() {
        return Err(format!(
            "database {:?} has schema version {current}, newer than this mailferry knows ({}): upgrade mailferry",
            db.name,
            latest_version()
        ));
    }
    let start = current;
    for m in MIGRATIONS.iter().filter(|m| m.version > start) {
        let statements = match db.config.kind {
            DatabaseKind::Sqlite(_) => m.sqlite,
            DatabaseKind::Postgres => m.postgres,
            DatabaseKind::MySql => m.mysql,
        };
        for sql in statements {
            db.query(sql, &[]).await.map_err(|e| err(db, e))?;
        }
        let recorded = db
            .query(
                "INSERT INTO mailferry_schema (version, description) VALUES (:version, :description)",
                &[p("version", Value::Int(m.version)), p("description", Value::Text(m.description.into()))],
            )
            .await;
        // Another process may have applied it at the same moment.
        if let Err(e) = recorded {
            if current_version(db).await? < m.version {
                return Err(err(db, e));
            }
        }
        tracing::info!(database = %db.name, version = m.version, "schema migration applied: {}", m.description);
        current = m.version;
    }
    Ok(current)
}

/// The schema version the database is at, without changing anything;
/// `Err` when it holds no `mailferry_schema` table (or cannot be reached).
pub async fn schema_version(db: &Database) -> Result<i64, String> {
    current_version(db).await
}

async fn current_version(db: &Database) -> Result<i64, String> {
    let r = db.query("SELECT MAX(version) AS v FROM mailferry_schema", &[]).await.map_err(|e| err(db, e))?;
    Ok(match r.rows.first().and_then(|row| row.first()) {
        Some(Value::Int(v)) => *v,
        _ => 0,
    })
}

/// The login as stored: surrounding blanks trimmed, the domain in lower
/// case (domains compare without regard to case; local parts do not). The
/// `auth-sql` plugin looks logins up the same way, split at the last `@`
/// outside quotes and lowered with Unicode rules, so a user added here with
/// a domain such as `BÜCHER.example` is found when logging in.
pub fn normalize_login(login: &str) -> String {
    let login = login.trim();
    match crate::mail::address::split_address(login) {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            format!("{local}@{}", domain.to_lowercase())
        }
        _ => login.to_string(),
    }
}

async fn exists(db: &Database, login: &str) -> Result<bool, String> {
    let r = db
        .query("SELECT login FROM mailferry_users WHERE login = :login", &[p("login", Value::Text(login.into()))])
        .await
        .map_err(|e| err(db, e))?;
    Ok(!r.rows.is_empty())
}

/// Adds a user (`mailferry user add`).
pub async fn add(db: &Database, login: &str, hash: &str) -> Result<(), String> {
    migrate(db).await?;
    let login = normalize_login(login);
    if exists(db, &login).await? {
        return Err(format!("user {login} already exists (use `mailferry user passwd {login}`)"));
    }
    db.query(
        "INSERT INTO mailferry_users (login, password) VALUES (:login, :password)",
        &[p("login", Value::Text(login)), p("password", Value::Text(hash.into()))],
    )
    .await
    .map_err(|e| err(db, e))?;
    Ok(())
}

/// Changes a user's stored hash (`mailferry user passwd`).
pub async fn set_password(db: &Database, login: &str, hash: &str) -> Result<(), String> {
    update(
        db,
        login,
        "UPDATE mailferry_users SET password = :password, updated_at = CURRENT_TIMESTAMP WHERE login = :login",
        p("password", Value::Text(hash.into())),
    )
    .await
}

/// Lets a user log in, or not (`mailferry user enable|disable`).
pub async fn set_active(db: &Database, login: &str, active: bool) -> Result<(), String> {
    update(
        db,
        login,
        "UPDATE mailferry_users SET active = :active, updated_at = CURRENT_TIMESTAMP WHERE login = :login",
        p("active", Value::Bool(active)),
    )
    .await
}

async fn update(db: &Database, login: &str, sql: &str, value: (String, Value)) -> Result<(), String> {
    migrate(db).await?;
    let login = normalize_login(login);
    // MySQL counts rows changed, not rows found: ask first.
    if !exists(db, &login).await? {
        return Err(format!("no user {login} in database {:?}", db.name));
    }
    db.query(sql, &[p("login", Value::Text(login)), value]).await.map_err(|e| err(db, e))?;
    Ok(())
}

/// Removes a user (`mailferry user remove`).
pub async fn remove(db: &Database, login: &str) -> Result<(), String> {
    migrate(db).await?;
    let login = normalize_login(login);
    let r = db
        .query("DELETE FROM mailferry_users WHERE login = :login", &[p("login", Value::Text(login.clone()))])
        .await
        .map_err(|e| err(db, e))?;
    if r.affected == 0 {
        return Err(format!("no user {login} in database {:?}", db.name));
    }
    Ok(())
}

/// One user as `mailferry user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub login: String,
    /// The hash's scheme, or "unusable hash".
    pub scheme: String,
    pub active: bool,
}

/// Every user, by login.
pub async fn list(db: &Database) -> Result<Vec<Listed>, String> {
    migrate(db).await?;
    // The command prints every user: no plugin-sized limit here.
    let limits = Limits { rows: usize::MAX, bytes: usize::MAX };
    let r = db
        .query_limited("SELECT login, password, active FROM mailferry_users ORDER BY login", &[], limits)
        .await
        .map_err(|e| err(db, e))?;
    Ok(r.rows
        .iter()
        .map(|row| {
            let login = row.first().and_then(Value::as_str).unwrap_or_default().to_string();
            let stored = row.get(1).and_then(Value::as_str).unwrap_or_default();
            let scheme = match crate::password::identify(stored) {
                Ok((s, _)) => format!("{s:?}").to_lowercase(),
                Err(_) => "unusable hash".into(),
            };
            let active =
                matches!(row.get(2), Some(Value::Bool(true))) || matches!(row.get(2), Some(Value::Int(i)) if *i != 0);
            Listed { login, scheme, active }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config;

    #[test]
    fn logins_keep_their_local_part_and_lower_their_domain() {
        assert_eq!(normalize_login(" Alice@Example.ORG "), "Alice@example.org");
        assert_eq!(normalize_login("root"), "root");
        assert_eq!(normalize_login("\"a@b\"@X.org"), "\"a@b\"@x.org");
        // Unicode lower case, as auth-sql looks the login up.
        assert_eq!(normalize_login("Jörg@BÜCHER.Example"), "Jörg@bücher.example");
        assert_eq!(normalize_login("u@ÉXAMPLE.ORG"), "u@éxample.org");
        // What auth-sql does not split, it does not change either.
        assert_eq!(normalize_login("\"x@Y\""), "\"x@Y\"");
        assert_eq!(normalize_login("@EXAMPLE.org"), "@EXAMPLE.org");
    }

    #[tokio::test]
    async fn sqlite_file_is_private_and_the_commands_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/users.db");
        let db = Database::new(
            "users",
            config::Database {
                kind: DatabaseKind::Sqlite(path.clone()),
                url: path.display().to_string(),
                password: None,
                max_connections: 2,
                query_timeout: Duration::from_secs(5),
                max_rows: 10,
                max_result_bytes: 1 << 20,
                migrate: true,
            },
        );
        assert_eq!(migrate(&db).await.unwrap(), latest_version());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // Twice is harmless.
        assert_eq!(migrate(&db).await.unwrap(), latest_version());
        add(&db, "Bob@Example.com", "{PLAIN}x").await.unwrap();
        assert!(add(&db, "Bob@example.COM", "{PLAIN}y").await.unwrap_err().contains("already exists"));
        set_password(&db, "Bob@example.com", "$6$salt$abc").await.unwrap();
        set_active(&db, "Bob@example.com", false).await.unwrap();
        assert!(set_password(&db, "bob@example.com", "x").await.unwrap_err().contains("no user"));
        assert_eq!(
            list(&db).await.unwrap(),
            [Listed { login: "Bob@example.com".into(), scheme: "sha512crypt".into(), active: false }]
        );
        remove(&db, "Bob@EXAMPLE.com").await.unwrap();
        assert!(remove(&db, "Bob@example.com").await.unwrap_err().contains("no user"));
        assert!(list(&db).await.unwrap().is_empty());
    }
}
