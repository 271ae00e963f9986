//! Numbering and the replay window of one direction of a session (docs/durability.md): the
//! messages delivered to a role are numbered 1, 2, 3 ..., and once that role has connected
//! with `resume=`, the newest of them are kept after delivery, so that a client whose
//! connection dropped can say how many it processed and get the rest again.
//!
//! The other half of two-way resume lives here too: how many messages the same role has
//! sent that the relay accepted (`accepted`), which a reconnecting client resends after.

use super::Backlog;

#[derive(Debug)]
pub struct Replay {
    /// The receiving role.
    pub role: Box<str>,
    /// Messages numbered so far: the last delivered one's number.
    pub numbered: u64,
    /// The newest delivered messages, whole, within `session.replay_bytes`; then the frames
    /// of one being forwarded (kept so that it can be carried over if the receiver drops
    /// before its end).
    pub ring: Backlog,
    /// The role that sent the newest message kept.
    pub last_from: Box<str>,
    /// Messages from this role the relay accepted (read whole, then forwarded, kept or
    /// dropped by policy) on its connections that asked for `resume=`: `acked` in
    /// `connected` and in `ack` events.
    pub accepted: u64,
    /// The `accepted` the role's seated connection was last told (in `connected` or an
    /// `ack` event).
    pub told: u64,
    /// The session's activity clock (ms) when the count last told was read: every message
    /// accepted after `told` was accepted at or after it, so the delayed ack is due no sooner
    /// than `session.ack_delay` past it (relay::ack). 0 until an ack is told.
    pub told_from_ms: u64,
    /// The earliest such reading not told yet (`u64::MAX`: none), which `Session::tell`
    /// makes `told_from_ms`.
    pub reading_from_ms: u64,
}

/// `resume=N` asks for messages that are no longer kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The first number still kept (or the next to be delivered, when none is).
    pub first: u64,
}

impl Replay {
    pub fn new(role: &str) -> Replay {
        Replay {
            role: role.into(),
            numbered: 0,
            ring: Backlog::new(""),
            last_from: "".into(),
            accepted: 0,
            told: 0,
            told_from_ms: 0,
            reading_from_ms: u64::MAX,
        }
    }

    /// The number of the oldest whole message kept (`numbered + 1` when none is).
    pub fn first_kept(&self) -> u64 {
        self.numbered + 1 - self.ring.messages() as u64
    }

    /// Keeps a delivered whole message and numbers it. Returns the bytes freed to stay
    /// within `limit` (the caller settles the ring's charge with the core's budget).
    pub fn keep_whole(&mut self, message: &[u8], from: &str, limit: usize) -> usize {
        // Frames of a message whose sender left before its end (its receiver was closed
        // with 4004): the message is resent whole, so they are never delivered.
        let freed = if self.ring.has_open() {
            self.ring.abandon_open()
        } else {
            0
        };
        self.ring.push_whole(message);
        self.numbered += 1;
        freed + self.keep_within(limit, from)
    }

    /// The sender `by` left (or lost its seat) before the end of the message whose frames
    /// the window holds open: they are dropped. Returns the bytes freed.
    pub fn abandon_by(&mut self, by: u64) -> usize {
        if self.ring.has_open() && self.ring.open_by == Some(by) {
            self.ring.abandon_open()
        } else {
            0
        }
    }

    /// Keeps one forwarded frame; numbers its message when the frame ends it. Returns the
    /// bytes freed, as `keep_whole`.
    pub fn keep_frame(&mut self, frame: &[u8], from: &str, by: u64, limit: usize) -> usize {
        let mut freed = 0;
        if self.ring.has_open() && self.ring.open_by != Some(by) {
            freed += self.ring.abandon_open();
        }
        if self.ring.push_frame(frame) {
            self.numbered += 1;
        }
        self.ring.open_by = self.ring.has_open().then_some(by);
        freed + self.keep_within(limit, from)
    }

    /// Drops the oldest whole messages until at most `limit` bytes of them are kept.
    pub fn keep_within(&mut self, limit: usize, from: &str) -> usize {
        let mut freed = 0;
        while self.ring.whole_bytes() > limit {
            match self.ring.drop_oldest() {
                Some(n) => freed += n,
                None => break,
            }
        }
        if *self.last_from != *from {
            self.last_from = from.into();
        }
        freed
    }

    /// Whether the whole messages after `n` are all still kept: `Err` names the first that
    /// is. Arithmetic only: a resume that finds a gap copies nothing.
    pub fn check(&self, n: u64) -> Result<(), Gap> {
        let first = self.first_kept();
        if n + 1 < first {
            return Err(Gap { first });
        }
        Ok(())
    }

    /// The whole messages after `n` (the client processed messages 1 to n): their frames
    /// and where each ends. `Err` when some of them are no longer kept.
    ///
    /// A window can hold `session.replay_bytes` (64 MiB and more), and this runs on the
    /// worker, every session of the core waiting: the frames are copied once, into a buffer
    /// allocated once at its final size, with `room` bytes more for what the caller appends
    /// (`Backlog::prepend_replay` puts the backlog behind them in the same buffer).
    pub fn after(&self, n: u64, room: usize) -> Result<(Vec<u8>, Vec<usize>), Gap> {
        self.check(n)?;
        let skip = (n + 1 - self.first_kept()) as usize;
        let mut ends = Vec::with_capacity(self.ring.messages() - skip);
        let mut len = 0;
        for m in self.ring.messages_iter().skip(skip) {
            len += m.len();
            ends.push(len);
        }
        let mut frames = Vec::with_capacity(len + room);
        for m in self.ring.messages_iter().skip(skip) {
            frames.extend_from_slice(m);
        }
        Ok((frames, ends))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{test_server_frame as frame, OpCode};

    #[test]
    fn messages_are_numbered_and_the_newest_kept() {
        let mut r = Replay::new("b");
        for i in 0..10u8 {
            r.keep_frame(&frame(true, OpCode::Binary, &[i; 10]), "a", 1, 36);
        }
        // 12 bytes a message, 36 kept: messages 8, 9, 10.
        assert_eq!((r.numbered, r.first_kept()), (10, 8));
        let (frames, ends) = r.after(8, 0).unwrap();
        assert_eq!(ends, vec![12, 24]);
        assert_eq!(frames[2], 8);
        assert_eq!(r.after(7, 0).unwrap().1.len(), 3);
        assert_eq!(r.after(6, 0), Err(Gap { first: 8 }));
        assert_eq!(r.check(6), Err(Gap { first: 8 }));
        assert_eq!(r.check(7), Ok(()));
        assert!(r.after(10, 0).unwrap().1.is_empty());
        // A message forwarded in frames is numbered at its end; another sender's unfinished
        // frames are dropped when a new connection starts one.
        r.keep_frame(&frame(false, OpCode::Text, b"ab"), "a", 1, 1000);
        assert_eq!(r.numbered, 10);
        r.keep_frame(&frame(false, OpCode::Text, b"xy"), "a", 2, 1000);
        r.keep_frame(&frame(true, OpCode::Continuation, b"z"), "a", 2, 1000);
        assert_eq!(r.numbered, 11);
        let (frames, _) = r.after(10, 0).unwrap();
        let mut want = frame(false, OpCode::Text, b"xy");
        want.extend(frame(true, OpCode::Continuation, b"z"));
        assert_eq!(frames, want);
        r.keep_whole(&frame(true, OpCode::Text, b"w"), "c", 1000);
        assert_eq!((r.numbered, &*r.last_from), (12, "c"));
    }

    #[test]
    fn a_torn_message_s_frames_are_dropped_never_numbered() {
        let mut r = Replay::new("b");
        r.keep_frame(&frame(true, OpCode::Text, b"one"), "a", 1, 1000);
        let part = frame(false, OpCode::Text, b"first half");
        r.keep_frame(&part, "a", 1, 1000);
        // Another sender's frames are not this one's to drop.
        assert_eq!(r.abandon_by(2), 0);
        assert_eq!(r.abandon_by(1), part.len());
        assert_eq!((r.numbered, r.ring.has_open()), (1, false));
        // A whole message delivered from a backlog (the torn one, resent) drops frames left
        // open by a sender that never finished.
        r.keep_frame(&part, "a", 3, 1000);
        let whole = frame(true, OpCode::Text, b"first half, second half");
        assert_eq!(r.keep_whole(&whole, "a", 1000), part.len());
        let (frames, ends) = r.after(1, 0).unwrap();
        assert_eq!((frames, ends.len(), r.numbered), (whole, 1, 2));
        // The sending half's count is the role's own, untouched by numbering.
        assert_eq!(r.accepted, 0);
    }

    #[test]
    fn a_replay_is_copied_once_into_a_buffer_of_its_final_size() {
        let mut r = Replay::new("b");
        for i in 0..20u8 {
            r.keep_frame(&frame(true, OpCode::Binary, &[i; 1000]), "a", 1, 1 << 20);
        }
        // Messages 6 to 20, and room for 5,000 bytes kept behind them.
        let (frames, ends) = r.after(5, 5000).unwrap();
        assert_eq!(ends.len(), 15);
        assert_eq!(frames.len(), *ends.last().unwrap());
        assert_eq!(frames.capacity(), frames.len() + 5000);
        assert_eq!(frames[4], 5, "message 6 carries byte 5");
    }

    #[test]
    fn nothing_kept_means_every_resume_but_the_last_is_a_gap() {
        let mut r = Replay::new("b");
        for _ in 0..5 {
            r.keep_frame(&frame(true, OpCode::Text, b"x"), "a", 1, 0);
        }
        assert_eq!(r.first_kept(), 6);
        assert_eq!(r.after(4, 0), Err(Gap { first: 6 }));
        assert!(r.after(5, 0).unwrap().0.is_empty());
    }
}
