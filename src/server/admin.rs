//! TLS on the admin listener (`admin_tls.*`, docs/tls.md): when the admin worker has an admin
//! TLS configuration, every connection to the admin listener starts with a TLS handshake
//! (client certificates as `admin_tls.client_auth` says), within `limits.handshake_timeout`
//! like the request head after it; a plain request is answered 400 `tls_required` in clear.
//! No HSTS here: it would bind the host name of the public listener too, whatever it serves.

use crate::context::Core;
use crate::limits::Refusal;
use crate::runtime::stream::ServerStream;
use crate::runtime::tls::Refused;
use crate::stats::bump;
use std::net::IpAddr;
use std::time::Duration;

/// Runs the admin listener's TLS handshake when it has one. `false`: the connection is over
/// (refused, counted in `admin_tls_handshake_failed`).
pub(super) async fn admin_tls_step(
    core: &Core,
    stream: &mut ServerStream,
    peer: IpAddr,
    left: Duration,
) -> bool {
    let Some(config) = core.admin_tls_config() else {
        return true;
    };
    let outcome = monoio::time::timeout(left, stream.start_tls(config, 0)).await;
    if let Ok(Ok(())) = outcome {
        bump(&core.stats.admin_tls_handshakes, 1);
        return true;
    }
    bump(&core.stats.admin_tls_handshake_failed, 1);
    match outcome {
        Ok(Err(Refused::NotTls)) => {
            let resp = Refusal::NotTls.response();
            crate::http::write::refuse(&core.stats, stream, resp).await;
        }
        Ok(Err(Refused::Tls(e))) => {
            tracing::debug!(%peer, error = %e, "admin TLS handshake refused");
        }
        _ => tracing::debug!(%peer, "admin TLS handshake did not finish"),
    }
    false
}

/// `GET /fleet`: the fleet's tunnel capacity and load (docs/tunnels.md#fleet). In cluster
/// mode, every node's registry entry as this node last read them (within one heartbeat);
/// on a single node, this node alone from its live figures.
pub(super) fn fleet(core: &Core) -> crate::http::Response {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let shared = &core.shared;
    let body = match &shared.cluster {
        Some(view) => {
            let s = view.snapshot();
            let mut body = crate::fleet::share::fleet_json(&s.nodes, now_ms);
            body["source"] = "redis".into();
            body["redis"] = if s.redis_up { "up" } else { "down" }.into();
            body["node_id"] = view.identity.node_id.clone().into();
            body
        }
        None => {
            let me = alone(core, now_ms);
            let mut body = crate::fleet::share::fleet_json(std::slice::from_ref(&me), now_ms);
            body["source"] = "local".into();
            body["node_id"] = me.node_id.into();
            body
        }
    };
    crate::http::Response::json(200, body.to_string())
}

/// This node as a fleet of one: its live counts, and its tunnel bandwidth over the last
/// second (each worker's tick samples it).
fn alone(core: &Core, now_ms: u64) -> crate::fleet::node::NodeInfo {
    let shared = &core.shared;
    let cfg = core.config();
    let started_ms = now_ms.saturating_sub(shared.started.elapsed().as_millis() as u64);
    let mut id = crate::fleet::view::Identity::of(&cfg, shared.listen);
    id.node_id = "local".into();
    id.internal = None;
    shared.node_info(&cfg, &id, started_ms, now_ms)
}
