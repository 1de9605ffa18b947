//! Durability: `kill -9` under load never loses a message the server
//! acknowledged.

use super::*;

/// A mailferry process on a fixed configuration (restartable on the same
/// addresses and state).
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(config: &Path, logs: &Arc<Mutex<Vec<String>>>, generation: usize) -> Daemon {
        for _try in 0..20 {
            let mut child = Command::new(BIN)
                .args(["--log-format", "json", "serve", "--config"])
                .arg(config)
                .env("MAILFERRY_LOG", "debug,wasmtime=warn,cranelift=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let stderr = child.stderr.take().unwrap();
            let sink = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("\"listening\"") {
                        let _ = tx.send(());
                    }
                    sink.lock().unwrap().push(format!("[{generation}] {line}"));
                }
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(()) => return Daemon { child },
                    Err(_) => {
                        if let Ok(Some(_)) = child.try_wait() {
                            // E.g. the address still in use: try again.
                            std::thread::sleep(Duration::from_millis(200));
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "server did not start:\n{}",
                            logs.lock().unwrap().join("\n")
                        );
                    }
                }
            }
        }
        panic!("server did not start after 20 tries:\n{}", logs.lock().unwrap().join("\n"));
    }

    fn kill9(&mut self) {
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 failed");
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What became of one submitted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Never got as far as the final dot (connection refused or lost).
    NotSent,
    /// The dot was sent but no reply came (the server died): may or may not
    /// have been queued.
    Unknown,
    /// A reply other than 250.
    Refused(u16),
    /// 250: must be delivered.
    Acked,
}

fn load_body(n: usize) -> String {
    // Every 10th message is ~64 KiB, so some kills land mid-transfer.
    let lines = if n.is_multiple_of(10) { 1000 } else { 3 };
    (0..lines)
        .map(|i| {
            format!(
                "message {n} line {i} {:016x}\r\n",
                (n as u64 * 1_000_003 + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .collect()
}

fn load_message(n: usize) -> String {
    format!(
        "From: load@example.com\r\nTo: sink@example.org\r\nSubject: load {n}\r\nDate: Mon, 2 Jun 2025 10:00:00 +0000\r\n\
Message-ID: <load.{n}@client.example>\r\n\r\n{}",
        load_body(n)
    )
}

/// A non-panicking SMTP client line reader.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.set_write_timeout(Some(Duration::from_secs(15)))?;
        let mut c = Conn { r: BufReader::new(s.try_clone()?), w: s };
        c.expect(None, 220)?;
        c.expect(Some("EHLO load.client"), 250)?;
        Ok(c)
    }

    fn reply(&mut self) -> std::io::Result<u16> {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
            }
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad line {line:?}")))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(code);
            }
        }
    }

    fn expect(&mut self, cmd: Option<&str>, code: u16) -> std::io::Result<()> {
        if let Some(cmd) = cmd {
            self.w.write_all(format!("{cmd}\r\n").as_bytes())?;
        }
        let got = self.reply()?;
        if got != code {
            return Err(std::io::Error::other(format!("{cmd:?}: {got}")));
        }
        Ok(())
    }

    /// One message. `Err` = connection trouble before the dot went out.
    fn submit(&mut self, n: usize) -> Fate {
        let before = (|| -> std::io::Result<()> {
            self.expect(Some("MAIL FROM:<load@example.com>"), 250)?;
            self.expect(Some("RCPT TO:<sink@example.org>"), 250)?;
            self.expect(Some("DATA"), 354)?;
            let mut data = load_message(n).into_bytes();
            data.extend_from_slice(b".\r\n");
            self.w.write_all(&data)?;
            self.w.flush()
        })();
        if before.is_err() {
            return Fate::NotSent;
        }
        match self.reply() {
            Ok(250) => Fate::Acked,
            Ok(code) => Fate::Refused(code),
            Err(_) => Fate::Unknown,
        }
    }
}

#[test]
fn kill_minus_9_never_loses_an_acknowledged_message() {
    const MESSAGES: usize = 300;
    const THREADS: usize = 4;
    const PER_SESSION: usize = 5;
    let started = Instant::now();
    export_upstream_password();
    let up = Upstream::start();

    // The server's home, laid out like the harness's.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("auth")).unwrap();
    std::fs::create_dir_all(home.path().join("state")).unwrap();
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&cache, home.path().join("state/plugin-cache")).unwrap();
    std::fs::write(home.path().join("auth/users"), "").unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let setup = Setup {
        listeners: format!(
            "\n[[listeners]]\nname = \"local\"\naddress = \"127.0.0.1:{port}\"\ntls = \"none\"\ntrusted_networks = [\"127.0.0.0/8\"]\n"
        ),
        plugins: Some(queue_plugins()),
        extra: format!("{}\n{}", up.verified_relay(), queue_section(None)),
        ..Default::default()
    };
    let config = home.path().join("mailferry.toml");
    std::fs::write(&config, Server::config_text(&setup)).unwrap();
    let spool = home.path().join("state/queue");
    let logs = Arc::new(Mutex::new(Vec::new()));

    let mut daemon = Daemon::start(&config, &logs, 0);
    let warm = started.elapsed();

    // The load.
    let fates: Arc<Mutex<Vec<Option<Fate>>>> = Arc::new(Mutex::new(vec![None; MESSAGES]));
    let load_started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let fates = fates.clone();
            std::thread::spawn(move || {
                let mut conn: Option<Conn> = None;
                let mut in_session = 0;
                for n in (t..MESSAGES).step_by(THREADS) {
                    if conn.is_none() {
                        conn = Conn::open(addr).ok();
                        in_session = 0;
                    }
                    let fate = match conn.as_mut() {
                        None => Fate::NotSent,
                        Some(c) => c.submit(n),
                    };
                    fates.lock().unwrap()[n] = Some(fate);
                    in_session += 1;
                    if fate != Fate::Acked || in_session >= PER_SESSION {
                        if let Some(mut c) = conn.take() {
                            let _ = c.w.write_all(b"QUIT\r\n");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(if fate == Fate::NotSent { 100 } else { 60 }));
                }
            })
        })
        .collect();

    // The killer: kill -9 every 0.5–1 s while the load runs.
    let pauses = [600u64, 900, 500, 1000, 700, 800, 550, 950];
    let mut kills = 0;
    let mut restarts = Vec::new();
    for (i, pause) in pauses.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(*pause));
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
        daemon.kill9();
        kills += 1;
        let t = Instant::now();
        daemon = Daemon::start(&config, &logs, i + 1);
        restarts.push(t.elapsed());
    }
    for w in workers {
        w.join().unwrap();
    }
    let load_took = load_started.elapsed();

    // The last server drains the queue.
    wait_spool_empty(&spool, Duration::from_secs(30), &|| logs.lock().unwrap().join("\n"));
    let drained = load_started.elapsed();
    std::thread::sleep(Duration::from_millis(500));

    // Compare.
    let fates: Vec<Fate> = fates.lock().unwrap().iter().map(|f| f.expect("every message was tried")).collect();
    let count = |pred: &dyn Fn(Fate) -> bool| fates.iter().filter(|f| pred(**f)).count();
    let acked = count(&|f| f == Fate::Acked);
    let unknown = count(&|f| f == Fate::Unknown);
    let not_sent = count(&|f| f == Fate::NotSent);
    let refused: Vec<(usize, Fate)> =
        fates.iter().copied().enumerate().filter(|(_, f)| matches!(f, Fate::Refused(_))).collect();

    let stored = up.messages();
    let mut copies: BTreeMap<usize, usize> = BTreeMap::new();
    let mut strange = Vec::new();
    for (i, m) in stored.iter().enumerate() {
        let (fields, rest) = split_header(&m.eml);
        let subject = fields
            .iter()
            .find(|f| field_name(f) == "subject")
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .unwrap_or_default();
        let Some(n) =
            subject.strip_prefix("Subject: load ").and_then(|n| n.parse::<usize>().ok()).filter(|n| *n < MESSAGES)
        else {
            strange.push(format!("upstream message {} (from {}): {subject:?}", i + 1, m.meta["mail_from"]));
            continue;
        };
        let body = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        if body != load_body(n).as_bytes() {
            strange.push(format!("upstream message {} (load {n}): body differs from what was submitted", i + 1));
        }
        if m.meta["rcpt_tos"] != serde_json::json!(["sink@example.org"]) || m.meta["mail_from"] != "load@example.com" {
            strange.push(format!("upstream message {} (load {n}): envelope {}", i + 1, m.meta));
        }
        *copies.entry(n).or_default() += 1;
    }
    let lost: Vec<usize> = (0..MESSAGES).filter(|&n| fates[n] == Fate::Acked && !copies.contains_key(&n)).collect();
    let invented: Vec<(usize, Fate)> =
        copies.keys().map(|&n| (n, fates[n])).filter(|(_, f)| !matches!(f, Fate::Acked | Fate::Unknown)).collect();
    let duplicates: usize = copies.values().map(|c| c - 1).sum();
    let dup_list: Vec<(usize, usize)> = copies.iter().filter(|(_, c)| **c > 1).map(|(n, c)| (*n, *c)).collect();
    let unknown_delivered = copies.keys().filter(|&&n| fates[n] == Fate::Unknown).count();
    let leftovers: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The lock file and the running server's control socket belong there.
        .filter(|n| n != "lock" && n != "control.sock")
        .collect();
    let log = logs.lock().unwrap().join("\n");
    let recovered = log.lines().filter(|l| l.contains("queued messages found in the spool")).count();

    println!(
        "kill -9 under load: {MESSAGES} messages, {kills} kills (restarts took {restarts:?}), load {load_took:?}, \
         drained at {drained:?}, first start {warm:?}, total {:?}\n  \
         acked {acked}, no reply after the dot {unknown} ({unknown_delivered} of them delivered anyway), \
         not sent {not_sent}, refused {}\n  \
         upstream copies {}, distinct {}, duplicates {duplicates} {dup_list:?}; restarts that found queued mail: {recovered}",
        started.elapsed(),
        refused.len(),
        stored.len(),
        copies.len(),
    );
    assert!(kills >= 3, "the load ended before a few kills: {kills}");
    assert!(acked >= MESSAGES / 3, "too few messages acknowledged for a meaningful test: {acked}");
    assert!(lost.is_empty(), "LOST: acknowledged (250) but never delivered: {lost:?}\n{log}");
    assert!(invented.is_empty(), "INVENTED: delivered but never submitted to the end of DATA: {invented:?}");
    assert!(strange.is_empty(), "unexpected upstream messages: {strange:#?}");
    assert!(leftovers.is_empty(), "spool leftovers after draining (.broken = set aside): {leftovers:?}\n{log}");
    assert!(refused.is_empty(), "replies other than 250 to DATA: {refused:?}");
    assert!(!log.contains("unreadable queue entry") && !log.contains("without its message file"), "{log}");
    drop(daemon);
}
