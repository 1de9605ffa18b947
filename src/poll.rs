//! Periodic checks of files that change under a running server (DKIM keys,
//! TLS certificates): polled, which works the same for renames, in-place
//! writes and symlink swaps, on every filesystem, with no watcher to leak.

use std::sync::{Arc, Weak};
use std::time::Duration;

/// Calls `check` on `target` every `every` (the first time after one
/// period), until `target` is dropped. The check runs on an async worker,
/// so it must stay cheap: a few `stat`s and, rarely, small files.
pub fn every<T: Send + Sync + 'static>(target: &Arc<T>, every: Duration, check: fn(&T)) {
    let target: Weak<T> = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(target) = target.upgrade() else { break };
            check(&target);
        }
    });
}
