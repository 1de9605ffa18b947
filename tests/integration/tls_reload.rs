//! Certificates replaced while the server runs, and chosen by server name
//! (SNI): the real server, a real rustls client that checks the chain
//! against a test CA, and files replaced the ways renewal tools do it
//! (write and rename, write in place, certbot's and Kubernetes' symlink
//! swaps). A new handshake must get the new certificate; a session opened
//! before must still deliver mail; a broken replacement must change nothing
//! but the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

const HOST: &str = "mx.test.example";

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A certificate it issued: the chain as certbot's fullchain.pem has it,
/// the key, and the end-entity certificate's DER for comparisons.
struct Issued {
    fullchain: String,
    key: String,
    leaf: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "mailferry test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    fn issue(&self, names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued { fullchain: cert.pem() + &self.cert.pem(), key: key.serialize_pem(), leaf: cert.der().to_vec() }
    }

    /// A client that trusts only this CA and checks the name.
    fn client(&self) -> rustls::ClientConfig {
        install_crypto();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
    }
}

/// Writes `data` beside `path` and renames it into place, as most tools do.
fn replace(path: &Path, data: &str) {
    let tmp = path.with_file_name(format!("{}.tmp", path.file_name().unwrap().to_str().unwrap()));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Points the symlink `link` at `target` in one step (a new link renamed
/// over the old one), as certbot and Kubernetes do.
fn swap_symlink(link: &Path, target: &Path) {
    let tmp = link.with_file_name(format!("{}_tmp", link.file_name().unwrap().to_str().unwrap()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

fn start(tls: &str) -> Server {
    Server::start(Setup { users: users_with_all_schemes(), extra: tls.to_string(), ..Default::default() })
}

fn tls_section(cert: &Path, key: &Path) -> String {
    format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert.display().to_string(), key.display().to_string())
}

/// The certificate a new implicit-TLS handshake gets, asking for `name`.
fn implicit_cert(server: &Server, config: rustls::ClientConfig, name: &str) -> Vec<u8> {
    let (mut c, leaf) = Client::connect_tls_with(server.addr("submissions"), config, name);
    assert_eq!(c.read().code, 220);
    leaf
}

/// The certificate a new STARTTLS handshake gets, asking for `name`.
fn starttls_cert(server: &Server, config: rustls::ClientConfig, name: &str) -> Vec<u8> {
    let mut c = Client::connect(server.addr("submission")).greeting();
    c.expect("EHLO client.example", 250);
    c.starttls_with(config, name)
}

/// Waits until new handshakes on both TLS listeners get `want`.
fn wait_for_cert(server: &Server, ca: &Ca, want: &Issued, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = implicit_cert(server, ca.client(), HOST);
        if got == want.leaf {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: new handshakes still get the old certificate\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(starttls_cert(server, ca.client(), HOST), want.leaf, "{what}: STARTTLS");
}

/// A session over STARTTLS, logged in, that stays open across reloads.
fn open_starttls_session(server: &Server, ca: &Ca) -> (Client, Vec<u8>) {
    let mut c = Client::connect(server.addr("submission")).greeting();
    c.expect("EHLO client.example", 250);
    let leaf = c.starttls_with(ca.client(), HOST);
    c.expect("EHLO client.example", 250);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    (c, leaf)
}

fn open_implicit_session(server: &Server, ca: &Ca) -> (Client, Vec<u8>) {
    let (c, leaf) = Client::connect_tls_with(server.addr("submissions"), ca.client(), HOST);
    let mut c = c.greeting();
    c.expect("EHLO client.example", 250);
    assert_eq!(c.auth_plain("alice@example.com", "wonderland").code, 235);
    (c, leaf)
}

fn send_through(c: &mut Client, subject: &str) {
    let r = c.send_mail("alice@example.com", &["bob@example.net"], &format!("Subject: {subject}\n\nhello\n"));
    assert_eq!(r.code, 250, "{subject}: {r}");
}

fn sighup(server: &Server) {
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
}

/// The number of log lines containing every needle.
fn count_logs(server: &Server, needles: &[&str]) -> usize {
    server.logs.lock().unwrap().iter().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// Waits until there are `n` log lines containing every needle.
fn wait_logs(server: &Server, needles: &[&str], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_logs(server, needles) < n {
        assert!(Instant::now() < deadline, "fewer than {n} log lines with {needles:?}:\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server whose certificate, issued by `ca` for [`HOST`], is read from
/// files in a folder of the test's.
struct Served {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    first: Issued,
    server: Server,
}

fn serve_issued(ca: &Ca) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = ca.issue(&[HOST]);
    std::fs::write(&cert, &first.fullchain).unwrap();
    std::fs::write(&key, &first.key).unwrap();
    let server = start(&tls_section(&cert, &key));
    Served { dir, cert, key, first, server }
}

#[test]
fn a_replaced_certificate_reaches_new_handshakes_while_open_sessions_go_on() {
    let ca = Ca::new();
    let Served { dir: _dir, cert, key, first: a, server } = serve_issued(&ca);
    server.wait_log(&["tls certificate loaded", HOST]);

    let (mut old_starttls, leaf) = open_starttls_session(&server, &ca);
    assert_eq!(leaf, a.leaf);
    let (mut old_implicit, leaf) = open_implicit_session(&server, &ca);
    assert_eq!(leaf, a.leaf);

    // New files renamed into place, the key first.
    let b = ca.issue(&[HOST, "smtp.test.example"]);
    replace(&key, &b.key);
    replace(&cert, &b.fullchain);
    wait_for_cert(&server, &ca, &b, "after a rename");
    let line = server.wait_log(&["tls certificate reloaded", "smtp.test.example"]);
    assert!(line.contains(&cert.display().to_string()) && line.contains("not_after"), "{line}");
    // The sessions opened before go on with their own keys.
    send_through(&mut old_starttls, "over STARTTLS, opened before the reload");
    send_through(&mut old_implicit, "over implicit TLS, opened before the reload");

    // Written in place (cp, an editor): the chain first, then the key.
    let c = ca.issue(&[HOST]);
    std::fs::write(&cert, &c.fullchain).unwrap();
    std::fs::write(&key, &c.key).unwrap();
    wait_for_cert(&server, &ca, &c, "after writing in place");
    send_through(&mut old_starttls, "still open after two reloads");
    old_implicit.expect("QUIT", 221);
    old_starttls.expect("QUIT", 221);
    assert_eq!(server.outbox().len(), 3);
}

/// One implicit-TLS connection with `config`, which keeps its sessions for
/// resumption: how the handshake went and the certificate the client saw
/// (on a resumed handshake, the one of the session resumed).
fn resuming_connection(server: &Server, config: &Arc<rustls::ClientConfig>) -> (rustls::HandshakeKind, Vec<u8>) {
    use std::io::{BufRead, Write};
    let tcp = std::net::TcpStream::connect(server.addr("submissions")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), HOST.try_into().unwrap()).unwrap();
    let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, tcp));
    // Reading the greeting also reads the session tickets sent after the
    // handshake, so the next connection can resume.
    let mut greeting = String::new();
    tls.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("220 "), "{greeting}");
    let kind = tls.get_ref().conn.handshake_kind().unwrap();
    let leaf = tls.get_ref().conn.peer_certificates().unwrap()[0].to_vec();
    tls.get_mut().write_all(b"QUIT\r\n").unwrap();
    (kind, leaf)
}

/// A resumed handshake carries no certificate: sessions made before a
/// replacement are forgotten, or a client resuming would keep seeing the
/// old certificate after every reload.
#[test]
fn a_client_resuming_after_a_replacement_gets_the_new_certificate() {
    let ca = Ca::new();
    let Served { dir: _dir, cert, key, first: a, server } = serve_issued(&ca);
    let client = Arc::new(ca.client());
    assert_eq!(resuming_connection(&server, &client), (rustls::HandshakeKind::Full, a.leaf.clone()));
    assert_eq!(resuming_connection(&server, &client), (rustls::HandshakeKind::Resumed, a.leaf.clone()));

    let b = ca.issue(&[HOST]);
    replace(&key, &b.key);
    replace(&cert, &b.fullchain);
    wait_for_cert(&server, &ca, &b, "after a rename");
    assert_eq!(resuming_connection(&server, &client), (rustls::HandshakeKind::Full, b.leaf.clone()));
    assert_eq!(resuming_connection(&server, &client), (rustls::HandshakeKind::Resumed, b.leaf));
}

#[test]
fn certbot_and_kubernetes_symlink_swaps_are_noticed() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    // certbot: live/HOST/{fullchain,privkey}.pem link into archive/HOST/.
    let archive = dir.path().join("archive");
    let live = dir.path().join("live");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    let issue_into_archive = |n: u32, names: &[&str]| {
        let issued = ca.issue(names);
        std::fs::write(archive.join(format!("fullchain{n}.pem")), &issued.fullchain).unwrap();
        std::fs::write(archive.join(format!("privkey{n}.pem")), &issued.key).unwrap();
        issued
    };
    let a = issue_into_archive(1, &[HOST]);
    std::os::unix::fs::symlink("../archive/fullchain1.pem", live.join("fullchain.pem")).unwrap();
    std::os::unix::fs::symlink("../archive/privkey1.pem", live.join("privkey.pem")).unwrap();

    // Kubernetes: tls.crt -> ..data/tls.crt, ..data -> ..2025_01_01 (a
    // folder written whole, then the ..data link swapped).
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let write_secret_version = |version: &str, issued: &Issued| {
        let d = secret.join(version);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("tls.crt"), &issued.fullchain).unwrap();
        std::fs::write(d.join("tls.key"), &issued.key).unwrap();
    };
    let k1 = ca.issue(&["k8s.test.example"]);
    write_secret_version("..2025_01_01", &k1);
    std::os::unix::fs::symlink("..2025_01_01", secret.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", secret.join("tls.key")).unwrap();

    let server = start(&format!(
        "{}\n[[tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
        tls_section(&live.join("fullchain.pem"), &live.join("privkey.pem")),
        secret.join("tls.crt").display().to_string(),
        secret.join("tls.key").display().to_string(),
    ));
    let (mut old, leaf) = open_starttls_session(&server, &ca);
    assert_eq!(leaf, a.leaf);
    assert_eq!(implicit_cert(&server, ca.client(), "k8s.test.example"), k1.leaf);

    // certbot renew: new archive files, then each live link swapped.
    let b = issue_into_archive(2, &[HOST]);
    swap_symlink(&live.join("fullchain.pem"), Path::new("../archive/fullchain2.pem"));
    swap_symlink(&live.join("privkey.pem"), Path::new("../archive/privkey2.pem"));
    wait_for_cert(&server, &ca, &b, "after certbot's symlink swap");
    send_through(&mut old, "opened before certbot renewed");

    // The kubelet updating a mounted secret.
    let k2 = ca.issue(&["k8s.test.example"]);
    write_secret_version("..2025_03_01", &k2);
    swap_symlink(&secret.join("..data"), Path::new("..2025_03_01"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while implicit_cert(&server, ca.client(), "k8s.test.example") != k2.leaf {
        assert!(Instant::now() < deadline, "the secret's new certificate is not served\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    // The default was not touched by it.
    assert_eq!(implicit_cert(&server, ca.client(), HOST), b.leaf);
    send_through(&mut old, "opened before the secret changed");
}

#[test]
fn sighup_reloads_and_a_broken_replacement_keeps_the_certificate_in_use() {
    let ca = Ca::new();
    let Served { dir: _dir, cert, key, server, .. } = serve_issued(&ca);
    let (mut old, _) = open_implicit_session(&server, &ca);

    // SIGHUP: read again now, and say so.
    let b = ca.issue(&[HOST]);
    replace(&key, &b.key);
    replace(&cert, &b.fullchain);
    sighup(&server);
    server.wait_log(&["tls certificate reloaded", "SIGHUP"]);
    wait_for_cert(&server, &ca, &b, "after SIGHUP");

    // A key that is not a key: the log says why, handshakes go on with B.
    let failed = ["tls certificate not reloaded, the previous one stays in use"];
    replace(&key, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
    wait_logs(&server, &[failed[0], "tls.key", "not a usable private key"], 1);
    assert_eq!(implicit_cert(&server, ca.client(), HOST), b.leaf);
    assert_eq!(starttls_cert(&server, ca.client(), HOST), b.leaf);
    // Logged once, not at every look at the files.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(count_logs(&server, &failed), 1, "{}", server.log_text());

    // A new chain with the key of another certificate (a renewal half
    // written, or two files from different issuances).
    let c = ca.issue(&[HOST]);
    replace(&cert, &c.fullchain);
    replace(&key, &ca.issue(&[HOST]).key);
    wait_logs(&server, &[failed[0], "does not belong to the certificate"], 1);
    assert_eq!(implicit_cert(&server, ca.client(), HOST), b.leaf);
    // SIGHUP with the files still broken: logged at once, B stays.
    let before = count_logs(&server, &failed);
    sighup(&server);
    wait_logs(&server, &failed, before + 1);
    assert_eq!(implicit_cert(&server, ca.client(), HOST), b.leaf);
    send_through(&mut old, "through the failed reloads");

    // The right key arrives: C is served.
    replace(&key, &c.key);
    wait_for_cert(&server, &ca, &c, "after the key was fixed");
    send_through(&mut old, "after the certificate was fixed");
}

#[test]
fn the_server_name_the_client_asks_for_chooses_the_certificate() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, issued: &Issued| {
        let (c, k) = (dir.path().join(format!("{name}.crt")), dir.path().join(format!("{name}.key")));
        std::fs::write(&c, &issued.fullchain).unwrap();
        std::fs::write(&k, &issued.key).unwrap();
        (c, k)
    };
    let default = ca.issue(&[HOST]);
    let other = ca.issue(&["mail.other.example"]);
    let wild = ca.issue(&["*.wild.example", "wild.example"]);
    let (dc, dk) = write("default", &default);
    let (oc, ok) = write("other", &other);
    let (wc, wk) = write("wild", &wild);
    let server = start(&format!(
        "{}\n[[tls.certificates]]\ncert = {:?}\nkey = {:?}\n\n[[tls.certificates]]\ncert = {:?}\nkey = {:?}\nnames = [\"*.wild.example\"]\n",
        tls_section(&dc, &dk),
        oc.display().to_string(),
        ok.display().to_string(),
        wc.display().to_string(),
        wk.display().to_string(),
    ));
    server.wait_log(&["tls certificate loaded", "mail.other.example"]);

    // Names from the certificate, over both kinds of listener.
    assert_eq!(implicit_cert(&server, ca.client(), "mail.other.example"), other.leaf);
    assert_eq!(starttls_cert(&server, ca.client(), "mail.other.example"), other.leaf);
    assert_eq!(implicit_cert(&server, ca.client(), "MAIL.Other.Example"), other.leaf, "names are case-insensitive");
    // Configured names: the wildcard covers one label; wild.example itself
    // is not in names, so it gets the default.
    assert_eq!(implicit_cert(&server, ca.client(), "smtp.wild.example"), wild.leaf);
    assert_eq!(starttls_cert(&server, ca.client(), "smtp.wild.example"), wild.leaf);
    assert_eq!(implicit_cert(&server, insecure_client_config(), "wild.example"), default.leaf);
    assert_eq!(implicit_cert(&server, insecure_client_config(), "a.b.wild.example"), default.leaf);
    // Unknown names and no name at all: the default.
    assert_eq!(implicit_cert(&server, insecure_client_config(), "unknown.example"), default.leaf);
    assert_eq!(implicit_cert(&server, ca.client(), HOST), default.leaf);
    let mut no_sni = ca.client();
    no_sni.enable_sni = false;
    assert_eq!(implicit_cert(&server, no_sni.clone(), HOST), default.leaf);
    assert_eq!(starttls_cert(&server, no_sni, HOST), default.leaf);

    // Every certificate is watched, not only the default.
    let other2 = ca.issue(&["mail.other.example"]);
    replace(&ok, &other2.key);
    replace(&oc, &other2.fullchain);
    let deadline = Instant::now() + Duration::from_secs(20);
    while implicit_cert(&server, ca.client(), "mail.other.example") != other2.leaf {
        assert!(Instant::now() < deadline, "the renewed SNI certificate is not served\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(implicit_cert(&server, ca.client(), HOST), default.leaf);
}

fn check(config: &Path) -> (bool, String) {
    let out =
        run_bounded(std::process::Command::new(BIN).arg("check").arg("--config").arg(config), Duration::from_secs(120));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_lists_every_certificate_and_refuses_a_broken_one() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let d = ca.issue(&[HOST]);
    let o = ca.issue(&["mail.other.example", "*.other.example"]);
    let paths: Vec<PathBuf> = ["d.crt", "d.key", "o.crt", "o.key"].iter().map(|f| dir.path().join(f)).collect();
    for (p, data) in paths.iter().zip([&d.fullchain, &d.key, &o.fullchain, &o.key]) {
        std::fs::write(p, data).unwrap();
    }
    let setup = Setup {
        extra: format!(
            "{}\n[[tls.certificates]]\ncert = {:?}\nkey = {:?}\nnames = [\"mail.other.example\", \"smtp.nowhere.example\"]\n",
            tls_section(&paths[0], &paths[1]),
            paths[2].display().to_string(),
            paths[3].display().to_string()
        ),
        ..Default::default()
    };
    // Start once so the state folder and the plugin cache exist.
    let server = Server::start(setup);
    let config = server.path("mailferry.toml");
    let (ok, out) = check(&config);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("tls ({}): names {HOST}; valid until 4096-01-01", paths[0].display())), "{out}");
    assert!(
        out.contains("tls.certificates[0]") && out.contains("names mail.other.example, smtp.nowhere.example"),
        "{out}"
    );
    assert!(out.contains("not valid for smtp.nowhere.example"), "a configured name the certificate lacks: {out}");

    std::fs::write(&paths[3], &d.key).unwrap();
    let (ok, out) = check(&config);
    assert!(!ok, "{out}");
    assert!(out.contains("tls.certificates[0]: the private key") && out.contains("does not belong"), "{out}");
}
