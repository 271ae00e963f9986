//! Messages kept for a peer that is not there (docs/durability.md), without I/O. They are
//! kept as the server frames the decoder already wrote for them, so delivering them later is
//! writing these bytes: no re-framing. A message still arriving is kept apart (`open`) and
//! delivered only once whole, so a receiver never gets part of a message.
//!
//! The forwarding path copies into a backlog only while the receiver is away (or while a
//! backlog is still being delivered to it); a session whose peers are both here never has one.

use super::budget::Charge;
use std::collections::VecDeque;

/// Past this, an emptied backlog gives its allocation back.
const KEEP_CAPACITY: usize = 64 << 10;

#[derive(Debug)]
pub struct Backlog {
    /// The role of the peer that sent these messages.
    pub from: Box<str>,
    /// Whole messages from `head` to `open_from`, then the frames of one still arriving.
    bytes: Vec<u8>,
    head: usize,
    open_from: usize,
    /// Where each whole message ends in `bytes`, oldest first.
    ends: VecDeque<usize>,
    /// The connection whose unfinished message is at the end, if any.
    pub open_by: Option<u64>,
    /// The oldest messages that are a replay (`resume=`): numbered and kept for replay
    /// already, so their delivery counts neither again.
    pub replayed: usize,
    /// Bumped whenever the front is rebuilt for a resuming receiver: a delivery to an earlier
    /// connection that copied the old front, then awaited its write, must then not consume.
    pub generation: u64,
    /// Messages taken from the front so far (delivered or dropped): a delivery that copied
    /// the front, then awaited its write, learns from it how many of those are still there.
    removed: u64,
    /// What is booked for these bytes against the core's budget (`CoreBudget::settle`).
    pub(super) charge: Charge,
}

impl Backlog {
    pub fn new(from: &str) -> Backlog {
        Backlog {
            from: from.into(),
            bytes: Vec::new(),
            head: 0,
            open_from: 0,
            ends: VecDeque::new(),
            open_by: None,
            replayed: 0,
            generation: 0,
            removed: 0,
            charge: Charge::default(),
        }
    }

    /// Messages taken from the front so far.
    pub fn removed(&self) -> u64 {
        self.removed
    }

    /// Appends one server frame of a data message (header and payload, as the decoder wrote
    /// it). Returns true when the frame ends its message.
    pub fn push_frame(&mut self, frame: &[u8]) -> bool {
        debug_assert!(frame.len() >= 2);
        let fin = frame[0] & 0x80 != 0;
        self.bytes.extend_from_slice(frame);
        if fin {
            self.open_from = self.bytes.len();
            self.ends.push_back(self.bytes.len());
        }
        fin
    }

    /// Whole messages kept.
    pub fn messages(&self) -> usize {
        self.ends.len()
    }

    /// Bytes kept, the message still arriving included.
    pub fn bytes(&self) -> usize {
        self.bytes.len() - self.head
    }

    /// Bytes of the whole messages kept (what the limits count: a message still arriving is
    /// bounded by `limits.max_message_bytes`, and the sender must be read to finish it).
    pub fn whole_bytes(&self) -> usize {
        self.open_from - self.head
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes() == 0
    }

    /// Part of a message is kept, its end still to come.
    pub fn has_open(&self) -> bool {
        self.open_from < self.bytes.len()
    }

    /// Drops the frames of a message that will never be finished (its sender left or broke
    /// the protocol mid-message). Returns the bytes freed.
    pub fn abandon_open(&mut self) -> usize {
        let n = self.bytes.len() - self.open_from;
        self.bytes.truncate(self.open_from);
        self.open_by = None;
        self.compact();
        n
    }

    /// Drops the oldest whole message; the bytes freed.
    pub fn drop_oldest(&mut self) -> Option<usize> {
        let end = self.ends.pop_front()?;
        let n = end - self.head;
        self.head = end;
        self.removed += 1;
        self.replayed = self.replayed.saturating_sub(1);
        self.compact();
        Some(n)
    }

    /// The oldest whole messages, up to `max` bytes but at least one: their bytes and count.
    pub fn front(&self, max: usize) -> (&[u8], usize) {
        let mut end = self.head;
        let mut count = 0;
        for &e in &self.ends {
            if count > 0 && e - self.head > max {
                break;
            }
            end = e;
            count += 1;
        }
        (&self.bytes[self.head..end], count)
    }

    /// Forgets the `count` oldest messages (delivered); the bytes freed.
    pub fn consume(&mut self, count: usize) -> usize {
        let before = self.bytes();
        for _ in 0..count {
            let Some(end) = self.ends.pop_front() else {
                break;
            };
            self.head = end;
            self.removed += 1;
            self.replayed = self.replayed.saturating_sub(1);
        }
        self.compact();
        before - self.bytes()
    }

    /// Drops the replayed messages still at the front (a replay cut short by another drop of
    /// its receiver: they are kept for replay elsewhere); the bytes freed.
    pub fn drop_replayed(&mut self) -> usize {
        let mut freed = 0;
        while self.replayed > 0 {
            match self.drop_oldest() {
                Some(n) => freed += n,
                None => break,
            }
        }
        self.replayed = 0;
        self.generation += 1;
        freed
    }

    /// Appends one whole message (all its frames), whatever its frames' FIN bits.
    pub fn push_whole(&mut self, message: &[u8]) {
        debug_assert!(!self.has_open());
        self.bytes.extend_from_slice(message);
        self.open_from = self.bytes.len();
        self.ends.push_back(self.bytes.len());
    }

    /// Takes out the frames of the unfinished message at the end.
    pub fn take_open(&mut self) -> Vec<u8> {
        let open = self.bytes.split_off(self.open_from);
        self.open_by = None;
        self.compact();
        open
    }

    /// Appends frames of an unfinished message (carried over from elsewhere).
    pub fn push_open(&mut self, frames: &[u8]) {
        self.bytes.extend_from_slice(frames);
    }

    /// Puts whole messages (`frames`, ending at `ends` within it) before everything kept, as
    /// a replay. Rare (once per resume), so it rebuilds the buffer: in `frames` itself, which
    /// `Replay::after` made with room for what is kept here, so a large replay is not copied
    /// a second time.
    pub fn prepend_replay(&mut self, frames: Vec<u8>, ends: &[usize]) {
        let shift = frames.len();
        let mut bytes = frames;
        bytes.extend_from_slice(&self.bytes[self.head..]);
        let old: Vec<usize> = self.ends.iter().map(|e| e - self.head + shift).collect();
        self.ends = ends.iter().copied().chain(old).collect();
        self.open_from = self.open_from - self.head + shift;
        self.head = 0;
        self.bytes = bytes;
        self.replayed += ends.len();
        self.generation += 1;
    }

    /// The whole messages kept, each as (its bytes), oldest first.
    pub fn messages_iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = self.head;
        self.ends.iter().map(move |&e| {
            let m = &self.bytes[start..e];
            start = e;
            m
        })
    }

    /// Moves what is kept to the front once the consumed part is most of the buffer, and gives
    /// a large allocation back once empty.
    fn compact(&mut self) {
        if self.head == self.bytes.len() {
            self.bytes.clear();
            self.ends.clear();
            self.head = 0;
            self.open_from = 0;
            if self.bytes.capacity() > KEEP_CAPACITY {
                self.bytes = Vec::new();
            }
            return;
        }
        if self.head > 0 && self.head >= self.bytes.len() / 2 {
            let h = self.head;
            self.bytes.drain(..h);
            for e in self.ends.iter_mut() {
                *e -= h;
            }
            self.open_from -= h;
            self.head = 0;
        }
    }
}

/// The index of `role`'s backlog in `backlogs`, made if there is none.
pub fn backlog_of(backlogs: &mut Vec<Backlog>, role: &str) -> usize {
    match backlogs.iter().position(|b| *b.from == *role) {
        Some(i) => i,
        None => {
            backlogs.push(Backlog::new(role));
            backlogs.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{test_server_frame as frame, OpCode};

    #[test]
    fn whole_messages_only_come_out_in_order() {
        let mut b = Backlog::new("a");
        assert!(b.push_frame(&frame(true, OpCode::Text, b"one")));
        assert!(!b.push_frame(&frame(false, OpCode::Binary, b"tw")));
        assert_eq!(b.messages(), 1, "a message still arriving is not counted");
        assert_eq!(
            b.front(1 << 20),
            (&frame(true, OpCode::Text, b"one")[..], 1)
        );
        assert!(b.push_frame(&frame(true, OpCode::Continuation, b"o")));
        let mut want = frame(true, OpCode::Text, b"one");
        want.extend(frame(false, OpCode::Binary, b"tw"));
        want.extend(frame(true, OpCode::Continuation, b"o"));
        assert_eq!(b.front(1 << 20), (&want[..], 2));
        // At least one message, however small `max`.
        assert_eq!(b.front(0).1, 1);
        assert_eq!(b.consume(1), 5);
        assert_eq!(b.front(1 << 20).1, 1);
        assert_eq!(b.consume(1), want.len() - 5);
        assert!(b.is_empty() && b.messages() == 0);
    }

    #[test]
    fn an_unfinished_message_can_be_abandoned_and_the_oldest_dropped() {
        let mut b = Backlog::new("a");
        for i in 0..10u8 {
            b.push_frame(&frame(true, OpCode::Binary, &[i; 100]));
        }
        b.push_frame(&frame(false, OpCode::Binary, b"never finished"));
        assert_eq!(b.abandon_open(), 16);
        assert_eq!((b.messages(), b.bytes()), (10, 1020));
        for i in 0..7u8 {
            assert_eq!(b.drop_oldest(), Some(102));
            let (front, _) = b.front(0);
            assert_eq!(front[2], i + 1);
        }
        assert_eq!((b.messages(), b.bytes()), (3, 306));
        b.push_frame(&frame(true, OpCode::Text, b"after"));
        assert_eq!(b.consume(3), 306);
        assert_eq!(b.front(100), (&frame(true, OpCode::Text, b"after")[..], 1));
        assert_eq!(b.consume(5), 7, "consuming past the end stops there");
        assert_eq!(b.drop_oldest(), None);
        assert_eq!(b.abandon_open(), 0);
    }

    #[test]
    fn a_replay_goes_before_everything_kept_and_counts_down_as_delivered() {
        let mut b = Backlog::new("a");
        b.push_frame(&frame(true, OpCode::Text, b"kept"));
        b.push_frame(&frame(false, OpCode::Text, b"op"));
        let mut replay = frame(true, OpCode::Text, b"r1");
        let e1 = replay.len();
        replay.extend(frame(true, OpCode::Binary, b"r2"));
        let e2 = replay.len();
        assert_eq!(b.generation, 0);
        b.prepend_replay(replay, &[e1, e2]);
        assert_eq!((b.messages(), b.replayed, b.generation), (3, 2, 1));
        let got: Vec<&[u8]> = b.messages_iter().collect();
        assert_eq!(got[0], &frame(true, OpCode::Text, b"r1")[..]);
        assert_eq!(got[2], &frame(true, OpCode::Text, b"kept")[..]);
        assert!(b.has_open());
        b.push_frame(&frame(true, OpCode::Continuation, b"en"));
        assert_eq!(b.messages(), 4);
        b.consume(1);
        assert_eq!(b.replayed, 1);
        b.drop_oldest();
        assert_eq!(b.replayed, 0);
        assert_eq!(b.front(0).0, &frame(true, OpCode::Text, b"kept")[..]);
    }

    #[test]
    fn a_large_emptied_backlog_gives_its_memory_back() {
        let mut b = Backlog::new("a");
        for _ in 0..100 {
            b.push_frame(&frame(true, OpCode::Binary, &[0; 4000]));
        }
        assert!(b.capacity() >= 400_000);
        b.consume(100);
        assert_eq!(b.capacity(), 0);
    }

    proptest::proptest! {
        /// Any mix of appends, deliveries and drops keeps the messages that remain whole and in
        /// order, and the byte count exact.
        #[test]
        fn what_remains_is_the_newest_messages_in_order(ops in proptest::collection::vec(0u8..4, 1..200)) {
            let mut b = Backlog::new("a");
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut n = 0u32;
            for op in ops {
                match op {
                    0 | 1 => {
                        n += 1;
                        let f = frame(true, OpCode::Binary, &n.to_le_bytes().repeat((n % 7) as usize + 1));
                        b.push_frame(&f);
                        model.push_back(f);
                    }
                    2 => {
                        let k = (n % 3) as usize;
                        b.consume(k);
                        for _ in 0..k.min(model.len()) {
                            model.pop_front();
                        }
                    }
                    _ => {
                        assert_eq!(b.drop_oldest().is_some(), model.pop_front().is_some());
                    }
                }
                let all: Vec<u8> = model.iter().flatten().copied().collect();
                proptest::prop_assert_eq!(b.bytes(), all.len());
                proptest::prop_assert_eq!(b.messages(), model.len());
                if !model.is_empty() {
                    proptest::prop_assert_eq!(b.front(usize::MAX).0, &all[..]);
                }
            }
        }
    }
}
