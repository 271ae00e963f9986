//! A tunnel's control connection: the WebSocket a client asks for a tunnel on. The relay
//! judges the ask, binds the port (or takes back a tunnel in its grace), answers
//! `tunnel_open`, then announces each public connection; the client sends nothing but
//! pings, pongs and its close. Close 1000 from the client ends the tunnel at once; any other
//! end keeps it for `tunnel.reconnect_grace`.

use super::ask::{judge, Ask};
use super::book::{self, Tunnel};
use super::events::{self, Refused};
use super::public::{accept_loop, bind, local_id, public_host};
use super::shape::Bucket;
use crate::auth::TunnelGrant;
use crate::context::Core;
use crate::http::route::TunnelAsk;
use crate::http::Response;
use crate::limits::tunnels::{TunnelGauges, TunnelLimits, TunnelRefusal};
use crate::limits::IpCharge;
use crate::runtime::socket::Socket;
use crate::runtime::stream::ServerStream;
use crate::stats::bump;
use crate::ws::frame::{encode_header, parse_header, Sender, MAX_HEADER_LEN};
use crate::ws::OpCode;
use local_sync::mpsc::unbounded;
use local_sync::oneshot;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

/// The largest frame a control connection may send: it has nothing to say but pings and its
/// close, so anything bigger is refused (1009).
const MAX_CONTROL_FRAME: usize = 4096;
/// The close for a control connection whose tunnel a resume took over (the relay's
/// "replaced", as for a relay peer): the client holding it should not take it back.
const CLOSE_TAKEN_OVER: u16 = 4001;
/// How long a control connection that was taken over may take to write its close.
const TAKEN_OVER_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// What goes to the client, in order, through the one writer.
pub enum Out {
    Text(String),
    Pong(Vec<u8>),
    Ping,
    Close(u16, &'static str),
}

/// What the control request brought besides its stream.
pub struct ControlRequest {
    pub ask: TunnelAsk,
    /// The request's `Host`, for `tunnel_open`'s address.
    pub host: Option<String>,
    pub grant: TunnelGrant,
    pub upgrade: Response,
    pub extra: Vec<u8>,
    pub charge: IpCharge,
}

/// What the request's credential says about tunnels (nothing when auth is off). The
/// credential was checked by admission just before; this reads it again for its subject.
pub fn grant_of(core: &Core, head: &crate::http::RequestHead) -> TunnelGrant {
    let Some(auth) = core.auth() else {
        return TunnelGrant::default();
    };
    let Ok(Some(token)) = crate::auth::token_from_request(head) else {
        return TunnelGrant::default();
    };
    match auth.check(&token, crate::auth::unix_now()) {
        Ok((_, key)) => crate::auth::tunnel_grant(&token, key),
        Err(_) => TunnelGrant::default(),
    }
}

/// Serves one control connection to its end.
pub async fn serve_control(core: Rc<Core>, stream: ServerStream, req: ControlRequest) {
    let upgrade = match stream.hsts() {
        Some(v) => req.upgrade.with_header("Strict-Transport-Security", v),
        None => req.upgrade,
    };
    let sock = Rc::new(Socket::upgraded(stream));
    let (hello, _) = sock.write_all(upgrade.to_bytes()).await;
    if hello.is_err() {
        return;
    }
    if let Some(node) = moved_to(&core, &req.ask) {
        return redirect(&core, &sock, &node).await;
    }
    let tunnel = match open(&core, &req.ask, &req.grant) {
        Ok(t) => t,
        Err(refused) => return refuse(&core, &sock, refused).await,
    };
    let (tx, rx) = unbounded::channel();
    let (gen, kicked) = take_control(&tunnel, tx.clone());
    let cfg = core.config();
    let public = format!(
        "{}:{}",
        public_host(&core, req.host.as_deref()),
        tunnel.port
    );
    let grace_ms = cfg.tunnel.reconnect_grace.as_millis() as u64;
    let _ = tx.send(Out::Text(events::open(
        &public,
        tunnel.port,
        &tunnel.resume,
        grace_ms,
    )));
    let to_self = tx.clone();
    monoio::join!(
        async {
            let ended = monoio::select! {
                clean = read_loop(&core, &sock, tx, req.extra) => Some(clean),
                _ = kicked => None,
            };
            match ended {
                // Taken over: the tunnel is the newer connection's now; this one is told.
                None => {
                    let _ = to_self.send(Out::Close(CLOSE_TAKEN_OVER, "tunnel taken over"));
                    drop(to_self);
                    // Most likely a dead connection: its close may never be read, so the
                    // writer is not waited on for long.
                    monoio::time::sleep(TAKEN_OVER_LINGER).await;
                    sock.abort();
                }
                Some(clean) => release_control(&core, &tunnel, gen, clean),
            }
        },
        write_loop(&sock, rx),
    );
    sock.abort();
    drop(req.charge);
}

/// Gives the tunnel to this control connection: its events now come here, and a grace
/// timer or an older control connection still holding it (a resume that came before the
/// relay saw the old one drop) lets go. The generation it holds the tunnel under, and what
/// resolves when a later resume takes the tunnel over.
fn take_control(tunnel: &Tunnel, tx: unbounded::Tx<Out>) -> (u64, impl Future<Output = ()>) {
    let (kick_tx, kick_rx) = oneshot::channel();
    *tunnel.events.borrow_mut() = Some(tx);
    *tunnel.kick.borrow_mut() = Some(kick_tx);
    let gen = tunnel.generation.get() + 1;
    tunnel.generation.set(gen);
    let kicked = async move {
        // A sender dropped without a word (the tunnel ended) is no takeover.
        if kick_rx.await.is_err() {
            std::future::pending::<()>().await
        }
    };
    (gen, kicked)
}

/// After the control connection that held the tunnel under `gen` ended on its own: a clean
/// close ends the tunnel, anything else starts its grace. Nothing, if a resume took the
/// tunnel over meanwhile.
fn release_control(core: &Rc<Core>, tunnel: &Rc<Tunnel>, gen: u64, clean: bool) {
    if tunnel.generation.get() != gen {
        return;
    }
    if clean {
        end(core, tunnel);
    } else {
        tunnel.events.borrow_mut().take();
        tunnel.kick.borrow_mut().take();
        start_grace(core, tunnel, gen);
    }
}

/// The error event and the close, for a tunnel refused before it opened.
async fn refuse(core: &Core, sock: &Socket, refused: Refused) {
    let counter = match refused {
        Refused::AtCapacity => &core.stats.tunnels_refused_capacity,
        Refused::QuotaExceeded => &core.stats.tunnels_refused_quota,
        Refused::PortUnavailable => &core.stats.tunnels_refused_port,
        Refused::BadRequest(_) => &core.stats.tunnels_refused_bad_request,
    };
    bump(counter, 1);
    let mut out = frame(OpCode::Text, refused.event().as_bytes());
    out.extend(close_frame(refused.close_code(), refused.code()));
    let _ = sock.write_all(out).await;
    sock.shutdown_write();
}

/// Cluster mode: the node to send a new tunnel to instead, when this one would hold more
/// than its share with it (`fleet::share::elsewhere`, docs/tunnels.md#fleet). A resume of a
/// tunnel held here and a client that already followed a `moved` stay here (one hop at
/// most); so does every tunnel while the fleet cannot be read (counted).
fn moved_to(core: &Core, ask: &TunnelAsk) -> Option<String> {
    use crate::fleet::share::{elsewhere, Me};
    let view = core.shared.cluster.as_ref()?;
    let held = |key: &str| book::with(|b| b.tunnels.contains_key(key));
    if ask.moved || ask.resume.as_deref().is_some_and(held) {
        return None;
    }
    let s = view.snapshot();
    if !s.redis_up || !s.registered || s.breaker != "closed" {
        bump(&core.stats.tunnels_placed_alone, 1);
        return None;
    }
    let cfg = core.config();
    let me = Me {
        node_id: &view.identity.node_id,
        tunnels: core.shared.tunnels.total() as u64,
        max_tunnels: cfg.tunnel.max_tunnels,
    };
    let margin = cfg.tunnel.redirect_margin_percent as u64;
    let to = elsewhere(&s.nodes, me, cfg.tunnel.reserved_percent, margin)?;
    Some(to.public_url.clone())
}

/// The `moved` error event naming `node`, and close 1013: the client opens its tunnel there.
async fn redirect(core: &Core, sock: &Socket, node: &str) {
    bump(&core.stats.tunnels_moved, 1);
    let event = serde_json::json!({
        "type": "error",
        "code": "moved",
        "node": node,
        "message": "this node holds more than its share of tunnels; open the tunnel on the node named",
    })
    .to_string();
    let mut out = frame(OpCode::Text, event.as_bytes());
    out.extend(close_frame(1013, "moved"));
    let _ = sock.write_all(out).await;
    sock.shutdown_write();
}

/// The tunnel this ask gets: one in its grace taken back, or a new one with its port bound.
fn open(core: &Rc<Core>, ask: &TunnelAsk, grant: &TunnelGrant) -> Result<Rc<Tunnel>, Refused> {
    let cfg = core.config();
    let Ask { port, resume } = judge(ask, cfg.tunnel.ports).map_err(Refused::BadRequest)?;
    let subject = grant.subject.clone();
    let reconnecting = resume.is_some();
    if let Some(key) = resume {
        if let Some(t) = resume_tunnel(core, &key, subject.as_deref()) {
            return Ok(t);
        }
        // Unknown (its grace is over, or another worker's restart): a new tunnel instead,
        // on the port asked for if given; `tunnel_open` says which.
    }
    let limits = TunnelLimits {
        max_tunnels: cfg.tunnel.max_tunnels,
        reserved_percent: cfg.tunnel.reserved_percent,
        per_subject: grant
            .tunnels
            .map_or(cfg.tunnel.max_tunnels_per_subject, |n| n as usize),
        reconnecting,
    };
    let charge = core
        .shared
        .tunnels
        .take(subject.as_deref(), limits)
        .map_err(|r| match r {
            TunnelRefusal::AtCapacity => Refused::AtCapacity,
            TunnelRefusal::Quota => Refused::QuotaExceeded,
        })?;
    let listener = bind(core, port).ok_or(Refused::PortUnavailable)?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let (stop_tx, stop_rx) = oneshot::channel();
    let tunnel = Rc::new(Tunnel {
        port,
        resume: local_id(core),
        subject,
        events: RefCell::new(None),
        kick: RefCell::new(None),
        connections: Cell::new(0),
        closed: Cell::new(false),
        stop: RefCell::new(Some(stop_tx)),
        generation: Cell::new(0),
        bucket: RefCell::new(Bucket::new(cfg.tunnel.max_bandwidth, Instant::now())),
        charge: RefCell::new(Some(charge)),
    });
    bump(&core.stats.tunnels_opened, 1);
    TunnelGauges::add(&core.tunnel_gauges.tunnels, 1);
    book::with(|b| b.tunnels.insert(tunnel.resume.clone(), tunnel.clone()));
    monoio::spawn(accept_loop(core.clone(), tunnel.clone(), listener, stop_rx));
    Ok(tunnel)
}

/// The open tunnel `key` names, if `subject` is its owner's: from its grace, or taken over
/// from a control connection that still holds it (the client came back before the relay saw
/// its old connection drop; that one is closed with 4001 and the port stays).
fn resume_tunnel(core: &Core, key: &str, subject: Option<&str>) -> Option<Rc<Tunnel>> {
    let t = book::with(|b| b.tunnels.get(key).cloned())?;
    if t.subject.as_deref() != subject || t.closed.get() {
        return None;
    }
    if let Some(kick) = t.kick.borrow_mut().take() {
        let _ = kick.send(());
        bump(&core.stats.tunnels_taken_over, 1);
    }
    bump(&core.stats.tunnels_resumed, 1);
    Some(t)
}

/// Ends a tunnel: its port is released; its joined connections run to their own end.
fn end(core: &Core, tunnel: &Tunnel) {
    if !tunnel.closed.get() {
        book::with(|b| b.tunnels.remove(&tunnel.resume));
        tunnel.close();
        bump(&core.stats.tunnels_closed, 1);
        TunnelGauges::add(&core.tunnel_gauges.tunnels, -1);
    }
}

/// Keeps a tunnel whose control connection went away for `tunnel.reconnect_grace`, then
/// ends it unless a control connection took it back meanwhile.
fn start_grace(core: &Rc<Core>, tunnel: &Rc<Tunnel>, gen: u64) {
    let grace = core.config().tunnel.reconnect_grace;
    if grace.is_zero() {
        return end(core, tunnel);
    }
    let (core, tunnel) = (core.clone(), tunnel.clone());
    monoio::spawn(async move {
        monoio::time::sleep(grace).await;
        if tunnel.generation.get() == gen && tunnel.events.borrow().is_none() {
            end(&core, &tunnel);
        }
    });
}

/// Writes what comes from `rx` until a close is written or every sender is gone.
async fn write_loop(sock: &Socket, mut rx: unbounded::Rx<Out>) {
    while let Some(out) = rx.recv().await {
        let (bytes, last) = match out {
            Out::Text(t) => (frame(OpCode::Text, t.as_bytes()), false),
            Out::Pong(p) => (frame(OpCode::Pong, &p), false),
            Out::Ping => (frame(OpCode::Ping, b""), false),
            Out::Close(code, why) => (close_frame(code, why), true),
        };
        let (r, _) = sock.write_all(bytes).await;
        if r.is_err() {
            sock.abort();
            return;
        }
        if last {
            sock.shutdown_write();
            return;
        }
    }
}

/// A whole unmasked frame.
fn frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut hdr, true, op, payload.len() as u64, None);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&hdr[..n]);
    out.extend_from_slice(payload);
    out
}

fn close_frame(code: u16, why: &str) -> Vec<u8> {
    let mut buf = [0u8; 2 + crate::ws::frame::MAX_CONTROL_PAYLOAD];
    let n = crate::ws::close::encode_close_frame(&mut buf, crate::ws::CloseCode(code), why);
    buf[..n].to_vec()
}

/// Reads the client's frames: pings are answered, pongs and data ignored, a close answered
/// and ends it; silence past `session.peer_timeout` (pinged every `session.ping_interval`)
/// ends it too. `true`: the client closed with 1000.
async fn read_loop(core: &Core, sock: &Socket, tx: unbounded::Tx<Out>, mut buf: Vec<u8>) -> bool {
    let cfg = core.config();
    let (ping, patience) = (cfg.session.ping_interval, cfg.session.peer_timeout);
    let mut heard = Instant::now();
    loop {
        match parse_frames(&mut buf) {
            Parsed::More => {}
            Parsed::Ping(p) => {
                let _ = tx.send(Out::Pong(p));
                continue;
            }
            Parsed::Close(code) => {
                let _ = tx.send(Out::Close(if code == 1000 { 1000 } else { code }, ""));
                return code == 1000;
            }
            Parsed::Bad(code, why) => {
                let _ = tx.send(Out::Close(code, why));
                return false;
            }
        }
        match monoio::time::timeout(ping, sock.readable()).await {
            Err(_) if heard.elapsed() > patience => return false,
            Err(_) => {
                let _ = tx.send(Out::Ping);
                continue;
            }
            Ok(Err(_)) => return false,
            Ok(Ok(())) => {}
        }
        let (r, chunk) = sock.read(Vec::with_capacity(1024)).await;
        match r {
            Ok(0) => return false,
            Ok(_) => {
                heard = Instant::now();
                buf.extend_from_slice(&chunk);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
}

/// What the front of the read buffer holds.
enum Parsed {
    /// Nothing whole: read more.
    More,
    Ping(Vec<u8>),
    Close(u16),
    /// Broken or too large: close with this code.
    Bad(u16, &'static str),
}

/// Consumes whole frames from the front of `buf` until one needs an answer or more bytes
/// are needed. I/O-free.
fn parse_frames(buf: &mut Vec<u8>) -> Parsed {
    loop {
        let h = match parse_header(buf, Sender::Client) {
            Ok(Some(h)) => h,
            Ok(None) => return Parsed::More,
            Err(e) => return Parsed::Bad(1002, e.close_reason()),
        };
        if h.payload_len > MAX_CONTROL_FRAME as u64 {
            return Parsed::Bad(1009, "a tunnel's control connection takes no messages");
        }
        let end = h.header_len + h.payload_len as usize;
        if buf.len() < end {
            return Parsed::More;
        }
        let mut payload = buf[h.header_len..end].to_vec();
        if let Some(mask) = h.mask {
            crate::ws::mask::apply_mask(&mut payload, mask, 0);
        }
        buf.drain(..end);
        match h.opcode {
            OpCode::Ping => return Parsed::Ping(payload),
            OpCode::Close => {
                return match crate::ws::close::parse_close_payload(&payload) {
                    Ok(1005) => Parsed::Close(1000),
                    Ok(code) => Parsed::Close(code),
                    Err(_) => Parsed::Bad(1002, "malformed close frame"),
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::client::encode_client_frame;

    #[test]
    fn frames_are_answered_or_skipped() {
        let mut buf = Vec::new();
        encode_client_frame(&mut buf, OpCode::Text, b"ignored", [1, 2, 3, 4]);
        encode_client_frame(&mut buf, OpCode::Ping, b"hi", [9, 8, 7, 6]);
        encode_client_frame(
            &mut buf,
            OpCode::Close,
            &1000u16.to_be_bytes(),
            [5, 5, 5, 5],
        );
        assert!(matches!(parse_frames(&mut buf), Parsed::Ping(p) if p == b"hi"));
        assert!(matches!(parse_frames(&mut buf), Parsed::Close(1000)));
        assert!(matches!(parse_frames(&mut buf), Parsed::More));
        let mut big = Vec::new();
        encode_client_frame(&mut big, OpCode::Binary, &[0; 5000], [1, 1, 1, 1]);
        assert!(matches!(
            parse_frames(&mut big[..20].to_vec()),
            Parsed::Bad(1009, _)
        ));
        let mut unmasked = vec![0x89, 0x00];
        assert!(matches!(parse_frames(&mut unmasked), Parsed::Bad(1002, _)));
    }
}
