//! One request through the proxy: checked (framing, region, body limit) before any upstream
//! sees a byte, sent to an upstream picked in its region (once more to another upstream when
//! an idempotent request failed before any byte reached the first), and its response
//! streamed back. Every failure ends in the contract's status with a JSON body when no byte
//! of the response was written yet.

use super::body::{move_body, write_all, Broke, Frame};
use super::head::{
    client_closes, client_response, idempotent, parse_response, request_body, upstream_request,
    Body, Forwarding, Reply, UpstreamHead,
};
use super::{pick, state, table};
use crate::auth::{token_from_request, unix_now, AuthError};
use crate::context::Core;
use crate::http::chunked::ChunkedDecoder;
use crate::http::{RequestHead, Response};
use crate::limits::client_ip::trusted;
use crate::runtime::stream::ServerStream;
use crate::stats::bump;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use std::net::IpAddr;
use std::time::Instant;

/// Counts a response by its status class.
fn count_status(core: &Core, status: u16) {
    let s = &core.stats;
    bump(
        match status {
            0..=299 => &s.proxy_responses_2xx,
            300..=399 => &s.proxy_responses_3xx,
            400..=499 => &s.proxy_responses_4xx,
            _ => &s.proxy_responses_5xx,
        },
        1,
    );
}

/// Writes one of the proxy's own answers (which closes the connection).
async fn refuse(core: &Core, stream: &mut ServerStream, status: u16, code: &str, msg: &str) {
    count_status(core, status);
    crate::http::write::refuse(&core.stats, stream, Response::error(status, code, msg)).await;
}

/// A route with `auth = true`: a valid token (or API key) as the relay's own routes take it.
/// Without `[auth]` configured nothing can pass: the route fails closed.
fn authorized(core: &Core, head: &RequestHead) -> Result<(), AuthError> {
    let auth = core.auth().ok_or(AuthError::Missing)?;
    let token = token_from_request(head)?.ok_or(AuthError::Missing)?;
    auth.check(&token, unix_now()).map(|_| ())
}

/// What the checks before any upstream decided.
struct Checked {
    body: Body,
    region: Option<String>,
    decoder: Option<ChunkedDecoder>,
}

/// The checks before any upstream: framing (the smuggling shapes), the region, the body
/// limit, and the start of a chunked body already read. `None`: refused and answered.
async fn check(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    route: usize,
    pending: &[u8],
) -> Option<Checked> {
    let cfg = core.config();
    let body = match request_body(head) {
        Ok(b) => b,
        Err(e) => {
            bump(&core.stats.proxy_refused_framing, 1);
            refuse(core, stream, 400, "bad_request", e.message()).await;
            return None;
        }
    };
    if head.header("upgrade").is_some() && head.header_count("connection") > 0 {
        // Not built yet: an upgrade would otherwise reach the upstream as a plain request.
        let msg = "upgrades through a proxy route are not supported yet";
        refuse(core, stream, 501, "upgrade_unsupported", msg).await;
        return None;
    }
    if cfg.proxy.routes[route].auth {
        if let Err(e) = authorized(core, head) {
            crate::limits::Refusal::Auth(e)
                .write(&core.stats, stream)
                .await;
            count_status(core, 401);
            return None;
        }
    }
    let cluster_region = cfg
        .cluster
        .redis_url
        .as_ref()
        .map(|_| cfg.cluster.region.as_str());
    let Ok(region) = table::region_of(&cfg.proxy, cluster_region, head) else {
        let msg = "region must be 1 to 64 characters of A-Z a-z 0-9 _ -";
        refuse(core, stream, 400, "invalid_region", msg).await;
        return None;
    };
    let max = match cfg.proxy.max_body_bytes {
        0 => u64::MAX,
        n => n as u64,
    };
    if matches!(body, Body::Length(n) if n > max) {
        refuse(
            core,
            stream,
            413,
            "body_too_large",
            "request body over proxy.max_body_bytes",
        )
        .await;
        return None;
    }
    let mut decoder = None;
    if body == Body::Chunked {
        // What came with the head is checked before any upstream is chosen.
        let mut d = ChunkedDecoder::with_limit(max);
        if let Err(e) = d.clone().feed(pending, |_| {}) {
            bump(&core.stats.proxy_refused_framing, 1);
            let (status, code) = match e {
                crate::http::chunked::ChunkedError::TooLarge => (413, "body_too_large"),
                _ => (400, "bad_request"),
            };
            refuse(core, stream, status, code, "malformed chunked body").await;
            return None;
        }
        decoder = Some(std::mem::replace(&mut d, ChunkedDecoder::with_limit(max)));
    }
    Some(Checked {
        body,
        region,
        decoder,
    })
}

/// One request and its response. Returns whether the client connection goes on.
pub async fn exchange(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    route: usize,
    peer: IpAddr,
    pending: &mut Vec<u8>,
) -> bool {
    bump(&core.stats.proxy_requests, 1);
    let started = Instant::now();
    let Some(checked) = check(core, stream, head, route, pending).await else {
        return false;
    };
    let cfg = core.config();
    let r = &cfg.proxy.routes[route];
    let cap = r.max_concurrent;
    let full = state::with(&cfg.proxy, |w| {
        let st = &mut w.routes[route];
        let full = cap > 0 && st.in_flight >= cap;
        if !full {
            st.in_flight += 1;
        }
        full
    });
    if full {
        bump(&core.stats.proxy_no_upstream, 1);
        refuse(
            core,
            stream,
            503,
            "no_upstream",
            "the route is at its max_concurrent",
        )
        .await;
        return false;
    }
    // The region the upstream was picked for, for the log line (the request's, else the
    // route's default or the node's).
    let region = checked.region.clone().unwrap_or_default();
    let outcome = send(core, stream, head, route, peer, pending, checked).await;
    state::with(&cfg.proxy, |w| w.routes[route].in_flight -= 1);
    let (status, keep, upstream) = outcome;
    tracing::info!(
        target: "ringrelay::proxy",
        method = %head.method,
        path = %head.path,
        status,
        duration_ms = started.elapsed().as_millis() as u64,
        region = %region,
        upstream = %upstream.map(|u| r.upstreams[u].url.as_str()).unwrap_or("-"),
        "proxied"
    );
    keep
}

/// How one attempt at an upstream ended.
enum Attempt {
    /// The response was written (in full or until the client went): status, whether the
    /// client connection goes on.
    Done(u16, bool),
    /// Failed before any byte reached the upstream, or on a pooled connection before any
    /// byte of a response: another upstream may be tried.
    Retry,
    /// Failed after the request started; answered (status) and the connection ends.
    Failed(u16),
}

/// Picks upstreams and makes at most two attempts. Returns (status, keep, upstream).
async fn send(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    route: usize,
    peer: IpAddr,
    pending: &mut Vec<u8>,
    checked: Checked,
) -> (u16, bool, Option<usize>) {
    let cfg = core.config();
    let r = &cfg.proxy.routes[route];
    // A body can be sent once only: a request with one is never retried.
    let may_retry = idempotent(&head.method) && checked.body == Body::None;
    let mut tried = None;
    for attempt in 0..2 {
        let now = Instant::now();
        let pick = state::with(&cfg.proxy, |w| {
            let st = &w.routes[route];
            let c = pick::candidates(r, &st.health, checked.region.as_deref(), tried, now);
            let (a, b) = (core.rng.bytes::<8>(), core.rng.bytes::<8>());
            pick::two_choices(
                r,
                &st.health,
                &c,
                u64::from_le_bytes(a),
                u64::from_le_bytes(b),
            )
        });
        let Some(u) = pick else {
            bump(&core.stats.proxy_no_upstream, 1);
            let msg = "no healthy upstream for this request's region";
            refuse(core, stream, 503, "no_upstream", msg).await;
            return (503, false, tried);
        };
        if attempt > 0 {
            bump(&core.stats.proxy_retries, 1);
        }
        tried = Some(u);
        state::with(&cfg.proxy, |w| w.routes[route].health[u].outstanding += 1);
        let to = Target { route, upstream: u };
        let out = attempt_one(core, stream, head, &to, peer, pending, &checked).await;
        state::with(&cfg.proxy, |w| {
            let h = &mut w.routes[route].health[u];
            h.outstanding -= 1;
            match out {
                Attempt::Done(..) => h.succeeded(),
                _ => {
                    if h.failed(&cfg.proxy, Instant::now()) {
                        bump(&core.stats.proxy_ejections, 1);
                        tracing::warn!(upstream = %r.upstreams[u].url, "upstream ejected");
                    }
                }
            }
        });
        match out {
            Attempt::Done(status, keep) => return (status, keep, Some(u)),
            Attempt::Failed(status) => return (status, false, Some(u)),
            Attempt::Retry if may_retry && attempt == 0 => continue,
            Attempt::Retry => break,
        }
    }
    bump(&core.stats.proxy_upstream_failed, 1);
    refuse(
        core,
        stream,
        502,
        "bad_gateway",
        "the upstream could not be reached",
    )
    .await;
    (502, false, tried)
}

struct Target {
    route: usize,
    upstream: usize,
}

/// A pooled connection, or a new one within `proxy.connect_timeout`.
async fn connect(core: &Core, to: &Target) -> Option<(TcpStream, bool)> {
    let cfg = core.config();
    let pooled = state::with(&cfg.proxy, |w| {
        w.idle_conn(&cfg.proxy, to.route, to.upstream)
    });
    if let Some(conn) = pooled {
        bump(&core.stats.proxy_upstream_reused, 1);
        return Some((conn, true));
    }
    let addr = cfg.proxy.routes[to.route].upstreams[to.upstream].addr;
    let conn = monoio::time::timeout(cfg.proxy.connect_timeout, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = conn.set_nodelay(true);
    bump(&core.stats.proxy_upstream_connects, 1);
    Some((conn, false))
}

/// One attempt: connect, send the head and body, read the response head, stream it back.
async fn attempt_one(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    to: &Target,
    peer: IpAddr,
    pending: &mut Vec<u8>,
    checked: &Checked,
) -> Attempt {
    let cfg = core.config();
    let r = &cfg.proxy.routes[to.route];
    let Some((mut up, reused)) = connect(core, to).await else {
        return Attempt::Retry;
    };
    let host = if r.preserve_host {
        head.header("host")
            .unwrap_or(&r.upstreams[to.upstream].authority)
    } else {
        &r.upstreams[to.upstream].authority
    };
    let sec = &cfg.security;
    let fw = Forwarding {
        peer,
        peer_trusted: trusted(peer, &sec.trusted_proxies),
        tls: stream.tls().is_some(),
        host,
        drop_authorization: r.auth,
    };
    let target = table::upstream_target(r, head);
    let bytes = upstream_request(head, &target, checked.body, &fw);
    let n = bytes.len();
    if write_all(&mut up, bytes, n).await.0.is_err() {
        return Attempt::Retry;
    }
    if checked.body != Body::None {
        if let Err(status) = send_body(core, stream, &mut up, head, pending, checked).await {
            return Attempt::Failed(status);
        }
    }
    respond(core, stream, up, head, to, reused).await
}

/// The request body, to the upstream; `Err(status)`: answered, the connection ends.
async fn send_body(
    core: &Core,
    stream: &mut ServerStream,
    up: &mut TcpStream,
    head: &RequestHead,
    pending: &mut Vec<u8>,
    checked: &Checked,
) -> Result<(), u16> {
    let cfg = core.config();
    if head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        if write_all(stream, cont, 25).await.0.is_err() {
            return Err(499);
        }
    }
    let frame = match (checked.body, checked.decoder) {
        (Body::Length(n), _) => Frame::Length(n),
        (_, Some(d)) => Frame::Chunked(d),
        _ => return Ok(()),
    };
    let mut buf = state::with(&cfg.proxy, |w| w.buffer());
    let moved = move_body(stream, up, frame, pending, &mut buf, cfg.proxy.idle_timeout).await;
    state::with(&cfg.proxy, |w| w.give_back(buf));
    match moved {
        Ok(n) => {
            bump(&core.stats.proxy_bytes_up, n);
            Ok(())
        }
        Err(Broke::Malformed) => {
            bump(&core.stats.proxy_refused_framing, 1);
            refuse(core, stream, 400, "bad_request", "malformed chunked body").await;
            Err(400)
        }
        Err(Broke::TooLarge) => {
            let msg = "request body over proxy.max_body_bytes";
            refuse(core, stream, 413, "body_too_large", msg).await;
            Err(413)
        }
        Err(Broke::Writer) => {
            bump(&core.stats.proxy_upstream_failed, 1);
            refuse(core, stream, 502, "bad_gateway", "the upstream broke off").await;
            Err(502)
        }
        // The client went or stalled: nobody to answer.
        Err(Broke::Reader | Broke::Idle) => Err(499),
    }
}

/// Reads the response head within `proxy.response_timeout`, skipping interim (1xx) ones.
async fn read_response(
    core: &Core,
    up: &mut TcpStream,
    head_request: bool,
) -> Result<(UpstreamHead, Vec<u8>), (bool, bool)> {
    let cfg = core.config();
    let deadline = Instant::now() + cfg.proxy.response_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        match parse_response(&buf, head_request) {
            Ok(Some((h, n))) if (100..200).contains(&h.status) && h.status != 101 => {
                buf.drain(..n);
                continue;
            }
            Ok(Some((h, n))) if h.status != 101 => {
                buf.drain(..n);
                return Ok((h, buf));
            }
            Ok(Some(_)) | Err(_) => return Err((false, true)),
            Ok(None) if buf.len() >= crate::http::client::MAX_HEAD => return Err((false, true)),
            Ok(None) => {}
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let left = deadline.saturating_duration_since(Instant::now());
        let read = up.read(buf.slice_mut(len..cap));
        let Ok((res, slice)) = monoio::time::timeout(left, read).await else {
            return Err((true, len > 0));
        };
        buf = slice.into_inner();
        match res {
            Ok(n) if n > 0 => {}
            // (timed out, any byte of a response seen)
            _ => return Err((false, len > 0)),
        }
    }
}

/// Largest body sent in the same write as the response head (when it all came with the head).
const INLINE_BODY: usize = 16 << 10;

/// A Content-Length body that came whole with the response head (and is small) is moved from
/// `rest` behind the head in `out`, so that a small response is one write to the client
/// instead of two (head, then body): one syscall or submission fewer per request, and one
/// packet. Returns the body bytes moved.
fn with_inline_body(out: &mut Vec<u8>, body: Reply, rest: &mut Vec<u8>) -> usize {
    let n = match body {
        Reply::Length(n) if n as usize <= rest.len().min(INLINE_BODY) => n as usize,
        _ => return 0,
    };
    out.extend_from_slice(&rest[..n]);
    rest.drain(..n);
    n
}

/// The response: head, then body, to the client; the upstream connection back to the pool
/// when its exchange ended cleanly.
async fn respond(
    core: &Core,
    stream: &mut ServerStream,
    mut up: TcpStream,
    head: &RequestHead,
    to: &Target,
    reused: bool,
) -> Attempt {
    let cfg = core.config();
    let (resp, mut rest) = match read_response(core, &mut up, head.method == "HEAD").await {
        Ok(x) => x,
        Err((true, _)) => {
            bump(&core.stats.proxy_upstream_timeouts, 1);
            let msg = "the upstream did not answer in time";
            refuse(core, stream, 504, "upstream_timeout", msg).await;
            return Attempt::Failed(504);
        }
        // A pooled connection the upstream had closed: nothing of this request was answered.
        Err((false, false)) if reused => return Attempt::Retry,
        Err(_) => {
            bump(&core.stats.proxy_upstream_failed, 1);
            refuse(core, stream, 502, "bad_gateway", "the upstream broke off").await;
            return Attempt::Failed(502);
        }
    };
    let close = client_closes(head) || resp.body == Reply::UntilClose;
    count_status(core, resp.status);
    let mut bytes = client_response(&resp, close);
    let inline = with_inline_body(&mut bytes, resp.body, &mut rest);
    let n = bytes.len();
    if write_all(stream, bytes, n).await.0.is_err() {
        return Attempt::Done(resp.status, false);
    }
    let frame = match resp.body {
        Reply::None => Frame::Length(0),
        Reply::Length(n) => Frame::Length(n - inline as u64),
        Reply::Chunked => Frame::Chunked(ChunkedDecoder::with_limit(u64::MAX)),
        Reply::UntilClose => Frame::UntilClose,
    };
    let mut buf = state::with(&cfg.proxy, |w| w.buffer());
    let moved = move_body(
        &mut up,
        stream,
        frame,
        &mut rest,
        &mut buf,
        cfg.proxy.idle_timeout,
    )
    .await;
    state::with(&cfg.proxy, |w| w.give_back(buf));
    match moved {
        Ok(n) => {
            bump(&core.stats.proxy_bytes_down, n + inline as u64);
            if !resp.closes && resp.body != Reply::UntilClose && rest.is_empty() {
                state::with(&cfg.proxy, |w| {
                    w.keep_conn(&cfg.proxy, to.route, to.upstream, up)
                });
            }
            Attempt::Done(resp.status, !close)
        }
        // Mid-body, the client cannot be told: its connection ends.
        Err(_) => Attempt::Done(resp.status, false),
    }
}

#[cfg(test)]
mod tests {
    use super::{with_inline_body, Reply, INLINE_BODY};

    #[test]
    fn a_small_body_read_with_the_head_rides_in_the_same_write() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec();
        // The whole body and the start of what follows (never part of this response).
        let (mut out, mut rest) = (head.clone(), b"hello".to_vec());
        assert_eq!(with_inline_body(&mut out, Reply::Length(5), &mut rest), 5);
        assert_eq!(&out[head.len()..], b"hello");
        assert!(rest.is_empty());
        let (mut out, mut rest) = (head.clone(), b"helloHTTP".to_vec());
        assert_eq!(with_inline_body(&mut out, Reply::Length(5), &mut rest), 5);
        assert_eq!(rest, b"HTTP");
        // Part of the body only, another framing, or a large body: the head goes alone.
        for (body, got) in [
            (Reply::Length(9), b"hello".to_vec()),
            (Reply::Chunked, b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
            (Reply::UntilClose, b"hello".to_vec()),
            (Reply::None, Vec::new()),
            (
                Reply::Length(INLINE_BODY as u64 + 1),
                vec![b'x'; INLINE_BODY + 1],
            ),
        ] {
            let (mut out, mut rest) = (head.clone(), got.clone());
            assert_eq!(with_inline_body(&mut out, body, &mut rest), 0, "{body:?}");
            assert_eq!((out.as_slice(), rest), (head.as_slice(), got));
        }
        // A zero-length body moves nothing either way.
        let (mut out, mut rest) = (head.clone(), Vec::new());
        assert_eq!(with_inline_body(&mut out, Reply::Length(0), &mut rest), 0);
    }
}
