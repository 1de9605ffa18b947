//! Server TLS: the certificate chain and key from PEM files, or a
//! self-signed certificate made once in the state folder when none is
//! configured. rustls offers TLS 1.2 and 1.3 only.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::Config;

/// Builds the server TLS configuration.
pub fn server_config(config: &Config) -> Result<Arc<ServerConfig>> {
    let (certs, key) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => load_pem(cert, key)?,
        _ => self_signed(&config.state_dir().join("tls"), &config.server.hostname)?,
    };
    let mut tls = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match or are unusable")?;
    tls.alpn_protocols = vec![];
    Ok(Arc::new(tls))
}

fn load_pem(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("tls.cert: cannot read {}", cert.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls.cert: {} is not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "tls.cert: {} holds no certificate (with Let's Encrypt use fullchain.pem, not cert.pem)",
            cert.display()
        );
    }
    let key_pem = std::fs::read(key).with_context(|| format!("tls.key: cannot read {}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("tls.key: {} is not a PEM private key", key.display()))?
        .with_context(|| {
            format!("tls.key: {} holds no private key (with Let's Encrypt use privkey.pem)", key.display())
        })?;
    Ok((certs, key))
}

/// Loads or creates `cert.pem`/`key.pem` in `dir` for `hostname`.
fn self_signed(dir: &Path, hostname: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
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
    load_pem(&cert, &key)
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
