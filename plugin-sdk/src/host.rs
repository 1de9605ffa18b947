//! [`Host`]: a plugin's handle to the capabilities the host grants it.

use crate::{
    Connection, DkimKey, Envelope, Failure, Level, Message, NoteValue, Reply, Scope, SignOptions, Signed, SqlError,
    SqlRows, SqlValue, Usage,
};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::HostBackend;
#[cfg(target_arch = "wasm32")]
pub(crate) use crate::wasm::HostBackend;

/// The host's capabilities, passed to every hook.
///
/// Inside the server each method is one call into the host (a WIT import).
/// Under `cargo test` on the build machine, the same methods are served by a
/// [`TestHost`](crate::testing::TestHost), so a plugin is tested unchanged.
///
/// Logging, the configuration, the session and the notes are always
/// available. [`verify_password`](Host::verify_password) needs the
/// `password` grant, [`send_now`](Host::send_now) the `outbound` grant,
/// the `dkim_*` methods the `dkim` grant, the `counter_*` methods the
/// `counters` grant and the `sql_*` methods an `sql:NAME` grant in the host
/// configuration: a
/// component that uses them without the grant is refused at start-up,
/// naming the missing grant.
pub struct Host {
    pub(crate) backend: HostBackend,
}

impl Host {
    /// Writes a log line through the host, tagged with the plugin's name and
    /// the session id.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        self.backend.log(level, message.as_ref());
    }

    /// Logs at [`Level::Trace`].
    pub fn trace(&self, message: impl AsRef<str>) {
        self.log(Level::Trace, message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(Level::Debug, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Error`].
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(Level::Error, message);
    }

    /// What the host knows about the connection now (EHLO name and
    /// authenticated user appear once known).
    pub fn connection(&self) -> Connection {
        self.backend.connection()
    }

    /// The current transaction's envelope; `None` before MAIL FROM.
    pub fn envelope(&self) -> Option<Envelope> {
        self.backend.envelope()
    }

    /// Reads a note. Notes are shared by all plugins of the session.
    pub fn note(&self, scope: Scope, key: &str) -> Option<NoteValue> {
        self.backend.note(scope, key)
    }

    /// Writes a note, replacing any value under this key.
    pub fn set_note(&self, scope: Scope, key: &str, value: impl Into<NoteValue>) {
        self.backend.set_note(scope, key, value.into());
    }

    /// Removes a note.
    pub fn remove_note(&self, scope: Scope, key: &str) {
        self.backend.remove_note(scope, key);
    }

    /// Checks `password` against a stored hash, in the host and in constant
    /// time: `Ok(true)` on a match, `Ok(false)` on a mismatch, `Err` if the
    /// hash is malformed or its scheme unknown. Schemes: argon2id/argon2i,
    /// bcrypt, SHA512-CRYPT, SHA256-CRYPT, MD5-CRYPT (verified for old
    /// entries, weak), each optionally behind a Dovecot `{SCHEME}` prefix,
    /// and `{PLAIN}`. Needs the `password` grant.
    pub fn verify_password(&self, password: &str, stored: &str) -> Result<bool, String> {
        self.backend.verify_password(password, stored)
    }

    /// Hands the message to the relay named `relay` in the host
    /// configuration, with the transaction's envelope, and waits for the
    /// upstream's final reply. Needs the `outbound` grant.
    pub fn send_now(&self, relay: &str, msg: &Message<'_>) -> Result<Reply, Failure> {
        self.backend.send_now(relay, &msg.backend)
    }

    /// Stores the message, with the transaction's envelope, in the host's
    /// durable queue for delivery through `route` (a `[routes.NAME]` or a
    /// relay's name; a route listing the sender's domain is taken instead).
    /// `Ok` carries the queue id and comes only once the message is on
    /// stable storage, so answering `250` after it is safe. Needs the
    /// `outbound` grant.
    pub fn enqueue(&self, route: &str, msg: &Message<'_>) -> Result<String, Failure> {
        self.backend.enqueue(route, &msg.backend)
    }

    /// The route a message from `sender` takes when `route` is asked for;
    /// `None` if there is no such route or relay. Needs the `outbound` grant.
    pub fn route_for(&self, route: &str, sender: &str) -> Option<String> {
        self.backend.route_for(route, sender)
    }

    /// The largest message, in octets, some relay of `route` (a route or a
    /// relay's name) takes; `None` when there is no known limit or no such
    /// route. Lets a plugin refuse `MAIL FROM:<…> SIZE=n` at once instead
    /// of after the whole message arrived. Needs the `outbound` grant.
    pub fn max_message_size(&self, route: &str) -> Option<u64> {
        self.backend.max_message_size(route)
    }

    /// The host's default signing options: its recommended header list,
    /// `From` over-signed, `relaxed/relaxed`, no expiry. Needs the `dkim` grant.
    pub fn dkim_default_options(&self) -> SignOptions {
        self.backend.dkim_default_options()
    }

    /// The DKIM keys the host holds for `domain` (any case); empty if none.
    /// Needs the `dkim` grant.
    pub fn dkim_keys(&self, domain: &str) -> Vec<DkimKey> {
        self.backend.dkim_keys(domain)
    }

    /// Signs the message as it is now with the host's key for
    /// `domain`/`selector` and puts the `DKIM-Signature` field at the top.
    /// Header edits made afterwards are not covered by the signature, so
    /// sign last. Needs the `dkim` grant.
    pub fn dkim_sign(
        &self,
        msg: &Message<'_>,
        domain: &str,
        selector: &str,
        options: &SignOptions,
    ) -> Result<Signed, String> {
        self.backend.dkim_sign(&msg.backend, domain, selector, options)
    }

    /// Adds `amount` to the counter `key` and returns its count over the
    /// last `window_secs` (1 s to 31 days). Counters are kept by the host,
    /// in Redis shared by every node when configured; keys are this
    /// plugin's own (1 to 512 octets). `Err` when the key or window is out
    /// of bounds or the shared store is down and the host refuses rather
    /// than count locally: refuse what you would have counted, with a 4xx.
    /// At most 16 counter calls per hook call. Needs the `counters` grant.
    pub fn counter_incr(&self, key: &str, amount: u64, window_secs: u32) -> Result<u64, String> {
        self.backend.counter_incr(key, amount, window_secs)
    }

    /// The count of `key` over the last `window_secs`, unchanged. Needs the
    /// `counters` grant.
    pub fn counter_get(&self, key: &str, window_secs: u32) -> Result<u64, String> {
        self.backend.counter_get(key, window_secs)
    }

    /// Adds `amount` to `key` only if its count stays within `limit`,
    /// atomically, across nodes too. A refused amount is not counted. Needs
    /// the `counters` grant.
    pub fn counter_take(&self, key: &str, amount: u64, limit: u64, window_secs: u32) -> Result<Usage, String> {
        self.backend.counter_take(key, amount, limit, window_secs)
    }

    /// Whether [`counter_take`](Host::counter_take) would add `amount` now;
    /// adds nothing. Needs the `counters` grant.
    pub fn counter_check(&self, key: &str, amount: u64, limit: u64, window_secs: u32) -> Result<Usage, String> {
        self.backend.counter_check(key, amount, limit, window_secs)
    }

    /// The databases this plugin was granted (`grants = ["sql:NAME"]`), so
    /// a plugin can refuse at start-up a `database` setting it could never
    /// use. Needs an `sql:NAME` grant.
    pub fn sql_databases(&self) -> Vec<String> {
        self.backend.sql_databases()
    }

    /// Runs one statement on a database the host holds (`[databases.NAME]`
    /// in its configuration) and waits for the answer. Placeholders are
    /// `:name`, whatever the backend, and `params` gives their values: they
    /// are bound, never written into the SQL text, so a value cannot change
    /// the statement. A name may appear several times; a placeholder without
    /// a value, a second statement (`;`) or the backends' own placeholders
    /// (`?`, `$1`) are errors.
    ///
    /// ```no_run
    /// # use mailferry_plugin_sdk::{Host, SqlValue};
    /// # fn f(host: &Host, login: &str) {
    /// let rows = host.sql_query(
    ///     "users",
    ///     "SELECT password, active FROM mailbox WHERE username = :login",
    ///     &[("login", login.into())],
    /// );
    /// match rows {
    ///     Ok(rows) if rows.is_empty() => { /* unknown login */ }
    ///     Ok(rows) => { let hash = rows.get(0, "password").and_then(SqlValue::as_str); }
    ///     Err(e) if e.temporary => { /* database down: answer 4xx */ }
    ///     Err(e) => host.error(format!("query failed: {e}")),
    /// }
    /// # }
    /// ```
    ///
    /// At most the database's `max_rows` rows and `max_result_bytes`
    /// octets come back (more is an error, not a shorter answer), within its
    /// `query_timeout_ms`. Needs the grant `sql:NAME` for this database.
    pub fn sql_query(&self, database: &str, statement: &str, params: &[(&str, SqlValue)]) -> Result<SqlRows, SqlError> {
        self.backend.sql_query(database, statement, params)
    }
}
