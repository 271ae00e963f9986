//! The connection side of held messages (`inbound::Hold`): which connections hold, and how
//! a read that released held messages goes out, each whole message in its place among the
//! zero-copy frames of the same read. Off the hot path: only reads that released something
//! come here.

use super::away::{self, Verdict};
use super::inbound::{Hold, HoldMode, Released};
use super::resume;
use crate::context::Core;
use crate::runtime::chunk::Chunk;
use crate::session::{Peer, Session};
use std::rc::Rc;

/// A new hold for a connection of `core`.
pub fn new_hold(core: &Core) -> Box<Hold> {
    Box::new(Hold::new(crate::bridge::answers::capture_limit(
        &core.config(),
    )))
}

/// What a connection holds in its next read. The agent holds what may be its answers;
/// another peer holds what may reach the agent: now (its receiver is the agent) or later
/// (its messages are being kept for a receiver that is away, and may be delivered to an
/// agent that joins).
pub fn mode(
    core: &Core,
    sender: &Peer,
    receiver: Option<&Rc<Peer>>,
    storing: bool,
) -> Option<HoldMode> {
    core.with_config(|c| {
        let agent = &*c.bridge.agent_role;
        if *sender.role == *agent {
            Some(HoldMode::Answers)
        } else if storing || receiver.is_some_and(|r| *r.role == *agent) {
            Some(HoldMode::Requests)
        } else {
            None
        }
    })
}

/// Where a read's writes to its receiver stand among the sender's messages.
#[derive(Debug, Clone, Copy)]
pub struct Open {
    /// The sender has a message open at the receiver from earlier reads: the first segment
    /// may continue it (`Peer::send_chunk`).
    pub continues: bool,
    /// The last segment leaves a message open at the receiver.
    pub at_end: bool,
}

/// Writes a read's segments to `receiver` with the held messages it released in between.
pub async fn send(
    core: &Core,
    session: Option<&Rc<Session>>,
    sender: &Peer,
    receiver: &Peer,
    mut chunk: Chunk,
    released: Vec<Released>,
    open: Open,
) -> Chunk {
    let all = chunk.segments().len();
    let replay = session.filter(|s| s.resume_on.get());
    let mut from = 0;
    // Write failures are left to the receiver's own reader, as on the zero-copy path.
    for rel in released {
        if rel.before_seg > from {
            let part = from..rel.before_seg;
            if let Some(s) = replay {
                let segs = &chunk.segments()[part.clone()];
                resume::retain(core, s, sender, receiver, chunk.data(), segs);
            }
            // After the first write, whatever is open at the receiver is this sender's.
            let continues = open.continues || from > 0;
            chunk = receiver
                .send_chunk(chunk.into_write_part(part), false, continues)
                .await
                .1;
            from = rel.before_seg;
        }
        if let Some(s) = replay {
            resume::retain(
                core,
                s,
                sender,
                receiver,
                &rel.frame,
                &[(0, rel.frame.len())],
            );
        }
        let _ = receiver.send_message(rel.frame).await;
    }
    if from < all {
        if let Some(s) = replay {
            let segs = &chunk.segments()[from..];
            resume::retain(core, s, sender, receiver, chunk.data(), segs);
        }
        let part = chunk.into_write_part(from..all);
        let continues = open.continues || from > 0;
        chunk = receiver.send_chunk(part, open.at_end, continues).await.1;
    }
    chunk
}

/// As `away::store`, for a read that released held messages: each goes into the backlog in
/// its place. Returns the strictest verdict and the messages completed.
pub fn store(
    core: &Core,
    session: &Session,
    sender: &Rc<Peer>,
    data: &[u8],
    segs: &[super::inbound::Segment],
    released: Vec<Released>,
) -> (Verdict, usize) {
    let mut verdict = Verdict::Go;
    let mut completed = 0;
    let mut merge = |(v, c): (Verdict, usize)| {
        completed += c;
        verdict = match (verdict, v) {
            (Verdict::Close, _) | (_, Verdict::Close) => Verdict::Close,
            (Verdict::Pause, _) | (_, Verdict::Pause) => Verdict::Pause,
            _ => Verdict::Go,
        };
    };
    let mut from = 0;
    for rel in released {
        if rel.before_seg > from {
            merge(away::store(
                core,
                session,
                sender,
                data,
                &segs[from..rel.before_seg],
            ));
            from = rel.before_seg;
        }
        merge(away::store(
            core,
            session,
            sender,
            &rel.frame,
            &[(0, rel.frame.len())],
        ));
    }
    if from < segs.len() {
        merge(away::store(core, session, sender, data, &segs[from..]));
    }
    (verdict, completed)
}
