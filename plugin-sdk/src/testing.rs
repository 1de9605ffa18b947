//! Testing a plugin without a server.
//!
//! On the build machine (any target but `wasm32`) the SDK serves [`Host`]
//! and [`Message`] from memory instead of calling the host. A
//! [`TestHost`] holds what the server would: the plugin's configuration
//! text, the connection, the envelope, the notes, a password verifier,
//! relays and SQL answers you script with closures. It records what the
//! plugin did (log lines, password checks, messages sent, queries, notes
//! written) for assertions.
//!
//! [`TestHost::instantiate`] creates the plugin exactly as the server's
//! first hook call does (parsing the TOML into `Plugin::Config`, then
//! `Plugin::new`), and the hook methods of [`TestPlugin`] return what the
//! component would answer the host: `None` for a hook the plugin does not
//! implement, `Some(verdict)` otherwise.
//!
//! The test host does not play the SMTP state machine: it returns the
//! envelope and connection you set, and clears transaction notes only when
//! told to ([`TestHost::clear_transaction`]).
//!
//! Its counters (the `counters` capability) are exact sliding windows on a
//! clock that moves only when told ([`TestHost::advance_clock`]); the
//! server approximates the same windows with two fixed ones, so test well
//! inside or well past a window, not at its edge.
//!
//! ```
//! use mailferry_plugin_sdk::testing::{TestHost, TestMessage};
//! use mailferry_plugin_sdk::{Host, Level, Message, Plugin, Verdict};
//!
//! struct Tagger { name: String }
//!
//! #[derive(serde::Deserialize)]
//! struct Config { #[serde(default = "default_name")] name: String }
//! fn default_name() -> String { "X-Tagged".into() }
//!
//! impl Plugin for Tagger {
//!     type Config = Config;
//!     fn new(config: Config, _host: &Host) -> Result<Self, String> {
//!         Ok(Tagger { name: config.name })
//!     }
//!     fn data(&self, host: &Host, msg: &Message) -> Verdict {
//!         if let Err(e) = msg.add_header(&self.name, "yes") {
//!             host.error(format!("cannot tag: {e}"));
//!             return Verdict::deny_soft(451, "4.3.0", "try again later");
//!         }
//!         host.info("tagged");
//!         Verdict::Continue
//!     }
//! }
//!
//! let host = TestHost::new().config_toml(r#"name = "X-Seen""#);
//! let plugin = host.instantiate::<Tagger>().unwrap();
//! let msg = TestMessage::parse("Subject: hi\r\n\r\nbody\r\n");
//!
//! assert_eq!(plugin.data(&msg), Some(Verdict::Continue));
//! assert_eq!(msg.header("x-seen"), ["yes"]);
//! host.assert_logged(Level::Info, "tagged");
//! // Hooks the plugin does not override answer `None`.
//! assert_eq!(plugin.rcpt("bob@example.org"), None);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::runtime::{instantiate, observe};
use crate::{
    Address, Connection, DeliveryEvent, DkimKey, Envelope, Failure, Host, Level, Message, NoteValue, Plugin, Reply,
    Scope, SignOptions, Signed, SqlError, SqlRows, SqlValue, Usage, Verdict,
};

mod message;

pub(crate) use message::MessageBackend;
pub use message::TestMessage;

type Verifier = Box<dyn Fn(&str, &str) -> Result<bool, String>>;
type Relay = Box<dyn Fn(&str, &TestMessage) -> Result<Reply, Failure>>;
type Sql = Box<dyn Fn(&SqlQuery) -> Result<SqlRows, SqlError>>;

/// One line the plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: Level,
    pub message: String,
}

/// One call of [`Host::verify_password`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordCheck {
    pub password: String,
    pub stored: String,
}

/// One call of [`Host::send_now`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub relay: String,
    /// The envelope at the time of the call.
    pub envelope: Option<Envelope>,
    /// The message as it would have been sent, header edits included.
    pub message: Vec<u8>,
}

/// One call of [`Host::dkim_sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    pub domain: String,
    pub selector: String,
    pub options: SignOptions,
    /// What the host answered.
    pub result: Result<Signed, String>,
}

/// One call of [`Host::sql_query`].
#[derive(Debug, Clone, PartialEq)]
pub struct SqlQuery {
    pub database: String,
    pub statement: String,
    pub params: Vec<(String, SqlValue)>,
}

impl SqlQuery {
    /// The value given for placeholder `:name`.
    pub fn param(&self, name: &str) -> Option<&SqlValue> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// One call of [`Host::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub route: String,
    /// The envelope at the time of the call.
    pub envelope: Option<Envelope>,
    /// The message as it would have been queued, header edits included.
    pub message: Vec<u8>,
}

struct State {
    config: RefCell<String>,
    routes: RefCell<Vec<String>>,
    route_sizes: RefCell<BTreeMap<String, u64>>,
    queued: RefCell<Vec<QueuedMessage>>,
    dkim_keys: RefCell<Vec<DkimKey>>,
    signatures: RefCell<Vec<SignRequest>>,
    connection: RefCell<Connection>,
    envelope: RefCell<Option<Envelope>>,
    notes: RefCell<BTreeMap<(Scope, String), NoteValue>>,
    logs: RefCell<Vec<LogRecord>>,
    verifier: RefCell<Verifier>,
    password_checks: RefCell<Vec<PasswordCheck>>,
    relay: RefCell<Relay>,
    sent: RefCell<Vec<SentMessage>>,
    /// Per key, each amount added with the clock reading it was added at.
    counters: RefCell<BTreeMap<String, Vec<(u64, u64)>>>,
    /// Seconds on the test clock.
    clock: RefCell<u64>,
    counters_error: RefCell<Option<String>>,
    sql_databases: RefCell<Vec<String>>,
    sql: RefCell<Sql>,
    sql_queries: RefCell<Vec<SqlQuery>>,
}

/// An in-memory host for unit tests; see the [module docs](self).
///
/// Cloning gives another handle to the same state.
#[derive(Clone)]
pub struct TestHost {
    state: Rc<State>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// A host with an empty configuration table, the connection of
    /// [`TestHost::default_connection`], no envelope and no notes. Its
    /// password verifier knows only `{PLAIN}`; its relays refuse with a
    /// temporary failure until you script them with [`TestHost::relay`].
    pub fn new() -> TestHost {
        TestHost {
            state: Rc::new(State {
                config: RefCell::new(String::new()),
                routes: RefCell::new(Vec::new()),
                route_sizes: RefCell::new(BTreeMap::new()),
                queued: RefCell::new(Vec::new()),
                dkim_keys: RefCell::new(Vec::new()),
                signatures: RefCell::new(Vec::new()),
                connection: RefCell::new(TestHost::default_connection()),
                envelope: RefCell::new(None),
                notes: RefCell::new(BTreeMap::new()),
                logs: RefCell::new(Vec::new()),
                verifier: RefCell::new(Box::new(plain_only_verifier)),
                password_checks: RefCell::new(Vec::new()),
                relay: RefCell::new(Box::new(|_, _| {
                    Err(Failure {
                        temporary: true,
                        reply: Reply::new(451, "4.4.0", "TestHost: no relay scripted (use TestHost::relay)"),
                    })
                })),
                sent: RefCell::new(Vec::new()),
                counters: RefCell::new(BTreeMap::new()),
                clock: RefCell::new(0),
                counters_error: RefCell::new(None),
                sql_databases: RefCell::new(Vec::new()),
                sql: RefCell::new(Box::new(|_| {
                    Err(SqlError {
                        temporary: true,
                        message: "TestHost: no SQL answer scripted (use TestHost::sql)".into(),
                    })
                })),
                sql_queries: RefCell::new(Vec::new()),
            }),
        }
    }

    /// The connection a new test host reports: session `test-session` on
    /// listener `submission`, from 192.0.2.10:40000 to 192.0.2.1:587, TLS
    /// active, no EHLO yet, not authenticated, not trusted.
    pub fn default_connection() -> Connection {
        Connection {
            id: "test-session".into(),
            listener: "submission".into(),
            remote_ip: "192.0.2.10".into(),
            remote_port: 40000,
            local_ip: "192.0.2.1".into(),
            local_port: 587,
            tls: true,
            helo: None,
            auth_user: None,
            trusted: false,
        }
    }

    // --- Setting the scene (builder style, then by reference) ---

    /// The plugin's configuration table as TOML text, as the host would
    /// hand it over (`users = "/auth/users"`).
    pub fn config_toml(self, toml: &str) -> Self {
        *self.state.config.borrow_mut() = toml.to_string();
        self
    }

    /// The connection [`Host::connection`] returns.
    pub fn connection(self, connection: Connection) -> Self {
        self.set_connection(connection);
        self
    }

    /// The envelope [`Host::envelope`] returns.
    pub fn envelope<R: Into<Address>>(
        self,
        mail_from: impl Into<Address>,
        rcpt_to: impl IntoIterator<Item = R>,
    ) -> Self {
        self.set_envelope(Some(Envelope {
            mail_from: mail_from.into(),
            rcpt_to: rcpt_to.into_iter().map(Into::into).collect(),
        }));
        self
    }

    /// Serves [`Host::verify_password`] with `verify(password, stored)`.
    pub fn password_verifier(self, verify: impl Fn(&str, &str) -> Result<bool, String> + 'static) -> Self {
        *self.state.verifier.borrow_mut() = Box::new(verify);
        self
    }

    /// Makes a route (or relay) name known: [`Host::enqueue`] queues to it,
    /// [`Host::route_for`] returns it. Unknown names fail temporarily.
    pub fn route(self, name: &str) -> Self {
        self.state.routes.borrow_mut().push(name.to_string());
        self
    }

    /// Gives a route (see [`TestHost::route`]) a largest message size, which
    /// [`Host::max_message_size`] returns.
    pub fn route_max_size(self, name: &str, octets: u64) -> Self {
        self.state.route_sizes.borrow_mut().insert(name.to_string(), octets);
        self
    }

    /// Every [`Host::enqueue`] call that succeeded so far.
    pub fn queued(&self) -> Vec<QueuedMessage> {
        self.state.queued.borrow().clone()
    }

    /// Gives the host a DKIM key. The test host does not sign for real: its
    /// [`Host::dkim_sign`] puts a placeholder `DKIM-Signature` field
    /// (`v=1; d=…; s=…; b=test`) at the top of the message, and answers
    /// [`Signed::AlreadySigned`] when one with the same `d=` and `s=` is
    /// already there, as the server does for a valid signature.
    pub fn dkim_key(self, domain: &str, selector: &str, algorithm: &str) -> Self {
        self.state.dkim_keys.borrow_mut().push(DkimKey {
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_string(),
            algorithm: algorithm.to_string(),
        });
        self
    }

    /// Every [`Host::dkim_sign`] call so far.
    pub fn signatures(&self) -> Vec<SignRequest> {
        self.state.signatures.borrow().clone()
    }

    /// Serves [`Host::send_now`] with `send(relay, message)`.
    pub fn relay(self, send: impl Fn(&str, &TestMessage) -> Result<Reply, Failure> + 'static) -> Self {
        *self.state.relay.borrow_mut() = Box::new(send);
        self
    }

    /// Moves the counters' clock on: amounts older than a window no longer
    /// count in it.
    pub fn advance_clock(&self, secs: u64) {
        *self.state.clock.borrow_mut() += secs;
    }

    /// Makes every counter call fail with `error` (as when the shared store
    /// is down and the server refuses), or work again with `None`.
    pub fn set_counters_error(&self, error: Option<&str>) {
        *self.state.counters_error.borrow_mut() = error.map(str::to_string);
    }

    /// The count of `key` (as the plugin names it) over the last `window_secs`.
    pub fn counter(&self, key: &str, window_secs: u32) -> u64 {
        HostBackend(self.state.clone()).count(key, window_secs)
    }

    /// Grants the plugin a database, as `grants = ["sql:NAME"]` does:
    /// [`Host::sql_databases`] lists it, and queries on it reach the
    /// answer scripted with [`TestHost::sql`]. A query on a database not
    /// granted fails, as in the server.
    pub fn sql_database(self, name: &str) -> Self {
        self.state.sql_databases.borrow_mut().push(name.to_string());
        self
    }

    /// Serves [`Host::sql_query`] with `answer(query)`; see
    /// [`SqlQuery::param`] for the bound values.
    pub fn sql(self, answer: impl Fn(&SqlQuery) -> Result<SqlRows, SqlError> + 'static) -> Self {
        *self.state.sql.borrow_mut() = Box::new(answer);
        self
    }

    /// Every [`Host::sql_query`] call so far.
    pub fn sql_queries(&self) -> Vec<SqlQuery> {
        self.state.sql_queries.borrow().clone()
    }

    /// Replaces the connection.
    pub fn set_connection(&self, connection: Connection) {
        *self.state.connection.borrow_mut() = connection;
    }

    /// Changes the connection in place, e.g. after AUTH:
    /// `host.update_connection(|c| c.auth_user = Some("alice".into()))`.
    pub fn update_connection(&self, change: impl FnOnce(&mut Connection)) {
        change(&mut self.state.connection.borrow_mut());
    }

    /// Replaces the envelope (`None`: no transaction).
    pub fn set_envelope(&self, envelope: Option<Envelope>) {
        *self.state.envelope.borrow_mut() = envelope;
    }

    /// Writes a note, as another plugin or the host would.
    pub fn set_note(&self, scope: Scope, key: &str, value: impl Into<NoteValue>) {
        self.state.notes.borrow_mut().insert((scope, key.to_string()), value.into());
    }

    /// Ends the transaction as RSET or the end of a message does: clears the
    /// envelope and the transaction notes.
    pub fn clear_transaction(&self) {
        self.set_envelope(None);
        self.state.notes.borrow_mut().retain(|(scope, _), _| *scope != Scope::Transaction);
    }

    // --- Running the plugin ---

    /// Creates the plugin as the server does on the first hook call:
    /// parses the configuration into `P::Config` and calls `P::new`.
    /// `Err` carries the message the server would log before trapping.
    pub fn instantiate<P: Plugin>(&self) -> Result<TestPlugin<P>, String> {
        let host = self.host();
        let plugin = instantiate::<P>(&host)?;
        Ok(TestPlugin { plugin, host })
    }

    /// A [`Host`] backed by this test host, for calling plugin code directly.
    pub fn host(&self) -> Host {
        Host { backend: HostBackend(self.state.clone()) }
    }

    // --- Inspecting what happened ---

    /// Every line logged so far, in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.state.logs.borrow().clone()
    }

    /// True if a line at `level` containing `needle` was logged.
    pub fn logged(&self, level: Level, needle: &str) -> bool {
        self.state.logs.borrow().iter().any(|r| r.level == level && r.message.contains(needle))
    }

    /// Panics, listing every logged line, unless [`TestHost::logged`].
    #[track_caller]
    pub fn assert_logged(&self, level: Level, needle: &str) {
        if !self.logged(level, needle) {
            panic!("no {level:?} log line contains {needle:?}; logged:\n{}", self.format_logs());
        }
    }

    /// Forgets the log lines so far.
    pub fn clear_logs(&self) {
        self.state.logs.borrow_mut().clear();
    }

    /// The note under `key`, as the plugin left it.
    pub fn note(&self, scope: Scope, key: &str) -> Option<NoteValue> {
        self.state.notes.borrow().get(&(scope, key.to_string())).cloned()
    }

    /// Every note of a scope, sorted by key.
    pub fn notes(&self, scope: Scope) -> Vec<(String, NoteValue)> {
        self.state
            .notes
            .borrow()
            .iter()
            .filter(|((s, _), _)| *s == scope)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every [`Host::verify_password`] call so far.
    pub fn password_checks(&self) -> Vec<PasswordCheck> {
        self.state.password_checks.borrow().clone()
    }

    /// Every [`Host::send_now`] call so far.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.state.sent.borrow().clone()
    }

    fn format_logs(&self) -> String {
        let logs = self.state.logs.borrow();
        if logs.is_empty() {
            return "  (nothing)".into();
        }
        logs.iter().map(|r| format!("  {:?}: {}", r.level, r.message)).collect::<Vec<_>>().join("\n")
    }
}

/// What the server's default verifier does for `{PLAIN}`; nothing else.
fn plain_only_verifier(password: &str, stored: &str) -> Result<bool, String> {
    match stored.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("{PLAIN}") => Ok(&stored[7..] == password),
        _ => Err("TestHost knows only {PLAIN} hashes; script others with TestHost::password_verifier".into()),
    }
}

/// A plugin created by [`TestHost::instantiate`]. Each hook method returns
/// what the component would answer the host: `None` if the plugin does not
/// implement the hook.
pub struct TestPlugin<P> {
    plugin: P,
    host: Host,
}

impl<P: Plugin> TestPlugin<P> {
    /// The plugin itself, to inspect its state.
    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    pub fn connect(&self) -> Option<Verdict> {
        observe(|| self.plugin.connect(&self.host))
    }

    pub fn ehlo(&self, name: &str) -> Option<Verdict> {
        observe(|| self.plugin.ehlo(&self.host, name))
    }

    pub fn auth(&self, mechanism: &str, login: &str, password: &str) -> Option<Verdict> {
        observe(|| self.plugin.auth(&self.host, mechanism, login, password))
    }

    pub fn mail(&self, sender: impl Into<Address>) -> Option<Verdict> {
        let sender = sender.into();
        observe(|| self.plugin.mail(&self.host, &sender))
    }

    pub fn rcpt(&self, recipient: impl Into<Address>) -> Option<Verdict> {
        let recipient = recipient.into();
        observe(|| self.plugin.rcpt(&self.host, &recipient))
    }

    /// Runs `data`; header edits land in `msg`.
    pub fn data(&self, msg: &TestMessage) -> Option<Verdict> {
        let msg = Message { backend: MessageBackend(msg) };
        observe(|| self.plugin.data(&self.host, &msg))
    }

    /// Runs `queue`; header edits land in `msg`.
    pub fn queue(&self, msg: &TestMessage) -> Option<Verdict> {
        let msg = Message { backend: MessageBackend(msg) };
        observe(|| self.plugin.queue(&self.host, &msg))
    }

    pub fn disconnect(&self) {
        self.plugin.disconnect(&self.host);
    }

    /// Runs `delivered`; `false` if the plugin does not implement it.
    pub fn delivered(&self, event: &DeliveryEvent) -> bool {
        self.event(|p, h| p.delivered(h, event))
    }

    /// Runs `deferred`; `false` if the plugin does not implement it.
    pub fn deferred(&self, event: &DeliveryEvent) -> bool {
        self.event(|p, h| p.deferred(h, event))
    }

    /// Runs `bounced`; `false` if the plugin does not implement it.
    pub fn bounced(&self, event: &DeliveryEvent) -> bool {
        self.event(|p, h| p.bounced(h, event))
    }

    fn event(&self, call: impl FnOnce(&P, &Host)) -> bool {
        observe(|| {
            call(&self.plugin, &self.host);
            Verdict::Continue
        })
        .is_some()
    }
}

/// [`Host`] served from a [`TestHost`]'s state.
pub(crate) struct HostBackend(Rc<State>);

impl HostBackend {
    pub(crate) fn config(&self) -> String {
        self.0.config.borrow().clone()
    }

    pub(crate) fn log(&self, level: Level, message: &str) {
        // Shown by the test harness when a test fails.
        eprintln!("[plugin {level:?}] {message}");
        self.0.logs.borrow_mut().push(LogRecord { level, message: message.to_string() });
    }

    pub(crate) fn connection(&self) -> Connection {
        self.0.connection.borrow().clone()
    }

    pub(crate) fn envelope(&self) -> Option<Envelope> {
        self.0.envelope.borrow().clone()
    }

    pub(crate) fn note(&self, scope: Scope, key: &str) -> Option<NoteValue> {
        self.0.notes.borrow().get(&(scope, key.to_string())).cloned()
    }

    pub(crate) fn set_note(&self, scope: Scope, key: &str, value: NoteValue) {
        self.0.notes.borrow_mut().insert((scope, key.to_string()), value);
    }

    pub(crate) fn remove_note(&self, scope: Scope, key: &str) {
        self.0.notes.borrow_mut().remove(&(scope, key.to_string()));
    }

    pub(crate) fn verify_password(&self, password: &str, stored: &str) -> Result<bool, String> {
        self.0
            .password_checks
            .borrow_mut()
            .push(PasswordCheck { password: password.to_string(), stored: stored.to_string() });
        (self.0.verifier.borrow())(password, stored)
    }

    pub(crate) fn send_now(&self, relay: &str, msg: &MessageBackend<'_>) -> Result<Reply, Failure> {
        self.0.sent.borrow_mut().push(SentMessage {
            relay: relay.to_string(),
            envelope: self.envelope(),
            message: msg.0.to_bytes(),
        });
        (self.0.relay.borrow())(relay, msg.0)
    }
}

impl HostBackend {
    pub(crate) fn enqueue(&self, route: &str, msg: &MessageBackend<'_>) -> Result<String, Failure> {
        if !self.0.routes.borrow().iter().any(|r| r == route) {
            return Err(Failure {
                temporary: true,
                reply: Reply::new(451, "4.3.5", "message not queued: no delivery route is configured for it"),
            });
        }
        let mut queued = self.0.queued.borrow_mut();
        queued.push(QueuedMessage { route: route.to_string(), envelope: self.envelope(), message: msg.0.to_bytes() });
        Ok(format!("TESTQ{}", queued.len()))
    }

    pub(crate) fn route_for(&self, route: &str, _sender: &str) -> Option<String> {
        self.0.routes.borrow().iter().find(|r| *r == route).cloned()
    }

    pub(crate) fn max_message_size(&self, route: &str) -> Option<u64> {
        self.0.route_sizes.borrow().get(route).copied()
    }

    pub(crate) fn dkim_default_options(&self) -> SignOptions {
        SignOptions {
            headers: ["From", "Reply-To", "Subject", "Date", "Message-ID", "To", "Cc", "MIME-Version", "Content-Type"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            oversign: vec!["From".into()],
            canonicalization: "relaxed/relaxed".into(),
            expire_secs: 0,
        }
    }

    pub(crate) fn dkim_keys(&self, domain: &str) -> Vec<DkimKey> {
        self.0.dkim_keys.borrow().iter().filter(|k| k.domain.eq_ignore_ascii_case(domain)).cloned().collect()
    }

    pub(crate) fn dkim_sign(
        &self,
        msg: &MessageBackend<'_>,
        domain: &str,
        selector: &str,
        options: &SignOptions,
    ) -> Result<Signed, String> {
        let domain = domain.to_ascii_lowercase();
        let known = self.0.dkim_keys.borrow().iter().any(|k| k.domain == domain && k.selector == selector);
        let tags = format!("v=1; d={domain}; s={selector}; b=test");
        let result = if !known {
            Err(format!("no DKIM key for domain {domain:?} selector {selector:?}"))
        } else if msg.0.header("DKIM-Signature").iter().any(|v| v.starts_with(&tags)) {
            Ok(Signed::AlreadySigned)
        } else {
            msg.0.insert(true, "DKIM-Signature", &tags).map(|()| Signed::Added)
        };
        self.0.signatures.borrow_mut().push(SignRequest {
            domain,
            selector: selector.to_string(),
            options: options.clone(),
            result: result.clone(),
        });
        result
    }
    pub(crate) fn sql_databases(&self) -> Vec<String> {
        self.0.sql_databases.borrow().clone()
    }

    pub(crate) fn sql_query(
        &self,
        database: &str,
        statement: &str,
        params: &[(&str, SqlValue)],
    ) -> Result<SqlRows, SqlError> {
        let query = SqlQuery {
            database: database.to_string(),
            statement: statement.to_string(),
            params: params.iter().map(|(n, v)| (n.to_string(), v.clone())).collect(),
        };
        self.0.sql_queries.borrow_mut().push(query.clone());
        if !self.0.sql_databases.borrow().iter().any(|d| d == database) {
            return Err(SqlError {
                temporary: false,
                message: format!("database {database:?} is not granted to this plugin (TestHost::sql_database)"),
            });
        }
        (self.0.sql.borrow())(&query)
    }
}

impl HostBackend {
    fn count(&self, key: &str, window_secs: u32) -> u64 {
        let now = *self.0.clock.borrow();
        let counters = self.0.counters.borrow();
        counters.get(key).map_or(0, |v| v.iter().filter(|(t, _)| now - t < window_secs as u64).map(|(_, n)| n).sum())
    }

    /// The server's checks, then the count.
    fn counted(&self, key: &str, window_secs: u32) -> Result<u64, String> {
        if let Some(e) = self.0.counters_error.borrow().as_ref() {
            return Err(e.clone());
        }
        if key.is_empty() || key.len() > 512 {
            return Err("a counter key must be 1 to 512 octets".into());
        }
        if window_secs == 0 || window_secs > 31 * 24 * 3600 {
            return Err("a counter window must be between 1 ms and 31 days".into());
        }
        Ok(self.count(key, window_secs))
    }

    /// The host's cap on one call's amount.
    fn check_amount(amount: u64) -> Result<(), String> {
        if amount > u32::MAX as u64 {
            return Err(format!("a counter amount must be at most {}", u32::MAX));
        }
        Ok(())
    }

    fn add(&self, key: &str, amount: u64) {
        let now = *self.0.clock.borrow();
        self.0.counters.borrow_mut().entry(key.to_string()).or_default().push((now, amount));
    }

    pub(crate) fn counter_incr(&self, key: &str, amount: u64, window_secs: u32) -> Result<u64, String> {
        let count = self.counted(key, window_secs)?;
        Self::check_amount(amount)?;
        self.add(key, amount);
        Ok(count + amount)
    }

    pub(crate) fn counter_get(&self, key: &str, window_secs: u32) -> Result<u64, String> {
        self.counted(key, window_secs)
    }

    pub(crate) fn counter_take(&self, key: &str, amount: u64, limit: u64, window_secs: u32) -> Result<Usage, String> {
        let count = self.counted(key, window_secs)?;
        Self::check_amount(amount)?;
        if count.saturating_add(amount) > limit {
            return Ok(Usage { allowed: false, count });
        }
        self.add(key, amount);
        Ok(Usage { allowed: true, count: count + amount })
    }

    pub(crate) fn counter_check(&self, key: &str, amount: u64, limit: u64, window_secs: u32) -> Result<Usage, String> {
        let count = self.counted(key, window_secs)?;
        Self::check_amount(amount)?;
        Ok(Usage { allowed: count.saturating_add(amount) <= limit, count })
    }
}
