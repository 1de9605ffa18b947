//! The `sql` host capability: connection pools the host owns, one per
//! `[databases.NAME]` (SQLite, PostgreSQL, MySQL/MariaDB), on which plugins
//! run parameterised statements.
//!
//! A plugin sends SQL text with `:name` placeholders and the values apart;
//! [`placeholders`] turns the names into the backend's syntax and the values
//! are bound, never written into the text. Every statement is bounded: one
//! timeout covers waiting for a connection and running it, and at most
//! `max_rows` rows and `max_result_bytes` octets are read back; past either
//! limit the connection is closed rather than drained. Errors come back as
//! a message and a `temporary` flag (the database was unreachable, busy or
//! slow, versus a mistake in the statement), without the URL or password.
//!
//! Pools are created on first use, inside the server's runtime, and connect
//! lazily: a database that is down at start does not stop the server, and
//! the first query after it comes back connects again.

pub mod placeholders;
pub mod users;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Decode, Either, Executor, Row, TypeInfo, ValueRef};

use crate::config::{self, DatabaseKind};
use placeholders::Dialect;

/// A value bound to a placeholder or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

impl Value {
    /// Octets it takes, for the result-size limit.
    fn size(&self) -> usize {
        match self {
            Value::Text(t) => t.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// What a statement returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub affected: u64,
}

/// Why a statement failed, as the plugin is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub temporary: bool,
    pub message: String,
}

impl QueryError {
    fn permanent(message: impl Into<String>) -> QueryError {
        QueryError { temporary: false, message: message.into() }
    }

    fn temporary(message: impl Into<String>) -> QueryError {
        QueryError { temporary: true, message: message.into() }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for QueryError {}

/// Longest statement a plugin may send.
pub const MAX_STATEMENT: usize = 64 * 1024;
/// Most parameters of one statement.
pub const MAX_PARAMS: usize = 64;
/// Largest text or binary parameter.
pub const MAX_PARAM: usize = 64 * 1024;

/// Every configured database, by name.
#[derive(Default)]
pub struct Databases {
    by_name: BTreeMap<String, Arc<Database>>,
}

impl Databases {
    /// The configured databases. Those whose settings did not change since
    /// `previous` (a configuration reload) keep their pool and connections.
    pub fn from_config(config: &config::Config, previous: Option<&Databases>) -> Databases {
        let by_name = config
            .databases
            .iter()
            .map(|(name, db)| {
                let kept = previous.and_then(|p| p.by_name.get(name)).filter(|old| old.config == *db);
                let db = kept.cloned().unwrap_or_else(|| Arc::new(Database::new(name, db.clone())));
                (name.clone(), db)
            })
            .collect();
        Databases { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Database>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Database>> {
        self.by_name.values()
    }
}

/// One database: its settings and, once used, its pool.
pub struct Database {
    pub name: String,
    pub config: config::Database,
    pool: OnceLock<Result<Pool, String>>,
}

#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// Checks a PostgreSQL or MySQL URL as the pool will read it (at
/// configuration load, so `mailferry check` reports it).
pub fn check_url(kind: &DatabaseKind, url: &str) -> Result<(), String> {
    // The parsers' messages say what is wrong without repeating the URL.
    match kind {
        DatabaseKind::Postgres => PgConnectOptions::from_str(url).map(drop).map_err(|e| e.to_string()),
        DatabaseKind::MySql => MySqlConnectOptions::from_str(url).map(drop).map_err(|e| e.to_string()),
        DatabaseKind::Sqlite(_) => Ok(()),
    }
}

impl Database {
    pub fn new(name: &str, config: config::Database) -> Database {
        Database { name: name.to_string(), config, pool: OnceLock::new() }
    }

    pub fn dialect(&self) -> Dialect {
        match self.config.kind {
            DatabaseKind::Sqlite(_) => Dialect::Sqlite,
            DatabaseKind::Postgres => Dialect::Postgres,
            DatabaseKind::MySql => Dialect::MySql,
        }
    }

    /// The pool, created on first use (inside a tokio runtime); it
    /// connects lazily.
    pub fn pool(&self) -> Result<&Pool, QueryError> {
        self.pool
            .get_or_init(|| build_pool(&self.config))
            .as_ref()
            .map_err(|e| QueryError::temporary(format!("database {:?}: {e}", self.name)))
    }

    /// Runs one statement for a plugin, within the database's limits.
    pub async fn query(&self, statement: &str, params: &[(String, Value)]) -> Result<RowSet, QueryError> {
        let limits = Limits { rows: self.config.max_rows, bytes: self.config.max_result_bytes };
        self.query_limited(statement, params, limits).await
    }

    /// [`Database::query`] with other limits on the result.
    pub async fn query_limited(
        &self,
        statement: &str,
        params: &[(String, Value)],
        limits: Limits,
    ) -> Result<RowSet, QueryError> {
        if statement.len() > MAX_STATEMENT {
            return Err(QueryError::permanent(format!("the statement is over {MAX_STATEMENT} octets")));
        }
        if params.len() > MAX_PARAMS {
            return Err(QueryError::permanent(format!("more than {MAX_PARAMS} parameters")));
        }
        if let Some((name, _)) = params.iter().find(|(_, v)| v.size() > MAX_PARAM) {
            return Err(QueryError::permanent(format!("the value of :{name} is over {MAX_PARAM} octets")));
        }
        let value_of = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let rewritten = placeholders::rewrite(statement, self.dialect(), |n| value_of(n).is_some())
            .map_err(QueryError::permanent)?;
        let values: Vec<&Value> = rewritten.binds.iter().filter_map(|n| value_of(n)).collect();
        run(self.pool()?, &rewritten.sql, &values, limits, self.config.query_timeout).await
    }
}

/// How much of a result is read.
#[derive(Clone, Copy)]
pub struct Limits {
    pub rows: usize,
    pub bytes: usize,
}

/// Builds the pool for `config`. A missing SQLite file is not created here
/// (it would be, readable by all): only [`users::migrate`] creates one.
pub fn build_pool(config: &config::Database) -> Result<Pool, String> {
    // A query waits for a connection at most its whole timeout; connections
    // idle for a minute are closed, so a database restarted meanwhile costs
    // no failed query.
    let idle = Some(Duration::from_secs(60));
    Ok(match &config.kind {
        DatabaseKind::Sqlite(path) => {
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(false)
                .busy_timeout(config.query_timeout)
                .disable_statement_logging();
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.query_timeout)
                    .idle_timeout(idle)
                    .connect_lazy_with(options),
            )
        }
        DatabaseKind::Postgres => {
            let mut options = PgConnectOptions::from_str(&config.url).map_err(|e| e.to_string())?;
            if let Some(password) = &config.password {
                options = options.password(password);
            }
            // The server stops a statement the host has given up on.
            let ms = config.query_timeout.as_millis().to_string();
            let options = options.options([("statement_timeout", ms.as_str())]).disable_statement_logging();
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.query_timeout)
                    .idle_timeout(idle)
                    .connect_lazy_with(options),
            )
        }
        DatabaseKind::MySql => {
            let mut options = MySqlConnectOptions::from_str(&config.url).map_err(|e| e.to_string())?;
            if let Some(password) = &config.password {
                options = options.password(password);
            }
            Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.query_timeout)
                    .idle_timeout(idle)
                    .connect_lazy_with(options.disable_statement_logging()),
            )
        }
    })
}

/// Creates `path` empty with mode 0600 unless it exists: it holds password
/// hashes.
pub(crate) fn create_private_file(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// Runs `sql` (already in the backend's syntax) with `values` bound in
/// order, reading at most `limits`, all within `timeout`.
pub async fn run(
    pool: &Pool,
    sql: &str,
    values: &[&Value],
    limits: Limits,
    timeout: Duration,
) -> Result<RowSet, QueryError> {
    let deadline = Instant::now() + timeout;
    let late = || {
        QueryError::temporary(format!(
            "no answer within {} ms (the database is down, unreachable or overloaded, or every connection is busy)",
            timeout.as_millis()
        ))
    };
    // `sql` comes from the plugin's code or configuration, never from a
    // client: client data only ever travels in `values`, which are bound.
    let sql = AssertSqlSafe(sql.to_string());
    macro_rules! on {
        ($pool:expr, $db:ty, $bind:ident, $decode:ident) => {{
            let mut conn = match tokio::time::timeout_at(deadline.into(), $pool.acquire()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(classify(&e)),
                Err(_) => return Err(late()),
            };
            let mut query = sqlx::query::<$db>(sql);
            for v in values {
                query = $bind(query, v);
            }
            let read = async {
                let mut out = RowSet::default();
                let mut size = 0usize;
                let mut stream = (&mut *conn).fetch_many(query);
                while let Some(item) = stream.try_next().await.map_err(|e| Outcome::Failed(classify(&e)))? {
                    match item {
                        Either::Left(done) => out.affected += done.rows_affected(),
                        Either::Right(row) => {
                            if out.rows.len() == limits.rows {
                                return Err(Outcome::Limit(format!(
                                    "more than {} rows (max_rows); narrow the query or add LIMIT",
                                    limits.rows
                                )));
                            }
                            if out.columns.is_empty() {
                                out.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
                            }
                            let mut values = Vec::with_capacity(row.len());
                            for i in 0..row.len() {
                                let value = $decode(&row, i).map_err(|e| Outcome::Failed(QueryError::permanent(e)))?;
                                size += value.size();
                                values.push(value);
                            }
                            if size > limits.bytes {
                                return Err(Outcome::Limit(format!(
                                    "the result is over {} octets (max_result_bytes); select fewer or shorter columns",
                                    limits.bytes
                                )));
                            }
                            out.rows.push(values);
                        }
                    }
                }
                Ok(out)
            };
            let outcome = tokio::time::timeout_at(deadline.into(), read).await;
            match outcome {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(Outcome::Failed(e))) => Err(e),
                Ok(Err(Outcome::Limit(message))) => {
                    // Rows are still coming: drop the connection rather than
                    // read the rest of a large result.
                    conn.close_on_drop();
                    Err(QueryError::permanent(message))
                }
                Err(_) => {
                    // Mid-statement: its state is unknown.
                    conn.close_on_drop();
                    Err(late())
                }
            }
        }};
    }
    match pool {
        Pool::Sqlite(p) => on!(p, Sqlite, bind_sqlite, decode_sqlite),
        Pool::Postgres(p) => on!(p, Postgres, bind_pg, decode_pg),
        Pool::MySql(p) => on!(p, MySql, bind_mysql, decode_mysql),
    }
}

enum Outcome {
    Failed(QueryError),
    Limit(String),
}

type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

macro_rules! binder {
    ($name:ident, $db:ty) => {
        fn $name<'q>(q: Query<'q, $db>, v: &Value) -> Query<'q, $db> {
            match v {
                // A typeless NULL does not exist in the protocols; text is
                // what compares with most columns.
                Value::Null => q.bind(None::<String>),
                Value::Int(i) => q.bind(*i),
                Value::Float(f) => q.bind(*f),
                Value::Text(t) => q.bind(t.clone()),
                Value::Bytes(b) => q.bind(b.clone()),
                Value::Bool(b) => q.bind(*b),
            }
        }
    };
}

binder!(bind_sqlite, Sqlite);
binder!(bind_pg, Postgres);
binder!(bind_mysql, MySql);

fn unsupported(row: &impl Row, i: usize, type_name: &str) -> String {
    let column = row.columns().get(i).map(|c| c.name().to_string()).unwrap_or_default();
    format!(
        "column {column:?} has type {type_name}, which the sql capability does not return; cast it to text in the statement: CAST({column} AS TEXT), or AS CHAR on MySQL"
    )
}

fn decode<'r, T: Decode<'r, DB>, DB: sqlx::Database>(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<T, String> {
    T::decode(value).map_err(|e| format!("cannot read a value: {e}"))
}

fn decode_sqlite(row: &sqlx::sqlite::SqliteRow, i: usize) -> Result<Value, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // SQLite types values, not columns: read what the value is.
    let type_name = raw.type_info().name().to_string();
    Ok(match type_name.as_str() {
        "INTEGER" | "BOOLEAN" => Value::Int(decode::<i64, Sqlite>(raw)?),
        "REAL" => Value::Float(decode::<f64, Sqlite>(raw)?),
        "TEXT" => Value::Text(decode::<String, Sqlite>(raw)?),
        "BLOB" => Value::Bytes(decode::<Vec<u8>, Sqlite>(raw)?),
        other => return Err(unsupported(row, i, other)),
    })
}

fn decode_pg(row: &sqlx::postgres::PgRow, i: usize) -> Result<Value, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_string();
    Ok(match type_name.as_str() {
        "BOOL" => Value::Bool(decode::<bool, Postgres>(raw)?),
        "INT2" => Value::Int(decode::<i16, Postgres>(raw)?.into()),
        "INT4" => Value::Int(decode::<i32, Postgres>(raw)?.into()),
        "INT8" => Value::Int(decode::<i64, Postgres>(raw)?),
        "FLOAT4" => Value::Float(decode::<f32, Postgres>(raw)?.into()),
        "FLOAT8" => Value::Float(decode::<f64, Postgres>(raw)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "\"CHAR\"" | "UNKNOWN" | "CITEXT" | "citext" => {
            Value::Text(decode::<String, Postgres>(raw)?)
        }
        "BYTEA" => Value::Bytes(decode::<Vec<u8>, Postgres>(raw)?),
        other => return Err(unsupported(row, i, other)),
    })
}

fn decode_mysql(row: &sqlx::mysql::MySqlRow, i: usize) -> Result<Value, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_string();
    Ok(match type_name.as_str() {
        // MySQL has no boolean: BOOLEAN is TINYINT(1) and may hold 2..127.
        "BOOLEAN" | "TINYINT" => Value::Int(decode::<i8, MySql>(raw)?.into()),
        "SMALLINT" => Value::Int(decode::<i16, MySql>(raw)?.into()),
        "INT" | "MEDIUMINT" => Value::Int(decode::<i32, MySql>(raw)?.into()),
        "BIGINT" => Value::Int(decode::<i64, MySql>(raw)?),
        "TINYINT UNSIGNED" => Value::Int(decode::<u8, MySql>(raw)?.into()),
        "SMALLINT UNSIGNED" => Value::Int(decode::<u16, MySql>(raw)?.into()),
        "INT UNSIGNED" | "MEDIUMINT UNSIGNED" => Value::Int(decode::<u32, MySql>(raw)?.into()),
        "BIGINT UNSIGNED" => {
            let v = decode::<u64, MySql>(raw)?;
            Value::Int(i64::try_from(v).map_err(|_| format!("{v} does not fit a signed 64-bit integer"))?)
        }
        "FLOAT" => Value::Float(decode::<f32, MySql>(raw)?.into()),
        "DOUBLE" => Value::Float(decode::<f64, MySql>(raw)?),
        // Sent as text in the binary protocol too.
        "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" | "DECIMAL" | "JSON" => {
            Value::Text(decode::<String, MySql>(raw)?)
        }
        "VARBINARY" | "BINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            Value::Bytes(decode::<Vec<u8>, MySql>(raw)?)
        }
        other => return Err(unsupported(row, i, other)),
    })
}

/// The error a plugin is told, and whether trying again later may help.
/// Mistakes in the statement (syntax, unknown table or column, bad data,
/// constraints) are permanent; everything about reaching or using the
/// database (refused connections, TLS, authentication, locks, shutdowns,
/// overload) is temporary, so mail is deferred rather than refused while an
/// operator fixes it.
pub fn classify(e: &sqlx::Error) -> QueryError {
    use sqlx::Error as E;
    match e {
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let permanent = match db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // SQLite: the primary result code (low byte of the extended one).
                Some(_) => {
                    let primary = code.parse::<i32>().unwrap_or(0) & 0xff;
                    // ERROR (syntax, no such table), CONSTRAINT, MISMATCH, TOOBIG, RANGE.
                    matches!(primary, 1 | 18 | 19 | 20 | 25)
                }
                // PostgreSQL SQLSTATEs, and MySQL's where it has one.
                None => ["42", "22", "23", "0A", "21"].iter().any(|class| code.starts_with(class)),
            };
            let message = format!("{} ({})", db.message(), if code.is_empty() { "no code" } else { &code });
            QueryError { temporary: !permanent, message }
        }
        E::Io(io) => QueryError::temporary(format!("cannot reach the database: {io}")),
        E::Tls(t) => QueryError::temporary(format!("TLS with the database failed: {t}")),
        E::PoolTimedOut => QueryError::temporary(
            "no connection to the database in time (it is down or unreachable, or every connection is busy)",
        ),
        E::PoolClosed | E::WorkerCrashed | E::Protocol(_) | E::Configuration(_) => {
            QueryError::temporary(format!("database connection failed: {e}"))
        }
        E::ColumnDecode { .. } | E::Decode(_) | E::Encode(_) | E::TypeNotFound { .. } => {
            QueryError::permanent(e.to_string())
        }
        other => QueryError::temporary(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_db(dir: &std::path::Path, max_rows: usize, max_result_bytes: usize) -> Database {
        Database::new(
            "t",
            config::Database {
                kind: DatabaseKind::Sqlite(dir.join("t.db")),
                url: dir.join("t.db").display().to_string(),
                password: None,
                max_connections: 2,
                query_timeout: Duration::from_secs(2),
                max_rows,
                max_result_bytes,
                migrate: false,
            },
        )
    }

    fn p(name: &str, v: impl Into<Value>) -> (String, Value) {
        (name.to_string(), v.into())
    }

    impl From<&str> for Value {
        fn from(v: &str) -> Value {
            Value::Text(v.to_string())
        }
    }

    impl From<i64> for Value {
        fn from(v: i64) -> Value {
            Value::Int(v)
        }
    }

    #[tokio::test]
    async fn sqlite_values_limits_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_db(dir.path(), 3, 2048);
        // The file does not exist: temporary, like a database that is down.
        let e = db.query("SELECT 1", &[]).await.unwrap_err();
        assert!(e.temporary, "{e:?}");
        std::fs::write(dir.path().join("t.db"), b"").unwrap();
        let db = sqlite_db(dir.path(), 3, 2048);
        db.query("CREATE TABLE t (a INTEGER, b TEXT, c REAL, d BLOB)", &[]).await.unwrap();
        for i in 0..4i64 {
            let r = db
                .query(
                    "INSERT INTO t VALUES (:i, :s, 1.5, :bytes)",
                    &[p("i", i), p("s", "x'; DROP TABLE t; --"), ("bytes".into(), Value::Bytes(vec![0, 1]))],
                )
                .await
                .unwrap();
            assert_eq!(r.affected, 1);
        }
        let r = db.query("SELECT a, b, c, d, NULL AS e FROM t WHERE a = :i OR a = :i + 1", &[p("i", 1)]).await.unwrap();
        assert_eq!(r.columns, ["a", "b", "c", "d", "e"]);
        assert_eq!(
            r.rows[0],
            vec![
                Value::Int(1),
                Value::Text("x'; DROP TABLE t; --".into()),
                Value::Float(1.5),
                Value::Bytes(vec![0, 1]),
                Value::Null
            ]
        );
        assert_eq!(r.rows.len(), 2);
        // Over max_rows: an error, not a shorter answer.
        let e = db.query("SELECT a FROM t", &[]).await.unwrap_err();
        assert!(!e.temporary && e.message.contains("more than 3 rows"), "{e:?}");
        let e = db.query("SELECT :big || :big AS x", &[p("big", "y".repeat(1500).as_str())]).await.unwrap_err();
        assert!(e.message.contains("over 2048 octets"), "{e:?}");
        // Statement mistakes are permanent and say why.
        let e = db.query("SELECT nope FROM t", &[]).await.unwrap_err();
        assert!(!e.temporary && e.message.contains("no such column"), "{e:?}");
        let e = db.query("SELECT a FROM t WHERE a = :missing", &[]).await.unwrap_err();
        assert!(e.message.contains(":missing"), "{e:?}");
        let e = db.query("SELECT 1; DELETE FROM t", &[]).await.unwrap_err();
        assert!(e.message.contains("one statement"), "{e:?}");
        assert_eq!(db.query("SELECT count(*) AS n FROM t", &[]).await.unwrap().rows[0], vec![Value::Int(4)]);
    }

    #[test]
    fn classification() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(classify(&io).temporary);
        assert!(classify(&sqlx::Error::PoolTimedOut).temporary);
        assert!(!classify(&sqlx::Error::Decode("x".into())).temporary);
    }
}
