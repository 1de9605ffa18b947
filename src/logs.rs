//! Log lines to stderr through one writer thread.
//!
//! A busy server logs several lines per message (accepted, queued,
//! delivered, done); written one `write` each from the session's thread,
//! they cost a system call per line on the message path. Here a line is
//! appended to a buffer, and a writer thread writes what gathered every few
//! milliseconds in one call. Warnings and errors are written at once, with
//! whatever waited before them, so the lines that explain a crash are never
//! the ones lost with it; a clean exit or a panic writes the rest first.
//!
//! Hand-written: tracing-appender's non-blocking writer sends every line
//! through a channel and writes them one by one, which keeps the system
//! call per line this is here to save.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines gather before writing them.
const GATHER: Duration = Duration::from_millis(2);

/// Buffered lines beyond which a line is written at once by its own thread
/// (a flood must not grow the buffer without bound).
const MAX_BUFFERED: usize = 1 << 20;

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    /// The writer sleeps on the condition variable and needs a wake-up.
    idle: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// stderr; something else in tests.
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    /// Writes what is buffered, and `more`, while holding the lock (so lines
    /// keep their order).
    fn write_now(&self, state: &mut State, more: &[u8]) {
        let mut out = self.out.lock().unwrap();
        let _ = out.write_all(&state.lines);
        let _ = out.write_all(more);
        let _ = out.flush();
        state.lines.clear();
    }
}

/// The `MakeWriter` for tracing-subscriber.
#[derive(Clone)]
pub struct Stderr {
    shared: Arc<Shared>,
}

/// Writes the remaining lines and stops the writer when dropped (keep it
/// alive for the life of the process).
pub struct Guard {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().closed = true;
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Starts the writer thread.
pub fn stderr() -> (Stderr, Guard) {
    let (writer, guard) = to(Box::new(std::io::stderr()));
    // A panic's message comes after the lines that led to it.
    let shared = writer.shared.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut state) = shared.state.lock() {
            shared.write_now(&mut state, b"");
        }
        default_hook(info);
    }));
    (writer, guard)
}

fn to(out: Box<dyn Write + Send>) -> (Stderr, Guard) {
    let shared = Arc::new(Shared { state: Mutex::default(), wake: Condvar::new(), out: Mutex::new(out) });
    let writer = {
        let shared = shared.clone();
        std::thread::Builder::new().name("log-writer".into()).spawn(move || run(&shared)).ok()
    };
    (Stderr { shared: shared.clone() }, Guard { shared, writer })
}

fn run(shared: &Shared) {
    loop {
        {
            let mut state = shared.state.lock().unwrap();
            while state.lines.is_empty() && !state.closed {
                state.idle = true;
                state = shared.wake.wait(state).unwrap();
            }
            state.idle = false;
            if state.closed {
                shared.write_now(&mut state, b"");
                return;
            }
        }
        std::thread::sleep(GATHER);
        let mut state = shared.state.lock().unwrap();
        shared.write_now(&mut state, b"");
    }
}

/// One event's writer: buffers, or writes at once for warnings and errors.
pub struct Line<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.state.lock().unwrap();
        if self.urgent || state.closed || state.lines.len() >= MAX_BUFFERED {
            self.shared.write_now(&mut state, buf);
        } else {
            state.lines.extend_from_slice(buf);
            if state.idle {
                state.idle = false;
                self.shared.wake.notify_one();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { shared: &self.shared, urgent: true }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line<'a> {
        Line { shared: &self.shared, urgent: *meta.level() <= tracing::Level::WARN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writer wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_keep_their_order_urgent_ones_go_at_once_and_none_is_lost() {
        let sink = Sink::default();
        let (w, guard) = to(Box::new(sink.clone()));
        let text = || String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let line = |urgent: bool, s: &str| Line { shared: &w.shared, urgent }.write_all(s.as_bytes()).unwrap();
        line(false, "a\n");
        line(false, "b\n");
        line(true, "warn\n");
        assert_eq!(text(), "a\nb\nwarn\n", "a warning is written at once, after what waited");
        line(false, "c\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while text() != "a\nb\nwarn\nc\n" {
            assert!(std::time::Instant::now() < deadline, "the writer did not write {:?}", text());
            std::thread::sleep(Duration::from_millis(5));
        }
        line(false, "d\n");
        drop(guard);
        assert_eq!(text(), "a\nb\nwarn\nc\nd\n", "what waited is written at the end");
    }
}
