//! `sender-policy`: an authenticated login may send only as its own
//! addresses, in the envelope (`MAIL FROM`) and in the `From:` and
//! `Sender:` header fields; unauthenticated submissions from trusted
//! networks only as the addresses listed for them.
//!
//! This is what stops a stolen or misused login from sending as the CEO:
//! list it before `dkim-sign`, so nothing is signed for a domain on the
//! strength of a login that may not use that address.
//!
//! # Configuration
//!
//! | Key | Default | Meaning |
//! |-----|---------|---------|
//! | `source` | `"file"` | Where each login's allowed senders are listed: `"file"` (the senders file), `"sql"` (the login's `senders` column, through `auth-sql`), or both, `["file", "sql"]` |
//! | `file` | `"/auth/senders"` | The senders file, as a path *inside the sandbox*; only with the `"file"` source |
//! | `allow_login` | `true` | A login that is an address may always send as itself |
//! | `allow_null_sender` | `true` | `MAIL FROM:<>` is accepted (read receipts use it); `From:` is still checked |
//! | `allow_subaddress` | `true` | `alice+tag@example.com` counts as `alice@example.com` |
//! | `subaddress_separator` | `"+"` | Characters that start a subaddress, e.g. `"+-"` |
//! | `case_sensitive_local_parts` | `false` | Compare local parts exactly (`Alice@` ≠ `alice@`); domains always ignore case |
//! | `check_headers` | `true` | Check `From:` and `Sender:` at the end of DATA, not only the envelope |
//! | `check_display_names` | `true` | Also check addresses a display name shows: `"ceo@example.com" <me@example.com>` |
//! | `trusted_senders` | `[]` | Patterns allowed to unauthenticated sessions from `trusted_networks`; empty refuses them all |
//!
//! ```toml
//! [[plugins]]
//! name = "sender-policy"
//! read_dirs = ["auth"]          # the senders file lives in config/auth/
//! [plugins.config]
//! file = "/auth/senders"
//! trusted_senders = ["*@localhost", "cron@host.example.com"]
//! ```
//!
//! List it after the auth plugins (it reads the login they set) and before
//! `dkim-sign` and `smtp-forward`. A plugin listed earlier that *accepts* at
//! `MAIL FROM` or in the data hook decides that step without asking it.
//!
//! # The senders file
//!
//! One login per line, then a colon, then the senders it may use, separated
//! by commas or spaces. Blank lines and lines starting with `#` are skipped.
//!
//! ```text
//! # login: allowed senders
//! alice@example.com: alice.smith@example.com, sales@example.com
//! bob@example.com:   *@example.org
//! web@example.com:   *@*.example.com
//! ticketing@example.com: *
//! ```
//!
//! | Pattern | Allows |
//! |---------|--------|
//! | `sales@example.com` | that address |
//! | `*@example.org` | every address at `example.org`, not at its subdomains |
//! | `*@*.example.com` | every address at any subdomain of `example.com`, not at `example.com` itself |
//! | `*` | every address: for an application that sends on behalf of anyone |
//!
//! A login finds its lines the way `auth-flat-file` finds it in the users
//! file: local part exact, domain ignoring case. Several lines for one
//! login add up. A line that cannot be read, or a pattern that is not one
//! of the above, is logged as an error with its line number and skipped
//! (skipping can only take a right away). The file is read when a sender
//! is not the login itself, at every `MAIL FROM` and message, so edits
//! apply at once; if it cannot be read the step is answered `451 4.3.0`
//! and the error logged. The login sending as itself never needs the file.
//!
//! It is a file of its own rather than extra fields of the users file:
//! those fields are Dovecot's (uid, gid, home), and a login may have many
//! senders.
//!
//! # Senders from the database (`source = "sql"`)
//!
//! Users kept in a database (`auth-sql`) have their senders in the same
//! row: after a login, `auth-sql` puts the row's `senders` column in the
//! connection note `auth.senders`, a list of texts, and this source reads
//! that note. No grant is needed, and no query is run: the row was read
//! at the login. Each entry is a pattern of the file (`sales@example.com`,
//! `*@example.org`, `*@*.example.com`, `*`), and `@example.org` means
//! `*@example.org`; entries may also hold several, separated by commas
//! or spaces. Logs name them `database (auth.senders)`.
//!
//! | The note | Allowed senders |
//! |----------|-----------------|
//! | set | the login itself and the entries |
//! | missing: the column is NULL, the query has no `senders`, or another auth plugin accepted the login | the login itself only; never a failure |
//! | an entry that is not a pattern | skipped and logged as an error (skipping can only take a right away) |
//! | not a list of texts (another plugin wrote it) | ignored, logged as an error |
//!
//! `source = ["file", "sql"]` adds both up: a login may use what either
//! lists (users in the database, and applications in the file, say). If
//! the file cannot be read, a sender neither the login nor the note allows
//! gets `451 4.3.0`, as with the file alone.
//!
//! # Matching
//!
//! - Domains compare ignoring case (and a trailing dot).
//! - Local parts compare ignoring case too, unless
//!   `case_sensitive_local_parts = true`. RFC 5321 leaves case to the
//!   receiving domain, but every common mailbox provider folds it, so
//!   `Alice@` and `alice@` are the same mailbox in practice; refusing one of
//!   them would protect nothing.
//! - Quoted local parts are compared unquoted (`"alice"@example.com` is
//!   `alice@example.com`).
//! - With `allow_subaddress`, `alice+anything@example.com` matches a pattern
//!   for `alice@example.com` (the part before the first separator must not be
//!   empty). A listed `alice+news@example.com` matches only itself. Turn it
//!   off on domains where `+` is an ordinary character of distinct mailboxes.
//! - Internationalized domains compare as written: `bücher.example` and
//!   `xn--bcher-kva.example` are different strings, so list the form clients
//!   use (a mismatch refuses; it never allows more).
//!
//! # Who is checked
//!
//! | Session | Allowed senders |
//! |---------|-----------------|
//! | authenticated as `L` | `L` itself (if `allow_login` and `L` is an address) and what the `source` lists for `L` (lines of the senders file, `auth.senders`), whatever the network |
//! | not authenticated, from a listener's `trusted_networks` | `trusted_senders` |
//! | neither | no opinion: the host's relay rule refuses their recipients anyway |
//!
//! `trusted_senders = []` (the default) refuses every unauthenticated
//! sender: any process on a trusted network could otherwise send as
//! anyone. `["*"]` lifts the restriction. The shipped configuration lists
//! `*@localhost`, the domain `mailferry sendmail` gives cron and local
//! programs by default (`server.hostname`).
//!
//! # What is checked
//!
//! - `MAIL FROM`: the envelope sender. The null sender `<>` is accepted while
//!   `allow_null_sender = true`: clients send read receipts (RFC 8098) and
//!   some auto-replies with it, it names nobody, and the message's `From:`
//!   is still checked.
//! - End of DATA (with `check_headers`): every address of `From:` (several
//!   are allowed, and group syntax is read member by member) and of
//!   `Sender:`; with `check_display_names`, every address their display names
//!   show once RFC 2047 encoded words are decoded and full-width look-alikes
//!   folded. A secretary sending as her manager needs the manager's address
//!   listed, whatever `Sender:` says.
//! - Refused outright (`550 5.6.0`): more than one `From:` or `Sender:`
//!   field (RFC 5322 allows one; clients and signers disagree on which one
//!   counts), a field that is not a valid address list, and an encoded word
//!   inside an address (`=?utf-8?b?…?=@example.com`, which some clients
//!   decode into another address).
//! - Not checked: `Reply-To:` (it claims no authorship; it says where
//!   replies go, routinely a list or a colleague, and neither DMARC nor
//!   mail clients present it as the sender), `To:`/`Cc:`, and the
//!   `Resent-*` fields (earlier resent blocks name other people; a
//!   redirected message keeps its author's `From:`, which is checked, so
//!   "redirect" in a mail client is refused unless that author is allowed).
//! - A message without `From:` is let through by this plugin: it claims no
//!   author. The server does not add one; `dkim-sign` cannot sign it and
//!   most receivers refuse it.
//!
//! # Outcomes
//!
//! | Situation | Verdict |
//! |-----------|---------|
//! | Sender allowed | `continue` (logged at debug level with the rule that allowed it) |
//! | Envelope sender not allowed | `deny` `553 5.7.1 <addr>: not allowed to send as this address (login L)` |
//! | `From:`/`Sender:` address not allowed | `deny` `553 5.7.1 From: <addr>: not allowed to send as this address (login L)` |
//! | An address a display name shows not allowed | `deny` `553 5.7.1 From: display name shows <addr>: not allowed …` |
//! | Unauthenticated trusted-network sender not in `trusted_senders` | `deny` `553 5.7.1 <addr>: not allowed to send as this address without authentication` |
//! | Several `From:`/`Sender:` fields, unreadable field, encoded word in an address | `deny` `550 5.6.0` saying which |
//! | Senders file missing or unreadable, and the sender not allowed otherwise | `deny-soft` `451 4.3.0`, error logged |
//!
//! Every refusal is logged as a warning with the login (or the client
//! address), the refused address, the field and what the login may use.
//! Replies name only the refused address and the login: never another
//! login's senders.

mod display;
mod rules;
mod source;

use mailferry_plugin_sdk::headers::parse_mailboxes;
use mailferry_plugin_sdk::{export_plugin, Address, Host, Message, Plugin, Verdict};
use serde::Deserialize;

use rules::{Matching, Pattern};
use source::{Rule, Source};

/// Characters a subaddress separator may be: punctuation that is an
/// ordinary atext character of local parts.
const SEPARATORS: &str = "+-_=#~%!&/^$";

/// Longest address or login quoted in a reply.
const MAX_QUOTED: usize = 100;

/// Allowed senders listed in a refusal's log line; the rest are counted.
const MAX_LOGGED_RULES: usize = 10;

/// Characters of an unreadable header field quoted in the log.
const MAX_LOGGED_VALUE: usize = 200;

/// The senders file when `file` is not set.
const DEFAULT_FILE: &str = "/auth/senders";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_source")]
    pub source: SourceNames,
    /// `None` when not set, so a `file` the sources never read is an error.
    pub file: Option<String>,
    #[serde(default = "yes")]
    pub allow_login: bool,
    #[serde(default = "yes")]
    pub allow_null_sender: bool,
    #[serde(default = "yes")]
    pub allow_subaddress: bool,
    #[serde(default = "default_separator")]
    pub subaddress_separator: String,
    #[serde(default)]
    pub case_sensitive_local_parts: bool,
    #[serde(default = "yes")]
    pub check_headers: bool,
    #[serde(default = "yes")]
    pub check_display_names: bool,
    #[serde(default)]
    pub trusted_senders: Vec<String>,
}

/// `source = "file"` or `source = ["file", "sql"]`.
pub enum SourceNames {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for SourceNames {
    // By hand rather than `untagged`, whose error names no valid value.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = SourceNames;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"file\", \"sql\" or a list of them, e.g. [\"file\", \"sql\"]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SourceNames, E> {
                Ok(SourceNames::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<SourceNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(SourceNames::Many(names))
            }
        }
        d.deserialize_any(Names)
    }
}

fn default_source() -> SourceNames {
    SourceNames::One("file".into())
}

fn default_separator() -> String {
    "+".into()
}

fn yes() -> bool {
    true
}

pub struct SenderPolicy {
    sources: Vec<Source>,
    allow_login: bool,
    allow_null_sender: bool,
    check_headers: bool,
    check_display_names: bool,
    matching: Matching,
    trusted: Vec<Rule>,
}

/// Who is sending, as far as the policy is concerned.
enum Identity {
    Login(String),
    /// Not authenticated, from a trusted network: the client's address.
    Trusted(String),
}

/// The senders one session may use. The sources are consulted only when
/// the login itself does not match, so a login sending as itself never
/// depends on the file.
struct Allowed<'p> {
    policy: &'p SenderPolicy,
    who: Identity,
    rules: Vec<Rule>,
    /// The sources' rules are in `rules` (always, for a trusted session).
    loaded: bool,
    /// A source could not be read: what it lists is unknown, not absent.
    unavailable: bool,
}

/// A verdict that refuses the step; its reason is already logged.
type Refusal = Verdict;

impl Plugin for SenderPolicy {
    type Config = Config;

    fn new(config: Config, _host: &Host) -> Result<Self, String> {
        let sources = sources(&config)?;
        let subaddress_separators: Vec<char> =
            if config.allow_subaddress { config.subaddress_separator.chars().collect() } else { Vec::new() };
        if config.allow_subaddress && subaddress_separators.is_empty() {
            return Err("subaddress_separator is empty: set it (e.g. \"+\") or set allow_subaddress = false".into());
        }
        if let Some(c) = subaddress_separators.iter().find(|c| !SEPARATORS.contains(**c)) {
            return Err(format!("subaddress_separator: {c:?} cannot separate a subaddress; use some of {SEPARATORS}"));
        }
        let mut trusted = Vec::new();
        for text in &config.trusted_senders {
            let pattern = Pattern::parse(text).map_err(|e| format!("trusted_senders: {e}"))?;
            trusted.push(Rule { pattern, origin: "trusted_senders".into() });
        }
        Ok(SenderPolicy {
            sources,
            allow_login: config.allow_login,
            allow_null_sender: config.allow_null_sender,
            check_headers: config.check_headers,
            check_display_names: config.check_display_names,
            matching: Matching { case_sensitive_local_parts: config.case_sensitive_local_parts, subaddress_separators },
            trusted,
        })
    }

    fn mail(&self, host: &Host, sender: &Address) -> Verdict {
        let Some(mut allowed) = self.allowed(host) else {
            return Verdict::Continue;
        };
        if sender.is_null() {
            if self.allow_null_sender {
                host.debug(format!("{} uses the null sender (allow_null_sender)", allowed.who.describe()));
                return Verdict::Continue;
            }
            host.warn(format!("refused the null sender for {}: allow_null_sender = false", allowed.who.describe()));
            return Verdict::deny(553, "5.7.1", format!("<>: null sender not allowed{}", allowed.who.reply_suffix()));
        }
        match allowed.check(host, "envelope sender", &sender.address) {
            Ok(()) => Verdict::Continue,
            Err(refusal) => refusal,
        }
    }

    fn data(&self, host: &Host, msg: &Message) -> Verdict {
        if !self.check_headers {
            return Verdict::Continue;
        }
        let Some(mut allowed) = self.allowed(host) else {
            return Verdict::Continue;
        };
        match self.check_message(host, msg, &mut allowed) {
            Ok(()) => Verdict::Continue,
            Err(refusal) => refusal,
        }
    }
}

impl SenderPolicy {
    /// The senders this session may use; `None` for a session that is
    /// neither authenticated nor trusted (the host refuses it at RCPT).
    fn allowed(&self, host: &Host) -> Option<Allowed<'_>> {
        let connection = host.connection();
        if let Some(login) = connection.auth_user {
            let rules = self
                .allow_login
                .then(|| Pattern::for_login(&login))
                .flatten()
                .map(|pattern| Rule { pattern, origin: "the login itself".into() })
                .into_iter()
                .collect();
            return Some(Allowed {
                policy: self,
                who: Identity::Login(login),
                rules,
                loaded: false,
                unavailable: false,
            });
        }
        if connection.trusted {
            return Some(Allowed {
                policy: self,
                who: Identity::Trusted(connection.remote_ip),
                rules: self.trusted.clone(),
                loaded: true,
                unavailable: false,
            });
        }
        None
    }

    /// The `From:` and `Sender:` checks of the data hook.
    fn check_message(&self, host: &Host, msg: &Message, allowed: &mut Allowed) -> Result<(), Refusal> {
        let fields = [("From", msg.header("From")), ("Sender", msg.header("Sender"))];
        for (name, values) in &fields {
            if values.len() > 1 {
                host.warn(format!(
                    "refused a message of {}: {} {name}: fields (RFC 5322 allows one)",
                    allowed.who.describe(),
                    values.len()
                ));
                return Err(Verdict::deny(
                    550,
                    "5.6.0",
                    format!("message refused: {} {name}: fields, RFC 5322 allows one", values.len()),
                ));
            }
        }
        if fields[0].1.is_empty() {
            host.debug(format!("message of {} has no From: field", allowed.who.describe()));
        }
        for (name, values) in &fields {
            for value in values {
                let mailboxes = parse_mailboxes(value).map_err(|e| {
                    host.warn(format!(
                        "refused a message of {}: {name}: {:?} cannot be read: {e}",
                        allowed.who.describe(),
                        value.chars().take(MAX_LOGGED_VALUE).collect::<String>()
                    ));
                    Verdict::deny(
                        550,
                        "5.6.0",
                        format!("message refused: the {name}: field is not a valid address list"),
                    )
                })?;
                for mailbox in &mailboxes {
                    if mailbox.address.contains("=?") {
                        host.warn(format!(
                            "refused a message of {}: {name}: address {:?} holds an encoded word",
                            allowed.who.describe(),
                            mailbox.address
                        ));
                        return Err(Verdict::deny(
                            550,
                            "5.6.0",
                            format!("message refused: {name}: address holds an encoded word (=?...?=)"),
                        ));
                    }
                    allowed.check(host, &format!("{name}:"), &mailbox.address)?;
                    if !self.check_display_names {
                        continue;
                    }
                    for shown in mailbox.name.as_deref().map(display::addresses_shown).unwrap_or_default() {
                        allowed.check(host, &format!("{name}: display name"), &shown)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Allowed<'_> {
    /// Continues if `address` is allowed; otherwise logs and refuses.
    /// `field` names where the address was found: `envelope sender`,
    /// `From:`, `From: display name`.
    fn check(&mut self, host: &Host, field: &str, address: &str) -> Result<(), Refusal> {
        let matching = &self.policy.matching;
        let mut found = self.rules.iter().find(|r| matching.matches(&r.pattern, address)).cloned();
        if found.is_none() && !self.loaded {
            self.loaded = true;
            if let Identity::Login(login) = &self.who {
                for source in &self.policy.sources {
                    match source.rules_for(host, login) {
                        Ok(rules) => self.rules.extend(rules),
                        Err(e) => {
                            host.error(e);
                            self.unavailable = true;
                        }
                    }
                }
                found = self.rules.iter().find(|r| matching.matches(&r.pattern, address)).cloned();
            }
        }
        if found.is_none() && self.unavailable {
            // Another source may list it: 4xx, so the client tries again.
            return Err(Verdict::deny_soft(451, "4.3.0", "sender policy unavailable, try again later"));
        }
        if let Some(rule) = found {
            host.debug(format!(
                "{} may use {field} {address:?} ({}: {})",
                self.who.describe(),
                rule.origin,
                rule.pattern
            ));
            return Ok(());
        }
        host.warn(format!(
            "refused {field} {address:?} for {}: not among its allowed senders ({})",
            self.who.describe(),
            self.describe_rules()
        ));
        let shown = if field.ends_with("display name") {
            format!("{} shows <{}>", field, quoted(address))
        } else if field == "envelope sender" {
            format!("<{}>", quoted(address))
        } else {
            format!("{field} <{}>", quoted(address))
        };
        Err(Verdict::deny(
            553,
            "5.7.1",
            format!("{shown}: not allowed to send as this address{}", self.who.reply_suffix()),
        ))
    }

    /// What this session may use, for the log.
    fn describe_rules(&self) -> String {
        if self.rules.is_empty() {
            return match self.who {
                Identity::Login(_) => {
                    let places: Vec<&str> = self.policy.sources.iter().map(Source::where_listed).collect();
                    format!("none: list them in {}", places.join(" or "))
                }
                Identity::Trusted(_) => {
                    "none: trusted_senders is empty; list the senders of trusted networks there".into()
                }
            };
        }
        let mut parts: Vec<String> =
            self.rules.iter().take(MAX_LOGGED_RULES).map(|r| format!("{}: {}", r.origin, r.pattern)).collect();
        if self.rules.len() > MAX_LOGGED_RULES {
            parts.push(format!("and {} more", self.rules.len() - MAX_LOGGED_RULES));
        }
        format!("allowed: {}", parts.join(", "))
    }
}

impl Identity {
    /// For log lines: `login "alice@example.com"`.
    fn describe(&self) -> String {
        match self {
            Identity::Login(login) => format!("login {login:?}"),
            Identity::Trusted(ip) => format!("unauthenticated client {ip} (trusted network)"),
        }
    }

    /// The end of a refusal's reply.
    fn reply_suffix(&self) -> String {
        match self {
            Identity::Login(login) => format!(" (login {})", quoted(login)),
            Identity::Trusted(_) => " without authentication".into(),
        }
    }
}

/// The sources `source` names, each once; `file` only with the `"file"` source.
fn sources(config: &Config) -> Result<Vec<Source>, String> {
    let names = match &config.source {
        SourceNames::One(name) => vec![name.clone()],
        SourceNames::Many(names) => names.clone(),
    };
    if names.is_empty() {
        return Err("source = []: list \"file\", \"sql\" or both".into());
    }
    let mut sources = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!("source lists {name:?} twice"));
        }
        sources.push(match name.as_str() {
            "file" => {
                let file = config.file.as_deref().unwrap_or(DEFAULT_FILE).trim();
                if file.is_empty() {
                    return Err("`file` must name the senders file, e.g. \"/auth/senders\"".into());
                }
                Source::File(file.into())
            }
            "sql" => Source::Sql,
            other => return Err(format!("source = {other:?}: use \"file\", \"sql\" or [\"file\", \"sql\"]")),
        });
    }
    if config.file.is_some() && !names.iter().any(|n| n == "file") {
        // Else a file someone still edits would silently grant nothing.
        return Err(
            "`file` is set but `source` does not list \"file\": remove `file`, or use source = [\"file\", \"sql\"]"
                .into(),
        );
    }
    Ok(sources)
}

/// `text` as it may appear in a reply: printable ASCII (the host refuses
/// anything else), shortened.
fn quoted(text: &str) -> String {
    let mut out: String =
        text.chars().take(MAX_QUOTED).map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect();
    if text.chars().count() > MAX_QUOTED {
        out.push_str("...");
    }
    out
}

export_plugin!(SenderPolicy);

#[cfg(test)]
mod tests;
