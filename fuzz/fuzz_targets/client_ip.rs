//! The client address (`common_http::client_ip`): `TRUSTED_PROXIES` CIDR
//! parsing, `Cidr::contains`, and the right-to-left `X-Forwarded-For` walk
//! that picks the rate-limit bucket.
//!
//! Input: `peer address \0 CIDR list (comma-separated) \0 X-Forwarded-For
//! values (one header per \n-separated line)`.
//!
//! Invariants:
//! - a parsed CIDR contains its own address (except an IPv4-mapped address
//!   in an IPv6 block with a prefix shorter than /96: such blocks hold IPv6
//!   addresses only, see `Cidr`'s docs); `/0` contains every address of its
//!   family; an IPv4 block never holds an IPv6 address;
//! - the result is never an IPv4-mapped IPv6 address;
//! - from an untrusted peer, the header is ignored: the result is the peer;
//! - otherwise the result is the peer or one of the header's addresses, and
//!   it is what the documented walk gives (reference below): right to left,
//!   stop at the first untrusted or unparsable hop. In particular a client
//!   cannot choose the result by adding addresses on the left when a
//!   trusted proxy appended the real one.
#![no_main]

use std::net::IpAddr;

use common_http::client_ip::{Cidr, canonical, client_ip};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn reference(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        if let Ok(s) = v.to_str() {
            hops.extend(s.split(',').map(str::trim));
        }
    }
    let mut client = peer;
    while let Some(hop) = hops.pop() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

fuzz_target!(|data: &[u8]| {
    let [peer, cidrs, xff] = gatehouse_fuzz::fields::<3>(data);
    let Ok(peer) = String::from_utf8_lossy(peer).trim().parse::<IpAddr>() else {
        return;
    };
    let cidrs = String::from_utf8_lossy(cidrs);
    let mut trusted = Vec::new();
    for entry in cidrs.split(',') {
        let Ok(cidr) = entry.parse::<Cidr>() else {
            continue;
        };
        let addr_text = entry.trim().split_once('/').map_or(entry.trim(), |(a, _)| a);
        let addr: IpAddr = addr_text.parse().expect("a parsed CIDR's address parses");
        let prefix: u8 = entry.trim().split_once('/').map_or(128, |(_, p)| p.parse().expect("parsed prefix"));
        // A mapped address under an IPv6 prefix shorter than /96 is in a mixed
        // block, which holds IPv6 addresses only (see `Cidr`'s docs).
        let mixed = matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix < 96);
        if !mixed {
            assert!(cidr.contains(addr), "{entry:?} does not contain its own address");
        }
        let other_family: IpAddr =
            if canonical(addr).is_ipv4() { "::1".parse() } else { "127.0.0.1".parse() }.expect("static address");
        // An IPv4 block never holds an IPv6 address.
        if addr.is_ipv4() {
            assert!(!cidr.contains(other_family), "{entry:?} contains {other_family}");
        }
        if prefix == 0 {
            let same_family: IpAddr =
                if addr.is_ipv4() { "203.0.113.7".parse() } else { "2001:db8::7".parse() }.expect("static address");
            assert!(cidr.contains(same_family), "{entry:?} does not contain {same_family}");
        }
        trusted.push(cidr);
    }

    let mut headers = HeaderMap::new();
    for line in xff.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", v);
        }
    }
    let got = client_ip(peer, &headers, &trusted);
    assert_eq!(got, canonical(got), "an IPv4-mapped address came out");
    assert_eq!(got, reference(peer, &headers, &trusted), "peer {peer} trusted {cidrs:?} headers {headers:?}");
    if !trusted.iter().any(|c| c.contains(canonical(peer))) {
        assert_eq!(got, canonical(peer));
    }
});
