//! One bridged request, on the core that owns its session: check it, read its body, send it
//! to the session's agent, wait for the answer and write it as the response. Every way this
//! can fail ends in one of the contract's statuses with a JSON body (docs/bridge.md); the
//! connection closes after the response, as for every plain HTTP answer of the relay.

use super::failure::Failure;
use super::framing::{body_length, BodyLength};
use super::headers::forwardable;
use super::message::HttpRequestMsg;
use super::reply::{http_response, sends_body, Origin};
use crate::context::Core;
use crate::http::chunked::{ChunkedDecoder, ChunkedError};
use crate::http::response::truncate_to_head;
use crate::http::write::write_and_close;
use crate::http::write::AnswerStream;
use crate::http::{RequestHead, Response};
use crate::limits::IpCharge;
use crate::runtime::stream::ServerStream;
use crate::session::bridged::{wire_id, Answer};
use crate::session::Peer;
use crate::stats::access;
use crate::stats::{bump, Latency};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A bridged request whose head was read and admitted.
pub struct BridgeRequest {
    pub head: RequestHead,
    pub session: String,
    /// Bytes that followed the head in the same reads: the start of the body.
    pub extra: Vec<u8>,
    pub ip: IpAddr,
    /// The request's count among its client's open connections (taken at admission), held
    /// until its connection ends.
    pub charge: IpCharge,
    pub accepted_at: Instant,
}

/// A response ready to write, with its status for the counters.
pub struct Reply {
    pub status: u16,
    bytes: Vec<u8>,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply {
            status: r.status,
            bytes: r.to_bytes(),
        }
    }
}

/// Read size while taking a body in.
const BODY_READ: usize = 16 << 10;

/// A bridged request's connection, counted from its start until it really ends (its
/// response written or given up): in the client's open connections (`limits.
/// max_connections_per_ip`, the charge taken at admission) and in this worker's connections
/// (`limits.max_connections_per_worker`). Released on drop, so no way out forgets it.
struct Counted<'a> {
    core: &'a Core,
    _charge: IpCharge,
}

impl<'a> Counted<'a> {
    fn new(core: &'a Core, charge: IpCharge) -> Counted<'a> {
        core.bridge.connection_opened();
        Counted {
            core,
            _charge: charge,
        }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.core.bridge.connection_closed();
    }
}

pub async fn serve(core: Rc<Core>, mut stream: ServerStream, req: BridgeRequest) {
    bump(&core.stats.bridge_requests, 1);
    let head_request = req.head.method == "HEAD";
    // A request waiting for its agent holds a connection like any peer: it counts against
    // the client's open connections until its response is written.
    let mut req = req;
    let ip = req.ip;
    let charge = std::mem::replace(&mut req.charge, IpCharge::uncounted(ip));
    let counted = Counted::new(&core, charge);
    let mut body_bytes = 0;
    let reply = exchange(&core, &mut stream, req, &mut body_bytes).await;
    let written = reply.as_ref().map_or(0, |r| r.bytes.len() as u64);
    let status = reply.as_ref().map(|r| r.status);
    access::bridged(
        &core.stats,
        stream.access_note(),
        status,
        (body_bytes, written),
    );
    // The client went away while its request waited: nobody to answer.
    let Some(reply) = reply else {
        return;
    };
    let st = &core.stats;
    let class = match reply.status {
        200..=299 => &st.bridge_responses_2xx,
        300..=399 => &st.bridge_responses_3xx,
        400..=499 => &st.bridge_responses_4xx,
        _ => &st.bridge_responses_5xx,
    };
    bump(class, 1);
    let mut bytes = reply.bytes;
    if head_request {
        // A response to HEAD has no content, refusals included.
        truncate_to_head(&mut bytes);
    }
    // A client that does not read its response (up to a whole `bridge.max_response_bytes`
    // body) holds a descriptor, this task and the bytes: bounded like a peer's write.
    let limit = core.config().limits.write_timeout;
    if monoio::time::timeout(limit, write_and_close(&mut stream, bytes))
        .await
        .is_err()
    {
        bump(&core.stats.bridge_write_timeouts, 1);
        tracing::debug!(%ip, "bridged response not taken within limits.write_timeout");
    }
    drop(stream);
    drop(counted);
}

/// The session's agent, if one is connected and not being closed.
fn agent_of(core: &Core, session: &str) -> Option<Rc<Peer>> {
    let role = &core.config().bridge.agent_role;
    core.registry
        .get(session)?
        .peers()
        .into_iter()
        .find(|p| *p.role == **role && !p.is_closing())
}

/// Sends the request to its agent and waits for the answer (or the failure to answer);
/// `body_bytes` is set to the size of the body the agent was sent.
async fn exchange(
    core: &Rc<Core>,
    stream: &mut ServerStream,
    mut req: BridgeRequest,
    body_bytes: &mut u64,
) -> Option<Reply> {
    match prepare(core, stream, &mut req).await {
        Ok(ready) => {
            *body_bytes = ready.body_bytes;
            wait_for_answer(core, stream, &req, ready).await
        }
        Err(failure) => Some(failure.reply(&core.stats)),
    }
}

/// A request checked, read whole and registered, ready to go to its agent.
struct Ready {
    agent: Rc<Peer>,
    n: u128,
    rx: local_sync::oneshot::Receiver<Answer>,
    json: String,
    body_bytes: u64,
}

/// Everything up to the request's registration: the checks, the body, the agent.
async fn prepare(
    core: &Rc<Core>,
    stream: &mut ServerStream,
    req: &mut BridgeRequest,
) -> Result<Ready, Failure> {
    let framing = check_head(core, req)?;
    let body = read_request_body(core, stream, req, framing).await?;
    register(core, req, &body)
}

/// What can be refused from the head alone, before any body is read: Host, the method, the
/// framing and the declared size, and whether the session has an agent at all.
fn check_head(core: &Core, req: &BridgeRequest) -> Result<BodyLength, Failure> {
    let cfg = &core.config().bridge;
    let head = &req.head;
    // RFC 9112 section 3.2: exactly one Host in HTTP/1.1. Two could be read differently by
    // the agent's HTTP stack and the API behind it, so neither reaches them.
    let hosts = head.header_count("host");
    if hosts > 1 || (hosts == 0 && head.version == 1) {
        return Err(Failure::BadHost);
    }
    if !cfg.allowed_methods.contains(&head.method) {
        return Err(Failure::MethodNotAllowed(cfg.allowed_methods.join(", ")));
    }
    let framing = body_length(head).map_err(Failure::Framing)?;
    if matches!(framing, BodyLength::Fixed(n) if n > cfg.max_body_bytes as u64) {
        return Err(Failure::BodyTooLarge(cfg.max_body_bytes));
    }
    if agent_of(core, &req.session).is_none() {
        return Err(Failure::AgentNotConnected);
    }
    Ok(framing)
}

/// The whole body, within what is left of `limits.handshake_timeout` and under
/// `bridge.max_body_bytes`; a client that sent `Expect: 100-continue` is told to go on first.
async fn read_request_body(
    core: &Core,
    stream: &mut ServerStream,
    req: &mut BridgeRequest,
    framing: BodyLength,
) -> Result<Vec<u8>, Failure> {
    let wants_continue = req
        .head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if wants_continue && framing != BodyLength::Empty {
        let (r, _) = stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        if r.is_err() {
            return Err(Failure::ClientGone);
        }
    }
    let timeout = core.config().limits.handshake_timeout;
    let left = timeout.saturating_sub(req.accepted_at.elapsed());
    let read = read_body(
        stream,
        framing,
        std::mem::take(&mut req.extra),
        core.config().bridge.max_body_bytes,
    );
    match monoio::time::timeout(left, read).await {
        Ok(body) => body,
        Err(_) => Err(Failure::BodyTimeout),
    }
}

/// Takes a place among the agent's requests in flight (`bridge.max_in_flight`) and builds
/// the message the agent gets. The agent is looked up again: it may have left while the body
/// was arriving.
fn register(core: &Core, req: &BridgeRequest, body: &[u8]) -> Result<Ready, Failure> {
    let cfg = &core.config().bridge;
    let agent = agent_of(core, &req.session).ok_or(Failure::AgentNotConnected)?;
    // The core's connections are parked for a binary upgrade: the agent crosses to the new
    // process, which would never see this request's answer (docs/upgrade.md).
    if core.registry.park.holds() {
        bump(&core.stats.handover_bridged_refused, 1);
        return Err(Failure::Upgrading);
    }
    let random = || u128::from_le_bytes(core.rng.bytes());
    let Ok((n, rx)) = core.bridge.register(agent.id, cfg.max_in_flight, random) else {
        return Err(Failure::Busy);
    };
    let auth_on = core.auth().is_some();
    let head = &req.head;
    let json = HttpRequestMsg::new(
        wire_id(n),
        core.bridge.agent_key(agent.id).map(|k| k.to_string()),
        head.method.clone(),
        agent_path(head, &req.session, auth_on),
        agent_headers(&head.headers, auth_on),
        body,
    )
    .to_json();
    Ok(Ready {
        agent,
        n,
        rx,
        json,
        body_bytes: body.len() as u64,
    })
}

/// Sends the request and waits for the first of: the answer, the timeout, the agent
/// leaving, the client leaving. A client that closes its connection is not answered, and
/// its request stops holding a place (nginx's default with a client that aborts).
async fn wait_for_answer(
    core: &Rc<Core>,
    stream: &mut ServerStream,
    req: &BridgeRequest,
    ready: Ready,
) -> Option<Reply> {
    let Ready {
        agent,
        n,
        rx,
        json,
        body_bytes,
    } = ready;
    let sent_at = Instant::now();
    let wait = async {
        agent.send_text(&json).await.map_err(|_| ())?;
        drop(json);
        bump(&core.stats.bridge_request_bytes, body_bytes);
        rx.await.map_err(|_| ())
    };
    let timed = monoio::time::timeout(core.config().bridge.timeout, wait);
    let outcome = monoio::select! {
        r = timed => Some(r),
        _ = client_closed(stream) => None,
    };
    let answer = match outcome {
        None => {
            core.bridge.cancel(n);
            bump(&core.stats.bridge_client_gone, 1);
            return None;
        }
        Some(Ok(Ok(a))) => a,
        Some(Ok(Err(()))) => {
            core.bridge.cancel(n);
            Answer::AgentGone
        }
        Some(Err(_)) => {
            core.bridge.cancel(n);
            return Some(Failure::AgentTimeout.reply(&core.stats));
        }
    };
    core.latency.record(
        Latency::Bridge,
        sent_at.elapsed().max(Duration::from_micros(1)),
    );
    tracing::debug!(session = %req.session, method = %req.head.method, "bridged request answered");
    Some(match answer {
        Answer::Reply(r) => {
            let head_request = req.head.method == "HEAD";
            if sends_body(r.status, head_request) {
                bump(&core.stats.bridge_response_bytes, r.body.len() as u64);
            }
            Reply {
                status: r.status,
                bytes: http_response(&r, head_request, Origin::of(&core.config())),
            }
        }
        Answer::Malformed => Failure::BadAgentAnswer.reply(&core.stats),
        Answer::TooLarge => Failure::AgentResponseTooLarge.reply(&core.stats),
        Answer::AgentGone => Failure::AgentDisconnected.reply(&core.stats),
        Answer::Upgrading => Failure::Upgrading.reply(&core.stats),
    })
}

/// Completes when the client closes its side (or its connection fails). Bytes it sends
/// meanwhile (a pipelined request, which is not served) are read and dropped.
async fn client_closed(stream: &mut ServerStream) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let (r, b) = stream.read(buf).await;
        buf = b;
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
}

async fn read_body(
    stream: &mut ServerStream,
    framing: BodyLength,
    mut got: Vec<u8>,
    max: usize,
) -> Result<Vec<u8>, Failure> {
    let mut chunked = ChunkedDecoder::with_limit(max as u64);
    let mut body = Vec::new();
    let want = match framing {
        BodyLength::Empty => return Ok(Vec::new()),
        BodyLength::Fixed(n) => n as usize,
        BodyLength::Chunked => usize::MAX,
    };
    loop {
        if want != usize::MAX {
            body.extend_from_slice(&got[..got.len().min(want - body.len())]);
            if body.len() == want {
                return Ok(body);
            }
        } else {
            match chunked.feed(&got, |d| body.extend_from_slice(d)) {
                Ok((_, true)) => return Ok(body),
                Ok((_, false)) => {}
                Err(ChunkedError::TooLarge) => return Err(Failure::BodyTooLarge(max)),
                Err(ChunkedError::Malformed) => return Err(Failure::BadChunkedBody),
            }
        }
        got.clear();
        got.reserve(BODY_READ);
        let (r, buf) = stream.read(got).await;
        got = buf;
        match r {
            Ok(n) if n > 0 => {}
            _ => return Err(Failure::IncompleteBody),
        }
    }
}

/// The path below `/v1/http/{session}` with the query. A token (or an API key in `key=`)
/// meant for the relay is not passed on to the user's API.
fn agent_path(head: &RequestHead, session: &str, auth_on: bool) -> String {
    let prefix = "/v1/http/".len() + session.len();
    let rest = head.path.get(prefix..).unwrap_or("");
    let mut path = if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    };
    let query: Vec<&str> = head
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !auth_on || !crate::auth::is_credential_param(p))
        .collect();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    path
}

/// Headers for the agent: hop-by-hop ones, those about this connection (`Expect`,
/// `Content-Length`: the body travels whole) and the relay's own credential are left out.
fn agent_headers(headers: &[(String, String)], auth_on: bool) -> Vec<(String, String)> {
    forwardable(headers)
        .into_iter()
        .filter(|(n, _)| n != "expect" && n != "content-length")
        .filter(|(n, _)| !(auth_on && n == "authorization"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(path: &str, query: &str) -> RequestHead {
        let mut h = RequestHead::with_headers("GET", path, &[]);
        h.query = query.into();
        h
    }

    #[test]
    fn the_agent_sees_the_path_below_the_session() {
        let cases = [
            ("/v1/http/s1", "", false, "/"),
            ("/v1/http/s1/", "", false, "/"),
            ("/v1/http/s1/users/7", "x=1&y=2", false, "/users/7?x=1&y=2"),
            ("/v1/http/s1/a", "token=t&x=1", false, "/a?token=t&x=1"),
            ("/v1/http/s1/a", "token=t&x=1", true, "/a?x=1"),
            ("/v1/http/s1/a", "token=t", true, "/a"),
            ("/v1/http/s1/a", "tokens=1", true, "/a?tokens=1"),
            ("/v1/http/s1/a", "key=rrk_00&key=7", true, "/a?key=7"),
        ];
        for (path, query, auth, want) in cases {
            assert_eq!(
                agent_path(&head(path, query), "s1", auth),
                want,
                "{path}?{query}"
            );
        }
    }

    #[test]
    fn connection_headers_and_the_relay_credential_stay_behind() {
        let h: Vec<(String, String)> = [
            ("Host", "relay"),
            ("Expect", "100-continue"),
            ("Content-Length", "3"),
            ("Authorization", "Bearer t"),
            ("Connection", "close"),
            ("X-A", "1"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let names = |v: Vec<(String, String)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(agent_headers(&h, false)),
            ["host", "authorization", "x-a"]
        );
        assert_eq!(names(agent_headers(&h, true)), ["host", "x-a"]);
    }
}
