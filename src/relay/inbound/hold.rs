//! Messages that are read whole before they go anywhere: those that may be a bridge answer
//! (on an agent's connection) or a request (on a connection whose messages may reach an
//! agent). Only a text message whose payload starts, after JSON whitespace, with `{` is held;
//! everything else keeps the zero-copy path (docs/bridge.md, "How the relay reads the agent's
//! messages").
//!
//! A held message that begins and ends in one read is not copied: its frames stay where they
//! were read, and once it proves neither an answer nor a request they are forwarded from
//! there like any message's. Only one that spans reads is copied out (the read buffer goes
//! back to the pool), and goes on whole as one frame built here. Answers are always copied:
//! they are kept for the bridge.

use super::HEADROOM;
use crate::bridge::sniff::{Goal, Sniff};
use crate::ws::frame::encode_header_before;
use crate::ws::OpCode;

/// Which messages a connection holds, decided before each read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldMode {
    /// An agent's own connection: a message whose first top-level `type` is
    /// `"http_response"` is an answer, collected for the bridge and never forwarded.
    Answers,
    /// A connection whose messages may reach an agent: a message with a top-level `type`
    /// of `"http_request"` is refused, since only the relay sends requests to an agent.
    Requests,
}

/// An answer collected whole (or cut at the limit: `truncated`).
#[derive(Debug)]
pub struct HeldAnswer {
    buf: Vec<u8>,
    pub truncated: bool,
    /// The answer's top-level `id`, read as it streamed: known even when the answer was cut.
    pub id: Option<String>,
}

impl HeldAnswer {
    pub fn json(&self) -> &[u8] {
        &self.buf[HEADROOM..]
    }
}

/// A held message that goes on: one whole text frame, to be written before the segment
/// `before_seg` of the same read (after everything the sender sent before it).
#[derive(Debug)]
pub struct Released {
    pub before_seg: usize,
    pub frame: Vec<u8>,
}

/// What reading one more piece of a held message decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Still held.
    Hold,
    /// It is an answer: from now on it is collected as one.
    Answer,
    /// A request from a peer: refused.
    Forged,
    /// Not an answer, and over `limits.max_message_bytes`.
    TooBig,
}

/// The held message of one connection, and what the last read completed.
#[derive(Debug)]
pub struct Hold {
    /// Set by the connection before each read; applies to messages that start in it.
    pub mode: Option<HoldMode>,
    /// The most of one answer kept (`bridge::answers::capture_limit`).
    answer_limit: usize,
    msg_mode: HoldMode,
    sniff: Sniff,
    /// Payload ranges of the held message in the current read buffer, one per client frame:
    /// not copied unless the message outlives the read.
    pub(super) in_read: Vec<(usize, usize)>,
    /// `HEADROOM` bytes for the frame header, then the payload copied so far.
    open: Vec<u8>,
    /// Some of the message was copied into `open`: it outlived a read, or is an answer.
    copied: bool,
    truncated: bool,
    /// Searchers for the words a message must spell, escapes aside, to be an answer or a
    /// request: built once per connection.
    response_word: memchr::memmem::Finder<'static>,
    request_word: memchr::memmem::Finder<'static>,
    /// Answers completed by the last read, in order.
    pub answers: Vec<HeldAnswer>,
    /// Messages released by the last read, in order.
    pub released: Vec<Released>,
}

impl Hold {
    pub fn new(answer_limit: usize) -> Hold {
        Hold {
            mode: None,
            answer_limit,
            msg_mode: HoldMode::Answers,
            sniff: Sniff::new(Goal::All),
            in_read: Vec::new(),
            open: Vec::new(),
            copied: false,
            truncated: false,
            response_word: memchr::memmem::Finder::new(b"http_response"),
            request_word: memchr::memmem::Finder::new(b"http_request"),
            answers: Vec::new(),
            released: Vec::new(),
        }
    }

    pub(super) fn begin(&mut self, mode: HoldMode) {
        self.msg_mode = mode;
        self.sniff.reset(match mode {
            HoldMode::Answers => Goal::Answer,
            HoldMode::Requests => Goal::Request,
        });
        self.in_read.clear();
        self.open.clear();
        self.copied = false;
        self.truncated = false;
    }

    /// A held message on an agent's connection that may still prove an answer is not bound
    /// by `limits.max_message_bytes` (answers have their own bound).
    pub(super) fn exempt_from_message_limit(&self) -> bool {
        self.msg_mode == HoldMode::Answers && self.sniff.answer(false) != Some(false)
    }

    fn kept(&self) -> usize {
        self.open.len().saturating_sub(HEADROOM)
    }

    /// The most of the message kept: an answer's limit, or while undecided the larger of it
    /// and the message limit (past both it is too large either way).
    fn bound(&self, captured: bool, max_message: u64) -> usize {
        let max_message = usize::try_from(max_message).unwrap_or(usize::MAX);
        match (captured, self.msg_mode) {
            (true, _) => self.answer_limit,
            (false, HoldMode::Answers) => self.answer_limit.max(max_message),
            (false, HoldMode::Requests) => max_message,
        }
    }

    /// Copies `bytes` of the message, within `bound`.
    fn keep(&mut self, bytes: &[u8], bound: usize) {
        if !self.copied {
            self.copied = true;
            self.open.clear();
            self.open.resize(HEADROOM, 0);
        }
        let keep = bytes.len().min(bound.saturating_sub(self.kept()));
        self.truncated |= keep < bytes.len();
        self.open.extend_from_slice(&bytes[..keep]);
    }

    /// Takes the next piece of the held message, `buf[range]`. `captured`: it is already
    /// known to be an answer. `msg_bytes`: the message's declared length so far; `done`: this
    /// piece ends the message. Also returns how many bytes of the piece lead up to the
    /// decision (all of them when none was made).
    pub(super) fn feed(
        &mut self,
        buf: &[u8],
        range: std::ops::Range<usize>,
        captured: bool,
        max_message: u64,
        (msg_bytes, done): (u64, bool),
    ) -> (Fed, usize) {
        let bytes = &buf[range.clone()];
        // The whole message at once, within the message limit (so no verdict hangs on where
        // it is decided), and it cannot be an answer: no need to read it.
        let whole = done && self.in_read.is_empty() && !self.copied && msg_bytes <= max_message;
        if whole && self.msg_mode == HoldMode::Answers && !self.may_spell(bytes, true) {
            self.sniff.settle_not_matching();
        }
        // From the agent the reader runs as the message streams, until the first type decides
        // (and an answer on until its id): an answer's bound depends on it. Towards an agent
        // the whole message is read anyway (a request's type may be repeated last), so it is
        // judged once, at its end (`ended`).
        let upto = match self.msg_mode {
            HoldMode::Answers => self.sniff.feed(bytes),
            HoldMode::Requests => bytes.len(),
        };
        if self.copied || captured {
            self.keep(bytes, self.bound(captured, max_message));
        } else {
            self.in_read.push((range.start, range.end));
        }
        if captured {
            return (Fed::Hold, bytes.len());
        }
        let fed = match self.msg_mode {
            HoldMode::Requests => Fed::Hold,
            HoldMode::Answers => match self.sniff.answer(false) {
                Some(true) => {
                    // Kept from now on: what this read holds of it is copied first.
                    self.copy_out(buf, max_message, true);
                    Fed::Answer
                }
                // Its declared length says it (not what was kept, which depends on the reads).
                Some(false) if msg_bytes > max_message => Fed::TooBig,
                _ => Fed::Hold,
            },
        };
        (fed, upto)
    }

    /// Copies what the current read holds of the message into `open`: the read ends before
    /// the message does, or the message proved an answer.
    pub(super) fn copy_out(&mut self, buf: &[u8], max_message: u64, captured: bool) {
        let bound = self.bound(captured, max_message);
        let mut ranges = std::mem::take(&mut self.in_read);
        for &(a, b) in &ranges {
            self.keep(&buf[a..b], bound);
        }
        if !self.copied {
            // An empty message so far: copied all the same, the next read appends to it.
            self.keep(&[], bound);
        }
        if captured && self.kept() > self.answer_limit {
            self.open.truncate(HEADROOM + self.answer_limit);
            self.truncated = true;
        }
        ranges.clear();
        self.in_read = ranges;
    }

    /// Whether the held message was copied (else it is all in the current read).
    pub(super) fn copied(&self) -> bool {
        self.copied
    }

    /// The held message ended and was not an answer. `TooBig` when it is over the message
    /// limit (it could have been an answer until its end), `Forged` when it is a request
    /// towards an agent, else `Hold`: it may go on.
    pub(super) fn ended(&mut self, buf: &[u8], max_message: u64, msg_bytes: u64) -> Fed {
        if msg_bytes > max_message {
            return Fed::TooBig;
        }
        if self.msg_mode == HoldMode::Requests && self.is_request(buf) {
            return Fed::Forged;
        }
        Fed::Hold
    }

    /// Whether the whole held message is a request. Without a backslash the text is its own
    /// decoding, so one that never spells `http_request` cannot have it as a value: most
    /// messages are cleared by two vector searches, and only the rest are read in full.
    /// Whether `text` may hold `"http_response"` (`response`) or `"http_request"` as a
    /// value: without a backslash the text is its own decoding, so it must spell the word.
    fn may_spell(&self, text: &[u8], response: bool) -> bool {
        let word = if response {
            &self.response_word
        } else {
            &self.request_word
        };
        memchr::memchr(b'\\', text).is_some() || word.find(text).is_some()
    }

    fn is_request(&mut self, buf: &[u8]) -> bool {
        let one = match (self.copied, self.in_read.as_slice()) {
            (true, _) => Some(&self.open[HEADROOM..]),
            (false, &[(a, b)]) => Some(&buf[a..b]),
            // Split over frames, a word could straddle them: read in full.
            _ => None,
        };
        if one.is_some_and(|t| !self.may_spell(t, false)) {
            return false;
        }
        self.sniff.reset(Goal::Request);
        match one {
            Some(t) => {
                self.sniff.feed(t);
            }
            None => {
                for &(a, b) in &self.in_read {
                    self.sniff.feed(&buf[a..b]);
                }
            }
        }
        self.sniff.request_like()
    }

    /// The completed answer, collected.
    pub(super) fn finish_answer(&mut self) {
        let buf = std::mem::take(&mut self.open);
        self.answers.push(HeldAnswer {
            buf,
            truncated: self.truncated,
            id: self.sniff.id().map(str::to_string),
        });
    }

    /// The completed message as one text frame, to go before segment `before_seg`. Returns
    /// its payload length.
    pub(super) fn release(&mut self, before_seg: usize) -> usize {
        let mut frame = std::mem::take(&mut self.open);
        let len = frame.len() - HEADROOM;
        let start = encode_header_before(&mut frame, HEADROOM, true, OpCode::Text, len as u64);
        frame.drain(..start);
        self.released.push(Released { before_seg, frame });
        len
    }

    /// The completed message has no receiver: dropped.
    pub(super) fn discard(&mut self) {
        self.open.clear();
        self.in_read.clear();
    }

    /// Nothing held and nothing completed waiting to be handed on: with its decoder at rest
    /// (no message in progress), the connection may be parked and cross to a new process
    /// without this (a fresh one is made there when needed: `relay::conn`).
    pub fn at_rest(&self) -> bool {
        self.answers.is_empty() && self.released.is_empty()
    }

    /// Drops what the last read completed, once handed on.
    pub fn clear_done(&mut self) {
        self.answers.clear();
        self.released.clear();
    }
}
