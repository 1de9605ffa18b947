//! The SDK's public API as a plugin author uses it, run against the test host.

use std::cell::Cell;

use mailferry_plugin_sdk::testing::{PasswordCheck, TestHost, TestMessage};
use mailferry_plugin_sdk::{
    export_plugin, parse_config, Address, Failure, Host, Level, Message, NoteValue, Plugin, Reply, Scope, Verdict,
    BODY_CHUNK,
};
use serde::Deserialize;

/// Overrides some hooks, including one that returns `Continue`.
struct Partial {
    greeting: String,
    calls: Cell<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialConfig {
    #[serde(default = "default_greeting")]
    greeting: String,
    #[serde(default)]
    fail: bool,
}

fn default_greeting() -> String {
    "hello".into()
}

impl Plugin for Partial {
    type Config = PartialConfig;

    fn new(config: PartialConfig, host: &Host) -> Result<Self, String> {
        if config.fail {
            return Err("told to fail".into());
        }
        host.debug("starting");
        Ok(Partial { greeting: config.greeting, calls: Cell::new(0) })
    }

    fn ehlo(&self, host: &Host, name: &str) -> Verdict {
        self.calls.set(self.calls.get() + 1);
        host.info(format!("{} {name}", self.greeting));
        Verdict::Continue
    }

    fn mail(&self, host: &Host, sender: &Address) -> Verdict {
        host.set_note(Scope::Transaction, "sender-domain", sender.domain_lowercase().unwrap_or_default());
        host.set_note(Scope::Connection, "mails", self.calls.get() as i64);
        if sender.is_null() {
            return Verdict::deny(550, "5.7.1", "no bounces here");
        }
        Verdict::accept()
    }

    fn data(&self, host: &Host, msg: &Message) -> Verdict {
        let removed = msg.remove_header("X-Secret");
        msg.prepend_header("Received", "by test").unwrap();
        msg.add_header("X-Removed", &removed.to_string()).unwrap();
        if let Err(e) = msg.add_header("Bad Name", "x") {
            host.warn(e);
        }
        if let Err(e) = msg.add_header("X-Inject", "a\r\nBcc: evil@example.org") {
            host.warn(e);
        }
        let body: Vec<u8> = msg.body_chunks().flatten().collect();
        host.info(format!("size={} body={} chunks={}", msg.size(), body.len(), msg.body_chunks().count()));
        Verdict::Continue
    }

    fn queue(&self, host: &Host, msg: &Message) -> Verdict {
        match host.send_now("upstream", msg) {
            Ok(reply) => Verdict::Accept(Some(reply)),
            Err(f) if f.temporary => Verdict::DenySoft(Some(f.reply)),
            Err(f) => Verdict::Deny(Some(f.reply)),
        }
    }
}

export_plugin!(Partial);

#[test]
fn default_hooks_answer_none_and_overridden_continue_answers_some() {
    let host = TestHost::new();
    let p = host.instantiate::<Partial>().unwrap();
    assert_eq!(p.connect(), None);
    assert_eq!(p.auth("PLAIN", "a", "b"), None);
    assert_eq!(p.rcpt("a@example.org"), None);
    assert_eq!(p.ehlo("client.example"), Some(Verdict::Continue));
    // The flag of one default call must not leak into the next call.
    assert_eq!(p.connect(), None);
    assert_eq!(p.ehlo("client.example"), Some(Verdict::Continue));
    assert_eq!(p.plugin().calls.get(), 2);
    host.assert_logged(Level::Info, "hello client.example");
    host.assert_logged(Level::Debug, "starting");
}

#[test]
fn config_is_parsed_and_errors_are_reported() {
    let host = TestHost::new().config_toml(r#"greeting = "hi""#);
    host.instantiate::<Partial>().unwrap().ehlo("x");
    host.assert_logged(Level::Info, "hi x");

    let err = TestHost::new().config_toml("greting = 1").instantiate::<Partial>().err().unwrap();
    assert!(err.contains("invalid configuration") && err.contains("greting"), "{err}");
    let err = TestHost::new().config_toml("greeting = ").instantiate::<Partial>().err().unwrap();
    assert!(err.contains("invalid configuration"), "{err}");
    let err = TestHost::new().config_toml("fail = true").instantiate::<Partial>().err().unwrap();
    assert_eq!(err, "told to fail");
}

#[test]
fn unit_like_configs_accept_an_empty_table_only() {
    #[derive(Deserialize, Debug, PartialEq)]
    struct NoConfig;
    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Empty {}
    assert_eq!(parse_config::<()>(""), Ok(()));
    assert_eq!(parse_config::<()>("# only a comment\n"), Ok(()));
    assert_eq!(parse_config::<NoConfig>(""), Ok(NoConfig));
    assert_eq!(parse_config::<Empty>(""), Ok(Empty {}));
    assert!(parse_config::<()>("a = 1").is_err());
    assert!(parse_config::<NoConfig>("a = 1").is_err());
    assert!(parse_config::<Empty>("a = 1").is_err());
}

#[test]
fn notes_envelope_and_verdict_replies() {
    let host = TestHost::new().envelope("", ["bob@example.org"]);
    host.set_note(Scope::Connection, "preset", true);
    let p = host.instantiate::<Partial>().unwrap();
    assert_eq!(
        p.mail(""),
        Some(Verdict::Deny(Some(Reply { code: 550, enhanced: Some("5.7.1".into()), text: "no bounces here".into() })))
    );
    assert_eq!(p.mail(Address::new("a@Example.ORG").with_param("SIZE", Some("10"))), Some(Verdict::Accept(None)));
    assert_eq!(host.note(Scope::Transaction, "sender-domain"), Some(NoteValue::Text("example.org".into())));
    assert_eq!(host.note(Scope::Connection, "mails"), Some(NoteValue::Integer(0)));
    assert_eq!(host.notes(Scope::Connection).len(), 2);
    host.clear_transaction();
    assert_eq!(host.note(Scope::Transaction, "sender-domain"), None);
    assert_eq!(host.note(Scope::Connection, "preset"), Some(NoteValue::Flag(true)));
    assert_eq!(host.host().envelope(), None);
}

#[test]
fn message_edits_are_validated_and_visible() {
    let host = TestHost::new();
    let p = host.instantiate::<Partial>().unwrap();
    let body = vec![b'x'; BODY_CHUNK as usize * 2 + 10];
    let mut raw = b"From: a@example.org\nX-Secret: 1\nSubject: folded\n  line\nx-secret: 2\n\n".to_vec();
    raw.extend_from_slice(&body);
    let msg = TestMessage::parse(&raw);
    assert_eq!(msg.header("subject"), ["folded  line"]);
    assert_eq!(p.data(&msg), Some(Verdict::Continue));
    let names: Vec<String> = msg.headers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["Received", "From", "Subject", "X-Removed"]);
    assert_eq!(msg.header("X-Removed"), ["2"]);
    assert!(msg.header("X-Inject").is_empty(), "CR/LF in a value must be refused");
    host.assert_logged(Level::Warn, "invalid header field name");
    host.assert_logged(Level::Warn, "CR, LF or NUL");
    let size = msg.to_bytes().len();
    host.assert_logged(Level::Info, &format!("size={size} body={} chunks=3", body.len()));
    assert!(msg.to_bytes().starts_with(b"Received: by test\r\nFrom: a@example.org\r\n"));
    assert_eq!(msg.body(), &body[..]);
}

#[test]
fn message_without_body_or_separator() {
    let msg = TestMessage::parse("Subject: x\r\n");
    assert_eq!(msg.header("Subject"), ["x"]);
    assert!(msg.body().is_empty());
    // A line that is not a field ends the header section.
    let msg = TestMessage::parse("Subject: x\r\nnot a header\r\nmore\r\n");
    assert_eq!(msg.headers().len(), 1);
    assert_eq!(msg.body(), b"not a header\r\nmore\r\n");
}

#[test]
fn send_now_is_scripted_and_recorded() {
    let host = TestHost::new().envelope("a@example.org", ["b@example.org"]).relay(|relay, msg| {
        assert_eq!(relay, "upstream");
        match msg.header("Subject").first().map(String::as_str) {
            Some("ok") => Ok(Reply::new(250, "2.0.0", "queued as 42")),
            Some("later") => Err(Failure { temporary: true, reply: Reply::new(451, "4.4.1", "busy") }),
            _ => Err(Failure { temporary: false, reply: Reply::new(554, "5.6.0", "no") }),
        }
    });
    let p = host.instantiate::<Partial>().unwrap();
    let ok = TestMessage::parse("Subject: ok\r\n\r\nhi\r\n");
    assert_eq!(p.queue(&ok), Some(Verdict::accept_with(250, "2.0.0", "queued as 42")));
    assert_eq!(p.queue(&TestMessage::parse("Subject: later\r\n\r\n")), Some(Verdict::deny_soft(451, "4.4.1", "busy")));
    assert_eq!(p.queue(&TestMessage::parse("Subject: other\r\n\r\n")), Some(Verdict::deny(554, "5.6.0", "no")));
    let sent = host.sent();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].message, b"Subject: ok\r\n\r\nhi\r\n");
    assert_eq!(sent[0].envelope.as_ref().unwrap().rcpt_to[0].address, "b@example.org");
}

#[test]
fn unscripted_relay_fails_temporarily() {
    let host = TestHost::new();
    let p = host.instantiate::<Partial>().unwrap();
    let verdict = p.queue(&TestMessage::parse("\r\n")).unwrap();
    assert!(matches!(verdict, Verdict::DenySoft(Some(Reply { code: 451, .. }))), "{verdict:?}");
}

#[test]
fn password_verifier_default_and_scripted() {
    let host = TestHost::new();
    let h = host.host();
    assert_eq!(h.verify_password("pw", "{PLAIN}pw"), Ok(true));
    assert_eq!(h.verify_password("pw", "{plain}other"), Ok(false));
    assert!(h.verify_password("pw", "$6$salt$hash").is_err());
    assert_eq!(host.password_checks()[0], PasswordCheck { password: "pw".into(), stored: "{PLAIN}pw".into() });
    let host = TestHost::new().password_verifier(|pw, stored| Ok(stored == format!("hash:{pw}")));
    assert_eq!(host.host().verify_password("x", "hash:x"), Ok(true));
}

#[test]
fn connection_can_be_replaced_or_updated() {
    let host = TestHost::new();
    assert_eq!(host.host().connection(), TestHost::default_connection());
    host.update_connection(|c| c.auth_user = Some("alice".into()));
    assert_eq!(host.host().connection().auth_user.as_deref(), Some("alice"));
}

#[test]
fn verdict_helpers_and_display() {
    assert!(Verdict::Continue.is_continue());
    assert_eq!(Verdict::accept().reply(), None);
    let v = Verdict::deny_disconnect(421, "4.7.0", "bye");
    assert_eq!(v.reply().unwrap().to_string(), "421 4.7.0 bye");
    assert_eq!(Reply::new(250, "", "ok").to_string(), "250 ok");
    let f = Failure { temporary: true, reply: Reply::new(451, "4.4.1", "no answer") };
    assert_eq!(f.to_string(), "temporary failure: 451 4.4.1 no answer");
}
