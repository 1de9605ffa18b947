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
//! The database itself also gives up on a statement the host gave up on:
//! PostgreSQL through `statement_timeout`, MariaDB `max_statement_time`,
//! MySQL `max_execution_time` (SELECT only), each [`SERVER_GRACE`] later
//! so the host's timeout always answers first, and SQLite through a
//! progress handler that interrupts it at the deadline. Plugins cannot undo
//! these settings: [`placeholders`] refuses `SET`, `RESET` and their kin. A
//! MySQL or MariaDB too old to have the setting is served without it
//! (logged once). SQLite runs inside this
//! process, so each of its connections is also confined: no ATTACH (no other
//! file), and no value longer than `max_result_bytes` (SQLite refuses to
//! build one, `randomblob(500000000)` included). Every value's length is
//! checked before it is copied; PostgreSQL and MySQL still send a row whole,
//! so one value up to their own limits (1 GB; `max_allowed_packet`) is
//! held while it is checked.
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
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgValueFormat, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
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

/// How much later than the host the servers stop a statement. Their
/// clocks start when the statement does, after the host's (which counts
/// the wait for a connection too), but timers are not exact, and MariaDB's
/// SLEEP() and BENCHMARK() stopped by its limit return a value rather than
/// an error: a plugin must get the host's timeout, never that value.
pub const SERVER_GRACE: Duration = Duration::from_millis(250);

/// SQLite virtual-machine steps between two looks at the deadline: often
/// enough to stop within a millisecond or so, rarely enough to cost nothing.
const PROGRESS_STEPS: i32 = 1000;

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
            let max_length = sqlite_max_length(config.max_result_bytes);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.query_timeout)
                    .idle_timeout(idle)
                    .after_connect(move |conn, _| Box::pin(sqlite_confine(conn, max_length)))
                    .connect_lazy_with(options),
            )
        }
        DatabaseKind::Postgres => {
            let mut options = PgConnectOptions::from_str(&config.url).map_err(|e| e.to_string())?;
            if let Some(password) = &config.password {
                options = options.password(password);
            }
            // The server stops a statement the host has given up on. Strings
            // are read as `placeholders` reads them: a backslash is plain
            // text outside E'…' (the default since 9.1, pinned here).
            let ms = (config.query_timeout + SERVER_GRACE).as_millis().to_string();
            let options = options
                .options([("statement_timeout", ms.as_str()), ("standard_conforming_strings", "on")])
                .disable_statement_logging();
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
            let timeout = config.query_timeout + SERVER_GRACE;
            Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.query_timeout)
                    .idle_timeout(idle)
                    .after_connect(move |conn, _| Box::pin(mysql_session(conn, timeout)))
                    .connect_lazy_with(options.disable_statement_logging()),
            )
        }
    })
}

/// The longest string or blob a SQLite connection may build or read:
/// `max_result_bytes`, but never below the longest parameter a plugin may
/// bind.
fn sqlite_max_length(max_result_bytes: usize) -> i32 {
    max_result_bytes.max(MAX_PARAM).min(i32::MAX as usize) as i32
}

/// Confines a new SQLite connection, in SQLite itself rather than only in
/// the text check of [`placeholders`]: no database may be attached (SQLite
/// would open any file the server can read, or create one; `VACUUM INTO`
/// attaches too), and no value may be longer than `max_length` (SQLite
/// refuses with "string or blob too big" before allocating it).
async fn sqlite_confine(conn: &mut SqliteConnection, max_length: i32) -> Result<(), sqlx::Error> {
    use libsqlite3_sys::{sqlite3_limit, SQLITE_LIMIT_ATTACHED, SQLITE_LIMIT_LENGTH};
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is this connection's open handle, and the lock keeps its
    // worker thread off it meanwhile; sqlite3_limit only sets a field.
    unsafe {
        sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
        sqlite3_limit(db, SQLITE_LIMIT_LENGTH, max_length);
    }
    Ok(())
}

/// Makes SQLite interrupt the next statement on `conn` once `deadline`
/// passes. SQLite computes on the connection's own thread: without this, a
/// statement the host gave up on would go on burning a core (and holding
/// its locks) to the end. Every statement on these pools goes through
/// [`run`], which sets it anew first.
async fn sqlite_deadline(conn: &mut SqliteConnection, deadline: Instant) -> Result<(), sqlx::Error> {
    conn.lock_handle().await?.set_progress_handler(PROGRESS_STEPS, move || Instant::now() < deadline);
    Ok(())
}

/// PostgreSQL and MySQL stop statements themselves (session settings made
/// at connect).
async fn server_side_deadline<C>(_: &mut C, _: Instant) -> Result<(), sqlx::Error> {
    Ok(())
}

/// Sets up a new MySQL or MariaDB session: the server stops statements
/// past `timeout` (the host's plus [`SERVER_GRACE`]; MariaDB: any
/// statement, in seconds; MySQL: SELECT only, in milliseconds), and
/// `sql_mode` reads text as [`placeholders`] does (see [`mysql_sql_mode`]).
async fn mysql_session(conn: &mut MySqlConnection, timeout: Duration) -> Result<(), sqlx::Error> {
    let row = sqlx::query("SELECT @@version, @@sql_mode").fetch_one(&mut *conn).await?;
    // Read unchecked: the servers type these as text or binary strings.
    let version: String = row.try_get_unchecked(0)?;
    let mode: String = row.try_get_unchecked(1)?;
    if version.contains("MariaDB") {
        mysql_server_timeout(conn, "max_statement_time", &format!("{:.3}", timeout.as_secs_f64())).await?;
    } else {
        mysql_server_timeout(conn, "max_execution_time", &timeout.as_millis().to_string()).await?;
    }
    if let Some(mode) = mysql_sql_mode(&mode).map_err(|e| sqlx::Error::Configuration(e.into()))? {
        conn.execute(AssertSqlSafe(format!("SET SESSION sql_mode = '{mode}'"))).await?;
    }
    Ok(())
}

/// Sets the server-side statement timeout `name` (one of two fixed names;
/// `value` is a number the host wrote). Servers older than the setting
/// (MySQL before 5.7.8, MariaDB before 10.1) answer "unknown system
/// variable": they still serve, with the host's timeout alone, and say so
/// once in the log rather than fail every connection.
async fn mysql_server_timeout(conn: &mut MySqlConnection, name: &str, value: &str) -> Result<(), sqlx::Error> {
    match conn.execute(AssertSqlSafe(format!("SET SESSION {name} = {value}"))).await {
        Err(sqlx::Error::Database(e))
            if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some_and(|m| m.number() == 1193) =>
        {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "this MySQL/MariaDB server has no {name}: statements past query_timeout_ms are abandoned by mailferry but run on in the server"
                )
            });
            Ok(())
        }
        other => other.map(drop),
    }
}

/// The `sql_mode` to set for `mode` (the server's default), if it must
/// change. [`placeholders`] reads `'…'` and `"…"` as strings with
/// backslash escapes, so these go: NO_BACKSLASH_ESCAPES, ANSI_QUOTES
/// (`"…"` a name, where `\` is plain), and the modes that bring
/// ANSI_QUOTES back whenever they are set (ANSI, ORACLE, MSSQL, DB2,
/// POSTGRESQL, MAXDB; the server lists what they stand for beside them,
/// and the rest of that is kept).
fn mysql_sql_mode(mode: &str) -> Result<Option<String>, String> {
    const DROPPED: [&str; 8] =
        ["NO_BACKSLASH_ESCAPES", "ANSI_QUOTES", "ANSI", "ORACLE", "MSSQL", "DB2", "POSTGRESQL", "MAXDB"];
    let modes: Vec<&str> = mode.split(',').filter(|m| !m.is_empty()).collect();
    if !modes.iter().any(|m| DROPPED.contains(m)) {
        return Ok(None);
    }
    // Mode names are letters and underscores; anything else is not written
    // into the statement.
    if !modes.iter().all(|m| m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
        return Err(format!("unexpected sql_mode {mode:?}"));
    }
    Ok(Some(modes.into_iter().filter(|m| !DROPPED.contains(m)).collect::<Vec<_>>().join(",")))
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
    let over =
        || format!("the result is over {} octets (max_result_bytes); select fewer or shorter columns", limits.bytes);
    macro_rules! on {
        ($pool:expr, $db:ty, $bind:ident, $decode:ident, $deadline:ident) => {{
            let acquire = async {
                let mut conn = $pool.acquire().await?;
                $deadline(&mut *conn, deadline).await?;
                Ok::<_, sqlx::Error>(conn)
            };
            let mut conn = match tokio::time::timeout_at(deadline.into(), acquire).await {
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
                                // Each value's length is checked before it is copied.
                                let room = limits.bytes.saturating_sub(size);
                                let value = $decode(&row, i, room).map_err(|e| match e {
                                    Read::Failed(m) => Outcome::Failed(QueryError::permanent(m)),
                                    Read::TooLong => Outcome::Limit(over()),
                                })?;
                                size += value.size();
                                values.push(value);
                            }
                            if size > limits.bytes {
                                return Err(Outcome::Limit(over()));
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
                // The database stopped it at the deadline (or failed to
                // answer by then): a timeout, whatever its words.
                Ok(Err(Outcome::Failed(e))) if e.temporary && Instant::now() >= deadline => Err(late()),
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
        Pool::Sqlite(p) => on!(p, Sqlite, bind_sqlite, decode_sqlite, sqlite_deadline),
        Pool::Postgres(p) => on!(p, Postgres, bind_pg, decode_pg, server_side_deadline),
        Pool::MySql(p) => on!(p, MySql, bind_mysql, decode_mysql, server_side_deadline),
    }
}

enum Outcome {
    Failed(QueryError),
    Limit(String),
}

/// Why a value could not be read.
enum Read {
    Failed(String),
    /// Longer than what is left of `max_result_bytes`.
    TooLong,
}

impl From<String> for Read {
    fn from(message: String) -> Read {
        Read::Failed(message)
    }
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

/// Text, borrowed from the row and copied only if it fits in `room`.
fn text<'r, DB: sqlx::Database>(raw: <DB as sqlx::Database>::ValueRef<'r>, room: usize) -> Result<Value, Read>
where
    &'r str: Decode<'r, DB>,
{
    let s = decode::<&str, DB>(raw)?;
    if s.len() > room {
        return Err(Read::TooLong);
    }
    Ok(Value::Text(s.to_owned()))
}

/// Octets, borrowed from the row and copied only if they fit in `room`.
fn bytes<'r, DB: sqlx::Database>(raw: <DB as sqlx::Database>::ValueRef<'r>, room: usize) -> Result<Value, Read>
where
    &'r [u8]: Decode<'r, DB>,
{
    let b = decode::<&[u8], DB>(raw)?;
    if b.len() > room {
        return Err(Read::TooLong);
    }
    Ok(Value::Bytes(b.to_owned()))
}

fn decode_sqlite(row: &sqlx::sqlite::SqliteRow, i: usize, room: usize) -> Result<Value, Read> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // SQLite types values, not columns: read what the value is.
    let type_name = raw.type_info().name().to_string();
    Ok(match type_name.as_str() {
        "INTEGER" | "BOOLEAN" => Value::Int(decode::<i64, Sqlite>(raw)?),
        "REAL" => Value::Float(decode::<f64, Sqlite>(raw)?),
        "TEXT" => text::<Sqlite>(raw, room)?,
        "BLOB" => bytes::<Sqlite>(raw, room)?,
        other => return Err(unsupported(row, i, other).into()),
    })
}

fn decode_pg(row: &sqlx::postgres::PgRow, i: usize, room: usize) -> Result<Value, Read> {
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
            text::<Postgres>(raw, room)?
        }
        // Prepared statements read binary values; text ones are hex, decoded
        // (and so copied) before they can be measured.
        "BYTEA" if raw.format() == PgValueFormat::Binary => bytes::<Postgres>(raw, room)?,
        "BYTEA" => match decode::<Vec<u8>, Postgres>(raw)? {
            b if b.len() > room => return Err(Read::TooLong),
            b => Value::Bytes(b),
        },
        other => return Err(unsupported(row, i, other).into()),
    })
}

fn decode_mysql(row: &sqlx::mysql::MySqlRow, i: usize, room: usize) -> Result<Value, Read> {
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
            text::<MySql>(raw, room)?
        }
        "VARBINARY" | "BINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => bytes::<MySql>(raw, room)?,
        other => return Err(unsupported(row, i, other).into()),
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
            // SQLite: the primary result code (low byte of the extended one).
            let sqlite =
                db.try_downcast_ref::<sqlx::sqlite::SqliteError>().map(|_| code.parse::<i32>().unwrap_or(0) & 0xff);
            // MySQL's general SQLSTATE HY000 also covers statements that
            // can never work: values no collation of the column can compare
            // (a login Latin-1 cannot hold against a latin1 table), and
            // statements the prepared-statement protocol does not run (1295:
            // PREPARE, EXECUTE).
            let mysql_mistake = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|m| matches!(m.number(), 1253 | 1267 | 1270 | 1271 | 1295));
            let permanent = match sqlite {
                // ERROR (syntax, no such table), CONSTRAINT, MISMATCH, TOOBIG, RANGE.
                Some(primary) => matches!(primary, 1 | 18 | 19 | 20 | 25),
                // PostgreSQL SQLSTATEs, and MySQL's where it has one.
                None => mysql_mistake || ["42", "22", "23", "0A", "21"].iter().any(|class| code.starts_with(class)),
            };
            let mut message = format!("{} ({})", db.message(), if code.is_empty() { "no code" } else { &code });
            if sqlite == Some(18) {
                // The length limit set on every connection (sqlite_confine).
                message.push_str(": one value would be longer than max_result_bytes allows; select shorter values");
            }
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
mod tests;
