//! Password hashes: verification for the `password` host capability and
//! hashing for `mailferry user add` / `hash-password`.
//!
//! Verification runs in the host (never in a plugin): argon2 and bcrypt are
//! deliberately expensive and run at native speed here, on a blocking thread.
//! Every scheme compares in constant time (the crates below use `subtle` or
//! equivalent; `{PLAIN}` and MD5-crypt use `subtle` directly).
//!
//! MD5-crypt (`$1$`) is verified for databases that still hold it
//! (PostfixAdmin's old default) but is weak: new hashes are argon2id, and
//! such users are best moved to a stronger scheme when they next change
//! their password.

mod cache;
mod md5_crypt;
mod verifier;

pub use verifier::{Settings, Verifier};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The schemes we understand, after any Dovecot `{SCHEME}` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Argon2,
    Bcrypt,
    Sha512Crypt,
    Sha256Crypt,
    /// `$1$`: verified, never written.
    Md5Crypt,
    Plain,
}

/// Works out the scheme of a stored hash and returns the hash without any
/// Dovecot prefix. A prefix must agree with the hash's own format.
pub fn identify(stored: &str) -> Result<(Scheme, &str), String> {
    let (prefix, hash) = match stored.strip_prefix('{').and_then(|s| s.split_once('}')) {
        Some((p, h)) => (Some(p.to_ascii_uppercase()), h),
        None => (None, stored),
    };
    let by_format = if hash.starts_with("$argon2id$") || hash.starts_with("$argon2i$") {
        Some(Scheme::Argon2)
    } else if ["$2a$", "$2b$", "$2y$", "$2x$"].iter().any(|p| hash.starts_with(p)) {
        Some(Scheme::Bcrypt)
    } else if hash.starts_with("$6$") {
        Some(Scheme::Sha512Crypt)
    } else if hash.starts_with("$5$") {
        Some(Scheme::Sha256Crypt)
    } else if hash.starts_with("$1$") {
        Some(Scheme::Md5Crypt)
    } else {
        None
    };
    let scheme = match (prefix.as_deref(), by_format) {
        (None, Some(s)) => s,
        (None, None) => {
            return Err("unknown hash format (expected $argon2id$, $2y$, $6$, $5$, $1$ or a {SCHEME} prefix)".into())
        }
        (Some("PLAIN" | "CLEARTEXT" | "CLEAR"), _) => Scheme::Plain,
        (Some("ARGON2ID" | "ARGON2I"), Some(Scheme::Argon2)) => Scheme::Argon2,
        (Some("BLF-CRYPT" | "BCRYPT"), Some(Scheme::Bcrypt)) => Scheme::Bcrypt,
        (Some("SHA512-CRYPT"), Some(Scheme::Sha512Crypt)) => Scheme::Sha512Crypt,
        (Some("SHA256-CRYPT"), Some(Scheme::Sha256Crypt)) => Scheme::Sha256Crypt,
        // Dovecot's {MD5} is an old alias of {MD5-CRYPT}.
        (Some("MD5-CRYPT" | "MD5"), Some(Scheme::Md5Crypt)) => Scheme::Md5Crypt,
        // Dovecot's generic {CRYPT} means "whatever crypt(3) understands".
        (Some("CRYPT"), Some(s)) if s != Scheme::Argon2 => s,
        (Some(p), _) => return Err(format!("unsupported or mismatched password scheme {{{p}}}")),
    };
    Ok((scheme, hash))
}

/// Checks `password` against `stored`. `Ok(false)` is a wrong password;
/// `Err` means the stored hash itself is unusable.
pub fn verify(password: &str, stored: &str) -> Result<bool, String> {
    verify_in(password, stored, &mut Vec::new())
}

/// [`verify`] with the memory argon2 works in given by the caller, so a
/// worker that verifies one login after another reuses one allocation
/// instead of asking the allocator for megabytes each time.
pub fn verify_in(password: &str, stored: &str, blocks: &mut Vec<Block>) -> Result<bool, String> {
    let (scheme, hash) = identify(stored)?;
    // Cost grows with the password (SHA-crypt) and with the parameters in
    // the stored hash; bound both so one login cannot tie up the host.
    if password.len() > MAX_PASSWORD {
        return Ok(false);
    }
    check_cost(scheme, hash)?;
    match scheme {
        Scheme::Argon2 => argon2_verify(password, hash, blocks),
        Scheme::Bcrypt => {
            // `$2y$` (PHP, Dovecot) is the same algorithm as `$2b$`.
            bcrypt::verify(password, hash).map_err(|e| format!("malformed bcrypt hash: {e}"))
        }
        Scheme::Sha512Crypt => crypt_result(sha_crypt::sha512_check(password, hash), "SHA512-CRYPT"),
        Scheme::Sha256Crypt => crypt_result(sha_crypt::sha256_check(password, hash), "SHA256-CRYPT"),
        Scheme::Md5Crypt => {
            let (salt, stored) = md5_crypt::parse(hash)?;
            let computed = md5_crypt::checksum(password.as_bytes(), salt.as_bytes());
            // Both are CHECKSUM_LEN octets: the comparison's time does not
            // depend on where they differ.
            Ok(computed.as_slice().ct_eq(stored.as_bytes()).into())
        }
        // Compare digests so the comparison takes the same time whatever
        // the lengths.
        Scheme::Plain => Ok(Sha256::digest(password.as_bytes()).ct_eq(&Sha256::digest(hash.as_bytes())).into()),
    }
}

/// argon2 verification in caller-given memory: what the crate's
/// `verify_password` does, minus its fresh allocation of `m` KiB per call.
fn argon2_verify(password: &str, hash: &str, blocks: &mut Vec<Block>) -> Result<bool, String> {
    let malformed = |e: &dyn std::fmt::Display| format!("malformed argon2 hash: {e}");
    let parsed = PasswordHash::new(hash).map_err(|e| malformed(&e))?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| malformed(&e))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| malformed(&e))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| malformed(&e))?;
    let expected = parsed.hash.ok_or_else(|| malformed(&"no hash"))?;
    let mut salt = [0u8; 64];
    let salt = parsed.salt.ok_or_else(|| malformed(&"no salt"))?.decode_b64(&mut salt).map_err(|e| malformed(&e))?;
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut blocks[..needed])
        .map_err(|e| format!("argon2: {e}"))?;
    Ok(out.ct_eq(expected.as_bytes()).into())
}

/// Longest password verified; longer ones never match.
pub const MAX_PASSWORD: usize = 1024;

/// Refuses stored hashes whose parameters would make one verification take
/// seconds or gigabytes (a planted or mistaken entry).
fn check_cost(scheme: Scheme, hash: &str) -> Result<(), String> {
    match scheme {
        Scheme::Argon2 => {
            let parsed = PasswordHash::new(hash).map_err(|e| format!("malformed argon2 hash: {e}"))?;
            let get = |k: &str| parsed.params.get_decimal(k).unwrap_or(0);
            if get("m") > 256 * 1024 || get("t") > 16 || get("p") > 16 {
                return Err("argon2 parameters too costly (limits: m=262144 KiB, t=16, p=16)".into());
            }
        }
        Scheme::Bcrypt => {
            let cost: u32 = hash.get(4..6).and_then(|c| c.parse().ok()).ok_or("malformed bcrypt hash")?;
            if cost > 15 {
                return Err(format!("bcrypt cost {cost} too high (limit 15)"));
            }
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            if let Some(rounds) = hash.get(3..).and_then(|h| h.strip_prefix("rounds=")) {
                let n: u64 = rounds
                    .split('$')
                    .next()
                    .and_then(|r| r.parse().ok())
                    .ok_or("malformed rounds= in SHA-crypt hash")?;
                if n > 1_000_000 {
                    return Err(format!("SHA-crypt rounds={n} too high (limit 1000000)"));
                }
            }
        }
        // Fixed cost: 1000 rounds.
        Scheme::Md5Crypt | Scheme::Plain => {}
    }
    Ok(())
}

/// sha-crypt does not export its error type; its Debug name tells a
/// mismatch from a malformed hash.
fn crypt_result<E: std::fmt::Debug>(r: Result<(), E>, scheme: &str) -> Result<bool, String> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if format!("{e:?}") == "HashMismatch" => Ok(false),
        Err(e) => Err(format!("malformed {scheme} hash: {e:?}")),
    }
}

/// Hashes a new password with argon2id (the default for new entries), with
/// the crate's default cost parameters (19 MiB, 2 passes), OWASP's minimum.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify("correct horse", &h), Ok(true));
        assert_eq!(verify("wrong", &h), Ok(false));
        assert_eq!(verify("correct horse", &format!("{{ARGON2ID}}{h}")), Ok(true));
    }

    #[test]
    fn bcrypt_2y_and_dovecot_prefix() {
        // Made with PHP's password_hash("secret", PASSWORD_BCRYPT, ["cost" => 4]) style.
        let h = bcrypt::hash("secret", 4).unwrap().replacen("$2b$", "$2y$", 1);
        assert_eq!(verify("secret", &h), Ok(true));
        assert_eq!(verify("nope", &h), Ok(false));
        assert_eq!(verify("secret", &format!("{{BLF-CRYPT}}{h}")), Ok(true));
    }

    #[test]
    fn sha_crypt_known_vectors() {
        // Drepper's SHA-crypt vectors, as `openssl passwd -6/-5 -salt saltstring` prints them.
        let sha512 =
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        let sha256 = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
        assert_eq!(verify("Hello world!", sha512), Ok(true));
        assert_eq!(verify("Hello world?", sha512), Ok(false));
        assert_eq!(verify("Hello world!", &format!("{{SHA512-CRYPT}}{sha512}")), Ok(true));
        assert_eq!(verify("Hello world!", sha256), Ok(true));
        assert_eq!(verify("Hello world!", &format!("{{SHA256-CRYPT}}{sha256}")), Ok(true));
    }

    #[test]
    fn md5_crypt_known_vectors_and_prefixes() {
        // `openssl passwd -1 -salt saltstring password` (salt cut to 8).
        let h = "$1$saltstri$qQY4WxjABChYG1ccLpfkz/";
        assert_eq!(identify(h), Ok((Scheme::Md5Crypt, h)));
        assert_eq!(verify("password", h), Ok(true));
        assert_eq!(verify("Password", h), Ok(false));
        assert_eq!(verify("", "$1$saltstri$ciR2otLVXV8I9sOPWbLTc1"), Ok(true));
        for prefix in ["{MD5-CRYPT}", "{md5-crypt}", "{MD5}", "{CRYPT}"] {
            assert_eq!(verify("password", &format!("{prefix}{h}")), Ok(true), "{prefix}");
        }
        // Malformed: an error, not a mismatch.
        assert!(verify("password", "$1$saltstri$qQY4WxjABChYG1ccLpfkz").unwrap_err().contains("MD5-CRYPT"));
        assert!(verify("password", &format!("{{SHA512-CRYPT}}{h}")).is_err());
        assert!(verify("password", "{MD5-CRYPT}$6$saltstring$x").is_err());
    }

    #[test]
    fn plain_needs_explicit_prefix() {
        assert_eq!(verify("pw", "{PLAIN}pw"), Ok(true));
        assert_eq!(verify("pw", "{PLAIN}px"), Ok(false));
        assert!(verify("pw", "pw").is_err());
    }

    #[test]
    fn costly_parameters_and_long_passwords_are_refused() {
        let h = bcrypt::hash("x", 4).unwrap();
        assert_eq!(verify("x", &h), Ok(true));
        assert!(verify("x", &h.replacen("$04$", "$31$", 1)).unwrap_err().contains("cost 31"));
        assert!(verify("x", "$6$rounds=999999999$salt$abc").unwrap_err().contains("rounds"));
        assert!(verify("x", "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
            .unwrap_err()
            .contains("too costly"));
        let long = "p".repeat(MAX_PASSWORD + 1);
        assert_eq!(verify(&long, &format!("{{PLAIN}}{long}")), Ok(false));
    }

    #[test]
    fn mismatched_prefix_is_an_error() {
        let h = hash("x").unwrap();
        assert!(verify("x", &format!("{{SHA512-CRYPT}}{h}")).is_err());
        assert!(verify("x", "{MD5}abc").is_err());
        assert!(verify("x", "$6$broken").is_err() || verify("x", "$6$broken") == Ok(false));
    }
}
