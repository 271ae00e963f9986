//! Which route a request head names, and validation of session ids and roles.

use super::RequestHead;

pub const MAX_SESSION_LEN: usize = 128;
pub const MAX_ROLE_LEN: usize = 32;

/// A WebSocket relay request, resolved to its session and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    pub session: String,
    pub role: Option<String>,
    pub events: bool,
    /// `resume=N`: the client has fully processed N messages of this session and role, and
    /// wants the rest again (docs/durability.md).
    pub resume: Option<u64>,
    /// Came in on `/desktop/{id}` or `/mobile/{id}`: its events take the Durable Object
    /// relay's shapes (session/events/durable.rs).
    pub durable_events: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Relay(RelayTarget),
    Echo,
    Health,
    /// Admin listener only.
    Stats,
    /// Admin listener only.
    Metrics,
    /// `/fleet` (admin listener): the fleet's tunnel capacity and load (docs/tunnels.md).
    Fleet,
    /// `/demo` and its files (docs/demo.md).
    Demo(DemoAsset),
    /// `/v1/http/{session}/...`: belongs to the HTTP bridge.
    Bridge {
        session: String,
    },
    /// `/v1/tunnel`: a tunnel's control connection (docs/tunnels.md). Its options are judged
    /// after the upgrade, where a bad one is answered with an `error` event.
    Tunnel(TunnelAsk),
    /// `/v1/tunnel/accept/{id}`: the data connection of one public connection.
    TunnelAccept {
        id: String,
    },
    NotFound,
}

/// What a tunnel's control request asks for, as sent (`tunnel::ask` judges it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelAsk {
    /// `?port=N`.
    pub port: Option<String>,
    /// `?resume=KEY`: the key `tunnel_open` gave a tunnel that dropped.
    pub resume: Option<String>,
    /// `?moved=1`: the client follows another node's `moved`; it is never sent on again
    /// (one hop at most).
    pub moved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

impl RouteError {
    /// The refusal, with the contract's JSON body.
    pub fn response(&self) -> super::Response {
        super::Response::error(self.status, self.code, self.message)
    }
}

fn bad(code: &'static str, message: &'static str) -> RouteError {
    RouteError {
        status: 400,
        code,
        message,
    }
}

pub fn valid_session_id(s: &str) -> bool {
    (1..=MAX_SESSION_LEN).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._~-".contains(&c))
}

pub fn valid_role(s: &str) -> bool {
    (1..=MAX_ROLE_LEN).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn flag(v: Option<String>) -> bool {
    matches!(
        v.as_deref(),
        Some("1") | Some("true") | Some("yes") | Some("")
    )
}

/// Resolves the route. The session is validated here, before any cross-core handoff, so the
/// owner core only ever sees well-formed ids.
pub fn route(head: &RequestHead) -> Result<Route, RouteError> {
    let path = head.path.as_str();
    // Before `resume` is read as a message count: a tunnel's resume is a key.
    if path == "/v1/tunnel" {
        return Ok(Route::Tunnel(TunnelAsk {
            port: head.query_param("port"),
            resume: head.query_param("resume"),
            moved: flag(head.query_param("moved")),
        }));
    }
    if let Some(id) = path.strip_prefix("/v1/tunnel/accept/") {
        return Ok(Route::TunnelAccept { id: id.to_string() });
    }
    let invalid_resume = || {
        bad(
            "invalid_resume",
            "resume must be the count of messages processed, a non-negative integer",
        )
    };
    let resume = match head.query_param("resume") {
        None => None,
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Some(v.parse().map_err(|_| invalid_resume())?)
        }
        Some(_) => return Err(invalid_resume()),
    };
    let relay = |session: &str, role: Option<String>, events: bool| -> Result<Route, RouteError> {
        if !valid_session_id(session) {
            return Err(bad(
                "invalid_session",
                "session id must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ -",
            ));
        }
        if let Some(r) = &role {
            if !valid_role(r) {
                return Err(bad(
                    "invalid_role",
                    "role must be 1 to 32 characters of a-z 0-9 _ -",
                ));
            }
        }
        Ok(Route::Relay(RelayTarget {
            session: session.to_string(),
            role,
            events,
            resume,
            durable_events: false,
        }))
    };
    let durable = |r: Result<Route, RouteError>| match r {
        Ok(Route::Relay(t)) => Ok(Route::Relay(RelayTarget {
            durable_events: true,
            ..t
        })),
        other => other,
    };
    if let Some(session) = path.strip_prefix("/v1/relay/") {
        return relay(
            session,
            head.query_param("role"),
            flag(head.query_param("events")),
        );
    }
    if let Some(session) = path.strip_prefix("/desktop/") {
        return durable(relay(session, Some("desktop".into()), true));
    }
    if let Some(session) = path.strip_prefix("/mobile/") {
        return durable(relay(session, Some("mobile".into()), true));
    }
    if let Some(rest) = path.strip_prefix("/v1/http/") {
        let session = rest.split('/').next().unwrap_or("");
        if !valid_session_id(session) {
            return Err(bad(
                "invalid_session",
                "session id must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ -",
            ));
        }
        return Ok(Route::Bridge {
            session: session.to_string(),
        });
    }
    if let Some(asset) = DemoAsset::of(path) {
        return Ok(Route::Demo(asset));
    }
    Ok(match path {
        "/v1/echo" => Route::Echo,
        "/health" => Route::Health,
        "/stats" => Route::Stats,
        "/metrics" => Route::Metrics,
        "/fleet" => Route::Fleet,
        _ => Route::NotFound,
    })
}

/// A file of the demo page (docs/demo.md); its contents are `demo`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoAsset {
    Page,
    Script,
    /// The page's RelayClient: clients/js's built `dist/index.js`, committed.
    Client,
    Style,
    Icon,
}

impl DemoAsset {
    /// The asset a path names, if any.
    pub fn of(path: &str) -> Option<DemoAsset> {
        match path {
            "/demo" | "/demo/" => Some(DemoAsset::Page),
            "/demo/app.js" => Some(DemoAsset::Script),
            "/demo/ringrelay-client.js" => Some(DemoAsset::Client),
            "/demo/app.css" => Some(DemoAsset::Style),
            "/demo/favicon.svg" => Some(DemoAsset::Icon),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn r(target: &str) -> Result<Route, RouteError> {
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        route(&parse_head(req.as_bytes(), 8192, 16).unwrap().unwrap().0)
    }

    #[test]
    fn relay_routes() {
        assert_eq!(
            r("/v1/relay/s-1.x~_?role=agent&events=1"),
            Ok(Route::Relay(RelayTarget {
                session: "s-1.x~_".into(),
                role: Some("agent".into()),
                events: true,
                resume: None,
                durable_events: false,
            }))
        );
        assert_eq!(
            r("/v1/relay/s"),
            Ok(Route::Relay(RelayTarget {
                session: "s".into(),
                role: None,
                events: false,
                resume: None,
                durable_events: false,
            }))
        );
        assert_eq!(
            r("/mobile/s"),
            Ok(Route::Relay(RelayTarget {
                session: "s".into(),
                role: Some("mobile".into()),
                events: true,
                resume: None,
                durable_events: true,
            }))
        );
        match r("/v1/relay/s?resume=0") {
            Ok(Route::Relay(t)) => assert_eq!(t.resume, Some(0)),
            other => panic!("{other:?}"),
        }
        match r("/v1/relay/s?role=b&resume=18446744073709551615") {
            Ok(Route::Relay(t)) => assert_eq!(t.resume, Some(u64::MAX)),
            other => panic!("{other:?}"),
        }
        for bad in ["-1", "", "1e3", "x", "99999999999999999999"] {
            let e = r(&format!("/v1/relay/s?resume={bad}")).unwrap_err();
            assert_eq!((e.status, e.code), (400, "invalid_resume"), "{bad:?}");
        }
        assert_eq!(r("/v1/echo"), Ok(Route::Echo));
        assert_eq!(
            r("/v1/tunnel?resume=ab&port=20001"),
            Ok(Route::Tunnel(TunnelAsk {
                port: Some("20001".into()),
                resume: Some("ab".into()),
                moved: false,
            }))
        );
        assert!(matches!(r("/v1/tunnel?moved=1"), Ok(Route::Tunnel(t)) if t.moved));
        assert_eq!(
            r("/v1/tunnel/accept/00ff"),
            Ok(Route::TunnelAccept { id: "00ff".into() })
        );
        assert_eq!(r("/nope"), Ok(Route::NotFound));
    }

    #[test]
    fn bad_ids_and_roles_are_400() {
        let long = "a".repeat(129);
        for t in [
            "/v1/relay/",
            "/v1/relay/a%20b",
            "/v1/relay/a*",
            "/v1/relay/a/b",
            "/v1/relay/%41",
            &format!("/v1/relay/{long}"),
        ] {
            assert_eq!(r(t).unwrap_err().status, 400, "{t}");
        }
        assert_eq!(
            r(&format!("/v1/relay/{}", "a".repeat(128))).map(|_| ()),
            Ok(())
        );
        for role in ["A", "x%20y", "", &"r".repeat(33)] {
            assert_eq!(
                r(&format!("/v1/relay/s?role={role}")).unwrap_err().code,
                "invalid_role",
                "{role}"
            );
        }
    }
}
