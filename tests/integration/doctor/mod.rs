//! `mailferry dns` and `mailferry doctor` end to end: keys made by `mailferry dkim keygen`, the
//! records `mailferry dns` prints, and `mailferry doctor` run against a small authoritative DNS
//! server started by the test (UDP and TCP on one 127.0.0.1 port) that serves a zone built from
//! those printed records, then broken one record at a time.

mod dns;
mod lookup_failures;
mod records;
mod round_trip;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::*;
use mail_auth::hickory_resolver::proto::op::{Edns, Message, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::{CNAME, MX, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record as DnsRecord, RecordType};

const D: &str = "example.com";
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// What a run of the binary gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Both streams, for assertion messages.
    fn dump(&self) -> String {
        format!("exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }

    /// stdout with every run of whitespace (line breaks and wrap indentation included) made one
    /// space, so prose assertions do not depend on where the text is wrapped.
    fn flat(&self) -> String {
        flat(&self.stdout)
    }
}

fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn mailferry(args: &[&str]) -> Run {
    Run::of(run_bounded(Command::new(BIN).args(args), TIMEOUT))
}

/// `mailferry doctor` against a server that never answers waits out every lookup: 7 lookups, each
/// 2 tries of 3 s (about 42 s).
const DEAD_SERVER_TIMEOUT: Duration = Duration::from_secs(120);

/// A keys folder filled by `mailferry dkim keygen`.
struct Keys {
    dir: tempfile::TempDir,
    /// DNS name -> TXT value, as keygen printed them.
    printed: BTreeMap<String, String>,
}

impl Keys {
    fn new() -> Keys {
        Keys { dir: tempfile::tempdir().unwrap(), printed: BTreeMap::new() }
    }

    /// The folder passed as `--keys` (created by keygen).
    fn path(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn path_str(&self) -> String {
        self.path().to_str().unwrap().to_string()
    }

    /// Runs `mailferry dkim keygen` and returns the `Value:` it printed.
    fn keygen(&mut self, domain: &str, selector: &str, algorithm: &str) -> String {
        let keys = self.path_str();
        let run = mailferry(&[
            "dkim",
            "keygen",
            "--domain",
            domain,
            "--selector",
            selector,
            "--algorithm",
            algorithm,
            "--keys",
            &keys,
        ]);
        assert_eq!(run.code, Some(0), "keygen: {}", run.dump());
        let field = |label: &str| {
            run.stdout
                .lines()
                .find_map(|l| l.trim_start().strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label} line in:\n{}", run.stdout))
                .trim()
                .to_string()
        };
        let name = field("Name:");
        assert_eq!(name, format!("{selector}._domainkey.{domain}"));
        let value = field("Value:");
        self.printed.insert(name, value.clone());
        value
    }
}

/// RSA `r` and Ed25519 `e` for example.com.
fn standard_keys() -> Keys {
    let mut keys = Keys::new();
    keys.keygen(D, "r", "rsa2048");
    keys.keygen(D, "e", "ed25519");
    keys
}

/// The `p=` tag of a DKIM record.
fn p_tag(record: &str) -> &str {
    record.split(';').find_map(|t| t.trim().strip_prefix("p=")).unwrap_or_else(|| panic!("no p= in {record:?}")).trim()
}

// ---------------------------------------------------------------------------------------------
// `mailferry dns` output
// ---------------------------------------------------------------------------------------------

/// One record as `mailferry dns` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Printed {
    heading: String,
    kind: String,
    priority: Option<u16>,
    name: String,
    value: String,
    /// The quoted character-strings printed for a long TXT value.
    strings: Vec<String>,
}

impl Printed {
    /// A pattern to copy from a provider's panel, not a literal record.
    fn is_placeholder(&self) -> bool {
        self.name.contains('<') || self.value.contains('<')
    }
}

/// The records of a `mailferry dns` output, in order.
fn parse_records(text: &str) -> Vec<Printed> {
    let mut records: Vec<Printed> = Vec::new();
    let mut heading = String::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("== ").and_then(|l| l.strip_suffix(" ==")) {
            heading = h.to_string();
            continue;
        }
        let trimmed = line.trim();
        if let Some(kind) = trimmed.strip_prefix("Type:") {
            let kind = kind.trim();
            let (kind, priority) = match kind.split_once(", priority ") {
                Some((k, p)) => (k.to_string(), Some(p.parse().unwrap())),
                None => (kind.to_string(), None),
            };
            records.push(Printed {
                heading: heading.clone(),
                kind,
                priority,
                name: String::new(),
                value: String::new(),
                strings: Vec::new(),
            });
        } else if let Some(current) = records.last_mut() {
            if let Some(name) = trimmed.strip_prefix("Name:") {
                current.name = name.trim().to_string();
            } else if let Some(value) = trimmed.strip_prefix("Value:") {
                current.value = value.trim().to_string();
            } else if line.starts_with("    \"") && trimmed.ends_with('"') && trimmed.len() >= 2 {
                current.strings.push(trimmed[1..trimmed.len() - 1].to_string());
            }
        }
    }
    records
}

fn find<'a>(records: &'a [Printed], kind: &str, name: &str) -> Vec<&'a Printed> {
    records.iter().filter(|r| r.kind == kind && r.name == name).collect()
}

fn one<'a>(records: &'a [Printed], kind: &str, name: &str) -> &'a Printed {
    match find(records, kind, name).as_slice() {
        [r] => r,
        other => panic!("expected one {kind} record at {name}, found {other:#?}"),
    }
}

const SES_ARGS: [&str; 8] = ["--domain", D, "--relay", "ses", "--inbound", "cloudflare", "--region", "eu-west-1"];

/// `mailferry dns` for the SES + Cloudflare setup.
fn dns_ses(keys: &Keys) -> Run {
    let keys = keys.path_str();
    let mut args = vec!["dns"];
    args.extend(SES_ARGS);
    args.extend(["--keys", &keys]);
    mailferry(&args)
}

// ---------------------------------------------------------------------------------------------
// A small authoritative DNS server
// ---------------------------------------------------------------------------------------------

/// The records the test server answers with.
#[derive(Clone, Default)]
struct Zone {
    records: Vec<(String, RData)>,
}

fn dns_name(name: &str) -> Name {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).unwrap()
}

impl Zone {
    /// One TXT record made of the given character-strings.
    fn txt_strings(mut self, name: &str, strings: &[String]) -> Zone {
        assert!(strings.iter().all(|s| s.len() <= 255), "a character-string holds at most 255 octets");
        self.records.push((name.to_ascii_lowercase(), RData::TXT(TXT::new(strings.to_vec()))));
        self
    }

    /// One TXT record, split into character-strings of at most 255 octets.
    fn txt(self, name: &str, value: &str) -> Zone {
        let strings: Vec<String> =
            value.as_bytes().chunks(255).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        self.txt_strings(name, &strings)
    }

    fn mx(mut self, name: &str, priority: u16, host: &str) -> Zone {
        self.records.push((name.to_ascii_lowercase(), RData::MX(MX::new(priority, dns_name(host)))));
        self
    }

    fn cname(mut self, name: &str, target: &str) -> Zone {
        self.records.push((name.to_ascii_lowercase(), RData::CNAME(CNAME(dns_name(target)))));
        self
    }

    /// Removes the records of one type at a name.
    fn without(mut self, name: &str, kind: RecordType) -> Zone {
        self.records.retain(|(n, d)| !(n == name && d.record_type() == kind));
        self
    }

    /// Every printed record that is not a placeholder, long TXT values served as the
    /// character-strings `dns` printed for them.
    fn from_printed(records: &[Printed]) -> Zone {
        let mut zone = Zone::default();
        for r in records.iter().filter(|r| !r.is_placeholder()) {
            zone = match r.kind.as_str() {
                "TXT" if r.value.len() > 255 => {
                    assert!(r.strings.len() > 1, "no character-strings printed for the long value of {}", r.name);
                    assert_eq!(r.strings.concat(), r.value, "the printed strings of {} are not its value", r.name);
                    zone.txt_strings(&r.name, &r.strings)
                }
                "TXT" => zone.txt(&r.name, &r.value),
                "MX" => zone.mx(&r.name, r.priority.expect("MX priority"), &r.value),
                "CNAME" => zone.cname(&r.name, &r.value),
                other => panic!("unexpected record type {other} in {r:?}"),
            };
        }
        zone
    }

    /// The records other domains publish that the SPF includes of the SES + Cloudflare setup
    /// lead to, and an unrelated TXT record at the apex, as real zones have.
    fn with_third_parties(self) -> Zone {
        self.txt("_spf.mx.cloudflare.net", "v=spf1 ip4:104.30.0.0/19 ~all")
            .txt("amazonses.com", "v=spf1 ip4:199.255.192.0/22 ip4:199.127.232.0/22 -all")
            .txt(D, "google-site-verification=abcdefghijklmnop")
    }
}

/// Which transport carried a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// An authoritative server for [`Zone`] on 127.0.0.1, UDP and TCP on the same ephemeral port, on
/// background threads; stopped when dropped. A name not in the zone is NXDOMAIN, a known name
/// without the asked type NODATA. A UDP answer larger than the client's payload size (512, or
/// its EDNS size) is sent truncated, so the client retries over TCP.
struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Every question asked: (transport, name, type).
    questions: Arc<Mutex<Vec<(Transport, String, RecordType)>>>,
}

/// How the test server misbehaves, if at all.
#[derive(Clone, Default)]
struct Behaviour {
    /// Truncate every UDP answer that has records, forcing TCP.
    truncate_udp: bool,
    /// Names answered with an error code instead of their records; `*` for every name.
    failing: Vec<(String, ResponseCode)>,
}

struct Responder {
    zone: Zone,
    behaviour: Behaviour,
    questions: Arc<Mutex<Vec<(Transport, String, RecordType)>>>,
}

impl Responder {
    /// The answer to one request, or None for a message that is not a DNS query.
    fn answer(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = Message::from_vec(request).ok()?;
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        if let Some(edns) = &request.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().clamp(512, 1232));
            response.set_edns(ours);
        }
        for query in &request.queries {
            response.add_query(query.clone());
            let asked = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
            self.questions.lock().unwrap().push((transport, asked.clone(), query.query_type()));
            if let Some((_, code)) = self.behaviour.failing.iter().find(|(n, _)| *n == asked || n == "*") {
                response.metadata.response_code = *code;
                continue;
            }
            let at_name: Vec<&RData> = self.zone.records.iter().filter(|(n, _)| *n == asked).map(|(_, d)| d).collect();
            if at_name.is_empty() {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            for data in at_name.into_iter().filter(|d| d.record_type() == query.query_type()) {
                response.add_answer(DnsRecord::from_rdata(query.name().clone(), 300, data.clone()));
            }
        }
        let bytes = response.to_vec().ok()?;
        let limit = usize::from(request.max_payload());
        if transport == Transport::Udp
            && (bytes.len() > limit || (self.behaviour.truncate_udp && !response.answers.is_empty()))
        {
            return response.truncate().to_vec().ok();
        }
        Some(bytes)
    }
}

impl DnsServer {
    fn start(zone: Zone) -> DnsServer {
        DnsServer::start_with(zone, Behaviour::default())
    }

    fn start_with(zone: Zone, behaviour: Behaviour) -> DnsServer {
        // The same port for UDP and TCP, as a name server has.
        let (udp, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("no port free for both UDP and TCP on 127.0.0.1");
        let addr = udp.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let questions = Arc::new(Mutex::new(Vec::new()));
        let responder = Arc::new(Responder { zone, behaviour, questions: questions.clone() });

        udp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let udp_thread = {
            let (stop, responder) = (stop.clone(), responder.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65535];
                while !stop.load(Ordering::Relaxed) {
                    let (n, peer) = match udp.recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                            continue
                        }
                        // ICMP errors from earlier replies (Linux reports them here): keep serving.
                        Err(_) => continue,
                    };
                    if let Some(answer) = responder.answer(&buf[..n], Transport::Udp) {
                        let _ = udp.send_to(&answer, peer);
                    }
                }
            })
        };

        tcp.set_nonblocking(true).unwrap();
        let tcp_thread = {
            let (stop, responder) = (stop.clone(), responder.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((stream, _)) => serve_tcp(stream, &responder, &stop),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        DnsServer { addr, stop, threads: vec![udp_thread, tcp_thread], questions }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn questions(&self) -> Vec<(Transport, String, RecordType)> {
        self.questions.lock().unwrap().clone()
    }
}

/// Answers the length-prefixed queries of one TCP connection until the client closes it.
fn serve_tcp(mut stream: TcpStream, responder: &Responder, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut idle = Instant::now();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) && idle.elapsed() < Duration::from_secs(5) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                idle = Instant::now();
                pending.extend_from_slice(&buf[..n]);
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let request: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            let Some(answer) = responder.answer(&request, Transport::Tcp) else { return };
            let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A 127.0.0.1 port where nothing listens, UDP or TCP.
fn dead_port() -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    drop(udp);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(), "something listens on {addr}");
    addr
}

// ---------------------------------------------------------------------------------------------
// `mailferry doctor`
// ---------------------------------------------------------------------------------------------

/// `mailferry doctor` for the SES + Cloudflare setup, asking `server`.
fn doctor(keys: &Path, server: &str) -> Run {
    doctor_bounded(keys, server, TIMEOUT)
}

fn doctor_bounded(keys: &Path, server: &str, timeout: Duration) -> Run {
    let keys = keys.to_str().unwrap();
    let mut args = vec!["doctor"];
    args.extend(SES_ARGS);
    args.extend(["--keys", keys, "--dns-server", server]);
    Run::of(run_bounded(Command::new(BIN).args(&args), timeout))
}

/// The verdict lines of a report: (status, check name).
fn verdicts(report: &str) -> Vec<(String, String)> {
    report
        .lines()
        .filter_map(|l| {
            let (status, name) = l.split_once("  ")?;
            matches!(status, "PASS" | "WARN" | "FAIL").then(|| (status.to_string(), name.to_string()))
        })
        .collect()
}

fn status_of(run: &Run, check: &str) -> String {
    verdicts(&run.stdout)
        .into_iter()
        .find(|(_, name)| name.starts_with(check))
        .unwrap_or_else(|| panic!("no check {check:?} in the report:\n{}", run.dump()))
        .0
}

/// The last line of a report: "N passed, N warnings, N failures".
fn summary(report: &str) -> (usize, usize, usize) {
    let line = report.trim_end().lines().last().unwrap_or_default();
    let numbers: Vec<usize> = line.split([' ', ',']).filter_map(|w| w.parse().ok()).collect();
    assert!(line.contains("passed") && numbers.len() == 3, "no summary line in:\n{report}");
    (numbers[0], numbers[1], numbers[2])
}

/// The lines of the report's `fix:` block under the check `check`, with the lead removed.
fn fix_of(report: &str, check: &str) -> Vec<String> {
    let mut lines = report.lines().skip_while(|l| !(l.len() > 6 && l[6..].starts_with(check)));
    assert!(lines.next().is_some(), "no check {check:?} in:\n{report}");
    let mut fix = Vec::new();
    for line in lines {
        if let Some(first) = line.strip_prefix("      fix: ") {
            fix.push(first.to_string());
        } else if !fix.is_empty() && line.starts_with("           ") {
            fix.push(line.trim().to_string());
        } else if !line.starts_with("      ") {
            break;
        }
    }
    assert!(!fix.is_empty(), "no fix under {check:?} in:\n{report}");
    fix
}

/// Everything one doctor test needs: local keys, what `dns` printed for them, and the correct zone.
struct Setup {
    keys: Keys,
    records: Vec<Printed>,
    /// The SPF value `dns` asks for at the apex.
    spf: String,
    /// The DMARC value `dns` asks for.
    dmarc: String,
}

impl Setup {
    fn new() -> Setup {
        let keys = standard_keys();
        let run = dns_ses(&keys);
        assert_eq!(run.code, Some(0), "dns: {}", run.dump());
        let records = parse_records(&run.stdout);
        let spf = one(&records, "TXT", D).value.clone();
        let dmarc = one(&records, "TXT", "_dmarc.example.com").value.clone();
        Setup { keys, records, spf, dmarc }
    }

    /// The zone as `mailferry dns` asked for it, plus what other domains publish.
    fn zone(&self) -> Zone {
        Zone::from_printed(&self.records).with_third_parties()
    }

    fn doctor(&self, zone: Zone) -> Run {
        self.doctor_with(zone, Behaviour::default())
    }

    fn doctor_with(&self, zone: Zone, behaviour: Behaviour) -> Run {
        let server = DnsServer::start_with(zone, behaviour);
        doctor(&self.keys.path(), &server.addr())
    }
}

/// A failed doctor run: exit 1, the report on stdout, nothing on stderr.
fn assert_failed(run: &Run) {
    assert_eq!(run.code, Some(1), "{}", run.dump());
    assert!(run.stdout.starts_with("DNS check of example.com\n"), "{}", run.dump());
    assert!(run.stderr.trim().is_empty(), "the report goes to stdout, nothing to stderr: {}", run.dump());
    let (_, _, failures) = summary(&run.stdout);
    assert!(failures > 0, "{}", run.dump());
}
