//! Who the client is, by address: the socket peer, or, when the peer is a trusted
//! proxy, the rightmost address in `X-Forwarded-For` that is not a trusted proxy. A
//! client can write anything into `X-Forwarded-For`, but only to the left of what our
//! own proxies append, so walking from the right and stopping at the first untrusted
//! hop means nobody picks their own rate-limit bucket.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

#[derive(Debug, Default, Clone)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn parse(cidrs: &[String]) -> Result<Self, String> {
        cidrs
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("trusted_proxies: {c:?} is not a CIDR or an address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request whose socket peer is `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Every X-Forwarded-For line, in order, as one list.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        return ip;
                    }
                }
                // Garbage where an address should be: stop at the last good hop.
                None => return client,
            }
        }
        client
    }
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // `1.2.3.4:567` or `[::1]:567`.
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

/// IPv4-mapped IPv6 addresses as IPv4, so one client has one bucket.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rightmost_untrusted() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.0.0.2".parse().unwrap(),
        );
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(t.client_ip(peer, &h), "1.2.3.4".parse::<IpAddr>().unwrap());
        let stranger: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(t.client_ip(stranger, &h), stranger);
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
    }
}
