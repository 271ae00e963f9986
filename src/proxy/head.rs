//! The heads that cross the proxy: how long a request's body is (refusing every shape two
//! parsers could frame differently), the request head sent upstream and the response head
//! sent back. Hop-by-hop headers and those `Connection` names are dropped both ways (RFC 9110
//! section 7.6.1, `bridge::headers`); the forwarding headers are ours. No I/O.

use crate::bridge::headers::{forwardable, is_hop_by_hop};
use crate::http::client::{framing, Framing, WireError};
use crate::http::RequestHead;
use std::fmt::Write;
use std::net::IpAddr;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// Why a request is refused before it goes anywhere (400, or 501 for an unknown coding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smuggle {
    /// Both Content-Length and Transfer-Encoding.
    Ambiguous,
    /// A malformed Content-Length, or two that differ.
    BadLength,
    /// A Transfer-Encoding other than a final `chunked` (or any on HTTP/1.0).
    Coding,
}

impl Smuggle {
    pub fn message(self) -> &'static str {
        match self {
            Smuggle::Ambiguous => "Content-Length and Transfer-Encoding together",
            Smuggle::BadLength => "malformed or conflicting Content-Length",
            Smuggle::Coding => "unsupported Transfer-Encoding",
        }
    }
}

/// The request body's framing, strictly (RFC 9112 section 6.3).
pub fn request_body(head: &RequestHead) -> Result<Body, Smuggle> {
    let headers: Vec<httparse::Header<'_>> = head
        .headers
        .iter()
        .map(|(n, v)| httparse::Header {
            name: n,
            value: v.as_bytes(),
        })
        .collect();
    if head.version == 0 && head.header("transfer-encoding").is_some() {
        return Err(Smuggle::Coding);
    }
    match framing(&headers) {
        Ok(Framing::Unframed) | Ok(Framing::Length(0)) => Ok(Body::None),
        Ok(Framing::Length(n)) => Ok(Body::Length(n)),
        Ok(Framing::Chunked) => {
            // Only `chunked` alone: anything layered under it the upstream would have to
            // undo, and a list is where parsers disagree.
            let te: Vec<&str> = head
                .headers
                .iter()
                .filter(|(n, _)| n == "transfer-encoding")
                .flat_map(|(_, v)| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            if te.len() == 1 {
                Ok(Body::Chunked)
            } else {
                Err(Smuggle::Coding)
            }
        }
        Err(WireError::Ambiguous) => Err(Smuggle::Ambiguous),
        Err(WireError::UnsupportedEncoding) => Err(Smuggle::Coding),
        Err(_) => Err(Smuggle::BadLength),
    }
}

/// Whether the client wants the connection closed after this exchange.
pub fn client_closes(head: &RequestHead) -> bool {
    let tokens = || {
        head.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
    };
    tokens().any(|t| t.eq_ignore_ascii_case("close"))
        || (head.version == 0 && !tokens().any(|t| t.eq_ignore_ascii_case("keep-alive")))
}

/// Idempotent methods (RFC 9110 section 9.2.2): the only ones ever sent twice.
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// What the forwarding headers are built from.
pub struct Forwarding<'a> {
    /// The direct peer.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy, whose own forwarding headers are kept (and
    /// extended); anyone else's are dropped.
    pub peer_trusted: bool,
    /// The client connected over TLS.
    pub tls: bool,
    /// The Host sent upstream (the client's or the upstream's own).
    pub host: &'a str,
    /// The route checked the client's token (`auth = true`): ringrelay's credential is not
    /// passed on to the upstream.
    pub drop_authorization: bool,
}

const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// `for=` of `Forwarded`: an IPv6 address quoted in brackets (RFC 7239 section 6).
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("\"[{a}]\""),
    }
}

/// The request head sent upstream, HTTP/1.1: the client's end-to-end headers in their order
/// (Host replaced by `fw.host`, `Expect` dropped since the proxy answers it), the forwarding
/// headers, and the body's framing as the proxy sends it.
pub fn upstream_request(head: &RequestHead, target: &str, body: Body, fw: &Forwarding) -> Vec<u8> {
    let mut out = String::with_capacity(256 + head.headers.len() * 32);
    let _ = write!(
        out,
        "{} {target} HTTP/1.1\r\nHost: {}\r\n",
        head.method, fw.host
    );
    let mut kept: Vec<(&str, &str)> = Vec::new();
    let all = forwardable(&head.headers);
    for (n, v) in &all {
        let ours = FORWARDING.contains(&n.as_str()) && !fw.peer_trusted;
        let credential = fw.drop_authorization && n == "authorization";
        if ours || credential || matches!(n.as_str(), "host" | "expect" | "content-length") {
            continue;
        }
        if FORWARDING.contains(&n.as_str()) {
            kept.push((n, v));
            continue;
        }
        let _ = write!(out, "{n}: {v}\r\n");
    }
    let prior = |name: &str| -> Option<String> {
        let vals: Vec<&str> = kept
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    };
    let proto = if fw.tls { "https" } else { "http" };
    let xff = match prior("x-forwarded-for") {
        Some(p) => format!("{p}, {}", fw.peer),
        None => fw.peer.to_string(),
    };
    let client_host = head.header("host").unwrap_or(fw.host);
    let fwd = format!(
        "for={};host=\"{}\";proto={proto}",
        forwarded_node(fw.peer),
        client_host.replace(['"', '\\'], "")
    );
    let fwd = match prior("forwarded") {
        Some(p) => format!("{p}, {fwd}"),
        None => fwd,
    };
    let _ = write!(
        out,
        "X-Forwarded-For: {xff}\r\nX-Forwarded-Proto: {}\r\nX-Forwarded-Host: {}\r\nForwarded: {fwd}\r\n",
        prior("x-forwarded-proto").unwrap_or_else(|| proto.into()),
        prior("x-forwarded-host").unwrap_or_else(|| client_host.into()),
    );
    match body {
        Body::None => {}
        Body::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Body::Chunked => out.push_str("Transfer-Encoding: chunked\r\n"),
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// How a response's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the client's connection closes after it too.
    UntilClose,
}

/// A response head read from an upstream.
#[derive(Debug)]
pub struct UpstreamHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Reply,
    /// The upstream closes after this response.
    pub closes: bool,
}

/// Parses a response head; `Ok(None)`: incomplete. `head_request`: the request was HEAD, so
/// there is no body whatever the head says.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(UpstreamHead, usize)>, WireError> {
    let mut storage = [httparse::EMPTY_HEADER; crate::http::client::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WireError::Head(e)),
    };
    let status = resp.code.ok_or(WireError::Truncated("status line"))?;
    let closes = crate::http::client::closes(resp.version, resp.headers);
    let framed = framing(resp.headers)?;
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Reply::None
    } else {
        match framed {
            Framing::Unframed => Reply::UntilClose,
            Framing::Length(n) => Reply::Length(n),
            Framing::Chunked => Reply::Chunked,
        }
    };
    let mut headers = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let v = std::str::from_utf8(h.value)
            .map_err(|_| WireError::Head(httparse::Error::HeaderValue))?;
        headers.push((h.name.to_string(), v.to_string()));
    }
    let head = UpstreamHead {
        status,
        reason: resp.reason.unwrap_or("").to_string(),
        headers,
        body,
        closes,
    };
    Ok(Some((head, n)))
}

/// The response head sent to the client: the upstream's end-to-end headers, its framing as
/// the proxy sends it, and `Connection: close` when the client's connection ends after it.
pub fn client_response(up: &UpstreamHead, close: bool) -> Vec<u8> {
    let mut out = String::with_capacity(128 + up.headers.len() * 32);
    let reason = if up.reason.is_empty() {
        crate::http::response::reason(up.status)
    } else {
        up.reason.as_str()
    };
    let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", up.status);
    // Names compared in place, without a lower-cased copy per header (this runs per response).
    let named: Vec<&str> = up
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    let keep_length = matches!(up.body, Reply::Length(_) | Reply::None);
    for (n, v) in &up.headers {
        let length = n.eq_ignore_ascii_case("content-length");
        if is_hop_by_hop(n)
            || named.iter().any(|t| t.eq_ignore_ascii_case(n))
            || (length && !keep_length)
        {
            continue;
        }
        let _ = write!(out, "{n}: {v}\r\n");
    }
    if up.body == Reply::Chunked {
        out.push_str("Transfer-Encoding: chunked\r\n");
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> RequestHead {
        RequestHead::with_headers("POST", "/", pairs)
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert_eq!(
            request_body(&h(&[
                ("content-length", "5"),
                ("transfer-encoding", "chunked")
            ])),
            Err(Smuggle::Ambiguous)
        );
        assert_eq!(
            request_body(&h(&[("content-length", "5"), ("content-length", "6")])),
            Err(Smuggle::BadLength)
        );
        assert_eq!(
            request_body(&h(&[("content-length", "5, 6")])),
            Err(Smuggle::BadLength)
        );
        assert_eq!(
            request_body(&h(&[("transfer-encoding", "gzip, chunked")])),
            Err(Smuggle::Coding)
        );
        assert_eq!(
            request_body(&h(&[("transfer-encoding", "chunked, identity")])),
            Err(Smuggle::Coding)
        );
        let mut old = h(&[("transfer-encoding", "chunked")]);
        old.version = 0;
        assert_eq!(request_body(&old), Err(Smuggle::Coding));
        assert_eq!(
            request_body(&h(&[("content-length", "5"), ("content-length", "5")])),
            Ok(Body::Length(5))
        );
        assert_eq!(
            request_body(&h(&[("transfer-encoding", "Chunked")])),
            Ok(Body::Chunked)
        );
        assert_eq!(request_body(&h(&[])), Ok(Body::None));
    }

    #[test]
    fn hop_by_hop_and_spoofed_forwarding_headers_never_go_upstream() {
        let head = h(&[
            ("host", "front.example"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("expect", "100-continue"),
            ("accept", "*/*"),
        ]);
        let fw = Forwarding {
            peer: "10.0.0.9".parse().unwrap(),
            peer_trusted: false,
            tls: false,
            host: "127.0.0.1:4001",
            drop_authorization: false,
        };
        let out = String::from_utf8(upstream_request(&head, "/p", Body::Length(3), &fw)).unwrap();
        let lower = out.to_ascii_lowercase();
        for gone in [
            "x-hop",
            "keep-alive",
            "te:",
            "6.6.6.6",
            "expect",
            "connection",
        ] {
            assert!(!lower.contains(gone), "{gone} in {out}");
        }
        assert!(out.starts_with("POST /p HTTP/1.1\r\nHost: 127.0.0.1:4001\r\naccept: */*\r\n"));
        assert!(out.contains("X-Forwarded-For: 10.0.0.9\r\n"));
        assert!(out.contains("X-Forwarded-Host: front.example\r\n"));
        assert!(out.contains("Forwarded: for=10.0.0.9;host=\"front.example\";proto=http\r\n"));
        assert!(out.ends_with("Content-Length: 3\r\n\r\n"));
        // Behind a trusted proxy its chain is kept and extended.
        let fw = Forwarding {
            peer_trusted: true,
            ..fw
        };
        let out = String::from_utf8(upstream_request(&head, "/p", Body::None, &fw)).unwrap();
        assert!(
            out.contains("X-Forwarded-For: 6.6.6.6, 10.0.0.9\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Forwarded: for=6.6.6.6, for=10.0.0.9;"),
            "{out}"
        );
    }

    #[test]
    fn response_heads_keep_end_to_end_headers_and_frame_the_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: x-h\r\nX-H: 1\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 1\r\n\r\nrest";
        let (up, n) = parse_response(raw, false).unwrap().unwrap();
        assert_eq!(
            (up.status, up.body, n),
            (200, Reply::Chunked, raw.len() - 4)
        );
        let out = String::from_utf8(client_response(&up, false)).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let (up, _) = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((up.body, up.closes), (Reply::UntilClose, true));
        let (up, _) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(up.body, Reply::None);
        let out = String::from_utf8(client_response(&up, true)).unwrap();
        assert!(
            out.contains("Content-Length: 5\r\nConnection: close\r\n\r\n"),
            "{out}"
        );
        let (up, _) = parse_response(b"HTTP/1.1 304 Not Modified\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(up.body, Reply::None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", false)
                .unwrap()
                .map(|_| ()),
            None
        );
    }
}
