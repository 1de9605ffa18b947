//! DKIM signing end to end: keys made by `mailferry dkim keygen`, messages
//! from the corpus in tests/dkim/corpus submitted over SMTP, signed by the
//! dkim-sign plugin, relayed to the stand-in upstream, and the upstream's
//! copies verified by two independent verifiers: mail-auth's and Python's
//! dkimpy (tests/support/dkim_verify.py), each given the DNS records that
//! keygen printed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::upstream::*;
use crate::common::*;

/// A keys folder with keys made by the CLI, and the records it printed.
struct Keys {
    dir: tempfile::TempDir,
    /// (DNS name, TXT value) as printed by keygen.
    records: Vec<(String, String)>,
}

impl Keys {
    fn new() -> Keys {
        Keys { dir: tempfile::tempdir().unwrap(), records: Vec::new() }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// Runs `mailferry dkim keygen` and reads the record from its output.
    fn keygen(&mut self, domain: &str, selector: &str, algorithm: &str) -> String {
        let out = Command::new(BIN)
            .args(["dkim", "keygen", "--domain", domain, "--selector", selector, "--algorithm", algorithm, "--keys"])
            .arg(self.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "keygen failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        let field = |label: &str| {
            text.lines()
                .find_map(|l| l.trim_start().strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label} line in:\n{text}"))
                .trim()
                .to_string()
        };
        let name = field("Name:");
        assert_eq!(name, format!("{selector}._domainkey.{}", mailferry::dkim::keys::ascii_domain(domain)));
        self.records.push((name, field("Value:")));
        text
    }

    fn record_args(&self) -> Vec<String> {
        self.records.iter().flat_map(|(n, v)| ["--record".to_string(), format!("{n}={v}")]).collect()
    }
}

/// The usual set: RSA and Ed25519 for example.com, RSA for example.net.
fn standard_keys() -> Keys {
    let mut keys = Keys::new();
    keys.keygen("example.com", "rsa1", "rsa2048");
    keys.keygen("example.com", "ed1", "ed25519");
    keys.keygen("example.net", "net1", "rsa2048");
    keys
}

fn plugins(dkim_config: &str) -> String {
    plugins_with(
        &format!("[[plugins]]\nname = \"dkim-sign\"\ngrants = [\"dkim\"]\n[plugins.config]\n{dkim_config}\n"),
        "mode = \"sync\"\nrelay = \"up\"",
    )
}

fn start(up: &Upstream, keys: &Keys, dkim_config: &str) -> Server {
    export_upstream_password();
    Server::start(Setup {
        plugins: Some(plugins(dkim_config)),
        users: users_with_all_schemes(),
        extra: format!("{}\n[dkim]\nkeys = {:?}\n", up.verified_relay(), keys.path().to_str().unwrap()),
        ..Default::default()
    })
}

/// MAIL FROM with the parameters the message needs.
fn mail_command(message: &[u8]) -> String {
    let (fields, body) = split_header(message);
    let eight_bit = |b: &[u8]| b.iter().any(|&c| c >= 0x80);
    let mut cmd = "MAIL FROM:<alice@example.com>".to_string();
    if eight_bit(body) || fields.iter().any(|f| eight_bit(f)) {
        cmd.push_str(" BODY=8BITMIME");
    }
    if fields.iter().any(|f| eight_bit(f)) {
        cmd.push_str(" SMTPUTF8");
    }
    cmd
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus has only {} messages", files.len());
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// A multi-megabyte message: text plus a base64 attachment.
fn big_message(megabytes: usize) -> Vec<u8> {
    let mut m = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u32 = 12345;
    while m.len() < megabytes * 1024 * 1024 {
        for _ in 0..76 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            m.push(alphabet[(x >> 16) as usize % 64]);
        }
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b1--\r\n");
    m
}

/// The d/s pairs the copy of `original` must carry valid signatures for.
fn expected_signers(original: &[u8]) -> BTreeSet<(String, String)> {
    let mut want: BTreeSet<(String, String)> =
        [("example.com", "rsa1"), ("example.com", "ed1")].iter().map(|(d, s)| (d.to_string(), s.to_string())).collect();
    let (fields, _) = split_header(original);
    if fields.iter().any(|f| field_name(f) == "from" && String::from_utf8_lossy(f).contains("@example.net")) {
        want.insert(("example.net".into(), "net1".into()));
    }
    want
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// mail-auth's verdicts for one message, as (d, s) → ok.
fn mail_auth_verify(keys: &Keys, eml: &[u8]) -> Vec<mailferry::dkim::Verification> {
    runtime().block_on(mailferry::dkim::verify_with_records(eml, &keys.records))
}

/// dkimpy's verdicts for several files: one JSON value per file.
fn dkimpy_verify(keys: &Keys, files: &[PathBuf]) -> Vec<serde_json::Value> {
    require_program(
        "python3",
        &["-c", "import dkim, nacl"],
        "python3 with dkimpy and pynacl: pip install dkimpy pynacl",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dkim_verify.py");
    let out = Command::new("python3").arg(script).args(keys.record_args()).args(files).output().unwrap();
    assert!(out.status.success(), "dkim_verify.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Submits every message, then checks both verifiers on the upstream's copies.
fn sign_and_verify(canonicalization: &str, messages: &[(String, Vec<u8>)]) {
    let keys = standard_keys();
    let up = Upstream::start();
    let server = start(&up, &keys, &format!("parent_domains = true\ncanonicalization = {canonicalization:?}\n"));
    let mut c = submitter(&server);
    for (name, m) in messages {
        let r = transaction(&mut c, &mail_command(m), &["bob@example.org"], m);
        assert_eq!(r.code, 250, "{name}: {r}\n{}", server.log_text());
    }
    c.expect("QUIT", 221);
    let stored = up.messages();
    assert_eq!(stored.len(), messages.len(), "{}", up.log());

    let out = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for ((name, original), copy) in messages.iter().zip(&stored) {
        let want = expected_signers(original);
        // mail-auth.
        let results = mail_auth_verify(&keys, &copy.eml);
        let passed: BTreeSet<(String, String)> =
            results.iter().filter(|v| v.ok).map(|v| (v.domain.clone(), v.selector.clone())).collect();
        assert_eq!(passed, want, "{name} ({canonicalization}): mail-auth says {results:?}");
        let ours = results.iter().filter(|v| v.domain != "example.org").count();
        assert_eq!(ours, want.len(), "{name}: signed more than once: {results:?}");
        let path = out.path().join(name);
        std::fs::write(&path, &copy.eml).unwrap();
        files.push(path);
    }
    // dkimpy, all files in one run.
    let verdicts = dkimpy_verify(&keys, &files);
    assert_eq!(verdicts.len(), messages.len());
    for ((name, original), v) in messages.iter().zip(&verdicts) {
        let passed: BTreeSet<(String, String)> = v["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["ok"] == true)
            .map(|s| (s["d"].as_str().unwrap().to_string(), s["s"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(passed, expected_signers(original), "{name} ({canonicalization}): dkimpy says {v}");
        // The corpus message with a foreign signature keeps it, still failing.
        if name.starts_with("31-") {
            assert!(v["signatures"].as_array().unwrap().iter().any(|s| s["d"] == "example.org" && s["ok"] == false));
        }
    }
}

#[test]
fn corpus_signed_relaxed_verifies_with_mail_auth_and_dkimpy() {
    sign_and_verify("relaxed/relaxed", &corpus());
}

/// simple/simple tolerates no change at all: this shows the message
/// reaches the upstream byte for byte after signing.
#[test]
fn corpus_signed_simple_verifies_with_mail_auth_and_dkimpy() {
    sign_and_verify("simple/simple", &corpus());
}

#[test]
fn multi_megabyte_message_verifies() {
    sign_and_verify("relaxed/relaxed", &[("big.eml".to_string(), big_message(6))]);
}

/// What a message relayed through a given setup looks like at the upstream.
fn relay_one(server: &Server, up: &Upstream, message: &[u8]) -> Vec<u8> {
    let before = up.messages().len();
    let mut c = submitter(server);
    let r = transaction(&mut c, &mail_command(message), &["bob@example.org"], message);
    assert_eq!(r.code, 250, "{r}\n{}", server.log_text());
    c.expect("QUIT", 221);
    let all = up.messages();
    assert_eq!(all.len(), before + 1);
    all.into_iter().last().unwrap().eml
}

fn signature_fields(eml: &[u8]) -> Vec<String> {
    let (fields, _) = split_header(eml);
    fields.iter().filter(|f| field_name(f) == "dkim-signature").map(|f| unfold(&String::from_utf8_lossy(f))).collect()
}

fn replace_field(eml: &[u8], name: &str, value: &str) -> Vec<u8> {
    let (fields, body) = split_header(eml);
    let mut out = Vec::new();
    for f in fields {
        if field_name(f) == name {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        } else {
            out.extend_from_slice(f);
        }
    }
    out.extend_from_slice(body);
    out
}

const SIMPLE: &[u8] =
    b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hello\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nHi Bob.\r\n";

fn ok_signers(keys: &Keys, eml: &[u8]) -> Vec<(String, String)> {
    mail_auth_verify(keys, eml).into_iter().filter(|v| v.ok).map(|v| (v.domain, v.selector)).collect()
}

/// SES rewrites Message-ID and Date: a route that excludes them keeps the
/// signature valid through the rewrite, one that signs them does not.
#[test]
fn route_exclusions_survive_a_provider_rewriting_message_id_and_date() {
    let keys = standard_keys();
    let up = Upstream::start();
    let server = start(&up, &keys, "[plugins.config.routes.up]\nexclude_headers = [\"Message-ID\", \"Date\"]\n");
    let eml = relay_one(&server, &up, SIMPLE);
    for sig in signature_fields(&eml) {
        let h = sig.split("h=").nth(1).unwrap().split(';').next().unwrap().to_ascii_lowercase();
        assert!(!h.contains("message-id") && !h.contains("date"), "{sig}");
        assert!(h.contains("subject") && h.contains("from"), "{sig}");
    }
    let rewritten = replace_field(
        &replace_field(&eml, "message-id", "<0100018f-ses-rewritten@email.amazonses.com>"),
        "date",
        "Tue, 3 Nov 2026 11:00:00 +0000",
    );
    assert_eq!(ok_signers(&keys, &rewritten).len(), 2, "{}", String::from_utf8_lossy(&rewritten));

    // Without the route table, the same rewrite breaks both signatures.
    let up2 = Upstream::start();
    let server2 = start(&up2, &keys, "");
    let eml = relay_one(&server2, &up2, SIMPLE);
    assert_eq!(ok_signers(&keys, &eml).len(), 2);
    let rewritten = replace_field(&eml, "message-id", "<0100018f-ses-rewritten@email.amazonses.com>");
    assert!(ok_signers(&keys, &rewritten).is_empty());
}

/// A From: domain written in Unicode (an SMTPUTF8 message) is signed with
/// the keys of its `xn--` form, which is what `d=` carries (RFC 8616).
#[test]
fn internationalized_from_domains_sign_as_a_labels() {
    let mut keys = Keys::new();
    let text = keys.keygen("Bücher.example", "idn1", "ed25519");
    assert!(text.contains("idn1._domainkey.xn--bcher-kva.example"), "{text}");
    let up = Upstream::start();
    let server = start(&up, &keys, "");
    let message = "From: Anna <anna@bücher.example>\r\nTo: bob@example.org\r\nSubject: Grüße\r\n\r\nHallo.\r\n";
    let eml = relay_one(&server, &up, message.as_bytes());
    let sigs = signature_fields(&eml);
    assert_eq!(sigs.len(), 1, "{}", String::from_utf8_lossy(&eml));
    assert!(sigs[0].contains("d=xn--bcher-kva.example"), "{}", sigs[0]);
    assert_eq!(ok_signers(&keys, &eml), [("xn--bcher-kva.example".to_string(), "idn1".to_string())]);
}

/// From is over-signed: a second From: added in transit breaks the signature.
#[test]
fn from_is_over_signed() {
    let keys = standard_keys();
    let up = Upstream::start();
    let server = start(&up, &keys, "");
    let eml = relay_one(&server, &up, SIMPLE);
    assert_eq!(ok_signers(&keys, &eml).len(), 2);
    // Verifiers take fields from the bottom up, so a From: added on top is
    // what only over-signing catches.
    let mut forged = b"From: Mallory <ceo@example.com>\r\n".to_vec();
    forged.extend_from_slice(&eml);
    assert!(ok_signers(&keys, &forged).is_empty());
}

/// Obsolete `Name :` fields are rewritten before signing (verifiers
/// disagree about them); a control character in a signed field means no
/// signature rather than one that fails at some receivers.
#[test]
fn awkward_header_syntax_is_fixed_or_left_unsigned() {
    let keys = standard_keys();
    let up = Upstream::start();
    let server = start(&up, &keys, "");
    let obs = b"From : Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject\t: hello\r\n\r\nHi.\r\n";
    let eml = relay_one(&server, &up, obs);
    let text = String::from_utf8_lossy(&eml);
    assert!(text.contains("\r\nFrom: Alice") && text.contains("\r\nSubject: hello"), "{text}");
    assert_eq!(ok_signers(&keys, &eml).len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("obs.eml");
    std::fs::write(&path, &eml).unwrap();
    let v = &dkimpy_verify(&keys, &[path])[0];
    let ok = v["signatures"].as_array().unwrap().iter().filter(|s| s["ok"] == true).count();
    assert_eq!(ok, 2, "{v}");

    let ff = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: a\x0cb\r\n\r\nHi.\r\n";
    let eml = relay_one(&server, &up, ff);
    assert!(signature_fields(&eml).is_empty());
    server.wait_log(&["sending unsigned", "control character 0x0c"]);
}

/// A message that comes back through the relay (already carrying our valid
/// signatures) is not signed again; a forged signature naming our key does
/// not stop signing.
#[test]
fn never_signs_twice_but_ignores_forged_signatures() {
    let keys = standard_keys();
    let up = Upstream::start();
    let server = start(&up, &keys, "");
    let first = relay_one(&server, &up, SIMPLE);
    assert_eq!(signature_fields(&first).len(), 2);
    let again = relay_one(&server, &up, &first);
    assert_eq!(signature_fields(&again).len(), 2, "{}", String::from_utf8_lossy(&again));
    assert_eq!(ok_signers(&keys, &again).len(), 2);
    server.wait_log(&["already signed by example.com/rsa1"]);

    let forged = [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa1; c=relaxed/relaxed; h=from; bh=AAAA; b=AAAA\r\n"
            .as_slice(),
        SIMPLE,
    ]
    .concat();
    let signed = relay_one(&server, &up, &forged);
    let results = mail_auth_verify(&keys, &signed);
    assert_eq!(results.iter().filter(|v| v.ok).count(), 2, "{results:?}");
    assert_eq!(results.iter().filter(|v| !v.ok).count(), 1, "{results:?}");
}

#[test]
fn missing_key_defers_when_configured() {
    let keys = standard_keys();
    let up = Upstream::start();
    let server = start(&up, &keys, "on_missing_key = \"defer\"\n");
    let mut c = submitter(&server);
    let m = b"From: someone@nokey.example\r\nTo: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n";
    let r = transaction(&mut c, "MAIL FROM:<alice@example.com>", &["bob@example.org"], m);
    assert_eq!(r.code, 451, "{r}");
    assert!(r.text().starts_with("4.3.5"), "{r}");
    assert!(up.messages().is_empty());
    server.wait_log(&["no DKIM key for nokey.example"]);

    // The default sends it unsigned, with a warning.
    let up2 = Upstream::start();
    let server2 = start(&up2, &keys, "");
    let eml = relay_one(&server2, &up2, m);
    assert!(signature_fields(&eml).is_empty());
    server2.wait_log(&["sending unsigned", "mailferry dkim keygen --domain nokey.example"]);
}

/// A key added while the server runs signs within seconds; a broken
/// replacement keeps the old keys in use; SIGHUP reloads at once.
#[test]
fn keys_reload_on_change_and_sighup() {
    let mut keys = standard_keys();
    let up = Upstream::start();
    let server = start(&up, &keys, "");
    let from_org = b"From: a@example.org\r\nTo: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n";
    assert!(signature_fields(&relay_one(&server, &up, from_org)).is_empty());

    keys.keygen("example.org", "org1", "ed25519");
    server.wait_log(&["DKIM keys reloaded", "a key file changed"]);
    let eml = relay_one(&server, &up, from_org);
    assert_eq!(ok_signers(&keys, &eml), vec![("example.org".to_string(), "org1".to_string())]);

    // A broken key file: the folder no longer loads, the old keys stay.
    std::fs::write(
        keys.path().join("example.org/broken.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    server.wait_log(&["DKIM keys not reloaded", "broken.pem"]);
    let eml = relay_one(&server, &up, SIMPLE);
    assert_eq!(ok_signers(&keys, &eml).len(), 2);

    // Repaired and signalled: reloaded at once, whatever the watcher does.
    std::fs::remove_file(keys.path().join("example.org/broken.pem")).unwrap();
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    server.wait_log(&["DKIM keys reloaded", "SIGHUP"]);
}

/// keygen's output and files, and what `check` says about bad keys.
#[test]
fn keygen_prints_the_record_and_check_refuses_bad_keys() {
    let mut keys = Keys::new();
    let text = keys.keygen("Example.COM", "sel2026", "rsa2048");
    // The host part alone, for panels that append the domain.
    assert!(text.contains("Host:   sel2026._domainkey "), "{text}");
    // A 2048-bit key's record is longer than 255: shown split.
    let value = &keys.records[0].1;
    assert!(value.len() > 255 && value.starts_with("v=DKIM1; k=rsa; p=MIIB"), "{value}");
    let quoted: Vec<&str> =
        text.lines().map(str::trim).filter(|l| l.starts_with('"') && l.ends_with('"') && l.len() > 2).collect();
    assert!(quoted.len() >= 2 && quoted.iter().all(|q| q.len() <= 257), "{text}");
    assert_eq!(quoted.iter().map(|q| &q[1..q.len() - 1]).collect::<String>(), *value);
    let key = keys.path().join("example.com/sel2026.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // Never overwrites.
    let again = Command::new(BIN)
        .args(["dkim", "keygen", "--domain", "example.com", "--selector", "sel2026", "--keys"])
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let check = |keys_dir: &Path| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mailferry.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nstate_dir = \"state\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[dkim]\nkeys = {:?}\n",
                keys_dir.to_str().unwrap()
            ),
        )
        .unwrap();
        let out = Command::new(BIN).args(["check", "--config"]).arg(&config).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = check(&keys.path());
    assert!(ok && text.contains("DKIM keys: example.com/sel2026"), "{text}");

    // Group-readable: loads, with a warning.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, text) = check(&keys.path());
    assert!(ok && text.contains("readable by its group") && text.contains("chmod 600"), "{text}");

    require_program("openssl", &["version"], "the openssl CLI makes the bad keys");
    let bad = [
        ("weak.pem", &["genrsa", "1024"][..], "smaller than 2048 bits"),
        ("ec.pem", &["ecparam", "-genkey", "-name", "prime256v1", "-noout"][..], "EC (ECDSA)"),
    ];
    for (file, args, needle) in bad {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("example.com")).unwrap();
        let pem = Command::new("openssl").args(args).output().unwrap();
        assert!(pem.status.success());
        std::fs::write(dir.path().join("example.com").join(file), &pem.stdout).unwrap();
        let (ok, text) = check(dir.path());
        assert!(!ok, "{file} accepted: {text}");
        assert!(text.contains(file) && text.contains(needle), "{file}: {text}");
    }
    // An OpenSSL-made PKCS#8 RSA key and Ed25519 key load as they are.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("example.com")).unwrap();
    for (file, alg) in [("o-rsa.pem", "RSA"), ("o-ed.pem", "ED25519")] {
        let path = dir.path().join("example.com").join(file);
        let mut args = vec!["genpkey", "-algorithm", alg, "-out", path.to_str().unwrap()];
        if alg == "RSA" {
            args.extend(["-pkeyopt", "rsa_keygen_bits:2048"]);
        }
        assert!(Command::new("openssl").args(&args).output().unwrap().status.success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (ok, text) = check(dir.path());
    assert!(ok && text.contains("example.com/o-ed") && text.contains("example.com/o-rsa"), "{text}");
}

/// `expire_secs` sets `x=` that far after `t=`; the signature verifies
/// with both verifiers until then.
#[test]
fn expiry_sets_the_x_tag() {
    let keys = standard_keys();
    let up = Upstream::start();
    let server = start(&up, &keys, "expire_secs = 3600\n");
    let eml = relay_one(&server, &up, SIMPLE);
    let sigs = signature_fields(&eml);
    assert_eq!(sigs.len(), 2);
    for sig in &sigs {
        let tag = |name: &str| -> u64 {
            let compact: String = sig.chars().filter(|c| !c.is_whitespace()).collect();
            compact
                .split(';')
                .find_map(|t| t.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {sig}"))
                .parse()
                .unwrap()
        };
        assert_eq!(tag("x") - tag("t"), 3600, "{sig}");
    }
    assert_eq!(ok_signers(&keys, &eml).len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, &eml).unwrap();
    let v = &dkimpy_verify(&keys, &[path])[0];
    assert!(v["signatures"].as_array().unwrap().iter().all(|s| s["ok"] == true), "{v}");
}
