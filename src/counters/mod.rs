//! Counters over sliding windows, and marks that expire: what AUTH
//! brute-force protection (bans) and the plugins' `counters` capability
//! (rate limits) are built on.
//!
//! They live in this process's memory ([`memory`]), or in Redis ([`redis`])
//! when `[counters] redis` is set, so several mailferry nodes behind a load
//! balancer share them: a ban placed by one node holds on every node, and a
//! rate limit counts the mail of all of them.
//!
//! A window is sliding: the count is the current fixed window's plus the
//! previous one's, weighted by how much of the previous window still lies
//! within the last `window` (the usual approximation; two numbers per key
//! instead of one per event). So a burst at a window boundary cannot pass
//! twice the limit, and a count decays smoothly instead of falling to zero.
//!
//! When Redis cannot be reached or does not answer within `timeout_ms`
//! (an outage), `on_redis_error` decides:
//! `local` (the default) counts in this node's memory until Redis answers
//! again, so limits still hold per node; `refuse` reports an error, and the
//! users of the counter refuse what they would have counted. Either way the
//! first failure is logged as an error, the recovery too, and
//! `mailferry_redis_up` says which state the node is in. An error Redis
//! answers to one call (a script error, a counter that would overflow) is
//! not an outage: that call fails, and the next goes to Redis as usual.

pub mod memory;
pub mod redis;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{self, OnRedisError};

pub use memory::Memory;

/// Longest key accepted (prefix excluded); longer keys are refused so a
/// counter never holds much memory whatever it is named after.
pub const MAX_KEY_LEN: usize = 1024;

/// Longest window or mark (the configuration checks its durations
/// against it too).
pub const MAX_WINDOW: Duration = crate::config::MAX_COUNTER_WINDOW;

/// Largest amount one call adds or asks about: room for the octets of any
/// message, and small enough that no count reaches Redis's 64-bit limit
/// (that takes 2^31 calls at the cap within one window) or loses precision
/// in its Lua numbers (exact below 2^53).
pub const MAX_AMOUNT: u64 = u32::MAX as u64;

/// After Redis failed, how long to count locally (or refuse) before trying
/// it again: a Redis that hangs must not cost every session a timeout.
const REDIS_RETRY: Duration = Duration::from_secs(5);

/// The outcome of [`Counters::take`] and [`Counters::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Whether the amount fits within the limit (and, for `take`, was added).
    pub allowed: bool,
    /// The count over the window: with the amount when it was added.
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// The key or window is not acceptable (a mistake of the caller).
    #[error("{0}")]
    Invalid(String),
    /// Redis is down and `on_redis_error = "refuse"`.
    #[error("counters unavailable: {0}")]
    Unavailable(String),
}

/// One operation, run by either store.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    /// Adds `by` (when `add`, and when `limit` allows) and reports the count.
    Hit { key: &'a str, by: u64, limit: Option<u64>, add: bool, window: Duration },
    /// Sets a mark that expires after `ttl`.
    Mark { key: &'a str, ttl: Duration },
    /// How long a mark still lasts.
    Marked { key: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Usage(Usage),
    Done,
    Remaining(Option<Duration>),
}

/// Where counters live; shared by every session and plugin of the process.
pub struct Counters {
    local: Memory,
    redis: Option<redis::Redis>,
    on_redis_error: OnRedisError,
    health: Mutex<Health>,
}

/// Whether Redis answered lately.
struct Health {
    down: bool,
    retry_at: Option<Instant>,
    /// Redis calls that failed, since start.
    failures: u64,
}

impl Counters {
    /// In memory only, at most `max_keys` keys.
    pub fn memory(max_keys: usize) -> Counters {
        Counters {
            local: Memory::new(max_keys),
            redis: None,
            on_redis_error: OnRedisError::Local,
            health: Mutex::new(Health { down: false, retry_at: None, failures: 0 }),
        }
    }

    /// As configured. Nothing connects yet: Redis is reached on first use,
    /// so a Redis that is down does not stop the start.
    pub fn from_config(c: &config::Counters) -> anyhow::Result<Counters> {
        let mut counters = Counters::memory(c.max_keys);
        counters.on_redis_error = c.on_redis_error;
        if let Some(url) = &c.redis {
            counters.redis = Some(redis::Redis::new(url.as_str(), &c.prefix, c.timeout)?);
            crate::metrics::get().redis_up.set(1);
        }
        Ok(counters)
    }

    /// Where counts are kept, for the start-up log.
    pub fn describe(&self) -> String {
        match &self.redis {
            Some(r) => format!("redis {}", r.describe()),
            None => "memory".into(),
        }
    }

    /// Adds `by` to `key` and returns its count over the last `window`.
    pub async fn incr(&self, key: &str, by: u64, window: Duration) -> Result<u64, CounterError> {
        Ok(self.hit(key, by, None, true, window).await?.count)
    }

    /// The count of `key` over the last `window`.
    pub async fn get(&self, key: &str, window: Duration) -> Result<u64, CounterError> {
        Ok(self.hit(key, 0, None, false, window).await?.count)
    }

    /// Adds `by` only if the count stays within `limit`, atomically (across
    /// nodes too): what is refused is not counted.
    pub async fn take(&self, key: &str, by: u64, limit: u64, window: Duration) -> Result<Usage, CounterError> {
        self.hit(key, by, Some(limit), true, window).await
    }

    /// Whether [`Counters::take`] would add `by` now, adding nothing.
    pub async fn check(&self, key: &str, by: u64, limit: u64, window: Duration) -> Result<Usage, CounterError> {
        self.hit(key, by, Some(limit), false, window).await
    }

    /// Sets a mark on `key` that lasts `ttl` (replacing any earlier one).
    pub async fn mark(&self, key: &str, ttl: Duration) -> Result<(), CounterError> {
        check_key(key)?;
        check_duration("ttl", ttl)?;
        self.run(Op::Mark { key, ttl }).await.map(|_| ())
    }

    /// How long the mark on `key` still lasts; `None` if there is none.
    pub async fn marked(&self, key: &str) -> Result<Option<Duration>, CounterError> {
        check_key(key)?;
        match self.run(Op::Marked { key }).await? {
            Answer::Remaining(r) => Ok(r),
            other => unreachable!("marked answered {other:?}"),
        }
    }

    async fn hit(
        &self,
        key: &str,
        by: u64,
        limit: Option<u64>,
        add: bool,
        window: Duration,
    ) -> Result<Usage, CounterError> {
        check_key(key)?;
        check_duration("window", window)?;
        if by > MAX_AMOUNT {
            return Err(CounterError::Invalid(format!("a counter amount must be at most {MAX_AMOUNT}")));
        }
        match self.run(Op::Hit { key, by, limit, add, window }).await? {
            Answer::Usage(u) => Ok(u),
            other => unreachable!("hit answered {other:?}"),
        }
    }

    /// Runs `op` in Redis when configured and reachable, else as
    /// `on_redis_error` says.
    async fn run(&self, op: Op<'_>) -> Result<Answer, CounterError> {
        let now = now_ms();
        let Some(redis) = &self.redis else {
            return Ok(self.local.run(op, now));
        };
        let skip = {
            let h = self.health.lock().unwrap();
            h.retry_at.is_some_and(|at| Instant::now() < at)
        };
        let error = if skip {
            "Redis did not answer lately".to_string()
        } else {
            match redis.run(op, now).await {
                Ok(answer) => {
                    self.redis_answered();
                    return Ok(answer);
                }
                Err(redis::Failure::Refused(e)) => {
                    // Redis is up: it answered, and the next call goes to it
                    // again. This one is answered as during an outage, never
                    // left uncounted: a failed login that is not counted
                    // would let guessing go on unchecked.
                    self.redis_answered();
                    tracing::warn!(error = %e, "counters: Redis refused a call");
                    e
                }
                Err(redis::Failure::Down(e)) => {
                    self.redis_failed(&e);
                    e
                }
            }
        };
        match self.on_redis_error {
            OnRedisError::Local => Ok(self.local.run(op, now)),
            OnRedisError::Refuse => Err(CounterError::Unavailable(error)),
        }
    }

    fn redis_answered(&self) {
        let mut h = self.health.lock().unwrap();
        h.retry_at = None;
        if h.down {
            h.down = false;
            crate::metrics::get().redis_up.set(1);
            tracing::warn!("counters: Redis answers again; counting there again");
        }
    }

    fn redis_failed(&self, error: &str) {
        crate::metrics::get().counter_errors.inc();
        let mut h = self.health.lock().unwrap();
        h.failures += 1;
        h.retry_at = Some(Instant::now() + REDIS_RETRY);
        if !h.down {
            h.down = true;
            crate::metrics::get().redis_up.set(0);
            match self.on_redis_error {
                OnRedisError::Local => tracing::error!(
                    error = %error,
                    "counters: Redis unavailable; counting in this node's memory until it answers (limits and bans hold per node only)"
                ),
                OnRedisError::Refuse => tracing::error!(
                    error = %error,
                    "counters: Redis unavailable; AUTH and rate-limited mail are refused until it answers (on_redis_error = \"refuse\")"
                ),
            }
        }
    }
}

fn check_key(key: &str) -> Result<(), CounterError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(CounterError::Invalid(format!("a counter key must be 1 to {MAX_KEY_LEN} octets")));
    }
    Ok(())
}

fn check_duration(what: &str, d: Duration) -> Result<(), CounterError> {
    if d < Duration::from_millis(1) || d > MAX_WINDOW {
        return Err(CounterError::Invalid(format!(
            "a counter {what} must be between 1 ms and {} days",
            MAX_WINDOW.as_secs() / 86400
        )));
    }
    Ok(())
}

/// Wall-clock milliseconds: windows are aligned to the epoch so every node
/// (and Redis) agrees on which window "now" is in.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Where `now` lies for a window of `window_ms`: the fixed window's index,
/// and how much of the previous fixed window still counts, in
/// (0, window_ms] parts of window_ms.
pub(crate) fn position(now_ms: u64, window_ms: u64) -> (u64, u64) {
    let bucket = now_ms / window_ms;
    let elapsed = now_ms % window_ms;
    (bucket, window_ms - elapsed)
}

/// The sliding count: the current window's count plus the previous one's
/// share still inside the last `window_ms`.
pub(crate) fn estimate(current: u64, previous: u64, previous_share: u64, window_ms: u64) -> u64 {
    let weighted = (previous as u128 * previous_share as u128 / window_ms as u128) as u64;
    current.saturating_add(weighted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_window_fades_out() {
        // 10 in the previous window; a quarter into the current one,
        // three quarters of them still count.
        let (bucket, share) = position(1_250, 1_000);
        assert_eq!((bucket, share), (1, 750));
        assert_eq!(estimate(2, 10, share, 1_000), 2 + 7);
        // At the very start all of it counts; at the end almost nothing.
        assert_eq!(estimate(0, 10, position(2_000, 1_000).1, 1_000), 10);
        assert_eq!(estimate(0, 10, position(2_999, 1_000).1, 1_000), 0);
    }

    #[tokio::test]
    async fn bad_keys_and_windows_are_refused() {
        let c = Counters::memory(10);
        assert!(matches!(c.incr("", 1, Duration::from_secs(1)).await, Err(CounterError::Invalid(_))));
        assert!(c.incr(&"k".repeat(MAX_KEY_LEN + 1), 1, Duration::from_secs(1)).await.is_err());
        assert!(c.incr("k", 1, Duration::ZERO).await.is_err());
        assert!(c.mark("k", MAX_WINDOW + Duration::from_secs(1)).await.is_err());
        assert_eq!(c.incr("k", 2, Duration::from_secs(60)).await, Ok(2));
        // Amounts are capped, for adding and for asking alike.
        let w = Duration::from_secs(60);
        assert!(matches!(c.incr("k", MAX_AMOUNT + 1, w).await, Err(CounterError::Invalid(_))));
        assert!(matches!(c.take("k", u64::MAX, u64::MAX, w).await, Err(CounterError::Invalid(_))));
        assert!(matches!(c.check("k", MAX_AMOUNT + 1, u64::MAX, w).await, Err(CounterError::Invalid(_))));
        assert!(c.incr("k", MAX_AMOUNT, w).await.unwrap() >= MAX_AMOUNT);
    }

    #[tokio::test]
    async fn take_adds_only_within_the_limit_and_check_adds_nothing() {
        let c = Counters::memory(10);
        // The longest window: the calls never straddle a boundary.
        let w = MAX_WINDOW;
        assert_eq!(c.take("k", 2, 3, w).await, Ok(Usage { allowed: true, count: 2 }));
        assert_eq!(c.check("k", 1, 3, w).await, Ok(Usage { allowed: true, count: 2 }));
        assert_eq!(c.check("k", 2, 3, w).await, Ok(Usage { allowed: false, count: 2 }));
        assert_eq!(c.take("k", 2, 3, w).await, Ok(Usage { allowed: false, count: 2 }));
        assert_eq!(c.take("k", 1, 3, w).await, Ok(Usage { allowed: true, count: 3 }));
        assert_eq!(c.get("k", w).await, Ok(3));
    }

    #[tokio::test]
    async fn redis_down_counts_locally_or_refuses_as_configured() {
        // Nothing listens on port 1.
        let mut cfg = config::Counters {
            redis: Some(config::RedisUrl("redis://127.0.0.1:1/0".into())),
            prefix: "t:".into(),
            timeout: Duration::from_millis(200),
            on_redis_error: OnRedisError::Local,
            max_keys: 100,
        };
        let c = Counters::from_config(&cfg).unwrap();
        // Windows are aligned to the clock: the longest one, so the two
        // calls below never straddle a boundary (the previous window's
        // share of one would round down to nothing).
        let w = MAX_WINDOW;
        assert_eq!(c.incr("k", 1, w).await, Ok(1));
        // Within the retry pause Redis is not asked again.
        assert_eq!(c.incr("k", 1, w).await, Ok(2));
        assert_eq!(c.health.lock().unwrap().failures, 1);
        cfg.on_redis_error = OnRedisError::Refuse;
        let c = Counters::from_config(&cfg).unwrap();
        assert!(matches!(c.incr("k", 1, w).await, Err(CounterError::Unavailable(_))));
        assert!(matches!(c.marked("k").await, Err(CounterError::Unavailable(_))));
    }
}
