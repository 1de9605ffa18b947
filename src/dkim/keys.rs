//! DKIM private keys, read by the host from `<keys>/<domain>/<selector>.pem`.
//!
//! Keys stay in the host: a plugin names one by domain and selector and the
//! host signs. A key that is malformed, of an unknown type or weaker than RSA
//! 2048 (RFC 8301) stops the load with an error naming the file; a key file
//! that group or others may read is loaded with a warning.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

/// The weakest RSA key accepted (RFC 8301 §3.2: at least 1024, and
/// receivers such as Gmail want 2048).
pub const MIN_RSA_BITS: usize = 2048;

/// The signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa { bits: usize },
    Ed25519,
}

impl Algorithm {
    /// The `a=` tag value of signatures made with this key.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::Rsa { .. } => "rsa-sha256",
            Algorithm::Ed25519 => "ed25519-sha256",
        }
    }

    /// The `k=` tag value of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::Rsa { .. } => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Algorithm::Rsa { bits } => write!(f, "RSA-{bits}"),
            Algorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// What is public about a key: enough to publish and check its DNS record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Lowercase signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`), as the file is named.
    pub selector: String,
    pub algorithm: Algorithm,
    /// SubjectPublicKeyInfo DER for RSA, the raw 32 octets for Ed25519
    /// (RFC 6376 §3.6.1, RFC 8463 §4.2): what `p=` holds.
    pub public_key: Vec<u8>,
    pub path: PathBuf,
}

impl KeyInfo {
    /// The DNS name of the key record: `<selector>._domainkey.<domain>`.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The record name relative to the domain (`<selector>._domainkey`), for
    /// DNS panels that append the domain themselves.
    pub fn host_label(&self) -> String {
        format!("{}._domainkey", self.selector)
    }

    /// The record as a zone file line, the value split into strings of at
    /// most 255 characters.
    pub fn zone_line(&self) -> String {
        let value = self.txt_value();
        let strings: Vec<String> = split_txt(&value).iter().map(|s| format!("\"{s}\"")).collect();
        format!("{}. 3600 IN TXT ( {} )", self.dns_name(), strings.join(" "))
    }

    /// The TXT record value: `v=DKIM1; k=rsa; p=…`.
    pub fn txt_value(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.key_type(),
            base64::engine::general_purpose::STANDARD.encode(&self.public_key)
        )
    }
}

/// A loaded key.
pub struct Key {
    pub info: KeyInfo,
    pub(super) signing: Signer,
}

/// What signs with a key. RSA signs through aws-lc, whose RSA-2048 private
/// operation (AVX-512 IFMA on CPUs that have it) takes about 0.25 ms where
/// ring's takes 0.55 ms on the same machine (measured on an AMD EPYC, 2026):
/// with DKIM on every message that is the largest single cost of relaying
/// one. mail-auth (through ring) still parses and checks the key, and
/// signs Ed25519, which is cheap either way.
pub(super) struct Signer {
    pub(super) key: DkimKey,
    pub(super) rsa: Option<aws_lc_rs::signature::RsaKeyPair>,
}

impl Signer {
    fn new(key: DkimKey, der: &PrivateKeyDer<'_>) -> Result<Signer, String> {
        let rsa = match (&key, der) {
            (DkimKey::Rsa(_), PrivateKeyDer::Pkcs8(p8)) => {
                Some(aws_lc_rs::signature::RsaKeyPair::from_pkcs8(p8.secret_pkcs8_der()))
            }
            (DkimKey::Rsa(_), PrivateKeyDer::Pkcs1(p1)) => {
                Some(aws_lc_rs::signature::RsaKeyPair::from_der(p1.secret_pkcs1_der()))
            }
            _ => None,
        };
        let rsa = rsa.transpose().map_err(|e| format!("not a usable RSA private key ({e})"))?;
        Ok(Signer { key, rsa })
    }

    /// A PKCS#1 v1.5 RSA-SHA256 signature of `data` (which it hashes).
    pub(super) fn sign_rsa(&self, data: &[u8]) -> Option<Result<Vec<u8>, String>> {
        let rsa = self.rsa.as_ref()?;
        let mut signature = vec![0; rsa.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        Some(
            rsa.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, data, &mut signature)
                .map(|()| signature)
                .map_err(|e| format!("RSA signing failed: {e}")),
        )
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Key").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Every key of the keys folder, by (domain, selector).
#[derive(Debug, Default)]
pub struct KeyStore {
    keys: BTreeMap<(String, String), Arc<Key>>,
    /// Problems worth a warning that did not stop the load.
    pub warnings: Vec<String>,
}

impl KeyStore {
    /// Reads every `<domain>/<selector>.pem` below `dir`. A missing folder
    /// is an empty store; any bad key fails the whole load, listing every
    /// problem, so a half-loaded set never signs.
    pub fn load(dir: &Path) -> Result<KeyStore, String> {
        let mut store = KeyStore::default();
        let mut errors = Vec::new();
        let domains = match std::fs::read_dir(dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(format!("{}: cannot read the DKIM keys folder: {e}", dir.display())),
        };
        let mut domain_dirs: Vec<PathBuf> = domains.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        domain_dirs.sort();
        for domain_dir in domain_dirs {
            if !domain_dir.is_dir() {
                continue;
            }
            let name = domain_dir.file_name().unwrap_or_default().to_string_lossy().to_string();
            if name.starts_with('.') {
                // Kubernetes secret mounts keep `..data` folders beside the files.
                continue;
            }
            let domain = name.to_ascii_lowercase();
            if !is_domain(&domain) {
                // `lost+found` on a mounted volume, an `old/` folder of
                // retired keys: not keys, and no reason to refuse the rest.
                store.warnings.push(format!(
                    "{}: ignored: {name:?} is not a domain (each folder is named after its signing domain, e.g. example.com)",
                    domain_dir.display()
                ));
                continue;
            }
            let files = match std::fs::read_dir(&domain_dir) {
                Ok(f) => f,
                Err(e) => {
                    errors.push(format!("{}: cannot read: {e}", domain_dir.display()));
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = files.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
                if hidden || path.extension().and_then(|e| e.to_str()) != Some("pem") || !path.is_file() {
                    // Editor and macOS `._` files, keygen's temporary file.
                    continue;
                }
                let selector = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
                if !is_selector(&selector) {
                    errors.push(format!(
                        "{}: {selector:?} is not a valid selector (letters, digits, '-' and '.'); rename the file, e.g. mail2026.pem",
                        path.display()
                    ));
                    continue;
                }
                if let Some(w) = permission_warning(&path) {
                    store.warnings.push(w);
                }
                match load_key(&path, &domain, &selector) {
                    Ok(key) => {
                        store.keys.insert((domain.clone(), selector), Arc::new(key));
                    }
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                }
            }
        }
        if errors.is_empty() {
            Ok(store)
        } else {
            Err(errors.join("\n"))
        }
    }

    /// The key for `domain` (any case) and `selector`.
    pub fn get(&self, domain: &str, selector: &str) -> Option<Arc<Key>> {
        self.keys.get(&(ascii_domain(domain), selector.to_string())).cloned()
    }

    /// Every key for `domain` (any case, Unicode or `xn--` form), by selector.
    pub fn for_domain(&self, domain: &str) -> Vec<&KeyInfo> {
        let domain = ascii_domain(domain);
        self.keys.iter().filter(|((d, _), _)| *d == domain).map(|(_, k)| &k.info).collect()
    }

    /// Every key, by domain then selector.
    pub fn all(&self) -> impl Iterator<Item = &KeyInfo> {
        self.keys.values().map(|k| &k.info)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parses one PEM private key file.
pub fn load_key(path: &Path, domain: &str, selector: &str) -> Result<Key, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let (key, algorithm, public_key) = parse_private_key(&pem)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("not a PEM private key: {e}"))?;
    let signing = Signer::new(key, &der)?;
    Ok(Key {
        info: KeyInfo {
            domain: domain.to_string(),
            selector: selector.to_string(),
            algorithm,
            public_key,
            path: path.to_path_buf(),
        },
        signing,
    })
}

/// Reads a PEM private key (PKCS#1 RSA, or PKCS#8 RSA or Ed25519) and
/// returns it with its algorithm and public key as `p=` holds it.
pub fn parse_private_key(pem: &[u8]) -> Result<(DkimKey, Algorithm, Vec<u8>), String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        "not a PEM private key: expected a \"BEGIN PRIVATE KEY\" (PKCS#8) or \"BEGIN RSA PRIVATE KEY\" (PKCS#1) block; create one with `mailferry dkim keygen`".to_string()
    })?;
    match der {
        PrivateKeyDer::Pkcs8(ref p8) => {
            if let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der()) {
                let public = key.public_key();
                return Ok((DkimKey::Ed25519(key), Algorithm::Ed25519, public));
            }
            rsa_key(der)
        }
        PrivateKeyDer::Pkcs1(_) => rsa_key(der),
        PrivateKeyDer::Sec1(_) => {
            Err("an EC (ECDSA) key: DKIM signs with RSA or Ed25519 only; create one with `mailferry dkim keygen`"
                .into())
        }
        _ => Err("an unsupported key format; use PKCS#8 or PKCS#1 PEM".into()),
    }
}

fn rsa_key(der: PrivateKeyDer<'_>) -> Result<(DkimKey, Algorithm, Vec<u8>), String> {
    let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| {
        let e = e.to_string();
        if e.contains("TooSmall") {
            format!("the RSA key is smaller than {MIN_RSA_BITS} bits, which receivers treat as no signature (RFC 8301); create a new one with `mailferry dkim keygen`")
        } else if e.contains("TooLarge") {
            "the RSA key is larger than 4096 bits, the most this server signs with; use 2048 (or 4096)".to_string()
        } else {
            format!("not a usable RSA or Ed25519 private key ({e})")
        }
    })?;
    // ring hands out the PKCS#1 public key; DNS wants SubjectPublicKeyInfo.
    let public = rsa::RsaPublicKey::from_pkcs1_der(&key.public_key())
        .map_err(|e| format!("cannot read the RSA public key: {e}"))?;
    let bits = public.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required (RFC 8301); create a new one with `mailferry dkim keygen`"
        ));
    }
    let spki = public.to_public_key_der().map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok((DkimKey::Rsa(key), Algorithm::Rsa { bits }, spki.as_bytes().to_vec()))
}

#[cfg(unix)]
fn permission_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{}: the private key is readable by {} (mode {:o}); run: chmod 600 {}",
            path.display(),
            if mode & 0o007 != 0 { "every user" } else { "its group" },
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(not(unix))]
fn permission_warning(_: &Path) -> Option<String> {
    None
}

/// A DNS domain name as a signing domain: letters, digits and hyphens in
/// dot-separated labels, at least two labels.
pub fn is_domain(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `domain` as keys are filed: lower case, internationalized labels in
/// their `xn--` form, which is also what `d=` must carry (RFC 8616 §4), so
/// `From: user@bücher.example` finds the keys of `xn--bcher-kva.example`.
pub fn ascii_domain(domain: &str) -> String {
    let domain = domain.trim_end_matches('.');
    if domain.is_ascii() {
        return domain.to_ascii_lowercase();
    }
    idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_lowercase())
}

/// A selector: one or more DNS labels (RFC 6376 §3.1).
pub fn is_selector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-'))
}

/// Splits a TXT value into character-strings of at most 255 octets
/// (RFC 1035 §3.3.14); DNS panels and zone files want them this way.
pub fn split_txt(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = value;
    while rest.len() > 255 {
        // The value is ASCII (base64 and tags), so any byte index is a boundary.
        let (a, b) = rest.split_at(255);
        parts.push(a);
        rest = b;
    }
    parts.push(rest);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_split_keeps_the_value() {
        let v = "p=".to_string() + &"A".repeat(600);
        let parts = split_txt(&v);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts.concat(), v);
        assert_eq!(split_txt("short"), vec!["short"]);
    }

    #[test]
    fn internationalized_domains_are_filed_in_their_ascii_form() {
        assert_eq!(ascii_domain("Bücher.Example."), "xn--bcher-kva.example");
        assert_eq!(ascii_domain("XN--BCHER-KVA.example"), "xn--bcher-kva.example");
        assert_eq!(ascii_domain("example.com"), "example.com");
        let dir = tempfile::tempdir().unwrap();
        crate::dkim::keygen::create(dir.path(), "bücher.example", "s1", crate::dkim::keygen::KeyKind::Ed25519).unwrap();
        assert!(dir.path().join("xn--bcher-kva.example/s1.pem").exists());
        let store = KeyStore::load(dir.path()).unwrap();
        assert_eq!(store.for_domain("BÜCHER.example").len(), 1);
        assert!(store.get("bücher.example", "s1").is_some());
    }

    #[test]
    fn names() {
        assert!(is_domain("example.com"));
        assert!(is_domain("mail.example.co.uk"));
        assert!(!is_domain("localhost"));
        assert!(!is_domain("-bad.com"));
        assert!(is_selector("mail2026"));
        assert!(is_selector("s1.eu"));
        assert!(!is_selector("a/b"));
        assert!(!is_selector(""));
    }

    #[test]
    fn unrelated_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lost+found")).unwrap();
        std::fs::create_dir_all(dir.path().join("example.com")).unwrap();
        std::fs::write(dir.path().join("example.com/._s.pem"), b"resource fork").unwrap();
        std::fs::write(dir.path().join("example.com/notes.txt"), b"x").unwrap();
        let store = KeyStore::load(dir.path()).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.warnings.len(), 1, "{:?}", store.warnings);
        assert!(store.warnings[0].contains("lost+found"));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let e = parse_private_key(b"hello").err().unwrap();
        assert!(e.contains("not a PEM private key"), "{e}");
    }
}
