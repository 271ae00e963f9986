//! This worker's tunnels: the public connections waiting for their data connection, by id,
//! and the open tunnels, by resume key (a resume takes one back, from its grace or from a
//! control connection the relay has not yet seen drop). Only this worker's
//! thread touches it (a thread-local, like the rest of a worker's state, but kept here so
//! the worker's context needs no type from this layer).

use super::control::Out;
use super::join::DataConn;
use super::shape::Bucket;
use crate::limits::tunnels::TunnelCharge;
use local_sync::mpsc::unbounded;
use local_sync::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// One tunnel: its port, its key, and the way to its control connection while there is one.
pub struct Tunnel {
    pub port: u16,
    pub resume: String,
    /// The token's subject, which a resume must match.
    pub subject: Option<String>,
    /// Events to the control connection; `None` while it is away (in its grace).
    pub events: RefCell<Option<unbounded::Tx<Out>>>,
    /// Tells the control connection holding the tunnel that a resume took it over; `None`
    /// while it is away.
    pub kick: RefCell<Option<oneshot::Sender<()>>>,
    /// Public connections open through it, waiting or joined.
    pub connections: Cell<usize>,
    /// Set when the tunnel ends: the accept loop stops and the port is released.
    pub closed: Cell<bool>,
    /// Wakes the accept loop when the tunnel ends.
    pub stop: RefCell<Option<oneshot::Sender<()>>>,
    /// Bumped each time a control connection takes the tunnel, so a grace timer started for
    /// an earlier one does nothing.
    pub generation: Cell<u64>,
    /// `tunnel.max_bandwidth`, shared by all its connections both ways.
    pub bucket: RefCell<Bucket>,
    /// Its place in the server's count of tunnels, given back when it ends.
    pub charge: RefCell<Option<TunnelCharge>>,
}

impl Tunnel {
    /// Up to `want` bytes that may move now, waiting while the bucket is empty.
    pub async fn shape_take(&self, want: u32, stats: &crate::stats::CoreStats) -> u32 {
        loop {
            let now = std::time::Instant::now();
            let r = self.bucket.borrow_mut().take(want, now);
            match r {
                Ok(n) => return n,
                Err(wait) => {
                    crate::stats::bump(&stats.tunnel_shaped_waits, 1);
                    monoio::time::sleep(wait).await
                }
            }
        }
    }

    /// Gives back what a grant did not move.
    pub fn shape_return(&self, n: u32) {
        if n > 0 {
            self.bucket.borrow_mut().put_back(n);
        }
    }

    /// Ends the tunnel: the accept loop drops the listener (the port is free again).
    /// Connections already joined keep flowing to their end.
    pub fn close(&self) {
        if !self.closed.replace(true) {
            self.events.borrow_mut().take();
            self.kick.borrow_mut().take();
            self.charge.borrow_mut().take();
            if let Some(stop) = self.stop.borrow_mut().take() {
                let _ = stop.send(());
            }
        }
    }
}

#[derive(Default)]
pub struct Book {
    /// Public connections waiting for their data connection.
    pub pending: HashMap<String, oneshot::Sender<DataConn>>,
    /// Every open tunnel of this worker, its control connection up or away (in its grace),
    /// for `?resume=KEY`; bounded by `tunnel.max_tunnels`, as each holds a place in the
    /// server's count.
    pub tunnels: HashMap<String, Rc<Tunnel>>,
}

thread_local! {
    static BOOK: RefCell<Book> = RefCell::new(Book::default());
}

/// Runs `f` on this worker's book.
pub fn with<R>(f: impl FnOnce(&mut Book) -> R) -> R {
    BOOK.with(|b| f(&mut b.borrow_mut()))
}
