//! mailferry: an SMTP submission relay whose policy lives in sandboxed
//! WebAssembly plugins. The commands are in `src/cli/`.

use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: a few percent less CPU on the
/// message path (glibc spent it consolidating free lists), and memory freed
/// goes back to the system instead of staying in per-thread arenas (what
/// kept argon2's 19 MiB blocks resident, one per thread that ever hashed).
/// Built without transparent huge pages: they made the idle server larger
/// by tens of MB for no gain here.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mailferry::cli::main()
}
