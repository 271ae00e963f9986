//! Both sides of the node-to-node link's opening (`cluster::link`) and the carrying node's
//! frame-boundary tracker (`cluster::boundary::Boundary`), fed arbitrary bytes cut at a read
//! size the input chooses.
//!
//! What is checked, besides "never panics":
//! * the owner's verdict on a carrier's answer only firms up as bytes arrive: once a prefix
//!   is accepted or refused, every longer prefix gets the same answer, and an accepted
//!   opening never takes more bytes than it was given;
//! * the honest opening built from the input's own bytes (as the relay's names allow) is
//!   always accepted by the owner, taking exactly its own length whatever follows it, and the
//!   owner's `ok` always satisfies the carrier that sent it;
//! * the carrier accepts no verdict line but that one: the input's bytes as a verdict (after
//!   an `ok`, or alone), the carrier's own proof sent back, and the `ok` made for another
//!   carrier nonce are all refused; a challenge line from the input parses to a nonce only
//!   when it is exactly a version 2 challenge;
//! * the tracker ends in the same state whatever the read size.
//!
//! Input layout: 1 byte read size, then the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::cluster::boundary::Boundary;
use ringrelay::cluster::link::{
    answer, challenge_line, parse_challenge, verify_answer, Accepted, Carried, LinkError,
    NONCE_BYTES,
};

const SECRET: &[u8] = b"fuzz-secret-of-thirty-two-bytes!";
const NONCE: [u8; NONCE_BYTES] = [9; NONCE_BYTES];
const CARRIER_NONCE: [u8; NONCE_BYTES] = [4; NONCE_BYTES];

fn firm_verdicts(bytes: &[u8], read: usize) {
    let mut seen: Option<Result<Accepted, String>> = None;
    let mut end = 0;
    while end < bytes.len() {
        end = (end + read).min(bytes.len());
        let now = match verify_answer(SECRET, &NONCE, &bytes[..end]) {
            Ok(None) => {
                assert!(seen.is_none(), "a verdict was taken back at {end}");
                continue;
            }
            Ok(Some(a)) => {
                assert!(a.used <= end);
                Ok(a)
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
    let (mut opening, owner_proof) = answer(SECRET, &NONCE, &CARRIER_NONCE, &carried);
    let n = opening.len();
    let carrier_line = opening[..n - 1].rsplit(|&b| b == b'\n').next().unwrap().to_vec();
    opening.extend_from_slice(bytes);
    let accepted = match verify_answer(SECRET, &NONCE, &opening) {
        Ok(Some(a)) => {
            assert!(a.carried == carried && a.used == n);
            a
        }
        other => panic!("the honest opening was not accepted: {other:?}"),
    };
    let ok = &accepted.ok[..accepted.ok.len() - 1];
    assert_eq!(owner_proof.check_verdict(ok), Ok(()));

    // Anything else the carrier might be sent as a verdict.
    let mut forged = b"RRLINK/2 ok ".to_vec();
    forged.extend_from_slice(bytes);
    for line in [&forged[..], bytes] {
        if line != ok {
            assert!(owner_proof.check_verdict(line).is_err(), "{line:?} passed");
        }
    }
    // Its own proof reflected, and an ok made for another carrier nonce.
    let own = carrier_line.split(|&b| b == b' ').nth(1).unwrap();
    let mut reflected = b"RRLINK/2 ok ".to_vec();
    reflected.extend_from_slice(own);
    assert_eq!(
        owner_proof.check_verdict(&reflected),
        Err(LinkError::BadOwnerProof)
    );
    let (_, other_proof) = answer(SECRET, &NONCE, &[5; NONCE_BYTES], &carried);
    assert_eq!(other_proof.check_verdict(ok), Err(LinkError::BadOwnerProof));
}

fn challenges(bytes: &[u8]) {
    if let Ok(nonce) = parse_challenge(bytes) {
        assert_eq!(challenge_line(&nonce).strip_suffix(b"\n"), Some(bytes));
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
    challenges(bytes);
    tracker_agrees(bytes, read);
    // As the owner's answer would start: a 101 head, then the bytes as frames.
    let mut stream = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
    stream.extend_from_slice(bytes);
    tracker_agrees(&stream, read);
});
