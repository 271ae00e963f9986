//! The owner's check of a carrier's opening (`cluster::link::verify_answer`) and the carrying
//! node's frame-boundary tracker (`cluster::boundary::Boundary`), fed arbitrary bytes cut at
//! a read size the input chooses.
//!
//! What is checked, besides "never panics":
//! * the verdict only ever firms up as bytes arrive: once a prefix is accepted or refused,
//!   every longer prefix gets the same answer, and an accepted opening never takes more
//!   bytes than it was given;
//! * the honest opening built from the input's own bytes (as the relay's names allow) is
//!   always accepted, taking exactly its own length, whatever follows it;
//! * the tracker ends in the same state whatever the read size.
//!
//! Input layout: 1 byte read size, then the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::cluster::boundary::Boundary;
use ringrelay::cluster::link::{answer, verify_answer, Carried, NONCE_BYTES};

const SECRET: &[u8] = b"fuzz-secret-of-thirty-two-bytes!";
const NONCE: [u8; NONCE_BYTES] = [9; NONCE_BYTES];

fn firm_verdicts(bytes: &[u8], read: usize) {
    let mut seen: Option<Result<(Carried, usize), String>> = None;
    let mut end = 0;
    while end < bytes.len() {
        end = (end + read).min(bytes.len());
        let now = match verify_answer(SECRET, &NONCE, &bytes[..end]) {
            Ok(None) => {
                assert!(seen.is_none(), "a verdict was taken back at {end}");
                continue;
            }
            Ok(Some((c, used))) => {
                assert!(used <= end);
                Ok((c, used))
            }
            Err(e) => Err(e.to_string()),
        };
        match &seen {
            Some(before) => assert_eq!(before, &now, "the verdict changed at {end}"),
            None => seen = Some(now),
        }
    }
}

/// A name as the relay accepts them for node ids and region hints: 1 to 64 of
/// `[A-Za-z0-9._-]` (the first fuzzing run built descriptions from any bytes, longer than a
/// line may be, which the relay never sends).
fn name(bytes: &[u8]) -> String {
    const OK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    let s: String = bytes
        .iter()
        .take(64)
        .map(|b| OK[*b as usize % OK.len()] as char)
        .collect();
    if s.is_empty() {
        "n".into()
    } else {
        s
    }
}

fn honest_opening(bytes: &[u8]) {
    let carried = Carried {
        from: name(&bytes[..bytes.len().min(16)]),
        session: name(bytes).repeat(2),
        ip: "127.0.0.1".parse().unwrap(),
        role: Some(name(&bytes[bytes.len() / 2..]).chars().take(32).collect()),
        region: name(bytes),
    };
    let mut opening = answer(SECRET, &NONCE, &carried);
    let n = opening.len();
    opening.extend_from_slice(bytes);
    match verify_answer(SECRET, &NONCE, &opening) {
        Ok(Some((c, used))) => assert!(c == carried && used == n),
        other => panic!("the honest opening was not accepted: {other:?}"),
    }
}

fn tracker_agrees(bytes: &[u8], read: usize) {
    let mut whole = Boundary::default();
    whole.feed(bytes);
    let mut cut = Boundary::default();
    for piece in bytes.chunks(read) {
        cut.feed(piece);
    }
    assert_eq!(
        (whole.can_close(), whole.owner_closed()),
        (cut.can_close(), cut.owner_closed())
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&r, bytes)) = data.split_first() else {
        return;
    };
    let read = (r as usize % 64) + 1;
    firm_verdicts(bytes, read);
    honest_opening(bytes);
    tracker_agrees(bytes, read);
    // As the owner's answer would start: a 101 head, then the bytes as frames.
    let mut stream = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
    stream.extend_from_slice(bytes);
    tracker_agrees(&stream, read);
});
