//! Where a login's allowed senders come from: a flat file read through
//! `read_dirs`, or the `auth.senders` note `auth-sql` sets from the
//! login's database row.

use std::path::PathBuf;

use mailferry_plugin_sdk::{address, Host, NoteValue, Scope};

use crate::rules::Pattern;

/// One allowed-sender pattern and where it was found, for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: Pattern,
    /// `/auth/senders line 3`, `trusted_senders`, `the login itself`.
    pub origin: String,
}

/// The connection note `auth-sql` sets after a login: the `senders`
/// column of the user's row.
pub const SENDERS_NOTE: &str = "auth.senders";

/// Where rules from the note came from, for the logs.
const NOTE_ORIGIN: &str = "database (auth.senders)";

/// A store of login → allowed senders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The senders file: `login: pattern, pattern …` lines.
    File(PathBuf),
    /// The connection note `auth.senders`.
    Sql,
}

impl Source {
    /// The rules listed for `login`. `Err` when the store cannot be read;
    /// the caller answers 4xx, since the login's rights are unknown, not absent.
    pub fn rules_for(&self, host: &Host, login: &str) -> Result<Vec<Rule>, String> {
        match self {
            Source::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read senders file {}: {e}", path.display()))?;
                Ok(parse_file(host, &path.display().to_string(), &text, login))
            }
            // The note is the login's own (the connection's, set when it
            // logged in), so it is not looked up by login. It never fails:
            // without it the login has no senders from the database.
            Source::Sql => Ok(parse_note(host, host.note(Scope::Connection, SENDERS_NOTE), login)),
        }
    }

    /// Where an administrator lists a login's senders, for the log.
    pub fn where_listed(&self) -> &'static str {
        match self {
            Source::File(_) => "the senders file",
            Source::Sql => "the login's senders column",
        }
    }
}

/// The rules of the `auth.senders` note. Entries that are not patterns are
/// logged and skipped, as in the file.
pub fn parse_note(host: &Host, note: Option<NoteValue>, login: &str) -> Vec<Rule> {
    let entries = match note {
        None => {
            // A NULL senders column, or a login another plugin accepted.
            host.debug(format!("no {SENDERS_NOTE} note for login {login:?}: no senders from the database"));
            return Vec::new();
        }
        Some(NoteValue::Texts(entries)) => entries,
        Some(NoteValue::Text(text)) => vec![text],
        Some(other) => {
            host.error(format!("{NOTE_ORIGIN}: the note is not a list of texts ({other:?}); ignored"));
            return Vec::new();
        }
    };
    let mut rules = Vec::new();
    for item in entries.iter().flat_map(|e| e.split(|c: char| c == ',' || c.is_whitespace())).filter(|s| !s.is_empty())
    {
        match note_pattern(item) {
            Ok(pattern) => rules.push(Rule { pattern, origin: NOTE_ORIGIN.into() }),
            Err(e) => host.error(format!("{NOTE_ORIGIN} of login {login:?}: {e}; skipped")),
        }
    }
    rules
}

/// A pattern of the file, or `@domain` for `*@domain` (how the `senders`
/// column names a whole domain).
fn note_pattern(entry: &str) -> Result<Pattern, String> {
    match entry.strip_prefix('@') {
        Some(domain) => Pattern::parse(&format!("*@{domain}"))
            .map_err(|_| format!("{entry:?} is not an address, @domain, *@domain, *@*.domain or *")),
        None => Pattern::parse(entry),
    }
}

/// The rules of every line for `login` in a senders file. Lines for the
/// same login add up. Malformed lines and patterns are logged with their
/// line number and skipped: a skipped pattern can only take a right away,
/// never grant one.
pub fn parse_file(host: &Host, name: &str, text: &str, login: &str) -> Vec<Rule> {
    let login = login.trim();
    let mut rules = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, list)) = trimmed.split_once(':') else {
            host.error(format!("{name} line {line}: expected `login: sender, sender …`, skipped"));
            continue;
        };
        let key = key.trim();
        if key.is_empty() {
            host.error(format!("{name} line {line}: empty login, skipped"));
            continue;
        }
        // The same comparison auth-flat-file uses to find the login.
        if !address::same_mailbox(key, login) {
            continue;
        }
        for item in list.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()) {
            match Pattern::parse(item) {
                Ok(pattern) => rules.push(Rule { pattern, origin: format!("{name} line {line}") }),
                Err(e) => host.error(format!("{name} line {line}: {e}; skipped")),
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use mailferry_plugin_sdk::testing::TestHost;
    use mailferry_plugin_sdk::Level;

    use super::*;

    const FILE: &str = "\
# login: allowed senders
alice@example.com: sales@example.com, alice.smith@example.com
bob@Example.com:*@example.org  info@example.net
Alice@example.com: ceo@example.com
alice@EXAMPLE.com: a*b@example.com,, support@example.com
no colon here
: orphan@example.com
alice@example.com:
";

    fn patterns(login: &str) -> (TestHost, Vec<String>) {
        let host = TestHost::new();
        let rules = parse_file(&host.host(), "/auth/senders", FILE, login);
        (host, rules.iter().map(|r| format!("{} ({})", r.pattern, r.origin)).collect())
    }

    #[test]
    fn lines_for_a_login_add_up_and_others_are_ignored() {
        let (_, alice) = patterns("alice@example.com");
        assert_eq!(
            alice,
            [
                "sales@example.com (/auth/senders line 2)",
                "alice.smith@example.com (/auth/senders line 2)",
                "support@example.com (/auth/senders line 5)",
            ]
        );
        let (_, bob) = patterns("bob@example.COM");
        assert_eq!(bob, ["*@example.org (/auth/senders line 3)", "info@example.net (/auth/senders line 3)"]);
        // Local parts of logins compare exactly, as in auth-flat-file: the
        // line for Alice@ is not alice@'s.
        let (_, upper) = patterns("Alice@example.com");
        assert_eq!(upper, ["ceo@example.com (/auth/senders line 4)"]);
        let (_, none) = patterns("mallory@example.com");
        assert!(none.is_empty());
    }

    #[test]
    fn note_entries_become_patterns() {
        let host = TestHost::new();
        let note = NoteValue::Texts(vec![
            "Sales@Example.com".into(),
            "@example.net".into(),
            "@*.lists.example.com, *@example.org".into(),
            "*".into(),
        ]);
        let rules = parse_note(&host.host(), Some(note), "alice@example.com");
        let shown: Vec<String> = rules.iter().map(|r| format!("{} ({})", r.pattern, r.origin)).collect();
        assert_eq!(
            shown,
            [
                "Sales@example.com (database (auth.senders))",
                "*@example.net (database (auth.senders))",
                "*@*.lists.example.com (database (auth.senders))",
                "*@example.org (database (auth.senders))",
                "* (database (auth.senders))",
            ]
        );
        assert!(host.logs().is_empty());
    }

    #[test]
    fn a_missing_or_odd_note_gives_nothing_and_bad_entries_are_skipped() {
        let host = TestHost::new();
        assert!(parse_note(&host.host(), None, "alice@example.com").is_empty());
        host.assert_logged(Level::Debug, "no auth.senders note for login \"alice@example.com\"");
        assert!(host.logs().iter().all(|r| r.level == Level::Debug));
        assert!(parse_note(&host.host(), Some(NoteValue::Integer(7)), "alice@example.com").is_empty());
        host.assert_logged(Level::Error, "database (auth.senders): the note is not a list of texts");
        let text = NoteValue::Text("@, alice, a*b@example.com @@example.com ok@example.com".into());
        let rules = parse_note(&host.host(), Some(text), "alice@example.com");
        assert_eq!(rules.iter().map(|r| r.pattern.to_string()).collect::<Vec<_>>(), ["ok@example.com"]);
        for bad in [
            "\"@\" is not an address, @domain",
            "\"alice\" is not an address",
            "\"a*b@example.com\"",
            "\"@@example.com\"",
        ] {
            host.assert_logged(Level::Error, &format!("database (auth.senders) of login \"alice@example.com\": {bad}"));
        }
    }

    #[test]
    fn malformed_lines_and_patterns_are_logged_and_skipped() {
        let (host, _) = patterns("alice@example.com");
        host.assert_logged(Level::Error, "/auth/senders line 5: \"a*b@example.com\"");
        host.assert_logged(Level::Error, "/auth/senders line 6: expected `login: sender, sender …`, skipped");
        host.assert_logged(Level::Error, "/auth/senders line 7: empty login, skipped");
        // Another login's malformed pattern is not its business.
        let (host, _) = patterns("bob@example.com");
        assert!(!host.logged(Level::Error, "line 5"));
    }
}
