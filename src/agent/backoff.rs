//! How long the agent and the tunnel client wait before they reconnect: exponential, capped,
//! with jitter, so that a relay coming back after a restart is not met by every client at
//! the same instant.

use crate::ws::client::Rng;
use std::time::Duration;

/// Where in the window `[0, b]` a wait is drawn, `b` being the initial wait doubled once per
/// failed attempt and capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// `[b/2, b]`: half the window is a floor, so one agent on a flapping relay never
    /// retries in a burst of near-zero waits. The bridge agent's: one per session, and the
    /// relay replaces an older one, so there is no crowd to spread.
    Equal,
    /// `[0, b]`: the whole window is random, which spreads a crowd of clients that lost the
    /// same relay at the same instant the most evenly (the fewest collisions for the total
    /// wait); the tunnel client's, since one relay may hold many tunnels.
    Full,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    jitter: Jitter,
    rng: Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, jitter: Jitter, rng: Rng) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            jitter,
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
        let floor = match self.jitter {
            Jitter::Equal => top / 2,
            Jitter::Full => Duration::ZERO,
        };
        let spread = (top - floor).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.rng.next_u64() % (spread + 1)
        };
        floor + Duration::from_nanos(jitter)
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
        let mut b = Backoff::new(ms(100), ms(1000), Jitter::Equal, Rng::new(1));
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
                    Jitter::Equal,
                    Rng::new(seed),
                );
                b.next_delay();
                b.next_delay()
            })
            .collect();
        assert!(firsts.len() > 15, "only {} distinct waits", firsts.len());
    }

    #[test]
    fn full_jitter_draws_across_the_whole_window() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(800), Jitter::Full, Rng::new(7));
        for top in [100, 200, 400, 800, 800] {
            let d = b.next_delay();
            assert!(d <= ms(top), "{d:?} over {top} ms");
        }
        // Over many draws of one window, waits fall in its lower half as well as its upper
        // half (equal jitter never goes under half), and their mean is near the middle.
        let waits: Vec<Duration> = (0..2000).map(|_| b.next_delay()).collect();
        let low = waits.iter().filter(|d| **d < ms(400)).count();
        assert!(
            (800..1200).contains(&low),
            "{low} of 2000 under half the window"
        );
        assert!(waits.iter().any(|d| *d < ms(80)), "never near zero");
        let mean = waits.iter().sum::<Duration>() / 2000;
        assert!(mean > ms(360) && mean < ms(440), "mean {mean:?}");
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }
}
