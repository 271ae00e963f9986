//! Session ownership in Redis, without I/O: the keys and the two scripts every node runs.
//!
//! `{prefix}:session:{id}` holds the owner's node id with a TTL. One script claims, renews
//! and re-asserts: it keeps a live owner (and extends the key when that owner is the caller),
//! and takes over a key that is missing or whose owner's node entry has lapsed. So a session
//! whose owner died is free once that node leaves the fleet, not only when its own TTL runs
//! out, and a Redis that restarted empty gets every key back from the nodes that hold the
//! sessions. Each script is one atomic step on the server: two nodes racing for one session
//! are decided there.

/// `KEYS[1]`: the session key. `ARGV`: the caller's candidate owner, the TTL in ms, the
/// node-key prefix (`{prefix}:node:`), the caller's own node id. Returns the owner.
pub const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v and redis.call('EXISTS', ARGV[3] .. v) == 1 then
  if v == ARGV[4] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return v
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// `KEYS[1]`: the session key; `ARGV[1]`: the caller's node id. Deletes the key only if the
/// caller still owns it, so a late release cannot free a session another node took.
pub const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub fn session_key(prefix: &str, session: &str) -> String {
    format!("{prefix}:session:{session}")
}

/// What `CLAIM` is given for `node_prefix`: every node key starts with it.
pub fn node_key_prefix(prefix: &str) -> String {
    format!("{prefix}:node:")
}

/// Where a session lives, as far as this node can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node: seat the peer here.
    Here,
    /// Another node, reached at `internal` (its node-to-node listener); `None` when it
    /// registered none, so it cannot be reached.
    Elsewhere {
        node_id: String,
        internal: Option<String>,
    },
    /// Redis cannot be asked (down, breaker open, queue full, too slow).
    Unknown(Unknown),
}

/// Why the owner could not be found; each has its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    RedisDown,
    QueueFull,
    Timeout,
}

impl Unknown {
    pub fn reason(self) -> &'static str {
        match self {
            Unknown::RedisDown => "the cluster registry cannot be reached",
            Unknown::QueueFull => "too many peers are waiting for the cluster registry",
            Unknown::Timeout => "the cluster registry answered too slowly",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(session_key("rr", "abc"), "rr:session:abc");
        assert_eq!(node_key_prefix("rr"), "rr:node:");
        assert_eq!(
            format!("{}{}", node_key_prefix("rr"), "n1"),
            super::super::node::node_key("rr", "n1")
        );
    }
}
