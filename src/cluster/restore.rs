//! Sessions read back from `session.state_dir` in cluster mode (docs/upgrade.md): before a
//! worker takes them back, this node claims each one again with the same script every lookup
//! runs (`fleet::claim::CLAIM`, candidate: this node). A session another live node took while
//! this one was down stays there (its messages here are dropped, counted); one nobody took, or
//! whose owner has left the fleet, is this node's again, with the session TTL, and the cluster
//! thread renews it from its first round on like any other it holds.

use super::redis::{client, connect, IO_TIMEOUT};
use crate::fleet::claim::{node_key_prefix, session_key, CLAIM};
use crate::fleet::view::Identity;
use std::time::Duration;

/// Claims per pipeline.
const BATCH: usize = 1000;

/// Whether this node owns each of `ids` now (claimed in one pipeline per thousand). An error
/// means Redis could not be asked: the caller decides what to keep.
pub fn claim_back(
    url: &str,
    me: &Identity,
    session_ttl: Duration,
    ids: &[String],
) -> redis::RedisResult<Vec<bool>> {
    let mut con = connect(&client(url).map_err(redis::RedisError::from)?, IO_TIMEOUT)?;
    let ttl_ms = session_ttl.as_millis() as u64;
    let node_prefix = node_key_prefix(&me.prefix);
    let mut ours = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("EVAL")
                .arg(CLAIM)
                .arg(1)
                .arg(session_key(&me.prefix, id))
                .arg(&me.node_id)
                .arg(ttl_ms)
                .arg(&node_prefix)
                .arg(&me.node_id);
        }
        let owners: Vec<String> = pipe.query(&mut con)?;
        ours.extend(owners.iter().map(|o| *o == me.node_id));
    }
    Ok(ours)
}
