//! The spool: queued messages on disk, so that a `250` survives a crash.
//!
//! A new message goes into the journal (`journal.rs`): appended to a
//! segment shared by every session, one fdatasync for all the messages
//! written at the same moment. Most messages are delivered on their first
//! attempt and leave the spool as a "done" record there.
//!
//! A message that has to wait for a retry (or whose state changes short of
//! done) moves to two files of its own: `<id>.eml` (the message exactly as
//! it will be sent) and `<id>.json` (envelope and delivery state). Both are
//! written under a `.tmp` name and fsynced, then renamed, the `.json` last,
//! and the folder fsynced: a `.json` file means the message is committed
//! there; only then is it marked done in the journal. At start, `.tmp`
//! files and an `.eml` without its `.json` are the remains of a crash and
//! are removed; a message found both in files and in the journal is the
//! one in files. Renames from concurrent deliveries are committed together
//! by one thread, with one folder fsync for the batch (group commit).
//!
//! Hand-written because this is the product's durability promise itself:
//! no crate offers this exact layout and ordering.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::journal::{self, At, Journal};

impl journal::Entry for Entry {
    fn id(&self) -> &str {
        &self.id
    }
}

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
    /// First, so it is dropped (writing what it holds) before the lock.
    journal: Journal,
    dir: PathBuf,
    /// Held for the spool's lifetime: one server per spool.
    _lock: std::fs::File,
    committer: mpsc::Sender<Commit>,
    /// Where each message lives; absent: in files of its own.
    in_journal: std::sync::Mutex<HashMap<String, At>>,
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
            if journal::segment_number(&name).is_some() {
                continue;
            } else if name.ends_with(".tmp") {
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
        let fsyncs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // A message both in files and in the journal was moved to files:
        // the files hold its newer state.
        let in_files: std::collections::HashSet<String> = entries.iter().map(|e| e.id.clone()).collect();
        let (journal, found) = Journal::open::<Entry>(dir, fsyncs.clone(), |id| in_files.contains(id))?;
        let mut in_journal = HashMap::new();
        for f in found {
            in_journal.insert(f.entry.id.clone(), f.at);
            entries.push(f.entry);
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        let committer = start_committer(dir.to_path_buf(), fsyncs.clone());
        let spool = Spool {
            dir: dir.to_path_buf(),
            _lock: lock,
            committer,
            journal,
            in_journal: std::sync::Mutex::new(in_journal),
            fsyncs,
        };
        Ok((spool, entries))
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
        let at = self.journal.append(entry, message).await?;
        self.in_journal.lock().unwrap().insert(entry.id.clone(), at);
        Ok(())
    }

    /// Replaces an entry's state durably. A message still in the journal
    /// moves to files of its own first.
    pub async fn update(&self, entry: &Entry) -> std::io::Result<()> {
        let (eml, json) = self.paths(&entry.id);
        let json_tmp = tmp_of(&json);
        let meta = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let fsyncs = self.fsyncs.clone();
        let from_journal = self.in_journal.lock().unwrap().get(&entry.id).cloned();
        let mut renames = Vec::new();
        if from_journal.is_some() {
            renames.push((tmp_of(&eml), eml.clone()));
        }
        renames.push((json_tmp.clone(), json));
        let written = {
            let (at, renames) = (from_journal.clone(), renames.clone());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                if let Some(at) = at {
                    fsyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    write_synced(&renames[0].0, &at.read()?)?;
                }
                fsyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                write_synced(&json_tmp, &meta)
            })
            .await
            .map_err(std::io::Error::other)?
        };
        let result = match written {
            Ok(()) => self.commit(renames.clone()).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            for (tmp, fin) in &renames {
                let _ = std::fs::remove_file(tmp);
                if from_journal.is_some() {
                    // The journal still holds the message: files that a
                    // rename may have put in place would outlive its
                    // removal there and send it again after a restart.
                    let _ = std::fs::remove_file(fin);
                }
            }
            return result;
        }
        if let Some(at) = from_journal {
            // Committed in files: the journal's copy is done.
            self.in_journal.lock().unwrap().remove(&entry.id);
            self.journal.done(&at, &entry.id);
        }
        Ok(())
    }

    /// Removes a finished entry. In the journal: a done record, written
    /// with the journal's next batch (see [`Spool::flush`]). In files: the
    /// `.json` first, so a crash in between leaves an orphan `.eml` that the
    /// next start removes.
    ///
    /// No fsync: a removal lost to a power cut only means the message is
    /// sent once more, which at-least-once delivery allows anyway. That
    /// saves one fsync per message.
    pub async fn remove(&self, id: &str) -> std::io::Result<()> {
        let at = self.in_journal.lock().unwrap().remove(id);
        if let Some(at) = at {
            self.journal.done(&at, id);
            return Ok(());
        }
        let (eml, json) = self.paths(id);
        tokio::task::spawn_blocking(move || {
            std::fs::remove_file(&json)?;
            let _ = std::fs::remove_file(&eml);
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Writes what the journal holds back (removals): before a clean stop,
    /// so a restart does not send again what was delivered.
    pub async fn flush(&self) -> std::io::Result<()> {
        self.journal.flush().await
    }

    /// A queued message's octets, read off the async workers.
    pub async fn read_message(&self, id: &str) -> std::io::Result<Vec<u8>> {
        let at = self.in_journal.lock().unwrap().get(id).cloned();
        let path = self.paths(id).0;
        tokio::task::spawn_blocking(move || match at {
            Some(at) => at.read(),
            None => std::fs::read(path),
        })
        .await
        .map_err(std::io::Error::other)?
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
    for entry in journal::read_entries::<Entry>(dir)? {
        if !entries.iter().any(|e| e.id == entry.id) {
            entries.push(entry);
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
        assert_eq!(spool.read_message(&e.id).await.unwrap(), b"hello");
        assert!(!dir.path().join("x.json.tmp").exists());
        assert!(!dir.path().join("orphan.eml").exists());
        spool.remove(&e.id).await.unwrap();
        // One server per spool.
        let err = Spool::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("another mailferry process"), "{err}");
        drop(spool);
        assert!(Spool::open(dir.path()).unwrap().1.is_empty());
    }

    /// The spool folder's files other than the lock.
    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock")
            .collect();
        v.sort();
        v
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        files(dir).into_iter().filter(|n| n.starts_with("segment-")).map(|n| dir.join(n)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_stores_share_fsyncs() {
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
        // Messages written at the same moment share one fdatasync (group
        // commit), and no message has files of its own.
        let n = spool.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
        assert!((1..=32).contains(&n), "{n} fsyncs for 64 messages");
        assert!(files(dir.path()).iter().all(|f| f.starts_with("segment-")), "{:?}", files(dir.path()));
    }

    #[tokio::test]
    async fn journal_messages_survive_a_restart_and_done_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let ids: Vec<String> = (0..3).map(|i| format!("{i}{}", new_id())).collect();
        for (i, id) in ids.iter().enumerate() {
            spool.store(&entry(id), Arc::new(format!("message {i}").into_bytes())).await.unwrap();
        }
        spool.remove(&ids[1]).await.unwrap();
        drop(spool);
        let (spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries.iter().map(|e| &e.id).collect::<Vec<_>>(), vec![&ids[0], &ids[2]]);
        assert_eq!(spool.read_message(&ids[2]).await.unwrap(), b"message 2");
        assert_eq!(read_entries(dir.path()).unwrap().len(), 2, "read without the lock, as `queue list` does");
        // Done with all: the segment goes (at the next start at the latest).
        spool.remove(&ids[0]).await.unwrap();
        spool.remove(&ids[2]).await.unwrap();
        drop(spool);
        let (_spool, entries) = Spool::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        assert!(segments(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }

    #[tokio::test]
    async fn an_idle_empty_segment_is_deleted_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let e = entry(&new_id());
        spool.store(&e, Arc::new(b"x".to_vec())).await.unwrap();
        assert_eq!(segments(dir.path()).len(), 1);
        spool.remove(&e.id).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !segments(dir.path()).is_empty() {
            assert!(std::time::Instant::now() < deadline, "{:?}", files(dir.path()));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn what_a_crash_cut_short_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let (a, b) = (format!("{}a", new_id()), format!("{}b", new_id()));
        spool.store(&entry(&a), Arc::new(b"first".to_vec())).await.unwrap();
        spool.store(&entry(&b), Arc::new(b"second".to_vec())).await.unwrap();
        drop(spool);
        // The zeros written ahead of the records are cut off at the start.
        drop(Spool::open(dir.path()).unwrap());
        let segment = segments(dir.path()).pop().unwrap();
        let good = std::fs::metadata(&segment).unwrap().len();
        // A record whose write the crash interrupted, then a filesystem's zeros.
        let mut f = std::fs::OpenOptions::new().append(true).open(&segment).unwrap();
        f.write_all(&5000u32.to_le_bytes()).unwrap();
        f.write_all(&[7u8; 200]).unwrap();
        drop(f);
        let (spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(spool.read_message(&b).await.unwrap(), b"second");
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), good, "the torn record is cut off");
        // Its octets are kept aside all the same: damage can look alike.
        assert_eq!(broken(dir.path()).len(), 1);
        drop(spool);
        let mut f = std::fs::OpenOptions::new().append(true).open(&segment).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        let (_spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), good);
        assert_eq!(broken(dir.path()).len(), 1, "zeros are cut off without a copy");
    }

    /// A spool with three messages ("body of ID") in one segment, closed.
    async fn three_in_a_segment() -> (tempfile::TempDir, Vec<String>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let ids: Vec<String> = (0..3).map(|i| format!("{i}{}", new_id())).collect();
        for id in &ids {
            spool.store(&entry(id), Arc::new(format!("body of {id}").into_bytes())).await.unwrap();
        }
        drop(spool);
        let segment = segments(dir.path()).pop().unwrap();
        (dir, ids, segment)
    }

    fn broken(dir: &Path) -> Vec<PathBuf> {
        files(dir).into_iter().filter(|f| f.ends_with(".broken")).map(|f| dir.join(f)).collect()
    }

    #[tokio::test]
    async fn a_damaged_length_does_not_take_the_records_after_it() {
        let (dir, ids, segment) = three_in_a_segment().await;
        let mut bytes = std::fs::read(&segment).unwrap();
        // The second record's length now runs past the end of the file.
        let first_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let second = 8 + 9 + first_len;
        assert!(bytes[second..].windows(ids[1].len()).any(|w| w == ids[1].as_bytes()));
        bytes[second + 3] = 0x7f;
        std::fs::write(&segment, &bytes).unwrap();
        let (spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries.iter().map(|e| &e.id).collect::<Vec<_>>(), vec![&ids[0], &ids[2]]);
        assert_eq!(spool.read_message(&ids[2]).await.unwrap(), format!("body of {}", ids[2]).as_bytes());
        assert_eq!(broken(dir.path()).len(), 1);
    }

    #[tokio::test]
    async fn a_segment_created_just_before_a_crash_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        // Its size reached the disk, its magic did not.
        std::fs::write(dir.path().join("segment-0000000001.log"), vec![0u8; 128 * 1024]).unwrap();
        let (spool, entries) = Spool::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        spool.store(&entry(&new_id()), Arc::new(b"after".to_vec())).await.unwrap();
    }

    #[tokio::test]
    async fn damage_inside_a_segment_is_set_aside_and_the_rest_kept() {
        let (dir, ids, segment) = three_in_a_segment().await;
        let mut bytes = std::fs::read(&segment).unwrap();
        let at = bytes.windows(ids[1].len() + 8).position(|w| w == format!("body of {}", ids[1]).as_bytes()).unwrap();
        bytes[at] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        let (_spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries.iter().map(|e| &e.id).collect::<Vec<_>>(), vec![&ids[0], &ids[2]]);
        let aside = broken(dir.path());
        assert_eq!(aside.len(), 1);
        assert!(aside[0].to_str().unwrap().starts_with(segment.to_str().unwrap()));
        assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes, "the damaged segment is kept for the operator");
    }

    #[tokio::test]
    async fn a_retried_message_leaves_the_journal_for_files_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut e = entry(&new_id());
        spool.store(&e, Arc::new(b"wait for me".to_vec())).await.unwrap();
        e.attempts = 1;
        spool.update(&e).await.unwrap();
        let (eml, json) = spool.paths(&e.id);
        assert_eq!(std::fs::read(&eml).unwrap(), b"wait for me");
        assert!(json.exists());
        assert_eq!(spool.read_message(&e.id).await.unwrap(), b"wait for me");
        drop(spool);
        // Its journal copy is done: one entry, the files' state.
        let (spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries, vec![e.clone()]);
        assert!(segments(dir.path()).is_empty(), "{:?}", files(dir.path()));
        spool.remove(&e.id).await.unwrap();
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }

    #[tokio::test]
    async fn a_crash_between_the_move_and_its_done_record_keeps_the_files_version() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut e = entry(&new_id());
        spool.store(&e, Arc::new(b"m".to_vec())).await.unwrap();
        // Files written and committed, the journal not told (the crash).
        e.attempts = 2;
        let (eml, json) = spool.paths(&e.id);
        drop(spool);
        std::fs::write(&eml, b"m").unwrap();
        std::fs::write(&json, serde_json::to_vec(&e).unwrap()).unwrap();
        let (_spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries, vec![e.clone()]);
        drop(_spool);
        let (_spool, entries) = Spool::open(dir.path()).unwrap();
        assert_eq!(entries, vec![e], "and the journal copy is marked done for good");
        assert!(segments(dir.path()).is_empty(), "{:?}", files(dir.path()));
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
