//! The spool: queued messages on disk, so that a `250` survives a crash.
//!
//! Each message is two files in the spool folder: `<id>.eml` (the message
//! exactly as it will be sent) and `<id>.json` (envelope and delivery
//! state). Both are written under a `.tmp` name and fsynced, then renamed,
//! the `.json` last, and the folder fsynced: a `.json` file means the
//! message is committed. At start, `.tmp` files and an `.eml` without its
//! `.json` are the remains of a crash before the `250` and are removed.
//!
//! Renames from concurrent sessions are committed together by one thread,
//! with one folder fsync for the batch (group commit).
//!
//! Hand-written because this is the product's durability promise itself:
//! no crate offers this exact layout and ordering.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    Pending,
    Delivered,
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rcpt {
    pub address: String,
    /// ESMTP parameters of RCPT TO (`NOTIFY`, `ORCPT`), as given.
    #[serde(default)]
    pub params: Vec<(String, Option<String>)>,
    pub state: RcptState,
    /// The last reply about this recipient (upstream's, or ours).
    #[serde(default)]
    pub last_reply: Option<String>,
    /// The relay that answered last.
    #[serde(default)]
    pub relay: Option<String>,
}

/// A queued message's envelope and delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// Unix time it was queued.
    pub created: i64,
    /// The route it takes (`[routes.NAME]`, or a relay's name).
    pub route: String,
    /// Envelope sender; empty for the null sender (bounces).
    pub mail_from: String,
    /// ESMTP parameters of MAIL FROM passed upstream (`BODY`, `SMTPUTF8`).
    #[serde(default)]
    pub mail_params: Vec<(String, Option<String>)>,
    pub rcpts: Vec<Rcpt>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Unix time of the next attempt.
    pub next_attempt: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The session that submitted it, for the logs.
    #[serde(default)]
    pub session: String,
    /// Size of the message file.
    pub size: u64,
    /// Recipients whose bounce could not be queued yet.
    #[serde(default)]
    pub dsn_pending: Vec<usize>,
}

impl Entry {
    pub fn pending(&self) -> impl Iterator<Item = &Rcpt> {
        self.rcpts.iter().filter(|r| r.state == RcptState::Pending)
    }

    pub fn is_done(&self) -> bool {
        self.pending().next().is_none()
    }
}

/// A new queue id: time-ordered, unique, safe as a file name.
pub fn new_id() -> String {
    let now = chrono::Utc::now();
    format!("{}{:08x}", now.format("%Y%m%d%H%M%S"), rand::random::<u32>())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Renames waiting for the group commit.
struct Commit {
    renames: Vec<(PathBuf, PathBuf)>,
    done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

/// The spool folder.
pub struct Spool {
    dir: PathBuf,
    /// Held for the spool's lifetime: one server per spool.
    _lock: std::fs::File,
    committer: mpsc::Sender<Commit>,
    /// fsync calls made, for the benchmark's "fsyncs per message".
    pub fsyncs: Arc<std::sync::atomic::AtomicU64>,
}

impl Spool {
    /// Opens (creating) the spool folder, removes what a crash left
    /// half-written, and returns every committed entry.
    pub fn open(dir: &Path) -> std::io::Result<(Spool, Vec<Entry>)> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        // Two servers delivering from one spool would send everything twice.
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock"))?;
        if let Err(e) = lock.try_lock() {
            return Err(std::io::Error::other(format!(
                "another mailferry process is using this queue ({e}); stop it, or give this one its own queue.dir"
            )));
        }
        let mut entries = Vec::new();
        let mut messages: HashMap<String, PathBuf> = HashMap::new();
        let mut metas: Vec<PathBuf> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let path = e?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.ends_with(".tmp") {
                tracing::info!(file = %path.display(), "removing a spool file left half-written by a crash");
                std::fs::remove_file(&path)?;
            } else if let Some(id) = name.strip_suffix(".eml") {
                messages.insert(id.to_string(), path);
            } else if name.ends_with(".json") {
                metas.push(path);
            }
        }
        for meta in metas {
            let id = meta.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            // An unreadable file (permissions, I/O) stops the start: setting
            // it aside would strand mail that is fine.
            let bytes =
                std::fs::read(&meta).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", meta.display())))?;
            let entry: Entry = match serde_json::from_slice(&bytes) {
                Ok(e) => e,
                Err(e) => {
                    // Never delete what may be an acknowledged message: set
                    // it aside for the operator.
                    tracing::error!(file = %meta.display(), error = %e, "malformed queue entry; renamed to .broken, please inspect");
                    set_aside(&meta, messages.remove(&id));
                    continue;
                }
            };
            let message = messages.remove(&id);
            if entry.id != id || message.is_none() {
                tracing::error!(file = %meta.display(), "queue entry without its message file, or not its own; renamed to .broken");
                set_aside(&meta, message);
                continue;
            }
            entries.push(entry);
        }
        for (_, orphan) in messages {
            // Written before a crash, never acknowledged.
            tracing::info!(file = %orphan.display(), "removing a message that was never acknowledged (crash before commit)");
            std::fs::remove_file(&orphan)?;
        }
        fsync_dir(dir)?;
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        let fsyncs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let committer = start_committer(dir.to_path_buf(), fsyncs.clone());
        Ok((Spool { dir: dir.to_path_buf(), _lock: lock, committer, fsyncs }, entries))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, id: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{id}.eml")), self.dir.join(format!("{id}.json")))
    }

    /// Stores a new message durably: when this returns `Ok`, a crash
    /// cannot lose it.
    pub async fn store(&self, entry: &Entry, message: Arc<Vec<u8>>) -> std::io::Result<()> {
        assert!(valid_id(&entry.id));
        let (eml, json) = self.paths(&entry.id);
        let (eml_tmp, json_tmp) = (tmp_of(&eml), tmp_of(&json));
        let meta = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let fsyncs = self.fsyncs.clone();
        let (a, b) = (eml_tmp.clone(), json_tmp.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            write_synced(&a, &message)?;
            write_synced(&b, &meta)?;
            fsyncs.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
        let result = self.commit(vec![(eml_tmp.clone(), eml), (json_tmp.clone(), json)]).await;
        if result.is_err() {
            let _ = std::fs::remove_file(&eml_tmp);
            let _ = std::fs::remove_file(&json_tmp);
        }
        result
    }

    /// Replaces an entry's state durably.
    pub async fn update(&self, entry: &Entry) -> std::io::Result<()> {
        let (_, json) = self.paths(&entry.id);
        let tmp = tmp_of(&json);
        let meta = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let fsyncs = self.fsyncs.clone();
        let t = tmp.clone();
        tokio::task::spawn_blocking(move || {
            fsyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            write_synced(&t, &meta)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.commit(vec![(tmp, json)]).await
    }

    /// Removes a finished entry: the `.json` first, so a crash in between
    /// leaves an orphan `.eml` that the next start removes.
    ///
    /// No folder fsync: a removal lost to a power cut (a process crash
    /// cannot lose it) only means the message is sent once more, which
    /// at-least-once delivery allows anyway; the next commit's folder fsync
    /// makes it durable in passing. That saves one fsync per message.
    pub async fn remove(&self, id: &str) -> std::io::Result<()> {
        let (eml, json) = self.paths(id);
        tokio::task::spawn_blocking(move || {
            std::fs::remove_file(&json)?;
            let _ = std::fs::remove_file(&eml);
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The message file of an entry.
    pub fn read_message(&self, id: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.paths(id).0)
    }

    async fn commit(&self, renames: Vec<(PathBuf, PathBuf)>) -> std::io::Result<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.committer
            .send(Commit { renames, done })
            .map_err(|_| std::io::Error::other("the spool committer stopped"))?;
        rx.await.map_err(|_| std::io::Error::other("the spool committer stopped"))?
    }
}

/// Reads the entries of a spool folder without touching anything (for
/// `mailferry queue` on a stopped server).
pub fn read_entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().and_then(|x| x.to_str()) == Some("json") {
            if let Ok(entry) = serde_json::from_slice::<Entry>(&std::fs::read(&path)?) {
                entries.push(entry);
            }
        }
    }
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(entries)
}

/// Renames an entry that cannot be used to `.broken`, message included, for
/// the operator to inspect: it may be mail we acknowledged.
fn set_aside(meta: &Path, message: Option<PathBuf>) {
    let _ = std::fs::rename(meta, meta.with_extension("json.broken"));
    if let Some(m) = message {
        let _ = std::fs::rename(&m, m.with_extension("eml.broken"));
    }
}

fn tmp_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Mail is private: readable by the server's user only.
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The group-commit thread: takes every rename request waiting, renames
/// them all, fsyncs the folder once, and answers them all.
fn start_committer(dir: PathBuf, fsyncs: Arc<std::sync::atomic::AtomicU64>) -> mpsc::Sender<Commit> {
    let (tx, rx) = mpsc::channel::<Commit>();
    std::thread::Builder::new()
        .name("spool-commit".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let mut results: Vec<std::io::Result<()>> = batch
                    .iter()
                    .map(|c| c.renames.iter().try_for_each(|(from, to)| std::fs::rename(from, to)))
                    .collect();
                fsyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = fsync_dir(&dir) {
                    let kind = e.kind();
                    for r in results.iter_mut() {
                        if r.is_ok() {
                            *r = Err(std::io::Error::new(kind, format!("fsync of the spool folder failed: {e}")));
                        }
                    }
                }
                for (c, r) in batch.into_iter().zip(results) {
                    let _ = c.done.send(r);
                }
            }
        })
        .expect("spool commit thread");
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            created: 1,
            route: "default".into(),
            mail_from: "a@example.com".into(),
            mail_params: vec![("BODY".into(), Some("8BITMIME".into()))],
            rcpts: vec![Rcpt {
                address: "b@example.org".into(),
                params: vec![],
                state: RcptState::Pending,
                last_reply: None,
                relay: None,
            }],
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            session: "s".into(),
            size: 5,
            dsn_pending: vec![],
        }
    }

    #[tokio::test]
    async fn store_update_reopen_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, entries) = Spool::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        let mut e = entry(&new_id());
        spool.store(&e, Arc::new(b"hello".to_vec())).await.unwrap();
        e.attempts = 3;
        spool.update(&e).await.unwrap();
        // Crash leftovers: a tmp file and an orphan message.
        std::fs::write(dir.path().join("x.json.tmp"), b"{").unwrap();
        std::fs::write(dir.path().join("orphan.eml"), b"never acknowledged").unwrap();
        drop(spool);
        let (spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries, vec![e.clone()]);
        assert_eq!(spool.read_message(&e.id).unwrap(), b"hello");
        assert!(!dir.path().join("x.json.tmp").exists());
        assert!(!dir.path().join("orphan.eml").exists());
        spool.remove(&e.id).await.unwrap();
        // One server per spool.
        let err = Spool::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("another mailferry process"), "{err}");
        drop(spool);
        assert!(Spool::open(dir.path()).unwrap().1.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_stores_share_folder_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let spool = Arc::new(spool);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let spool = spool.clone();
                tokio::spawn(async move {
                    let e = entry(&format!("{}{i}", new_id()));
                    spool.store(&e, Arc::new(vec![b'x'; 1000])).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(read_entries(dir.path()).unwrap().len(), 64);
        // Two file fsyncs each, and at most one folder fsync each.
        let n = spool.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
        assert!((128..=192).contains(&n), "{n} fsyncs");
    }

    #[test]
    fn a_broken_entry_is_set_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("abc.json"), b"not json").unwrap();
        std::fs::write(dir.path().join("abc.eml"), b"mail").unwrap();
        let (_, entries) = Spool::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        assert!(dir.path().join("abc.json.broken").exists());
        assert_eq!(std::fs::read(dir.path().join("abc.eml.broken")).unwrap(), b"mail");
    }
}
