//! MD5-crypt (`$1$salt$hash`), the FreeBSD scheme that glibc's crypt(3),
//! PostfixAdmin's old default `md5crypt` and Dovecot's `{MD5-CRYPT}` share.
//! Verification only: it is accepted for databases that still hold such
//! hashes, never written, since 1000 rounds of MD5 are cheap to brute-force.
//!
//! No maintained crate provides it (RustCrypto's password-hashes has none;
//! `pwhash` is unmaintained and pins the 0.9 generation of the digest
//! crates), so it is written out here on RustCrypto's `md-5`, following the
//! reference implementation (Poul-Henning Kamp's `crypt-md5.c`) step by step.

use md5::{Digest, Md5};

/// The alphabet of crypt's base-64 encoding.
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Longest salt: crypt(3) uses the first 8 characters.
const MAX_SALT: usize = 8;

/// Length of the encoded checksum.
pub const CHECKSUM_LEN: usize = 22;

/// Splits `$1$salt$checksum` into its salt and checksum.
pub fn parse(hash: &str) -> Result<(&str, &str), String> {
    let rest = hash.strip_prefix("$1$").ok_or("an MD5-CRYPT hash starts with $1$")?;
    let (salt, checksum) = rest.split_once('$').ok_or("malformed MD5-CRYPT hash: no $ after the salt")?;
    if salt.len() > MAX_SALT {
        return Err(format!("malformed MD5-CRYPT hash: salt over {MAX_SALT} characters"));
    }
    if checksum.len() != CHECKSUM_LEN || !checksum.bytes().all(|b| ITOA64.contains(&b)) {
        return Err(format!("malformed MD5-CRYPT hash: the checksum is not {CHECKSUM_LEN} crypt base-64 characters"));
    }
    Ok((salt, checksum))
}

/// The encoded checksum of `password` with `salt` (at most 8 octets).
pub fn checksum(password: &[u8], salt: &[u8]) -> [u8; CHECKSUM_LEN] {
    // The "alternate" digest: password, salt, password.
    let alternate = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();

    let mut ctx = Md5::new().chain_update(password).chain_update(b"$1$").chain_update(salt);
    // As many octets of the alternate digest as the password is long.
    for chunk_start in (0..password.len()).step_by(16) {
        let n = (password.len() - chunk_start).min(16);
        ctx.update(&alternate[..n]);
    }
    // For each bit of the password's length, low bit first: a zero octet
    // for a 1, the password's first octet for a 0 (the reference code's
    // quirk, kept for compatibility).
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = ctx.finalize();

    // 1000 rounds meant to slow guessing down (they no longer do much).
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize();
    }

    // The digest's octets in crypt's order, three at a time, 6 bits per
    // character, least significant first.
    let d = digest;
    let groups: [(u32, usize); 6] = [
        ((d[0] as u32) << 16 | (d[6] as u32) << 8 | d[12] as u32, 4),
        ((d[1] as u32) << 16 | (d[7] as u32) << 8 | d[13] as u32, 4),
        ((d[2] as u32) << 16 | (d[8] as u32) << 8 | d[14] as u32, 4),
        ((d[3] as u32) << 16 | (d[9] as u32) << 8 | d[15] as u32, 4),
        ((d[4] as u32) << 16 | (d[10] as u32) << 8 | d[5] as u32, 4),
        (d[11] as u32, 2),
    ];
    let mut out = [0u8; CHECKSUM_LEN];
    let mut at = 0;
    for (mut value, chars) in groups {
        for _ in 0..chars {
            out[at] = ITOA64[(value & 0x3f) as usize];
            value >>= 6;
            at += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypt(password: &str, salt: &str) -> String {
        format!("$1${salt}${}", std::str::from_utf8(&checksum(password.as_bytes(), salt.as_bytes())).unwrap())
    }

    #[test]
    fn known_answers() {
        // `openssl passwd -1 -salt SALT PASSWORD` (openssl keeps 8 salt characters).
        assert_eq!(crypt("password", "saltstri"), "$1$saltstri$qQY4WxjABChYG1ccLpfkz/");
        assert_eq!(crypt("", "saltstri"), "$1$saltstri$ciR2otLVXV8I9sOPWbLTc1");
        assert_eq!(
            crypt("a much longer password than sixteen octets", "saltstri"),
            "$1$saltstri$LHNTHKCwcjCgMOjIwJalN/"
        );
        assert_eq!(crypt("Hello world!", "saltstri"), "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1");
        assert_eq!(crypt("password", "ab"), "$1$ab$oKsM6dtDD2L1bKowOBX.7.");
        assert_eq!(crypt("password", ""), "$1$$I2o9Z7NcvQAKp7wyCTlia0");
    }

    #[test]
    fn parsing() {
        assert_eq!(parse("$1$ab$oKsM6dtDD2L1bKowOBX.7."), Ok(("ab", "oKsM6dtDD2L1bKowOBX.7.")));
        assert!(parse("$1$saltstring$qQY4WxjABChYG1ccLpfkz/").unwrap_err().contains("salt"));
        assert!(parse("$1$ab$short").unwrap_err().contains("checksum"));
        assert!(parse("$1$ab$oKsM6dtDD2L1bKowOBX.7!").is_err());
        assert!(parse("$1$nodollar").is_err());
    }
}
