//! Verified logins, so a repeat login skips the expensive scheme (as
//! Dovecot's auth cache does).
//!
//! After a successful verification the cache keeps, per stored hash, a
//! keyed digest of the password that matched it: HMAC-SHA256 under a key
//! made at random when the process starts, so the digest says nothing
//! outside this process and the password itself is never kept. A later
//! check of the same stored hash whose digest matches is answered at once.
//!
//! Why this is safe:
//! - The entry is found by the stored hash itself: a password change misses
//!   at once, and nothing needs invalidating. Whether a user still exists or
//!   is active is the plugin's question, asked at every login as before.
//! - Only successes are kept. A password that does not match the digest is
//!   verified by the full scheme as before, so a wrong guess costs the same
//!   whether the login is cached or not, and response times tell nothing
//!   about which logins exist or logged in lately.
//! - Entries expire after `ttl` and the cache holds at most `capacity` of
//!   them (~100 octets each), oldest out first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;
use subtle::ConstantTimeEq;

pub type Digest = [u8; 32];

pub struct Cache {
    key: hmac::Key,
    capacity: usize,
    ttl: Duration,
    entries: Mutex<HashMap<Digest, Entry>>,
}

struct Entry {
    proof: Digest,
    added: Instant,
}

/// The cache's view of one (password, stored hash) pair.
pub struct Pair {
    slot: Digest,
    proof: Digest,
}

impl Cache {
    pub fn new(capacity: usize, ttl: Duration) -> Cache {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system's random source");
        Cache { key, capacity, ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The digests of a pair: where its entry lives (from the stored hash
    /// alone) and the proof that the password is the one verified.
    pub fn pair(&self, password: &str, stored: &str) -> Pair {
        let mut slot = hmac::Context::with_key(&self.key);
        slot.update(b"slot\0");
        slot.update(stored.as_bytes());
        let mut proof = hmac::Context::with_key(&self.key);
        // The hash's length first, so no other split of the same octets
        // gives the same proof.
        proof.update(b"proof\0");
        proof.update(&(stored.len() as u64).to_le_bytes());
        proof.update(stored.as_bytes());
        proof.update(password.as_bytes());
        Pair { slot: digest(slot.sign()), proof: digest(proof.sign()) }
    }

    /// Names the pair (password and stored hash together) without telling
    /// anything of either outside this process.
    pub fn id(pair: &Pair) -> Digest {
        pair.proof
    }

    /// Whether this pair was verified within the lifetime of an entry.
    pub fn hit(&self, pair: &Pair) -> bool {
        let entries = self.entries.lock().unwrap();
        match entries.get(&pair.slot) {
            // Constant time: the comparison does not tell how much matched.
            Some(e) if e.added.elapsed() < self.ttl => e.proof.ct_eq(&pair.proof).into(),
            _ => false,
        }
    }

    /// Remembers a pair the full scheme verified.
    pub fn remember(&self, pair: Pair) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= self.capacity && !entries.contains_key(&pair.slot) {
            let ttl = self.ttl;
            entries.retain(|_, e| e.added.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Full of live entries: the oldest goes. A scan, but only
                // after a full verification, which costs far more.
                if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.added).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(pair.slot, Entry { proof: pair.proof, added: Instant::now() });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

fn digest(tag: hmac::Tag) -> Digest {
    tag.as_ref().try_into().expect("HMAC-SHA256 tags are 32 octets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_verified_pair_hits() {
        let c = Cache::new(10, Duration::from_secs(60));
        let hit = |p: &str, s: &str| c.hit(&c.pair(p, s));
        assert!(!hit("pw", "$stored1"));
        c.remember(c.pair("pw", "$stored1"));
        assert!(hit("pw", "$stored1"));
        assert!(!hit("pw2", "$stored1"), "another password");
        assert!(!hit("pw", "$stored2"), "a changed stored hash");
        // No other split of the same octets matches.
        c.remember(c.pair("b", "$a"));
        assert!(!hit("", "$ab"));
    }

    #[test]
    fn entries_expire_and_the_oldest_make_room() {
        let c = Cache::new(3, Duration::from_millis(50));
        c.remember(c.pair("p", "1"));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!c.hit(&c.pair("p", "1")), "expired");
        let c = Cache::new(3, Duration::from_secs(60));
        for s in ["1", "2", "3", "4"] {
            c.remember(c.pair("p", s));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(c.len(), 3);
        let hit = |s: &str| c.hit(&c.pair("p", s));
        assert!(!hit("1"), "the oldest went");
        assert!(hit("2") && hit("3") && hit("4"));
    }

    #[test]
    fn keys_differ_between_caches() {
        // A digest from one process means nothing in another.
        let (a, b) = (Cache::new(1, Duration::from_secs(1)), Cache::new(1, Duration::from_secs(1)));
        assert_ne!(a.pair("p", "x").slot, b.pair("p", "x").slot);
    }
}
