//! The request side, without I/O: the client's URL and the bytes it sends, and the head the
//! target reads.

use crate::http::client::{closes, framing, Framing, HttpUrl, WireError, MAX_HEADERS};

/// An HTTP method must be a token (RFC 9110 section 9.1).
pub fn valid_method(method: &str) -> bool {
    !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether the load sends a body with this method: every method but GET and HEAD does.
pub fn sends_body(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD")
}

/// The whole request the client sends, built once per thread and written from a shared
/// buffer for every request. `body` bytes of filler follow the head when given.
pub fn build_request(
    method: &str,
    url: &HttpUrl,
    body: Option<usize>,
    keep_alive: bool,
) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringrelay-load\r\nConnection: {connection}\r\n",
        url.path, url.host
    )
    .into_bytes();
    if let Some(n) = body {
        req.extend_from_slice(
            format!("Content-Type: application/octet-stream\r\nContent-Length: {n}\r\n").as_bytes(),
        );
    }
    req.extend_from_slice(b"\r\n");
    if let Some(n) = body {
        req.extend((0..n).map(|i| b'a' + (i % 26) as u8));
    }
    req
}

/// A request head as the target needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub body: Framing,
    /// The connection ends after the answer.
    pub close: bool,
    /// `HEAD`: the answer has no body.
    pub head_only: bool,
}

/// Parses a request head from the start of `buf`; `None` until it is complete. A request
/// without Content-Length or Transfer-Encoding has no body (`Framing::Unframed`).
pub fn parse_request(buf: &[u8], max_head: usize) -> Result<Option<RequestHead>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => Ok(Some(RequestHead {
            len,
            body: framing(req.headers)?,
            close: closes(req.version, req.headers),
            head_only: req.method == Some("HEAD"),
        })),
        Ok(httparse::Status::Complete(_)) => Err(WireError::HeadTooLarge(max_head)),
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            Err(WireError::HeadTooLarge(max_head))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(WireError::Head(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::client::parse_url;

    #[test]
    fn methods() {
        assert!(valid_method("GET") && valid_method("POST") && valid_method("M-SEARCH"));
        assert!(!valid_method("") && !valid_method("GE T") && !valid_method("GET\r\n"));
        assert!(!sends_body("GET") && !sends_body("HEAD"));
        assert!(sends_body("POST") && sends_body("PUT") && sends_body("DELETE"));
    }

    #[test]
    fn requests_round_trip_through_the_parser() {
        let url = parse_url("http://127.0.0.1:3000/hello").unwrap();
        let get = build_request("GET", &url, None, false);
        assert_eq!(
            get,
            b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nUser-Agent: ringrelay-load\r\nConnection: close\r\n\r\n"
        );
        let h = parse_request(&get, 1024).unwrap().unwrap();
        assert_eq!(
            h,
            RequestHead {
                len: get.len(),
                body: Framing::Unframed,
                close: true,
                head_only: false
            }
        );
        let post = build_request("POST", &url, Some(30), true);
        let h = parse_request(&post, 1024).unwrap().unwrap();
        assert_eq!((h.body, h.close), (Framing::Length(30), false));
        assert_eq!(&post[h.len..], b"abcdefghijklmnopqrstuvwxyzabcd");
        // Every prefix of the head is incomplete, not an error.
        for cut in 0..h.len {
            assert_eq!(parse_request(&post[..cut], 1024), Ok(None), "cut {cut}");
        }
        assert!(
            parse_request(b"HEAD / HTTP/1.0\r\n\r\n", 64)
                .unwrap()
                .unwrap()
                .head_only
        );
    }

    #[test]
    fn request_limits_and_errors() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse_request(req, 10), Err(WireError::HeadTooLarge(10)));
        assert_eq!(
            parse_request(&req[..20], 10),
            Err(WireError::HeadTooLarge(10))
        );
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 1024),
            Err(WireError::Head(_))
        ));
        assert_eq!(
            parse_request(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                1024
            ),
            Err(WireError::Ambiguous)
        );
    }
}
