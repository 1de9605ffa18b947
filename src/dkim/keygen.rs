//! `mailferry dkim keygen`: a new key where the host looks for it, and the
//! DNS record to publish.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use super::keys::{self, KeyInfo};

/// The kinds of key `keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    Rsa4096,
    Ed25519,
}

impl KeyKind {
    pub fn parse(s: &str) -> Option<KeyKind> {
        match s.to_ascii_lowercase().as_str() {
            "rsa2048" | "rsa" => Some(KeyKind::Rsa2048),
            "rsa4096" => Some(KeyKind::Rsa4096),
            "ed25519" => Some(KeyKind::Ed25519),
            _ => None,
        }
    }
}

/// A new private key as PKCS#8 PEM.
pub fn generate(kind: KeyKind) -> Result<String, String> {
    match kind {
        KeyKind::Rsa2048 | KeyKind::Rsa4096 => {
            let bits = if kind == KeyKind::Rsa2048 { 2048 } else { 4096 };
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
                .map_err(|e| format!("cannot generate an RSA key: {e}"))?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| format!("cannot encode the key: {e}"))?;
            Ok(pem.to_string())
        }
        KeyKind::Ed25519 => {
            let der = mail_auth::common::crypto::Ed25519Key::generate_pkcs8()
                .map_err(|e| format!("cannot generate an Ed25519 key: {e}"))?;
            Ok(pem_encode("PRIVATE KEY", &der))
        }
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The selector used when none is given: the month, so a later rotation
/// gets a new name (`mf202611`, and `mf202611e` for Ed25519).
pub fn default_selector(kind: KeyKind) -> String {
    let month = chrono::Utc::now().format("%Y%m");
    match kind {
        KeyKind::Ed25519 => format!("mf{month}e"),
        _ => format!("mf{month}"),
    }
}

/// Generates a key and writes it to `<keys_dir>/<domain>/<selector>.pem`
/// (mode 0600; the folder 0700). An existing key is never overwritten.
pub fn create(keys_dir: &Path, domain: &str, selector: &str, kind: KeyKind) -> Result<KeyInfo, String> {
    let domain = keys::ascii_domain(domain);
    if !keys::is_domain(&domain) {
        return Err(format!("{domain:?} is not a domain name like example.com"));
    }
    if !keys::is_selector(selector) {
        return Err(format!("{selector:?} is not a valid selector (letters, digits, '-' and '.')"));
    }
    let dir = keys_dir.join(&domain);
    let path = dir.join(format!("{selector}.pem"));
    if path.exists() {
        return Err(format!(
            "{} already exists; choose another --selector (rotating keys means publishing a new selector first)",
            path.display()
        ));
    }
    create_private_dir(&dir)?;
    let pem = generate(kind)?;
    write_private(&path, pem.as_bytes())?;
    // Read back through the same loader the server uses: what keygen writes
    // is exactly what will sign.
    let key = keys::load_key(&path, &domain, selector)?;
    Ok(key.info)
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    crate::files::create_dir_all(dir, 0o700).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Writes a file readable by its owner only, durably, under a hidden
/// temporary name first: a running server's watcher never sees half a key.
fn write_private(path: &PathBuf, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        crate::files::inherit_owner(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // No overwrite of a key made meanwhile: link fails if it exists.
        std::fs::hard_link(&tmp, path)?;
        std::fs::remove_file(&tmp)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// The DNS instructions for one key, as `keygen` and `dns` print them.
pub fn describe_record(info: &KeyInfo) -> String {
    let value = info.txt_value();
    let mut out = String::new();
    out.push_str(&format!("  Type:   TXT\n  Name:   {}\n", info.dns_name()));
    out.push_str(&format!(
        "  Host:   {}   (for DNS panels that add \".{}\" themselves: Cloudflare, GoDaddy, Namecheap, Route 53 console, ...)\n",
        info.host_label(),
        info.domain
    ));
    out.push_str(&format!("  Value:  {value}\n"));
    let parts = keys::split_txt(&value);
    if parts.len() > 1 {
        out.push_str(&format!(
            "  The value is longer than 255 characters. Panels that take one long value split it themselves;\n  where strings must be entered separately (zone files, some APIs), use these {}:\n",
            parts.len()
        ));
        for p in &parts {
            out.push_str(&format!("    \"{p}\"\n"));
        }
    }
    out.push_str(&format!("  Zone file line:\n    {}\n", info.zone_line()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, sel) in [(KeyKind::Rsa2048, "r"), (KeyKind::Ed25519, "e")] {
            let info = create(dir.path(), "Example.COM.", sel, kind).unwrap();
            assert_eq!(info.domain, "example.com");
            let path = dir.path().join("example.com").join(format!("{sel}.pem"));
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert!(create(dir.path(), "example.com", sel, kind).unwrap_err().contains("already exists"));
        }
        let store = keys::KeyStore::load(dir.path()).unwrap();
        assert!(store.warnings.is_empty(), "{:?}", store.warnings);
        let infos = store.for_domain("EXAMPLE.com");
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].algorithm, keys::Algorithm::Ed25519);
        assert_eq!(infos[0].public_key.len(), 32);
        assert_eq!(infos[1].algorithm, keys::Algorithm::Rsa { bits: 2048 });
        let text = describe_record(infos[1]);
        assert!(text.contains("r._domainkey.example.com"), "{text}");
        assert!(text.contains("Host:   r._domainkey "), "{text}");
        assert!(text.contains("v=DKIM1; k=rsa; p=MIIB"), "{text}");
    }
}
