//! One bridged request, as the agent performs it, without I/O: the `http_request` becomes
//! the HTTP/1.1 request the local API reads, and the API's response (or the agent's own
//! failure) becomes the `http_response` the relay turns back into HTTP.

use super::target::Target;
use super::upstream::{Fetched, UpstreamError};
use crate::bridge::headers::forwardable;
use crate::bridge::{BridgedRequest, HttpResponseMsg};
use crate::http::client::WireError;
use std::fmt::Write;

/// Request headers that describe the relay's connection, not the request: the agent sets
/// its own `Host` and `Content-Length`; `Expect` was answered by the relay.
const REPLACED: [&str; 4] = ["host", "content-length", "expect", "transfer-encoding"];

/// RFC 9110 section 9.2.2: requests that may be sent twice with the effect of once.
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// The request bytes for the target: its own `Host`, the body framed by `Content-Length`
/// (sent, as curl does, for an empty body only with methods that carry one), the bridged
/// headers in order minus hop-by-hop ones.
pub fn target_request(req: &BridgedRequest, target: &Target) -> Vec<u8> {
    let mut head = String::with_capacity(256 + req.headers.len() * 32);
    let _ = write!(
        head,
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method,
        target.request_target(&req.path),
        target.host
    );
    for (n, v) in forwardable(&req.headers)
        .iter()
        .filter(|(n, _)| !REPLACED.contains(&n.as_str()))
    {
        let _ = write!(head, "{n}: {v}\r\n");
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        let _ = write!(head, "Content-Length: {}\r\n", req.body.len());
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    out
}

/// The answer for the target's response. Hop-by-hop headers stay behind; `Content-Length`
/// is the relay's to set, except on a HEAD answer, where it tells the size of the GET body.
pub fn answer(id: &str, fetched: Fetched, head_request: bool) -> HttpResponseMsg {
    let headers = forwardable(&fetched.headers)
        .into_iter()
        .filter(|(n, _)| head_request || n != "content-length")
        .collect();
    HttpResponseMsg {
        id: id.to_string(),
        status: fetched.status,
        headers,
        body: fetched.body,
    }
}

/// The agent's own failures, each with the contract's JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The target refused or dropped the connection.
    Unreachable,
    /// No whole answer within `--target-timeout`.
    Timeout,
    /// The answer was not valid HTTP, or ended early.
    BadResponse,
    /// The answer's body was over `--max-response-bytes`.
    TooLarge,
    /// `--max-concurrency` requests were already running.
    Busy,
    /// The agent is shutting down.
    Stopping,
    /// The request message was over `--max-message-bytes`.
    RequestTooLarge,
    /// The request message broke the schema.
    BadRequest,
}

impl Failure {
    pub fn of(e: &UpstreamError) -> Failure {
        match e {
            UpstreamError::Connect(_) => Failure::Unreachable,
            UpstreamError::Wire(WireError::BodyTooLarge(_)) => Failure::TooLarge,
            UpstreamError::Write(_) | UpstreamError::Read(_) | UpstreamError::Closed => {
                Failure::BadResponse
            }
            UpstreamError::Wire(_) => Failure::BadResponse,
        }
    }

    /// Status, code and sentence.
    fn parts(self) -> (u16, &'static str, &'static str) {
        match self {
            Failure::Unreachable => (
                502,
                "target_unreachable",
                "the agent cannot connect to its target",
            ),
            Failure::Timeout => (
                504,
                "target_timeout",
                "the target did not answer within the agent's --target-timeout",
            ),
            Failure::BadResponse => (
                502,
                "target_bad_response",
                "the target's answer was not a complete HTTP response",
            ),
            Failure::TooLarge => (
                502,
                "target_response_too_large",
                "the target's answer body is over the agent's --max-response-bytes",
            ),
            Failure::Busy => (
                503,
                "agent_busy",
                "the agent is running --max-concurrency requests; retry shortly",
            ),
            Failure::Stopping => (503, "agent_stopping", "the agent is shutting down"),
            Failure::RequestTooLarge => (
                413,
                "agent_request_too_large",
                "the request is over the agent's --max-message-bytes",
            ),
            Failure::BadRequest => (
                400,
                "bad_bridge_request",
                "the agent could not read the bridged request",
            ),
        }
    }

    #[cfg(test)]
    pub fn status(self) -> u16 {
        self.parts().0
    }

    pub fn code(self) -> &'static str {
        self.parts().1
    }

    pub fn answer(self, id: &str) -> HttpResponseMsg {
        let (status, code, message) = self.parts();
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if status == 503 {
            headers.push(("retry-after".to_string(), "1".to_string()));
        }
        HttpResponseMsg {
            id: id.to_string(),
            status,
            headers,
            body: serde_json::json!({ "error": message, "code": code })
                .to_string()
                .into_bytes(),
        }
    }
}

/// A string field's value at the start of `rest`, up to its closing quote: relay ids and
/// keys are hex, so they have no escapes.
fn plain_string(rest: &[u8]) -> Option<(&str, &[u8])> {
    let end = rest.iter().position(|&b| b == b'"')?;
    let value = std::str::from_utf8(&rest[..end]).ok()?;
    (!value.is_empty()
        && value.len() <= crate::bridge::message::MAX_ID_LEN
        && !value.contains('\\'))
    .then(|| (value, &rest[end + 1..]))
}

/// The id and key of a request whose message was cut (over the limit): the relay writes
/// `id`, then `relay_key` when it gave one, right after `type`, so both are in the kept start.
pub fn cut_request(start: &[u8]) -> Option<(String, Option<String>)> {
    let rest = start.strip_prefix(br#"{"type":"http_request","id":""#.as_slice())?;
    let (id, rest) = plain_string(rest)?;
    let key = rest
        .strip_prefix(br#","relay_key":""#.as_slice())
        .and_then(plain_string)
        .map(|(k, _)| k.to_string());
    Some((id.to_string(), key))
}

/// Whether a request is the relay's: it carries the key this connection was given at its
/// upgrade. A relay that gave no key (an older one) marks nothing, and then every request
/// counts as its own.
pub fn from_relay(expected: Option<&str>, carried: Option<&str>) -> bool {
    match expected {
        None => true,
        Some(k) => carried.is_some_and(|c| {
            // Not secret-dependent timing worth guarding against for a 32-digit key read over
            // the network, but cheap to avoid: compare every byte.
            c.len() == k.len()
                && c.bytes()
                    .zip(k.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::target::parse_target;

    fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> BridgedRequest {
        BridgedRequest {
            id: "1".into(),
            relay_key: None,
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn the_target_gets_its_own_host_and_framing() {
        let t = parse_target("http://127.0.0.1:3000/api", false).unwrap();
        let r = req(
            "POST",
            "/users?x=1",
            &[
                ("host", "relay.example"),
                ("content-type", "application/json"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("te", "trailers"),
                ("transfer-encoding", "chunked"),
                ("x-a", "1"),
                ("x-a", "2"),
            ],
            b"{}",
        );
        let got = String::from_utf8(target_request(&r, &t)).unwrap();
        assert_eq!(
            got,
            "POST /api/users?x=1 HTTP/1.1\r\nHost: 127.0.0.1:3000\r\ncontent-type: application/json\r\n\
             x-a: 1\r\nx-a: 2\r\nContent-Length: 2\r\n\r\n{}"
        );
        // The request parses as the target would read it.
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut p = httparse::Request::new(&mut headers);
        assert!(p.parse(got.as_bytes()).unwrap().is_complete());
        let get = String::from_utf8(target_request(&req("GET", "/", &[], b""), &t)).unwrap();
        assert_eq!(get, "GET /api/ HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n\r\n");
        let put = String::from_utf8(target_request(&req("PUT", "/", &[], b""), &t)).unwrap();
        assert!(put.ends_with("Content-Length: 0\r\n\r\n"), "{put}");
    }

    #[test]
    fn answers_keep_the_targets_headers_but_hop_by_hop_and_length() {
        let f = Fetched {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("Content-Length".into(), "5".into()),
                ("Connection".into(), "keep-alive".into()),
                ("Keep-Alive".into(), "timeout=5".into()),
                ("Set-Cookie".into(), "a=1".into()),
                ("Set-Cookie".into(), "b=2".into()),
            ],
            dropped_headers: 0,
            body: b"hello".to_vec(),
        };
        let a = answer("9", f.clone(), false);
        let names: Vec<&str> = a.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "set-cookie", "set-cookie"]);
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
        let head = answer("9", f, true);
        assert!(head
            .headers
            .contains(&("content-length".into(), "5".into())));
    }

    #[test]
    fn failures_are_json_answers_the_relay_accepts() {
        for f in [
            Failure::Unreachable,
            Failure::Timeout,
            Failure::BadResponse,
            Failure::TooLarge,
            Failure::Busy,
            Failure::Stopping,
            Failure::RequestTooLarge,
            Failure::BadRequest,
        ] {
            let json = f.answer("ab").to_json();
            let back = crate::bridge::parse_response(json.as_bytes(), 1 << 10).unwrap();
            assert_eq!(back.status, f.status());
            let body: serde_json::Value = serde_json::from_slice(&back.body).unwrap();
            assert_eq!(body["code"], f.code());
            assert!(body["error"].is_string());
        }
        assert_eq!(Failure::of(&UpstreamError::Closed), Failure::BadResponse);
        assert_eq!(
            Failure::of(&UpstreamError::Wire(WireError::BodyTooLarge(1))),
            Failure::TooLarge
        );
    }

    #[test]
    fn a_cut_requests_id_and_key_are_found_in_its_start() {
        let start = br#"{"type":"http_request","id":"1f","method":"POST","path":"/","#;
        assert_eq!(cut_request(start), Some(("1f".into(), None)));
        let keyed = br#"{"type":"http_request","id":"1f","relay_key":"k9","method":"#;
        assert_eq!(cut_request(keyed), Some(("1f".into(), Some("k9".into()))));
        let cut_key = br#"{"type":"http_request","id":"1f","relay_key":"k9"#;
        assert_eq!(cut_request(cut_key), Some(("1f".into(), None)));
        assert_eq!(cut_request(br#"{"type":"http_request","id":"1f"#), None);
        assert_eq!(cut_request(br#"{"id":"1f","type":"http_request"}"#), None);
        assert!(from_relay(None, None) && from_relay(None, Some("x")));
        assert!(from_relay(Some("k9"), Some("k9")));
        assert!(!from_relay(Some("k9"), None));
        assert!(!from_relay(Some("k9"), Some("k8")));
        assert!(!from_relay(Some("k9"), Some("k9 ")));
        assert!(
            idempotent("GET") && idempotent("PUT") && !idempotent("POST") && !idempotent("PATCH")
        );
    }
}
