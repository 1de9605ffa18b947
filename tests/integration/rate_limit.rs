//! The `rate-limit` plugin against the real server: messages per login and
//! recipients per address answered with 451 4.7.1, pipelined recipients
//! judged one by one, refusals not counted; two mailferry processes sharing
//! one real Redis count together (and, for comparison, two that do not,
//! apart); and what happens when Redis is down.

use crate::common::*;

/// A server whose rate-limit plugin has `limits`, with `extra` TOML.
fn start(limits: &str, extra: &str) -> Server {
    Server::start(Setup {
        users: PLAIN_USERS.into(),
        listeners: PLAIN_AUTH_LISTENERS.into(),
        plugins: Some(plugins_with(
            &format!(
                "[[plugins]]\nname = \"rate-limit\"\ngrants = [\"counters\"]\n[plugins.config]\nlimits = {limits}\n"
            ),
            "relay = \"outbox\"",
        )),
        extra: format!("\n[admin]\naddress = \"127.0.0.1:0\"\n{extra}"),
        ..Default::default()
    })
}

/// An authenticated session as `login`.
fn login(s: &Server, login: &str, password: &str) -> Client {
    let mut c = Client::connect(s.addr("direct")).greeting();
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain(login, password).code, 235);
    c
}

fn alice(s: &Server) -> Client {
    login(s, "alice@example.com", "wonderland")
}

const MESSAGE: &str = "Subject: hi\n\nhello\n";

fn assert_limited(r: &Resp, text: &str) {
    assert_eq!(r.code, 451, "{r}");
    assert_eq!(r.text(), format!("4.7.1 {text}"), "{r}");
}

#[test]
fn messages_per_login_then_451_4_7_1_at_mail_from() {
    let s = start(r#"[{ per = "login", messages = 3 }]"#, "");
    let mut c = alice(&s);
    for _ in 0..3 {
        assert_eq!(c.send_mail("alice@example.com", &["x@example.org"], MESSAGE).code, 250);
    }
    // Refused before the body is sent, and again on every retry.
    for _ in 0..3 {
        let r = c.cmd("MAIL FROM:<alice@example.com>");
        assert_limited(&r, "rate limit: 3 messages per hour for this login, try again later");
    }
    // A new connection changes nothing; the login is what counts.
    let r = alice(&s).cmd("MAIL FROM:<other@example.com>");
    assert_eq!(r.code, 451, "{r}");
    // Another login has its own count.
    let mut bob = login(&s, "bob@example.com", "builder");
    assert_eq!(bob.send_mail("bob@example.com", &["x@example.org"], MESSAGE).code, 250);
    assert_eq!(s.outbox().len(), 4);
    s.wait_log(&["rate limit reached: 3 messages per hour for login alice@example.com"]);
    let metrics = scrape_metrics(&s);
    assert!(metrics.contains(r#"mailferry_rate_limited_total{plugin="rate-limit"} 4"#), "{metrics}");
}

#[test]
fn pipelined_recipients_per_address_are_judged_one_by_one() {
    let s = start(r#"[{ per = "ip", recipients = 5 }]"#, "");
    // A trusted client (cron on this machine): limited per address.
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    let mut batch = String::from("MAIL FROM:<cron@example.com>\r\n");
    for i in 0..7 {
        batch.push_str(&format!("RCPT TO:<r{i}@example.org>\r\n"));
    }
    c.send_raw(batch.as_bytes());
    assert_eq!(c.read().code, 250);
    for i in 0..7 {
        let r = c.read();
        if i < 5 {
            assert_eq!(r.code, 250, "recipient {i}: {r}");
        } else {
            assert_limited(&r, "rate limit: 5 recipients per hour for this address, try again later");
        }
    }
    c.expect("DATA", 354);
    c.send_raw(b"Subject: hi\r\n\r\nhello\r\n.\r\n");
    assert_eq!(c.read().code, 250);
    let outbox = s.outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].matches("X-Original-To:").count(), 5, "{}", outbox[0]);
    // The limit holds for the next transaction and the next connection.
    c.expect("MAIL FROM:<cron@example.com>", 250);
    assert_eq!(c.cmd("RCPT TO:<late@example.org>").code, 451);
    let mut again = Client::connect(s.addr("local")).greeting();
    again.expect("EHLO client.test", 250);
    again.expect("MAIL FROM:<cron@example.com>", 250);
    assert_eq!(again.cmd("RCPT TO:<late@example.org>").code, 451);
}

#[test]
fn two_nodes_sharing_redis_count_together() {
    let redis = format!("[counters]\nredis = \"{}\"\nprefix = \"{}\"\n", redis_url(), unique_prefix("rate"));
    let limits = r#"[{ per = "login", messages = 4 }]"#;
    let a = start(limits, &redis);
    let b = start(limits, &redis);
    a.wait_log(&["plugins loaded", "redis 127.0.0.1:6379"]);
    let (mut ca, mut cb) = (alice(&a), alice(&b));
    for _ in 0..2 {
        for c in [&mut ca, &mut cb] {
            assert_eq!(c.send_mail("alice@example.com", &["x@example.org"], MESSAGE).code, 250);
        }
    }
    // Four between them: the fifth is refused by either.
    for c in [&mut ca, &mut cb] {
        let r = c.cmd("MAIL FROM:<alice@example.com>");
        assert_limited(&r, "rate limit: 4 messages per hour for this login, try again later");
    }
    assert_eq!(a.outbox().len() + b.outbox().len(), 4);

    // Two nodes counting in memory each let four through.
    let (c, d) = (start(limits, ""), start(limits, ""));
    for node in [&c, &d] {
        let mut session = alice(node);
        for _ in 0..4 {
            assert_eq!(session.send_mail("alice@example.com", &["x@example.org"], MESSAGE).code, 250);
        }
    }
}

/// A Redis of the test's own on a free port, stopped when dropped.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn start(port: u16) -> OwnRedis {
        redis_url();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        OwnRedis { child, port }
    }

    fn keys(&self, pattern: &str) -> Vec<String> {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--scan", "--pattern", pattern])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn counting_returns_to_redis_once_it_answers_again() {
    let port = OwnRedis::free_port();
    let s = start(
        r#"[{ per = "login", messages = 1000 }]"#,
        &format!("[counters]\nredis = \"redis://127.0.0.1:{port}/0\"\nprefix = \"back:\"\n"),
    );
    let mut c = alice(&s);
    assert_eq!(c.send_mail("alice@example.com", &["x@example.org"], MESSAGE).code, 250);
    s.wait_log(&["Redis unavailable; counting in this node's memory"]);
    let redis = OwnRedis::start(port);
    // Redis is tried again 5 seconds after the failure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while redis.keys("back:plugin:rate-limit:messages:*").is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing was counted in Redis:\n{}", s.log_text());
        assert_eq!(c.send_mail("alice@example.com", &["x@example.org"], MESSAGE).code, 250);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    s.wait_log(&["Redis answers again"]);
}

#[test]
fn redis_down_counts_locally_by_default_or_refuses() {
    // Nothing listens on port 1.
    let down = "[counters]\nredis = \"redis://127.0.0.1:1/0\"\ntimeout_ms = 200\n";
    let s = start(r#"[{ per = "login", messages = 2 }]"#, down);
    let mut c = alice(&s);
    for _ in 0..2 {
        assert_eq!(c.send_mail("alice@example.com", &["x@example.org"], MESSAGE).code, 250);
    }
    assert_eq!(c.cmd("MAIL FROM:<alice@example.com>").code, 451);
    s.wait_log(&["Redis unavailable; counting in this node's memory"]);
    assert!(scrape_metrics(&s).contains("mailferry_redis_up 0"));

    let s = start(r#"[{ per = "ip", messages = 2 }]"#, &format!("{down}on_redis_error = \"refuse\"\n"));
    // AUTH cannot be checked for bans: refused for now.
    let mut c = Client::connect(s.addr("direct")).greeting();
    c.expect("EHLO client.test", 250);
    let r = c.auth_plain("alice@example.com", "wonderland");
    assert_eq!((r.code, r.text().as_str()), (454, "4.7.0 temporary authentication failure, try again later"));
    // Counted mail from a trusted client: refused for now.
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO client.test", 250);
    let r = c.cmd("MAIL FROM:<cron@example.com>");
    assert_eq!((r.code, r.text().as_str()), (451, "4.3.0 rate limits unavailable, try again later"));
    s.wait_log(&["Redis unavailable; AUTH and rate-limited mail are refused"]);
}

/// An error Redis answers to one call (here a counter that would pass
/// Redis's 64-bit limit, planted by hand: the host's cap on amounts keeps
/// plugins far from it) is answered as `on_redis_error` says, never left
/// uncounted; but Redis is not taken for down: with `on_redis_error =
/// "refuse"`, an outage would refuse the next calls too, for 5 seconds.
#[test]
fn a_call_redis_refuses_is_not_an_outage() {
    use mailferry::config::{Counters as Config, OnRedisError, RedisUrl};
    use mailferry::counters::{CounterError, Counters, MAX_AMOUNT, MAX_WINDOW};
    let prefix = unique_prefix("refused");
    let config = Config {
        redis: Some(RedisUrl(redis_url().into())),
        prefix: prefix.clone(),
        timeout: std::time::Duration::from_secs(5),
        on_redis_error: OnRedisError::Refuse,
        max_keys: 1000,
    };
    // The window key of "now" and of the next window, so the test holds
    // whichever "now" the call sees.
    let window_ms = MAX_WINDOW.as_millis() as u64;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for bucket in [now_ms / window_ms, now_ms / window_ms + 1] {
        let key = format!("{prefix}full:{bucket}");
        let out = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379", "SET", &key, &i64::MAX.to_string(), "PX", "600000"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let counters = Counters::from_config(&config).unwrap();
        let e = counters.incr("full", 1, MAX_WINDOW).await.unwrap_err();
        assert!(matches!(&e, CounterError::Unavailable(m) if m.contains("overflow")), "{e:?}");
        // Redis is not taken for down: the next call is counted there.
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(counters.incr("other", 1, minute).await, Ok(1));
        // Amounts over the cap never reach Redis.
        let e = counters.incr("other", MAX_AMOUNT + 1, minute).await.unwrap_err();
        assert!(matches!(e, CounterError::Invalid(_)), "{e:?}");
        assert!(counters.incr("other", MAX_AMOUNT, minute).await.unwrap() >= MAX_AMOUNT);
    });
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "--scan", "--pattern", &format!("{prefix}other:*")])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty(), "nothing counted in Redis");
}
