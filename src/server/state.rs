//! `session.state_dir` at the process's edges (docs/upgrade.md): read back before any worker
//! accepts, written once every worker has stopped. The format and the restore itself are
//! `session::persist`'s.

use crate::config::Config;
use crate::session::handoff::owner_core;
use crate::session::persist::{file, SessionState};
use std::path::PathBuf;
use std::sync::mpsc;

/// Where the state goes at the stop, and the workers' snapshots on their way to it.
pub struct Keeper {
    dir: PathBuf,
    node: String,
    snapshots: mpsc::Receiver<Vec<SessionState>>,
}

/// What the start read, for the workers.
pub struct AtStart {
    pub keeper: Option<Keeper>,
    /// Each worker's sessions, by the core that owns them now (the worker count may differ
    /// from the last run's).
    pub per_worker: Vec<Vec<SessionState>>,
    /// 1 when a state file was refused (counted on worker 0).
    pub refused: u64,
    /// Where each worker sends its snapshot at the stop.
    pub snapshots: Option<mpsc::Sender<Vec<SessionState>>>,
}

/// The directory, when state is kept: `session.state_dir` without a cluster. With a cluster
/// a session may be owned by another node by the time this one starts again, and claiming
/// each one back is not built: nothing is kept, and the start says so.
pub fn kept_in(config: &Config) -> Option<&std::path::Path> {
    let dir = config.session.state_dir.as_deref()?;
    config.cluster.redis_url.is_none().then_some(dir)
}

/// Who wrote a state file: `cluster.node_id`, or the host name and the configured listen
/// port in the cluster's default form (`fleet::node::default_node_id`), so two relays on one
/// host never read each other's file by mistake.
fn node_id(config: &Config) -> String {
    if !config.cluster.node_id.is_empty() {
        return config.cluster.node_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    crate::fleet::node::default_node_id(host.trim(), config.listen.port())
}

/// The largest file read: what the workers can keep in memory (their budgets), with a
/// quarter more and 64 MiB for framing and names. A larger file did not come from a relay
/// with these limits.
fn max_file_bytes(config: &Config, workers: usize) -> u64 {
    let budget = (config.session.core_buffer_budget as u64).saturating_mul(workers as u64);
    budget.saturating_add(budget / 4).saturating_add(64 << 20)
}

/// Prepares `session.state_dir` and reads what the last stop wrote, split by owner core.
pub fn load(config: &Config, workers: usize) -> Result<AtStart, super::ServerError> {
    let mut start = AtStart {
        keeper: None,
        per_worker: (0..workers).map(|_| Vec::new()).collect(),
        refused: 0,
        snapshots: None,
    };
    if config.session.state_dir.is_some() && config.cluster.redis_url.is_some() {
        tracing::warn!("session.state_dir is ignored with a cluster: sessions are neither written at the stop nor restored (docs/upgrade.md)");
    }
    let Some(dir) = kept_in(config) else {
        return Ok(start);
    };
    file::prepare(dir).map_err(|e| {
        super::ServerError::State(format!(
            "session.state_dir {}: cannot use it: {e}",
            dir.display()
        ))
    })?;
    let node = node_id(config);
    let path = dir.join(file::FILE_NAME);
    match file::load(dir, &node, max_file_bytes(config, workers)) {
        file::Loaded::Nothing => {}
        file::Loaded::Sessions(sessions) => {
            tracing::info!(file = %path.display(), sessions = sessions.len(), "state read back");
            for s in sessions {
                start.per_worker[owner_core(&s.id, workers)].push(s);
            }
        }
        file::Loaded::Refused { why, moved_to } => {
            start.refused = 1;
            let aside = moved_to.map(|p| p.display().to_string());
            tracing::error!(file = %path.display(), error = %why, moved_to = aside.as_deref().unwrap_or("(could not be moved)"), "state file refused: starting without it");
        }
    }
    let (tx, snapshots) = mpsc::channel();
    start.snapshots = Some(tx);
    start.keeper = Some(Keeper {
        dir: dir.to_path_buf(),
        node,
        snapshots,
    });
    Ok(start)
}

impl Keeper {
    /// Every worker listens with its sessions restored: the file is removed, so a crash
    /// from now on never brings back this older state (a start that failed before this
    /// leaves it for the next one).
    pub fn restored(&self) {
        if let Err(e) = file::discard(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the state file read back: a crash before the next stop would restore it again");
        }
    }

    /// Writes what the stopped workers sent. Called once every worker thread has ended, so
    /// every snapshot is in.
    pub fn save(self) {
        let sessions: Vec<SessionState> = self.snapshots.try_iter().flatten().collect();
        let path = self.dir.join(file::FILE_NAME);
        match file::save(&self.dir, &self.node, &sessions) {
            Ok(bytes) => {
                tracing::info!(file = %path.display(), sessions = sessions.len(), bytes, "state written")
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot write the state: what the sessions kept is lost")
            }
        }
    }
}
