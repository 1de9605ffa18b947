//! Open connections, counted in total and per client, and the place each
//! holds until it closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The address connections are counted (and failed logins judged) under:
/// an IPv6 client usually has a whole /64, so the limit applies to the /64,
/// not to each address in it.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The open connections of every listener, in total and per client.
#[derive(Clone, Default)]
pub struct Connections(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Which limit a new connection would pass.
#[derive(Debug, PartialEq, Eq)]
pub enum OverLimit {
    Total,
    PerClient,
}

impl Connections {
    /// Takes a place in the total only, for a connection whose client is
    /// not known yet (a PROXY header will name it).
    pub fn admit_total(&self, max_total: usize) -> Result<Permit, OverLimit> {
        let mut c = self.0.lock().unwrap();
        if c.total >= max_total {
            return Err(OverLimit::Total);
        }
        c.total += 1;
        Ok(Permit { counts: self.0.clone(), client: None })
    }

    /// Takes a place in the total and under the client.
    pub fn admit(&self, ip: IpAddr, max_total: usize, max_per_client: usize) -> Result<Permit, OverLimit> {
        let mut permit = self.admit_total(max_total)?;
        permit.assign(ip, max_per_client)?;
        Ok(permit)
    }
}

/// A connection's place in [`Connections`], given back when dropped.
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    /// The client it is counted under; none while a PROXY header that will
    /// name the client is awaited.
    client: Option<IpAddr>,
}

impl Permit {
    /// Counts the connection under its client too, within the per-client limit.
    pub fn assign(&mut self, ip: IpAddr, max_per_client: usize) -> Result<(), OverLimit> {
        debug_assert!(self.client.is_none());
        let ip = client_key(ip);
        let mut c = self.counts.lock().unwrap();
        let mine = c.per_client.get(&ip).copied().unwrap_or(0);
        if mine >= max_per_client {
            return Err(OverLimit::PerClient);
        }
        *c.per_client.entry(ip).or_default() += 1;
        self.client = Some(ip);
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap();
        c.total -= 1;
        if let Some(ip) = self.client {
            if let Some(n) = c.per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_client.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_connection_awaiting_its_proxy_header_counts_toward_the_total_only() {
        let connections = Connections::default();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let mut pending = connections.admit_total(2).unwrap();
        let first = connections.admit(client, 2, 1).unwrap();
        assert_eq!(connections.admit_total(2).err(), Some(OverLimit::Total), "the total includes the pending one");
        assert_eq!(pending.assign(client, 1).err(), Some(OverLimit::PerClient));
        drop(first);
        pending.assign(client, 1).unwrap();
        assert_eq!(connections.0.lock().unwrap().per_client[&client], 1);
        drop(pending);
        let c = connections.0.lock().unwrap();
        assert_eq!((c.total, c.per_client.len()), (0, 0));
    }
}
