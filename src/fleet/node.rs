//! A node's entry in the Redis registry, without I/O: what it says about itself, and the keys.

use serde::{Deserialize, Serialize};

/// One node as the fleet sees it (JSON under `{prefix}:node:{node_id}`, with a TTL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub region: String,
    /// Where clients reach it.
    pub public_url: String,
    /// Where other nodes reach it (the node-to-node link), if it has one.
    pub internal: Option<String>,
    pub version: String,
    pub workers: usize,
    /// `limits.max_connections` and `limits.max_sessions`.
    pub max_connections: usize,
    pub max_sessions: usize,
    /// Load when the entry was written.
    pub connections: u64,
    pub sessions: u64,
    /// Milliseconds since the epoch: when the node started, and when it wrote this.
    pub started_ms: u64,
    pub written_ms: u64,
    /// Tunnels (docs/tunnels.md): `tunnel.max_tunnels` (0 when tunnels are off), the
    /// tunnels held now (their grace included), the bytes per second spliced through them
    /// (both ways, over the last heartbeat) and `tunnel.max_bandwidth` (per tunnel, 0: none).
    /// Absent from an older node's entry, so read as 0 rather than making it unreadable.
    #[serde(default)]
    pub max_tunnels: usize,
    #[serde(default)]
    pub tunnels: u64,
    #[serde(default)]
    pub tunnel_bandwidth: u64,
    #[serde(default)]
    pub max_tunnel_bandwidth: u64,
}

pub fn node_key(prefix: &str, node_id: &str) -> String {
    format!("{prefix}:node:{node_id}")
}

/// The pattern every node key matches (node ids hold no glob characters).
pub fn node_pattern(prefix: &str) -> String {
    format!("{prefix}:node:*")
}

/// The node id when none is configured: the host name and the public port, which stays the
/// same across restarts of one deployment.
pub fn default_node_id(host: &str, port: u16) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "node".to_string()
    } else {
        host
    };
    format!("{host}-{port}")
}

/// Entries as read back, sorted by node id; unreadable ones (another program's keys under the
/// prefix, a half-written upgrade) are skipped and counted.
pub fn parse_fleet(values: &[Option<String>]) -> (Vec<NodeInfo>, usize) {
    let mut bad = 0;
    let mut nodes: Vec<NodeInfo> = values
        .iter()
        .flatten()
        .filter_map(|v| match serde_json::from_str(v) {
            Ok(n) => Some(n),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    (nodes, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            region: "eu".into(),
            public_url: "ws://10.0.0.1:8080".into(),
            internal: None,
            version: "0.1.0".into(),
            workers: 2,
            max_connections: 10,
            max_sessions: 5,
            connections: 3,
            sessions: 1,
            started_ms: 1,
            written_ms: 2,
            max_tunnels: 10,
            tunnels: 4,
            tunnel_bandwidth: 1000,
            max_tunnel_bandwidth: 0,
        }
    }

    #[test]
    fn an_entry_without_tunnel_fields_still_reads() {
        // An entry written by a node from before tunnels were in it (a rolling upgrade).
        let mut v = serde_json::to_value(node("old")).unwrap();
        for k in [
            "max_tunnels",
            "tunnels",
            "tunnel_bandwidth",
            "max_tunnel_bandwidth",
        ] {
            v.as_object_mut().unwrap().remove(k);
        }
        let (fleet, bad) = parse_fleet(&[Some(v.to_string())]);
        assert_eq!(bad, 0);
        assert_eq!((fleet[0].max_tunnels, fleet[0].tunnels), (0, 0));
    }

    #[test]
    fn entries_round_trip_and_the_fleet_is_sorted() {
        let b = serde_json::to_string(&node("b")).unwrap();
        let a = serde_json::to_string(&node("a")).unwrap();
        let (fleet, bad) = parse_fleet(&[Some(b), None, Some("not json".into()), Some(a)]);
        assert_eq!(bad, 1);
        assert_eq!(fleet, vec![node("a"), node("b")]);
        assert_eq!(node_key("rr", "a"), "rr:node:a");
        assert_eq!(node_pattern("rr"), "rr:node:*");
    }

    #[test]
    fn default_ids_are_valid_names() {
        assert_eq!(
            default_node_id("relay-3.example.com", 8080),
            "relay-3.example.com-8080"
        );
        assert_eq!(default_node_id("we*rd host", 1), "we-rd-host-1");
        assert_eq!(default_node_id("", 9), "node-9");
        assert!(default_node_id(&"h".repeat(100), 65535).len() <= 64);
    }
}
