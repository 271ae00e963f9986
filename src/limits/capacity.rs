//! Whole-server capacity: upgraded connections and sessions against `limits.max_connections`
//! and `limits.max_sessions`. The totals are the sum of the per-core gauges each core
//! publishes when a peer joins or leaves, read only here, at admission, never while
//! forwarding. Two cores admitting at the same instant can each pass the check, so the server
//! may go over a limit by at most one connection per worker.

use crate::config::LimitsConfig;
use crate::stats::CoreGauges;

/// What an admitted connection would add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joining {
    /// A connection that opens a session (or the echo route: no session, but a connection).
    New { opens_session: bool },
    /// A peer rejoining a session that has been paired: it may use the reserved share.
    Rejoin,
}

/// Seconds a refused client is asked to wait.
pub const RETRY_AFTER_S: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub connections: u64,
    pub sessions: u64,
}

/// The server's totals: the sum of the gauges each core publishes (`Shared::gauges`).
pub fn totals(gauges: &[CoreGauges]) -> Totals {
    Totals {
        connections: gauges.iter().map(|g| g.connections()).sum(),
        sessions: gauges.iter().map(|g| g.sessions()).sum(),
    }
}

/// Connections a new session's peers may use: the limit less the reconnect reserve.
fn open_to_new(l: &LimitsConfig) -> u64 {
    let limit = l.max_connections as u64;
    limit - limit * l.reconnect_reserve_percent as u64 / 100
}

/// `Err` names which limit was reached.
pub fn check(l: &LimitsConfig, now: Totals, joining: Joining) -> Result<(), &'static str> {
    let conn_limit = match joining {
        Joining::Rejoin => l.max_connections as u64,
        Joining::New { .. } => open_to_new(l),
    };
    if now.connections >= conn_limit {
        return Err("the relay is at its connection limit");
    }
    if joining
        == (Joining::New {
            opens_session: true,
        })
        && now.sessions >= l.max_sessions as u64
    {
        return Err("the relay is at its session limit");
    }
    Ok(())
}

pub fn usage(active: u64, limit: u64) -> serde_json::Value {
    let percent = if limit == 0 {
        100.0
    } else {
        (active as f64 * 1000.0 / limit as f64).round() / 10.0
    };
    serde_json::json!({
        "active": active,
        "limit": limit,
        "available": limit.saturating_sub(active),
        "utilization_percent": percent,
    })
}

/// The `capacity` object of /health.
pub fn health_json(l: &LimitsConfig, gauges: &[CoreGauges]) -> serde_json::Value {
    let t = totals(gauges);
    serde_json::json!({
        "connections": usage(t.connections, l.max_connections as u64),
        "sessions": usage(t.sessions, l.max_sessions as u64),
        "reconnect_reserve": l.max_connections as u64 - open_to_new(l),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(conns: usize, sessions: usize, reserve: usize) -> LimitsConfig {
        LimitsConfig {
            max_connections: conns,
            max_sessions: sessions,
            reconnect_reserve_percent: reserve,
            ..LimitsConfig::default()
        }
    }

    fn t(connections: u64, sessions: u64) -> Totals {
        Totals {
            connections,
            sessions,
        }
    }

    #[test]
    fn the_reserve_is_for_rejoining_peers_only() {
        // 100 connections, 20 kept for reconnects.
        let l = limits(100, 1000, 20);
        let new = Joining::New {
            opens_session: true,
        };
        assert!(check(&l, t(79, 0), new).is_ok());
        assert!(check(&l, t(80, 0), new).is_err());
        assert!(check(&l, t(80, 0), Joining::Rejoin).is_ok());
        assert!(check(&l, t(99, 0), Joining::Rejoin).is_ok());
        assert!(check(&l, t(100, 0), Joining::Rejoin).is_err());
    }

    #[test]
    fn only_a_new_session_counts_against_the_session_limit() {
        let l = limits(100, 10, 0);
        let opens = Joining::New {
            opens_session: true,
        };
        let joins = Joining::New {
            opens_session: false,
        };
        assert!(check(&l, t(0, 9), opens).is_ok());
        assert_eq!(
            check(&l, t(0, 10), opens),
            Err("the relay is at its session limit")
        );
        assert!(check(&l, t(0, 10), joins).is_ok());
    }
}
