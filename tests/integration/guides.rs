//! The client settings the guides give, run as written against a server set
//! up by `mailferry init`: docs/clients.md's ~/.msmtprc with msmtp (587 and
//! 465), its swaks commands and its Python example, and docs/gmail.md's
//! openssl check of the certificate. Only what a test machine needs is
//! changed: the server's name becomes 127.0.0.1 with free ports (the test
//! certificate is for smtp.example.com and 127.0.0.1, signed by a test CA
//! standing in for the system's roots), and mail goes to an outbox folder.
//!
//! msmtp, swaks, python3 and openssl are required (.ci/run installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;

const TIMEOUT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "Gu1des-pw";

fn doc(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(name)).unwrap()
}

/// The first fenced code block of `text` whose first line starts with `first`.
fn code_block(text: &str, first: &str) -> String {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("```") {
            let block: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            if block.first().is_some_and(|l| l.starts_with(first)) {
                return block.join("\n") + "\n";
            }
        }
    }
    panic!("no code block starting with {first:?}");
}

fn transcript(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "no {from:?} in:\n{text}");
    text.replacen(from, to, 1)
}

/// A CA and a certificate for smtp.example.com and 127.0.0.1 signed by it,
/// like a public CA's certificate for the server's name.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    require_program("openssl", &["version"], "the openssl CLI is needed");
    let p = |f: &str| dir.join(f).display().to_string();
    let (ca_key, ca, key, csr, cert, ext) =
        (p("ca.key"), p("ca.pem"), p("key.pem"), p("server.csr"), p("fullchain.pem"), p("server.ext"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", transcript(&out));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[&["req", "-x509"][..], &ec, &["-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", "/CN=guides test CA"]]
            .concat(),
    );
    openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", "/CN=smtp.example.com"]].concat());
    std::fs::write(
        &ext,
        "subjectAltName = DNS:smtp.example.com, IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca.into(), cert.into(), key.into())
}

/// A server from `mailferry init --hostname smtp.example.com` with the user
/// you@example.com, its [tls] lines turned on with the test certificate.
/// Returns it and the CA that signed its certificate.
fn start() -> (Server, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mf");
    let mut init = Command::new(BIN)
        .arg("init")
        .arg(&dir)
        .args(["--domain", "example.com", "--hostname", "smtp.example.com", "--relay", "sendgrid"])
        .args(["--user", "you@example.com", "--password-stdin", "--state-dir", "../state"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    init.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = init.wait_with_output().unwrap();
    assert!(out.status.success(), "init: {}", transcript(&out));
    std::fs::create_dir_all(tmp.path().join("state")).unwrap();
    std::os::unix::fs::symlink(shared_cache(), tmp.path().join("state/plugin-cache")).unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let (ca, cert, key) = certificate(&certs);

    let config = dir.join("mailferry.toml");
    let mut c = std::fs::read_to_string(&config).unwrap();
    c = replace(
        &c,
        "# [tls]\n# cert = \"/etc/letsencrypt/live/smtp.example.com/fullchain.pem\"\n# key = \"/etc/letsencrypt/live/smtp.example.com/privkey.pem\"\n",
        &format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert.to_str().unwrap(), key.to_str().unwrap()),
    );
    for address in ["127.0.0.1:2525", "0.0.0.0:587", "0.0.0.0:465", "127.0.0.1:2580"] {
        c = replace(&c, &format!("address = \"{address}\""), "address = \"127.0.0.1:0\"");
    }
    c = replace(&c, "route = \"sendgrid\"", "route = \"outbox\"");
    c.push_str("\n[relays.outbox]\nkind = \"outbox\"\ndir = \"../outbox\"\n");
    std::fs::write(&config, c).unwrap();
    // The sendgrid relay stays in the configuration, unused: its password
    // must still resolve.
    let env = [(mailferry::init::PASSWORD_VAR, "unused: mail goes to the outbox")];
    let server =
        Server::try_serve_with_env(tmp, &config, 3, &env).unwrap_or_else(|logs| panic!("serve failed:\n{logs}"));
    (server, ca)
}

fn add_user(server: &Server, login: &str) {
    let mut child = Command::new(BIN)
        .args(["user", "add", login, "--password-stdin", "--config"])
        .arg(server.path("mf/mailferry.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// The delivered messages, once the queue is empty.
fn delivered(server: &Server, n: usize) -> Vec<String> {
    let out = server.outbox();
    assert_eq!(out.len(), n, "{out:#?}\n{}", server.log_text());
    out
}

/// The values of the header fields `name`, unfolded.
fn header(message: &str, name: &str) -> Vec<String> {
    unfold(message)
        .split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name) && l[name.len()..].starts_with(':')
        })
        .map(|l| l[name.len() + 1..].trim().to_string())
        .collect()
}

#[test]
fn msmtp_with_the_documented_msmtprc() {
    require_program("msmtp", &["--version"], "msmtp is needed: apt-get install msmtp");
    let (server, ca) = start();
    let home = tempfile::tempdir().unwrap();
    // The rc file as docs/clients.md gives it; the password where its
    // passwordeval looks.
    let mut rc = String::new();
    let mut changed = 0;
    for line in code_block(&doc("clients.md"), "# ~/.msmtprc").lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let new = match words[..] {
            ["host", "smtp.example.com"] => Some("host 127.0.0.1".to_string()),
            ["port", "587"] => Some(format!("port {}", server.addr("submission").port())),
            ["port", "465"] => Some(format!("port {}", server.addr("submissions").port())),
            ["tls_trust_file", "system"] => Some(format!("tls_trust_file {}", ca.display())),
            _ => None,
        };
        changed += new.is_some() as usize;
        rc.push_str(new.as_deref().unwrap_or(line));
        rc.push('\n');
    }
    assert_eq!(changed, 4, "the host, both ports and the trust file:\n{rc}");
    let rc_path = home.path().join(".msmtprc");
    std::fs::write(&rc_path, rc).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(home.path().join(".config")).unwrap();
    std::fs::write(home.path().join(".config/mailferry-password"), format!("{PASSWORD}\n")).unwrap();

    // The two commands the guide shows.
    let commands = code_block(&doc("clients.md"), "printf 'To: someone@example.org");
    let commands: Vec<&str> = commands.lines().collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    std::fs::write(home.path().join("message.eml"), "To: someone@example.org\nSubject: over 465\n\nSent on 465.\n")
        .unwrap();
    for command in commands {
        let out = run_bounded(
            Command::new("sh").args(["-c", command]).current_dir(home.path()).env("HOME", home.path()),
            TIMEOUT,
        );
        assert!(out.status.success(), "{command}: {}\nmsmtp log:\n{}", transcript(&out), {
            std::fs::read_to_string(home.path().join(".msmtp.log")).unwrap_or_default()
        });
    }
    let messages = delivered(&server, 2);
    for m in &messages {
        assert_eq!(header(m, "Return-Path"), ["<you@example.com>"], "{m}");
        assert_eq!(header(m, "X-Original-To"), ["someone@example.org"], "{m}");
        assert_eq!(header(m, "From"), ["you@example.com"], "msmtp adds From: {m}");
        // TLS and AUTH (RFC 3848's ESMTPSA), from the test's own address.
        assert!(header(m, "Received")[0].contains("by smtp.example.com (mailferry) with ESMTPSA"), "{m}");
    }
    let subjects: Vec<String> = messages.iter().flat_map(|m| header(m, "Subject")).collect();
    assert!(subjects.contains(&"hello".into()) && subjects.contains(&"over 465".into()), "{subjects:?}");
    let log = server.log_text();
    assert!(log.contains("\"listener\":\"submission\"") && log.contains("\"listener\":\"submissions\""), "{log}");
}

#[test]
fn swaks_commands_of_the_guide() {
    require_program("swaks", &["--version"], "swaks is needed: apt-get install swaks");
    let (server, ca) = start();
    let guide = doc("clients.md");
    let commands: Vec<&str> = guide.lines().filter(|l| l.starts_with("swaks --server smtp.example.com:")).collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    for command in commands {
        let (shown, listener) =
            if command.contains(" smtp.example.com:587 ") { ("587", "submission") } else { ("465", "submissions") };
        let command = replace(
            command,
            &format!("smtp.example.com:{shown}"),
            &format!("127.0.0.1:{}", server.addr(listener).port()),
        );
        // swaks would ask for the password on the terminal; check the
        // certificate against the test CA, as against the system's roots.
        let mut args: Vec<String> = command.split_whitespace().skip(1).map(str::to_string).collect();
        args.extend(["--auth-password", PASSWORD, "--tls-verify", "--tls-ca-path"].map(String::from));
        args.push(ca.display().to_string());
        let out = run_bounded(Command::new("swaks").args(&args), TIMEOUT);
        assert!(out.status.success(), "swaks {args:?}: {}", transcript(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("<~  235 "), "no AUTH success: {text}");
        assert!(text.contains("<~  250 2.0.0 queued as "), "{text}");
    }
    assert_eq!(delivered(&server, 2).len(), 2);
}

#[test]
fn python_example_of_the_guide() {
    require_program("python3", &["--version"], "python3 is needed");
    let (server, ca) = start();
    add_user(&server, "app@example.com");
    let code = code_block(&doc("clients.md"), "import os");
    let code = replace(
        &code,
        "smtplib.SMTP(\"smtp.example.com\", 587,",
        &format!("smtplib.SMTP(\"127.0.0.1\", {},", server.addr("submission").port()),
    );
    let code = replace(
        &code,
        "ssl.create_default_context()",
        &format!("ssl.create_default_context(cafile={:?})", ca.to_str().unwrap()),
    );
    let out = run_bounded(Command::new("python3").args(["-c", &code]).env("SMTP_PASSWORD", PASSWORD), TIMEOUT);
    assert!(out.status.success(), "{}", transcript(&out));
    let m = &delivered(&server, 1)[0];
    assert_eq!(header(m, "Return-Path"), ["<app@example.com>"]);
    assert_eq!(header(m, "Subject"), ["Hello"]);
    assert!(m.ends_with("Sent through mailferry.\r\n"), "{m}");
}

#[test]
fn openssl_check_of_the_gmail_guide() {
    require_program("openssl", &["version"], "the openssl CLI is needed");
    let (server, ca) = start();
    let guide = doc("gmail.md");
    for (shown, listener) in [
        ("openssl s_client -connect smtp.example.com:465 -servername smtp.example.com", "submissions"),
        ("-connect smtp.example.com:587 -starttls smtp", "submission"),
    ] {
        assert!(guide.contains(shown), "docs/gmail.md no longer shows {shown:?}");
        let port = server.addr(listener).port();
        let mut args = vec!["s_client".to_string(), "-connect".into(), format!("127.0.0.1:{port}")];
        args.extend(["-servername", "smtp.example.com", "-verify_return_error", "-CAfile"].map(String::from));
        args.push(ca.display().to_string());
        if listener == "submission" {
            args.extend(["-starttls", "smtp"].map(String::from));
        }
        let out = run_bounded(Command::new("openssl").args(&args), TIMEOUT);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Verify return code: 0 (ok)"), "openssl {args:?}: {}", transcript(&out));
        assert!(text.contains("CN = smtp.example.com") || text.contains("CN=smtp.example.com"), "{text}");
    }
}
