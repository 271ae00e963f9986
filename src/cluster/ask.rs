//! What workers and the cluster thread say to each other, over bounded channels, at
//! handshake time only: a new peer's owner lookup, a session's release, and the thread's
//! commands back (list your sessions, give one up, these nodes are gone).

use super::claim::{Owner, Unknown};
use crate::runtime::Core;
use crate::stats::bump;

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
}

/// Commands waiting per worker; the thread skips a worker whose queue is full (counted) and
/// tries again next heartbeat.
pub const COMMAND_QUEUE: usize = 64;

/// Asks for `session`'s owner, waiting at most `cluster.lookup_timeout`.
pub async fn find_owner(core: &Core, session: &str, region: Option<String>) -> Owner {
    let Some(tx) = core.shared.cluster_requests.as_ref() else {
        return Owner::Here;
    };
    let (reply, answer) = flume::bounded(1);
    let req = Request::Claim {
        session: session.to_string(),
        region,
        reply,
    };
    if tx.try_send(req).is_err() {
        bump(&core.stats.cluster_queue_full, 1);
        return Owner::Unknown(Unknown::QueueFull);
    }
    let wait = core.config().cluster.lookup_timeout;
    match monoio::time::timeout(wait, answer.recv_async()).await {
        Ok(Ok(owner)) => owner,
        Ok(Err(_)) => Owner::Unknown(Unknown::RedisDown),
        Err(_) => {
            bump(&core.stats.cluster_lookup_timeouts, 1);
            Owner::Unknown(Unknown::Timeout)
        }
    }
}

/// Tells the cluster thread a session ended here. Best effort: when the queue is full the key
/// is not renewed again and lapses after `cluster.session_ttl`.
pub fn release(core: &Core, session: &str) {
    if let Some(tx) = core.shared.cluster_requests.as_ref() {
        let req = Request::Release {
            session: session.to_string(),
        };
        if tx.try_send(req).is_err() {
            bump(&core.stats.cluster_queue_full, 1);
        }
    }
}
