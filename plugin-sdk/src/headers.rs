//! Helpers for header fields: finding values by name and reading the
//! addresses out of `From:`, `Sender:`, `Reply-To:`, `To:` and `Cc:` values.
//!
//! The address parser follows RFC 5322 §3.4 (address lists, groups,
//! display names, comments, quoted strings, domain literals, the obsolete
//! source route) with RFC 6532 UTF-8. It does not decode RFC 2047 encoded
//! words in display names: they are returned as written.

use std::fmt;

/// The first value of the field `name` (compared case-insensitively) in a
/// header list such as [`crate::Message::headers`] returns.
///
/// ```
/// use mailferry_plugin_sdk::headers::first;
/// let headers = vec![("Subject".to_string(), "hi".to_string())];
/// assert_eq!(first(&headers, "subject"), Some("hi"));
/// assert_eq!(first(&headers, "From"), None);
/// ```
pub fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Every value of the field `name`, in order.
pub fn all<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// One mailbox of an address list: `"Alice Example" <alice@example.org>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The display name, unquoted, words joined by one space; `None` if absent.
    pub name: Option<String>,
    /// The addr-spec, `local@domain` (a local part that needs quotes keeps
    /// them). Empty for `<>`.
    pub address: String,
}

/// Why an address list could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed address list: {}", self.0)
    }
}

impl std::error::Error for AddressError {}

/// Reads every mailbox of an address list (`From:`, `To:`, …), flattening
/// groups. Comments are dropped.
///
/// ```
/// use mailferry_plugin_sdk::headers::parse_mailboxes;
/// let list = parse_mailboxes(r#""Smith, John" <john@example.org> (work), team: a@x.org, b@y.org;"#).unwrap();
/// assert_eq!(list[0].name.as_deref(), Some("Smith, John"));
/// assert_eq!(list[0].address, "john@example.org");
/// assert_eq!(list.len(), 3);
/// ```
pub fn parse_mailboxes(value: &str) -> Result<Vec<Mailbox>, AddressError> {
    let tokens = tokenize(value)?;
    Parser { tokens, pos: 0 }.address_list()
}

/// The addr-specs of an address list, e.g. of a `From:` value:
/// `Alice <alice@example.org>` gives `["alice@example.org"]`.
///
/// ```
/// use mailferry_plugin_sdk::headers::addr_specs;
/// assert_eq!(addr_specs("Alice (boss) <alice@example.org>").unwrap(), ["alice@example.org"]);
/// assert!(addr_specs("not an address").is_err());
/// ```
pub fn addr_specs(value: &str) -> Result<Vec<String>, AddressError> {
    Ok(parse_mailboxes(value)?.into_iter().map(|m| m.address).collect())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A run of atom characters and dots (`john.doe`, `example.org`).
    Atom(String),
    /// The content of a quoted string, escapes removed.
    Quoted(String),
    /// A domain literal with its brackets, `[192.0.2.1]`.
    Literal(String),
    /// One of `< > @ , ; :`.
    Special(char),
}

fn err<T>(what: impl Into<String>) -> Result<T, AddressError> {
    Err(AddressError(what.into()))
}

fn tokenize(value: &str) -> Result<Vec<Token>, AddressError> {
    let mut tokens = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
            }
            '(' => {
                // Comments nest and may contain quoted pairs.
                chars.next();
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('\\') => {
                            chars.next();
                        }
                        Some('(') => depth += 1,
                        Some(')') => depth -= 1,
                        Some(_) => {}
                        None => return err("unterminated comment"),
                    }
                }
            }
            '"' => {
                chars.next();
                let mut content = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(escaped) => content.push(escaped),
                            None => return err("unterminated quoted string"),
                        },
                        Some('"') => break,
                        Some(other) => content.push(other),
                        None => return err("unterminated quoted string"),
                    }
                }
                tokens.push(Token::Quoted(content));
            }
            '[' => {
                let mut literal = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => {
                            literal.push('\\');
                            match chars.next() {
                                Some(escaped) => literal.push(escaped),
                                None => return err("unterminated domain literal"),
                            }
                        }
                        Some(']') => {
                            literal.push(']');
                            break;
                        }
                        Some(other) => literal.push(other),
                        None => return err("unterminated domain literal"),
                    }
                }
                tokens.push(Token::Literal(literal));
            }
            '<' | '>' | '@' | ',' | ';' | ':' => {
                chars.next();
                tokens.push(Token::Special(c));
            }
            ')' | ']' | '\\' => return err(format!("unexpected {c:?}")),
            _ => {
                let mut atom = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "()<>[]:;@\\,\"".contains(c) {
                        break;
                    }
                    atom.push(c);
                    chars.next();
                }
                tokens.push(Token::Atom(atom));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn at_special(&self, c: char) -> bool {
        self.peek() == Some(&Token::Special(c))
    }

    fn expect(&mut self, c: char) -> Result<(), AddressError> {
        match self.next() {
            Some(Token::Special(got)) if got == c => Ok(()),
            Some(other) => err(format!("expected {c:?}, found {}", describe(&other))),
            None => err(format!("expected {c:?} at the end")),
        }
    }

    fn address_list(&mut self) -> Result<Vec<Mailbox>, AddressError> {
        let mut out = Vec::new();
        while self.peek().is_some() {
            // Empty list elements (`a@x, , b@y`) are obsolete syntax that
            // real mail still carries; skip them.
            if self.at_special(',') {
                self.pos += 1;
                continue;
            }
            self.address(&mut out)?;
            if self.peek().is_some() {
                self.expect(',')?;
            }
        }
        if out.is_empty() {
            return err("no address");
        }
        Ok(out)
    }

    /// A mailbox or a group; a group's members are appended to `out`.
    fn address(&mut self, out: &mut Vec<Mailbox>) -> Result<(), AddressError> {
        let phrase = self.phrase();
        if self.at_special(':') && !phrase.is_empty() {
            self.pos += 1;
            while !self.at_special(';') {
                match self.peek() {
                    None => return err("group without ';'"),
                    Some(Token::Special(',')) => self.pos += 1,
                    Some(_) => {
                        let inner = self.phrase();
                        out.push(self.mailbox(inner)?);
                    }
                }
            }
            self.pos += 1;
            return Ok(());
        }
        out.push(self.mailbox(phrase)?);
        Ok(())
    }

    /// The mailbox after an already-read phrase (display name or local part).
    fn mailbox(&mut self, phrase: Vec<Token>) -> Result<Mailbox, AddressError> {
        match self.peek() {
            Some(Token::Special('<')) => {
                self.pos += 1;
                let address = self.angle_addr()?;
                Ok(Mailbox { name: display_name(&phrase), address })
            }
            Some(Token::Special('@')) => {
                let [local] = &phrase[..] else {
                    return err("a local part must be a single word or quoted string");
                };
                self.pos += 1;
                let address = format!("{}@{}", local_part(local)?, self.domain()?);
                Ok(Mailbox { name: None, address })
            }
            Some(other) => err(format!("unexpected {}", describe(other))),
            None if phrase.is_empty() => err("missing address"),
            None => err("missing @domain"),
        }
    }

    /// After `<`: `[@route,@route:] local@domain >`, or `<>`.
    fn angle_addr(&mut self) -> Result<String, AddressError> {
        if self.at_special('>') {
            self.pos += 1;
            return Ok(String::new());
        }
        if self.at_special('@') {
            // Obsolete source route: ignored, as RFC 5321 says receivers may.
            while !self.at_special(':') {
                if self.next().is_none() {
                    return err("unterminated source route");
                }
            }
            self.pos += 1;
        }
        let local = match self.next() {
            Some(t @ (Token::Atom(_) | Token::Quoted(_))) => local_part(&t)?,
            Some(other) => return err(format!("unexpected {} in <...>", describe(&other))),
            None => return err("unterminated <...>"),
        };
        self.expect('@')?;
        let domain = self.domain()?;
        self.expect('>')?;
        Ok(format!("{local}@{domain}"))
    }

    fn domain(&mut self) -> Result<String, AddressError> {
        match self.next() {
            Some(Token::Atom(a)) if valid_dot_atom(&a) => Ok(a),
            Some(Token::Literal(l)) => Ok(l),
            Some(other) => err(format!("bad domain {}", describe(&other))),
            None => err("missing domain after '@'"),
        }
    }

    /// Words (atoms and quoted strings) up to the next special.
    fn phrase(&mut self) -> Vec<Token> {
        let mut words = Vec::new();
        while let Some(t @ (Token::Atom(_) | Token::Quoted(_))) = self.peek() {
            words.push(t.clone());
            self.pos += 1;
        }
        words
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Atom(a) => format!("{a:?}"),
        Token::Quoted(q) => format!("quoted string {q:?}"),
        Token::Literal(l) => format!("domain literal {l}"),
        Token::Special(c) => format!("{c:?}"),
    }
}

fn display_name(phrase: &[Token]) -> Option<String> {
    let words: Vec<&str> = phrase
        .iter()
        .map(|t| match t {
            Token::Atom(s) | Token::Quoted(s) => s.as_str(),
            Token::Literal(s) => s.as_str(),
            Token::Special(_) => "",
        })
        .collect();
    let name = words.join(" ");
    (!name.trim().is_empty()).then_some(name)
}

/// A local part as it is written in an addr-spec: unquoted when it is a
/// dot-atom, otherwise quoted with `"` and `\` escaped.
fn local_part(token: &Token) -> Result<String, AddressError> {
    match token {
        Token::Atom(a) if valid_dot_atom(a) => Ok(a.clone()),
        Token::Atom(a) => err(format!("bad local part {a:?}")),
        Token::Quoted(q) if valid_dot_atom(q) => Ok(q.clone()),
        Token::Quoted(q) => {
            let mut out = String::with_capacity(q.len() + 2);
            out.push('"');
            for c in q.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            Ok(out)
        }
        other => err(format!("bad local part {}", describe(other))),
    }
}

/// RFC 5322 dot-atom (with RFC 6532 UTF-8): atext runs joined by single
/// dots (`a.b`, not `.a`, `a.` or `a..b`).
fn valid_dot_atom(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|part| !part.is_empty() && part.chars().all(is_atext))
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &str) -> Mailbox {
        let mut list = parse_mailboxes(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(list.len(), 1, "{value:?}");
        list.remove(0)
    }

    #[test]
    fn bare_and_angle_forms() {
        assert_eq!(one("alice@example.org"), Mailbox { name: None, address: "alice@example.org".into() });
        assert_eq!(one("<alice@example.org>").address, "alice@example.org");
        let m = one("Alice Example <alice@example.org>");
        assert_eq!(m.name.as_deref(), Some("Alice Example"));
        assert_eq!(m.address, "alice@example.org");
    }

    #[test]
    fn comments_are_dropped_even_nested_and_with_specials() {
        let m = one("alice@example.org (Alice (the <boss>), really)");
        assert_eq!(m, Mailbox { name: None, address: "alice@example.org".into() });
        assert_eq!(one("(c) Alice (x) <(y) alice (z) @ (w) example.org (v)>").address, "alice@example.org");
    }

    #[test]
    fn quoted_display_names_and_local_parts() {
        let m = one(r#""Doe, \"JD\" John" <jd@example.org>"#);
        assert_eq!(m.name.as_deref(), Some(r#"Doe, "JD" John"#));
        assert_eq!(one(r#""john doe"@example.org"#).address, r#""john doe"@example.org"#);
        // A quoted local part that needs no quotes is written without them.
        assert_eq!(one(r#""john.doe"@example.org"#).address, "john.doe@example.org");
        assert_eq!(one(r#"<"a\"b"@example.org>"#).address, r#""a\"b"@example.org"#);
        // The @ inside quotes is not the separator.
        assert_eq!(one(r#""evil@attacker.example"@example.org"#).address, r#""evil@attacker.example"@example.org"#);
    }

    #[test]
    fn groups_lists_literals_routes_and_null() {
        let list = parse_mailboxes("a@x.org, Team: b@y.org, C <c@z.org>;, undisclosed-recipients:;").unwrap();
        let addrs: Vec<_> = list.iter().map(|m| m.address.as_str()).collect();
        assert_eq!(addrs, ["a@x.org", "b@y.org", "c@z.org"]);
        assert_eq!(one("user@[192.0.2.1]").address, "user@[192.0.2.1]");
        assert_eq!(one("<@relay.example,@other.example:user@example.org>").address, "user@example.org");
        assert_eq!(one("<>").address, "");
        assert_eq!(one("Jörg <jörg@bücher.example>").address, "jörg@bücher.example");
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in [
            "",
            "alice",
            "Alice Example",
            "alice@",
            "alice@@example.org",
            "john doe@example.org",
            "<alice@example.org",
            "\"unterminated@example.org",
            "a@example.org (unterminated",
            "a@example.org b@example.org",
            "Team: a@x.org",
            ".alice@example.org",
            "alice@example..org",
        ] {
            assert!(parse_mailboxes(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn first_and_all_ignore_case() {
        let h = vec![
            ("Received".to_string(), "one".to_string()),
            ("X-A".to_string(), "a".to_string()),
            ("received".to_string(), "two".to_string()),
        ];
        assert_eq!(first(&h, "RECEIVED"), Some("one"));
        assert_eq!(all(&h, "received").collect::<Vec<_>>(), ["one", "two"]);
    }
}
