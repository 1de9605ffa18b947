//! `mailferry check`: loads everything `serve` would (certificates,
//! plugins, keys), tries each database once, and says what it found.

use std::sync::Arc;

use anyhow::Result;

use super::runtime;
use crate::{config, dkim, net, pipeline, sql};

pub(super) fn run(config: config::Config) -> Result<()> {
    let services = Arc::new(pipeline::Services::from_config(&config)?);
    for w in &services.dkim.current().warnings {
        println!("warning: {w}");
    }
    if net::tls::configured(&config) {
        let certs = net::tls::load(&config)?;
        for line in net::tls::describe(&certs) {
            println!("{line}");
        }
    } else if net::needs_tls(&config) {
        println!(
            "warning: no tls.cert/tls.key: serve will use a self-signed certificate, which Gmail and most clients refuse"
        );
    }
    let rt = runtime()?;
    let pipeline = rt.block_on(pipeline::Pipeline::start(Arc::new(config.clone()), services))?;
    let keys = dkim::KeyStore::load(&config.dkim.keys).map_err(anyhow::Error::msg)?;
    rt.block_on(check_databases(&config));
    println!(
        "{}: OK ({} listeners; plugins: {}; relays: {}; DKIM keys: {})",
        config.file.display(),
        config.listeners.len(),
        pipeline.plugin_names().join(", "),
        config.relays.keys().cloned().collect::<Vec<_>>().join(", "),
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.all().map(|k| format!("{}/{}", k.domain, k.selector)).collect::<Vec<_>>().join(", ")
        }
    );
    Ok(())
}

/// Tries each database once: one that cannot be reached now is a warning,
/// not an error (it may be down for a moment; logins fail with 454 meanwhile).
async fn check_databases(config: &config::Config) {
    let databases = sql::Databases::from_config(config, None);
    for db in databases.iter() {
        let what = format!("database {} ({})", db.name, db.config.kind.label());
        match db.query("SELECT 1 AS ok", &[]).await {
            // Only looked at: check changes nothing.
            Ok(_) if db.config.migrate => match sql::users::schema_version(db).await {
                Ok(v) if v == sql::users::latest_version() => {
                    println!("{what}: reachable; users table at schema version {v}")
                }
                Ok(v) => println!(
                    "{what}: reachable; users table at schema version {v}, serve upgrades it to {}",
                    sql::users::latest_version()
                ),
                Err(_) => println!("{what}: reachable; no users table yet (serve or `mailferry user add` creates it)"),
            },
            Ok(_) => println!("{what}: reachable"),
            Err(e) => println!("warning: {what}: {e}"),
        }
    }
}
