//! DKIM in the host: the keys, signing, and verification against known
//! records (used to avoid signing twice, by `doctor`, and by the tests).
//!
//! Signing lives here rather than in a plugin because the private keys must
//! never enter a sandbox, and because RSA inside WebAssembly costs ~20 ms a
//! message against ~1 ms natively. The `dkim-sign` plugin decides *what* to
//! sign (which domain, which headers); the host does the signing.

pub mod keygen;
pub mod keys;

use std::borrow::Borrow;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mail_auth::common::crypto::{Algorithm as MaAlgorithm, DkimKey, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt};

pub use keys::{Algorithm, Key, KeyInfo, KeyStore};

/// The header fields signed by default, when present (RFC 6376 §5.4.1 and
/// what Gmail's one-click unsubscribe needs signed). `Received:` and other
/// trace fields are left out: relays add them.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
    "In-Reply-To",
    "References",
    "Sender",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

/// Signed once more than they occur, so nobody can add one in transit
/// without breaking the signature (RFC 6376 §8.15).
pub const DEFAULT_OVERSIGN: &[&str] = &["From"];

/// How to sign: which fields, canonicalization, expiry.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// Field names to sign when present (every occurrence).
    pub headers: Vec<String>,
    /// Field names signed one extra time (also when absent).
    pub oversign: Vec<String>,
    pub header_canonicalization: Canonicalization,
    pub body_canonicalization: Canonicalization,
    /// Signature lifetime (`x=`); `None` for no expiry.
    pub expire: Option<Duration>,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            headers: DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
            oversign: DEFAULT_OVERSIGN.iter().map(|s| s.to_string()).collect(),
            header_canonicalization: Canonicalization::Relaxed,
            body_canonicalization: Canonicalization::Relaxed,
            expire: None,
        }
    }
}

/// Parses `relaxed/relaxed`, `relaxed/simple`, `simple/simple`, `simple/relaxed`
/// (or a single word for the header form, the body then `simple`, as RFC 6376 §3.5 `c=` reads).
pub fn parse_canonicalization(s: &str) -> Result<(Canonicalization, Canonicalization), String> {
    let word = |w: &str| {
        match w.trim().to_ascii_lowercase().as_str() {
        "relaxed" => Ok(Canonicalization::Relaxed),
        "simple" => Ok(Canonicalization::Simple),
        _ => Err(format!(
            "canonicalization {s:?} is not one of \"relaxed/relaxed\", \"relaxed/simple\", \"simple/relaxed\", \"simple/simple\""
        )),
    }
    };
    match s.split_once('/') {
        Some((h, b)) => Ok((word(h)?, word(b)?)),
        None => Ok((word(s)?, Canonicalization::Simple)),
    }
}

/// What [`sign`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// The `DKIM-Signature:` field to put at the top of the message, folded,
    /// ending in CRLF.
    Added(Vec<u8>),
    /// The message already carries a valid signature by this very key.
    AlreadySigned,
}

/// Borrows a loaded key for mail-auth's signer, which wants to own one.
struct KeyRef<'a>(&'a keys::Signer);

impl SigningKey for KeyRef<'_> {
    type Hasher = <DkimKey as SigningKey>::Hasher;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        if self.0.rsa.is_none() {
            return self.0.key.sign(input);
        }
        // The canonicalized header fields (a few hundred octets), hashed
        // and signed by aws-lc.
        let mut data = Vec::with_capacity(512);
        input.write(&mut data);
        match self.0.sign_rsa(&data) {
            Some(Ok(signature)) => Ok(signature),
            Some(Err(e)) => Err(mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(e))),
            None => unreachable!("an RSA key has its aws-lc key pair"),
        }
    }

    fn algorithm(&self) -> MaAlgorithm {
        self.0.key.algorithm()
    }
}

/// The header list handed to mail-auth: the wanted fields that are
/// present (mail-auth would otherwise sign every absent one too), `From`
/// always (RFC 6376 §5.4), then each over-signed name once more. mail-auth
/// signs every occurrence of a listed name and adds a listed name it cannot
/// find to `h=` once; a name listed twice is never "found" the second time,
/// which is exactly one extra, empty instance: over-signing.
fn header_list(message: &[u8], opts: &SignOptions) -> Vec<String> {
    let present = present_fields(message);
    let is_present = |name: &str| present.iter().any(|(p, _)| p.eq_ignore_ascii_case(name));
    let listed = |list: &Vec<String>, name: &str| list.iter().any(|n| n.eq_ignore_ascii_case(name));
    let mut list: Vec<String> = vec!["From".to_string()];
    for name in &opts.headers {
        if is_present(name) && !listed(&list, name) {
            list.push(name.clone());
        }
    }
    for name in &opts.oversign {
        // A present field not listed yet needs one entry for its
        // occurrences and one for the extra, empty instance.
        if is_present(name) && !listed(&list, name) {
            list.push(name.clone());
        }
        list.push(name.clone());
    }
    list
}

/// Refuses fields that signers and verifiers canonicalize differently:
/// control characters other than tab in a signed field (mail-auth treats a
/// form feed as white space under relaxed canonicalization; RFC 6376 and
/// other verifiers do not).
fn check_signable(message: &[u8], list: &[String]) -> Result<(), String> {
    for (name, value) in present_fields(message) {
        if !list.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            continue;
        }
        let mut bytes = value.iter().peekable();
        while let Some(&b) = bytes.next() {
            let folding = (b == b'\r' && bytes.peek() == Some(&&b'\n')) || b == b'\n';
            if (b < 0x20 && b != b'\t' && !folding) || b == 0x7f {
                return Err(format!(
                    "the {name} field contains the control character 0x{b:02x}; it is not signed, as verifiers would disagree about it"
                ));
            }
        }
    }
    Ok(())
}

/// The fields of a message's header section, in order: (name, the raw
/// value after the colon, folding included).
fn present_fields(message: &[u8]) -> Vec<(String, &[u8])> {
    let head = &message[..body_offset(message)];
    let mut fields: Vec<(String, usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < head.len() {
        let end = head[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i + 1).unwrap_or(head.len());
        let line = &head[pos..end];
        if line == b"\r\n" {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = fields.last_mut() {
                last.2 = end;
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).trim_end().to_string();
            fields.push((name, pos + colon + 1, end));
        }
        pos = end;
    }
    fields.into_iter().map(|(n, a, b)| (n, &head[a..b])).collect()
}

/// Whether a `DKIM-Signature` field names this domain and selector, read
/// from the header alone (no body hashing); `None` if there are so many
/// signature fields that checking them is not worth the work.
fn has_signature_by(message: &[u8], domain: &str, selector: &str) -> Option<bool> {
    let sigs: Vec<&[u8]> = present_fields(message)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .map(|(_, v)| v)
        .collect();
    if sigs.len() > MAX_CHECKED_SIGNATURES {
        return None;
    }
    Some(sigs.iter().any(|v| {
        let text: String = String::from_utf8_lossy(v).chars().filter(|c| !c.is_whitespace()).collect();
        let tag = |t: &str| text.split(';').find_map(|p| p.strip_prefix(t).map(str::to_string));
        tag("d=").is_some_and(|d| d.eq_ignore_ascii_case(domain)) && tag("s=").as_deref() == Some(selector)
    }))
}

/// Existing signatures looked at when deciding whether a message is
/// already signed; more than this and it is simply signed again.
const MAX_CHECKED_SIGNATURES: usize = 8;

/// Bounds on `x=` (seconds after signing): shorter would expire in transit,
/// longer is no expiry worth the name.
pub const MIN_EXPIRE_SECS: u64 = 3600;
pub const MAX_EXPIRE_SECS: u64 = 10 * 366 * 24 * 3600;

/// Signs `message` (the exact octets that will be sent) with `key`.
///
/// If the message already has a `DKIM-Signature` by this domain and selector
/// that still verifies against this key, nothing is added: a message that
/// passes through mailferry twice is not signed twice.
///
/// A small message with a key of up to 2048 bits is signed on the spot:
/// the signature (under a millisecond, as a TLS handshake's) costs less
/// than the two thread switches a blocking thread would add. Hashing a
/// large body takes longer, and so does an RSA-4096 signature (several
/// milliseconds): those, and a message that may carry our signature
/// already (whose check parses and hashes it all), are signed on a
/// blocking thread.
pub async fn sign(key: Arc<Key>, message: Vec<u8>, opts: SignOptions) -> Result<Signed, String> {
    let quick_key = match key.info.algorithm {
        keys::Algorithm::Rsa { bits } => bits <= 2048,
        keys::Algorithm::Ed25519 => true,
    };
    if quick_key
        && message.len() <= SIGN_INLINE_MAX
        && has_signature_by(&message, &key.info.domain, &key.info.selector) == Some(false)
    {
        return sign_now(&key, &message, &opts);
    }
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // The check parses and hashes the whole message: it runs here, off
        // the async workers, and only when a field names this very key.
        if has_signature_by(&message, &key.info.domain, &key.info.selector) == Some(true)
            && handle.block_on(verifies(&key, &message))
        {
            return Ok(Signed::AlreadySigned);
        }
        sign_now(&key, &message, &opts)
    })
    .await
    .map_err(|e| format!("signing failed: {e}"))?
}

/// Largest message signed without leaving the async worker.
const SIGN_INLINE_MAX: usize = 64 * 1024;

/// Signs without looking for an earlier signature.
pub fn sign_now(key: &Key, message: &[u8], opts: &SignOptions) -> Result<Signed, String> {
    let headers = header_list(message, opts);
    if opts.header_canonicalization == Canonicalization::Relaxed {
        check_signable(message, &headers)?;
    }
    if let Some(x) = opts.expire {
        if !(MIN_EXPIRE_SECS..=MAX_EXPIRE_SECS).contains(&x.as_secs()) {
            return Err(format!("expiry {} s is outside {MIN_EXPIRE_SECS}..={MAX_EXPIRE_SECS} s", x.as_secs()));
        }
    }
    // mail-auth 0.13 keeps whitespace-only lines at the end of the body
    // under relaxed body canonicalization, where RFC 6376 §3.4.4 drops
    // them; every other verifier then sees a body hash mismatch. Relaxed
    // canonicalization is idempotent, so handing it a body we have already
    // canonicalized correctly gives the right hash.
    let canonical;
    let message = if opts.body_canonicalization == Canonicalization::Relaxed {
        let at = body_offset(message);
        canonical = [&message[..at], &relaxed_body(&message[at..])].concat();
        &canonical[..]
    } else {
        message
    };
    let mut signer = DkimSigner::from_key(KeyRef(&key.signing))
        .domain(key.info.domain.clone())
        .selector(key.info.selector.clone())
        .headers(headers)
        .header_canonicalization(opts.header_canonicalization)
        .body_canonicalization(opts.body_canonicalization);
    if let Some(x) = opts.expire {
        signer = signer.expiration(x.as_secs().max(1));
    }
    let signature = signer.sign(message).map_err(|e| format!("signing failed: {e}"))?;
    let mut field = signature.to_header().into_bytes();
    if !field.ends_with(b"\r\n") {
        field.extend_from_slice(b"\r\n");
    }
    Ok(Signed::Added(field))
}

/// Where the body starts: after the first empty line, or nowhere (the end).
fn body_offset(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 2;
    }
    message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(message.len())
}

/// The relaxed canonical form of a body (RFC 6376 §3.4.4): whitespace runs
/// become one space, whitespace at line ends goes, then empty lines at the
/// end go; a non-empty body ends in CRLF.
pub fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut pending_empty = 0usize;
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(raw) = lines.next() {
        let last = lines.peek().is_none();
        if last && raw.is_empty() {
            break; // the split after the final CRLF
        }
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut canon = Vec::with_capacity(line.len());
        let mut space = false;
        for &b in line {
            if b == b' ' || b == b'\t' {
                space = true;
            } else {
                if space {
                    canon.push(b' ');
                    space = false;
                }
                canon.push(b);
            }
        }
        if canon.is_empty() {
            pending_empty += 1;
            continue;
        }
        for _ in 0..pending_empty {
            out.extend_from_slice(b"\r\n");
        }
        pending_empty = 0;
        out.extend_from_slice(&canon);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether the message has a passing signature by `key`, checked against
/// the key itself (no DNS).
async fn verifies(key: &Key, message: &[u8]) -> bool {
    let record = key.info.txt_value();
    verify_with_records(message, &[(key.info.dns_name(), record)])
        .await
        .iter()
        .any(|v| v.ok && v.domain.eq_ignore_ascii_case(&key.info.domain) && v.selector == key.info.selector)
}

/// One signature's verification result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub ok: bool,
    /// Why it did not pass.
    pub error: Option<String>,
}

/// Verifies every DKIM signature of `message` against the given TXT
/// records `(name, value)` only; a name not listed has no record. Nothing
/// is looked up in DNS.
pub async fn verify_with_records(message: &[u8], records: &[(String, String)]) -> Vec<Verification> {
    let Some(mut parsed) = AuthenticatedMessage::parse(message) else { return Vec::new() };
    // The same mail-auth canonicalization flaw as in signing: put the right
    // relaxed body hash in place of the one it computed.
    let body = &message[(parsed.body_offset as usize).min(message.len())..];
    let mut relaxed = None;
    for (c, hash_alg, len, hash) in parsed.body_hashes.iter_mut() {
        if *c == Canonicalization::Relaxed && *len == 0 && *hash_alg == mail_auth::common::crypto::HashAlgorithm::Sha256
        {
            use sha2::Digest;
            let canon = relaxed.get_or_insert_with(|| relaxed_body(body));
            *hash = sha2::Sha256::digest(&canon[..]).to_vec();
        }
    }
    let cache = StaticRecords::new(records);
    let Some(authenticator) = offline_authenticator() else { return Vec::new() };
    let outputs = authenticator.verify_dkim(Parameters::new(&parsed).with_txt_cache(&cache)).await;
    outputs
        .iter()
        .map(|o| {
            let sig = o.signature();
            let (ok, error) = match o.result() {
                DkimResult::Pass => (true, None),
                other => (false, Some(format!("{other:?}"))),
            };
            Verification {
                domain: sig.map(|s| s.d.clone()).unwrap_or_default(),
                selector: sig.map(|s| s.s.clone()).unwrap_or_default(),
                algorithm: sig
                    .map(|s| match s.a {
                        MaAlgorithm::RsaSha256 => "rsa-sha256",
                        MaAlgorithm::RsaSha1 => "rsa-sha1",
                        MaAlgorithm::Ed25519Sha256 => "ed25519-sha256",
                    })
                    .unwrap_or_default()
                    .to_string(),
                ok,
                error,
            }
        })
        .collect()
}

/// A resolver with no name servers: every answer comes from the cache.
fn offline_authenticator() -> Option<MessageAuthenticator> {
    use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
    static AUTH: std::sync::OnceLock<Option<MessageAuthenticator>> = std::sync::OnceLock::new();
    AUTH.get_or_init(|| {
        MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![]), ResolverOpts::default()).ok()
    })
    .clone()
}

/// TXT answers known in advance; every other name has no record.
struct StaticRecords {
    records: std::collections::HashMap<Box<str>, Txt>,
}

impl StaticRecords {
    fn new(records: &[(String, String)]) -> StaticRecords {
        let mut map = std::collections::HashMap::new();
        for (name, value) in records {
            let txt = match DomainKey::parse(value.as_bytes()) {
                Ok(k) => Txt::DomainKey(Arc::new(k)),
                Err(e) => Txt::Error(e),
            };
            // mail-auth asks for the fully qualified name, with the final dot.
            let fqdn = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
            map.insert(fqdn.into_boxed_str(), txt);
        }
        StaticRecords { records: map }
    }
}

impl ResolverCache<Box<str>, Txt> for StaticRecords {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Answering every name keeps mail-auth from asking the network.
        Some(self.records.get(name).cloned().unwrap_or(Txt::Error(mail_auth::Error::Dns(
            mail_auth::DnsError::RecordNotFound(mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain),
        ))))
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
}

/// The loaded keys, replaced as a whole on reload so a signing call always
/// sees one consistent set.
pub struct Keys {
    dir: Option<PathBuf>,
    current: RwLock<Arc<KeyStore>>,
    /// What the folder looked like at the last load; held for the whole of
    /// a reload, so a SIGHUP and the watcher cannot race.
    seen: Mutex<Fingerprint>,
}

/// What the keys folder looked like at the last load.
type Fingerprint = Vec<(PathBuf, u64, i64, i64, u64, u32, u32)>;

impl Keys {
    /// No keys: signing always reports a missing key.
    pub fn none() -> Keys {
        Keys { dir: None, current: RwLock::new(Arc::new(KeyStore::default())), seen: Mutex::new(Vec::new()) }
    }

    /// Loads every key below `dir`; any bad key is an error.
    pub fn load(dir: &Path) -> Result<Keys, String> {
        let seen = fingerprint(dir);
        let store = KeyStore::load(dir)?;
        for w in &store.warnings {
            tracing::warn!("{w}");
        }
        Ok(Keys { dir: Some(dir.to_path_buf()), current: RwLock::new(Arc::new(store)), seen: Mutex::new(seen) })
    }

    pub fn current(&self) -> Arc<KeyStore> {
        self.current.read().unwrap().clone()
    }

    /// Reads the folder again. A folder that no longer loads (or no longer
    /// exists: an unmounted volume) keeps the old keys in use and returns why.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(dir) = &self.dir else { return Ok(0) };
        let mut seen = self.seen.lock().unwrap();
        self.reload_locked(dir, &mut seen)
    }

    fn reload_locked(&self, dir: &Path, seen: &mut Fingerprint) -> Result<usize, String> {
        *seen = fingerprint(dir);
        if !dir.is_dir() {
            return Err(format!("{}: the keys folder is gone", dir.display()));
        }
        let store = KeyStore::load(dir)?;
        for w in &store.warnings {
            tracing::warn!("{w}");
        }
        let n = store.len();
        *self.current.write().unwrap() = Arc::new(store);
        Ok(n)
    }

    /// Reloads if any file below the folder changed since the last load.
    pub fn reload_if_changed(&self) {
        let Some(dir) = &self.dir else { return };
        let mut seen = self.seen.lock().unwrap();
        if fingerprint(dir) == *seen {
            return;
        }
        log_reload(self.reload_locked(dir, &mut seen), "a key file changed");
    }

    /// Reloads and logs the outcome.
    pub fn reload_logged(&self, why: &str) {
        log_reload(self.reload(), why);
    }

    /// Watches the folder: checks for changes every `every`.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        if self.dir.is_none() {
            return;
        }
        crate::poll::every(self, every, Self::reload_if_changed);
    }
}

fn log_reload(result: Result<usize, String>, why: &str) {
    match result {
        Ok(n) => tracing::info!(keys = n, "DKIM keys reloaded ({why})"),
        Err(e) => tracing::error!("DKIM keys not reloaded, the previous keys stay in use: {e}"),
    }
}

/// (path, size, mtime, ctime, inode, mode, owner) of every file below
/// `dir`, two levels deep: enough to notice a replaced, edited or new key
/// (also a Kubernetes secret's symlink swap, which changes the inode) and a
/// chmod or chown that makes an unreadable key readable.
fn fingerprint(dir: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let Ok(domains) = std::fs::read_dir(dir) else { return out };
    for d in domains.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else { continue };
        for f in files.flatten() {
            if let Ok(m) = std::fs::metadata(f.path()) {
                out.push((
                    f.path(),
                    m.len(),
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    m.ctime() * 1_000_000_000 + m.ctime_nsec(),
                    m.ino(),
                    m.mode(),
                    m.uid(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_body_follows_rfc_6376() {
        // The RFC's own example (§3.4.5), body part.
        assert_eq!(relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n"), b" C\r\nD E\r\n");
        // Whitespace-only lines at the end are empty lines, and go.
        assert_eq!(relaxed_body(b"Text\r\n   \r\n\t\r\n\r\n \t \r\n"), b"Text\r\n");
        // In the middle they stay, as empty lines.
        assert_eq!(relaxed_body(b"a\r\n \t\r\nb\r\n"), b"a\r\n\r\nb\r\n");
        assert_eq!(relaxed_body(b""), b"");
        assert_eq!(relaxed_body(b"\r\n\r\n"), b"");
        // A last line without CRLF gets one.
        assert_eq!(relaxed_body(b"x"), b"x\r\n");
    }

    #[test]
    fn a_vanished_keys_folder_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        keygen::create(&keys_dir, "example.com", "s", keygen::KeyKind::Ed25519).unwrap();
        let keys = Keys::load(&keys_dir).unwrap();
        std::fs::rename(&keys_dir, dir.path().join("moved")).unwrap();
        assert!(keys.reload().unwrap_err().contains("gone"));
        assert_eq!(keys.current().len(), 1);
    }

    #[test]
    fn header_list_signs_present_fields_and_oversigns() {
        let m = b"From: a@example.com\r\nSubject: s\r\nX-Other: o\r\n\r\nbody\r\n";
        let list = header_list(m, &SignOptions::default());
        assert_eq!(list, vec!["From", "Subject", "From"]);
        // An over-signed name that is present but not otherwise listed gets
        // an entry for its occurrence and one more.
        let opts = SignOptions {
            headers: vec!["From".into()],
            oversign: vec!["From".into(), "Subject".into(), "Reply-To".into()],
            ..SignOptions::default()
        };
        assert_eq!(header_list(m, &opts), vec!["From", "From", "Subject", "Subject", "Reply-To"]);
    }

    #[test]
    fn control_characters_in_signed_fields_are_refused() {
        let list = vec!["From".to_string(), "Subject".to_string()];
        assert!(check_signable(b"From: a@example.com\r\nSubject: a\x0cb\r\n\r\nx\r\n", &list)
            .unwrap_err()
            .contains("0x0c"));
        // Not signed, not checked; folding and tabs are fine.
        assert!(check_signable(b"From: a@example.com\r\nX-Other: a\x0cb\r\nSubject: a\tb\r\n c\r\n\r\nx\r\n", &list)
            .is_ok());
    }

    #[test]
    fn signature_fields_are_read_from_the_header_only() {
        let m = b"DKIM-Signature: v=1; a=rsa-sha256; d=Example.com;\r\n s=sel; b=x\r\nFrom: a@example.com\r\n\r\nDKIM-Signature: d=other; s=o\r\n";
        assert_eq!(has_signature_by(m, "example.com", "sel"), Some(true));
        assert_eq!(has_signature_by(m, "example.com", "other"), Some(false));
        assert_eq!(has_signature_by(m, "other", "o"), Some(false), "a body line is not a field");
        let many = "DKIM-Signature: d=x; s=y\r\n".repeat(9) + "\r\nbody\r\n";
        assert_eq!(has_signature_by(many.as_bytes(), "x", "y"), None);
    }
}
