//! The `password` capability's engine: a cache of verified logins in front
//! of a fixed set of hashing threads.
//!
//! argon2id as `mailferry user add` makes it takes 19 MiB and tens of
//! milliseconds per check. Run on tokio's blocking pool, every thread that
//! ever hashed kept its 19 MiB in the allocator, and a login storm grew the
//! process by that much per thread. Here at most `workers` threads (no more
//! than the CPUs) verify, each reusing its own working memory while logins
//! wait in line, so memory under any storm is bounded by workers × cost; a
//! worker with nothing waiting gives its memory back. Logins beyond the
//! workers wait in line, which is also what the CPUs would make them do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::Block;

use super::cache::{Cache, Digest};
use super::Scheme;

/// `[passwords]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Hashing threads; 0: one per CPU. Never more than the CPUs.
    pub workers: usize,
    /// Keep verified logins (a keyed digest of the password) so a repeat
    /// login skips the hash scheme.
    pub cache: bool,
    /// Verified logins kept at most.
    pub cache_size: usize,
    /// How long a verified login is trusted without hashing again.
    pub cache_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { workers: 0, cache: true, cache_size: 10_000, cache_ttl: Duration::from_secs(3600) }
    }
}

/// Working memory a worker keeps between checks, at most; a hash that
/// needs more gets it for its own check only.
const KEEP_BLOCKS: usize = 64 * 1024; // 64 MiB of 1 KiB blocks

struct Job {
    password: String,
    stored: String,
    answer: tokio::sync::oneshot::Sender<Result<bool, String>>,
}

pub struct Verifier {
    settings: Settings,
    cache: Option<Cache>,
    /// Started on the first check that needs hashing: `check` and a server
    /// whose users are all `{PLAIN}` never start them.
    jobs: OnceLock<mpsc::Sender<Job>>,
    load: Arc<Load>,
    /// Checks running now, by pair (see [`Verifier::verify`]).
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::OnceCell<Result<bool, String>>>>>,
}

/// What the workers are doing.
#[derive(Default)]
struct Load {
    /// Checks sent to the workers and not taken yet.
    waiting: AtomicUsize,
    running: AtomicUsize,
    /// The most checks that ever ran at once.
    peak: AtomicUsize,
    /// Checks the full scheme ran.
    hashed: AtomicU64,
}

impl Verifier {
    pub fn new(settings: &Settings) -> Verifier {
        Verifier {
            cache: settings.cache.then(|| Cache::new(settings.cache_size, settings.cache_ttl)),
            settings: settings.clone(),
            jobs: OnceLock::new(),
            load: Arc::default(),
            inflight: Mutex::default(),
        }
    }

    /// Checks `password` against `stored` (see [`super::verify`]), from the
    /// cache when this very pair was verified lately.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool, String> {
        let (scheme, _) = super::identify(&stored)?;
        if scheme == Scheme::Plain {
            // Two SHA-256 digests: cheaper than a trip to a worker.
            crate::metrics::get().password_check("plain");
            return super::verify(&password, &stored);
        }
        let Some(cache) = &self.cache else {
            crate::metrics::get().password_check("hashed");
            return self.hash(password, stored).await;
        };
        let pair = cache.pair(&password, &stored);
        if cache.hit(&pair) {
            crate::metrics::get().password_check("cached");
            return Ok(true);
        }
        // Logins with the very same password and stored hash at the same
        // moment (a client opening several connections, a burst of cron
        // jobs) share one run of the scheme: the answer is the same, and
        // the others need not wait in line behind copies of it.
        let id = Cache::id(&pair);
        let (check, first) = {
            let mut inflight = self.inflight.lock().unwrap();
            let first = !inflight.contains_key(&id);
            (inflight.entry(id).or_default().clone(), first)
        };
        crate::metrics::get().password_check(if first { "hashed" } else { "shared" });
        let verified = check.get_or_init(|| self.hash(password, stored)).await.clone();
        if verified == Ok(true) {
            cache.remember(pair);
        }
        // Remembered first: a login arriving now finds the cache entry.
        let mut inflight = self.inflight.lock().unwrap();
        if inflight.get(&id).is_some_and(|c| Arc::ptr_eq(c, &check)) {
            inflight.remove(&id);
        }
        verified
    }

    /// Runs the scheme on a worker.
    async fn hash(&self, password: String, stored: String) -> Result<bool, String> {
        let (answer, result) = tokio::sync::oneshot::channel();
        let job = Job { password, stored, answer };
        let jobs = self.jobs.get_or_init(|| start(self.workers(), &self.load));
        self.load.waiting.fetch_add(1, Ordering::AcqRel);
        if jobs.send(job).is_err() {
            self.load.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err("the hashing workers stopped".into());
        }
        result.await.map_err(|_| "a hashing worker stopped".to_string())?
    }

    /// How many hashing threads: as configured, never more than the CPUs.
    pub fn workers(&self) -> usize {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        match self.settings.workers {
            0 => cpus,
            n => n.min(cpus),
        }
    }
}

/// Starts `n` workers taking jobs from one line.
fn start(n: usize, load: &Arc<Load>) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let (rx, load) = (rx.clone(), load.clone());
        std::thread::Builder::new()
            .name(format!("password-{i}"))
            .spawn(move || work(&rx, &load))
            .expect("cannot start a password hashing thread");
    }
    tx
}

fn work(jobs: &Mutex<mpsc::Receiver<Job>>, load: &Load) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        if load.waiting.load(Ordering::Acquire) == 0 {
            // Nothing waiting: give the memory back before sleeping. Not
            // after taking the lock: an idle worker holds it while it waits.
            blocks = Vec::new();
        }
        let Ok(job) = jobs.lock().unwrap().recv() else { return };
        load.waiting.fetch_sub(1, Ordering::AcqRel);
        if job.answer.is_closed() {
            // The asker has gone (its session closed): no need to hash.
            continue;
        }
        let running = load.running.fetch_add(1, Ordering::Relaxed) + 1;
        load.peak.fetch_max(running, Ordering::Relaxed);
        // A panic in a scheme must not take a worker away for good (with
        // all of them gone, no login could succeed).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::verify_in(&job.password, &job.stored, &mut blocks)
        }))
        .unwrap_or_else(|_| {
            blocks = Vec::new();
            Err("the password check failed unexpectedly".to_string())
        });
        load.running.fetch_sub(1, Ordering::Relaxed);
        load.hashed.fetch_add(1, Ordering::Relaxed);
        if blocks.len() > KEEP_BLOCKS {
            blocks = Vec::new();
        }
        // The asker may have gone (its session closed): nothing to do.
        let _ = job.answer.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    #[test]
    fn checks_run_on_the_workers_only() {
        let v = Arc::new(Verifier::new(&Settings { cache: false, ..Settings::default() }));
        let hash = bcrypt::hash("pw", 6).unwrap();
        let n = v.workers() * 6;
        runtime().block_on(async {
            let checks: Vec<_> = (0..n)
                .map(|i| {
                    let (v, hash) = (v.clone(), hash.clone());
                    tokio::spawn(async move { v.verify(if i % 2 == 0 { "pw" } else { "no" }.into(), hash).await })
                })
                .collect();
            for (i, c) in checks.into_iter().enumerate() {
                assert_eq!(c.await.unwrap(), Ok(i % 2 == 0));
            }
        });
        let peak = v.load.peak.load(Ordering::Relaxed);
        assert!((1..=v.workers()).contains(&peak), "{peak} checks ran at once with {} workers", v.workers());
        assert_eq!(v.load.hashed.load(Ordering::Relaxed), n as u64);
    }

    #[test]
    fn a_verified_login_is_answered_from_the_cache_until_its_hash_changes() {
        let v = Verifier::new(&Settings::default());
        let old = crate::password::hash("correct horse").unwrap();
        let new = crate::password::hash("battery staple").unwrap();
        let hashed = || v.load.hashed.load(Ordering::Relaxed);
        runtime().block_on(async {
            assert_eq!(v.verify("correct horse".into(), old.clone()).await, Ok(true));
            assert_eq!(hashed(), 1);
            assert_eq!(v.verify("correct horse".into(), old.clone()).await, Ok(true));
            assert_eq!(hashed(), 1, "the repeat login skipped the scheme");
            // A wrong password after a cached success: hashed, refused.
            assert_eq!(v.verify("correct horsf".into(), old.clone()).await, Ok(false));
            assert_eq!(hashed(), 2);
            // The password changed: the new hash misses, the old password fails.
            assert_eq!(v.verify("correct horse".into(), new.clone()).await, Ok(false));
            assert_eq!(v.verify("battery staple".into(), new.clone()).await, Ok(true));
            assert_eq!(hashed(), 4);
            // Failures are never cached.
            assert_eq!(v.verify("correct horse".into(), new.clone()).await, Ok(false));
            assert_eq!(hashed(), 5);
            // {PLAIN} is compared on the spot.
            assert_eq!(v.verify("pw".into(), "{PLAIN}pw".into()).await, Ok(true));
            assert_eq!(hashed(), 5);
            // A malformed stored hash is an error, not a mismatch.
            assert!(v.verify("pw".into(), "$argon2id$v=19$m=zz".into()).await.is_err());
        });
    }

    #[test]
    fn the_same_login_at_the_same_moment_is_hashed_once() {
        let v = Arc::new(Verifier::new(&Settings::default()));
        let hash = crate::password::hash("pw").unwrap();
        runtime().block_on(async {
            let checks: Vec<_> = (0..8)
                .map(|i| {
                    let (v, hash) = (v.clone(), hash.clone());
                    let password = if i < 6 { "pw" } else { "wrong" };
                    tokio::spawn(async move { v.verify(password.into(), hash).await })
                })
                .collect();
            for (i, c) in checks.into_iter().enumerate() {
                assert_eq!(c.await.unwrap(), Ok(i < 6));
            }
        });
        // One run for the six right ones (those that came after it finished
        // were answered from the cache), one or two for the wrong ones.
        let hashed = v.load.hashed.load(Ordering::Relaxed);
        assert!((2..=3).contains(&hashed), "{hashed} runs of the scheme");
        assert!(v.inflight.lock().unwrap().is_empty());
    }

    #[test]
    fn the_cache_can_be_turned_off() {
        let v = Verifier::new(&Settings { cache: false, ..Settings::default() });
        let h = bcrypt::hash("pw", 4).unwrap();
        runtime().block_on(async {
            for _ in 0..3 {
                assert_eq!(v.verify("pw".into(), h.clone()).await, Ok(true));
            }
        });
        assert_eq!(v.load.hashed.load(Ordering::Relaxed), 3);
    }
}
