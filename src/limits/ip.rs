//! One worker's per-client-IP limits: a connection rate (token bucket) and a count of open
//! connections. The table is bounded: past `limits.ip_table_size` entries the least recently
//! used one is evicted, so a client cycling through addresses costs memory only up to the
//! bound. IPv6 clients are keyed by their /64, the block one host usually holds.

use super::{per_core_share, Bucket, Rate};
use crate::config::LimitsConfig;
use lru::LruCache;
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRefusal {
    /// Over the connection rate; retry after this many seconds.
    Rate { retry_after_s: u64 },
    /// Over the open-connection count.
    Open,
}

struct Entry {
    connects: Option<Bucket>,
    open: u32,
}

pub struct IpLimits {
    table: RefCell<LruCache<IpAddr, Entry>>,
    connect_rate: Option<Rate>,
    max_open: Option<u32>,
    pub evictions: Cell<u64>,
}

/// The table key: the address itself for IPv4, its /64 for IPv6.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

impl IpLimits {
    pub fn new(limits: &LimitsConfig, workers: usize) -> IpLimits {
        let rate = per_core_share(limits.ip_connect_rate, workers);
        let burst = per_core_share(limits.ip_connect_burst, workers);
        let open = per_core_share(limits.max_connections_per_ip, workers);
        let size = NonZeroUsize::new(limits.ip_table_size).unwrap_or(NonZeroUsize::MIN);
        IpLimits {
            table: RefCell::new(LruCache::new(size)),
            connect_rate: (rate > 0).then(|| Rate::new(rate as f64, 60_000.0, burst as f64)),
            max_open: (open > 0).then(|| u32::try_from(open).unwrap_or(u32::MAX)),
            evictions: Cell::new(0),
        }
    }

    fn enabled(&self) -> bool {
        self.connect_rate.is_some() || self.max_open.is_some()
    }

    /// Runs `f` on the entry for `ip`, creating it (and evicting the least recently used one
    /// when the table is full) if needed.
    fn with_entry<T>(&self, ip: IpAddr, now_ms: u64, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut table = self.table.borrow_mut();
        let k = key(ip);
        if let Some(e) = table.get_mut(&k) {
            return f(e);
        }
        let entry = Entry {
            connects: self.connect_rate.map(|r| Bucket::full(&r, now_ms)),
            open: 0,
        };
        if let Some((old, _)) = table.push(k, entry) {
            if old != k {
                self.evictions.set(self.evictions.get() + 1);
            }
        }
        f(table.get_mut(&k).expect("just inserted"))
    }

    /// A new connection from `ip` (refused ones are not charged).
    pub fn admit_connect(&self, ip: IpAddr, now_ms: u64) -> Result<(), IpRefusal> {
        let Some(rate) = self.connect_rate else {
            return Ok(());
        };
        self.with_entry(ip, now_ms, |e| {
            let bucket = e
                .connects
                .get_or_insert_with(|| Bucket::full(&rate, now_ms));
            bucket
                .try_take_one(&rate, now_ms)
                .map_err(|ms| IpRefusal::Rate {
                    retry_after_s: ms.div_ceil(1000).max(1),
                })
        })
    }

    /// Counts an open connection from `ip`, or refuses it; a counted one must be
    /// [`closed`](Self::close) exactly once.
    pub fn open(&self, ip: IpAddr, now_ms: u64) -> Result<(), IpRefusal> {
        if !self.enabled() {
            return Ok(());
        }
        let max = self.max_open.unwrap_or(u32::MAX);
        self.with_entry(ip, now_ms, |e| {
            if e.open >= max {
                return Err(IpRefusal::Open);
            }
            e.open += 1;
            Ok(())
        })
    }

    /// An evicted entry has forgotten its count; closing one of its connections then changes
    /// nothing.
    pub fn close(&self, ip: IpAddr, now_ms: u64) {
        let mut table = self.table.borrow_mut();
        let k = key(ip);
        let Some(e) = table.peek_mut(&k) else {
            return;
        };
        e.open = e.open.saturating_sub(1);
        let rested = match (&mut e.connects, &self.connect_rate) {
            (Some(b), Some(r)) => b.is_full(r, now_ms),
            _ => true,
        };
        if e.open == 0 && rested {
            table.pop(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.table.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: usize, burst: usize, open: usize, size: usize) -> LimitsConfig {
        LimitsConfig {
            ip_connect_rate: rate,
            ip_connect_burst: burst,
            max_connections_per_ip: open,
            ip_table_size: size,
            ..LimitsConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connection_rate_per_ip_with_retry_after() {
        // 60 per minute = 1 per second, burst 2, one worker.
        let l = IpLimits::new(&limits(60, 2, 0, 16), 1);
        let a = ip("10.0.0.1");
        assert_eq!(l.admit_connect(a, 0), Ok(()));
        assert_eq!(l.admit_connect(a, 0), Ok(()));
        assert_eq!(
            l.admit_connect(a, 0),
            Err(IpRefusal::Rate { retry_after_s: 1 })
        );
        // Another address has its own bucket.
        assert_eq!(l.admit_connect(ip("10.0.0.2"), 0), Ok(()));
        assert_eq!(l.admit_connect(a, 1000), Ok(()));
    }

    #[test]
    fn the_figure_is_split_over_workers() {
        // 10 open per IP over 4 workers: 3 on this one.
        let l = IpLimits::new(&limits(0, 1, 10, 16), 4);
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(l.open(a, 0), Ok(()));
        }
        assert_eq!(l.open(a, 0), Err(IpRefusal::Open));
        l.close(a, 0);
        assert_eq!(l.open(a, 0), Ok(()));
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let l = IpLimits::new(&limits(0, 1, 1, 16), 1);
        assert_eq!(l.open(ip("2001:db8::1"), 0), Ok(()));
        assert_eq!(l.open(ip("2001:db8::ffff:2"), 0), Err(IpRefusal::Open));
        assert_eq!(l.open(ip("2001:db8:0:1::1"), 0), Ok(()));
        // A v4-mapped address is the v4 address.
        assert_eq!(l.open(ip("::ffff:10.0.0.9"), 0), Ok(()));
        assert_eq!(l.open(ip("10.0.0.9"), 0), Err(IpRefusal::Open));
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_used() {
        let l = IpLimits::new(&limits(0, 1, 1, 16), 1);
        for i in 0..16 {
            l.open(ip(&format!("10.0.1.{i}")), 0).unwrap();
        }
        // Touch the oldest, so the second oldest goes first.
        assert_eq!(l.open(ip("10.0.1.0"), 0), Err(IpRefusal::Open));
        l.open(ip("10.0.2.1"), 0).unwrap();
        assert_eq!((l.len(), l.evictions.get()), (16, 1));
        assert_eq!(l.open(ip("10.0.1.0"), 0), Err(IpRefusal::Open));
        // 10.0.1.1 was evicted: its count is forgotten.
        assert_eq!(l.open(ip("10.0.1.1"), 0), Ok(()));
        // Closing what an evicted entry counted is harmless.
        l.close(ip("10.0.1.2"), 0);
    }

    #[test]
    fn idle_entries_leave_the_table() {
        let l = IpLimits::new(&limits(60, 1, 5, 16), 1);
        let a = ip("10.0.0.1");
        l.admit_connect(a, 0).unwrap();
        l.open(a, 0).unwrap();
        l.close(a, 0);
        // Its bucket is still refilling: kept, or the client could reset it by reconnecting.
        assert_eq!(l.len(), 1);
        l.open(a, 0).unwrap();
        l.close(a, 60_000);
        assert!(l.is_empty());
    }

    #[test]
    fn off_means_no_table_at_all() {
        let l = IpLimits::new(&limits(0, 1, 0, 16), 1);
        for i in 0..100 {
            let a = ip(&format!("10.0.3.{i}"));
            assert_eq!(l.admit_connect(a, 0), Ok(()));
            assert_eq!(l.open(a, 0), Ok(()));
        }
        assert!(l.is_empty());
    }
}
