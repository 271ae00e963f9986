//! A worker's side of a binary upgrade: its accept loops stop and start again through a
//! [`Gate`], and it carries out the upgrade thread's orders between two of its tasks.
//!
//! An accept in flight is stopped with a cancel of the operation, never by dropping it: on
//! io_uring a dropped accept that had already completed would take the connection with it
//! (its descriptor is never handed back), while a cancelled one either ends with ECANCELED or
//! returns the connection it took, which is then served as usual. So pausing loses nobody.

use crate::context::Core;
use crate::relay::handover::{self, Export, Outcome};
use monoio::io::{CancelHandle, Canceller};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// One order from the upgrade thread to a worker.
pub enum UpgradeOrder {
    /// Stop accepting, then describe every connection (`handover::export`); the share goes
    /// back with the worker's index.
    Export(flume::Sender<(usize, Export)>),
    /// The upgrade's outcome (`handover::settle`): on `Resumed` accept again. `done` gets the
    /// worker's index.
    Settle(Outcome, flume::Sender<usize>),
}

/// Orders queued per worker: the upgrade thread sends one at a time and waits for it.
pub const QUEUED: usize = 2;

/// Whether this worker's accept loops accept.
#[derive(Default)]
pub struct Gate {
    paused: Cell<bool>,
    canceller: RefCell<Canceller>,
    /// Accept loops not parked.
    running: Cell<usize>,
}

/// How often a parked loop looks whether it may accept again, and a pausing worker whether
/// every loop has parked: only while an upgrade runs.
const POLL: Duration = Duration::from_millis(2);

impl Gate {
    /// An accept loop starts.
    pub fn enter(&self) {
        self.running.set(self.running.get() + 1);
    }

    /// The handle the next accept is made cancelable with.
    pub fn handle(&self) -> CancelHandle {
        self.canceller.borrow().handle()
    }

    pub fn paused(&self) -> bool {
        self.paused.get()
    }

    /// Called by an accept loop that found the gate closed: waits until it opens.
    pub async fn park(&self) {
        self.running.set(self.running.get() - 1);
        while self.paused.get() {
            monoio::time::sleep(POLL).await;
        }
        self.running.set(self.running.get() + 1);
    }

    /// Closes the gate and waits until every accept loop has parked (a connection accepted
    /// by the cancelled operation first is served as usual, before the loop parks).
    async fn pause(&self) {
        self.paused.set(true);
        let old = self.canceller.replace(Canceller::new());
        drop(old.cancel());
        while self.running.get() > 0 {
            monoio::time::sleep(POLL).await;
        }
    }

    fn resume(&self) {
        self.paused.set(false);
    }
}

/// Carries out the upgrade thread's orders on this worker.
pub async fn serve_orders(core: Rc<Core>, gate: Rc<Gate>, rx: flume::Receiver<UpgradeOrder>) {
    while let Ok(order) = rx.recv_async().await {
        match order {
            UpgradeOrder::Export(reply) => {
                gate.pause().await;
                let share = handover::export(&core).await;
                let _ = reply.send((core.index, share));
            }
            UpgradeOrder::Settle(outcome, done) => {
                handover::settle(&core, outcome).await;
                match outcome {
                    Outcome::Resumed => gate.resume(),
                    // The process exits next: what the access log holds goes out now.
                    Outcome::Released => crate::stats::access::flush(&core.stats),
                }
                let _ = done.send(core.index);
            }
        }
    }
}
