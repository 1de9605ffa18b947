//! `mailferry user …`: edits the users file of the auth-flat-file plugin.
//!
//! The file is Dovecot passwd-file compatible (`login:hash[:extra]`); edits
//! keep comments and other lines as they are and replace the file atomically
//! (write, fsync, rename) with mode 0600, since it holds password hashes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::config::Config;

/// Finds the host path of the users file from the auth-flat-file entry:
/// its `users` setting is a path inside the plugin's sandbox, under one of
/// its `read_dirs`.
pub fn users_file(config: &Config) -> Result<PathBuf> {
    let plugin = config
        .plugins
        .iter()
        .find(|p| p.name == "auth-flat-file")
        .context("no auth-flat-file plugin in [[plugins]]: add one to manage users with this command")?;
    let guest = plugin.config.get("users").and_then(|v| v.as_str()).unwrap_or("/auth/users");
    for (host_dir, guest_dir) in &plugin.read_dirs {
        if let Some(rest) = guest.strip_prefix(guest_dir.as_str()).and_then(|r| r.strip_prefix('/')) {
            return Ok(host_dir.join(rest));
        }
    }
    bail!(
        "auth-flat-file: users = {guest:?} is not inside any of its read_dirs ({}); add the folder to read_dirs",
        plugin.read_dirs.iter().map(|(_, g)| g.as_str()).collect::<Vec<_>>().join(", ")
    )
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn login_of(line: &str) -> Option<&str> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    t.split(':').next()
}

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("users"),
        std::process::id()
    ));
    // A leftover from a crashed run would keep its old mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    crate::files::inherit_owner(&tmp)?;
    for l in lines {
        writeln!(f, "{l}")?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

pub fn validate_login(login: &str) -> Result<()> {
    if login.is_empty() || login.len() > 254 || login.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control()) {
        bail!("invalid login {login:?}: it may not be empty or contain ':' or spaces");
    }
    Ok(())
}

/// Adds a user, or with `replace`, changes an existing user's password.
pub fn set(path: &Path, login: &str, hash: &str, must_exist: bool) -> Result<()> {
    validate_login(login)?;
    let mut lines = read_lines(path)?;
    let existing = lines.iter().position(|l| login_of(l) == Some(login));
    match (existing, must_exist) {
        (Some(_), false) => bail!("user {login} already exists (use `mailferry user passwd {login}`)"),
        (None, true) => bail!("no user {login} in {}", path.display()),
        (Some(i), true) => {
            // Keep any extra fields after the hash.
            let extra: Vec<&str> = lines[i].trim().splitn(3, ':').skip(2).collect();
            lines[i] =
                if extra.is_empty() { format!("{login}:{hash}") } else { format!("{login}:{hash}:{}", extra[0]) };
        }
        (None, false) => {
            if lines.is_empty() {
                lines.push("# mailferry users: login:password-hash (Dovecot passwd-file format)".into());
            }
            lines.push(format!("{login}:{hash}"));
        }
    }
    write_lines(path, &lines)
}

pub fn remove(path: &Path, login: &str) -> Result<()> {
    let mut lines = read_lines(path)?;
    let before = lines.len();
    lines.retain(|l| login_of(l) != Some(login));
    if lines.len() == before {
        bail!("no user {login} in {}", path.display());
    }
    write_lines(path, &lines)
}

pub fn list(path: &Path) -> Result<Vec<(String, String)>> {
    Ok(read_lines(path)?
        .iter()
        .filter_map(|l| {
            let login = login_of(l)?;
            let stored = l.trim().split(':').nth(1).unwrap_or("");
            let scheme = match crate::password::identify(stored) {
                Ok((s, _)) => format!("{s:?}").to_lowercase(),
                Err(_) => "unusable hash".into(),
            };
            Some((login.to_string(), scheme))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_passwd_remove_keep_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# keep me\nbob:{PLAIN}x:extra\n").unwrap();
        set(&path, "alice@example.com", "$argon2id$fake", false).unwrap();
        assert!(set(&path, "alice@example.com", "h", false).is_err());
        set(&path, "bob", "{PLAIN}y", true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "# keep me\nbob:{PLAIN}y:extra\nalice@example.com:$argon2id$fake\n");
        remove(&path, "bob").unwrap();
        assert!(remove(&path, "bob").is_err());
        assert_eq!(list(&path).unwrap().len(), 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
