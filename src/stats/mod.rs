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
}
