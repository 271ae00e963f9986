//! CORS on the HTTP bridge: a page on another origin calls an API on a user's machine
//! through the relay (docs/bridge.md, "CORS"). Decided from the request head alone, before
//! admission, with no I/O:
//! - off while `cors.allowed_origins` is empty: no CORS headers, and a preflight is an
//!   `OPTIONS` request like any other, for the agent to answer (as before CORS existed);
//! - a preflight from an allowed origin is answered by the relay (204), before any token
//!   check: browsers send no credentials on a preflight, so the agent could never be reached
//!   with one;
//! - a preflight from any other origin gets 403 and no CORS headers;
//! - every other answer to an allowed origin, refusals included, carries
//!   `Access-Control-Allow-Origin` (that origin), `Access-Control-Expose-Headers` and
//!   `Vary: Origin`: a page that cannot read why it was refused cannot do anything about it.
//!
//! No `Access-Control-Allow-Credentials`: the bridge's credential is a bearer token the page
//! sends in `Authorization`, never a cookie, so a page never needs the browser's cookies or
//! client certificates sent along.

use crate::config::CorsConfig;
use crate::http::{RequestHead, Response};

/// What CORS makes of one request on the bridge's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// CORS is off (`cors.allowed_origins` empty): the request goes on as before.
    Off,
    /// A preflight from an allowed origin: the relay's own answer.
    Preflight(Response),
    /// A preflight from an origin that is not allowed (or from no single origin).
    Refused,
    /// Not a preflight: every answer to it carries these header lines (each ending in CRLF),
    /// empty for a request from no allowed origin.
    Answers(String),
}

/// Whether the request is the bridge's (`/v1/http/...`), where CORS applies.
pub fn on_bridge_path(head: &RequestHead) -> bool {
    head.path.starts_with("/v1/http/")
}

/// A CORS preflight (Fetch standard, "CORS-preflight request"): `OPTIONS` with an `Origin`
/// and `Access-Control-Request-Method`. An `OPTIONS` without them is an ordinary request.
fn is_preflight(head: &RequestHead) -> bool {
    head.method == "OPTIONS"
        && head.header_count("origin") > 0
        && head.header_count("access-control-request-method") > 0
}

/// The request's origin when it is allowed: exactly one `Origin` header, listed (in any
/// letter case) or allowed by `*`. `*` never admits `null`, the origin of sandboxed frames
/// and local files, which every page sandboxed by the bridge itself would share.
fn allowed_origin<'h>(cfg: &CorsConfig, head: &'h RequestHead) -> Option<&'h str> {
    if head.header_count("origin") != 1 {
        return None;
    }
    let origin = head.header("origin")?.trim();
    // Echoed into a header: only visible ASCII, as every serialised origin is (a `*` would
    // otherwise echo whatever the client wrote).
    if !origin.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let listed = cfg
        .allowed_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin) || (o == "*" && origin != "null"));
    (listed && !origin.is_empty()).then_some(origin)
}

/// Decides what CORS makes of `head`, a request on the bridge's path; `methods` are
/// `bridge.allowed_methods`.
pub fn classify(cfg: &CorsConfig, methods: &[String], head: &RequestHead) -> Cors {
    if cfg.allowed_origins.is_empty() {
        return Cors::Off;
    }
    let origin = allowed_origin(cfg, head);
    match (is_preflight(head), origin) {
        (true, Some(origin)) => Cors::Preflight(preflight(cfg, methods, head, origin)),
        (true, None) => Cors::Refused,
        (false, Some(origin)) => Cors::Answers(answer_lines(cfg, origin)),
        (false, None) => Cors::Answers(String::new()),
    }
}

/// The relay's answer to an allowed preflight: 204, the bridge's methods, the requested
/// headers that `cors.allowed_headers` lists (in the browser's own spelling, lower-cased),
/// and how long the browser may reuse it.
fn preflight(cfg: &CorsConfig, methods: &[String], head: &RequestHead, origin: &str) -> Response {
    let mut granted: Vec<String> = Vec::new();
    for line in head
        .headers
        .iter()
        .filter(|(n, _)| n == "access-control-request-headers")
    {
        for name in line.1.split(',').map(|h| h.trim().to_ascii_lowercase()) {
            if cfg.allowed_headers.contains(&name) && !granted.contains(&name) {
                granted.push(name);
            }
        }
    }
    let mut r = Response {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    }
    .with_header("Access-Control-Allow-Origin", origin)
    .with_header("Access-Control-Allow-Methods", methods.join(", "));
    if !granted.is_empty() {
        r = r.with_header("Access-Control-Allow-Headers", granted.join(", "));
    }
    r.with_header("Access-Control-Max-Age", cfg.max_age.as_secs().to_string())
        .with_header("Vary", "Origin")
}

/// The lines every other answer to `origin` carries.
fn answer_lines(cfg: &CorsConfig, origin: &str) -> String {
    let mut lines = format!("Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n");
    if !cfg.expose_headers.is_empty() {
        lines.push_str("Access-Control-Expose-Headers: ");
        lines.push_str(&cfg.expose_headers.join(", "));
        lines.push_str("\r\n");
    }
    lines
}

/// A header of the agent's answer that the relay owns while CORS is on (`Access-Control-*`):
/// two `Access-Control-Allow-Origin` headers make a browser refuse the answer, and an agent
/// must not widen what the operator allowed.
pub fn relay_owned(name: &str) -> bool {
    let n = name.as_bytes();
    n.len() > 15 && n[..15].eq_ignore_ascii_case(b"access-control-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;
    use std::time::Duration;

    fn cfg(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: vec!["x-request-id".into()],
            max_age: Duration::from_secs(600),
        }
    }

    fn head(method: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut req = format!("{method} /v1/http/s/api HTTP/1.1\r\nHost: x\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        parse_head(req.as_bytes(), 8192, 32).unwrap().unwrap().0
    }

    fn methods() -> Vec<String> {
        vec!["GET".into(), "POST".into(), "OPTIONS".into()]
    }

    fn header<'r>(r: &'r Response, name: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    const APP: &str = "https://app.example";

    fn preflight_of(origin: &str, asked: &str) -> RequestHead {
        head(
            "OPTIONS",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", asked),
            ],
        )
    }

    #[test]
    fn off_without_origins() {
        let h = preflight_of(APP, "authorization");
        assert_eq!(classify(&cfg(&[]), &methods(), &h), Cors::Off);
    }

    #[test]
    fn an_allowed_preflight_is_answered_with_what_it_may_do() {
        let h = preflight_of(
            "https://APP.example",
            "Authorization, X-Secret, content-type",
        );
        let Cors::Preflight(r) = classify(&cfg(&[APP]), &methods(), &h) else {
            panic!("not answered");
        };
        assert_eq!(r.status, 204);
        assert_eq!(
            header(&r, "Access-Control-Allow-Origin"),
            Some("https://APP.example")
        );
        assert_eq!(
            header(&r, "Access-Control-Allow-Methods"),
            Some("GET, POST, OPTIONS")
        );
        assert_eq!(
            header(&r, "Access-Control-Allow-Headers"),
            Some("authorization, content-type")
        );
        assert_eq!(header(&r, "Access-Control-Max-Age"), Some("600"));
        assert_eq!(header(&r, "Vary"), Some("Origin"));
        assert_eq!(header(&r, "Access-Control-Allow-Credentials"), None);
        let bytes = String::from_utf8(r.to_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 204 No Content\r\n"), "{bytes}");
        assert!(!bytes.contains("Content-Length"), "{bytes}");
    }

    #[test]
    fn other_origins_and_null_are_refused() {
        let c = cfg(&[APP]);
        for origin in ["https://evil.example", "null", "https://app.example.evil"] {
            assert_eq!(
                classify(&c, &methods(), &preflight_of(origin, "")),
                Cors::Refused
            );
        }
        let any = cfg(&["*"]);
        assert_eq!(
            classify(&any, &methods(), &preflight_of("null", "")),
            Cors::Refused
        );
        assert!(matches!(
            classify(&any, &methods(), &preflight_of("https://x.example", "")),
            Cors::Preflight(_)
        ));
        // Two Origin headers are no origin at all.
        let two = head(
            "OPTIONS",
            &[
                ("Origin", APP),
                ("Origin", "https://evil.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
        );
        assert_eq!(classify(&c, &methods(), &two), Cors::Refused);
    }

    #[test]
    fn other_requests_carry_the_lines_when_their_origin_is_allowed() {
        let c = cfg(&[APP]);
        let lines = "Access-Control-Allow-Origin: https://app.example\r\nVary: Origin\r\nAccess-Control-Expose-Headers: x-request-id\r\n";
        let get = head("GET", &[("Origin", APP)]);
        assert_eq!(classify(&c, &methods(), &get), Cors::Answers(lines.into()));
        // An OPTIONS that is no preflight goes on, for the agent.
        let plain = head("OPTIONS", &[("Origin", APP)]);
        assert_eq!(
            classify(&c, &methods(), &plain),
            Cors::Answers(lines.into())
        );
        let other = head("GET", &[("Origin", "https://evil.example")]);
        assert_eq!(
            classify(&c, &methods(), &other),
            Cors::Answers(String::new())
        );
        let none = head("GET", &[]);
        assert_eq!(
            classify(&c, &methods(), &none),
            Cors::Answers(String::new())
        );
    }

    #[test]
    fn the_agent_s_access_control_headers_are_the_relay_s() {
        assert!(relay_owned("access-control-allow-origin"));
        assert!(relay_owned("Access-Control-Expose-Headers"));
        assert!(!relay_owned("access-control-"));
        assert!(!relay_owned("content-type"));
    }
}
