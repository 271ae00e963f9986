//! The I/O-free half of forwarding: turns one read buffer of client frames into the ranges of
//! the same buffer to write to the receiver, unmasking in place and writing each server header
//! over the front of the client's (always larger) header.
//!
//! Frames that fit in a read buffer are forwarded as they came. A frame larger than a buffer
//! is forwarded chunk by chunk as a fragmented message (RFC 6455 section 5.4 lets an
//! intermediary refragment when no extension is agreed): each chunk gets its header written
//! into the headroom reserved at the front of every buffer. Nothing is reassembled or copied,
//! but on the connections that hold JSON-object text messages for the bridge (`Hold`): there
//! such a message is forwarded once read whole, from the read buffer when it fits in one read.

use crate::bridge::sniff::first_non_ws;
use crate::ws::close::parse_close_payload;
use crate::ws::frame::{
    encode_header_before, parse_header, Sender, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
    MAX_SERVER_HEADER_LEN,
};
use crate::ws::mask::apply_mask;
use crate::ws::{CloseCode, OpCode, Utf8Validator};

mod hold;
pub use hold::{Fed, HeldAnswer, Hold, HoldMode, Released};

/// Bytes kept free at the front of every read buffer for a chunk's server header.
pub const HEADROOM: usize = MAX_SERVER_HEADER_LEN;
/// A partial header or a partial control frame is all that is ever carried between reads.
pub const CARRY_MAX: usize = MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD;

/// A range of the read buffer to write to the receiver, header included.
pub use crate::runtime::chunk::Segment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameState {
    fin: bool,
    remaining: u64,
    mask: [u8; 4],
    pos: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Forward(u64),
    Drop,
    /// A bridge answer from the agent: collected for the bridge, never forwarded.
    Capture,
    /// Read whole (see [`Hold`]) before it goes anywhere; then it goes on to the receiver of
    /// the read it ends in: from that read's buffer when all of it is there, else as one
    /// frame copied out.
    Hold,
}

#[derive(Debug, Clone, Copy)]
struct MsgState {
    text: bool,
    bytes: u64,
    /// Client frames so far, for `DecodeLimits::max_frames_per_message`.
    frames: u32,
    utf8: Utf8Validator,
    target: Target,
    /// At least one frame of this message was handed to the receiver.
    out_started: bool,
    /// Some of it went out with an earlier read: the receiver already holds part of it.
    delivered: bool,
}

/// Why the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The client sent a valid close frame with this code (1005 when it gave none).
    Peer(u16),
    /// The client broke the protocol; the relay closes with this code.
    Violation(CloseCode, &'static str),
}

/// What one buffer held, besides the segments to forward.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Where the latest ping's (unmasked) payload sits in the buffer, to answer with a pong;
    /// older pings in the same buffer need no answer of their own (RFC 6455 section 5.5.3).
    pub ping: Option<(usize, usize)>,
    /// Pings in this buffer; all but the latest go unanswered.
    pub pings: u32,
    pub closing: Option<Closing>,
    pub messages_forwarded: u32,
    pub messages_dropped: u32,
    /// Bridge answers collected whole (see [`Hold`]).
    pub answers: u32,
    /// The connection is closed for sending an `http_request` towards an agent.
    pub forged_request: bool,
    /// Payload bytes of data frames read, forwarded or not.
    pub payload_bytes: u64,
    /// Payload bytes handed to the receiver.
    pub forwarded_bytes: u64,
    /// A receiver that got part of a message whose rest will never come: it must be closed.
    pub aborted_receiver: Option<u64>,
    /// Any data frame was seen (resets the session's idle timer).
    pub data_seen: bool,
}

/// Per-connection decoder state; small, since every idle connection keeps one.
#[derive(Debug)]
pub struct Inbound {
    frame: Option<FrameState>,
    msg: Option<MsgState>,
    carry: [u8; CARRY_MAX],
    carry_len: u8,
    closed: bool,
}

// Every connection keeps its decoder for life, in its task's future: 100,000 connections per
// core (the default `max_connections_per_worker`) at 256 bytes is 25 MiB per core. The carry
// array (`CARRY_MAX`, 139 bytes: the largest header plus a whole control frame, all that is
// ever left between reads) is most of it; the held-message state (`Hold`, about 900 bytes)
// stays out of it, boxed, and is made only on the connections that hold messages.
const _: () = assert!(std::mem::size_of::<Inbound>() <= 256);

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            frame: None,
            msg: None,
            carry: [0; CARRY_MAX],
            carry_len: 0,
            closed: false,
        }
    }
}

/// Limits the decoder enforces.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_message_bytes: u64,
    /// Caps a flood of tiny fragments, which costs the relay a header per byte forwarded.
    pub max_frames_per_message: u32,
}

impl Inbound {
    /// Lays out a fresh buffer: headroom, then the carried bytes. Returns where reading starts.
    pub fn prepare(&mut self, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(&self.carry[..self.carry_len as usize]);
        self.carry_len = 0;
        buf.len()
    }

    /// Where the message in progress goes, once its first frame was read: the receiver id it
    /// was decoded for, whether or not any of it went out yet.
    pub fn message_receiver(&self) -> Option<u64> {
        match self.msg {
            Some(MsgState {
                target: Target::Forward(r),
                ..
            }) => Some(r),
            _ => None,
        }
    }

    /// The message in progress, decoded for `from`, goes on to `to` (its receiver left
    /// mid-message and what it had of it was carried into the backlog, docs/durability.md).
    pub fn redirect(&mut self, from: u64, to: u64) {
        if let Some(m) = self.msg.as_mut() {
            if m.target == Target::Forward(from) {
                m.target = Target::Forward(to);
            }
        }
    }

    /// The receiver holds an unfinished message from this sender.
    pub fn receiver_open(&self) -> Option<u64> {
        match self.msg {
            Some(MsgState {
                target: Target::Forward(r),
                out_started: true,
                ..
            }) => Some(r),
            _ => None,
        }
    }

    /// Decodes `buf[HEADROOM..]` (laid out by `prepare`) and appends the ranges to forward to
    /// `segs`. `receiver` is the connection id the current peer would forward to, if any.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
        receiver: Option<u64>,
        limits: DecodeLimits,
        segs: &mut Vec<Segment>,
    ) -> Outcome {
        self.decode_holding(buf, receiver, limits, segs, None)
    }

    /// As [`Inbound::decode`], for a connection that holds some messages (see [`Hold`]): a
    /// text message that starts, after JSON whitespace, with `{` is read whole into `hold`
    /// when `hold.mode` is set as it starts. Answers end in `hold.answers`; other held
    /// messages in `hold.released`, each to be written before the segment it names.
    pub fn decode_holding(
        &mut self,
        buf: &mut [u8],
        receiver: Option<u64>,
        limits: DecodeLimits,
        segs: &mut Vec<Segment>,
        mut hold: Option<&mut Hold>,
    ) -> Outcome {
        let mut out = Outcome::default();
        let end = buf.len();
        let mut i = HEADROOM;
        // Segments from here on belong to the message in progress; dropped if it turns bad.
        let mut msg_first_seg = segs.len();
        // The receiver is fixed for the whole buffer. If it changed mid-message (it left or
        // was replaced), the rest of that message has nowhere whole to go.
        if let Some(m) = self.msg.as_mut() {
            if matches!(m.target, Target::Forward(r) if receiver != Some(r)) {
                m.target = Target::Drop;
            }
        }
        if let Some(m) = self.msg.as_mut() {
            m.delivered = m.out_started;
        }
        while !self.closed {
            if let Some(mut f) = self.frame {
                let avail = f.remaining.min((end - i) as u64) as usize;
                if avail == 0 && f.remaining > 0 {
                    break;
                }
                let range = i..i + avail;
                apply_mask(&mut buf[range.clone()], f.mask, (f.pos % 4) as usize);
                f.pos += avail as u64;
                f.remaining -= avail as u64;
                i += avail;
                let frame_done = f.remaining == 0;
                self.frame = if frame_done { None } else { Some(f) };
                let hd = hold.as_deref_mut();
                if let Err(v) = self.data_chunk(
                    buf, range, frame_done, f.fin, segs, &mut out, hd, limits, receiver,
                ) {
                    self.violate(v, segs, msg_first_seg, &mut out);
                    break;
                }
                if self.msg.is_none() {
                    msg_first_seg = segs.len();
                }
                if !frame_done {
                    break;
                }
                continue;
            }
            let h = match parse_header(&buf[i..end], Sender::Client) {
                Err(e) => {
                    let reason = match e {
                        crate::ws::HeaderError::ReservedBits => "reserved bits set",
                        crate::ws::HeaderError::UnknownOpcode(_) => "unknown opcode",
                        crate::ws::HeaderError::ControlTooLong => "control frame too long",
                        crate::ws::HeaderError::ControlFragmented => "fragmented control frame",
                        crate::ws::HeaderError::LengthTopBit => "invalid 64-bit length",
                        _ => "client frames must be masked",
                    };
                    self.violate(
                        Closing::Violation(CloseCode::PROTOCOL, reason),
                        segs,
                        msg_first_seg,
                        &mut out,
                    );
                    break;
                }
                Ok(None) => {
                    self.keep(&buf[i..end]);
                    break;
                }
                Ok(Some(h)) => h,
            };
            let mask = h.mask.unwrap_or_default();
            if h.opcode.is_control() {
                let total = h.header_len + h.payload_len as usize;
                if end - i < total {
                    self.keep(&buf[i..end]);
                    break;
                }
                let (p0, p1) = (i + h.header_len, i + total);
                let payload = &mut buf[p0..p1];
                apply_mask(payload, mask, 0);
                i += total;
                match h.opcode {
                    OpCode::Ping => {
                        out.ping = Some((p0, p1));
                        out.pings += 1;
                    }
                    OpCode::Close => {
                        let closing = match parse_close_payload(payload) {
                            Ok(code) => Closing::Peer(code),
                            Err(e) => Closing::Violation(e.answer(), "invalid close frame"),
                        };
                        match closing {
                            Closing::Peer(_) => {
                                out.closing = Some(closing);
                                self.closed = true;
                            }
                            v => self.violate(v, segs, msg_first_seg, &mut out),
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let mut held = false;
            if let (Some(hd), OpCode::Text, None) = (hold.as_deref_mut(), h.opcode, &self.msg) {
                if let Some(mode) = hd.mode {
                    // The decision needs the first byte that is not whitespace: wait for it
                    // like for a control frame, when it is not in this read yet.
                    let p0 = i + h.header_len;
                    let avail = &buf[p0..end.min(p0.saturating_add(h.payload_len as usize))];
                    held = match first_non_ws(avail, mask) {
                        Some(b) => b == b'{',
                        // All of this frame is whitespace: the next frame decides, unless
                        // this is the whole message.
                        None if avail.len() as u64 == h.payload_len => !h.fin,
                        None if end - i <= CARRY_MAX => {
                            self.keep(&buf[i..end]);
                            break;
                        }
                        None => true,
                    };
                    if held {
                        hd.begin(mode);
                    }
                }
            }
            out.data_seen = true;
            match (h.opcode, self.msg.is_some()) {
                (OpCode::Continuation, false) => {
                    self.violate(
                        Closing::Violation(
                            CloseCode::PROTOCOL,
                            "continuation frame without a message",
                        ),
                        segs,
                        msg_first_seg,
                        &mut out,
                    );
                    break;
                }
                (OpCode::Text | OpCode::Binary, true) => {
                    self.violate(
                        Closing::Violation(
                            CloseCode::PROTOCOL,
                            "new message inside a fragmented one",
                        ),
                        segs,
                        msg_first_seg,
                        &mut out,
                    );
                    break;
                }
                (OpCode::Continuation, true) => {}
                (op, _) => {
                    self.msg = Some(MsgState {
                        text: op == OpCode::Text,
                        bytes: 0,
                        frames: 0,
                        utf8: Utf8Validator::new(),
                        target: if held {
                            Target::Hold
                        } else {
                            receiver.map_or(Target::Drop, Target::Forward)
                        },
                        out_started: false,
                        delivered: false,
                    });
                    msg_first_seg = segs.len();
                }
            }
            let msg = self.msg.as_mut().expect("message state set above");
            msg.frames += 1;
            if msg.frames > limits.max_frames_per_message {
                self.violate(
                    Closing::Violation(CloseCode::POLICY, "too many fragments in one message"),
                    segs,
                    msg_first_seg,
                    &mut out,
                );
                break;
            }
            let exempt = match msg.target {
                Target::Capture => true,
                Target::Hold => hold.as_deref().is_some_and(Hold::exempt_from_message_limit),
                _ => false,
            };
            if msg.bytes + h.payload_len > limits.max_message_bytes && !exempt {
                self.violate(
                    Closing::Violation(CloseCode::TOO_BIG, "message too big"),
                    segs,
                    msg_first_seg,
                    &mut out,
                );
                break;
            }
            msg.bytes += h.payload_len;
            self.frame = Some(FrameState {
                fin: h.fin,
                remaining: h.payload_len,
                mask,
                pos: 0,
            });
            i += h.header_len;
        }
        // A held message this read did not finish is copied out before the buffer goes back.
        if let (Some(m), Some(hd)) = (&self.msg, hold) {
            if m.target == Target::Hold && !hd.copied() {
                hd.copy_out(buf, limits.max_message_bytes, false);
            }
        }
        out
    }

    fn keep(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= CARRY_MAX);
        self.carry[..bytes.len()].copy_from_slice(bytes);
        self.carry_len = bytes.len() as u8;
    }

    fn violate(
        &mut self,
        v: Closing,
        segs: &mut Vec<Segment>,
        msg_first_seg: usize,
        out: &mut Outcome,
    ) {
        segs.truncate(msg_first_seg);
        // Only a receiver that already holds part of this very message is left hanging.
        if let Some(MsgState {
            target: Target::Forward(r),
            delivered: true,
            ..
        }) = self.msg
        {
            out.aborted_receiver = Some(r);
        }
        out.closing = Some(v);
        self.closed = true;
        self.msg = None;
        self.frame = None;
    }

    // One call per chunk of payload on the hot path: plain arguments rather than a struct
    // built for every call.
    #[allow(clippy::too_many_arguments)]
    fn data_chunk(
        &mut self,
        buf: &mut [u8],
        range: std::ops::Range<usize>,
        frame_done: bool,
        frame_fin: bool,
        segs: &mut Vec<Segment>,
        out: &mut Outcome,
        hold: Option<&mut Hold>,
        limits: DecodeLimits,
        receiver: Option<u64>,
    ) -> Result<(), Closing> {
        let msg = self
            .msg
            .as_mut()
            .expect("data frames only arrive inside a message");
        let message_done = frame_done && frame_fin;
        let max = limits.max_message_bytes;
        // A held message is read first: what it decides is acted on after the UTF-8 check of
        // the bytes up to the point of decision, so the answer is the same whatever the
        // reads (an invalid byte before that point wins, one after it is never read).
        let held = match (msg.target, hold) {
            (Target::Capture | Target::Hold, Some(hd)) => {
                let captured = msg.target == Target::Capture;
                let declared = (msg.bytes, message_done);
                let (mut fed, upto) = hd.feed(buf, range.clone(), captured, max, declared);
                if message_done && fed == Fed::Hold && !captured {
                    fed = hd.ended(buf, max, msg.bytes);
                }
                Some((hd, fed, upto))
            }
            _ => None,
        };
        let checked = match held {
            Some((_, Fed::Forged | Fed::TooBig, upto)) => range.start + upto,
            _ => range.end,
        };
        if msg.text {
            let bad = Closing::Violation(CloseCode::INVALID_DATA, "invalid UTF-8 in text message");
            msg.utf8.feed(&buf[range.start..checked]).map_err(|_| bad)?;
            if message_done && checked == range.end {
                msg.utf8.finish().map_err(|_| bad)?;
            }
        }
        out.payload_bytes += range.len() as u64;
        if let Target::Forward(_) = msg.target {
            out.forwarded_bytes += range.len() as u64;
            if !range.is_empty() || frame_done {
                let op = match (msg.out_started, msg.text) {
                    (true, _) => OpCode::Continuation,
                    (false, true) => OpCode::Text,
                    (false, false) => OpCode::Binary,
                };
                let start =
                    encode_header_before(buf, range.start, message_done, op, range.len() as u64);
                segs.push((start, range.end));
                msg.out_started = true;
            }
        }
        if let Some((hd, fed, _)) = held {
            match fed {
                Fed::Hold => {}
                Fed::Answer => msg.target = Target::Capture,
                Fed::TooBig => {
                    return Err(Closing::Violation(CloseCode::TOO_BIG, "message too big"))
                }
                Fed::Forged => {
                    out.forged_request = true;
                    return Err(Closing::Violation(
                        CloseCode::POLICY,
                        "only the relay sends http_request messages to an agent",
                    ));
                }
            }
            if message_done {
                match (msg.target, receiver) {
                    (Target::Capture, _) => hd.finish_answer(),
                    (_, Some(r)) if hd.copied() => {
                        let len = hd.release(segs.len());
                        out.forwarded_bytes += len as u64;
                        msg.target = Target::Forward(r);
                    }
                    (_, Some(r)) => {
                        // All of it is in this read: forwarded from where it was read, frame
                        // by frame as the client sent it, like any message.
                        let n = hd.in_read.len();
                        for (k, &(a, b)) in hd.in_read.iter().enumerate() {
                            let op = if k == 0 {
                                OpCode::Text
                            } else {
                                OpCode::Continuation
                            };
                            let start =
                                encode_header_before(buf, a, k + 1 == n, op, (b - a) as u64);
                            segs.push((start, b));
                            out.forwarded_bytes += (b - a) as u64;
                        }
                        hd.in_read.clear();
                        msg.target = Target::Forward(r);
                    }
                    (_, None) => {
                        hd.discard();
                        msg.target = Target::Drop;
                    }
                }
            }
        }
        if message_done {
            match msg.target {
                Target::Forward(_) => out.messages_forwarded += 1,
                Target::Drop | Target::Hold => out.messages_dropped += 1,
                Target::Capture => out.answers += 1,
            }
            self.msg = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
