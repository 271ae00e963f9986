//! The heads that cross the proxy: how long a request's body is (refusing every shape two
//! parsers could frame differently), the request head sent upstream and the response head
//! sent back. Hop-by-hop headers and those `Connection` names are dropped both ways (RFC 9110
//! section 7.6.1, `bridge::headers`); the forwarding headers are ours. No I/O.

use crate::bridge::headers::is_hop_by_hop;
use crate::http::client::{framing, Framing, WireError};
use crate::http::RequestHead;
use std::io::Write;
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
    // The headers as httparse's, on the stack (a head over the client's limit of headers is
    // never read; a larger list still gets its own Vec rather than being cut short).
    let mut stack = [httparse::EMPTY_HEADER; crate::http::client::MAX_HEADERS];
    let heap: Vec<httparse::Header<'_>>;
    fn as_header((n, v): &(String, String)) -> httparse::Header<'_> {
        httparse::Header {
            name: n,
            value: v.as_bytes(),
        }
    }
    let headers: &[httparse::Header<'_>] = if head.headers.len() <= stack.len() {
        for (slot, h) in stack.iter_mut().zip(&head.headers) {
            *slot = as_header(h);
        }
        &stack[..head.headers.len()]
    } else {
        heap = head.headers.iter().map(as_header).collect();
        &heap
    };
    if head.version == 0 && head.header("transfer-encoding").is_some() {
        return Err(Smuggle::Coding);
    }
    match framing(headers) {
        Ok(Framing::Unframed) | Ok(Framing::Length(0)) => Ok(Body::None),
        Ok(Framing::Length(n)) => Ok(Body::Length(n)),
        Ok(Framing::Chunked) => {
            // Only `chunked` alone: anything layered under it the upstream would have to
            // undo, and a list is where parsers disagree.
            let codings = head
                .headers
                .iter()
                .filter(|(n, _)| n == "transfer-encoding")
                .flat_map(|(_, v)| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .count();
            if codings == 1 {
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
fn forwarded_node(out: &mut Vec<u8>, ip: IpAddr) {
    let _ = match ip {
        IpAddr::V4(a) => write!(out, "{a}"),
        IpAddr::V6(a) => write!(out, "\"[{a}]\""),
    };
}

/// The client's headers named by its `Connection` header (hop-by-hop for this hop only).
fn named_by_connection(headers: &[(String, String)]) -> impl Iterator<Item = &str> + Clone {
    headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Writes the values of every `name` header (a trusted proxy's chain), joined by `, `;
/// whether there was one.
fn prior(out: &mut Vec<u8>, head: &RequestHead, name: &str) -> bool {
    let mut any = false;
    for (_, v) in head.headers.iter().filter(|(n, _)| n == name) {
        if any {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v.as_bytes());
        any = true;
    }
    any
}

/// The request head sent upstream, HTTP/1.1: the client's end-to-end headers in their order
/// (Host replaced by `fw.host`, `Expect` dropped since the proxy answers it), the forwarding
/// headers, and the body's framing as the proxy sends it.
pub fn upstream_request(head: &RequestHead, target: &str, body: Body, fw: &Forwarding) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + head.headers.len() * 32);
    write_upstream_request(
        &mut out,
        head,
        |o| o.extend_from_slice(target.as_bytes()),
        body,
        fw,
    );
    out
}

/// [`upstream_request`] appended to `out` (a pooled buffer), the target written by `target`:
/// nothing allocated, every header name and value written from the request head in place.
pub fn write_upstream_request(
    out: &mut Vec<u8>,
    head: &RequestHead,
    target: impl FnOnce(&mut Vec<u8>),
    body: Body,
    fw: &Forwarding,
) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    target(out);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(fw.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = named_by_connection(&head.headers);
    for (n, v) in &head.headers {
        // Names are lower-cased by the head parser.
        let forwarding = FORWARDING.contains(&n.as_str());
        let credential = fw.drop_authorization && n == "authorization";
        if forwarding
            || credential
            || matches!(n.as_str(), "host" | "expect" | "content-length")
            || is_hop_by_hop(n)
            || named.clone().any(|t| t.eq_ignore_ascii_case(n))
        {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A trusted proxy's forwarding headers are kept (and extended); anyone else's dropped.
    // (They are never hop-by-hop, but a client may name them in Connection: then they go.)
    let kept = |name: &str| fw.peer_trusted && !named.clone().any(|t| t.eq_ignore_ascii_case(name));
    let proto = if fw.tls { "https" } else { "http" };
    let client_host = head.header("host").unwrap_or(fw.host);
    out.extend_from_slice(b"X-Forwarded-For: ");
    if kept("x-forwarded-for") && prior(out, head, "x-forwarded-for") {
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{}", fw.peer);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    if !(kept("x-forwarded-proto") && prior(out, head, "x-forwarded-proto")) {
        out.extend_from_slice(proto.as_bytes());
    }
    out.extend_from_slice(b"\r\nX-Forwarded-Host: ");
    if !(kept("x-forwarded-host") && prior(out, head, "x-forwarded-host")) {
        out.extend_from_slice(client_host.as_bytes());
    }
    out.extend_from_slice(b"\r\nForwarded: ");
    if kept("forwarded") && prior(out, head, "forwarded") {
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"for=");
    forwarded_node(out, fw.peer);
    out.extend_from_slice(b";host=\"");
    out.extend(client_host.bytes().filter(|b| !matches!(b, b'"' | b'\\')));
    out.extend_from_slice(b"\";proto=");
    out.extend_from_slice(proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    match body {
        Body::None => {}
        Body::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Body::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
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

/// A response head read from an upstream: what the proxy decides from it. The head itself
/// stays where it was read (its first `len` bytes), and is parsed again, in place, when it is
/// written on ([`write_client_response`]): nothing of it is copied out.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamHead {
    pub status: u16,
    pub body: Reply,
    /// The upstream closes after this response.
    pub closes: bool,
    /// The head's length in bytes.
    pub len: usize,
}

/// Parses a response head; `Ok(None)`: incomplete. `head_request`: the request was HEAD, so
/// there is no body whatever the head says. Header values must be UTF-8.
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
    if resp
        .headers
        .iter()
        .any(|h| std::str::from_utf8(h.value).is_err())
    {
        return Err(WireError::Head(httparse::Error::HeaderValue));
    }
    let head = UpstreamHead {
        status,
        body,
        closes,
        len: n,
    };
    Ok(Some((head, n)))
}

/// The response head sent to the client, from the upstream's head `raw` (as
/// [`parse_response`] took it): the upstream's end-to-end headers, its framing as the proxy
/// sends it, and `Connection: close` when the client's connection ends after it.
pub fn client_response(raw: &[u8], up: &UpstreamHead, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + raw.len());
    write_client_response(&mut out, raw, up, close, |_, _| {});
    out
}

/// [`client_response`] appended to `out` (a pooled buffer), without its final empty line when
/// `more` is to add headers: `more(out, headers)` is given the upstream's headers and writes
/// its own before the final `\r\n`.
pub fn write_client_response(
    out: &mut Vec<u8>,
    raw: &[u8],
    up: &UpstreamHead,
    close: bool,
    more: impl FnOnce(&mut Vec<u8>, &[httparse::Header<'_>]),
) {
    let mut storage = [httparse::EMPTY_HEADER; crate::http::client::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    // It parsed when it was read: the same bytes parse the same way.
    let (reason, headers): (&str, &[httparse::Header<'_>]) = match resp.parse(raw) {
        Ok(httparse::Status::Complete(_)) => (resp.reason.unwrap_or(""), resp.headers),
        _ => ("", &[]),
    };
    let reason = if reason.is_empty() {
        crate::http::response::reason(up.status)
    } else {
        reason
    };
    let _ = write!(out, "HTTP/1.1 {} ", up.status);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    // Names compared in place, without a lower-cased copy per header (this runs per response).
    let named = || {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
    };
    let keep_length = matches!(up.body, Reply::Length(_) | Reply::None);
    for h in headers {
        let length = h.name.eq_ignore_ascii_case("content-length");
        if is_hop_by_hop(h.name)
            || named().any(|t| t.eq_ignore_ascii_case(h.name.as_bytes()))
            || (length && !keep_length)
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if up.body == Reply::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    more(out, headers);
    out.extend_from_slice(b"\r\n");
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
        let out = String::from_utf8(client_response(&raw[..n], &up, false)).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let (up, _) = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((up.body, up.closes), (Reply::UntilClose, true));
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let (up, _) = parse_response(raw, true).unwrap().unwrap();
        assert_eq!(up.body, Reply::None);
        let out = String::from_utf8(client_response(raw, &up, true)).unwrap();
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
