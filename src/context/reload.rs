//! Live reload (SIGHUP) on a worker: the message the main thread sends each worker with what
//! a reload changes, built and checked whole before any worker sees it, and the worker's side,
//! which swaps its own copies in one step between two of its tasks. Connections already open
//! keep what they read when they started (their message and byte limits, their decoder's
//! bounds); everything that starts afterwards reads the new config.

use super::Core;
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use std::rc::Rc;
use std::sync::Arc;

/// Everything a reload hands the workers. Built on the main thread, so that a secret file
/// that cannot be read (or, later, a certificate that does not load) refuses the reload
/// before any worker changed. Add to it what else a reload replaces (the TLS server config)
/// beside `auth`, and swap it in [`Core::apply`].
pub struct Reload {
    /// The new config, with every key a reload cannot change at its running value.
    pub config: Config,
    /// The token checker the new config describes; `None`: auth off.
    pub auth: Option<Arc<Authenticator>>,
}

/// One reload for one worker: `done` gets the worker's index once it has swapped.
pub struct ReloadOrder {
    pub reload: Arc<Reload>,
    pub done: flume::Sender<usize>,
}

/// A reload ready to send, and what it leaves as it was.
pub struct Prepared {
    pub reload: Reload,
    /// Keys the new config changed that a reload cannot apply (`config::FIXED_KEYS`), left
    /// at their running value.
    pub kept: Vec<&'static str>,
}

/// Checks `new` (already loaded and validated as a whole) against the `running` config and
/// reads what it names (the token secrets), so that nothing fails after the workers are told.
pub fn prepare(running: &Config, mut new: Config) -> Result<Prepared, ConfigError> {
    let kept = new.keep_fixed(running);
    let auth = Authenticator::from_config(&new)?.map(Arc::new);
    Ok(Prepared {
        reload: Reload { config: new, auth },
        kept,
    })
}

impl Core {
    /// Puts `r` in force on this worker, all of it at once: no task runs between the swaps.
    pub fn apply(&self, r: &Reload) {
        *self.live.borrow_mut() = Rc::new(r.config.clone());
        *self.auth.borrow_mut() = r.auth.as_deref().cloned().map(Rc::new);
        self.ip_limits.reconfigure(&r.config.limits);
    }
}

/// Runs on every worker: applies each reload as it comes and says so.
pub async fn receive_reloads(core: Rc<Core>, rx: flume::Receiver<ReloadOrder>) {
    while let Ok(order) = rx.recv_async().await {
        core.apply(&order.reload);
        let _ = order.done.send(core.index);
    }
}
