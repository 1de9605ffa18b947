//! The certificates in use, chosen per handshake by the name the client
//! asks for (SNI), and replaced while the server runs.
//!
//! The `ServerConfig` is built once around [`Certificates`], which rustls
//! asks for a certificate at every handshake: a reload swaps what the next
//! handshake gets, and sessions already under TLS keep the keys they agreed
//! on. Sessions clients could resume are forgotten at each replacement: a
//! resumed handshake skips the certificate, so a client resuming would go
//! on seeing the old one.
//!
//! Files are polled rather than watched with inotify because renewal tools
//! replace them in every possible way (certbot swaps symlinks into
//! `archive/`, Kubernetes swaps a `..data` symlink, others write in place),
//! and a stat every few seconds notices all of them.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::certificate::{self, Loaded, Source};

/// Every configured certificate; the first is the default.
pub struct Certificates {
    sources: Vec<Source>,
    current: RwLock<Arc<Vec<Arc<Loaded>>>>,
    /// Held for the whole of a reload, so SIGHUP and the watcher never
    /// interleave.
    watch: Mutex<Vec<WatchState>>,
    /// Resumable TLS sessions (1.2 session IDs, 1.3 stateful tickets),
    /// replaced by an empty cache with each certificate.
    sessions: RwLock<Arc<ServerSessionMemoryCache>>,
}

/// Sessions kept for resumption: rustls's default size.
const SESSIONS: usize = 256;

/// What the watcher knows about one certificate's files.
struct WatchState {
    seen: Fingerprint,
    /// The last reload that failed, until one succeeds.
    failure: Option<Failure>,
    last_expiry_warning: Option<Instant>,
}

struct Failure {
    error: String,
    logged: bool,
}

/// The cert and key files as last seen.
type Fingerprint = [Option<Stamp>; 2];

/// One file, symlinks followed: where the path leads (certbot's `live/`
/// links into `archive/`, a Kubernetes secret's `..data` link) and what is
/// there. Owner and mode are in it so a chown or chmod that makes the key
/// readable is noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    target: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    mode: u32,
    uid: u32,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        target: std::fs::canonicalize(path).unwrap_or_default(),
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        mode: m.mode(),
        uid: m.uid(),
    })
}

fn fingerprint(source: &Source) -> Fingerprint {
    [stamp(&source.cert), stamp(&source.key)]
}

/// How often a certificate close to its end is warned about again.
const EXPIRY_REMINDER: Duration = Duration::from_secs(24 * 3600);

impl Certificates {
    /// Loads every certificate; any that does not load is an error.
    pub fn load(sources: Vec<Source>) -> Result<Certificates, String> {
        assert!(!sources.is_empty(), "at least the default certificate");
        let now = certificate::now();
        let mut loaded = Vec::new();
        let mut watch = Vec::new();
        for source in &sources {
            // Before reading, so a change while reading is seen next time.
            let seen = fingerprint(source);
            let l = certificate::load(source)?;
            log_loaded(source, &l, "tls certificate loaded", "start");
            let warned = warn_expiry(source, &l, now);
            watch.push(WatchState { seen, failure: None, last_expiry_warning: warned.then(Instant::now) });
            loaded.push(Arc::new(l));
        }
        Ok(Certificates {
            sources,
            current: RwLock::new(Arc::new(loaded)),
            watch: Mutex::new(watch),
            sessions: RwLock::new(ServerSessionMemoryCache::new(SESSIONS)),
        })
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The certificates in use, in configuration order (default first).
    pub fn current(&self) -> Arc<Vec<Arc<Loaded>>> {
        self.current.read().unwrap().clone()
    }

    /// Reads every certificate again, changed or not, and logs each outcome
    /// at once (SIGHUP: the operator is watching).
    pub fn reload_logged(&self, why: &str) {
        let mut watch = self.watch.lock().unwrap();
        for (i, state) in watch.iter_mut().enumerate() {
            state.seen = fingerprint(&self.sources[i]);
            match self.try_replace(i, why) {
                Ok(warned) => {
                    state.failure = None;
                    state.last_expiry_warning = warned.then(Instant::now);
                }
                Err(error) => {
                    log_failure(&self.sources[i], &error);
                    state.failure = Some(Failure { error, logged: true });
                }
            }
        }
    }

    /// One look at the files: reloads the certificates whose files changed
    /// and retries those whose last reload failed.
    ///
    /// A failure right after a change is not logged yet: certbot swaps the
    /// chain's and the key's symlinks one after the other, and a tool that
    /// writes in place may be halfway through, so a mismatch then is usually
    /// gone at the next look. A failure that is still there with the files
    /// unchanged is logged, once.
    pub fn reload_if_changed(&self) {
        let mut watch = self.watch.lock().unwrap();
        for (i, state) in watch.iter_mut().enumerate() {
            let source = &self.sources[i];
            let now = fingerprint(source);
            let changed = now != state.seen;
            if !changed && state.failure.is_none() {
                continue;
            }
            state.seen = now;
            match self.try_replace(i, "a file changed") {
                Ok(warned) => {
                    state.failure = None;
                    state.last_expiry_warning = warned.then(Instant::now);
                }
                Err(error) => {
                    let already_logged =
                        !changed && state.failure.as_ref().is_some_and(|f| f.logged && f.error == error);
                    let logged = if already_logged {
                        true
                    } else if changed {
                        tracing::debug!(file = %source.cert.display(), %error, "tls certificate not reloaded yet, looking again");
                        false
                    } else {
                        log_failure(source, &error);
                        true
                    };
                    state.failure = Some(Failure { error, logged });
                }
            }
        }
        self.remind_expiry(&mut watch);
    }

    /// Loads certificate `i` and puts it in use, or says why not; whether
    /// its expiry was warned about.
    fn try_replace(&self, i: usize, why: &str) -> Result<bool, String> {
        let source = &self.sources[i];
        let new = certificate::load(source)?;
        let now = certificate::now();
        let old = self.current()[i].clone();
        if new.expired(now) && !old.expired(now) {
            return Err(format!(
                "{}: the new certificate in {} expired on {}; the one in use is valid until {}",
                source.label,
                source.cert.display(),
                new.not_after_text(),
                old.not_after_text()
            ));
        }
        log_loaded(source, &new, "tls certificate reloaded", why);
        let warned = warn_expiry(source, &new, now);
        let mut current = self.current.write().unwrap();
        let mut next = current.as_ref().clone();
        next[i] = Arc::new(new);
        *current = Arc::new(next);
        *self.sessions.write().unwrap() = ServerSessionMemoryCache::new(SESSIONS);
        Ok(warned)
    }

    /// Warns again, once a day, about certificates close to their end that
    /// nothing has replaced.
    fn remind_expiry(&self, watch: &mut [WatchState]) {
        let current = self.current();
        let now = certificate::now();
        for (i, state) in watch.iter_mut().enumerate() {
            if state.last_expiry_warning.is_some_and(|t| t.elapsed() < EXPIRY_REMINDER) {
                continue;
            }
            if warn_expiry(&self.sources[i], &current[i], now) {
                state.last_expiry_warning = Some(Instant::now());
            }
        }
    }

    /// Checks the files every `every` while `self` is in use.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        crate::poll::every(self, every, Self::reload_if_changed);
    }

    /// The certificate for a client that asked for `server_name` (SNI) and
    /// can check `schemes`: one for exactly that name, else one whose
    /// wildcard covers it, else the default; among those the first whose key
    /// the client can use (an RSA and an ECDSA certificate may share names).
    fn choose(&self, server_name: Option<&str>, schemes: &[SignatureScheme]) -> Arc<CertifiedKey> {
        let current = self.current();
        let wanted = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        if let Some(wanted) = &wanted {
            for l in current.iter() {
                match best_match(&l.names, wanted) {
                    Some(Match::Exact) => exact.push(l),
                    Some(Match::Wildcard) => wildcard.push(l),
                    None => {}
                }
            }
        }
        let default = &current[0];
        let candidates: Vec<&Arc<Loaded>> = exact.into_iter().chain(wildcard).chain([default]).collect();
        let usable = candidates.iter().find(|l| l.certified.key.choose_scheme(schemes).is_some());
        usable.unwrap_or(&candidates[0]).certified.clone()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(client_hello.server_name(), client_hello.signature_schemes()))
    }
}

/// The server's session cache: resuming a session made before a
/// certificate was replaced finds nothing, and makes a full handshake.
impl StoresServerSessions for Certificates {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.sessions.read().unwrap().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.sessions.read().unwrap().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.sessions.read().unwrap().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.sources.iter().map(|s| &s.cert)).finish()
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    Exact,
    Wildcard,
}

/// How `names` (lower case) cover `wanted` (lower case): `*.example.org`
/// covers one label only, as in certificates (RFC 6125 §6.4.3).
fn best_match(names: &[String], wanted: &str) -> Option<Match> {
    let parent = wanted.split_once('.').filter(|(first, _)| !first.is_empty()).map(|(_, rest)| rest);
    names
        .iter()
        .filter_map(|n| match n.strip_prefix("*.") {
            None if n == wanted => Some(Match::Exact),
            Some(suffix) if parent == Some(suffix) => Some(Match::Wildcard),
            _ => None,
        })
        .min()
}

fn log_loaded(source: &Source, l: &Loaded, message: &str, why: &str) {
    for w in &l.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        file = %source.cert.display(),
        key = %source.key.display(),
        names = %l.names.join(","),
        not_after = %l.not_after_text(),
        why,
        "{message}"
    );
}

fn log_failure(source: &Source, error: &str) {
    tracing::error!(
        file = %source.cert.display(),
        key = %source.key.display(),
        error,
        "tls certificate not reloaded, the previous one stays in use"
    );
}

/// Logs a warning if `l` is expired or close to it; says whether it did.
fn warn_expiry(source: &Source, l: &Loaded, now: i64) -> bool {
    match l.expiry_warning(now) {
        Some(w) => {
            tracing::warn!(file = %source.cert.display(), not_after = %l.not_after_text(), "tls certificate {w}");
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcards_cover_one_label() {
        let n = names(&["mail.example.org", "*.example.net"]);
        assert_eq!(best_match(&n, "mail.example.org"), Some(Match::Exact));
        assert_eq!(best_match(&n, "a.example.net"), Some(Match::Wildcard));
        assert_eq!(best_match(&n, "example.net"), None);
        assert_eq!(best_match(&n, "a.b.example.net"), None);
        assert_eq!(best_match(&n, ".example.net"), None);
        assert_eq!(best_match(&n, "other.example.org"), None);
        assert_eq!(best_match(&names(&["*.example.net", "a.example.net"]), "a.example.net"), Some(Match::Exact));
    }

    /// Writes a self-signed certificate for `names` with a key of `alg`.
    fn pair(dir: &std::path::Path, tag: &str, names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> Source {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join(format!("{tag}.crt")), dir.join(format!("{tag}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        Source { label: tag.into(), cert: c, key: k, names: None, needs_names: true }
    }

    const ECDSA: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];
    const ANY: &[SignatureScheme] = &[SignatureScheme::ED25519, SignatureScheme::ECDSA_NISTP256_SHA256];

    fn leaf(c: &Arc<CertifiedKey>) -> Vec<u8> {
        c.cert[0].to_vec()
    }

    #[test]
    fn the_name_chooses_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let p = &rcgen::PKCS_ECDSA_P256_SHA256;
        let mut default = pair(dir.path(), "default", &["mx.example.org"], p);
        default.needs_names = false;
        let other = pair(dir.path(), "other", &["other.example.org"], p);
        let wild = pair(dir.path(), "wild", &["*.example.net"], p);
        let certs = Certificates::load(vec![default, other, wild]).unwrap();
        let cur = certs.current();
        let pick = |sni: Option<&str>| leaf(&certs.choose(sni, ANY));
        assert_eq!(pick(Some("other.example.org")), cur[1].leaf().to_vec());
        assert_eq!(pick(Some("OTHER.Example.org.")), cur[1].leaf().to_vec());
        assert_eq!(pick(Some("a.example.net")), cur[2].leaf().to_vec());
        assert_eq!(pick(Some("a.b.example.net")), cur[0].leaf().to_vec());
        assert_eq!(pick(Some("unknown.example")), cur[0].leaf().to_vec());
        assert_eq!(pick(None), cur[0].leaf().to_vec());
        assert_eq!(pick(Some("mx.example.org")), cur[0].leaf().to_vec());
    }

    #[test]
    fn the_key_type_the_client_can_use_wins() {
        let dir = tempfile::tempdir().unwrap();
        let ed = pair(dir.path(), "ed", &["mx.example.org"], &rcgen::PKCS_ED25519);
        let ec = pair(dir.path(), "ec", &["mx.example.org"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let certs = Certificates::load(vec![ed, ec]).unwrap();
        let cur = certs.current();
        assert_eq!(leaf(&certs.choose(Some("mx.example.org"), ANY)), cur[0].leaf().to_vec());
        assert_eq!(leaf(&certs.choose(Some("mx.example.org"), ECDSA)), cur[1].leaf().to_vec());
        // Without a name there is only the default.
        assert_eq!(leaf(&certs.choose(None, ECDSA)), cur[0].leaf().to_vec());
        // Nobody usable: the best match anyway, and the handshake fails there.
        assert_eq!(leaf(&certs.choose(Some("mx.example.org"), &[])), cur[0].leaf().to_vec());
    }

    #[test]
    fn a_broken_replacement_keeps_the_old_certificate_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let p = &rcgen::PKCS_ECDSA_P256_SHA256;
        let a = pair(dir.path(), "a", &["mx.example.org"], p);
        let certs = Certificates::load(vec![a.clone()]).unwrap();
        let first = certs.current()[0].leaf().to_vec();
        let b = pair(dir.path(), "b", &["mx.example.org"], p);
        // The chain is replaced, the key not yet: a renewal halfway.
        std::fs::copy(&b.cert, &a.cert).unwrap();
        certs.reload_if_changed();
        assert_eq!(certs.current()[0].leaf().to_vec(), first);
        {
            let w = certs.watch.lock().unwrap();
            let f = w[0].failure.as_ref().unwrap();
            assert!(f.error.contains("does not belong"), "{}", f.error);
            assert!(!f.logged, "a failure right after a change waits for the next look");
        }
        certs.reload_if_changed();
        assert!(certs.watch.lock().unwrap()[0].failure.as_ref().unwrap().logged);
        certs.reload_if_changed();
        assert!(certs.watch.lock().unwrap()[0].failure.as_ref().unwrap().logged);
        // The key arrives.
        std::fs::copy(&b.key, &a.key).unwrap();
        certs.reload_if_changed();
        assert!(certs.watch.lock().unwrap()[0].failure.is_none());
        let second = certs.current()[0].leaf().to_vec();
        assert_ne!(second, first);
        assert_eq!(second, std::fs::read(&b.cert).map(|pem| pem_leaf(&pem)).unwrap());
        // Unchanged files are not read again.
        std::fs::write(&a.key, "not a key").unwrap();
        certs.watch.lock().unwrap()[0].seen = fingerprint(&a);
        certs.reload_if_changed();
        assert_eq!(certs.current()[0].leaf().to_vec(), second);
        assert!(certs.watch.lock().unwrap()[0].failure.is_none());
        // SIGHUP reads them anyway, and keeps the old one.
        certs.reload_logged("SIGHUP");
        assert_eq!(certs.current()[0].leaf().to_vec(), second);
        assert!(certs.watch.lock().unwrap()[0].failure.as_ref().unwrap().logged);
    }

    fn pem_leaf(pem: &[u8]) -> Vec<u8> {
        rustls_pemfile::certs(&mut &pem[..]).next().unwrap().unwrap().to_vec()
    }

    #[test]
    fn an_expired_replacement_is_refused_while_the_old_one_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["mx.example.org"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let certs = Certificates::load(vec![a.clone()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["mx.example.org".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        std::fs::write(&a.cert, params.self_signed(&key).unwrap().pem()).unwrap();
        std::fs::write(&a.key, key.serialize_pem()).unwrap();
        let e = certs.try_replace(0, "test").unwrap_err();
        assert!(e.contains("expired on 2001-01-01"), "{e}");
    }
}
