//! The spoofing matrix: envelope senders and header fields for an
//! authenticated login, unauthenticated trusted-network sessions, and the
//! settings that change the rules.

use std::io::Write;

use mailferry_plugin_sdk::testing::{TestHost, TestMessage, TestPlugin};
use mailferry_plugin_sdk::{Level, NoteValue, Scope, Verdict};

use super::*;

const SENDERS: &str = "\
# login: allowed senders
alice@example.com: sales@example.com, *@alice.example
alice@example.com: *@*.lists.example.com
bob@example.com: bob.builder@example.com, *@bob.example
";

struct Setup {
    host: TestHost,
    plugin: TestPlugin<SenderPolicy>,
    file: tempfile::NamedTempFile,
}

fn setup_with(config: &str, senders: &str) -> Setup {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(senders.as_bytes()).unwrap();
    let host = TestHost::new().config_toml(&format!("file = {:?}\n{config}", file.path().to_str().unwrap()));
    let plugin = host.instantiate::<SenderPolicy>().unwrap_or_else(|e| panic!("{e}"));
    Setup { host, plugin, file }
}

/// Logged in as `login`, with the senders file above.
fn login_as(login: &str, config: &str) -> Setup {
    let s = setup_with(config, SENDERS);
    s.host.update_connection(|c| c.auth_user = Some(login.into()));
    s
}

fn alice() -> Setup {
    login_as("alice@example.com", "")
}

/// Unauthenticated, from a trusted network.
fn trusted(config: &str) -> Setup {
    let s = setup_with(config, SENDERS);
    s.host.update_connection(|c| c.trusted = true);
    s
}

fn refused(text: &str) -> Option<Verdict> {
    Some(Verdict::deny(553, "5.7.1", text))
}

fn malformed(text: &str) -> Option<Verdict> {
    Some(Verdict::deny(550, "5.6.0", text))
}

fn ok() -> Option<Verdict> {
    Some(Verdict::Continue)
}

/// A message with these header lines (`\n`-separated) and a short body.
fn message(fields: &str) -> TestMessage {
    TestMessage::parse(format!("{fields}\nTo: someone@example.org\nSubject: test\n\nbody\n"))
}

// --- The envelope sender of an authenticated login -------------------------

#[test]
fn envelope_matrix_for_an_authenticated_login() {
    let s = alice();
    let allowed = [
        "alice@example.com",            // the login itself (Gmail "Send mail as")
        "ALICE@Example.COM",            // case variants of the login
        "alice+newsletter@example.com", // subaddress of the login
        r#""alice"@example.com"#,       // quoted, same mailbox
        "sales@example.com",            // a listed alias
        "Sales@EXAMPLE.com",            // its case variant
        "sales+q3@example.com",         // its subaddress
        "anyone@alice.example",         // *@domain
        "x@ALICE.example",              // *@domain, case
        "x@news.lists.example.com",     // *@*.domain
    ];
    for sender in allowed {
        assert_eq!(s.plugin.mail(sender), ok(), "{sender} should be allowed");
    }
    let forbidden = [
        "bob@example.com",                     // another user
        "bob.builder@example.com",             // another user's alias
        "x@bob.example",                       // another user's domain
        "ceo@example.com",                     // same domain, not listed
        "alice@example.org",                   // the login's local part, other domain
        "alice@evil.example",                  // other domain
        "alice@example.com.evil.example",      // suffix trick
        "x@lists.example.com",                 // *@*.domain excludes the domain itself
        "x@sub.alice.example",                 // *@domain excludes subdomains
        "alice-tag@example.com",               // not the configured separator
        "+alice@example.com",                  // nothing before the separator
        r#""alice@example.com"@evil.example"#, // quoted @ does not split
        "alicex@example.com",                  // prefix of the login
    ];
    for sender in forbidden {
        let verdict = s.plugin.mail(sender);
        let expect = refused(&format!("<{sender}>: not allowed to send as this address (login alice@example.com)"));
        assert_eq!(verdict, expect, "{sender} should be refused");
    }
}

#[test]
fn a_refusal_is_logged_with_login_address_field_and_rules_but_the_reply_reveals_no_aliases() {
    let s = alice();
    let verdict = s.plugin.mail("bob.builder@example.com").unwrap();
    let text = verdict.reply().unwrap().text.clone();
    assert!(!text.contains("sales") && !text.contains("alice.example"), "{text}");
    let log = s.host.logs().into_iter().find(|r| r.level == Level::Warn).expect("a warning").message;
    for needle in [
        "refused envelope sender \"bob.builder@example.com\"",
        "login \"alice@example.com\"",
        "the login itself: alice@example.com",
        "line 2: sales@example.com",
        "line 3: *@*.lists.example.com",
    ] {
        assert!(log.contains(needle), "{needle:?} missing from {log:?}");
    }
    assert!(!log.contains("bob.builder@example.com,"), "bob's rules are not alice's: {log}");
}

#[test]
fn an_allowed_sender_is_logged_at_debug_level_with_its_rule() {
    let s = alice();
    s.plugin.mail("sales@example.com");
    s.host.assert_logged(Level::Debug, "login \"alice@example.com\" may use envelope sender \"sales@example.com\"");
    s.host.assert_logged(Level::Debug, "line 2: sales@example.com");
}

#[test]
fn null_sender_is_allowed_by_default_and_refusable() {
    let s = alice();
    assert_eq!(s.plugin.mail(""), ok());
    let s = login_as("alice@example.com", "allow_null_sender = false");
    assert_eq!(s.plugin.mail(""), refused("<>: null sender not allowed (login alice@example.com)"));
    s.host.assert_logged(Level::Warn, "refused the null sender for login \"alice@example.com\"");
}

#[test]
fn local_part_case_and_subaddresses_are_settings() {
    let s = login_as("alice@example.com", "case_sensitive_local_parts = true");
    assert_eq!(s.plugin.mail("alice@EXAMPLE.com"), ok(), "domains always ignore case");
    assert!(s.plugin.mail("Alice@example.com").unwrap() != Verdict::Continue);
    assert!(s.plugin.mail("SALES@example.com").unwrap() != Verdict::Continue);
    let s = login_as("alice@example.com", "allow_subaddress = false");
    assert!(s.plugin.mail("alice+tag@example.com").unwrap() != Verdict::Continue);
    assert_eq!(s.plugin.mail("alice@example.com"), ok());
    let s = login_as("alice@example.com", "subaddress_separator = \"+-\"");
    assert_eq!(s.plugin.mail("alice-tag@example.com"), ok());
    assert_eq!(s.plugin.mail("alice+tag@example.com"), ok());
}

#[test]
fn allow_login_false_leaves_only_the_listed_senders() {
    let s = login_as("alice@example.com", "allow_login = false");
    assert!(s.plugin.mail("alice@example.com").unwrap() != Verdict::Continue);
    assert_eq!(s.plugin.mail("sales@example.com"), ok());
}

#[test]
fn a_login_that_is_not_an_address_has_only_its_listed_senders() {
    let s = setup_with("", "carol: carol@example.com\n");
    s.host.update_connection(|c| c.auth_user = Some("carol".into()));
    assert_eq!(s.plugin.mail("carol@example.com"), ok());
    assert_eq!(
        s.plugin.mail("carol@example.org"),
        refused("<carol@example.org>: not allowed to send as this address (login carol)")
    );
}

#[test]
fn login_lines_match_like_auth_flat_file() {
    // The client may type the domain in any case; the local part is exact.
    let s = login_as("alice@EXAMPLE.com", "");
    assert_eq!(s.plugin.mail("sales@example.com"), ok());
    let s = login_as("Alice@example.com", "");
    assert!(s.plugin.mail("sales@example.com").unwrap() != Verdict::Continue);
}

#[test]
fn star_allows_every_address_but_not_the_null_sender_when_refused() {
    let s = setup_with("allow_null_sender = false", "app@example.com: *\n");
    s.host.update_connection(|c| c.auth_user = Some("app@example.com".into()));
    assert_eq!(s.plugin.mail("whoever@anywhere.example"), ok());
    assert!(s.plugin.mail("").unwrap() != Verdict::Continue);
}

#[test]
fn replies_stay_printable_ascii() {
    let s = login_as("jörg@example.com", "");
    let verdict = s.plugin.mail("jörg@bücher.example").unwrap();
    assert_eq!(
        verdict,
        Verdict::deny(
            553,
            "5.7.1",
            "<j?rg@b?cher.example>: not allowed to send as this address (login j?rg@example.com)"
        )
    );
    let long = format!("{}@example.org", "x".repeat(300));
    let text = s.plugin.mail(long.as_str()).unwrap().reply().unwrap().text.clone();
    assert!(text.len() < 400 && text.contains("x..."), "{text}");
}

// --- The senders file ------------------------------------------------------

#[test]
fn the_login_itself_never_needs_the_file_but_aliases_do() {
    let s = alice();
    std::fs::remove_file(s.file.path()).unwrap();
    assert_eq!(s.plugin.mail("alice@example.com"), ok());
    assert_eq!(s.plugin.data(&message("From: Alice <alice@example.com>")), ok());
    assert!(s.host.logs().iter().all(|r| r.level != Level::Error));
    assert_eq!(
        s.plugin.mail("sales@example.com"),
        Some(Verdict::deny_soft(451, "4.3.0", "sender policy unavailable, try again later"))
    );
    s.host.assert_logged(Level::Error, "cannot read senders file");
    assert_eq!(
        s.plugin.data(&message("From: sales@example.com")),
        Some(Verdict::deny_soft(451, "4.3.0", "sender policy unavailable, try again later"))
    );
}

#[test]
fn the_file_is_read_again_for_every_transaction() {
    let s = alice();
    assert!(s.plugin.mail("new-alias@example.com").unwrap() != Verdict::Continue);
    std::fs::write(s.file.path(), "alice@example.com: new-alias@example.com\n").unwrap();
    assert_eq!(s.plugin.mail("new-alias@example.com"), ok());
    assert!(s.plugin.mail("sales@example.com").unwrap() != Verdict::Continue, "the old line is gone");
}

#[test]
fn malformed_lines_are_logged_and_grant_nothing() {
    let s = setup_with("", "alice@example.com: *@, ok@example.com\ngarbage\n");
    s.host.update_connection(|c| c.auth_user = Some("alice@example.com".into()));
    assert_eq!(s.plugin.mail("ok@example.com"), ok());
    s.host.assert_logged(Level::Error, "line 1: \"*@\" is not an address");
    s.host.assert_logged(Level::Error, "line 2: expected `login: sender, sender …`");
    assert!(s.plugin.mail("x@example.com").unwrap() != Verdict::Continue);
}

// --- Senders from the database (auth.senders) ------------------------------

/// `source = "sql"` (plus `config`), logged in as `login`, with the
/// `auth.senders` note auth-sql would set, if any.
fn from_database(login: &str, config: &str, senders: Option<&[&str]>) -> TestHost {
    let host = TestHost::new().config_toml(&format!("source = \"sql\"\n{config}"));
    host.update_connection(|c| c.auth_user = Some(login.into()));
    if let Some(senders) = senders {
        let list: Vec<String> = senders.iter().map(|s| s.to_string()).collect();
        host.set_note(Scope::Connection, "auth.senders", list);
    }
    host
}

#[test]
fn the_database_senders_allow_their_addresses_and_domains() {
    let host = from_database(
        "alice@example.com",
        "",
        Some(&["alice.smith@example.com", "@alice.example", "*@*.lists.example.com"]),
    );
    let p = host.instantiate::<SenderPolicy>().unwrap();
    for sender in [
        "alice@example.com",
        "alice.smith@example.com",
        "Alice.Smith+x@EXAMPLE.com",
        "news@alice.example",
        "x@a.lists.example.com",
    ] {
        assert_eq!(p.mail(sender), ok(), "{sender} should be allowed");
    }
    for sender in ["bob@example.com", "x@sub.alice.example", "x@lists.example.com", "alice@alice.example.org"] {
        assert_eq!(
            p.mail(sender),
            refused(&format!("<{sender}>: not allowed to send as this address (login alice@example.com)")),
            "{sender} should be refused"
        );
    }
    host.assert_logged(
        Level::Debug,
        "may use envelope sender \"news@alice.example\" (database (auth.senders): *@alice.example)",
    );
    host.assert_logged(Level::Warn, "database (auth.senders): alice.smith@example.com");
    assert_eq!(p.data(&message("From: Alice <alice.smith@example.com>")), ok());
    assert_eq!(
        p.data(&message("From: ceo@example.com")),
        refused("From: <ceo@example.com>: not allowed to send as this address (login alice@example.com)")
    );
}

#[test]
fn without_the_note_a_login_sends_as_itself_only_and_nothing_fails() {
    // NULL senders, or a login another auth plugin accepted.
    let host = from_database("alice@example.com", "", None);
    let p = host.instantiate::<SenderPolicy>().unwrap();
    assert_eq!(p.mail("alice@example.com"), ok());
    assert_eq!(p.mail("alice+tag@example.com"), ok());
    assert_eq!(
        p.mail("sales@example.com"),
        refused("<sales@example.com>: not allowed to send as this address (login alice@example.com)")
    );
    host.assert_logged(Level::Debug, "no auth.senders note for login \"alice@example.com\"");
    assert!(!host.logs().iter().any(|r| r.level == Level::Error));
    // A login that is not an address has nothing at all.
    let host = from_database("carol", "", None);
    let p = host.instantiate::<SenderPolicy>().unwrap();
    assert!(p.mail("carol@example.com").unwrap() != Verdict::Continue);
    host.assert_logged(Level::Warn, "none: list them in the login's senders column");
}

#[test]
fn malformed_database_entries_are_logged_and_grant_nothing() {
    let host = from_database("alice@example.com", "", Some(&["@", "sales", "ok@example.com, *@exa*mple.com"]));
    let p = host.instantiate::<SenderPolicy>().unwrap();
    assert_eq!(p.mail("ok@example.com"), ok());
    assert!(p.mail("sales@example.com").unwrap() != Verdict::Continue);
    assert!(p.mail("x@example.com").unwrap() != Verdict::Continue);
    host.assert_logged(Level::Error, "database (auth.senders) of login \"alice@example.com\": \"@\" is not an address");
    host.assert_logged(Level::Error, "\"*@exa*mple.com\": the domain is not valid");
    // A note of the wrong type, written by some other plugin: ignored.
    let host = from_database("alice@example.com", "", None);
    host.set_note(Scope::Connection, "auth.senders", NoteValue::Flag(true));
    let p = host.instantiate::<SenderPolicy>().unwrap();
    assert!(p.mail("ok@example.com").unwrap() != Verdict::Continue);
    assert_eq!(p.mail("alice@example.com"), ok());
    host.assert_logged(Level::Error, "the note is not a list of texts");
}

#[test]
fn file_and_database_add_up() {
    let s = setup_with("source = [\"file\", \"sql\"]", SENDERS);
    s.host.update_connection(|c| c.auth_user = Some("alice@example.com".into()));
    s.host.set_note(Scope::Connection, "auth.senders", vec!["@example.net".to_string()]);
    assert_eq!(s.plugin.mail("sales@example.com"), ok(), "from the file");
    assert_eq!(s.plugin.mail("x@example.net"), ok(), "from the database");
    assert!(s.plugin.mail("ceo@example.com").unwrap() != Verdict::Continue);
    s.host.assert_logged(Level::Warn, "line 2: sales@example.com");
    s.host.assert_logged(Level::Warn, "database (auth.senders): *@example.net");
    // The file gone: what the database lists still goes; the rest waits.
    std::fs::remove_file(s.file.path()).unwrap();
    assert_eq!(s.plugin.mail("x@example.net"), ok());
    let unavailable = Some(Verdict::deny_soft(451, "4.3.0", "sender policy unavailable, try again later"));
    assert_eq!(s.plugin.mail("sales@example.com"), unavailable);
    assert_eq!(s.plugin.data(&message("From: x@example.net\nSender: sales@example.com")), unavailable);
    s.host.assert_logged(Level::Error, "cannot read senders file");
}

#[test]
fn trusted_sessions_do_not_read_the_note() {
    let host = TestHost::new().config_toml("source = \"sql\"\ntrusted_senders = [\"*@localhost\"]");
    host.update_connection(|c| c.trusted = true);
    host.set_note(Scope::Connection, "auth.senders", vec!["*".to_string()]);
    let p = host.instantiate::<SenderPolicy>().unwrap();
    assert_eq!(p.mail("root@localhost"), ok());
    assert!(p.mail("ceo@example.com").unwrap() != Verdict::Continue);
}

// --- The header fields at the end of DATA ----------------------------------

#[test]
fn from_matrix_for_an_authenticated_login() {
    let s = alice();
    let allowed = [
        "From: alice@example.com",
        "From: Alice Smith <alice@example.com>",
        "From: \"Smith, Alice\" <ALICE@example.com>",
        "From: Sales <sales@example.com>",
        "From: alice@example.com, sales@example.com\nSender: alice@example.com",
        "From: Team: alice@example.com, Sales <sales@example.com>;",
        "From: \"Alice (alice@example.com)\" <alice@example.com>",
        "From: =?utf-8?q?Alice_=C3=A9?= <alice+x@example.com>",
        "From: \"Alice @ home\" <alice@example.com>",
        "From: sales@example.com\nSender: alice@example.com",
        // Reply-To claims no authorship: not checked.
        "From: alice@example.com\nReply-To: ceo@example.com",
        // No From: this plugin has nothing to check.
        "Sender: alice@example.com",
    ];
    for fields in allowed {
        assert_eq!(s.plugin.data(&message(fields)), ok(), "{fields:?} should pass");
    }
    let suffix = ": not allowed to send as this address (login alice@example.com)";
    let forbidden = [
        ("From: ceo@example.com", "From: <ceo@example.com>"),
        ("From: CEO <ceo@example.com>", "From: <ceo@example.com>"),
        ("From: alice@example.com, ceo@example.com", "From: <ceo@example.com>"),
        ("From: Board: alice@example.com, ceo@example.com;", "From: <ceo@example.com>"),
        ("From: \"ceo@example.com\" <attacker@evil.example>", "From: <attacker@evil.example>"),
        ("From: \"ceo@example.com\" <alice@example.com>", "From: display name shows <ceo@example.com>"),
        ("From: \"The CEO <ceo@example.com>\" <alice@example.com>", "From: display name shows <ceo@example.com>"),
        ("From: =?utf-8?q?ceo=40example=2Ecom?= <alice@example.com>", "From: display name shows <ceo@example.com>"),
        ("From: =?UTF-8?B?Y2VvQGV4YW1wbGUuY29t?= <alice@example.com>", "From: display name shows <ceo@example.com>"),
        (
            "From: \"=?utf-8?q?ceo?= =?utf-8?q?=40example.com?=\" <alice@example.com>",
            "From: display name shows <ceo@example.com>",
        ),
        ("From: \"ｃｅｏ＠ｅｘａｍｐｌｅ．ｃｏｍ\" <alice@example.com>", "From: display name shows <ceo@example.com>"),
        ("From: =?utf-8?q?Chief?= <ceo@example.com>", "From: <ceo@example.com>"),
        ("From: alice@example.com\nSender: ceo@example.com", "Sender: <ceo@example.com>"),
        ("From: bob.builder@example.com\nSender: alice@example.com", "From: <bob.builder@example.com>"),
        ("From: <>", "From: <>"),
    ];
    for (fields, start) in forbidden {
        assert_eq!(s.plugin.data(&message(fields)), refused(&format!("{start}{suffix}")), "{fields:?}");
    }
}

#[test]
fn malformed_or_doubled_fields_are_refused() {
    let s = alice();
    let cases = [
        ("From: alice@example.com\nFrom: ceo@example.com", "message refused: 2 From: fields, RFC 5322 allows one"),
        (
            "From: alice@example.com\nSender: alice@example.com\nSender: ceo@example.com",
            "message refused: 2 Sender: fields, RFC 5322 allows one",
        ),
        ("From: ceo@example.com <alice@example.com>", "message refused: the From: field is not a valid address list"),
        ("From: undisclosed:;", "message refused: the From: field is not a valid address list"),
        ("From: Alice", "message refused: the From: field is not a valid address list"),
        (
            "From: alice@example.com\nSender: <alice@example.com",
            "message refused: the Sender: field is not a valid address list",
        ),
        (
            "From: =?utf-8?q?ceo=40evil.example?=@alice.example",
            "message refused: From: address holds an encoded word (=?...?=)",
        ),
    ];
    for (fields, text) in cases {
        assert_eq!(s.plugin.data(&message(fields)), malformed(text), "{fields:?}");
    }
    s.host.assert_logged(Level::Warn, "2 From: fields");
    s.host.assert_logged(Level::Warn, "holds an encoded word");
}

#[test]
fn header_checks_are_settings() {
    let s = login_as("alice@example.com", "check_display_names = false");
    assert_eq!(s.plugin.data(&message("From: \"ceo@example.com\" <alice@example.com>")), ok());
    assert!(s.plugin.data(&message("From: ceo@example.com")).unwrap() != Verdict::Continue);
    let s = login_as("alice@example.com", "check_headers = false");
    assert_eq!(s.plugin.data(&message("From: ceo@example.com")), ok());
    assert!(s.plugin.mail("ceo@example.com").unwrap() != Verdict::Continue, "the envelope is still checked");
}

#[test]
fn header_refusals_name_the_field_in_the_log() {
    let s = alice();
    s.plugin.data(&message("From: \"ceo@example.com\" <alice@example.com>"));
    s.host.assert_logged(Level::Warn, "refused From: display name \"ceo@example.com\" for login \"alice@example.com\"");
}

// --- Unauthenticated sessions from trusted networks ------------------------

#[test]
fn trusted_network_senders_are_limited_to_trusted_senders() {
    let s = trusted(r#"trusted_senders = ["*@localhost", "cron@host.example.com"]"#);
    assert_eq!(s.plugin.mail("root@localhost"), ok());
    assert_eq!(s.plugin.mail("cron@HOST.example.com"), ok());
    assert_eq!(s.plugin.mail(""), ok());
    let without_auth = ": not allowed to send as this address without authentication";
    assert_eq!(s.plugin.mail("ceo@example.com"), refused(&format!("<ceo@example.com>{without_auth}")));
    assert_eq!(s.plugin.mail("alice@example.com"), refused(&format!("<alice@example.com>{without_auth}")));
    s.host.assert_logged(Level::Warn, "unauthenticated client 192.0.2.10 (trusted network)");
    s.host.assert_logged(Level::Warn, "trusted_senders: *@localhost");
    assert_eq!(s.plugin.data(&message("From: \"Cron Daemon\" <root@localhost>")), ok());
    assert_eq!(
        s.plugin.data(&message("From: ceo@example.com")),
        refused(&format!("From: <ceo@example.com>{without_auth}"))
    );
}

#[test]
fn trusted_senders_default_refuses_everyone_and_says_why() {
    let s = trusted("");
    assert!(s.plugin.mail("root@localhost").unwrap() != Verdict::Continue);
    s.host.assert_logged(Level::Warn, "trusted_senders is empty");
    // The senders file is about logins: it is not read for these sessions.
    std::fs::remove_file(s.file.path()).unwrap();
    assert!(s.plugin.mail("alice@example.com").unwrap() != Verdict::Continue);
    assert!(!s.host.logged(Level::Error, "senders file"));
    let s = trusted(r#"trusted_senders = ["*"]"#);
    assert_eq!(s.plugin.mail("whoever@anywhere.example"), ok());
    assert_eq!(s.plugin.data(&message("From: whoever@anywhere.example")), ok());
}

#[test]
fn an_authenticated_session_on_a_trusted_network_gets_the_login_rules() {
    let s = trusted(r#"trusted_senders = ["*"]"#);
    s.host.update_connection(|c| c.auth_user = Some("alice@example.com".into()));
    assert_eq!(s.plugin.mail("alice@example.com"), ok());
    assert_eq!(
        s.plugin.mail("ceo@example.com"),
        refused("<ceo@example.com>: not allowed to send as this address (login alice@example.com)")
    );
}

#[test]
fn sessions_neither_authenticated_nor_trusted_are_left_to_the_host() {
    let s = setup_with("", SENDERS);
    assert_eq!(s.plugin.mail("ceo@example.com"), ok());
    assert_eq!(s.plugin.data(&message("From: ceo@example.com")), ok());
    assert!(s.host.logs().is_empty());
}

// --- Configuration ---------------------------------------------------------

#[test]
fn configuration_defaults() {
    let p = TestHost::new().instantiate::<SenderPolicy>().unwrap();
    let p = p.plugin();
    assert_eq!(p.sources, [Source::File("/auth/senders".into())]);
    assert!(p.allow_login && p.allow_null_sender && p.check_headers && p.check_display_names);
    assert!(!p.matching.case_sensitive_local_parts);
    assert_eq!(p.matching.subaddress_separators, ['+']);
    assert!(p.trusted.is_empty());
}

#[test]
fn configuration_errors_say_what_to_do() {
    let err = |toml: &str| TestHost::new().config_toml(toml).instantiate::<SenderPolicy>().err().unwrap();
    assert!(err("source = \"ldap\"").contains("use \"file\", \"sql\" or [\"file\", \"sql\"]"));
    assert!(err("source = [\"file\", \"ldap\"]").contains("source = \"ldap\""));
    assert!(err("source = []").contains("list \"file\", \"sql\" or both"));
    assert!(err("source = [\"sql\", \"sql\"]").contains("lists \"sql\" twice"));
    assert!(err("source = 1").contains("expected \"file\", \"sql\" or a list of them"));
    assert!(err("source = \"sql\"\nfile = \"/auth/senders\"").contains("does not list \"file\""));
    assert!(err("file = \" \"").contains("must name the senders file"));
    assert!(err("subaddress_separator = \"\"").contains("allow_subaddress = false"));
    assert!(err("subaddress_separator = \"@\"").contains("cannot separate"));
    assert!(err("trusted_senders = [\"localhost\"]").contains("trusted_senders: \"localhost\" is not an address"));
    assert!(err("trusted_senders = [\"a*@x.example\"]").contains("trusted_senders"));
    assert!(err("trusted_sender = []").contains("unknown field"));
    // An empty separator is fine once subaddresses are off.
    let off = TestHost::new().config_toml("allow_subaddress = false\nsubaddress_separator = \"\"");
    assert!(off.instantiate::<SenderPolicy>().is_ok());
}

#[test]
fn sources_in_the_configuration() {
    let sources =
        |toml: &str| TestHost::new().config_toml(toml).instantiate::<SenderPolicy>().unwrap().plugin().sources.clone();
    assert_eq!(sources("source = \"sql\""), [Source::Sql]);
    assert_eq!(sources("source = [\"sql\"]"), [Source::Sql]);
    assert_eq!(
        sources("source = [\"sql\", \"file\"]\nfile = \"/etc/senders\""),
        [Source::Sql, Source::File("/etc/senders".into())]
    );
}

#[test]
fn only_mail_and_data_are_implemented() {
    let s = alice();
    assert_eq!(s.plugin.connect(), None);
    assert_eq!(s.plugin.rcpt("bob@example.org"), None);
    assert_eq!(s.plugin.queue(&message("From: alice@example.com")), None);
}
