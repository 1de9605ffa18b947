//! Brute-force protection for AUTH: failed logins are counted per client
//! address and per login; each failure is answered after a growing delay;
//! an address with too many failures is banned for a while (`421 4.7.0` at
//! connect, on every node sharing the counters).
//!
//! The per-login count must not let anyone lock a user out by knowing the
//! login, so it never bans the login as such. What it does: once a login
//! has had `failures_per_login` failures in the window (a distributed
//! guessing attack, each address staying under `failures_per_ip`), a further
//! failure on it from an address that has not logged in as that login
//! before bans that *pair*: that address may not try that login again for
//! `ban_secs`. Guesses against one login then cost the attacker an address
//! each, while the real user still logs in with the right password from
//! any address that has not failed, a typo from a familiar address is only
//! counted, and the other users behind a shared address (NAT, a mobile
//! carrier) are not touched.
//!
//! Counters and marks (see [`crate::counters`]):
//! `auth:fail:ip:<addr>`, `auth:fail:login:<login>` (windows),
//! `auth:ban:<addr>` and `auth:loginban:<addr>:<login>` (marks for
//! `ban_secs`) and `auth:good:<addr>:<login>` (a mark for [`KNOWN_GOOD`]).
//! `<addr>` is the address, or the /64 of an IPv6 address, as for
//! connection limits; logins compare without case.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::connections::client_key;
use crate::config::{AuthLimits, Listener};
use crate::counters::{CounterError, Counters};

/// How long a successful login keeps its address familiar.
pub const KNOWN_GOOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// The AUTH guard of one configuration generation; the counters are shared
/// by all of them.
pub struct AuthGuard {
    limits: AuthLimits,
    counters: Arc<Counters>,
    /// One AUTH at a time per client address (or /64), from reading the
    /// bans to counting the failure: parallel connections cannot each try
    /// a password before the first failure is counted.
    turns: Arc<Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The right to check a password of one address, until dropped.
pub struct Turn {
    addr: IpAddr,
    turns: Arc<Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(guard) = self.held.take() else { return };
        let lock = tokio::sync::OwnedMutexGuard::mutex(&guard).clone();
        drop(guard);
        let mut turns = self.turns.lock().unwrap();
        // The entry goes with the last one who held or awaited it: the map
        // and `lock` are then its only owners (a newcomer clones it under
        // the map's lock, which is held here).
        if Arc::strong_count(&lock) == 2 {
            turns.remove(&self.addr);
        }
    }
}

/// What a failed AUTH costs the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Penalty {
    /// Failures of the address in the window, this one included.
    pub ip_failures: u64,
    /// Failures of the login in the window, this one included.
    pub login_failures: u64,
    /// How long to wait before answering.
    pub delay: Duration,
    /// Set when this failure placed a ban: of the address, or of the
    /// address for this login.
    pub ban: Option<BanReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// `failures_per_ip` reached: the address is banned.
    Address,
    /// The login is under attack and the address is not familiar with it:
    /// the address may not try this login.
    Login,
}

impl BanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BanReason::Address => "failures_per_ip",
            BanReason::Login => "failures_per_login",
        }
    }
}

impl AuthGuard {
    pub fn new(limits: AuthLimits, counters: Arc<Counters>) -> AuthGuard {
        AuthGuard { limits, counters, turns: Default::default() }
    }

    /// Waits until no other AUTH of `ip`'s address is being checked, and
    /// holds that place until the [`Turn`] is dropped. Per node: every
    /// node of a cluster lets one through at a time.
    pub async fn turn(&self, ip: IpAddr) -> Turn {
        let addr = client_key(ip);
        let lock = self.turns.lock().unwrap().entry(addr).or_default().clone();
        let held = lock.lock_owned().await;
        Turn { addr, turns: self.turns.clone(), held: Some(held) }
    }

    pub fn limits(&self) -> &AuthLimits {
        &self.limits
    }

    /// Whether `ip` is left alone on `listener`: its trusted networks and
    /// `exempt_networks` are never counted, delayed or banned.
    pub fn exempt(&self, ip: IpAddr, listener: &Listener) -> bool {
        let ip = ip.to_canonical();
        listener.trusted_networks.iter().chain(&self.limits.exempt_networks).any(|n| n.contains(&ip))
    }

    /// How long the ban of `ip` still lasts, if it is banned.
    pub async fn banned(&self, ip: IpAddr) -> Result<Option<Duration>, CounterError> {
        self.counters.marked(&ban_key(ip)).await
    }

    /// How long `ip` still may not try `login`, if a failure on a login
    /// under attack banned that pair.
    pub async fn login_banned(&self, ip: IpAddr, login: &str) -> Result<Option<Duration>, CounterError> {
        if self.limits.failures_per_login == 0 {
            return Ok(None);
        }
        self.counters.marked(&login_ban_key(&client_key(ip), &login.to_lowercase())).await
    }

    /// Counts a failed AUTH of `login` from `ip`, bans the address (or the
    /// address for this login) if that was one too many, and says how long
    /// to wait before answering.
    pub async fn failed(&self, ip: IpAddr, login: &str) -> Result<Penalty, CounterError> {
        let l = &self.limits;
        let addr = client_key(ip);
        let login = login.to_lowercase();
        let ip_failures = self.counters.incr(&format!("auth:fail:ip:{addr}"), 1, l.failure_window).await?;
        let login_failures = self.counters.incr(&format!("auth:fail:login:{login}"), 1, l.failure_window).await?;
        let ban = if l.failures_per_ip > 0 && ip_failures >= l.failures_per_ip {
            Some(BanReason::Address)
        } else if l.failures_per_login > 0
            && login_failures > l.failures_per_login
            && self.counters.marked(&good_key(&addr, &login)).await?.is_none()
        {
            Some(BanReason::Login)
        } else {
            None
        };
        match ban {
            Some(BanReason::Address) => self.counters.mark(&ban_key(ip), l.ban).await?,
            Some(BanReason::Login) => self.counters.mark(&login_ban_key(&addr, &login), l.ban).await?,
            None => {}
        }
        let steps = ip_failures.max(login_failures).min(u32::MAX as u64) as u32;
        let delay = l.failure_delay.saturating_mul(steps).min(l.max_failure_delay);
        Ok(Penalty { ip_failures, login_failures, delay, ban })
    }

    /// Remembers that `login` logged in from `ip`.
    pub async fn succeeded(&self, ip: IpAddr, login: &str) -> Result<(), CounterError> {
        if self.limits.failures_per_login == 0 {
            return Ok(());
        }
        self.counters.mark(&good_key(&client_key(ip), &login.to_lowercase()), KNOWN_GOOD).await
    }
}

/// `left`, rounded up, as a reply says it: `1 minute`, `60 minutes`.
pub fn minutes(left: Duration) -> String {
    let minutes = left.as_secs().div_ceil(60).max(1);
    format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
}

fn ban_key(ip: IpAddr) -> String {
    format!("auth:ban:{}", client_key(ip))
}

fn login_ban_key(addr: &IpAddr, login: &str) -> String {
    format!("auth:loginban:{addr}:{login}")
}

fn good_key(addr: &IpAddr, login: &str) -> String {
    format!("auth:good:{addr}:{login}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(text: &str) -> AuthGuard {
        let config = crate::config::Config::parse(
            &format!(
                "[[listeners]]\naddress = \"127.0.0.1:1\"\ntrusted_networks = [\"10.0.0.0/8\"]\n[auth_limits]\n{text}"
            ),
            std::path::Path::new("t.toml"),
            std::path::Path::new("/"),
        )
        .unwrap();
        AuthGuard::new(config.auth_limits, Arc::new(Counters::memory(10_000)))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn an_address_is_banned_after_failures_per_ip_with_a_growing_delay() {
        let g = guard("failures_per_ip = 3\nfailure_delay_ms = 100\nmax_failure_delay_ms = 250\n");
        let a = ip("192.0.2.1");
        let p1 = g.failed(a, "alice").await.unwrap();
        assert_eq!((p1.delay, p1.ban), (Duration::from_millis(100), None));
        let p2 = g.failed(a, "bob").await.unwrap();
        assert_eq!((p2.delay, p2.ban), (Duration::from_millis(200), None));
        assert_eq!(g.banned(a).await.unwrap(), None);
        let p3 = g.failed(a, "carol").await.unwrap();
        assert_eq!((p3.delay, p3.ban), (Duration::from_millis(250), Some(BanReason::Address)));
        assert!(g.banned(a).await.unwrap().is_some());
        assert_eq!(g.banned(ip("192.0.2.2")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn ipv6_addresses_of_one_64_share_their_failures() {
        let g = guard("failures_per_ip = 2\n");
        g.failed(ip("2001:db8:1:2::1"), "a").await.unwrap();
        let p = g.failed(ip("2001:db8:1:2::ffff"), "b").await.unwrap();
        assert_eq!(p.ban, Some(BanReason::Address));
        assert!(g.banned(ip("2001:db8:1:2::77")).await.unwrap().is_some());
        assert!(g.banned(ip("2001:db8:1:3::1")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_login_under_attack_bans_unfamiliar_addresses_at_their_first_failure() {
        let g = guard("failures_per_ip = 5\nfailures_per_login = 4\n");
        // Alice logged in from home before.
        let home = ip("198.51.100.7");
        g.succeeded(home, "Alice@Example.com").await.unwrap();
        // Four attackers, one guess each: the login is now under attack.
        for i in 1..=4 {
            let p = g.failed(ip(&format!("203.0.113.{i}")), "alice@example.com").await.unwrap();
            assert_eq!(p.ban, None, "attacker {i}");
        }
        // The next unfamiliar address may not try the login again after its
        // first failure…
        let attacker = ip("203.0.113.50");
        let p = g.failed(attacker, "ALICE@example.com").await.unwrap();
        assert_eq!((p.login_failures, p.ban), (5, Some(BanReason::Login)));
        assert!(g.login_banned(attacker, "alice@EXAMPLE.com").await.unwrap().is_some());
        // …but the address itself is not banned (others share it), nor may
        // it be kept from other logins.
        assert!(g.banned(attacker).await.unwrap().is_none());
        assert!(g.login_banned(attacker, "bob@example.com").await.unwrap().is_none());
        // A typo from home is only counted.
        let p = g.failed(home, "alice@example.com").await.unwrap();
        assert_eq!(p.ban, None);
        assert!(g.banned(home).await.unwrap().is_none());
        assert!(g.login_banned(home, "alice@example.com").await.unwrap().is_none());
        // Other logins are not under attack.
        assert_eq!(g.failed(ip("203.0.113.60"), "bob@example.com").await.unwrap().ban, None);
    }

    #[tokio::test]
    async fn one_auth_at_a_time_per_address() {
        let g = Arc::new(guard(""));
        let a = ip("2001:db8:1:2::1");
        let first = g.turn(a).await;
        // Another address of the same /64 waits; another /64 does not.
        let same = tokio::spawn({
            let g = g.clone();
            async move { g.turn(ip("2001:db8:1:2::2")).await }
        });
        let _other = g.turn(ip("2001:db8:1:3::1")).await;
        tokio::task::yield_now().await;
        assert!(!same.is_finished());
        drop(first);
        let second = same.await.unwrap();
        drop(second);
        drop(_other);
        assert!(g.turns.lock().unwrap().is_empty(), "entries go with their last turn");
    }

    #[tokio::test]
    async fn zero_turns_each_threshold_off() {
        let g = guard("failures_per_ip = 0\nfailures_per_login = 0\nfailure_delay_ms = 0\n");
        for _ in 0..20 {
            let p = g.failed(ip("192.0.2.9"), "alice").await.unwrap();
            assert_eq!((p.ban, p.delay), (None, Duration::ZERO));
        }
    }

    #[test]
    fn trusted_and_exempt_networks_are_left_alone() {
        let g = guard("exempt_networks = [\"192.0.2.0/24\"]\n");
        let config = crate::config::Config::parse(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\ntrusted_networks = [\"10.0.0.0/8\"]\n",
            std::path::Path::new("t.toml"),
            std::path::Path::new("/"),
        )
        .unwrap();
        let l = &config.listeners[0];
        assert!(g.exempt(ip("10.1.2.3"), l));
        assert!(g.exempt(ip("192.0.2.200"), l));
        assert!(g.exempt(ip("::ffff:192.0.2.200"), l));
        assert!(!g.exempt(ip("198.51.100.1"), l));
    }
}
