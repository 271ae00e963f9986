//! A token bucket on the worker's millisecond clock.

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_ms: f64,
    burst: f64,
}

impl Rate {
    /// `amount` per `per_ms` milliseconds, holding at most `burst` (at least 1).
    pub fn new(amount: f64, per_ms: f64, burst: f64) -> Rate {
        Rate {
            per_ms: amount / per_ms,
            burst: burst.max(1.0),
        }
    }

    /// What a full bucket holds.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Milliseconds until a bucket at `level` is back at `target`.
    fn ms_until(&self, level: f64, target: f64) -> u64 {
        ((target - level) / self.per_ms).ceil().max(0.0) as u64
    }
}

/// Its level may go below zero: a read is charged after it happened, and the debt is what
/// the connection waits off before its next read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    level: f64,
    last_ms: u64,
}

impl Bucket {
    pub fn full(rate: &Rate, now_ms: u64) -> Bucket {
        Bucket {
            level: rate.burst,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: &Rate, now_ms: u64) {
        // The clock is coarse: most reads see the same millisecond and need no refill.
        if now_ms <= self.last_ms {
            return;
        }
        let elapsed = (now_ms - self.last_ms) as f64;
        self.level = (self.level + elapsed * rate.per_ms).min(rate.burst);
        self.last_ms = now_ms;
    }

    /// Takes `n` whatever the level and returns how long until the level is back at zero.
    pub fn charge(&mut self, rate: &Rate, n: f64, now_ms: u64) -> u64 {
        self.refill(rate, now_ms);
        self.level -= n;
        // The common case on the forwarding path: no debt, no division.
        if self.level >= 0.0 {
            return 0;
        }
        rate.ms_until(self.level, 0.0)
    }

    /// Takes one if one is there; otherwise leaves the bucket alone (a refused attempt costs
    /// nothing) and says how long until one is.
    pub fn try_take_one(&mut self, rate: &Rate, now_ms: u64) -> Result<(), u64> {
        self.refill(rate, now_ms);
        if self.level >= 1.0 {
            self.level -= 1.0;
            Ok(())
        } else {
            Err(rate.ms_until(self.level, 1.0).max(1))
        }
    }

    /// What the bucket holds at `now_ms`, refilled up to then (to carry it elsewhere).
    pub fn tokens(&mut self, rate: &Rate, now_ms: u64) -> f64 {
        self.refill(rate, now_ms);
        self.level
    }

    /// A bucket that held `tokens` `rested_ms` ago, on a clock now at `now_ms`: refilled at
    /// `rate` for the time it rested, and never outside `0..=burst` (carried state is not
    /// trusted to grant more than a new bucket would).
    pub fn carried(rate: &Rate, tokens: f64, rested_ms: u64, now_ms: u64) -> Bucket {
        Bucket {
            level: (tokens + rested_ms as f64 * rate.per_ms).clamp(0.0, rate.burst),
            last_ms: now_ms,
        }
    }

    /// Whether the bucket is full again (its entry then says nothing worth keeping).
    pub fn is_full(&mut self, rate: &Rate, now_ms: u64) -> bool {
        self.refill(rate, now_ms);
        self.level >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        // 10 per second, burst 3.
        let rate = Rate::new(10.0, 1000.0, 3.0);
        let mut b = Bucket::full(&rate, 0);
        for _ in 0..3 {
            assert_eq!(b.try_take_one(&rate, 0), Ok(()));
        }
        assert_eq!(b.try_take_one(&rate, 0), Err(100));
        assert_eq!(b.try_take_one(&rate, 50), Err(50));
        assert_eq!(b.try_take_one(&rate, 100), Ok(()));
        // Never above the burst, however long it rests.
        assert!(b.is_full(&rate, 1_000_000));
        for _ in 0..3 {
            assert_eq!(b.try_take_one(&rate, 1_000_000), Ok(()));
        }
        assert!(b.try_take_one(&rate, 1_000_000).is_err());
    }

    #[test]
    fn charging_runs_into_debt_and_says_how_long_to_wait() {
        // 1000 bytes per second, burst 500.
        let rate = Rate::new(1000.0, 1000.0, 500.0);
        let mut b = Bucket::full(&rate, 0);
        assert_eq!(b.charge(&rate, 400.0, 0), 0);
        assert_eq!(b.charge(&rate, 1100.0, 0), 1000);
        // Half the debt is paid after half the wait.
        assert_eq!(b.charge(&rate, 0.0, 500), 500);
        assert_eq!(b.charge(&rate, 0.0, 1000), 0);
    }

    #[test]
    fn a_carried_bucket_refills_for_the_time_it_rested_within_its_bounds() {
        // 1 per second, burst 5.
        let rate = Rate::new(1.0, 1000.0, 5.0);
        let mut b = Bucket::full(&rate, 0);
        for _ in 0..5 {
            b.try_take_one(&rate, 0).unwrap();
        }
        assert_eq!(b.tokens(&rate, 500), 0.5);
        // On another clock, 2 s later: 2.5, so two connections and not a third.
        let mut c = Bucket::carried(&rate, 0.5, 2000, 7);
        assert_eq!(c.try_take_one(&rate, 7), Ok(()));
        assert_eq!(c.try_take_one(&rate, 7), Ok(()));
        assert_eq!(c.try_take_one(&rate, 7), Err(500));
        // Never above the burst nor below zero, whatever was carried.
        assert!(Bucket::carried(&rate, 1e9, 0, 0).is_full(&rate, 0));
        let mut low = Bucket::carried(&rate, -1e9, 0, 0);
        assert_eq!(low.tokens(&rate, 0), 0.0);
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let rate = Rate::new(1.0, 1.0, 5.0);
        let mut b = Bucket::full(&rate, 100);
        b.charge(&rate, 5.0, 100);
        assert_eq!(b.charge(&rate, 0.0, 50), 0);
        assert!(b.try_take_one(&rate, 50).is_err());
    }
}
