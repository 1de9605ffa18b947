//! The `sql` capability through a probe plugin: grants, limits, values and
//! errors.

use super::*;

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
