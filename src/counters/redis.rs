//! Counters in Redis, shared by every mailferry node that names the same
//! server and `prefix`.
//!
//! A window counter is two keys, `<prefix><key>:<window index>` for the
//! current fixed window and the one before; a Lua script reads both, decides
//! against the limit and adds, in one step, so two nodes taking the last unit
//! at once cannot both get it. A mark is one key with an expiry. Every key
//! expires by itself, so Redis needs no cleaning and no persistence.
//!
//! One multiplexed connection, reconnected by itself; every call is bounded
//! by `timeout_ms`. A failure is told apart as an outage (no connection, no
//! answer in time, a server that cannot serve now) or an error Redis
//! answered to that one call; the caller ([`super::Counters`]) decides what
//! each means.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{position, Answer, Op, Usage};

/// KEYS: the current window's key, the previous one's.
/// ARGV: amount, limit (-1: none), add (1/0), share of the previous window
/// still counted, window length (ms).
/// Returns {count, allowed}.
const HIT: &str = r#"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local by = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[5])
local count = current + math.floor(previous * tonumber(ARGV[4]) / window)
if limit >= 0 and count + by > limit then
  return {count, 0}
end
if ARGV[3] == '1' and by > 0 then
  redis.call('INCRBY', KEYS[1], by)
  redis.call('PEXPIRE', KEYS[1], 2 * window)
  count = count + by
end
return {count, 1}
"#;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Redis cannot be reached or cannot serve now: every call would fail.
    Down(String),
    /// Redis answered this call with an error (a script error, a counter
    /// that would overflow, a key of another type).
    Refused(String),
}

/// Tells an outage from an error about the call itself.
fn classify(e: &redis::RedisError) -> Failure {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    let down = match e.kind() {
        // Loading its data, a failover under way, a cluster without quorum,
        // an ACL that denies the commands: every call would fail alike.
        K::Server(S::BusyLoading | S::MasterDown | S::TryAgain | S::ClusterDown | S::ReadOnly | S::NoPerm) => true,
        // Redis before 7 wraps a write refused for memory in a script error.
        K::Server(_) if e.to_string().contains("OOM") => true,
        K::Server(_) | K::UnexpectedReturnType => false,
        // Codes the client does not name: a busy script, out of memory,
        // failing to persist, not logged in are states of the server.
        K::Extension => matches!(e.code(), Some("BUSY" | "OOM" | "MISCONF" | "NOAUTH" | "WRONGPASS")),
        // I/O, a broken reply, authentication, the client's own state.
        _ => true,
    };
    if down {
        Failure::Down(e.to_string())
    } else {
        Failure::Refused(e.to_string())
    }
}

pub struct Redis {
    client: redis::Client,
    connection: OnceLock<ConnectionManager>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
}

impl Redis {
    /// Checks the URL; connects on first use.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Redis> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("counters.redis: {e}"))?;
        Ok(Redis {
            client,
            connection: OnceLock::new(),
            script: redis::Script::new(HIT),
            prefix: prefix.to_string(),
            timeout,
        })
    }

    /// The server and prefix, without credentials.
    pub fn describe(&self) -> String {
        let info = self.client.get_connection_info();
        format!("{} db {} prefix {:?}", info.addr(), info.redis_settings().db(), self.prefix)
    }

    fn connection(&self) -> Result<ConnectionManager, String> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let c = ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(|e| e.to_string())?;
        Ok(self.connection.get_or_init(|| c).clone())
    }

    pub(crate) async fn run(&self, op: Op<'_>, now_ms: u64) -> Result<Answer, Failure> {
        let mut con = self.connection().map_err(Failure::Down)?;
        let call = async {
            match op {
                Op::Hit { key, by, limit, add, window } => {
                    let window_ms = (window.as_millis() as u64).max(1);
                    let (bucket, share) = position(now_ms, window_ms);
                    let (count, allowed): (u64, u8) = self
                        .script
                        .key(format!("{}{key}:{bucket}", self.prefix))
                        .key(format!("{}{key}:{}", self.prefix, bucket.saturating_sub(1)))
                        .arg(by)
                        .arg(limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64))
                        .arg(if add { 1 } else { 0 })
                        .arg(share)
                        .arg(window_ms)
                        .invoke_async(&mut con)
                        .await?;
                    Ok::<_, redis::RedisError>(Answer::Usage(Usage { allowed: allowed == 1, count }))
                }
                Op::Mark { key, ttl } => {
                    let ms = (ttl.as_millis() as u64).max(1);
                    let () = redis::cmd("SET")
                        .arg(format!("{}{key}", self.prefix))
                        .arg(1)
                        .arg("PX")
                        .arg(ms)
                        .query_async(&mut con)
                        .await?;
                    Ok(Answer::Done)
                }
                Op::Marked { key } => {
                    let ms: i64 = redis::cmd("PTTL").arg(format!("{}{key}", self.prefix)).query_async(&mut con).await?;
                    // -2: no such key; -1: no expiry (never set by us).
                    Ok(Answer::Remaining((ms > 0).then(|| Duration::from_millis(ms as u64))))
                }
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(Failure::Down(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_and_refused_calls_are_told_apart() {
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify(&io), Failure::Down(_)));
        let reset = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(classify(&reset), Failure::Down(_)));
        let wrong_type = redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a number"));
        assert!(matches!(classify(&wrong_type), Failure::Refused(_)));
    }
}
