//! The life of one upgraded connection: read, forward, answer control frames, leave.

use super::away::{self, Verdict};
use super::events;
use super::held;
use super::inbound::{Closing, DecodeLimits, Inbound};
use super::resume;
use crate::limits::Throttle;
use crate::runtime::Core;
use crate::session::{Peer, Session};
use crate::stats::{bump, Latency};
use crate::ws::{CloseCode, OpCode};
use std::rc::Rc;
use std::time::Instant;

/// Code reported when a connection ends without a close frame (RFC 6455 section 7.1.5).
const ABNORMAL: u16 = 1006;

/// Reads from `peer` until it leaves and forwards to the other peer of `session` (or back to
/// itself on the echo route, when `session` is `None`). `initial` holds bytes that arrived
/// with the upgrade request.
pub async fn run(
    core: Rc<Core>,
    peer: Rc<Peer>,
    session: Option<Rc<Session>>,
    mut initial: Vec<u8>,
) {
    let cfg = &core.config().limits;
    let limits = DecodeLimits {
        max_message_bytes: cfg.max_message_bytes as u64,
        max_frames_per_message: u32::try_from(cfg.max_frames_per_message).unwrap_or(u32::MAX),
    };
    // The buckets start on a fresh clock reading, or a stale tick would credit them with
    // time that never passed.
    let mut throttle = Throttle::configured(cfg)
        .then(|| core.clock.tick())
        .and_then(|now| Throttle::new(cfg, now));
    let mut inbound = Inbound::default();
    // Made when the connection first has messages to hold (relay::held): only an agent's
    // connection and one whose messages may reach an agent ever do.
    let mut hold = None;
    // After a read that filled the buffer more is likely waiting: read again at once rather
    // than paying for a readiness round trip.
    let mut hot = false;
    let mut violated = false;
    let end_code = loop {
        let mut chunk;
        if !initial.is_empty() {
            chunk = core.pool.take().await;
            chunk.lay_out(|data| inbound.prepare(data));
            chunk.extend_from_slice(&initial);
            initial = Vec::new();
        } else {
            if !hot && peer.sock.readable().await.is_err() {
                break ABNORMAL;
            }
            // Dropped for not reading (its socket is shut): it leaves without queueing for
            // a buffer, which may be what the pool is short of.
            if peer.dropped.get() {
                break ABNORMAL;
            }
            chunk = core.pool.take().await;
            chunk.lay_out(|data| inbound.prepare(data));
            match chunk.read_from(&peer.sock).await {
                Ok(n) if n > 0 => hot = chunk.is_full(),
                _ => {
                    core.pool.put(chunk);
                    break ABNORMAL;
                }
            }
        }
        let now = core.clock.now_ms();
        let read_at = core.latency.enabled().then(Instant::now);
        peer.last_recv_ms.set(now);
        let receiver = if peer.is_closing() {
            None
        } else {
            match &session {
                // A peer the relay is closing takes no more data (RFC 6455 section 5.5.1).
                Some(s) => s.other(peer.id).filter(|r| !r.is_closing()),
                None => Some(peer.clone()),
            }
        };
        if let (Some(s), Some(to)) = (&session, inbound.message_receiver()) {
            // The receiver of this message left before its end: with resume on for it, the
            // message goes on into the backlog instead of being lost.
            let gone = to != away::STORE && receiver.as_ref().map(|r| r.id) != Some(to);
            if gone && s.resume_on.get() && resume::carry(&core, s, &peer) {
                inbound.redirect(to, away::STORE);
            }
        }
        // While the receiver is away, or messages kept for it are still being delivered,
        // the frames go into the sender's backlog instead (docs/durability.md).
        let storing = session
            .as_ref()
            .is_some_and(|s| away::storing(&core, s, &peer, receiver.as_ref(), &inbound));
        let decode_for = if storing {
            Some(away::STORE)
        } else {
            receiver.as_ref().map(|r| r.id)
        };
        let mode = session
            .as_ref()
            .and_then(|_| held::mode(&core, &peer, receiver.as_ref(), storing));
        if mode.is_some() && hold.is_none() {
            hold = Some(held::new_hold(&core));
        }
        if let Some(h) = hold.as_mut() {
            h.mode = mode;
        }
        let decoded = chunk.decode(|data, segs| {
            inbound.decode_holding(data, decode_for, limits, segs, hold.as_deref_mut())
        });
        let out = match decoded {
            Ok(out) => out,
            Err(e) => {
                // A decoder bug: nothing of this read is written, and only this connection ends.
                tracing::error!(conn = peer.id, error = %e, "decoder chose bytes outside its read");
                core.pool.put(chunk);
                break ABNORMAL;
            }
        };
        let released = hold
            .as_mut()
            .map(|h| std::mem::take(&mut h.released))
            .unwrap_or_default();
        // Rare: copied out so the buffer can go to the receiver first.
        let pong = out.ping.map(|(a, b)| chunk.data()[a..b].to_vec());
        if out.data_seen {
            if let Some(s) = &session {
                s.last_activity_ms.set(now);
            }
        }
        let st = &core.stats;
        bump(
            &st.messages_received,
            (out.messages_forwarded + out.messages_dropped + out.answers) as u64,
        );
        bump(&st.bytes_received, out.payload_bytes);
        let mut verdict = Verdict::Go;
        match (&session, storing) {
            (Some(s), true) => {
                // Kept messages are counted as forwarded when they are delivered.
                let (v, completed) = if released.is_empty() {
                    away::store(&core, s, &peer, chunk.data(), chunk.segments())
                } else {
                    held::store(&core, s, &peer, chunk.data(), chunk.segments(), released)
                };
                core.pool.put(chunk);
                verdict = v;
                if let (Some(r), true) = (&receiver, completed > 0) {
                    away::deliver(&core, s, r);
                }
            }
            _ => {
                bump(&st.messages_forwarded, out.messages_forwarded as u64);
                bump(&st.bytes_forwarded, out.forwarded_bytes);
                match (&receiver, chunk.segments().is_empty()) {
                    (Some(r), _) if !released.is_empty() => {
                        let open = inbound.receiver_open() == Some(r.id);
                        let send =
                            held::send(&core, session.as_ref(), &peer, r, chunk, released, open);
                        core.pool.put(Box::pin(send).await);
                        core.latency.record_since(Latency::Relay, read_at);
                    }
                    (Some(r), false) => {
                        if let Some(s) = session.as_ref().filter(|s| s.resume_on.get()) {
                            resume::retain(&core, s, &peer, r, chunk.data(), chunk.segments());
                        }
                        let open = inbound.receiver_open() == Some(r.id);
                        let (_, chunk) = r.send_chunk(chunk.into_write(), open).await;
                        core.pool.put(chunk);
                        core.latency.record_since(Latency::Relay, read_at);
                    }
                    _ => core.pool.put(chunk),
                }
            }
        }
        if let Some(h) = hold.as_mut().filter(|_| out.answers > 0) {
            for answer in &h.answers {
                crate::bridge::answers::deliver(&core, peer.id, answer);
            }
            h.clear_done();
        }
        if out.messages_dropped > 0 {
            bump(
                &core.stats.messages_dropped_peer_absent,
                out.messages_dropped as u64,
            );
            if peer.events && !peer.is_closing() {
                let detail = format!(
                    "{} message(s) dropped: no peer connected",
                    out.messages_dropped
                );
                let _ = Box::pin(peer.send_event(events::error("peer_absent", &detail))).await;
            }
        }
        // The rare awaits below are boxed: their futures would otherwise size every
        // connection's task for its whole life.
        if out.pings > 1 {
            bump(&core.stats.pings_coalesced, u64::from(out.pings - 1));
        }
        // Answered before this connection is read again: at most one pong is ever pending.
        if let Some(payload) = pong {
            bump(&core.stats.pongs_sent, 1);
            let _ = Box::pin(peer.send_control(OpCode::Pong, &payload)).await;
        }
        if let (Some(id), Some(r)) = (out.aborted_receiver, &receiver) {
            if r.id == id {
                abort_receiver(&core, r.clone());
            }
        }
        match out.closing {
            Some(Closing::Peer(code)) => {
                if !peer.is_closing() {
                    Box::pin(peer.answer_close(code)).await;
                }
                break code;
            }
            Some(Closing::Violation(code, reason)) => {
                if out.forged_request {
                    bump(&core.stats.bridge_forged_requests, 1);
                } else {
                    bump(&core.stats.protocol_errors, 1);
                }
                if code == CloseCode::TOO_BIG {
                    bump(&core.stats.messages_dropped_over_limit, 1);
                }
                if code == CloseCode::POLICY && !out.forged_request {
                    bump(&core.stats.fragment_floods, 1);
                }
                Box::pin(peer.close(code, reason, now)).await;
                violated = true;
                break code.0;
            }
            None => {}
        }
        match (verdict, &session) {
            (Verdict::Pause, Some(s)) => {
                Box::pin(away::pause_while_full(&core, s, &peer)).await;
                hot = false;
            }
            (Verdict::Close, _) => Box::pin(away::close_full(&core, &peer, now)).await,
            _ => {}
        }
        if let Some(t) = throttle.as_mut() {
            let messages = out.messages_forwarded + out.messages_dropped;
            if t.charge(messages, out.payload_bytes, now) > 0 {
                Box::pin(pause(&core, &peer, t)).await;
                hot = false;
            }
        }
    };
    leave(&core, &peer, session.as_ref(), &inbound, end_code);
    if violated {
        // Out of its session already (its seat is free for a reconnect); only the socket
        // lingers, for at most the close timeout.
        let linger = core.config().session.close_timeout;
        let _ = Box::pin(monoio::time::timeout(linger, drain_until_closed(&peer))).await;
    }
    peer.sock.abort();
}

/// A client closed for a violation may still be sending. Closing the socket with its data
/// unread would reset the connection, and the client would lose the close frame (and the
/// code saying why). So: FIN after the close frame, then read and discard until the client
/// closes too (the caller bounds this by `session.close_timeout`).
async fn drain_until_closed(peer: &Peer) {
    peer.sock.shutdown_write();
    let mut buf = vec![0u8; 4096];
    loop {
        let (r, b) = peer.sock.read(buf).await;
        buf = b;
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Waits off a connection's rate debt without reading it: its data stays in its socket and
/// the client, and nothing is dropped.
async fn pause(core: &Core, peer: &Peer, throttle: &mut Throttle) {
    // The coarse clock may be a tick behind: the wait is computed on a fresh reading.
    let now = core.clock.tick();
    let wait = throttle.charge(0, 0, now);
    if wait == 0 {
        return;
    }
    bump(&core.stats.rate_limit_pauses, 1);
    bump(&core.stats.rate_limit_pause_ms, wait);
    // Not silence: the keepalive tick must not take the pause for a dead peer.
    peer.last_recv_ms.set(now + wait);
    monoio::time::sleep(std::time::Duration::from_millis(wait)).await;
    core.clock.tick();
}

/// A receiver that holds part of a message that will never be finished is closed: it cannot
/// be handed the truncated message as if it were whole.
fn abort_receiver(core: &Rc<Core>, r: Rc<Peer>) {
    let now = core.clock.now_ms();
    monoio::spawn(async move {
        r.close(CloseCode::PEER_ABORTED, "peer left mid-message", now)
            .await
    });
}

fn leave(
    core: &Rc<Core>,
    peer: &Rc<Peer>,
    session: Option<&Rc<Session>>,
    inbound: &Inbound,
    end_code: u16,
) {
    core.registry.remove_peer(peer.id);
    core.cluster_local.left(peer.id);
    // Its client's count of open connections, given back on the client's home core.
    drop(peer.charge.take());
    let failed = core.bridge.agent_gone(peer.id);
    bump(&core.stats.bridge_agent_gone, failed as u64);
    let code = peer.close_code.get().unwrap_or(end_code);
    core.stats.closed(code);
    if let Some(s) = session {
        if let Some(open_to) = inbound.receiver_open() {
            if let Some(r) = s.other(peer.id).filter(|r| r.id == open_to) {
                abort_receiver(core, r);
            }
        }
        if inbound.message_receiver() == Some(away::STORE) {
            away::abandon_open(core, s, peer);
        }
        if s.leave(peer.id) {
            if let Some(other) = s.other(peer.id).filter(|o| o.events) {
                let event = events::peer_disconnected(&peer.role, code);
                monoio::spawn(async move {
                    let _ = other.send_event(event).await;
                });
            }
        }
        away::release(core, s, core.clock.now_ms());
    }
    core.publish_gauges();
    tracing::info!(
        conn = peer.id,
        role = &*peer.role,
        session = session.map(|s| &*s.id),
        code,
        "connection closed"
    );
}
