//! Server TLS: the certificates from `[tls]` (the default one and those
//! chosen by SNI), or a self-signed certificate made once in the state
//! folder when none is configured. They are read again when their files
//! change and on SIGHUP, without a restart. rustls offers TLS 1.2 and 1.3
//! only.

mod certificate;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use rustls::ServerConfig;

pub use certificate::{Loaded, Source};
pub use store::Certificates;

use crate::config::Config;

/// How often certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The server TLS configuration: built once; the certificate of each
/// handshake comes from `certs` at that moment.
pub fn server_config(certs: Arc<Certificates>) -> Arc<ServerConfig> {
    let mut tls = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("ring offers TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    tls.alpn_protocols = vec![];
    tls.session_storage = certs;
    // Our order, not the client's: most clients list AES-256 first, whose
    // SHA-384 key schedule costs more per handshake than AES-128's SHA-256
    // and buys nothing against a 128-bit-secure key exchange.
    tls.ignore_client_order = true;
    Arc::new(tls)
}

/// ring's suites with AES-128-GCM first (Mozilla's "modern" order); the
/// same suites, key exchanges and signature schemes otherwise.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as s;
    let mut p = rustls::crypto::ring::default_provider();
    let rank = |suite: &rustls::SupportedCipherSuite| {
        [
            s::TLS13_AES_128_GCM_SHA256,
            s::TLS13_AES_256_GCM_SHA384,
            s::TLS13_CHACHA20_POLY1305_SHA256,
            s::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            s::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ]
        .iter()
        .position(|p| p.suite() == suite.suite())
        .unwrap_or(usize::MAX)
    };
    p.cipher_suites.sort_by_key(rank);
    p
}

/// Whether the configuration names any certificate (else `serve` makes a
/// self-signed one).
pub fn configured(config: &Config) -> bool {
    config.tls.cert.is_some() || !config.tls.certificates.is_empty()
}

/// The configured certificates, default first: `[tls] cert/key`, then each
/// `[[tls.certificates]]` (the first of which is the default when `[tls]`
/// has no `cert`).
pub fn sources(config: &Config) -> Vec<Source> {
    let mut out = Vec::new();
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        out.push(Source { label: "tls".into(), cert: cert.clone(), key: key.clone(), names: None, needs_names: false });
    }
    for (i, c) in config.tls.certificates.iter().enumerate() {
        out.push(Source {
            label: format!("tls.certificates[{i}]"),
            cert: c.cert.clone(),
            key: c.key.clone(),
            names: c.names.clone(),
            // The default is also what clients without SNI get.
            needs_names: !out.is_empty(),
        });
    }
    out
}

/// Loads the configured certificates, or the self-signed one.
pub fn load(config: &Config) -> Result<Arc<Certificates>> {
    let mut sources = sources(config);
    if sources.is_empty() {
        sources.push(self_signed(&config.state_dir().join("tls"), &config.server.hostname)?);
    }
    Ok(Arc::new(Certificates::load(sources).map_err(anyhow::Error::msg)?))
}

/// One line per certificate in use, for `mailferry check`: files, names,
/// expiry, and any warning.
pub fn describe(certs: &Certificates) -> Vec<String> {
    let now = certificate::now();
    let mut lines = Vec::new();
    for (source, l) in certs.sources().iter().zip(certs.current().iter()) {
        lines.push(format!("{} ({}): {}", source.label, source.cert.display(), l.describe(now)));
        lines.extend(l.warnings.iter().map(|w| format!("warning: {w}")));
        if let Some(w) = l.expiry_warning(now) {
            lines.push(format!("warning: {}: the certificate in {} {w}", source.label, source.cert.display()));
        }
    }
    lines
}

/// Creates `cert.pem`/`key.pem` in `dir` for `hostname` unless they exist.
fn self_signed(dir: &Path, hostname: &str) -> Result<Source> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let generated = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
            .context("cannot generate a self-signed certificate")?;
        write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
        std::fs::write(&cert, generated.cert.pem())?;
        tracing::warn!(cert = %cert.display(), "created a self-signed TLS certificate");
    }
    tracing::warn!(
        "no tls.cert/tls.key configured: using the self-signed certificate in {}. Gmail \"Send mail as\" and most mail clients refuse it; configure a CA-issued certificate for {hostname} (see docs/tls.md, e.g. Let's Encrypt fullchain.pem and privkey.pem)",
        dir.display()
    );
    Ok(Source { label: "self-signed".into(), cert, key, names: None, needs_names: false })
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
