//! `mailferry queue …` on a running server and on the spool of a stopped
//! one.

use super::*;

/// `mailferry queue …` on a running server (through its control socket),
/// then on the spool of a stopped one.
#[test]
fn queue_commands_work_live_and_offline() {
    // An upstream that is gone: messages stay queued.
    let up = Upstream::start();
    // Never reached: nothing to verify.
    let relay = up.relay("starttls", "verify_certificate = false\n");
    drop(up);
    export_upstream_password();
    let mut server = Server::start(Setup {
        plugins: Some(queue_plugins()),
        users: users_with_all_schemes(),
        // Long waits: nothing moves unless asked.
        extra: format!("{relay}\n[queue]\nretry_schedule_secs = [3600]\n"),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: stuck\r\n\r\nbody\r\n";
    let a = assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org", "carol@example.org"], m));
    let b = assert_queued(&send(&mut c, "alice@example.com", &["dave@example.org"], m));
    c.expect("QUIT", 221);
    server.wait_log(&["will retry", &a]);
    server.wait_log(&["will retry", &b]);
    let config = server.path("mailferry.toml");
    let cli = |args: &[&str]| {
        let out = Command::new(BIN).arg("queue").args(args).arg("--config").arg(&config).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };

    let (ok, list) = cli(&["list"]);
    assert!(ok, "{list}");
    assert!(list.contains(&a) && list.contains(&b), "{list}");
    assert!(list.contains("bob@example.org, carol@example.org") && list.contains("attempts 1"), "{list}");
    assert!(list.contains("last error: 451 4.4.1"), "{list}");
    let (ok, show) = cli(&["show", &a]);
    assert!(ok && show.contains("route:     up") && show.contains("<carol@example.org>  Pending"), "{show}");
    let (ok, stats) = cli(&["stats"]);
    assert!(ok && stats.contains("messages:            2") && stats.contains("recipients waiting:  3"), "{stats}");
    // The socket belongs to the live server: retry makes it try at once.
    let (ok, retry) = cli(&["retry", &a]);
    assert!(ok && retry.contains("1 message(s)"), "{retry}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.log_text().lines().filter(|l| l.contains("delivery attempt failed") && l.contains(&a)).count() < 2 {
        assert!(Instant::now() < deadline, "no second attempt after retry:\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, del) = cli(&["delete", &b]);
    assert!(ok && del.contains("deleted"), "{del}");
    let (ok, err) = cli(&["show", &b]);
    assert!(!ok && err.contains("no queued message"), "{err}");
    let (ok, err) = cli(&["retry"]);
    assert!(!ok && err.contains("--all"), "{err}");

    // Stopped: the same commands read and change the spool itself.
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    assert!(server.wait_exit(Duration::from_secs(15)).is_some());
    let (ok, list) = cli(&["list"]);
    assert!(ok && list.contains(&a) && !list.contains(&b), "{list}");
    let (ok, retry) = cli(&["retry", "--all"]);
    assert!(ok && retry.contains("1 message(s)"), "{retry}");
    let (ok, del) = cli(&["delete", &a]);
    assert!(ok && del.contains("deleted"), "{del}");
    let (ok, list) = cli(&["list"]);
    assert!(ok && list.contains("The queue is empty."), "{list}");
    assert!(spool_files(&server.path("state/queue")).is_empty());
}
