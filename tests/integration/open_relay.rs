//! Never an open relay: without AUTH or a trusted network, no recipient is
//! accepted, whatever form the address takes. Tried on a listener that does
//! not require AUTH (the server decides at RCPT) and on one that does (at MAIL).

use crate::common::*;
use std::net::SocketAddr;

const FORMS: &[&str] = &[
    "victim@example.org",
    "@relay.example:victim@example.org",
    "@a.example,@b.example:victim@example.org",
    "victim%example.org@mx.test.example",
    "victim%example.org@localhost",
    "\"victim@example.org\"@mx.test.example",
    "\"victim\"@example.org",
    "example.org!victim@mx.test.example",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "postmaster@mx.test.example",
    "victim@localhost",
    "VICTIM@EXAMPLE.ORG",
];

#[test]
fn untrusted_unauthenticated_clients_cannot_relay_any_address_form() {
    let s = Server::start(Setup::default());
    let mut c = Client::connect(s.addr("open")).greeting();
    c.expect("EHLO attacker.example", 250);
    for (i, form) in FORMS.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            // Stay under the per-session error limit; reconnect.
            c = Client::connect(s.addr("open")).greeting();
            c.expect("EHLO attacker.example", 250);
        }
        c.expect("RSET", 250);
        c.expect("MAIL FROM:<attacker@example.net>", 250);
        let r = c.cmd(&format!("RCPT TO:<{form}>"));
        assert!(r.code >= 500, "{form} was accepted: {r}");
    }
    let mut c = Client::connect(s.addr("open")).greeting();
    c.expect("EHLO attacker.example", 250);
    c.expect("MAIL FROM:<attacker@example.net>", 250);
    let r = c.cmd("RCPT TO:<victim@example.org>");
    assert_eq!(r.code, 554);
    assert!(r.text().starts_with("5.7.1"), "{r}");
    assert_eq!(c.cmd("DATA").code, 554, "no recipients, no DATA");
    assert!(s.outbox().is_empty());
}

#[test]
fn submission_ports_require_auth_before_mail() {
    let s = Server::start(Setup::default());
    let mut c = Client::connect(s.addr("submission")).greeting();
    c.expect("EHLO attacker.example", 250);
    c.starttls();
    c.expect("EHLO attacker.example", 250);
    let r = c.expect("MAIL FROM:<attacker@example.net>", 530);
    assert!(r.text().starts_with("5.7.0"), "{r}");
    c.expect("RCPT TO:<victim@example.org>", 503);

    let mut c = Client::connect_tls(s.addr("submissions")).greeting();
    c.expect("EHLO attacker.example", 250);
    c.expect("MAIL FROM:<attacker@example.net>", 530);
}

#[test]
fn trusted_network_may_relay_without_auth() {
    let s = Server::start(Setup::default());
    let mut c = Client::connect(s.addr("local")).greeting();
    c.expect("EHLO cron.local", 250);
    let r = c.send_mail("root@localhost", &["admin@example.org"], "Subject: cron\n\nok\n");
    assert_eq!(r.code, 250, "{r}");
}

/// On a dual-stack `[::]` listener, IPv4 clients arrive as
/// `::ffff:a.b.c.d`; they must still match IPv4 `trusted_networks`, and be
/// logged and stamped as the IPv4 address they are.
#[test]
fn dual_stack_listeners_see_ipv4_clients_as_ipv4() {
    let s = Server::start(Setup {
        listeners: r#"
[[listeners]]
name = "dual"
address = "[::]:0"
tls = "none"
trusted_networks = ["127.0.0.0/8"]
"#
        .into(),
        ..Setup::default()
    });
    let port = s.addr("dual").port();
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], port))).greeting();
    c.expect("EHLO cron.local", 250);
    let r = c.send_mail("root@localhost", &["admin@example.org"], "Subject: cron\n\nok\n");
    assert_eq!(r.code, 250, "{r}");
    s.wait_queue_empty();
    let outbox = s.outbox();
    assert_eq!(outbox.len(), 1);
    assert!(outbox[0].contains("[127.0.0.1]"), "{}", outbox[0]);
    assert!(!outbox[0].contains("::ffff:"), "{}", outbox[0]);
    assert!(!s.log_text().contains("::ffff:"));
    // Not trusted over IPv6: the relay rule still holds there.
    let mut c = Client::connect(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))).greeting();
    c.expect("EHLO attacker.example", 250);
    c.expect("MAIL FROM:<root@localhost>", 250);
    assert_eq!(c.cmd("RCPT TO:<admin@example.org>").code, 554);
}
