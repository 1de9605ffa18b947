//! DKIM: each local key published, and published as this key.

use super::*;

/// `tag=value` pairs of a DKIM or DMARC record, names lowercase, values trimmed.
pub(crate) fn tag_list(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|part| {
            let (name, value) = part.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

pub(crate) fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Decodes base64 with or without padding, ignoring whitespace (RFC 6376 §3.6.1 allows folding).
pub(crate) fn decode_base64(value: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(&compact).or_else(|_| STANDARD_NO_PAD.decode(&compact)).ok()
}

/// Whether a published RSA `p=` is the same key as the local SubjectPublicKeyInfo, accepting the
/// SubjectPublicKeyInfo form and the bare PKCS#1 RSAPublicKey form some tools publish.
pub(crate) fn rsa_keys_match(published: &[u8], local_spki: &[u8]) -> Result<bool, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let local = rsa::RsaPublicKey::from_public_key_der(local_spki).map_err(|e| format!("local key: {e}"))?;
    let theirs = rsa::RsaPublicKey::from_public_key_der(published)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(published))
        .map_err(|_| "p= is not an RSA public key (neither SubjectPublicKeyInfo nor PKCS#1)".to_string())?;
    Ok(local == theirs)
}

pub(crate) async fn check_dkim(args: &DnsArgs, keys: &KeyStore, resolver: &impl Resolver, checks: &mut Vec<Check>) {
    let domain = args.domain();
    let local = keys.for_domain(&domain);
    if local.is_empty() {
        checks.push(
            Check::new(
                Status::Fail,
                format!("DKIM keys for {domain}"),
                "no local key: mailferry cannot sign mail from this domain",
            )
            .fix(format!(
                "mailferry dkim keygen --domain {domain}   (and for dual signing: mailferry dkim keygen --domain \
                     {domain} --algorithm ed25519), then publish the record it prints"
            )),
        );
        return;
    }
    for info in local {
        checks.push(check_dkim_key(info, resolver).await);
    }
}

/// The published record of one local key.
pub(crate) async fn check_dkim_key(info: &KeyInfo, resolver: &impl Resolver) -> Check {
    let record_name = info.dns_name();
    let name = format!("DKIM {record_name} ({})", info.algorithm);
    let publish = format!("publish this TXT record at {record_name}:\n{}", info.txt_value());
    let txts = match resolver.txt(&record_name).await {
        Ok(t) => t,
        Err(LookupError::NoRecord) => {
            return Check::new(
                Status::Fail,
                name,
                format!("no record: receivers cannot verify signatures by {}", info.path.display()),
            )
            .fix(publish);
        }
        Err(LookupError::Failure(e)) => {
            return Check::new(Status::Fail, name, format!("could not resolve {record_name}: {e}"))
                .fix("check the name server (--dns-server) or the network, then run doctor again");
        }
    };
    // Ignore unrelated TXT records (verification tokens...) at the name.
    let candidates: Vec<&String> =
        txts.iter().filter(|t| t.trim_start().starts_with("v=DKIM1") || tag(&tag_list(t), "p").is_some()).collect();
    if candidates.is_empty() {
        return Check::new(Status::Fail, name, format!("the TXT record there is not a DKIM key: {}", txts.join(" | ")))
            .fix(publish);
    }
    let mut findings = Vec::new();
    for txt in &candidates {
        let check = check_dkim_record(info, txt);
        if check.status != Status::Fail {
            let mut check = Check { name: name.clone(), ..check };
            if candidates.len() > 1 {
                check.status = Status::Warn;
                check.detail = format!(
                    "{} DKIM records at this name; one matches, but receivers may pick any: {}",
                    candidates.len(),
                    check.detail
                );
                check.fix = Some(format!("keep only this one:\n{}", info.txt_value()));
            }
            return check;
        }
        findings.push(check);
    }
    let mut check = findings.remove(0);
    check.name = name;
    if candidates.len() > 1 {
        check.detail = format!("{} DKIM records at this name, none matches: {}", candidates.len(), check.detail);
        check.fix = Some(format!("delete them and {publish}"));
    }
    check
}

/// One published DKIM record against the local key.
pub(crate) fn check_dkim_record(info: &KeyInfo, txt: &str) -> Check {
    let publish = format!("publish this TXT record at {}:\n{}", info.dns_name(), info.txt_value());
    let fail = |detail: String| Check::new(Status::Fail, "", detail).fix(publish.clone());
    let tags = tag_list(txt);
    if let Some(v) = tag(&tags, "v") {
        if v != "DKIM1" {
            return fail(format!("v={v}: the version must be DKIM1"));
        }
    }
    let k = tag(&tags, "k").unwrap_or("rsa").to_ascii_lowercase();
    if k != info.algorithm.key_type() {
        return fail(match info.algorithm {
            Algorithm::Ed25519 => format!(
                "k={k}: an Ed25519 key needs k=ed25519 ({}), or receivers read it as RSA",
                if tag(&tags, "k").is_none() { "k= is missing and defaults to rsa" } else { "it says otherwise" }
            ),
            Algorithm::Rsa { .. } => format!("k={k}, but {} is an RSA key", info.path.display()),
        });
    }
    let p = match tag(&tags, "p") {
        None => return fail("no p= tag: the record has no key".into()),
        Some(p) if p.chars().all(char::is_whitespace) => {
            return fail("p= is empty: the key is revoked, and signatures by it fail".into());
        }
        Some(p) => p,
    };
    let Some(published) = decode_base64(p) else {
        return fail("p= is not valid base64 (a character was lost or added when copying?)".into());
    };
    let same = match info.algorithm {
        Algorithm::Ed25519 => Ok(published == info.public_key),
        Algorithm::Rsa { .. } => rsa_keys_match(&published, &info.public_key),
    };
    match same {
        Ok(true) => {}
        Ok(false) => {
            return fail(format!(
                "the published key is not the key in {}: signatures by this server fail verification",
                info.path.display()
            ));
        }
        Err(e) => return fail(e),
    }
    let testing = tag(&tags, "t").is_some_and(|t| t.split(':').any(|f| f.trim().eq_ignore_ascii_case("y")));
    if testing {
        return Check::new(
            Status::Warn,
            "",
            "the key matches, but t=y (testing mode) asks receivers to treat signatures as unsigned mail",
        )
        .fix(format!("remove t=y once tests are done:\n{}", info.txt_value()));
    }
    Check::new(Status::Pass, "", format!("matches {}", info.path.display()))
}
