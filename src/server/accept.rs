//! The HTTP phase of a connection: read the request head within the handshake timeout,
//! route it, and either answer it, upgrade it here, or hand it to its session's core.

use super::admit::{admit, count_open, Admitted};
use super::handoff::{owner_core, Handoff, Parcel, Stage};
use super::handshake::{per_ip, HandshakeSlot};
use super::health::health;
use super::scrape::{scrape, Format};
use crate::bridge::serve::{serve as serve_bridged, BridgeRequest};
use crate::cluster::carry::{carry, OwnerNode};
use crate::cluster::inbound::accept_link;
use crate::cluster::link::Carried;
use crate::cluster::place::{place, region_hint, Placement};
use crate::cluster::Origin;
use crate::config::{ClientIpHeader, EchoRoute};
use crate::http::route::{route, RelayTarget};
use crate::http::upgrade::check_upgrade;
use crate::http::{parse_head, HeadError, HeadScan, RequestHead, Response, Route};
use crate::limits::client_ip::{client_ip, trusted};
use crate::limits::proxy_protocol::{self, Parsed, ProxyHeaderError};
use crate::limits::{home_core, IpCharge};
use crate::relay::join::{join_session, run_echo, Seat};
use crate::runtime::Core;
use crate::stats::{bump, RefusedStatus};
use crate::ws::accept::accept_key;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
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

async fn read_head(core: &Core, stream: &mut TcpStream, mut buf: Vec<u8>) -> HeadRead {
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
    stream: &mut TcpStream,
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

/// Writes a refusal, then closes politely so the client reads it before the reset that an
/// unread request body would otherwise cause.
pub async fn refuse(core: &Core, stream: &mut TcpStream, resp: Response) {
    core.stats.refused(RefusedStatus::Status(resp.status));
    answer(stream, resp).await;
}

async fn answer(stream: &mut TcpStream, resp: Response) {
    write_and_close(stream, resp.to_bytes()).await
}

/// Writes a whole HTTP response, then closes so the client reads it before any reset an
/// unread request body would cause.
pub async fn write_and_close(stream: &mut TcpStream, bytes: Vec<u8>) {
    let (r, _) = stream.write_all(bytes).await;
    if r.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 4096];
        for _ in 0..16 {
            let (r, b) = stream.read(buf).await;
            buf = b;
            if !matches!(r, Ok(n) if n > 0) {
                break;
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_millis(500), drain).await;
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
        }
    }
}

/// A new connection on the public listener: to its client's home core if it landed elsewhere
/// (the steering program is missing), else counted among the unfinished handshakes (closed at
/// once when they are full) and read here.
pub fn accepted(core: &Rc<Core>, stream: TcpStream, peer: IpAddr) {
    let peer = peer.to_canonical();
    let charged = per_ip(core, peer);
    if let Some(home) = charged.and_then(|ip| home_elsewhere(core, ip)) {
        let parcel = Parcel {
            bytes: Vec::new(),
            accepted_at: Instant::now(),
            peer,
            stage: Stage::Accepted { client: None },
            carried: None,
        };
        monoio::spawn(hand_over(core.clone(), stream, home, parcel));
        return;
    }
    // Closed at once when full: no answer, so a flood of them costs no writes.
    let Some(slot) = HandshakeSlot::take(core, charged) else {
        return;
    };
    let arrival = Arrival::new(Listener::Public, peer, Some(slot));
    monoio::spawn(handle(core.clone(), stream, arrival));
}

/// Entry for a freshly accepted connection (or one handed over with `initial` bytes).
pub async fn handle(core: Rc<Core>, mut stream: TcpStream, mut arrival: Arrival) {
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
    stream: &mut TcpStream,
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

async fn http_phase(core: &Rc<Core>, stream: &mut TcpStream, arrival: Arrival) -> Next {
    let Arrival {
        listener,
        peer,
        mut client,
        initial,
        accepted_at,
        admitted,
        carried,
        mut slot,
    } = arrival;
    let sec = &core.config().security;
    let timeout = core.config().limits.handshake_timeout;
    let left = || timeout.saturating_sub(accepted_at.elapsed());
    let mut buf = if initial.is_empty() {
        Vec::with_capacity(1024)
    } else {
        initial
    };
    if listener == Listener::Public
        && client.is_none()
        && admitted.is_none()
        && sec.client_ip_header == ClientIpHeader::ProxyProtocol
        && trusted(peer, &sec.trusted_proxies)
    {
        let ip = match proxy_header(core, stream, peer, std::mem::take(&mut buf), left()).await {
            ProxyRead::Header(ip, rest) => {
                buf = rest;
                ip
            }
            ProxyRead::Dropped => return Next::Done,
        };
        client = Some(ip);
        // The client is charged now, on its home core: handed there to read its request.
        if let Some(ip) = per_ip(core, ip) {
            if let Some(to) = home_elsewhere(core, ip) {
                let stage = Stage::Accepted { client };
                let parcel = Parcel {
                    bytes: buf,
                    accepted_at,
                    peer,
                    stage,
                    carried,
                };
                return Next::HandOver { to, parcel };
            }
            if slot.as_mut().is_some_and(|s| !s.charge_ip(ip)) {
                return Next::Done;
            }
        }
    }
    let (head, mut buf, head_len) =
        match monoio::time::timeout(left(), read_head(core, stream, buf)).await {
            Ok(HeadRead::Done(h, b, n)) => (h, b, n),
            Ok(HeadRead::Refuse(e)) => {
                let msg = match e {
                    HeadError::Malformed => "malformed HTTP request",
                    HeadError::TooLarge => "request header block too large",
                    HeadError::TooManyHeaders => "too many request headers",
                };
                let code = if e.status() == 431 {
                    "header_too_large"
                } else {
                    "bad_request"
                };
                refuse(core, stream, Response::error(e.status(), code, msg)).await;
                return Next::Done;
            }
            Ok(HeadRead::Gone) => return Next::Done,
            Err(_) => {
                core.stats.refused(RefusedStatus::Timeout);
                tracing::debug!("handshake timed out");
                return Next::Done;
            }
        };
    let r = match route(&head) {
        Ok(r) => r,
        Err(e) => {
            refuse(core, stream, Response::error(e.status, e.code, e.message)).await;
            return Next::Done;
        }
    };
    let r = match r {
        Route::Echo if core.config().security.echo_route == EchoRoute::Off => Route::NotFound,
        // A carried connection may only join a session (or reach its agent).
        Route::Relay(_) | Route::Bridge { .. } => r,
        _ if carried.is_some() => Route::NotFound,
        r => r,
    };
    let refusal = match (listener, r) {
        (_, Route::Health) => {
            answer(stream, health(&core.shared)).await;
            return Next::Done;
        }
        (Listener::Public, Route::Demo(asset)) if core.config().demo_enabled() => {
            let mut bytes = crate::demo::response(asset, &head.method).to_bytes();
            if head.method == "HEAD" {
                crate::http::response::truncate_to_head(&mut bytes);
            }
            write_and_close(stream, bytes).await;
            return Next::Done;
        }
        (Listener::Admin, Route::Stats) => {
            answer(stream, scrape(core, Format::Json).await).await;
            return Next::Done;
        }
        (Listener::Admin, Route::Metrics) => {
            answer(stream, scrape(core, Format::Prometheus).await).await;
            return Next::Done;
        }
        (Listener::Public, r @ (Route::Echo | Route::Relay(_) | Route::Bridge { .. })) => {
            // Admitted and counted on the client's home core; from there on to the session's.
            let hand = |stage: Stage, bytes: Vec<u8>, carried: Option<Carried>| Parcel {
                bytes,
                accepted_at,
                peer,
                stage,
                carried,
            };
            let mut admitted = match admitted {
                Some(a) if a.charge.is_some() => a,
                Some(mut a) => {
                    // Carried in from another node: counted here too, as a local peer is.
                    if let Some(to) = home_elsewhere(core, a.ip) {
                        let parcel = hand(Stage::Admitted(a), buf, carried);
                        return Next::HandOver { to, parcel };
                    }
                    match count_open(core, a.ip) {
                        Ok(c) => a.charge = Some(c),
                        Err(resp) => {
                            refuse(core, stream, resp).await;
                            return Next::Done;
                        }
                    }
                    a
                }
                None => {
                    let ip = client.unwrap_or_else(|| {
                        client_ip(peer, &head, &sec.trusted_proxies, sec.client_ip_header)
                    });
                    if let Some(to) = home_elsewhere(core, ip) {
                        let parcel = hand(Stage::Admit { client: ip }, buf, carried);
                        return Next::HandOver { to, parcel };
                    }
                    match admit(core, &head, ip, &r) {
                        Ok(a) => a,
                        Err(resp) => {
                            tracing::debug!(
                                target = %log_target(&head),
                                status = resp.status,
                                client = %ip,
                                "request refused"
                            );
                            refuse(core, stream, resp).await;
                            return Next::Done;
                        }
                    }
                }
            };
            // The handshake is over once admitted here: what is left is writing an answer.
            drop(slot.take());
            let hint = core
                .shared
                .cluster
                .as_ref()
                .and_then(|_| region_hint(&head));
            if let Route::Bridge { session } = r {
                // Handled where its session lives, like the session's WebSocket peers.
                let owner = owner_core(&session, core.shared.workers());
                if owner != core.index {
                    let parcel = hand(Stage::Admitted(admitted), buf, carried);
                    return Next::HandOver { to: owner, parcel };
                }
                if let Some(next) = elsewhere(
                    core,
                    stream,
                    &session,
                    &hint,
                    &carried,
                    &mut buf,
                    &mut admitted,
                )
                .await
                {
                    return next;
                }
                let Some(charge) = admitted.charge else {
                    unreachable!("counted above")
                };
                return Next::Bridge(BridgeRequest {
                    extra: buf.split_off(head_len),
                    head,
                    session,
                    ip: admitted.ip,
                    charge,
                    accepted_at,
                });
            }
            match (r, upgrade(&head)) {
                (_, Err(resp)) => resp,
                (Route::Echo, Ok(upgrade)) => {
                    let Some(charge) = admitted.charge else {
                        unreachable!("counted above")
                    };
                    return Next::Echo {
                        upgrade,
                        extra: buf.split_off(head_len),
                        charge,
                    };
                }
                (Route::Relay(mut target), Ok(upgrade)) => {
                    let owner = owner_core(&target.session, core.shared.workers());
                    if owner != core.index {
                        let parcel = hand(Stage::Admitted(admitted), buf, carried);
                        return Next::HandOver { to: owner, parcel };
                    }
                    let session = &target.session;
                    if let Some(next) = elsewhere(
                        core,
                        stream,
                        session,
                        &hint,
                        &carried,
                        &mut buf,
                        &mut admitted,
                    )
                    .await
                    {
                        return next;
                    }
                    let Some(charge) = admitted.charge else {
                        unreachable!("counted above")
                    };
                    target.role = admitted.role;
                    return Next::Join {
                        target,
                        upgrade,
                        extra: buf.split_off(head_len),
                        charge,
                        carried,
                        hint,
                    };
                }
                _ => Response::error(404, "not_found", "no such route"),
            }
        }
        _ => Response::error(404, "not_found", "no such route"),
    };
    refuse(core, stream, refusal).await;
    Next::Done
}

/// Cluster mode: where the session's owner says this peer goes. `None`: it is seated here;
/// otherwise the refusal was written (`Next::Done`) or the connection is to be carried, with
/// what the owner is told about it (and its count here, held while it is carried).
async fn elsewhere(
    core: &Core,
    stream: &mut TcpStream,
    session: &str,
    hint: &Option<String>,
    carried: &Option<Carried>,
    buf: &mut Vec<u8>,
    admitted: &mut Admitted,
) -> Option<Next> {
    match place(core, session, hint.clone(), carried.is_some()).await {
        Placement::Here => None,
        Placement::Refuse(resp) => {
            refuse(core, stream, resp).await;
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
                bytes: std::mem::take(buf),
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
async fn hand_over(core: Rc<Core>, stream: TcpStream, to: usize, parcel: Parcel) {
    let std_stream = crate::runtime::socket::into_std(stream);
    match core.shared.handoff[to].try_send(Handoff {
        stream: std_stream,
        parcel,
    }) {
        Ok(()) => bump(&core.stats.handoffs_out, 1),
        Err(e) => {
            bump(&core.stats.handoffs_refused, 1);
            let h = e.into_inner();
            drop(h.parcel);
            if let Ok(mut stream) = TcpStream::from_std(h.stream) {
                let resp = Response::error(
                    503,
                    "overloaded",
                    "the worker this connection belongs on is busy; retry shortly",
                )
                .with_header("Retry-After", "1");
                refuse(&core, &mut stream, resp).await;
            }
        }
    }
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
                let _ = stream.set_nodelay(true);
                let arrival = Arrival {
                    listener: Listener::Public,
                    peer,
                    client,
                    initial: bytes,
                    accepted_at,
                    admitted,
                    carried,
                    slot,
                };
                monoio::spawn(handle(core.clone(), stream, arrival));
            }
            Err(e) => tracing::warn!(error = %e, "could not adopt a handed-over connection"),
        }
    }
}
