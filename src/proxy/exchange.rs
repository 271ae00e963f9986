//! One request through the proxy: checked (framing, region, body limit) before any upstream
//! sees a byte, sent to an upstream picked in its region (once more to another upstream when
//! an idempotent request failed before any byte reached the first), and its response
//! streamed back. Every failure ends in the contract's status with a JSON body when no byte
//! of the response was written yet.

use super::body::{move_body, write_all, Broke, Frame};
use super::head::{
    client_closes, idempotent, parse_response, request_body, write_client_response,
    write_upstream_request, Body, Forwarding, Reply, UpstreamHead,
};
use super::upgrade::{asked, forward, Request, Upgraded};
use super::{pick, state, table};
use crate::auth::{token_from_request, unix_now, AuthError};
use crate::context::admit::origin_refusal;
use crate::context::Core;
use crate::http::chunked::ChunkedDecoder;
use crate::http::write::AnswerStream;
use crate::http::{RequestHead, Response};
use crate::limits::client_ip::trusted;
use crate::limits::Refusal;
use crate::runtime::stream::ServerStream;
use crate::stats::bump;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use std::cell::Cell;
use std::net::IpAddr;
use std::time::Instant;

/// Counts a response by its status class.
pub(super) fn count_status(core: &Core, status: u16) {
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
pub(super) async fn refuse(
    core: &Core,
    stream: &mut ServerStream,
    status: u16,
    code: &str,
    msg: &str,
) {
    count_status(core, status);
    let note = detach(stream);
    crate::http::write::refuse(&core.stats, stream, Response::error(status, code, msg)).await;
    reattach(stream, note, code);
}

/// Writes one of the admission refusals (Origin, token, capacity) as the proxy's own answer.
pub(super) async fn refuse_as(core: &Core, stream: &mut ServerStream, refusal: Refusal) {
    let resp = refusal.response();
    count_status(core, resp.status);
    let code = crate::http::write::error_code(&resp);
    let note = detach(stream);
    refusal.write(&core.stats, stream).await;
    reattach(stream, note, &code);
}

/// Takes the access log's note off the stream while the proxy writes an answer of its own:
/// the request's `proxy` line reports it, not a second `refusal` line.
fn detach(stream: &mut ServerStream) -> Option<crate::stats::access::Note> {
    let note = stream.access_mut().map(|n| n.clone());
    stream.set_access(None);
    note
}

/// Puts the note back with the answer's error code, for the request's `proxy` line.
fn reattach(stream: &mut ServerStream, note: Option<crate::stats::access::Note>, code: &str) {
    stream.set_access(note.map(|mut n| {
        n.error = Some(code.into());
        n
    }));
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
    /// Body bytes this request moved (up, down), for its log line.
    moved: Cell<(u64, u64)>,
}

/// The checks before any upstream: framing (the smuggling shapes), the region, the body
/// limit, and the start of a chunked body already read. `Err(status)`: refused and answered.
async fn check(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    route: usize,
    pending: &[u8],
) -> Result<Checked, u16> {
    let cfg = core.config();
    let body = match request_body(head) {
        Ok(b) => b,
        Err(e) => {
            bump(&core.stats.proxy_refused_framing, 1);
            refuse(core, stream, 400, "bad_request", e.message()).await;
            return Err(400);
        }
    };
    // Every request on the connection, as its first was at admission.
    if let Some(reason) = origin_refusal(&cfg.security, head) {
        let refusal = Refusal::Origin(reason);
        let status = refusal.response().status;
        refuse_as(core, stream, refusal).await;
        return Err(status);
    }
    if cfg.proxy.routes[route].auth {
        if let Err(e) = authorized(core, head) {
            let refusal = Refusal::Auth(e);
            let status = refusal.response().status;
            refuse_as(core, stream, refusal).await;
            return Err(status);
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
        return Err(400);
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
        return Err(413);
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
            return Err(status);
        }
        decoder = Some(std::mem::replace(&mut d, ChunkedDecoder::with_limit(max)));
    }
    Ok(Checked {
        body,
        region,
        decoder,
        moved: Cell::new((0, 0)),
    })
}

/// What the client connection does after an exchange.
pub enum Step {
    /// The next request.
    Keep,
    Close,
    /// The upstream switched protocols: the two connections are joined from here on.
    Upgraded(Box<Upgraded>),
}

/// One request and its response.
pub async fn exchange(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    route: usize,
    peer: IpAddr,
    pending: &mut Vec<u8>,
) -> Step {
    bump(&core.stats.proxy_requests, 1);
    let started = Instant::now();
    if let Some(note) = stream.access_mut() {
        // A kept-alive connection's later requests are logged with their own line.
        note.set_request(&head.method, &head.path);
        note.route = "proxy";
    }
    let (status, step, upstream, checked) = match check(core, stream, head, route, pending).await {
        Err(status) => (status, Step::Close, None, None),
        Ok(checked) => {
            let (status, step, upstream) =
                admitted(core, stream, head, route, peer, pending, &checked).await;
            (status, step, upstream, Some(checked))
        }
    };
    let cfg = core.config();
    let r = &cfg.proxy.routes[route];
    let took = started.elapsed();
    super::stats::finished(&cfg.proxy, route, status, upstream.map(|u| (u, took)));
    // The region the upstream was picked for (the request's, else the route's default or
    // the node's).
    let region = checked
        .as_ref()
        .and_then(|c| c.region.as_deref())
        .unwrap_or("");
    let upstream = upstream.map_or("-", |u| r.upstreams[u].url.as_str());
    tracing::info!(
        target: "ringrelay::proxy",
        method = %head.method,
        path = %head.path,
        status,
        duration_ms = took.as_millis() as u64,
        region = %region,
        upstream = %upstream,
        route = %r.prefix,
        "proxied"
    );
    let moved = checked.as_ref().map_or((0, 0), |c| c.moved.get());
    let line = crate::stats::access::Proxied {
        status,
        started,
        route: &r.prefix,
        region,
        upstream,
        bytes: moved,
    };
    crate::stats::access::proxied(&core.stats, stream.access_note(), line);
    step
}

/// A request past the checks: the route's concurrency cap, then the upstreams (an upgrade's
/// own way when it asks for one). Returns (status, what the connection does, upstream).
async fn admitted(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    route: usize,
    peer: IpAddr,
    pending: &mut Vec<u8>,
    checked: &Checked,
) -> (u16, Step, Option<usize>) {
    let cfg = core.config();
    let cap = cfg.proxy.routes[route].max_concurrent;
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
        let msg = "the route is at its max_concurrent";
        refuse(core, stream, 503, "no_upstream", msg).await;
        return (503, Step::Close, None);
    }
    let outcome = if asked(head, checked.body) {
        let to = Request { route, peer };
        forward(core, stream, head, &to, pending, checked.region.as_deref()).await
    } else {
        let (status, keep, upstream) =
            send(core, stream, head, route, peer, pending, checked).await;
        let step = if keep { Step::Keep } else { Step::Close };
        (status, step, upstream)
    };
    state::with(&cfg.proxy, |w| w.routes[route].in_flight -= 1);
    outcome
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
    checked: &Checked,
) -> (u16, bool, Option<usize>) {
    let cfg = core.config();
    // A body can be sent once only: a request with one is never retried.
    let may_retry = idempotent(&head.method) && checked.body == Body::None;
    let mut tried = None;
    for attempt in 0..2 {
        let Some(u) = pick_upstream(core, route, checked.region.as_deref(), tried) else {
            bump(&core.stats.proxy_no_upstream, 1);
            let msg = "no healthy upstream for this request's region";
            refuse(core, stream, 503, "no_upstream", msg).await;
            return (503, false, tried);
        };
        if attempt > 0 {
            bump(&core.stats.proxy_retries, 1);
            super::stats::retried(&cfg.proxy, route);
        }
        tried = Some(u);
        state::with(&cfg.proxy, |w| w.routes[route].health[u].outstanding += 1);
        let to = Target { route, upstream: u };
        let out = attempt_one(core, stream, head, &to, peer, pending, checked).await;
        attempted(core, &to, &out);
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

/// Picks an upstream of `route` for `region` (another than `tried`): two weighted random
/// choices among the healthy ones, the one with fewer outstanding requests per weight.
pub(super) fn pick_upstream(
    core: &Core,
    route: usize,
    region: Option<&str>,
    tried: Option<usize>,
) -> Option<usize> {
    let cfg = core.config();
    let r = &cfg.proxy.routes[route];
    state::with(&cfg.proxy, |w| {
        let st = &mut w.routes[route];
        let mut c = std::mem::take(&mut st.scratch);
        pick::candidates_into(r, &st.health, region, tried, Instant::now(), &mut c);
        let (a, b) = (core.rng.bytes::<8>(), core.rng.bytes::<8>());
        let picked = pick::two_choices(
            r,
            &st.health,
            &c,
            u64::from_le_bytes(a),
            u64::from_le_bytes(b),
        );
        st.scratch = c;
        picked
    })
}

struct Target {
    route: usize,
    upstream: usize,
}

/// What an attempt's end does to its upstream on this worker: its outstanding count, then
/// [`judge`].
fn attempted(core: &Core, to: &Target, out: &Attempt) {
    let cfg = core.config();
    state::with(&cfg.proxy, |w| {
        w.routes[to.route].health[to.upstream].outstanding -= 1
    });
    let answered = match out {
        Attempt::Done(status, _) => Some(*status),
        _ => None,
    };
    judge(core, to.route, to.upstream, answered);
}

/// Records how an attempt at upstream `u` of `route` went on this worker: `Some(status)`, it
/// answered (any status resets its failures); `None`, a failure, which may eject it (on a
/// checked route until its checks pass). Health and figures alike.
pub(super) fn judge(core: &Core, route: usize, u: usize, answered: Option<u16>) {
    let cfg = core.config();
    let r = &cfg.proxy.routes[route];
    state::with(&cfg.proxy, |w| {
        let st = &mut w.routes[route];
        let (h, fig) = (&mut st.health[u], &mut st.fig.upstreams[u]);
        if let Some(status) = answered {
            h.succeeded();
            fig.responses[crate::stats::proxy::class(status)] += 1;
            return;
        }
        fig.failures += 1;
        if h.failed(&cfg.proxy, Instant::now()) {
            bump(&core.stats.proxy_ejections, 1);
            fig.ejections += 1;
            if r.health.is_some() {
                super::health::ejected(h);
            }
            tracing::warn!(upstream = %r.upstreams[u].url, "upstream ejected");
        }
    });
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
    Some((dial(core, addr).await?, false))
}

/// A new connection to `addr` within `proxy.connect_timeout`.
pub(super) async fn dial(core: &Core, addr: std::net::SocketAddr) -> Option<TcpStream> {
    let timeout = core.config().proxy.connect_timeout;
    let conn = monoio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = conn.set_nodelay(true);
    bump(&core.stats.proxy_upstream_connects, 1);
    Some(conn)
}

/// The forwarding headers' inputs for a request to upstream `u` of `route`.
pub(super) fn forwarding<'a>(
    core: &Core,
    stream: &ServerStream,
    head: &'a RequestHead,
    route: &'a crate::config::ProxyRoute,
    u: usize,
    peer: IpAddr,
) -> Forwarding<'a> {
    let host = match route.preserve_host {
        true => head.header("host"),
        false => None,
    };
    Forwarding {
        peer,
        peer_trusted: trusted(peer, &core.config().security.trusted_proxies),
        tls: stream.tls().is_some(),
        host: host.unwrap_or(&route.upstreams[u].authority),
        drop_authorization: route.auth,
    }
}

/// One attempt: a connection (counted busy while it carries the exchange), then the rest.
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
    let Some((up, reused)) = connect(core, to).await else {
        return Attempt::Retry;
    };
    let busy = |n: i64| {
        super::stats::upstream(&cfg.proxy, to.route, to.upstream, |f| {
            f.busy = f.busy.saturating_add_signed(n)
        })
    };
    busy(1);
    // A request that may be sent twice goes once more, on a new connection to the same
    // upstream, when the pooled connection it met had been closed by the upstream.
    let resend = idempotent(&head.method) && checked.body == Body::None;
    let (mut up, mut reused) = (up, reused);
    let out = loop {
        let out = attempt_on(core, stream, up, reused, head, to, peer, pending, checked).await;
        if !(reused && resend && matches!(out, Attempt::Retry)) {
            break out;
        }
        bump(&core.stats.proxy_upstream_stale, 1);
        let addr = cfg.proxy.routes[to.route].upstreams[to.upstream].addr;
        match dial(core, addr).await {
            Some(fresh) => (up, reused) = (fresh, false),
            None => break Attempt::Retry,
        }
    };
    busy(-1);
    out
}

/// One attempt on a connection: send the head and body, read the response head, stream it
/// back.
#[allow(clippy::too_many_arguments)]
async fn attempt_on(
    core: &Core,
    stream: &mut ServerStream,
    mut up: TcpStream,
    reused: bool,
    head: &RequestHead,
    to: &Target,
    peer: IpAddr,
    pending: &mut Vec<u8>,
    checked: &Checked,
) -> Attempt {
    let cfg = core.config();
    let r = &cfg.proxy.routes[to.route];
    let fw = forwarding(core, stream, head, r, to.upstream, peer);
    let mut bytes = state::with(&cfg.proxy, |w| w.buffer());
    let target = |out: &mut Vec<u8>| table::push_target(r, head, out);
    write_upstream_request(&mut bytes, head, target, checked.body, &fw);
    let n = bytes.len();
    let (sent, bytes) = write_all(&mut up, bytes, n).await;
    state::with(&cfg.proxy, |w| w.give_back(bytes));
    if sent.is_err() {
        return Attempt::Retry;
    }
    if checked.body != Body::None {
        if let Err(status) = send_body(core, stream, &mut up, head, to, pending, checked).await {
            return Attempt::Failed(status);
        }
    }
    respond(core, stream, up, head, to, reused, checked).await
}

/// The request body, to the upstream; `Err(status)`: answered, the connection ends.
async fn send_body(
    core: &Core,
    stream: &mut ServerStream,
    up: &mut TcpStream,
    head: &RequestHead,
    to: &Target,
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
            super::stats::upstream(&cfg.proxy, to.route, to.upstream, |f| f.bytes_up += n);
            checked.moved.set((n, 0));
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

/// Reads the response head within `proxy.response_timeout`, skipping interim (1xx) ones,
/// into a pooled buffer, which it returns with the head still at its start (`len` bytes: see
/// [`write_client_response`]) and then what followed it.
pub(super) async fn read_response(
    core: &Core,
    up: &mut TcpStream,
    head_request: bool,
    upgrade: bool,
) -> Result<(UpstreamHead, Vec<u8>), (bool, bool)> {
    let cfg = core.config();
    let buf = state::with(&cfg.proxy, |w| w.buffer());
    let read = read_head(up, buf, head_request, upgrade, cfg.proxy.response_timeout).await;
    match read {
        Ok(x) => Ok(x),
        Err((e, buf)) => {
            state::with(&cfg.proxy, |w| w.give_back(buf));
            Err(e)
        }
    }
}

/// [`read_response`] in `buf`, given back on failure.
#[allow(clippy::type_complexity)]
async fn read_head(
    up: &mut TcpStream,
    mut buf: Vec<u8>,
    head_request: bool,
    upgrade: bool,
    timeout: std::time::Duration,
) -> Result<(UpstreamHead, Vec<u8>), ((bool, bool), Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    loop {
        match parse_response(&buf, head_request) {
            Ok(Some((h, n))) if (100..200).contains(&h.status) && h.status != 101 => {
                buf.drain(..n);
                continue;
            }
            Ok(Some((h, _))) if h.status != 101 || upgrade => return Ok((h, buf)),
            Ok(Some(_)) | Err(_) => return Err(((false, true), buf)),
            Ok(None) if buf.len() >= crate::http::client::MAX_HEAD => {
                return Err(((false, true), buf))
            }
            Ok(None) => {}
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let left = deadline.saturating_duration_since(Instant::now());
        let read = up.read(buf.slice_mut(len..cap));
        let Ok((res, slice)) = monoio::time::timeout(left, read).await else {
            // The read was dropped with its buffer: a new one goes back in its place.
            return Err(((true, len > 0), Vec::new()));
        };
        buf = slice.into_inner();
        match res {
            Ok(n) if n > 0 => {}
            // (timed out, any byte of a response seen)
            _ => return Err(((false, len > 0), buf)),
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
    checked: &Checked,
) -> Attempt {
    let cfg = core.config();
    let (resp, mut rest) = match read_response(core, &mut up, head.method == "HEAD", false).await {
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
    let mut bytes = state::with(&cfg.proxy, |w| w.buffer());
    write_client_response(&mut bytes, &rest[..resp.len], &resp, close, |_, _| {});
    rest.drain(..resp.len);
    let inline = with_inline_body(&mut bytes, resp.body, &mut rest);
    let n = bytes.len();
    let (sent, bytes) = write_all(stream, bytes, n).await;
    state::with(&cfg.proxy, |w| w.give_back(bytes));
    if sent.is_err() {
        state::with(&cfg.proxy, |w| w.give_back(rest));
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
    let clean = rest.is_empty();
    state::with(&cfg.proxy, |w| {
        w.give_back(buf);
        w.give_back(rest);
    });
    match moved {
        Ok(n) => {
            let n = n + inline as u64;
            bump(&core.stats.proxy_bytes_down, n);
            super::stats::upstream(&cfg.proxy, to.route, to.upstream, |f| f.bytes_down += n);
            checked.moved.set((checked.moved.get().0, n));
            if !resp.closes && resp.body != Reply::UntilClose && clean {
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
