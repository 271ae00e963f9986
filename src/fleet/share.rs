//! Tunnels across the fleet, without I/O: the fleet's capacity and load as `GET /fleet`
//! shows them, and where a new tunnel should go when this node holds more than its share.
//!
//! A node's tunnel capacity is its `tunnel.max_tunnels` (0 when tunnels are off) and its
//! load the tunnels it holds, those in their grace included (they keep their port), as its
//! registry entry says. Utilisation is load over capacity, in percent.

use super::node::NodeInfo;
use serde_json::{json, Value};

/// Load over capacity in percent, one decimal; 0 for no capacity.
pub fn percent(load: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        return 0.0;
    }
    (load as f64 * 1000.0 / capacity as f64).round() / 10.0
}

/// The `GET /fleet` body for these entries (as Redis holds them, or this node alone).
pub fn fleet_json(nodes: &[NodeInfo], now_ms: u64) -> Value {
    let capacity: u64 = nodes.iter().map(|n| n.max_tunnels as u64).sum();
    let load: u64 = nodes.iter().map(|n| n.tunnels).sum();
    let conn_cap: u64 = nodes.iter().map(|n| n.max_connections as u64).sum();
    let conns: u64 = nodes.iter().map(|n| n.connections).sum();
    let servers: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "region": n.region,
                "public_url": n.public_url,
                "capacity": n.max_tunnels,
                "load": n.tunnels,
                "utilization_percent": percent(n.tunnels, n.max_tunnels as u64),
                "bandwidth": n.tunnel_bandwidth,
                "max_bandwidth_per_tunnel": n.max_tunnel_bandwidth,
                "connections": n.connections,
                "max_connections": n.max_connections,
                "sessions": n.sessions,
                "max_sessions": n.max_sessions,
                "version": n.version,
                "seen_ms_ago": now_ms.saturating_sub(n.written_ms),
            })
        })
        .collect();
    json!({
        "server_count": nodes.len(),
        "total_capacity": capacity,
        "total_load": load,
        "utilization_percent": percent(load, capacity),
        "total_bandwidth": nodes.iter().map(|n| n.tunnel_bandwidth).sum::<u64>(),
        "connections": {
            "capacity": conn_cap,
            "load": conns,
            "utilization_percent": percent(conns, conn_cap),
        },
        "servers": servers,
    })
}

/// This node as the decision sees it: its live count, not the one in its last entry.
#[derive(Debug, Clone, Copy)]
pub struct Me<'a> {
    pub node_id: &'a str,
    pub tunnels: u64,
    pub max_tunnels: usize,
}

/// Where a new tunnel asked of this node should go instead, if anywhere: the least loaded
/// other node with room, when this node would be more than `margin` points over the
/// fleet's utilisation with the tunnel, and that node would be less loaded than this one
/// with it. A node has room while it holds fewer than its capacity less `reserved_percent`
/// of it (the share new tunnels may use; the same key on every node is assumed). Ties go to
/// the first node id, so every worker picks alike.
pub fn elsewhere<'a>(
    nodes: &'a [NodeInfo],
    me: Me<'_>,
    reserved_percent: usize,
    margin: u64,
) -> Option<&'a NodeInfo> {
    if me.max_tunnels == 0 {
        return None;
    }
    let after = |load: u64, cap: usize| (load + 1) as f64 * 100.0 / cap as f64;
    let mine = after(me.tunnels, me.max_tunnels);
    let others = nodes
        .iter()
        .filter(|n| n.node_id != me.node_id && n.max_tunnels > 0);
    let load: u64 = me.tunnels + others.clone().map(|n| n.tunnels).sum::<u64>();
    let cap: u64 =
        me.max_tunnels as u64 + others.clone().map(|n| n.max_tunnels as u64).sum::<u64>();
    let fleet = (load + 1) as f64 * 100.0 / cap as f64;
    if mine <= fleet + margin as f64 {
        return None;
    }
    let room = |n: &NodeInfo| {
        let reserve = n.max_tunnels * reserved_percent.min(100) / 100;
        n.tunnels < (n.max_tunnels - reserve) as u64 && !n.public_url.is_empty()
    };
    others
        .filter(|n| room(n) && after(n.tunnels, n.max_tunnels) < mine)
        .min_by(|a, b| {
            let (x, y) = (
                after(a.tunnels, a.max_tunnels),
                after(b.tunnels, b.max_tunnels),
            );
            x.total_cmp(&y).then_with(|| a.node_id.cmp(&b.node_id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, tunnels: u64, max_tunnels: usize) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            region: "eu".into(),
            public_url: format!("ws://{id}:8080"),
            internal: None,
            version: "0.1.0".into(),
            workers: 1,
            max_connections: 100,
            max_sessions: 50,
            connections: 10,
            sessions: 2,
            started_ms: 1,
            written_ms: 1_000,
            max_tunnels,
            tunnels,
            tunnel_bandwidth: 500,
            max_tunnel_bandwidth: 0,
        }
    }

    fn me(id: &str, tunnels: u64, max_tunnels: usize) -> Me<'_> {
        Me {
            node_id: id,
            tunnels,
            max_tunnels,
        }
    }

    #[test]
    fn the_fleet_sums_every_server() {
        let nodes = [node("a", 3, 10), node("b", 1, 30), node("c", 0, 0)];
        let v = fleet_json(&nodes, 1_500);
        assert_eq!(v["server_count"], 3);
        assert_eq!(v["total_capacity"], 40);
        assert_eq!(v["total_load"], 4);
        assert_eq!(v["utilization_percent"], 10.0);
        assert_eq!(v["total_bandwidth"], 1500);
        assert_eq!(v["connections"]["capacity"], 300);
        assert_eq!(v["connections"]["load"], 30);
        assert_eq!(v["servers"][0]["utilization_percent"], 30.0);
        assert_eq!(v["servers"][1]["utilization_percent"], 3.3);
        assert_eq!(v["servers"][2]["utilization_percent"], 0.0);
        assert_eq!(v["servers"][0]["seen_ms_ago"], 500);
        let empty = fleet_json(&[], 0);
        assert_eq!(
            (
                empty["server_count"].as_u64(),
                empty["utilization_percent"].as_f64()
            ),
            (Some(0), Some(0.0))
        );
    }

    #[test]
    fn two_even_nodes_take_turns() {
        // Margin 0: with both empty the first tunnel stays; the second, which would put this
        // node over the fleet, goes to the other node; level again, the next stays.
        let view = [node("a", 0, 10), node("b", 0, 10)];
        assert!(elsewhere(&view, me("a", 0, 10), 0, 0).is_none());
        let to = elsewhere(&view, me("a", 1, 10), 0, 0).map(|n| n.node_id.as_str());
        assert_eq!(to, Some("b"));
        let view = [node("a", 1, 10), node("b", 1, 10)];
        assert!(elsewhere(&view, me("a", 1, 10), 0, 0).is_none());
    }

    #[test]
    fn a_margin_keeps_small_differences_here() {
        let view = [node("a", 0, 100), node("b", 0, 100)];
        assert!(elsewhere(&view, me("a", 5, 100), 0, 10).is_none());
        assert!(elsewhere(&view, me("a", 30, 100), 0, 10).is_some());
        assert!(
            elsewhere(&view, me("a", 99, 100), 0, 100).is_none(),
            "100: never"
        );
    }

    #[test]
    fn the_least_loaded_node_with_room_is_named() {
        let view = [
            node("a", 9, 10),
            node("b", 5, 10),
            node("c", 2, 10),
            node("d", 8, 10),
            node("e", 0, 0),
        ];
        let to = elsewhere(&view, me("a", 9, 10), 0, 0).map(|n| n.node_id.as_str());
        assert_eq!(to, Some("c"));
        // Capacity counts, not the raw number: 10 of 100 is less loaded than 2 of 10.
        let view = [node("a", 9, 10), node("b", 10, 100), node("c", 2, 10)];
        let to = elsewhere(&view, me("a", 9, 10), 0, 0).map(|n| n.node_id.as_str());
        assert_eq!(to, Some("b"));
        // A node whose free share is gone (its reserve left) has no room.
        let view = [node("a", 9, 10), node("b", 9, 10)];
        assert!(elsewhere(&view, me("a", 9, 10), 10, 0).is_none());
        let view = [node("a", 9, 10), node("b", 8, 10)];
        assert!(elsewhere(&view, me("a", 9, 10), 20, 0).is_none());
        assert!(elsewhere(&view, me("a", 9, 10), 10, 0).is_some());
    }

    #[test]
    fn nothing_moves_without_tunnels_here_or_a_place_to_go() {
        let view = [node("a", 5, 10)];
        assert!(
            elsewhere(&view, me("a", 9, 10), 0, 0).is_none(),
            "alone in the fleet"
        );
        assert!(elsewhere(&[], me("a", 9, 10), 0, 0).is_none());
        assert!(elsewhere(&[node("b", 0, 10)], me("a", 0, 0), 0, 0).is_none());
        let mut b = node("b", 0, 10);
        b.public_url.clear();
        assert!(elsewhere(&[b], me("a", 9, 10), 0, 0).is_none());
    }
}
