//! Delivery: a queued message reaches the upstream as it was submitted,
//! once; an upstream that is down gets it once it is back; plugins hear of
//! each delivery, deferral and bounce.

use super::*;

// An upstream.py started by this file (to restart one on a known port).

struct PyUpstream {
    child: Child,
    port: u16,
}

impl PyUpstream {
    fn start(args: &[std::ffi::OsString], log: &Path) -> PyUpstream {
        let (child, _, port) = spawn_upstream(args, log);
        PyUpstream { child, port }
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn queued_message_reaches_the_upstream() {
    let started = Instant::now();
    let up = Upstream::start();
    let server = start_server(up.verified_relay(), None);
    let mut c = submitter(&server);
    // No Message-ID or Date (mailferry adds them), folding and odd spacing,
    // a dot line, and no 8-bit.
    let original: &[u8] = b"From: \"Alice Liddell\" <alice@example.com>\r\n\
To: bob@example.org,\r\n\tcarol@example.net\r\n\
Subject: a folded\r\n  queued   subject \r\n\
X-Weird:no-space-after-colon\r\n\
\r\n\
line one\r\n.\r\n..two dots\r\n\ttabbed line   \r\n\r\n";
    let rcpts = ["bob@example.org", "carol@example.net"];
    let r = send(&mut c, "alice@example.com", &rcpts, original);
    let id = assert_queued(&r);
    c.expect("QUIT", 221);

    let msgs = wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    let m = &msgs[0];
    assert_eq!(m.meta["mail_from"], "alice@example.com", "{}", m.meta);
    assert_eq!(m.meta["rcpt_tos"], serde_json::json!(rcpts), "{}", m.meta);
    assert_eq!(m.meta["login"], UP_USER, "{}", m.meta);
    assert_eq!(m.meta["tls"], "starttls", "{}", m.meta);
    assert_eq!(m.meta["helo"], "mx.test.example", "{}", m.meta);
    assert_eq!(m.meta["mail_options"], serde_json::json!([]), "{}", m.meta);
    let got = strip_added(&m.eml, original);
    assert_same_bytes(&got, original, "message at the upstream vs. as submitted");

    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(20), &|| server.log_text());
    server.wait_log(&["\"done\"", &id]);
    // Delivered once, not twice.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(up.messages().len(), 1, "{}", up.log());
    eprintln!("queued_message_reaches_the_upstream: {:?}", started.elapsed());
}

#[test]
fn upstream_down_then_back() {
    let started = Instant::now();
    let up = Upstream::start();
    let port = up.port;
    // upstream.py makes a new CA every time it generates a certificate (also
    // into the same --certdir), and mailferry loads ca_file once at start:
    // keep this upstream's certificate, key and CA for the second one.
    let keep = tempfile::tempdir().unwrap();
    let certdir = up.dir.path().join("cert");
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(certdir.join(f), keep.path().join(f)).unwrap();
    }
    let relay = up.relay("starttls", &format!("ca_file = {:?}\n", keep.path().join("ca.pem").to_str().unwrap()));
    drop(up);

    let server = start_server(relay, None);
    let mut c = submitter(&server);
    let original: &[u8] = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: while down\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <down.1@client.example>\r\n\r\nstill here\r\n";
    let id = assert_queued(&send(&mut c, "alice@example.com", &["bob@example.org"], original));
    c.expect("QUIT", 221);

    let failed = server.wait_log(&["delivery attempt failed", &id]);
    assert!(failed.contains("4.4.1"), "connection refused is 4.4.1: {failed}");
    server.wait_log(&["will retry", &id]);
    let spool = server.path("state/queue");
    assert_eq!(spool_files(&spool), vec![format!("{id}.eml"), format!("{id}.json")]);
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spool.join(format!("{id}.json"))).unwrap()).unwrap();
    assert!(entry["attempts"].as_u64().unwrap() >= 1, "{entry}");
    assert_eq!(entry["rcpts"][0]["state"], "pending", "{entry}");
    // A couple more attempts while it is down.
    std::thread::sleep(Duration::from_millis(2200));
    let attempts =
        server.log_text().lines().filter(|l| l.contains("delivery attempt failed") && l.contains(&id)).count();
    assert!(attempts >= 2, "retried every second while down: {attempts} attempts");

    let out = keep.path().join("out");
    let args: Vec<std::ffi::OsString> = vec![
        "--port".into(),
        port.to_string().into(),
        "--cert".into(),
        keep.path().join("cert.pem").into(),
        "--key".into(),
        keep.path().join("key.pem").into(),
        "--out".into(),
        out.clone().into(),
    ];
    let back = PyUpstream::start(&args, &keep.path().join("upstream.log"));
    assert_eq!(back.port, port);

    let msgs = wait_stored(&out, 1, Duration::from_secs(20), &server);
    assert_eq!(msgs[0].meta["mail_from"], "alice@example.com");
    assert_eq!(msgs[0].meta["rcpt_tos"], serde_json::json!(["bob@example.org"]));
    assert_same_bytes(&strip_added(&msgs[0].eml, original), original, "message delivered after the outage");
    wait_spool_empty(&spool, Duration::from_secs(20), &|| server.log_text());
    server.wait_log(&["\"delivered\"", &id]);
    assert!(!server.log_text().contains("bounce queued"), "nothing bounced");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(stored_in(&out).len(), 1, "delivered exactly once");
    eprintln!("upstream_down_then_back: {attempts}+ failed attempts; {:?}", started.elapsed());
}

/// Plugins hear about deliveries: `delivered`, `deferred` and `bounced`,
/// with the queue id, recipient, relay and reply, in a queue context.
#[test]
fn plugins_get_delivery_events() {
    let up = Upstream::start();
    export_upstream_password();
    let scripted = test_plugin("scripted");
    let plugins =
        format!("{}\n[[plugins]]\nname = \"watcher\"\npath = {:?}\n", queue_plugins(), scripted.to_str().unwrap());
    let server = Server::start(Setup {
        plugins: Some(plugins),
        users: users_with_all_schemes(),
        extra: format!("{}\n{}", up.verified_relay(), queue_section(Some(2))),
        ..Default::default()
    });
    let mut c = submitter(&server);
    let m = b"From: alice@example.com\r\nTo: x@example.org\r\nSubject: events\r\n\r\nbody\r\n";
    let id = assert_queued(&send(
        &mut c,
        "alice@example.com",
        &["good@example.org", "permfail-p@example.org", "tempfail-t@example.org"],
        m,
    ));
    c.expect("QUIT", 221);
    let delivered = server.wait_log(&["event delivered", &id, "rcpt=good@example.org"]);
    assert!(delivered.contains("relay=up") && delivered.contains("listener=queue"), "{delivered}");
    assert!(delivered.contains("envelope_from=alice@example.com") && delivered.contains("attempts=1"), "{delivered}");
    let bounced = server.wait_log(&["event bounced", &id, "rcpt=permfail-p@example.org"]);
    assert!(bounced.contains("550"), "{bounced}");
    server.wait_log(&["event deferred", &id, "rcpt=tempfail-t@example.org"]);
    // The temporary one expires (max_age 2 s) and is bounced in the end.
    server.wait_log(&["event bounced", &id, "rcpt=tempfail-t@example.org", "4.4.7"]);
}
