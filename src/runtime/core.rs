//! What each worker owns, and the little that all workers share.

use super::clock::Clock;
use super::pool::BufPool;
use crate::config::Config;
use crate::server::handoff::Handoff;
use crate::session::Registry;
use crate::stats::{CoreGauges, CoreStats};
use local_sync::semaphore::Semaphore;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

/// Shared by all workers and read off the forwarding path only (handoff, /health).
pub struct Shared {
    pub config: Arc<Config>,
    pub started: Instant,
    pub driver: &'static str,
    pub gauges: Vec<CoreGauges>,
    pub handoff: Vec<flume::Sender<Handoff>>,
}

impl Shared {
    pub fn workers(&self) -> usize {
        self.gauges.len()
    }
}

/// One worker's world. Only its own thread touches it, so everything in it is plain cells.
pub struct Core {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub pool: BufPool,
    pub registry: Registry,
    pub clock: Clock,
    pub stats: CoreStats,
    next_id: Cell<u64>,
    /// Closed when the server shuts down; every waiter wakes with an error.
    pub shutdown: Semaphore,
}

impl Core {
    pub fn new(index: usize, shared: Arc<Shared>) -> Core {
        let cfg = &shared.config;
        Core {
            index,
            pool: BufPool::new(
                cfg.limits.read_buffer_bytes,
                cfg.limits.pool_buffers,
                cfg.limits.max_read_buffers,
            ),
            registry: Registry::default(),
            clock: Clock::new(shared.started),
            stats: CoreStats::default(),
            next_id: Cell::new(0),
            shutdown: Semaphore::new(0),
            shared,
        }
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Connection ids are unique across cores: the core index is in the low bits.
    pub fn next_conn_id(&self) -> u64 {
        let n = self.next_id.get() + 1;
        self.next_id.set(n);
        (n << 10) | self.index as u64
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_closed()
    }

    pub fn gauges(&self) -> &CoreGauges {
        &self.shared.gauges[self.index]
    }

    /// Publishes this core's connection and session counts for /health.
    pub fn publish_gauges(&self) {
        let g = self.gauges();
        g.set(
            self.registry.peer_count() as u64,
            self.registry.session_count() as u64,
        );
    }
}
