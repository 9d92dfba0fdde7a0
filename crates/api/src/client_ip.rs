//! Who is asking: the peer address, or the client a trusted proxy names.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Resolves the client address. `X-Forwarded-For` is believed only when the
/// peer is a trusted proxy, and then read from the right, skipping further
/// trusted proxies: the first untrusted hop is the client. Entries further
/// left were written by the client itself and could say anything.
pub fn resolve<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; compare them
    // (and hops) as the IPv4 addresses they are.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|h| h.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage where an address should be: stop at the last good hop.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let h = hop.trim();
    h.parse::<IpAddr>()
        .ok()
        .or_else(|| h.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let got = resolve(
            ip("203.0.113.9"),
            ["198.51.100.1"].into_iter(),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_names_the_first_untrusted_hop_from_the_right() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let got = resolve(
            ip("127.0.0.1"),
            ["1.1.1.1, 198.51.100.7", "10.1.2.3"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_proxy_ranges() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = resolve(
            ip("::ffff:10.1.2.3"),
            ["198.51.100.7"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
        let got = resolve(
            ip("::ffff:203.0.113.9"),
            ["198.51.100.7"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn ports_and_ipv6_hops_are_understood_and_garbage_stops_the_walk() {
        let trusted = nets(&["127.0.0.0/8"]);
        assert_eq!(
            resolve(ip("127.0.0.1"), ["[2001:db8::1]:443"].into_iter(), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            resolve(ip("127.0.0.1"), ["198.51.100.7:1234"].into_iter(), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve(ip("127.0.0.1"), ["not-an-ip"].into_iter(), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            resolve(ip("127.0.0.1"), std::iter::empty(), &trusted),
            ip("127.0.0.1")
        );
    }
}
