//! The doctor command `mailferry dns` suggests, run against exactly the records it printed.

use super::*;

/// Runs `mailferry dns` with `extra` arguments, publishes exactly the records it printed, then runs
/// the doctor command it suggests (plus `--keys` and `--dns-server`).
fn round_trip(extra: &[&str]) -> (Vec<Printed>, String, Run) {
    let keys = standard_keys();
    let keys_dir = keys.path_str();
    let mut args = vec!["dns"];
    args.extend(SES_ARGS);
    args.extend(extra);
    args.extend(["--keys", &keys_dir]);
    let run = mailferry(&args);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let records = parse_records(&run.stdout);
    let suggested = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Once published, check them with: mailferry "))
        .unwrap_or_else(|| panic!("no suggested doctor command in:\n{}", run.stdout))
        .to_string();
    let server = DnsServer::start(Zone::from_printed(&records).with_third_parties());
    let addr = server.addr();
    let mut doctor_args: Vec<&str> = suggested.split_whitespace().collect();
    doctor_args.extend(["--keys", &keys_dir, "--dns-server", &addr]);
    let doctor = mailferry(&doctor_args);
    (records, suggested, doctor)
}

#[test]
fn the_doctor_command_dns_suggests_passes_the_records_it_printed() {
    let (_, suggested, doctor) = round_trip(&[]);
    assert_eq!(suggested, "doctor --domain example.com --relay ses --inbound cloudflare --region eu-west-1");
    assert_eq!(doctor.code, Some(0), "`mailferry {suggested}`: {}", doctor.dump());
}

/// With `--mail-from`, `dns` moves the SES MAIL FROM records to that subdomain, but the doctor
/// command it suggests leaves `--mail-from` out, so that command checks mail.example.com and
/// fails on records published exactly as printed.
#[test]
fn the_doctor_command_dns_suggests_keeps_mail_from() {
    let (records, suggested, doctor) = round_trip(&["--mail-from", "bounce"]);
    assert_eq!(one(&records, "MX", "bounce.example.com").value, "feedback-smtp.eu-west-1.amazonses.com");
    assert_eq!(one(&records, "TXT", "bounce.example.com").value, "v=spf1 include:amazonses.com ~all");
    assert!(find(&records, "MX", "mail.example.com").is_empty());
    assert_eq!(
        doctor.code,
        Some(0),
        "`mailferry {suggested}`, suggested by `mailferry dns ... --mail-from bounce`, fails on the records dns \
         printed:\n{}",
        doctor.dump()
    );
}
