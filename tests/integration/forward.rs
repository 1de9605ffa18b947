//! smtp-forward in synchronous mode against a real upstream: the stand-in
//! smarthost in tests/support/upstream.py (aiosmtpd), which like SES or
//! SendGrid requires STARTTLS and AUTH and stores every message it accepts
//! byte for byte. Each test starts its own upstream and its own mailferry.

use std::time::{Duration, Instant};

use crate::common::upstream::*;
use crate::common::*;

// ---------------------------------------------------------------------------
// Helpers.

fn start_server(relay: String) -> Server {
    export_upstream_password();
    Server::start(Setup {
        // The default pipeline, with smtp-forward pointed at the stand-in.
        plugins: Some(DEFAULT_PLUGINS.replace("relay = \"outbox\"", "mode = \"sync\"\nrelay = \"up\"")),
        users: users_with_all_schemes(),
        extra: relay,
        ..Default::default()
    })
}

/// The one message the upstream stored, checked against what was submitted.
fn assert_relayed(up: &Upstream, original: &[u8], from: &str, rcpts: &[&str]) -> Stored {
    let mut msgs = up.messages();
    assert_eq!(msgs.len(), 1, "upstream should hold exactly one message\n{}", up.log());
    let m = msgs.remove(0);
    assert_eq!(m.meta["mail_from"], from, "{}", m.meta);
    assert_eq!(m.meta["rcpt_tos"], serde_json::json!(rcpts), "{}", m.meta);
    assert_eq!(m.meta["login"], UP_USER, "mailferry did not log in as the configured user: {}", m.meta);
    assert_eq!(m.meta["helo"], "mx.test.example", "{}", m.meta);
    let got = strip_added(&m.eml, original);
    // Named on its own because it hides behind every other comparison: the
    // DATA terminator written as "\r\n.\r\n" after a message that already
    // ends in CRLF adds an empty line to the end of every message.
    assert!(
        !(got.len() == original.len() + 2 && got.starts_with(original) && got.ends_with(b"\r\n")),
        "the message reached the upstream intact except for an extra CRLF (an empty line) appended at its end ({} octets instead of {})",
        got.len(),
        original.len()
    );
    assert_same_bytes(&got, original, "message at the upstream vs. as submitted");
    m
}

fn assert_accepted_upstream(r: &Resp, n: usize) {
    assert_eq!(r.code, 250, "{r}");
    assert!(r.text().contains(&format!("Ok: queued as {n}")), "the upstream's text should be in the reply: {r}");
}

fn assert_no_secret_in_logs(server: &Server, secret: &str) {
    assert!(!server.log_text().contains(secret), "the upstream password appears in the server log");
}

/// A port on which nothing listens (bound once, then released).
/// A port where connections are refused. The socket is bound but never
/// listens, so no other test's server can take the port meanwhile.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

const SIMPLE: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n\
Subject: simple\r\nDate: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <simple.1@client.example>\r\n\r\nhello\r\n";

// ---------------------------------------------------------------------------
// Delivery.

#[test]
fn relays_byte_for_byte_over_starttls_with_auth() {
    let up = Upstream::start();
    let server = start_server(up.verified_relay());
    let mut c = submitter(&server);
    // No Message-ID or Date (mailferry adds them); folding, tabs, trailing
    // spaces and odd spacing that a rewriting relay would normalise.
    let original: &[u8] = b"From: \"Alice Liddell\" <alice@example.com>\r\n\
To: bob@example.org,\r\n\tcarol@example.net\r\n\
Subject: a folded\r\n  subject   with  spaces \r\n\
X-Weird:no-space-after-colon\r\n\
X-Empty:\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nline one\r\n\ttabbed line   \r\n\r\n\r\n--b1--\r\n";
    let r = send(&mut c, "alice@example.com", &["bob@example.org", "carol@example.net"], original);
    assert_accepted_upstream(&r, 1);
    let m = assert_relayed(&up, original, "alice@example.com", &["bob@example.org", "carol@example.net"]);
    assert_eq!(m.meta["tls"], "starttls");
    assert_eq!(m.meta["mail_options"], serde_json::json!([]), "no parameters were given: {}", m.meta);
    assert_no_secret_in_logs(&server, UP_PASSWORD);
    c.expect("QUIT", 221);
}

#[test]
fn lines_starting_with_dots_survive_both_hops() {
    let up = Upstream::start();
    let server = start_server(up.verified_relay());
    let mut c = submitter(&server);
    let original: &[u8] = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: dots\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <dots.1@client.example>\r\n\r\n\
.\r\n..\r\n...\r\n.leading dot\r\n..two leading dots\r\n .space then dot\r\nmiddle . dot\r\n\r\n.\r\n";
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], original);
    assert_accepted_upstream(&r, 1);
    assert_relayed(&up, original, "alice@example.com", &["bob@example.org"]);
}

#[test]
fn two_megabyte_message_arrives_intact() {
    let up = Upstream::start();
    let server = start_server(up.verified_relay());
    let mut c = submitter(&server);
    let mut original = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: big\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <big.1@client.example>\r\n\r\n"
        .to_vec();
    let mut i: u64 = 0;
    while original.len() < 2 * 1024 * 1024 {
        // Varied lines (every 7th starts with a dot) so that a lost, repeated
        // or reordered chunk cannot go unnoticed.
        let lead = if i.is_multiple_of(7) { "." } else { "" };
        let line = format!("{lead}{i:08} {}\r\n", format!("{:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(4));
        original.extend_from_slice(line.as_bytes());
        i += 1;
    }
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], &original);
    assert_accepted_upstream(&r, 1);
    assert_relayed(&up, &original, "alice@example.com", &["bob@example.org"]);
}

#[test]
fn eight_bit_body_with_body_8bitmime() {
    let up = Upstream::start();
    let server = start_server(up.verified_relay());
    let mut c = submitter(&server);
    let original = "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <8bit.1@client.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Grüße aus Köln — 日本語のテキスト — 🚀\r\nÿ\u{a0}non-breaking\r\n";
    let r =
        transaction(&mut c, "MAIL FROM:<alice@example.com> BODY=8BITMIME", &["bob@example.org"], original.as_bytes());
    assert_accepted_upstream(&r, 1);
    let m = assert_relayed(&up, original.as_bytes(), "alice@example.com", &["bob@example.org"]);
    assert_eq!(
        m.meta["mail_options"],
        serde_json::json!(["BODY=8BITMIME"]),
        "BODY=8BITMIME must be passed upstream: {}",
        m.meta
    );
}

#[test]
fn smtputf8_addresses_are_relayed() {
    let up = Upstream::start();
    let server = start_server(up.verified_relay());
    let mut c = submitter(&server);
    let original = "From: Jösé <jösé@exämple.com>\r\nTo: üsér@exämple.org\r\nSubject: ünïcödé\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <utf8.1@client.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nñ\r\n";
    let r = transaction(&mut c, "MAIL FROM:<jösé@exämple.com> SMTPUTF8", &["üsér@exämple.org"], original.as_bytes());
    assert_accepted_upstream(&r, 1);
    let m = assert_relayed(&up, original.as_bytes(), "jösé@exämple.com", &["üsér@exämple.org"]);
    assert_eq!(m.meta["mail_options"], serde_json::json!(["SMTPUTF8"]), "SMTPUTF8 must be passed upstream: {}", m.meta);
    assert!(String::from_utf8_lossy(&m.eml).contains("with UTF8SMTPSA"), "RFC 6531 protocol name in Received:");
}

// ---------------------------------------------------------------------------
// Upstream refusals.

#[test]
fn upstream_rcpt_tempfail_is_451_and_nothing_is_delivered() {
    let up = Upstream::start();
    let server = start_server(up.verified_relay());
    let mut c = submitter(&server);
    // One good and one failing recipient: delivering to bob and answering
    // 451 would make the client retry and bob get the message twice.
    let r = send(&mut c, "alice@example.com", &["bob@example.org", "tempfail@example.org"], SIMPLE);
    assert_eq!(r.code, 451, "{r}");
    assert!(r.text().starts_with("4.3.0 "), "upstream's enhanced code kept: {r}");
    assert!(r.text().contains("try later"), "upstream's text passed on: {r}");
    assert!(up.messages().is_empty(), "upstream stored something after a RCPT failure");
    // The session goes on and the next message is delivered.
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], SIMPLE);
    assert_accepted_upstream(&r, 1);
    assert_relayed(&up, SIMPLE, "alice@example.com", &["bob@example.org"]);
}

#[test]
fn upstream_rcpt_permfail_is_550_with_the_upstream_text() {
    let up = Upstream::start();
    let server = start_server(up.verified_relay());
    let mut c = submitter(&server);
    let r = send(&mut c, "alice@example.com", &["permfail@example.org"], SIMPLE);
    assert_eq!(r.code, 550, "{r}");
    assert!(r.text().starts_with("5.1.1 "), "{r}");
    assert!(r.text().contains("no such user"), "{r}");
    assert!(up.messages().is_empty());
}

#[test]
fn upstream_data_tempfail_is_451_and_permfail_is_554() {
    let up = Upstream::start();
    let server = start_server(up.verified_relay());
    let mut c = submitter(&server);
    let r = send(&mut c, "alice@example.com", &["datatemp@example.org"], SIMPLE);
    assert_eq!(r.code, 451, "{r}");
    assert!(r.text().starts_with("4.3.1 "), "{r}");
    assert!(
        r.text().contains("452") && r.text().contains("insufficient system storage"),
        "upstream code and text passed on: {r}"
    );
    let r = send(&mut c, "alice@example.com", &["dataperm@example.org"], SIMPLE);
    assert_eq!(r.code, 554, "{r}");
    assert!(r.text().starts_with("5.6.0 "), "{r}");
    assert!(r.text().contains("message content rejected"), "{r}");
    assert!(up.messages().is_empty());
}

// ---------------------------------------------------------------------------
// Connection, credentials and TLS problems.

#[test]
fn upstream_down_is_451_4_4_1_quickly() {
    export_upstream_password();
    let (_reserved, port) = closed_port();
    let relay = format!(
        "\n[relays.up]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\nuser = \"{UP_USER}\"\npassword = \"${{{UP_PASSWORD_VAR}}}\"\ntimeout_secs = 20\n"
    );
    let server = start_server(relay);
    let mut c = submitter(&server);
    let started = Instant::now();
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], SIMPLE);
    let took = started.elapsed();
    assert_eq!(r.code, 451, "{r}");
    assert!(r.text().starts_with("4.4.1 "), "{r}");
    assert!(took < Duration::from_secs(5), "a refused connection took {took:?} to report");
}

#[test]
fn wrong_upstream_password_is_temporary_and_loud() {
    let up = Upstream::start();
    let wrong = "Wrong-pw-0d41e7";
    let relay = format!(
        "\n[relays.up]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nuser = \"{UP_USER}\"\npassword = \"{wrong}\"\nca_file = {:?}\n",
        up.port,
        up.ca.to_str().unwrap()
    );
    let server = start_server(relay);
    let mut c = submitter(&server);
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], SIMPLE);
    // The sender's message is fine; the operator's configuration is not.
    assert_eq!(r.code, 451, "{r}");
    assert!(up.log().contains("refused"), "the upstream should have seen a failed AUTH:\n{}", up.log());
    let line = server.wait_log(&["\"level\":\"ERROR\"", "credentials"]);
    assert!(line.contains("relays"), "the log line should say where to fix it: {line}");
    assert!(up.messages().is_empty());
    assert_no_secret_in_logs(&server, wrong);
}

#[test]
fn unverifiable_upstream_certificate_is_451_and_nothing_is_delivered() {
    let up = Upstream::start();
    // No ca_file: the upstream's private CA is not trusted.
    let server = start_server(up.relay("starttls", ""));
    let mut c = submitter(&server);
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], SIMPLE);
    assert_eq!(r.code, 451, "{r}");
    assert!(r.text().starts_with("4.7.5 "), "a TLS failure (RFC 3463: 4.7.5 cryptographic failure): {r}");
    assert!(up.messages().is_empty());
    let log = server.wait_log(&["relay refused or failed"]);
    assert!(log.to_lowercase().contains("certificate"), "the log should name the certificate problem: {log}");
    assert!(
        !up.log().contains(">> b'AUTH"),
        "credentials must not be sent over an unverified connection:\n{}",
        up.log()
    );
}

#[test]
fn verify_certificate_false_delivers_to_an_unverifiable_upstream() {
    let up = Upstream::start();
    let server = start_server(up.relay("starttls", "verify_certificate = false\n"));
    let mut c = submitter(&server);
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], SIMPLE);
    assert_accepted_upstream(&r, 1);
    assert_relayed(&up, SIMPLE, "alice@example.com", &["bob@example.org"]);
}

#[test]
fn implicit_tls_upstream() {
    let up = Upstream::start_implicit_tls();
    let server = start_server(up.relay("implicit", &format!("ca_file = {:?}\n", up.ca.to_str().unwrap())));
    let mut c = submitter(&server);
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], SIMPLE);
    assert_accepted_upstream(&r, 1);
    let m = assert_relayed(&up, SIMPLE, "alice@example.com", &["bob@example.org"]);
    assert_eq!(m.meta["tls"], "implicit");
}
