//! The /health answer.

use crate::config::Config;
use crate::config::GENERATION_VAR;
use crate::context::Shared;
use crate::http::Response;
use std::sync::OnceLock;

/// Upgrades since the first start: `RINGRELAY_GENERATION` as this process found it (the
/// SIGUSR2 upgrade sets it one higher for the process it starts), 0 when unset or not a
/// number. Read once: the environment does not change under a running relay.
pub fn generation() -> u64 {
    static GENERATION: OnceLock<u64> = OnceLock::new();
    *GENERATION.get_or_init(|| {
        std::env::var(GENERATION_VAR)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// `live` is the config in force on the answering worker: what a reload changed shows at
/// once (the tunnel limits), as the limits themselves apply at once.
pub fn health(shared: &Shared, live: &Config) -> Response {
    let sessions: u64 = shared.gauges.iter().map(|g| g.sessions()).sum();
    let connections: u64 = shared.gauges.iter().map(|g| g.connections()).sum();
    let mut body = serde_json::json!({
        "status": "ok",
        "service": "ringrelay",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": shared.started.elapsed().as_secs(),
        "pid": std::process::id(),
        "generation": generation(),
        "driver": shared.driver,
        "workers": shared.workers(),
        "active_sessions": sessions,
        "active_connections": connections,
        "capacity": crate::limits::capacity::health_json(&shared.config.limits, &shared.gauges),
    });
    if live.tunnel.enabled {
        let t = &live.tunnel;
        let limit = t.max_tunnels as u64;
        body["capacity"]["tunnels"] =
            crate::limits::capacity::usage(shared.tunnels.total() as u64, limit);
        body["capacity"]["tunnel_reserve"] = (limit * t.reserved_percent as u64 / 100).into();
    }
    if let Some(view) = &shared.cluster {
        body["cluster"] = view.health_json();
    }
    Response::json(200, body.to_string())
}
