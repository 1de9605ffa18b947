//! Test plugin: runs an SQL statement at MAIL FROM, with the sender bound
//! to `:sender`, and logs what came back, for testing the host's `sql`
//! capability (grants, limits, values, errors). The sender's local part
//! picks the statement.
//!
//! ```toml
//! grants = ["sql:probe"]
//! [plugins.config.statements.types]      # MAIL FROM:<types@…>
//! database = "probe"
//! sql = "SELECT … WHERE x = :sender"
//! repeat = 1                             # run it this many times in the one hook call
//! ```
//!
//! Logs `sql ok columns=[…] rows=[…] affected=N` or `sql error
//! temporary=… message=…`; an error answers 451 (temporary) or 550.

use std::collections::BTreeMap;

use mailferry_plugin_sdk::{export_plugin, Address, Host, Plugin, SqlValue, Verdict};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    statements: BTreeMap<String, Statement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    database: String,
    sql: String,
    #[serde(default = "one")]
    repeat: u32,
}

fn one() -> u32 {
    1
}

pub struct SqlProbe(Config);

impl Plugin for SqlProbe {
    type Config = Config;

    fn new(config: Config, _host: &Host) -> Result<Self, String> {
        Ok(SqlProbe(config))
    }

    fn mail(&self, host: &Host, sender: &Address) -> Verdict {
        let Some(statement) = sender.local_part().and_then(|l| self.0.statements.get(l)) else {
            return Verdict::Continue;
        };
        for _ in 0..statement.repeat {
            let params = [("sender", SqlValue::from(sender.address.as_str()))];
            match host.sql_query(&statement.database, &statement.sql, &params) {
                Ok(rows) => host.info(format!(
                    "sql ok columns={:?} rows={:?} affected={}",
                    rows.columns, rows.rows, rows.affected
                )),
                Err(e) => {
                    host.info(format!("sql error temporary={} message={}", e.temporary, e.message));
                    return if e.temporary {
                        Verdict::deny_soft(451, "4.3.0", "sql temporary")
                    } else {
                        Verdict::deny(550, "5.3.0", "sql permanent")
                    };
                }
            }
        }
        Verdict::Continue
    }
}

export_plugin!(SqlProbe);
