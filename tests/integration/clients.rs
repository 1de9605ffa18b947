//! Real SMTP clients (swaks, curl, Python's smtplib) against the real server
//! with the default setup, which delivers to the outbox relay. Each test
//! checks the delivered file: the envelope lines, the Received: field, the
//! client's header fields and body, byte for byte where the test wrote them.
//!
//! The clients are required, not optional: a missing one fails the test
//! (.ci/run installs them).

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

const TIMEOUT: Duration = Duration::from_secs(60);

fn start() -> Server {
    Server::start(Setup { users: users_with_all_schemes(), ..Default::default() })
}

fn port(server: &Server, listener: &str) -> u16 {
    server.addr(listener).port()
}

fn transcript(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_success(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", transcript(out));
}

// ---------------------------------------------------------------------------
// The delivered file.

/// Header fields (with their folding and CRLF) and the body after the blank line.
fn split_header(message: &str) -> (Vec<&str>, &str) {
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < message.len() && !message[pos..].starts_with("\r\n") {
        let end = message[pos..].find("\r\n").map(|i| pos + i + 2).unwrap_or(message.len());
        match fields.last_mut() {
            Some(last) if message[pos..].starts_with([' ', '\t']) => last.1 = end,
            _ => fields.push((pos, end)),
        }
        pos = end;
    }
    let body = message.get(pos + 2..).unwrap_or("");
    (fields.iter().map(|&(s, e)| &message[s..e]).collect(), body)
}

fn name_of(field: &str) -> String {
    field.split(':').next().unwrap_or("").to_ascii_lowercase()
}

/// A field's value, unfolded and with whitespace runs reduced to one space.
fn value_of(field: &str) -> String {
    field.split_once(':').map(|(_, v)| v).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The one message in the outbox, checked for what mailferry puts around
/// every message; returns the message as the client sent it plus
/// Received:, and Message-ID:/Date: when the client sent none.
struct Delivered {
    /// Header fields after Received:, as delivered.
    fields: Vec<String>,
    body: String,
}

impl Delivered {
    fn values(&self, name: &str) -> Vec<String> {
        self.fields.iter().filter(|f| name_of(f) == name.to_ascii_lowercase()).map(|f| value_of(f)).collect()
    }

    fn value(&self, name: &str) -> String {
        let v = self.values(name);
        assert_eq!(v.len(), 1, "expected one {name} field: {:?}", self.fields);
        v[0].clone()
    }
}

fn delivered(server: &Server, from: &str, rcpts: &[&str], helo: &str, proto: &str) -> Delivered {
    let outbox = server.outbox();
    assert_eq!(outbox.len(), 1, "expected one message in the outbox\n{}", server.log_text());
    let file = &outbox[0];
    assert!(!file.replace("\r\n", "").contains(['\r', '\n']), "bare CR or LF in the delivered file:\n{file:?}");
    let mut envelope = format!("Return-Path: <{from}>\r\n");
    for r in rcpts {
        envelope.push_str(&format!("X-Original-To: {r}\r\n"));
    }
    let message =
        file.strip_prefix(&envelope).unwrap_or_else(|| panic!("outbox file does not start with {envelope:?}:\n{file}"));
    let (fields, body) = split_header(message);
    assert!(!fields.is_empty(), "no header:\n{file}");
    assert_eq!(name_of(fields[0]), "received", "Received: should be the first field:\n{file}");
    let received = value_of(fields[0]);
    let want = format!("from {helo} ([127.0.0.1]) by mx.test.example (mailferry) with {proto} id ");
    assert!(received.starts_with(&want), "Received: {received:?} should start with {want:?}");
    let d = Delivered { fields: fields[1..].iter().map(|f| f.to_string()).collect(), body: body.to_string() };
    // Exactly one of each: added when missing, never duplicated.
    assert!(d.value("Message-ID").starts_with('<'), "{:?}", d.fields);
    assert!(!d.value("Date").is_empty());
    d
}

// ---------------------------------------------------------------------------
// swaks

fn swaks(args: &[&str]) -> Output {
    require_program("swaks", &["--version"], "swaks is needed for this test: apt-get install swaks");
    run_bounded(Command::new("swaks").args(["--timeout", "30"]).args(args), TIMEOUT)
}

const SWAKS_BODY: &str = "first line\n.leading dot\n\nlast line";

/// The body swaks sends: LF turned into CRLF, the line ended, and then an
/// empty line, as swaks writes "\r\n.\r\n" after its template's final line
/// break (checked against a raw socket: "last line\r\n\r\n.\r\n").
fn swaks_body_sent() -> String {
    format!("{}\r\n\r\n", SWAKS_BODY.replace('\n', "\r\n"))
}

fn check_swaks_message(d: &Delivered, from: &str, subject: &str) {
    assert_eq!(d.value("From"), from);
    assert_eq!(d.value("To"), "bob@example.org");
    assert_eq!(d.value("Subject"), subject);
    assert!(d.value("X-Mailer").starts_with("swaks"), "{:?}", d.fields);
    assert_eq!(d.body, swaks_body_sent(), "body changed on the way");
}

#[test]
fn swaks_to_the_trusted_local_listener_without_auth() {
    let server = start();
    let server_arg = format!("127.0.0.1:{}", port(&server, "local"));
    let out = swaks(&[
        "--server",
        &server_arg,
        "--ehlo",
        "swaks.client.example",
        "--from",
        "cron@example.com",
        "--to",
        "bob@example.org",
        "--header",
        "Subject: from cron",
        "--body",
        SWAKS_BODY,
    ]);
    assert_success(&out, "swaks");
    let d = delivered(&server, "cron@example.com", &["bob@example.org"], "swaks.client.example", "ESMTP");
    check_swaks_message(&d, "cron@example.com", "from cron");
}

fn swaks_submission(user: &str, password: &str, mechanism: &str, implicit: bool) -> (Server, Output) {
    let server = start();
    let (listener, tls) = if implicit { ("submissions", "--tlsc") } else { ("submission", "--tls") };
    let server_arg = format!("127.0.0.1:{}", port(&server, listener));
    let subject = format!("swaks {mechanism} {tls}");
    let out = swaks(&[
        "--server",
        &server_arg,
        tls,
        "--ehlo",
        "swaks.client.example",
        "--auth",
        mechanism,
        "--auth-user",
        user,
        "--auth-password",
        password,
        "--from",
        user,
        "--to",
        "bob@example.org",
        "--header",
        &format!("Subject: {subject}"),
        "--body",
        SWAKS_BODY,
    ]);
    (server, out)
}

#[test]
fn swaks_starttls_auth_plain() {
    let (server, out) = swaks_submission("sha512@example.com", "Hello world!", "PLAIN", false);
    assert_success(&out, "swaks");
    let d = delivered(&server, "sha512@example.com", &["bob@example.org"], "swaks.client.example", "ESMTPSA");
    check_swaks_message(&d, "sha512@example.com", "swaks PLAIN --tls");
}

#[test]
fn swaks_starttls_auth_login() {
    let (server, out) = swaks_submission("sha256@example.com", "Hello world!", "LOGIN", false);
    assert_success(&out, "swaks");
    let d = delivered(&server, "sha256@example.com", &["bob@example.org"], "swaks.client.example", "ESMTPSA");
    check_swaks_message(&d, "sha256@example.com", "swaks LOGIN --tls");
}

#[test]
fn swaks_implicit_tls_on_submissions() {
    let (server, out) = swaks_submission("plain@example.com", "clear text", "PLAIN", true);
    assert_success(&out, "swaks");
    let d = delivered(&server, "plain@example.com", &["bob@example.org"], "swaks.client.example", "ESMTPSA");
    check_swaks_message(&d, "plain@example.com", "swaks PLAIN --tlsc");
}

#[test]
fn swaks_with_a_wrong_password_delivers_nothing() {
    let (server, out) = swaks_submission("alice@example.com", "not wonderland", "LOGIN", false);
    assert!(!out.status.success(), "swaks should fail: {}", transcript(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("<~* 535 5.7.8"), "expected a 535 in the transcript: {}", transcript(&out));
    assert!(server.outbox().is_empty());
}

// ---------------------------------------------------------------------------
// curl

/// Written with CRLF, as curl uploads the file unchanged (apart from
/// dot-stuffing). No Message-ID or Date: mailferry adds them.
const CURL_MESSAGE: &str = "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\n\
Subject: curl upload\r\nX-Folded: first part\r\n\tsecond part\r\n\r\n\
curl body\r\n.leading dot\r\n..two dots\r\n\r\nend\r\n";

fn curl(url: &str, user: &str) -> (tempfile::TempDir, Output) {
    require_program("curl", &["--version"], "curl is needed for this test: apt-get install curl");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("msg.eml");
    std::fs::write(&file, CURL_MESSAGE).unwrap();
    let out = run_bounded(
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "30", "--ssl-reqd", "--insecure", url, "--user", user])
            .args(["--mail-from", "alice@example.com", "--mail-rcpt", "bob@example.org", "--upload-file"])
            .arg(&file),
        TIMEOUT,
    );
    (dir, out)
}

/// curl's upload arrives exactly as written, between Received: and the
/// Message-ID:/Date: fields mailferry appends to the header.
fn check_curl_message(server: &Server) {
    let d = delivered(server, "alice@example.com", &["bob@example.org"], "curl.client.example", "ESMTPSA");
    let (sent_fields, sent_body) = split_header(CURL_MESSAGE);
    let n = sent_fields.len();
    assert_eq!(d.fields[..n].to_vec(), sent_fields, "the client's header fields changed");
    assert_eq!(
        d.fields[n..].iter().map(|f| name_of(f)).collect::<Vec<_>>(),
        ["message-id", "date"],
        "added at the end of the header"
    );
    assert!(d.value("Message-ID").ends_with("@mx.test.example>"), "{:?}", d.fields);
    assert_eq!(d.body, sent_body, "body changed on the way");
}

#[test]
fn curl_implicit_tls_on_submissions() {
    let server = start();
    let url = format!("smtps://127.0.0.1:{}/curl.client.example", port(&server, "submissions"));
    let (_dir, out) = curl(&url, "alice@example.com:wonderland");
    assert_success(&out, "curl");
    check_curl_message(&server);
}

#[test]
fn curl_starttls_on_submission() {
    let server = start();
    let url = format!("smtp://127.0.0.1:{}/curl.client.example", port(&server, "submission"));
    let (_dir, out) = curl(&url, "alice@example.com:wonderland");
    assert_success(&out, "curl");
    check_curl_message(&server);
}

#[test]
fn curl_with_a_wrong_password_delivers_nothing() {
    let server = start();
    let url = format!("smtp://127.0.0.1:{}/curl.client.example", port(&server, "submission"));
    let (_dir, out) = curl(&url, "alice@example.com:wrong");
    // 67: "The user name, password, or similar was not accepted".
    assert_eq!(out.status.code(), Some(67), "{}", transcript(&out));
    assert!(server.outbox().is_empty());
}

// ---------------------------------------------------------------------------
// Python smtplib

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
from email.message import EmailMessage

mode, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # mailferry's self-signed certificate

msg = EmailMessage()
msg["From"] = user
msg["To"] = "bob@example.org"
msg["Subject"] = "smtplib " + mode
msg.set_content("Grüße from smtplib\n.leading dot\nlast line\n")

host = "smtplib.client.example"
if mode == "ssl":
    s = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname=host, context=ctx, timeout=30)
else:
    s = smtplib.SMTP("127.0.0.1", port, local_hostname=host, timeout=30)
    s.starttls(context=ctx)
try:
    s.login(user, password)
except smtplib.SMTPAuthenticationError as e:
    print("AUTHERR", e.smtp_code, e.smtp_error.decode())
    s.quit()
    sys.exit(0)
refused = s.send_message(msg)
print("SENT", refused)
s.quit()
"#;

fn smtplib(mode: &str, port: u16, user: &str, password: &str) -> String {
    require_program("python3", &["-c", "import smtplib, ssl"], "python3 is needed for this test");
    let out =
        run_bounded(Command::new("python3").args(["-c", SMTPLIB, mode, &port.to_string(), user, password]), TIMEOUT);
    assert_success(&out, "python3 smtplib");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn check_smtplib_message(server: &Server, user: &str, mode: &str) {
    let d = delivered(server, user, &["bob@example.org"], "smtplib.client.example", "ESMTPSA");
    assert_eq!(d.value("From"), user);
    assert_eq!(d.value("To"), "bob@example.org");
    assert_eq!(d.value("Subject"), format!("smtplib {mode}"));
    assert_eq!(d.value("Content-Transfer-Encoding"), "8bit");
    assert_eq!(d.body, "Grüße from smtplib\r\n.leading dot\r\nlast line\r\n", "body changed on the way");
}

#[test]
fn python_smtplib_starttls_login_send_message() {
    let server = start();
    let said = smtplib("starttls", port(&server, "submission"), "alice@example.com", "wonderland");
    assert_eq!(said, "SENT {}");
    check_smtplib_message(&server, "alice@example.com", "starttls");
}

#[test]
fn python_smtplib_ssl_on_submissions() {
    let server = start();
    let said = smtplib("ssl", port(&server, "submissions"), "sha512@example.com", "Hello world!");
    assert_eq!(said, "SENT {}");
    check_smtplib_message(&server, "sha512@example.com", "ssl");
}

#[test]
fn python_smtplib_wrong_password_raises_535() {
    let server = start();
    let said = smtplib("starttls", port(&server, "submission"), "alice@example.com", "Wonderland");
    assert!(said.starts_with("AUTHERR 535 "), "{said}");
    assert!(server.outbox().is_empty());
    server.wait_log(&["authentication failed", "alice@example.com"]);
}
