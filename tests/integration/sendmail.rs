//! `mailferry sendmail` as cron, PHP and scripts run it: the real binary,
//! invoked as `mailferry sendmail` and through a `sendmail` symlink, with
//! the message on standard input, submitting to a real server started on
//! the same configuration file. What arrives is read back from the outbox;
//! what fails is judged by the exit status (sysexits) and the one line on
//! standard error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

// ---------------------------------------------------------------------------
// Helpers.

/// A port free a moment ago. The server binds it right away; a clash with
/// another test is retried by [`start`].
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port where connections are refused: bound, never listening, so no one
/// else takes it while the returned socket lives.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// The listeners sendmail may use, on fixed ports (it reads the same file
/// as the server, so port 0 would not do): `local` trusts loopback, `open`
/// trusts no one, `submission` wants STARTTLS and AUTH.
fn listeners() -> String {
    format!(
        r#"
[[listeners]]
name = "local"
address = "127.0.0.1:{}"
tls = "none"
trusted_networks = ["127.0.0.0/8"]

[[listeners]]
name = "open"
address = "127.0.0.1:{}"
tls = "none"
require_auth = false

[[listeners]]
name = "submission"
address = "127.0.0.1:{}"
tls = "starttls"
require_auth = true
"#,
        free_port(),
        free_port(),
        free_port()
    )
}

fn start(setup: impl Fn() -> Setup) -> Server {
    let mut last = String::new();
    for _ in 0..5 {
        match Server::try_start(Setup { listeners: listeners(), ..setup() }) {
            Ok(s) => return s,
            Err(logs) if logs.contains("in use") => last = logs,
            Err(logs) => panic!("server did not start:\n{logs}"),
        }
    }
    panic!("no free ports after 5 tries:\n{last}");
}

fn config(s: &Server) -> PathBuf {
    s.path("mailferry.toml")
}

/// Runs `program` (the binary, then with `sendmail` as its first argument,
/// or a symlink) with `input` on standard input.
fn run(program: &Path, config: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(program);
    if program == Path::new(BIN) {
        cmd.arg("sendmail");
    }
    cmd.args(args)
        .env("MAILFERRY_CONFIG", config)
        .env_remove("NAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // The command may stop reading early (a lone "."), or fail before
    // reading: a broken pipe here is its business.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program:?} {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn sendmail(config: &Path, args: &[&str], input: &str) -> Output {
    run(Path::new(BIN), config, args, input.as_bytes())
}

/// A `sendmail` symlink to the binary, as installed in /usr/sbin.
fn symlink(dir: &Path) -> PathBuf {
    let link = dir.join("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    link
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "exit status; stderr:\n{}", stderr(out));
}

fn login() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One delivered message: its envelope (from the outbox's fields) and text.
struct Delivered {
    return_path: String,
    rcpts: Vec<String>,
    message: String,
}

impl Delivered {
    fn header(&self, name: &str) -> Vec<String> {
        let head = &self.message[..self.message.find("\r\n\r\n").expect("no blank line after the header")];
        unfold(head)
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    fn one(&self, name: &str) -> String {
        let v = self.header(name);
        assert_eq!(v.len(), 1, "{name}: {v:?} in\n{}", self.message);
        v[0].clone()
    }

    fn body(&self) -> &str {
        &self.message[self.message.find("\r\n\r\n").unwrap() + 4..]
    }
}

/// The only message in the outbox.
fn delivered(s: &Server) -> Delivered {
    let mut all = s.outbox();
    assert_eq!(all.len(), 1, "expected one message in the outbox:\n{all:#?}");
    let text = all.remove(0);
    let mut return_path = String::new();
    let mut rcpts = Vec::new();
    let mut rest = text.as_str();
    loop {
        if let Some(r) = rest.strip_prefix("Return-Path: <") {
            let end = r.find(">\r\n").unwrap();
            return_path = r[..end].to_string();
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("X-Original-To: ") {
            let end = r.find("\r\n").unwrap();
            rcpts.push(r[..end].to_string());
            rest = &r[end + 2..];
        } else {
            break;
        }
    }
    let message = rest.to_string();
    // SMTP's line ending and nothing else.
    let bytes = message.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at octet {i}:\n{message}");
        }
        if b == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at octet {i}:\n{message}");
        }
    }
    assert!(message.starts_with("Received: "), "the server's Received: comes first:\n{message}");
    Delivered { return_path, rcpts, message }
}

fn assert_nothing_delivered(s: &Server) {
    assert!(s.outbox().is_empty(), "nothing should have been delivered");
}

// ---------------------------------------------------------------------------
// Delivery.

/// Debian's cron runs `sendmail -FCronDaemon -i -B8BITMIME -oem <MAILTO>`
/// with LF line endings, through /usr/sbin/sendmail; MAILTO is usually a
/// bare login name.
#[test]
fn cron_invocation_through_a_sendmail_symlink() {
    let s = start(Setup::default);
    let bin = tempfile::tempdir().unwrap();
    let input = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> /usr/local/bin/backup\n\
                 MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\
                 X-Cron-Env: <SHELL=/bin/sh>\n\nbackup done: 3 files\n.\nthe line above is a lone dot, kept with -i\n\
                 .leading dot\nünïcode\n";
    let out =
        run(&symlink(bin.path()), &config(&s), &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], input.as_bytes());
    assert_exit(&out, 0);
    assert!(out.stderr.is_empty(), "nothing on stderr when all is well: {}", stderr(&out));
    let d = delivered(&s);
    // Bare names get server.hostname (sendmail.domain's default), in the
    // envelope and in the header.
    assert_eq!(d.return_path, format!("{}@mx.test.example", login()));
    assert_eq!(d.rcpts, vec!["root@mx.test.example"]);
    assert_eq!(d.one("From"), "\"Cron Daemon\" <root@mx.test.example>");
    assert_eq!(d.one("To"), "<root@mx.test.example>");
    assert_eq!(d.one("Subject"), "Cron <root@host> /usr/local/bin/backup");
    assert_eq!(d.one("Content-Transfer-Encoding"), "8bit");
    // Date and Message-ID come from the server, once.
    assert!(d.one("Message-ID").ends_with("@mx.test.example>"));
    assert_eq!(d.header("Date").len(), 1);
    assert_eq!(
        d.body(),
        "backup done: 3 files\r\n.\r\nthe line above is a lone dot, kept with -i\r\n.leading dot\r\nünïcode\r\n"
    );
}

/// cronie runs `sendmail -FCronDaemon -i -odi -oem -oi -t -f root`.
#[test]
fn cronie_invocation_with_t_and_f() {
    let s = start(Setup::default);
    let out = sendmail(
        &config(&s),
        &["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"],
        "To: admin@example.org\nSubject: Cron <root@host> true\n\nok\n",
    );
    assert_exit(&out, 0);
    let d = delivered(&s);
    assert_eq!(d.return_path, "root@mx.test.example");
    assert_eq!(d.rcpts, vec!["admin@example.org"]);
    // No From: in the message: one is made of -f and -F.
    assert_eq!(d.one("From"), "\"CronDaemon\" <root@mx.test.example>");
    assert_eq!(d.body(), "ok\r\n");
}

/// PHP's `sendmail_path = "sendmail -t -i"`: recipients from To:, Cc: and
/// Bcc:, the Bcc: field gone from what is delivered, the rest unchanged.
#[test]
fn t_takes_to_cc_and_bcc_and_removes_bcc() {
    let s = start(Setup::default);
    let input = "From: Shop <shop@example.com>\nTo: Ann <ann@example.org>\nCc: \"Bo, B.\" <bo@example.net>,\n \
                 cy@example.net\nBcc: audit@example.com\nSubject: Your order\nMessage-ID: <order-1@example.com>\n\
                 Date: Mon, 2 Jun 2025 10:00:00 +0000\n\nThank you.\n";
    let out = sendmail(&config(&s), &["-t", "-i"], input);
    assert_exit(&out, 0);
    let d = delivered(&s);
    assert_eq!(d.rcpts, vec!["ann@example.org", "bo@example.net", "cy@example.net", "audit@example.com"]);
    assert!(!d.message.to_ascii_lowercase().contains("bcc") && !d.message.contains("audit@"), "{}", d.message);
    // Everything else as written, in CRLF, after the server's Received:.
    let after_received = &d.message[d.message.find("\r\nFrom: ").unwrap() + 2..];
    assert_eq!(
        after_received,
        "From: Shop <shop@example.com>\r\nTo: Ann <ann@example.org>\r\nCc: \"Bo, B.\" <bo@example.net>,\r\n \
         cy@example.net\r\nSubject: Your order\r\nMessage-ID: <order-1@example.com>\r\n\
         Date: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nThank you.\r\n"
    );
}

/// Postfix's reading of `-t`: recipients named as arguments are added.
#[test]
fn t_adds_argument_recipients_to_the_header_ones() {
    let s = start(Setup::default);
    let out = sendmail(&config(&s), &["-t", "extra@example.net", "ann@example.org"], "To: ann@example.org\n\nhi\n");
    assert_exit(&out, 0);
    // Each once, arguments first.
    assert_eq!(delivered(&s).rcpts, vec!["extra@example.net", "ann@example.org"]);
}

#[test]
fn f_sets_the_envelope_sender_and_the_added_from() {
    let s = start(Setup::default);
    let out = sendmail(
        &config(&s),
        &["-f", "bounces@example.com", "-F", "Jane Doe", "you@example.org"],
        "Subject: no From here\n\nbody\n",
    );
    assert_exit(&out, 0);
    let d = delivered(&s);
    assert_eq!(d.return_path, "bounces@example.com");
    assert_eq!(d.one("From"), "\"Jane Doe\" <bounces@example.com>");
    // Attached form and the null sender.
    let s = start(Setup::default);
    let out = sendmail(&config(&s), &["-f<>", "you@example.org"], "From: app@example.com\n\nbounce\n");
    assert_exit(&out, 0);
    let d = delivered(&s);
    assert_eq!(d.return_path, "");
    assert_eq!(d.one("From"), "app@example.com");
}

#[test]
fn line_endings_become_crlf_and_the_body_is_kept() {
    let s = start(Setup::default);
    let out = run(
        Path::new(BIN),
        &config(&s),
        &["you@example.org"],
        b"Subject: endings\n\nlf\ncrlf\r\nprogress 10%\rprogress 100%\nno final newline",
    );
    assert_exit(&out, 0);
    assert_eq!(delivered(&s).body(), "lf\r\ncrlf\r\nprogress 10%\r\nprogress 100%\r\nno final newline\r\n");
}

/// Without -i a line holding a single "." ends the message; with -i it is
/// text, sent dot-stuffed and delivered as written.
#[test]
fn a_lone_dot_ends_the_message_unless_i() {
    let input = "Subject: dots\n\nbefore\n.\nafter\n";
    let s = start(Setup::default);
    assert_exit(&sendmail(&config(&s), &["you@example.org"], input), 0);
    assert_eq!(delivered(&s).body(), "before\r\n");
    let s = start(Setup::default);
    assert_exit(&sendmail(&config(&s), &["-oi", "you@example.org"], input), 0);
    assert_eq!(delivered(&s).body(), "before\r\n.\r\nafter\r\n");
}

/// A line longer than the server takes (limits.text_line) in a plain text
/// message is not refused: the body is re-encoded as quoted-printable,
/// which keeps it intact.
#[test]
fn a_long_line_in_plain_text_is_reencoded() {
    let s = start(Setup::default);
    let long = "0123456789".repeat(300);
    let out = sendmail(&config(&s), &["you@example.org"], &format!("Subject: long\n\nshort\n{long}\n"));
    assert_exit(&out, 0);
    let d = delivered(&s);
    assert_eq!(d.one("Content-Transfer-Encoding"), "quoted-printable");
    assert!(d.message.split("\r\n").all(|l| l.len() <= 998));
    let decoded = d.body().replace("=\r\n", "");
    assert_eq!(decoded, format!("short\r\n{long}\r\n"));
}

/// A listener that wants STARTTLS and AUTH: the server's self-signed
/// certificate is verified against the file `serve` made, and the login
/// comes from sendmail.user and sendmail.password_file.
#[test]
fn starttls_and_auth_with_the_servers_own_certificate() {
    let s = start(|| Setup {
        users: users_with_all_schemes(),
        extra: "[sendmail]\nlistener = \"submission\"\nuser = \"alice@example.com\"\npassword_file = \"sendmail.pw\"\n"
            .into(),
        ..Default::default()
    });
    std::fs::write(s.path("sendmail.pw"), "wonderland\n").unwrap();
    let out = sendmail(&config(&s), &["-t"], "From: alice@example.com\nTo: bob@example.org\n\nover TLS\n");
    assert_exit(&out, 0);
    let d = delivered(&s);
    assert!(unfold(&d.one("Received")).contains("with ESMTPSA"), "TLS and AUTH were used: {}", d.one("Received"));
    assert_eq!(d.body(), "over TLS\r\n");
    // A wrong password is a refusal, not a retry.
    std::fs::write(s.path("sendmail.pw"), "not-it\n").unwrap();
    let out = sendmail(&config(&s), &["bob@example.org"], "x\n");
    assert_exit(&out, 69);
    assert!(stderr(&out).contains("refused the login of sendmail.user \"alice@example.com\": 535"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------
// Failures and their exit status.

/// Nothing listening: 75, so the caller tries again later.
#[test]
fn server_down_is_a_temporary_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, port) = closed_port();
    let file = dir.path().join("mailferry.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nhostname = \"mx.test.example\"\n[[listeners]]\nname = \"local\"\naddress = \"127.0.0.1:{port}\"\ntrusted_networks = [\"127.0.0.0/8\"]\n"
        ),
    )
    .unwrap();
    let out = run(&symlink(dir.path()), &file, &["-t"], b"To: a@example.org\n\nx\n");
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!("sendmail: cannot connect to the mail server at 127.0.0.1:{port} (listener local):")),
        "{err}"
    );
    assert!(err.contains("is `mailferry serve` running?"), "{err}");
}

/// smtp-forward in sync mode answers 451 when its upstream is down: 75.
#[test]
fn upstream_down_in_sync_mode_is_a_temporary_failure() {
    let (_held, port) = closed_port();
    let s = start(|| Setup {
        plugins: Some(DEFAULT_PLUGINS.replace("relay = \"outbox\"", "mode = \"sync\"\nrelay = \"up\"")),
        extra: format!("[relays.up]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 5\n"),
        ..Default::default()
    });
    let out = sendmail(&config(&s), &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], "Subject: x\n\ny\n");
    assert_exit(&out, 75);
    let err = stderr(&out);
    assert!(err.starts_with("mailferry sendmail: the server refused the message: 451 4.4.1"), "{err}");
    assert_nothing_delivered(&s);
}

/// The `open` listener relays for no one: its 554 at RCPT is a refusal.
#[test]
fn a_refused_recipient_is_permanent_and_nothing_is_sent() {
    let s = start(|| Setup { extra: "[sendmail]\nlistener = \"open\"\n".into(), ..Default::default() });
    let out = sendmail(&config(&s), &["a@example.org"], "x\n");
    assert_exit(&out, 69);
    let err = stderr(&out);
    assert!(
        err.contains("recipient <a@example.org> refused: 554 5.7.1 relay access denied")
            && err.contains("nothing was sent"),
        "{err}"
    );
    assert_nothing_delivered(&s);
}

fn scripted(config: &str) -> Setup {
    Setup {
        plugins: Some(format!(
            "\n[[plugins]]\nname = \"scripted\"\npath = \"{}\"\n[plugins.config]\n{config}\n{DEFAULT_PLUGINS}",
            test_plugin("scripted").display()
        )),
        ..Default::default()
    }
}

/// All or nothing: one refused recipient stops the whole message, so a
/// retry by the caller never duplicates it for the others.
#[test]
fn one_refused_recipient_among_several_sends_nothing() {
    let s = start(|| {
        scripted(
            "rcpt = { verdict = \"deny\", code = 550, enhanced = \"5.1.1\", text = \"no such user\" }\nwhen_rcpt_contains = \"blocked\"",
        )
    });
    let out = sendmail(&config(&s), &["ok@example.org", "blocked@example.org"], "x\n");
    assert_exit(&out, 69);
    assert!(
        stderr(&out).contains("recipient <blocked@example.org> refused: 550 5.1.1 no such user"),
        "{}",
        stderr(&out)
    );
    assert_nothing_delivered(&s);
    assert_exit(&sendmail(&config(&s), &["ok@example.org"], "x\n"), 0);
    assert_eq!(delivered(&s).rcpts, vec!["ok@example.org"]);
}

/// A 5xx about the content (5.6.x) is the caller's data error; another 5xx
/// to the message a refusal; a 4xx temporary.
#[test]
fn refusals_of_the_message_by_kind() {
    for (reply, code) in [
        ("verdict = \"deny\", code = 554, enhanced = \"5.6.0\", text = \"bad content\"", 65),
        ("verdict = \"deny\", code = 550, enhanced = \"5.7.1\", text = \"not allowed\"", 69),
        ("verdict = \"deny-soft\", code = 452, enhanced = \"4.3.1\", text = \"full\"", 75),
    ] {
        let s = start(|| scripted(&format!("data = {{ {reply} }}")));
        let out = sendmail(&config(&s), &["a@example.org"], "Subject: s\n\nbody\n");
        assert_exit(&out, code);
        assert!(stderr(&out).starts_with("mailferry sendmail: the server refused the message: "), "{}", stderr(&out));
        assert_nothing_delivered(&s);
    }
}

#[test]
fn t_without_recipients_is_a_data_error() {
    let s = start(Setup::default);
    let out = sendmail(&config(&s), &["-t"], "Subject: nobody\n\nx\n");
    assert_exit(&out, 65);
    assert_eq!(stderr(&out), "mailferry sendmail: no recipients: the To:, Cc: and Bcc: fields name none\n");
    assert_nothing_delivered(&s);
}

#[test]
fn usage_errors_and_other_modes() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("absent.toml");
    let (_held, port) = closed_port();
    let file = dir.path().join("mailferry.toml");
    std::fs::write(
        &file,
        format!("[[listeners]]\naddress = \"127.0.0.1:{port}\"\ntrusted_networks = [\"127.0.0.0/8\"]\n"),
    )
    .unwrap();
    let out = sendmail(&none, &["-i"], "x\n");
    assert_exit(&out, 64);
    assert!(stderr(&out).starts_with("mailferry sendmail: no recipients: name them as arguments, or pass -t"));
    for (args, needle) in [
        (&["-bs"][..], "SMTP on standard input is not offered"),
        (&["-bp"][..], "mailferry queue list"),
        (&["-q"][..], "mailferry queue retry --all"),
        (&["-f"][..], "-f needs a value"),
        (&["-f", "a@b@c", "x@example.org"][..], "-f: "),
        (&["bad@@address"][..], "not a usable address"),
    ] {
        let out = sendmail(&file, args, "x\n");
        assert_exit(&out, 64);
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    // No configuration: refused, saying where it looked.
    let out = sendmail(&none, &["a@example.org"], "x\n");
    assert_exit(&out, 69);
    assert!(
        stderr(&out).contains(&format!("{}: cannot read the configuration file", none.display())),
        "{}",
        stderr(&out)
    );
    // Unknown options are ignored with a warning (then the missing file stops it).
    let out = sendmail(&none, &["-Zq", "a@example.org"], "x\n");
    assert!(stderr(&out).starts_with("mailferry sendmail: -Zq: unknown option, ignored\n"), "{}", stderr(&out));
    // newaliases (or -bi) has nothing to do, and says so without failing.
    let link = dir.path().join("newaliases");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let out = run(&link, &none, &[], b"");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("no aliases database"), "{}", stderr(&out));
}
