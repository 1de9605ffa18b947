//! The `sql` capability's limits against the real PostgreSQL and MariaDB
//! servers on this machine (127.0.0.1, as for tests/integration/sql),
//! driven through the library: a statement past `query_timeout_ms` is
//! stopped by the server itself, not only abandoned by the host; a value over
//! `max_result_bytes` is a clear permanent error, and the pool goes on.
//! SQLite's side of the same limits is tested beside the code
//! (src/sql/mod.rs), since it runs in the process.
//!
//! A server that cannot be reached fails these tests with a message saying
//! so: they are never skipped.

use std::time::{Duration, Instant};

use mailferry::config::{Database as DbConfig, DatabaseKind};
use mailferry::sql::{Database, Value};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const MY: &str = "mysql://root@127.0.0.1:3306/test";
const PG_HOW: &str =
    "PostgreSQL on 127.0.0.1:5432, user postgres, trust authentication, database test (.ci/run starts it)";
const MY_HOW: &str = "MariaDB on 127.0.0.1:3306, user root without password, database test (.ci/run starts it)";

fn database(kind: DatabaseKind, url: &str, query_timeout: Duration, max_result_bytes: usize) -> Database {
    Database::new(
        "limits",
        DbConfig {
            kind,
            url: url.into(),
            password: None,
            max_connections: 2,
            query_timeout,
            max_rows: 100,
            max_result_bytes,
            migrate: false,
        },
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// A word no other statement on the server contains.
fn tag(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("mf_{what}_{}_{nanos}", std::process::id())
}

/// Runs `query` until it answers (the first use connects, which a loaded
/// machine may make slower than a short timeout).
async fn first(db: &Database, query: &str, how: &str) -> Vec<Vec<Value>> {
    let mut tries = 0;
    loop {
        match db.query(query, &[]).await {
            Ok(r) => return r.rows,
            Err(e) => {
                tries += 1;
                assert!(tries < 20, "{query}: {e:?}\nThis test needs {how}.");
            }
        }
    }
}

/// Runs `slow` through `db` (it must time out), watching through `admin`
/// (another pool on the same server) with `count`, which counts the
/// statements like `:pattern` the server is running besides itself: the
/// statement is seen running, then seen gone well before it would have
/// ended by itself.
async fn stopped_by_the_server(db: &Database, slow: &str, tag: &str, admin: &Database, count: &str) {
    let pattern = [("pattern".to_string(), Value::Text(format!("%{tag}%")))];
    let running = || async {
        match admin.query(count, &pattern).await.unwrap_or_else(|e| panic!("{count}: {e:?}")).rows[0][0] {
            Value::Int(n) => n,
            ref other => panic!("{count} counted {other:?}"),
        }
    };
    let limit = Instant::now() + Duration::from_secs(60);
    let query = db.query(slow, &[]);
    let watch = async {
        // Seen running first, so "gone" below is not a query the server
        // never showed.
        while running().await == 0 {
            assert!(Instant::now() < limit, "never saw {tag} running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (result, ()) = tokio::join!(query, watch);
    let e = result.unwrap_err();
    assert!(e.temporary && e.message.contains("no answer within"), "{e:?}");
    // The host gave up and closed its connection; the server noticing
    // nothing, only its own limit stops the statement (which would
    // otherwise run for hours). A minute is plenty.
    while running().await > 0 {
        assert!(Instant::now() < limit, "{tag} still runs on the server after the timeout");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn mariadb_stops_a_statement_past_the_timeout() {
    block_on(async {
        let db = database(DatabaseKind::MySql, MY, Duration::from_secs(2), 1 << 20);
        // The session carries the limit.
        assert_eq!(first(&db, "SELECT @@max_statement_time AS t", MY_HOW).await[0], vec![Value::Float(2.25)]);
        let admin = database(DatabaseKind::MySql, MY, Duration::from_secs(30), 1 << 20);
        let tag = tag("benchmark");
        // BENCHMARK computes without looking at the client's connection.
        let slow = format!("SELECT BENCHMARK(1000000000000, MD5('{tag}')) AS b");
        let count = "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST \
                     WHERE INFO LIKE :pattern AND ID <> CONNECTION_ID()";
        stopped_by_the_server(&db, &slow, &tag, &admin, count).await;
        // The pool goes on.
        assert_eq!(db.query("SELECT 1 AS n", &[]).await.unwrap().rows[0], vec![Value::Int(1)]);
    });
}

#[test]
fn postgres_stops_a_statement_past_the_timeout() {
    block_on(async {
        let db = database(DatabaseKind::Postgres, PG, Duration::from_secs(2), 1 << 20);
        assert_eq!(
            first(&db, "SELECT current_setting('statement_timeout') AS t", PG_HOW).await[0],
            vec![Value::Text("2250ms".into())]
        );
        let admin = database(DatabaseKind::Postgres, PG, Duration::from_secs(30), 1 << 20);
        let tag = tag("sleep");
        // pg_sleep does not notice that the client went away.
        let slow = format!("SELECT pg_sleep(3600) AS {tag}");
        let count = "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE query LIKE :pattern AND state = 'active' AND pid <> pg_backend_pid()";
        stopped_by_the_server(&db, &slow, &tag, &admin, count).await;
        assert_eq!(db.query("SELECT 1 AS n", &[]).await.unwrap().rows[0], vec![Value::Int(1)]);
    });
}

/// One value over `max_result_bytes`: refused, permanently, saying which
/// limit; values within it still come back, on the same pool.
async fn one_long_value(kind: DatabaseKind, url: &str, how: &str, statements: &[&str]) {
    let db = database(kind, url, Duration::from_secs(30), 1 << 20);
    assert_eq!(first(&db, "SELECT 1 AS n", how).await[0], vec![Value::Int(1)]);
    for sql in statements {
        let e = db.query(sql, &[]).await.unwrap_err();
        assert!(!e.temporary && e.message.contains("over 1048576 octets (max_result_bytes)"), "{sql}: {e:?}");
        let r = db.query("SELECT repeat('x', 1000) AS s", &[]).await.unwrap();
        assert_eq!(r.rows[0], vec![Value::Text("x".repeat(1000))]);
    }
}

#[test]
fn postgres_one_value_over_max_result_bytes() {
    block_on(one_long_value(
        DatabaseKind::Postgres,
        PG,
        PG_HOW,
        &[
            "SELECT repeat('x', 5000000) AS s",
            "SELECT decode(repeat('ab', 3000000), 'hex') AS b",
            "SELECT 'a' AS a, repeat('x', 1048576) AS s",
        ],
    ));
}

#[test]
fn mariadb_one_value_over_max_result_bytes() {
    block_on(one_long_value(
        DatabaseKind::MySql,
        MY,
        MY_HOW,
        &[
            "SELECT repeat('x', 5000000) AS s",
            "SELECT unhex(repeat('ab', 3000000)) AS b",
            "SELECT 'a' AS a, repeat('x', 1048576) AS s",
        ],
    ));
}

/// Statements that would undo the session settings the host pins are
/// refused before they reach the server, and the setting holds after.
async fn pinned_settings_stay(kind: DatabaseKind, url: &str, how: &str, show: &str, expect: Value, tries: &[&str]) {
    let db = database(kind, url, Duration::from_secs(2), 1 << 20);
    assert_eq!(first(&db, show, how).await[0], vec![expect.clone()]);
    for sql in tries {
        let e = db.query(sql, &[]).await.unwrap_err();
        assert!(!e.temporary && e.message.contains("pins their session settings"), "{sql}: {e:?}");
    }
    // Both connections of the pool, busy at once, still carry it.
    let (a, b) = tokio::join!(db.query(show, &[]), db.query(show, &[]));
    assert_eq!(a.unwrap().rows[0], vec![expect.clone()]);
    assert_eq!(b.unwrap().rows[0], vec![expect]);
}

#[test]
fn postgres_session_settings_cannot_be_changed() {
    block_on(pinned_settings_stay(
        DatabaseKind::Postgres,
        PG,
        PG_HOW,
        "SELECT current_setting('statement_timeout') AS t",
        Value::Text("2250ms".into()),
        &[
            "SET statement_timeout = 0",
            "/* x */ (set standard_conforming_strings = off)",
            "RESET statement_timeout",
            "SELECT set_config('statement_timeout', '0', false)",
            "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
            "DO $$ BEGIN PERFORM set_config('statement_timeout', '0', false); END $$",
        ],
    ));
}

#[test]
fn mariadb_session_settings_cannot_be_changed() {
    block_on(pinned_settings_stay(
        DatabaseKind::MySql,
        MY,
        MY_HOW,
        "SELECT @@max_statement_time AS t",
        Value::Float(2.25),
        &[
            "SET SESSION max_statement_time = 0",
            "# x\nSET sql_mode = 'ANSI_QUOTES'",
            "SET STATEMENT max_statement_time = 0 FOR SELECT 1",
        ],
    ));
    // What the server itself refuses, with no check of the host's: system
    // variables cannot be assigned from a query, nor PREPAREd statements
    // run through the protocol every query uses.
    block_on(async {
        let db = database(DatabaseKind::MySql, MY, Duration::from_secs(2), 1 << 20);
        for sql in [
            "SELECT 0 INTO @@max_statement_time",
            "SELECT @@max_statement_time := 0",
            "PREPARE s FROM 'SET SESSION max_statement_time = 0'",
        ] {
            let e = db.query(sql, &[]).await.unwrap_err();
            assert!(!e.temporary, "{sql}: {e:?}");
        }
    });
}
