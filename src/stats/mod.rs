//! Counters and latency histograms. Each core owns its own (plain cells and a histogram
//! behind a `RefCell`: no sharing on the forwarding path). A scrape asks every core for a
//! snapshot over a channel and merges them off the hot path. `CoreGauges` are the two figures
//! `/health` reads without a scrape, written by their core when a connection opens or closes.
#![forbid(unsafe_code)]

pub(crate) mod access;
pub(crate) mod counters;
pub(crate) mod histograms;
pub(crate) mod reload;
pub(crate) mod render;
pub(crate) mod snapshot;

pub use counters::{bump, CoreStats, RefusedStatus};
pub use histograms::{CoreHistograms, Latency};
pub use reload::ReloadStats;
pub use snapshot::CoreSnapshot;

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct CoreGauges {
    connections: AtomicU64,
    sessions: AtomicU64,
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
}
