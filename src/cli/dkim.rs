//! `mailferry dkim`: create signing keys, list them with their records.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Subcommand;

use super::{keys_dir, ConfigArg};
use crate::dkim;

#[derive(Subcommand)]
pub(super) enum DkimCmd {
    /// Create a signing key where the server looks for it (`dkim.keys`) and
    /// print the DNS record to publish.
    Keygen {
        /// The signing domain: the domain of the From: addresses.
        #[arg(long)]
        domain: String,
        /// The selector; by default `mf<YYYYMM>` (`mf<YYYYMM>e` for Ed25519).
        #[arg(long)]
        selector: Option<String>,
        /// rsa2048 (accepted everywhere), rsa4096, or ed25519 (RFC 8463;
        /// sign with it beside an RSA key, as not every receiver checks it).
        #[arg(long, default_value = "rsa2048")]
        algorithm: String,
        /// The keys folder, instead of `dkim.keys` of the configuration.
        #[arg(long)]
        keys: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the loaded keys and their DNS records.
    List {
        #[arg(long)]
        keys: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub(super) fn run(action: DkimCmd) -> Result<()> {
    match action {
        DkimCmd::Keygen { domain, selector, algorithm, keys, config } => {
            let kind = dkim::keygen::KeyKind::parse(&algorithm)
                .with_context(|| format!("--algorithm {algorithm:?}: use rsa2048, rsa4096 or ed25519"))?;
            let dir = keys_dir(keys, &config)?;
            let selector = selector.unwrap_or_else(|| dkim::keygen::default_selector(kind));
            let info = dkim::keygen::create(&dir, &domain, &selector, kind).map_err(anyhow::Error::msg)?;
            println!("Wrote the {} key {} (readable by you only).", info.algorithm, info.path.display());
            println!();
            println!("Publish this DNS record for {}:", info.domain);
            println!();
            print!("{}", dkim::keygen::describe_record(&info));
            println!();
            println!("A running server picks the key up within seconds (or on SIGHUP). Once the record is");
            println!("published, check it with: mailferry doctor --domain {}", info.domain);
            Ok(())
        }
        DkimCmd::List { keys, config } => {
            let dir = keys_dir(keys, &config)?;
            let store = dkim::KeyStore::load(&dir).map_err(anyhow::Error::msg)?;
            for w in &store.warnings {
                println!("warning: {w}");
            }
            if store.is_empty() {
                println!(
                    "No DKIM keys in {}. Create one with: mailferry dkim keygen --domain example.com",
                    dir.display()
                );
            }
            for info in store.all() {
                println!("{}/{} ({}, {})", info.domain, info.selector, info.algorithm, info.path.display());
                print!("{}", dkim::keygen::describe_record(info));
                println!();
            }
            Ok(())
        }
    }
}
