//! The glue between the host's calls and a [`Plugin`]: configuration
//! parsing, creating the instance, and telling "not implemented" apart from
//! `continue`. Shared by the WebAssembly export glue and the test host, so
//! native tests exercise the same path the server does.

use std::cell::Cell;

use serde::de::{DeserializeOwned, IntoDeserializer};

use crate::{Host, Plugin, Verdict};

thread_local! {
    // Set by the trait's default hook bodies. A flag rather than a hidden
    // Verdict variant keeps `Verdict` a plain five-case enum for authors.
    static NOT_IMPLEMENTED: Cell<bool> = const { Cell::new(false) };
}

/// What the default hook bodies return: `Continue`, flagged so the glue
/// answers `none` and the host stops calling this hook for this plugin.
pub(crate) fn not_implemented() -> Verdict {
    NOT_IMPLEMENTED.with(|flag| flag.set(true));
    Verdict::Continue
}

/// Runs one hook; `None` if it was the trait's default (not implemented).
pub(crate) fn observe(hook: impl FnOnce() -> Verdict) -> Option<Verdict> {
    NOT_IMPLEMENTED.with(|flag| flag.set(false));
    let verdict = hook();
    let defaulted = NOT_IMPLEMENTED.with(|flag| flag.replace(false));
    (!defaulted).then_some(verdict)
}

/// Reads a plugin's configuration table (TOML text, as the host hands it
/// over) into `C`.
///
/// An empty table is accepted by unit-like configurations (`()`, `struct
/// NoConfig;`) as well as by structs whose fields all have defaults.
///
/// ```
/// # use mailferry_plugin_sdk::parse_config;
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Config { #[serde(default)] relay: Option<String> }
/// assert_eq!(parse_config::<Config>("").unwrap(), Config { relay: None });
/// assert_eq!(parse_config::<()>("").unwrap(), ());
/// assert!(parse_config::<()>("x = 1").is_err());
/// ```
pub fn parse_config<C: DeserializeOwned>(toml_text: &str) -> Result<C, String> {
    match toml::from_str::<C>(toml_text) {
        Ok(config) => Ok(config),
        Err(table_error) => {
            // A TOML document is always a table, which unit types refuse;
            // let an empty one stand for "no settings".
            let empty = toml::from_str::<toml::Table>(toml_text).is_ok_and(|t| t.is_empty());
            if empty {
                if let Ok(config) =
                    C::deserialize(().into_deserializer() as serde::de::value::UnitDeserializer<toml::de::Error>)
                {
                    return Ok(config);
                }
            }
            Err(format!("invalid configuration: {table_error}"))
        }
    }
}

/// Creates the plugin from its configuration, as the host's first hook
/// call on an instance does.
pub(crate) fn instantiate<P: Plugin>(host: &Host) -> Result<P, String> {
    let config = parse_config::<P::Config>(&host.backend.config())?;
    P::new(config, host)
}
