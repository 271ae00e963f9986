//! The relay's forwarding decoder driven the way the connection loop drives it: `prepare` a
//! buffer, append the next read, `decode` with a receiver present, write out the segments; at
//! read sizes and buffer sizes the input chooses.
//!
//! What is checked, besides "never panics":
//! * `prepare` lays out headroom then exactly the unconsumed tail of the previous read;
//! * every segment lies inside the buffer, after the previous one, and is exactly one unmasked
//!   server frame (`parse_header` with `Sender::Server`);
//! * the forwarded frames form well-formed messages (no continuation without a start, no new
//!   message inside an open one, only data opcodes, text valid UTF-8 or, while open, a valid
//!   prefix);
//! * a plain model of RFC 6455 run over the whole stream at once agrees on the messages
//!   forwarded (byte for byte), the message counts, each read's latest ping, which receiver
//!   holds an unfinished message, and why and whether the connection closes;
//! * the loop stops at a `closing` outcome, and a decoder fed more anyway forwards nothing.
//!
//! The receiver is `Some(1)` throughout, unless the input asks for a receiver schedule: then,
//! as between reads of a real connection, the receiver may leave (`None`) and a new one (a
//! new id, never an old one) may take its place. Each receiver must then still get
//! well-formed messages, the messages delivered must be the model's in order with some
//! dropped, and forwarded plus dropped must count every finished message.
//!
//! Input layout: 2 bytes buffer size, 1 byte message size limit, 1 byte holding the read-size
//! count `n` (1..=8, low 3 bits) and the schedule flag (top bit), `n` bytes of read sizes, with
//! the flag 1 byte of schedule (bit `k % 8` set: the receiver changes before read `k`), then
//! the bytes the client sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::relay::inbound::{Closing, DecodeLimits, Inbound, Segment, CARRY_MAX, HEADROOM};
use ringrelay::ws::frame::{parse_header, Sender};
use ringrelay::ws::mask::apply_mask_reference;
use ringrelay::ws::OpCode;

const RECEIVER: u64 = 1;

/// How the connection should end, in close codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Peer(u16),
    Violation(u16),
}

fn end_of(c: Closing) -> End {
    match c {
        Closing::Peer(code) => End::Peer(code),
        Closing::Violation(code, _) => End::Violation(code.0),
    }
}

/// A message prefix is invalid whatever may follow.
fn utf8_definitely_bad(b: &[u8]) -> bool {
    matches!(std::str::from_utf8(b), Err(e) if e.error_len().is_some())
}

/// What a receiver should get from the whole stream, worked out frame by frame without reads.
#[derive(Debug, Default)]
struct Model {
    messages: Vec<(OpCode, Vec<u8>)>,
    /// The message open when the stream (or the connection) ended, as far as it got.
    open: Option<(OpCode, Vec<u8>)>,
    /// Each ping before the end: the stream offset just past it, and its payload.
    pings: Vec<(usize, Vec<u8>)>,
    end: Option<End>,
}

/// Close payload rules (RFC 6455 sections 5.5.1 and 7.4), written out independently.
fn close_end(p: &[u8]) -> End {
    if p.is_empty() {
        return End::Peer(1005);
    }
    if p.len() == 1 {
        return End::Violation(1002);
    }
    let code = u16::from_be_bytes([p[0], p[1]]);
    let wire_ok = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !wire_ok {
        End::Violation(1002)
    } else if std::str::from_utf8(&p[2..]).is_err() {
        End::Violation(1007)
    } else {
        End::Peer(code)
    }
}

fn model(s: &[u8], limit: u64) -> Model {
    let mut m = Model::default();
    let mut bytes_in_msg = 0u64;
    let mut i = 0;
    loop {
        let h = match parse_header(&s[i..], Sender::Client) {
            Err(_) => {
                m.end = Some(End::Violation(1002));
                break;
            }
            Ok(None) => break,
            Ok(Some(h)) => h,
        };
        let mask = h.mask.expect("client headers are masked");
        if h.opcode.is_control() {
            let total = h.header_len + h.payload_len as usize;
            if s.len() - i < total {
                break;
            }
            let mut p = s[i + h.header_len..i + total].to_vec();
            apply_mask_reference(&mut p, mask, 0);
            i += total;
            match h.opcode {
                OpCode::Ping => m.pings.push((i, p)),
                OpCode::Close => {
                    m.end = Some(close_end(&p));
                    break;
                }
                _ => {}
            }
            continue;
        }
        match (h.opcode, m.open.is_some()) {
            (OpCode::Continuation, false) | (OpCode::Text | OpCode::Binary, true) => {
                m.end = Some(End::Violation(1002));
                break;
            }
            (OpCode::Continuation, true) => {}
            (op, _) => {
                m.open = Some((op, Vec::new()));
                bytes_in_msg = 0;
            }
        }
        if bytes_in_msg + h.payload_len > limit {
            m.end = Some(End::Violation(1009));
            break;
        }
        bytes_in_msg += h.payload_len;
        i += h.header_len;
        let avail = (h.payload_len.min((s.len() - i) as u64)) as usize;
        let mut p = s[i..i + avail].to_vec();
        apply_mask_reference(&mut p, mask, 0);
        i += avail;
        let (op, data) = m.open.as_mut().expect("opened above");
        data.extend_from_slice(&p);
        let text = *op == OpCode::Text;
        if text && utf8_definitely_bad(data) {
            m.end = Some(End::Violation(1007));
            break;
        }
        if (avail as u64) < h.payload_len {
            break;
        }
        if h.fin {
            if text && std::str::from_utf8(data).is_err() {
                m.end = Some(End::Violation(1007));
                break;
            }
            m.messages.push(m.open.take().expect("open"));
        }
    }
    m
}

/// One receiver's side: forwarded frames put back together into messages.
#[derive(Debug, Default)]
struct Received {
    open: Option<(OpCode, Vec<u8>)>,
}

impl Received {
    /// Takes one forwarded frame; returns the message it finished, if any.
    fn frame(&mut self, bytes: &[u8]) -> Option<(OpCode, Vec<u8>)> {
        let h = match parse_header(bytes, Sender::Server) {
            Ok(Some(h)) => h,
            other => panic!(
                "segment is not a server frame: {other:?} for {:?}",
                &bytes[..bytes.len().min(16)]
            ),
        };
        assert_eq!(
            h.header_len as u64 + h.payload_len,
            bytes.len() as u64,
            "segment is not exactly one frame"
        );
        let p = &bytes[h.header_len..];
        match (h.opcode, &mut self.open) {
            (OpCode::Continuation, Some((_, data))) => data.extend_from_slice(p),
            (OpCode::Text | OpCode::Binary, None) => self.open = Some((h.opcode, p.to_vec())),
            (op, open) => panic!(
                "forwarded {op:?} with open message {:?}",
                open.as_ref().map(|o| o.0)
            ),
        }
        let (op, data) = self.open.as_ref().expect("set above");
        if *op == OpCode::Text {
            assert!(
                !utf8_definitely_bad(data),
                "forwarded text is invalid UTF-8"
            );
        }
        if h.fin {
            let msg = self.open.take().expect("set above");
            if msg.0 == OpCode::Text {
                assert!(
                    std::str::from_utf8(&msg.1).is_ok(),
                    "forwarded text message ends mid character"
                );
            }
            return Some(msg);
        }
        None
    }
}

/// The ping an outcome reports, whether it is handed over as a copy or as a range of the
/// buffer holding the unmasked payload.
trait PingPayload {
    fn payload(&self, buf: &[u8]) -> Vec<u8>;
}

impl<const N: usize> PingPayload for ([u8; N], u8) {
    fn payload(&self, _: &[u8]) -> Vec<u8> {
        self.0[..self.1 as usize].to_vec()
    }
}

impl PingPayload for (usize, usize) {
    fn payload(&self, buf: &[u8]) -> Vec<u8> {
        let (a, b) = *self;
        assert!(
            a <= b && b <= buf.len(),
            "ping payload {a}..{b} outside a buffer of {}",
            buf.len()
        );
        buf[a..b].to_vec()
    }
}

struct Knobs<'a> {
    buf_size: usize,
    limit: u64,
    reads: Vec<usize>,
    schedule: Option<u8>,
    stream: &'a [u8],
}

fn knobs(input: &[u8]) -> Option<Knobs<'_>> {
    if input.len() < 4 {
        return None;
    }
    // The smallest buffer that can always make progress: headroom, a full carry, one byte.
    let buf_size =
        HEADROOM + CARRY_MAX + 1 + u16::from_be_bytes([input[0], input[1]]) as usize % 16384;
    let limit = match input[2] {
        l @ 0..=127 => l as u64 * 37,
        _ => 1 << 40,
    };
    let n = 1 + (input[3] & 7) as usize;
    let scheduled = input[3] & 0x80 != 0;
    let rest = &input[4..];
    let extra = n + scheduled as usize;
    if rest.len() < extra {
        return None;
    }
    let reads = rest[..n]
        .iter()
        .map(|&r| {
            if r < 192 {
                r as usize + 1
            } else {
                (r as usize - 191) * 512
            }
        })
        .collect();
    Some(Knobs {
        buf_size,
        limit,
        reads,
        schedule: scheduled.then(|| rest[n]),
        stream: &rest[extra..],
    })
}

/// The receiver for read `k`: phases alternate between a present receiver (ids 1, 2, 3, ...)
/// and none, moving on before each read whose schedule bit is set.
struct Schedule {
    bits: Option<u8>,
    phase: u64,
}

impl Schedule {
    fn receiver(&mut self, k: usize) -> Option<u64> {
        if let Some(bits) = self.bits {
            if k > 0 && (bits >> (k % 8)) & 1 == 1 {
                self.phase += 1;
            }
        }
        (self.phase & 1 == 0).then_some(self.phase / 2 + RECEIVER)
    }
}

/// `sub` appears within `all` in order (each receiver got some of the messages, none twice).
fn is_subsequence<T: PartialEq>(sub: &[T], all: &[T]) -> bool {
    let mut it = all.iter();
    sub.iter().all(|x| it.any(|y| y == x))
}

fuzz_target!(|input: &[u8]| {
    let Some(k) = knobs(input) else { return };
    let stream = k.stream;
    let strict = k.schedule.is_none();
    let limits = DecodeLimits {
        max_message_bytes: k.limit,
        max_frames_per_message: u32::MAX,
        max_pending_pongs: 16,
    };
    let expect = model(stream, k.limit);

    let mut inb = Inbound::default();
    let mut buf: Vec<u8> = Vec::with_capacity(k.buf_size);
    let mut segs: Vec<Segment> = Vec::new();
    let mut schedule = Schedule {
        bits: k.schedule,
        phase: 0,
    };
    let mut got: std::collections::BTreeMap<u64, Received> = Default::default();
    let mut delivered: Vec<(OpCode, Vec<u8>)> = Vec::new();
    let (mut forwarded, mut dropped) = (0usize, 0usize);
    let mut end = None;
    let mut receiver = None;
    let mut pos = 0;
    let mut reads = 0;
    let mut pings = expect.pings.iter().peekable();
    while pos < stream.len() {
        let start = inb.prepare(&mut buf);
        let carried = start - HEADROOM;
        assert!(
            start >= HEADROOM && carried <= CARRY_MAX,
            "prepare returned {start}"
        );
        assert_eq!(
            &buf[HEADROOM..start],
            &stream[pos - carried..pos],
            "carried bytes are not the unread tail"
        );
        let want = k.reads[reads % k.reads.len()]
            .min(k.buf_size - start)
            .min(stream.len() - pos);
        receiver = schedule.receiver(reads);
        reads += 1;
        let before = pos;
        buf.extend_from_slice(&stream[pos..pos + want]);
        pos += want;

        segs.clear();
        let out = inb.decode(&mut buf, receiver, limits, &mut segs);

        assert!(
            receiver.is_some() || segs.is_empty(),
            "segments with no receiver"
        );
        let mut last_end = 0;
        for &(a, b) in &segs {
            assert!(
                a >= last_end && a < b && b <= buf.len(),
                "segment {a}..{b} after {last_end} in a buffer of {}",
                buf.len()
            );
            last_end = b;
            let to = receiver.expect("checked above");
            if let Some(msg) = got.entry(to).or_default().frame(&buf[a..b]) {
                delivered.push(msg);
            }
        }
        forwarded += out.messages_forwarded as usize;
        dropped += out.messages_dropped as usize;
        if strict {
            assert_eq!(out.messages_dropped, 0, "dropped with a receiver present");
        }
        assert_eq!(
            forwarded,
            delivered.len(),
            "messages_forwarded disagrees with the frames forwarded"
        );

        // The latest ping that ended in this read (the carry holds a control frame until whole).
        let mut latest = None;
        while let Some((at, p)) = pings.next_if(|(at, _)| *at <= pos) {
            assert!(
                *at > before,
                "ping ending at {at} missed in an earlier read"
            );
            latest = Some(p);
        }
        let reported = out.ping.map(|p| p.payload(&buf));
        assert_eq!(reported.as_ref(), latest, "ping for read ending at {pos}");

        // Which receiver now holds part of a message whose rest is still to come.
        let open = receiver.filter(|r| got.get(r).is_some_and(|g| g.open.is_some()));
        match out.closing {
            // Only a receiver holding part of the very message that failed is aborted
            // (fuzz/regressions/frame_decoder-spurious-abort*: not one whose message ended
            // earlier in the same read).
            Some(Closing::Violation(..)) => assert_eq!(
                out.aborted_receiver, open,
                "abort of a receiver left mid-message"
            ),
            _ => {
                assert_eq!(
                    out.aborted_receiver, None,
                    "receiver aborted without a violation"
                );
                assert_eq!(
                    inb.receiver_open(),
                    open,
                    "receiver_open disagrees with what was forwarded"
                );
            }
        }
        if let Some(c) = out.closing {
            end = Some(end_of(c));
            break;
        }
    }

    if end.is_some() && pos < stream.len() {
        // The connection loop stops here; a decoder that is fed more anyway forwards nothing.
        let start = inb.prepare(&mut buf);
        let want = (k.buf_size - start).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + want]);
        segs.clear();
        let out = inb.decode(&mut buf, receiver, limits, &mut segs);
        assert!(
            segs.is_empty() && out.messages_forwarded == 0 && out.ping.is_none(),
            "decoded after closing: {out:?}"
        );
    }
    assert_eq!(end, expect.end, "connection end differs from the model");
    assert!(pings.next().is_none(), "pings not reported");
    assert_eq!(
        forwarded + dropped,
        expect.messages.len(),
        "forwarded and dropped do not count every finished message"
    );
    let last = receiver
        .and_then(|r| got.get(&r))
        .and_then(|g| g.open.as_ref());
    if strict {
        assert_eq!(
            delivered, expect.messages,
            "forwarded messages differ from the model"
        );
        if end.is_none() {
            // Nothing stopped the connection: every payload byte that arrived went out at once.
            if let Some((_, mdata)) = expect.open.as_ref().filter(|(_, d)| !d.is_empty()) {
                assert_eq!(
                    last.map(|(_, d)| d),
                    Some(mdata),
                    "open message not forwarded as far as it arrived"
                );
            }
        }
    } else {
        assert!(
            is_subsequence(&delivered, &expect.messages),
            "delivered messages are not the model's, in order"
        );
    }
    if let Some((op, data)) = last {
        let (mop, mdata) = expect
            .open
            .as_ref()
            .expect("receiver holds a message the model never opened");
        assert_eq!(op, mop);
        assert!(
            mdata.starts_with(data),
            "forwarded part of the open message is not its prefix"
        );
    }
});
