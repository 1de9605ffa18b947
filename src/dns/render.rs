//! The plan as text for the operator: each record ready to paste.

use super::*;

/// What `mailferry dns` prints.
pub fn render(args: &DnsArgs, plan: &Plan) -> String {
    let domain = args.domain();
    let mut out = String::new();
    out.push_str(&format!("DNS records for {domain}, sending through {}", args.relay.label()));
    if args.inbound == Some(Inbound::Cloudflare) {
        out.push_str(", receiving with Cloudflare Email Routing");
    }
    out.push_str(".\n\n");
    out.push_str(&wrap(
        &format!(
            "Name is the full record name; Host is the same name for DNS panels that add \".{domain}\" themselves \
             (Cloudflare, GoDaddy, Namecheap, Route 53 console, ...), \"@\" meaning {domain} itself. Values with \
             <...> parts are patterns: copy the exact text from the provider's panel."
        ),
        "",
    ));

    let mut heading = "";
    for record in &plan.records {
        if record.purpose != heading {
            heading = record.purpose;
            out.push_str(&format!("\n== {heading} ==\n"));
        } else {
            out.push('\n');
        }
        match &record.key {
            Some(key) => out.push_str(&describe_record(key)),
            None => out.push_str(&render_record(record)),
        }
    }
    if !plan.warnings.is_empty() {
        out.push_str("\n== Warnings ==\n");
        for w in &plan.warnings {
            out.push_str(&wrap(w, "  ! "));
        }
    }
    if !plan.notes.is_empty() {
        out.push_str(&format!("\n== Notes for {} ==\n", args.relay.label()));
        for n in &plan.notes {
            out.push_str(&wrap(n, "  - "));
        }
    }
    out.push_str(&format!("\nOnce published, check them with: mailferry doctor --domain {domain}"));
    if args.relay != RelayKind::Smtp {
        out.push_str(&format!(" --relay {}", args.relay));
    }
    if args.inbound == Some(Inbound::Cloudflare) {
        out.push_str(" --inbound cloudflare");
    }
    if let Some(r) = &args.region {
        out.push_str(&format!(" --region {r}"));
    }
    if let Some(m) = &args.mail_from {
        out.push_str(&format!(" --mail-from {m}"));
    }
    out.push('\n');
    out
}

/// One record in the layout of [`describe_record`].
pub(crate) fn render_record(r: &Record) -> String {
    let mut out = String::new();
    match r.priority {
        Some(p) => out.push_str(&format!("  Type:   {}, priority {p}\n", r.kind)),
        None => out.push_str(&format!("  Type:   {}\n", r.kind)),
    }
    out.push_str(&format!("  Name:   {}\n", r.name));
    out.push_str(&format!("  Host:   {}\n", r.host));
    out.push_str(&format!("  Value:  {}\n", r.value));
    if r.kind == "TXT" && r.value.len() > 255 {
        out.push_str("  As strings of at most 255 characters (zone files):\n");
        for part in split_txt(&r.value) {
            out.push_str(&format!("    \"{part}\"\n"));
        }
    }
    if let Some(note) = &r.note {
        out.push_str(&wrap(note, "  Note:   "));
    }
    out
}

/// Wraps prose, but prints a record value (a line starting with a tag such as `v=` or `k=`) on one
/// line, so it can be copied as is.
pub(crate) fn wrap_prose(text: &str, lead: &str) -> String {
    let is_record = text
        .split_once('=')
        .is_some_and(|(tag, _)| !tag.is_empty() && tag.len() <= 3 && tag.bytes().all(|b| b.is_ascii_alphabetic()));
    if is_record {
        format!("{lead}{text}\n")
    } else {
        wrap(text, lead)
    }
}

/// Wraps `text` at 100 columns, the first line after `lead`, the others aligned under it.
pub(crate) fn wrap(text: &str, lead: &str) -> String {
    crate::text::wrap(text, lead, &" ".repeat(lead.chars().count()), 100)
}
