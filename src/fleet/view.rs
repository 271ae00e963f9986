//! What this node knows of the fleet and of its own standing in it: written by the cluster
//! thread, read by /health, /stats and /metrics (off the forwarding path), and by that thread
//! itself to answer owner lookups.

use super::breaker::State;
use super::node::{default_node_id, NodeInfo};
use crate::config::Config;
use hdrhistogram::Histogram;
use std::sync::Mutex;

/// This node's identity in the fleet, resolved from the config.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    pub region: String,
    pub public_url: String,
    pub internal: Option<String>,
    pub prefix: String,
}

impl Identity {
    pub fn of(cfg: &Config, listen: std::net::SocketAddr) -> Identity {
        let c = &cfg.cluster;
        let node_id = if c.node_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            default_node_id(host.trim(), listen.port())
        } else {
            c.node_id.clone()
        };
        let public_url = if c.public_url.is_empty() {
            format!("ws://{listen}")
        } else {
            c.public_url.clone()
        };
        Identity {
            node_id,
            region: c.region.clone(),
            public_url,
            internal: c.internal_listen.map(|a| a.to_string()),
            prefix: c.key_prefix.clone(),
        }
    }
}

/// What the node knows of the fleet, for /health and /stats.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub redis_up: bool,
    pub breaker: &'static str,
    /// This node's entry was written by the last heartbeat.
    pub registered: bool,
    pub nodes: Vec<NodeInfo>,
    pub commands: u64,
    pub errors: u64,
    /// Sessions this node owned at the last renewal.
    pub owned: usize,
    /// Owner lookups answered, those that claimed a session for this node, releases sent,
    /// sessions given up to another owner, commands to workers dropped on a full queue.
    pub lookups: u64,
    pub claimed_here: u64,
    pub releases: u64,
    pub evictions: u64,
    pub command_drops: u64,
    pub connects: u64,
    pub unreadable_entries: u64,
    pub last_error: Option<String>,
}

/// Written by the membership thread, read by /health and /stats (off the forwarding path).
pub struct View {
    pub identity: Identity,
    inner: Mutex<Snapshot>,
    /// Redis round trips (one command or one pipeline), in microseconds.
    rtt: Mutex<Histogram<u64>>,
}

impl View {
    pub fn new(identity: Identity) -> View {
        View {
            identity,
            inner: Mutex::new(Snapshot {
                redis_up: false,
                breaker: State::Closed.name(),
                registered: false,
                nodes: Vec::new(),
                commands: 0,
                errors: 0,
                owned: 0,
                lookups: 0,
                claimed_here: 0,
                releases: 0,
                evictions: 0,
                command_drops: 0,
                connects: 0,
                unreadable_entries: 0,
                last_error: None,
            }),
            rtt: Mutex::new(crate::stats::histograms::new_histogram()),
        }
    }

    pub fn record_rtt(&self, d: std::time::Duration) {
        let us = (d.as_micros() as u64).clamp(1, crate::stats::histograms::MAX_US);
        match self.rtt.lock() {
            Ok(mut h) => h.saturating_record(us),
            Err(p) => p.into_inner().saturating_record(us),
        }
    }

    pub fn rtt(&self) -> Histogram<u64> {
        self.rtt
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        match self.inner.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The short form for /health.
    pub fn health_json(&self) -> serde_json::Value {
        let s = self.snapshot();
        serde_json::json!({
            "node_id": self.identity.node_id,
            "region": self.identity.region,
            "redis": if s.redis_up { "up" } else { "down" },
            "breaker": s.breaker,
            "registered": s.registered,
            "nodes": s.nodes.len(),
            "owned_sessions": s.owned,
        })
    }

    /// The long form for /stats: the fleet as this node last read it.
    pub fn stats_json(&self) -> serde_json::Value {
        let s = self.snapshot();
        serde_json::json!({
            "node_id": self.identity.node_id,
            "region": self.identity.region,
            "public_url": self.identity.public_url,
            "redis": if s.redis_up { "up" } else { "down" },
            "breaker": s.breaker,
            "registered": s.registered,
            "redis_commands": s.commands,
            "redis_errors": s.errors,
            "redis_connects": s.connects,
            "unreadable_entries": s.unreadable_entries,
            "owned_sessions": s.owned,
            "owner_lookups": s.lookups,
            "sessions_claimed": s.claimed_here,
            "releases": s.releases,
            "sessions_given_up": s.evictions,
            "worker_commands_dropped": s.command_drops,
            "redis_rtt_us": crate::stats::render::latency_json(&self.rtt()),
            "last_error": s.last_error,
            "nodes": s.nodes,
        })
    }
}
