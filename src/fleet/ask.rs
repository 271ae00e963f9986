//! What workers and the cluster thread say to each other: the messages, without I/O. The
//! worker's context holds the sending end of the requests (`Shared::cluster_requests`), so
//! they are defined here, below it; the asking itself is `cluster::ask`.

use super::claim::Owner;

/// From a worker to the cluster thread.
pub enum Request {
    /// Who owns `session`? Claims it (for this node, or for a node in `region` when the
    /// client hinted one) when nobody live does.
    Claim {
        session: String,
        region: Option<String>,
        reply: flume::Sender<Owner>,
    },
    /// The session ended here: free its key if this node still holds it.
    Release { session: String },
}

/// From the cluster thread to one worker.
pub enum Command {
    /// Answer with the ids of the sessions this core holds, to renew their ownership.
    Sessions(flume::Sender<Vec<String>>),
    /// Another node owns this session now (found when re-asserting after Redis came back):
    /// close its peers here with 1012 so they reconnect to the owner.
    Evict(String),
    /// These nodes left the fleet: end links carried to them and peers carried from them.
    NodesGone(Vec<String>),
    /// Answer with this core's tunnel figures (the registry entry's tunnel fields).
    TunnelFigures(flume::Sender<TunnelFigures>),
}

/// What a worker tells the cluster thread about its tunnels each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelFigures {
    /// Bytes spliced through this core's tunnels so far, both ways (the entry's tunnel
    /// bandwidth is their rate between heartbeats).
    pub bytes: u64,
    /// `tunnel.max_tunnels` in force on this core: after a reload (SIGHUP) the new value,
    /// which the cluster thread's start config does not have.
    pub max_tunnels: usize,
}

/// Commands waiting per worker; the thread skips a worker whose queue is full (counted) and
/// tries again next heartbeat.
pub const COMMAND_QUEUE: usize = 64;
