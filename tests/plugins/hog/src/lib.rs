//! Test plugin: allocates memory without bound in the configured hook
//! (`hook`, default `"mail"`), continues in the others. Only the host's
//! memory limit ends it (allocation failure aborts, which traps).

use mailferry_plugin_sdk::export_plugin;
use misbehave::{Misbehaving, Misbehaviour};

pub struct Hog;

const BLOCK: usize = 1 << 20;

impl Misbehaviour for Hog {
    const WHAT: &'static str = "hogging memory";

    fn run() -> ! {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; BLOCK];
            // Touch every page so the memory is really used, wherever it runs.
            for i in (0..BLOCK).step_by(4096) {
                block[i] = 1;
            }
            hoard.push(std::hint::black_box(block));
        }
    }
}

export_plugin!(Misbehaving<Hog>);
