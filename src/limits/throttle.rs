//! Per-connection message and byte rates. A connection over its rate is not read again until
//! its buckets have paid off the debt: its data waits in its own socket buffer and then in
//! the client, never dropped and never held by the relay.

use super::{Bucket, Rate};
use crate::config::LimitsConfig;

#[derive(Debug, Clone, Copy)]
struct Limited {
    rate: Rate,
    bucket: Bucket,
}

impl Limited {
    fn new(per_second: usize, burst: usize, now_ms: u64) -> Option<Limited> {
        (per_second > 0).then(|| {
            let rate = Rate::new(per_second as f64, 1000.0, burst as f64);
            Limited {
                bucket: Bucket::full(&rate, now_ms),
                rate,
            }
        })
    }

    fn charge(&mut self, n: f64, now_ms: u64) -> u64 {
        self.bucket.charge(&self.rate, n, now_ms)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    messages: Option<Limited>,
    bytes: Option<Limited>,
}

impl Throttle {
    /// Whether either rate is on; when neither is, a connection pays nothing per read.
    pub fn configured(limits: &LimitsConfig) -> bool {
        limits.message_rate > 0 || limits.byte_rate > 0
    }

    /// `None` when neither rate is configured.
    pub fn new(limits: &LimitsConfig, now_ms: u64) -> Option<Throttle> {
        let messages = Limited::new(limits.message_rate, limits.message_burst, now_ms);
        let bytes = Limited::new(limits.byte_rate, limits.byte_burst, now_ms);
        (messages.is_some() || bytes.is_some()).then_some(Throttle { messages, bytes })
    }

    /// Charges what one read carried; returns how long to wait before the next read.
    pub fn charge(&mut self, messages: u32, bytes: u64, now_ms: u64) -> u64 {
        let m = self
            .messages
            .as_mut()
            .map_or(0, |l| l.charge(messages as f64, now_ms));
        let b = self
            .bytes
            .as_mut()
            .map_or(0, |l| l.charge(bytes as f64, now_ms));
        m.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(message_rate: usize, byte_rate: usize) -> LimitsConfig {
        LimitsConfig {
            message_rate,
            message_burst: 10,
            byte_rate,
            byte_burst: 1000,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn off_unless_configured() {
        assert!(Throttle::new(&limits(0, 0), 0).is_none());
        assert!(Throttle::new(&limits(5, 0), 0).is_some());
        assert!(Throttle::new(&limits(0, 5), 0).is_some());
    }

    #[test]
    fn the_slower_of_the_two_rates_decides() {
        // 100 messages/s (burst 10), 1000 bytes/s (burst 1000).
        let mut t = Throttle::new(&limits(100, 1000), 0).unwrap();
        assert_eq!(t.charge(10, 1000, 0), 0);
        // 5 messages over: 50 ms; 500 bytes over: 500 ms.
        assert_eq!(t.charge(5, 500, 0), 500);
        assert_eq!(t.charge(0, 0, 500), 0);
    }
}
