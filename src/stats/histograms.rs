//! Per-core latency histograms, in microseconds from 1 µs to 60 s at 3 significant digits.

use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::time::{Duration, Instant};

pub const MAX_US: u64 = 60_000_000;
const SIGFIG: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// Last byte of a read holding frames to the completion of the write carrying them.
    Relay,
    /// Accept to the 101 written.
    Handshake,
    /// A bridged request sent to its agent to the agent's answer read.
    Bridge,
    /// On a carrying node: one read from either side to the end of its write to the other.
    Hop,
    /// On a carrying node: connecting to the owner and passing its challenge.
    Carry,
    /// A TLS listener's handshake, from its start (after any PROXY header) to its end.
    TlsHandshake,
}

impl Latency {
    pub const ALL: [Latency; 6] = [
        Latency::Relay,
        Latency::Handshake,
        Latency::Bridge,
        Latency::Hop,
        Latency::Carry,
        Latency::TlsHandshake,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Latency::Relay => "relay",
            Latency::Handshake => "handshake",
            Latency::Bridge => "bridge",
            Latency::Hop => "hop",
            Latency::Carry => "carry",
            Latency::TlsHandshake => "tls_handshake",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Latency::Relay => "Time from reading frames to finishing the write that forwards them.",
            Latency::Handshake => "Time from accepting a connection to writing its 101 response.",
            Latency::Bridge => {
                "Time from sending a bridged request to its agent to reading the agent's answer."
            }
            Latency::Hop => {
                "On a carrying node, time from a read to the end of its forwarding write."
            }
            Latency::Carry => {
                "On a carrying node, time to connect to the owner and pass its challenge."
            }
            Latency::TlsHandshake => {
                "Time from a TLS listener's connection's first handshake read to its end."
            }
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("static histogram bounds are valid")
}

pub struct CoreHistograms {
    hists: [RefCell<Histogram<u64>>; Latency::ALL.len()],
    /// When false nothing is recorded (`stats.latency = false`), to measure what recording costs.
    enabled: bool,
}

impl CoreHistograms {
    pub fn new(enabled: bool) -> CoreHistograms {
        CoreHistograms {
            hists: Latency::ALL.map(|_| RefCell::new(new_histogram())),
            enabled,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records the time since `since` (taken only when enabled).
    pub fn record_since(&self, which: Latency, since: Option<Instant>) {
        if let Some(t) = since {
            self.record(which, t.elapsed());
        }
    }

    /// Records a duration; values beyond the range are clamped to it.
    pub fn record(&self, which: Latency, d: Duration) {
        if self.enabled {
            let us = (d.as_micros() as u64).clamp(1, MAX_US);
            self.hists[which as usize]
                .borrow_mut()
                .saturating_record(us);
        }
    }

    pub fn snapshot(&self) -> Vec<(&'static str, Histogram<u64>)> {
        Latency::ALL
            .iter()
            .map(|l| (l.name(), self.hists[*l as usize].borrow().clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_records_when_enabled_only() {
        let on = CoreHistograms::new(true);
        on.record(Latency::Relay, Duration::from_secs(3600));
        on.record(Latency::Relay, Duration::ZERO);
        let snap = on.snapshot();
        assert_eq!(snap[0].1.len(), 2);
        assert!(snap[0].1.max() >= MAX_US * 999 / 1000);
        assert_eq!(snap[0].1.min(), 1);
        let off = CoreHistograms::new(false);
        off.record_since(Latency::Relay, Some(Instant::now()));
        assert_eq!(off.snapshot()[0].1.len(), 0);
        // Documented memory: the counts array of one histogram.
        let bytes = new_histogram().distinct_values() * 8;
        assert!(bytes < 200 << 10, "{bytes}");
    }
}
