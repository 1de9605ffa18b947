//! Test plugin: loops forever in the configured hook (`hook`, default
//! `"mail"`), continues in the others. Only the host's deadline ends it.

use mailferry_plugin_sdk::export_plugin;
use misbehave::{Misbehaving, Misbehaviour};

pub struct Spin;

impl Misbehaviour for Spin {
    const WHAT: &'static str = "spinning";

    fn run() -> ! {
        let mut n: u64 = 0;
        loop {
            // black_box keeps the optimiser from proving the loop useless
            // (an infinite loop without side effects is UB to LLVM).
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export_plugin!(Misbehaving<Spin>);
