#!/bin/sh
# Nightly for the fuzz build; stable for the wasm32-wasip2 plugin build
# that mailferry's build.rs starts (marked by the profile it sets). For a
# nightly without wasm32-wasip2 (docs/fuzzing.md):
#   RUSTC=$PWD/fuzz/rustc.sh cargo +nightly fuzz run command
if [ "$CARGO_PROFILE_RELEASE_STRIP" = debuginfo ]; then
    exec rustup run stable rustc "$@"
fi
exec rustup run nightly rustc "$@"
