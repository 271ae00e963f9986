//! Seating an upgraded connection in its session, on the session's own core.

use super::{away, conn, resume};
use crate::context::Core;
use crate::http::route::RelayTarget;
use crate::http::Response;
use crate::limits::capacity::{self, Joining};
use crate::limits::{IpCharge, Refusal};
use crate::runtime::socket::Socket;
use crate::runtime::stream::ServerStream;
use crate::session::events::durable::Shapes;
use crate::session::events::{self, EventKey};
use crate::session::{JoinPlan, Peer, Session};
use crate::stats::bump;
use crate::stats::Latency;
use crate::ws::CloseCode;
use std::rc::Rc;
use std::time::Instant;

/// The last check, made on the core the connection will live on: whole-server capacity.
/// (The client's open connections were counted at admission, on its address's home core.)
async fn seat_allowed(core: &Core, stream: &mut ServerStream, joining: Joining) -> bool {
    let totals = capacity::totals(&core.shared.gauges);
    if let Err(reason) = capacity::check(&core.config().limits, totals, joining) {
        Refusal::Capacity(reason).write(&core.stats, stream).await;
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
    pub origin: Option<crate::fleet::local::Origin>,
}

/// Pairs the connection into its session, then runs it as a task of its own, so the
/// handshake's state is freed before the connection settles down to wait. The seat is taken
/// before anything is awaited, so two connections racing for one role are decided in arrival
/// order. In steps: capacity, the session's plan for the role, the new peer, its seat, the
/// 101 with its events, then the greeting.
pub async fn join_session(
    core: Rc<Core>,
    mut stream: ServerStream,
    target: RelayTarget,
    seat: Seat,
) {
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
    let (slot, role, replaced) = match session.plan(target.role.as_deref()) {
        JoinPlan::Full => return refuse_full(&core, stream, &session, charge).await,
        JoinPlan::Take { slot, role } => (slot, role, false),
        JoinPlan::Replace { slot, role } => (slot, role, true),
    };
    let shapes = match target.durable_events {
        true => Shapes::Durable,
        false => Shapes::Relay,
    };
    let events_on = target.events.then_some(shapes);
    let (peer, upgrade) = new_peer(&core, stream, role, events_on, charge, now, upgrade);
    let (old, other) = take_seat(&core, &session, slot, &peer, origin);
    let (mut hello, refuse_resume) =
        hello(&core, &session, &peer, &target, other.is_some(), upgrade);
    if let Some(o) = other.as_ref().filter(|_| peer.events()) {
        // The Durable Object relay's clients learn of a peer already there from
        // `{role}_connected` right after `connected` (our own clients read `peer_present`).
        if peer.shapes() == Shapes::Durable {
            hello.extend(peer.event_bytes(events::peer_connected(&o.role)));
        }
    }
    if let Some(old) = old {
        bump(&core.stats.peers_replaced, 1);
        monoio::spawn(async move { old.close(CloseCode::REPLACED, "replaced", now).await });
    }
    drop(target);
    let joined = Joined {
        session,
        peer,
        other,
        replaced,
    };
    greet(core, joined, hello, refuse_resume, accepted_at, now, extra).await
}

/// Both slots are taken by live peers of other roles: 409. A session this request had just
/// opened is let go again (and its cluster claim with it).
async fn refuse_full(core: &Core, mut stream: ServerStream, session: &Session, charge: IpCharge) {
    if core.registry.release_if_empty(session) {
        crate::cluster::ask::release(core, &session.id);
    }
    drop(charge);
    Refusal::SessionFull.write(&core.stats, &mut stream).await;
}

/// The connection becomes a peer with an id, its role and, when it asked for events, a key
/// of its own. An agent learns, in its upgrade answer (which no peer can write), the key that
/// marks the relay's requests to it.
fn new_peer(
    core: &Core,
    mut stream: ServerStream,
    role: String,
    events_on: Option<Shapes>,
    charge: IpCharge,
    now: u64,
    upgrade: Response,
) -> (Rc<Peer>, Response) {
    // Fresh per connection, so a replaced or resumed client cannot be fed events with the
    // key of one it had before (session/events.rs).
    let event_key = events_on.map(|_| EventKey::random(&core.rng));
    // Over TLS the 101 carries Strict-Transport-Security, as every answer there does.
    let upgrade = match stream.hsts() {
        Some(v) => upgrade.with_header("Strict-Transport-Security", v),
        None => upgrade,
    };
    let note = stream.take_access();
    let peer = Rc::new(
        Peer::new(
            core.next_conn_id(),
            role.into(),
            event_key,
            Socket::upgraded(stream),
            charge,
            now,
            core.config(),
        )
        .with_shapes(events_on.unwrap_or_default())
        .with_access(note),
    );
    let upgrade = if *peer.role == *core.config().bridge.agent_role {
        let key = core.rng.hex128();
        core.bridge.add_agent(peer.id, key.clone());
        upgrade.with_header(crate::bridge::KEY_HEADER, key)
    } else {
        upgrade
    };
    (peer, upgrade)
}

/// Seats `peer` in `slot` and counts it on this core (and, in cluster mode, where it came
/// from). Returns the peer it replaced, if any, and the other peer of the session, if any.
fn take_seat(
    core: &Core,
    session: &Rc<Session>,
    slot: usize,
    peer: &Rc<Peer>,
    origin: Option<crate::fleet::local::Origin>,
) -> (Option<Rc<Peer>>, Option<Rc<Peer>>) {
    let old = session.seat(slot, peer.clone());
    session.lingering_since_ms.set(None);
    core.registry.add_peer(peer.clone());
    core.publish_gauges();
    let other = session.other(peer.id);
    if let Some(origin) = origin {
        core.cluster_local
            .joined(core, peer.id, origin, other.as_ref().map(|o| o.id));
    }
    (old, other)
}

/// The bytes the peer gets first: the 101, then (with events) `connected` and what its resume
/// found. Asked to resume, what it missed is put in front of what is kept for it. On a gap, a
/// peer with events is told and delivery goes on from the first message still kept; a peer
/// without events cannot be told, so it is to be closed with 4003 (the `bool`) rather than
/// handed a stream with a hole it cannot see.
fn hello(
    core: &Core,
    session: &Session,
    peer: &Peer,
    target: &RelayTarget,
    paired: bool,
    upgrade: Response,
) -> (Vec<u8>, bool) {
    let events_on = target.events;
    let resumed = target
        .resume
        .map(|n| resume::on_join(core, session, peer, n, events_on));
    // The 101 and the `connected` event go out before anything the other peer forwards.
    let mut hello = upgrade.to_bytes();
    if events_on {
        let connected = events::connected(&session.id, &peer.role, paired, resumed.map(|r| r.next));
        let connected = match resumed {
            Some(r) => connected.with_acked(r.acked),
            None => connected,
        };
        let connected = match core.bridge.agent_key(peer.id) {
            Some(key) => connected.with_bridge_key(&key),
            None => connected,
        };
        hello.extend(peer.event_bytes(connected));
        match resumed {
            Some(r) if r.gap.is_some() => {
                hello.extend(peer.event_bytes(events::resume_gap(r.next)))
            }
            Some(r) if r.ahead => hello.extend(peer.event_bytes(events::resume_ahead(r.next))),
            _ => {}
        }
    }
    let refuse_resume = !events_on && resumed.is_some_and(|r| r.gap.is_some() || r.ahead);
    (hello, refuse_resume)
}

/// A peer just seated, with its session and the session's other peer.
struct Joined {
    session: Rc<Session>,
    peer: Rc<Peer>,
    other: Option<Rc<Peer>>,
    replaced: bool,
}

/// Writes the hello, tells the other peer (with events) that this one connected, then hands
/// this peer what was kept for it, or closes it when its resume left a gap it cannot be told
/// of; and starts the connection's own task.
async fn greet(
    core: Rc<Core>,
    joined: Joined,
    hello: Vec<u8>,
    refuse_resume: bool,
    accepted_at: Instant,
    now: u64,
    extra: Vec<u8>,
) {
    let Joined {
        session,
        peer,
        other,
        replaced,
    } = joined;
    let sent = peer.send_bytes(hello).await;
    core.latency
        .record(Latency::Handshake, accepted_at.elapsed());
    if let Some(o) = other.filter(|o| o.events()) {
        let event = events::peer_connected(&peer.role);
        monoio::spawn(async move {
            let _ = o.send_event(event).await;
        });
    }
    // Debug, not info: two synchronous writes to stderr per connection (this line and
    // "connection closed") cost a churn cycle about 5% of its CPU; the access log
    // (`log.access`) is the per-connection record.
    tracing::debug!(
        conn = peer.id,
        session = &*session.id,
        role = &*peer.role,
        replaced,
        "peer joined"
    );
    if sent.is_err() {
        peer.sock.abort();
    } else if core.registry.park.holds() {
        // Seated while a binary upgrade hands this worker's connections over, after they
        // were described: it would not cross, so it is told to come back (relay::handover).
        bump(&core.stats.handover_closed, 1);
        Box::pin(peer.close(CloseCode::SERVICE_RESTART, "server upgrading", now)).await;
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
    mut stream: ServerStream,
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
    let upgrade = match stream.hsts() {
        Some(v) => upgrade.with_header("Strict-Transport-Security", v),
        None => upgrade,
    };
    let note = stream.take_access();
    let peer = Rc::new(
        Peer::new(
            core.next_conn_id(),
            "echo".into(),
            None,
            Socket::upgraded(stream),
            charge,
            core.clock.now_ms(),
            core.config(),
        )
        .with_access(note),
    );
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
