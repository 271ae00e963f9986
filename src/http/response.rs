//! HTTP answers: every one carries the contract's security headers and closes the connection.

/// A complete HTTP/1.1 response, serialised once and written whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Carried by every response, bridged answers included (the contract's refusals section).
pub const SECURITY_HEADERS: &str = "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-store\r\n";

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        // The reason phrase is optional (RFC 9112 section 4); a bridged status we have no
        // name for goes out without one rather than with a wrong one.
        _ => "",
    }
}

/// Cuts a whole response down to its head, blank line included: the answer to HEAD (RFC 9110
/// section 9.3.2), which keeps the Content-Length a GET would have had.
pub fn truncate_to_head(response: &mut Vec<u8>) {
    if let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(i + 4);
    }
}

impl Response {
    /// A refusal with the contract's JSON body `{"error": ..., "code": ...}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let body = serde_json::json!({ "error": message, "code": code }).to_string();
        Response::json(status, body)
    }

    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The 101 answer to a valid upgrade; no extensions or subprotocols are agreed.
    pub fn switching_protocols(accept: &str) -> Response {
        Response {
            status: 101,
            headers: vec![
                ("Upgrade", "websocket".into()),
                ("Connection", "Upgrade".into()),
                ("Sec-WebSocket-Accept", accept.into()),
            ],
            body: Vec::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        use std::fmt::Write;
        let mut head = String::with_capacity(256);
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (n, v) in &self.headers {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        head.push_str(SECURITY_HEADERS);
        match self.status {
            101 => {}
            // RFC 9110 section 8.6: never a Content-Length on a 204 (nor a body on a 304).
            204 | 304 => head.push_str("Connection: close\r\n"),
            _ => {
                let _ = write!(
                    head,
                    "Content-Length: {}\r\nConnection: close\r\n",
                    self.body.len()
                );
            }
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_has_json_body_and_security_headers() {
        let r = Response::error(409, "session_full", "two peers already")
            .with_header("Retry-After", "1");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 409 Conflict\r\n"));
        for h in [
            "X-Content-Type-Options: nosniff",
            "X-Frame-Options: DENY",
            "Referrer-Policy: no-referrer",
            "Cache-Control: no-store",
            "Retry-After: 1",
        ] {
            assert!(text.contains(h), "{h}");
        }
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "session_full");
        assert_eq!(text.matches("Content-Length: ").count(), 1);
    }
}
