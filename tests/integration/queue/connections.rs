//! Upstream connections: shared by queued messages to one relay, and
//! replaced at once when the upstream closed a kept one.

use super::*;

/// The upstream connection each stored message came over, as runs of
/// messages per connection, in order.
fn connection_runs(stored: &[Stored]) -> Vec<usize> {
    let mut runs: Vec<(u64, usize)> = Vec::new();
    for s in stored {
        let conn = s.meta["connection"].as_u64().unwrap_or_else(|| panic!("no connection in {}", s.meta));
        match runs.last_mut() {
            Some((c, n)) if *c == conn => *n += 1,
            _ => runs.push((conn, 1)),
        }
    }
    runs.into_iter().map(|(_, n)| n).collect()
}

/// Queued messages to one relay share connections: up to
/// `connection_max_messages` each, one after another, no new TLS handshake
/// and AUTH per message.
#[test]
fn queued_messages_share_upstream_connections() {
    let up = Upstream::start();
    export_upstream_password();
    let relay = up
        .verified_relay()
        .replace("timeout_secs = 20", "timeout_secs = 20\nconnection_max_messages = 3\nconnection_idle_secs = 30");
    let server = Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        // One attempt at a time, so the messages go one after another.
        extra: format!("{relay}\n[queue]\nretry_schedule_secs = [600]\nconcurrency = 1\n"),
        ..Default::default()
    });
    let mut c = submitter(&server);
    for i in 0..7 {
        let m = format!("From: alice@example.com\r\nTo: bob@example.org\r\nSubject: reuse {i}\r\n\r\nbody {i}\r\n");
        assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], m.as_bytes()));
        // Each delivered before the next is queued: the kept connection is
        // what carries it.
        wait_stored(&out_of(&up), i + 1, Duration::from_secs(20), &server);
    }
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 7, Duration::from_secs(20), &server);
    assert_eq!(connection_runs(&stored), vec![3, 3, 1], "{}", server.log_text());
    let logins = up.log().lines().filter(|l| l.contains("AUTH") && l.contains(": ok")).count();
    assert_eq!(logins, 3, "one AUTH per connection:\n{}", up.log());
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(10), &|| server.log_text());
}

/// A kept connection the upstream closed meanwhile (its idle timeout,
/// shorter than ours) is noticed at MAIL FROM and the message goes over a
/// new connection at once: not deferred, not retried later.
#[test]
fn a_kept_connection_the_upstream_closed_costs_nothing() {
    let up = Upstream::start_with(&["--idle-timeout", "1"]);
    export_upstream_password();
    let relay = up.verified_relay().replace("timeout_secs = 20", "timeout_secs = 20\nconnection_idle_secs = 60");
    let server = Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        // A deferral would wait ten minutes: only the new connection can deliver in time.
        extra: format!("{relay}\n[queue]\nretry_schedule_secs = [600]\n"),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: one\r\n\r\nbody\r\n";
    assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], m));
    wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    // The upstream hangs up on the idle connection after 1 s.
    server.wait_log(&["\"done\""]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        up.log().contains("connection timeout"),
        "the upstream should have closed the idle connection:\n{}",
        up.log()
    );
    let m = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: two\r\n\r\nbody\r\n";
    assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], m));
    c.expect("QUIT", 221);
    let stored = wait_stored(&out_of(&up), 2, Duration::from_secs(20), &server);
    assert_eq!(connection_runs(&stored), vec![1, 1], "a new connection for the second message");
    let log = server.log_text();
    assert!(!log.contains("deferred") && !log.contains("will retry"), "{log}");
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(10), &|| server.log_text());
}
