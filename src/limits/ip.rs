//! One worker's per-client-IP limits, for the addresses whose home core it is
//! ([`super::home`]): a connection rate (token bucket), a count of open connections and a
//! count of unfinished handshakes, each with the whole configured figure. The table is
//! bounded: past `limits.ip_table_size` entries the least recently used one is evicted, so a
//! client cycling through addresses costs memory only up to the bound. IPv6 clients are keyed
//! by their /64, the block one host usually holds.

use super::home::IpCharge;
use super::saved::SavedBucket;
use super::{Bucket, Rate};
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
    handshakes: u32,
}

pub struct IpLimits {
    /// The core these limits live on: charges are given back here.
    home: usize,
    table: RefCell<LruCache<IpAddr, Entry>>,
    /// The figures a reload may change (`reconfigure`); the table's size stays.
    connect_rate: Cell<Option<Rate>>,
    max_open: Cell<Option<u32>>,
    max_handshakes: Cell<Option<u32>>,
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
    /// The limits of core `home` (below `config::MAX_WORKERS`), with the whole configured
    /// figures: every address counted here has this core as its home.
    pub fn new(limits: &LimitsConfig, home: usize) -> IpLimits {
        let size = NonZeroUsize::new(limits.ip_table_size).unwrap_or(NonZeroUsize::MIN);
        let l = IpLimits {
            home,
            table: RefCell::new(LruCache::new(size)),
            connect_rate: Cell::new(None),
            max_open: Cell::new(None),
            max_handshakes: Cell::new(None),
            evictions: Cell::new(0),
        };
        l.reconfigure(limits);
        l
    }

    /// Takes the rate, counts and table size of `limits` (a reload): the next connection and
    /// handshake are checked against them. Counts already taken stay: a lower cap refuses
    /// newcomers until enough connections have ended, it closes nobody. A bucket keeps its
    /// tokens and refills at the new rate. A smaller table drops its least recently used
    /// entries at once, counted as evictions like any other.
    pub fn reconfigure(&self, limits: &LimitsConfig) {
        let size = NonZeroUsize::new(limits.ip_table_size).unwrap_or(NonZeroUsize::MIN);
        let mut table = self.table.borrow_mut();
        if table.cap() != size {
            let before = table.len();
            table.resize(size);
            let dropped = before - table.len();
            self.evictions.set(self.evictions.get() + dropped as u64);
        }
        drop(table);
        let (rate, burst) = (limits.ip_connect_rate, limits.ip_connect_burst);
        let cap = |n: usize| (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX));
        self.connect_rate
            .set((rate > 0).then(|| Rate::new(rate as f64, 60_000.0, burst as f64)));
        self.max_open.set(cap(limits.max_connections_per_ip));
        self.max_handshakes.set(cap(limits.max_handshakes_per_ip));
    }

    /// Whether any per-IP limit is on. When none is, nothing is counted and an address's home
    /// core does not matter.
    pub fn enabled(&self) -> bool {
        self.connect_rate.get().is_some()
            || self.max_open.get().is_some()
            || self.max_handshakes.get().is_some()
    }

    /// [`enabled`](Self::enabled) for `limits`, without building the tables.
    pub fn configured(limits: &LimitsConfig) -> bool {
        limits.ip_connect_rate > 0
            || limits.max_connections_per_ip > 0
            || limits.max_handshakes_per_ip > 0
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
            connects: self.connect_rate.get().map(|r| Bucket::full(&r, now_ms)),
            open: 0,
            handshakes: 0,
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
        let Some(rate) = self.connect_rate.get() else {
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

    /// Counts an open connection from `ip`, or refuses it. The count is given back when the
    /// charge is dropped (through [`close`](Self::close) on this core).
    pub fn open(&self, ip: IpAddr, now_ms: u64) -> Result<IpCharge, IpRefusal> {
        let Some(max) = self.max_open.get() else {
            return Ok(IpCharge::uncounted(ip));
        };
        self.with_entry(ip, now_ms, |e| {
            if e.open >= max {
                return Err(IpRefusal::Open);
            }
            e.open += 1;
            Ok(IpCharge::counted(ip, self.home as u16))
        })
    }

    /// Gives back one open connection of `ip`. An evicted entry has forgotten its count;
    /// closing one of its connections then changes nothing.
    pub fn close(&self, ip: IpAddr, now_ms: u64) {
        self.settle(ip, now_ms, |e| e.open = e.open.saturating_sub(1));
    }

    /// Counts a connection from `ip` that has not finished its HTTP phase, or refuses it
    /// (`false`). A counted one is ended with [`handshake_end`](Self::handshake_end).
    pub fn handshake_begin(&self, ip: IpAddr, now_ms: u64) -> bool {
        let Some(max) = self.max_handshakes.get() else {
            return true;
        };
        self.with_entry(ip, now_ms, |e| {
            let ok = e.handshakes < max;
            e.handshakes += u32::from(ok);
            ok
        })
    }

    /// Settled whether or not a limit is on now: a reload may have turned it off since this
    /// handshake was counted, and a count left behind would pin its entry.
    pub fn handshake_end(&self, ip: IpAddr, now_ms: u64) {
        self.settle(ip, now_ms, |e| {
            e.handshakes = e.handshakes.saturating_sub(1)
        });
    }

    /// Applies `f` to `ip`'s entry, then drops the entry if it no longer holds anything: no
    /// open connection, no handshake, and a full bucket (or the client could reset its bucket
    /// by reconnecting).
    fn settle(&self, ip: IpAddr, now_ms: u64, f: impl FnOnce(&mut Entry)) {
        let mut table = self.table.borrow_mut();
        let k = key(ip);
        let Some(e) = table.peek_mut(&k) else {
            return;
        };
        f(e);
        let rested = match (&mut e.connects, &self.connect_rate.get()) {
            (Some(b), Some(r)) => b.is_full(r, now_ms),
            _ => true,
        };
        if e.open == 0 && e.handshakes == 0 && rested {
            table.pop(&k);
        }
    }

    /// Every connection-rate bucket that is not full at `now_ms`, to carry across a restart
    /// or a handover (`limits::saved`). A full one is what a new entry starts with anyway.
    pub fn export(&self, now_ms: u64) -> Vec<SavedBucket> {
        let Some(rate) = self.connect_rate.get() else {
            return Vec::new();
        };
        let mut table = self.table.borrow_mut();
        // Least recently used first, so importing in this order keeps the same ones last.
        let mut out: Vec<SavedBucket> = table
            .iter_mut()
            .filter_map(|(k, e)| {
                let b = e.connects.as_mut()?;
                let tokens = b.tokens(&rate, now_ms);
                (tokens < rate.burst()).then_some(SavedBucket { key: *k, tokens })
            })
            .collect();
        out.reverse();
        out
    }

    /// Puts carried buckets back (each address's home must be this core), refilled for the
    /// `rested_ms` since they were taken, at the rate configured now. With the rate off
    /// nothing is kept; a bucket full again is not kept either. An address that already has
    /// an entry keeps the lower of the two levels. The table's bound holds as always (past it
    /// the least recently used go, counted as evictions). Returns the buckets kept.
    pub fn import(&self, saved: &[SavedBucket], rested_ms: u64, now_ms: u64) -> usize {
        let Some(rate) = self.connect_rate.get() else {
            return 0;
        };
        let mut kept = 0;
        for s in saved {
            let mut carried = Bucket::carried(&rate, s.tokens, rested_ms, now_ms);
            if carried.is_full(&rate, now_ms) {
                continue;
            }
            kept += 1;
            let level = carried.tokens(&rate, now_ms);
            self.with_entry(s.key, now_ms, |e| {
                let lower = e
                    .connects
                    .as_mut()
                    .is_some_and(|b| b.tokens(&rate, now_ms) <= level);
                if !lower {
                    e.connects = Some(carried);
                }
            });
        }
        kept
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
            max_handshakes_per_ip: 0,
            ip_table_size: size,
            ..LimitsConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Opens and keeps the count; these tests give it back with `close` themselves (no
    /// worker routes dropped charges on a test thread).
    fn open(l: &IpLimits, a: IpAddr) -> Result<(), IpRefusal> {
        l.open(a, 0).map(std::mem::forget)
    }

    #[test]
    fn connection_rate_per_ip_with_retry_after() {
        // 60 per minute = 1 per second, burst 2.
        let l = IpLimits::new(&limits(60, 2, 0, 16), 0);
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
    fn the_whole_figure_holds_on_the_home_core() {
        // Before, each of W workers held ceil(figure / W): 3 of 10 with 4 workers.
        let l = IpLimits::new(&limits(0, 1, 10, 16), 3);
        let a = ip("10.0.0.1");
        for _ in 0..10 {
            assert_eq!(open(&l, a), Ok(()));
        }
        assert_eq!(open(&l, a), Err(IpRefusal::Open));
        l.close(a, 0);
        assert_eq!(open(&l, a), Ok(()));
    }

    #[test]
    fn handshakes_per_ip_are_counted_apart_from_open_connections() {
        let cfg = LimitsConfig {
            max_handshakes_per_ip: 2,
            ..limits(0, 1, 1, 16)
        };
        let l = IpLimits::new(&cfg, 0);
        let a = ip("10.0.0.1");
        assert!(l.handshake_begin(a, 0));
        assert!(l.handshake_begin(a, 0));
        assert!(!l.handshake_begin(a, 0));
        assert!(l.handshake_begin(ip("10.0.0.2"), 0));
        // An open connection does not take a handshake's place, nor the other way round.
        assert_eq!(open(&l, a), Ok(()));
        l.handshake_end(a, 0);
        assert!(l.handshake_begin(a, 0));
        l.handshake_end(a, 0);
        l.handshake_end(a, 0);
        l.close(a, 0);
        l.handshake_end(ip("10.0.0.2"), 0);
        assert!(l.is_empty());
        // Off: nothing counted, no entry.
        let off = IpLimits::new(&limits(0, 1, 0, 16), 0);
        for _ in 0..100 {
            assert!(off.handshake_begin(a, 0));
        }
        assert!(off.is_empty() && !off.enabled() && !IpLimits::configured(&limits(0, 1, 0, 16)));
        assert!(IpLimits::configured(&cfg) && l.enabled());
    }

    #[test]
    fn a_reload_changes_the_figures_and_keeps_the_counts() {
        let l = IpLimits::new(&limits(0, 1, 0, 16), 0);
        let a = ip("10.0.0.1");
        assert!(!l.enabled());
        assert_eq!(open(&l, a), Ok(()), "uncounted: no limit yet");
        // On: 60 per minute with a burst of 1, and 2 open connections.
        l.reconfigure(&limits(60, 1, 2, 16));
        assert!(l.enabled());
        assert_eq!(l.admit_connect(a, 0), Ok(()));
        assert_eq!(
            l.admit_connect(a, 0),
            Err(IpRefusal::Rate { retry_after_s: 1 })
        );
        assert_eq!(open(&l, a), Ok(()));
        assert_eq!(open(&l, a), Ok(()));
        assert_eq!(open(&l, a), Err(IpRefusal::Open));
        // Lower: the two open stay counted, a newcomer is refused until they end.
        l.reconfigure(&limits(60, 1, 1, 16));
        assert_eq!(open(&l, a), Err(IpRefusal::Open));
        l.close(a, 0);
        assert_eq!(open(&l, a), Err(IpRefusal::Open));
        l.close(a, 0);
        assert_eq!(open(&l, a), Ok(()));
        // A smaller table drops the least recently used entries, counted.
        for i in 0..10 {
            l.admit_connect(ip(&format!("10.0.1.{i}")), 0).unwrap();
        }
        assert_eq!(l.len(), 11);
        l.reconfigure(&limits(60, 1, 1, 4));
        assert_eq!((l.len(), l.evictions.get()), (4, 7));
        // Off again: nothing refused.
        l.reconfigure(&limits(0, 1, 0, 16));
        assert!(!l.enabled());
        assert_eq!(l.admit_connect(a, 0), Ok(()));
        assert_eq!(open(&l, a), Ok(()));
    }

    #[test]
    fn a_handshake_counted_before_a_reload_turned_the_limit_off_is_settled() {
        let cfg = LimitsConfig {
            max_handshakes_per_ip: 1,
            ..limits(0, 1, 0, 16)
        };
        let l = IpLimits::new(&cfg, 0);
        let a = ip("10.0.0.1");
        assert!(l.handshake_begin(a, 0));
        l.reconfigure(&limits(0, 1, 0, 16));
        l.handshake_end(a, 0);
        assert!(
            l.is_empty(),
            "the entry is not pinned by a count left behind"
        );
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let l = IpLimits::new(&limits(0, 1, 1, 16), 0);
        assert_eq!(open(&l, ip("2001:db8::1")), Ok(()));
        assert_eq!(open(&l, ip("2001:db8::ffff:2")), Err(IpRefusal::Open));
        assert_eq!(open(&l, ip("2001:db8:0:1::1")), Ok(()));
        // A v4-mapped address is the v4 address.
        assert_eq!(open(&l, ip("::ffff:10.0.0.9")), Ok(()));
        assert_eq!(open(&l, ip("10.0.0.9")), Err(IpRefusal::Open));
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_used() {
        let l = IpLimits::new(&limits(0, 1, 1, 16), 0);
        for i in 0..16 {
            open(&l, ip(&format!("10.0.1.{i}"))).unwrap();
        }
        // Touch the oldest, so the second oldest goes first.
        assert_eq!(open(&l, ip("10.0.1.0")), Err(IpRefusal::Open));
        open(&l, ip("10.0.2.1")).unwrap();
        assert_eq!((l.len(), l.evictions.get()), (16, 1));
        assert_eq!(open(&l, ip("10.0.1.0")), Err(IpRefusal::Open));
        // 10.0.1.1 was evicted: its count is forgotten.
        assert_eq!(open(&l, ip("10.0.1.1")), Ok(()));
        // Closing what an evicted entry counted is harmless.
        l.close(ip("10.0.1.2"), 0);
    }

    #[test]
    fn idle_entries_leave_the_table() {
        let l = IpLimits::new(&limits(60, 1, 5, 16), 0);
        let a = ip("10.0.0.1");
        l.admit_connect(a, 0).unwrap();
        open(&l, a).unwrap();
        l.close(a, 0);
        // Its bucket is still refilling: kept, or the client could reset it by reconnecting.
        assert_eq!(l.len(), 1);
        open(&l, a).unwrap();
        l.close(a, 60_000);
        assert!(l.is_empty());
    }

    #[test]
    fn buckets_carried_out_and_back_keep_an_addresss_spent_budget() {
        // 1 per second, burst 3; 10.0.0.1 spent its burst, 10.0.0.2 one of it, 10.0.0.3
        // holds an open connection and a full bucket (not carried).
        let l = IpLimits::new(&limits(60, 3, 5, 16), 0);
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        for _ in 0..3 {
            l.admit_connect(a, 0).unwrap();
        }
        l.admit_connect(b, 0).unwrap();
        open(&l, c).unwrap();
        assert_eq!(l.len(), 3);
        let saved = l.export(0);
        assert_eq!(saved.len(), 2, "{saved:?}");
        // Before: a new process started with empty tables, so `a` had its whole burst again.
        let fresh = IpLimits::new(&limits(60, 3, 0, 16), 0);
        assert_eq!(fresh.import(&saved, 0, 5), 2);
        assert_eq!(
            fresh.admit_connect(a, 5),
            Err(IpRefusal::Rate { retry_after_s: 1 })
        );
        for _ in 0..2 {
            fresh.admit_connect(b, 5).unwrap();
        }
        assert!(fresh.admit_connect(b, 5).is_err());
        // Time at rest refills: 1.5 s later `a` has one, and `b` (2 + 1.5 of 3) is full
        // again and not kept.
        let later = IpLimits::new(&limits(60, 3, 0, 16), 0);
        assert_eq!(later.import(&saved, 1500, 0), 1);
        assert_eq!(later.admit_connect(a, 0), Ok(()));
        assert!(later.admit_connect(a, 0).is_err());
        // With the rate off now, nothing is carried in; nothing is carried out either.
        let off = IpLimits::new(&limits(0, 3, 5, 16), 0);
        assert_eq!(off.import(&saved, 0, 0), 0);
        assert!(off.is_empty() && off.export(0).is_empty());
    }

    #[test]
    fn an_import_keeps_the_table_bound_and_the_lower_level() {
        let l = IpLimits::new(&limits(60, 3, 0, 16), 0);
        let saved: Vec<SavedBucket> = (0..40)
            .map(|i| SavedBucket {
                key: ip(&format!("10.0.9.{i}")),
                tokens: 0.0,
            })
            .collect();
        assert_eq!(l.import(&saved, 0, 0), 40);
        assert_eq!((l.len(), l.evictions.get()), (16, 24));
        // The newest are the ones kept.
        assert!(l.admit_connect(ip("10.0.9.39"), 0).is_err());
        assert_eq!(l.admit_connect(ip("10.0.9.0"), 0), Ok(()));
        // An address spent lower here than what is carried keeps its own level.
        let spent = ip("10.0.9.38");
        let more = [SavedBucket {
            key: spent,
            tokens: 2.0,
        }];
        l.import(&more, 0, 0);
        assert!(l.admit_connect(spent, 0).is_err());
    }

    #[test]
    fn off_means_no_table_at_all() {
        let l = IpLimits::new(&limits(0, 1, 0, 16), 0);
        for i in 0..100 {
            let a = ip(&format!("10.0.3.{i}"));
            assert_eq!(l.admit_connect(a, 0), Ok(()));
            assert_eq!(open(&l, a), Ok(()));
        }
        assert!(l.is_empty());
    }
}
