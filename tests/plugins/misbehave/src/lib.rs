//! A plugin that behaves in every hook but one, where it runs a
//! [`Misbehaviour`] (trap, spin, exhaust memory). Configuration:
//! `hook = "connect" | "ehlo" | "auth" | "mail" | "rcpt" | "data" | "queue" | "disconnect"`
//! (default `"mail"`); any other key or hook name fails `new`, which traps
//! the first hook call.

use std::marker::PhantomData;

use mailferry_plugin_sdk::{Address, Host, Message, Plugin, Verdict};
use serde::Deserialize;

/// What to do in the configured hook. Never returns.
pub trait Misbehaviour: 'static {
    /// Logged before misbehaving, e.g. "trapping".
    const WHAT: &'static str;
    fn run() -> !;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookName {
    Connect,
    Ehlo,
    Auth,
    Mail,
    Rcpt,
    Data,
    Queue,
    Disconnect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_hook")]
    pub hook: HookName,
}

fn default_hook() -> HookName {
    HookName::Mail
}

pub struct Misbehaving<M> {
    hook: HookName,
    behaviour: PhantomData<M>,
}

impl<M: Misbehaviour> Misbehaving<M> {
    fn at(&self, hook: HookName, host: &Host) -> Verdict {
        if hook == self.hook {
            host.info(format!("{} in {hook:?} as configured", M::WHAT));
            M::run();
        }
        Verdict::Continue
    }
}

impl<M: Misbehaviour> Plugin for Misbehaving<M> {
    type Config = Config;

    fn new(config: Config, _host: &Host) -> Result<Self, String> {
        Ok(Misbehaving { hook: config.hook, behaviour: PhantomData })
    }

    fn connect(&self, host: &Host) -> Verdict {
        self.at(HookName::Connect, host)
    }

    fn ehlo(&self, host: &Host, _name: &str) -> Verdict {
        self.at(HookName::Ehlo, host)
    }

    fn auth(&self, host: &Host, _mechanism: &str, _login: &str, _password: &str) -> Verdict {
        self.at(HookName::Auth, host)
    }

    fn mail(&self, host: &Host, _sender: &Address) -> Verdict {
        self.at(HookName::Mail, host)
    }

    fn rcpt(&self, host: &Host, _recipient: &Address) -> Verdict {
        self.at(HookName::Rcpt, host)
    }

    fn data(&self, host: &Host, _msg: &Message) -> Verdict {
        self.at(HookName::Data, host)
    }

    fn queue(&self, host: &Host, _msg: &Message) -> Verdict {
        self.at(HookName::Queue, host)
    }

    fn disconnect(&self, host: &Host) {
        self.at(HookName::Disconnect, host);
    }
}
