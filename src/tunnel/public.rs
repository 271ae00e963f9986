//! A tunnel's public port: its listener, and each connection accepted there until its data
//! connection comes (or `tunnel.accept_timeout` passes).

use super::book::{self, Tunnel};
use super::control::Out;
use super::events;
use super::join::{join, DataConn};
use crate::context::Core;
use crate::session::handoff::owner_core;
use crate::stats::bump;
use local_sync::oneshot;
use monoio::net::{TcpListener, TcpStream};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

/// Binds `port` (or, with `None`, the first free port of `tunnel.ports` from a random
/// start) on `tunnel.bind`. `None`: nothing could be bound.
pub fn bind(core: &Core, port: Option<u16>) -> Option<TcpListener> {
    let cfg = core.config();
    let (ip, range) = (cfg.tunnel.bind, cfg.tunnel.ports);
    let try_port = |p: u16| -> Option<TcpListener> {
        let l = std::net::TcpListener::bind(SocketAddr::new(ip, p)).ok()?;
        l.set_nonblocking(true).ok()?;
        TcpListener::from_std(l).ok()
    };
    if let Some(p) = port {
        return try_port(p);
    }
    let len = range.len();
    let start = u64::from_le_bytes(core.rng.bytes::<8>()) as usize % len;
    (0..len)
        .map(|i| range.first + ((start + i) % len) as u16)
        .find_map(try_port)
}

/// An id for a public connection that names this worker: `owner_core` of it is this core,
/// so a data connection accepted on any worker is handed here.
pub fn local_id(core: &Core) -> String {
    let workers = core.shared.workers();
    loop {
        let id = core.rng.hex128();
        if owner_core(&id, workers) == core.index {
            return id;
        }
    }
}

/// Accepts on the tunnel's port until the tunnel ends; dropping the listener frees the port.
pub async fn accept_loop(
    core: Rc<Core>,
    tunnel: Rc<Tunnel>,
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = &mut stop => break,
        };
        if tunnel.closed.get() {
            break;
        }
        match accepted {
            Ok((stream, peer)) => arrived(&core, &tunnel, stream, peer),
            // Out of descriptors, most likely: a pause instead of a spin.
            Err(_) => monoio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A public connection: announced to the client and left waiting for its data connection,
/// or closed at once when the tunnel has its fill or no control connection to announce it on.
fn arrived(core: &Rc<Core>, tunnel: &Rc<Tunnel>, stream: TcpStream, peer: SocketAddr) {
    let max = core.config().tunnel.max_connections_per_tunnel;
    let events = tunnel.events.borrow().clone();
    let Some(events) = events.filter(|_| tunnel.connections.get() < max) else {
        bump(&core.stats.tunnel_connections_refused, 1);
        return;
    };
    let _ = stream.set_nodelay(true);
    let id = local_id(core);
    let (tx, rx) = oneshot::channel();
    book::with(|b| b.pending.insert(id.clone(), tx));
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if events
        .send(Out::Text(events::connection(&id, &peer.to_string())))
        .is_err()
    {
        book::with(|b| b.pending.remove(&id));
        bump(&core.stats.tunnel_connections_refused, 1);
        return;
    }
    bump(&core.stats.tunnel_connections_accepted, 1);
    tunnel.connections.set(tunnel.connections.get() + 1);
    monoio::spawn(wait_and_join(core.clone(), tunnel.clone(), stream, id, rx));
}

/// Counts a tunnel's connection out when it ends, however it ends.
struct Open(Rc<Tunnel>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .connections
            .set(self.0.connections.get().saturating_sub(1));
    }
}

async fn wait_and_join(
    core: Rc<Core>,
    tunnel: Rc<Tunnel>,
    stream: TcpStream,
    id: String,
    rx: oneshot::Receiver<DataConn>,
) {
    let _open = Open(tunnel.clone());
    let wait = core.config().tunnel.accept_timeout;
    match monoio::time::timeout(wait, rx).await {
        Ok(Ok(data)) => {
            bump(&core.stats.tunnel_connections_joined, 1);
            join(core, tunnel, stream, data).await;
        }
        _ => {
            book::with(|b| b.pending.remove(&id));
            bump(&core.stats.tunnel_accept_timeouts, 1);
        }
    }
}

/// The host `tunnel_open` names: `tunnel.public_host`, else the control request's Host,
/// else the bind address.
pub fn public_host(core: &Core, host_header: Option<&str>) -> String {
    let cfg = core.config();
    if let Some(h) = &cfg.tunnel.public_host {
        return h.clone();
    }
    if let Some(h) = host_header
        .map(super::ask::host_part)
        .filter(|h| !h.is_empty())
    {
        return h.to_string();
    }
    match cfg.tunnel.bind {
        IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    }
}
