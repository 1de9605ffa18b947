//! Where a plugin's stdout and stderr go: a small buffer the host drains
//! after every call into the log (tagged with the plugin), keeping at most
//! [`CAPACITY`] octets per call and dropping the rest. Writes never fail, so
//! a chatty plugin cannot make its own `println!` panic.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

pub const CAPACITY: usize = 8 * 1024;

#[derive(Clone, Default)]
pub struct PluginOutput {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl PluginOutput {
    /// Takes what was written since the last call, as text.
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.buf.lock().unwrap());
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for PluginOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut buf = self.buf.lock().unwrap();
        let room = CAPACITY.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
