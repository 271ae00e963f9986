//! An agent's connection decoder (`decode_capturing`), which splits the agent's stream into
//! bridge answers (collected) and everything else (forwarded), driven at two read schedules
//! the input chooses and once with the whole stream in one read.
//!
//! What is checked, besides "never panics":
//! * all three runs agree: the same forwarded frames, re-assembled into the same messages
//!   (of a message cut short by a violation, one run's part is the start of the other's);
//!   the same answers, byte for byte, with the same truncation flags; the same ending;
//! * every collected answer starts with `ANSWER_PREFIX`, is at most the capture limit, and is
//!   marked truncated exactly when the limit cut it;
//! * `answers` in each outcome counts the answers completed in that read.
//!
//! Input layout: 1 byte read size A, 1 byte read size B, 1 byte capture limit knob, then the
//! bytes the agent sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::relay::inbound::{Capture, DecodeLimits, Inbound, ANSWER_PREFIX, CARRY_MAX, HEADROOM};
use ringrelay::ws::frame::{parse_header, Sender};

const LIMITS: DecodeLimits = DecodeLimits {
    max_message_bytes: 1 << 16,
    max_frames_per_message: 64,
};

#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// Forwarded frames as (fin, opcode byte, payload).
    frames: Vec<(bool, u8, Vec<u8>)>,
    answers: Vec<(Vec<u8>, bool)>,
    closing: Option<String>,
}

fn run(stream: &[u8], read: usize, buf_size: usize, limit: usize) -> Run {
    let mut inb = Inbound::default();
    let mut cap = Capture::new(limit);
    let mut out = Run {
        frames: Vec::new(),
        answers: Vec::new(),
        closing: None,
    };
    let mut buf = Vec::with_capacity(buf_size);
    let mut pos = 0;
    while pos < stream.len() {
        let start = inb.prepare(&mut buf);
        let want = read.min(buf_size - start).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + want]);
        pos += want;
        let mut segs = Vec::new();
        let o = inb.decode_capturing(&mut buf, Some(1), LIMITS, &mut segs, Some(&mut cap));
        for (a, b) in segs {
            let h = parse_header(&buf[a..b], Sender::Server)
                .expect("a server header")
                .expect("a whole header");
            assert_eq!(h.header_len as u64 + h.payload_len, (b - a) as u64);
            out.frames
                .push((h.fin, h.opcode as u8, buf[a + h.header_len..b].to_vec()));
        }
        assert_eq!(o.answers as usize, cap.done.len());
        for &(a, b, truncated) in &cap.done {
            let answer = &cap.buf[a..b];
            assert!(answer.starts_with(ANSWER_PREFIX), "{answer:?}");
            assert!(answer.len() <= limit);
            if truncated {
                assert_eq!(answer.len(), limit, "cut anywhere but at the limit");
            }
            out.answers.push((answer.to_vec(), truncated));
        }
        cap.compact();
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
    let (a, b) = (data[0] as usize % 64 + 1, data[1] as usize * 7 + 1);
    let limit = ANSWER_PREFIX.len() + data[2] as usize * 4;
    let stream = &data[3..];
    let small = HEADROOM + CARRY_MAX + 1;
    let runs = [
        run(stream, a, small.max(a + HEADROOM + CARRY_MAX), limit),
        run(stream, b, 4096, limit),
        run(stream, stream.len().max(1), stream.len() + HEADROOM + CARRY_MAX + 1, limit),
    ];
    let (whole, open) = messages(&runs[0].frames);
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
            (Some((_, a)), None) | (None, Some((_, a))) => {
                assert!(r.closing.is_some(), "an open message without a violation: {a:?}")
            }
        }
        assert_eq!(r.answers, runs[0].answers);
        assert_eq!(r.closing, runs[0].closing);
    }
});
