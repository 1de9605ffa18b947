//! Lookups that fail are reported as failed lookups, never as absent records: a server that does
//! not answer, SERVFAIL, REFUSED.

use super::*;

#[test]
fn doctor_reports_an_unreachable_server_as_a_failed_lookup_not_as_absent_records() {
    let keys = standard_keys();
    let addr = dead_port();
    let run = doctor_bounded(&keys.path(), &addr.to_string(), DEAD_SERVER_TIMEOUT);
    assert_ne!(run.code, Some(0), "{}", run.dump());
    assert_eq!(run.code, Some(1), "{}", run.dump());
    assert!(run.stderr.trim().is_empty(), "the report goes to stdout: {}", run.dump());
    let report = &run.stdout;
    assert!(report.starts_with("DNS check of example.com\n"), "{}", run.dump());
    let text = run.flat();

    // Every record's lookup is reported as failed...
    for check in ["SPF at example.com", "DKIM r._domainkey", "DKIM e._domainkey", "DMARC at", "MX at example.com"] {
        assert_eq!(status_of(&run, check), "FAIL", "{}", run.dump());
    }
    assert!(text.contains("could not resolve the TXT records of example.com"), "{report}");
    assert!(text.contains("could not resolve _dmarc.example.com"), "{report}");
    assert!(text.contains("could not resolve the MX records"), "{report}");
    assert!(text.contains("--dns-server"), "the fix points at the server: {report}");
    // ...and nothing claims a record is absent.
    for absent in [
        "no SPF record",
        "no DMARC record",
        "no MX record",
        "no record",
        "no such record",
        "does not exist",
        "is missing",
    ] {
        assert!(!text.contains(absent), "an unreachable server is not an absent record ({absent:?}):\n{report}");
    }
    // No PASS can come from a server that never answered.
    assert!(verdicts(report).iter().all(|(s, _)| s != "PASS"), "{report}");
}

#[test]
fn doctor_reports_server_errors_as_failed_lookups() {
    let setup = Setup::new();

    // SERVFAIL for the DMARC name only: that check fails as a lookup failure, the rest passes.
    let behaviour =
        Behaviour { failing: vec![("_dmarc.example.com".into(), ResponseCode::ServFail)], ..Behaviour::default() };
    let run = setup.doctor_with(setup.zone(), behaviour);
    assert_failed(&run);
    assert_eq!(status_of(&run, "DMARC at _dmarc.example.com"), "FAIL");
    let text = run.flat();
    assert!(text.contains("could not resolve _dmarc.example.com"), "{}", run.stdout);
    assert!(!text.contains("no DMARC record"), "SERVFAIL is not an absent record:\n{}", run.stdout);
    assert_eq!(summary(&run.stdout).2, 1, "{}", run.stdout);

    // SERVFAIL for a domain the SPF record includes: the include's own lookups cannot be counted,
    // which is a warning, not a claim that the include does not exist.
    let behaviour =
        Behaviour { failing: vec![("amazonses.com".into(), ResponseCode::ServFail)], ..Behaviour::default() };
    let run = setup.doctor_with(setup.zone(), behaviour);
    assert_eq!(run.code, Some(0), "warnings only: {}", run.dump());
    assert_eq!(status_of(&run, "SPF included records"), "WARN");
    let text = run.flat();
    assert!(text.contains("could not resolve include:amazonses.com"), "{}", run.stdout);
    assert!(!text.contains("does not exist"), "{}", run.stdout);

    // REFUSED for everything, as a server not authoritative for the zone answers.
    let behaviour = Behaviour { failing: vec![("*".into(), ResponseCode::Refused)], ..Behaviour::default() };
    let run = setup.doctor_with(setup.zone(), behaviour);
    assert_failed(&run);
    let text = run.flat();
    assert!(text.contains("could not resolve the TXT records of example.com"), "{}", run.stdout);
    for absent in ["no SPF record", "no DMARC record", "no MX record", "no record", "does not exist"] {
        assert!(!text.contains(absent), "REFUSED is not an absent record ({absent:?}):\n{}", run.stdout);
    }
    assert!(verdicts(&run.stdout).iter().all(|(s, _)| s != "PASS"), "{}", run.stdout);
}
