//! Live connections crossing to a new process on a binary upgrade (SIGUSR2, issue 25,
//! docs/upgrade.md). The server's upgrade (`server::upgrade`) moves the bytes and descriptors
//! between the processes; this module decides what a worker's connections and sessions become
//! on the way: [`export`] on each worker of the old process, [`adopt`] on each worker of the
//! new one before it reports ready, [`settle`] on the old one once the outcome is known.
//!
//! A connection crosses at rest: its task waits for readiness with nothing read and not yet
//! processed, no frame or message half read (`relay::conn`), and no write to it in progress
//! (the export holds its write gate). So nothing of a frame is ever carried half: what the
//! client sent after that point is still in the socket, and the new process reads it. What
//! cannot cross is closed with 1012 (Service Restart) so its client reconnects at once: links
//! carried to or from another node of a cluster (their other end is that node's), any
//! connection not at rest within `shutdown_grace`, and a TLS connection whose record state
//! cannot be carried (part of a record read, or a suite the record layer lacks). A TLS
//! connection at rest carries its traffic keys and sequence numbers (`TlsSession::carry`)
//! and runs on the record layer of `tls::record` in the new process. A bridge agent crosses
//! with its key; the requests waiting for its answers get 503 (docs/upgrade.md, "Cluster
//! mode" and "Bridge agents").

mod wire;

use crate::context::Core;
use crate::fleet::local::Origin;
use crate::limits::IpCharge;
use crate::runtime::socket::{Lent, Socket};
use crate::runtime::tls::TlsSession;
use crate::session::events::durable::Shapes;
use crate::session::events::EventKey;
use crate::session::park::Resolved;
use crate::session::persist;
use crate::session::{Flag, Peer, Session};
use crate::stats::bump;
use crate::tls::record::Carried;
use crate::ws::CloseCode;
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};
use wire::{ConnState, LiveSession, Share};

pub use wire::VERSION;

/// One worker's share of a handover as the old process sends it: an encoded description
/// (versioned by this module) and the descriptors it names, by index: each crossing
/// connection's own, lent, not duplicated.
#[derive(Debug, Default)]
pub struct Export {
    pub bytes: Vec<u8>,
    pub fds: Vec<Lent>,
}

/// One worker's share as the new process receives it: the descriptors are its own now
/// (SCM_RIGHTS put a duplicate of each into this process).
#[derive(Debug, Default)]
pub struct Handed {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// What the old process does with its connections once the new one answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new process confirmed that it holds everything: let go without closing anything
    /// a client could see (no close frame, no shutdown(2)); the process exits next.
    Released,
    /// The upgrade failed: carry on serving as if nothing happened.
    Resumed,
}

/// Why a worker could not take its share.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("handover format: {0}")]
    Format(String),
    #[error("a handed-over descriptor: {0}")]
    Descriptor(std::io::Error),
}

/// How often the export looks whether every connection came to rest.
const LOOK_EVERY: Duration = Duration::from_millis(2);

/// Called on each worker of the old process once its listeners stopped accepting: parks its
/// connections (nothing more read or written until [`settle`]) and describes them.
///
/// Every step is linear in the worker's connections (a busy worker holds thousands, most of
/// them idle, and every message of the few busy ones waits for this): one pass over the
/// sessions finds each connection's seat, sets find what stays or crosses.
pub async fn export(core: &Rc<Core>) -> Export {
    let started = Instant::now();
    core.registry.park.request();
    let deadline = started + core.config().shutdown_grace;
    let staying = close_those_that_stay(core);
    while !all_at_rest(core, &staying) && Instant::now() < deadline {
        monoio::time::sleep(LOOK_EVERY).await;
    }
    let at_rest_after = started.elapsed();
    let peers = core.registry.peers();
    let sessions = core.registry.sessions();
    let seats = seats_of(&sessions);
    let mut crossing: Vec<(Rc<Peer>, Option<Carried>)> = Vec::with_capacity(peers.len());
    let mut crossing_ids = HashSet::with_capacity(peers.len());
    for p in &peers {
        if staying.contains(&p.id) || !at_rest(p) || !describable(&seats, p) {
            continue;
        }
        // Nearly every gate is free (no write in flight): taken at once, no timer.
        if p.try_close_gate() {
            if let Some(tls) = gated(core, p) {
                crossing_ids.insert(p.id);
                crossing.push((p.clone(), tls));
            }
        }
    }
    for p in &peers {
        if staying.contains(&p.id)
            || crossing_ids.contains(&p.id)
            || !at_rest(p)
            || !describable(&seats, p)
        {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // A write still in flight finishes first; one that cannot within the grace (a
        // client that does not read) keeps its connection here.
        if monoio::time::timeout(left, p.close_gate()).await.is_ok() {
            if let Some(tls) = gated(core, p) {
                crossing_ids.insert(p.id);
                crossing.push((p.clone(), tls));
            }
        }
    }
    let gated_after = started.elapsed();
    // A seat that changed while a write finished: described as it is now, or not at all.
    let sessions = core.registry.sessions();
    let seats = seats_of(&sessions);
    let (stays, goes): (Vec<_>, Vec<_>) = crossing
        .into_iter()
        .partition(|(p, _)| describable(&seats, p));
    crossing = stays;
    if !goes.is_empty() {
        core.registry
            .park
            .gated
            .borrow_mut()
            .retain(|g| !goes.iter().any(|(p, _)| p.id == g.id));
        goes.iter().for_each(|(p, _)| p.open_gate());
    }
    crossing_ids = crossing.iter().map(|(p, _)| p.id).collect();
    // Whatever did not come to rest in time, joined meanwhile, or cannot be described is
    // told to come back: nothing is left out silently.
    for p in core.registry.peers() {
        if !crossing_ids.contains(&p.id) && !staying.contains(&p.id) {
            close_restart(core, p);
        }
    }
    let connections = crossing.len();
    let share = describe(core, crossing, &sessions, &seats);
    tracing::debug!(
        worker = core.index,
        connections,
        fds = share.fds.len(),
        bytes = share.bytes.len(),
        at_rest_ms = ms(at_rest_after),
        gated_ms = ms(gated_after - at_rest_after),
        described_ms = ms(started.elapsed() - gated_after),
        "handover: exported"
    );
    share
}

/// Called with `p`'s write gate held (no write in flight, none read): parks it and takes a
/// TLS connection's keys. `None`: its TLS state cannot be carried, so it does not cross (it
/// gets 1012 with the others left behind).
fn gated(core: &Core, p: &Rc<Peer>) -> Option<Option<Carried>> {
    let tls = match p.sock.tls_carry() {
        None => None,
        Some(Ok(carried)) => Some(carried),
        Some(Err(why)) => {
            tracing::debug!(conn = p.id, ?why, "handover: TLS state not carried");
            bump(&core.stats.handover_tls_closed, 1);
            p.open_gate();
            return None;
        }
    };
    core.registry.park.gated.borrow_mut().push(p.clone());
    Some(tls)
}

/// A duration in milliseconds with a fraction, for the phases' log lines.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Closes with 1012 every connection that cannot cross (module doc); returns their ids. A
/// bridged request waiting for an agent's answer is answered 503 with `Retry-After` (the
/// agent itself crosses).
fn close_those_that_stay(core: &Rc<Core>) -> HashSet<u64> {
    // Links carried to other nodes end with 1012: their clients come back to the new
    // process, which carries them again (the session's owner has not changed).
    core.cluster_local.end_all(CloseCode::SERVICE_RESTART);
    let mut staying = HashSet::new();
    for p in core.registry.peers() {
        refuse_bridged(core, &p);
        if carried_in(core, &p) {
            staying.insert(p.id);
            close_restart(core, p);
        }
    }
    staying
}

/// A peer carried here from another node over the node-to-node link: closed with 1012 (the
/// carrying node passes the close to its client, which reconnects there and is carried to
/// the new process). Its link's far end is that node's; the share does not describe it.
fn carried_in(core: &Core, p: &Peer) -> bool {
    let origins = core.cluster_local.origins.borrow();
    origins.get(&p.id).is_some_and(|o| o.via.is_some())
}

/// A bridged request waiting for an agent's answer is answered 503 `server_upgrading` with
/// `Retry-After` (the agent itself crosses; its answer would reach a process that no longer
/// waits for it). Requests that come while the core is parked get the same answer
/// (`bridge::serve`).
fn refuse_bridged(core: &Core, p: &Peer) {
    if *p.role == *core.config().bridge.agent_role {
        let n = core.bridge.agent_upgrading(p.id);
        bump(&core.stats.handover_bridged_refused, n as u64);
    }
}

fn close_restart(core: &Rc<Core>, p: Rc<Peer>) {
    if p.is_closing() {
        return;
    }
    bump(&core.stats.handover_closed, 1);
    let now = core.clock.now_ms();
    monoio::spawn(async move {
        p.close(CloseCode::SERVICE_RESTART, "server upgrading", now)
            .await
    });
}

/// A connection that may cross as it is: parked or waiting for readiness at rest, seated
/// (or on the echo route), not being closed or dropped.
fn at_rest(p: &Peer) -> bool {
    p.flags.get(Flag::QUIET)
        && !p.is_closing()
        && !p.flags.get(Flag::DROPPED)
        && !p.flags.get(Flag::UNSEATED)
        && !p.flags.get(Flag::TORN)
}

/// A connection the share can describe: seated in a session here, or on the echo route.
fn describable(seats: &Seats<'_>, p: &Peer) -> bool {
    &*p.role == "echo" || seats.contains_key(&p.id)
}

/// Each seated connection's session and slot, found in one pass over the sessions.
type Seats<'a> = HashMap<u64, (&'a Rc<Session>, usize)>;

fn seats_of(sessions: &[Rc<Session>]) -> Seats<'_> {
    let mut seats = HashMap::with_capacity(2 * sessions.len());
    for s in sessions {
        for (slot, id) in s.peer_ids().into_iter().enumerate() {
            if let Some(id) = id {
                seats.insert(id, (s, slot));
            }
        }
    }
    seats
}

fn all_at_rest(core: &Core, staying: &HashSet<u64>) -> bool {
    let delivering = core.registry.sessions().iter().any(|s| s.delivering.get());
    !delivering
        && core
            .registry
            .peers()
            .iter()
            .all(|p| staying.contains(&p.id) || at_rest(p) || p.is_closing())
}

/// The share: every session that keeps something or has a connection crossing, and the
/// crossing connections with each one's own descriptor, lent (`runtime::socket::Lent`). Every
/// one of `crossing` is described (`export` keeps only those [`describable`]).
fn describe(
    core: &Core,
    crossing: Vec<(Rc<Peer>, Option<Carried>)>,
    sessions: &[Rc<Session>],
    seats: &Seats<'_>,
) -> Export {
    let mut share = Share::default();
    share.conns.reserve(crossing.len());
    let mut index: HashMap<&str, u32> = HashMap::with_capacity(sessions.len());
    let mut fds = Vec::with_capacity(crossing.len());
    for (p, tls) in crossing {
        let p = &p;
        let seat = seats.get(&p.id).copied();
        // None: the echo route (`export` sent every other unseated connection 1012).
        let session = seat.map(|(s, _)| {
            *index.entry(&s.id).or_insert_with(|| {
                share.sessions.push(live_session(s));
                share.sessions.len() as u32 - 1
            })
        });
        // Lent, not duplicated: valid until `settle`, which keeps the peer until then.
        let fd = Lent::of(&p.sock);
        share.conns.push(ConnState {
            fd: fds.len() as u32,
            session,
            slot: seat.map_or(0, |(_, slot)| slot as u8),
            role: p.role.to_string(),
            counts: p.flags.get(Flag::COUNTS),
            events: p
                .event_key_bytes()
                .map(|k| (k, p.shapes() == Shapes::Durable)),
            ip: p.client_ip().unwrap_or([127, 0, 0, 1].into()),
            tls,
            bridge_key: core.bridge.agent_key(p.id).map(|k| k.to_string()),
        });
        // A bridged request that registered while the export waited is answered now: the
        // agent's write gate is held, so it was not sent.
        refuse_bridged(core, p);
        fds.push(fd);
    }
    // Sessions without a connection here that keep messages or replay windows go too.
    for s in sessions {
        if !index.contains_key(&*s.id) && keeps_something(s) {
            share.sessions.push(live_session(s));
        }
    }
    // This worker's addresses' connect-rate buckets: its share goes to the new worker of the
    // same index, whose addresses they are (same worker count).
    share.limits = crate::limits::saved::SavedLimits {
        taken_unix_ms: unix_ms(),
        buckets: core.ip_limits.export(core.clock.now_ms()),
    };
    Export {
        bytes: wire::encode(&share),
        fds,
    }
}

/// Wall-clock milliseconds: the buckets' time in transit is between two processes.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn keeps_something(s: &Session) -> bool {
    s.kept().2 > 0 || !s.replays.borrow().is_empty()
}

/// A session's state as the state file keeps it (`persist::snapshot`'s rules: a backlog's
/// replayed front is in its replay window already), plus the acks its connections were told.
fn live_session(s: &Session) -> LiveSession {
    LiveSession {
        state: persist::state_of(s),
        told: s
            .replays
            .borrow()
            .iter()
            .map(|r| (r.role.to_string(), r.told))
            .collect(),
    }
}

/// Called on each worker of the old process with the upgrade's outcome.
pub async fn settle(core: &Rc<Core>, outcome: Outcome) {
    let gated = std::mem::take(&mut *core.registry.park.gated.borrow_mut());
    match outcome {
        Outcome::Released => {
            // The new process holds every connection that crossed: this one forgets them
            // all, without a close frame or shutdown(2). Their parked tasks end as they
            // wake, and each descriptor here is closed as its last reference goes.
            core.registry.park.resolve(Resolved::Released);
            core.registry.forget_all();
            core.publish_gauges();
        }
        Outcome::Resumed => {
            // Parked, they were not read: the keepalive must not take that for silence.
            let now = core.clock.tick();
            for p in &gated {
                p.last_recv_ms.set(now);
                p.open_gate();
            }
            core.registry.park.resolve(Resolved::Resumed);
        }
    }
}

/// Called on each worker of the new process, before it reports ready, with the share the old
/// process's worker of the same index exported. Returns how many connections it adopted.
///
/// Everything is checked before anything is adopted: a share that does not decode, or a
/// descriptor that is not a TCP socket, adopts nothing (the old process serves on).
pub fn adopt(core: &Rc<Core>, export: Handed) -> Result<usize, HandoverError> {
    if export.bytes.is_empty() && export.fds.is_empty() {
        return Ok(0);
    }
    let mut bytes = export.bytes;
    let decoded = wire::decode(&bytes, export.fds.len());
    // The share may hold TLS traffic keys: not left in freed memory.
    zeroize::Zeroize::zeroize(&mut bytes);
    let mut share = decoded.map_err(|e| HandoverError::Format(e.to_string()))?;
    let mut streams = Vec::with_capacity(export.fds.len());
    for fd in export.fds {
        streams.push(Some(stream_of(fd).map_err(HandoverError::Descriptor)?));
    }
    let mut sessions_tls = Vec::with_capacity(share.conns.len());
    for c in &mut share.conns {
        let tls = match c.tls.take() {
            Some(carried) => Some(
                TlsSession::adopt(&carried.0)
                    .map_err(|e| HandoverError::Format(format!("TLS state: {e}")))?,
            ),
            None => None,
        };
        sessions_tls.push(tls);
    }
    let now = core.clock.tick();
    // Spent connect-rate budgets stay spent: refilled only for the time they were in transit.
    let rested = unix_ms().saturating_sub(share.limits.taken_unix_ms);
    let kept = core.ip_limits.import(&share.limits.buckets, rested, now);
    bump(&core.stats.handover_ip_buckets, kept as u64);
    let sessions = restore_sessions(core, share.sessions, now);
    let mut adopted = 0;
    for (c, tls) in share.conns.into_iter().zip(sessions_tls) {
        let Some(stream) = streams.get_mut(c.fd as usize).and_then(Option::take) else {
            continue;
        };
        let session = c.session.and_then(|i| sessions.get(i as usize)).cloned();
        if tls.is_some() {
            bump(&core.stats.handover_tls_adopted, 1);
        }
        seat(core, c, stream, tls, session, now);
        adopted += 1;
    }
    for s in &sessions {
        for p in s.peers() {
            if s.kept_for(&p.role) > 0 {
                super::away::deliver(core, s, &p);
            }
        }
    }
    core.publish_gauges();
    bump(&core.stats.handover_adopted, adopted as u64);
    Ok(adopted)
}

fn stream_of(fd: OwnedFd) -> std::io::Result<monoio::net::TcpStream> {
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    monoio::net::TcpStream::from_std(std)
}

/// Puts the share's sessions into the registry as they were: kept messages and windows
/// within this process's limits (`persist::restore`), and the acks told.
fn restore_sessions(core: &Core, sessions: Vec<LiveSession>, now: u64) -> Vec<Rc<Session>> {
    let limits = persist::RestoreLimits::of(&core.config().session);
    let ids: Vec<String> = sessions.iter().map(|s| s.state.id.clone()).collect();
    let told: Vec<Vec<(String, u64)>> = sessions.iter().map(|s| s.told.clone()).collect();
    let states = sessions.into_iter().map(|s| s.state).collect();
    let done = persist::restore(&core.registry, states, now, limits);
    bump(
        &core.stats.state_messages_not_loaded,
        done.messages_left_out,
    );
    ids.iter()
        .zip(told)
        .map(|(id, told)| {
            let s = core.registry.session(id, now);
            for r in s.replays.borrow_mut().iter_mut() {
                if let Some((_, t)) = told.iter().find(|(role, _)| *role == *r.role) {
                    r.told = (*t).min(r.accepted);
                }
            }
            s
        })
        .collect()
}

/// Seats one adopted connection and starts its task. Nothing is sent to its client: to it,
/// the relay never went away.
fn seat(
    core: &Rc<Core>,
    c: ConnState,
    stream: monoio::net::TcpStream,
    tls: Option<Box<TlsSession>>,
    session: Option<Rc<Session>>,
    now: u64,
) {
    let ip = c.ip;
    // Counted again on this core when it is the address's home; elsewhere the count would
    // take a message to the home core, and the connection goes uncounted (docs/upgrade.md).
    let charge = match crate::limits::home::home_core(ip, core.shared.workers()) {
        home if home == core.index => core
            .ip_limits
            .open(ip, now)
            .unwrap_or_else(|_| IpCharge::uncounted(ip)),
        _ => IpCharge::uncounted(ip),
    };
    let (key, shapes) = match c.events {
        Some((key, durable)) => (
            Some(EventKey::from_bytes(key)),
            if durable {
                Shapes::Durable
            } else {
                Shapes::Relay
            },
        ),
        None => (None, Shapes::Relay),
    };
    let peer = Rc::new(
        Peer::new(
            core.next_conn_id(),
            c.role.into(),
            key,
            match tls {
                Some(tls) => Socket::with_tls(stream, tls),
                None => Socket::new(stream),
            },
            charge,
            now,
            core.config(),
        )
        .with_shapes(shapes),
    );
    peer.flags.set(Flag::COUNTS, c.counts);
    if let Some(key) = c.bridge_key {
        // The agent checks this key on every request the relay sends it: it keeps the one it
        // was given at its upgrade.
        core.bridge.add_agent(peer.id, key);
    }
    if let Some(view) = core.shared.cluster.as_ref() {
        // Seated here by a client of this node (peers carried in from another node do not
        // cross), so a node leaving the fleet never ends it.
        let origin = Origin {
            via: None,
            region: view.identity.region.as_str().into(),
        };
        core.cluster_local
            .origins
            .borrow_mut()
            .insert(peer.id, origin);
    }
    if let Some(s) = &session {
        s.seat(usize::from(c.slot), peer.clone());
        s.lingering_since_ms.set(None);
        s.last_activity_ms.set(now);
    }
    core.registry.add_peer(peer.clone());
    monoio::spawn(super::conn::run(core.clone(), peer, session, Vec::new()));
}

#[cfg(test)]
mod tests;
