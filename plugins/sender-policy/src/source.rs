//! Where a login's allowed senders come from. Today a flat file read
//! through `read_dirs`; the [`Source`] enum is the seam for a SQL source
//! once the host offers one.

use std::path::PathBuf;

use mailferry_plugin_sdk::{address, Host};

use crate::rules::Pattern;

/// One allowed-sender pattern and where it was found, for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: Pattern,
    /// `/auth/senders line 3`, `trusted_senders`, `the login itself`.
    pub origin: String,
}

/// A store of login → allowed senders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The senders file: `login: pattern, pattern …` lines.
    File(PathBuf),
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
        }
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
