//! The stand-in upstream smarthost (tests/support/upstream.py, on aiosmtpd):
//! like SES or SendGrid it requires STARTTLS and AUTH, and it stores every
//! message it accepts byte for byte, with its envelope.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use super::*;

/// The upstream's account, as configured in `[relays.up]`.
pub const UP_USER: &str = "relay-user@example.net";
/// Reaches the server only through `${MF_TEST_UPSTREAM_PW}` in its config.
pub const UP_PASSWORD: &str = "Up-s3cret-9f27c1";
pub const UP_PASSWORD_VAR: &str = "MF_TEST_UPSTREAM_PW";

/// The server inherits the test process's environment; set the upstream
/// password there once, before any server starts.
pub fn export_upstream_password() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(UP_PASSWORD_VAR, UP_PASSWORD));
}

// ---------------------------------------------------------------------------
// The stand-in upstream.

/// `tests/support/upstream.py`, running. Killed when dropped.
pub struct Upstream {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The CA certificate that signed the upstream's certificate.
    pub ca: PathBuf,
}

/// One message the upstream accepted.
pub struct Stored {
    pub eml: Vec<u8>,
    pub meta: serde_json::Value,
}

impl Upstream {
    pub fn start() -> Upstream {
        Self::start_with(&[])
    }

    pub fn start_implicit_tls() -> Upstream {
        Self::start_with(&["--implicit-tls"])
    }

    pub fn start_with(extra: &[&str]) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<std::ffi::OsString> =
            vec!["--out".into(), dir.path().join("out").into(), "--certdir".into(), dir.path().join("cert").into()];
        args.extend(extra.iter().map(Into::into));
        let (child, ca, port) = spawn_upstream(&args, &dir.path().join("upstream.log"));
        Upstream { child, dir, port, ca }
    }

    /// Messages stored so far, in the order received.
    pub fn messages(&self) -> Vec<Stored> {
        let out = self.dir.path().join("out");
        let mut n = 1;
        let mut stored = Vec::new();
        while let Ok(eml) = std::fs::read(out.join(format!("{n}.eml"))) {
            let meta = std::fs::read(out.join(format!("{n}.json"))).unwrap();
            stored.push(Stored { eml, meta: serde_json::from_slice(&meta).unwrap() });
            n += 1;
        }
        let files = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        assert_eq!(files, 2 * stored.len(), "stray files in the upstream's folder {}", out.display());
        stored
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("upstream.log")).unwrap_or_default()
    }

    /// `[relays.up]` pointing here, with `extra` lines added to the table.
    pub fn relay(&self, tls: &str, extra: &str) -> String {
        format!(
            "\n[relays.up]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\nuser = \"{UP_USER}\"\n\
             password = \"${{{UP_PASSWORD_VAR}}}\"\ntimeout_secs = 20\n{extra}\n",
            self.port
        )
    }

    /// The usual relay: STARTTLS, verified against the upstream's CA.
    pub fn verified_relay(&self) -> String {
        self.relay("starttls", &format!("ca_file = {:?}\n", self.ca.to_str().unwrap()))
    }
}

/// Starts tests/support/upstream.py (with the test account) and `args`,
/// its log going to `log`; returns the process, the CA certificate it
/// trusts its certificate by, and its port, once it listens.
pub fn spawn_upstream(args: &[std::ffi::OsString], log: &Path) -> (Child, PathBuf, u16) {
    require_program("python3", &["-c", "import aiosmtpd"], "python3 with aiosmtpd is needed: pip install aiosmtpd");
    require_program("openssl", &["version"], "the openssl CLI is needed to make the upstream's certificate");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/upstream.py");
    let log_file = std::fs::File::create(log).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--user", UP_USER, "--password", UP_PASSWORD])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("cannot start python3 tests/support/upstream.py");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut ca = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(p) = line.strip_prefix("CA ") {
                    ca = Some(PathBuf::from(p));
                } else if let Some(p) = line.strip_prefix("PORT ") {
                    break p.trim().parse::<u16>().unwrap();
                }
            }
            Err(_) => {
                let exited = child.try_wait().unwrap();
                if exited.is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    panic!("upstream.py did not start ({exited:?}):\n{log}");
                }
            }
        }
    };
    (child, ca.expect("upstream.py printed no CA line"), port)
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One transaction with a raw MAIL command (for parameters) and a raw CRLF
/// message, dot-stuffed here; returns the reply to the final dot.
pub fn transaction(c: &mut Client, mail: &str, rcpts: &[&str], message: &[u8]) -> Resp {
    c.expect(mail, 250);
    for r in rcpts {
        c.expect(&format!("RCPT TO:<{r}>"), 250);
    }
    c.expect("DATA", 354);
    assert!(message.ends_with(b"\r\n"), "test messages end with CRLF");
    let mut stuffed = Vec::with_capacity(message.len() + 1024);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    stuffed.extend_from_slice(b".\r\n");
    c.send_raw(&stuffed);
    c.read()
}

/// Header fields (each with its folded continuation lines and CRLF) and the
/// rest of the message from the blank line on.
pub fn split_header(message: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < message.len() && !message[pos..].starts_with(b"\r\n") {
        let end = message[pos..].windows(2).position(|w| w == b"\r\n").map(|i| pos + i + 2).unwrap_or(message.len());
        match fields.last_mut() {
            Some(last) if message[pos] == b' ' || message[pos] == b'\t' => last.1 = end,
            _ => fields.push((pos, end)),
        }
        pos = end;
    }
    (fields.iter().map(|&(s, e)| &message[s..e]).collect(), &message[pos..])
}

pub fn field_name(field: &[u8]) -> String {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
    String::from_utf8_lossy(&field[..colon]).to_ascii_lowercase()
}

/// A client on `submission`, after STARTTLS and AUTH as alice.
pub fn submitter(server: &Server) -> Client {
    let mut c = Client::connect(server.addr("submission")).greeting();
    c.expect("EHLO client.example", 250);
    c.starttls();
    c.expect("EHLO client.example", 250);
    let r = c.auth_plain("alice@example.com", "wonderland");
    assert_eq!(r.code, 235, "AUTH: {r}");
    c
}

pub fn send(c: &mut Client, from: &str, rcpts: &[&str], message: &[u8]) -> Resp {
    transaction(c, &format!("MAIL FROM:<{from}>"), rcpts, message)
}

/// Checks what mailferry added to `original` on the way to the upstream and
/// returns the upstream's copy without it: a `Received:` field on top, and
/// `Message-ID:`/`Date:` at the end of the header when the original had none.
pub fn strip_added(upstream: &[u8], original: &[u8]) -> Vec<u8> {
    let (orig_fields, _) = split_header(original);
    let (mut fields, rest) = split_header(upstream);
    assert!(!fields.is_empty(), "upstream copy has no header:\n{}", String::from_utf8_lossy(upstream));
    let received = fields.remove(0);
    assert_eq!(
        field_name(received),
        "received",
        "first field is not mailferry's Received: {}",
        String::from_utf8_lossy(received)
    );
    let received = String::from_utf8_lossy(received).split_whitespace().collect::<Vec<_>>().join(" ");
    // UTF8SMTPSA when the transaction used SMTPUTF8 (RFC 6531 section 3.7.3).
    assert!(
        received.contains("by mx.test.example (mailferry) with ESMTPSA")
            || received.contains("by mx.test.example (mailferry) with UTF8SMTPSA"),
        "{received}"
    );
    for name in ["message-id", "date"] {
        if orig_fields.iter().any(|f| field_name(f) == name) {
            continue;
        }
        let at: Vec<usize> = fields.iter().enumerate().filter(|(_, f)| field_name(f) == name).map(|(i, _)| i).collect();
        assert_eq!(at.len(), 1, "expected one added {name} field: {}", String::from_utf8_lossy(upstream));
        assert!(at[0] >= orig_fields.len(), "added {name} is not at the end of the header");
        let field = String::from_utf8_lossy(fields.remove(at[0])).into_owned();
        if name == "message-id" {
            assert!(field.trim_end().ends_with("@mx.test.example>"), "{field}");
        }
    }
    let mut out: Vec<u8> = fields.concat();
    out.extend_from_slice(rest);
    out
}

/// `assert_eq!` for large byte strings: reports the first difference.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    let show = |b: &[u8]| {
        let from = at.saturating_sub(80);
        format!("{:?}", String::from_utf8_lossy(&b[from..(at + 80).min(b.len())]))
    };
    panic!(
        "{what}: differs at octet {at} (got {} octets, want {})\n got: …{}\nwant: …{}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}
