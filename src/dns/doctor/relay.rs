//! The records the relay asks for (its DKIM CNAMEs, bounce subdomain, verification).

use super::*;

pub(crate) async fn check_relay(args: &DnsArgs, resolver: &impl Resolver, checks: &mut Vec<Check>) {
    let domain = args.domain();
    let includes = spf_includes(args);
    match args.relay {
        RelayKind::Ses => {
            // The MAIL FROM MX names the region: without it there is nothing exact to compare.
            if let (Some(region), Some(bounce)) = (args.region.as_deref(), args.bounce_domain()) {
                let host = format!("feedback-smtp.{region}.amazonses.com");
                checks.push(
                    check_mx_hosts(resolver, &bounce, &[host.as_str()], "Amazon SES MAIL FROM", Status::Fail).await,
                );
                checks.push(check_spf_at(resolver, &bounce, &includes, "Amazon SES MAIL FROM", Status::Fail).await);
            }
        }
        RelayKind::Resend => {
            let bounce = args.bounce_domain().unwrap_or_else(|| format!("send.{domain}"));
            let host = format!("feedback-smtp.{}.amazonses.com", args.ses_region().unwrap_or(RESEND_DEFAULT_REGION));
            checks.push(check_mx_hosts(resolver, &bounce, &[host.as_str()], "Resend", Status::Fail).await);
            checks.push(check_spf_at(resolver, &bounce, &includes, "Resend", Status::Fail).await);
        }
        RelayKind::Mailgun => {
            let bounce = args.bounce_domain().unwrap_or_else(|| format!("mg.{domain}"));
            checks.push(check_spf_at(resolver, &bounce, &includes, "Mailgun", Status::Fail).await);
            checks.push(
                check_mx_hosts(resolver, &bounce, &["mxa.mailgun.org", "mxb.mailgun.org"], "Mailgun", Status::Warn)
                    .await,
            );
        }
        RelayKind::Postmark => {
            let bounce = args.bounce_domain().unwrap_or_else(|| format!("pm-bounces.{domain}"));
            let name = format!("Postmark Return-Path {bounce}");
            let fix = format!("publish a CNAME record at {bounce} pointing to pm.mtasv.net");
            checks.push(match resolver.cname(&bounce).await {
                Ok(t) if t == "pm.mtasv.net" => Check::new(Status::Pass, name, "CNAME pm.mtasv.net"),
                Ok(t) => Check::new(Status::Fail, name, format!("CNAME {t}, not pm.mtasv.net")).fix(fix),
                Err(LookupError::NoRecord) => Check::new(
                    Status::Warn,
                    name,
                    "no CNAME: Postmark uses its own Return-Path, so SPF does not align with your domain",
                )
                .fix(fix),
                Err(LookupError::Failure(e)) => Check::new(Status::Warn, name, format!("could not resolve: {e}")),
            });
        }
        RelayKind::Sendgrid => {
            for s in ["s1", "s2"] {
                let record = format!("{s}._domainkey.{domain}");
                let name = format!("SendGrid {record}");
                let fix = "copy the CNAME records from SendGrid: Settings > Sender Authentication > your domain";
                checks.push(match resolver.cname(&record).await {
                    Ok(t) if t.ends_with(".sendgrid.net") => Check::new(Status::Pass, name, format!("CNAME {t}")),
                    Ok(t) => Check::new(Status::Fail, name, format!("CNAME {t}, not a sendgrid.net name")).fix(fix),
                    Err(LookupError::NoRecord) => {
                        Check::new(Status::Fail, name, "no CNAME: SendGrid does not consider the domain authenticated")
                            .fix(fix)
                    }
                    Err(LookupError::Failure(e)) => Check::new(Status::Warn, name, format!("could not resolve: {e}")),
                });
            }
        }
        RelayKind::Brevo => {
            let name = format!("Brevo code at {domain}");
            checks.push(match resolver.txt(&domain).await {
                Ok(t) if t.iter().any(|v| v.trim_start().starts_with("brevo-code:")) => {
                    Check::new(Status::Pass, name, "present")
                }
                Ok(_) | Err(LookupError::NoRecord) => {
                    Check::new(Status::Warn, name, "no brevo-code TXT record: Brevo cannot verify the domain")
                        .fix("publish the brevo-code TXT record from Brevo: Senders, Domains & Dedicated IPs > Domains")
                }
                Err(LookupError::Failure(e)) => Check::new(Status::Warn, name, format!("could not resolve: {e}")),
            });
        }
        RelayKind::Smtp => {}
    }
}

/// The MX records at `name` include each of `hosts`.
pub(crate) async fn check_mx_hosts(
    resolver: &impl Resolver,
    name: &str,
    hosts: &[&str],
    what: &str,
    absent: Status,
) -> Check {
    let title = format!("{what} MX at {name}");
    let fix =
        format!("publish at {name}: {}", hosts.iter().map(|h| format!("MX 10 {h}")).collect::<Vec<_>>().join(", "));
    match resolver.mx(name).await {
        Ok(mx) => {
            let missing: Vec<&&str> = hosts.iter().filter(|h| !mx.iter().any(|(_, x)| x == **h)).collect();
            let found = mx.iter().map(|(p, h)| format!("{p} {h}")).collect::<Vec<_>>().join(", ");
            if missing.is_empty() {
                Check::new(Status::Pass, title, found)
            } else {
                Check::new(
                    Status::Fail,
                    title,
                    format!("missing {}; found: {found}", missing.iter().map(|h| **h).collect::<Vec<_>>().join(", ")),
                )
                .fix(fix)
            }
        }
        Err(LookupError::NoRecord) => Check::new(absent, title, "no MX record").fix(fix),
        Err(LookupError::Failure(e)) => Check::new(Status::Warn, title, format!("could not resolve: {e}")),
    }
}
