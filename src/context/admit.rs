//! The checks every public WebSocket and bridge request passes, once, on its client address's
//! home core, before it is upgraded or handed to its session's core: the per-IP connection
//! rate (cheapest first, so a flood of bad tokens costs no HMAC), the Origin, the token, then
//! the client's count of open connections. A verified client certificate stands in for a
//! missing token through `tls.client_grants`. Relay, compatible paths, echo and bridge all go
//! through this one function. What admission learned, `Admitted`, is plain data in
//! `limits::admit`, so the parcel a connection crosses cores with (`session::handoff`) can
//! carry it without naming the worker's context.

use super::Core;
use crate::auth::{token_from_request, unix_now, AuthError, Authenticator, Claims};
use crate::config::{EchoRoute, SecurityConfig};
use crate::http::route::Route;
use crate::http::RequestHead;
use crate::limits::admit::Admitted;
use crate::limits::{IpCharge, Refusal};
use crate::runtime::tls::TlsSession;
use crate::stats::bump;
use std::net::IpAddr;

/// Counts one more open connection for `ip` (on its home core, this one), or refuses it.
pub fn count_open(core: &Core, ip: IpAddr) -> Result<IpCharge, Refusal> {
    core.ip_limits
        .open(ip, core.clock.now_ms())
        .map_err(Refusal::IpOpen)
}

/// `None` when the request's Origin may connect. Browsers always send one on a WebSocket
/// upgrade; native clients usually do not.
pub fn origin_refusal(sec: &SecurityConfig, head: &RequestHead) -> Option<&'static str> {
    match head.header_count("origin") {
        0 if sec.require_origin => Some("an Origin header is required"),
        0 => None,
        1 => {
            let origin = head.header("origin").unwrap_or_default();
            let allowed = sec
                .allowed_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
            (!allowed).then_some("this origin may not connect")
        }
        _ => Some("more than one Origin header"),
    }
}

/// Checks the credentials, when auth is on, for what `route` asks for; returns the role
/// granted. A token, when the request carries one, decides alone, as it always has (a bad
/// token is refused even from a client whose certificate a grant names: a client that sends
/// a token means it). Without one, a client certificate the TLS handshake verified stands in
/// for it through the grants of `tls.client_grants` (docs/auth.md).
fn authorize(
    core: &Core,
    head: &RequestHead,
    route: &Route,
    tls: Option<&TlsSession>,
) -> Result<Option<String>, Refusal> {
    let requested = match route {
        Route::Relay(t) => t.role.clone(),
        _ => None,
    };
    let Some(auth) = core.auth() else {
        return Ok(requested);
    };
    if *route == Route::Echo && core.config().security.echo_route == EchoRoute::Open {
        return Ok(None);
    }
    let refuse = |e: AuthError| {
        tracing::debug!(code = e.code(), path = %head.path, "token refused");
        Refusal::Auth(e)
    };
    let cfg = core.config();
    let agent = cfg.bridge.agent_role.as_str();
    let Some(token) = token_from_request(head).map_err(refuse)? else {
        return by_certificate(core, &auth, tls, route, requested.as_deref(), agent);
    };
    let (claims, key) = auth.check(&token, unix_now()).map_err(refuse)?;
    let role = decide(&claims, route, requested.as_deref(), agent).map_err(refuse)?;
    if let Some(key) = key {
        bump(&core.stats.api_key_admitted, 1);
        tracing::debug!(
            key = key.name.as_deref().unwrap_or("-"),
            "admitted by API key"
        );
    }
    Ok(role)
}

/// What `claims` (a token's, or a certificate grant's) allow `route` with the `requested`
/// role: the role granted.
fn decide(
    claims: &Claims,
    route: &Route,
    requested: Option<&str>,
    agent: &str,
) -> Result<Option<String>, AuthError> {
    match route {
        Route::Relay(t) => {
            let role = claims.grant(&t.session, requested)?;
            // The agent receives every bridged request, with its cookies and body: taking
            // its seat (and replacing a live agent) needs a credential made for it, not
            // merely one that names no role.
            if role.as_deref() == Some(agent) && claims.role.as_deref() != Some(agent) {
                return Err(AuthError::WrongRole);
            }
            Ok(role)
        }
        Route::Bridge { session } => claims.grant(session, None),
        _ => Ok(None),
    }
}

/// Admission of a request without a token by its verified client certificate: the first
/// grant naming the certificate that covers the request admits it. A certificate no grant
/// names is refused 401 (a token would still do); one whose grants fall short, 403, with
/// the most specific reason (another role over another session). No certificate, or no
/// grants configured: the token is missing, as before.
fn by_certificate(
    core: &Core,
    auth: &Authenticator,
    tls: Option<&TlsSession>,
    route: &Route,
    requested: Option<&str>,
    agent: &str,
) -> Result<Option<String>, Refusal> {
    let names = match tls.and_then(TlsSession::client_names) {
        Some(names) if !auth.grants().is_empty() => names,
        _ => {
            tracing::debug!(code = AuthError::Missing.code(), "token refused");
            return Err(Refusal::Auth(AuthError::Missing));
        }
    };
    let mut refused = AuthError::CertNotGranted;
    for claims in auth.grants().matching(&names) {
        match decide(claims, route, requested, agent) {
            Ok(role) => {
                bump(&core.stats.client_cert_admitted, 1);
                tracing::debug!(
                    client_cert = names.display(),
                    "admitted by client certificate"
                );
                return Ok(role);
            }
            Err(e) if refused != AuthError::CertWrongRole => refused = e.for_certificate(),
            Err(_) => {}
        }
    }
    bump(&core.stats.client_cert_refused, 1);
    tracing::debug!(
        client_cert = names.display(),
        code = refused.code(),
        "client certificate refused"
    );
    Err(Refusal::Auth(refused))
}

/// The per-IP connection rate, then the Origin: what every public request passes before its
/// credentials are looked at.
fn gate(core: &Core, head: &RequestHead, ip: IpAddr) -> Result<(), Refusal> {
    // A fresh reading (one per handshake, not per message): the coarse tick may be a second
    // old, which would skew a rate of a few per second.
    if let Err(r) = core.ip_limits.admit_connect(ip, core.clock.tick()) {
        return Err(Refusal::IpRate(r));
    }
    if let Some(reason) = origin_refusal(&core.config().security, head) {
        return Err(Refusal::Origin(reason));
    }
    Ok(())
}

/// Admits a connection for a proxy route (`proxy.routes`) from `ip` on `ip`'s home core: the
/// rate, the Origin and the count of open connections, as every public request. A token is
/// the route's own affair (`auth = true`), checked by the proxy on each request.
pub fn admit_proxied(core: &Core, head: &RequestHead, ip: IpAddr) -> Result<Admitted, Refusal> {
    gate(core, head, ip)?;
    let charge = count_open(core, ip)?;
    Ok(Admitted {
        ip,
        role: None,
        charge: Some(charge),
    })
}

/// Admits a request from `ip` (the client, already resolved) on `ip`'s home core.
/// `tls`: the connection's TLS session, whose verified client certificate may stand in for a
/// token.
pub fn admit(
    core: &Core,
    head: &RequestHead,
    ip: IpAddr,
    route: &Route,
    tls: Option<&TlsSession>,
) -> Result<Admitted, Refusal> {
    gate(core, head, ip)?;
    let role = authorize(core, head, route, tls)?;
    // Counted from here until the connection ends, wherever it then lives: the count and its
    // limit are on this core, the client's home.
    let charge = count_open(core, ip)?;
    Ok(Admitted {
        ip,
        role,
        charge: Some(charge),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(origins: &[&str]) -> RequestHead {
        let headers: Vec<(&str, &str)> = origins.iter().map(|o| ("origin", *o)).collect();
        RequestHead::with_headers("GET", "/v1/relay/s", &headers)
    }

    fn sec(allowed: &[&str], require: bool) -> SecurityConfig {
        SecurityConfig {
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
            require_origin: require,
            ..SecurityConfig::default()
        }
    }

    #[test]
    fn origins() {
        let s = sec(&["https://app.example"], false);
        assert_eq!(origin_refusal(&s, &head(&[])), None);
        assert_eq!(origin_refusal(&s, &head(&["https://app.example"])), None);
        assert_eq!(origin_refusal(&s, &head(&["https://APP.example"])), None);
        assert!(origin_refusal(&s, &head(&["https://evil.example"])).is_some());
        assert!(origin_refusal(&s, &head(&["null"])).is_some());
        assert!(origin_refusal(&s, &head(&["https://app.example", "https://x"])).is_some());
        let any = sec(&["*"], false);
        assert_eq!(origin_refusal(&any, &head(&["null"])), None);
        let none = sec(&[], false);
        assert!(origin_refusal(&none, &head(&["https://app.example"])).is_some());
        assert_eq!(origin_refusal(&none, &head(&[])), None);
        let required = sec(&["*"], true);
        assert!(origin_refusal(&required, &head(&[])).is_some());
    }
}
