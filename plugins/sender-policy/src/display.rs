//! What a display name shows: RFC 2047 encoded words decoded, look-alike
//! characters folded, and the addresses written in it. A `From:` of
//! `"ceo@example.com" <mallory@example.com>` shows the CEO's address in most
//! mail clients while the real address is the sender's own, so the policy
//! checks the addresses a display name shows as well as the real one.

/// The addresses (`local@domain.tld`) a display name shows once decoded.
///
/// An address here is a run of characters around an `@` up to whitespace or
/// one of `<>()[]"',;:`, with a local part and a domain holding a dot.
/// `"Alice @ home"` and `"Team @ACME"` show none.
pub fn addresses_shown(name: &str) -> Vec<String> {
    let text: Vec<char> = fold_lookalikes(&decode_encoded_words(name)).chars().collect();
    let stop = |c: char| c.is_whitespace() || "<>()[]\"',;:@".contains(c);
    let mut found = Vec::new();
    for (at, _) in text.iter().enumerate().filter(|(_, c)| **c == '@') {
        let start = (0..at).rev().take_while(|&i| !stop(text[i])).last().unwrap_or(at);
        let end = (at + 1..text.len()).take_while(|&i| !stop(text[i])).last().map_or(at + 1, |i| i + 1);
        let local: String = text[start..at].iter().collect();
        let domain: String = text[at + 1..end].iter().collect();
        let domain = domain.trim_end_matches('.');
        if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') {
            found.push(format!("{local}@{domain}"));
        }
    }
    found
}

/// Decodes RFC 2047 encoded words (`=?utf-8?B?…?=`, `=?iso-8859-1?Q?…?=`)
/// wherever they appear, quoted strings included, as lenient mail clients
/// do. Whitespace between two encoded words is dropped (RFC 2047 §6.2).
/// Malformed encoded words are left as written.
pub fn decode_encoded_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Whitespace seen after an encoded word, kept only if text follows.
    let mut pending_space = String::new();
    let mut after_word = false;
    while !rest.is_empty() {
        if let Some((decoded, len)) = rest.starts_with("=?").then(|| encoded_word(rest)).flatten() {
            if !after_word {
                out.push_str(&pending_space);
            }
            pending_space.clear();
            out.push_str(&decoded);
            rest = &rest[len..];
            after_word = true;
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        if c.is_whitespace() && after_word {
            pending_space.push(c);
        } else {
            out.push_str(&pending_space);
            pending_space.clear();
            out.push(c);
            after_word = false;
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(&pending_space);
    out
}

/// One encoded word at the start of `text`: its decoded text and its length.
fn encoded_word(text: &str) -> Option<(String, usize)> {
    let body = text.strip_prefix("=?")?;
    let (charset, body) = body.split_once('?')?;
    let (encoding, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let payload = &body[..end];
    if charset.is_empty() || payload.contains(char::is_whitespace) || charset.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => base64(payload)?,
        "Q" | "q" => quoted_printable(payload)?,
        _ => return None,
    };
    let len = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    Some((to_text(charset, &bytes), len))
}

fn base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn quoted_printable(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Decoded bytes as text. UTF-8 and UTF-16 are decoded; every other
/// charset in use for mail headers (ISO-8859-*, windows-125x, KOI8, …)
/// agrees with ASCII on the characters an address is made of, so its bytes
/// are read as Latin-1, which keeps those characters exact.
fn to_text(charset: &str, bytes: &[u8]) -> String {
    // RFC 2231 allows a language after `*`.
    let charset = charset.split('*').next().unwrap_or_default().to_ascii_lowercase();
    let utf16 = |big_endian: bool| {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| if big_endian { u16::from_be_bytes([p[0], p[1]]) } else { u16::from_le_bytes([p[0], p[1]]) })
            .collect();
        char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)).collect::<String>()
    };
    match charset.as_str() {
        "utf-8" | "utf8" | "us-ascii" => String::from_utf8_lossy(bytes).into_owned(),
        "utf-16le" => utf16(false),
        "utf-16" | "utf-16be" => match bytes {
            [0xFF, 0xFE, rest @ ..] => to_text("utf-16le", rest),
            [0xFE, 0xFF, rest @ ..] => to_text("utf-16be", rest),
            _ => utf16(true),
        },
        _ => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Folds characters that render like the ones addresses are made of into
/// them (full-width forms, small and ideographic full stops, the small
/// commercial at), and drops invisible formatting characters, so
/// `ｃｅｏ＠ｅｘａｍｐｌｅ．ｃｏｍ` and `ceo@exa\u{200B}mple.com` are seen for what
/// they show.
fn fold_lookalikes(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
        })
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{FE6B}' => '@',
            '\u{3002}' | '\u{FF61}' | '\u{FE52}' => '.',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_b_and_q_words_and_joins_adjacent_ones() {
        assert_eq!(decode_encoded_words("=?UTF-8?B?Q0VP?= of =?utf-8?q?ACME_Inc=2E?="), "CEO of ACME Inc.");
        assert_eq!(decode_encoded_words("=?utf-8?q?ceo?= =?utf-8?q?=40example.com?="), "ceo@example.com");
        assert_eq!(decode_encoded_words("=?ISO-8859-1?Q?J=F6rg?= Meier"), "Jörg Meier");
        assert_eq!(decode_encoded_words("=?utf-8*en?b?Y2VvQGV4YW1wbGUuY29t?="), "ceo@example.com");
        assert_eq!(decode_encoded_words("=?utf-16?b?/v8AYwBlAG8AQABlAHgALgBjAG8=?="), "ceo@ex.co");
        assert_eq!(decode_encoded_words("=?utf-16le?b?YwBlAG8AQABlAHgALgBjAG8A?="), "ceo@ex.co");
    }

    #[test]
    fn leaves_plain_text_and_malformed_words_alone() {
        assert_eq!(decode_encoded_words("Alice  Example"), "Alice  Example");
        assert_eq!(decode_encoded_words("=?utf-8?x?abc?= =?broken"), "=?utf-8?x?abc?= =?broken");
        assert_eq!(decode_encoded_words("=?utf-8?q?a=Z?="), "=?utf-8?q?a=Z?=");
        assert_eq!(decode_encoded_words("a =?utf-8?q?b?= c"), "a b c");
    }

    #[test]
    fn finds_the_addresses_a_name_shows() {
        assert_eq!(addresses_shown("ceo@example.com"), ["ceo@example.com"]);
        assert_eq!(addresses_shown("The CEO (ceo@example.com)."), ["ceo@example.com"]);
        assert_eq!(addresses_shown("a@x.org, <b@y.org>"), ["a@x.org", "b@y.org"]);
        assert_eq!(addresses_shown("=?utf-8?q?ceo=40example=2Ecom?="), ["ceo@example.com"]);
        assert_eq!(addresses_shown("ｃｅｏ＠ｅｘａｍｐｌｅ．ｃｏｍ"), ["ceo@example.com"]);
        assert_eq!(addresses_shown("ceo\u{FE6B}example\u{3002}com"), ["ceo@example.com"]);
        assert_eq!(addresses_shown("ceo@exa\u{200B}mple.com"), ["ceo@example.com"]);
    }

    #[test]
    fn ordinary_names_show_no_address() {
        for name in ["Alice Example", "Alice @ home", "Team @ACME", "alice@home", "Jörg", "@", "a@.com", ""] {
            assert!(addresses_shown(name).is_empty(), "{name:?}: {:?}", addresses_shown(name));
        }
    }
}
