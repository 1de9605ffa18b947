//! SPF: one record per name, under ten lookups, with the relay's include.

use super::*;

/// One term of an SPF record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpfTerm {
    /// `+`, `-`, `~` or `?` for mechanisms; `=` for modifiers.
    pub(crate) qualifier: char,
    /// Lowercase mechanism or modifier name.
    pub(crate) name: String,
    /// After `:` (mechanisms) or `=` (modifiers).
    pub(crate) arg: Option<String>,
    pub(crate) text: String,
}

/// Whether a TXT record is an SPF record (RFC 7208 §4.5: "v=spf1" alone or followed by a space).
pub(crate) fn is_spf(txt: &str) -> bool {
    let t = txt.trim_start();
    t.get(..6).is_some_and(|v| v.eq_ignore_ascii_case("v=spf1")) && t[6..].chars().next().is_none_or(|c| c == ' ')
}

/// The terms after `v=spf1`.
pub(crate) fn spf_terms(record: &str) -> Vec<SpfTerm> {
    record
        .split_whitespace()
        .skip(1)
        .map(|text| {
            if let Some((name, value)) = text.split_once('=') {
                if !name.is_empty() && !name.contains(':') && !name.contains('/') {
                    return SpfTerm {
                        qualifier: '=',
                        name: name.to_ascii_lowercase(),
                        arg: Some(value.to_string()),
                        text: text.to_string(),
                    };
                }
            }
            let (qualifier, rest) = match text.chars().next() {
                Some(q @ ('+' | '-' | '~' | '?')) => (q, &text[1..]),
                _ => ('+', text),
            };
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            let arg = rest[end..].strip_prefix(':').map(|a| a.split('/').next().unwrap_or(a).to_string());
            SpfTerm { qualifier, name: rest[..end].to_ascii_lowercase(), arg, text: text.to_string() }
        })
        .collect()
}

/// The includes of a record, lowercase.
pub(crate) fn spf_include_targets(terms: &[SpfTerm]) -> Vec<String> {
    terms
        .iter()
        .filter(|t| t.name == "include")
        .filter_map(|t| t.arg.as_ref().map(|a| a.trim_end_matches('.').to_ascii_lowercase()))
        .collect()
}

/// `record` with `include:<i>` added for each missing include, and an `all` term that fails
/// other senders softly unless it already fails them (`-all`, `~all`). Mechanisms keep their order;
/// the new includes go after them, then `all`, then modifiers. A record whose policy comes from
/// `redirect=` gets no `all`, which would override it.
pub(crate) fn spf_with_includes(record: &str, includes: &[&str]) -> String {
    let terms = spf_terms(record);
    let present = spf_include_targets(&terms);
    let mut out: Vec<String> = vec!["v=spf1".into()];
    out.extend(terms.iter().filter(|t| t.name != "all" && t.qualifier != '=').map(|t| t.text.clone()));
    for i in includes {
        if !present.iter().any(|p| p == i) && !out.iter().any(|t| *t == format!("include:{i}")) {
            out.push(format!("include:{i}"));
        }
    }
    let all = terms.iter().find(|t| t.name == "all");
    let redirect = terms.iter().any(|t| t.qualifier == '=' && t.name == "redirect");
    match all {
        Some(t) if t.qualifier == '-' || t.qualifier == '~' => out.push(t.text.clone()),
        None if redirect => {}
        _ => out.push("~all".into()),
    }
    out.extend(terms.iter().filter(|t| t.qualifier == '=').map(|t| t.text.clone()));
    out.join(" ")
}

/// One record merging several: every term once, the wanted includes, the strictest sensible `all`.
pub(crate) fn spf_merge(records: &[String], includes: &[&str]) -> String {
    let mut terms: Vec<String> = Vec::new();
    let mut hard_fail = false;
    for r in records {
        for t in spf_terms(r) {
            if t.name == "all" {
                hard_fail |= t.qualifier == '-';
            } else if !terms.iter().any(|x| x.eq_ignore_ascii_case(&t.text)) {
                terms.push(t.text);
            }
        }
    }
    let merged = format!("v=spf1 {} {}", terms.join(" "), if hard_fail { "-all" } else { "~all" });
    spf_with_includes(&merged.split_whitespace().collect::<Vec<_>>().join(" "), includes)
}

/// What counting an SPF record's lookups found.
#[derive(Debug, Default)]
pub(crate) struct SpfCount {
    lookups: u32,
    /// Problems with included records, worst first after sorting.
    problems: Vec<(Status, String)>,
}

/// Counts the DNS lookups evaluating `record` at `domain` costs, following `include:` and
/// `redirect=` through the records that resolve. Loops and over-deep chains are reported, not
/// followed.
pub(crate) async fn count_spf_lookups(resolver: &impl Resolver, domain: &str, record: &str) -> SpfCount {
    let mut count = SpfCount::default();
    // Depth-first, each entry carrying the chain that led to it, to recognise loops.
    let mut stack: Vec<(String, Option<String>, Vec<String>)> =
        vec![(domain.to_string(), Some(record.to_string()), vec![domain.to_string()])];
    let mut fetches = 0;
    while let Some((name, record, chain)) = stack.pop() {
        let record = match record {
            Some(r) => r,
            None => {
                fetches += 1;
                if fetches > SPF_MAX_FETCHES {
                    count.problems.push((
                        Status::Warn,
                        format!("stopped counting after {SPF_MAX_FETCHES} included records; the total is higher"),
                    ));
                    break;
                }
                match resolver.txt(&name).await {
                    Ok(txts) => {
                        let spf: Vec<&String> = txts.iter().filter(|t| is_spf(t)).collect();
                        match spf.len() {
                            1 => spf[0].clone(),
                            0 => {
                                count.problems.push((
                                    Status::Fail,
                                    format!(
                                        "include:{name} has no SPF record: receivers treat that as a permanent error \
                                         (permerror) and SPF fails for every message"
                                    ),
                                ));
                                continue;
                            }
                            n => {
                                count.problems.push((
                                    Status::Fail,
                                    format!("{name} (included) publishes {n} SPF records: receivers return permerror"),
                                ));
                                continue;
                            }
                        }
                    }
                    Err(LookupError::NoRecord) => {
                        count.problems.push((
                            Status::Fail,
                            format!(
                                "include:{name} does not exist or has no TXT record: receivers treat that as a \
                                 permanent error (permerror) and SPF fails for every message"
                            ),
                        ));
                        continue;
                    }
                    Err(LookupError::Failure(e)) => {
                        count.problems.push((
                            Status::Warn,
                            format!("could not resolve include:{name} ({e}); its own lookups are not counted"),
                        ));
                        continue;
                    }
                }
            }
        };
        let terms = spf_terms(&record);
        let has_all = terms.iter().any(|t| t.name == "all");
        for term in &terms {
            let follow = match (term.qualifier, term.name.as_str()) {
                // Ignored, so not looked up, when `all` is present (RFC 7208 §6.1).
                ('=', "redirect") if has_all => continue,
                ('=', "redirect") => term.arg.clone(),
                ('=', _) => continue,
                (_, "include") => term.arg.clone(),
                (_, "a" | "mx" | "exists") => {
                    count.lookups += 1;
                    continue;
                }
                (_, "ptr") => {
                    count.lookups += 1;
                    count.problems.push((
                        Status::Warn,
                        format!("{name} uses ptr, which RFC 7208 §5.5 says not to use: remove it"),
                    ));
                    continue;
                }
                _ => continue,
            };
            count.lookups += 1;
            let Some(target) = follow else { continue };
            let target = target.trim_end_matches('.').to_ascii_lowercase();
            if target.contains('%') {
                count.problems.push((
                    Status::Warn,
                    format!("{} uses a macro: its lookups depend on each message and are not counted", term.text),
                ));
            } else if chain.contains(&target) {
                let mut path = chain.clone();
                path.push(target.clone());
                count.problems.push((
                    Status::Fail,
                    format!(
                        "include loop: {}: receivers stop at {SPF_LOOKUP_LIMIT} lookups and return permerror",
                        path.join(" -> ")
                    ),
                ));
            } else if chain.len() > SPF_MAX_DEPTH {
                count.problems.push((
                    Status::Warn,
                    format!("includes nest deeper than {SPF_MAX_DEPTH} levels below {domain}; not followed further"),
                ));
            } else {
                let mut next = chain.clone();
                next.push(target.clone());
                stack.push((target, None, next));
            }
        }
    }
    count
}

/// SPF at the domain itself.
pub(crate) async fn check_spf(
    args: &DnsArgs,
    resolver: &impl Resolver,
    apex_mx: &Result<Vec<(u16, String)>, LookupError>,
    checks: &mut Vec<Check>,
) {
    let domain = args.domain();
    let name = format!("SPF at {domain}");
    let wanted = spf_includes(args).remove(&domain).unwrap_or_default();
    let planned = apex_spf(args);
    let mx_at_cloudflare = matches!(apex_mx, Ok(mx) if mx.iter().any(|(_, h)| h.ends_with(".mx.cloudflare.net")));

    let txts = match resolver.txt(&domain).await {
        Ok(t) => t,
        Err(LookupError::NoRecord) => Vec::new(),
        Err(LookupError::Failure(e)) => {
            checks.push(
                Check::new(Status::Fail, name, format!("could not resolve the TXT records of {domain}: {e}"))
                    .fix("check the name server (--dns-server) or the network, then run doctor again"),
            );
            return;
        }
    };
    let spf: Vec<String> = txts.into_iter().filter(|t| is_spf(t)).collect();
    let record = match spf.len() {
        0 => {
            let check = match &planned {
                Some(value) => {
                    Check::new(Status::Fail, name, "no SPF record: receivers cannot tell who may send as the domain")
                        .fix(format!("publish one TXT record at {domain}:\n{value}"))
                }
                None => Check::new(
                    Status::Warn,
                    name,
                    format!(
                        "no SPF record; {} checks SPF on its sending subdomain, so this only matters if something \
                         else sends with {domain} as envelope sender",
                        args.relay.label()
                    ),
                ),
            };
            checks.push(check);
            return;
        }
        1 => spf[0].clone(),
        n => {
            checks.push(
                Check::new(
                    Status::Fail,
                    name,
                    format!(
                        "{n} SPF records: a domain must have exactly one, and with several every message fails SPF \
                         (permerror):\n{}",
                        spf.join("\n")
                    ),
                )
                .fix(format!("delete them and publish this one merged record:\n{}", spf_merge(&spf, &wanted))),
            );
            return;
        }
    };
    checks.push(Check::new(Status::Pass, name, format!("exactly one SPF record:\n{record}")));

    // One corrected record serves every fix below, so applying any of them fixes them all.
    let terms = spf_terms(&record);
    let present = spf_include_targets(&terms);
    let cloudflare = args.inbound == Some(Inbound::Cloudflare) || mx_at_cloudflare;
    let mut all_wanted = wanted.clone();
    if cloudflare && !all_wanted.contains(&CLOUDFLARE_SPF) {
        all_wanted.insert(0, CLOUDFLARE_SPF);
    }
    let replace = format!("replace the record with:\n{}", spf_with_includes(&record, &all_wanted));

    // The relay's include.
    if let Some(include) = args.relay.apex_include() {
        let name = format!("SPF include for {}", args.relay.label());
        if present.iter().any(|p| p == include) {
            checks.push(Check::new(Status::Pass, name, format!("include:{include} is present")));
        } else {
            checks.push(Check::new(Status::Fail, name, format!("include:{include} is missing")).fix(&replace));
        }
    }
    // Cloudflare's include, when Cloudflare receives the domain's mail.
    if cloudflare {
        let name = "SPF include for Cloudflare Email Routing";
        if present.iter().any(|p| p == CLOUDFLARE_SPF) {
            checks.push(Check::new(Status::Pass, name, format!("include:{CLOUDFLARE_SPF} is present")));
        } else {
            checks.push(
                Check::new(
                    Status::Warn,
                    name,
                    format!(
                        "the MX records point at Cloudflare but include:{CLOUDFLARE_SPF} is missing: Cloudflare's \
                         forwarding of mail sent from the domain may fail SPF"
                    ),
                )
                .fix(&replace),
            );
        }
    }

    // The policy for everyone else.
    let all = terms.iter().find(|t| t.name == "all");
    let redirect = terms.iter().find(|t| t.qualifier == '=' && t.name == "redirect");
    let policy = "SPF policy (all)";
    match (all.map(|t| t.qualifier), redirect) {
        (Some('+'), _) => checks.push(
            Check::new(
                Status::Fail,
                policy,
                format!("{} lets every server on the internet pass SPF as {domain}", all.map_or("", |t| &t.text)),
            )
            .fix(&replace),
        ),
        (Some('?'), _) => checks.push(
            Check::new(Status::Warn, policy, "?all (neutral): mail from other servers is neither passed nor failed")
                .fix(&replace),
        ),
        (Some(q), _) => checks.push(Check::new(Status::Pass, policy, format!("{q}all"))),
        (None, Some(r)) => {
            checks.push(Check::new(Status::Pass, policy, format!("no all term: the policy comes from {}", r.text)))
        }
        (None, None) => checks.push(
            Check::new(Status::Warn, policy, "no all term: mail from other servers gets a neutral result")
                .fix(&replace),
        ),
    }

    // The lookup limit.
    let mut count = count_spf_lookups(resolver, &domain, &record).await;
    let name = "SPF DNS lookups";
    if count.lookups > SPF_LOOKUP_LIMIT {
        checks.push(
            Check::new(
                Status::Fail,
                name,
                format!(
                    "{} lookups, over the limit of {SPF_LOOKUP_LIMIT}: receivers return permerror and SPF fails for \
                     every message",
                    count.lookups
                ),
            )
            .fix(
                "remove include:, a, mx or ptr terms that do not send your mail (a and mx are rarely needed), or \
                 move a sender to its own subdomain",
            ),
        );
    } else {
        checks.push(Check::new(
            Status::Pass,
            name,
            format!("{} of {SPF_LOOKUP_LIMIT}, nested includes counted", count.lookups),
        ));
    }
    count.problems.sort_by_key(|(s, _)| std::cmp::Reverse(*s as u8));
    for (status, problem) in count.problems {
        let check = Check::new(status, "SPF included records", problem);
        checks.push(if status == Status::Fail {
            check.fix("remove or correct the include: term named above")
        } else {
            check
        });
    }
}

/// The SPF record at a sending subdomain has the includes [`plan`] puts there.
pub(crate) async fn check_spf_at(
    resolver: &impl Resolver,
    name: &str,
    includes: &BTreeMap<String, Vec<&'static str>>,
    what: &str,
    absent: Status,
) -> Check {
    let title = format!("{what} SPF at {name}");
    let wanted = includes.get(name).cloned().unwrap_or_default();
    let publish = format!("publish one TXT record at {name}:\n{}", spf_value(&wanted));
    match resolver.txt(name).await {
        Ok(t) => {
            let spf: Vec<&String> = t.iter().filter(|v| is_spf(v)).collect();
            match spf.as_slice() {
                [] => Check::new(absent, title, "no SPF record").fix(publish),
                [one] => {
                    let present = spf_include_targets(&spf_terms(one));
                    let missing: Vec<&&str> = wanted.iter().filter(|w| !present.iter().any(|p| p == **w)).collect();
                    if missing.is_empty() {
                        Check::new(Status::Pass, title, one.to_string())
                    } else {
                        Check::new(Status::Fail, title, format!("{one}: include:{} is missing", missing[0]))
                            .fix(format!("replace the record with:\n{}", spf_with_includes(one, &wanted)))
                    }
                }
                many => Check::new(Status::Fail, title, format!("{} SPF records: SPF fails (permerror)", many.len()))
                    .fix(format!(
                        "delete them and publish:\n{}",
                        spf_merge(&many.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &wanted)
                    )),
            }
        }
        Err(LookupError::NoRecord) => Check::new(absent, title, "no SPF record").fix(publish),
        Err(LookupError::Failure(e)) => Check::new(Status::Warn, title, format!("could not resolve: {e}")),
    }
}
