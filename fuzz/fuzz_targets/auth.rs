//! The AUTH decoders (`smtp::session::auth`): base64 responses, PLAIN's
//! `authzid NUL login NUL password`, and LOGIN's two responses.
//!
//! Input: one octet choosing what the rest is, then the rest:
//! - 0: a PLAIN initial response as sent on the AUTH line (base64, or `=`);
//! - 1: two LOGIN responses (base64), separated by the first LF;
//! - otherwise: decoded octets, given straight to the PLAIN splitter and,
//!   cut at the first NUL, to LOGIN's checks (so the fuzzer need not learn
//!   base64 to reach them), and also encoded and decoded again.
//!
//! Checks, beyond "no panic":
//! - base64 decodes only canonical text: what decodes encodes back to it;
//! - an accepted login is 1 to 256 octets with no control or white-space
//!   character (it goes into logs and fail2ban lines), a password at most
//!   1024 octets;
//! - an accepted PLAIN response is exactly `authzid NUL login NUL password`
//!   with the authzid empty or the login;
//! - PLAIN and LOGIN accept the same login and password, and refuse them
//!   with the same reply;
//! - refusals are 501 or 535, with text that holds no control character.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use mailferry::smtp::reply::Reply;
use mailferry::smtp::session::auth::{decode_b64, login_credentials, plain_credentials, plain_initial};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fuzz_target!(|data: &[u8]| {
    let [what, rest @ ..] = data else { return };
    match what {
        0 => {
            let Ok(s) = std::str::from_utf8(rest) else { return };
            match plain_initial(s) {
                Ok(raw) => {
                    if s != "=" {
                        assert_eq!(B64.encode(&raw), s, "non-canonical base64 decoded");
                    }
                    plain(&raw);
                }
                Err(r) => refusal(&r),
            }
        }
        1 => {
            let (l, p) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            match (decode(l), decode(p)) {
                (Some(l), Some(p)) => login(&l, &p),
                _ => {}
            }
        }
        _ => {
            plain(rest);
            let (l, p) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            login(l, p);
            let encoded = B64.encode(rest);
            assert_eq!(decode_b64(encoded.as_bytes()).ok().as_deref(), Some(rest));
            assert_eq!(plain_initial(&encoded).ok().as_deref(), Some(rest));
        }
    }
});

fn decode(s: &[u8]) -> Option<Vec<u8>> {
    match decode_b64(s) {
        Ok(raw) => {
            assert_eq!(B64.encode(&raw).as_bytes(), s, "non-canonical base64 decoded");
            Some(raw)
        }
        Err(r) => {
            refusal(&r);
            None
        }
    }
}

fn refusal(r: &Reply) {
    assert!(matches!(r.code, 501 | 535), "unexpected code {}", r.code);
    for text in &r.lines {
        assert!(!text.chars().any(char::is_control), "control character in {text:?}");
    }
}

fn accepted(login: &str, password: &str) {
    assert!((1..=256).contains(&login.len()), "login of {} octets", login.len());
    assert!(!login.chars().any(|c| c.is_control() || c.is_whitespace()), "login {login:?}");
    assert!(password.len() <= 1024, "password of {} octets", password.len());
}

fn plain(raw: &[u8]) {
    let result = plain_credentials(raw);
    match &result {
        Ok((login, password)) => {
            accepted(login, password);
            let own = [&b""[..], login.as_bytes(), password.as_bytes()].join(&0);
            let named = [login.as_bytes(), login.as_bytes(), password.as_bytes()].join(&0);
            assert!(raw == own || raw == named, "PLAIN accepted {:?}", raw.escape_ascii().to_string());
        }
        Err(r) => refusal(r),
    }
    // Without an authzid, PLAIN decides as LOGIN does.
    if let [b'\0', rest @ ..] = raw {
        if let Some(i) = rest.iter().position(|&b| b == 0) {
            let (l, p) = (&rest[..i], &rest[i + 1..]);
            if !p.contains(&0) {
                assert_eq!(result, login_credentials(l, p), "PLAIN and LOGIN disagree");
            }
        }
    }
}

fn login(l: &[u8], p: &[u8]) {
    match login_credentials(l, p) {
        Ok((login, password)) => {
            accepted(&login, &password);
            assert_eq!((login.as_bytes(), password.as_bytes()), (l, p));
        }
        Err(r) => refusal(&r),
    }
}
