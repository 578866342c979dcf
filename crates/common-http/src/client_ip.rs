//! The client's IP address, for rate limits and `X-Forwarded-For`.
//!
//! The TCP peer, unless the peer is a trusted proxy (`TRUSTED_PROXIES`,
//! CIDRs): then `X-Forwarded-For` is read right to left, skipping trusted
//! hops, and the first untrusted address is the client (ASVS 5.0 15.3.4).
//! A client can put anything at the left of the header, so reading it
//! left to right, or from an untrusted peer, would let it pick its own
//! rate-limit bucket (SEED-FLAWS F14).

use std::net::IpAddr;

use axum::http::HeaderMap;

/// An address block, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
///
/// Addresses are compared in canonical form, IPv4-mapped IPv6 as IPv4: a
/// block written in mapped form (`::ffff:10.0.0.0/104`) is that IPv4 block,
/// and an IPv6 block with a prefix shorter than /96 (`::/0`) holds IPv6
/// addresses only, so IPv4 clients are matched by IPv4 blocks alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{s}` has a bad prefix length"))?
            }
        };
        // An IPv4-mapped block (`::ffff:10.0.0.0/104`) is the IPv4 block it
        // maps: `contains` compares addresses in their canonical (IPv4) form,
        // so kept as IPv6 it would contain no address at all, not even its own.
        let (network, prefix) = match network {
            IpAddr::V6(v6) if prefix >= 96 => {
                v6.to_ipv4_mapped().map_or((network, prefix), |v4| (IpAddr::V4(v4), prefix - 96))
            }
            _ => (network, prefix),
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>().map(canonical) else {
            // An unparsable hop ends what can be believed.
            break;
        };
        client = ip;
        if !trusted.iter().any(|c| c.contains(ip)) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("1.2.3.4".parse().unwrap()));
        // IPv4-mapped blocks hold the IPv4 addresses they map (found by fuzz/ target client_ip).
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, "10.0.0.0/8".parse().unwrap());
        assert!(mapped.contains("10.1.2.3".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!mapped.contains("11.0.0.1".parse().unwrap()));
        assert!("::ffff:192.0.2.1".parse::<Cidr>().unwrap().contains("192.0.2.1".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "host/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let untrusted_peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(untrusted_peer, &headers("1.1.1.1"), &trusted), untrusted_peer);
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        // The client spoofs a left-most entry; the load balancer appended the real one.
        assert_eq!(
            client_ip(lb, &headers("6.6.6.6, 198.51.100.7"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(lb, &headers("198.51.100.7, 10.0.0.3"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(lb, &HeaderMap::new(), &trusted), lb);
        assert_eq!(client_ip(lb, &headers("garbage"), &trusted), lb);
    }
}
