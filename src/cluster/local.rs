//! What one worker keeps about the cluster: the peers it carries to other nodes, where the
//! peers seated here came from (for cross-node and cross-region counts, and to end peers of a
//! node that left), and the internal listener's openings not yet proved. Only its own thread
//! touches it; every map stays empty on a single node.

use super::carry::Carry;
use super::pending::PendingLinks;
use crate::runtime::Core;
use crate::stats::bump;
use crate::ws::CloseCode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Where a peer seated here came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The node that carried it here; `None` when it connected to this node.
    pub via: Option<Rc<str>>,
    pub region: Rc<str>,
}

#[derive(Default)]
pub struct Local {
    /// Carried to another node, by connection id.
    pub carries: RefCell<HashMap<u64, Rc<Carry>>>,
    /// Seated here, by connection id (cluster mode only).
    pub origins: RefCell<HashMap<u64, Origin>>,
    /// Openings on the internal listener that have not proved the secret yet.
    pub pending: RefCell<PendingLinks>,
}

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

    pub fn left(&self, id: u64) {
        let mut origins = self.origins.borrow_mut();
        if !origins.is_empty() {
            origins.remove(&id);
        }
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

    /// Ends every carried link with `code` (the node is stopping: 1001).
    pub fn end_all(&self, code: CloseCode) {
        let carries: Vec<Rc<Carry>> = self.carries.borrow().values().cloned().collect();
        for c in carries {
            c.end(code);
        }
    }

    pub fn carry_count(&self) -> usize {
        self.carries.borrow().len()
    }

    /// The links carried now (none on a single node: no allocation then).
    pub fn carried(&self) -> Vec<Rc<Carry>> {
        self.carries.borrow().values().cloned().collect()
    }

    /// Pooled buffers held by carried links' pending writes (for /stats).
    pub fn pinned(&self) -> usize {
        self.carries.borrow().values().map(|c| c.pinned()).sum()
    }
}
