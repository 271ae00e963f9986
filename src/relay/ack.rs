//! Two-way resume, the sender's half (docs/durability.md): the messages a connection that
//! asked for `resume=` sends are counted for its role as the relay accepts them, and with
//! `events=1` it is told the count in `ack` events: at once every `session.ack_every`
//! messages, else within `session.ack_delay` of the last one, so a client can free its
//! outbox. The count lives with the session (`Replay::accepted`), so a reconnecting
//! connection of the role learns it in its `connected` (`acked`) and resends from there.
//!
//! Nothing here runs for a connection that did not ask: the forwarding path reads one flag.

use crate::context::Core;
use crate::session::{Flag, Peer, Replay, Session};
use crate::stats::bump;
use std::rc::Rc;
use std::time::Duration;

fn with_role<T>(session: &Session, role: &str, f: impl FnOnce(&mut Replay) -> T) -> Option<T> {
    let mut replays = session.replays.borrow_mut();
    replays.iter_mut().find(|r| *r.role == *role).map(f)
}

/// Messages from `role` accepted so far in `session`, and how many its connection was told.
fn state(session: &Session, role: &str) -> (u64, u64) {
    with_role(session, role, |r| (r.accepted, r.told)).unwrap_or_default()
}

/// When the messages from `role` not told yet were accepted, at the earliest
/// (`Replay::told_from_ms`, on the worker's clock).
fn untold_from(session: &Session, role: &str) -> u64 {
    with_role(session, role, |r| r.told_from_ms).unwrap_or_default()
}

/// Credits `sender`'s role with `n` more accepted messages. True when an ack is due at once
/// (`session.ack_every` reached: the caller sends it with [`send`]); otherwise, with some not
/// yet told, makes sure one goes out within `session.ack_delay`.
pub fn count(core: &Rc<Core>, session: &Rc<Session>, sender: &Rc<Peer>, n: u64) -> bool {
    let Some((k, told)) = with_role(session, &sender.role, |r| {
        r.accepted += n;
        (r.accepted, r.told)
    }) else {
        return false;
    };
    if !sender.events() {
        return false;
    }
    if k - told >= core.config().session.ack_every as u64 {
        return true;
    }
    arm(core, session, sender);
    false
}

/// What a write of forwarded data to `receiver` needs to carry its ack along
/// ([`Peer::send_chunk_acking`]): for a connection told acks, the session and the fewest
/// untold messages worth an ack riding along, half of `session.ack_every`. Half, so that
/// while data flows to a sender its acks ride on it before one is due on its own write (a
/// syscall, and on loopback the kernel's whole delivery of a segment); not every one, so that
/// a stream of small messages does not carry an ack in every write (each one bytes on the
/// wire and a JSON parse for the client).
pub fn riding<'a>(
    core: &Core,
    session: &'a Session,
    receiver: &Peer,
) -> Option<(&'a Session, u64)> {
    if !receiver.events() || !receiver.flags.get(Flag::COUNTS) {
        return None;
    }
    let every = core.config().session.ack_every as u64;
    Some((session, (every / 2).max(1)))
}

/// Counts an ack that rode on forwarded data (`told`: the count it carried, if one did).
pub fn rode(core: &Core, told: Option<u64>) {
    if told.is_some() {
        bump(&core.stats.acks_sent, 1);
        bump(&core.stats.acks_with_data, 1);
    }
}

/// Writes `ack` with the role's count to `peer`, unless its connection was told as much
/// already (by another writer, maybe riding on data). True when one was written.
///
/// The count is read under the connection's write gate ([`Peer::send_ack`]), so the counts
/// it is told never go down, whichever writer gets there first.
async fn write(core: &Core, session: &Session, peer: &Peer) -> std::io::Result<bool> {
    let told = peer.send_ack(session).await?;
    if told.is_some() {
        bump(&core.stats.acks_sent, 1);
    }
    Ok(told.is_some())
}

/// The ack due at once after a read (`count` said so), from a task of its own: the reader
/// goes on reading meanwhile (awaiting the write cost a closed-loop sender about 10 % of its
/// rate). One such task per connection at most: it goes on while `session.ack_every` more
/// were accepted during its write, so a client that does not read its acks holds one task
/// and one ack, not one per read.
pub fn send(core: &Rc<Core>, session: &Rc<Session>, peer: &Rc<Peer>) {
    if peer.flags.replace(Flag::ACK_SENDING, true) {
        return;
    }
    let (core, session, peer) = (core.clone(), session.clone(), peer.clone());
    monoio::spawn(async move {
        let every = core.config().session.ack_every as u64;
        loop {
            let Ok(written) = write(&core, &session, &peer).await else {
                break;
            };
            if !session.seated(peer.id) {
                break;
            }
            let (k, told) = state(&session, &peer.role);
            if !written || k - told < every {
                // The rest within the delay, as after any read below `ack_every` (or when
                // this one could not go now: a forwarded message is half written).
                if k > told {
                    arm(&core, &session, &peer);
                }
                break;
            }
        }
        peer.flags.set(Flag::ACK_SENDING, false);
    });
}

/// One task per connection at most: waits `session.ack_delay`, tells the count, and goes
/// again while the count moved on meanwhile or the ack could not be written. While a stream
/// flows, the acks due at once tell everything within the delay: an ack told during the wait
/// covered all that was accepted before it, so the task waits on from when that ack's count
/// was read instead of writing one more (each a write of its own and a wake-up of the client).
fn arm(core: &Rc<Core>, session: &Rc<Session>, peer: &Rc<Peer>) {
    if peer.flags.get(Flag::ACK_ARMED) {
        return;
    }
    peer.flags.set(Flag::ACK_ARMED, true);
    let (core, session, peer) = (core.clone(), session.clone(), peer.clone());
    monoio::spawn(async move {
        let delay = core.config().session.ack_delay;
        let mut waited_from = core.clock.tick();
        let mut wait = delay;
        loop {
            monoio::time::sleep(wait).await;
            if peer.is_closing() || peer.flags.get(Flag::DROPPED) || !session.seated(peer.id) {
                break;
            }
            let (k, told) = state(&session, &peer.role);
            if k <= told {
                break;
            }
            let now = core.clock.tick();
            let from = untold_from(&session, &peer.role);
            let due = from.saturating_add(delay.as_millis() as u64);
            if from > waited_from && due > now {
                (waited_from, wait) = (from, Duration::from_millis(due - now));
                continue;
            }
            if write(&core, &session, &peer).await.is_err() {
                break;
            }
            (waited_from, wait) = (core.clock.tick(), delay);
        }
        peer.flags.set(Flag::ACK_ARMED, false);
    });
}
