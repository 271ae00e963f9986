use super::*;
use crate::session::persist::format::{KeptState, ReplayState};

/// A server text frame holding `text`, as the relay keeps messages.
fn frame(text: &str) -> Vec<u8> {
    let mut f = vec![0x81, text.len() as u8];
    f.extend_from_slice(text.as_bytes());
    f
}

fn sample() -> Share {
    let state = SessionState {
        id: "room-1".into(),
        was_paired: true,
        backlogs: vec![KeptState {
            from: "a".into(),
            messages: vec![frame("kept 1"), frame("kept 2")],
        }],
        replays: vec![ReplayState {
            role: "b".into(),
            numbered: 7,
            accepted: 5,
            last_from: "a".into(),
            window: vec![frame("six"), frame("seven")],
        }],
    };
    Share {
        sessions: vec![
            LiveSession {
                state,
                told: vec![("b".into(), 4)],
            },
            LiveSession {
                state: SessionState {
                    id: "room-2".into(),
                    ..SessionState::default()
                },
                told: vec![],
            },
        ],
        conns: vec![
            ConnState {
                fd: 1,
                session: Some(0),
                slot: 1,
                role: "b".into(),
                counts: true,
                events: Some(([7; 16], false)),
                ip: "127.0.0.9".parse().unwrap(),
                tls: None,
                bridge_key: None,
            },
            ConnState {
                fd: 0,
                session: Some(1),
                slot: 0,
                role: "desktop".into(),
                counts: false,
                events: Some(([9; 16], true)),
                ip: "::1".parse().unwrap(),
                tls: Some(Carried(zeroize::Zeroizing::new(vec![5; 70]))),
                bridge_key: Some("0123456789abcdef0123456789abcdef".into()),
            },
            ConnState {
                fd: 2,
                session: None,
                slot: 0,
                role: "echo".into(),
                counts: false,
                events: None,
                ip: "127.0.0.1".parse().unwrap(),
                tls: None,
                bridge_key: None,
            },
        ],
        limits: SavedLimits {
            taken_unix_ms: 1_800_000_000_000,
            buckets: vec![crate::limits::saved::SavedBucket {
                key: "127.0.0.9".parse().unwrap(),
                tokens: 0.25,
            }],
        },
    }
}

#[test]
fn a_share_round_trips() {
    let share = sample();
    let bytes = encode(&share);
    assert_eq!(decode(&bytes, 3).unwrap(), share);
    let empty = Share::default();
    assert_eq!(decode(&encode(&empty), 0).unwrap(), empty);
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused() {
    let bytes = encode(&sample());
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut], 3).is_err(), "cut at {cut} accepted");
    }
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x20;
        assert!(decode(&b, 3).is_err(), "flip at {at} accepted");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&longer, 3).is_err());
}

/// Re-encodes a share with a changed body (a valid checksum), to check the reader's own
/// checks rather than the checksum's.
fn resealed(mut bytes: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    bytes.truncate(bytes.len() - 4);
    edit(&mut bytes);
    let crc = format::crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn a_newer_version_a_foreign_blob_and_lying_indexes_are_refused() {
    let bytes = encode(&sample());
    let newer = resealed(bytes.clone(), |b| {
        b[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes())
    });
    assert_eq!(decode(&newer, 3), Err(WireError::Newer(VERSION + 1)));
    // Version 1 had no TLS state, bridge keys or limits: refused, never read as if it had.
    let older = resealed(bytes.clone(), |b| {
        b[8..10].copy_from_slice(&1u16.to_le_bytes())
    });
    assert_eq!(decode(&older, 3), Err(WireError::Older(1)));
    assert_eq!(decode(b"RRSTATE\0....", 0), Err(WireError::Foreign));
    // Fewer descriptors came than the connections name.
    assert!(matches!(decode(&bytes, 2), Err(WireError::Malformed(_))));
    // Two connections in one seat, and a descriptor named twice.
    let mut share = sample();
    share.conns[1].session = Some(0);
    share.conns[1].slot = 1;
    assert_eq!(
        decode(&encode(&share), 3),
        Err(WireError::Malformed("two connections in one seat"))
    );
    let mut share = sample();
    share.conns[2].fd = 1;
    assert_eq!(
        decode(&encode(&share), 3),
        Err(WireError::Malformed("a descriptor named twice"))
    );
    let mut share = sample();
    share.conns[0].session = Some(5);
    assert!(matches!(
        decode(&encode(&share), 3),
        Err(WireError::Malformed(_))
    ));
}
