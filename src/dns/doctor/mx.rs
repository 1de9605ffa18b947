//! MX: inbound mail where the operator said it goes (Cloudflare Email Routing).

use super::*;

pub(crate) fn check_cloudflare_mx(domain: &str, apex_mx: &Result<Vec<(u16, String)>, LookupError>) -> Check {
    let name = format!("MX at {domain} (Cloudflare Email Routing)");
    let enable = "enable Email Routing for the domain in the Cloudflare dashboard (Email > Email Routing), which adds \
                  route1, route2 and route3.mx.cloudflare.net with their priorities";
    let mx = match apex_mx {
        Ok(mx) => mx,
        Err(LookupError::NoRecord) => {
            return Check::new(Status::Fail, name, "no MX record: mail to the domain bounces").fix(enable);
        }
        Err(LookupError::Failure(e)) => {
            return Check::new(Status::Fail, name, format!("could not resolve the MX records: {e}"))
                .fix("check the name server (--dns-server) or the network, then run doctor again");
        }
    };
    let missing: Vec<&str> =
        CLOUDFLARE_MX.iter().map(|(h, _)| *h).filter(|h| !mx.iter().any(|(_, x)| x == h)).collect();
    let others: Vec<String> =
        mx.iter().filter(|(_, h)| !h.ends_with(".mx.cloudflare.net")).map(|(p, h)| format!("{p} {h}")).collect();
    let found = mx.iter().map(|(p, h)| format!("{p} {h}")).collect::<Vec<_>>().join(", ");
    if !missing.is_empty() {
        return Check::new(Status::Fail, name, format!("missing {}; found: {found}", missing.join(", "))).fix(enable);
    }
    if !others.is_empty() {
        return Check::new(
            Status::Warn,
            name,
            format!("also MX records outside Cloudflare ({}): some mail will bypass Email Routing", others.join(", ")),
        )
        .fix("delete the MX records that do not end in .mx.cloudflare.net");
    }
    Check::new(Status::Pass, name, found)
}
