//! The landing node's side of a cross-node peer: open an authenticated link to the session's
//! owner, hand it the client's request as it arrived, then move bytes both ways until either
//! side ends. Nothing is parsed or re-framed on the way: each read is forwarded whole from
//! a pooled buffer (taken only once the socket is readable, as the relay's own reads are).
//! The owner-to-client direction is followed by a [`Boundary`], so that when the owner is
//! gone or this node stops, the client still gets a proper close frame.
//!
//! Not splice(2): it would cost a pipe (two descriptors) per direction per peer, against a
//! 20,000-descriptor budget, and the close frame needs the bytes to pass through here.

use super::boundary::Boundary;
use super::link::{self, Carried, LinkError};
use crate::http::Response;
use crate::runtime::socket::Socket;
use crate::runtime::Core;
use crate::server::accept::refuse;
use crate::server::capacity;
use crate::stats::{bump, Latency};
use crate::ws::close::encode_close_frame;
use crate::ws::CloseCode;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

/// Where the owner listens for links.
#[derive(Debug, Clone)]
pub struct OwnerNode {
    pub node_id: String,
    pub internal: String,
}

/// A carried peer, as the core's `Local` table sees it.
pub struct Carry {
    pub owner: Rc<str>,
    link: Socket,
    /// Why this node ends the link, when it does (the code the client is closed with).
    ending: Cell<Option<CloseCode>>,
}

impl Carry {
    /// Ends the link; the client gets a close frame with `code` if its stream is at a frame
    /// boundary, else its connection is closed.
    pub fn end(&self, code: CloseCode) {
        if self.ending.get().is_none() {
            self.ending.set(Some(code));
        }
        self.link.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the owner closed the link during its opening")]
    Closed,
}

/// Reads one line (and whatever follows it in the same reads) from `stream`.
async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, OpenError> {
    loop {
        if let Some(end) = link::line_end(buf)? {
            return Ok(end);
        }
        let chunk = Vec::with_capacity(1024);
        let (r, chunk) = stream.read(chunk).await;
        match r {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err(OpenError::Closed),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects and authenticates; returns the link and any bytes of the owner's answer already
/// read past its `ok`.
async fn open(
    secret: &[u8],
    to: &str,
    carried: &Carried,
    request: Vec<u8>,
) -> Result<(TcpStream, Vec<u8>), OpenError> {
    let mut stream = TcpStream::connect(to).await?;
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let end = read_line(&mut stream, &mut buf).await?;
    let nonce = link::parse_challenge(&buf[..end - 1])?;
    buf.drain(..end);
    let mut hello = link::answer(secret, &nonce, carried);
    hello.extend_from_slice(&request);
    let (r, _) = stream.write_all(hello).await;
    r?;
    let end = read_line(&mut stream, &mut buf).await?;
    link::parse_verdict(&buf[..end - 1])?;
    buf.drain(..end);
    Ok((stream, buf))
}

/// Carries `client` (whose request, `request`, was admitted here) to `owner`.
pub async fn carry(
    core: Rc<Core>,
    mut client: TcpStream,
    owner: OwnerNode,
    carried: Carried,
    request: Vec<u8>,
    // The client's count among its open connections on this node, held while it is carried.
    _charge: crate::limits::IpCharge,
) {
    let Some(secret) = core.shared.cluster_secret.clone() else {
        bump(&core.stats.cluster_carry_failed, 1);
        refuse(
            &core,
            &mut client,
            unreachable("this node has no cluster.secret"),
        )
        .await;
        return;
    };
    // A carried peer holds two descriptors here: it counts against this worker's connections
    // and its client's open connections, as a peer seated here would.
    let busy = core.registry.peer_count() + core.cluster_local.carry_count();
    if busy >= core.config().limits.max_connections_per_worker {
        bump(&core.stats.worker_full_refused, 1);
        let resp = capacity::refusal("this worker is at its connection limit");
        refuse(&core, &mut client, resp).await;
        return;
    }
    run(&core, client, owner, carried, request, secret).await;
}

async fn run(
    core: &Rc<Core>,
    mut client: TcpStream,
    owner: OwnerNode,
    carried: Carried,
    request: Vec<u8>,
    secret: std::sync::Arc<Vec<u8>>,
) {
    let started = Instant::now();
    let wait = core.config().cluster.lookup_timeout;
    let opened = monoio::time::timeout(wait, open(&secret, &owner.internal, &carried, request));
    let (link, early) = match opened.await {
        Ok(Ok(l)) => l,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            bump(&core.stats.cluster_carry_failed, 1);
            tracing::warn!(owner = %owner.node_id, to = %owner.internal, error = %why, "cannot carry a peer to its session's owner");
            refuse(
                core,
                &mut client,
                unreachable("the session's node cannot be reached"),
            )
            .await;
            return;
        }
    };
    core.latency.record(Latency::Carry, started.elapsed());
    bump(&core.stats.cluster_carried_out, 1);
    let id = core.next_conn_id();
    let entry = Rc::new(Carry {
        owner: owner.node_id.as_str().into(),
        link: Socket::new(link),
        ending: Cell::new(None),
    });
    core.cluster_local
        .carries
        .borrow_mut()
        .insert(id, entry.clone());
    let client = Socket::new(client);
    let boundary = RefCell::new(Boundary::default());
    let down = async {
        let mut ok = true;
        if !early.is_empty() {
            boundary.borrow_mut().feed(&early);
            ok = client.write_all(early).await.0.is_ok();
        }
        if ok {
            forward(core, &entry.link, &client, Some(&boundary)).await;
        }
        let at = boundary.borrow().clone();
        finish_down(core, &entry, &client, &at).await;
    };
    let up = async {
        forward(core, &client, &entry.link, None).await;
        entry.link.shutdown_write();
    };
    let (mut down, mut up) = (std::pin::pin!(down), std::pin::pin!(up));
    // When one side ends, the other gets `session.close_timeout` to finish. Past it both
    // sockets are shut, which ends any read or write still pending at once; the direction is
    // then awaited rather than dropped, so the pooled buffer it holds goes back to the pool.
    let linger = core.config().session.close_timeout;
    let cut = || {
        entry.link.abort();
        client.abort();
    };
    monoio::select! {
        _ = &mut down => {
            if monoio::time::timeout(linger, &mut up).await.is_err() {
                cut();
                (&mut up).await;
            }
        }
        _ = &mut up => {
            if monoio::time::timeout(linger, &mut down).await.is_err() {
                cut();
                (&mut down).await;
            }
        }
    }
    core.cluster_local.carries.borrow_mut().remove(&id);
}

fn unreachable(msg: &'static str) -> Response {
    Response::error(503, "owner_unreachable", msg).with_header("Retry-After", "1")
}

/// The owner's side ended (it closed, died, or this node ended the link): if the client's
/// stream allows, it gets a close frame saying why, then FIN.
async fn finish_down(core: &Core, entry: &Carry, client: &Socket, boundary: &Boundary) {
    let code = match entry.ending.get() {
        Some(code) => Some(code),
        None if !boundary.owner_closed() => Some(CloseCode::SERVICE_RESTART),
        None => None,
    };
    if let Some(code) = code.filter(|_| boundary.can_close()) {
        let reason = if code == CloseCode::GOING_AWAY {
            "server shutting down"
        } else {
            "the session's node is gone; reconnect"
        };
        let mut frame = [0u8; 2 + crate::ws::frame::MAX_CONTROL_PAYLOAD];
        let n = encode_close_frame(&mut frame, code, reason);
        if code == CloseCode::SERVICE_RESTART {
            bump(&core.stats.cluster_carries_closed_owner_gone, 1);
        }
        let _ = client.write_all(frame[..n].to_vec()).await;
    }
    client.shutdown_write();
}

/// Moves bytes from `from` to `to` until `from` ends or a write fails. Writes to a client are
/// bounded by `limits.write_timeout`, as the relay's are, so a client that stopped reading
/// cannot hold a buffer forever.
async fn forward(core: &Core, from: &Socket, to: &Socket, boundary: Option<&RefCell<Boundary>>) {
    let write_timeout = core.config().limits.write_timeout;
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let mut chunk = core.pool.take().await;
        let buf = std::mem::take(&mut chunk.data);
        let (r, buf) = from.read(buf).await;
        let n = match r {
            Ok(n) if n > 0 => n,
            _ => {
                chunk.data = buf;
                core.pool.put(chunk);
                return;
            }
        };
        let read_at = Instant::now();
        if let Some(b) = boundary {
            b.borrow_mut().feed(&buf[..n]);
        }
        let written = if boundary.is_some() {
            match monoio::time::timeout(write_timeout, to.write_all(buf)).await {
                Ok(w) => w,
                Err(_) => {
                    bump(&core.stats.peers_dropped_write_timeout, 1);
                    core.pool.put(chunk);
                    to.abort();
                    return;
                }
            }
        } else {
            to.write_all(buf).await
        };
        let (w, buf) = written;
        core.latency.record(Latency::Hop, read_at.elapsed());
        bump(&core.stats.cluster_hop_bytes, n as u64);
        chunk.data = buf;
        core.pool.put(chunk);
        if w.is_err() {
            return;
        }
    }
}
