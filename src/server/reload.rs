//! Putting a reload in force on every worker (SIGHUP; `main.rs` loads the config). The new
//! config was loaded and validated whole, and everything it names was read (`context::reload::
//! prepare`), before any worker is told: a reload that fails does so with every worker on the
//! old config. Each worker then swaps its own copy between two of its tasks and says so.

use super::Running;
use crate::auth::unix_now;
use crate::config::{Config, ConfigError};
use crate::context::reload::{prepare, PrepareError, ReloadOrder};
use crate::context::Shared;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reloads waiting per worker. The main thread waits for each reload to be confirmed before
/// the next, so one is ever queued; room for more only keeps a slow worker from failing one.
pub(super) const QUEUED: usize = 4;

/// How long every worker has to confirm a reload. A worker answers between two of its tasks,
/// so this is only reached when one is stuck.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config did not load, validate or read its secrets or certificates: nothing
    /// changed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// Some workers may have swapped and others not (one is stuck, or the server is
    /// stopping); the next reload puts them in step again.
    #[error("only {confirmed} of {workers} workers confirmed the reload")]
    Unconfirmed { confirmed: usize, workers: usize },
}

/// A reload in force on every worker.
#[derive(Debug)]
pub struct Applied {
    /// The config now in force: the one loaded, with each key a reload cannot change at its
    /// running value. The next reload is compared with it.
    pub config: Config,
    /// Keys the loaded config changed that a reload cannot apply, left as they were.
    pub kept: Vec<&'static str>,
}

/// What the signal thread reloads the workers with: their reload inboxes and the figures.
#[derive(Clone)]
pub struct Reloader {
    inboxes: Vec<flume::Sender<ReloadOrder>>,
    shared: Arc<Shared>,
}

impl Running {
    pub fn reloader(&self) -> Reloader {
        Reloader {
            inboxes: self.reloads.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl Reloader {
    /// Puts `loaded` (the config file, environment and flags read again) in force on every
    /// worker in place of `running`, or refuses it whole; the outcome is counted for /stats
    /// and /metrics either way.
    pub fn reload(
        &self,
        running: &Config,
        loaded: Result<Config, ConfigError>,
    ) -> Result<Applied, ReloadError> {
        let outcome = self.apply_everywhere(running, loaded);
        let stats = &self.shared.reloads;
        match &outcome {
            Ok(a) => stats.applied(unix_now(), &a.kept),
            Err(e) => stats.refused(unix_now(), &e.to_string()),
        }
        outcome
    }

    fn apply_everywhere(
        &self,
        running: &Config,
        loaded: Result<Config, ConfigError>,
    ) -> Result<Applied, ReloadError> {
        let prepared = prepare(running, loaded?)?;
        let config = prepared.reload.config.clone();
        let reload = Arc::new(prepared.reload);
        let workers = self.inboxes.len();
        let (done, confirmations) = flume::bounded(workers);
        for inbox in &self.inboxes {
            let order = ReloadOrder {
                reload: reload.clone(),
                done: done.clone(),
            };
            // Full or gone: that worker cannot confirm, which the count below reports.
            let _ = inbox.try_send(order);
        }
        drop(done);
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        let mut confirmed = 0;
        while confirmed < workers {
            match confirmations.recv_deadline(deadline) {
                Ok(_) => confirmed += 1,
                Err(_) => return Err(ReloadError::Unconfirmed { confirmed, workers }),
            }
        }
        Ok(Applied {
            config,
            kept: prepared.kept,
        })
    }
}
