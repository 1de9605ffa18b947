//! The WebAssembly side: the generated WIT bindings, the host backend that
//! calls the imports, and the export glue [`crate::export_plugin!`] expands to.
//!
//! Only functions a plugin actually calls keep their imports after linking,
//! so a component imports exactly the capabilities it uses, and the host
//! links only those it was granted.

use std::cell::OnceCell;
use std::marker::PhantomData;

use crate::runtime::{instantiate, observe};
use crate::{
    Address, Connection, DeliveryEvent, DkimKey, Envelope, Failure, Host, Level, NoteValue, Param, Plugin, Reply,
    Scope, SignOptions, Signed, SqlError, SqlRows, SqlValue, Usage, Verdict,
};

pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_hooks",
    });
}

use bindings::exports::mailferry::plugin::hooks as wit_hooks;
use bindings::mailferry::plugin as wit;

/// Calls the WIT imports directly; zero-sized.
pub(crate) struct HostBackend;

impl HostBackend {
    pub(crate) fn config(&self) -> String {
        wit::config::get()
    }

    pub(crate) fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::types::Level::Trace,
            Level::Debug => wit::types::Level::Debug,
            Level::Info => wit::types::Level::Info,
            Level::Warn => wit::types::Level::Warn,
            Level::Error => wit::types::Level::Error,
        };
        wit::log::write(level, message);
    }

    pub(crate) fn connection(&self) -> Connection {
        let c = wit::session::connection();
        Connection {
            id: c.id,
            listener: c.listener,
            remote_ip: c.remote_ip,
            remote_port: c.remote_port,
            local_ip: c.local_ip,
            local_port: c.local_port,
            tls: c.tls,
            helo: c.helo,
            auth_user: c.auth_user,
            trusted: c.trusted,
        }
    }

    pub(crate) fn envelope(&self) -> Option<Envelope> {
        wit::session::envelope().map(|e| Envelope {
            mail_from: e.mail_from.into(),
            rcpt_to: e.rcpt_to.into_iter().map(Address::from).collect(),
        })
    }

    pub(crate) fn note(&self, scope: Scope, key: &str) -> Option<NoteValue> {
        wit::notes::get(scope.into(), key).map(|value| match value {
            wit::types::NoteValue::Text(s) => NoteValue::Text(s),
            wit::types::NoteValue::Integer(i) => NoteValue::Integer(i),
            wit::types::NoteValue::Flag(b) => NoteValue::Flag(b),
            wit::types::NoteValue::Texts(v) => NoteValue::Texts(v),
        })
    }

    pub(crate) fn set_note(&self, scope: Scope, key: &str, value: NoteValue) {
        let value = match value {
            NoteValue::Text(s) => wit::types::NoteValue::Text(s),
            NoteValue::Integer(i) => wit::types::NoteValue::Integer(i),
            NoteValue::Flag(b) => wit::types::NoteValue::Flag(b),
            NoteValue::Texts(v) => wit::types::NoteValue::Texts(v),
        };
        wit::notes::set(scope.into(), key, &value);
    }

    pub(crate) fn remove_note(&self, scope: Scope, key: &str) {
        wit::notes::remove(scope.into(), key);
    }

    pub(crate) fn verify_password(&self, password: &str, stored: &str) -> Result<bool, String> {
        wit::password::verify(password, stored)
    }

    pub(crate) fn send_now(&self, relay: &str, msg: &MessageBackend<'_>) -> Result<Reply, Failure> {
        wit::outbound::send_now(relay, msg.0)
            .map(Reply::from)
            .map_err(|f| Failure { temporary: f.temporary, reply: f.reply.into() })
    }

    pub(crate) fn enqueue(&self, route: &str, msg: &MessageBackend<'_>) -> Result<String, Failure> {
        wit::outbound::enqueue(route, msg.0).map_err(|f| Failure { temporary: f.temporary, reply: f.reply.into() })
    }

    pub(crate) fn route_for(&self, route: &str, sender: &str) -> Option<String> {
        wit::outbound::route_for(route, sender)
    }

    pub(crate) fn max_message_size(&self, route: &str) -> Option<u64> {
        wit::outbound::max_message_size(route)
    }

    pub(crate) fn dkim_default_options(&self) -> SignOptions {
        let o = wit::dkim::default_options();
        SignOptions {
            headers: o.headers,
            oversign: o.oversign,
            canonicalization: o.canonicalization,
            expire_secs: o.expire_secs,
        }
    }

    pub(crate) fn dkim_keys(&self, domain: &str) -> Vec<DkimKey> {
        wit::dkim::keys(domain)
            .into_iter()
            .map(|k| DkimKey { domain: k.domain, selector: k.selector, algorithm: k.algorithm })
            .collect()
    }

    pub(crate) fn dkim_sign(
        &self,
        msg: &MessageBackend<'_>,
        domain: &str,
        selector: &str,
        options: &SignOptions,
    ) -> Result<Signed, String> {
        let options = wit::dkim::SignOptions {
            headers: options.headers.clone(),
            oversign: options.oversign.clone(),
            canonicalization: options.canonicalization.clone(),
            expire_secs: options.expire_secs,
        };
        wit::dkim::sign(msg.0, domain, selector, &options).map(|s| match s {
            wit::dkim::Signed::Added => Signed::Added,
            wit::dkim::Signed::AlreadySigned => Signed::AlreadySigned,
        })
    }
    pub(crate) fn sql_databases(&self) -> Vec<String> {
        wit::sql::databases()
    }

    pub(crate) fn sql_query(
        &self,
        database: &str,
        statement: &str,
        params: &[(&str, SqlValue)],
    ) -> Result<SqlRows, SqlError> {
        use wit::sql::SqlValue as W;
        let params: Vec<(String, W)> = params
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    SqlValue::Null => W::Null,
                    SqlValue::Int(i) => W::Int(*i),
                    SqlValue::Float(f) => W::Float(*f),
                    SqlValue::Text(t) => W::Text(t.clone()),
                    SqlValue::Bytes(b) => W::Bytes(b.clone()),
                    SqlValue::Bool(b) => W::Boolean(*b),
                };
                (name.to_string(), value)
            })
            .collect();
        let value = |v: W| match v {
            W::Null => SqlValue::Null,
            W::Int(i) => SqlValue::Int(i),
            W::Float(f) => SqlValue::Float(f),
            W::Text(t) => SqlValue::Text(t),
            W::Bytes(b) => SqlValue::Bytes(b),
            W::Boolean(b) => SqlValue::Bool(b),
        };
        wit::sql::query(database, statement, &params)
            .map(|r| SqlRows {
                columns: r.columns,
                rows: r.rows.into_iter().map(|row| row.into_iter().map(value).collect()).collect(),
                affected: r.affected,
            })
            .map_err(|e| SqlError { temporary: e.temporary, message: e.message })
    }
}

impl HostBackend {
    pub(crate) fn counter_incr(&self, key: &str, amount: u64, window_secs: u32) -> Result<u64, String> {
        wit::counters::incr(key, amount, window_secs)
    }

    pub(crate) fn counter_get(&self, key: &str, window_secs: u32) -> Result<u64, String> {
        wit::counters::get(key, window_secs)
    }

    pub(crate) fn counter_take(&self, key: &str, amount: u64, limit: u64, window_secs: u32) -> Result<Usage, String> {
        wit::counters::take(key, amount, limit, window_secs).map(|u| Usage { allowed: u.allowed, count: u.count })
    }

    pub(crate) fn counter_check(&self, key: &str, amount: u64, limit: u64, window_secs: u32) -> Result<Usage, String> {
        wit::counters::check(key, amount, limit, window_secs).map(|u| Usage { allowed: u.allowed, count: u.count })
    }
}

/// A borrowed handle of the host's message resource.
pub(crate) struct MessageBackend<'a>(&'a wit::message::Message);

impl MessageBackend<'_> {
    pub(crate) fn headers(&self) -> Vec<(String, String)> {
        self.0.headers()
    }

    pub(crate) fn header(&self, name: &str) -> Vec<String> {
        self.0.header(name)
    }

    pub(crate) fn add_header(&self, name: &str, value: &str) -> Result<(), String> {
        self.0.add_header(name, value)
    }

    pub(crate) fn prepend_header(&self, name: &str, value: &str) -> Result<(), String> {
        self.0.prepend_header(name, value)
    }

    pub(crate) fn remove_header(&self, name: &str) -> u32 {
        self.0.remove_header(name)
    }

    pub(crate) fn size(&self) -> u64 {
        self.0.size()
    }

    pub(crate) fn read_body(&self, offset: u64, len: u32) -> Vec<u8> {
        self.0.read_body(offset, len)
    }
}

impl From<Scope> for wit::notes::Scope {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Connection => wit::notes::Scope::Connection,
            Scope::Transaction => wit::notes::Scope::Transaction,
        }
    }
}

impl From<wit::types::Address> for Address {
    fn from(a: wit::types::Address) -> Self {
        Address {
            address: a.address,
            params: a.params.into_iter().map(|p| Param { key: p.key, value: p.value }).collect(),
        }
    }
}

impl From<wit::types::Reply> for Reply {
    fn from(r: wit::types::Reply) -> Self {
        Reply { code: r.code, enhanced: r.enhanced, text: r.text }
    }
}

impl From<Reply> for wit::types::Reply {
    fn from(r: Reply) -> Self {
        wit::types::Reply { code: r.code, enhanced: r.enhanced, text: r.text }
    }
}

impl From<Verdict> for wit::types::Verdict {
    fn from(v: Verdict) -> Self {
        use wit::types::Verdict as W;
        match v {
            Verdict::Continue => W::Continue,
            Verdict::Accept(r) => W::Accept(r.map(Into::into)),
            Verdict::Deny(r) => W::Deny(r.map(Into::into)),
            Verdict::DenySoft(r) => W::DenySoft(r.map(Into::into)),
            Verdict::DenyDisconnect(r) => W::DenyDisconnect(r.map(Into::into)),
        }
    }
}

/// Implemented by the type [`crate::export_plugin!`] declares in the plugin
/// crate: it owns the instance slot, because Rust has no generic statics.
pub trait Exported: 'static {
    type Plugin: Plugin;
    fn with_plugin<R>(f: impl FnOnce(&Self::Plugin, &Host) -> R) -> R;
    fn init() -> Result<(), String>;
}

/// Creates the instance's plugin now, reporting a failure instead of
/// trapping (the `init` export).
pub fn try_init<P: Plugin>(slot: &OnceCell<P>) -> Result<(), String> {
    if slot.get().is_some() {
        return Ok(());
    }
    let host = Host { backend: HostBackend };
    let plugin = instantiate::<P>(&host)?;
    let _ = slot.set(plugin);
    Ok(())
}

/// Runs `f` on the component instance's plugin, creating it on first use.
/// The host instantiates a component once per SMTP connection, so the
/// plugin lives exactly as long as the connection.
pub fn with_instance<P: Plugin, R>(slot: &OnceCell<P>, f: impl FnOnce(&P, &Host) -> R) -> R {
    let host = Host { backend: HostBackend };
    let plugin = slot.get_or_init(|| match instantiate::<P>(&host) {
        Ok(plugin) => plugin,
        Err(e) => {
            // The host's start-up `init` call already checked this config,
            // so this is rare (e.g. `new` depends on a file that changed).
            // Failing to start traps the hook call, which the host logs and
            // answers with 451 4.3.0. Log
            // first so the reason reaches the host's log tagged with the
            // plugin's name, not only WASI stderr.
            host.error(format!("plugin failed to start: {e}"));
            panic!("mailferry plugin failed to start: {e}");
        }
    });
    f(plugin, &host)
}

/// The `hooks` export for the plugin behind `E`.
pub struct Adapter<E>(PhantomData<E>);

type WitVerdict = wit::types::Verdict;

fn hook<E: Exported>(call: impl FnOnce(&E::Plugin, &Host) -> Verdict) -> Option<WitVerdict> {
    E::with_plugin(|plugin, host| observe(|| call(plugin, host))).map(Into::into)
}

impl<E: Exported> wit_hooks::Guest for Adapter<E> {
    fn init() -> Result<(), String> {
        E::init()
    }

    fn connect() -> Option<WitVerdict> {
        hook::<E>(|p, h| p.connect(h))
    }

    fn ehlo(name: String) -> Option<WitVerdict> {
        hook::<E>(|p, h| p.ehlo(h, &name))
    }

    fn auth(mechanism: String, login: String, password: String) -> Option<WitVerdict> {
        hook::<E>(|p, h| p.auth(h, &mechanism, &login, &password))
    }

    fn mail(sender: wit::types::Address) -> Option<WitVerdict> {
        let sender = Address::from(sender);
        hook::<E>(|p, h| p.mail(h, &sender))
    }

    fn rcpt(recipient: wit::types::Address) -> Option<WitVerdict> {
        let recipient = Address::from(recipient);
        hook::<E>(|p, h| p.rcpt(h, &recipient))
    }

    fn data(msg: &wit::message::Message) -> Option<WitVerdict> {
        let msg = crate::Message { backend: MessageBackend(msg) };
        hook::<E>(|p, h| p.data(h, &msg))
    }

    fn queue(msg: &wit::message::Message) -> Option<WitVerdict> {
        let msg = crate::Message { backend: MessageBackend(msg) };
        hook::<E>(|p, h| p.queue(h, &msg))
    }

    fn disconnect() {
        E::with_plugin(|p, h| p.disconnect(h));
    }

    fn delivered(event: wit_hooks::DeliveryEvent) -> bool {
        let event = DeliveryEvent::from(event);
        event_hook::<E>(|p, h| p.delivered(h, &event))
    }

    fn deferred(event: wit_hooks::DeliveryEvent) -> bool {
        let event = DeliveryEvent::from(event);
        event_hook::<E>(|p, h| p.deferred(h, &event))
    }

    fn bounced(event: wit_hooks::DeliveryEvent) -> bool {
        let event = DeliveryEvent::from(event);
        event_hook::<E>(|p, h| p.bounced(h, &event))
    }
}

/// Runs an event hook; `false` if it was the trait's default.
fn event_hook<E: Exported>(call: impl FnOnce(&E::Plugin, &Host)) -> bool {
    E::with_plugin(|plugin, host| {
        observe(|| {
            call(plugin, host);
            Verdict::Continue
        })
    })
    .is_some()
}

impl From<wit_hooks::DeliveryEvent> for DeliveryEvent {
    fn from(e: wit_hooks::DeliveryEvent) -> Self {
        DeliveryEvent {
            queue_id: e.queue_id,
            sender: e.sender,
            recipient: e.recipient,
            relay: e.relay,
            reply: e.reply,
            attempts: e.attempts,
        }
    }
}
