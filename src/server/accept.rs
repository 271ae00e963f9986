//! The HTTP phase of a connection: read the request head within the handshake timeout,
//! route it, and either answer it, upgrade it here, or hand it to its session's core.

use super::admit::{admit, Admitted};
use super::handoff::{owner_core, Handoff};
use super::health::health;
use super::scrape::{scrape, Format};
use crate::bridge::serve::{serve as serve_bridged, BridgeRequest};
use crate::cluster::carry::{carry, OwnerNode};
use crate::cluster::inbound::accept_link;
use crate::cluster::link::Carried;
use crate::cluster::place::{place, region_hint, Placement};
use crate::cluster::Origin;
use crate::config::EchoRoute;
use crate::http::route::{route, RelayTarget};
use crate::http::upgrade::check_upgrade;
use crate::http::{parse_head, HeadError, HeadScan, RequestHead, Response, Route};
use crate::relay::join::{join_session, run_echo, Seat};
use crate::runtime::Core;
use crate::stats::{bump, RefusedStatus};
use crate::ws::accept::accept_key;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::net::IpAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
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
        ip: IpAddr,
    },
    Join {
        target: RelayTarget,
        upgrade: Response,
        extra: Vec<u8>,
        ip: IpAddr,
        carried: Option<Carried>,
        hint: Option<String>,
    },
    HandOver {
        owner: usize,
        bytes: Vec<u8>,
        admitted: Admitted,
        carried: Option<Carried>,
    },
    Bridge(BridgeRequest),
    /// The session is owned by another node: carry the connection there.
    Carry {
        owner: OwnerNode,
        bytes: Vec<u8>,
        carried: Carried,
    },
}

/// Where a connection came from and what was already decided for it.
pub struct Arrival {
    pub listener: Listener,
    /// The direct peer's address.
    pub peer: IpAddr,
    /// Bytes read before (a handed-over connection's request head and what followed it).
    pub initial: Vec<u8>,
    pub accepted_at: Instant,
    /// Set when another core already admitted this connection and handed it over.
    pub admitted: Option<Admitted>,
    /// Set when another node carried it here; its session must be owned here.
    pub carried: Option<Carried>,
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
            initial: rest,
            accepted_at,
            admitted: Some(Admitted {
                ip: carried.ip,
                role: carried.role.clone(),
            }),
            carried: Some(carried),
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
        Next::Echo { upgrade, extra, ip } => {
            run_echo(core, stream, upgrade, extra, accepted_at, ip).await
        }
        Next::Join {
            target,
            upgrade,
            extra,
            ip,
            carried,
            hint,
        } => {
            let origin = origin(&carried, hint);
            let seat = Seat {
                upgrade,
                extra,
                accepted_at,
                ip,
                origin,
            };
            join_session(core, stream, target, seat).await
        }
        Next::HandOver {
            owner,
            bytes,
            admitted,
            carried,
        } => hand_over(&core, stream, owner, bytes, accepted_at, admitted, carried).await,
        Next::Bridge(req) => serve_bridged(core, stream, req).await,
        Next::Carry {
            owner,
            bytes,
            carried,
        } => carry(core, stream, owner, carried, bytes).await,
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

async fn http_phase(core: &Rc<Core>, stream: &mut TcpStream, arrival: Arrival) -> Next {
    let Arrival {
        listener,
        peer,
        initial,
        accepted_at,
        admitted,
        carried,
    } = arrival;
    let timeout = core.config().limits.handshake_timeout;
    let buf = if initial.is_empty() {
        Vec::with_capacity(1024)
    } else {
        initial
    };
    let left = timeout.saturating_sub(accepted_at.elapsed());
    let (head, mut buf, head_len) =
        match monoio::time::timeout(left, read_head(core, stream, buf)).await {
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
            let admitted = match admitted {
                Some(a) => a,
                None => match admit(core, &head, peer, &r) {
                    Ok(a) => a,
                    Err(resp) => {
                        tracing::debug!(
                            target = %log_target(&head),
                            status = resp.status,
                            "request refused"
                        );
                        refuse(core, stream, resp).await;
                        return Next::Done;
                    }
                },
            };
            let hint = core
                .shared
                .cluster
                .as_ref()
                .and_then(|_| region_hint(&head));
            if let Route::Bridge { session } = r {
                // Handled where its session lives, like the session's WebSocket peers.
                let owner = owner_core(&session, core.shared.workers());
                if owner != core.index {
                    return Next::HandOver {
                        owner,
                        bytes: buf,
                        admitted,
                        carried,
                    };
                }
                if let Some(next) =
                    elsewhere(core, stream, &session, &hint, &carried, &mut buf, &admitted).await
                {
                    return next;
                }
                return Next::Bridge(BridgeRequest {
                    extra: buf.split_off(head_len),
                    head,
                    session,
                    ip: admitted.ip,
                    accepted_at,
                });
            }
            match (r, upgrade(&head)) {
                (_, Err(resp)) => resp,
                (Route::Echo, Ok(upgrade)) => {
                    return Next::Echo {
                        upgrade,
                        extra: buf.split_off(head_len),
                        ip: admitted.ip,
                    }
                }
                (Route::Relay(mut target), Ok(upgrade)) => {
                    let owner = owner_core(&target.session, core.shared.workers());
                    if owner != core.index {
                        return Next::HandOver {
                            owner,
                            bytes: buf,
                            admitted,
                            carried,
                        };
                    }
                    let session = &target.session;
                    if let Some(next) =
                        elsewhere(core, stream, session, &hint, &carried, &mut buf, &admitted).await
                    {
                        return next;
                    }
                    target.role = admitted.role;
                    return Next::Join {
                        target,
                        upgrade,
                        extra: buf.split_off(head_len),
                        ip: admitted.ip,
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
/// what the owner is told about it.
async fn elsewhere(
    core: &Core,
    stream: &mut TcpStream,
    session: &str,
    hint: &Option<String>,
    carried: &Option<Carried>,
    buf: &mut Vec<u8>,
    admitted: &Admitted,
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
            Some(Next::Carry {
                owner,
                bytes: std::mem::take(buf),
                carried,
            })
        }
    }
}

fn upgrade(head: &RequestHead) -> Result<Response, Response> {
    let key = check_upgrade(head)?;
    Ok(Response::switching_protocols(&accept_key(key.as_bytes())))
}

async fn hand_over(
    core: &Core,
    stream: TcpStream,
    owner: usize,
    bytes: Vec<u8>,
    accepted_at: Instant,
    admitted: Admitted,
    carried: Option<Carried>,
) {
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up monoio's ownership of this fd (and deregistered it from
    // this core's driver); nothing else refers to it, so the std stream becomes its only owner.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    match core.shared.handoff[owner].try_send(Handoff {
        stream: std_stream,
        bytes,
        accepted_at,
        admitted,
        carried,
    }) {
        Ok(()) => bump(&core.stats.handoffs_out, 1),
        Err(e) => {
            bump(&core.stats.handoffs_refused, 1);
            let h = e.into_inner();
            if let Ok(mut stream) = TcpStream::from_std(h.stream) {
                let resp = Response::error(
                    503,
                    "overloaded",
                    "the session's worker is busy; retry shortly",
                )
                .with_header("Retry-After", "1");
                refuse(core, &mut stream, resp).await;
            }
        }
    }
}

/// Receives connections handed over by other cores and carries on their handshake here.
pub async fn receive_handoffs(core: Rc<Core>, rx: flume::Receiver<Handoff>) {
    while let Ok(h) = rx.recv_async().await {
        bump(&core.stats.handoffs_in, 1);
        match TcpStream::from_std(h.stream) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let arrival = Arrival {
                    listener: Listener::Public,
                    peer: h.admitted.ip,
                    initial: h.bytes,
                    accepted_at: h.accepted_at,
                    admitted: Some(h.admitted),
                    carried: h.carried,
                };
                monoio::spawn(handle(core.clone(), stream, arrival));
            }
            Err(e) => tracing::warn!(error = %e, "could not adopt a handed-over connection"),
        }
    }
}
