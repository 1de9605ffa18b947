//! The journal: where new messages are written before their `250`.
//!
//! Per-message files cost a new inode, a rename and an unlink per file, and
//! an fsync each; on a busy relay that churn, not the mail, was most of the
//! work. Here sessions append their messages to a shared segment file
//! (`segment-<n>.log`) and one thread writes what every session has
//! waiting, then makes it durable with one `fdatasync` for the batch (group
//! commit). Zeros are written a little ahead of the records, so most syncs
//! find a file whose size did not change and have only data to write. A
//! delivered message gets a small "done" record in its own segment, written
//! with the next batch and never synced: losing one to a power cut only
//! means sending that message again, which at-least-once delivery allows
//! (a clean stop writes them all first). A segment whose
//! messages are all done is deleted; so is the current one once it has been
//! idle and empty for a quarter of a second, so an idle spool holds no segment at all.
//!
//! Messages that wait for a retry leave the journal for files of their own
//! (see `spool.rs`): segments thus only hold messages in their first
//! attempt and die young, and a message deferred for days does not pin one.
//!
//! Record: `len` (u32 LE, of the payload) · `crc32` (u32 LE, of kind and
//! payload) · `kind` (u8) · payload. A message record's payload is the
//! entry's JSON length (u32 LE), the JSON, then the message octets; a done
//! record's is the queue id. A segment starts with [`MAGIC`].
//!
//! Hand-written: this is the durability promise of the product itself.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// What the journal keeps of a message besides its octets: the queue's own
/// entry, kept as JSON. The journal needs only its id (to match the done
/// records); the rest is the queue's business.
pub trait Entry: serde::Serialize + serde::de::DeserializeOwned {
    fn id(&self) -> &str;
}

const MAGIC: &[u8; 8] = b"MFJRNL01";
const HEADER: usize = 9;
const MESSAGE: u8 = 1;
const DONE: u8 = 2;

/// A segment this large takes no more new messages.
const SEGMENT_MAX: u64 = 4 * 1024 * 1024;
/// The current segment, empty of live messages, is deleted after this long
/// without a new message (and at once once it is past [`SEGMENT_MAX`]/4).
const IDLE: Duration = Duration::from_millis(250);

/// Where a message lives in the journal.
#[derive(Clone)]
pub struct At {
    pub segment: u64,
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl At {
    /// The message's octets.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, self.offset)?;
        Ok(buf)
    }
}

type Answer<T> = tokio::sync::oneshot::Sender<std::io::Result<T>>;

enum Op {
    Append {
        id: String,
        record: Vec<u8>,
        message: Arc<Vec<u8>>,
        answer: Answer<At>,
    },
    /// Write the done records waiting, then answer.
    Flush {
        answer: Option<Answer<()>>,
    },
}

pub struct Journal {
    ops: mpsc::Sender<Op>,
    /// Done records not written yet: the writer takes them with its next
    /// batch, or within [`IDLE`] when there is none, so marking a message
    /// done costs no wake-up of its own.
    done: Arc<Mutex<Vec<(u64, String)>>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Journal {
    /// Writes what is still waiting before the spool is closed.
    fn drop(&mut self) {
        let _ = self.ops.send(Op::Flush { answer: None });
        let (ops, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.ops, ops));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn segment_name(n: u64) -> String {
    format!("segment-{n:010}.log")
}

/// The segment number of a file name, if it is a segment's.
pub fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?.strip_suffix(".log")?.parse().ok()
}

/// A message found in the journal at start-up.
pub struct Found<E> {
    pub entry: E,
    pub at: At,
}

impl Journal {
    /// Replays the segments in `dir`: returns the messages not done, cuts
    /// off what a crash left half-written (never acknowledged), deletes
    /// segments with nothing left, and starts the writer. Messages whose
    /// id `in_files` knows were moved to files of their own before a crash
    /// could mark them done here: they are marked now.
    pub fn open<E: Entry>(
        dir: &Path,
        fsyncs: Arc<AtomicU64>,
        in_files: impl Fn(&str) -> bool,
    ) -> std::io::Result<(Journal, Vec<Found<E>>)> {
        let mut segments = BTreeMap::new();
        let mut found = Vec::new();
        for (n, path) in segment_files(dir)? {
            let file = Arc::new(std::fs::OpenOptions::new().read(true).write(true).open(&path)?);
            let replay = replay::<E>(&file, &path, true)?;
            if replay.messages.is_empty() {
                std::fs::remove_file(&path)?;
                continue;
            }
            let live = replay.messages.len();
            for (entry, offset, len) in replay.messages {
                found.push(Found { entry, at: At { segment: n, file: file.clone(), offset, len } });
            }
            let allocated = file.metadata()?.len();
            segments.insert(n, Segment { file, len: replay.end, allocated, live, dir_synced: true });
        }
        let next = segments.keys().next_back().map_or(1, |n| n + 1);
        let done: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            segments,
            current: None,
            next,
            last_append: Instant::now(),
            fsyncs,
            done: done.clone(),
        };
        let (moved, found): (Vec<_>, Vec<_>) = found.into_iter().partition(|f| in_files(f.entry.id()));
        for f in moved {
            writer.mark_done(f.at.segment, f.entry.id())?;
        }
        let (ops, rx) = mpsc::channel();
        let writer = std::thread::Builder::new().name("spool-journal".into()).spawn(move || writer.run(rx))?;
        Ok((Journal { ops, done, writer: Some(writer) }, found))
    }

    /// Appends a message durably: when this returns `Ok`, a crash cannot
    /// lose it.
    pub async fn append(&self, entry: &impl Entry, message: Arc<Vec<u8>>) -> std::io::Result<At> {
        let json = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let record = message_record(&json, &message)?;
        let (answer, rx) = tokio::sync::oneshot::channel();
        self.ops.send(Op::Append { id: entry.id().to_string(), record, message, answer }).map_err(|_| stopped())?;
        let mut waiting = Waiting { rx: Some(rx), journal: self, id: entry.id() };
        let result = waiting.rx.as_mut().expect("set above").await.map_err(|_| stopped())?;
        waiting.rx = None;
        result
    }

    /// Marks a message done (delivered, bounced, deleted, or moved to files
    /// of its own). Written with the writer's next batch, and never synced
    /// (see the module comment); [`Journal::flush`] writes it now.
    pub fn done(&self, at: &At, id: &str) {
        self.done.lock().unwrap().push((at.segment, id.to_string()));
    }

    /// Writes the done records waiting (before a clean stop, or before an
    /// operator's command returns).
    pub async fn flush(&self) -> std::io::Result<()> {
        let (answer, written) = tokio::sync::oneshot::channel();
        self.ops.send(Op::Flush { answer: Some(answer) }).map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }
}

/// An append whose caller may stop waiting (a session cancelled at
/// shutdown). If the answer was already on its way, the message is in the
/// journal but its client never heard `250`: it is marked done, so it is
/// not delivered after a restart. (Answers not yet sent are handled by the
/// writer, which finds nobody to tell.)
struct Waiting<'a> {
    rx: Option<tokio::sync::oneshot::Receiver<std::io::Result<At>>>,
    journal: &'a Journal,
    id: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(Ok(at)) = rx.try_recv() {
                self.journal.done(&at, self.id);
            }
        }
    }
}

/// A message record: header, the entry's JSON (with its length) and the
/// message octets, which the checksum covers but which are written from
/// the caller's buffer rather than copied here.
fn message_record(json: &[u8], message: &[u8]) -> std::io::Result<Vec<u8>> {
    let payload_len = 4 + json.len() + message.len();
    let len = u32::try_from(payload_len).map_err(|_| std::io::Error::other("message too large for the spool"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[MESSAGE]);
    crc.update(&(json.len() as u32).to_le_bytes());
    crc.update(json);
    crc.update(message);
    let mut record = Vec::with_capacity(HEADER + 4 + json.len());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&crc.finalize().to_le_bytes());
    record.push(MESSAGE);
    record.extend_from_slice(&(json.len() as u32).to_le_bytes());
    record.extend_from_slice(json);
    Ok(record)
}

fn stopped() -> std::io::Error {
    std::io::Error::other("the spool journal stopped")
}

/// The segment files of a spool folder, in order.
fn segment_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if let Some(n) = path.file_name().and_then(|n| n.to_str()).and_then(segment_number) {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The messages not done in the journal of `dir`, without changing anything
/// (for `mailferry queue` on a stopped server).
pub fn read_entries<E: Entry>(dir: &Path) -> std::io::Result<Vec<E>> {
    let mut out = Vec::new();
    for (_, path) in segment_files(dir)? {
        let file = File::open(&path)?;
        out.extend(replay::<E>(&file, &path, false)?.messages.into_iter().map(|(e, _, _)| e));
    }
    Ok(out)
}

struct Replay<E> {
    /// Messages not done: entry, offset and length of the octets.
    messages: Vec<(E, u64, u64)>,
    /// Where the valid records end.
    end: u64,
}

/// A record that reads back whole, checksum and all.
struct Record {
    kind: u8,
    /// A done record's queue id, or a message's JSON entry.
    head: Vec<u8>,
    /// A message's octets: offset and length.
    octets: (u64, u64),
    next: u64,
}

/// The record at `pos`, if one is there whole and intact.
fn record_at(file: &File, pos: u64, size: u64) -> std::io::Result<Option<Record>> {
    let mut header = [0u8; HEADER];
    if size - pos < HEADER as u64 {
        return Ok(None);
    }
    file.read_exact_at(&mut header, pos)?;
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let kind = header[8];
    let body = pos + HEADER as u64;
    let next = body + len;
    if next > size || !matches!(kind, MESSAGE | DONE) {
        return Ok(None);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    let (head, octets) = if kind == DONE {
        let mut id = vec![0u8; len as usize];
        file.read_exact_at(&mut id, body)?;
        hasher.update(&id);
        (id, (0, 0))
    } else {
        if len < 4 {
            return Ok(None);
        }
        let mut json_len = [0u8; 4];
        file.read_exact_at(&mut json_len, body)?;
        hasher.update(&json_len);
        let json_len = u32::from_le_bytes(json_len) as u64;
        if 4 + json_len > len {
            return Ok(None);
        }
        let mut json = vec![0u8; json_len as usize];
        file.read_exact_at(&mut json, body + 4)?;
        hasher.update(&json);
        let octets = (body + 4 + json_len, len - 4 - json_len);
        let mut buf = vec![0u8; 64 * 1024];
        let (mut at, mut rest) = octets;
        while rest > 0 {
            let n = rest.min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)?;
            hasher.update(&buf[..n]);
            at += n as u64;
            rest -= n as u64;
        }
        (json, octets)
    };
    Ok((hasher.finalize() == crc).then_some(Record { kind, head, octets, next }))
}

/// Reads a segment's records.
///
/// Everything acknowledged was synced, and later writes only ever went
/// after it; so a crash can only have torn what follows the last intact
/// record that anybody was told about. When a record does not read back,
/// the rest of the file is searched for a later intact one: none means a
/// torn tail, cut off (when `repair`); one means damage in the middle, and
/// reading goes on from there, so no intact record is ever given up. Either
/// way, octets other than zeros that are not used are first copied aside
/// (`.broken`) for the operator. A record found after a torn stretch may be
/// one whose client never heard `250` (its batch's sync did not finish);
/// delivering it is a possible duplicate, never a loss.
fn replay<E: Entry>(file: &File, path: &Path, repair: bool) -> std::io::Result<Replay<E>> {
    let size = file.metadata()?.len();
    let mut magic = [0u8; 8];
    let head = (size.min(MAGIC.len() as u64)) as usize;
    file.read_exact_at(&mut magic[..head], 0)?;
    if &magic != MAGIC {
        let torn = magic[..head].iter().zip(MAGIC).all(|(a, b)| *a == 0 || a == b);
        if torn && only_zeros(file, head as u64, size)? {
            // Created, then the crash before anything was synced: no
            // record in it was ever acknowledged.
            return Ok(Replay { messages: Vec::new(), end: 0 });
        }
        return Err(std::io::Error::other(format!("{}: not a mailferry spool segment", path.display())));
    }
    let mut messages: HashMap<String, (E, u64, u64)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut pos = MAGIC.len() as u64;
    let mut damaged = false;
    let end = loop {
        if pos == size {
            break pos;
        }
        let record = match record_at(file, pos, size)? {
            Some(record) => record,
            None if only_zeros(file, pos, size)? => break pos,
            None => {
                // Search on, one octet at a time: slow, but only ever run
                // on a file a crash or a disk damaged.
                let mut found = None;
                for p in pos + 1..size {
                    if let Some(record) = record_at(file, p, size)? {
                        found = Some((p, record));
                        break;
                    }
                }
                damaged = true;
                match found {
                    Some((p, record)) => {
                        tracing::error!(segment = %path.display(), offset = pos, resumed = p, "spool segment holds octets that are no record (damage); skipped");
                        pos = p;
                        record
                    }
                    None => {
                        // A write a crash cut short, most likely; kept
                        // aside all the same, as damage there looks alike.
                        tracing::warn!(segment = %path.display(), offset = pos, "the end of a spool segment does not read back (a write cut short by a crash, or damage)");
                        break pos;
                    }
                }
            }
        };
        match record.kind {
            MESSAGE => match serde_json::from_slice::<E>(&record.head) {
                Ok(entry) => {
                    let id = entry.id().to_string();
                    if !messages.contains_key(&id) {
                        order.push(id.clone());
                    }
                    messages.insert(id, (entry, record.octets.0, record.octets.1));
                }
                Err(e) => {
                    tracing::error!(segment = %path.display(), offset = pos, error = %e, "spool segment holds an entry that cannot be read; skipped, and the segment is copied aside");
                    damaged = true;
                }
            },
            _ => {
                messages.remove(String::from_utf8_lossy(&record.head).as_ref());
            }
        }
        pos = record.next;
    };
    if damaged && repair {
        set_aside(path)?;
    }
    if end < size && repair {
        tracing::info!(segment = %path.display(), from = end, "cutting off the end of a spool segment left half-written by a crash");
        file.set_len(end)?;
        file.sync_all()?;
    }
    let messages = order.into_iter().filter_map(|id| messages.remove(&id)).collect();
    Ok(Replay { messages, end })
}

/// Copies a damaged segment to a `.broken` file of its own (segment
/// numbers start again at 1 once the spool is empty, so the name carries
/// the time and never replaces an earlier copy).
fn set_aside(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for i in 0..1000 {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".{secs}-{i}.broken"));
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&aside) {
            Ok(mut to) => {
                std::io::copy(&mut File::open(path)?, &mut to)?;
                to.sync_all()?;
                tracing::warn!(segment = %path.display(), copy = %Path::new(&aside).display(), "spool segment copied aside for inspection; every record that reads back is kept");
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!("{}: no free name for a .broken copy", path.display())))
}

/// Whether `file` holds only zero octets from `from` to `to` (what a crash
/// leaves in space a filesystem allocated but was never written).
fn only_zeros(file: &File, from: u64, to: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

struct Segment {
    file: Arc<File>,
    /// Where the records end (the next one is written there).
    len: u64,
    /// The file's size: zeros written ahead of `len`, so that most syncs
    /// find a file whose size did not change and write its data alone
    /// (about a third less work than a sync of a growing file).
    allocated: u64,
    /// Messages in it not done yet.
    live: usize,
    /// Whether the folder was fsynced since the file was created.
    dir_synced: bool,
}

/// Zeros written ahead of the records at a time.
const ALLOCATE_AHEAD: u64 = 64 * 1024;

impl Segment {
    /// Writes at the end of the records, making room ahead first.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let end = self.len + bytes.len() as u64;
        if end > self.allocated {
            let target = (end + ALLOCATE_AHEAD).next_multiple_of(ALLOCATE_AHEAD);
            let zeros = vec![0u8; (target - self.allocated) as usize];
            self.file.write_all_at(&zeros, self.allocated)?;
            self.allocated = target;
        }
        self.file.write_all_at(bytes, self.len)?;
        self.len = end;
        Ok(())
    }

    /// Forgets what was written from `at` on.
    fn cut(&mut self, at: u64) -> std::io::Result<()> {
        self.len = at;
        self.file.set_len(at)?;
        self.allocated = at;
        Ok(())
    }
}

struct Writer {
    /// Done records waiting to be written (see [`Journal::done`]).
    done: Arc<Mutex<Vec<(u64, String)>>>,
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    /// The segment new messages go to.
    current: Option<u64>,
    next: u64,
    last_append: Instant,
    fsyncs: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, ops: mpsc::Receiver<Op>) {
        loop {
            let first = match ops.recv_timeout(IDLE) {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.write_done();
                    self.retire_idle();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.write_done();
                    return;
                }
            };
            let mut batch = vec![first];
            while let Ok(more) = ops.try_recv() {
                batch.push(more);
            }
            self.write(batch);
        }
    }

    /// Writes a batch: messages, then one sync for them all, then the done
    /// records waiting; answers after the sync.
    fn write(&mut self, batch: Vec<Op>) {
        let mut appended: Vec<(Answer<At>, std::io::Result<At>, String)> = Vec::new();
        let mut flushed = Vec::new();
        for op in batch {
            match op {
                Op::Append { id, record, message, answer } => {
                    let result = self.append(&record, &message);
                    appended.push((answer, result, id));
                }
                Op::Flush { answer } => flushed.extend(answer),
            }
        }
        let mut failed = Vec::new();
        // Every segment this batch wrote to: a batch may cross from a full
        // segment to a new one, and each must be synced before anything in
        // the batch is acknowledged.
        let mut written: Vec<u64> =
            appended.iter().filter_map(|(_, r, _)| r.as_ref().ok().map(|at| at.segment)).collect();
        written.dedup();
        if !written.is_empty() {
            if let Err(e) = self.sync(&written) {
                // Nothing of this batch may be acknowledged. Its records
                // are marked done, best effort, so a restart does not
                // deliver what the clients were told to send again; the
                // segment takes no more messages.
                let kind = e.kind();
                for (_, r, id) in appended.iter_mut() {
                    if let Ok(at) = r {
                        failed.push((at.segment, std::mem::take(id)));
                        *r = Err(std::io::Error::new(kind, format!("fsync of the spool journal failed: {e}")));
                    }
                }
                self.current = None;
            }
        }
        for (answer, result, id) in appended {
            if let Err(Ok(at)) = answer.send(result) {
                // Nobody waits for it any more (the session was cancelled):
                // the client never heard 250 and sends it again, so it is
                // not delivered from here.
                failed.push((at.segment, id));
            }
        }
        self.done.lock().unwrap().extend(failed);
        self.write_done();
        for answer in flushed {
            let _ = answer.send(Ok(()));
        }
    }

    /// Writes the done records waiting.
    fn write_done(&mut self) {
        let done = std::mem::take(&mut *self.done.lock().unwrap());
        for (segment, id) in done {
            if let Err(e) = self.mark_done(segment, &id) {
                // The message would be sent again after a restart; nothing
                // is lost.
                tracing::warn!(error = %e, queue_id = %id, "cannot mark a message done in the spool journal");
            }
        }
    }

    fn append(&mut self, record: &[u8], message: &[u8]) -> std::io::Result<At> {
        if self.current.is_some_and(|n| self.segments[&n].len >= SEGMENT_MAX) {
            self.seal();
        }
        let n = match self.current {
            Some(n) => n,
            None => self.create()?,
        };
        let seg = self.segments.get_mut(&n).expect("the current segment");
        let start = seg.len;
        let written = seg.write(record).and_then(|()| seg.write(message));
        if let Err(e) = written {
            // Leave no half record behind for the next one to follow.
            if seg.cut(start).is_err() {
                self.current = None;
            }
            return Err(e);
        }
        seg.live += 1;
        self.last_append = Instant::now();
        Ok(At { segment: n, file: seg.file.clone(), offset: start + record.len() as u64, len: message.len() as u64 })
    }

    /// A new segment, empty but for its magic.
    fn create(&mut self) -> std::io::Result<u64> {
        use std::os::unix::fs::OpenOptionsExt;
        let n = self.next;
        let path = self.dir.join(segment_name(n));
        // Mail is private: readable by the server's user only.
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
        let mut seg = Segment { file: Arc::new(file), len: 0, allocated: 0, live: 0, dir_synced: false };
        if let Err(e) = seg.write(MAGIC) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        self.next += 1;
        self.segments.insert(n, seg);
        self.current = Some(n);
        Ok(n)
    }

    /// Makes the segments durable: their data, and the folder once for
    /// those new since its last sync (a file's name must be durable before
    /// anything in it is acknowledged).
    fn sync(&mut self, segments: &[u64]) -> std::io::Result<()> {
        let mut new_names = false;
        for n in segments {
            let seg = &self.segments[n];
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            seg.file.sync_data()?;
            new_names |= !seg.dir_synced;
        }
        if new_names {
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            File::open(&self.dir)?.sync_all()?;
            for n in segments {
                self.segments.get_mut(n).expect("a written segment").dir_synced = true;
            }
        }
        Ok(())
    }

    fn mark_done(&mut self, n: u64, id: &str) -> std::io::Result<()> {
        let Some(seg) = self.segments.get_mut(&n) else { return Ok(()) };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[DONE]);
        crc.update(id.as_bytes());
        let mut record = Vec::with_capacity(HEADER + id.len());
        record.extend_from_slice(&(id.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc.finalize().to_le_bytes());
        record.push(DONE);
        record.extend_from_slice(id.as_bytes());
        let start = seg.len;
        let written = seg.write(&record);
        if written.is_err() {
            // The message would be sent again after a restart; nothing is
            // lost. Leave no half record behind.
            let _ = seg.cut(start);
        }
        seg.live = seg.live.saturating_sub(1);
        if seg.live == 0 && (self.current != Some(n) || seg.len >= SEGMENT_MAX / 4) {
            self.delete(n);
        }
        written
    }

    /// The current segment takes no more messages.
    fn seal(&mut self) {
        if let Some(n) = self.current.take() {
            if self.segments[&n].live == 0 {
                self.delete(n);
            }
        }
    }

    fn retire_idle(&mut self) {
        if let Some(n) = self.current {
            if self.segments[&n].live == 0 && self.last_append.elapsed() >= IDLE {
                self.delete(n);
            }
        }
    }

    /// Deletes a segment whose messages are all done. Not synced: a delete
    /// lost to a power cut replays only messages marked done, or sends a
    /// few again.
    fn delete(&mut self, n: u64) {
        if self.current == Some(n) {
            self.current = None;
        }
        self.segments.remove(&n);
        if let Err(e) = std::fs::remove_file(self.dir.join(segment_name(n))) {
            tracing::warn!(error = %e, segment = n, "cannot delete a finished spool segment");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_across_a_segment_switch_syncs_every_segment_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let fsyncs = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            done: Arc::default(),
            dir: dir.path().to_path_buf(),
            segments: BTreeMap::new(),
            current: None,
            next: 1,
            last_append: Instant::now(),
            fsyncs: fsyncs.clone(),
        };
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        // The first fills a segment; the second goes to a new one.
        for (id, size) in [("big", SEGMENT_MAX as usize), ("small", 10)] {
            let message = Arc::new(vec![b'x'; size]);
            let record = message_record(b"{}", &message).unwrap();
            let (answer, rx) = tokio::sync::oneshot::channel();
            batch.push(Op::Append { id: id.into(), record, message, answer });
            answers.push(rx);
        }
        writer.write(batch);
        let at: Vec<At> = answers.into_iter().map(|rx| rx.blocking_recv().unwrap().unwrap()).collect();
        assert_ne!(at[0].segment, at[1].segment);
        // Both segments' data, and the folder once for both new names.
        assert_eq!(fsyncs.load(Ordering::Relaxed), 3);
        assert!(writer.segments.values().all(|s| s.dir_synced));
    }
}
