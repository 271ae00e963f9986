//! `resume=N` (docs/durability.md): messages delivered to a role are numbered, and once that
//! role has connected with `resume=`, the newest of them are kept after delivery. A client
//! whose connection dropped reconnects with the count it processed and gets every message
//! after it again, in order, then what was kept while it was away, then the live stream.
//!
//! Sessions that never ask pay one flag read per read (`Session::resume_on`). For a
//! direction that asked, every forwarded frame is also copied into its replay window. The
//! windows count against `session.core_buffer_budget` with the backlogs: past the budget a
//! window keeps less (a later resume may then find a gap, which is reported).

use super::inbound::Segment;
use crate::context::Core;
use crate::session::{backlog_of, Backlog, Flag, Peer, Replay, Session};
use crate::stats::bump;
use std::rc::Rc;

/// Keeps the frames just forwarded to `receiver` (its direction asked for resume).
pub fn retain(
    core: &Core,
    session: &Session,
    sender: &Peer,
    receiver: &Peer,
    data: &[u8],
    segs: &[Segment],
) {
    let limit = core.config().session.replay_bytes;
    let mut replays = session.replays.borrow_mut();
    let Some(r) = replays.iter_mut().find(|r| *r.role == *receiver.role) else {
        return;
    };
    for &(a, b) in segs {
        r.keep_frame(&data[a..b], &sender.role, sender.id, limit);
    }
    account(core, r, &sender.role);
}

/// Books a window's change against the core's budget, and shrinks the window while the
/// budget is exceeded.
fn account(core: &Core, r: &mut Replay, from: &str) {
    let budget = &core.registry.budget;
    budget.settle(&mut r.ring);
    let over = budget.excess(core.config().session.core_buffer_budget);
    if over > 0 {
        let keep = r.ring.whole_bytes().saturating_sub(over);
        r.keep_within(keep, from);
        budget.settle(&mut r.ring);
    }
}

/// Keeps whole messages written to `receiver` from a backlog (their frames in `batch`, each
/// ending at `ends`), but the first `replayed`, which are kept and numbered already.
pub fn retain_delivered(
    core: &Core,
    session: &Session,
    receiver: &Peer,
    from: &str,
    batch: &[u8],
    ends: &[usize],
    replayed: usize,
) {
    let limit = core.config().session.replay_bytes;
    let mut replays = session.replays.borrow_mut();
    let Some(r) = replays.iter_mut().find(|r| *r.role == *receiver.role) else {
        return;
    };
    let mut start = 0;
    for (k, &end) in ends.iter().enumerate() {
        if k >= replayed {
            r.keep_whole(&batch[start..end], from, limit);
        }
        start = end;
    }
    account(core, r, from);
}

/// The receiver of `sender`'s message in progress left before its end. When its direction
/// keeps a replay window, the frames it had are moved from there into the sender's backlog,
/// where the rest of the message follows them: nothing of it is lost. Returns whether they
/// were (the caller then redirects the decoder into the backlog).
pub fn carry(core: &Core, session: &Session, sender: &Peer) -> bool {
    let budget = &core.registry.budget;
    let frames = {
        let mut replays = session.replays.borrow_mut();
        let Some(r) = replays
            .iter_mut()
            .find(|r| r.ring.open_by == Some(sender.id))
        else {
            return false;
        };
        let frames = r.ring.take_open();
        budget.settle(&mut r.ring);
        frames
    };
    let mut backlogs = session.backlogs.borrow_mut();
    let i = backlog_of(&mut backlogs, &sender.role);
    let b = &mut backlogs[i];
    if b.has_open() {
        b.abandon_open();
    }
    b.push_open(&frames);
    b.open_by = Some(sender.id);
    budget.settle(b);
    true
}

/// What a connection that asked for `resume=N` is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The number the next message delivered to it will have.
    pub next: u64,
    /// Messages after N are no longer kept: this is the first one still kept.
    pub gap: Option<u64>,
    /// N is past every message delivered to the role (the client counted wrong).
    pub ahead: bool,
    /// Messages from the role accepted so far: the client resends from `acked + 1`.
    pub acked: u64,
}

/// A peer joined with `resume=n`: turns numbering and retention on for its role, and puts
/// the messages after `n` still kept in front of what is kept for it, so they are delivered
/// first. On a gap nothing is put back: the caller says so (or closes with 4003) and
/// delivers from the first message still kept only when it stays.
pub fn on_join(core: &Core, session: &Session, peer: &Peer, n: u64, replay_gap: bool) -> Resumed {
    bump(&core.stats.resumes, 1);
    session.resume_on.set(true);
    let mut replays = session.replays.borrow_mut();
    let i = match replays.iter().position(|r| *r.role == *peer.role) {
        Some(i) => i,
        None => {
            replays.push(Replay::new(&peer.role));
            replays.len() - 1
        }
    };
    let r = &mut replays[i];
    // Two-way resume: from now on what this connection sends is counted for its role.
    let acked = r.accepted;
    peer.flags.set(Flag::COUNTS, true);
    r.told = acked;
    // A message half forwarded to the connection this one replaces is not replayed: the
    // sender's next read carries it over whole.
    let ahead = n > r.numbered;
    let n = n.min(r.numbered);
    let (from_n, gap) = match r.check(n) {
        Ok(()) => (n, None),
        Err(g) => {
            bump(&core.stats.resume_gaps, 1);
            (g.first - 1, Some(g.first))
        }
    };
    let resumed = Resumed {
        next: from_n + 1,
        gap,
        ahead,
        acked,
    };
    if gap.is_some() && !replay_gap {
        return resumed;
    }
    let from: Box<str> = session
        .other(peer.id)
        .map(|o| o.role.clone())
        .unwrap_or_else(|| r.last_from.clone());
    put_back(core, session, peer, r, from_n, &from);
    resumed
}

/// Puts the messages after `from_n` kept in `r` (the window of `peer`'s role) in front of
/// what `from` keeps for it, for delivery first.
fn put_back(core: &Core, session: &Session, peer: &Peer, r: &Replay, from_n: u64, from: &str) {
    let mut backlogs = session.backlogs.borrow_mut();
    let budget = &core.registry.budget;
    for b in backlogs.iter_mut().filter(|b| *b.from != *peer.role) {
        // What an earlier replay to this role did not get through is put back again below.
        b.drop_replayed();
        budget.settle(b);
    }
    let room = backlogs
        .iter()
        .find(|b| *b.from == *from)
        .map_or(0, Backlog::bytes);
    let (frames, ends) = r.after(from_n, room).unwrap_or_default();
    if !ends.is_empty() {
        bump(&core.stats.messages_replayed, ends.len() as u64);
        let i = backlog_of(&mut backlogs, from);
        backlogs[i].prepend_replay(frames, &ends);
        budget.settle(&mut backlogs[i]);
    }
}

/// The sender `sender` will never finish the message it was forwarding (it left, or lost its
/// seat to a newer connection of its role): a receiver holding part of it is closed with
/// 4004 (it resumes; the sender, credited with nothing of it, resends it whole), and the
/// frames its replay window kept of it are dropped.
pub fn abandon_torn(core: &Rc<Core>, session: &Session, sender: &Peer, open_to: Option<u64>) {
    if let Some(r) = open_to.and_then(|id| session.peer(id)) {
        if !r.is_closing() {
            bump(&core.stats.receivers_closed_torn, 1);
            super::conn::abort_receiver(core, r);
        }
    }
    if !session.resume_on.get() {
        return;
    }
    let budget = &core.registry.budget;
    for r in session.replays.borrow_mut().iter_mut() {
        if r.abandon_by(sender.id) > 0 {
            budget.settle(&mut r.ring);
        }
    }
}
