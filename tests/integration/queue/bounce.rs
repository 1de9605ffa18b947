//! Bounces: a permanent refusal, or a temporary one past `max_age_secs`,
//! becomes a DSN to the sender, taken apart by Python's `email` package.

use super::*;

/// How upstream.py's meta shows the null reverse-path.
const NULL_SENDER: &str = "<>";

/// A DSN taken apart by Python's `email` package (an independent MIME
/// parser).
#[derive(Debug)]
struct ParsedDsn {
    json: serde_json::Value,
}

const PARSE_DSN_PY: &str = r#"
import email, json, sys
from email import policy
raw = open(sys.argv[1], 'rb').read()
m = email.message_from_bytes(raw, policy=policy.compat32)
out = {
    "content_type": m.get_content_type(),
    "report_type": m.get_param("report-type"),
    "from": m["From"], "to": m["To"], "subject": m["Subject"],
    "auto_submitted": m["Auto-Submitted"],
    "defects": [type(d).__name__ for d in m.defects],
    "parts": [],
}
for p in (m.get_payload() if m.is_multipart() else []):
    d = {"type": p.get_content_type(), "defects": [type(x).__name__ for x in p.defects]}
    if p.get_content_type() == "message/delivery-status":
        d["blocks"] = [[[k, v] for k, v in b.items()] for b in p.get_payload()]
    else:
        payload = p.get_payload(decode=True)
        d["text"] = payload.decode("utf-8", "replace") if payload is not None else None
    out["parts"].append(d)
print(json.dumps(out))
"#;

fn parse_dsn(eml: &[u8]) -> ParsedDsn {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dsn.eml");
    std::fs::write(&file, eml).unwrap();
    let out = run_bounded(Command::new("python3").args(["-c", PARSE_DSN_PY]).arg(&file), Duration::from_secs(30));
    assert!(
        out.status.success(),
        "python3 could not parse the DSN: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(eml)
    );
    ParsedDsn { json: serde_json::from_slice(&out.stdout).unwrap() }
}

impl ParsedDsn {
    fn part(&self, content_type: &str) -> &serde_json::Value {
        self.json["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == content_type)
            .unwrap_or_else(|| panic!("no {content_type} part in the DSN: {:#}", self.json))
    }

    /// The per-recipient blocks of the delivery-status part, field names
    /// lowercased, values with whitespace collapsed.
    fn recipient_blocks(&self) -> Vec<BTreeMap<String, String>> {
        let blocks = self.part("message/delivery-status")["blocks"].as_array().unwrap().clone();
        assert!(blocks.len() >= 2, "a per-message block and at least one per-recipient block: {:#}", self.json);
        blocks
            .iter()
            .map(|b| {
                b.as_array()
                    .unwrap()
                    .iter()
                    .map(|kv| {
                        let v = kv[1].as_str().unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
                        (kv[0].as_str().unwrap().to_ascii_lowercase(), v)
                    })
                    .collect::<BTreeMap<_, _>>()
            })
            .filter(|b| b.contains_key("final-recipient"))
            .collect()
    }
}

/// Asserts the shape every DSN must have and returns its one recipient block.
fn check_dsn(dsn: &Stored, original_subject: &str, body_marker: &str, rcpt: &str) -> BTreeMap<String, String> {
    // Null reverse-path, to the original sender. aiosmtpd records the null
    // reverse-path of `MAIL FROM:<>` as "<>" (its address parser's
    // addr_spec of an empty angle address); any real address would be bare.
    assert_eq!(dsn.meta["mail_from"], NULL_SENDER, "a DSN goes out with MAIL FROM:<>: {}", dsn.meta);
    assert_eq!(dsn.meta["rcpt_tos"], serde_json::json!(["alice@example.com"]), "{}", dsn.meta);
    let raw = String::from_utf8_lossy(&dsn.eml);
    assert!(!raw.contains(body_marker), "the DSN must not carry the original body:\n{raw}");
    let p = parse_dsn(&dsn.eml);
    assert_eq!(p.json["content_type"], "multipart/report", "{:#}", p.json);
    assert_eq!(p.json["report_type"], "delivery-status", "{:#}", p.json);
    assert_eq!(p.json["defects"], serde_json::json!([]), "MIME defects: {:#}", p.json);
    let headers = p.part("text/rfc822-headers")["text"].as_str().unwrap().to_string();
    assert!(headers.contains(&format!("Subject: {original_subject}")), "original headers returned: {headers}");
    assert!(!headers.contains(body_marker), "body in the returned headers: {headers}");
    let blocks = p.recipient_blocks();
    assert_eq!(blocks.len(), 1, "one recipient reported: {blocks:#?}");
    let b = blocks.into_iter().next().unwrap();
    assert_eq!(b["final-recipient"], format!("rfc822; {rcpt}"), "{b:#?}");
    assert_eq!(b["action"], "failed", "{b:#?}");
    b
}

fn is_status(s: &str, class: char) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[0] == class.to_string()
        && parts[1..].iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn permanent_refusal_bounces_with_a_dsn_to_the_sender() {
    let started = Instant::now();
    let up = Upstream::start();
    let server = start_server(up.verified_relay(), None);
    let mut c = submitter(&server);
    let marker = "BODY-MARKER-c0ffee-never-in-a-bounce";
    let original = format!(
        "From: alice@example.com\r\nTo: good@example.org, permfail-x@example.org\r\nSubject: dsn test 42\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <dsn.42@client.example>\r\n\r\n{marker}\r\nsecond line\r\n"
    );
    let rcpts = ["good@example.org", "permfail-x@example.org"];
    let id = assert_queued(&send(&mut c, "alice@example.com", &rcpts, original.as_bytes()));
    c.expect("QUIT", 221);

    let msgs = wait_stored(&out_of(&up), 2, Duration::from_secs(20), &server);
    let (dsns, mails): (Vec<&Stored>, Vec<&Stored>) = msgs.iter().partition(|m| m.meta["mail_from"] == NULL_SENDER);
    assert_eq!(mails.len(), 1, "one delivery of the message");
    assert_eq!(dsns.len(), 1, "one DSN");
    let m = mails[0];
    assert_eq!(m.meta["mail_from"], "alice@example.com");
    assert_eq!(m.meta["rcpt_tos"], serde_json::json!(["good@example.org"]), "only the good recipient: {}", m.meta);
    assert_same_bytes(&strip_added(&m.eml, original.as_bytes()), original.as_bytes(), "delivered copy");

    let b = check_dsn(dsns[0], "dsn test 42", marker, "permfail-x@example.org");
    assert!(is_status(&b["status"], '5'), "Status: 5.x.x: {b:#?}");
    assert_eq!(b["status"], "5.1.1", "the upstream's enhanced code: {b:#?}");
    let diag = b.get("diagnostic-code").cloned().unwrap_or_default();
    assert!(diag.contains("550") && diag.contains("no such user"), "the upstream's reply as diagnostic: {b:#?}");

    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(20), &|| server.log_text());
    server.wait_log(&["bounce queued", &id]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(up.messages().len(), 2, "nothing more (a bounce of the bounce, a second copy)");
    eprintln!("permanent_refusal_bounces_with_a_dsn_to_the_sender: {:?}", started.elapsed());
}

#[test]
fn temporary_refusal_is_retried_then_expires_into_a_bounce() {
    let started = Instant::now();
    let up = Upstream::start();
    let server = start_server(up.verified_relay(), Some(3));
    let mut c = submitter(&server);
    let marker = "BODY-MARKER-tempfail-7d1e";
    let original = format!(
        "From: alice@example.com\r\nTo: tempfail-x@example.org\r\nSubject: tempfail test 7\r\n\
Date: Mon, 2 Jun 2025 10:00:00 +0000\r\nMessage-ID: <temp.7@client.example>\r\n\r\n{marker}\r\n"
    );
    let id = assert_queued(&send(&mut c, "alice@example.com", &["tempfail-x@example.org"], original.as_bytes()));
    c.expect("QUIT", 221);
    let submitted = Instant::now();

    let msgs = wait_stored(&out_of(&up), 1, Duration::from_secs(20), &server);
    let bounced_after = submitted.elapsed();
    assert_eq!(msgs.len(), 1, "only the DSN reaches the upstream");
    let b = check_dsn(&msgs[0], "tempfail test 7", marker, "tempfail-x@example.org");
    assert!(is_status(&b["status"], '4'), "Status: 4.x.x for an expired message: {b:#?}");
    let diag = b.get("diagnostic-code").cloned().unwrap_or_default();
    assert!(diag.contains("try later"), "the last upstream reply in the diagnostic: {b:#?}");

    let log = server.log_text();
    let deferred = log.lines().filter(|l| l.contains("\"deferred\"") && l.contains(&id)).count();
    assert!(deferred >= 3, "several attempts before giving up (max_age 3 s, retry every 1 s): {deferred}\n{log}");
    assert!(log.lines().any(|l| l.contains("expired") && l.contains(&id)), "{log}");
    assert!(bounced_after >= Duration::from_secs(2), "bounced too early: {bounced_after:?}");
    wait_spool_empty(&server.path("state/queue"), Duration::from_secs(20), &|| server.log_text());
    eprintln!(
        "temporary_refusal_is_retried_then_expires_into_a_bounce: {deferred} attempts, bounce after {bounced_after:?}; {:?}",
        started.elapsed()
    );
}
