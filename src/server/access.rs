//! What the HTTP phase tells the access log (`log.access`, `stats::access`): each step notes
//! what it learned of a public connection on its stream, so that a refusal's line (written by
//! `http::write::refuse`), a bridged request's and an upgraded connection's have it. Every
//! function does nothing when the log is off.

use super::accept::Arrival;
use super::accept::Listener;
use crate::context::Core;
use crate::http::{RequestHead, Route};
use crate::limits::client_ip::client_ip;
use crate::runtime::stream::ServerStream;
use crate::stats::access::{self, Note};
use rustls::ProtocolVersion;

/// A public connection starts its note: the direct peer, or the client a PROXY header or
/// another core named.
pub fn arrived(core: &Core, stream: &mut ServerStream, a: &Arrival) {
    if a.listener != Listener::Public || !core.stats.access.enabled() {
        return;
    }
    let mut note = Note::new(a.accepted_at, a.peer);
    if let Some(client) = a.client {
        note.set_client(client);
    }
    stream.set_access(Some(note));
}

/// The request head is read: the client as resolved through trusted proxies (as admission
/// will resolve it), the method and path (never the query), the TLS version.
pub fn head_read(core: &Core, stream: &mut ServerStream, a: &Arrival, head: &RequestHead) {
    let tls = stream.tls().and_then(|t| match t.negotiated().version {
        Some(ProtocolVersion::TLSv1_3) => Some("1.3"),
        Some(ProtocolVersion::TLSv1_2) => Some("1.2"),
        _ => None,
    });
    let Some(note) = stream.access_mut() else {
        return;
    };
    let sec = &core.config().security;
    let client = a
        .client
        .unwrap_or_else(|| client_ip(a.peer, head, &sec.trusted_proxies, sec.client_ip_header));
    note.set_client(client);
    note.set_request(&head.method, &head.path);
    note.tls = tls;
}

/// The route is known: its name, and the session and role it asks for.
pub fn routed(stream: &mut ServerStream, r: &Route) {
    let Some(note) = stream.access_mut() else {
        return;
    };
    let (route, session, role) = match r {
        Route::Relay(t) => {
            let route = match (t.durable_events, t.role.as_deref()) {
                (true, Some("mobile")) => "mobile",
                (true, _) => "desktop",
                _ => "relay",
            };
            (route, Some(&t.session), t.role.as_ref())
        }
        Route::Bridge { session } => ("bridge", Some(session), None),
        Route::Echo => ("echo", None, None),
        Route::Tunnel(_) => ("tunnel", None, None),
        Route::TunnelAccept { .. } => ("tunnel_accept", None, None),
        Route::Health => ("health", None, None),
        Route::Stats => ("stats", None, None),
        Route::Metrics => ("metrics", None, None),
        Route::Fleet => ("fleet", None, None),
        Route::Demo(_) => ("demo", None, None),
        Route::NotFound => ("none", None, None),
    };
    note.route = route;
    note.session = session.map(|s| s.as_str().into());
    note.role = role.map(|s| s.as_str().into());
}

/// The handshake ran out of time (counted as a `timeout` refusal): its line, when the
/// connection has a note.
pub fn timed_out(core: &Core, stream: &ServerStream) {
    use crate::http::write::AnswerStream;
    access::refused(&core.stats, stream.access_note(), None, "timeout");
}
