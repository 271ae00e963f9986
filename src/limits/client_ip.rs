//! Which address a request is from. Behind a proxy every connection comes from the proxy, so
//! the per-IP limits would lump all clients together; the proxy names the client in a header.
//! That header is believed only from a configured proxy, or any client could pick its own IP,
//! and only the one header the operator named (`security.client_ip_header`): a proxy that
//! writes `X-Forwarded-For` passes a client's own `Forwarded` through untouched.

use crate::config::{ClientIpHeader, IpNet};
use crate::http::RequestHead;
use std::net::IpAddr;

/// Whether `ip` is one of `security.trusted_proxies`.
pub fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(ip))
}

/// One `for=` value of RFC 7239: `192.0.2.1`, `"[2001:db8::1]:443"`, `192.0.2.1:80`, or an
/// obfuscated name (`unknown`, `_hidden`), which yields `None`.
fn forwarded_node(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    let (host, port) = v.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

/// The chain of addresses the proxies recorded in `source`, nearest the client first. `None`
/// for a hop that names no address. Empty for PROXY protocol: no header is believed then.
fn chain(head: &RequestHead, source: ClientIpHeader) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<&str> {
        head.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .collect()
    };
    match source {
        ClientIpHeader::ProxyProtocol => Vec::new(),
        ClientIpHeader::Forwarded => values("forwarded")
            .iter()
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v)
                })
            })
            .map(|v| v.and_then(forwarded_node))
            .collect(),
        ClientIpHeader::XForwardedFor => values("x-forwarded-for")
            .iter()
            .map(|v| forwarded_node(v))
            .collect(),
    }
}

/// The client's address: the direct peer, unless it is a trusted proxy; then the nearest
/// address in the proxies' chain that is not itself a trusted proxy. A hop that cannot be read
/// ends the walk at the last address that could, so a client cannot hide behind garbage.
pub fn client_ip(
    peer: IpAddr,
    head: &RequestHead,
    proxies: &[IpNet],
    source: ClientIpHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut current = peer;
    for hop in chain(head, source).into_iter().rev() {
        let Some(ip) = hop.map(|ip| ip.to_canonical()) else {
            return current;
        };
        current = ip;
        if !trusted(ip, proxies) {
            return ip;
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientIpHeader::{Forwarded, ProxyProtocol, XForwardedFor};

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead::with_headers("GET", "/", headers)
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = head(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        for source in [XForwardedFor, Forwarded, ProxyProtocol] {
            assert_eq!(client_ip(ip("9.9.9.9"), &h, &[], source), ip("9.9.9.9"));
            let proxies = nets(&["10.0.0.0/8"]);
            assert_eq!(
                client_ip(ip("9.9.9.9"), &h, &proxies, source),
                ip("9.9.9.9")
            );
        }
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let proxies = nets(&["10.0.0.0/8", "::1"]);
        // The client claims 6.6.6.6 itself; the first proxy saw it as 1.2.3.4.
        let h = head(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        let from = |peer: &str| client_ip(ip(peer), &h, &proxies, XForwardedFor);
        assert_eq!(from("10.0.0.2"), ip("1.2.3.4"));
        assert_eq!(from("::1"), ip("1.2.3.4"));
        // Several header lines form one list.
        let h = head(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &proxies, XForwardedFor),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn only_the_configured_source_is_believed() {
        let proxies = nets(&["10.0.0.0/8"]);
        // What a client behind HAProxy's `option forwardfor` sends: its own Forwarded, and the
        // proxy's X-Forwarded-For naming it. Before, Forwarded won whenever present.
        let h = head(&[
            ("forwarded", "for=198.51.100.99"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        let peer = ip("10.0.0.2");
        assert_eq!(client_ip(peer, &h, &proxies, XForwardedFor), ip("1.2.3.4"));
        assert_eq!(
            client_ip(peer, &h, &proxies, Forwarded),
            ip("198.51.100.99")
        );
        // PROXY protocol: the address came before the request; no header names anyone.
        assert_eq!(client_ip(peer, &h, &proxies, ProxyProtocol), peer);
        // The configured header missing: the proxy itself is the client.
        let only_forwarded = head(&[("forwarded", "for=198.51.100.99")]);
        assert_eq!(
            client_ip(peer, &only_forwarded, &proxies, XForwardedFor),
            peer
        );
    }

    #[test]
    fn forwarded_forms_parse() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = head(&[(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=10.2.2.2",
        )]);
        let peer = ip("10.0.0.2");
        assert_eq!(client_ip(peer, &h, &proxies, Forwarded), ip("2001:db8::7"));
        let h = head(&[("forwarded", "For=192.0.2.60:80")]);
        assert_eq!(client_ip(peer, &h, &proxies, Forwarded), ip("192.0.2.60"));
    }

    #[test]
    fn unreadable_or_missing_hops_stop_at_the_last_known_address() {
        let proxies = nets(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        let h = head(&[("forwarded", "for=1.2.3.4, for=unknown, for=10.3.3.3")]);
        assert_eq!(client_ip(peer, &h, &proxies, Forwarded), ip("10.3.3.3"));
        let h = head(&[("x-forwarded-for", "1.2.3.4, garbage, 10.3.3.3")]);
        assert_eq!(client_ip(peer, &h, &proxies, XForwardedFor), ip("10.3.3.3"));
        let h = head(&[]);
        assert_eq!(client_ip(peer, &h, &proxies, XForwardedFor), peer);
        // IPv4-mapped IPv6 peers match IPv4 blocks.
        let h = head(&[("x-forwarded-for", "5.5.5.5")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &h, &proxies, XForwardedFor),
            ip("5.5.5.5")
        );
    }
}
