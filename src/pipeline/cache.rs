//! Compiled-plugin cache: a component is compiled by Cranelift once and the
//! native code kept in `<state>/plugin-cache/<hash>.cwasm`, keyed by the
//! component's SHA-256 and the engine's compatibility hash, so restarts load
//! plugins in milliseconds and a changed plugin or wasmtime never reuses
//! stale code.
//!
//! An entry is native code this process will run, so it is read only from
//! a folder, and a file, that no user but this one (or root) can write:
//! `sudo mailferry check` never runs code the service account could have
//! planted, and compiles in memory instead.

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
    if path.exists() && writable_only_by_us(dir, true) && writable_only_by_us(&path, false) {
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

/// Whether `path` is owned by this user or root and writable by no one
/// else. A folder is followed through symlinks (the path to it is the
/// state folder's, checked by its owner); an entry is not.
fn writable_only_by_us(path: &Path, follow: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let meta = if follow { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) };
    meta.is_ok_and(|m| (m.uid() == euid || m.uid() == 0) && m.mode() & 0o022 == 0)
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // Made by root (`sudo mailferry check`), the folder goes to the state
    // folder's owner, so the service can fill it; root then does not use it.
    crate::files::create_dir_all(dir, 0o755)?;
    if !writable_only_by_us(dir, true) {
        tracing::debug!(dir = %dir.display(), "plugin cache belongs to another user: compiled in memory only");
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    // create_new: never through a link planted at this name.
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
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

    #[test]
    fn entries_others_could_write_are_neither_read_nor_written() {
        use std::os::unix::fs::PermissionsExt;
        let engine = Engine::default();
        let wasm = b"\0asm\x0d\0\x01\0";
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        compile(&engine, wasm, &open).unwrap();
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0, "nothing cached in a folder anyone can write");
        // An entry anyone could have rewritten is compiled again, and the
        // fresh one replaces it.
        let ours = dir.path().join("ours");
        compile(&engine, wasm, &ours).unwrap();
        let entry = std::fs::read_dir(&ours).unwrap().next().unwrap().unwrap().path();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!writable_only_by_us(&entry, false));
        compile(&engine, wasm, &ours).unwrap();
        assert_eq!(std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777, 0o644);
    }
}
