//! Which address a request is from. Behind a proxy every connection comes from the proxy, so
//! the per-IP limits would lump all clients together; the proxy names the client in a header.
//! That header is believed only from a configured proxy, or any client could pick its own IP.

use crate::config::IpNet;
use crate::http::RequestHead;
use std::net::IpAddr;

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
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

/// The chain of addresses the proxies recorded, nearest the client first. `Forwarded` wins
/// over `X-Forwarded-For` when both are present. `None` for a hop that names no address.
fn chain(head: &RequestHead) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<&str> {
        head.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .collect()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v)
                })
            })
            .map(|v| v.and_then(forwarded_node))
            .collect();
    }
    values("x-forwarded-for")
        .iter()
        .map(|v| forwarded_node(v))
        .collect()
}

/// The client's address: the direct peer, unless it is a trusted proxy; then the nearest
/// address in the proxies' chain that is not itself a trusted proxy. A hop that cannot be read
/// ends the walk at the last address that could, so a client cannot hide behind garbage.
pub fn client_ip(peer: IpAddr, head: &RequestHead, proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut current = peer;
    for hop in chain(head).into_iter().rev() {
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
        let h = head(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        let proxies = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &proxies), ip("9.9.9.9"));
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let proxies = nets(&["10.0.0.0/8", "::1"]);
        // The client claims 6.6.6.6 itself; the first proxy saw it as 1.2.3.4.
        let h = head(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("1.2.3.4"));
        assert_eq!(client_ip(ip("::1"), &h, &proxies), ip("1.2.3.4"));
        // Several header lines form one list.
        let h = head(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("1.2.3.4"));
    }

    #[test]
    fn forwarded_wins_and_its_forms_parse() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = head(&[
            (
                "forwarded",
                "for=\"[2001:db8::7]:4711\";proto=https, for=10.2.2.2",
            ),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("2001:db8::7"));
        let h = head(&[("forwarded", "For=192.0.2.60:80")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("192.0.2.60"));
    }

    #[test]
    fn unreadable_or_missing_hops_stop_at_the_last_known_address() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = head(&[("forwarded", "for=1.2.3.4, for=unknown, for=10.3.3.3")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("10.3.3.3"));
        let h = head(&[]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies), ip("10.0.0.2"));
        // IPv4-mapped IPv6 peers match IPv4 blocks.
        let h = head(&[("x-forwarded-for", "5.5.5.5")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &h, &proxies),
            ip("5.5.5.5")
        );
    }
}
