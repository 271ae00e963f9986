//! Counters and latency histograms. Each core owns its own (plain cells and a histogram
//! behind a `RefCell`: no sharing on the forwarding path). A scrape asks every core for a
//! snapshot over a channel and merges them off the hot path. `CoreGauges` are the two figures
//! `/health` reads without a scrape, written by their core when a connection opens or closes,
//! and the core's heartbeat, stamped by its tick, which the watchdog (server::watchdog) reads.
#![forbid(unsafe_code)]

pub(crate) mod access;
pub(crate) mod counters;
pub(crate) mod histograms;
pub(crate) mod process;
pub(crate) mod prom;
pub(crate) mod proxy;
pub(crate) mod reload;
pub(crate) mod render;
pub(crate) mod sizes;
pub(crate) mod snapshot;
pub(crate) mod upgrade;

pub use counters::{bump, CoreStats, RefusedStatus};
pub use histograms::{CoreHistograms, Latency};
pub use reload::ReloadStats;
pub use sizes::MessageSizes;
pub use snapshot::CoreSnapshot;
pub use upgrade::UpgradeStats;

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct CoreGauges {
    connections: AtomicU64,
    sessions: AtomicU64,
    /// When the core's tick last ran, in ms since the server started (its clock's time).
    heartbeat_ms: AtomicU64,
    /// Tunnel bytes spliced by this core at the last bandwidth sample, when it was taken, and
    /// the rate between the last two samples (bytes per second, both ways): what `/fleet`
    /// shows for a node without a cluster, where no heartbeat measures it.
    tunnel_bytes: AtomicU64,
    tunnel_sampled_ms: AtomicU64,
    tunnel_bandwidth: AtomicU64,
}

/// The shortest time between two tunnel bandwidth samples.
pub const TUNNEL_SAMPLE_MS: u64 = 1000;

/// Bytes per second between two samples of a byte count (0 when no time passed).
pub fn rate_between(before: (u64, u64), after: (u64, u64)) -> u64 {
    let ((bytes0, ms0), (bytes1, ms1)) = (before, after);
    match ms1.checked_sub(ms0) {
        Some(ms) if ms > 0 => bytes1.saturating_sub(bytes0).saturating_mul(1000) / ms,
        _ => 0,
    }
}

impl CoreGauges {
    pub fn set(&self, connections: u64, sessions: u64) {
        self.connections.store(connections, Ordering::Relaxed);
        self.sessions.store(sessions, Ordering::Relaxed);
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Once per tick: proves the core's tasks still run.
    pub fn beat(&self, now_ms: u64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_beat_ms(&self) -> u64 {
        self.heartbeat_ms.load(Ordering::Relaxed)
    }

    /// Once per tick, with the tunnel bytes this core spliced so far: at most once per
    /// [`TUNNEL_SAMPLE_MS`] the rate since the last sample becomes its tunnel bandwidth.
    pub fn sample_tunnel_bytes(&self, bytes: u64, now_ms: u64) {
        let before = (
            self.tunnel_bytes.load(Ordering::Relaxed),
            self.tunnel_sampled_ms.load(Ordering::Relaxed),
        );
        if now_ms.saturating_sub(before.1) < TUNNEL_SAMPLE_MS {
            return;
        }
        let rate = rate_between(before, (bytes, now_ms));
        self.tunnel_bandwidth.store(rate, Ordering::Relaxed);
        self.tunnel_bytes.store(bytes, Ordering::Relaxed);
        self.tunnel_sampled_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Bytes per second through this core's tunnels over its last sample (about a second).
    pub fn tunnel_bandwidth(&self) -> u64 {
        self.tunnel_bandwidth.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tunnel_rate_tests {
    use super::*;

    #[test]
    fn the_rate_is_bytes_per_second_between_samples() {
        assert_eq!(rate_between((1_000, 1_000), (501_000, 2_000)), 500_000);
        assert_eq!(rate_between((0, 0), (3_000, 1_500)), 2_000);
        // No time passed, or a counter that went back (cannot, but must not wrap).
        assert_eq!(rate_between((5, 100), (10, 100)), 0);
        assert_eq!(rate_between((10, 100), (5, 200)), 0);
    }

    #[test]
    fn a_core_samples_at_most_once_a_second() {
        let g = CoreGauges::default();
        g.sample_tunnel_bytes(1_000, 500);
        assert_eq!(g.tunnel_bandwidth(), 0, "too soon after start");
        g.sample_tunnel_bytes(2_000, 1_000);
        assert_eq!(g.tunnel_bandwidth(), 2_000);
        g.sample_tunnel_bytes(10_000, 1_500);
        assert_eq!(g.tunnel_bandwidth(), 2_000, "kept until a second passed");
        g.sample_tunnel_bytes(12_000, 2_000);
        assert_eq!(g.tunnel_bandwidth(), 10_000);
        g.sample_tunnel_bytes(12_000, 3_000);
        assert_eq!(g.tunnel_bandwidth(), 0, "idle");
    }
}
