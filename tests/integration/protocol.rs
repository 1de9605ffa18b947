//! SMTP protocol behaviour of the real server: every reply path of the
//! command set, limits, pipelining, BDAT, and the trace headers we add.

use crate::common::*;

fn local(s: &Server) -> Client {
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    c
}

#[test]
fn ehlo_advertises_extensions_but_no_auth_before_tls() {
    let s = Server::start(Setup::default());
    let mut c = Client::connect(s.addr("submission")).greeting();
    let r = c.expect("EHLO client.test", 250);
    let text = r.text();
    for ext in ["PIPELINING", "SIZE 26214400", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS"] {
        assert!(r.lines.iter().any(|l| l == ext), "missing {ext} in {text}");
    }
    assert!(!text.contains("AUTH"), "AUTH must not be offered before TLS: {text}");
    assert!(!text.contains("CRAM-MD5"));
    let r = c.cmd("AUTH PLAIN AGFsaWNlAHB3");
    assert_eq!(r.code, 538, "{r}");
    c.starttls();
    let r = c.expect("EHLO client.test", 250);
    assert!(r.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"), "{r}");
    assert!(!r.text().contains("STARTTLS"), "STARTTLS offered twice: {r}");
}

#[test]
fn helo_gives_no_extensions_and_refuses_parameters() {
    let s = Server::start(Setup::default());
    let mut c = Client::connect(s.addr("local")).greeting();
    let r = c.expect("HELO client.test", 250);
    assert_eq!(r.lines.len(), 1);
    c.expect("MAIL FROM:<a@example.com> BODY=8BITMIME", 555);
    c.expect("MAIL FROM:<a@example.com>", 250);
}

#[test]
fn unknown_out_of_order_and_bad_syntax() {
    let s = Server::start(Setup::default());
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("MAIL FROM:<a@example.com>", 503); // before EHLO
    c.expect("XYZZY", 500);
    c.expect("EHLO", 501);
    c.expect("EHLO client.test", 250);
    c.expect("RCPT TO:<b@example.org>", 503);
    c.expect("DATA", 503);
    c.expect("MAIL FROM:a@example.com", 501);
    c.expect("MAIL FROM:<a@example.com> FOO=BAR", 555);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect("MAIL FROM:<a@example.com>", 503);
    c.expect("DATA", 554); // no recipients
                           // A fresh session: the error limit (10) would end this one.
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect("RCPT TO:<b@example.org> NOTIFY=NEVER", 555);
    c.expect("RCPT TO:<>", 501);
    c.expect("RSET", 250);
    c.expect("RCPT TO:<b@example.org>", 503);
    c.expect("NOOP", 250);
    let r = c.expect("VRFY alice", 252);
    assert!(r.text().starts_with("2.5.0"));
    c.expect("EXPN list", 502);
    c.expect("HELP", 214);
    c.expect("STARTTLS", 502); // not offered on a plain listener
    c.expect("QUIT", 221);
    assert!(c.is_closed());
}

#[test]
fn enhanced_status_codes_on_replies() {
    let s = Server::start(Setup::default());
    let mut c = local(&s);
    let r = c.expect("MAIL FROM:<a@example.com>", 250);
    assert!(r.text().starts_with("2.1.0"), "{r}");
    let r = c.expect("RCPT TO:<b@example.org>", 250);
    assert!(r.text().starts_with("2.1.5"), "{r}");
}

#[test]
fn message_is_delivered_with_trace_headers_and_dot_unstuffing() {
    let s = Server::start(Setup::default());
    let mut c = local(&s);
    let r = c.send_mail(
        "a@example.com",
        &["b@example.org", "c@example.net"],
        "From: a@example.com\nTo: b@example.org\nSubject: dots\n\n.leading dot\n..two dots\nend\n",
    );
    assert_eq!(r.code, 250, "{r}");
    let out = s.outbox();
    assert_eq!(out.len(), 1);
    let m = &unfold(&out[0]);
    assert!(m.starts_with("Return-Path: <a@example.com>\r\nX-Original-To: b@example.org\r\nX-Original-To: c@example.net\r\nReceived: from client.test ([127.0.0.1]) by mx.test.example (mailferry) with ESMTP id "), "{m}");
    assert!(m.contains("\r\nMessage-ID: <"), "Message-ID added: {m}");
    assert!(m.contains("@mx.test.example>\r\n"), "{m}");
    assert!(m.contains("\r\nDate: "), "Date added: {m}");
    // The client stuffed each leading dot; we removed exactly one.
    assert!(m.contains("\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"), "{m}");
}

#[test]
fn existing_message_id_and_date_are_kept() {
    let s = Server::start(Setup::default());
    let mut c = local(&s);
    let r = c.send_mail(
        "a@example.com",
        &["b@example.org"],
        "Message-ID: <mine@example.com>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: x\n\nbody\n",
    );
    assert_eq!(r.code, 250, "{r}");
    let m = &s.outbox()[0];
    assert_eq!(m.matches("Message-ID:").count(), 1, "{m}");
    assert_eq!(m.matches("Date:").count(), 1, "{m}");
    assert!(m.contains("Message-ID: <mine@example.com>\r\n"));
}

#[test]
fn pipelining_gets_every_reply_in_order() {
    let s = Server::start(Setup::default());
    let mut c = Client::connect(s.addr("local")).greeting();
    c.send_raw(
        b"EHLO client.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<bad>\r\nDATA\r\n",
    );
    assert_eq!(c.read().code, 250);
    assert_eq!(c.read().code, 250);
    assert_eq!(c.read().code, 250);
    assert_eq!(c.read().code, 501);
    assert_eq!(c.read().code, 354);
    c.send_raw(b"Subject: p\r\n\r\nhi\r\n.\r\nQUIT\r\n");
    assert_eq!(c.read().code, 250);
    assert_eq!(c.read().code, 221);
    assert_eq!(s.outbox().len(), 1);
}

#[test]
fn bdat_chunks_make_one_message() {
    let s = Server::start(Setup::default());
    let mut c = local(&s);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect("RCPT TO:<b@example.org>", 250);
    let part1 = b"Subject: chunked\r\n\r\nfirst ";
    let part2 = b"second\r\n.not stuffed\r\n";
    c.send_raw(format!("BDAT {}\r\n", part1.len()).as_bytes());
    c.send_raw(part1);
    assert_eq!(c.read().code, 250);
    c.send_raw(format!("BDAT {} LAST\r\n", part2.len()).as_bytes());
    c.send_raw(part2);
    let r = c.read();
    assert_eq!(r.code, 250, "{r}");
    c.expect("DATA", 503);
    let m = &s.outbox()[0];
    assert!(m.contains("\r\n\r\nfirst second\r\n.not stuffed\r\n"), "{m}");
}

#[test]
fn bdat_without_transaction_is_consumed_and_refused() {
    let s = Server::start(Setup::default());
    let mut c = local(&s);
    // The chunk must be read even though it is refused, or the octets
    // would be taken as commands.
    c.send_raw(b"BDAT 16 LAST\r\nQUIT\r\nQUIT\r\nQU\r\n");
    assert_eq!(c.read().code, 503);
    c.expect("NOOP", 250);
}

#[test]
fn size_limit_on_mail_from_and_while_reading() {
    let s = Server::start(Setup { limits: "message_size = 2000".into(), ..Default::default() });
    let mut c = local(&s);
    let r = c.expect("MAIL FROM:<a@example.com> SIZE=5000", 552);
    assert!(r.text().starts_with("5.3.4"), "{r}");
    c.expect("MAIL FROM:<a@example.com> SIZE=100", 250);
    c.expect("RCPT TO:<b@example.org>", 250);
    c.expect("DATA", 354);
    let line = "x".repeat(100);
    for _ in 0..40 {
        c.send(&line);
    }
    c.send(".");
    let r = c.read();
    assert_eq!(r.code, 552, "{r}");
    // The session goes on and nothing was delivered.
    c.expect("NOOP", 250);
    assert!(s.outbox().is_empty());
}

#[test]
fn bdat_over_the_size_limit() {
    let s = Server::start(Setup { limits: "message_size = 1024".into(), ..Default::default() });
    let mut c = local(&s);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect("RCPT TO:<b@example.org>", 250);
    let body = vec![b'a'; 3000];
    c.send_raw(b"BDAT 3000 LAST\r\n");
    c.send_raw(&body);
    assert_eq!(c.read().code, 552);
    c.expect("NOOP", 250);
    assert!(s.outbox().is_empty());
}

#[test]
fn recipient_limit() {
    let s = Server::start(Setup { limits: "recipients = 3".into(), ..Default::default() });
    let mut c = local(&s);
    c.expect("MAIL FROM:<a@example.com>", 250);
    for i in 0..3 {
        c.expect(&format!("RCPT TO:<r{i}@example.org>"), 250);
    }
    let r = c.expect("RCPT TO:<r4@example.org>", 452);
    assert!(r.text().starts_with("4.5.3"), "{r}");
}

#[test]
fn long_command_line_is_refused_and_session_continues() {
    let s = Server::start(Setup::default());
    let mut c = local(&s);
    let r = c.cmd(&format!("NOOP {}", "x".repeat(2000)));
    assert_eq!(r.code, 500, "{r}");
    c.expect("NOOP", 250);
}

#[test]
fn long_text_line_nul_and_bare_lf_in_message() {
    let s = Server::start(Setup::default());
    let mut c = local(&s);
    c.begin_data("a@example.com", "b@example.org");
    c.send(&"y".repeat(999));
    c.send(".");
    let r = c.read();
    assert_eq!(r.code, 550, "999 octets + CRLF is over 1000: {r}");

    c.begin_data("a@example.com", "b@example.org");
    c.send(&"y".repeat(998));
    c.send(".");
    assert_eq!(c.read().code, 250, "998 octets + CRLF is allowed");

    c.begin_data("a@example.com", "b@example.org");
    c.send_raw(b"Subject: nul\r\n\r\na\x00b\r\n.\r\n");
    let r = c.read();
    assert_eq!(r.code, 550, "{r}");
    assert!(r.text().contains("NUL"), "{r}");
    assert_eq!(s.outbox().len(), 1);
}

#[test]
fn too_many_errors_close_the_session() {
    let s = Server::start(Setup { limits: "max_errors = 3".into(), ..Default::default() });
    let mut c = local(&s);
    c.expect("BOGUS1", 500);
    c.expect("BOGUS2", 500);
    c.send("BOGUS3");
    assert_eq!(c.read().code, 500);
    let r = c.read();
    assert_eq!(r.code, 421, "{r}");
    assert!(c.is_closed());
}

#[test]
fn idle_timeout_closes_with_421() {
    let s = Server::start(Setup { limits: "command_timeout_secs = 1".into(), ..Default::default() });
    let mut c = Client::connect(s.addr("local")).greeting();
    let r = c.read();
    assert_eq!(r.code, 421, "{r}");
    assert!(c.is_closed());
}

#[test]
fn connection_limits_per_ip_and_total() {
    let s = Server::start(Setup { limits: "max_connections_per_ip = 2".into(), ..Default::default() });
    let _a = Client::connect(s.addr("local")).greeting();
    let _b = Client::connect(s.addr("local")).greeting();
    let mut c = Client::connect(s.addr("local"));
    let r = c.read();
    assert_eq!(r.code, 421, "{r}");
    assert!(r.text().starts_with("4.7.0"));
    drop(_a);
    // The place is released when a session ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut d = Client::connect(s.addr("local"));
        if d.read().code == 220 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never released");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn total_connection_limit() {
    let s = Server::start(Setup { limits: "max_connections = 2".into(), ..Default::default() });
    let _a = Client::connect(s.addr("local")).greeting();
    let _b = Client::connect(s.addr("open")).greeting();
    let mut c = Client::connect(s.addr("submission"));
    let r = c.read();
    assert_eq!(r.code, 421, "{r}");
    assert!(r.text().contains("too many connections"), "{r}");
}

#[test]
fn smtputf8_addresses_need_the_parameter() {
    let s = Server::start(Setup::default());
    let mut c = local(&s);
    c.expect("MAIL FROM:<josé@example.com>", 553);
    c.expect("MAIL FROM:<josé@example.com> SMTPUTF8", 250);
    c.expect("RCPT TO:<zoë@exämple.org>", 250);
}

#[test]
fn sigterm_lets_a_running_session_finish() {
    let mut s = Server::start(Setup::default());
    let mut c = local(&s);
    c.expect("MAIL FROM:<a@example.com>", 250);
    c.expect("RCPT TO:<b@example.org>", 250);
    unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
    s.wait_log(&["shutdown requested"]);
    // New connections are refused…
    assert!(std::net::TcpStream::connect(s.addr("local")).is_err(), "still accepting after SIGTERM");
    // …the open transaction still completes…
    c.expect("DATA", 354);
    c.send_raw(b"Subject: last\r\n\r\nbye\r\n.\r\n");
    assert_eq!(c.read().code, 250);
    // …and the next command is told the server is going away.
    let r = c.cmd("NOOP");
    assert_eq!(r.code, 421, "{r}");
    assert!(s.wait_exit(std::time::Duration::from_secs(10)).is_some());
    // Acknowledged means kept: delivered before the exit, or still in the
    // spool for the next start (as `mailferry queue stats` finds it).
    let count = |dir: &str, ext: &str| {
        std::fs::read_dir(s.path(dir))
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == ext)).count())
            .unwrap_or(0)
    };
    assert_eq!(count("outbox", "eml") + s.queued(), 1);
}

#[test]
fn a_client_that_sends_but_never_reads_is_dropped() {
    use std::io::Write;
    let s = Server::start(Setup { limits: "command_timeout_secs = 2".into(), ..Default::default() });
    let addr = s.addr("open");
    let writer = std::thread::spawn(move || {
        let mut t = std::net::TcpStream::connect(addr).unwrap();
        t.set_write_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        let chunk = "HELP\r\n".repeat(10_000);
        loop {
            match t.write_all(chunk.as_bytes()) {
                Ok(()) => continue,
                // Our own timeout: the server never gave up on us.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true,
            }
        }
    });
    assert!(writer.join().unwrap(), "the server kept a client that does not read");
    s.wait_log(&["disconnected", "\"listener\":\"open\""]);
}
