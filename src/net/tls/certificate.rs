//! One certificate: a PEM chain and its private key, read together from
//! their files and checked (both parse, the key belongs to the certificate),
//! with what logs and `mailferry check` say about it (names, expiry).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

/// Warn about a certificate this close to its end: certbot renews 30 days
/// before, so a certificate with less left has missed renewals.
pub const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

/// Where a certificate comes from, as configured.
#[derive(Debug, Clone)]
pub struct Source {
    /// How errors name it: `tls`, `tls.certificates[1]`, `self-signed`.
    pub label: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The configured server names; `None`: the certificate's own DNS names.
    pub names: Option<Vec<String>>,
    /// Chosen only by name, so it must have names (every one but the default).
    pub needs_names: bool,
}

/// A certificate and key in use.
pub struct Loaded {
    pub certified: Arc<CertifiedKey>,
    /// The names it is chosen for, lower case (`*.` wildcards allowed).
    pub names: Vec<String>,
    /// End of validity, seconds since the Unix epoch, if it could be read.
    pub not_after: Option<i64>,
    /// Worth telling the operator, but not a reason to refuse it.
    pub warnings: Vec<String>,
}

impl Loaded {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.certified.cert[0]
    }

    pub fn expired(&self, now: i64) -> bool {
        self.not_after.is_some_and(|t| t < now)
    }

    /// Why its expiry deserves a warning, if it does.
    pub fn expiry_warning(&self, now: i64) -> Option<String> {
        let t = self.not_after?;
        if t < now {
            Some(format!("expired on {}", date(t)))
        } else if t - now < EXPIRY_WARNING_SECS {
            Some(format!("expires on {}, in {} days: is renewal working?", date(t), (t - now) / 86400))
        } else {
            None
        }
    }

    /// `names a, b; valid until …` for `check` and logs.
    pub fn describe(&self, now: i64) -> String {
        let names = if self.names.is_empty() { "none".to_string() } else { self.names.join(", ") };
        let validity = match self.not_after {
            Some(t) if t < now => format!("EXPIRED on {}", date(t)),
            Some(t) => format!("valid until {} ({} days left)", date(t), (t - now) / 86400),
            None => "expiry unknown".to_string(),
        };
        format!("names {names}; {validity}")
    }

    pub fn not_after_text(&self) -> String {
        self.not_after.map(date).unwrap_or_else(|| "unknown".to_string())
    }
}

/// Reads and checks the certificate chain and key of `source`.
pub fn load(source: &Source) -> Result<Loaded, String> {
    let (label, cert_path, key_path) = (&source.label, source.cert.display(), source.key.display());
    let cert_pem = std::fs::read(&source.cert).map_err(|e| format!("{label}.cert: cannot read {cert_path}: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{label}.cert: {cert_path} is not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{label}.cert: {cert_path} holds no certificate (with Let's Encrypt use fullchain.pem, not cert.pem)"
        ));
    }
    let key_pem = std::fs::read(&source.key).map_err(|e| format!("{label}.key: cannot read {key_path}: {e}"))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{label}.key: {key_path} is not a PEM private key: {e}"))?
        .ok_or_else(|| format!("{label}.key: {key_path} holds no private key (with Let's Encrypt use privkey.pem)"))?;

    let leaf = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| format!("{label}.cert: the first certificate in {cert_path} cannot be read: {e}"))?;
    let own_names: Vec<String> = leaf.valid_dns_names().map(|n| n.trim_end_matches('.').to_ascii_lowercase()).collect();
    let mut warnings = Vec::new();
    let names = match &source.names {
        Some(configured) => {
            for n in configured {
                if !covers(&leaf, &own_names, n) {
                    warnings.push(format!(
                        "{label}: the certificate in {cert_path} is not valid for {n} (it is for: {}); clients asking for {n} will refuse it",
                        if own_names.is_empty() { "no DNS name".to_string() } else { own_names.join(", ") }
                    ));
                }
            }
            configured.clone()
        }
        None => own_names,
    };
    if source.needs_names && names.is_empty() {
        return Err(format!(
            "{label}: the certificate in {cert_path} lists no DNS names; say which server names it is for with names = [\"smtp.example.org\"]"
        ));
    }
    let not_after = not_after(&chain[0]);

    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{label}: the private key {key_path} does not belong to the certificate in {cert_path} (both must come from the same issuance; a renewal still being written is retried)"
        ),
        other => format!("{label}.key: {key_path} is not a usable private key: {other}"),
    })?;
    Ok(Loaded { certified: Arc::new(certified), names, not_after, warnings })
}

/// Whether the certificate is valid for a configured name.
fn covers(leaf: &webpki::EndEntityCert<'_>, own_names: &[String], name: &str) -> bool {
    if name.starts_with("*.") {
        return own_names.iter().any(|n| n == name);
    }
    match ServerName::try_from(name) {
        Ok(server_name) => leaf.verify_is_valid_for_subject_name(&server_name).is_ok(),
        Err(_) => false,
    }
}

/// The certificate's notAfter, read from its DER: Certificate ::= SEQUENCE
/// { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity SEQUENCE { notBefore, notAfter }, … }, … }
/// (RFC 5280 §4.1). `None` if it cannot be read; rustls does not need it.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    use der::asn1::{AnyRef, GeneralizedTime, UtcTime};
    use der::{Decode as _, SliceReader, Tag, Tagged as _};
    fn next<'a>(r: &mut SliceReader<'a>) -> Option<AnyRef<'a>> {
        AnyRef::decode(r).ok()
    }
    let certificate = AnyRef::from_der(cert).ok()?;
    let mut r = SliceReader::new(certificate.value()).ok()?;
    let tbs = next(&mut r)?;
    let mut r = SliceReader::new(tbs.value()).ok()?;
    let first = next(&mut r)?;
    if first.tag().is_context_specific() {
        next(&mut r)?; // the serial number follows the version
    }
    next(&mut r)?; // signature algorithm
    next(&mut r)?; // issuer
    let validity = next(&mut r)?;
    let mut r = SliceReader::new(validity.value()).ok()?;
    next(&mut r)?; // notBefore
    let t = next(&mut r)?;
    let since_epoch = match t.tag() {
        Tag::UtcTime => t.decode_as::<UtcTime>().ok()?.to_unix_duration(),
        Tag::GeneralizedTime => t.decode_as::<GeneralizedTime>().ok()?.to_unix_duration(),
        _ => return None,
    };
    i64::try_from(since_epoch.as_secs()).ok()
}

fn date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, names: &[&str], not_after: Option<(i32, u8, u8)>) -> Source {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some((y, m, d)) = not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let cert = params.self_signed(&key).unwrap();
        let n = std::fs::read_dir(dir).unwrap().count();
        let (c, k) = (dir.join(format!("c{n}.pem")), dir.join(format!("k{n}.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        Source { label: "tls".into(), cert: c, key: k, names: None, needs_names: true }
    }

    #[test]
    fn names_and_expiry_are_read_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let s = write_pair(dir.path(), &["Mail.Example.org", "*.example.net"], Some((2040, 3, 1)));
        let l = load(&s).unwrap();
        assert_eq!(l.names, ["mail.example.org", "*.example.net"]);
        assert_eq!(l.not_after_text(), "2040-03-01T00:00:00Z");
        assert!(l.warnings.is_empty());
        assert!(!l.expired(now()));
        assert_eq!(l.expiry_warning(now()), None);
        // GeneralizedTime, used from 2050 on.
        let s = write_pair(dir.path(), &["a.example"], Some((2051, 1, 2)));
        assert_eq!(load(&s).unwrap().not_after_text(), "2051-01-02T00:00:00Z");
    }

    #[test]
    fn an_expired_certificate_is_loaded_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let s = write_pair(dir.path(), &["a.example"], Some((2001, 1, 1)));
        let l = load(&s).unwrap();
        assert!(l.expired(now()));
        assert!(l.expiry_warning(now()).unwrap().contains("expired on 2001-01-01"));
        assert!(l.describe(now()).contains("EXPIRED"));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), &["a.example"], None);
        let b = write_pair(dir.path(), &["a.example"], None);
        let mixed = Source { key: b.key.clone(), ..a.clone() };
        let e = load(&mixed).err().unwrap();
        assert!(e.contains("does not belong to the certificate"), "{e}");
        std::fs::write(&a.key, "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n").unwrap();
        let e = load(&a).err().unwrap();
        assert!(e.starts_with("tls.key:"), "{e}");
        std::fs::write(&a.cert, "").unwrap();
        assert!(load(&a).err().unwrap().contains("holds no certificate"));
    }

    #[test]
    fn configured_names_are_checked_against_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = write_pair(dir.path(), &["a.example", "*.b.example"], None);
        s.names = Some(vec!["a.example".into(), "x.b.example".into(), "*.b.example".into(), "c.example".into()]);
        let l = load(&s).unwrap();
        assert_eq!(l.names.len(), 4);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("not valid for c.example"));
    }

    #[test]
    fn a_certificate_chosen_by_name_needs_names() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let mut s = Source { label: "tls.certificates[0]".into(), cert: c, key: k, names: None, needs_names: true };
        assert!(load(&s).err().unwrap().contains("names = "));
        s.needs_names = false;
        assert!(load(&s).unwrap().names.is_empty());
    }
}
