//! Address lists: which client addresses may use a listener at all. The public listeners read
//! `security.allowed_cidrs` and `security.denied_cidrs`, the admin listener
//! `admin.allowed_cidrs`. A deny entry wins over an allow entry; an empty allow list allows
//! every address. IPv4-mapped IPv6 addresses are matched as the IPv4 address they carry, so
//! `10.0.0.0/8` covers `::ffff:10.1.2.3` on a dual-stack listener.

use crate::config::IpNet;
use std::net::IpAddr;

/// Whether `ip` may connect under the lists `allowed` and `denied`.
pub fn permitted(ip: IpAddr, allowed: &[IpNet], denied: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    if denied.iter().any(|n| n.contains(ip)) {
        return false;
    }
    allowed.is_empty() || allowed.iter().any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_lists_allow_everyone() {
        for a in ["127.0.0.1", "203.0.113.9", "::1", "2001:db8::1"] {
            assert!(permitted(ip(a), &[], &[]), "{a}");
        }
    }

    #[test]
    fn an_allow_list_admits_only_its_blocks() {
        let allowed = nets(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]);
        assert!(permitted(ip("10.255.0.1"), &allowed, &[]));
        assert!(permitted(ip("2001:db8:ffff::1"), &allowed, &[]));
        assert!(permitted(ip("192.0.2.7"), &allowed, &[]));
        assert!(!permitted(ip("192.0.2.8"), &allowed, &[]));
        assert!(!permitted(ip("11.0.0.1"), &allowed, &[]));
        assert!(!permitted(ip("2001:db9::1"), &allowed, &[]));
        // An IPv4 block never matches an IPv6 address, except a mapped one.
        assert!(!permitted(ip("::a00:1"), &allowed, &[]));
        assert!(permitted(ip("::ffff:10.0.0.1"), &allowed, &[]));
    }

    #[test]
    fn deny_wins_over_allow() {
        let allowed = nets(&["127.0.0.0/8", "::1"]);
        let denied = nets(&["127.0.0.2", "::ffff:0:0/96"]);
        assert!(permitted(ip("127.0.0.1"), &allowed, &denied));
        assert!(!permitted(ip("127.0.0.2"), &allowed, &denied));
        assert!(permitted(ip("::1"), &allowed, &denied));
        // Deny alone: everyone but the denied.
        let denied = nets(&["127.0.0.2/32", "::1/128"]);
        assert!(permitted(ip("127.0.0.3"), &[], &denied));
        assert!(!permitted(ip("::1"), &[], &denied));
        assert!(!permitted(ip("::ffff:127.0.0.2"), &[], &denied));
        // A /0 denies the whole family.
        let all_v6 = nets(&["::/0"]);
        assert!(!permitted(ip("2001:db8::1"), &[], &all_v6));
        assert!(permitted(ip("127.0.0.1"), &[], &all_v6));
    }
}
