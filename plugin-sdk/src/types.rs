//! The values hooks receive and host capabilities return.

use crate::Reply;

/// An ESMTP parameter of MAIL FROM or RCPT TO (`SIZE=1000`, `BODY=8BITMIME`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// An envelope address as the client gave it, without angle brackets, with
/// its ESMTP parameters. The sender of a bounce is the null address `""`.
///
/// The helpers split the address with [`crate::address::split`]:
///
/// ```
/// # use mailferry_plugin_sdk::Address;
/// let a = Address::new("Alice@Example.ORG");
/// assert_eq!(a.local_part(), Some("Alice"));
/// assert_eq!(a.domain_lowercase().as_deref(), Some("example.org"));
/// assert!(Address::new("").is_null());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Address {
    pub address: String,
    pub params: Vec<Param>,
}

impl Address {
    /// An address without parameters.
    pub fn new(address: impl Into<String>) -> Address {
        Address { address: address.into(), params: Vec::new() }
    }

    /// Adds an ESMTP parameter (builder style, handy in tests).
    pub fn with_param(mut self, key: &str, value: Option<&str>) -> Address {
        self.params.push(Param { key: key.to_string(), value: value.map(str::to_string) });
        self
    }

    /// True for the null sender `<>`.
    pub fn is_null(&self) -> bool {
        self.address.is_empty()
    }

    /// The part before the last `@` outside quotes, quotes kept.
    pub fn local_part(&self) -> Option<&str> {
        crate::address::split(&self.address).map(|(local, _)| local)
    }

    /// The part after the last `@` outside quotes, as written.
    pub fn domain(&self) -> Option<&str> {
        crate::address::split(&self.address).map(|(_, domain)| domain)
    }

    /// The domain in lower case (domains compare case-insensitively; local
    /// parts, strictly, do not).
    pub fn domain_lowercase(&self) -> Option<String> {
        self.domain().map(str::to_lowercase)
    }

    /// The parameter with this key (keys compare case-insensitively).
    pub fn param(&self, key: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.key.eq_ignore_ascii_case(key))
    }
}

impl From<&str> for Address {
    fn from(address: &str) -> Address {
        Address::new(address)
    }
}

impl From<String> for Address {
    fn from(address: String) -> Address {
        Address::new(address)
    }
}

/// What the host knows about the connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    /// Unique id of this session, also in every log line of it.
    pub id: String,
    /// Name of the listener that accepted it (from the configuration).
    pub listener: String,
    /// The client's address; behind a load balancer (a listener with
    /// `proxy_protocol`), the one the balancer reported.
    pub remote_ip: String,
    pub remote_port: u16,
    /// The address the client connected to; behind a load balancer, the
    /// balancer's own, as it reported it.
    pub local_ip: String,
    pub local_port: u16,
    /// True once TLS is active (implicit TLS or after STARTTLS).
    pub tls: bool,
    /// The name given in EHLO/HELO, if any yet.
    pub helo: Option<String>,
    /// The authenticated login, if the client authenticated.
    pub auth_user: Option<String>,
    /// True if the client address is in the listener's trusted networks.
    pub trusted: bool,
}

/// The envelope of the current transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Envelope {
    pub mail_from: Address,
    pub rcpt_to: Vec<Address>,
}

/// A value in the host-owned notes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NoteValue {
    Text(String),
    Integer(i64),
    Flag(bool),
    Texts(Vec<String>),
}

impl From<&str> for NoteValue {
    fn from(v: &str) -> NoteValue {
        NoteValue::Text(v.to_string())
    }
}

impl From<String> for NoteValue {
    fn from(v: String) -> NoteValue {
        NoteValue::Text(v)
    }
}

impl From<i64> for NoteValue {
    fn from(v: i64) -> NoteValue {
        NoteValue::Integer(v)
    }
}

impl From<bool> for NoteValue {
    fn from(v: bool) -> NoteValue {
        NoteValue::Flag(v)
    }
}

impl From<Vec<String>> for NoteValue {
    fn from(v: Vec<String>) -> NoteValue {
        NoteValue::Texts(v)
    }
}

/// Which notes: the connection's (kept for the whole session) or the
/// transaction's (cleared by RSET, a new MAIL FROM and the end of a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Connection,
    Transaction,
}

/// The severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Why a relay did not take a message ([`crate::Host::send_now`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Failure {
    /// True for 4xx replies, connection failures and timeouts.
    pub temporary: bool,
    /// The upstream's reply, or one the host wrote for a local failure.
    pub reply: Reply,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.temporary { "temporary" } else { "permanent" };
        write!(f, "{kind} failure: {}", self.reply)
    }
}

impl std::error::Error for Failure {}

/// A DKIM key the host has loaded ([`crate::Host::dkim_keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DkimKey {
    /// The signing domain (`d=`), lowercase.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
}

/// How the host signs ([`crate::Host::dkim_sign`]); start from
/// [`crate::Host::dkim_default_options`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignOptions {
    /// Header fields to sign when present (every occurrence). `From` is
    /// always signed.
    pub headers: Vec<String>,
    /// Fields signed once more than they occur, also when absent, so none
    /// can be added in transit without breaking the signature.
    pub oversign: Vec<String>,
    /// `relaxed/relaxed`, `relaxed/simple`, `simple/relaxed` or `simple/simple`.
    pub canonicalization: String,
    /// Signature lifetime in seconds (`x=`); 0 for none.
    pub expire_secs: u64,
}

/// What [`crate::Host::counter_take`] and [`crate::Host::counter_check`]
/// found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Whether the amount fits within the limit (`take`: and was added).
    pub allowed: bool,
    /// The count over the window, with the amount if it was added.
    pub count: u64,
}

/// What [`crate::Host::dkim_sign`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signed {
    /// A `DKIM-Signature` field was put at the top of the message.
    Added,
    /// The message already carries a valid signature by this key; nothing
    /// was added.
    AlreadySigned,
}

/// What happened to one recipient of a queued message
/// ([`crate::Plugin::delivered`], [`deferred`](crate::Plugin::deferred),
/// [`bounced`](crate::Plugin::bounced)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryEvent {
    /// The queue id, as in the `250 … queued as` reply and the logs.
    pub queue_id: String,
    /// The envelope sender; empty for a bounce.
    pub sender: String,
    pub recipient: String,
    /// The relay that answered, if one did.
    pub relay: Option<String>,
    /// The last reply about this recipient (the upstream's, or the host's).
    pub reply: String,
    /// Delivery attempts made so far, this one included.
    pub attempts: u32,
}

/// A value bound to a placeholder or read from a column ([`crate::Host::sql_query`]).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

impl SqlValue {
    pub fn is_null(&self) -> bool {
        matches!(self, SqlValue::Null)
    }

    /// The text of a `Text` value, or of a `Bytes` value that is UTF-8
    /// (MySQL's binary string columns).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(t) => Some(t),
            SqlValue::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> SqlValue {
        SqlValue::Text(v.to_string())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> SqlValue {
        SqlValue::Text(v)
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> SqlValue {
        SqlValue::Int(v)
    }
}

impl From<f64> for SqlValue {
    fn from(v: f64) -> SqlValue {
        SqlValue::Float(v)
    }
}

impl From<bool> for SqlValue {
    fn from(v: bool) -> SqlValue {
        SqlValue::Bool(v)
    }
}

impl From<Vec<u8>> for SqlValue {
    fn from(v: Vec<u8>) -> SqlValue {
        SqlValue::Bytes(v)
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> SqlValue {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// What a statement returned ([`crate::Host::sql_query`]).
///
/// ```
/// # use mailferry_plugin_sdk::{SqlRows, SqlValue};
/// let rows = SqlRows::new(&["password", "active"], vec![vec!["{PLAIN}x".into(), SqlValue::Int(1)]]);
/// assert_eq!(rows.get(0, "Password").and_then(SqlValue::as_str), Some("{PLAIN}x"));
/// assert_eq!(rows.get(0, "senders"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqlRows {
    /// Column names, in order; empty when no row came back.
    pub columns: Vec<String>,
    /// Each row's values, in column order.
    pub rows: Vec<Vec<SqlValue>>,
    /// Rows inserted, updated or deleted; 0 for a query.
    pub affected: u64,
}

impl SqlRows {
    /// Rows with these columns (handy in tests).
    pub fn new(columns: &[&str], rows: Vec<Vec<SqlValue>>) -> SqlRows {
        SqlRows { columns: columns.iter().map(|c| c.to_string()).collect(), rows, affected: 0 }
    }

    /// The index of the column named `name`, compared without regard to
    /// case (backends differ in how they case unquoted names).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.eq_ignore_ascii_case(name))
    }

    /// The value of column `name` in row `row`.
    pub fn get(&self, row: usize, name: &str) -> Option<&SqlValue> {
        self.rows.get(row)?.get(self.column(name)?)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Why a statement failed ([`crate::Host::sql_query`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqlError {
    /// The database could not be reached, was busy, or did not answer in
    /// time: the same statement may work later. False for mistakes in the
    /// statement.
    pub temporary: bool,
    /// What went wrong; never the database's URL or password.
    pub message: String,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.temporary { "temporary" } else { "permanent" };
        write!(f, "{kind} database error: {}", self.message)
    }
}

impl std::error::Error for SqlError {}
