//! The circuit breaker around Redis: after a few failures in a row the node stops trying for
//! a while (doubling, capped), then lets one attempt through. A Redis that is down costs the
//! node one failed attempt per wait, not one per heartbeat, and the state is shown in /stats.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Redis answers: every heartbeat goes through.
    Closed,
    /// Too many failures: nothing is tried before `until`.
    Open { until: Instant },
    /// The wait is over: the next attempt decides.
    HalfOpen,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    failures: u32,
    threshold: u32,
    wait: Duration,
    base: Duration,
    max: Duration,
}

impl Breaker {
    /// Opens after `threshold` failures in a row, first for `base`, doubling up to `max`.
    pub fn new(threshold: u32, base: Duration, max: Duration) -> Breaker {
        Breaker {
            state: State::Closed,
            failures: 0,
            threshold: threshold.max(1),
            wait: base,
            base,
            max: max.max(base),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether an attempt may go out now.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Open { until } if now < until => false,
            State::Open { .. } => {
                self.state = State::HalfOpen;
                true
            }
            _ => true,
        }
    }

    pub fn success(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
        self.wait = self.base;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        let trip = self.state == State::HalfOpen || self.failures >= self.threshold;
        if trip {
            self.state = State::Open {
                until: now + self.wait,
            };
            self.wait = (self.wait * 2).min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_waits_longer_each_time_and_closes_on_success() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut b = Breaker::new(3, s(1), s(4));
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.failure(t0);
        }
        assert_eq!(b.state(), State::Closed);
        b.failure(t0);
        assert_eq!(b.state(), State::Open { until: t0 + s(1) });
        assert!(!b.allow(t0));
        // After the wait one attempt goes through; failing it reopens for twice as long.
        assert!(b.allow(t0 + s(1)));
        assert_eq!(b.state(), State::HalfOpen);
        b.failure(t0 + s(1));
        assert_eq!(b.state(), State::Open { until: t0 + s(3) });
        assert!(b.allow(t0 + s(3)));
        b.failure(t0 + s(3));
        assert_eq!(b.state(), State::Open { until: t0 + s(7) }, "capped at 4 s");
        assert!(b.allow(t0 + s(7)));
        b.success();
        assert_eq!(b.state(), State::Closed);
        // Back to the first wait.
        for _ in 0..3 {
            b.failure(t0 + s(8));
        }
        assert_eq!(b.state(), State::Open { until: t0 + s(9) });
    }
}
