//! Message sizes as a histogram with fixed bounds in bytes, powers of four from 64 B to
//! 16 MiB. Finding a message's bucket is a leading-zeros count and a shift; the decoder
//! counts each whole message (`count`) into its worker thread's own cells, which that core's
//! snapshot reads (`this_core`). Thread-local because each worker is one thread and owns them
//! as it owns its counters, and because the alternative, carrying the counts out of the
//! decoder in its `Outcome`, would grow every connection's task (relay::conn's 1 KiB bound)
//! by the size of the array. They are counted whether or not `stats.latency` records times.

use std::cell::Cell;

/// Upper bounds in bytes and as the `le` label; beyond the last is `+Inf`.
pub const SIZE_BOUNDS: [(u64, &str); 10] = [
    (64, "64"),
    (256, "256"),
    (1 << 10, "1024"),
    (4 << 10, "4096"),
    (16 << 10, "16384"),
    (64 << 10, "65536"),
    (256 << 10, "262144"),
    (1 << 20, "1048576"),
    (4 << 20, "4194304"),
    (16 << 20, "16777216"),
];

/// Buckets, the last one `+Inf`.
pub const SIZE_BUCKETS: usize = SIZE_BOUNDS.len() + 1;

/// The bucket of a message of `bytes`: the first bound at or above it.
#[inline]
pub fn bucket(bytes: u64) -> usize {
    // Bits needed for bytes - 1: 64 B needs 6 (bucket 0), 65..=256 need 7..8 (bucket 1), ...
    let bits = 64 - bytes.saturating_sub(1).leading_zeros() as usize;
    (bits.saturating_sub(5) / 2).min(SIZE_BUCKETS - 1)
}

/// Whole messages counted by size, for one read or one core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageSizes {
    pub counts: [u64; SIZE_BUCKETS],
    /// Their payload bytes.
    pub sum: u64,
}

impl MessageSizes {
    /// One whole message of `bytes` payload.
    #[inline]
    pub fn count(&mut self, bytes: u64) {
        self.counts[bucket(bytes)] += 1;
        self.sum += bytes;
    }

    pub fn add(&mut self, other: &MessageSizes) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }

    /// As a Prometheus histogram.
    pub fn buckets(&self) -> super::prom::Buckets {
        let labels = SIZE_BOUNDS.iter().map(|(_, l)| *l).chain(["+Inf"]);
        super::prom::Buckets {
            cumulative: super::prom::cumulate(labels, &self.counts),
            sum: self.sum as f64,
            count: self.counts.iter().sum(),
        }
    }
}

/// This worker's counts, written only by its own thread.
struct Cells {
    counts: [Cell<u64>; SIZE_BUCKETS],
    sum: Cell<u64>,
}

thread_local! {
    static CORE: Cells = const {
        Cells {
            counts: [const { Cell::new(0) }; SIZE_BUCKETS],
            sum: Cell::new(0),
        }
    };
}

/// Counts one whole data message of `bytes` payload on this worker.
#[inline]
pub fn count(bytes: u64) {
    CORE.with(|c| {
        let n = &c.counts[bucket(bytes)];
        n.set(n.get().wrapping_add(1));
        c.sum.set(c.sum.get().wrapping_add(bytes));
    });
}

/// What this worker has counted so far.
pub fn this_core() -> MessageSizes {
    CORE.with(|c| MessageSizes {
        counts: std::array::from_fn(|i| c.counts[i].get()),
        sum: c.sum.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_size_goes_to_the_first_bound_at_or_above_it() {
        for bytes in [
            0u64,
            1,
            63,
            64,
            65,
            255,
            256,
            257,
            1024,
            1025,
            16 << 20,
            (16 << 20) + 1,
            u64::MAX,
        ] {
            let want = SIZE_BOUNDS
                .iter()
                .position(|(b, _)| bytes <= *b)
                .unwrap_or(SIZE_BOUNDS.len());
            assert_eq!(bucket(bytes), want, "{bytes}");
        }
        for (b, label) in SIZE_BOUNDS {
            assert_eq!(label.parse::<u64>().unwrap(), b);
        }
    }

    proptest::proptest! {
        #[test]
        fn bucket_agrees_with_a_linear_search(bytes in 0u64..(1 << 26)) {
            let want = SIZE_BOUNDS.iter().position(|(b, _)| bytes <= *b).unwrap_or(SIZE_BOUNDS.len());
            proptest::prop_assert_eq!(bucket(bytes), want);
        }
    }

    #[test]
    fn a_thread_counts_its_own_messages() {
        let before = this_core();
        count(100);
        count(5_000);
        let after = this_core();
        assert_eq!(after.counts[1], before.counts[1] + 1);
        assert_eq!(after.counts[4], before.counts[4] + 1);
        assert_eq!(after.sum, before.sum + 5_100);
        let other = std::thread::spawn(this_core).join().unwrap();
        assert!(other.is_empty(), "another thread's cells are its own");
    }

    #[test]
    fn counts_add_and_cumulate() {
        let mut a = MessageSizes::default();
        a.count(10);
        a.count(100);
        let mut b = MessageSizes::default();
        b.count(1 << 30);
        a.add(&b);
        let h = a.buckets();
        assert_eq!(h.count, 3);
        assert_eq!(h.sum, (110 + (1u64 << 30)) as f64);
        assert_eq!(h.cumulative[0], ("64", 1));
        assert_eq!(h.cumulative[1], ("256", 2));
        assert_eq!(h.cumulative[SIZE_BOUNDS.len()], ("+Inf", 3));
    }
}
