//! Test plugin: traps (panics, which is `unreachable` in wasm) in the
//! configured hook (`hook`, default `"mail"`), continues in the others.

use mailferry_plugin_sdk::export_plugin;
use misbehave::{Misbehaving, Misbehaviour};

pub struct Trap;

impl Misbehaviour for Trap {
    const WHAT: &'static str = "trapping";

    fn run() -> ! {
        panic!("trap plugin: trapping as configured");
    }
}

export_plugin!(Misbehaving<Trap>);
