//! Named placeholders in the statements plugins send (`:login`), rewritten
//! into the backend's own syntax: `$1` for PostgreSQL, `?1` for SQLite, `?`
//! for MySQL/MariaDB.
//!
//! Plugins write one syntax whatever the backend, and a name may appear
//! several times. Values are always bound as parameters, never written into
//! the SQL text: this scan only decides where the backend's placeholders go,
//! so a statement it misreads fails, it cannot be injected into.
//!
//! The scan skips string literals, quoted identifiers and comments in each
//! dialect's syntax, leaves PostgreSQL casts (`::text`) and MySQL
//! assignments (`:=`) alone, and refuses what would bind values in a way the
//! plugin did not name: the backends' native placeholders (`?`, `$1`, `@x`;
//! on SQLite every `$`, `#` and `:` not starting a name), and more than one
//! statement. It also refuses what would undo the session settings below on
//! the shared connections (`SET`, `RESET`; PostgreSQL `set_config`,
//! `pg_settings`, `DO`), and control characters but tab, LF and CR (SQLite
//! never gets past a NUL).
//!
//! Where the dialects differ:
//!
//! | | PostgreSQL | MySQL/MariaDB | SQLite |
//! |---|---|---|---|
//! | `'…'` | `''` escapes; `\` only in `E'…'` | `''` and `\` escape | `''` escapes |
//! | `"…"` | a name | a string, `\` escapes | a name |
//! | also quoted | `$tag$…$tag$` | `` `…` `` | `` `…` ``, `[…]` |
//! | `--` | a comment | a comment only before a blank or control character (`1--1` is arithmetic) | a comment |
//! | `#` | an operator | a comment | — |
//! | `/* */` | nests | does not nest; `/*!…*/` and `/*M!…*/` are *run*, so refused | does not nest |
//!
//! The host pins the session settings these rules assume: PostgreSQL's
//! `standard_conforming_strings` on, and MySQL's `sql_mode` without
//! `NO_BACKSLASH_ESCAPES` or `ANSI_QUOTES` (see `super::build_pool`).

/// Which backend's syntax to read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

/// A statement in the backend's syntax and the parameter names to bind, in
/// order.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    pub sql: String,
    /// MySQL: one entry per placeholder, in order of appearance (a name
    /// used twice is bound twice). PostgreSQL and SQLite: each name once,
    /// in order of first appearance (`$1`/`?1` is the first name).
    pub binds: Vec<String>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// SQLite statements that reach beyond the granted database: `ATTACH`
/// opens any file the server can read (another database's password hashes)
/// or creates one, `VACUUM INTO` writes one, `PRAGMA` changes the shared
/// connection. SQLite runs inside the server, so no database permission
/// stands in the way: they are refused (also behind `EXPLAIN`).
const SQLITE_REFUSED: [&str; 4] = ["ATTACH", "DETACH", "VACUUM", "PRAGMA"];

/// The first words of a statement, upper case, past blanks, comments and
/// opening parentheses, as `dialect` reads them.
fn leading_words(s: &[u8], dialect: Dialect, most: usize) -> Vec<String> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < s.len() && words.len() < most {
        let b = s[i];
        if b.is_ascii_whitespace() || (b == b'(' && words.is_empty()) {
            i += 1;
        } else if (b == b'-' && s.get(i + 1) == Some(&b'-')) || (b == b'#' && dialect == Dialect::MySql) {
            i = line_end(s, i);
        } else if b == b'/' && s.get(i + 1) == Some(&b'*') {
            // PostgreSQL's nest: `/* /* */ */ SET …` starts with SET.
            i = skip_block_comment(s, i, dialect == Dialect::Postgres).unwrap_or(s.len());
        } else if is_ident_start(b) {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            words.push(String::from_utf8_lossy(&s[start..i]).to_ascii_uppercase());
        } else {
            break;
        }
    }
    words
}

/// Why statements that change session settings are refused: connections
/// are pooled and shared by every plugin, and the host pins settings on
/// them that its limits and this scan rely on.
fn pinned(what: &str) -> String {
    format!(
        "{what} is not allowed: connections are shared, and the host pins their session settings \
         (the server-side timeout, how strings are read)"
    )
}

/// PostgreSQL names that change session settings from inside a query:
/// `set_config()`, and the `pg_settings` view, whose UPDATE calls it.
const PG_SETTERS: [&str; 2] = ["set_config", "pg_settings"];

fn pg_setter(name: &[u8]) -> Option<&'static str> {
    PG_SETTERS.iter().copied().find(|w| name.eq_ignore_ascii_case(w.as_bytes()))
}

/// Rewrites `sql`; `known` tells whether a parameter of that name was given.
pub fn rewrite(sql: &str, dialect: Dialect, known: impl Fn(&str) -> bool) -> Result<Rewritten, String> {
    // SQLite stops reading at a NUL without moving on, and sqlx then asks
    // it again forever; other control characters have no use in SQL.
    if let Some(c) = sql.chars().find(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(format!(
            "the statement holds the control character U+{:04X}; only tab, line feed and carriage return are accepted",
            c as u32
        ));
    }
    let s = sql.as_bytes();
    let words = leading_words(s, dialect, 4);
    match words.first().map(String::as_str) {
        Some(verb @ ("SET" | "RESET")) => return Err(pinned(verb)),
        // Its code is a string this scan does not read.
        Some("DO") if dialect == Dialect::Postgres => return Err(pinned("DO")),
        _ => {}
    }
    if dialect == Dialect::Sqlite {
        let verb = words.iter().find(|w| !matches!(w.as_str(), "EXPLAIN" | "QUERY" | "PLAN"));
        if let Some(verb) = verb.filter(|v| SQLITE_REFUSED.contains(&v.as_str())) {
            return Err(format!("{verb} is not allowed on SQLite: a plugin reaches only the database it was granted"));
        }
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut binds: Vec<String> = Vec::new();
    // Start of the text not yet copied to `out`.
    let mut copied = 0;
    // Where a `;` ended the statement: only blanks and comments may follow.
    let mut ended = false;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        let next = s.get(i + 1).copied();
        let prev = if i > 0 { Some(s[i - 1]) } else { None };
        let start = i;
        i = match b {
            b'\'' => {
                // E'…' strings (PostgreSQL) and every MySQL string take
                // backslash escapes.
                let e_string =
                    dialect == Dialect::Postgres && matches!(prev, Some(b'e' | b'E')) && (i < 2 || !is_ident(s[i - 2]));
                skip_quoted(s, i, b'\'', e_string || dialect == Dialect::MySql)
                    .ok_or("a string literal ('…') is not closed")?
            }
            b'"' => {
                let end =
                    skip_quoted(s, i, b'"', dialect == Dialect::MySql).ok_or("a quoted name (\"…\") is not closed")?;
                if dialect == Dialect::Postgres {
                    // U&"…" spells a name in escapes, which could hide set_config.
                    if prev == Some(b'&') && i >= 2 && matches!(s[i - 2], b'u' | b'U') {
                        return Err("write quoted names plainly, not as U&\"…\"".into());
                    }
                    if let Some(w) = pg_setter(&s[i + 1..end - 1]) {
                        return Err(pinned(w));
                    }
                }
                end
            }
            b'`' if dialect != Dialect::Postgres => {
                skip_quoted(s, i, b'`', false).ok_or("a quoted name (`…`) is not closed")?
            }
            b'[' if dialect == Dialect::Sqlite => {
                s[i..].iter().position(|&c| c == b']').map(|p| i + p + 1).ok_or("a quoted name ([…]) is not closed")?
            }
            b'-' if next == Some(b'-')
                && (dialect != Dialect::MySql || s.get(i + 2).is_none_or(|&c| blank_or_control(c))) =>
            {
                line_end(s, i)
            }
            b'#' if dialect == Dialect::MySql => line_end(s, i),
            b'/' if next == Some(b'*') => {
                if dialect == Dialect::MySql && (s[i + 2..].starts_with(b"!") || s[i + 2..].starts_with(b"M!")) {
                    return Err(
                        "MySQL and MariaDB run the text of /*! … */ and /*M! … */ as SQL: write it plainly".into()
                    );
                }
                skip_block_comment(s, i, dialect == Dialect::Postgres).ok_or("a comment (/* … */) is not closed")?
            }
            b'$' if dialect == Dialect::Postgres && !prev.is_some_and(is_ident) => {
                if next.is_some_and(|c| c.is_ascii_digit()) {
                    return Err(native("$1"));
                }
                match dollar_tag(s, i) {
                    Some(tag_end) => {
                        let tag = &s[i..tag_end];
                        find(s, tag_end, tag)
                            .map(|p| p + tag.len())
                            .ok_or("a dollar-quoted string ($$…$$) is not closed")?
                    }
                    None => i + 1,
                }
            }
            // SQLite reads `$…`, `@…`, `#…` and `:…` as its own placeholders
            // (`$1`, `$::x`, `:::x`, `:1` too), and has no other use for
            // them outside literals: only `:name` passes.
            b'$' if dialect == Dialect::Sqlite => return Err(native("$")),
            b'@' if dialect == Dialect::Sqlite => return Err(native("@name")),
            b'#' if dialect == Dialect::Sqlite => return Err(native("#name")),
            b':' if dialect == Dialect::Sqlite && !next.is_some_and(is_ident_start) => {
                return Err(native(": not followed by a name"))
            }
            b'?' if dialect != Dialect::Postgres => return Err(native("?")),
            b':' if next == Some(b':') => i + 2,
            b':' if next.is_some_and(is_ident_start) && prev != Some(b':') => {
                let end = i
                    + 1
                    + s[i + 1..]
                        .iter()
                        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
                        .unwrap_or(s.len() - i - 1);
                let name = &sql[i + 1..end];
                if ended {
                    return Err(one_statement());
                }
                if !known(name) {
                    return Err(format!("no value given for the placeholder :{name}"));
                }
                out.push_str(&sql[copied..i]);
                copied = end;
                match dialect {
                    Dialect::MySql => {
                        binds.push(name.to_string());
                        out.push('?');
                    }
                    Dialect::Postgres | Dialect::Sqlite => {
                        let n = match binds.iter().position(|b| b == name) {
                            Some(p) => p + 1,
                            None => {
                                binds.push(name.to_string());
                                binds.len()
                            }
                        };
                        out.push(if dialect == Dialect::Postgres { '$' } else { '?' });
                        out.push_str(&n.to_string());
                    }
                }
                end
            }
            b';' => {
                ended = true;
                i + 1
            }
            c if dialect == Dialect::Postgres && is_ident_start(c) && !prev.is_some_and(is_ident) => {
                let end = s[i..].iter().position(|&c| !is_ident(c)).map_or(s.len(), |p| i + p);
                if let Some(w) = pg_setter(&s[i..end]) {
                    return Err(pinned(w));
                }
                end
            }
            _ => i + 1,
        };
        // Anything but blanks and comments after a `;` is a second statement.
        let comment = matches!(b, b'-' | b'#' | b'/') && i - start > 1;
        if ended && b != b';' && !b.is_ascii_whitespace() && !comment {
            return Err(one_statement());
        }
    }
    out.push_str(&sql[copied..]);
    Ok(Rewritten { sql: out, binds })
}

/// What MySQL accepts after `--` for it to start a comment.
fn blank_or_control(c: u8) -> bool {
    c <= b' ' || c == 0x7f
}

fn native(what: &str) -> String {
    format!("write placeholders as :name (the host binds them for every backend); {what} is not accepted")
}

fn one_statement() -> String {
    "only one statement per query".to_string()
}

/// The end of a quoted text opening at `i`: the doubled quote escapes it,
/// and with `backslash` a backslash escapes the next character.
fn skip_quoted(s: &[u8], i: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' if backslash => j += 2,
            c if c == quote => {
                if s.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return Some(j + 1);
                }
            }
            _ => j += 1,
        }
    }
    None
}

fn line_end(s: &[u8], i: usize) -> usize {
    s[i..].iter().position(|&c| c == b'\n').map_or(s.len(), |p| i + p + 1)
}

/// The end of a `/* … */` comment; PostgreSQL's nest.
fn skip_block_comment(s: &[u8], i: usize, nested: bool) -> Option<usize> {
    let mut depth = 0;
    let mut j = i;
    while j + 1 < s.len() {
        if s[j] == b'/' && s[j + 1] == b'*' && (nested || depth == 0) {
            depth += 1;
            j += 2;
        } else if s[j] == b'*' && s[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return Some(j);
            }
        } else {
            j += 1;
        }
    }
    None
}

/// The end of a `$tag$` opening at `i`, if it is one. A tag is written as
/// a name without `$`: letters (any, UTF-8 included), digits after the
/// first, underscores.
fn dollar_tag(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if s.get(j) == Some(&b'$') {
        return Some(j + 1);
    }
    if !s.get(j).copied().is_some_and(|c| is_ident_start(c) || c >= 0x80) {
        return None;
    }
    while j < s.len() && (s[j].is_ascii_alphanumeric() || s[j] == b'_' || s[j] >= 0x80) {
        j += 1;
    }
    (s.get(j) == Some(&b'$')).then_some(j + 1)
}

fn find(s: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    s[from..].windows(needle.len()).position(|w| w == needle).map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::Dialect::*;
    use super::*;

    fn rw(sql: &str, d: Dialect) -> Result<(String, Vec<String>), String> {
        rewrite(sql, d, |n| ["login", "local", "domain", "a", "b"].contains(&n)).map(|r| (r.sql, r.binds))
    }

    fn ok(sql: &str, d: Dialect) -> (String, Vec<String>) {
        rw(sql, d).unwrap_or_else(|e| panic!("{sql:?} ({d:?}): {e}"))
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sqlite_statements_that_reach_other_files_are_refused() {
        for sql in [
            "ATTACH DATABASE '/var/lib/mailferry/users.db' AS u",
            "  attach '/tmp/x.db' as x",
            "/* hi */ -- there\n ATTACH 'x' AS y",
            "DETACH u",
            "VACUUM INTO '/tmp/copy.db'",
            "PRAGMA writable_schema = 1",
            "EXPLAIN ATTACH 'x' AS y",
            "EXPLAIN QUERY PLAN VACUUM",
        ] {
            let e = rw(sql, Sqlite).unwrap_err();
            assert!(e.contains("not allowed on SQLite"), "{sql:?}: {e}");
        }
        // The same words elsewhere, and on the other backends (their own
        // permissions apply), are not refused.
        ok("SELECT 'ATTACH' AS attach_note, pragma FROM t", Sqlite);
        ok("EXPLAIN QUERY PLAN SELECT 1", Sqlite);
        ok("VACUUM", Postgres);
    }

    #[test]
    fn each_backend_gets_its_own_syntax() {
        let q = "SELECT password FROM users WHERE userid = :local AND domain = :domain OR login = :local";
        assert_eq!(
            ok(q, Postgres),
            (
                "SELECT password FROM users WHERE userid = $1 AND domain = $2 OR login = $1".into(),
                names(&["local", "domain"])
            )
        );
        assert_eq!(
            ok(q, Sqlite),
            (
                "SELECT password FROM users WHERE userid = ?1 AND domain = ?2 OR login = ?1".into(),
                names(&["local", "domain"])
            )
        );
        assert_eq!(
            ok(q, MySql),
            (
                "SELECT password FROM users WHERE userid = ? AND domain = ? OR login = ?".into(),
                names(&["local", "domain", "local"])
            )
        );
        assert_eq!(ok("x=:a,y=(:b)", Postgres).0, "x=$1,y=($2)");
        assert_eq!(ok("SELECT 1", MySql), ("SELECT 1".into(), vec![]));
    }

    #[test]
    fn literals_identifiers_and_comments_are_left_alone() {
        for d in [Postgres, MySql, Sqlite] {
            let (sql, binds) = ok("SELECT ':a', 'it''s :b' FROM t -- :b\nWHERE x = :a /* :b */", d);
            assert_eq!(binds, names(&["a"]), "{d:?}: {sql}");
            assert!(sql.contains("':a', 'it''s :b'") && sql.contains("-- :b\n") && sql.contains("/* :b */"), "{sql}");
        }
        assert_eq!(ok("SELECT \":a\" FROM t WHERE x = :a", Postgres).0, "SELECT \":a\" FROM t WHERE x = $1");
        assert_eq!(ok("SELECT `:a` FROM t WHERE x = :a", MySql).0, "SELECT `:a` FROM t WHERE x = ?");
        assert_eq!(ok("SELECT [:a] FROM t WHERE x = :a", Sqlite).0, "SELECT [:a] FROM t WHERE x = ?1");
        assert_eq!(ok("SELECT 1 # :b\n, :a", MySql).0, "SELECT 1 # :b\n, ?");
        // MySQL strings take backslash escapes; PostgreSQL's only as E'…'.
        assert_eq!(ok(r"SELECT 'a\' :b', :a", MySql).0, r"SELECT 'a\' :b', ?");
        assert_eq!(ok(r"SELECT E'a\' :b', :a", Postgres).0, r"SELECT E'a\' :b', $1");
        assert_eq!(ok(r"SELECT 'a\', :a", Postgres).0, r"SELECT 'a\', $1");
        // Dollar quoting and nested comments (PostgreSQL).
        assert_eq!(ok("SELECT $$ :b $$, $q$ :b $q$, :a", Postgres).0, "SELECT $$ :b $$, $q$ :b $q$, $1");
        assert_eq!(ok("SELECT /* /* :b */ :b */ :a", Postgres).0, "SELECT /* /* :b */ :b */ $1");
    }

    #[test]
    fn double_dash_is_a_comment_in_mysql_only_before_a_blank() {
        // MySQL: `--` then a blank or control character, or the end.
        assert_eq!(ok("SELECT 1 -- :b\n, :a", MySql).0, "SELECT 1 -- :b\n, ?");
        assert_eq!(ok("SELECT 1 --\t:b\n, :a", MySql).0, "SELECT 1 --\t:b\n, ?");
        assert_eq!(ok("SELECT :a --", MySql).1, names(&["a"]));
        // Otherwise arithmetic: `5--:a` is 5 - (-:a), and :a must be bound.
        assert_eq!(ok("SELECT 5--:a", MySql), ("SELECT 5--?".into(), names(&["a"])));
        assert_eq!(ok("SELECT 1--1, :a", MySql).0, "SELECT 1--1, ?");
        // So a second statement behind `--x` is seen.
        assert_eq!(rw("SELECT 1 --x\n; DROP TABLE t", MySql).unwrap_err(), "only one statement per query");
        // PostgreSQL and SQLite: `--` always starts a comment.
        for d in [Postgres, Sqlite] {
            let (sql, binds) = ok("SELECT 5--:b\n, :a", d);
            assert_eq!(binds, names(&["a"]), "{d:?}: {sql}");
        }
    }

    #[test]
    fn mysql_runs_version_comments_so_they_are_refused() {
        for sql in ["SELECT /*! :a */ 1", "SELECT 1 /*!50000 , SLEEP(5) */", "SELECT 1 /*M!100000 , :a */"] {
            let e = rw(sql, MySql).unwrap_err();
            assert!(e.contains("/*!"), "{sql:?}: {e}");
        }
        // Plain comments and optimizer hints are comments.
        assert_eq!(ok("SELECT /* :b */ /*+ hint */ :a", MySql).0, "SELECT /* :b */ /*+ hint */ ?");
        // Elsewhere /*! is an ordinary comment.
        for d in [Postgres, Sqlite] {
            assert_eq!(ok("SELECT /*! :b */ :a", d).1, names(&["a"]), "{d:?}");
        }
        // MySQL comments do not nest: what follows the first */ is SQL.
        assert_eq!(ok("SELECT /* /* */ :a", MySql).0, "SELECT /* /* */ ?");
    }

    #[test]
    fn hash_is_a_comment_in_mysql_only() {
        assert_eq!(ok("SELECT 1 # :b\n, :a", MySql).1, names(&["a"]));
        // PostgreSQL: bitwise XOR.
        assert_eq!(ok("SELECT 5 # :a", Postgres).0, "SELECT 5 # $1");
    }

    #[test]
    fn postgres_strings_escapes_and_dollar_quotes() {
        // E'…' takes backslash escapes; a plain '…' does not.
        assert_eq!(ok(r"SELECT E'it\'s :b', :a", Postgres).0, r"SELECT E'it\'s :b', $1");
        assert_eq!(ok(r"SELECT e'\\', :a", Postgres).0, r"SELECT e'\\', $1");
        assert_eq!(ok(r"SELECT '\', :a", Postgres).0, r"SELECT '\', $1");
        // An identifier ending in e before a string is not an E-string.
        assert!(rw(r"SELECT name'\' , :a", Postgres).is_ok());
        // Dollar quotes: empty, named, named in any letters; another tag
        // inside does not close them.
        assert_eq!(ok("SELECT $$ :b $$, :a", Postgres).0, "SELECT $$ :b $$, $1");
        assert_eq!(ok("SELECT $fn$ :b $x$ :b $fn$, :a", Postgres).0, "SELECT $fn$ :b $x$ :b $fn$, $1");
        assert_eq!(ok("SELECT $ü$ :b $ü$, :a", Postgres).0, "SELECT $ü$ :b $ü$, $1");
        assert!(rw("SELECT $q$ :b", Postgres).unwrap_err().contains("not closed"));
        // `$` inside a name is part of it; `$1` is PostgreSQL's own placeholder.
        assert_eq!(ok("SELECT a$b, :a FROM t", Postgres).0, "SELECT a$b, $1 FROM t");
        assert!(rw("SELECT $1", Postgres).unwrap_err().contains("write placeholders as :name"));
    }

    #[test]
    fn mysql_double_quoted_strings_take_backslashes() {
        assert_eq!(ok(r#"SELECT "a\" :b", :a"#, MySql).0, r#"SELECT "a\" :b", ?"#);
        // In PostgreSQL and SQLite "…" is a name, where a backslash is plain.
        assert_eq!(ok(r#"SELECT "a\", :a"#, Postgres).0, r#"SELECT "a\", $1"#);
        assert_eq!(ok(r#"SELECT "a\", :a"#, Sqlite).0, r#"SELECT "a\", ?1"#);
    }

    #[test]
    fn casts_and_assignments_are_not_placeholders() {
        assert_eq!(ok("SELECT :a::text, x::int", Postgres), ("SELECT $1::text, x::int".into(), names(&["a"])));
        assert_eq!(ok("SELECT @x := :a", MySql).0, "SELECT @x := ?");
        assert_eq!(ok("SELECT arr[1:2] FROM t", Postgres).0, "SELECT arr[1:2] FROM t");
    }

    #[test]
    fn unknown_names_native_placeholders_and_second_statements_are_refused() {
        assert!(rw("WHERE x = :nope", Postgres).unwrap_err().contains(":nope"));
        assert!(rw("WHERE x = ?", MySql).unwrap_err().contains("write placeholders as :name"));
        assert!(rw("WHERE x = ?", Sqlite).is_err());
        assert!(rw("WHERE x = ?1", Sqlite).is_err());
        assert!(rw("WHERE x = $1", Postgres).is_err());
        assert!(rw("WHERE x = @a", Sqlite).is_err());
        assert!(rw("WHERE x = $a", Sqlite).is_err());
        // `?` is a PostgreSQL operator (jsonb), not a placeholder there.
        assert_eq!(ok("SELECT d ? 'k' FROM t", Postgres).0, "SELECT d ? 'k' FROM t");
        for d in [Postgres, MySql, Sqlite] {
            assert_eq!(rw("SELECT 1; DROP TABLE users", d).unwrap_err(), "only one statement per query");
            assert_eq!(rw("SELECT 1; :a", d).unwrap_err(), "only one statement per query");
            assert_eq!(ok("SELECT :a ; -- done\n /* really */ ", d).1, names(&["a"]));
            assert!(rw("SELECT 'open", d).is_err());
            assert!(rw("SELECT /* open", d).is_err());
        }
    }

    #[test]
    fn control_characters_are_refused_before_anything_else() {
        for d in [Postgres, MySql, Sqlite] {
            for sql in [
                "SELECT 1;\0",
                "\0",
                "SELECT '\0'",
                "SELECT 1 -- \0",
                "SELECT \u{7f}1",
                "SELECT \u{85}",
                "SELECT\u{b} 1",
            ] {
                let e = rw(sql, d).unwrap_err();
                assert!(e.contains("control character"), "{sql:?} ({d:?}): {e}");
            }
            assert!(rw("SELECT 1;\0", d).unwrap_err().contains("U+0000"));
            // Tab, line feed and carriage return are ordinary blanks.
            assert_eq!(ok("SELECT\t:a\r\n", d).1, names(&["a"]), "{d:?}");
        }
    }

    #[test]
    fn statements_that_change_session_settings_are_refused() {
        for d in [Postgres, MySql, Sqlite] {
            for sql in [
                "SET statement_timeout = 0",
                "set standard_conforming_strings = off",
                "SET SESSION max_statement_time = 0",
                "SET sql_mode = 'ANSI_QUOTES'",
                "SET @x := :a",
                "RESET ALL",
                "  -- why\n /* not */ (SET x = 1)",
                "((reset statement_timeout))",
            ] {
                let e = rw(sql, d).unwrap_err();
                assert!(
                    e.contains("is not allowed") && e.contains("pins their session settings"),
                    "{sql:?} ({d:?}): {e}"
                );
            }
            // The words elsewhere are not statements.
            ok("UPDATE t SET reset = 1 WHERE x = :a", d);
            ok("SELECT 'SET x = 1', settings FROM t", d);
        }
        // Behind a comment each dialect reads as one.
        assert!(rw("# note\nSET @@session.sql_mode = ''", MySql).is_err());
        assert!(rw("/* /* */ */ SET statement_timeout = 0", Postgres).is_err());
        // PostgreSQL: set_config() and the pg_settings view change them from
        // a query; DO runs code the scan does not read.
        for sql in [
            "SELECT set_config('statement_timeout', '0', false)",
            "SELECT pg_catalog.SET_CONFIG('standard_conforming_strings', 'off', false)",
            "SELECT \"set_config\"('statement_timeout', '0', false)",
            "SELECT U&\"\\0073et_config\"('statement_timeout', '0', false)",
            "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
            "DO $$ BEGIN PERFORM 1; END $$",
        ] {
            assert!(rw(sql, Postgres).is_err(), "{sql:?}");
        }
        ok(
            "SELECT 'set_config', current_setting('statement_timeout'), my_set_config, set_configs -- set_config",
            Postgres,
        );
        assert_eq!(ok("SELECT $$set_config$$, :a", Postgres).1, names(&["a"]));
        // Elsewhere set_config is just a name.
        ok("SELECT set_config FROM t", MySql);
    }

    #[test]
    fn sqlite_native_placeholders_of_every_form_are_refused() {
        for sql in [
            "SELECT $1",
            "SELECT $a",
            "SELECT $::x",
            "SELECT $a(b)",
            "SELECT a$b FROM t",
            "SELECT #x",
            "SELECT #1",
            "SELECT :::x",
            "SELECT ::x",
            "SELECT :a::x",
            "SELECT :1",
            "SELECT :é",
            "SELECT @x",
        ] {
            let e = rw(sql, Sqlite).unwrap_err();
            assert!(e.contains("write placeholders as :name"), "{sql:?}: {e}");
        }
        // Inside literals, quoted names and comments they are text.
        assert_eq!(
            ok("SELECT '$1 #x :::x', \"$a\", [#b] -- $1 :1\n, :a /* #x */", Sqlite).0,
            "SELECT '$1 #x :::x', \"$a\", [#b] -- $1 :1\n, ?1 /* #x */"
        );
    }

    #[test]
    fn text_around_placeholders_is_kept_byte_for_byte() {
        let q = "SELECT 'ünïcödé', \"naïve\" FROM t WHERE a = :a AND b = 'x:y'";
        assert_eq!(ok(q, Postgres).0, "SELECT 'ünïcödé', \"naïve\" FROM t WHERE a = $1 AND b = 'x:y'");
        // A name ends at the first character that cannot be in one.
        assert_eq!(ok("a=:a||'x'", Sqlite).0, "a=?1||'x'");
    }
}
