//! PROXY protocol listeners, end to end: real connections that open with a
//! v1 or v2 header, the way HAProxy and cloud load balancers send them. The
//! headers are built here from the specification, independently of the
//! server's parser. Each test shows the client address from the header is
//! the one the server judges, limits, logs and writes into `Received:`.

use crate::common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The proxy (this test, on 127.0.0.1) is inside `trusted_networks` on
/// purpose: were the proxy's own address used instead of the header's,
/// every proxied client could relay without AUTH.
const LISTENERS: &str = r#"
[[listeners]]
name = "proxied"
address = "127.0.0.1:0"
tls = "none"
require_auth = false
auth_without_tls = true
trusted_networks = ["127.0.0.0/8", "198.51.100.0/24"]
proxy_protocol = true
proxy_trusted = ["127.0.0.1/32"]

[[listeners]]
name = "proxied-tls"
address = "127.0.0.1:0"
tls = "implicit"
require_auth = true
proxy_protocol = true
proxy_trusted = ["127.0.0.1"]

[[listeners]]
name = "elsewhere"
address = "127.0.0.1:0"
tls = "none"
proxy_protocol = true
proxy_trusted = ["192.0.2.1/32"]

[[listeners]]
name = "plain"
address = "127.0.0.1:0"
tls = "none"
trusted_networks = ["127.0.0.0/8"]
"#;

fn start(limits: &str) -> Server {
    let scripted = format!(
        "\n[[plugins]]\nname = \"conn-log\"\npath = \"{}\"\n[plugins.config]\nlog_connection = true\n",
        test_plugin("scripted").display()
    );
    Server::start(Setup {
        listeners: LISTENERS.into(),
        limits: limits.into(),
        users: users_with_all_schemes(),
        plugins: Some(format!("{scripted}{DEFAULT_PLUGINS}")),
        ..Default::default()
    })
}

/// A version 1 header for a TCP over IPv4 connection.
fn v1(client: &str, client_port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 192.0.2.25 {client_port} 587\r\n").into_bytes()
}

/// A version 2 header: the 12-octet signature, version and command, family
/// and protocol, the payload's length (big-endian), the payload.
fn v2(ver_cmd: u8, fam_proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(ver_cmd);
    h.push(fam_proto);
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// v2 PROXY, TCP over IPv4 (0x21, 0x11): source, destination, ports; and a
/// NOOP TLV after them, which the server must skip.
fn v2_tcp4(client: [u8; 4], client_port: u16) -> Vec<u8> {
    let mut p = client.to_vec();
    p.extend_from_slice(&[192, 0, 2, 25]);
    p.extend_from_slice(&client_port.to_be_bytes());
    p.extend_from_slice(&465u16.to_be_bytes());
    p.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
    v2(0x21, 0x11, &p)
}

/// v2 PROXY, TCP over IPv6 (0x21, 0x21).
fn v2_tcp6(client: &str, client_port: u16) -> Vec<u8> {
    let mut p = client.parse::<Ipv6Addr>().unwrap().octets().to_vec();
    p.extend_from_slice(&"2001:db8::25".parse::<Ipv6Addr>().unwrap().octets());
    p.extend_from_slice(&client_port.to_be_bytes());
    p.extend_from_slice(&587u16.to_be_bytes());
    v2(0x21, 0x21, &p)
}

fn proxied(s: &Server, header: &[u8]) -> Client {
    let mut c = Client::connect_after(s.addr("proxied"), header).greeting();
    c.expect("EHLO client.test", 250);
    c
}

fn message(subject: &str) -> String {
    format!("From: alice@example.com\nTo: bob@example.org\nSubject: {subject}\n\nhello\n")
}

fn received(m: &str) -> String {
    unfold(m).lines().find(|l| l.starts_with("Received:")).unwrap_or_else(|| panic!("no Received: in {m}")).to_string()
}

#[test]
fn v1_header_names_the_client_in_received_logs_and_plugins() {
    let s = start("");
    let mut c = proxied(&s, &v1("203.0.113.7", 51234));
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    assert_eq!(c.send_mail("alice@example.com", &["bob@example.org"], &message("v1")).code, 250);
    c.expect("QUIT", 221);

    let out = s.outbox();
    assert_eq!(out.len(), 1);
    let r = received(&out[0]);
    assert!(
        r.starts_with("Received: from client.test ([203.0.113.7]) by mx.test.example (mailferry) with ESMTPA "),
        "{r}"
    );
    s.wait_log(&["\"connected\"", "\"peer\":\"203.0.113.7:51234\"", "\"proxy\":\"127.0.0.1:"]);
    s.wait_log(&["\"authenticated\"", "\"peer\":\"203.0.113.7:51234\""]);
    s.wait_log(&["connection remote=203.0.113.7:51234 local=192.0.2.25:587 trusted=false"]);
}

#[test]
fn v2_headers_for_ipv4_and_ipv6_clients() {
    let s = start("");
    // A client in trusted_networks (198.51.100.0/24) relays without AUTH.
    let mut c = proxied(&s, &v2_tcp4([198, 51, 100, 20], 40001));
    assert_eq!(c.send_mail("cron@example.com", &["bob@example.org"], &message("v2 ipv4")).code, 250);
    c.expect("QUIT", 221);
    s.wait_log(&["connection remote=198.51.100.20:40001 local=192.0.2.25:465 trusted=true"]);

    let mut c = proxied(&s, &v2_tcp6("2001:db8:77::7", 40002));
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    assert_eq!(c.send_mail("alice@example.com", &["bob@example.org"], &message("v2 ipv6")).code, 250);
    c.expect("QUIT", 221);
    s.wait_log(&["connection remote=2001:db8:77::7:40002 local=2001:db8::25:587 trusted=false"]);
    s.wait_log(&["\"connected\"", "\"peer\":\"[2001:db8:77::7]:40002\"", "\"proxy\":\"127.0.0.1:"]);

    let out = s.outbox();
    assert_eq!(out.len(), 2);
    let (ipv4, ipv6) = if out[0].contains("v2 ipv4") { (&out[0], &out[1]) } else { (&out[1], &out[0]) };
    assert!(received(ipv4).contains("from client.test ([198.51.100.20]) by"), "{}", received(ipv4));
    assert!(received(ipv6).contains("from client.test ([IPv6:2001:db8:77::7]) by"), "{}", received(ipv6));
    assert!(!out.iter().any(|m| m.contains("[127.0.0.1]")));
}

/// The proxy's own address is trusted; the client behind it is not, and
/// must not get to relay through the proxy.
#[test]
fn no_open_relay_through_the_proxy() {
    let s = start("");
    for header in [v1("203.0.113.7", 51234), v2_tcp4([203, 0, 113, 8], 51235), v2_tcp6("2001:db8:66::6", 51236)] {
        let mut c = proxied(&s, &header);
        c.expect("MAIL FROM:<alice@example.com>", 250);
        for rcpt in ["bob@example.org", "postmaster@example.com"] {
            let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert_eq!(r.code, 554, "RCPT {rcpt} from {:?}: {r}", header.escape_ascii().to_string());
        }
        c.expect("DATA", 554);
    }
    s.wait_log(&["relay denied", "\"peer\":\"203.0.113.7:51234\""]);
    s.wait_log(&["relay denied", "\"peer\":\"203.0.113.8:51235\""]);
    // The same test client, named trusted by the header, may relay: the
    // decision follows the header, nothing else.
    let mut c = proxied(&s, &v1("198.51.100.9", 1025));
    c.expect("MAIL FROM:<cron@example.com>", 250);
    c.expect("RCPT TO:<bob@example.org>", 250);
}

#[test]
fn connection_limits_count_the_proxied_client() {
    let s = start("max_connections_per_ip = 1");
    let addr = s.addr("proxied");
    let first = Client::connect_after(addr, &v1("203.0.113.7", 1001)).greeting();
    // Same client through the same proxy: over its limit.
    let mut second = Client::connect_after(addr, &v1("203.0.113.7", 1002));
    let r = second.read();
    assert_eq!(r.code, 421, "{r}");
    assert!(r.text().contains("too many connections from your address"), "{r}");
    assert!(second.is_closed());
    s.wait_log(&["too many connections from your address", "\"peer\":\"203.0.113.7:1002\"", "\"proxy\":\"127.0.0.1:"]);
    // Other clients through the same proxy each have their own limit.
    let _other = Client::connect_after(addr, &v1("203.0.113.8", 1003)).greeting();
    let _v2 = Client::connect_after(addr, &v2_tcp4([198, 51, 100, 20], 1004)).greeting();
    let _v6 = Client::connect_after(addr, &v2_tcp6("2001:db8:1:2::1", 1005)).greeting();
    // Same /64: the same limit.
    let mut v6_again = Client::connect_after(addr, &v2_tcp6("2001:db8:1:2::99", 1006));
    assert_eq!(v6_again.read().code, 421);
    // The place is released when the session ends.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = Client::connect_after(addr, &v1("203.0.113.7", 1007));
        if again.read().code == 220 {
            break;
        }
        assert!(Instant::now() < deadline, "the first client's place was never released");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects, sends `bytes` and asserts the server closes the connection
/// within `within` without sending a single octet. Returns how long it took
/// and the client's port (to find the server's log line).
fn assert_closed_silently(addr: SocketAddr, bytes: &[u8], within: Duration) -> (Duration, u16) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let started = Instant::now();
    let _ = tcp.write_all(bytes);
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    let what = bytes.escape_ascii().to_string();
    match tcp.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the server answered {:?} to {what:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("still open after {:?} ({e}) for {what:?}", started.elapsed()),
    }
    (started.elapsed(), port)
}

#[test]
fn connections_without_a_valid_header_get_no_greeting() {
    let s = start("command_timeout_secs = 2");
    let mut long_v1 = b"PROXY TCP4 203.0.113.7 192.0.2.25 51234 587".to_vec();
    long_v1.extend_from_slice(&[b' '; 100]);
    long_v1.extend_from_slice(b"\r\n");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("proxied", b"EHLO client.test\r\n".to_vec(), "no PROXY header: the connection starts with"),
        ("proxied", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(), "no PROXY header"),
        ("proxied-tls", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(), "no PROXY header"),
        ("proxied", b"PROXY TCP4 203.0.113.999 192.0.2.25 1 587\r\n".to_vec(), "invalid PROXY v1 header"),
        ("proxied", b"PROXY TCP4 203.0.113.7 192.0.2.25 51234\r\n".to_vec(), "invalid PROXY v1 header"),
        ("proxied", b"PROXY TCP4 203.0.113.7 192.0.2.25 51234 587\n".to_vec(), "not ended by CRLF"),
        ("proxied", long_v1, "longer than 107 octets"),
        ("proxied", v2(0x11, 0x11, &[0; 12]), "invalid PROXY v2 header"),
        ("proxied", v2(0x21, 0x11, &[0; 8]), "invalid PROXY v2 header"),
        ("proxied", v2(0x21, 0x12, &[0; 12]), "UDP"),
        ("proxied", b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec(), "65535 octets"),
    ];
    for (listener, bytes, expect) in &cases {
        let (took, port) = assert_closed_silently(s.addr(listener), bytes, Duration::from_secs(10));
        // Refused as soon as the octets show it, not at the timeout.
        assert!(took < Duration::from_millis(1500), "{expect}: took {took:?}");
        s.wait_log(&["PROXY header refused", &format!("\"peer\":\"127.0.0.1:{port}\""), expect]);
    }
    // Silence, and a header cut short: closed at the timeout.
    for bytes in [&b""[..], &b"PROXY TCP4 203.0.113.7 "[..]] {
        let (took, port) = assert_closed_silently(s.addr("proxied"), bytes, Duration::from_secs(10));
        assert!(took >= Duration::from_millis(1900), "closed after {took:?}");
        s.wait_log(&["PROXY header refused", &format!("\"peer\":\"127.0.0.1:{port}\""), "no PROXY header within 2s"]);
    }
    // A valid header from a peer that is not a trusted proxy.
    let (_, port) = assert_closed_silently(s.addr("elsewhere"), &v1("203.0.113.7", 51234), Duration::from_secs(10));
    s.wait_log(&["not in proxy_trusted", &format!("\"peer\":\"127.0.0.1:{port}\""), "\"listener\":\"elsewhere\""]);
    // None of them got as far as a session.
    assert!(!s.log_text().contains("\"connected\""), "{}", s.log_text());
}

/// v2 LOCAL (the proxy's health checks) and v1 UNKNOWN: the proxy speaks
/// for itself, so the connection keeps its own address.
#[test]
fn local_and_unknown_headers_keep_the_proxy_address() {
    let s = start("");
    for (header, subject) in [(v2(0x20, 0x00, &[]), "local"), (b"PROXY UNKNOWN\r\n".to_vec(), "unknown")] {
        let mut c = proxied(&s, &header);
        // 127.0.0.1 is in trusted_networks here.
        assert_eq!(c.send_mail("cron@example.com", &["bob@example.org"], &message(subject)).code, 250);
        c.expect("QUIT", 221);
    }
    let out = s.outbox();
    assert_eq!(out.len(), 2);
    for m in &out {
        assert!(received(m).contains("from client.test ([127.0.0.1]) by"), "{}", received(m));
    }
    s.wait_log(&["connection remote=127.0.0.1:", "trusted=true"]);
}

#[test]
fn implicit_tls_reads_the_header_before_the_handshake() {
    let s = start("");
    for (header, client) in
        [(v2_tcp4([203, 0, 113, 9], 50465), "[203.0.113.9]"), (v1("203.0.113.10", 50466), "[203.0.113.10]")]
    {
        let mut c = Client::connect_tls_after(s.addr("proxied-tls"), &header).greeting();
        c.expect("EHLO client.test", 250);
        assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
        assert_eq!(c.send_mail("alice@example.com", &["bob@example.org"], &message(client)).code, 250);
        c.expect("QUIT", 221);
    }
    let out = s.outbox();
    assert_eq!(out.len(), 2);
    for client in ["[203.0.113.9]", "[203.0.113.10]"] {
        let m = out.iter().find(|m| m.contains(&format!("Subject: {client}"))).unwrap();
        let r = received(m);
        assert!(r.contains(&format!("from client.test ({client}) by")) && r.contains("with ESMTPSA"), "{r}");
    }
    s.wait_log(&["\"connected\"", "\"peer\":\"203.0.113.9:50465\"", "\"tls\":true"]);
}

/// The header is read exactly: a client that sends its first command in the
/// same packet (an early talker) finds it answered after the greeting.
#[test]
fn octets_after_the_header_stay_with_the_session() {
    let s = start("");
    for header in [v1("203.0.113.7", 51234), v2_tcp4([203, 0, 113, 7], 51235)] {
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"EHLO early.test\r\n");
        let mut c = Client::connect_after(s.addr("proxied"), &bytes).greeting();
        let r = c.read();
        assert_eq!(r.code, 250, "{r}");
        assert!(r.lines[0].contains("greets early.test"), "{r}");
        c.expect("QUIT", 221);
    }
}

/// A listener without proxy_protocol takes no header: a client cannot
/// claim another address by sending one.
#[test]
fn listeners_without_proxy_protocol_ignore_headers() {
    let s = start("");
    let mut c = Client::connect(s.addr("plain")).greeting();
    assert_eq!(c.cmd("PROXY TCP4 203.0.113.7 192.0.2.25 51234 587").code, 500);
    c.expect("EHLO client.test", 250);
    assert_eq!(c.send_mail("cron@example.com", &["bob@example.org"], &message("plain")).code, 250);
    let out = s.outbox();
    assert!(received(&out[0]).contains("([127.0.0.1])"), "{}", received(&out[0]));
    assert!(!out[0].contains("203.0.113.7"));
}

#[test]
fn proxy_protocol_without_trusted_proxies_does_not_start() {
    let listeners = "[[listeners]]\nname = \"lb\"\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n";
    let Err(out) = Server::try_start(Setup { listeners: listeners.into(), ..Default::default() }) else {
        panic!("started without proxy_trusted");
    };
    assert!(out.contains("listeners[0] (lb): proxy_protocol = true needs proxy_trusted"), "{out}");
}
