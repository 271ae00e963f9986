//! Validation of a WebSocket upgrade request (RFC 6455 section 4.2.1).

use super::{RequestHead, Response};
use base64::Engine;

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Checks the upgrade headers and returns the client's key, or the refusal to send.
pub fn check_upgrade(head: &RequestHead) -> Result<String, Response> {
    if head.method != "GET" {
        return Err(Response::error(
            405,
            "method_not_allowed",
            "WebSocket routes accept GET only",
        )
        .with_header("Allow", "GET"));
    }
    if head.version != 1 {
        return Err(Response::error(
            400,
            "bad_upgrade",
            "WebSocket upgrade needs HTTP/1.1",
        ));
    }
    if head.header("host").is_none() {
        return Err(Response::error(400, "bad_upgrade", "missing Host header"));
    }
    if !has_token(head.header("upgrade"), "websocket")
        || !has_token(head.header("connection"), "upgrade")
    {
        return Err(Response::error(
            400,
            "bad_upgrade",
            "expected Upgrade: websocket and Connection: Upgrade",
        ));
    }
    if head.header("sec-websocket-version") != Some("13") {
        return Err(Response::error(
            426,
            "unsupported_version",
            "only WebSocket version 13 is supported",
        )
        .with_header("Sec-WebSocket-Version", "13"));
    }
    let key = match head.header("sec-websocket-key") {
        Some(k) if head.header_count("sec-websocket-key") == 1 => k,
        _ => {
            return Err(Response::error(
                400,
                "bad_upgrade",
                "missing or repeated Sec-WebSocket-Key",
            ))
        }
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(key.to_string()),
        _ => Err(Response::error(
            400,
            "bad_upgrade",
            "Sec-WebSocket-Key must be 16 bytes in base64",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn check(extra: &str, method: &str) -> Result<String, u16> {
        let req = format!("{method} /v1/echo HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        check_upgrade(&parse_head(req.as_bytes(), 8192, 32).unwrap().unwrap().0)
            .map_err(|r| r.status)
    }

    const GOOD: &str = "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn statuses() {
        assert_eq!(check(GOOD, "GET"), Ok("dGhlIHNhbXBsZSBub25jZQ==".into()));
        assert_eq!(check(GOOD, "POST"), Err(405));
        assert_eq!(check(&GOOD.replace("13", "8"), "GET"), Err(426));
        assert_eq!(check(&GOOD.replace("websocket", "h2c"), "GET"), Err(400));
        assert_eq!(
            check(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), "GET"),
            Err(400)
        );
        assert_eq!(check("", "GET"), Err(400));
    }
}
