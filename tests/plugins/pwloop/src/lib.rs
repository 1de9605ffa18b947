//! Test plugin: in `auth`, asks the host to verify the password `checks`
//! times (against `{PLAIN}x`), then accepts. For testing the bound on slow
//! host calls per hook call. Needs `grants = ["password"]`.

use mailferry_plugin_sdk::{export_plugin, Host, Plugin, Verdict};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    checks: u32,
}

pub struct PwLoop {
    checks: u32,
}

impl Plugin for PwLoop {
    type Config = Config;

    fn new(c: Config, _host: &Host) -> Result<Self, String> {
        Ok(PwLoop { checks: c.checks })
    }

    fn auth(&self, host: &Host, _mechanism: &str, _login: &str, password: &str) -> Verdict {
        for _ in 0..self.checks {
            let _ = host.verify_password(password, "{PLAIN}x");
        }
        Verdict::accept()
    }
}

export_plugin!(PwLoop);
