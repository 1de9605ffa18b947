//! Brute-force protection for AUTH against the real server: failed logins
//! ban an address (421 4.7.0 at connect) until the ban expires; the right
//! user still logs in from elsewhere, also while the login is under attack
//! (which bars only the guessing address from that login);
//! trusted and exempt networks are never banned; replies to failures wait
//! longer each time; and a ban placed by one node holds on another sharing
//! the same Redis.
//!
//! Client addresses other than 127.0.0.1 are presented through a
//! `proxy_protocol` listener, as a load balancer would.

use std::time::{Duration, Instant};

use crate::common::*;

fn start(extra: &str) -> Server {
    Server::start(Setup {
        users: PLAIN_USERS.into(),
        listeners: PLAIN_AUTH_LISTENERS.into(),
        extra: format!("\n[admin]\naddress = \"127.0.0.1:0\"\n{extra}"),
        ..Default::default()
    })
}

/// A session on `listener` from 127.0.0.1, after EHLO.
fn direct(s: &Server, listener: &str) -> Client {
    let mut c = Client::connect(s.addr(listener)).greeting();
    c.expect("EHLO client.test", 250);
    c
}

/// Connects to the proxied listener as client `ip`; returns the client and
/// the server's first reply (the greeting, or a refusal).
fn connect_as(s: &Server, ip: &str) -> (Client, Resp) {
    let mut c =
        Client::connect_after(s.addr("proxied"), format!("PROXY TCP4 {ip} 192.0.2.25 40000 587\r\n").as_bytes());
    let r = c.read();
    (c, r)
}

/// A session from client `ip`, after EHLO.
fn from(s: &Server, ip: &str) -> Client {
    let (mut c, r) = connect_as(s, ip);
    assert_eq!(r.code, 220, "{ip} greeting: {r}");
    c.expect("EHLO client.test", 250);
    c
}

fn assert_banned_reply(r: &Resp) {
    assert_eq!(r.code, 421, "{r}");
    assert!(r.text().contains("4.7.0") && r.text().contains("too many failed logins"), "{r}");
}

#[test]
fn failed_logins_ban_the_address_until_the_ban_expires_but_not_the_user_elsewhere() {
    let s = start("[auth_limits]\nfailures_per_ip = 3\nban_secs = 3\nfailure_delay_ms = 0\n");
    // Opened before the ban: it is ended at its next AUTH.
    let mut early = direct(&s, "direct");

    let mut c = direct(&s, "direct");
    for _ in 0..2 {
        assert_eq!(c.auth_plain("alice@example.com", "guess").code, 535);
    }
    let r = c.auth_plain("alice@example.com", "guess");
    assert_eq!(r.code, 535, "{r}");
    assert_banned_reply(&c.read());
    assert!(c.is_closed());
    let line = s.wait_log(&["address banned after failed logins", "127.0.0.1"]);
    assert!(line.contains("failures_per_ip") && line.contains("\"ban_secs\":3"), "{line}");
    // Every failure kept its fail2ban line.
    let failures = s.log_text().lines().filter(|l| l.contains("authentication failed")).count();
    assert_eq!(failures, 3);

    // A new connection is refused at once, with the reason.
    let mut refused = Client::connect(s.addr("direct"));
    assert_banned_reply(&refused.read());
    assert!(refused.is_closed());
    s.wait_log(&["connection refused: address banned after failed logins"]);
    assert_banned_reply(&early.auth_plain("alice@example.com", "wonderland"));

    // The user herself, from her own address: not locked out.
    let mut alice = from(&s, "203.0.113.9");
    assert_eq!(alice.auth_plain("alice@example.com", "wonderland").code, 235);
    assert_eq!(alice.send_mail("alice@example.com", &["bob@example.org"], "Subject: hi\n\nhello\n").code, 250);
    // The trusted listener still serves 127.0.0.1.
    direct(&s, "local").expect("MAIL FROM:<cron@example.com>", 250);

    let metrics = scrape_metrics(&s);
    assert!(metrics.contains("mailferry_auth_bans_total 1"), "{metrics}");
    assert!(
        metrics.contains(r#"mailferry_connections_refused_total{listener="direct",reason="banned"} 1"#),
        "{metrics}"
    );

    // The ban expires by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        let mut c = Client::connect(s.addr("direct"));
        let r = c.read();
        if r.code == 220 {
            break c;
        }
        assert_banned_reply(&r);
        assert!(Instant::now() < deadline, "the ban did not expire");
        std::thread::sleep(Duration::from_millis(200));
    };
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
}

#[test]
fn a_login_under_attack_bars_unfamiliar_addresses_from_it_but_never_its_user() {
    let s = start("[auth_limits]\nfailures_per_ip = 3\nfailures_per_login = 4\nban_secs = 60\nfailure_delay_ms = 0\n");
    // Alice logs in from home, which makes that address familiar.
    let mut home = from(&s, "198.51.100.7");
    assert_eq!(home.auth_plain("alice@example.com", "wonderland").code, 235);

    // Four addresses guess once each: none reaches failures_per_ip.
    for i in 1..=4 {
        let ip = format!("203.0.113.{i}");
        assert_eq!(from(&s, &ip).auth_plain("alice@example.com", "guess").code, 535);
        assert_eq!(connect_as(&s, &ip).1.code, 220, "{ip} is not banned yet");
    }
    // The login is now under attack: the next unfamiliar address that
    // fails on it may not try it again, not even with the right password…
    let mut attacker = from(&s, "203.0.113.50");
    assert_eq!(attacker.auth_plain("ALICE@example.com", "guess").code, 535);
    let line = s.wait_log(&["login barred for this address after failed logins", "203.0.113.50"]);
    assert!(line.contains("failures_per_login"), "{line}");
    let r = attacker.auth_plain("alice@example.com", "wonderland");
    assert_eq!(r.code, 454, "{r}");
    assert!(r.text().starts_with("4.7.0 too many failed logins for this login"), "{r}");
    let mut again = from(&s, "203.0.113.50");
    assert_eq!(again.auth_plain("alice@example.com", "wonderland").code, 454);
    // …but the address itself is not banned: whoever else is behind it
    // (a NAT, a mobile carrier) connects and logs in as themselves.
    assert_eq!(connect_as(&s, "203.0.113.50").1.code, 220);
    assert_eq!(again.auth_plain("bob@example.com", "builder").code, 235);
    assert!(!s.log_text().contains("address banned"), "{}", s.log_text());

    // A typo from home is only counted…
    let mut c = from(&s, "198.51.100.7");
    assert_eq!(c.auth_plain("alice@example.com", "wonderlnd").code, 535);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    // …and the right password works from an address never seen before.
    let mut hotel = from(&s, "192.0.2.77");
    assert_eq!(hotel.auth_plain("alice@example.com", "wonderland").code, 235);
    // Other logins are not under attack.
    let mut other = from(&s, "192.0.2.78");
    assert_eq!(other.auth_plain("bob@example.com", "typo").code, 535);
    assert_eq!(other.auth_plain("bob@example.com", "builder").code, 235);
}

#[test]
fn trusted_and_exempt_networks_are_never_banned() {
    let s = start("[auth_limits]\nfailures_per_ip = 2\nexempt_networks = [\"192.0.2.0/24\"]\nfailure_delay_ms = 0\n");
    let mut local = direct(&s, "local");
    let mut office = from(&s, "192.0.2.5");
    for _ in 0..5 {
        assert_eq!(local.auth_plain("alice@example.com", "guess").code, 535);
        assert_eq!(office.auth_plain("alice@example.com", "guess").code, 535);
    }
    assert_eq!(local.auth_plain("alice@example.com", "wonderland").code, 235);
    assert_eq!(office.auth_plain("alice@example.com", "wonderland").code, 235);
    assert_eq!(Client::connect(s.addr("local")).read().code, 220);
    assert_eq!(connect_as(&s, "192.0.2.5").1.code, 220);
    // The failures were logged for fail2ban all the same, but not banned;
    // as docs/abuse.md's filter matches them: the JSON form it names, and
    // the target its text form names.
    let line = s.wait_log(&["authentication failed", "192.0.2.5"]);
    assert!(line.contains(r#""message":"authentication failed","ip":"192.0.2.5""#), "{line}");
    assert!(line.contains(r#""target":"mailferry::smtp::session""#), "{line}");
    assert!(!s.log_text().contains("address banned"), "{}", s.log_text());
    // The same failures from elsewhere do ban.
    let mut c = from(&s, "198.51.100.1");
    assert_eq!(c.auth_plain("alice@example.com", "guess").code, 535);
    assert_eq!(c.auth_plain("alice@example.com", "guess").code, 535);
    assert_banned_reply(&c.read());
}

#[test]
fn replies_to_failed_logins_wait_longer_each_time() {
    let s = start("[auth_limits]\nfailures_per_ip = 0\nfailure_delay_ms = 200\nmax_failure_delay_ms = 500\n");
    let mut c = direct(&s, "direct");
    for expected in [200u64, 400, 500, 500] {
        let started = Instant::now();
        assert_eq!(c.auth_plain("alice@example.com", "guess").code, 535);
        // A lower bound only: the server waits at least this long.
        assert!(started.elapsed() >= Duration::from_millis(expected), "{:?} < {expected} ms", started.elapsed());
        s.wait_log(&["failed AUTH answered after a delay", &format!("\"delay_ms\":{expected}")]);
    }
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
}

#[test]
fn a_ban_holds_on_every_node_sharing_redis() {
    let shared = format!(
        "[auth_limits]\nfailures_per_ip = 2\nfailure_delay_ms = 0\n[counters]\nredis = \"{}\"\nprefix = \"{}\"\n",
        redis_url(),
        unique_prefix("ban")
    );
    let a = start(&shared);
    let b = start(&shared);
    // A node counting in its own memory, for comparison.
    let alone = start("[auth_limits]\nfailures_per_ip = 2\nfailure_delay_ms = 0\n");
    a.wait_log(&["plugins loaded", "redis 127.0.0.1:6379"]);

    // One failure through each node: together they reach the threshold.
    assert_eq!(from(&a, "203.0.113.20").auth_plain("alice@example.com", "guess").code, 535);
    let mut c = from(&b, "203.0.113.20");
    assert_eq!(c.auth_plain("alice@example.com", "guess").code, 535);
    assert_banned_reply(&c.read());
    assert_banned_reply(&connect_as(&a, "203.0.113.20").1);
    assert_banned_reply(&connect_as(&b, "203.0.113.20").1);
    // The node that does not share knows nothing of it.
    assert_eq!(connect_as(&alone, "203.0.113.20").1.code, 220);
    // Nor are other addresses affected.
    assert_eq!(connect_as(&a, "203.0.113.21").1.code, 220);
}

/// Guesses sent at once on many connections from one address are checked
/// one after the other, each after the failures before it were counted: the
/// ban stops them at `failures_per_ip`, not after every connection guessed.
#[test]
fn parallel_guesses_from_one_address_are_counted_one_by_one() {
    use base64::Engine as _;
    let s = start("[auth_limits]\nfailures_per_ip = 3\nfailure_delay_ms = 0\n");
    let mut clients: Vec<Client> = (0..8).map(|_| from(&s, "203.0.113.77")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0alice@example.com\0guess{i}"));
        c.send(&format!("AUTH PLAIN {token}"));
    }
    let codes: Vec<u16> = clients.iter_mut().map(|c| c.read().code).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 535).count(), 3, "{codes:?}\n{}", s.log_text());
    assert_eq!(codes.iter().filter(|&&c| c == 421).count(), 5, "{codes:?}");
    assert_eq!(connect_as(&s, "203.0.113.77").1.code, 421);
}
