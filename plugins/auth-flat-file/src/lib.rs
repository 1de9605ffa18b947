//! `auth-flat-file`: SMTP AUTH against a Dovecot-compatible passwd file.
//!
//! # Configuration
//!
//! | Key | Default | Meaning |
//! |-----|---------|---------|
//! | `users` | `"/auth/users"` | Path of the users file *inside the sandbox* |
//! | `dummy_hash` | an argon2id hash (m=19456, t=2, p=1) | Checked for unknown logins so timing does not tell which logins exist; set it to a hash of the same scheme and cost as your entries |
//!
//! The plugin needs the `password` grant, and a read-only folder with the
//! file: with `read_dirs = ["auth"]` the host mounts `<config folder>/auth`
//! at `/auth` in the sandbox.
//!
//! ```toml
//! [[plugins]]
//! name = "auth-flat-file"
//! grants = ["password"]
//! read_dirs = ["auth"]
//! config = { users = "/auth/users" }
//! ```
//!
//! # File format
//!
//! One entry per line, `login:stored-hash`, optionally followed by more
//! `:`-separated fields (uid, gid, home, … as in Dovecot's passwd-file),
//! which are ignored. Blank lines and lines starting with `#` are skipped.
//! The stored hash is anything the host's password capability verifies:
//! `$argon2id$…`, `$2b$…` (bcrypt), `$6$…`/`$5$…` (SHA-crypt), `$1$…`
//! (MD5-crypt, weak: for old entries only), each optionally behind a
//! Dovecot `{SCHEME}` prefix, or `{PLAIN}cleartext` (accepted, with a
//! warning).
//!
//! Logins match exactly after trimming surrounding whitespace, except that
//! the domain of `user@domain` compares case-insensitively. The first
//! matching line wins. The file is read on every attempt, so edits apply to
//! the next login without a restart.
//!
//! # Outcomes
//!
//! | Situation | Verdict |
//! |-----------|---------|
//! | Known login, right password | `accept` |
//! | Known login, wrong password | `deny` 535 5.7.8 |
//! | Unknown login | `continue` (after checking the dummy hash), so a later auth plugin may know it; the host answers 535 if none does |
//! | Stored hash malformed or of an unknown scheme | `deny-soft` 454 4.7.0, error logged with the line number |
//! | Users file missing or unreadable | `deny-soft` 454 4.7.0, error logged |
//!
//! Lines that are not `login:hash` are logged as errors (with their line
//! number) and skipped. Passwords and hashes are never logged.

use std::cell::Cell;
use std::path::PathBuf;

use mailferry_plugin_sdk::{address, export_plugin, Host, Plugin, Verdict};
use serde::Deserialize;

/// Verified for unknown logins. The password it was made from was random
/// and thrown away, so nothing matches it.
const DEFAULT_DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$5pFblK3oUfhc5XXr/iN3yg$Mnbfhz1/1HQgZR6Br2s7OmtHXOqDHK75QsMrX0DtF8U";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_users")]
    pub users: String,
    #[serde(default = "default_dummy_hash")]
    pub dummy_hash: String,
}

fn default_users() -> String {
    "/auth/users".into()
}

fn default_dummy_hash() -> String {
    DEFAULT_DUMMY_HASH.into()
}

pub struct AuthFlatFile {
    users: PathBuf,
    dummy_hash: String,
    /// Cleartext entries are reported once per connection, not per attempt.
    warned_plain: Cell<bool>,
}

/// The entry found for a login.
struct Entry<'a> {
    line: usize,
    stored: &'a str,
}

impl Plugin for AuthFlatFile {
    type Config = Config;

    fn new(config: Config, _host: &Host) -> Result<Self, String> {
        if config.users.trim().is_empty() {
            return Err("`users` must name the users file".into());
        }
        Ok(AuthFlatFile {
            users: PathBuf::from(config.users),
            dummy_hash: config.dummy_hash,
            warned_plain: Cell::new(false),
        })
    }

    fn auth(&self, host: &Host, _mechanism: &str, login: &str, password: &str) -> Verdict {
        let text = match std::fs::read_to_string(&self.users) {
            Ok(text) => text,
            Err(e) => {
                host.error(format!("cannot read users file {}: {e}", self.users.display()));
                return temporary_failure();
            }
        };
        let Some(entry) = self.find(host, &text, login) else {
            // Same work as for a known login, so response time does not
            // reveal which logins exist. The result is meaningless.
            if let Err(e) = host.verify_password(password, &self.dummy_hash) {
                host.error(format!("dummy_hash cannot be verified: {e}"));
            }
            host.debug(format!("no entry for login {login:?} in {}", self.users.display()));
            return Verdict::Continue;
        };
        match host.verify_password(password, entry.stored) {
            Ok(true) => {
                host.info(format!("login {login:?} authenticated ({} line {})", self.users.display(), entry.line));
                Verdict::accept()
            }
            Ok(false) => {
                host.info(format!("wrong password for login {login:?}"));
                Verdict::deny(535, "5.7.8", "authentication credentials invalid")
            }
            Err(e) => {
                host.error(format!(
                    "{} line {}: cannot verify the stored hash of {login:?}: {e}",
                    self.users.display(),
                    entry.line
                ));
                temporary_failure()
            }
        }
    }
}

impl AuthFlatFile {
    /// The first entry for `login`, logging malformed lines and (once)
    /// cleartext entries on the way.
    fn find<'t>(&self, host: &Host, text: &'t str, login: &str) -> Option<Entry<'t>> {
        let login = login.trim();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((name, rest)) = trimmed.split_once(':') else {
                host.error(format!("{} line {line}: expected login:hash, skipped", self.users.display()));
                continue;
            };
            let name = name.trim();
            if name.is_empty() {
                host.error(format!("{} line {line}: empty login, skipped", self.users.display()));
                continue;
            }
            // Fields after the hash (uid, gid, home, …) are Dovecot's.
            let stored = rest.split(':').next().unwrap_or_default().trim();
            self.warn_if_cleartext(host, stored, line);
            if address::same_mailbox(name, login) {
                return Some(Entry { line, stored });
            }
        }
        None
    }

    fn warn_if_cleartext(&self, host: &Host, stored: &str, line: usize) {
        if self.warned_plain.get() {
            return;
        }
        let scheme = stored.strip_prefix('{').and_then(|s| s.split_once('}')).map(|(scheme, _)| scheme);
        if scheme.is_some_and(|s| ["PLAIN", "CLEAR", "CLEARTEXT"].iter().any(|p| s.eq_ignore_ascii_case(p))) {
            self.warned_plain.set(true);
            host.warn(format!(
                "{} line {line} stores a cleartext password; store an argon2id hash instead (`mailferry hash-password`)",
                self.users.display()
            ));
        }
    }
}

fn temporary_failure() -> Verdict {
    Verdict::deny_soft(454, "4.7.0", "temporary authentication failure")
}

export_plugin!(AuthFlatFile);

#[cfg(test)]
mod tests {
    use std::io::Write;

    use mailferry_plugin_sdk::testing::{TestHost, TestPlugin};
    use mailferry_plugin_sdk::{Level, Reply};

    use super::*;

    /// Stands in for the host's verifier: `{PLAIN}`, a fake
    /// `$test$<password>` scheme, and argon2id (the dummy hash, which never
    /// matches). Anything else is an unknown scheme, as in the host.
    fn verifier(password: &str, stored: &str) -> Result<bool, String> {
        if let Some(expected) = stored.strip_prefix("$test$") {
            return Ok(expected == password);
        }
        if let Some(expected) = stored.strip_prefix("{PLAIN}") {
            return Ok(expected == password);
        }
        if stored.starts_with("$argon2id$") {
            return Ok(false);
        }
        Err("unknown password scheme".into())
    }

    fn users_file(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        file
    }

    fn setup(content: &str) -> (TestHost, TestPlugin<AuthFlatFile>, tempfile::NamedTempFile) {
        let file = users_file(content);
        let host = TestHost::new()
            .config_toml(&format!("users = {:?}", file.path().to_str().unwrap()))
            .password_verifier(verifier);
        let plugin = host.instantiate::<AuthFlatFile>().unwrap();
        (host, plugin, file)
    }

    const USERS: &str = "\
# mailferry users
alice:$test$wonderland

  bob@Example.ORG : $test$builder :1000:1000::/home/bob:/bin/false
carol:{PLAIN}secret
broken line without colon
dave:$md5$unknown
";

    fn deny_535() -> Option<Verdict> {
        Some(Verdict::deny(535, "5.7.8", "authentication credentials invalid"))
    }

    fn deny_454() -> Option<Verdict> {
        Some(Verdict::DenySoft(Some(Reply::new(454, "4.7.0", "temporary authentication failure"))))
    }

    #[test]
    fn right_password_accepts() {
        let (host, p, _f) = setup(USERS);
        assert_eq!(p.auth("PLAIN", "alice", "wonderland"), Some(Verdict::accept()));
        host.assert_logged(Level::Info, "login \"alice\" authenticated");
        assert_eq!(host.password_checks().len(), 1);
        assert_eq!(host.password_checks()[0].stored, "$test$wonderland");
    }

    #[test]
    fn wrong_password_denies_with_535() {
        let (host, p, _f) = setup(USERS);
        assert_eq!(p.auth("LOGIN", "alice", "looking-glass"), deny_535());
        host.assert_logged(Level::Info, "wrong password for login \"alice\"");
        assert!(!host.logs().iter().any(|r| r.message.contains("looking-glass")), "passwords must not be logged");
    }

    #[test]
    fn unknown_login_checks_the_dummy_hash_then_continues() {
        let (host, p, _f) = setup(USERS);
        assert_eq!(p.auth("PLAIN", "mallory", "guess"), Some(Verdict::Continue));
        let checks = host.password_checks();
        assert_eq!(checks.len(), 1, "exactly one verification, like a known login");
        assert_eq!(checks[0].password, "guess");
        assert_eq!(checks[0].stored, DEFAULT_DUMMY_HASH);
    }

    #[test]
    fn domain_compares_case_insensitively_but_local_part_and_plain_logins_do_not() {
        let (_host, p, _f) = setup(USERS);
        assert_eq!(p.auth("PLAIN", "bob@example.org", "builder"), Some(Verdict::accept()));
        assert_eq!(p.auth("PLAIN", " bob@EXAMPLE.org ", "builder"), Some(Verdict::accept()));
        assert_eq!(p.auth("PLAIN", "Bob@example.org", "builder"), Some(Verdict::Continue));
        assert_eq!(p.auth("PLAIN", "Alice", "wonderland"), Some(Verdict::Continue));
        assert_eq!(p.auth("PLAIN", "alice@example.org", "wonderland"), Some(Verdict::Continue));
    }

    #[test]
    fn extra_fields_are_ignored() {
        let (host, p, _f) = setup(USERS);
        assert_eq!(p.auth("PLAIN", "bob@example.org", "builder"), Some(Verdict::accept()));
        assert_eq!(host.password_checks()[0].stored, "$test$builder");
    }

    #[test]
    fn unverifiable_hash_is_a_temporary_failure_naming_the_line() {
        let (host, p, _f) = setup(USERS);
        assert_eq!(p.auth("PLAIN", "dave", "x"), deny_454());
        host.assert_logged(Level::Error, "line 7: cannot verify the stored hash of \"dave\": unknown password scheme");
        assert!(!host.logs().iter().any(|r| r.message.contains("$md5$unknown")), "hashes must not be logged");
    }

    #[test]
    fn empty_hash_is_a_temporary_failure() {
        let (host, p, _f) = setup("erin:\n");
        assert_eq!(p.auth("PLAIN", "erin", ""), deny_454());
        host.assert_logged(Level::Error, "line 1: cannot verify");
    }

    #[test]
    fn malformed_lines_are_logged_and_skipped() {
        let (host, p, _f) = setup(USERS);
        assert_eq!(p.auth("PLAIN", "dave", "x"), deny_454());
        host.assert_logged(Level::Error, "line 6: expected login:hash, skipped");
        let (host, p, _f) = setup(":$test$x\nalice:$test$a\n");
        assert_eq!(p.auth("PLAIN", "alice", "a"), Some(Verdict::accept()));
        host.assert_logged(Level::Error, "line 1: empty login, skipped");
    }

    #[test]
    fn cleartext_entries_work_and_warn_once_per_instance() {
        let (host, p, _f) = setup(USERS);
        assert_eq!(p.auth("PLAIN", "carol", "secret"), Some(Verdict::accept()));
        assert_eq!(p.auth("PLAIN", "carol", "wrong"), deny_535());
        assert_eq!(p.auth("PLAIN", "nobody", "x"), Some(Verdict::Continue));
        let warnings: Vec<_> = host.logs().into_iter().filter(|r| r.level == Level::Warn).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].message.contains("line 5 stores a cleartext password"));
        // A fresh instance (a new connection) warns again.
        host.instantiate::<AuthFlatFile>().unwrap().auth("PLAIN", "carol", "secret");
        assert_eq!(host.logs().iter().filter(|r| r.level == Level::Warn).count(), 2);
    }

    #[test]
    fn no_cleartext_warning_without_cleartext_entries() {
        let (host, p, _f) = setup("alice:$test$a\n");
        p.auth("PLAIN", "alice", "a");
        p.auth("PLAIN", "zed", "a");
        assert!(!host.logs().iter().any(|r| r.level == Level::Warn));
    }

    #[test]
    fn missing_file_is_a_temporary_failure() {
        let host = TestHost::new().config_toml(r#"users = "/nonexistent/mailferry/users""#).password_verifier(verifier);
        let p = host.instantiate::<AuthFlatFile>().unwrap();
        assert_eq!(p.auth("PLAIN", "alice", "wonderland"), deny_454());
        host.assert_logged(Level::Error, "cannot read users file /nonexistent/mailferry/users");
        assert!(host.password_checks().is_empty());
    }

    #[test]
    fn file_is_reread_on_every_attempt() {
        let (_host, p, file) = setup("alice:$test$old\n");
        assert_eq!(p.auth("PLAIN", "alice", "old"), Some(Verdict::accept()));
        std::fs::write(file.path(), "alice:$test$new\n").unwrap();
        assert_eq!(p.auth("PLAIN", "alice", "old"), deny_535());
        assert_eq!(p.auth("PLAIN", "alice", "new"), Some(Verdict::accept()));
    }

    #[test]
    fn first_matching_line_wins() {
        let (_host, p, _f) = setup("alice:$test$first\nalice:$test$second\n");
        assert_eq!(p.auth("PLAIN", "alice", "first"), Some(Verdict::accept()));
        assert_eq!(p.auth("PLAIN", "alice", "second"), deny_535());
    }

    #[test]
    fn configuration_defaults_and_errors() {
        let p = TestHost::new().instantiate::<AuthFlatFile>().unwrap();
        assert_eq!(p.plugin().users, PathBuf::from("/auth/users"));
        assert_eq!(p.plugin().dummy_hash, DEFAULT_DUMMY_HASH);
        let custom = TestHost::new().config_toml("dummy_hash = \"$2b$12$x\"").instantiate::<AuthFlatFile>().unwrap();
        assert_eq!(custom.plugin().dummy_hash, "$2b$12$x");
        assert!(TestHost::new().config_toml("user = \"/x\"").instantiate::<AuthFlatFile>().is_err());
        assert!(TestHost::new().config_toml("users = \"\"").instantiate::<AuthFlatFile>().is_err());
    }

    #[test]
    fn only_auth_is_implemented() {
        let p = TestHost::new().instantiate::<AuthFlatFile>().unwrap();
        assert_eq!(p.connect(), None);
        assert_eq!(p.mail("a@example.org"), None);
        assert_eq!(p.rcpt("a@example.org"), None);
    }
}
