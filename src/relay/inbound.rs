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
    encode_header_before, parse_header, FrameHeader, Sender, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
    MAX_SERVER_HEADER_LEN,
};
use crate::ws::mask::apply_mask;
use crate::ws::{CloseCode, OpCode, Utf8Validator};
use std::ops::{ControlFlow, Range};

mod hold;
pub use hold::{Fed, HeldAnswer, Hold, HoldMode, Released};

/// Bytes kept free at the front of every read buffer for a chunk's server header.
pub const HEADROOM: usize = MAX_SERVER_HEADER_LEN;
/// A partial header or a partial control frame is all that is ever carried between reads.
pub const CARRY_MAX: usize = MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD;

/// The chunk's type of a range to write (the decoder produces them).
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
    /// Where the latest ping's (unmasked) payload sits in the buffer.
    pub ping: Option<(usize, usize)>,
    /// Pings in this buffer.
    pub pings: u32,
    /// Pongs made for them (see [`Pongs`]): one per ping up to
    /// `DecodeLimits::max_pending_pongs`; the rest were coalesced into the latest one's.
    pub pongs: u32,
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
    /// Pongs one read may answer with, each ping its own; past it they are coalesced.
    pub max_pending_pongs: u32,
}

/// Where the pongs answering a read's pings go. Each is a whole server frame made in place:
/// its header written over the front of the ping's (always larger, masked) header, its
/// payload the ping's, unmasked.
#[derive(Debug)]
pub enum Pongs<'a> {
    /// Into the segments to write, at the ping's place among the frames forwarded: the echo
    /// route, where the receiver is the sender (RFC 6455 section 5.5.2: a pong answers before
    /// the data that followed its ping, even between the fragments of a message).
    Inline,
    /// Into this list, to be written back to the sender apart: the relay route, where the
    /// segments go to the other peer.
    Aside(&'a mut Vec<Segment>),
}

impl Inbound {
    /// Between frames and messages, nothing carried: what `Inbound::default()` is.
    pub fn at_rest(&self) -> bool {
        self.frame.is_none() && self.msg.is_none() && self.carry_len == 0 && !self.closed
    }

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

    /// The payload length of the frame the last read ended inside, if it did.
    pub fn open_frame_len(&self) -> Option<u64> {
        self.frame.map(|f| f.pos + f.remaining)
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
        let mut pongs = Vec::new();
        self.decode_holding(buf, receiver, limits, segs, None, Pongs::Aside(&mut pongs))
    }

    /// As [`Inbound::decode`], for a connection that holds some messages (see [`Hold`]): a
    /// text message that starts, after JSON whitespace, with `{` is read whole into `hold`
    /// when `hold.mode` is set as it starts. Answers end in `hold.answers`; other held
    /// messages in `hold.released`, each to be written before the segment it names.
    ///
    /// One frame step at a time: the payload of the frame in progress ([`Inbound::payload`]),
    /// else the next header ([`Inbound::next_frame`]), until the buffer or the connection
    /// ends. Pings are answered as `pongs` says.
    pub fn decode_holding(
        &mut self,
        buf: &mut [u8],
        receiver: Option<u64>,
        limits: DecodeLimits,
        segs: &mut Vec<Segment>,
        hold: Option<&mut Hold>,
        pongs: Pongs<'_>,
    ) -> Outcome {
        let mut p = Pass {
            i: HEADROOM,
            msg_first_seg: segs.len(),
            buf,
            segs,
            hold,
            limits,
            receiver,
            pongs,
            last_pong: 0,
            out: Outcome::default(),
        };
        self.begin_read(receiver);
        while !self.closed {
            let step = match self.frame {
                Some(f) => self.payload(&mut p, f),
                None => self.next_frame(&mut p),
            };
            if step.is_break() {
                break;
            }
        }
        // A held message this read did not finish is copied out before the buffer goes back.
        if let (Some(m), Some(hd)) = (&self.msg, p.hold) {
            if m.target == Target::Hold && !hd.copied() {
                hd.copy_out(p.buf, limits.max_message_bytes, false);
            }
        }
        p.out
    }

    /// The receiver is fixed for the whole buffer. If it changed mid-message (it left or was
    /// replaced), the rest of that message has nowhere whole to go.
    #[inline]
    fn begin_read(&mut self, receiver: Option<u64>) {
        if let Some(m) = self.msg.as_mut() {
            if matches!(m.target, Target::Forward(r) if receiver != Some(r)) {
                m.target = Target::Drop;
            }
            m.delivered = m.out_started;
        }
    }

    /// Unmasks what this read holds of the frame in progress and hands it on
    /// ([`Inbound::data_chunk`]). Goes on to the next frame only when this one ended.
    #[inline]
    fn payload(&mut self, p: &mut Pass<'_>, mut f: FrameState) -> ControlFlow<()> {
        let avail = f.remaining.min((p.buf.len() - p.i) as u64) as usize;
        if avail == 0 && f.remaining > 0 {
            return ControlFlow::Break(());
        }
        let range = p.i..p.i + avail;
        apply_mask(&mut p.buf[range.clone()], f.mask, (f.pos % 4) as usize);
        f.pos += avail as u64;
        f.remaining -= avail as u64;
        p.i += avail;
        let frame_done = f.remaining == 0;
        self.frame = if frame_done { None } else { Some(f) };
        if let Err(v) = self.data_chunk(p, range, frame_done, f.fin) {
            self.violate(v, p);
            return ControlFlow::Break(());
        }
        if self.msg.is_none() {
            p.msg_first_seg = p.segs.len();
        }
        if frame_done {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    /// Reads the next frame's header: a control frame is handled whole, a data frame opens
    /// or continues its message. A header cut by the end of the read is kept for the next.
    #[inline]
    fn next_frame(&mut self, p: &mut Pass<'_>) -> ControlFlow<()> {
        let h = match parse_header(&p.buf[p.i..], Sender::Client) {
            Err(e) => {
                let reason = e.close_reason();
                self.violate(Closing::Violation(CloseCode::PROTOCOL, reason), p);
                return ControlFlow::Break(());
            }
            Ok(None) => {
                self.keep(&p.buf[p.i..]);
                return ControlFlow::Break(());
            }
            Ok(Some(h)) => h,
        };
        if h.opcode.is_control() {
            self.control_frame(p, &h)
        } else {
            self.data_header(p, &h)
        }
    }

    /// A ping is noted for a pong, a close ends the decoding; a control frame cut by the end
    /// of the read is kept whole for the next (it is never forwarded in pieces).
    fn control_frame(&mut self, p: &mut Pass<'_>, h: &FrameHeader) -> ControlFlow<()> {
        let total = h.header_len + h.payload_len as usize;
        if p.buf.len() - p.i < total {
            self.keep(&p.buf[p.i..]);
            return ControlFlow::Break(());
        }
        let (p0, p1) = (p.i + h.header_len, p.i + total);
        let payload = &mut p.buf[p0..p1];
        apply_mask(payload, h.mask.unwrap_or_default(), 0);
        p.i += total;
        match h.opcode {
            OpCode::Ping => answer_ping(p, p0, p1),
            OpCode::Close => {
                let closing = match parse_close_payload(payload) {
                    Ok(code) => Closing::Peer(code),
                    Err(e) => Closing::Violation(e.answer(), "invalid close frame"),
                };
                match closing {
                    Closing::Peer(_) => {
                        p.out.closing = Some(closing);
                        self.closed = true;
                    }
                    v => self.violate(v, p),
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// A data frame's header: decides whether its message is held, opens or continues the
    /// message within its limits, and leaves the frame's payload for [`Inbound::payload`].
    #[inline]
    fn data_header(&mut self, p: &mut Pass<'_>, h: &FrameHeader) -> ControlFlow<()> {
        let mask = h.mask.unwrap_or_default();
        let Some(held) = self.hold_or_wait(p, h, mask) else {
            return ControlFlow::Break(());
        };
        p.out.data_seen = true;
        if let Err(v) = self.open_message(p, h, held) {
            self.violate(v, p);
            return ControlFlow::Break(());
        }
        self.frame = Some(FrameState {
            fin: h.fin,
            remaining: h.payload_len,
            mask,
            pos: 0,
        });
        p.i += h.header_len;
        ControlFlow::Continue(())
    }

    /// Whether the text message this frame starts is held (see [`Hold`]), which its first
    /// byte that is not JSON whitespace decides. `None`: that byte is not in this read yet,
    /// and the frame is kept, like a control frame, for the next.
    #[inline]
    fn hold_or_wait(&mut self, p: &mut Pass<'_>, h: &FrameHeader, mask: [u8; 4]) -> Option<bool> {
        let (Some(hd), OpCode::Text, true) = (p.hold.as_deref_mut(), h.opcode, self.msg.is_none())
        else {
            return Some(false);
        };
        let Some(mode) = hd.mode else {
            return Some(false);
        };
        let (i, end) = (p.i, p.buf.len());
        let p0 = i + h.header_len;
        let avail = &p.buf[p0..end.min(p0.saturating_add(h.payload_len as usize))];
        let held = match first_non_ws(avail, mask) {
            Some(b) => b == b'{',
            // All of this frame is whitespace: the next frame decides, unless this is the
            // whole message.
            None if avail.len() as u64 == h.payload_len => !h.fin,
            None if end - i <= CARRY_MAX => {
                self.keep(&p.buf[i..end]);
                return None;
            }
            None => true,
        };
        if held {
            hd.begin(mode);
        }
        Some(held)
    }

    /// Opens a message on its first frame or continues the one in progress, and counts the
    /// frame against the message's limits (fragments, then bytes).
    #[inline]
    fn open_message(
        &mut self,
        p: &mut Pass<'_>,
        h: &FrameHeader,
        held: bool,
    ) -> Result<(), Closing> {
        match (h.opcode, self.msg.is_some()) {
            (OpCode::Continuation, false) => {
                return Err(Closing::Violation(
                    CloseCode::PROTOCOL,
                    "continuation frame without a message",
                ));
            }
            (OpCode::Text | OpCode::Binary, true) => {
                return Err(Closing::Violation(
                    CloseCode::PROTOCOL,
                    "new message inside a fragmented one",
                ));
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
                        p.receiver.map_or(Target::Drop, Target::Forward)
                    },
                    out_started: false,
                    delivered: false,
                });
                p.msg_first_seg = p.segs.len();
            }
        }
        let msg = self.msg.as_mut().expect("message state set above");
        msg.frames += 1;
        if msg.frames > p.limits.max_frames_per_message {
            return Err(Closing::Violation(
                CloseCode::POLICY,
                "too many fragments in one message",
            ));
        }
        let exempt = match msg.target {
            Target::Capture => true,
            Target::Hold => p
                .hold
                .as_deref()
                .is_some_and(Hold::exempt_from_message_limit),
            _ => false,
        };
        if msg.bytes + h.payload_len > p.limits.max_message_bytes && !exempt {
            return Err(Closing::Violation(CloseCode::TOO_BIG, "message too big"));
        }
        msg.bytes += h.payload_len;
        Ok(())
    }

    fn keep(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= CARRY_MAX);
        self.carry[..bytes.len()].copy_from_slice(bytes);
        self.carry_len = bytes.len() as u8;
    }

    fn violate(&mut self, v: Closing, p: &mut Pass<'_>) {
        p.segs.truncate(p.msg_first_seg);
        // Only a receiver that already holds part of this very message is left hanging.
        if let Some(MsgState {
            target: Target::Forward(r),
            delivered: true,
            ..
        }) = self.msg
        {
            p.out.aborted_receiver = Some(r);
        }
        p.out.closing = Some(v);
        self.closed = true;
        self.msg = None;
        self.frame = None;
    }

    /// One chunk of a data frame's payload, unmasked: held messages are fed first, then the
    /// UTF-8 check, then the chunk is forwarded as a frame of its own, then what holding
    /// decided is acted on, and the message is counted when it ends.
    #[inline]
    fn data_chunk(
        &mut self,
        p: &mut Pass<'_>,
        range: Range<usize>,
        frame_done: bool,
        frame_fin: bool,
    ) -> Result<(), Closing> {
        let msg = self
            .msg
            .as_mut()
            .expect("data frames only arrive inside a message");
        let message_done = frame_done && frame_fin;
        let fed = feed_held(msg, p, range.clone(), message_done);
        let checked = match fed {
            Some((Fed::Forged | Fed::TooBig, upto)) => range.start + upto,
            _ => range.end,
        };
        if msg.text {
            let bad = Closing::Violation(CloseCode::INVALID_DATA, "invalid UTF-8 in text message");
            msg.utf8
                .feed(&p.buf[range.start..checked])
                .map_err(|_| bad)?;
            if message_done && checked == range.end {
                msg.utf8.finish().map_err(|_| bad)?;
            }
        }
        p.out.payload_bytes += range.len() as u64;
        if let Target::Forward(_) = msg.target {
            forward_part(msg, p, range, frame_done, message_done);
        }
        if let Some((fed, _)) = fed {
            act_on_held(msg, p, fed, message_done)?;
        }
        if message_done {
            crate::stats::sizes::count(msg.bytes);
            match msg.target {
                Target::Forward(_) => p.out.messages_forwarded += 1,
                Target::Drop | Target::Hold => p.out.messages_dropped += 1,
                Target::Capture => p.out.answers += 1,
            }
            self.msg = None;
        }
        Ok(())
    }
}

/// One decode of a read buffer: the buffer, where decoding has got to, and what it found.
struct Pass<'a> {
    buf: &'a mut [u8],
    /// The next byte to decode.
    i: usize,
    segs: &'a mut Vec<Segment>,
    /// Segments from here on belong to the message in progress; dropped if it turns bad.
    msg_first_seg: usize,
    hold: Option<&'a mut Hold>,
    limits: DecodeLimits,
    /// The connection id this read forwards to, if any.
    receiver: Option<u64>,
    pongs: Pongs<'a>,
    /// Where the latest pong went, in the segments or the list aside.
    last_pong: usize,
    out: Outcome,
}

/// A ping (its payload unmasked at `p0..p1`) gets its pong, made in place, where `p.pongs`
/// says. Past `max_pending_pongs` in one read the latest pong so far is emptied (the frames
/// around it stay where they were) and this ping's pong takes its turn: a flood costs at most
/// that many pongs per read, and the latest ping is always the one answered (RFC 6455
/// section 5.5.3 allows answering only the most recent of several pings).
fn answer_ping(p: &mut Pass<'_>, p0: usize, p1: usize) {
    p.out.ping = Some((p0, p1));
    p.out.pings += 1;
    let start = encode_header_before(p.buf, p0, true, OpCode::Pong, (p1 - p0) as u64);
    let list = match &mut p.pongs {
        Pongs::Inline => &mut *p.segs,
        Pongs::Aside(v) => &mut **v,
    };
    if p.out.pongs >= p.limits.max_pending_pongs.max(1) {
        if let Some(old) = list.get_mut(p.last_pong) {
            *old = (old.0, old.0);
        }
    } else {
        p.out.pongs += 1;
    }
    p.last_pong = list.len();
    list.push((start, p1));
}

/// A held message is read first: what it decides is acted on after the UTF-8 check of the
/// bytes up to the point of decision, so the answer is the same whatever the reads (an
/// invalid byte before that point wins, one after it is never read). Returns what holding
/// decided and how far into `range` it read; `None` for a message that is not held.
#[inline]
fn feed_held(
    msg: &MsgState,
    p: &mut Pass<'_>,
    range: Range<usize>,
    message_done: bool,
) -> Option<(Fed, usize)> {
    let hd = match (msg.target, p.hold.as_deref_mut()) {
        (Target::Capture | Target::Hold, Some(hd)) => hd,
        _ => return None,
    };
    let captured = msg.target == Target::Capture;
    let max = p.limits.max_message_bytes;
    let declared = (msg.bytes, message_done);
    let (mut fed, upto) = hd.feed(p.buf, range, captured, max, declared);
    if message_done && fed == Fed::Hold && !captured {
        fed = hd.ended(p.buf, max, msg.bytes);
    }
    Some((fed, upto))
}

/// Writes a server header over the front of the client's and adds the frame to the
/// segments: the chunk goes out as a frame of its own, with the opcode its place in the
/// message calls for.
#[inline]
fn forward_part(
    msg: &mut MsgState,
    p: &mut Pass<'_>,
    range: Range<usize>,
    frame_done: bool,
    message_done: bool,
) {
    p.out.forwarded_bytes += range.len() as u64;
    if !range.is_empty() || frame_done {
        let op = match (msg.out_started, msg.text) {
            (true, _) => OpCode::Continuation,
            (false, true) => OpCode::Text,
            (false, false) => OpCode::Binary,
        };
        let start = encode_header_before(p.buf, range.start, message_done, op, range.len() as u64);
        p.segs.push((start, range.end));
        msg.out_started = true;
    }
}

/// Acts on what holding decided: a bridge answer is captured, a forged request or an
/// oversized message ends the connection, and a held message that ended is released.
fn act_on_held(
    msg: &mut MsgState,
    p: &mut Pass<'_>,
    fed: Fed,
    message_done: bool,
) -> Result<(), Closing> {
    match fed {
        Fed::Hold => {}
        Fed::Answer => msg.target = Target::Capture,
        Fed::TooBig => return Err(Closing::Violation(CloseCode::TOO_BIG, "message too big")),
        Fed::Forged => {
            p.out.forged_request = true;
            return Err(Closing::Violation(
                CloseCode::POLICY,
                "only the relay sends http_request messages to an agent",
            ));
        }
    }
    if message_done {
        release_held(msg, p);
    }
    Ok(())
}

/// A held message ended: an answer goes to the bridge; any other goes on to the receiver,
/// copied out (written before the segment it names) or, when all of it is in this read,
/// from the read buffer; with no receiver it is dropped.
fn release_held(msg: &mut MsgState, p: &mut Pass<'_>) {
    let Some(hd) = p.hold.as_deref_mut() else {
        return;
    };
    match (msg.target, p.receiver) {
        (Target::Capture, _) => hd.finish_answer(),
        (_, Some(r)) if hd.copied() => {
            let len = hd.release(p.segs.len());
            p.out.forwarded_bytes += len as u64;
            msg.target = Target::Forward(r);
        }
        (_, Some(r)) => {
            // All of it is in this read: forwarded from where it was read, frame by frame as
            // the client sent it, like any message.
            let n = hd.in_read.len();
            for (k, &(a, b)) in hd.in_read.iter().enumerate() {
                let op = if k == 0 {
                    OpCode::Text
                } else {
                    OpCode::Continuation
                };
                let start = encode_header_before(p.buf, a, k + 1 == n, op, (b - a) as u64);
                p.segs.push((start, b));
                p.out.forwarded_bytes += (b - a) as u64;
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

#[cfg(test)]
mod tests;
