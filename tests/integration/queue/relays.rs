//! What relays answer: throttling, recipient and size limits, a refusal
//! before MAIL FROM, and a relay too small for the message in a route.

use super::*;

/// SES answers `454 Throttling failure` when sending too fast: the relay
/// is paused briefly and the message tried again after the pause, not after
/// the (long) retry schedule, and without a bounce.
#[test]
fn throttling_pauses_the_relay_and_retries_soon() {
    let up = Upstream::start();
    export_upstream_password();
    let server = Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        // Only the throttle path can deliver within the test.
        extra: format!("{}\n[queue]\nretry_schedule_secs = [600]\n", up.verified_relay()),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: x@example.org\r\nSubject: slow down\r\n\r\nbody\r\n";
    let id = assert_queued(&send(&mut c, "alice@example.com", &["throttle2-x@example.org"], m));
    c.expect("QUIT", 221);
    server.wait_log(&["asks us to slow down", "pause_secs"]);
    let stored = wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    assert_eq!(stored[0].meta["rcpt_tos"], serde_json::json!(["throttle2-x@example.org"]));
    // Paused twice (1 s, then 2 s), never bounced.
    let pauses = server.log_text().lines().filter(|l| l.contains("asks us to slow down")).count();
    assert_eq!(pauses, 2, "{}", server.log_text());
    assert!(!server.log_text().contains("bouncing"));
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(10), &|| server.log_text());
    assert!(server.log_text().contains(&id));
}

/// A relay with `max_recipients` gets the recipients in parts, one
/// transaction each; every recipient is delivered once.
#[test]
fn recipients_over_the_relay_limit_are_split() {
    let up = Upstream::start();
    export_upstream_password();
    let relay = up.verified_relay().replace("timeout_secs = 20", "timeout_secs = 20\nmax_recipients = 2");
    let server = start_server(relay, None);
    let mut c = submitter(&server);
    let rcpts = ["r1@example.org", "r2@example.org", "r3@example.org", "r4@example.org", "r5@example.org"];
    let m = b"From: alice@example.com\r\nTo: list@example.org\r\nSubject: many\r\n\r\nbody\r\n";
    assert_queued(&send(&mut c, "alice@example.com", &rcpts, m));
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 3, Duration::from_secs(20), &server);
    let parts: Vec<Vec<String>> = stored
        .iter()
        .map(|s| s.meta["rcpt_tos"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .collect();
    assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1], "{parts:?}");
    let all: Vec<String> = parts.concat();
    assert_eq!(all, rcpts.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(10), &|| server.log_text());
}

/// A message larger than every relay of its route takes is refused when it
/// is submitted (at MAIL FROM when the client declares its size), not
/// bounced later.
#[test]
fn too_big_for_the_route_is_refused_at_submission() {
    let up = Upstream::start();
    export_upstream_password();
    let relay = up.verified_relay().replace("timeout_secs = 20", "timeout_secs = 20\nmax_message_size = 2048");
    let server = start_server(relay, None);
    let mut c = submitter(&server);
    let line = "y".repeat(70) + "\r\n";
    let big = format!("From: alice@example.com\r\nTo: bob@example.org\r\nSubject: big\r\n\r\n{}", line.repeat(40));
    let r = send(&mut c, "alice@example.com", &["bob@example.org"], big.as_bytes());
    assert_eq!(r.code, 552, "{r}");
    assert!(r.text().contains("5.3.4") && r.text().contains("2048"), "{r}");
    // A client that declares the size hears it at MAIL FROM, before sending.
    let r = c.cmd("MAIL FROM:<alice@example.com> SIZE=5000");
    assert_eq!(r.code, 552, "{r}");
    assert!(r.text().contains("5.3.4") && r.text().contains("2048"), "{r}");
    c.expect("MAIL FROM:<alice@example.com> SIZE=2000", 250);
    c.expect("RSET", 250);
    // A small one still goes.
    let small = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: small\r\n\r\nok\r\n";
    assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], small));
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    assert_eq!(stored.len(), 1);
}

/// A fake upstream: greeting, then answers each command line by `answer`.
fn fake_upstream(greeting: &'static str, answer: fn(&str) -> &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let _ = w.write_all(greeting.as_bytes());
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            let _ = w.write_all(answer(".").as_bytes());
                        }
                        continue;
                    }
                    let a = answer(line.trim_end());
                    if a.starts_with("354") {
                        in_data = true;
                    }
                    let _ = w.write_all(a.as_bytes());
                    if line.to_ascii_uppercase().starts_with("QUIT") {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A greeting 554 (e.g. our IP not allowlisted upstream: our configuration)
/// must not bounce the queued mail; it is temporary for the message.
#[test]
fn a_refusal_before_mail_from_keeps_the_message_queued() {
    let port = fake_upstream("554 5.7.1 no service for your address\r\n", |_| "554 5.7.1 no\r\n");
    export_upstream_password();
    let relay = format!(
        "\n[relays.up]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout_secs = 5\n"
    );
    let server = start_server(relay, None);
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n";
    let id = assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], m));
    c.expect("QUIT", 221);
    server.wait_log(&["the relay refused us before any message was sent"]);
    std::thread::sleep(Duration::from_secs(3));
    let files = spool_files(&server.path("state/queue"));
    assert!(
        files.iter().any(|f| f.starts_with(&id)),
        "acknowledged message {id} gone from the spool, never delivered:\n{}",
        server.log_text()
    );
    assert!(!server.log_text().contains("bouncing"), "{}", server.log_text());
}

/// Route [small, up]: `small` refuses the size (552 at DATA), `up` takes it.
/// The message was accepted because `up` can take it; it must go through
/// `up`, not bounce on `small`'s size refusal.
#[test]
fn a_relay_too_small_is_skipped_for_the_next_one() {
    let small = fake_upstream("220 small ESMTP\r\n", |l| {
        let u = l.to_ascii_uppercase();
        if u.starts_with("EHLO") {
            "250-small\r\n250 SIZE 2048\r\n"
        } else if u.starts_with("DATA") {
            "354 go\r\n"
        } else if l == "." {
            "552 5.3.4 message too big for this relay\r\n"
        } else if u.starts_with("QUIT") {
            "221 bye\r\n"
        } else {
            "250 ok\r\n"
        }
    });
    let up = Upstream::start();
    export_upstream_password();
    let relays = format!(
        "\n[relays.small]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {small}\ntls = \"none\"\ntimeout_secs = 5\nmax_message_size = 2048\n{}\n[routes.r]\nrelays = [\"small\", \"up\"]\n",
        up.verified_relay()
    );
    let server = Server::start(Setup {
        plugins: Some(DEFAULT_PLUGINS.replace("relay = \"outbox\"", "route = \"r\"")),
        users: users_with_all_schemes(),
        extra: format!("{relays}\n{}", queue_section(None)),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let line = "y".repeat(70) + "\r\n";
    let big = format!("From: alice@example.com\r\nTo: bob@example.org\r\nSubject: big\r\n\r\n{}", line.repeat(40));
    assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], big.as_bytes()));
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 1, Duration::from_secs(15), &server);
    assert_eq!(stored[0].meta["mail_from"], "alice@example.com", "{}", server.log_text());
}
