//! Upstream connections kept open between queued deliveries.
//!
//! After an outage or a burst from a cron job, hundreds of messages go to
//! the same relay; a TCP + TLS handshake + EHLO + AUTH for each costs the
//! upstream and us several round trips and, at SES, counts against the
//! connection rate. A connection that finished a transaction cleanly waits
//! here for the next message to the same relay, for at most
//! `connection_idle_secs`, and is used for at most
//! `connection_max_messages` messages and [`MAX_LIFETIME`].
//!
//! Hand-written: mail-send has no pool, and what makes a connection
//! reusable (a transaction that ended in a known state) is only known here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_send::SmtpClient;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The longest a connection is used, however busy: long-lived connections
/// are where an upstream's state (or a middlebox) goes stale.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// How long a polite QUIT to an idle connection may take before it is just
/// dropped.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A plain or TLS stream, so both kinds of connection share one pool.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub type Client = SmtpClient<Box<dyn Stream>>;

/// An open, authenticated upstream connection between transactions.
pub struct Conn {
    pub client: Client,
    /// The upstream takes MAIL, RCPT and DATA in one go (RFC 2920).
    pub pipelining: bool,
    /// Messages sent over it so far.
    pub uses: u32,
    opened: Instant,
}

impl Conn {
    pub fn new<T: Stream + 'static>(client: SmtpClient<T>, pipelining: bool) -> Conn {
        Conn {
            client: SmtpClient { stream: Box::new(client.stream), timeout: client.timeout },
            pipelining,
            uses: 0,
            opened: Instant::now(),
        }
    }
}

struct Idle {
    conn: Conn,
    id: u64,
    since: Instant,
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    next_id: AtomicU64,
}

impl Pool {
    /// An idle connection to `relay` still worth using, if there is one
    /// (the most recently used: the likeliest to be alive).
    pub fn take(&self, relay: &str, max_idle: Duration) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(relay)?;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < max_idle && i.conn.opened.elapsed() < MAX_LIFETIME {
                return Some(i.conn);
            }
            // Stale: the upstream may well have closed it already.
            tokio::spawn(quit(i.conn));
        }
        None
    }

    /// Keeps a connection that just finished a transaction for the next
    /// message to `relay`, or closes it if it has done its share. An idle
    /// connection not taken within `max_idle` gets a QUIT.
    pub fn put(self: &Arc<Self>, relay: &str, conn: Conn, max_messages: u32, max_idle: Duration) {
        if conn.uses >= max_messages || max_idle.is_zero() || conn.opened.elapsed() >= MAX_LIFETIME {
            tokio::spawn(quit(conn));
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.idle.lock().unwrap().entry(relay.to_string()).or_default().push(Idle { conn, id, since: Instant::now() });
        let pool = self.clone();
        let relay = relay.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(max_idle).await;
            let conn = {
                let mut idle = pool.idle.lock().unwrap();
                let list = idle.get_mut(&relay);
                list.and_then(|l| l.iter().position(|i| i.id == id).map(|p| l.remove(p)))
            };
            if let Some(i) = conn {
                quit(i.conn).await;
            }
        });
    }
}

impl Pool {
    /// QUITs every idle connection (at shutdown: the upstream sees a clean
    /// goodbye rather than a dropped socket).
    pub async fn close_all(&self) {
        let idle: Vec<Idle> = self.idle.lock().unwrap().drain().flat_map(|(_, list)| list).collect();
        let quits = idle.into_iter().map(|i| quit(i.conn));
        join_all(quits).await;
    }
}

/// Runs the futures concurrently and waits for all of them.
async fn join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}

/// Says goodbye, briefly: the upstream may already have gone.
pub async fn quit(conn: Conn) {
    let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.client.quit()).await;
}
