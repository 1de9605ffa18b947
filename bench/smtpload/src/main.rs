//! smtpload: drives an SMTP submission server the way many mail clients at once would.
//!
//! N connections run concurrently; each one does greeting, EHLO, STARTTLS, EHLO, AUTH PLAIN, then
//! up to M messages (MAIL, RCPT, DATA with a ~2,000-octet RFC 5322 message), then QUIT, and the
//! next connection starts, until `--total` messages have been sent. All connections share one
//! rustls `ClientConfig`, so TLS sessions are resumed as a client library would resume them.
//!
//! Latency of a message: from its MAIL FROM to the 250 after the final dot; for the first message
//! of a connection, from the TCP connect (so it includes TLS and AUTH).
//!
//! Prints one line on stdout:
//!   ok=N fail=N secs=S msg_per_s=R p50_ms=X p99_ms=Y
//! and the first few errors on stderr.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const USAGE: &str = "usage: smtpload --addr HOST:PORT --auth LOGIN:PASSWORD [--from ADDR] [--to ADDR]
                [--conns N] [--per-conn M] [--total T] [--size OCTETS] [--tls starttls|implicit|none]
                [--server-name NAME] [--helo NAME] [--timeout-s S] [--max-secs S] [--show-errors K]";

#[derive(Clone)]
struct Opts {
    addr: String,
    login: String,
    password: String,
    from: String,
    to: String,
    conns: usize,
    per_conn: usize,
    total: usize,
    size: usize,
    tls: TlsMode,
    server_name: String,
    helo: String,
    timeout: Duration,
    max_secs: u64,
    show_errors: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum TlsMode {
    StartTls,
    Implicit,
    None,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        addr: String::new(),
        login: String::new(),
        password: String::new(),
        from: String::new(),
        to: "rcpt@example.net".into(),
        conns: 8,
        per_conn: 10,
        total: 1000,
        size: 2000,
        tls: TlsMode::StartTls,
        server_name: "localhost".into(),
        helo: "smtpload.example.net".into(),
        timeout: Duration::from_secs(30),
        max_secs: 600,
        show_errors: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(k) = args.next() {
        if k == "-h" || k == "--help" {
            return Err(String::new());
        }
        let v = args.next().ok_or_else(|| format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|_| format!("{k}: not a number: {v}"));
        match k.as_str() {
            "--addr" => o.addr = v,
            "--auth" => {
                let (l, p) = v.split_once(':').ok_or("--auth takes LOGIN:PASSWORD")?;
                o.login = l.into();
                o.password = p.into();
            }
            "--from" => o.from = v,
            "--to" => o.to = v,
            "--conns" => o.conns = num(&v)?,
            "--per-conn" => o.per_conn = num(&v)?,
            "--total" => o.total = num(&v)?,
            "--size" => o.size = num(&v)?,
            "--tls" => {
                o.tls = match v.as_str() {
                    "starttls" => TlsMode::StartTls,
                    "implicit" => TlsMode::Implicit,
                    "none" => TlsMode::None,
                    _ => return Err(format!("--tls: starttls, implicit or none, not {v}")),
                }
            }
            "--server-name" => o.server_name = v,
            "--helo" => o.helo = v,
            "--timeout-s" => o.timeout = Duration::from_secs(num(&v)? as u64),
            "--max-secs" => o.max_secs = num(&v)? as u64,
            "--show-errors" => o.show_errors = num(&v)?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if o.addr.is_empty() {
        return Err("--addr is required".into());
    }
    if o.from.is_empty() {
        o.from = if o.login.contains('@') { o.login.clone() } else { "smtpload@example.com".into() };
    }
    if o.conns == 0 || o.per_conn == 0 {
        return Err("--conns and --per-conn must be at least 1".into());
    }
    Ok(o)
}

/// Accepts any certificate (the servers under test use self-signed ones) but still checks that
/// the handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Arc<ClientConfig> {
    // ring, like the servers' own rustls; rustls 0.23.48 deprecates it only for lacking
    // post-quantum key exchange, which none of the servers measured here offers.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // Offer X25519 first, as OpenSSL, BoringSSL, NSS and Go clients do. This rustls lists P-384
    // first for ring, and servers take the client's order: every handshake would then pay for
    // P-384 (several times X25519's cost in ring) on both ends, which no real client asks for.
    {
        use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
        provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    }
    let provider = Arc::new(provider);
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    // The default resumption store (in memory, shared by every connection made with this
    // config) stays in place: session tickets / IDs are reused like a real client's.
    Arc::new(cfg)
}

/// Why a step failed: `fatal` errors end the connection (I/O, timeouts, a server that hung up);
/// the others are SMTP replies after which the session goes on with RSET.
struct Failure {
    fatal: bool,
    msg: String,
}

fn fatal(msg: String) -> Failure {
    Failure { fatal: true, msg }
}

/// One SMTP client connection over any stream.
struct Smtp<S> {
    io: BufReader<S>,
    timeout: Duration,
    line: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Smtp<S> {
    fn new(stream: S, timeout: Duration) -> Self {
        Smtp { io: BufReader::new(stream), timeout, line: String::new() }
    }

    /// Reads one (possibly multi-line) reply: its code and its last line.
    async fn reply(&mut self, what: &str) -> Result<(u16, String), Failure> {
        loop {
            self.line.clear();
            let n = tokio::time::timeout(self.timeout, self.io.read_line(&mut self.line))
                .await
                .map_err(|_| fatal(format!("{what}: no reply within {:?}", self.timeout)))?
                .map_err(|e| fatal(format!("{what}: read: {e}")))?;
            if n == 0 {
                return Err(fatal(format!("{what}: connection closed by the server")));
            }
            let l = self.line.trim_end();
            let code = l.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                return Err(fatal(format!("{what}: not an SMTP reply: {l:?}")));
            };
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, l.to_string()));
            }
        }
    }

    async fn send(&mut self, data: &[u8], what: &str) -> Result<(), Failure> {
        let w = self.io.get_mut();
        let t = self.timeout;
        let r = tokio::time::timeout(t, async {
            w.write_all(data).await?;
            w.flush().await
        })
        .await;
        match r {
            Err(_) => Err(fatal(format!("{what}: write timed out"))),
            Ok(Err(e)) => Err(fatal(format!("{what}: write: {e}"))),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends a command line and expects a reply with code `want`.
    async fn cmd(&mut self, line: &str, want: u16, what: &str) -> Result<(), Failure> {
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        self.send(&buf, what).await?;
        self.expect(want, what).await
    }

    async fn expect(&mut self, want: u16, what: &str) -> Result<(), Failure> {
        let (code, text) = self.reply(what).await?;
        if code == want {
            Ok(())
        } else {
            // 421 means the server is closing the connection.
            Err(Failure { fatal: code == 421, msg: format!("{what}: {text}") })
        }
    }

    /// Hands the stream back (for the TLS handshake), refusing if the server sent more than its
    /// reply (bytes that would otherwise be taken as coming over TLS).
    fn into_inner(self) -> Result<S, Failure> {
        if !self.io.buffer().is_empty() {
            return Err(fatal("STARTTLS: data after the 220 reply before the handshake".into()));
        }
        Ok(self.io.into_inner())
    }
}

/// The rest of a session once the connection is (or is not to be) encrypted: EHLO, AUTH PLAIN, the
/// messages, QUIT. An Err means no message was tried; failures of messages go to `rec`.
async fn messages<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Smtp<S>,
    o: &Opts,
    conn_id: usize,
    count: usize,
    connected_at: Instant,
    rec: &mut Record,
) -> Result<(), Failure> {
    c.cmd(&format!("EHLO {}", o.helo), 250, "EHLO").await?;
    if !o.login.is_empty() {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", o.login, o.password));
        c.cmd(&format!("AUTH PLAIN {token}"), 235, "AUTH PLAIN").await?;
    }
    for i in 0..count {
        let msg = message(o, conn_id, i);
        let start = if i == 0 { connected_at } else { Instant::now() };
        let r = async {
            c.cmd(&format!("MAIL FROM:<{}>", o.from), 250, "MAIL FROM").await?;
            c.cmd(&format!("RCPT TO:<{}>", o.to), 250, "RCPT TO").await?;
            c.cmd("DATA", 354, "DATA").await?;
            c.send(&msg, "message").await?;
            c.expect(250, "end of data").await
        }
        .await;
        match r {
            Ok(()) => rec.ok(start.elapsed()),
            Err(f) if f.fatal => {
                rec.fail(count - i, &f.msg);
                return Ok(());
            }
            Err(f) => {
                rec.fail(1, &f.msg);
                if let Err(f) = c.cmd("RSET", 250, "RSET").await {
                    rec.fail(count - i - 1, &f.msg);
                    return Ok(());
                }
            }
        }
    }
    // A server that does not answer QUIT well has still accepted the messages.
    let _ = c.cmd("QUIT", 221, "QUIT").await;
    Ok(())
}

/// What one connection task saw.
#[derive(Default)]
struct Record {
    ok: usize,
    fail: usize,
    lat_us: Vec<u64>,
    errors: Vec<String>,
    show: usize,
}

impl Record {
    fn ok(&mut self, d: Duration) {
        self.ok += 1;
        self.lat_us.push(d.as_micros() as u64);
    }
    fn fail(&mut self, n: usize, msg: &str) {
        if n == 0 {
            return;
        }
        self.fail += n;
        if self.errors.len() < self.show {
            self.errors.push(msg.to_string());
        }
    }
}

async fn session(o: &Opts, tls: &TlsConnector, conn_id: usize, count: usize, rec: &mut Record) {
    let connected_at = Instant::now();
    let r: Result<(), Failure> = async {
        let tcp = tokio::time::timeout(o.timeout, TcpStream::connect(&o.addr))
            .await
            .map_err(|_| fatal("connect: timed out".into()))?
            .map_err(|e| fatal(format!("connect {}: {e}", o.addr)))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(o.server_name.clone())
            .map_err(|e| fatal(format!("server name {}: {e}", o.server_name)))?;
        match o.tls {
            TlsMode::None => {
                let mut c = Smtp::new(tcp, o.timeout);
                c.expect(220, "greeting").await?;
                messages(&mut c, o, conn_id, count, connected_at, rec).await
            }
            TlsMode::Implicit => {
                let s = tokio::time::timeout(o.timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| fatal("TLS handshake: timed out".into()))?
                    .map_err(|e| fatal(format!("TLS handshake: {e}")))?;
                let mut c = Smtp::new(s, o.timeout);
                c.expect(220, "greeting").await?;
                messages(&mut c, o, conn_id, count, connected_at, rec).await
            }
            TlsMode::StartTls => {
                let mut c = Smtp::new(tcp, o.timeout);
                c.expect(220, "greeting").await?;
                c.cmd(&format!("EHLO {}", o.helo), 250, "EHLO").await?;
                c.cmd("STARTTLS", 220, "STARTTLS").await?;
                let tcp = c.into_inner()?;
                let s = tokio::time::timeout(o.timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| fatal("TLS handshake: timed out".into()))?
                    .map_err(|e| fatal(format!("TLS handshake: {e}")))?;
                let mut c = Smtp::new(s, o.timeout);
                messages(&mut c, o, conn_id, count, connected_at, rec).await
            }
        }
    }
    .await;
    if let Err(f) = r {
        // Failed before any message was sent (connect, TLS, EHLO, AUTH): all of them failed.
        rec.fail(count, &f.msg);
    }
}

/// A ~`o.size`-octet message, dot-stuffed and ended with CRLF.CRLF, ready to send after DATA.
fn message(o: &Opts, conn_id: usize, i: usize) -> Vec<u8> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut m = String::with_capacity(o.size + 200);
    let domain = o.from.rsplit_once('@').map(|(_, d)| d).unwrap_or("example.com");
    let _ = write!(
        m,
        "From: Load Test <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: smtpload message {i} of connection {conn_id}\r\n\
         Date: {date}\r\n\
         Message-ID: <{secs}.{nanos}.{conn_id}.{i}@{domain}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Transfer-Encoding: 7bit\r\n\
         \r\n",
        from = o.from,
        to = o.to,
        date = rfc5322_date(now.as_secs() as i64),
        secs = now.as_secs(),
        nanos = now.subsec_nanos(),
    );
    const WORDS: &str = "submission relay message queue throughput latency signature domain envelope recipient \
                         sender header body transfer session reply";
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    // xorshift64*, seeded per message: varied text, the same for the same connection and index.
    let mut x = (conn_id as u64) << 32 ^ i as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut next_word = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        words[(x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % words.len()]
    };
    let mut line = String::new();
    // Body lines of up to 72 characters until the message reaches the size asked for.
    while m.len() + 5 < o.size {
        line.clear();
        while line.len() < 64 {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(next_word());
        }
        let room = o.size.saturating_sub(m.len() + 5).max(1);
        line.truncate(room.min(line.len()));
        m.push_str(line.trim_end());
        m.push_str("\r\n");
    }
    // No body line starts with a dot, so no dot-stuffing is needed.
    m.push_str(".\r\n");
    m.into_bytes()
}

/// "Sun, 07 Dec 2025 14:36:00 +0000" for seconds since the epoch (UTC).
fn rfc5322_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        d,
        MO[(m - 1) as usize],
        y,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Takes up to `n` of the messages still to send.
fn claim(left: &AtomicUsize, n: usize) -> usize {
    let mut cur = left.load(Ordering::Relaxed);
    loop {
        if cur == 0 {
            return 0;
        }
        let take = cur.min(n);
        match left.compare_exchange_weak(cur, cur - take, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return take,
            Err(c) => cur = c,
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let o = match parse_args() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            if !e.is_empty() {
                eprintln!("smtpload: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let tls = TlsConnector::from(tls_config());
    let left = Arc::new(AtomicUsize::new(o.total));
    let next_conn = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Mutex::new(Record { show: o.show_errors, ..Default::default() }));
    let started = Instant::now();

    let mut tasks = Vec::with_capacity(o.conns);
    for _ in 0..o.conns {
        let (o, tls, left, next_conn, all) = (o.clone(), tls.clone(), left.clone(), next_conn.clone(), all.clone());
        tasks.push(tokio::spawn(async move {
            let mut rec = Record { show: o.show_errors, ..Default::default() };
            loop {
                let n = claim(&left, o.per_conn);
                if n == 0 {
                    break;
                }
                let id = next_conn.fetch_add(1, Ordering::Relaxed);
                session(&o, &tls, id, n, &mut rec).await;
            }
            let mut a = all.lock().unwrap();
            a.ok += rec.ok;
            a.fail += rec.fail;
            a.lat_us.extend_from_slice(&rec.lat_us);
            for e in rec.errors {
                if a.errors.len() < a.show {
                    a.errors.push(e);
                }
            }
        }));
    }
    let mut pending: VecDeque<_> = tasks.into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(o.max_secs);
    let mut timed_out = false;
    while let Some(mut t) = pending.pop_front() {
        if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
            timed_out = true;
            t.abort();
            for t in pending.drain(..) {
                t.abort();
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();

    let mut a = all.lock().unwrap();
    if timed_out {
        // Messages of aborted tasks, and those never started, count as failed.
        let unaccounted = o.total.saturating_sub(a.ok + a.fail);
        a.fail += unaccounted;
        if a.errors.len() < a.show {
            a.errors.push(format!("stopped after --max-secs {}", o.max_secs));
        }
    }
    a.lat_us.sort_unstable();
    let rate = if secs > 0.0 { a.ok as f64 / secs } else { 0.0 };
    println!(
        "ok={} fail={} secs={:.2} msg_per_s={:.1} p50_ms={:.1} p99_ms={:.1}",
        a.ok,
        a.fail,
        secs,
        rate,
        percentile(&a.lat_us, 0.50),
        percentile(&a.lat_us, 0.99)
    );
    for e in &a.errors {
        eprintln!("error: {e}");
    }
    if a.fail > a.errors.len() && !a.errors.is_empty() {
        eprintln!("({} failed messages in all)", a.fail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Opts {
        Opts {
            addr: "127.0.0.1:1".into(),
            login: "alice@example.com".into(),
            password: "s3cret".into(),
            from: "alice@example.com".into(),
            to: "rcpt@example.net".into(),
            conns: 1,
            per_conn: 1,
            total: 1,
            size: 2000,
            tls: TlsMode::StartTls,
            server_name: "localhost".into(),
            helo: "h".into(),
            timeout: Duration::from_secs(1),
            max_secs: 1,
            show_errors: 1,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_796_655_131), "Mon, 07 Dec 2026 14:52:11 +0000");
    }

    #[test]
    fn message_shape() {
        let o = opts();
        for (c, i) in [(0, 0), (3, 7), (63, 9)] {
            let m = String::from_utf8(message(&o, c, i)).unwrap();
            assert!(m.len().abs_diff(o.size) <= 8, "{} octets", m.len());
            assert!(m.ends_with("\r\n.\r\n"));
            let (head, body) = m.split_once("\r\n\r\n").unwrap();
            for h in ["From: ", "To: ", "Subject: ", "Date: ", "Message-ID: <", "MIME-Version: 1.0", "Content-Type: "] {
                assert!(head.contains(h), "no {h}");
            }
            for l in body.trim_end_matches("\r\n.\r\n").split("\r\n") {
                assert!(l.len() <= 78 && !l.starts_with('.') && !l.contains('\n'), "{l:?}");
            }
        }
    }

    #[test]
    fn claims_add_up() {
        let left = AtomicUsize::new(25);
        let got: Vec<usize> = std::iter::from_fn(|| Some(claim(&left, 10)).filter(|&n| n > 0)).collect();
        assert_eq!(got, [10, 10, 5]);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
