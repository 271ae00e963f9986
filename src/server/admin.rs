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
