//! The byte layer of a session: buffered reads of command lines, DATA and
//! BDAT chunks, and buffered writes of replies.
//!
//! Replies are written to a buffer and flushed only when the server needs
//! more input, which is what makes PIPELINING (RFC 2920) efficient: a client
//! that sends MAIL, RCPT and DATA in one packet gets the three replies in one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::server::TlsStream;

use super::data::{DataReader, DataStep};
use crate::mail::Reply;

/// What a session runs over: a TCP connection in the server, an in-memory
/// pipe in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A client connection, before or after TLS.
pub enum Conn {
    Plain(Box<dyn Stream>),
    Tls(Box<TlsStream<Box<dyn Stream>>>),
    /// Only while the connection is handed to the TLS handshake.
    Closed,
}

impl Conn {
    pub fn plain(stream: impl Stream) -> Conn {
        Conn::Plain(Box::new(stream))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Closed => Poll::Ready(Err(closed())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Closed => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Why reading input stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection.
    Closed,
    /// No input within the timeout.
    Timeout,
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A command line, or the news that it was longer than allowed (the rest of
/// it has been consumed, so the session can answer and go on).
pub enum Line {
    Ok(Vec<u8>),
    TooLong,
}

pub struct Transport {
    conn: Conn,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    /// How much of `wbuf` is already written; kept here so a write cancelled
    /// half way (shutdown, timeout) never sends a reply twice.
    wpos: usize,
    /// In the middle of discarding an over-long line; kept here so a
    /// cancelled read does not execute the rest of that line as a command.
    discarding: bool,
    /// Bound on sending queued replies, so a client that stops reading
    /// cannot hold a session (and its connection slot) forever.
    write_timeout: Duration,
}

const READ_CHUNK: usize = 16 * 1024;
/// Replies queued beyond this are sent before more pipelined input is read,
/// so a client that sends without reading cannot grow our buffer.
const MAX_QUEUED_REPLIES: usize = 64 * 1024;

impl Transport {
    pub fn new(conn: Conn) -> Transport {
        Transport {
            conn,
            rbuf: Vec::with_capacity(READ_CHUNK),
            rpos: 0,
            wbuf: Vec::with_capacity(512),
            wpos: 0,
            discarding: false,
            write_timeout: Duration::from_secs(300),
        }
    }

    /// Sets the time allowed to send queued replies.
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.write_timeout = timeout;
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }

    /// Queues a reply; it is sent before the next read or on [`flush`].
    pub fn reply(&mut self, reply: &Reply) {
        self.wbuf.extend_from_slice(&reply.to_wire());
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        let timeout = self.write_timeout;
        tokio::time::timeout(timeout, async {
            while self.wpos < self.wbuf.len() {
                let n = self.conn.write(&self.wbuf[self.wpos..]).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero));
                }
                self.wpos += n;
            }
            self.wbuf.clear();
            self.wpos = 0;
            self.conn.flush().await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client is not reading replies"))?
    }

    /// Sends what is queued and closes the write side.
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.flush().await;
            let _ = self.conn.shutdown().await;
        })
        .await;
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }

    /// Reads more input into the buffer, flushing queued replies first
    /// (the client may be waiting for them before it sends more).
    async fn fill(&mut self, timeout: Duration) -> Result<(), ReadError> {
        self.flush().await?;
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        // read_buf appends to the Vec's spare capacity, so a read cancelled
        // by shutdown or a timeout leaves the buffer as it was.
        self.rbuf.reserve(READ_CHUNK);
        let n = match tokio::time::timeout(timeout, self.conn.read_buf(&mut self.rbuf)).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Err(e)) => return Err(ReadError::Io(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
        Ok(())
    }

    /// Reads one line ending in LF (a preceding CR is removed). Lines longer
    /// than `max` octets, terminator included, are consumed and reported as
    /// [`Line::TooLong`] without being buffered whole.
    pub async fn read_line(&mut self, max: usize, timeout: Duration) -> Result<Line, ReadError> {
        if self.wbuf.len() > MAX_QUEUED_REPLIES {
            self.flush().await?;
        }
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let line_len = i + 1;
                if self.discarding || line_len > max {
                    self.discarding = false;
                    self.consume(line_len);
                    return Ok(Line::TooLong);
                }
                let mut line = self.buffered()[..i].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.consume(line_len);
                return Ok(Line::Ok(line));
            }
            if self.buffered().len() > max {
                // Drop what we have; keep reading until the end of the line.
                self.discarding = true;
                let n = self.buffered().len();
                self.consume(n);
            }
            self.fill(timeout).await?;
        }
    }

    /// Whether the client already sent more input (pipelining).
    pub fn has_buffered_input(&self) -> bool {
        !self.buffered().is_empty()
    }

    /// Forgets input received but not yet read. After STARTTLS, anything the
    /// client sent in clear text before the handshake must not be taken as a
    /// command of the encrypted session (CVE-2011-0411 class).
    pub fn discard_buffered_input(&mut self) -> usize {
        let n = self.buffered().len();
        self.rbuf.clear();
        self.rpos = 0;
        self.discarding = false;
        n
    }

    /// Feeds DATA input into `reader` until it reports the end or an error.
    pub async fn read_data(&mut self, reader: &mut DataReader, timeout: Duration) -> Result<DataStep, ReadError> {
        loop {
            if !self.buffered().is_empty() {
                let (used, step) = reader.feed(self.buffered());
                self.consume(used);
                if !matches!(step, DataStep::More) {
                    return Ok(step);
                }
            }
            self.fill(timeout).await?;
        }
    }

    /// Reads exactly `size` octets of a BDAT chunk, appending them to `out`
    /// while `out` stays within `limit`; octets beyond it are read and dropped
    /// so the command stream stays in step. Returns false if anything was dropped.
    pub async fn read_chunk(
        &mut self,
        size: usize,
        out: &mut Vec<u8>,
        limit: usize,
        timeout: Duration,
    ) -> Result<bool, ReadError> {
        let mut remaining = size;
        let mut kept_all = true;
        while remaining > 0 {
            if self.buffered().is_empty() {
                self.fill(timeout).await?;
            }
            let take = remaining.min(self.buffered().len());
            let room = limit.saturating_sub(out.len());
            let keep = take.min(room);
            if keep < take {
                kept_all = false;
            }
            out.extend_from_slice(&self.buffered()[..keep]);
            self.consume(take);
            remaining -= take;
        }
        Ok(kept_all)
    }

    /// Runs the server side of a TLS handshake on the plain connection
    /// (STARTTLS). Queued replies are sent first; unread input is discarded.
    pub async fn start_tls(&mut self, acceptor: &tokio_rustls::TlsAcceptor, timeout: Duration) -> io::Result<()> {
        self.flush().await?;
        self.discard_buffered_input();
        let Conn::Plain(plain) = std::mem::replace(&mut self.conn, Conn::Closed) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio::time::timeout(timeout, acceptor.accept(plain))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.conn = Conn::Tls(Box::new(tls));
        Ok(())
    }
}
