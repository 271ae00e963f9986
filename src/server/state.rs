//! `session.state_dir` at the process's edges (docs/upgrade.md): read back before any worker
//! accepts, written once every worker has stopped. The format and the restore itself are
//! `session::persist`'s.

use crate::config::Config;
use crate::fleet::view::Identity;
use crate::limits::home_core;
use crate::limits::saved::{SavedBucket, SavedLimits};
use crate::session::handoff::owner_core;
use crate::session::persist::{file, SessionState, StateFile};
use std::path::PathBuf;
use std::sync::mpsc;

/// Where the state goes at the stop, and the workers' snapshots on their way to it.
pub struct Keeper {
    dir: PathBuf,
    node: String,
    snapshots: mpsc::Receiver<StateFile>,
}

/// What one worker puts back before it accepts.
#[derive(Debug, Default)]
pub struct ForWorker {
    /// The sessions this core owns now.
    pub sessions: Vec<SessionState>,
    /// The per-IP connection-rate buckets of the addresses whose home this core is now.
    pub buckets: Vec<SavedBucket>,
    /// How long the buckets rested since they were taken (they refill for it).
    pub rested_ms: u64,
    /// Sessions in the file another node owns now, left out (counted on worker 0).
    pub not_claimed: u64,
}

/// What the start read, for the workers.
pub struct AtStart {
    pub keeper: Option<Keeper>,
    /// Each worker's share, by the core that owns each session and address now (the worker
    /// count may differ from the last run's).
    pub per_worker: Vec<ForWorker>,
    /// 1 when a state file was refused (counted on worker 0).
    pub refused: u64,
    /// Where each worker sends its snapshot at the stop.
    pub snapshots: Option<mpsc::Sender<StateFile>>,
}

/// Milliseconds since the Unix epoch, for the limiter state's age across a restart.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Splits what a state file held between `workers` cores: each session to its owner core,
/// each address's bucket to its home core, each bucket refilled for the time since its
/// worker took it (none when the clock went back).
pub fn split(state: StateFile, workers: usize, now_unix_ms: u64) -> Vec<ForWorker> {
    let mut out: Vec<ForWorker> = (0..workers).map(|_| ForWorker::default()).collect();
    for s in state.sessions {
        out[owner_core(&s.id, workers)].sessions.push(s);
    }
    // Workers took theirs within moments of each other: the oldest age stands for all.
    let taken = state.limits.iter().map(|l| l.taken_unix_ms).min();
    let rested_ms = taken.map_or(0, |t| now_unix_ms.saturating_sub(t));
    for SavedLimits { buckets, .. } in state.limits {
        for b in buckets {
            out[home_core(b.key, workers)].buckets.push(b);
        }
    }
    for w in &mut out {
        w.rested_ms = rested_ms;
    }
    out
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

/// With a cluster (`me`), keeps only the sessions this node still owns or can claim again
/// (`cluster::claim_back`); returns how many it left out. When Redis cannot be asked, every
/// session is kept: the cluster thread's first renewal round re-asserts each one, and closes
/// here any that another live node owns by then, as it does for every session it holds after
/// Redis comes back.
fn claim_back(config: &Config, me: Option<&Identity>, state: &mut StateFile) -> u64 {
    let (Some(me), Some(url)) = (me, config.cluster.redis_url.as_deref()) else {
        return 0;
    };
    if state.sessions.is_empty() {
        return 0;
    }
    let ids: Vec<String> = state.sessions.iter().map(|s| s.id.clone()).collect();
    match crate::cluster::claim_back(url, me, config.cluster.session_ttl, &ids) {
        Ok(ours) => {
            let mut ours = ours.into_iter();
            let before = state.sessions.len();
            state.sessions.retain(|_| ours.next().unwrap_or(false));
            let left_out = (before - state.sessions.len()) as u64;
            if left_out > 0 {
                tracing::warn!(
                    sessions = left_out,
                    "sessions in the state file that another node owns now are left out"
                );
            }
            left_out
        }
        Err(e) => {
            tracing::warn!(error = %e, sessions = ids.len(), "cannot ask the cluster registry who owns the sessions read back: restoring them all; the first renewal round settles ownership");
            0
        }
    }
}

/// Prepares `session.state_dir` and reads what the last stop wrote, split by owner core.
/// `me`: this node's identity in the fleet, in cluster mode.
pub fn load(
    config: &Config,
    workers: usize,
    me: Option<&Identity>,
) -> Result<AtStart, super::ServerError> {
    let mut start = AtStart {
        keeper: None,
        per_worker: (0..workers).map(|_| ForWorker::default()).collect(),
        refused: 0,
        snapshots: None,
    };
    let Some(dir) = config.session.state_dir.as_deref() else {
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
        file::Loaded::State(mut state) => {
            let buckets: usize = state.limits.iter().map(|l| l.buckets.len()).sum();
            tracing::info!(file = %path.display(), sessions = state.sessions.len(), ip_buckets = buckets, "state read back");
            let not_claimed = claim_back(config, me, &mut state);
            start.per_worker = split(state, workers, unix_ms());
            start.per_worker[0].not_claimed = not_claimed;
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
        let mut state = StateFile::default();
        for s in self.snapshots.try_iter() {
            state.sessions.extend(s.sessions);
            state.limits.extend(s.limits);
        }
        let path = self.dir.join(file::FILE_NAME);
        let buckets: usize = state.limits.iter().map(|l| l.buckets.len()).sum();
        match file::save(&self.dir, &self.node, &state) {
            Ok(bytes) => {
                tracing::info!(file = %path.display(), sessions = state.sessions.len(), ip_buckets = buckets, bytes, "state written")
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot write the state: what the sessions kept is lost")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sends_sessions_to_their_owner_and_buckets_to_their_home() {
        let bucket = |a: &str| SavedBucket {
            key: a.parse().unwrap(),
            tokens: 0.0,
        };
        let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::"];
        let state = |taken: [u64; 2]| StateFile {
            sessions: ["a", "b", "c"]
                .map(|id| SessionState {
                    id: id.into(),
                    ..SessionState::default()
                })
                .to_vec(),
            limits: vec![
                SavedLimits {
                    taken_unix_ms: taken[0],
                    buckets: addrs[..2].iter().map(|a| bucket(a)).collect(),
                },
                SavedLimits {
                    taken_unix_ms: taken[1],
                    buckets: addrs[2..].iter().map(|a| bucket(a)).collect(),
                },
            ],
        };
        let out = split(state([1_000, 1_200]), 3, 5_000);
        assert_eq!(out.len(), 3);
        for (core, w) in out.iter().enumerate() {
            assert!(w.sessions.iter().all(|s| owner_core(&s.id, 3) == core));
            assert!(w.buckets.iter().all(|b| home_core(b.key, 3) == core));
            assert_eq!(w.rested_ms, 4_000, "from the oldest worker's stamp");
        }
        let sessions: usize = out.iter().map(|w| w.sessions.len()).sum();
        let buckets: usize = out.iter().map(|w| w.buckets.len()).sum();
        assert_eq!((sessions, buckets), (3, 4));
        // A clock that went back rests nothing (rather than wrapping round to "full").
        let back = split(state([9_000, 9_000]), 2, 5_000);
        assert!(back.iter().all(|w| w.rested_ms == 0));
    }
}
