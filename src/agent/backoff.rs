//! How long the agent waits before it reconnects: exponential, capped, with jitter, so that
//! a relay coming back after a restart is not met by every agent at the same instant.

use crate::ws::client::Rng;
use std::time::Duration;

/// "Equal jitter": the wait for attempt `n` is drawn from `[b/2, b]` where `b` is the
/// initial wait doubled `n` times and capped. Half the window keeps a floor, so a flapping
/// relay never sees a burst of near-zero waits; the other half spreads agents apart.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, rng: Rng) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng,
        }
    }

    /// The window's top for the next attempt.
    fn ceiling(&self) -> Duration {
        // 2^20 times any sane initial wait is past any cap; stop doubling there.
        let factor = 1u32 << self.attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let top = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = top / 2;
        let spread = (top - half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.rng.next_u64() % (spread + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the initial wait, after a connection that held.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_their_window_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), Rng::new(1));
        for top in [100, 200, 400, 800, 1000, 1000, 1000] {
            let d = b.next_delay();
            assert!(
                d >= ms(top / 2) && d <= ms(top),
                "{d:?} outside [{}, {top}] ms",
                top / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        // Many attempts never overflow.
        for _ in 0..100 {
            assert!(b.next_delay() <= ms(1000));
        }
    }

    #[test]
    fn agents_started_together_spread_apart() {
        let firsts: std::collections::HashSet<Duration> = (0..20)
            .map(|seed| {
                let mut b = Backoff::new(
                    Duration::from_secs(1),
                    Duration::from_secs(8),
                    Rng::new(seed),
                );
                b.next_delay();
                b.next_delay()
            })
            .collect();
        assert!(firsts.len() > 15, "only {} distinct waits", firsts.len());
    }
}
