//! The delivery queue: a `250` after DATA means the message is in the spool
//! (fsynced), and from there it is delivered or bounced.
//!
//! Delivery runs in the background: each due message is tried through the
//! relays of its route in order (failover), one outcome per recipient.
//! Delivered recipients are done; a recipient refused for good (5xx) is
//! bounced at once with a DSN to the sender; the rest wait for the next
//! attempt by the retry schedule until `max_age`, then bounce. Upstream
//! credentials refused (535) count as temporary: fixing the configuration
//! must not have cost anyone their mail.
//!
//! Hand-written: the queue is the product itself; the pieces under it are
//! crates (mail-send for SMTP, serde_json for the entries).

mod attempt;
pub mod control;
pub mod dsn;
pub mod events;
mod journal;
pub mod spool;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use crate::config::{self, Config};
use crate::mail::{Address, Envelope, Param, Reply};
use crate::outbound::{DeliveryRcpt, RcptOutcome, Relays, SendFailure};
pub use events::DeliveryEvents;
use spool::{Entry, Rcpt, RcptState, Spool};

/// The queue of one server.
pub struct Queue {
    spool: Spool,
    /// Relays and routes as configured now (replaced on a reload; an
    /// attempt works with the set it started with).
    delivery: std::sync::RwLock<Arc<Delivery>>,
    cfg: config::Queue,
    hostname: String,
    state: Mutex<State>,
    wake: Notify,
    /// Delivery attempts running at once, per relay (made on first use, so
    /// relays added by a reload get theirs).
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Set at shutdown: no new attempts start.
    stopping: std::sync::atomic::AtomicBool,
    /// Relays that said "slow down" (SES `454 Throttling failure`): not
    /// used until the time given, with a wait that doubles while they keep
    /// saying it.
    throttled: Mutex<HashMap<String, Throttle>>,
    /// Attempts running at once, all relays together: after an outage
    /// thousands of messages fall due together, and each attempt reads its
    /// message into memory.
    attempt_slots: Arc<Semaphore>,
    /// Who hears about deliveries (the plugin pipeline, set once it is
    /// loaded and replaced on a reload).
    events: std::sync::RwLock<Option<Arc<dyn DeliveryEvents>>>,
    /// New messages' octets, kept for their first attempt so it need not
    /// read them back from the spool; at most [`FRESH_BYTES`] in all.
    fresh: Mutex<Fresh>,
    /// This queue, for starting attempts from `&self`.
    me: std::sync::Weak<Queue>,
}

#[derive(Default)]
struct Fresh {
    messages: HashMap<String, Arc<Vec<u8>>>,
    bytes: usize,
}

/// Octets of new messages kept in memory for their first attempt.
const FRESH_BYTES: usize = 16 * 1024 * 1024;

/// Where messages go: the relays and the routes over them.
struct Delivery {
    relays: Arc<Relays>,
    routes: BTreeMap<String, config::Route>,
}

#[derive(Clone, Copy)]
struct Throttle {
    until: tokio::time::Instant,
    wait: Duration,
}

/// Delivery attempts in memory at once, all relays together.
const MAX_ATTEMPTS: usize = 64;

/// The longest pause a throttling relay gets.
const MAX_THROTTLE_PAUSE: Duration = Duration::from_secs(60);

/// Whether a reply asks us to send more slowly rather than saying
/// something about the message.
fn is_throttling(reply: &str) -> bool {
    let lower = reply.to_ascii_lowercase();
    ["throttl", "sending rate", "rate limit", "rate exceeded", "too many messages", "slow down"]
        .iter()
        .any(|w| lower.contains(w))
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Entries with an attempt running.
    busy: HashSet<String>,
    /// The entries not busy, by when they are due: the run loop takes what
    /// is due without looking at the rest (a backlog after an outage may be
    /// large, and every new message wakes the loop).
    due: BTreeSet<(i64, String)>,
}

impl State {
    /// Schedules an entry (new, or not busy any more) by its next attempt.
    fn schedule(&mut self, id: &str) {
        if let Some(e) = self.entries.get(id) {
            if !self.busy.contains(id) {
                self.due.insert((e.next_attempt, e.id.clone()));
            }
        }
    }

    fn unschedule(&mut self, id: &str) {
        if let Some(e) = self.entries.get(id) {
            self.due.remove(&(e.next_attempt, e.id.clone()));
        }
    }
}

/// What `mailferry queue stats` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub messages: usize,
    pub recipients_pending: usize,
    /// Age of the oldest message, seconds.
    pub oldest_secs: i64,
    pub in_flight: usize,
    pub bytes: u64,
    /// fsync calls made by the spool since the server started.
    #[serde(default)]
    pub fsyncs: u64,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Queue {
    /// Opens the spool (repairing what a crash left) with its entries.
    pub fn open(config: &Config, relays: Arc<Relays>) -> anyhow::Result<Arc<Queue>> {
        let (spool, entries) = Spool::open(&config.queue.dir)
            .with_context(|| format!("queue.dir {}: cannot open the spool", config.queue.dir.display()))?;
        if !entries.is_empty() {
            tracing::info!(messages = entries.len(), "queued messages found in the spool; delivering them");
        }
        let mut state = State::default();
        for e in entries {
            state.due.insert((e.next_attempt, e.id.clone()));
            state.entries.insert(e.id.clone(), e);
        }
        Ok(Arc::new_cyclic(|me| Queue {
            me: me.clone(),
            fresh: Mutex::default(),
            spool,
            delivery: std::sync::RwLock::new(Arc::new(Delivery { relays, routes: config.routes.clone() })),
            cfg: config.queue.clone(),
            hostname: config.server.hostname.clone(),
            state: Mutex::new(state),
            wake: Notify::new(),
            slots: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            throttled: Mutex::new(HashMap::new()),
            events: std::sync::RwLock::new(None),
            attempt_slots: Arc::new(Semaphore::new(MAX_ATTEMPTS)),
        }))
    }

    /// The route a message takes: a route listing the sender's domain, else
    /// the one asked for (a `[routes.NAME]` or a relay's name).
    pub fn resolve_route(&self, requested: &str, sender: &str) -> Result<String, String> {
        let d = self.delivery();
        resolve_route(&d.routes, &d.relays, requested, sender)
    }

    fn delivery(&self) -> Arc<Delivery> {
        self.delivery.read().unwrap().clone()
    }

    /// Takes new relays and routes (a configuration reload): attempts that
    /// start from now on use them. Messages keep their route by name.
    pub fn reconfigure(&self, relays: Arc<Relays>, routes: BTreeMap<String, config::Route>) {
        *self.delivery.write().unwrap() = Arc::new(Delivery { relays, routes });
        self.wake.notify_one();
    }

    /// The semaphore bounding attempts through `relay` at once.
    fn slot(&self, relay: &str) -> Arc<Semaphore> {
        self.slots
            .lock()
            .unwrap()
            .entry(relay.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.cfg.concurrency)))
            .clone()
    }

    /// Stores a message durably and schedules its delivery. `Ok` carries the
    /// queue id; only then may the client be told `250`.
    pub async fn enqueue(
        &self,
        route: &str,
        envelope: &Envelope,
        message: Vec<u8>,
        session: &str,
    ) -> Result<String, SendFailure> {
        let route = self.resolve_route(route, &envelope.mail_from.address).map_err(|e| {
            tracing::error!(session, "{e}");
            SendFailure {
                temporary: true,
                reply: Reply::new(451, "4.3.5", "message not queued: no delivery route is configured for it"),
            }
        })?;
        // Refuse now what every relay of the route would refuse: the client
        // learns it at once instead of from a bounce.
        let d = self.delivery();
        if let Some(limit) = route_max_size(&d.routes, &d.relays, &route) {
            if message.len() > limit {
                tracing::info!(session, size = message.len(), limit, route = %route, "message larger than the route's relays take");
                return Err(SendFailure {
                    temporary: false,
                    reply: Reply::new(
                        552,
                        "5.3.4",
                        format!("message too big: the relays of this server take at most {limit} octets"),
                    ),
                });
            }
        }
        let pass = |params: &[Param], keys: &[&str]| -> Vec<(String, Option<String>)> {
            params
                .iter()
                .filter(|p| keys.iter().any(|k| p.key.eq_ignore_ascii_case(k)))
                .map(|p| (p.key.to_ascii_uppercase(), p.value.clone()))
                .collect()
        };
        let entry = Entry {
            id: spool::new_id(),
            created: now(),
            route,
            mail_from: envelope.mail_from.address.clone(),
            mail_params: pass(&envelope.mail_from.params, &["BODY", "SMTPUTF8", "ENVID", "RET"]),
            rcpts: envelope
                .rcpt_to
                .iter()
                .map(|r| Rcpt {
                    address: r.address.clone(),
                    params: pass(&r.params, &["NOTIFY", "ORCPT"]),
                    state: RcptState::Pending,
                    last_reply: None,
                    relay: None,
                })
                .collect(),
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            session: session.to_string(),
            size: message.len() as u64,
            dsn_pending: Vec::new(),
        };
        self.store(entry, message).await.map_err(|e| {
            tracing::error!(session, error = %e, "cannot write to the spool");
            SendFailure {
                temporary: true,
                reply: Reply::new(451, "4.3.0", "message not queued: local storage problem, please try again later"),
            }
        })
    }

    async fn store(&self, entry: Entry, message: Vec<u8>) -> std::io::Result<String> {
        let message = Arc::new(message);
        self.spool.store(&entry, message.clone()).await?;
        let id = entry.id.clone();
        tracing::info!(queue_id = %id, route = %entry.route, rcpts = entry.rcpts.len(), size = entry.size, session = %entry.session, "queued");
        {
            let mut fresh = self.fresh.lock().unwrap();
            if fresh.bytes + message.len() <= FRESH_BYTES {
                fresh.bytes += message.len();
                fresh.messages.insert(id.clone(), message);
            }
        }
        self.state.lock().unwrap().entries.insert(id.clone(), entry);
        self.start_or_schedule(&id);
        Ok(id)
    }

    /// A new message's first attempt starts at once when there is room
    /// (rather than through the run loop: one hand-over less per message);
    /// otherwise it waits its turn.
    fn start_or_schedule(&self, id: &str) {
        let queue = self.me.upgrade();
        let room = self.attempt_slots.clone().try_acquire_owned().ok();
        match (queue, room) {
            (Some(queue), Some(room)) if !self.stopping.load(std::sync::atomic::Ordering::SeqCst) => {
                self.state.lock().unwrap().busy.insert(id.to_string());
                queue.start_attempt(id.to_string(), room);
            }
            _ => {
                self.state.lock().unwrap().schedule(id);
                self.wake.notify_one();
            }
        }
    }

    /// Runs one attempt in the background, holding `room` until it ends.
    fn start_attempt(self: Arc<Self>, id: String, room: tokio::sync::OwnedSemaphorePermit) {
        tokio::spawn(async move {
            self.attempt(&id).await;
            drop(room);
            let mut st = self.state.lock().unwrap();
            st.busy.remove(&id);
            st.schedule(&id);
            drop(st);
            self.wake.notify_one();
        });
    }

    /// The octets of a message for an attempt: kept from its arrival, or
    /// read from the spool.
    async fn message_of(&self, id: &str) -> std::io::Result<Arc<Vec<u8>>> {
        let kept = {
            let mut fresh = self.fresh.lock().unwrap();
            let kept = fresh.messages.remove(id);
            fresh.bytes -= kept.as_ref().map_or(0, |m| m.len());
            kept
        };
        match kept {
            Some(m) => Ok(m),
            None => self.read_message(id).await.map(Arc::new),
        }
    }

    /// Reports deliveries to `events` (the newest after a reload).
    pub fn set_events(&self, events: Arc<dyn DeliveryEvents>) {
        *self.events.write().unwrap() = Some(events);
    }

    /// Reports what one attempt did for the recipients it touched.
    fn report_events(&self, entry: &Entry, touched: &[usize]) {
        let Some(listener) = self.events.read().unwrap().clone() else { return };
        let events: Vec<events::Event> = touched
            .iter()
            .map(|&i| {
                let r = &entry.rcpts[i];
                events::Event {
                    outcome: match r.state {
                        RcptState::Delivered => events::Outcome::Delivered,
                        RcptState::Bounced => events::Outcome::Bounced,
                        RcptState::Pending => events::Outcome::Deferred,
                    },
                    queue_id: entry.id.clone(),
                    sender: entry.mail_from.clone(),
                    recipient: r.address.clone(),
                    relay: r.relay.clone(),
                    reply: r.last_reply.clone().unwrap_or_default(),
                    attempts: entry.attempts,
                }
            })
            .collect();
        if events.is_empty() {
            return;
        }
        let envelope = Envelope {
            mail_from: Address::bare(entry.mail_from.clone()),
            rcpt_to: entry.rcpts.iter().map(|r| Address::bare(r.address.clone())).collect(),
        };
        listener.report(envelope, events);
    }

    /// Starts delivering in the background, and answering `mailferry
    /// queue` on the control socket.
    pub fn start(self: &Arc<Self>) {
        if let Err(e) = control::serve(self.clone()) {
            tracing::error!(error = %e, "cannot open the queue control socket; `mailferry queue` will not reach this server");
        }
        let q = self.clone();
        tokio::spawn(async move { q.run().await });
    }

    /// Starts no new attempts and waits (up to `grace`) for the running
    /// ones to record their outcome, so a message just delivered is not
    /// sent again after a restart.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let busy = self.state.lock().unwrap().busy.len();
            if busy == 0 {
                // What was delivered is marked so before the process ends.
                if let Err(e) = self.spool.flush().await {
                    tracing::warn!(error = %e, "cannot write the last delivery records; those messages may be sent again after the restart");
                }
                self.delivery().relays.close_idle().await;
                let stats = self.stats();
                tracing::info!(messages = stats.messages, fsyncs = stats.fsyncs, "queue stopped");
                let _ = std::fs::remove_file(control::socket_path(self.spool.dir()));
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(attempts = busy, "stopping with delivery attempts still running; they will be retried");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the attempts that are due, at most [`MAX_ATTEMPTS`] at once: a
    /// message waits in `due`, not as a task, until there is room (after an
    /// outage thousands fall due together).
    async fn run(self: Arc<Self>) {
        loop {
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let Ok(room) = self.attempt_slots.clone().acquire_owned().await else { return };
            let (id, next) = {
                let mut st = self.state.lock().unwrap();
                match st.due.first() {
                    Some((at, _)) if *at <= now() => {
                        let (_, id) = st.due.pop_first().expect("just looked");
                        st.busy.insert(id.clone());
                        (Some(id), None)
                    }
                    other => (None, other.map(|(at, _)| *at)),
                }
            };
            let Some(id) = id else {
                drop(room);
                let wait = next.map(|n| (n - now()).clamp(1, 60) as u64).unwrap_or(60);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                    _ = self.wake.notified() => {}
                }
                continue;
            };
            self.clone().start_attempt(id, room);
        }
    }

    async fn read_message(&self, id: &str) -> std::io::Result<Vec<u8>> {
        self.spool.read_message(id).await
    }

    /// Every entry, oldest first.
    pub fn list(&self) -> Vec<Entry> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<Entry> = st.entries.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn stats(&self) -> Stats {
        // Counted in place: a scrape must not copy a queue of 100k entries
        // while sessions wait for the lock to store theirs.
        let mut s = {
            let st = self.state.lock().unwrap();
            stats_of(st.entries.values(), st.busy.len())
        };
        s.fsyncs = self.spool.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
        s
    }

    /// Makes a message (or every message) due now.
    pub async fn retry(&self, id: Option<&str>) -> usize {
        // In memory only: the schedule is not worth an fsync per message,
        // and the attempt this causes records the next time anyway.
        let n = {
            let mut st = self.state.lock().unwrap();
            let mut n = 0;
            let ids: Vec<String> =
                st.entries.keys().filter(|e| id.is_none_or(|id| e.as_str() == id)).cloned().collect();
            for e in &ids {
                st.unschedule(e);
                st.entries.get_mut(e).expect("listed").next_attempt = 0;
                st.schedule(e);
                n += 1;
            }
            n
        };
        self.wake.notify_one();
        n
    }

    /// Deletes a message without delivering or bouncing it.
    pub async fn delete(&self, id: &str) -> Result<(), String> {
        {
            let mut st = self.state.lock().unwrap();
            if st.busy.contains(id) {
                return Err(format!("{id} is being delivered right now; try again in a moment"));
            }
            st.unschedule(id);
            if st.entries.remove(id).is_none() {
                return Err(format!("no queued message {id}"));
            }
        }
        {
            let mut fresh = self.fresh.lock().unwrap();
            if let Some(m) = fresh.messages.remove(id) {
                fresh.bytes -= m.len();
            }
        }
        self.spool.remove(id).await.map_err(|e| e.to_string())?;
        self.spool.flush().await.map_err(|e| e.to_string())?;
        tracing::warn!(queue_id = id, "deleted from the queue by the operator");
        Ok(())
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}

/// The route a message from `sender` takes when `requested` is asked for:
/// a route listing the sender's domain, else the one asked for (a
/// `[routes.NAME]` or a relay's name).
pub fn resolve_route(
    routes: &BTreeMap<String, config::Route>,
    relays: &Relays,
    requested: &str,
    sender: &str,
) -> Result<String, String> {
    let domain = sender.rsplit_once('@').map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase());
    if let Some(d) = domain {
        if let Some((name, _)) = routes.iter().find(|(_, r)| r.sender_domains.contains(&d)) {
            return Ok(name.clone());
        }
    }
    if routes.contains_key(requested) || relays.has(requested) {
        Ok(requested.to_string())
    } else {
        Err(format!("no route or relay named {requested:?} ([routes.{requested}] or [relays.{requested}])"))
    }
}

/// The relays of a route, in order (a relay's name is a route of one).
fn relays_of(routes: &BTreeMap<String, config::Route>, route: &str) -> Vec<String> {
    match routes.get(route) {
        Some(r) => r.relays.clone(),
        None => vec![route.to_string()],
    }
}

/// The largest message, in octets, some relay of `route` takes; `None`
/// when one of them has no limit (or there is no such route).
pub fn route_max_size(routes: &BTreeMap<String, config::Route>, relays: &Relays, route: &str) -> Option<usize> {
    let names = relays_of(routes, route);
    if names.is_empty() || !names.iter().all(|r| relays.has(r)) {
        return None;
    }
    names.iter().try_fold(0usize, |acc, r| relays.max_message_size(r).map(|l| acc.max(l))).filter(|&l| l > 0)
}

/// Counts for `stats`.
pub fn stats_of<'a>(entries: impl IntoIterator<Item = &'a Entry>, in_flight: usize) -> Stats {
    let t = now();
    let mut s = Stats { in_flight, ..Default::default() };
    for e in entries {
        s.messages += 1;
        s.recipients_pending += e.pending().count();
        s.oldest_secs = s.oldest_secs.max(t - e.created);
        s.bytes += e.size;
    }
    s
}

/// The enhanced status in a reply line (`550 5.1.1 …`), else by its class.
fn status_of(reply: &str) -> String {
    reply
        .split_whitespace()
        .take(3)
        .find(|w| {
            let p: Vec<&str> = w.split('.').collect();
            p.len() == 3 && p.iter().all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .unwrap_or_else(|| if reply.starts_with('4') { "4.0.0".into() } else { "5.0.0".into() })
}
