//! What one worker keeps about the cluster: the peers it carries to other nodes, where the
//! peers seated here came from (for cross-node and cross-region counts, and to end peers of a
//! node that left), and the internal listener's openings not yet proved. Only its own thread
//! touches it; every map stays empty on a single node.
//!
//! The worker's context holds it (`Core::cluster_local`), so it is defined here, below the
//! context; what needs the context (`joined`, `nodes_gone`) is `cluster::local`.

use super::carry::Carry;
use super::pending::PendingLinks;
use crate::tls::LinkTls;
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
    /// The link's TLS new links use, both ways (`cluster.tls_*`; `None`: in clear). A reload
    /// replaces it; links already open keep the session they shook hands with.
    tls: RefCell<Option<LinkTls>>,
}

impl Local {
    /// With the link's TLS as the node started (`Shared::cluster_tls`).
    pub fn new(tls: Option<LinkTls>) -> Local {
        Local {
            tls: RefCell::new(tls),
            ..Local::default()
        }
    }

    /// The link's TLS for a link opening now (two reference counts: once per link).
    pub fn tls(&self) -> Option<LinkTls> {
        self.tls.borrow().clone()
    }

    /// A reload's link TLS, for links opened from now on.
    pub fn set_tls(&self, tls: Option<LinkTls>) {
        *self.tls.borrow_mut() = tls;
    }

    pub fn left(&self, id: u64) {
        let mut origins = self.origins.borrow_mut();
        if !origins.is_empty() {
            origins.remove(&id);
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
