//! `mailferry dns`: the records it prints for each relay, and the arguments it refuses.

use super::*;

#[test]
fn dns_prints_every_record_for_ses_and_cloudflare() {
    let keys = standard_keys();
    let run = dns_ses(&keys);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(run.stderr.trim().is_empty(), "nothing on stderr: {}", run.dump());
    let out = &run.stdout;
    let text = run.flat();
    let records = parse_records(out);

    // SPF: exactly one record at the apex, with both senders' includes.
    let spf = one(&records, "TXT", D);
    assert!(spf.value.starts_with("v=spf1 "), "{spf:?}");
    let terms: Vec<&str> = spf.value.split_whitespace().collect();
    assert!(terms.contains(&"include:_spf.mx.cloudflare.net"), "{spf:?}");
    assert!(terms.contains(&"include:amazonses.com"), "{spf:?}");
    assert!(terms.last().unwrap().ends_with("all"), "{spf:?}");
    assert_eq!(spf.value.matches("v=spf1").count(), 1);
    let apex_spf = records.iter().filter(|r| r.name == D && r.value.contains("v=spf1")).count();
    assert_eq!(apex_spf, 1, "a second SPF record for {D}:\n{out}");
    // Nowhere else in the output a second SPF value for the apex.
    let spf_lines: Vec<&str> = out.lines().filter(|l| l.contains("v=spf1")).collect();
    assert_eq!(spf_lines.len(), 2, "one SPF for the apex, one for mail.example.com:\n{out}");

    // Cloudflare Email Routing MX.
    let mut mx: Vec<(u16, &str)> =
        find(&records, "MX", D).iter().map(|r| (r.priority.unwrap(), r.value.as_str())).collect();
    mx.sort();
    assert_eq!(
        mx,
        vec![(13, "route1.mx.cloudflare.net"), (24, "route3.mx.cloudflare.net"), (86, "route2.mx.cloudflare.net")]
    );

    // DKIM: each local key, exactly as keygen printed it.
    assert_eq!(keys.printed.len(), 2);
    for (name, value) in &keys.printed {
        let dkim = one(&records, "TXT", name);
        assert_eq!(dkim.heading, "DKIM");
        assert_eq!(&dkim.value, value, "the DKIM record of {name} differs from keygen's");
        assert_eq!(p_tag(&dkim.value), p_tag(value));
        assert!(!p_tag(value).is_empty());
    }
    let rsa = one(&records, "TXT", "r._domainkey.example.com");
    assert!(rsa.value.starts_with("v=DKIM1; k=rsa; p=MIIB"), "{rsa:?}");
    assert!(rsa.value.len() > 255);
    assert!(rsa.strings.len() > 1 && rsa.strings.iter().all(|s| s.len() <= 255), "{rsa:?}");
    assert_eq!(rsa.strings.concat(), rsa.value);
    let ed = one(&records, "TXT", "e._domainkey.example.com");
    assert!(ed.value.starts_with("v=DKIM1; k=ed25519; p="), "{ed:?}");

    // DMARC.
    let dmarc = one(&records, "TXT", "_dmarc.example.com");
    assert!(dmarc.value.starts_with("v=DMARC1; p=none"), "{dmarc:?}");
    assert!(dmarc.value.contains("rua=mailto:"), "{dmarc:?}");

    // SES custom MAIL FROM.
    let bounce_mx = one(&records, "MX", "mail.example.com");
    assert_eq!(bounce_mx.value, "feedback-smtp.eu-west-1.amazonses.com");
    assert_eq!(bounce_mx.priority, Some(10));
    let bounce_spf = one(&records, "TXT", "mail.example.com");
    assert_eq!(bounce_spf.value, "v=spf1 include:amazonses.com ~all");
    assert!(text.contains("email-smtp.eu-west-1.amazonaws.com"), "{out}");

    // SES rewrites Message-ID and Date: they must not be signed.
    assert!(text.contains("SES replaces the Message-ID and Date header fields"), "{out}");
    assert!(text.contains(r#"exclude_headers = ["Message-ID", "Date"]"#), "{out}");

    // No key was missing, so no keygen advice.
    assert!(!text.contains("No DKIM key"), "{out}");
    assert!(text.contains("mailferry doctor --domain example.com --relay ses --inbound cloudflare --region eu-west-1"));
}

#[test]
fn dns_for_sendgrid_names_apikey_and_its_dkim_cnames() {
    let mut keys = Keys::new();
    keys.keygen(D, "e", "ed25519");
    let keys_dir = keys.path_str();
    let run = mailferry(&["dns", "--domain", D, "--relay", "sendgrid", "--keys", &keys_dir]);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(run.stderr.trim().is_empty(), "{}", run.dump());
    let records = parse_records(&run.stdout);
    assert_eq!(one(&records, "TXT", D).value, "v=spf1 include:sendgrid.net ~all");
    for s in ["s1", "s2"] {
        let cname = one(&records, "CNAME", &format!("{s}._domainkey.example.com"));
        assert!(cname.value.starts_with(&format!("{s}.domainkey.")), "{cname:?}");
        assert!(cname.value.ends_with(".sendgrid.net"), "{cname:?}");
    }
    assert!(run.flat().contains("the user is the literal string apikey"), "{}", run.stdout);
    // The local key is still listed.
    assert_eq!(one(&records, "TXT", "e._domainkey.example.com").value, keys.printed["e._domainkey.example.com"]);
}

#[test]
fn dns_without_a_local_key_says_to_run_keygen() {
    let empty = tempfile::tempdir().unwrap();
    for keys in [empty.path().to_path_buf(), empty.path().join("not-created-yet")] {
        let keys = keys.to_str().unwrap().to_string();
        let mut args = vec!["dns"];
        args.extend(SES_ARGS);
        args.extend(["--keys", &keys]);
        let run = mailferry(&args);
        assert_eq!(run.code, Some(0), "{}", run.dump());
        assert!(run.flat().contains("mailferry dkim keygen --domain example.com"), "{}", run.stdout);
        let records = parse_records(&run.stdout);
        assert!(records.iter().all(|r| r.heading != "DKIM"), "no DKIM record without a key:\n{}", run.stdout);
        // Everything else is still there.
        one(&records, "TXT", D);
        one(&records, "TXT", "_dmarc.example.com");
    }
}

#[test]
fn dns_rejects_an_unknown_relay_listing_the_choices() {
    let run = mailferry(&["dns", "--domain", D, "--relay", "nope"]);
    assert_ne!(run.code, Some(0), "{}", run.dump());
    assert!(run.stdout.is_empty(), "errors go to stderr: {}", run.dump());
    assert!(run.stderr.contains("nope"), "{}", run.dump());
    assert!(run.stderr.contains("ses, sendgrid, resend, mailgun, postmark, brevo, smtp"), "{}", run.dump());

    let run = mailferry(&["dns", "--domain", D, "--inbound", "gmail"]);
    assert_ne!(run.code, Some(0), "{}", run.dump());
    assert!(run.stdout.is_empty(), "{}", run.dump());
    assert!(run.stderr.contains("cloudflare"), "{}", run.dump());
}

#[test]
fn dns_and_doctor_reject_a_bad_domain() {
    let keys = tempfile::tempdir().unwrap();
    let keys = keys.path().to_str().unwrap();
    for domain in ["localhost", "not a domain", "-bad.com"] {
        for command in ["dns", "doctor"] {
            // `--domain=` so that "-bad.com" is not taken for an option.
            let domain_arg = format!("--domain={domain}");
            let mut args = vec![command, &domain_arg, "--keys", keys];
            if command == "doctor" {
                // doctor fails before any lookup: the server address is never used.
                args.extend(["--dns-server", "127.0.0.1:9"]);
            }
            let run = mailferry(&args);
            assert_eq!(run.code, Some(1), "{command} --domain {domain:?}: {}", run.dump());
            assert!(run.stdout.is_empty(), "{command}: errors go to stderr: {}", run.dump());
            let expected = format!("mailferry: --domain {domain:?} is not a domain name like example.com");
            assert!(run.stderr.contains(&expected), "{command}: {}", run.dump());
        }
    }

    let run = mailferry(&["dns", "--domain", D, "--relay", "ses", "--region", "Ireland", "--keys", keys]);
    assert_eq!(run.code, Some(1), "{}", run.dump());
    assert!(run.stdout.is_empty(), "{}", run.dump());
    assert!(run.stderr.contains("--region \"Ireland\" is not an AWS region name"), "{}", run.dump());
}
