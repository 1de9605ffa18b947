//! Review: what a kept upstream connection looks like after the
//! transaction did not end with the final reply to the message.
use super::*;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a fake upstream saw.
#[derive(Default)]
struct Seen {
    /// Each message's lines between DATA and the final dot, unstuffed.
    messages: Vec<Vec<u8>>,
    /// MAIL commands that came with the rest of the transaction's
    /// commands already in the same read (pipelined).
    pipelined_mails: usize,
}

/// A Postfix-like upstream: a refusal of the DATA command does not end
/// the transaction (the client must RSET); MAIL inside a transaction is
/// "503 nested MAIL command". The first DATA it sees is refused
/// (smtpd_data_restrictions / a policy service rate limit). A recipient
/// "permclose..." gets 550 and the connection is closed; "nobody..."
/// gets 550. It offers PIPELINING if asked to.
fn postfix_like_with(pipelining: bool, refuse_first_data: bool) -> (u16, Arc<std::sync::Mutex<Seen>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let datas = std::sync::Arc::new(AtomicUsize::new(0));
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let (datas, seen) = (datas.clone(), record.clone());
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let _ = w.write_all(b"220 fake ESMTP\r\n");
                let mut in_tx = false;
                let mut rcpts = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let u = line.trim_end().to_ascii_uppercase();
                    let reply: &str = if u.starts_with("EHLO") {
                        if pipelining {
                            "250-fake\r\n250 PIPELINING\r\n"
                        } else {
                            "250 fake\r\n"
                        }
                    } else if u.starts_with("MAIL") {
                        if String::from_utf8_lossy(r.buffer()).to_ascii_uppercase().contains("DATA\r\n") {
                            seen.lock().unwrap().pipelined_mails += 1;
                        }
                        if in_tx {
                            "503 5.5.1 Error: nested MAIL command\r\n"
                        } else {
                            in_tx = true;
                            rcpts = 0;
                            "250 2.1.0 Ok\r\n"
                        }
                    } else if u.starts_with("RCPT") {
                        if u.contains("<PERMCLOSE") {
                            let _ = w.write_all(b"550 5.1.1 no such user\r\n");
                            return; // hangs up
                        }
                        if u.contains("<NOBODY") {
                            "550 5.1.1 no such user\r\n"
                        } else {
                            rcpts += 1;
                            "250 2.1.5 Ok\r\n"
                        }
                    } else if u == "DATA" {
                        if rcpts == 0 {
                            "554 5.5.1 Error: no valid recipients\r\n"
                        } else if refuse_first_data && datas.fetch_add(1, Ordering::SeqCst) == 0 {
                            "451 4.7.1 rate limit exceeded, try again later\r\n"
                        } else {
                            let _ = w.write_all(b"354 go\r\n");
                            let mut message = Vec::new();
                            loop {
                                let mut l = Vec::new();
                                if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                                    return;
                                }
                                if l == b".\r\n" {
                                    break;
                                }
                                message.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
                            }
                            seen.lock().unwrap().messages.push(message);
                            in_tx = false;
                            "250 2.0.0 Ok: queued\r\n"
                        }
                    } else if u == "RSET" {
                        in_tx = false;
                        "250 2.0.0 Ok\r\n"
                    } else if u == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        "502 5.5.2 what\r\n"
                    };
                    let _ = w.write_all(reply.as_bytes());
                }
            });
        }
    });
    (port, seen)
}

fn postfix_like() -> u16 {
    postfix_like_with(true, true).0
}

fn relays(port: u16) -> Relays {
    let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.up]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 5\nconnection_idle_secs = 30\n"
        );
    let config = Config::parse(&text, Path::new("t.toml"), Path::new("/")).unwrap();
    Relays::from_config(&config).unwrap()
}

const MSG: &[u8] = b"Subject: s\r\n\r\nbody\r\n";

/// Message A's DATA command is refused (451); message B, queued
/// right after to the same relay, must not be bounced for it.
#[tokio::test]
async fn a_refused_data_command_does_not_poison_the_next_message() {
    let relays = relays(postfix_like());
    let rcpt = [DeliveryRcpt { address: "bob@example.org", params: &[] }];
    let a = relays.deliver("up", "alice@example.com", &[], &rcpt, MSG, "A").await;
    assert!(matches!(a.as_deref(), Ok([RcptOutcome::Temporary(r)]) if r.starts_with("451")), "{a:?}");
    let b = relays.deliver("up", "alice@example.com", &[], &rcpt, MSG, "B").await;
    assert!(
        matches!(b.as_deref(), Ok([RcptOutcome::Delivered(_)])),
        "message B, sent over the connection message A left mid-transaction: {b:?}"
    );
}

/// The only recipient is refused for good (550) and the upstream hangs
/// up: the 550 is the outcome, not a temporary failure of the attempt.
#[tokio::test]
async fn a_failed_rset_does_not_hide_the_recipients_outcomes() {
    for pipelining in [true, false] {
        let relays = relays(postfix_like_with(pipelining, true).0);
        let rcpt = [DeliveryRcpt { address: "permclose@example.org", params: &[] }];
        let r = relays.deliver("up", "alice@example.com", &[], &rcpt, MSG, "C").await;
        assert!(
            matches!(r.as_deref(), Ok([RcptOutcome::Permanent(t)]) if t.starts_with("550")),
            "pipelining {pipelining}: {r:?}"
        );
    }
}

/// With and without PIPELINING: each recipient gets its own outcome,
/// the message arrives exactly as queued (lines starting with a dot
/// included), and a transaction nobody takes leaves the connection
/// fit for the next message.
#[tokio::test]
async fn every_recipient_gets_its_outcome_and_the_message_arrives_intact() {
    const DOTS: &[u8] = b"From: a@example.com\r\nSubject: dots\r\n\r\n.\r\n..two\r\n.hidden\r\nend\r\n";
    for pipelining in [true, false] {
        let (port, seen) = postfix_like_with(pipelining, false);
        let relays = relays(port);
        let rcpts = [
            DeliveryRcpt { address: "bob@example.org", params: &[] },
            DeliveryRcpt { address: "nobody@example.org", params: &[] },
            DeliveryRcpt { address: "carol@example.org", params: &[] },
        ];
        let r = relays.deliver("up", "alice@example.com", &[], &rcpts, DOTS, "D").await.unwrap();
        assert!(
            matches!(&r[..], [RcptOutcome::Delivered(_), RcptOutcome::Permanent(p), RcptOutcome::Delivered(_)] if p.starts_with("550")),
            "pipelining {pipelining}: {r:?}"
        );
        // Nobody takes the next one (554 to DATA): RSET, and the kept
        // connection carries the one after.
        let none = [DeliveryRcpt { address: "nobody@example.org", params: &[] }];
        let r = relays.deliver("up", "alice@example.com", &[], &none, MSG, "E").await.unwrap();
        assert!(matches!(&r[..], [RcptOutcome::Permanent(p)] if p.starts_with("550")), "{r:?}");
        let r = relays.deliver("up", "alice@example.com", &[], &rcpts[..1], MSG, "F").await.unwrap();
        assert!(matches!(&r[..], [RcptOutcome::Delivered(_)]), "{r:?}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.messages, vec![DOTS.to_vec(), MSG.to_vec()], "pipelining {pipelining}");
        assert_eq!(seen.pipelined_mails, if pipelining { 3 } else { 0 }, "MAIL, RCPTs and DATA in one write");
    }
}

/// An upstream that accepts the connection and never greets: the
/// attempt ends within the relay's timeout, temporarily.
#[tokio::test]
async fn a_silent_upstream_costs_at_most_the_timeout() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = l.incoming().take(2).collect();
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(held);
    });
    let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.up]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 1\n"
        );
    let config = Config::parse(&text, Path::new("t.toml"), Path::new("/")).unwrap();
    let relays = Relays::from_config(&config).unwrap();
    let rcpt = [DeliveryRcpt { address: "bob@example.org", params: &[] }];
    let deliver = relays.deliver("up", "alice@example.com", &[], &rcpt, MSG, "G");
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), deliver).await.expect("bounded by timeout_secs");
    assert!(matches!(&r, Err(f) if f.temporary), "{r:?}");
}

/// A pipelining upstream that takes a while over each recipient (it checks
/// them one by one): every reply gets the relay's timeout, not the whole
/// batch together.
#[tokio::test]
async fn each_pipelined_reply_has_its_own_timeout() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Some(Ok(s)) = l.incoming().next() else { return };
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let _ = w.write_all(b"220 fake ESMTP\r\n");
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let u = line.trim_end().to_ascii_uppercase();
            let reply: &[u8] = if u.starts_with("EHLO") {
                b"250-fake\r\n250 PIPELINING\r\n"
            } else if u.starts_with("RCPT") {
                std::thread::sleep(std::time::Duration::from_millis(600));
                b"250 2.1.5 Ok\r\n"
            } else if u == "DATA" {
                let _ = w.write_all(b"354 go\r\n");
                let mut l = Vec::new();
                while r.read_until(b'\n', &mut l).unwrap_or(0) > 0 && !l.ends_with(b"\r\n.\r\n") {}
                b"250 2.0.0 Ok: queued\r\n"
            } else if u == "QUIT" {
                return;
            } else {
                b"250 Ok\r\n"
            };
            let _ = w.write_all(reply);
        }
    });
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:1\"\n[relays.up]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 1\n"
    );
    let config = Config::parse(&text, Path::new("t.toml"), Path::new("/")).unwrap();
    let relays = Relays::from_config(&config).unwrap();
    // Three recipients: 1.8 s of replies in all, 0.6 s each.
    let rcpts =
        ["a@example.org", "b@example.org", "c@example.org"].map(|address| DeliveryRcpt { address, params: &[] });
    let r = relays.deliver("up", "alice@example.com", &[], &rcpts, MSG, "H").await.unwrap();
    assert!(r.iter().all(|o| matches!(o, RcptOutcome::Delivered(_))), "{r:?}");
}

#[test]
fn dot_stuffing() {
    assert_eq!(dot_stuffed(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
    assert_eq!(dot_stuffed(b".\r\n"), b"..\r\n.\r\n");
    assert_eq!(dot_stuffed(b"no final CRLF"), b"no final CRLF\r\n.\r\n");
    // Bare line ends become CRLF, and the dot after them is stuffed.
    assert_eq!(dot_stuffed(b"a\r.\r\nb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
    assert_eq!(dot_stuffed(b"a\n.\r\nb\n"), b"a\r\n..\r\nb\r\n.\r\n");
}
