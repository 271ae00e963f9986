//! Messages for a peer that is away: kept, delivered when a peer of another role joins,
//! bounded, and freed with their session after `session.linger` (docs/durability.md). The
//! bytes live in `session::Backlog`; this is the policy and the I/O around them.
//!
//! While its receiver is here and nothing is kept for it, a sender's reads go straight to the
//! receiver as before (zero-copy). Only while the receiver is away, or while kept messages
//! are still being written to it, are the sender's frames copied into the backlog, so that
//! nothing newer can overtake them.

use super::inbound::{Inbound, Segment};
use crate::config::Overflow;
use crate::context::Core;
use crate::session::events;
use crate::session::events::durable;
use crate::session::{Backlog, Flag, Peer, Session};
use crate::stats::bump;
use crate::ws::CloseCode;
use std::rc::Rc;
use std::time::Duration;

/// The receiver id the decoder is given when the frames it writes go into the backlog: no
/// connection has it (connection ids are a counter shifted left by ten bits).
pub const STORE: u64 = u64::MAX;
/// At most this much is written to a joining peer at a time, as whole messages.
const DELIVERY_BATCH: usize = 256 << 10;
/// How often a sender paused on a full buffer looks again for room.
const FULL_POLL: Duration = Duration::from_millis(20);
/// A session keeps a backlog per sending role; a session has two peers at once, so two.
const MAX_BACKLOGS: usize = 2;

/// Whether this read of `sender` goes into its backlog rather than to `receiver`.
pub fn storing(
    core: &Core,
    session: &Session,
    sender: &Peer,
    receiver: Option<&Rc<Peer>>,
    inbound: &Inbound,
) -> bool {
    core.with_config(|c| c.session.buffer_bytes > 0)
        && !sender.is_closing()
        && (receiver.is_none()
            || session.keeps_from(&sender.role)
            || inbound.message_receiver() == Some(STORE))
}

/// What the sender's connection does after a read was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Stop reading until there is room (`session.overflow = backpressure`, or the core's
    /// budget is spent).
    Pause,
    /// `session.overflow = close`: close the sender with 4005.
    Close,
}

/// Copies the frames the decoder wrote (`segs` of `data`) into the sender's backlog and
/// applies the limits. Returns the verdict and how many messages this completed.
pub fn store(
    core: &Core,
    session: &Session,
    sender: &Rc<Peer>,
    data: &[u8],
    segs: &[Segment],
) -> (Verdict, usize) {
    let cfg = &core.config().session;
    let mut backlogs = session.backlogs.borrow_mut();
    let i = match backlogs.iter().position(|b| *b.from == *sender.role) {
        Some(i) => i,
        None if backlogs.len() < MAX_BACKLOGS => {
            backlogs.push(Backlog::new(&sender.role));
            backlogs.len() - 1
        }
        None => {
            // Two other roles already have messages waiting: there is no third seat for
            // their receiver anyway. Rare enough to count rather than keep.
            let whole = segs.iter().filter(|&&(a, _)| data[a] & 0x80 != 0).count();
            bump(&core.stats.messages_dropped_peer_absent, whole as u64);
            return (Verdict::Go, 0);
        }
    };
    let b = &mut backlogs[i];
    if b.has_open() && b.open_by != Some(sender.id) {
        // Left unfinished by an earlier connection of this role (it was replaced).
        b.abandon_open();
    }
    let mut completed = 0;
    for &(a, e) in segs {
        completed += usize::from(b.push_frame(&data[a..e]));
    }
    b.open_by = b.has_open().then_some(sender.id);
    bump(&core.stats.messages_buffered, completed as u64);
    let over =
        |b: &Backlog| b.whole_bytes() > cfg.buffer_bytes || b.messages() > cfg.buffer_messages;
    let mut verdict = Verdict::Go;
    if over(b) {
        match cfg.overflow {
            Overflow::Backpressure => verdict = Verdict::Pause,
            Overflow::Close => verdict = Verdict::Close,
            Overflow::DropOldest => {
                let mut dropped = 0;
                while over(b) && b.drop_oldest().is_some() {
                    dropped += 1;
                }
                bump(&core.stats.buffer_overflow_dropped, dropped);
                if dropped > 0 && sender.events() && !sender.is_closing() {
                    let detail = format!(
                        "{dropped} kept message(s) dropped to make room (session.overflow = drop_oldest)"
                    );
                    announce(sender, events::error("buffer_overflow", &detail));
                }
            }
        }
    }
    let budget = &core.registry.budget;
    budget.settle(b);
    if verdict == Verdict::Go && budget.is_spent(cfg.core_buffer_budget) {
        verdict = Verdict::Pause;
    }
    (verdict, completed)
}

/// A sender on `/desktop` or `/mobile` sent while its peer is away (`kept`: the message
/// waits for it, else it was dropped): told so in the Durable Object relay's words, at most
/// once a second (a timestamp on the peer, no map). Returns whether it was told.
pub fn tell_away(core: &Core, sender: &Rc<Peer>, kept: bool) -> bool {
    if !sender.away_notice_due(core.clock.now_ms()) {
        return false;
    }
    bump(&core.stats.peer_away_notices, 1);
    announce(sender, durable::peer_away(&sender.role, kept));
    true
}

/// Sent from a task of its own: the forwarding path does not wait for an event.
fn announce(peer: &Rc<Peer>, event: events::Event) {
    let p = peer.clone();
    monoio::spawn(async move {
        let _ = p.send_event(event).await;
    });
}

/// Whether the sender must still wait: its whole kept messages are over its limits, or it
/// keeps any while the core's budget is spent. Only whole messages count: the sender is read
/// to finish one still arriving (else neither could ever move), and a sender whose messages
/// were delivered reads again whatever other sessions keep.
fn still_full(core: &Core, session: &Session, sender: &Peer) -> bool {
    let cfg = &core.config().session;
    let budget_spent = core.registry.budget.is_spent(cfg.core_buffer_budget);
    session.backlogs.borrow().iter().any(|b| {
        *b.from == *sender.role
            && (b.whole_bytes() > cfg.buffer_bytes
                || b.messages() > cfg.buffer_messages
                || (budget_spent && b.messages() > 0))
    })
}

/// Waits, without reading the sender, until its buffer has room: nothing it sends is lost,
/// TCP slows it down. Ends early when the sender is being closed or the server stops.
pub async fn pause_while_full(core: &Core, session: &Session, sender: &Peer) {
    bump(&core.stats.buffer_full_pauses, 1);
    while still_full(core, session, sender) && !sender.is_closing() && !core.shutting_down() {
        // Not silence: the keepalive tick must not take the pause for a dead peer.
        sender.last_recv_ms.set(core.clock.now_ms());
        monoio::time::sleep(FULL_POLL).await;
    }
}

/// The sender's reads went into `STORE` for a message it will never finish (it left, or
/// broke the protocol): its frames are dropped, so no receiver gets part of a message.
pub fn abandon_open(core: &Core, session: &Session, sender: &Peer) {
    for b in session.backlogs.borrow_mut().iter_mut() {
        if b.open_by == Some(sender.id) {
            b.abandon_open();
            core.registry.budget.settle(b);
        }
    }
}

/// Starts writing what is kept for `receiver`, unless a delivery is already running. Called
/// when a peer joins, and when a sender's message completes in the backlog while its
/// receiver is here.
pub fn deliver(core: &Rc<Core>, session: &Rc<Session>, receiver: &Rc<Peer>) {
    if session.delivering.get() || session.kept_for(&receiver.role) == 0 {
        return;
    }
    session.delivering.set(true);
    let (core, session, receiver) = (core.clone(), session.clone(), receiver.clone());
    monoio::spawn(async move {
        deliver_all(&core, &session, &receiver).await;
        session.delivering.set(false);
        core.registry
            .budget
            .drop_empty(&mut session.backlogs.borrow_mut());
        // A message may have been completed while the last batch was being written, or
        // another connection may have taken this one's place meanwhile.
        for p in session.peers() {
            if session.kept_for(&p.role) > 0 && seated(&session, &p) {
                deliver(&core, &session, &p);
            }
        }
    });
}

/// Still the receiver to deliver to: seated, and not closing or about to be closed for
/// holding part of a torn message (`Flag::TORN`: whole messages must not follow that part).
fn seated(session: &Session, peer: &Peer) -> bool {
    !peer.is_closing()
        && !peer.flags.get(Flag::TORN)
        && session.peers().iter().any(|p| p.id == peer.id)
}

async fn deliver_all(core: &Core, session: &Session, receiver: &Peer) {
    loop {
        if !seated(session, receiver) {
            return;
        }
        // Copied out, so the backlog can take the sender's next frames while this is written.
        let batch = session
            .backlogs
            .borrow()
            .iter()
            .find(|b| *b.from != *receiver.role && b.messages() > 0)
            .map(|b| {
                let (bytes, count) = b.front(DELIVERY_BATCH);
                let mut ends = Vec::with_capacity(count);
                let mut end = 0;
                for m in b.messages_iter().take(count) {
                    end += m.len();
                    ends.push(end);
                }
                let replayed = b.replayed.min(count);
                let mark = (b.removed(), b.generation);
                (b.from.clone(), bytes.to_vec(), ends, mark, replayed)
            });
        let Some((from, bytes, ends, (removed_before, generation), replayed)) = batch else {
            return;
        };
        let count = ends.len();
        let len = bytes.len();
        let kept = session.resume_on.get().then(|| bytes.clone());
        if receiver.send_bytes(bytes).await.is_err() {
            // Left as they are: a receiver that comes back gets them again.
            return;
        }
        if !seated(session, receiver) {
            // Gone while the write was on its way: what it got is moot, and a connection that
            // resumed in its place may have had the front rebuilt for it.
            return;
        }
        let mut backlogs = session.backlogs.borrow_mut();
        let Some(b) = backlogs.iter_mut().find(|b| b.from == from) else {
            return;
        };
        if b.generation != generation {
            return;
        }
        // Messages dropped from the front meanwhile (drop_oldest) were among those written.
        let gone = (b.removed() - removed_before) as usize;
        b.consume(count.saturating_sub(gone));
        core.registry.budget.settle(b);
        drop(backlogs);
        if let Some(batch) = kept {
            super::resume::retain_delivered(
                core, session, receiver, &from, &batch, &ends, replayed,
            );
        }
        receiver.tally_out(count as u64, len as u64);
        bump(&core.stats.messages_delivered_from_buffer, count as u64);
        bump(&core.stats.messages_forwarded, count as u64);
        bump(&core.stats.bytes_forwarded, len as u64);
    }
}

/// The last peer left: a session that keeps messages lingers for `session.linger`; one
/// that keeps nothing is freed at once.
pub fn release(core: &Core, session: &Session, now: u64) {
    if !session.is_empty() {
        return;
    }
    let (bytes, _, _) = session.kept();
    // A session whose peers asked for resume lingers too: its numbering and replay windows
    // are what a reconnecting client resumes from.
    let keeps = bytes > 0 || session.resume_on.get();
    if keeps && !core.config().session.linger.is_zero() {
        if session.lingering_since_ms.get().is_none() {
            session.lingering_since_ms.set(Some(now));
        }
        return;
    }
    free(core, session);
}

/// Frees a session and whatever it keeps.
fn free(core: &Core, session: &Session) {
    let (_, _, messages) = session.kept();
    let reg = &core.registry;
    for b in session.backlogs.borrow_mut().drain(..) {
        reg.budget.release(b);
    }
    for r in session.replays.borrow_mut().drain(..) {
        reg.budget.release(r.ring);
    }
    if messages > 0 {
        bump(&core.stats.messages_dropped_linger, messages as u64);
    }
    if reg.release_if_empty(session) {
        crate::cluster::ask::release(core, &session.id);
    }
}

/// Frees sessions whose linger is over (called by the keepalive tick).
pub fn expire(core: &Core, now: u64) {
    let linger_ms = core.config().session.linger.as_millis() as u64;
    for s in core.registry.sessions() {
        if let Some(since) = s.lingering_since_ms.get() {
            if s.is_empty() && now.saturating_sub(since) >= linger_ms {
                bump(&core.stats.sessions_linger_expired, 1);
                free(core, &s);
            }
        }
    }
}

/// Closes a sender whose buffer is full under `session.overflow = close`.
pub async fn close_full(core: &Core, sender: &Peer, now: u64) {
    bump(&core.stats.buffer_overflow_closed, 1);
    if sender.events() {
        let _ = sender
            .send_event(events::error(
                "buffer_overflow",
                "the buffer for the absent peer is full (session.overflow = close); what was kept will be delivered",
            ))
            .await;
    }
    sender
        .close(
            CloseCode::BUFFER_FULL,
            "buffer for the absent peer is full",
            now,
        )
        .await;
}
