//! A holding connection's decoder (`decode_holding`): an agent's connection, which splits the
//! agent's stream into bridge answers (collected) and everything else (forwarded), or a
//! connection towards an agent, which refuses requests. Driven at two read schedules the
//! input chooses and once with the whole stream in one read.
//!
//! What is checked, besides "never panics":
//! * all three runs agree: the same forwarded frames, re-assembled into the same messages
//!   (of a message cut short by a violation, one run's part is the start of the other's);
//!   the same answers, byte for byte, with the same truncation flags and ids; the same ending;
//! * every collected answer is one by the streaming reader's rule (`bridge::sniff`), is at
//!   most the answer limit, and is marked truncated exactly when the limit cut it; its id is
//!   the reader's;
//! * no forwarded text message is one the rule calls an answer (agent's connection) or a
//!   request (towards an agent);
//! * `answers` in each outcome counts the answers completed in that read.
//!
//! Input layout: 1 byte read size A (its top bit: towards an agent rather than the agent's
//! own connection), 1 byte read size B, 1 byte answer limit knob, then the bytes sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::bridge::sniff::sniff;
use ringrelay::relay::inbound::{
    DecodeLimits, Hold, HoldMode, Inbound, Pongs, CARRY_MAX, HEADROOM,
};
use ringrelay::ws::frame::{parse_header, Sender, MAX_HEADER_LEN};

const LIMITS: DecodeLimits = DecodeLimits {
    max_message_bytes: 1 << 12,
    max_frames_per_message: 64,
    max_pending_pongs: 16,
};

#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// Forwarded frames as (fin, opcode byte, payload).
    frames: Vec<(bool, u8, Vec<u8>)>,
    answers: Vec<(Vec<u8>, bool, Option<String>)>,
    closing: Option<String>,
    forged: bool,
}

fn frames_of(bytes: &[u8], out: &mut Vec<(bool, u8, Vec<u8>)>) {
    let h = parse_header(bytes, Sender::Server)
        .expect("a server header")
        .expect("a whole header");
    assert_eq!(h.header_len as u64 + h.payload_len, bytes.len() as u64);
    out.push((h.fin, h.opcode as u8, bytes[h.header_len..].to_vec()));
}

fn run(stream: &[u8], read: usize, buf_size: usize, mode: HoldMode, limit: usize) -> Run {
    let mut inb = Inbound::default();
    let mut hold = Hold::new(limit);
    let mut out = Run {
        frames: Vec::new(),
        answers: Vec::new(),
        closing: None,
        forged: false,
    };
    let mut buf = Vec::with_capacity(buf_size);
    let mut pos = 0;
    while pos < stream.len() {
        let start = inb.prepare(&mut buf);
        let want = read.min(buf_size - start).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + want]);
        pos += want;
        let mut segs = Vec::new();
        hold.mode = Some(mode);
        let o = inb.decode_holding(
            &mut buf,
            Some(1),
            LIMITS,
            &mut segs,
            Some(&mut hold),
            Pongs::Aside(&mut Vec::new()),
        );
        let mut released = std::mem::take(&mut hold.released).into_iter().peekable();
        for (k, &(a, b)) in segs.iter().enumerate() {
            while let Some(r) = released.next_if(|r| r.before_seg == k) {
                frames_of(&r.frame, &mut out.frames);
            }
            frames_of(&buf[a..b], &mut out.frames);
        }
        for r in released {
            assert_eq!(r.before_seg, segs.len());
            frames_of(&r.frame, &mut out.frames);
        }
        assert_eq!(o.answers as usize, hold.answers.len());
        for a in &hold.answers {
            let answer = a.json();
            assert!(answer.len() <= limit);
            let s = sniff(answer);
            if a.truncated {
                assert_eq!(answer.len(), limit, "cut anywhere but at the limit");
            } else {
                assert_eq!(s.answer(true), Some(true), "{answer:?}");
                assert_eq!(a.id.as_deref(), s.id());
            }
            out.answers.push((answer.to_vec(), a.truncated, a.id.clone()));
        }
        hold.clear_done();
        out.forged |= o.forged_request;
        if let Some(c) = o.closing {
            out.closing = Some(format!("{c:?}"));
            break;
        }
    }
    out
}

/// Forwarded frames as whole messages: how the receiver sees them, whatever the cuts. The
/// last entry is the unfinished message, if any.
fn messages(frames: &[(bool, u8, Vec<u8>)]) -> (Vec<(u8, Vec<u8>)>, Option<(u8, Vec<u8>)>) {
    let mut msgs = Vec::new();
    let mut open: Option<(u8, Vec<u8>)> = None;
    for (fin, op, p) in frames {
        match open.as_mut() {
            Some((_, data)) => data.extend_from_slice(p),
            None => open = Some((*op, p.clone())),
        }
        if *fin {
            msgs.push(open.take().expect("set above"));
        }
    }
    (msgs, open)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = if data[0] & 0x80 != 0 {
        HoldMode::Requests
    } else {
        HoldMode::Answers
    };
    let (a, b) = (data[0] as usize % 64 + 1, data[1] as usize * 7 + 1);
    let limit = 16 + data[2] as usize * 4;
    let stream = &data[3..];
    let small = HEADROOM + CARRY_MAX + 1;
    let runs = [
        run(stream, a, small.max(a + HEADROOM + CARRY_MAX), mode, limit),
        run(stream, b, 4096, mode, limit),
        run(stream, stream.len().max(1), stream.len() + HEADROOM + CARRY_MAX + 1, mode, limit),
    ];
    let (whole, open) = messages(&runs[0].frames);
    for (op, payload) in &whole {
        if *op == 1 {
            let s = sniff(payload);
            match mode {
                HoldMode::Answers => assert_ne!(s.answer(true), Some(true), "{payload:?}"),
                HoldMode::Requests => assert!(!s.request_like(), "{payload:?}"),
            }
        }
    }
    for r in &runs[1..] {
        let (w, o) = messages(&r.frames);
        assert_eq!(w, whole);
        // A message cut short by a violation keeps what earlier reads forwarded, and that
        // depends on where the reads fell: one must be the start of the other.
        match (&o, &open) {
            (Some((op1, a)), Some((op2, b))) => {
                assert_eq!(op1, op2);
                assert!(a.starts_with(b) || b.starts_with(a));
            }
            (None, None) => {}
            // The stream ended inside a text message that may have been held: where a run
            // held it (it starts with `{`, or its first frame was all whitespace as far as
            // that run could see, more than a carried header's room), nothing of it went out.
            (Some((op, a)), None) | (None, Some((op, a))) => {
                let ws = a.iter().take_while(|b| b" \t\r\n".contains(b)).count();
                let holdable = *op == 1
                    && (a.get(ws).is_none_or(|&b| b == b'{') || ws + MAX_HEADER_LEN >= CARRY_MAX);
                assert!(
                    r.closing.is_some() || holdable,
                    "an open message without a violation: {a:?}"
                )
            }
        }
        assert_eq!(r.answers, runs[0].answers);
        assert_eq!(r.closing, runs[0].closing);
        assert_eq!(r.forged, runs[0].forged);
    }
});
