//! The HTTP response an agent's answer becomes. The relay owns the framing (its own
//! Content-Length, `Connection: close`) and the contract's security headers; the agent owns
//! the status, the other headers and the body. Every agent's answers share the relay's
//! origin, so by default none may run script there or set cookies for it
//! (`bridge.allow_active_content`, `bridge.pass_cookies`).

use super::headers::forwardable;
use super::message::HttpResponseMsg;
use crate::http::response::{reason, SECURITY_HEADERS};
use std::fmt::Write;

/// Headers of the agent's that the relay sets itself.
const RELAY_OWNED: [&str; 5] = [
    "content-length",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cache-control",
];

/// What the relay lets an agent's answer do on the relay's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Without it the answer is sandboxed (`Content-Security-Policy: sandbox`).
    pub active_content: bool,
    /// Without it the agent's `Set-Cookie` headers are dropped.
    pub cookies: bool,
    /// CORS is the relay's (`cors.allowed_origins` set): the agent's `Access-Control-*`
    /// headers are dropped (bridge/cors.rs).
    pub relay_cors: bool,
}

impl Origin {
    pub fn of(cfg: &crate::config::Config) -> Origin {
        Origin {
            active_content: cfg.bridge.allow_active_content,
            cookies: cfg.bridge.pass_cookies,
            relay_cors: !cfg.cors.allowed_origins.is_empty(),
        }
    }
}

/// The policy added to every sandboxed answer. It is a header of its own, after the agent's
/// own policies, which stay: a browser enforces every policy it is given (CSP Level 3,
/// section 8.1), so the agent can tighten the result but not loosen it, and no merging of
/// directive lists is needed.
pub const SANDBOX: &str = "Content-Security-Policy: sandbox\r\n";

/// Cookie-setting headers an answer may not carry unless `bridge.pass_cookies`.
fn sets_cookie(name: &str) -> bool {
    name.eq_ignore_ascii_case("set-cookie") || name.eq_ignore_ascii_case("set-cookie2")
}

/// Statuses whose responses never carry a body (RFC 9110 sections 15.3.5 and 15.4.5).
fn bodiless(status: u16) -> bool {
    status == 204 || status == 304
}

/// Whether the answer's body is written to the client (it is counted only then).
pub fn sends_body(status: u16, head_request: bool) -> bool {
    !head_request && !bodiless(status)
}

/// The response bytes for `msg`; `head_request` answers a HEAD, whose body is never sent.
pub fn http_response(msg: &HttpResponseMsg, head_request: bool, origin: Origin) -> Vec<u8> {
    let mut head = String::with_capacity(256);
    let _ = write!(head, "HTTP/1.1 {} {}\r\n", msg.status, reason(msg.status));
    let headers = forwardable(&msg.headers);
    for (n, v) in headers
        .iter()
        .filter(|(n, _)| !RELAY_OWNED.contains(&n.as_str()))
        .filter(|(n, _)| origin.cookies || !sets_cookie(n))
        .filter(|(n, _)| !origin.relay_cors || !super::cors::relay_owned(n))
    {
        let _ = write!(head, "{n}: {v}\r\n");
    }
    if !origin.active_content {
        head.push_str(SANDBOX);
    }
    head.push_str(SECURITY_HEADERS);
    let send_body = sends_body(msg.status, head_request);
    if send_body {
        let _ = write!(head, "Content-Length: {}\r\n", msg.body.len());
    } else if head_request && !bodiless(msg.status) {
        // A HEAD answer may say how long the GET body would be; it is the agent's to say.
        let given = headers.iter().find(|(n, v)| {
            n == "content-length" && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
        });
        if let Some((_, v)) = given {
            let _ = write!(head, "Content-Length: {v}\r\n");
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    if send_body {
        out.extend_from_slice(&msg.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(status: u16, headers: &[(&str, &str)], body: &[u8]) -> HttpResponseMsg {
        HttpResponseMsg {
            id: "1".into(),
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    const DEFAULT: Origin = Origin {
        active_content: false,
        cookies: false,
        relay_cors: false,
    };

    fn http_response(msg: &HttpResponseMsg, head_request: bool) -> Vec<u8> {
        super::http_response(msg, head_request, DEFAULT)
    }

    #[test]
    fn answers_are_sandboxed_and_cookieless_unless_allowed() {
        let m = msg(
            200,
            &[
                ("Set-Cookie", "sid=1; Path=/"),
                ("set-cookie", "b=2"),
                ("SET-COOKIE2", "c=3"),
                ("Content-Security-Policy", "default-src 'self'"),
                ("X-Keep", "1"),
            ],
            b"<script>1</script>",
        );
        let t = text(http_response(&m, false));
        let lower = t.to_ascii_lowercase();
        assert!(!lower.contains("set-cookie"), "{t}");
        // The agent's own policy stays; the sandbox is a policy of its own beside it.
        assert!(
            t.contains("content-security-policy: default-src 'self'\r\n"),
            "{t}"
        );
        assert!(t.contains("Content-Security-Policy: sandbox\r\n"), "{t}");
        assert!(t.contains("x-keep: 1\r\n"), "{t}");
        let all = Origin {
            active_content: true,
            cookies: true,
            relay_cors: false,
        };
        let t = text(super::http_response(&m, false, all));
        assert!(!t.contains("sandbox"), "{t}");
        assert_eq!(t.matches("set-cookie: ").count(), 2, "{t}");
        assert!(t.contains("set-cookie2: c=3\r\n"), "{t}");
    }

    #[test]
    fn the_relay_frames_the_answer_and_adds_its_headers() {
        let m = msg(
            201,
            &[
                ("Content-Type", "application/json"),
                ("Content-Length", "999"),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "keep-alive"),
                ("Cache-Control", "max-age=60"),
                ("X-Api", "1"),
            ],
            b"{}",
        );
        let t = text(http_response(&m, false));
        assert!(t.starts_with("HTTP/1.1 201 Created\r\n"), "{t}");
        assert!(t.contains("content-type: application/json\r\n"));
        assert!(t.contains("x-api: 1\r\n"));
        assert!(t.contains("Cache-Control: no-store\r\n"));
        assert!(t.contains("X-Frame-Options: DENY\r\n"));
        assert!(
            t.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n{}"),
            "{t}"
        );
        for gone in ["999", "chunked", "keep-alive", "max-age"] {
            assert!(!t.contains(gone), "{gone} in {t}");
        }
    }

    #[test]
    fn with_relay_cors_the_agent_s_access_control_headers_are_dropped() {
        let m = msg(
            200,
            &[
                ("Access-Control-Allow-Origin", "*"),
                ("access-control-allow-credentials", "true"),
                ("X-Api", "1"),
            ],
            b"",
        );
        let t = text(http_response(&m, false));
        assert_eq!(t.to_ascii_lowercase().matches("access-control-").count(), 2);
        let cors = Origin {
            relay_cors: true,
            ..DEFAULT
        };
        let t = text(super::http_response(&m, false, cors));
        assert!(!t.to_ascii_lowercase().contains("access-control-"), "{t}");
        assert!(t.contains("x-api: 1\r\n"), "{t}");
    }

    #[test]
    fn no_body_for_head_204_and_304() {
        let t = text(http_response(&msg(204, &[], b"x"), false));
        assert!(t.ends_with("Connection: close\r\n\r\n") && !t.contains("Content-Length"));
        let t = text(http_response(
            &msg(304, &[("content-length", "5")], b""),
            false,
        ));
        assert!(!t.contains("Content-Length") && !t.contains("content-length"));
        let t = text(http_response(
            &msg(200, &[("content-length", "5")], b"hello"),
            true,
        ));
        assert!(
            t.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n"),
            "{t}"
        );
        let t = text(http_response(&msg(299, &[], b""), false));
        assert!(t.starts_with("HTTP/1.1 299 \r\n"), "{t}");
    }
}
