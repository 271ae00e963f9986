//! `tunnel.max_bandwidth`: a token bucket per tunnel, shared by both directions of all its
//! connections. A splice asks for up to one slice and gets what the bucket holds; an empty
//! bucket makes it wait for the next byte's worth of time. Nothing is dropped: the socket
//! behind is simply read later, so TCP's own flow control slows the sender. I/O-free.

use std::time::Instant;

/// Burst: at most this share of a second's worth of bytes is granted at once, so the rate
/// over a few seconds stays within a few percent of the configured one.
const BURST_DIVISOR: f64 = 10.0;

#[derive(Debug)]
pub struct Bucket {
    /// Bytes per second; 0: unlimited.
    rate: f64,
    tokens: f64,
    capacity: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: usize, now: Instant) -> Bucket {
        let rate = rate as f64;
        let capacity = (rate / BURST_DIVISOR).max(1.0);
        Bucket {
            rate,
            tokens: capacity,
            capacity,
            at: now,
        }
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0.0
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * self.rate).min(self.capacity);
        self.at = now;
    }

    /// Up to `want` bytes now, or how long to wait before asking again.
    pub fn take(&mut self, want: u32, now: Instant) -> Result<u32, std::time::Duration> {
        if self.unlimited() {
            return Ok(want);
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            let n = (self.tokens.floor() as u64).min(u64::from(want)) as u32;
            self.tokens -= f64::from(n);
            return Ok(n);
        }
        let wait = (1.0 - self.tokens) / self.rate;
        Err(std::time::Duration::from_secs_f64(wait.max(0.001)))
    }

    /// Gives back what a grant did not use.
    pub fn put_back(&mut self, n: u32) {
        if !self.unlimited() {
            self.tokens = (self.tokens + f64::from(n)).min(self.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grants_the_rate_over_time() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100_000, t0);
        let mut granted = 0u64;
        let mut now = t0;
        // Ask every millisecond for 5 s.
        for _ in 0..5000 {
            if let Ok(n) = b.take(65536, now) {
                granted += u64::from(n);
            }
            now += Duration::from_millis(1);
        }
        // 5 s at 100 kB/s, plus the first burst (a tenth of a second).
        assert!((500_000..=510_000).contains(&granted), "{granted}");
    }

    #[test]
    fn empty_says_how_long_and_unused_comes_back() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        assert_eq!(b.take(10_000, t0), Ok(100));
        let wait = b.take(1, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(2), "{wait:?}");
        b.put_back(40);
        assert_eq!(b.take(10_000, t0), Ok(40));
        let free = Bucket::new(0, t0);
        assert!(free.unlimited());
    }
}
