//! Openings on `cluster.internal_listen` that have not proved the secret yet, counted per
//! source address and in all, per worker, without I/O. Such a connection costs a descriptor,
//! a task and a small buffer for up to `limits.handshake_timeout` before anything is known
//! about it; these counts keep one host, or many, from holding that without limit.

use std::collections::HashMap;
use std::net::IpAddr;

/// Which cap an opening met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `cluster.max_pending_links_per_ip`.
    Address,
    /// `cluster.max_pending_links`.
    Worker,
}

/// At most `max_pending_links` entries: an address is kept only while it has an opening
/// pending.
#[derive(Debug, Default)]
pub struct PendingLinks {
    by_ip: HashMap<IpAddr, usize>,
    total: usize,
}

impl PendingLinks {
    /// Charges an opening from `ip`, unless a cap is reached.
    pub fn open(&mut self, ip: IpAddr, per_ip: usize, total: usize) -> Result<(), Full> {
        let ip = ip.to_canonical();
        if self.total >= total {
            return Err(Full::Worker);
        }
        let n = self.by_ip.entry(ip).or_insert(0);
        if *n >= per_ip {
            return Err(Full::Address);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// Gives back an opening charged by [`PendingLinks::open`].
    pub fn close(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.total
    }

    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.by_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_is_capped_and_others_still_get_in() {
        let mut p = PendingLinks::default();
        for _ in 0..3 {
            assert_eq!(p.open(ip("10.0.0.1"), 3, 10), Ok(()));
        }
        assert_eq!(p.open(ip("10.0.0.1"), 3, 10), Err(Full::Address));
        // The same address written as IPv4-mapped IPv6 is the same host.
        assert_eq!(p.open(ip("::ffff:10.0.0.1"), 3, 10), Err(Full::Address));
        assert_eq!(p.open(ip("10.0.0.2"), 3, 10), Ok(()));
        assert_eq!((p.total(), p.addresses()), (4, 2));
        p.close(ip("10.0.0.1"));
        assert_eq!(p.open(ip("10.0.0.1"), 3, 10), Ok(()));
    }

    #[test]
    fn the_worker_total_is_capped_and_entries_go_with_their_last_opening() {
        let mut p = PendingLinks::default();
        for i in 0..4 {
            assert_eq!(p.open(ip(&format!("10.0.0.{i}")), 3, 4), Ok(()));
        }
        assert_eq!(p.open(ip("10.0.0.9"), 3, 4), Err(Full::Worker));
        for i in 0..4 {
            p.close(ip(&format!("10.0.0.{i}")));
        }
        assert_eq!((p.total(), p.addresses()), (0, 0));
        // Closing what was never charged changes nothing.
        p.close(ip("10.0.0.1"));
        assert_eq!(p.total(), 0);
        assert_eq!(p.open(ip("10.0.0.9"), 3, 4), Ok(()));
    }
}
