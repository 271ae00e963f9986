//! The HTTP phase of a connection: read the request head within the handshake timeout,
//! route it, and either answer it, upgrade it here, or hand it to its session's core.

use super::handoff::{owner_core, Handoff};
use super::health::health;
use crate::http::upgrade::check_upgrade;
use crate::http::{parse_head, route::route, HeadError, RequestHead, Response, Route};
use crate::relay::join::{join_session, run_echo};
use crate::runtime::Core;
use crate::stats::bump;
use crate::ws::accept::accept_key;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Which listener a connection came in on: the admin one serves no WebSocket routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

enum HeadRead {
    Done(RequestHead, Vec<u8>, usize),
    Refuse(HeadError),
    Gone,
}

async fn read_head(core: &Core, stream: &mut TcpStream, mut buf: Vec<u8>) -> HeadRead {
    let limits = &core.config().limits;
    loop {
        if !buf.is_empty() {
            match parse_head(&buf, limits.max_header_bytes, limits.max_headers) {
                Ok(Some((head, n))) => return HeadRead::Done(head, buf, n),
                Ok(None) => {}
                Err(e) => return HeadRead::Refuse(e),
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(1024));
        }
        let cap = buf.capacity().min(limits.max_header_bytes.max(buf.len() + 1));
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
pub async fn refuse(core: &Core, mut stream: TcpStream, resp: Response) {
    bump(&core.stats.handshakes_refused, 1);
    answer(&mut stream, resp).await;
}

async fn answer(stream: &mut TcpStream, resp: Response) {
    let (r, _) = stream.write_all(resp.to_bytes()).await;
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

/// Entry for a freshly accepted connection (or one handed over with `initial` bytes).
pub async fn handle(core: Rc<Core>, mut stream: TcpStream, listener: Listener, initial: Vec<u8>, accepted_at: Instant) {
    let timeout = core.config().limits.handshake_timeout;
    let buf = if initial.is_empty() { Vec::with_capacity(1024) } else { initial };
    let elapsed = accepted_at.elapsed();
    let left = timeout.saturating_sub(elapsed);
    let (head, buf, head_len) = match monoio::time::timeout(left, read_head(&core, &mut stream, buf)).await {
        Ok(HeadRead::Done(h, b, n)) => (h, b, n),
        Ok(HeadRead::Refuse(e)) => {
            let msg = match e {
                HeadError::Malformed => "malformed HTTP request",
                HeadError::TooLarge => "request header block too large",
                HeadError::TooManyHeaders => "too many request headers",
            };
            let code = if e.status() == 431 { "header_too_large" } else { "bad_request" };
            return refuse(&core, stream, Response::error(e.status(), code, msg)).await;
        }
        Ok(HeadRead::Gone) => return,
        Err(_) => {
            bump(&core.stats.handshakes_refused, 1);
            tracing::debug!("handshake timed out");
            return;
        }
    };
    let r = match route(&head) {
        Ok(r) => r,
        Err(e) => return refuse(&core, stream, Response::error(e.status, e.code, e.message)).await,
    };
    match (listener, r) {
        (_, Route::Health) => answer(&mut stream, health(&core.shared)).await,
        (Listener::Public, Route::Echo) => match upgrade(&head) {
            Ok(resp) => run_echo(core, stream, resp, buf[head_len..].to_vec()).await,
            Err(resp) => refuse(&core, stream, resp).await,
        },
        (Listener::Public, Route::Relay(target)) => {
            let resp = match upgrade(&head) {
                Ok(resp) => resp,
                Err(resp) => return refuse(&core, stream, resp).await,
            };
            let owner = owner_core(&target.session, core.shared.workers());
            if owner != core.index {
                return hand_over(&core, stream, owner, buf, accepted_at).await;
            }
            join_session(core, stream, &target.session, target.role.as_deref(), target.events, resp, buf[head_len..].to_vec()).await
        }
        (Listener::Public, Route::Bridge { .. }) => {
            refuse(&core, stream, Response::error(404, "bridge_unavailable", "the HTTP bridge is not enabled on this relay")).await
        }
        _ => refuse(&core, stream, Response::error(404, "not_found", "no such route")).await,
    }
}

fn upgrade(head: &RequestHead) -> Result<Response, Response> {
    let key = check_upgrade(head)?;
    Ok(Response::switching_protocols(&accept_key(key.as_bytes())))
}

async fn hand_over(core: &Core, stream: TcpStream, owner: usize, bytes: Vec<u8>, accepted_at: Instant) {
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up monoio's ownership of this fd (and deregistered it from
    // this core's driver); nothing else refers to it, so the std stream becomes its only owner.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    match core.shared.handoff[owner].try_send(Handoff { stream: std_stream, bytes, accepted_at }) {
        Ok(()) => bump(&core.stats.handoffs_out, 1),
        Err(e) => {
            bump(&core.stats.handoffs_refused, 1);
            let h = e.into_inner();
            if let Ok(stream) = TcpStream::from_std(h.stream) {
                let resp = Response::error(503, "overloaded", "the session's worker is busy; retry shortly").with_header("Retry-After", "1");
                refuse(core, stream, resp).await;
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
                monoio::spawn(handle(core.clone(), stream, Listener::Public, h.bytes, h.accepted_at));
            }
            Err(e) => tracing::warn!(error = %e, "could not adopt a handed-over connection"),
        }
    }
}
