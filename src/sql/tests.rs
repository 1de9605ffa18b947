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
    // SQLite would never finish preparing these: refused before it sees them.
    for nul in ["SELECT 1;\0", "\0", "SELECT a FROM t\0 WHERE a = 1"] {
        let e = db.query(nul, &[]).await.unwrap_err();
        assert!(!e.temporary && e.message.contains("control character U+0000"), "{e:?}");
    }
    assert_eq!(db.query("SELECT count(*) AS n FROM t", &[]).await.unwrap().rows[0], vec![Value::Int(4)]);
}

fn sqlite_pool(db: &Database) -> SqlitePool {
    match db.pool().unwrap() {
        Pool::Sqlite(p) => p.clone(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn sqlite_stops_a_statement_past_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.db"), b"").unwrap();
    let mut config = sqlite_db(dir.path(), 10, 4096).config;
    config.query_timeout = Duration::from_secs(60);
    let patient = Database::new("patient", config.clone());
    patient.query("CREATE TABLE t (a INTEGER)", &[]).await.unwrap();
    patient.query("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    config.query_timeout = Duration::from_millis(300);
    config.max_connections = 1;
    let hasty = Database::new("hasty", config);
    // Connected beforehand, so the statement below starts at once (a
    // slow start would leave it nothing to stop).
    let mut tries = 0;
    while let Err(e) = hasty.query("SELECT 1", &[]).await {
        tries += 1;
        assert!(tries < 50, "{e:?}");
    }
    // Counts without end (in constant memory) while reading t.
    let endless = "SELECT a FROM t WHERE a > (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c)";
    let e = hasty.query(endless, &[]).await.unwrap_err();
    assert!(e.temporary && e.message.contains("no answer within 300 ms"), "{e:?}");
    // A write waits for every reader of the file to finish (here for a
    // minute at most): it goes through only because SQLite stopped that
    // statement.
    assert_eq!(patient.query("INSERT INTO t VALUES (2)", &[]).await.unwrap().affected, 1);
    assert_eq!(patient.query("SELECT count(*) AS n FROM t", &[]).await.unwrap().rows[0], vec![Value::Int(2)]);
}

#[tokio::test]
async fn sqlite_refuses_values_longer_than_max_result_bytes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.db"), b"").unwrap();
    let db = sqlite_db(dir.path(), 10, 100_000);
    // SQLite refuses to build it: nothing near 500 MB is allocated.
    let e = db.query("SELECT randomblob(500000000) AS b", &[]).await.unwrap_err();
    assert!(!e.temporary && e.message.contains("(18)") && e.message.contains("max_result_bytes"), "{e:?}");
    let e = db.query("SELECT length(zeroblob(200000)) AS n", &[]).await.unwrap_err();
    assert!(!e.temporary && e.message.contains("(18)"), "{e:?}");
    // Each within SQLite's limit, together over the result's: the
    // second is refused before it is copied.
    let e = db.query("SELECT randomblob(60000) AS a, randomblob(60000) AS b", &[]).await.unwrap_err();
    assert!(!e.temporary && e.message.contains("over 100000 octets"), "{e:?}");
    let r = db.query("SELECT length(randomblob(60000)) AS n, randomblob(16) AS b", &[]).await.unwrap();
    assert_eq!(r.rows[0][0], Value::Int(60000));
}

#[tokio::test]
async fn sqlite_connections_cannot_attach_even_past_the_text_check() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.db"), b"").unwrap();
    let db = sqlite_db(dir.path(), 10, 4096);
    // Another database the server can read and write.
    let other = dir.path().join("other.db");
    std::fs::write(&other, b"").unwrap();
    let attach = format!("ATTACH DATABASE '{}' AS o", other.display());
    let vacuum = format!("VACUUM INTO '{}'", dir.path().join("copy.db").display());
    // Straight on a pool connection, as if `placeholders` had let it by.
    let mut conn = sqlite_pool(&db).acquire().await.unwrap();
    let e = sqlx::query(AssertSqlSafe(attach.clone())).execute(&mut *conn).await.unwrap_err();
    assert!(e.to_string().contains("too many attached databases"), "{e}");
    assert!(sqlx::query(AssertSqlSafe(vacuum)).execute(&mut *conn).await.is_err());
    assert!(!dir.path().join("copy.db").exists());
    // What the limit stops: a connection without it attaches the file.
    let options = SqliteConnectOptions::new().filename(dir.path().join("t.db"));
    let mut plain = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::query(AssertSqlSafe(attach)).execute(&mut plain).await.unwrap();
}

#[test]
fn mysql_sql_mode_drops_what_changes_how_text_is_read() {
    assert_eq!(mysql_sql_mode("STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION"), Ok(None));
    assert_eq!(mysql_sql_mode(""), Ok(None));
    assert_eq!(
        mysql_sql_mode("STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES").unwrap().as_deref(),
        Some("STRICT_TRANS_TABLES")
    );
    // As the server lists ANSI and MSSQL: what they stand for stays,
    // but ANSI_QUOTES.
    assert_eq!(
        mysql_sql_mode("REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI").unwrap().as_deref(),
        Some("REAL_AS_FLOAT,PIPES_AS_CONCAT,IGNORE_SPACE")
    );
    assert_eq!(
        mysql_sql_mode("PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,MSSQL,NO_KEY_OPTIONS").unwrap().as_deref(),
        Some("PIPES_AS_CONCAT,IGNORE_SPACE,NO_KEY_OPTIONS")
    );
    assert_eq!(mysql_sql_mode("ANSI_QUOTES").unwrap().as_deref(), Some(""));
    assert!(mysql_sql_mode("ANSI_QUOTES,X'; DROP").is_err());
}

const MY: &str = "mysql://root@127.0.0.1:3306/test";
const MY_HOW: &str = "This test needs MariaDB on 127.0.0.1:3306, user root without password, database test.";

/// A session whose sql_mode reads `"…"` as a name, where `\` is plain,
/// is set back to what `placeholders` reads, on the real server.
#[tokio::test]
async fn mysql_session_undoes_ansi_quotes_and_no_backslash_escapes() {
    use sqlx::Connection;
    let mut conn = MySqlConnection::connect(MY).await.unwrap_or_else(|e| panic!("{e}\n{MY_HOW}"));
    conn.execute("SET SESSION sql_mode = 'ANSI,NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES'").await.unwrap();
    mysql_session(&mut conn, Duration::from_secs(2)).await.unwrap();
    let mode: String =
        sqlx::query("SELECT @@sql_mode").fetch_one(&mut conn).await.unwrap().try_get_unchecked(0).unwrap();
    assert!(!mode.contains("ANSI") && !mode.contains("NO_BACKSLASH") && mode.contains("STRICT_ALL_TABLES"), "{mode}");
    // One string, its quote escaped, as the scan read it.
    let s: String =
        sqlx::query(r#"SELECT "a\"b" AS s"#).fetch_one(&mut conn).await.unwrap().try_get_unchecked(0).unwrap();
    assert_eq!(s, "a\"b");
}

/// MariaDB has no max_execution_time (MySQL's name): it answers as a
/// server older than either setting does, which is let by.
#[tokio::test]
async fn a_server_without_the_timeout_setting_still_serves() {
    use sqlx::Connection;
    let mut conn = MySqlConnection::connect(MY).await.unwrap_or_else(|e| panic!("{e}\n{MY_HOW}"));
    let e = conn.execute("SET SESSION max_execution_time = 2250").await.unwrap_err();
    assert!(e.to_string().contains("1193") || e.to_string().contains("nknown system variable"), "{e}");
    mysql_server_timeout(&mut conn, "max_execution_time", "2250").await.unwrap();
    mysql_server_timeout(&mut conn, "max_statement_time", "2.250").await.unwrap();
    let t: f64 = sqlx::query("SELECT @@max_statement_time").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(t, 2.25);
    // Other errors still fail the connection.
    assert!(mysql_server_timeout(&mut conn, "max_statement_time", "'soon'").await.is_err());
}

#[test]
fn classification() {
    let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert!(classify(&io).temporary);
    assert!(classify(&sqlx::Error::PoolTimedOut).temporary);
    assert!(!classify(&sqlx::Error::Decode("x".into())).temporary);
}
