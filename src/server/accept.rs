//! The HTTP phase of a connection: read the request head within the handshake timeout,
//! route it, and either answer it, upgrade it here, hand it to another core (its client's
//! home, or its session's), or carry it to the node that owns its session.

use super::handshake::{per_ip, HandshakeSlot};
use super::health::health;
use super::scrape::{scrape, Format};
use crate::bridge::cors;
use crate::bridge::serve::{serve as serve_bridged, BridgeRequest};
use crate::cluster::carry::{carry, OwnerNode};
use crate::cluster::inbound::accept_link;
use crate::cluster::place::{place, region_hint, Placement};
use crate::config::{ClientIpHeader, EchoRoute};
use crate::context::admit::{admit, admit_proxied, count_open};
use crate::context::Core;
use crate::fleet::local::Origin;
use crate::http::route::{route, RelayTarget};
use crate::http::upgrade::check_upgrade;
use crate::http::write::{answer, write_and_close, AnswerStream};
use crate::http::{parse_head, HeadError, HeadScan, RequestHead, Response, Route};
use crate::limits::admit::Admitted;
use crate::limits::cidr;
use crate::limits::client_ip::{client_ip, trusted};
use crate::limits::proxy_protocol::{self, Parsed, ProxyHeaderError};
use crate::limits::{home_core, IpCharge, Refusal};
use crate::relay::join::{join_session, run_echo, Seat};
use crate::runtime::stream::ServerStream;
use crate::runtime::tls::Refused;
use crate::session::handoff::Carried;
use crate::session::handoff::Tls;
use crate::session::handoff::{owner_core, Handoff, Parcel, Stage};
use crate::stats::{bump, Latency, RefusedStatus};
use crate::tls::Failure;
use crate::ws::accept::accept_key;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Which listener a connection came in on: the admin one serves no WebSocket routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
    /// `cluster.internal_listen`: other nodes carrying peers here, after a challenge.
    Internal,
}

enum HeadRead {
    Done(RequestHead, Vec<u8>, usize),
    Refuse(HeadError),
    Gone,
}

async fn read_head(core: &Core, stream: &mut ServerStream, mut buf: Vec<u8>) -> HeadRead {
    let limits = &core.config().limits;
    let (max_bytes, max_headers) = (limits.max_header_bytes, limits.max_headers);
    let mut scan = HeadScan::default();
    loop {
        match scan.feed(&buf, max_bytes, max_headers) {
            Ok(Some(end)) => {
                return match parse_head(&buf[..end], max_bytes, max_headers) {
                    Ok(Some((head, n))) => HeadRead::Done(head, buf, n),
                    Ok(None) => HeadRead::Refuse(HeadError::Malformed),
                    Err(e) => HeadRead::Refuse(e),
                }
            }
            Ok(None) => {}
            Err(e) => return HeadRead::Refuse(e),
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(1024));
        }
        let cap = buf.capacity().min(max_bytes.max(buf.len() + 1));
        let len = buf.len();
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        match res {
            Ok(n) if n > 0 => {}
            _ => return HeadRead::Gone,
        }
    }
}

/// Reads the PROXY protocol header a trusted proxy sends first. Returns the address it
/// names (`None`: the proxy's own connection, whose client is the proxy) and the bytes read
/// after it, which are the start of the request.
/// `Err(None)`: the peer closed before sending anything.
async fn read_proxy_header(
    stream: &mut ServerStream,
    mut buf: Vec<u8>,
) -> Result<(Option<IpAddr>, Vec<u8>), Option<ProxyHeaderError>> {
    loop {
        match proxy_protocol::parse(&buf)? {
            Parsed::Done { len, source } => {
                let rest = buf.split_off(len);
                return Ok((source.map(|s| s.ip().to_canonical()), rest));
            }
            Parsed::Partial => {}
        }
        if buf.len() == buf.capacity() {
            buf.reserve(256);
        }
        // Never past the longest header: what follows it is the request, read by the head
        // reader under its own limits.
        let cap = buf
            .capacity()
            .min(proxy_protocol::MAX_HEADER_BYTES.max(buf.len() + 1));
        let len = buf.len();
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        match res {
            Ok(n) if n > 0 => {}
            _ if buf.is_empty() => return Err(None),
            _ => return Err(Some(ProxyHeaderError::Missing)),
        }
    }
}

/// What the HTTP phase decided. Everything it parsed is dropped before the long-lived phase
/// starts, so an idle upgraded connection keeps no request head or read buffer.
enum Next {
    Done,
    Echo {
        upgrade: Response,
        extra: Vec<u8>,
        charge: IpCharge,
    },
    Join {
        target: RelayTarget,
        upgrade: Response,
        extra: Vec<u8>,
        charge: IpCharge,
        carried: Option<Carried>,
        hint: Option<String>,
    },
    /// To another core: the client's home, or the session's owner.
    HandOver {
        to: usize,
        parcel: Parcel,
    },
    Bridge(BridgeRequest),
    /// A tunnel's control or data connection, admitted, on the worker that holds it.
    Tunnel(Box<crate::tunnel::Request>),
    /// A request for a proxy route (`proxy.routes`), served here.
    Proxy(Box<crate::proxy::ProxyRequest>),
    /// The session is owned by another node: carry the connection there.
    Carry {
        owner: OwnerNode,
        bytes: Vec<u8>,
        carried: Carried,
        charge: IpCharge,
    },
}

/// Where a connection came from and what was already decided for it.
pub struct Arrival {
    pub listener: Listener,
    /// The direct peer's address.
    pub peer: IpAddr,
    /// The client's address when already known: named by a PROXY header, or by a trusted
    /// proxy's header on the core that handed the connection to the client's home.
    pub client: Option<IpAddr>,
    /// Bytes read before (a handed-over connection's request head and what followed it).
    pub initial: Vec<u8>,
    pub accepted_at: Instant,
    /// Set when another core already admitted this connection and handed it over.
    pub admitted: Option<Admitted>,
    /// Set when another node carried it here; its session must be owned here.
    pub carried: Option<Carried>,
    /// Its place among this worker's unfinished handshakes, while it reads its request here.
    pub slot: Option<HandshakeSlot>,
    /// Accepted on the TLS listener and not yet through its TLS handshake.
    pub tls_pending: bool,
}

impl Arrival {
    /// A connection accepted on `listener` just now.
    pub fn new(listener: Listener, peer: IpAddr, slot: Option<HandshakeSlot>) -> Arrival {
        Arrival {
            listener,
            peer,
            client: None,
            initial: Vec::new(),
            accepted_at: Instant::now(),
            admitted: None,
            carried: None,
            slot,
            tls_pending: false,
        }
    }
}

/// A new connection on the public listener: to its client's home core if it landed elsewhere
/// (the steering program is missing), else counted among the unfinished handshakes (closed at
/// once when they are full) and read here.
pub fn accepted(core: &Rc<Core>, stream: TcpStream, peer: IpAddr, tls: bool) {
    let peer = peer.to_canonical();
    let charged = per_ip(core, peer);
    if let Some(home) = charged.and_then(|ip| home_elsewhere(core, ip)) {
        let parcel = Parcel {
            bytes: Vec::new(),
            accepted_at: Instant::now(),
            peer,
            stage: Stage::Accepted { client: None },
            carried: None,
            tls: if tls { Tls::Pending } else { Tls::Plain },
        };
        monoio::spawn(hand_over(core.clone(), stream.into(), home, parcel));
        return;
    }
    // Closed at once when full: no answer, so a flood of them costs no writes.
    let Some(slot) = HandshakeSlot::take(core, charged) else {
        return;
    };
    let mut arrival = Arrival::new(Listener::Public, peer, Some(slot));
    arrival.tls_pending = tls;
    monoio::spawn(handle(core.clone(), stream.into(), arrival));
}

/// Entry for a freshly accepted connection (or one handed over with `initial` bytes).
pub async fn handle(core: Rc<Core>, mut stream: ServerStream, mut arrival: Arrival) {
    let accepted_at = arrival.accepted_at;
    if arrival.listener == Listener::Internal {
        let Some((carried, rest)) = accept_link(&core, &mut stream, arrival.peer).await else {
            return;
        };
        arrival = Arrival {
            listener: Listener::Public,
            peer: carried.ip,
            client: Some(carried.ip),
            initial: rest,
            accepted_at,
            // Admitted by the carrying node; counted here by its home core before it is seated.
            admitted: Some(Admitted {
                ip: carried.ip,
                role: carried.role.clone(),
                charge: None,
            }),
            carried: Some(carried),
            slot: None,
            tls_pending: false,
        };
    }
    let origin = |carried: &Option<Carried>, hint: Option<String>| {
        core.shared.cluster.as_ref().map(|view| match carried {
            Some(c) => Origin {
                via: Some(c.from.as_str().into()),
                region: c.region.as_str().into(),
            },
            None => Origin {
                via: None,
                region: hint.as_deref().unwrap_or(&view.identity.region).into(),
            },
        })
    };
    match http_phase(&core, &mut stream, arrival).await {
        Next::Done => {}
        Next::Echo {
            upgrade,
            extra,
            charge,
        } => run_echo(core, stream, upgrade, extra, accepted_at, charge).await,
        Next::Join {
            target,
            upgrade,
            extra,
            charge,
            carried,
            hint,
        } => {
            let origin = origin(&carried, hint);
            let seat = Seat {
                upgrade,
                extra,
                accepted_at,
                charge,
                origin,
            };
            join_session(core, stream, target, seat).await
        }
        Next::HandOver { to, parcel } => hand_over(core, stream, to, parcel).await,
        Next::Bridge(req) => serve_bridged(core, stream, req).await,
        Next::Tunnel(req) => crate::tunnel::serve(core, stream, *req).await,
        Next::Proxy(req) => crate::proxy::serve(core, stream, *req).await,
        Next::Carry {
            owner,
            bytes,
            carried,
            charge,
        } => carry(core, stream, owner, carried, bytes, charge).await,
    }
}

/// A redacted form of the request line's target for logs: tokens never appear in them.
fn log_target(head: &RequestHead) -> String {
    if head.query.is_empty() {
        head.path.clone()
    } else {
        format!("{}?{}", head.path, crate::auth::redact_query(&head.query))
    }
}

/// The core to hand a connection from `ip` to when this is not `ip`'s home (and per-IP
/// limits are on, so the home matters).
fn home_elsewhere(core: &Core, ip: IpAddr) -> Option<usize> {
    if !core.ip_limits.enabled() {
        return None;
    }
    let home = home_core(ip, core.shared.workers());
    (home != core.index).then(|| {
        bump(&core.stats.home_handoffs, 1);
        home
    })
}

/// What reading a PROXY header came to.
enum ProxyRead {
    /// The client's address, and the bytes after the header.
    Header(IpAddr, Vec<u8>),
    /// Dropped: the reason was counted.
    Dropped,
}

/// Reads the PROXY header of a connection from trusted proxy `peer`. A trusted proxy that
/// sends none, or a malformed one, is dropped and counted: it is misconfigured (or it is not
/// the proxy), and reading its bytes as a request would charge the proxy for its clients.
async fn proxy_header(
    core: &Core,
    stream: &mut ServerStream,
    peer: IpAddr,
    buf: Vec<u8>,
    left: Duration,
) -> ProxyRead {
    match monoio::time::timeout(left, read_proxy_header(stream, buf)).await {
        Ok(Ok((source, rest))) => ProxyRead::Header(source.unwrap_or(peer), rest),
        Ok(Err(None)) => ProxyRead::Dropped,
        Ok(Err(Some(e))) => {
            // Said once per worker at warning level: a misconfigured proxy would repeat it
            // for every connection. The counter keeps the tally.
            if core.stats.proxy_header_refused.get() == 0 {
                tracing::warn!(%peer, error = %e, "dropped a connection from a trusted proxy (PROXY protocol expected); further ones are counted as proxy_header_refused");
            } else {
                tracing::debug!(%peer, error = %e, "dropped a connection from a trusted proxy");
            }
            bump(&core.stats.proxy_header_refused, 1);
            ProxyRead::Dropped
        }
        Err(_) => {
            core.stats.refused(RefusedStatus::Timeout);
            ProxyRead::Dropped
        }
    }
}

/// A request whose head was read on this core: what the steps after the head need, and what
/// goes along when the connection is handed to another core.
struct Request {
    /// The direct peer's address.
    peer: IpAddr,
    /// The client's address when a PROXY header or another core already named it.
    client: Option<IpAddr>,
    accepted_at: Instant,
    head: RequestHead,
    /// The head and whatever was read after it.
    buf: Vec<u8>,
    head_len: usize,
    /// Set when another node carried this connection here.
    carried: Option<Carried>,
}

impl Request {
    /// What crosses to another core with the connection, at `stage`.
    fn parcel(self, stage: Stage) -> Parcel {
        Parcel {
            bytes: self.buf,
            accepted_at: self.accepted_at,
            peer: self.peer,
            stage,
            carried: self.carried,
            // The stream's own session goes along (`hand_over`): the handshake is done.
            tls: Tls::Plain,
        }
    }

    /// The bytes read after the head: the start of the WebSocket stream or of a body.
    fn extra(&mut self) -> Vec<u8> {
        self.buf.split_off(self.head_len)
    }
}

/// The HTTP phase, in steps: a trusted proxy's PROXY header, the request head within the
/// handshake timeout, its route, then the answer (health, demo, stats) or the way to the
/// session (admission, then "seat here or carry elsewhere").
async fn http_phase(core: &Rc<Core>, stream: &mut ServerStream, mut arrival: Arrival) -> Next {
    let timeout = core.config().limits.handshake_timeout;
    let accepted_at = arrival.accepted_at;
    let left = || timeout.saturating_sub(accepted_at.elapsed());
    if arrival.initial.is_empty() {
        arrival.initial = Vec::with_capacity(1024);
    }
    if let Err(next) = proxy_step(core, stream, &mut arrival, left()).await {
        return next;
    }
    super::access::arrived(core, stream, &arrival);
    if let Err(next) = tls_step(core, stream, &mut arrival, left()).await {
        return next;
    }
    if arrival.listener == Listener::Admin
        && !super::admin::admin_tls_step(core, stream, arrival.peer, left()).await
    {
        return Next::Done;
    }
    if let Err(refusal) = listed(core, &arrival) {
        refusal.write(&core.stats, stream).await;
        return Next::Done;
    }
    let buf = std::mem::take(&mut arrival.initial);
    let Some((head, buf, head_len)) = head_step(core, stream, buf, left()).await else {
        return Next::Done;
    };
    super::access::head_read(core, stream, &arrival, &head);
    if let Err(refusal) = listed_behind_proxy(core, &arrival, &head) {
        refusal.write(&core.stats, stream).await;
        return Next::Done;
    }
    if arrival.listener == Listener::Public && cors::on_bridge_path(&head) {
        if let Err(next) = cors_step(core, stream, &head).await {
            return next;
        }
    }
    let carried = arrival.carried.is_some();
    let Some(r) = route_step(core, stream, &head, carried).await else {
        return Next::Done;
    };
    super::access::routed(stream, &r);
    let Arrival {
        listener,
        peer,
        client,
        admitted,
        carried,
        slot,
        ..
    } = arrival;
    let req = Request {
        peer,
        client,
        accepted_at,
        head,
        buf,
        head_len,
        carried,
    };
    match (listener, r) {
        (_, Route::Health) => answer(stream, health(&core.shared, &core.config())).await,
        (Listener::Public, Route::Demo(asset)) if core.config().demo_enabled() => {
            demo(stream, asset, &req.head.method).await
        }
        (Listener::Admin, Route::Stats) => answer(stream, scrape(core, Format::Json).await).await,
        (Listener::Admin, Route::Metrics) => {
            answer(stream, scrape(core, Format::Prometheus).await).await
        }
        (Listener::Admin, Route::Fleet) => answer(stream, super::admin::fleet(core)).await,
        (Listener::Public, r) if admitted_route(&r) => {
            return to_session(core, stream, req, admitted, slot, r).await;
        }
        (Listener::Public, Route::NotFound) if proxied(core, &req.head).is_some() => {
            return to_proxy(core, stream, req, admitted, slot).await;
        }
        _ => Refusal::NotFound.write(&core.stats, stream).await,
    }
    Next::Done
}

/// The proxy route a request that is none of ringrelay's own takes, if any.
fn proxied(core: &Core, head: &RequestHead) -> Option<usize> {
    crate::proxy::route_for(&core.config().proxy.routes, head)
}

/// A request for a proxy route: admitted on its client's home core (the rate, the Origin,
/// the client's count of open connections, held until the connection and any upgrade joined
/// on it are gone), then served on that worker, its handshake over.
async fn to_proxy(
    core: &Core,
    stream: &mut ServerStream,
    req: Request,
    admitted: Option<Admitted>,
    slot: Option<HandshakeSlot>,
) -> Next {
    let (mut req, mut admitted) = match admission(core, stream, req, admitted, None).await {
        Ok(a) => a,
        Err(next) => return next,
    };
    drop(slot);
    let route = proxied(core, &req.head).expect("matched above");
    Next::Proxy(Box::new(crate::proxy::ProxyRequest {
        extra: req.extra(),
        head: req.head,
        route,
        peer: req.peer,
        charge: admitted.charge.take(),
    }))
}

/// Routes that go through admission to a session, an echo or a tunnel.
fn admitted_route(r: &Route) -> bool {
    matches!(
        r,
        Route::Echo
            | Route::Relay(_)
            | Route::Bridge { .. }
            | Route::Tunnel(_)
            | Route::TunnelAccept { .. }
    )
}

/// A connection from a trusted proxy (with `client_ip_header = "proxy_protocol"`) starts
/// with a PROXY header naming the client: read it, then charge the client's handshake on its
/// home core, handing the connection there when that is another core. `Err`: the phase ends
/// with that.
async fn proxy_step(
    core: &Core,
    stream: &mut ServerStream,
    a: &mut Arrival,
    left: Duration,
) -> Result<(), Next> {
    let sec = &core.config().security;
    if a.listener != Listener::Public
        || a.client.is_some()
        || a.admitted.is_some()
        || sec.client_ip_header != ClientIpHeader::ProxyProtocol
        || !trusted(a.peer, &sec.trusted_proxies)
    {
        return Ok(());
    }
    let buf = std::mem::take(&mut a.initial);
    let ip = match proxy_header(core, stream, a.peer, buf, left).await {
        ProxyRead::Header(ip, rest) => {
            a.initial = rest;
            ip
        }
        ProxyRead::Dropped => return Err(Next::Done),
    };
    a.client = Some(ip);
    // The client is charged now, on its home core: handed there to read its request.
    if let Some(ip) = per_ip(core, ip) {
        if let Some(to) = home_elsewhere(core, ip) {
            let parcel = Parcel {
                bytes: std::mem::take(&mut a.initial),
                accepted_at: a.accepted_at,
                peer: a.peer,
                stage: Stage::Accepted { client: a.client },
                carried: a.carried.take(),
                tls: if a.tls_pending {
                    Tls::Pending
                } else {
                    Tls::Plain
                },
            };
            return Err(Next::HandOver { to, parcel });
        }
        if a.slot.as_mut().is_some_and(|s| !s.charge_ip(ip)) {
            return Err(Next::Done);
        }
    }
    Ok(())
}

/// The address lists, as soon as the connection's addresses are known and before its request
/// is read: on the admin listener the peer against `admin.allowed_cidrs`; on a public one
/// the direct peer (unless it is a trusted proxy, which speaks for many clients) and the
/// client a PROXY header (or another node, or core) named, against `security.allowed_cidrs`
/// and `security.denied_cidrs`. Over TLS this runs after the handshake, so the 403 can be read.
fn listed(core: &Core, a: &Arrival) -> Result<(), Refusal> {
    let cfg = core.config();
    if a.listener == Listener::Admin {
        let ok = cidr::permitted(a.peer, &cfg.admin.allowed_cidrs, &[]);
        return if ok {
            Ok(())
        } else {
            Err(Refusal::IpList { admin: true })
        };
    }
    let sec = &cfg.security;
    let peer_ok = trusted(a.peer, &sec.trusted_proxies)
        || cidr::permitted(a.peer, &sec.allowed_cidrs, &sec.denied_cidrs);
    let client_ok = a
        .client
        .is_none_or(|ip| cidr::permitted(ip, &sec.allowed_cidrs, &sec.denied_cidrs));
    if peer_ok && client_ok {
        Ok(())
    } else {
        Err(Refusal::IpList { admin: false })
    }
}

/// The lists again once the request head is read, for the client a trusted proxy names in
/// `X-Forwarded-For` or `Forwarded` (`security.client_ip_header`): before any route, `/health`
/// included, is answered.
fn listed_behind_proxy(core: &Core, a: &Arrival, head: &RequestHead) -> Result<(), Refusal> {
    let sec = &core.config().security;
    if a.listener != Listener::Public
        || a.client.is_some()
        || (sec.allowed_cidrs.is_empty() && sec.denied_cidrs.is_empty())
        || !trusted(a.peer, &sec.trusted_proxies)
    {
        return Ok(());
    }
    let ip = client_ip(a.peer, head, &sec.trusted_proxies, sec.client_ip_header);
    if cidr::permitted(ip, &sec.allowed_cidrs, &sec.denied_cidrs) {
        Ok(())
    } else {
        tracing::debug!(peer = %a.peer, client = %ip, "client named by a trusted proxy is not allowed");
        Err(Refusal::IpList { admin: false })
    }
}

/// A connection accepted on the TLS listener: its TLS handshake, within what is left of the
/// handshake timeout and under the same handshake slot as the request head that follows. A
/// failure is counted by its reason; a client that spoke plain HTTP is told so in clear.
/// `Err`: the phase ends with that.
async fn tls_step(
    core: &Core,
    stream: &mut ServerStream,
    a: &mut Arrival,
    left: Duration,
) -> Result<(), Next> {
    if !std::mem::take(&mut a.tls_pending) {
        return Ok(());
    }
    let Some(config) = core.tls_config() else {
        return Err(Next::Done);
    };
    let started = Instant::now();
    let hsts = hsts_max_age(core);
    let failure = match monoio::time::timeout(left, stream.start_tls(config, hsts)).await {
        Ok(Ok(())) => {
            if let Some(tls) = stream.tls() {
                super::tls::negotiated(&core.stats, tls.negotiated());
                if let Some(cn) = tls.client_subject() {
                    tracing::debug!(peer = %a.peer, client_cn = %cn, "TLS client certificate verified");
                }
            }
            core.latency
                .record(Latency::TlsHandshake, started.elapsed());
            return Ok(());
        }
        Ok(Err(Refused::NotTls)) => {
            Refusal::NotTls.write(&core.stats, stream).await;
            return Err(Next::Done);
        }
        Ok(Err(Refused::Tls(e))) => {
            tracing::debug!(peer = %a.peer, error = %e, "TLS handshake refused");
            Failure::of(&e)
        }
        Ok(Err(Refused::Closed | Refused::Io(_))) => Failure::Other,
        Err(_) => {
            core.stats.refused(RefusedStatus::Timeout);
            super::access::timed_out(core, stream);
            Failure::Timeout
        }
    };
    super::tls::failed(&core.stats, failure);
    Err(Next::Done)
}

/// Reads the request head within what is left of the handshake timeout. A head that breaks
/// the limits or HTTP is refused (400 or 431), a timeout is counted. `None`: the phase is over.
async fn head_step(
    core: &Core,
    stream: &mut ServerStream,
    buf: Vec<u8>,
    left: Duration,
) -> Option<(RequestHead, Vec<u8>, usize)> {
    match monoio::time::timeout(left, read_head(core, stream, buf)).await {
        Ok(HeadRead::Done(h, b, n)) => Some((h, b, n)),
        Ok(HeadRead::Refuse(e)) => {
            Refusal::Head(e).write(&core.stats, stream).await;
            None
        }
        Ok(HeadRead::Gone) => None,
        Err(_) => {
            core.stats.refused(RefusedStatus::Timeout);
            super::access::timed_out(core, stream);
            tracing::debug!("handshake timed out");
            None
        }
    }
}

/// CORS on the bridge's path (`bridge::cors`), before the route and admission: a preflight
/// is answered here (204 for an allowed origin, 403 for any other), since a browser sends no
/// token with it; any other request from an allowed origin has every answer on its stream,
/// refusals included, carry the CORS headers. `Err`: the phase ends with that.
async fn cors_step(core: &Core, stream: &mut ServerStream, head: &RequestHead) -> Result<(), Next> {
    let cfg = core.config();
    match cors::classify(&cfg.cors, &cfg.bridge.allowed_methods, head) {
        cors::Cors::Off => Ok(()),
        cors::Cors::Answers(lines) => {
            stream.set_answer_lines(lines);
            Ok(())
        }
        cors::Cors::Preflight(resp) => {
            bump(&core.stats.cors_preflights, 1);
            answer(stream, resp).await;
            Err(Next::Done)
        }
        cors::Cors::Refused => {
            Refusal::CorsOrigin.write(&core.stats, stream).await;
            Err(Next::Done)
        }
    }
}

/// The request's route as this connection may take it: the echo route only when it is on,
/// and a connection carried in from another node only to a session (or its agent). `None`: a
/// malformed target was refused (400).
async fn route_step(
    core: &Core,
    stream: &mut ServerStream,
    head: &RequestHead,
    carried: bool,
) -> Option<Route> {
    let r = match route(head) {
        Ok(r) => r,
        Err(e) => {
            Refusal::Route(e).write(&core.stats, stream).await;
            return None;
        }
    };
    Some(match r {
        Route::Echo if core.config().security.echo_route == EchoRoute::Off => Route::NotFound,
        Route::Tunnel(_) | Route::TunnelAccept { .. } if !core.config().tunnel.enabled => {
            Route::NotFound
        }
        // A carried connection may only join a session (or reach its agent).
        Route::Relay(_) | Route::Bridge { .. } => r,
        _ if carried => Route::NotFound,
        r => r,
    })
}

/// The demo page's files (`demo.enabled`); HEAD gets the head a GET would.
async fn demo(stream: &mut ServerStream, asset: crate::demo::Asset, method: &str) {
    let mut bytes = crate::demo::response(asset, method).to_bytes();
    if method == "HEAD" {
        crate::http::response::truncate_to_head(&mut bytes);
    }
    write_and_close(stream, bytes).await;
}

/// A public WebSocket or bridge request: admitted on its client's home core, then a relay
/// peer or a bridged request goes to its session ("seat here or carry elsewhere") and an echo
/// is upgraded here.
async fn to_session(
    core: &Rc<Core>,
    stream: &mut ServerStream,
    req: Request,
    admitted: Option<Admitted>,
    mut slot: Option<HandshakeSlot>,
    r: Route,
) -> Next {
    let (req, admitted) = match admission(core, stream, req, admitted, Some(&r)).await {
        Ok(admitted) => admitted,
        Err(next) => return next,
    };
    // The handshake is over once admitted here: what is left is writing an answer.
    drop(slot.take());
    let hint = core
        .shared
        .cluster
        .as_ref()
        .and_then(|_| region_hint(&req.head));
    if let Route::Tunnel(_) | Route::TunnelAccept { .. } = r {
        return to_tunnel(core, stream, req, admitted, r).await;
    }
    if let Route::Bridge { session } = r {
        // Handled where its session lives, like the session's WebSocket peers.
        return match seat(core, stream, req, admitted, &session, &hint).await {
            Ok((mut req, admitted, charge)) => Next::Bridge(BridgeRequest {
                extra: req.extra(),
                head: req.head,
                session,
                ip: admitted.ip,
                charge,
                accepted_at: req.accepted_at,
            }),
            Err(next) => next,
        };
    }
    let refusal = match (r, upgrade(&req.head)) {
        (_, Err(resp)) => Refusal::Upgrade(resp),
        (Route::Echo, Ok(upgrade)) => {
            let (mut req, Some(charge)) = (req, admitted.charge) else {
                unreachable!("counted above")
            };
            return Next::Echo {
                upgrade,
                extra: req.extra(),
                charge,
            };
        }
        (Route::Relay(mut target), Ok(upgrade)) => {
            return match seat(core, stream, req, admitted, &target.session, &hint).await {
                Ok((mut req, admitted, charge)) => {
                    target.role = admitted.role;
                    Next::Join {
                        target,
                        upgrade,
                        extra: req.extra(),
                        charge,
                        carried: req.carried,
                        hint,
                    }
                }
                Err(next) => next,
            };
        }
        _ => Refusal::NotFound,
    };
    refusal.write(&core.stats, stream).await;
    Next::Done
}

/// An admitted tunnel request: to the worker its resume key or data id names (the
/// tunnel's), else served here.
async fn to_tunnel(
    core: &Core,
    stream: &mut ServerStream,
    mut req: Request,
    mut admitted: Admitted,
    r: Route,
) -> Next {
    use crate::tunnel::ask::is_key;
    let key = match &r {
        Route::Tunnel(ask) => ask.resume.clone(),
        Route::TunnelAccept { id } => Some(id.clone()),
        _ => None,
    };
    if let Some(owner) = key
        .filter(|k| is_key(k))
        .map(|k| owner_core(&k, core.shared.workers()))
        .filter(|&o| o != core.index)
    {
        return Next::HandOver {
            to: owner,
            parcel: req.parcel(Stage::Admitted(admitted)),
        };
    }
    let Some(charge) = admitted.charge.take() else {
        unreachable!("counted above")
    };
    let extra = req.extra();
    let host = req.head.header("host").map(str::to_string);
    let tunnel = match r {
        Route::Tunnel(ask) => match upgrade(&req.head) {
            Ok(upgrade) => crate::tunnel::Request::Control(crate::tunnel::ControlRequest {
                ask,
                host,
                grant: crate::tunnel::grant_of(core, &req.head),
                upgrade,
                extra,
                charge,
            }),
            Err(resp) => {
                Refusal::Upgrade(resp).write(&core.stats, stream).await;
                return Next::Done;
            }
        },
        Route::TunnelAccept { id } => crate::tunnel::Request::Data(crate::tunnel::DataRequest {
            head: req.head,
            id,
            extra,
            charge,
        }),
        _ => unreachable!("a tunnel route"),
    };
    Next::Tunnel(Box::new(tunnel))
}

/// Admission, on the client's home core. A connection another core admitted and counted goes
/// on; one carried in from another node (admitted there) is counted here too, as a local peer
/// is; any other is admitted here (rate, Origin, token, count; `r` is `None` for a proxy
/// route, whose token the proxy checks). `Err`: handed to the client's home core, or refused.
async fn admission(
    core: &Core,
    stream: &mut ServerStream,
    req: Request,
    admitted: Option<Admitted>,
    r: Option<&Route>,
) -> Result<(Request, Admitted), Next> {
    let ip = match &admitted {
        Some(a) => a.ip,
        None => {
            let sec = &core.config().security;
            let (peer, head) = (req.peer, &req.head);
            req.client.unwrap_or_else(|| {
                client_ip(peer, head, &sec.trusted_proxies, sec.client_ip_header)
            })
        }
    };
    let counted = admitted.as_ref().is_some_and(|a| a.charge.is_some());
    if !counted {
        if let Some(to) = home_elsewhere(core, ip) {
            let stage = match admitted {
                Some(a) => Stage::Admitted(a),
                None => Stage::Admit { client: ip },
            };
            return Err(Next::HandOver {
                to,
                parcel: req.parcel(stage),
            });
        }
    }
    let answer = match admitted {
        Some(a) if counted => Ok(a),
        Some(mut a) => count_open(core, a.ip).map(|c| {
            a.charge = Some(c);
            a
        }),
        None => match r {
            Some(r) => admit(core, &req.head, ip, r, stream.tls()),
            None => admit_proxied(core, &req.head, ip),
        }
        .inspect_err(|refusal| {
            tracing::debug!(
                target = %log_target(&req.head),
                status = refusal.response().status,
                client = %ip,
                "request refused"
            );
        }),
    };
    match answer {
        Ok(a) => Ok((req, a)),
        Err(refusal) => {
            refusal.write(&core.stats, stream).await;
            Err(Next::Done)
        }
    }
}

/// The step every session-bound request takes once admitted: handed to the core that owns its
/// session when that is another core, carried to the node that owns it when that is another
/// node (cluster mode), else seated here with its count. `Err`: where it went instead (or
/// `Done`: refused).
async fn seat(
    core: &Core,
    stream: &mut ServerStream,
    mut req: Request,
    mut admitted: Admitted,
    session: &str,
    hint: &Option<String>,
) -> Result<(Request, Admitted, IpCharge), Next> {
    let owner = owner_core(session, core.shared.workers());
    if owner != core.index {
        return Err(Next::HandOver {
            to: owner,
            parcel: req.parcel(Stage::Admitted(admitted)),
        });
    }
    if let Some(next) = elsewhere(core, stream, session, hint, &mut req, &mut admitted).await {
        return Err(next);
    }
    let Some(charge) = admitted.charge.take() else {
        unreachable!("counted above")
    };
    Ok((req, admitted, charge))
}

/// Cluster mode: where the session's owner says this peer goes. `None`: it is seated here;
/// otherwise the refusal was written (`Next::Done`) or the connection is to be carried, with
/// what the owner is told about it (and its count here, held while it is carried).
async fn elsewhere(
    core: &Core,
    stream: &mut ServerStream,
    session: &str,
    hint: &Option<String>,
    req: &mut Request,
    admitted: &mut Admitted,
) -> Option<Next> {
    match place(core, session, hint.clone(), req.carried.is_some()).await {
        Placement::Here => None,
        Placement::Refuse(refusal) => {
            refusal.write(&core.stats, stream).await;
            Some(Next::Done)
        }
        Placement::Carry(owner) => {
            let view = core
                .shared
                .cluster
                .as_ref()
                .expect("carrying happens in cluster mode");
            let carried = Carried {
                from: view.identity.node_id.clone(),
                session: session.to_string(),
                ip: admitted.ip,
                role: admitted.role.clone(),
                region: hint.clone().unwrap_or_else(|| view.identity.region.clone()),
            };
            let charge = admitted.charge.take().expect("counted before placing");
            Some(Next::Carry {
                owner,
                bytes: std::mem::take(&mut req.buf),
                carried,
                charge,
            })
        }
    }
}

fn upgrade(head: &RequestHead) -> Result<Response, Response> {
    let key = check_upgrade(head)?;
    Ok(Response::switching_protocols(&accept_key(key.as_bytes())))
}

/// Hands `stream` to core `to`; when its inbox is full the client gets 503 (and whatever the
/// connection was counted for is given back as the parcel drops).
async fn hand_over(core: Rc<Core>, mut stream: ServerStream, to: usize, mut parcel: Parcel) {
    // The CORS lines stay here: the core it goes to reads the head again and sets its own
    // (and its own access-log note); both are kept for the refusal should the handoff fail.
    let lines = stream.answer_lines().map(str::to_string);
    let note = stream.take_access();
    let (tcp, session) = stream.into_parts();
    if let Some(session) = session {
        parcel.tls = Tls::On(session);
    }
    let std_stream = crate::runtime::socket::into_std(tcp);
    match core.shared.handoff[to].try_send(Handoff {
        stream: std_stream,
        parcel,
    }) {
        Ok(()) => bump(&core.stats.handoffs_out, 1),
        Err(e) => {
            bump(&core.stats.handoffs_refused, 1);
            let h = e.into_inner();
            let session = match h.parcel.tls {
                Tls::On(s) => Some(s),
                Tls::Plain => None,
                // Before its TLS handshake, no answer can be read: it is just closed.
                Tls::Pending => return,
            };
            if let Ok(tcp) = TcpStream::from_std(h.stream) {
                // Over TLS, in the session's own words.
                let mut stream = ServerStream::from_parts(tcp, session, hsts_max_age(&core));
                stream.set_answer_lines(lines.unwrap_or_default());
                stream.set_access(note.map(|n| *n));
                Refusal::HandoffBusy.write(&core.stats, &mut stream).await;
            }
        }
    }
}

/// `security.hsts_max_age` in seconds.
fn hsts_max_age(core: &Core) -> u64 {
    core.config().security.hsts_max_age.as_secs()
}

/// Receives connections handed over by other cores and carries on with them here.
pub async fn receive_handoffs(core: Rc<Core>, rx: flume::Receiver<Handoff>) {
    while let Ok(h) = rx.recv_async().await {
        bump(&core.stats.handoffs_in, 1);
        let Handoff { stream, parcel } = h;
        let Parcel {
            bytes,
            accepted_at,
            peer,
            stage,
            carried,
            tls,
        } = parcel;
        let (client, admitted, slot) = match stage {
            Stage::Accepted { client } => {
                // Its handshake is counted here, the client's home, from now on.
                let charged = per_ip(&core, client.unwrap_or(peer));
                match HandshakeSlot::take(&core, charged) {
                    Some(slot) => (client, None, Some(slot)),
                    None => continue,
                }
            }
            Stage::Admit { client } => (Some(client), None, None),
            Stage::Admitted(a) => (Some(a.ip), Some(a), None),
        };
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                // Accepted by one of our listeners: TCP_NODELAY came with it from there.
                let (session, tls_pending) = match tls {
                    Tls::Plain => (None, false),
                    Tls::Pending => (None, true),
                    Tls::On(s) => (Some(s), false),
                };
                // A connection carried in over the cluster link's TLS answers a client of
                // another node: that node's transport, not this TLS, is what the client sees.
                let hsts = if carried.is_some() {
                    0
                } else {
                    hsts_max_age(&core)
                };
                let stream = ServerStream::from_parts(stream, session, hsts);
                let arrival = Arrival {
                    listener: Listener::Public,
                    peer,
                    client,
                    initial: bytes,
                    accepted_at,
                    admitted,
                    carried,
                    slot,
                    tls_pending,
                };
                monoio::spawn(handle(core.clone(), stream, arrival));
            }
            Err(e) => tracing::warn!(error = %e, "could not adopt a handed-over connection"),
        }
    }
}
