//! `mailferry queue …` against a running server: a Unix socket in the spool
//! folder (`control.sock`, owner only), one JSON request line and one JSON
//! answer line per connection. With no server running, the commands work on
//! the spool files directly (under the spool's lock).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::spool::{self, Entry};
use super::{Queue, Stats};

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    List,
    Show { id: String },
    Retry { id: Option<String> },
    Delete { id: String },
    Stats,
}

/// What the server answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Entries(Vec<Entry>),
    Entry(Box<Entry>),
    Retried(usize),
    Deleted(String),
    Stats(Stats),
    Error(String),
}

pub fn socket_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("control.sock")
}

/// Serves the control socket until the server stops.
pub fn serve(queue: Arc<Queue>) -> std::io::Result<()> {
    let path = socket_path(queue.spool().dir());
    // A socket file left by a killed server: the spool lock, held by us,
    // says nobody else is serving it.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
            let queue = queue.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read).take(64 * 1024);
                // A client that never finishes its line does not keep a task.
                let read = tokio::time::timeout(std::time::Duration::from_secs(10), reader.read_line(&mut line)).await;
                if !matches!(read, Ok(Ok(_))) {
                    return;
                }
                let response = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => answer(&queue, req).await,
                    Err(e) => Response::Error(format!("bad request: {e}")),
                };
                let mut out = serde_json::to_vec(&response).unwrap_or_default();
                out.push(b'\n');
                let _ = write.write_all(&out).await;
            });
        }
    });
    Ok(())
}

use tokio::io::AsyncReadExt as _;

async fn answer(queue: &Queue, req: Request) -> Response {
    match req {
        Request::List => Response::Entries(queue.list()),
        Request::Show { id } => match queue.list().into_iter().find(|e| e.id == id) {
            Some(e) => Response::Entry(Box::new(e)),
            None => Response::Error(format!("no queued message {id}")),
        },
        Request::Retry { id } => {
            let n = queue.retry(id.as_deref()).await;
            match id {
                Some(id) if n == 0 => Response::Error(format!("no queued message {id} (or it is being delivered now)")),
                _ => Response::Retried(n),
            }
        }
        Request::Delete { id } => match queue.delete(&id).await {
            Ok(()) => Response::Deleted(id),
            Err(e) => Response::Error(e),
        },
        Request::Stats => Response::Stats(queue.stats()),
    }
}

/// Asks the running server; `None` if no server listens on the spool.
pub fn ask(spool_dir: &Path, req: &Request) -> Option<Result<Response, String>> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket_path(spool_dir)).ok()?;
    let result = (|| {
        let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        line.push(b'\n');
        stream.write_all(&line).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        std::io::BufReader::new(&stream).read_line(&mut answer).map_err(|e| e.to_string())?;
        serde_json::from_str(&answer).map_err(|e| format!("bad answer from the server: {e}"))
    })();
    Some(result)
}

/// Refuses to change a spool that belongs to another user (typically: root
/// running the command for a server that runs as its own user): the files
/// written would be unreadable to the server, and its next start would stop.
fn same_owner(spool_dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(spool_dir).map_err(|e| format!("{}: {e}", spool_dir.display()))?.uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if owner != me {
        return Err(format!(
            "{} belongs to uid {owner}, not to you (uid {me}); files written now would be unreadable to the server. Run this as the server's user, e.g. `sudo -u <user> mailferry queue ...`",
            spool_dir.display()
        ));
    }
    Ok(())
}

/// Answers a request from the spool files, with no server running.
pub fn offline(spool_dir: &Path, req: &Request) -> Result<Response, String> {
    let entries = || spool::read_entries(spool_dir).map_err(|e| format!("{}: {e}", spool_dir.display()));
    match req {
        Request::List => Ok(Response::Entries(entries()?)),
        Request::Show { id } => entries()?
            .into_iter()
            .find(|e| &e.id == id)
            .map(|e| Response::Entry(Box::new(e)))
            .ok_or_else(|| format!("no queued message {id}")),
        Request::Stats => Ok(Response::Stats(super::stats_of(&entries()?, 0))),
        Request::Retry { .. } | Request::Delete { .. } => {
            same_owner(spool_dir)?;
            // Changing entries needs the spool's lock: fails clearly if a
            // server holds it without answering on its socket.
            let (spool, entries) = spool::Spool::open(spool_dir).map_err(|e| e.to_string())?;
            let rt = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                match req {
                    Request::Delete { id } => {
                        if !entries.iter().any(|e| &e.id == id) {
                            return Err(format!("no queued message {id}"));
                        }
                        spool.remove(id).await.map_err(|e| e.to_string())?;
                        Ok(Response::Deleted(id.clone()))
                    }
                    Request::Retry { id } => {
                        let mut n = 0;
                        for mut e in entries.into_iter().filter(|e| id.as_deref().is_none_or(|id| e.id == id)) {
                            e.next_attempt = 0;
                            spool.update(&e).await.map_err(|e| e.to_string())?;
                            n += 1;
                        }
                        if n == 0 {
                            if let Some(id) = id {
                                return Err(format!("no queued message {id}"));
                            }
                        }
                        Ok(Response::Retried(n))
                    }
                    _ => unreachable!(),
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_changes_refuse_a_spool_of_another_user() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: only root can give the folder to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        for req in [Request::Retry { id: None }, Request::Delete { id: "x".into() }] {
            let err = offline(dir.path(), &req).unwrap_err();
            assert!(err.contains("uid 65534") && err.contains("sudo -u"), "{err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written, not even a lock file");
        // Reading is fine for anyone who can.
        assert!(matches!(offline(dir.path(), &Request::List), Ok(Response::Entries(e)) if e.is_empty()));
    }
}
