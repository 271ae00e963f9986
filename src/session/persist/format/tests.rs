use super::*;

/// A server frame: FIN and opcode, unmasked, the payload's length in the shortest form.
fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(fin as u8) << 7 | op];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

fn sample() -> Vec<SessionState> {
    let mut two = frame(false, 1, b"first half ");
    two.extend(frame(true, 0, b"second half"));
    vec![
        SessionState {
            id: "s1".into(),
            was_paired: true,
            backlogs: vec![KeptState {
                from: "desktop".into(),
                messages: vec![frame(true, 1, b"one"), two, frame(true, 2, &[7; 300])],
            }],
            replays: vec![ReplayState {
                role: "mobile".into(),
                numbered: 12,
                accepted: 5,
                last_from: "desktop".into(),
                window: vec![frame(true, 2, &[1; 70_000]), frame(true, 1, b"twelve")],
            }],
        },
        SessionState {
            id: "s2 ünïcode".into(),
            ..SessionState::default()
        },
    ]
}

/// The sample's sessions and two workers' limiter state.
fn sample_file() -> StateFile {
    let bucket = |a: &str, tokens| saved::SavedBucket {
        key: a.parse().unwrap(),
        tokens,
    };
    StateFile {
        sessions: sample(),
        limits: vec![
            SavedLimits {
                taken_unix_ms: 1_800_000_000_000,
                buckets: vec![bucket("10.0.0.1", 0.0), bucket("2001:db8::", 1.5)],
            },
            SavedLimits::default(),
        ],
    }
}

#[test]
fn a_file_round_trips() {
    let s = sample();
    let bytes = encode("node-a", &s);
    assert_eq!(decode(&bytes, "node-a"), Ok(s));
    assert_eq!(decode(&encode("n", &[]), "n"), Ok(vec![]));
    let f = sample_file();
    assert_eq!(
        decode_file(&encode_file("node-a", &f), "node-a"),
        Ok(f.clone())
    );
    assert_eq!(decode(&encode_file("node-a", &f), "node-a"), Ok(f.sessions));
}

/// A file the build before wrote (version 1: sessions only, the same records) still loads.
#[test]
fn a_version_1_file_still_loads() {
    let v1 = |body: &[Vec<u8>]| {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        put_str(&mut out, "node-a");
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        for r in body {
            out.extend_from_slice(r);
        }
        out.extend(end_record(body.len() as u64));
        out
    };
    let records: Vec<Vec<u8>> = sample().iter().map(session_record).collect();
    let got = decode_file(&v1(&records), "node-a").unwrap();
    assert_eq!(got.sessions, sample());
    assert!(got.limits.is_empty());
    // A limiter record is not a version 1 record: such a file is refused.
    let limits = vec![limits_record(&SavedLimits::default())];
    assert!(matches!(
        decode(&v1(&limits), "node-a"),
        Err(FormatError::Malformed { .. })
    ));
}

/// Every cut of the file, at every byte, is refused: none is read as a shorter state.
#[test]
fn every_truncation_point_is_refused() {
    let bytes = encode_file("node-a", &sample_file());
    for cut in 0..bytes.len() {
        let got = decode(&bytes[..cut], "node-a");
        assert!(
            got.is_err(),
            "a file cut at byte {cut} of {} was read",
            bytes.len()
        );
    }
}

/// A byte changed anywhere is caught (header, record framing, payload, checksum).
#[test]
fn every_flipped_byte_is_refused() {
    let bytes = encode_file("node-a", &sample_file());
    for at in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        let mut b = bytes.clone();
        b[at] ^= 0x20;
        assert!(decode(&b, "node-a").is_err(), "byte {at} flipped was read");
    }
}

#[test]
fn foreign_newer_and_other_node_files_are_refused_by_name() {
    let bytes = encode("node-a", &sample());
    assert_eq!(decode(b"hello, world", "node-a"), Err(FormatError::Foreign));
    assert_eq!(
        decode(&bytes, "node-b"),
        Err(FormatError::OtherNode {
            found: "node-a".into(),
            ours: "node-b".into()
        })
    );
    let mut newer = bytes.clone();
    newer[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes());
    assert_eq!(
        decode(&newer, "node-a"),
        Err(FormatError::Newer(VERSION + 1))
    );
    let mut older = bytes.clone();
    older[8..10].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(decode(&older, "node-a"), Err(FormatError::Unknown(0)));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing, "node-a"), Err(FormatError::Trailing(1)));
}

/// A record whose checksum holds but whose contents lie (a count past its bytes, a message
/// that is not whole server frames, an end count that is wrong) is refused too.
#[test]
fn well_checksummed_lies_are_refused() {
    let mut s = sample();
    s[0].backlogs[0]
        .messages
        .push(frame(false, 1, b"never finished"));
    assert!(matches!(
        decode(&encode("n", &s), "n"),
        Err(FormatError::Malformed { .. })
    ));
    let mut masked = frame(true, 1, b"x");
    masked[1] |= 0x80;
    let mut s = sample();
    s[0].replays[0].window.push(masked);
    assert!(decode(&encode("n", &s), "n").is_err());
    let mut s = sample();
    s[0].replays[0].numbered = 1;
    assert!(decode(&encode("n", &s), "n").is_err());
    let mut bytes = header("n");
    bytes.extend(end_record(3));
    assert!(matches!(
        decode(&bytes, "n"),
        Err(FormatError::Malformed { .. })
    ));
    // A limiter record whose bytes are not limiter state (a bucket cut in half).
    let mut limits = saved::encode(&sample_file().limits[0]);
    limits.truncate(limits.len() - 3);
    let mut bytes = header("n");
    bytes.extend(record(KIND_LIMITS, &limits));
    bytes.extend(end_record(1));
    assert!(matches!(
        decode(&bytes, "n"),
        Err(FormatError::Malformed { .. })
    ));
}

#[test]
fn whole_messages_are_recognised() {
    assert!(is_whole_message(&frame(true, 2, &[0; 200_000])));
    let mut m = frame(false, 2, b"a");
    m.extend(frame(false, 0, b"b"));
    m.extend(frame(true, 0, b"c"));
    assert!(is_whole_message(&m));
    assert!(!is_whole_message(&m[..m.len() - 1]));
    assert!(
        !is_whole_message(&frame(true, 0, b"a")),
        "a continuation first"
    );
    assert!(!is_whole_message(&frame(true, 9, b"")), "a ping");
    assert!(!is_whole_message(&[]));
    let mut two = frame(true, 1, b"a");
    two.extend(frame(true, 1, b"b"));
    assert!(!is_whole_message(&two), "two messages in one");
}

#[test]
fn crc32_is_the_ieee_one() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}
