//! `[databases.NAME]`.

use super::*;

impl Resolver<'_> {
    pub(crate) fn database(&mut self, name: &str, r: RawDatabase) -> Option<Database> {
        let key = format!("databases.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.error(format!("[{key}]: a database name is letters, digits, '-' and '_'"));
            return None;
        }
        let url = self.string(&format!("{key}.url"), Some(r.url))?;
        let password = self.string(&format!("{key}.password"), r.password);
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        let (kind, url) = match scheme.as_str() {
            "sqlite" => {
                let path = url["sqlite:".len()..].trim_start_matches("//");
                if path.is_empty() || path.contains('?') || path == ":memory:" {
                    self.error(format!(
                        "{key}.url = {url:?}: write \"sqlite://FILE\" (relative to the config folder, or \"sqlite:///var/lib/mailferry/users.db\"), without ?options"
                    ));
                    return None;
                }
                if password.is_some() {
                    self.error(format!("{key}.password: SQLite files have no password"));
                }
                let path = self.path(path);
                (DatabaseKind::Sqlite(path.clone()), path.display().to_string())
            }
            "postgres" | "postgresql" => (DatabaseKind::Postgres, url),
            "mysql" | "mariadb" => (DatabaseKind::MySql, url),
            _ => {
                self.error(format!(
                    "{key}.url = {:?}: use \"sqlite://FILE\", \"postgres://USER@HOST/DB\" or \"mysql://USER@HOST/DB\"",
                    redact_url(&url)
                ));
                return None;
            }
        };
        if !matches!(kind, DatabaseKind::Sqlite(_)) {
            if let Err(e) = check_database_url(&kind, &url) {
                self.error(format!("{key}.url = {:?}: {e}", redact_url(&url)));
                return None;
            }
        }
        let db = Database {
            kind,
            url,
            password,
            max_connections: r.max_connections.unwrap_or(defaults::DB_MAX_CONNECTIONS),
            query_timeout: Duration::from_millis(r.query_timeout_ms.unwrap_or(defaults::QUERY_TIMEOUT_MS)),
            max_rows: r.max_rows.unwrap_or(defaults::MAX_ROWS),
            max_result_bytes: r.max_result_bytes.unwrap_or(defaults::MAX_RESULT_BYTES),
            migrate: r.migrate.unwrap_or(false),
        };
        if db.max_connections == 0 {
            self.error(format!("{key}.max_connections must be at least 1"));
        }
        if db.query_timeout.is_zero() {
            self.error(format!("{key}.query_timeout_ms must be above 0"));
        }
        if db.max_rows == 0 || db.max_result_bytes < 1024 {
            self.error(format!("{key}: max_rows must be at least 1 and max_result_bytes at least 1024"));
        }
        Some(db)
    }
}
