//! WebSocket and other upgrades through a proxy route (docs/proxy.md, "WebSockets and other
//! upgrades"). The request goes to an upstream picked like any other, with `Connection:
//! upgrade` and the client's `Upgrade` put back (both are hop-by-hop: the proxy asks the next
//! hop itself). A 101 is passed on and the two connections are then joined byte for byte:
//! spliced through pipes (`runtime::splice`, the tunnels' data plane) when the client's
//! connection is plain TCP, copied through two pooled buffers when ringrelay holds its TLS.
//! Any other answer is passed on as a normal response, after which the connection closes.
//!
//! A joined upgrade keeps what it was admitted with until both sides are gone: the client's
//! count of open connections, a place among the server's connections (`limits.max_connections`,
//! checked before the upstream is asked), its route's `max_concurrent` and its upstream's
//! outstanding count (so the least loaded upstream gets the next one).

use super::body::{move_body, write_all, Frame, BODY_BUF};
use super::exchange::{
    count_status, dial, forwarding, judge, pick_upstream, read_response, refuse, refuse_as, Step,
};
use super::head::{
    client_response, upstream_request, write_client_response, Body, Forwarding, Reply, UpstreamHead,
};
use super::{state, table};
use crate::config::Config;
use crate::context::Core;
use crate::http::chunked::ChunkedDecoder;
use crate::http::RequestHead;
use crate::limits::capacity::{self, Joining};
use crate::limits::Refusal;
use crate::runtime::socket::shutdown_fd;
use crate::runtime::splice::{halves, idle_for, pump, Pace};
use crate::runtime::stream::ServerStream;
use crate::runtime::tls::TlsSession;
use crate::stats::bump;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::cell::Cell;
use std::fmt::Write;
use std::io::{self, IoSlice};
use std::net::{IpAddr, Shutdown};
use std::os::fd::AsRawFd;
use std::rc::Rc;

/// The values of every `name` header of `headers`, joined as one list.
fn joined<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>, name: &str) -> String {
    let values: Vec<&str> = headers
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    values.join(", ")
}

/// Whether `head` asks to switch protocols: a GET without a body, `Connection` naming
/// `upgrade`, and an `Upgrade` header. Anything else with an `Upgrade` header is forwarded as
/// a plain request, the header dropped (a proxy may ignore an upgrade; RFC 9110 section 7.8).
pub fn asked(head: &RequestHead, body: Body) -> bool {
    let pairs = || head.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    body == Body::None
        && head.method == "GET"
        && !joined(pairs(), "upgrade").is_empty()
        && joined(pairs(), "connection")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request head sent upstream for an upgrade: any request's head, plus `Connection:
/// upgrade` and the protocols the client asked for.
pub fn upgrade_request(head: &RequestHead, target: &str, fw: &Forwarding) -> Vec<u8> {
    let mut out = upstream_request(head, target, Body::None, fw);
    out.truncate(out.len() - 2);
    let pairs = head.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    let protocols = joined(pairs, "upgrade");
    let mut tail = String::new();
    let _ = write!(tail, "Connection: upgrade\r\nUpgrade: {protocols}\r\n\r\n");
    out.extend_from_slice(tail.as_bytes());
    out
}

/// The 101 sent to the client (from the upstream's head `raw`): the upstream's end-to-end
/// headers, `Connection: Upgrade` and the protocol the upstream switched to.
pub fn switching(raw: &[u8], up: &UpstreamHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + raw.len());
    write_client_response(&mut out, raw, up, false, |out, headers| {
        let pairs = headers
            .iter()
            .filter_map(|h| Some((h.name, std::str::from_utf8(h.value).ok()?)));
        let protocol = joined(pairs, "upgrade");
        out.extend_from_slice(b"Connection: Upgrade\r\n");
        if !protocol.is_empty() {
            out.extend_from_slice(format!("Upgrade: {protocol}\r\n").as_bytes());
        }
    });
    out
}

/// Who asked: the request's route and the connection's direct peer.
pub struct Request {
    pub route: usize,
    pub peer: IpAddr,
}

/// Holds a place in the route's `max_concurrent` and the upstream's outstanding count from
/// the moment an upstream is picked until the joined connections are gone.
struct Hold {
    cfg: Rc<Config>,
    route: usize,
    upstream: usize,
}

impl Hold {
    fn new(core: &Core, route: usize, upstream: usize) -> Hold {
        let cfg = core.config();
        state::with(&cfg.proxy, |w| {
            let r = &mut w.routes[route];
            r.in_flight += 1;
            r.health[upstream].outstanding += 1;
        });
        Hold {
            cfg,
            route,
            upstream,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        state::with(&self.cfg.proxy, |w| {
            let r = &mut w.routes[self.route];
            r.in_flight -= 1;
            r.health[self.upstream].outstanding -= 1;
        });
    }
}

/// An upgrade the upstream accepted: its connection, the bytes it sent after its 101, and
/// the places it holds.
pub struct Upgraded {
    up: TcpStream,
    rest: Vec<u8>,
    _hold: Hold,
}

/// Forwards an upgrade request. Returns (status, what the client connection does, the
/// upstream): `Step::Upgraded` after a 101 was passed on, `Step::Close` otherwise.
pub async fn forward(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    req: &Request,
    pending: &mut Vec<u8>,
    region: Option<&str>,
) -> (u16, Step, Option<usize>) {
    let totals = capacity::totals(&core.shared.gauges);
    let joining = Joining::New {
        opens_session: false,
    };
    if let Err(reason) = capacity::check(&core.config().limits, totals, joining) {
        refuse_as(core, stream, Refusal::Capacity(reason)).await;
        return (503, Step::Close, None);
    }
    let mut tried = None;
    for attempt in 0..2 {
        let Some(u) = pick_upstream(core, req.route, region, tried) else {
            bump(&core.stats.proxy_no_upstream, 1);
            let msg = "no healthy upstream for this request's region";
            refuse(core, stream, 503, "no_upstream", msg).await;
            return (503, Step::Close, tried);
        };
        if attempt > 0 {
            bump(&core.stats.proxy_retries, 1);
        }
        tried = Some(u);
        let hold = Hold::new(core, req.route, u);
        let answer = match ask(core, stream, head, req, u).await {
            Ok(answer) => answer,
            // Nothing reached an upstream that cannot be reached: another one may be tried.
            Err(Asked::Unreached) => {
                judge(core, req.route, u, None);
                continue;
            }
            Err(Asked::Failed { timed_out }) => {
                judge(core, req.route, u, None);
                let (status, code, msg) = match timed_out {
                    true => (
                        504,
                        "upstream_timeout",
                        "the upstream did not answer in time",
                    ),
                    false => (502, "bad_gateway", "the upstream broke off"),
                };
                match timed_out {
                    true => bump(&core.stats.proxy_upstream_timeouts, 1),
                    false => bump(&core.stats.proxy_upstream_failed, 1),
                }
                refuse(core, stream, status, code, msg).await;
                return (status, Step::Close, Some(u));
            }
        };
        let step = switch(core, stream, answer, hold, pending).await;
        return (step.0, step.1, Some(u));
    }
    bump(&core.stats.proxy_upstream_failed, 1);
    let msg = "the upstream could not be reached";
    refuse(core, stream, 502, "bad_gateway", msg).await;
    (502, Step::Close, tried)
}

/// Why asking an upstream for the upgrade gave no answer.
enum Asked {
    /// No connection could be made: nothing reached the upstream.
    Unreached,
    /// The request went out and no (whole) answer came: no retry.
    Failed { timed_out: bool },
}

/// Sends the upgrade request to upstream `u` and reads its answer's head: on an idle pooled
/// connection when there is one (as any request), else on a new one. A pooled connection the
/// upstream had already closed (nothing answered on it) is replaced by a new one once; the
/// upstream is not blamed for it.
async fn ask(
    core: &Core,
    stream: &ServerStream,
    head: &RequestHead,
    req: &Request,
    u: usize,
) -> Result<(TcpStream, UpstreamHead, Vec<u8>), Asked> {
    let cfg = core.config();
    let r = &cfg.proxy.routes[req.route];
    let pooled = state::with(&cfg.proxy, |w| w.idle_conn(&cfg.proxy, req.route, u));
    let fw = forwarding(core, stream, head, r, u, req.peer);
    let bytes = upgrade_request(head, &table::upstream_target(r, head), &fw);
    let mut bytes = Some(bytes);
    let mut next = pooled;
    if next.is_some() {
        bump(&core.stats.proxy_upstream_reused, 1);
    }
    loop {
        let reused = next.is_some();
        let mut up = match next.take() {
            Some(up) => up,
            None => dial(core, r.upstreams[u].addr)
                .await
                .ok_or(Asked::Unreached)?,
        };
        let out = bytes.take().unwrap_or_default();
        let n = out.len();
        let (sent, out) = write_all(&mut up, out, n).await;
        bytes = Some(out);
        let answer = match sent {
            Ok(()) => read_response(core, &mut up, false, true).await,
            Err(_) => Err((false, false)),
        };
        match answer {
            Ok((resp, rest)) => return Ok((up, resp, rest)),
            Err((false, false)) if reused => bump(&core.stats.proxy_upstream_stale, 1),
            Err((timed_out, _)) => return Err(Asked::Failed { timed_out }),
        }
    }
}

/// Passes the upstream's answer on: a 101 and the joined connections to come, or any other
/// response, after which the connection closes.
async fn switch(
    core: &Core,
    stream: &mut ServerStream,
    answer: (TcpStream, UpstreamHead, Vec<u8>),
    hold: Hold,
    pending: &mut Vec<u8>,
) -> (u16, Step) {
    let (mut up, resp, read) = answer;
    let (route, u) = (hold.route, hold.upstream);
    judge(core, route, u, Some(resp.status));
    count_status(core, resp.status);
    if resp.status != 101 {
        bump(&core.stats.proxy_upgrades_refused, 1);
        pass_on(core, stream, up, &resp, read).await;
        return (resp.status, Step::Close);
    }
    let bytes = switching(&read[..resp.len], &resp);
    // What followed the 101 (the new protocol's first bytes) is kept on its own: the pooled
    // read buffer goes back rather than living as long as the joined pair.
    let rest = read[resp.len..].to_vec();
    let cfg = core.config();
    state::with(&cfg.proxy, |w| w.give_back(read));
    let n = bytes.len();
    if write_all(stream, bytes, n).await.0.is_err() {
        return (101, Step::Close);
    }
    // What the client sent after its request head is the start of the new protocol.
    let early = std::mem::take(pending);
    let n = early.len();
    if write_all(&mut up, early, n).await.0.is_err() {
        return (101, Step::Close);
    }
    bump(&core.stats.proxy_upgrades, 1);
    bump(&core.stats.proxy_upgrade_bytes_up, n as u64);
    let joined = Upgraded {
        up,
        rest,
        _hold: hold,
    };
    (101, Step::Upgraded(Box::new(joined)))
}

/// An upstream's refusal of the upgrade, passed on as a normal response (its body streamed);
/// the client's connection closes after it.
async fn pass_on(
    core: &Core,
    stream: &mut ServerStream,
    mut up: TcpStream,
    resp: &UpstreamHead,
    mut rest: Vec<u8>,
) {
    let cfg = core.config();
    let bytes = client_response(&rest[..resp.len], resp, true);
    rest.drain(..resp.len);
    let n = bytes.len();
    if write_all(stream, bytes, n).await.0.is_err() {
        return;
    }
    let frame = match resp.body {
        Reply::None => return,
        Reply::Length(n) => Frame::Length(n),
        Reply::Chunked => Frame::Chunked(ChunkedDecoder::with_limit(u64::MAX)),
        Reply::UntilClose => Frame::UntilClose,
    };
    let mut buf = state::with(&cfg.proxy, |w| w.buffer());
    let idle = cfg.proxy.idle_timeout;
    if let Ok(n) = move_body(&mut up, stream, frame, &mut rest, &mut buf, idle).await {
        bump(&core.stats.proxy_bytes_down, n);
    }
    state::with(&cfg.proxy, |w| w.give_back(buf));
}

/// Counts a joined upgrade among this worker's connections while it lives.
struct Open<'a>(&'a Core);

impl<'a> Open<'a> {
    fn new(core: &'a Core) -> Open<'a> {
        core.proxy_upgrades.set(core.proxy_upgrades.get() + 1);
        core.publish_gauges();
        Open(core)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let c = &self.0.proxy_upgrades;
        c.set(c.get().saturating_sub(1));
        self.0.publish_gauges();
    }
}

/// Joins the client's connection to the upstream's until both directions end, either side
/// fails, or `proxy.upgrade_idle_timeout` passes without a byte either way.
pub async fn join(core: &Core, stream: ServerStream, upgraded: Upgraded) {
    let _open = Open::new(core);
    let Upgraded { up, rest, _hold } = upgraded;
    let (client, tls) = stream.into_parts();
    let last = Cell::new(core.clock.now_ms());
    let idle = core.config().proxy.upgrade_idle_timeout;
    let both = async {
        match tls {
            None => spliced(core, client, up, rest, &last).await,
            Some(tls) => copied(core, &client, &tls, up, rest, &last).await,
        }
    };
    monoio::select! {
        _ = both => {}
        _ = idle_for(&last, idle, || core.clock.now_ms()) => {
            bump(&core.stats.proxy_upgrade_idle_timeouts, 1);
        }
    }
}

/// A direction's pace: no shaping, its byte counter and the pair's last-activity time.
struct Counted<'a> {
    core: &'a Core,
    counter: &'a Cell<u64>,
    last: &'a Cell<u64>,
}

impl Pace for Counted<'_> {
    async fn allow(&self, want: u32) -> u32 {
        want
    }

    fn unused(&self, _: u32) {}

    fn moved(&self, n: u32, passed: bool) {
        self.last.set(self.core.clock.now_ms());
        if passed {
            bump(self.counter, u64::from(n));
        }
    }
}

/// A plain client connection: both directions spliced through pipes.
async fn spliced(core: &Core, client: TcpStream, up: TcpStream, rest: Vec<u8>, last: &Cell<u64>) {
    let mut client = client;
    if !rest.is_empty() {
        let n = rest.len() as u64;
        if client.write_all(rest).await.0.is_err() {
            return;
        }
        bump(&core.stats.proxy_upgrade_bytes_down, n);
    }
    let (Ok((client_r, client_w)), Ok((up_r, up_w))) = (halves(client), halves(up)) else {
        return;
    };
    let s = &core.stats;
    monoio::join!(
        direction(core, client_r, up_w, &s.proxy_upgrade_bytes_up, last),
        direction(core, up_r, client_w, &s.proxy_upgrade_bytes_down, last),
    );
}

/// One spliced direction until `src`'s FIN (passed on as `dst`'s) or an error (which shuts
/// both sockets both ways, so the other direction ends too).
async fn direction(
    core: &Core,
    mut src: TcpStream,
    mut dst: TcpStream,
    counter: &Cell<u64>,
    last: &Cell<u64>,
) {
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let pace = Counted {
        core,
        counter,
        last,
    };
    match pump(&mut src, &mut dst, &pace).await {
        Ok(()) => shutdown_fd(d, Shutdown::Write),
        Err(_) => {
            shutdown_fd(s, Shutdown::Both);
            shutdown_fd(d, Shutdown::Both);
        }
    }
}

/// A TLS client connection: ringrelay holds its session, so the bytes are decrypted and
/// encrypted here, each direction through one pooled buffer.
async fn copied(
    core: &Core,
    client: &TcpStream,
    tls: &TlsSession,
    up: TcpStream,
    rest: Vec<u8>,
    last: &Cell<u64>,
) {
    if !rest.is_empty() {
        if to_tls(tls, client, &rest).await.is_err() {
            return;
        }
        bump(&core.stats.proxy_upgrade_bytes_down, rest.len() as u64);
    }
    let Ok((up_r, up_w)) = halves(up) else {
        return;
    };
    let fd = client.as_raw_fd();
    let (a, b) = monoio::join!(
        from_client(core, tls, client, up_w, last),
        to_client(core, tls, client, up_r, last),
    );
    if a.is_err() || b.is_err() {
        shutdown_fd(fd, Shutdown::Both);
    }
}

/// Writes all of `bytes` through the TLS session.
async fn to_tls(tls: &TlsSession, tcp: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = tls.write(tcp, &[IoSlice::new(bytes)]).await?;
        bytes = &bytes[n..];
    }
    tls.flush(tcp).await
}

/// Client to upstream, decrypted, until the client's end (passed on as the upstream's FIN).
async fn from_client(
    core: &Core,
    tls: &TlsSession,
    client: &TcpStream,
    mut up: TcpStream,
    last: &Cell<u64>,
) -> io::Result<()> {
    let cfg = core.config();
    let mut buf = state::with(&cfg.proxy, |w| w.buffer());
    let moved: io::Result<()> = async {
        loop {
            buf.clear();
            let n = tls
                .read(client, BODY_BUF, &mut |b| buf.extend_from_slice(b))
                .await?;
            if n == 0 {
                return Ok(());
            }
            last.set(core.clock.now_ms());
            let (r, b) = up.write_all(std::mem::take(&mut buf)).await;
            buf = b;
            r?;
            bump(&core.stats.proxy_upgrade_bytes_up, n as u64);
            last.set(core.clock.now_ms());
        }
    }
    .await;
    state::with(&cfg.proxy, |w| w.give_back(buf));
    let how = match moved {
        Ok(()) => Shutdown::Write,
        Err(_) => Shutdown::Both,
    };
    shutdown_fd(up.as_raw_fd(), how);
    moved
}

/// Upstream to client, encrypted, until the upstream's end (passed on as close_notify and
/// the client's FIN).
async fn to_client(
    core: &Core,
    tls: &TlsSession,
    client: &TcpStream,
    mut up: TcpStream,
    last: &Cell<u64>,
) -> io::Result<()> {
    let cfg = core.config();
    let mut buf = state::with(&cfg.proxy, |w| w.buffer());
    let moved: io::Result<()> = async {
        loop {
            buf.clear();
            let (r, b) = up.read(std::mem::take(&mut buf)).await;
            buf = b;
            let n = r?;
            if n == 0 {
                return Ok(());
            }
            last.set(core.clock.now_ms());
            to_tls(tls, client, &buf[..n]).await?;
            bump(&core.stats.proxy_upgrade_bytes_down, n as u64);
            last.set(core.clock.now_ms());
        }
    }
    .await;
    state::with(&cfg.proxy, |w| w.give_back(buf));
    match moved {
        Ok(()) => {
            let _ = tls.close_notify(client).await;
            shutdown_fd(client.as_raw_fd(), Shutdown::Write);
        }
        Err(_) => shutdown_fd(up.as_raw_fd(), Shutdown::Both),
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::head::parse_response;

    fn fw() -> Forwarding<'static> {
        Forwarding {
            peer: "10.0.0.9".parse().unwrap(),
            peer_trusted: false,
            tls: false,
            host: "127.0.0.1:4001",
            drop_authorization: false,
        }
    }

    fn ws_head(connection: &str) -> RequestHead {
        RequestHead::with_headers(
            "GET",
            "/chat",
            &[
                ("host", "front.example"),
                ("connection", connection),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
                ("keep-alive", "5"),
            ],
        )
    }

    #[test]
    fn an_upgrade_is_a_bodiless_get_naming_upgrade_in_connection() {
        assert!(asked(&ws_head("Upgrade"), Body::None));
        assert!(asked(&ws_head("keep-alive, UPGRADE"), Body::None));
        assert!(!asked(&ws_head("keep-alive"), Body::None));
        assert!(!asked(&ws_head("Upgrade"), Body::Length(3)));
        let mut post = ws_head("Upgrade");
        post.method = "POST".into();
        assert!(!asked(&post, Body::None));
        let bare = RequestHead::with_headers("GET", "/", &[("connection", "upgrade")]);
        assert!(!asked(&bare, Body::None));
    }

    #[test]
    fn the_upstream_is_asked_to_upgrade_with_the_end_to_end_headers() {
        let out = upgrade_request(&ws_head("keep-alive, Upgrade"), "/chat", &fw());
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("GET /chat HTTP/1.1\r\nHost: 127.0.0.1:4001\r\n"));
        assert!(out.contains("sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(out.contains("sec-websocket-version: 13\r\n"));
        assert!(out.contains("X-Forwarded-For: 10.0.0.9\r\n"));
        assert!(out.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"));
        assert!(!out.to_ascii_lowercase().contains("keep-alive"), "{out}");
        assert_eq!(out.matches("\r\n\r\n").count(), 1);
    }

    #[test]
    fn the_101_keeps_its_protocol_and_end_to_end_headers() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\nX-Hop: 1\r\nSec-WebSocket-Accept: abc=\r\n\r\nframe";
        let (up, n) = parse_response(raw, false).unwrap().unwrap();
        assert_eq!((up.status, n), (101, raw.len() - 5));
        let out = String::from_utf8(switching(&raw[..n], &up)).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc=\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
    }
}
