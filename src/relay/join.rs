//! Seating an upgraded connection in its session, on the session's own core.

use super::events::{self, EventKey};
use super::{away, conn, resume};
use crate::http::route::RelayTarget;
use crate::http::write::refuse;
use crate::http::Response;
use crate::limits::capacity::{self, Joining};
use crate::limits::IpCharge;
use crate::runtime::socket::Socket;
use crate::runtime::Core;
use crate::session::{JoinPlan, Peer};
use crate::stats::bump;
use crate::stats::Latency;
use crate::ws::CloseCode;
use monoio::net::TcpStream;
use std::rc::Rc;
use std::time::Instant;

/// The last check, made on the core the connection will live on: whole-server capacity.
/// (The client's open connections were counted at admission, on its address's home core.)
async fn seat_allowed(core: &Core, stream: &mut TcpStream, joining: Joining) -> bool {
    let totals = capacity::totals(&core.shared);
    if let Err(reason) = capacity::check(&core.config().limits, totals, joining) {
        bump(&core.stats.capacity_refused, 1);
        refuse(&core.stats, stream, capacity::refusal(reason)).await;
        return false;
    }
    true
}

/// What the HTTP phase hands to the join, besides the stream and the target.
pub struct Seat {
    pub upgrade: Response,
    /// Bytes read after the request head.
    pub extra: Vec<u8>,
    pub accepted_at: Instant,
    /// The connection's count among its client's open connections, held while it lives.
    pub charge: IpCharge,
    /// Where the peer came from (cluster mode only).
    pub origin: Option<crate::cluster::Origin>,
}

/// Pairs the connection into its session, then runs it as a task of its own, so the
/// handshake's state is freed before the connection settles down to wait. The seat is taken
/// before anything is awaited, so two connections racing for one role are decided in arrival
/// order.
pub async fn join_session(core: Rc<Core>, mut stream: TcpStream, target: RelayTarget, seat: Seat) {
    let Seat {
        upgrade,
        extra,
        accepted_at,
        charge,
        origin,
    } = seat;
    let joining = match core.registry.get(&target.session) {
        Some(s) if s.was_paired.get() => Joining::Rejoin,
        Some(_) => Joining::New {
            opens_session: false,
        },
        None => Joining::New {
            opens_session: true,
        },
    };
    if !seat_allowed(&core, &mut stream, joining).await {
        return;
    }
    // `seat_allowed` awaits only when it refuses, so nothing ran in between: arrival order
    // still decides who gets a role.
    let now = core.clock.now_ms();
    let session = core.registry.session(&target.session, now);
    let events_on = target.events;
    let (slot, role, replaced) = match session.plan(target.role.as_deref()) {
        JoinPlan::Full => {
            if core.registry.release_if_empty(&session) {
                crate::cluster::ask::release(&core, &session.id);
            }
            drop(charge);
            let r = Response::error(409, "session_full", "this session already has two peers");
            refuse(&core.stats, &mut stream, r).await;
            return;
        }
        JoinPlan::Take { slot, role } => (slot, role, false),
        JoinPlan::Replace { slot, role } => (slot, role, true),
    };
    // Fresh per connection, so a replaced or resumed client cannot be fed events with the
    // key of one it had before (relay/events.rs).
    let event_key = events_on.then(|| EventKey::random(&core.rng));
    let peer = Rc::new(Peer::new(
        core.next_conn_id(),
        role.into(),
        event_key,
        Socket::new(stream),
        charge,
        now,
    ));
    // An agent learns, in its upgrade answer (which no peer can write), the key that marks
    // the relay's requests to it.
    let upgrade = if *peer.role == *core.config().bridge.agent_role {
        let key = core.rng.hex128();
        core.bridge.add_agent(peer.id, key.clone());
        upgrade.with_header(crate::bridge::KEY_HEADER, key)
    } else {
        upgrade
    };
    let old = session.seat(slot, peer.clone());
    session.lingering_since_ms.set(None);
    core.registry.add_peer(peer.clone());
    core.publish_gauges();
    let other = session.other(peer.id);
    if let Some(origin) = origin {
        core.cluster_local
            .joined(&core, peer.id, origin, other.as_ref().map(|o| o.id));
    }
    // Asked to resume: what it missed is put in front of what is kept for it. On a gap, a
    // peer with events is told and delivery goes on from the first message still kept; a
    // peer without events cannot be told, so it is closed with 4003 rather than handed a
    // stream with a hole it cannot see.
    let resumed = target
        .resume
        .map(|n| resume::on_join(&core, &session, &peer, n, events_on));
    // The 101 and the `connected` event go out before anything the other peer forwards.
    let mut hello = upgrade.to_bytes();
    if events_on {
        hello.extend(peer.event_bytes(events::connected(
            &session.id,
            &peer.role,
            other.is_some(),
            resumed.map(|r| r.next),
        )));
        match resumed {
            Some(r) if r.gap.is_some() => {
                hello.extend(peer.event_bytes(events::resume_gap(r.next)))
            }
            Some(r) if r.ahead => hello.extend(peer.event_bytes(events::resume_ahead(r.next))),
            _ => {}
        }
    }
    let refuse_resume = !events_on && resumed.is_some_and(|r| r.gap.is_some() || r.ahead);
    if let Some(old) = old {
        bump(&core.stats.peers_replaced, 1);
        monoio::spawn(async move { old.close(CloseCode::REPLACED, "replaced", now).await });
    }
    drop((target, upgrade));
    let sent = peer.send_bytes(hello).await;
    core.latency
        .record(Latency::Handshake, accepted_at.elapsed());
    if let Some(o) = other.filter(|o| o.events) {
        let event = events::peer_connected(&peer.role);
        monoio::spawn(async move {
            let _ = o.send_event(event).await;
        });
    }
    tracing::info!(
        conn = peer.id,
        session = &*session.id,
        role = &*peer.role,
        replaced,
        "peer joined"
    );
    if sent.is_err() {
        peer.sock.abort();
    } else if refuse_resume {
        // Awaited here, so the peer is closing before the other peer's next read could
        // forward anything to it.
        Box::pin(peer.close(CloseCode::RESUME_GAP, "resume gap", now)).await;
    } else {
        // Kept messages go out before anything the other peer sends from now on: while they
        // are being written, its reads are kept behind them.
        away::deliver(&core, &session, &peer);
    }
    monoio::spawn(conn::run(core, peer, Some(session), extra));
}

/// Runs an echo connection: its own peer, no session.
pub async fn run_echo(
    core: Rc<Core>,
    mut stream: TcpStream,
    upgrade: Response,
    extra: Vec<u8>,
    accepted_at: Instant,
    charge: IpCharge,
) {
    let joining = Joining::New {
        opens_session: false,
    };
    if !seat_allowed(&core, &mut stream, joining).await {
        return;
    }
    let peer = Rc::new(Peer::new(
        core.next_conn_id(),
        "echo".into(),
        None,
        Socket::new(stream),
        charge,
        core.clock.now_ms(),
    ));
    core.registry.add_peer(peer.clone());
    core.publish_gauges();
    let hello = upgrade.to_bytes();
    drop(upgrade);
    if peer.send_bytes(hello).await.is_err() {
        peer.sock.abort();
    }
    core.latency
        .record(Latency::Handshake, accepted_at.elapsed());
    monoio::spawn(conn::run(core, peer, None, extra));
}
