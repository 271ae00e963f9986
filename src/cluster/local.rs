//! What one worker does with its cluster state (`fleet::Local`, defined below the worker's
//! context that holds it): counting the pairs a seated peer completes, and ending what ties
//! this core to nodes that left the fleet.

use crate::context::Core;
use crate::fleet::carry::Carry;
use crate::fleet::local::{Local, Origin};
use crate::stats::bump;
use crate::ws::CloseCode;
use std::rc::Rc;

impl Local {
    /// Records a peer seated here; when it completes a pair, counts the pair as cross-node
    /// (either peer carried) and cross-region (their regions differ).
    pub fn joined(&self, core: &Core, id: u64, origin: Origin, other: Option<u64>) {
        let mut origins = self.origins.borrow_mut();
        if let Some(o) = other.and_then(|o| origins.get(&o)) {
            if o.via.is_some() || origin.via.is_some() {
                bump(&core.stats.cluster_cross_node_pairs, 1);
            }
            if o.region != origin.region {
                bump(&core.stats.cluster_cross_region_pairs, 1);
            }
        }
        if origin.via.is_some() {
            bump(&core.stats.cluster_carried_in, 1);
        }
        origins.insert(id, origin);
    }

    /// Ends what ties this core to nodes that left the fleet: links carried to them get a
    /// close (1012) to their client; peers carried here from them are dropped (their link
    /// is dead or about to be).
    pub fn nodes_gone(&self, core: &Core, gone: &[String]) {
        let carries: Vec<Rc<Carry>> = self
            .carries
            .borrow()
            .values()
            .filter(|c| gone.iter().any(|g| **g == *c.owner))
            .cloned()
            .collect();
        for c in carries {
            c.end(CloseCode::SERVICE_RESTART);
        }
        let from_gone: Vec<u64> = self
            .origins
            .borrow()
            .iter()
            .filter(|(_, o)| {
                o.via
                    .as_deref()
                    .is_some_and(|v| gone.iter().any(|g| g == v))
            })
            .map(|(id, _)| *id)
            .collect();
        for p in core.registry.peers() {
            if from_gone.contains(&p.id) {
                bump(&core.stats.cluster_peers_dropped_node_gone, 1);
                p.sock.abort();
            }
        }
    }
}
