//! The HTTP response an agent's answer becomes. The relay owns the framing (its own
//! Content-Length, `Connection: close`) and the contract's security headers; the agent owns
//! the status, the other headers and the body.

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

/// Statuses whose responses never carry a body (RFC 9110 sections 15.3.5 and 15.4.5).
fn bodiless(status: u16) -> bool {
    status == 204 || status == 304
}

/// Whether the answer's body is written to the client (it is counted only then).
pub fn sends_body(status: u16, head_request: bool) -> bool {
    !head_request && !bodiless(status)
}

/// The response bytes for `msg`; `head_request` answers a HEAD, whose body is never sent.
pub fn http_response(msg: &HttpResponseMsg, head_request: bool) -> Vec<u8> {
    let mut head = String::with_capacity(256);
    let _ = write!(head, "HTTP/1.1 {} {}\r\n", msg.status, reason(msg.status));
    let headers = forwardable(&msg.headers);
    for (n, v) in headers
        .iter()
        .filter(|(n, _)| !RELAY_OWNED.contains(&n.as_str()))
    {
        let _ = write!(head, "{n}: {v}\r\n");
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
