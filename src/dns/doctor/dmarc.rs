//! DMARC: present, and aligned with how the domain sends.

use super::*;

pub(crate) async fn check_dmarc(args: &DnsArgs, resolver: &impl Resolver, checks: &mut Vec<Check>) {
    let domain = args.domain();
    let record_name = format!("_dmarc.{domain}");
    let name = format!("DMARC at {record_name}");
    let publish = format!("publish a TXT record at {record_name}:\n{}", dmarc_value(args));
    let txts = match resolver.txt(&record_name).await {
        Ok(t) => t,
        Err(LookupError::NoRecord) => {
            checks.push(
                Check::new(
                    Status::Fail,
                    name,
                    "no DMARC record: Gmail and Yahoo require one from bulk senders, and nothing tells receivers to \
                     refuse mail forged as the domain",
                )
                .fix(publish),
            );
            return;
        }
        Err(LookupError::Failure(e)) => {
            checks.push(
                Check::new(Status::Fail, name, format!("could not resolve {record_name}: {e}"))
                    .fix("check the name server (--dns-server) or the network, then run doctor again"),
            );
            return;
        }
    };
    let dmarc: Vec<&String> =
        txts.iter().filter(|t| tag_list(t).first().is_some_and(|(n, v)| n == "v" && v == "DMARC1")).collect();
    let record = match dmarc.len() {
        0 => {
            checks.push(
                Check::new(
                    Status::Fail,
                    name,
                    format!("the record does not start with v=DMARC1, so receivers ignore it: {}", txts.join(" | ")),
                )
                .fix(publish),
            );
            return;
        }
        1 => dmarc[0].clone(),
        n => {
            checks.push(
                Check::new(
                    Status::Fail,
                    name,
                    format!(
                        "{n} DMARC records: receivers then apply none of them:\n{}",
                        dmarc.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
                    ),
                )
                .fix("keep exactly one DMARC record at this name"),
            );
            return;
        }
    };
    let tags = tag_list(&record);
    match tag(&tags, "p").map(|p| p.to_ascii_lowercase()) {
        None => checks.push(
            Check::new(Status::Fail, name, format!("no p= tag, which DMARC requires: {record}"))
                .fix(format!("add p=none right after v=DMARC1:\n{}", dmarc_value(args))),
        ),
        Some(p) if p == "none" => checks.push(Check::new(
            Status::Pass,
            name,
            format!(
                "{record}\nMonitoring only (p=none). Once the aggregate reports show all your mail passing, move to \
                 p=quarantine, then p=reject."
            ),
        )),
        Some(p) if p == "quarantine" || p == "reject" => checks.push(Check::new(Status::Pass, name, record.clone())),
        Some(p) => checks.push(
            Check::new(Status::Fail, name, format!("p={p} is not none, quarantine or reject: {record}"))
                .fix(format!("use p=none to start:\n{}", dmarc_value(args))),
        ),
    }
    if tag(&tags, "rua").is_none() {
        checks.push(
            Check::new(
                Status::Warn,
                "DMARC reports (rua)",
                "no rua=: nobody receives the aggregate reports, so you cannot see who sends as the domain",
            )
            .fix(format!("add rua={} to the record", args.rua())),
        );
    }
}
