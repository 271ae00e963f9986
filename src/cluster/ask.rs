//! What workers and the cluster thread say to each other, over bounded channels, at
//! handshake time only: a new peer's owner lookup, a session's release, and the thread's
//! commands back (list your sessions, give one up, these nodes are gone). The messages are
//! defined in `fleet::ask`, below the worker's context that holds the request queue; this
//! file is the asking.

use crate::context::Core;
use crate::fleet::ask::Request;
use crate::fleet::claim::{Owner, Unknown};
use crate::stats::bump;

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
