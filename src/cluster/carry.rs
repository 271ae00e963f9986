//! The landing node's side of a cross-node peer: open an authenticated link to the session's
//! owner, hand it the client's request as it arrived, then move bytes both ways until either
//! side ends. Nothing is parsed or re-framed on the way: each read is forwarded whole from
//! a pooled buffer (taken only once the socket is readable, as the relay's own reads are).
//! The owner-to-client direction is followed by a [`Boundary`], so that when the owner is
//! gone or this node stops, the client still gets a proper close frame.
//!
//! Not splice(2): it would cost a pipe (two descriptors) per direction per peer, against a
//! 20,000-descriptor budget, and the close frame needs the bytes to pass through here.
//!
//! A write in either direction holds its pooled buffer until it ends, so a client that does
//! not read, or an owner that does not read the link (its own receiver is stuck, or it holds
//! the sender back), pins one of this core's buffers. Each write marks its direction (two
//! cell stores, no timer), and the core's tick and pool guard treat the marks as they treat
//! a seated receiver's (`relay::blocked`): `limits.write_timeout` bounds each direction, and
//! blocked writes count against the per-address, per-session and pool-reserve bounds.
//!
//! The link's state (`Carry`, its write marks) is `fleet::carry`, below the worker's context
//! whose table lists it; this file is the I/O.

use super::boundary::Boundary;
use super::link::{self, Carried, LinkError};
use crate::context::Core;
use crate::fleet::carry::{Carry, Ending, WriteMark};
use crate::limits::Refusal;
use crate::runtime::socket::Socket;
use crate::runtime::stream::ServerStream;
use crate::runtime::tls::Refused;
use crate::stats::{bump, Latency};
use crate::tls::LinkTls;
use crate::ws::close::encode_close_frame;
use crate::ws::CloseCode;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

/// Where the owner listens for links.
#[derive(Debug, Clone)]
pub struct OwnerNode {
    pub node_id: String,
    pub internal: String,
}

impl Carry {
    /// The keepalive tick's write timeout (`limits.write_timeout`), for both directions: a
    /// client that has not taken a write for this long is dropped, as a seated receiver is;
    /// a link whose owner has not is ended.
    pub fn expire_writes(&self, core: &Core, now_ms: u64, write_ms: u64) {
        let stuck = |m: &WriteMark| {
            m.pending_since(now_ms)
                .is_some_and(|since| now_ms.saturating_sub(since) >= write_ms)
        };
        if !self.released().to_client && stuck(&self.to_client) {
            bump(&core.stats.peers_dropped_write_timeout, 1);
            self.drop_client();
        }
        if !self.released().to_owner && stuck(&self.to_owner) {
            bump(&core.stats.cluster_carries_owner_write_timeout, 1);
            tracing::info!(owner = %self.owner, session = %self.session, "ended a carried link: the owner did not read it within limits.write_timeout");
            self.end_for(Ending::OwnerStalled);
        }
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
    /// The link's TLS (`cluster.tls_*`) failed: nothing of the peer was sent.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Reads one line (and whatever follows it in the same reads) from `stream`. Over TLS, a
/// TLS error is one (the owner refusing this node's certificate says so on the first read).
async fn read_line(stream: &mut ServerStream, buf: &mut Vec<u8>) -> Result<usize, OpenError> {
    loop {
        if let Some(end) = link::line_end(buf)? {
            return Ok(end);
        }
        let chunk = Vec::with_capacity(1024);
        let (r, chunk) = stream.read(chunk).await;
        match r {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err(OpenError::Closed),
            Err(e) if stream.tls().is_some() && e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(OpenError::Tls(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// With `cluster.tls_*` set, the link's TLS handshake: the owner's certificate must chain to
/// the cluster CA and hold its registered address (or `cluster.tls_server_name`); this node's
/// own certificate goes as the client certificate. Never a fallback to clear.
async fn start_tls(
    tcp: TcpStream,
    tls: Option<&LinkTls>,
    to: &str,
) -> Result<ServerStream, OpenError> {
    let Some(tls) = tls else {
        return Ok(ServerStream::from(tcp));
    };
    let name = tls.server_name(to).ok_or_else(|| {
        OpenError::Tls(format!("{to} has no IP address to check the owner's certificate for: set cluster.tls_server_name"))
    })?;
    match crate::runtime::tls::connect(&tcp, tls.client.clone(), name).await {
        Ok(session) => Ok(ServerStream::from_parts(tcp, Some(session), 0)),
        Err(Refused::NotTls) => Err(OpenError::Tls(
            "the owner answered in clear: set cluster.tls_* on every node".to_string(),
        )),
        Err(Refused::Closed) => Err(OpenError::Tls("the owner closed the handshake".into())),
        Err(Refused::Tls(e)) => Err(OpenError::Tls(e.to_string())),
        Err(Refused::Io(e)) => Err(OpenError::Io(e)),
    }
}

/// Connects and authenticates both ways; returns the link and any bytes of the owner's
/// answer already read past its `ok`. The client's request (its token, cookies, body) is
/// written only once the owner has proved it holds the secret: something that took the
/// owner's address gets the peer's description and nothing of the client's own. With the
/// link's TLS, all of it is inside TLS with an owner the cluster CA vouched for.
async fn open(
    secret: &[u8],
    to: &str,
    tls: Option<&LinkTls>,
    carried: &Carried,
    own_nonce: [u8; link::NONCE_BYTES],
    request: Vec<u8>,
) -> Result<(ServerStream, Vec<u8>), OpenError> {
    let tcp = TcpStream::connect(to).await?;
    let _ = tcp.set_nodelay(true);
    let mut stream = start_tls(tcp, tls, to).await?;
    let mut buf = Vec::new();
    let end = read_line(&mut stream, &mut buf).await?;
    let nonce = link::parse_challenge(&buf[..end - 1])?;
    buf.drain(..end);
    let (hello, owner_proof) = link::answer(secret, &nonce, &own_nonce, carried);
    let (r, _) = stream.write_all(hello).await;
    r?;
    let end = read_line(&mut stream, &mut buf).await?;
    owner_proof.check_verdict(&buf[..end - 1])?;
    buf.drain(..end);
    let (r, _) = stream.write_all(request).await;
    r?;
    Ok((stream, buf))
}

/// Carries `client` (whose request, `request`, was admitted here) to `owner`.
pub async fn carry(
    core: Rc<Core>,
    mut client: ServerStream,
    owner: OwnerNode,
    carried: Carried,
    request: Vec<u8>,
    // The client's count among its open connections on this node, held while it is carried.
    _charge: crate::limits::IpCharge,
) {
    let Some(secret) = core.shared.cluster_secret.clone() else {
        Refusal::OwnerUnreachable("this node has no cluster.secret")
            .write(&core.stats, &mut client)
            .await;
        return;
    };
    // A carried peer holds two descriptors here: it counts against this worker's connections
    // and its client's open connections, as a peer seated here would.
    let busy = core.registry.peer_count() + core.cluster_local.carry_count();
    if busy >= core.config().limits.max_connections_per_worker {
        Refusal::WorkerFull.write(&core.stats, &mut client).await;
        return;
    }
    run(&core, client, owner, carried, request, secret).await;
}

/// One carried link: opened, listed in this core's table while it lasts (for /stats, and to
/// end it when its owner leaves the fleet), and forwarded both ways.
async fn run(
    core: &Rc<Core>,
    mut client: ServerStream,
    owner: OwnerNode,
    carried: Carried,
    request: Vec<u8>,
    secret: std::sync::Arc<Vec<u8>>,
) {
    let opened = open_link(core, &mut client, &owner, &carried, request, &secret).await;
    let Some((link, early)) = opened else {
        return;
    };
    let id = core.next_conn_id();
    let entry = Rc::new(Carry::new(
        owner.node_id.as_str().into(),
        carried.session.as_str().into(),
        carried.ip,
        Socket::upgraded(client),
        Socket::upgraded(link),
    ));
    core.cluster_local
        .carries
        .borrow_mut()
        .insert(id, entry.clone());
    both_ways(core, &entry, early).await;
    core.cluster_local.carries.borrow_mut().remove(&id);
}

/// Opens the link to the owner within `cluster.lookup_timeout` (its opening proves both
/// sides, then the client's request goes). Returns the link and what the owner sent after
/// its proof; on failure the client gets 503 and the failure is counted and logged.
async fn open_link(
    core: &Core,
    client: &mut ServerStream,
    owner: &OwnerNode,
    carried: &Carried,
    request: Vec<u8>,
    secret: &[u8],
) -> Option<(ServerStream, Vec<u8>)> {
    let started = Instant::now();
    let wait = core.config().cluster.lookup_timeout;
    let nonce = core.rng.bytes();
    let tls = core.cluster_local.tls();
    let opening = open(
        secret,
        &owner.internal,
        tls.as_ref(),
        carried,
        nonce,
        request,
    );
    let why = match monoio::time::timeout(wait, opening).await {
        Ok(Ok(l)) => {
            core.latency.record(Latency::Carry, started.elapsed());
            bump(&core.stats.cluster_carried_out, 1);
            return Some(l);
        }
        Ok(Err(e)) => {
            match e {
                OpenError::Link(LinkError::BadOwnerProof) => {
                    bump(&core.stats.cluster_owner_unproved, 1)
                }
                OpenError::Tls(_) => bump(&core.stats.cluster_carry_tls_failed, 1),
                _ => {}
            }
            e.to_string()
        }
        // An owner whose link has TLS waits for a handshake this node never starts.
        Err(_) if tls.is_none() => {
            "timed out (if the owner has cluster.tls_* set, set it here too)".to_string()
        }
        Err(_) => "timed out".to_string(),
    };
    tracing::warn!(owner = %owner.node_id, to = %owner.internal, error = %why, "cannot carry a peer to its session's owner");
    Refusal::OwnerUnreachable("the session's node cannot be reached")
        .write(&core.stats, client)
        .await;
    None
}

/// Forwards both ways until both are done: toward the client (first what the owner sent
/// with its proof), then its close; toward the owner, then FIN.
async fn both_ways(core: &Core, entry: &Carry, early: Vec<u8>) {
    let boundary = RefCell::new(Boundary::default());
    let down = async {
        let mut ok = true;
        if !early.is_empty() {
            boundary.borrow_mut().feed(&early);
            ok = entry.client.write_all(early).await.0.is_ok();
        }
        if ok {
            forward(core, entry, Direction::ToClient(&boundary)).await;
        }
        let at = boundary.borrow().clone();
        finish_down(core, entry, &at).await;
    };
    let up = async {
        forward(core, entry, Direction::ToOwner).await;
        entry.link.shutdown_write();
    };
    let (mut down, mut up) = (std::pin::pin!(down), std::pin::pin!(up));
    // When one side ends, the other gets `session.close_timeout` to finish. Past it both
    // sockets are shut, which ends any read or write still pending at once; the direction is
    // then awaited rather than dropped, so the pooled buffer it holds goes back to the pool.
    let linger = core.config().session.close_timeout;
    let cut = || {
        entry.link.abort();
        entry.client.abort();
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
}

/// The owner's side ended (it closed, died, or this node ended the link): if the client's
/// stream allows, it gets a close frame saying why, then FIN. A client dropped for not
/// reading gets nothing more.
async fn finish_down(core: &Core, entry: &Carry, boundary: &Boundary) {
    if entry.client_dropped.get() {
        return;
    }
    let why = match entry.ending.get() {
        Some(why) => Some(why),
        None if !boundary.owner_closed() => Some(Ending::Told(CloseCode::SERVICE_RESTART)),
        None => None,
    };
    if let Some(why) = why.filter(|_| boundary.can_close()) {
        let (code, reason) = why.close();
        let mut frame = [0u8; 2 + crate::ws::frame::MAX_CONTROL_PAYLOAD];
        let n = encode_close_frame(&mut frame, code, reason);
        if why == Ending::Told(CloseCode::SERVICE_RESTART) {
            bump(&core.stats.cluster_carries_closed_owner_gone, 1);
        }
        let _ = entry.client.write_all(frame[..n].to_vec()).await;
    }
    entry.client.shutdown_write();
}

/// Which way `forward` moves bytes. Toward the client, its stream is followed by a
/// [`Boundary`].
#[derive(Clone, Copy)]
enum Direction<'a> {
    ToClient(&'a RefCell<Boundary>),
    ToOwner,
}

/// Moves bytes one way until the source ends, a write fails, or the source was shut by this
/// node. Each write marks its direction while it lasts, for the tick's write timeout and the
/// bounds on blocked writes (`relay::blocked`); that is the only per-message cost of them.
async fn forward(core: &Core, carry: &Carry, dir: Direction<'_>) {
    let (from, to, mark, boundary) = match dir {
        Direction::ToClient(b) => (&carry.link, &carry.client, &carry.to_client, Some(b)),
        Direction::ToOwner => (&carry.client, &carry.link, &carry.to_owner, None),
    };
    loop {
        if from.readable().await.is_err() {
            return;
        }
        // Once this node shut a side, nothing more is moved and no buffer is queued for (the
        // pool may be low because of this link).
        if carry.is_shut() {
            return;
        }
        let mut chunk = core.pool.take().await;
        let n = match chunk.read_from(from).await {
            Ok(n) if n > 0 => n,
            // A TLS client's record not complete yet: wait for the rest without the buffer.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                core.pool.put(chunk);
                continue;
            }
            _ => {
                core.pool.put(chunk);
                return;
            }
        };
        let read_at = Instant::now();
        if let Some(b) = boundary {
            b.borrow_mut().feed(chunk.data());
        }
        mark.start();
        let w = chunk.write_all_to(to).await;
        mark.end();
        core.latency.record(Latency::Hop, read_at.elapsed());
        bump(&core.stats.cluster_hop_bytes, n as u64);
        core.pool.put(chunk);
        if w.is_err() {
            return;
        }
    }
}
