//! Builds the shipped plugins for `wasm32-wasip2` and hands them to the
//! binary, so a plain `cargo build` produces a relay that works with nothing
//! else installed. `PLUGINS` is the one list of them: it writes
//! `builtin_names.rs` (included by src/config/mod.rs) and
//! `builtin_components.rs` (`include_bytes!` of each, included by
//! src/pipeline/mod.rs).

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PLUGINS: &[(&str, &str)] = &[
    ("auth-flat-file", "auth_flat_file"),
    ("auth-sql", "auth_sql"),
    ("dkim-sign", "dkim_sign"),
    ("sender-policy", "sender_policy"),
    ("rate-limit", "rate_limit"),
    ("smtp-forward", "smtp_forward"),
];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    for dir in ["plugin-sdk", "plugins"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-changed=Cargo.lock");
    // A separate target folder: the outer build holds the lock on its own.
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("wasm");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"]).arg(&target_dir);
    for (package, _) in PLUGINS {
        cmd.args(["-p", package]);
    }
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // Small, fast plugins: they are compiled again by Cranelift at load.
    cmd.env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the plugins for wasm32-wasip2 failed (see above). If the target is missing, run: rustup target add wasm32-wasip2"
        );
    }
    let mut names = String::from("/// Plugins compiled into the binary, usable by name without a `path`.\npub const BUILTIN_PLUGINS: &[&str] = &[\n");
    let mut components = String::from(
        "/// The built-in plugins' components, by name.\npub const BUILTIN_COMPONENTS: &[(&str, &[u8])] = &[\n",
    );
    for (name, file) in PLUGINS {
        let built = target_dir.join("wasm32-wasip2/release").join(format!("{file}.wasm"));
        let copied = out.join(format!("{file}.wasm"));
        std::fs::copy(&built, &copied).unwrap_or_else(|e| panic!("plugin {} was not built: {e}", built.display()));
        names.push_str(&format!("    {name:?},\n"));
        components.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", copied.display().to_string()));
    }
    names.push_str("];\n");
    components.push_str("];\n");
    std::fs::write(out.join("builtin_names.rs"), names).expect("cannot write builtin_names.rs");
    std::fs::write(out.join("builtin_components.rs"), components).expect("cannot write builtin_components.rs");
}
