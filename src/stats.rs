//! Counters. Each core owns its `CoreStats` (plain cells, no sharing on the forwarding
//! path); `CoreGauges` are the few figures other threads read (for /health), written by
//! their core only when a connection or session opens or closes.

use std::cell::Cell;
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

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Per-core event counters.
        #[derive(Default, Debug)]
        pub struct CoreStats { $(pub $name: Cell<u64>,)* }

        impl CoreStats {
            /// Name and value of every counter, for the stats endpoints.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.get()),)*]
            }
        }
    };
}

counters!(
    connections_accepted,
    connections_closed,
    handshakes_refused,
    handoffs_out,
    handoffs_in,
    handoffs_refused,
    messages_forwarded,
    messages_dropped_peer_absent,
    bytes_forwarded,
    pings_sent,
    peers_dropped_keepalive,
    peers_replaced,
    sessions_idle_closed,
    protocol_errors,
);

/// Adds `n` to a counter.
pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}
