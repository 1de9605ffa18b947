//! Compiled-plugin cache: a component is compiled by Cranelift once and the
//! native code kept in `<state>/plugin-cache/<hash>.cwasm`, keyed by the
//! component's SHA-256 and the engine's compatibility hash, so restarts load
//! plugins in milliseconds and a changed plugin or wasmtime never reuses
//! stale code.

use std::hash::{Hash, Hasher};
use std::path::Path;

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

pub fn compile(engine: &Engine, wasm: &[u8], dir: &Path) -> Result<Component> {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let key = format!("{}-{:016x}", hex::encode(Sha256::digest(wasm)), engine_hash.finish());
    let path = dir.join(format!("{key}.cwasm"));
    if path.exists() {
        // SAFETY: the file is ours (written below from Engine::precompile_component
        // for this engine configuration) and wasmtime checks its header.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled plugin cache entry")
            }
        }
    }
    let started = std::time::Instant::now();
    let compiled =
        engine.precompile_component(wasm).map_err(anyhow::Error::from).context("not a valid WebAssembly component")?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "compiled plugin");
    // A cache we cannot write is only slower, never fatal.
    if let Err(e) = write_atomic(dir, &path, &compiled) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write plugin cache");
    }
    // SAFETY: produced just above by the same engine.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // `sudo mailferry check` must not leave the service a cache it cannot
    // write to.
    crate::files::create_dir_all(dir, 0o755)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    crate::files::inherit_owner(&tmp)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_once_then_loads_and_survives_a_corrupt_entry() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        // The smallest component: no imports, no exports.
        let wasm = b"\0asm\x0d\0\x01\0";
        compile(&engine, wasm, dir.path()).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "one cache file: {entries:?}");
        let modified = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
        compile(&engine, wasm, dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), modified, "loaded, not rewritten");
        std::fs::write(&entries[0], b"garbage").unwrap();
        compile(&engine, wasm, dir.path()).unwrap();
        assert_ne!(std::fs::read(&entries[0]).unwrap(), b"garbage", "a corrupt entry is replaced");
        assert!(compile(&engine, b"not wasm", dir.path()).is_err());
    }
}
