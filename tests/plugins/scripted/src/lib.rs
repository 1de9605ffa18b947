//! Test plugin: a well-behaved plugin whose answers come from its
//! configuration, for testing the host's pipeline.
//!
//! ```toml
//! # Per hook (connect, ehlo, auth, mail, rcpt, data, queue), optional:
//! rcpt = { verdict = "deny", code = 550, enhanced = "5.1.1", text = "no such user" }
//! # verdict: continue (default) | accept | deny | deny-soft | deny-disconnect.
//! # A reply is sent when any of code/enhanced/text is given; the code then
//! # defaults to 250/550/451/421 by verdict and the text to "".
//!
//! add_header = ["X-Scripted", "yes"]   # added in `data`
//! note = "scripted"                    # set as a transaction note in `mail`
//!                                      # (the sender), logged back in `rcpt`
//! when_rcpt_contains = "blocked"       # apply the rcpt verdict only to
//!                                      # recipients containing this
//! sleep_ms = 30000                     # in `mail`, sleep this long first
//! print = 4096                         # in `mail`, print this many octets
//! log_connection = true                # in `connect`, log the connection record
//! log_connection_note = "auth.senders" # in `mail`, log this connection note
//! connect_note = "connect.ip"          # in `connect`, note the client address
//! auth_note = "auth.tried"             # in `auth`, note the login tried
//! ```
//!
//! With an empty configuration every hook is implemented and continues,
//! without logging: the baseline for measuring pipeline overhead.

use mailferry_plugin_sdk::{
    export_plugin, Address, DeliveryEvent, Host, Message, NoteValue, Plugin, Reply, Scope, Verdict,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    connect: Option<Step>,
    ehlo: Option<Step>,
    auth: Option<Step>,
    mail: Option<Step>,
    rcpt: Option<Step>,
    data: Option<Step>,
    queue: Option<Step>,
    add_header: Option<[String; 2]>,
    note: Option<String>,
    when_rcpt_contains: Option<String>,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    print: usize,
    #[serde(default)]
    log_connection: bool,
    log_connection_note: Option<String>,
    #[serde(default)]
    connect_note: Option<String>,
    #[serde(default)]
    auth_note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    verdict: Kind,
    code: Option<u16>,
    enhanced: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    #[default]
    Continue,
    Accept,
    Deny,
    DenySoft,
    DenyDisconnect,
}

impl Step {
    fn verdict(&self) -> Result<Verdict, String> {
        let has_reply = self.code.is_some() || self.enhanced.is_some() || self.text.is_some();
        let reply = |default_code| {
            has_reply.then(|| Reply {
                code: self.code.unwrap_or(default_code),
                enhanced: self.enhanced.clone(),
                text: self.text.clone().unwrap_or_default(),
            })
        };
        Ok(match self.verdict {
            Kind::Continue if has_reply => return Err("a `continue` step cannot carry a reply".into()),
            Kind::Continue => Verdict::Continue,
            Kind::Accept => Verdict::Accept(reply(250)),
            Kind::Deny => Verdict::Deny(reply(550)),
            Kind::DenySoft => Verdict::DenySoft(reply(451)),
            Kind::DenyDisconnect => Verdict::DenyDisconnect(reply(421)),
        })
    }
}

/// The verdicts are built once, in `new`; hooks only clone them.
pub struct Scripted {
    connect: Verdict,
    ehlo: Verdict,
    auth: Verdict,
    mail: Verdict,
    rcpt: Verdict,
    data: Verdict,
    queue: Verdict,
    add_header: Option<[String; 2]>,
    note: Option<String>,
    when_rcpt_contains: Option<String>,
    sleep_ms: u64,
    print: usize,
    log_connection: bool,
    log_connection_note: Option<String>,
    connect_note: Option<String>,
    auth_note: Option<String>,
}

fn verdict_of(step: &Option<Step>, hook: &str) -> Result<Verdict, String> {
    match step {
        Some(step) => step.verdict().map_err(|e| format!("{hook}: {e}")),
        None => Ok(Verdict::Continue),
    }
}

impl Plugin for Scripted {
    type Config = Config;

    fn new(c: Config, _host: &Host) -> Result<Self, String> {
        Ok(Scripted {
            connect: verdict_of(&c.connect, "connect")?,
            ehlo: verdict_of(&c.ehlo, "ehlo")?,
            auth: verdict_of(&c.auth, "auth")?,
            mail: verdict_of(&c.mail, "mail")?,
            rcpt: verdict_of(&c.rcpt, "rcpt")?,
            data: verdict_of(&c.data, "data")?,
            queue: verdict_of(&c.queue, "queue")?,
            add_header: c.add_header,
            note: c.note,
            when_rcpt_contains: c.when_rcpt_contains,
            sleep_ms: c.sleep_ms,
            print: c.print,
            log_connection: c.log_connection,
            log_connection_note: c.log_connection_note,
            connect_note: c.connect_note,
            auth_note: c.auth_note,
        })
    }

    fn connect(&self, host: &Host) -> Verdict {
        if let Some(key) = &self.connect_note {
            host.set_note(Scope::Connection, key, host.connection().remote_ip.as_str());
        }
        if self.log_connection {
            let c = host.connection();
            host.info(format!(
                "connection remote={}:{} local={}:{} trusted={}",
                c.remote_ip, c.remote_port, c.local_ip, c.local_port, c.trusted
            ));
        }
        self.connect.clone()
    }

    fn ehlo(&self, _host: &Host, _name: &str) -> Verdict {
        self.ehlo.clone()
    }

    fn auth(&self, host: &Host, _mechanism: &str, login: &str, _password: &str) -> Verdict {
        if let Some(key) = &self.auth_note {
            host.set_note(Scope::Connection, key, login);
        }
        self.auth.clone()
    }

    fn mail(&self, host: &Host, sender: &Address) -> Verdict {
        if self.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
        }
        if self.print > 0 {
            println!("{}", "o".repeat(self.print));
        }
        if let Some(key) = &self.note {
            host.set_note(Scope::Transaction, key, sender.address.as_str());
        }
        if let Some(key) = &self.log_connection_note {
            host.info(format!("connection note {key} = {:?}", host.note(Scope::Connection, key)));
        }
        self.mail.clone()
    }

    fn rcpt(&self, host: &Host, recipient: &Address) -> Verdict {
        if let Some(key) = &self.note {
            match host.note(Scope::Transaction, key) {
                Some(NoteValue::Text(value)) => host.info(format!("note {key} = {value:?}")),
                Some(other) => host.info(format!("note {key} = {other:?}")),
                None => host.info(format!("note {key} is not set")),
            }
        }
        match &self.when_rcpt_contains {
            Some(needle) if !recipient.address.contains(needle.as_str()) => Verdict::Continue,
            _ => self.rcpt.clone(),
        }
    }

    fn data(&self, host: &Host, msg: &Message) -> Verdict {
        if let Some([name, value]) = &self.add_header {
            if let Err(e) = msg.add_header(name, value) {
                host.error(format!("add_header {name:?} refused: {e}"));
            }
        }
        self.data.clone()
    }

    fn queue(&self, _host: &Host, _msg: &Message) -> Verdict {
        self.queue.clone()
    }

    fn disconnect(&self, _host: &Host) {}

    // Delivery events are logged, with what the host says about the
    // context, so tests can see them arrive.
    fn delivered(&self, host: &Host, event: &DeliveryEvent) {
        log_event(host, "delivered", event);
    }

    fn deferred(&self, host: &Host, event: &DeliveryEvent) {
        log_event(host, "deferred", event);
    }

    fn bounced(&self, host: &Host, event: &DeliveryEvent) {
        log_event(host, "bounced", event);
    }
}

fn log_event(host: &Host, kind: &str, e: &DeliveryEvent) {
    let c = host.connection();
    let from = host.envelope().map(|e| e.mail_from.address).unwrap_or_default();
    host.info(format!(
        "event {kind} id={} rcpt={} relay={} attempts={} listener={} envelope_from={from} reply={}",
        e.queue_id,
        e.recipient,
        e.relay.as_deref().unwrap_or("-"),
        e.attempts,
        c.listener,
        e.reply
    ));
}

export_plugin!(Scripted);
