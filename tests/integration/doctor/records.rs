//! `mailferry doctor` against the test's DNS server: the zone `mailferry dns` printed passes,
//! answers too big for UDP are followed over TCP, and each record broken in turn fails with its
//! fix.

use super::*;

#[test]
fn doctor_passes_the_zone_dns_printed() {
    let setup = Setup::new();
    let server = DnsServer::start(setup.zone());
    let started = Instant::now();
    let run = doctor(&setup.keys.path(), &server.addr());
    let took = started.elapsed();
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(run.stderr.trim().is_empty(), "nothing on stderr: {}", run.dump());
    let report = &run.stdout;
    assert!(report.starts_with("DNS check of example.com\n\n"), "{report}");

    let verdicts = verdicts(report);
    let not_pass: Vec<_> = verdicts.iter().filter(|(s, _)| s != "PASS").collect();
    assert!(not_pass.is_empty(), "every check passes: {not_pass:?}\n{report}");
    assert!(!report.contains("FAIL"), "{report}");
    for check in [
        "SPF at example.com",
        "SPF include for Amazon SES",
        "SPF include for Cloudflare Email Routing",
        "SPF policy (all)",
        "SPF DNS lookups",
        "DKIM r._domainkey.example.com (RSA-2048)",
        "DKIM e._domainkey.example.com (Ed25519)",
        "DMARC at _dmarc.example.com",
        "MX at example.com (Cloudflare Email Routing)",
        "Amazon SES MAIL FROM MX at mail.example.com",
        "Amazon SES MAIL FROM SPF at mail.example.com",
    ] {
        assert!(verdicts.iter().any(|(s, n)| s == "PASS" && n == check), "no PASS {check:?} in:\n{report}");
    }
    assert_eq!(summary(report), (verdicts.len(), 0, 0), "{report}");
    assert!(report.trim_end().ends_with(&format!("{} passed, 0 warnings, 0 failures", verdicts.len())));
    // The record found is shown under its check.
    assert!(report.contains(&format!("      {}\n", setup.spf)), "{report}");
    assert!(flat(report).contains("2 of 10, nested includes counted"), "{report}");

    // The questions really reached the server: the long DKIM record among them.
    let asked = server.questions();
    assert!(asked.iter().any(|(_, n, t)| n == "r._domainkey.example.com" && *t == RecordType::TXT), "{asked:?}");
    assert!(asked.iter().any(|(_, n, t)| n == "amazonses.com" && *t == RecordType::TXT), "{asked:?}");
    assert!(took < Duration::from_secs(20), "doctor took {took:?}");
}

#[test]
fn doctor_follows_truncated_answers_over_tcp() {
    let setup = Setup::new();
    let server = DnsServer::start_with(setup.zone(), Behaviour { truncate_udp: true, ..Behaviour::default() });
    let run = doctor(&setup.keys.path(), &server.addr());
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_eq!(summary(&run.stdout).2, 0, "{}", run.stdout);
    let asked = server.questions();
    assert!(
        asked.iter().any(|(t, n, _)| *t == Transport::Tcp && n == "r._domainkey.example.com"),
        "the resolver never retried over TCP: {asked:?}"
    );
}

#[test]
fn doctor_fails_spf_without_the_relay_include_and_shows_the_merged_record() {
    let setup = Setup::new();
    let zone = setup
        .zone()
        .without(D, RecordType::TXT)
        .txt(D, "v=spf1 include:_spf.mx.cloudflare.net ~all")
        .txt(D, "google-site-verification=abcdefghijklmnop");
    let run = setup.doctor(zone);
    assert_failed(&run);
    assert_eq!(status_of(&run, "SPF include for Amazon SES"), "FAIL");
    assert!(run.flat().contains("include:amazonses.com is missing"), "{}", run.stdout);
    // The fix is the one record `dns` asks for.
    assert_eq!(
        fix_of(&run.stdout, "SPF include for Amazon SES"),
        vec!["replace the record with:".to_string(), setup.spf.clone()]
    );
    // The rest is fine.
    assert_eq!(status_of(&run, "SPF at example.com"), "PASS");
    assert_eq!(status_of(&run, "SPF include for Cloudflare Email Routing"), "PASS");
    assert_eq!(status_of(&run, "DMARC at"), "PASS");
    assert_eq!(summary(&run.stdout).2, 1, "{}", run.stdout);
}

#[test]
fn doctor_fails_two_spf_records_and_says_to_merge_them() {
    let setup = Setup::new();
    let zone = setup
        .zone()
        .without(D, RecordType::TXT)
        .txt(D, "v=spf1 include:_spf.mx.cloudflare.net ~all")
        .txt(D, "v=spf1 include:amazonses.com ~all");
    let run = setup.doctor(zone);
    assert_failed(&run);
    assert_eq!(status_of(&run, "SPF at example.com"), "FAIL");
    let text = run.flat();
    assert!(text.contains("2 SPF records: a domain must have exactly one"), "{}", run.stdout);
    // Both live records are shown, each on its own line.
    assert!(run.stdout.contains("      v=spf1 include:_spf.mx.cloudflare.net ~all\n"), "{}", run.stdout);
    assert!(run.stdout.contains("      v=spf1 include:amazonses.com ~all\n"), "{}", run.stdout);
    assert_eq!(
        fix_of(&run.stdout, "SPF at example.com"),
        vec!["delete them and publish this one merged record:".to_string(), setup.spf.clone()]
    );
}

#[test]
fn doctor_fails_a_dkim_record_holding_another_key() {
    let setup = Setup::new();
    // Another key for the same selectors, made by keygen in another folder.
    let mut other = Keys::new();
    let other_rsa = other.keygen(D, "r", "rsa2048");
    let other_ed = other.keygen(D, "e", "ed25519");
    assert_ne!(p_tag(&other_rsa), p_tag(&setup.keys.printed["r._domainkey.example.com"]));
    let zone = setup
        .zone()
        .without("r._domainkey.example.com", RecordType::TXT)
        .txt("r._domainkey.example.com", &other_rsa)
        .without("e._domainkey.example.com", RecordType::TXT)
        .txt("e._domainkey.example.com", &other_ed);
    let run = setup.doctor(zone);
    assert_failed(&run);
    for (check, selector) in
        [("DKIM r._domainkey.example.com (RSA-2048)", "r"), ("DKIM e._domainkey.example.com (Ed25519)", "e")]
    {
        assert_eq!(status_of(&run, check), "FAIL", "{}", run.stdout);
        let local = &setup.keys.printed[&format!("{selector}._domainkey.example.com")];
        assert_eq!(
            fix_of(&run.stdout, check),
            vec![format!("publish this TXT record at {selector}._domainkey.example.com:"), local.clone()],
            "{}",
            run.stdout
        );
    }
    let text = run.flat();
    for file in ["r.pem", "e.pem"] {
        let pem = setup.keys.path().join("example.com").join(file);
        let said = format!("the published key is not the key in {}", pem.display());
        assert!(text.contains(&said), "{}", run.stdout);
    }
    assert_eq!(summary(&run.stdout).2, 2, "{}", run.stdout);
    assert_eq!(status_of(&run, "SPF at example.com"), "PASS");
}

#[test]
fn doctor_fails_without_dmarc_and_gives_the_record() {
    let setup = Setup::new();
    let zone = setup.zone().without("_dmarc.example.com", RecordType::TXT);
    let run = setup.doctor(zone);
    assert_failed(&run);
    assert_eq!(status_of(&run, "DMARC at _dmarc.example.com"), "FAIL");
    assert!(run.flat().contains("no DMARC record"), "{}", run.stdout);
    assert_eq!(
        fix_of(&run.stdout, "DMARC at _dmarc.example.com"),
        vec!["publish a TXT record at _dmarc.example.com:".to_string(), setup.dmarc.clone()]
    );
    assert!(setup.dmarc.starts_with("v=DMARC1; p=none; rua=mailto:"));
    // Only DMARC is wrong.
    let (passed, warnings, failures) = summary(&run.stdout);
    assert_eq!((warnings, failures), (0, 1), "{}", run.stdout);
    assert_eq!(passed + 1, verdicts(&run.stdout).len());
}
