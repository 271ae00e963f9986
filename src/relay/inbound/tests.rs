//! The decoder checked against a plain model: any stream of client frames, cut into reads at
//! arbitrary boundaries, must come out as the same messages, in order, whole.

use super::*;
use crate::ws::frame::{encode_header, parse_header, Sender};
use crate::ws::mask::apply_mask_reference;

const LIMITS: DecodeLimits = DecodeLimits {
    max_message_bytes: 1 << 30,
    max_frames_per_message: u32::MAX,
    max_pending_pongs: 16,
};

/// One client frame on the wire.
fn client_frame(fin: bool, op: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut hdr = [0u8; 14];
    let n = encode_header(&mut hdr, fin, op, payload.len() as u64, Some(mask));
    let mut out = hdr[..n].to_vec();
    let mut p = payload.to_vec();
    apply_mask_reference(&mut p, mask, 0);
    out.extend_from_slice(&p);
    out
}

/// Runs a byte stream through the decoder with reads of the given sizes and buffers of
/// `buf_size`, the way the connection loop does. Returns the forwarded bytes and outcomes.
fn run(
    stream: &[u8],
    reads: &[usize],
    buf_size: usize,
    receiver: Option<u64>,
) -> (Vec<u8>, Vec<Outcome>) {
    run_with_pings(stream, reads, buf_size, receiver).0
}

/// Forwarded bytes and the outcome of every read.
type Forwarded = (Vec<u8>, Vec<Outcome>);

/// As `run`, also returning the payload of every ping answered.
fn run_with_pings(
    stream: &[u8],
    reads: &[usize],
    buf_size: usize,
    receiver: Option<u64>,
) -> (Forwarded, Vec<Vec<u8>>) {
    let mut pings = Vec::new();
    let mut inb = Inbound::default();
    let mut forwarded = Vec::new();
    let mut outcomes = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    let mut buf = Vec::with_capacity(buf_size);
    while pos < stream.len() {
        let start = inb.prepare(&mut buf);
        let room = buf_size - start;
        let want = reads[k % reads.len()]
            .max(1)
            .min(room)
            .min(stream.len() - pos);
        k += 1;
        buf.extend_from_slice(&stream[pos..pos + want]);
        pos += want;
        let mut segs = Vec::new();
        let out = inb.decode(&mut buf, receiver, LIMITS, &mut segs);
        for (a, b) in segs {
            forwarded.extend_from_slice(&buf[a..b]);
        }
        if let Some((a, b)) = out.ping {
            pings.push(buf[a..b].to_vec());
        }
        outcomes.push(out);
        if out.closing.is_some() {
            break;
        }
    }
    ((forwarded, outcomes), pings)
}

/// Parses unmasked server frames into (opcode, payload) messages, checking framing rules.
fn server_messages(mut bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut msgs = Vec::new();
    let mut cur: Option<(OpCode, Vec<u8>)> = None;
    while !bytes.is_empty() {
        let h = parse_header(bytes, Sender::Server)
            .unwrap()
            .expect("whole frames only");
        let p = &bytes[h.header_len..h.header_len + h.payload_len as usize];
        match (h.opcode, &mut cur) {
            (OpCode::Continuation, Some((_, data))) => data.extend_from_slice(p),
            (OpCode::Text | OpCode::Binary, None) => cur = Some((h.opcode, p.to_vec())),
            other => panic!("bad frame sequence {other:?}"),
        }
        if h.fin {
            msgs.push(cur.take().unwrap());
        }
        bytes = &bytes[h.header_len + h.payload_len as usize..];
    }
    assert!(cur.is_none(), "message left open");
    msgs
}

fn sample_stream() -> (Vec<u8>, Vec<(OpCode, Vec<u8>)>) {
    let mut s = Vec::new();
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    s.extend(client_frame(
        true,
        OpCode::Text,
        "héllo".as_bytes(),
        [1, 2, 3, 4],
    ));
    s.extend(client_frame(true, OpCode::Ping, b"p1", [5, 6, 7, 8]));
    s.extend(client_frame(
        false,
        OpCode::Text,
        "€ par".as_bytes(),
        [9, 9, 9, 9],
    ));
    s.extend(client_frame(true, OpCode::Pong, b"", [1, 1, 1, 1]));
    s.extend(client_frame(
        false,
        OpCode::Continuation,
        &"tie €".as_bytes()[..6],
        [2, 2, 2, 2],
    ));
    s.extend(client_frame(
        true,
        OpCode::Continuation,
        &"tie €".as_bytes()[6..],
        [3, 3, 3, 3],
    ));
    s.extend(client_frame(
        true,
        OpCode::Binary,
        &big,
        [0xde, 0xad, 0xbe, 0xef],
    ));
    s.extend(client_frame(true, OpCode::Binary, b"", [4, 3, 2, 1]));
    let expected = vec![
        (OpCode::Text, "héllo".as_bytes().to_vec()),
        (OpCode::Text, "€ partie €".as_bytes().to_vec()),
        (OpCode::Binary, big),
        (OpCode::Binary, Vec::new()),
    ];
    (s, expected)
}

#[test]
fn messages_survive_every_read_size() {
    let (stream, expected) = sample_stream();
    for read in [1, 2, 3, 5, 7, 13, 14, 100, 139, 140, 1000, 4096, 65536] {
        for buf_size in [HEADROOM + CARRY_MAX + 1, 512, 4096, 65536 + HEADROOM] {
            let ((fwd, outs), pings) = run_with_pings(&stream, &[read], buf_size, Some(7));
            assert_eq!(
                server_messages(&fwd),
                expected,
                "read {read} buf {buf_size}"
            );
            assert_eq!(outs.iter().map(|o| o.messages_forwarded).sum::<u32>(), 4);
            assert_eq!(pings, vec![b"p1".to_vec()]);
        }
    }
}

#[test]
fn small_frames_in_one_buffer_keep_their_boundaries() {
    let mut s = Vec::new();
    for i in 0..50u8 {
        s.extend(client_frame(true, OpCode::Binary, &[i; 10], [i, 1, 2, 3]));
    }
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    inb.prepare(&mut buf);
    buf.extend_from_slice(&s);
    let mut segs = Vec::new();
    let out = inb.decode(&mut buf, Some(1), LIMITS, &mut segs);
    assert_eq!(segs.len(), 50);
    assert_eq!(out.messages_forwarded, 50);
    for (i, &(a, b)) in segs.iter().enumerate() {
        assert_eq!(
            &buf[a..b],
            &[&[0x82u8, 10][..], &[i as u8; 10][..]].concat()[..]
        );
    }
}

fn closing_for(stream: &[u8]) -> Option<Closing> {
    let (_, outs) = run(stream, &[4096], 8192, Some(1));
    outs.last().and_then(|o| o.closing)
}

#[test]
fn violations_close_with_their_codes() {
    let v = |code: u16| move |c: Option<Closing>| matches!(c, Some(Closing::Violation(CloseCode(x), _)) if x == code);
    let good = client_frame(true, OpCode::Text, b"ok", [1, 2, 3, 4]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("rsv", vec![0xC1, 0x80, 0, 0, 0, 0], 1002),
        ("opcode 3", vec![0x83, 0x80, 0, 0, 0, 0], 1002),
        ("opcode 0xB", vec![0x8B, 0x80, 0, 0, 0, 0], 1002),
        ("ping fragmented", vec![0x09, 0x80, 0, 0, 0, 0], 1002),
        (
            "ping too long",
            client_frame(true, OpCode::Ping, &[0; 126], [1, 1, 1, 1]),
            1002,
        ),
        (
            "continuation first",
            client_frame(true, OpCode::Continuation, b"x", [1, 1, 1, 1]),
            1002,
        ),
        (
            "text inside fragmented",
            [
                client_frame(false, OpCode::Text, b"a", [1, 1, 1, 1]),
                client_frame(true, OpCode::Text, b"b", [1, 1, 1, 1]),
            ]
            .concat(),
            1002,
        ),
        (
            "bad close code",
            client_frame(true, OpCode::Close, &999u16.to_be_bytes(), [1, 1, 1, 1]),
            1002,
        ),
        (
            "one byte close",
            client_frame(true, OpCode::Close, &[3], [1, 1, 1, 1]),
            1002,
        ),
        (
            "close reason utf8",
            client_frame(true, OpCode::Close, &[3, 232, 0xff], [1, 1, 1, 1]),
            1007,
        ),
        (
            "text utf8",
            client_frame(true, OpCode::Text, &[0xce, 0xba, 0xff], [1, 1, 1, 1]),
            1007,
        ),
        (
            "text ends mid char",
            client_frame(true, OpCode::Text, &[0xce], [1, 1, 1, 1]),
            1007,
        ),
        (
            "top bit length",
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
            1002,
        ),
    ];
    for (name, bytes, code) in cases {
        let stream = [good.clone(), bytes].concat();
        let (fwd, outs) = run(&stream, &[4096], 8192, Some(1));
        assert!(
            v(code)(outs.last().unwrap().closing),
            "{name}: {:?}",
            outs.last().unwrap().closing
        );
        assert_eq!(
            server_messages(&fwd),
            vec![(OpCode::Text, b"ok".to_vec())],
            "{name}: the good message before still goes"
        );
    }
    let limits = DecodeLimits {
        max_message_bytes: 100,
        max_frames_per_message: u32::MAX,
        max_pending_pongs: 16,
    };
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    inb.prepare(&mut buf);
    buf.extend(client_frame(false, OpCode::Binary, &[0; 60], [1, 1, 1, 1]));
    buf.extend(client_frame(
        true,
        OpCode::Continuation,
        &[0; 60],
        [1, 1, 1, 1],
    ));
    let mut segs = Vec::new();
    let out = inb.decode(&mut buf, Some(1), limits, &mut segs);
    assert!(matches!(
        out.closing,
        Some(Closing::Violation(CloseCode::TOO_BIG, _))
    ));
    assert!(
        segs.is_empty(),
        "the part of the oversized message is not forwarded"
    );
}

#[test]
fn peer_close_and_nothing_after_it() {
    let s = [
        client_frame(
            true,
            OpCode::Close,
            &[3, 232, b'b', b'y', b'e'],
            [1, 2, 3, 4],
        ),
        client_frame(true, OpCode::Text, b"late", [1, 1, 1, 1]),
    ]
    .concat();
    assert_eq!(closing_for(&s), Some(Closing::Peer(1000)));
    let (fwd, _) = run(&s, &[4096], 8192, Some(1));
    assert!(fwd.is_empty());
    assert_eq!(
        closing_for(&client_frame(true, OpCode::Close, b"", [1, 1, 1, 1])),
        Some(Closing::Peer(1005))
    );
}

#[test]
fn no_receiver_drops_whole_messages_and_counts_them() {
    let (stream, _) = sample_stream();
    let (fwd, outs) = run(&stream, &[1000], 4096, None);
    assert!(fwd.is_empty());
    assert_eq!(outs.iter().map(|o| o.messages_dropped).sum::<u32>(), 4);
}

#[test]
fn receiver_change_mid_message_drops_the_rest() {
    let part1 = client_frame(false, OpCode::Binary, b"abc", [1, 1, 1, 1]);
    let part2 = client_frame(true, OpCode::Continuation, b"def", [1, 1, 1, 1]);
    let after = client_frame(true, OpCode::Binary, b"next", [1, 1, 1, 1]);
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    let mut segs = Vec::new();
    inb.prepare(&mut buf);
    buf.extend_from_slice(&part1);
    inb.decode(&mut buf, Some(1), LIMITS, &mut segs);
    assert_eq!(segs.len(), 1);
    assert_eq!(inb.receiver_open(), Some(1));
    segs.clear();
    inb.prepare(&mut buf);
    buf.extend_from_slice(&[part2, after].concat());
    let out = inb.decode(&mut buf, Some(2), LIMITS, &mut segs);
    assert_eq!((out.messages_dropped, out.messages_forwarded), (1, 1));
    assert_eq!(
        segs.len(),
        1,
        "only the next whole message goes to the new receiver"
    );
    assert_eq!(inb.receiver_open(), None);
}

#[test]
fn violation_mid_message_aborts_a_receiver_that_saw_part_of_it() {
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    let mut segs = Vec::new();
    inb.prepare(&mut buf);
    buf.extend_from_slice(&client_frame(false, OpCode::Text, b"abc", [1, 1, 1, 1]));
    inb.decode(&mut buf, Some(9), LIMITS, &mut segs);
    segs.clear();
    inb.prepare(&mut buf);
    buf.extend_from_slice(&client_frame(
        true,
        OpCode::Continuation,
        &[0xff],
        [1, 1, 1, 1],
    ));
    let out = inb.decode(&mut buf, Some(9), LIMITS, &mut segs);
    assert_eq!(out.aborted_receiver, Some(9));
    assert!(matches!(
        out.closing,
        Some(Closing::Violation(CloseCode::INVALID_DATA, _))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn random_messages_random_reads(
        msgs in proptest::collection::vec((proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..3000), 1usize..4), 1..12),
        reads in proptest::collection::vec(1usize..5000, 1..8),
        buf_size in 200usize..9000,
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (k, (text, data, frags)) in msgs.iter().enumerate() {
            let data: Vec<u8> = if *text { String::from_utf8_lossy(data).into_owned().into_bytes() } else { data.clone() };
            let op = if *text { OpCode::Text } else { OpCode::Binary };
            let step = data.len() / frags + 1;
            let pieces: Vec<&[u8]> = if data.is_empty() { vec![&data[..]] } else { data.chunks(step).collect() };
            for (j, p) in pieces.iter().enumerate() {
                let fop = if j == 0 { op } else { OpCode::Continuation };
                stream.extend(client_frame(j + 1 == pieces.len(), fop, p, [k as u8, 0x5a, j as u8, 0xa5]));
            }
            expected.push((op, data));
        }
        let (fwd, _) = run(&stream, &reads, buf_size.max(HEADROOM + CARRY_MAX + 1), Some(3));
        proptest::prop_assert_eq!(server_messages(&fwd), expected);
    }
}

/// Regression (fuzz/regressions/frame_decoder-spurious-abort): a message finished in this read
/// followed by a bad one must not abort the receiver, which got the first message whole.
#[test]
fn regression_no_abort_when_the_open_message_finished_in_the_same_read() {
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    let mut segs = Vec::new();
    inb.prepare(&mut buf);
    buf.extend_from_slice(&client_frame(false, OpCode::Text, b"abc", [1, 2, 3, 4]));
    inb.decode(&mut buf, Some(5), LIMITS, &mut segs);
    assert_eq!(inb.receiver_open(), Some(5));
    segs.clear();
    inb.prepare(&mut buf);
    buf.extend_from_slice(&client_frame(
        true,
        OpCode::Continuation,
        b"def",
        [1, 2, 3, 4],
    ));
    buf.extend_from_slice(&client_frame(false, OpCode::Binary, b"x", [1, 2, 3, 4]));
    buf.extend_from_slice(&[0x83, 0x80, 0, 0, 0, 0]);
    let out = inb.decode(&mut buf, Some(5), LIMITS, &mut segs);
    assert!(matches!(
        out.closing,
        Some(Closing::Violation(CloseCode::PROTOCOL, _))
    ));
    assert_eq!(out.aborted_receiver, None);
    assert_eq!(
        segs.len(),
        1,
        "the finished message still goes out, the bad one does not"
    );
}

#[test]
fn a_flood_of_tiny_fragments_is_cut_off_at_the_frame_cap() {
    let limits = DecodeLimits {
        max_message_bytes: 1 << 20,
        max_frames_per_message: 4,
        max_pending_pongs: 16,
    };
    let frames = |n: usize| -> Vec<u8> {
        let mut s = client_frame(false, OpCode::Text, b"a", [1, 2, 3, 4]);
        for i in 1..n {
            s.extend(client_frame(
                i + 1 == n,
                OpCode::Continuation,
                b"b",
                [5, 6, 7, 8],
            ));
        }
        s
    };
    // Exactly at the cap: one whole message.
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    inb.prepare(&mut buf);
    buf.extend(frames(4));
    let mut segs = Vec::new();
    let out = inb.decode(&mut buf, Some(1), limits, &mut segs);
    assert_eq!((out.closing, out.messages_forwarded), (None, 1));
    // One more frame: closed with 1008, and none of that message goes out.
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    inb.prepare(&mut buf);
    buf.extend(frames(5));
    let mut segs = Vec::new();
    let out = inb.decode(&mut buf, Some(1), limits, &mut segs);
    assert!(matches!(
        out.closing,
        Some(Closing::Violation(CloseCode::POLICY, _))
    ));
    assert!(segs.is_empty());
}

#[test]
fn pings_in_one_buffer_are_counted_and_only_the_latest_is_answered() {
    let s = [
        client_frame(true, OpCode::Ping, b"1", [1, 2, 3, 4]),
        client_frame(true, OpCode::Ping, b"22", [1, 2, 3, 4]),
        client_frame(true, OpCode::Ping, b"333", [1, 2, 3, 4]),
    ]
    .concat();
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    inb.prepare(&mut buf);
    buf.extend(s);
    let mut segs = Vec::new();
    let out = inb.decode(&mut buf, Some(1), LIMITS, &mut segs);
    assert_eq!(out.pings, 3);
    let (a, b) = out.ping.unwrap();
    assert_eq!(&buf[a..b], b"333");
}

/// What a holding connection produced: the bytes its receiver got (zero-copy segments and
/// released messages, in order), the answers collected (json, truncated, id) and the ending.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    forwarded: Vec<u8>,
    answers: Vec<(Vec<u8>, bool, Option<String>)>,
    closing: Option<Closing>,
    forged: bool,
}

/// Runs a stream through `decode_holding` the way a holding connection does.
fn run_holding(
    stream: &[u8],
    read: usize,
    buf_size: usize,
    mode: HoldMode,
    answer_limit: usize,
    limits: DecodeLimits,
) -> Held {
    let mut inb = Inbound::default();
    let mut hold = Hold::new(answer_limit);
    let mut got = Held {
        forwarded: Vec::new(),
        answers: Vec::new(),
        closing: None,
        forged: false,
    };
    let mut pos = 0;
    let mut buf = Vec::with_capacity(buf_size);
    while pos < stream.len() {
        let start = inb.prepare(&mut buf);
        let want = read.min(buf_size - start).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + want]);
        pos += want;
        let mut segs = Vec::new();
        hold.mode = Some(mode);
        let out = inb.decode_holding(
            &mut buf,
            Some(7),
            limits,
            &mut segs,
            Some(&mut hold),
            Pongs::Aside(&mut Vec::new()),
        );
        let mut released = std::mem::take(&mut hold.released).into_iter().peekable();
        for (k, (a, b)) in segs.iter().enumerate() {
            while let Some(r) = released.next_if(|r| r.before_seg == k) {
                got.forwarded.extend_from_slice(&r.frame);
            }
            got.forwarded.extend_from_slice(&buf[*a..*b]);
        }
        for r in released {
            assert_eq!(r.before_seg, segs.len());
            got.forwarded.extend_from_slice(&r.frame);
        }
        assert_eq!(out.answers as usize, hold.answers.len());
        for a in &hold.answers {
            got.answers
                .push((a.json().to_vec(), a.truncated, a.id.clone()));
        }
        hold.clear_done();
        got.forged |= out.forged_request;
        if out.closing.is_some() {
            got.closing = out.closing;
            break;
        }
    }
    got
}

const READS: [usize; 10] = [1, 2, 5, 13, 23, 24, 37, 100, 1000, 8192];
const BUFS: [usize; 3] = [HEADROOM + CARRY_MAX + 1, 512, 4096];

#[test]
fn bridge_answers_are_captured_whole_and_everything_else_forwarded_in_order() {
    let answer = |id: &str, pad: usize| {
        format!(
            r#"{{"type":"http_response","id":"{id}","status":200,"body_b64":"{}"}}"#,
            "A".repeat(pad)
        )
        .into_bytes()
    };
    let (a1, a2, a3) = (answer("1", 0), answer("2", 3000), answer("3", 40));
    let not_quite = br#"{"type":"http_responses","id":"x"}"#.to_vec();
    // Python's json.dumps defaults, another key order, pretty-printed, leading whitespace.
    let spaced = br#"{"type": "http_response", "id": "4", "status": 200}"#.to_vec();
    let id_first = br#"{"id":"5","status":204,"type":"http_response"}"#.to_vec();
    let pretty =
        b"\n  {\n  \"id\": \"6\",\n  \"type\": \"http_response\",\n  \"status\": 200\n}\n".to_vec();
    let chat = br#"{"type":"chat","text":"{\"type\":\"http_response\"}"}"#.to_vec();
    let mut s = Vec::new();
    s.extend(client_frame(true, OpCode::Text, &a1, [1, 2, 3, 4]));
    s.extend(client_frame(true, OpCode::Text, b"hi", [5, 6, 7, 8]));
    s.extend(client_frame(true, OpCode::Binary, &a1, [9, 8, 7, 6]));
    // An answer split into three frames, a ping in between.
    s.extend(client_frame(false, OpCode::Text, &a2[..30], [1, 1, 2, 2]));
    s.extend(client_frame(true, OpCode::Ping, b"p", [3, 3, 3, 3]));
    s.extend(client_frame(
        false,
        OpCode::Continuation,
        &a2[30..2000],
        [4, 4, 4, 4],
    ));
    s.extend(client_frame(
        true,
        OpCode::Continuation,
        &a2[2000..],
        [5, 5, 5, 5],
    ));
    s.extend(client_frame(true, OpCode::Text, &not_quite, [6, 6, 6, 6]));
    // The decision waits for the type, wherever the frames cut the message.
    s.extend(client_frame(false, OpCode::Text, &a3[..10], [7, 7, 7, 7]));
    s.extend(client_frame(
        true,
        OpCode::Continuation,
        &a3[10..],
        [8, 8, 8, 8],
    ));
    s.extend(client_frame(true, OpCode::Text, &spaced, [9, 9, 9, 9]));
    s.extend(client_frame(true, OpCode::Text, &chat, [1, 0, 1, 0]));
    s.extend(client_frame(false, OpCode::Text, b"", [2, 0, 2, 0]));
    s.extend(client_frame(
        true,
        OpCode::Continuation,
        &id_first,
        [3, 0, 3, 0],
    ));
    s.extend(client_frame(true, OpCode::Text, &pretty, [4, 0, 4, 0]));
    s.extend(client_frame(
        true,
        OpCode::Text,
        b"  not json",
        [5, 0, 5, 0],
    ));
    let forwarded_want = vec![
        (OpCode::Text, b"hi".to_vec()),
        (OpCode::Binary, a1.clone()),
        (OpCode::Text, not_quite),
        (OpCode::Text, chat),
        (OpCode::Text, b"  not json".to_vec()),
    ];
    let ids = |v: &[(Vec<u8>, bool, Option<String>)]| {
        v.iter().map(|a| a.2.clone().unwrap()).collect::<Vec<_>>()
    };
    for read in READS {
        for buf_size in BUFS {
            let ctx = format!("read {read} buf {buf_size}");
            let got = run_holding(&s, read, buf_size, HoldMode::Answers, 1 << 20, LIMITS);
            assert_eq!(got.closing, None, "{ctx}");
            assert_eq!(server_messages(&got.forwarded), forwarded_want, "{ctx}");
            let whole = |a: &Vec<u8>, id: &str| (a.clone(), false, Some(id.to_string()));
            assert_eq!(
                got.answers,
                vec![
                    whole(&a1, "1"),
                    whole(&a2, "2"),
                    whole(&a3, "3"),
                    whole(&spaced, "4"),
                    whole(&id_first, "5"),
                    whole(&pretty, "6"),
                ],
                "{ctx}"
            );
            // Over the limit an answer keeps only its start and is marked, the rest intact;
            // its id is known all the same.
            let got = run_holding(&s, read, buf_size, HoldMode::Answers, 120, LIMITS);
            assert_eq!(server_messages(&got.forwarded), forwarded_want, "{ctx}");
            assert_eq!(
                got.answers[1],
                (a2[..120].to_vec(), true, Some("2".into())),
                "{ctx}"
            );
            assert_eq!(ids(&got.answers), ["1", "2", "3", "4", "5", "6"], "{ctx}");
        }
    }
}

#[test]
fn only_json_object_text_is_held_and_the_rest_keeps_its_frames() {
    // Every message keeps its fragmentation when it is all in one read (a held one is
    // forwarded from the read buffer once read); a held one that spans reads is copied and
    // comes out as one frame.
    let mut s = Vec::new();
    s.extend(client_frame(false, OpCode::Text, b"pla", [1, 2, 3, 4]));
    s.extend(client_frame(
        true,
        OpCode::Continuation,
        b"in",
        [1, 2, 3, 4],
    ));
    s.extend(client_frame(false, OpCode::Text, b"{\"a\":", [1, 2, 3, 4]));
    s.extend(client_frame(
        true,
        OpCode::Continuation,
        b"1}",
        [1, 2, 3, 4],
    ));
    s.extend(client_frame(false, OpCode::Binary, b"{\"b\"", [1, 2, 3, 4]));
    s.extend(client_frame(
        true,
        OpCode::Continuation,
        b":2}",
        [1, 2, 3, 4],
    ));
    let got = run_holding(&s, 4096, 4096, HoldMode::Requests, 1 << 20, LIMITS);
    let frames = |mut b: &[u8]| {
        let mut n = Vec::new();
        while !b.is_empty() {
            let h = parse_header(b, Sender::Server).unwrap().unwrap();
            n.push((h.opcode, h.fin));
            b = &b[h.header_len + h.payload_len as usize..];
        }
        n
    };
    use OpCode::*;
    assert_eq!(
        frames(&got.forwarded),
        [
            (Text, false),
            (Continuation, true),
            (Text, false),
            (Continuation, true),
            (Binary, false),
            (Continuation, true)
        ]
    );
    let cut = run_holding(&s, 7, 4096, HoldMode::Requests, 1 << 20, LIMITS);
    assert_eq!(
        server_messages(&cut.forwarded),
        server_messages(&got.forwarded)
    );
    let held_whole = frames(&cut.forwarded)
        .iter()
        .filter(|f| **f == (Text, true))
        .count();
    assert_eq!(held_whole, 1, "{:?}", frames(&cut.forwarded));
    // A first frame of whitespace only defers the decision to the next frame.
    let mut s = Vec::new();
    s.extend(client_frame(false, OpCode::Text, b"  ", [1, 2, 3, 4]));
    s.extend(client_frame(true, OpCode::Continuation, b"x", [1, 2, 3, 4]));
    s.extend(client_frame(true, OpCode::Text, b"   ", [1, 2, 3, 4]));
    let got = run_holding(&s, 4096, 4096, HoldMode::Requests, 1 << 20, LIMITS);
    assert_eq!(
        frames(&got.forwarded),
        [(Text, false), (Continuation, true), (Text, true)]
    );
    assert_eq!(
        server_messages(&got.forwarded),
        [(Text, b"  x".to_vec()), (Text, b"   ".to_vec())]
    );
}

#[test]
fn a_request_towards_an_agent_is_refused_and_nothing_of_it_goes_out() {
    let forged = [
        br#"{"type":"http_request","id":"x","method":"GET","path":"/"}"#.to_vec(),
        br#"{"id": "x", "type": "http_request", "method": "GET", "path": "/"}"#.to_vec(),
        b"{\n \"TYPE\": \"http_request\"\n}".to_vec(),
        br#"{"type":"chat","type":"http_request"}"#.to_vec(),
        // Escaped: no `http_request` in its bytes, read in full all the same.
        br#"{"t\u0079pe":"http\u005frequest"}"#.to_vec(),
    ];
    for f in &forged {
        let mut s = Vec::new();
        s.extend(client_frame(
            true,
            OpCode::Text,
            br#"{"type":"chat"}"#,
            [1, 2, 3, 4],
        ));
        s.extend(client_frame(false, OpCode::Text, &f[..5], [5, 6, 7, 8]));
        s.extend(client_frame(
            true,
            OpCode::Continuation,
            &f[5..],
            [5, 6, 7, 8],
        ));
        s.extend(client_frame(true, OpCode::Text, b"after", [1, 2, 3, 4]));
        for read in READS {
            for buf_size in BUFS {
                let got = run_holding(&s, read, buf_size, HoldMode::Requests, 1 << 20, LIMITS);
                let ctx = format!("{} read {read} buf {buf_size}", String::from_utf8_lossy(f));
                assert!(got.forged, "{ctx}");
                assert!(
                    matches!(got.closing, Some(Closing::Violation(CloseCode::POLICY, _))),
                    "{ctx}"
                );
                assert_eq!(
                    server_messages(&got.forwarded),
                    [(OpCode::Text, br#"{"type":"chat"}"#.to_vec())],
                    "{ctx}"
                );
            }
        }
    }
    // Spelling `http_request` elsewhere is no request.
    let note = br#"{"type":"note","text":"http_request","x":{"type":"http_request"}}"#;
    let s = client_frame(true, OpCode::Text, note, [1, 2, 3, 4]);
    let got = run_holding(&s, 4096, 4096, HoldMode::Requests, 1 << 20, LIMITS);
    assert!(!got.forged && got.closing.is_none());
    assert_eq!(
        server_messages(&got.forwarded),
        [(OpCode::Text, note.to_vec())]
    );
    // The same message from the agent itself is no request: it goes to the other peer.
    let f = &forged[0];
    let s = client_frame(true, OpCode::Text, f, [1, 2, 3, 4]);
    let got = run_holding(&s, 4096, 4096, HoldMode::Answers, 1 << 20, LIMITS);
    assert_eq!(server_messages(&got.forwarded), [(OpCode::Text, f.clone())]);
}

#[test]
fn held_messages_keep_the_message_limit_and_answers_their_own() {
    let limits = DecodeLimits {
        max_message_bytes: 100,
        max_frames_per_message: u32::MAX,
        max_pending_pongs: 16,
    };
    let pad = |n: usize| "x".repeat(n);
    // A non-answer over the message limit is refused, whether its type comes first or last.
    let first = format!(r#"{{"type":"chat","p":"{}"}}"#, pad(200));
    let last = format!(r#"{{"p":"{}","type":"chat"}}"#, pad(200));
    let none = format!(r#"{{"p":"{}"}}"#, pad(200));
    for m in [&first, &last, &none] {
        for mode in [HoldMode::Answers, HoldMode::Requests] {
            let s = client_frame(true, OpCode::Text, m.as_bytes(), [1, 2, 3, 4]);
            for read in READS {
                let got = run_holding(&s, read, 512, mode, 150, limits);
                assert_eq!(
                    got.closing,
                    Some(Closing::Violation(CloseCode::TOO_BIG, "message too big")),
                    "{mode:?} read {read} {m}"
                );
                assert!(got.forwarded.is_empty());
            }
        }
    }
    // An answer may pass the message limit; past its own it is cut and marked, in any
    // order of its keys, and the connection goes on.
    let ans_first = format!(
        r#"{{"type":"http_response","id":"9","body_b64":"{}"}}"#,
        pad(200)
    );
    let ans_last = format!(
        r#"{{"id":"9","body_b64":"{}","type":"http_response"}}"#,
        pad(300)
    );
    for (m, limit, cut) in [
        (&ans_first, 1000, false),
        (&ans_first, 150, true),
        (&ans_last, 1000, false),
        (&ans_last, 150, true),
    ] {
        let mut s = client_frame(true, OpCode::Text, m.as_bytes(), [1, 2, 3, 4]);
        s.extend(client_frame(true, OpCode::Text, b"ok", [1, 2, 3, 4]));
        for read in READS {
            let got = run_holding(&s, read, 512, HoldMode::Answers, limit, limits);
            let ctx = format!("read {read} limit {limit} {m}");
            assert_eq!(got.closing, None, "{ctx}");
            assert_eq!(got.answers.len(), 1, "{ctx}");
            let (json, truncated, id) = &got.answers[0];
            assert_eq!((*truncated, id.as_deref()), (cut, Some("9")), "{ctx}");
            if cut {
                assert_eq!(json.as_slice(), &m.as_bytes()[..limit], "{ctx}");
            } else {
                assert_eq!(json.as_slice(), m.as_bytes(), "{ctx}");
            }
            assert_eq!(
                server_messages(&got.forwarded),
                [(OpCode::Text, b"ok".to_vec())]
            );
        }
    }
}

/// Server frames (opcode, fin, payload) in `segs`, in order, skipping emptied segments.
fn server_frames(buf: &[u8], segs: &[Segment]) -> Vec<(OpCode, bool, Vec<u8>)> {
    let mut bytes = Vec::new();
    for &(a, b) in segs {
        bytes.extend_from_slice(&buf[a..b]);
    }
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let h = parse_header(rest, Sender::Server).unwrap().unwrap();
        let end = h.header_len + h.payload_len as usize;
        frames.push((h.opcode, h.fin, rest[h.header_len..end].to_vec()));
        rest = &rest[end..];
    }
    frames
}

/// Decodes `stream` in one read with the pongs inline (the echo route).
fn echo_one_read(stream: &[u8], limits: DecodeLimits) -> (Vec<(OpCode, bool, Vec<u8>)>, Outcome) {
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    inb.prepare(&mut buf);
    buf.extend_from_slice(stream);
    let mut segs = Vec::new();
    let out = inb.decode_holding(&mut buf, Some(1), limits, &mut segs, None, Pongs::Inline);
    (server_frames(&buf, &segs), out)
}

/// Autobahn 5.6/5.8/5.19/5.20 in one read: a ping between two fragments is answered in its
/// place, before the last fragment. Before: the pong was written after the whole echoed
/// message.
#[test]
fn echo_pong_goes_between_the_fragments_it_arrived_between() {
    let s = [
        client_frame(false, OpCode::Text, b"frag1", [1, 2, 3, 4]),
        client_frame(true, OpCode::Ping, b"ping!", [5, 6, 7, 8]),
        client_frame(true, OpCode::Continuation, b"frag2", [9, 9, 9, 9]),
    ]
    .concat();
    let (frames, out) = echo_one_read(&s, LIMITS);
    assert_eq!(
        frames,
        vec![
            (OpCode::Text, false, b"frag1".to_vec()),
            (OpCode::Pong, true, b"ping!".to_vec()),
            (OpCode::Continuation, true, b"frag2".to_vec()),
        ]
    );
    assert_eq!((out.pings, out.pongs, out.messages_forwarded), (1, 1, 1));
}

/// Autobahn 2.10/2.11: ten pings at once get ten pongs, in order. Before: one pong.
#[test]
fn a_burst_of_pings_gets_a_pong_each_up_to_the_bound() {
    let s: Vec<u8> = (0..10u8)
        .flat_map(|k| client_frame(true, OpCode::Ping, &[b'0' + k], [k, 1, 2, 3]))
        .collect();
    let (frames, out) = echo_one_read(&s, LIMITS);
    let want: Vec<_> = (0..10u8)
        .map(|k| (OpCode::Pong, true, vec![b'0' + k]))
        .collect();
    assert_eq!(frames, want);
    assert_eq!((out.pings, out.pongs), (10, 10));

    // Aside (relay route): the same ten, in a list of their own, none among the segments.
    let mut inb = Inbound::default();
    let mut buf = Vec::new();
    inb.prepare(&mut buf);
    buf.extend_from_slice(&s);
    let (mut segs, mut aside) = (Vec::new(), Vec::new());
    let out = inb.decode_holding(
        &mut buf,
        Some(1),
        LIMITS,
        &mut segs,
        None,
        Pongs::Aside(&mut aside),
    );
    assert!(segs.is_empty());
    assert_eq!(server_frames(&buf, &aside), want);
    assert_eq!(out.pongs, 10);
}

/// Past `max_pending_pongs` a flood is coalesced: at most that many pongs, the latest ping
/// answered last, the others of the flood counted as coalesced.
#[test]
fn a_ping_flood_past_the_bound_is_coalesced_into_the_latest() {
    let limits = DecodeLimits {
        max_pending_pongs: 3,
        ..LIMITS
    };
    let s = [
        client_frame(true, OpCode::Ping, b"a", [1, 2, 3, 4]),
        client_frame(true, OpCode::Ping, b"b", [1, 2, 3, 4]),
        client_frame(true, OpCode::Text, b"data", [1, 2, 3, 4]),
        client_frame(true, OpCode::Ping, b"c", [1, 2, 3, 4]),
        client_frame(true, OpCode::Ping, b"d", [1, 2, 3, 4]),
        client_frame(true, OpCode::Ping, b"e", [1, 2, 3, 4]),
    ]
    .concat();
    let (frames, out) = echo_one_read(&s, limits);
    assert_eq!(
        frames,
        vec![
            (OpCode::Pong, true, b"a".to_vec()),
            (OpCode::Pong, true, b"b".to_vec()),
            (OpCode::Text, true, b"data".to_vec()),
            (OpCode::Pong, true, b"e".to_vec()),
        ]
    );
    assert_eq!((out.pings, out.pongs), (5, 3));
}

#[test]
fn open_frame_len_names_the_frame_a_read_ended_inside() {
    // The connection loop reads on into a large buffer only inside a large frame: the
    // decoder says how large the frame it stopped inside is, and nothing between frames.
    let big = client_frame(true, OpCode::Binary, &[9u8; 5000], [1, 2, 3, 4]);
    let small = client_frame(true, OpCode::Binary, &[1u8; 10], [5, 6, 7, 8]);
    let mut inb = Inbound::default();
    let mut buf = Vec::with_capacity(4096);
    let mut segs = Vec::new();
    assert_eq!(inb.open_frame_len(), None);
    let start = inb.prepare(&mut buf);
    buf.extend_from_slice(&big[..3000]);
    inb.decode(&mut buf, Some(1), LIMITS, &mut segs);
    assert_eq!(inb.open_frame_len(), Some(5000));
    let start2 = inb.prepare(&mut buf);
    assert_eq!(start, start2, "nothing carried inside a payload");
    buf.extend_from_slice(&big[3000..]);
    buf.extend_from_slice(&small);
    segs.clear();
    inb.decode(&mut buf, Some(1), LIMITS, &mut segs);
    assert_eq!(inb.open_frame_len(), None, "the read ended between frames");
}

/// relay::conn keeps a connection's decoder between reads only when it is not `at_rest`, and
/// starts a fresh one otherwise: cut at every read size, the stream must come out the same
/// when a decoder at rest is replaced by a new one before each read, and a decoder in the
/// middle of a frame or message must never say it is at rest.
#[test]
fn a_decoder_at_rest_can_be_replaced_by_a_fresh_one() {
    let (stream, expected) = sample_stream();
    assert!(Inbound::default().at_rest());
    for read in [1, 2, 3, 5, 7, 13, 14, 100, 139, 140, 1000, 4096] {
        let buf_size = 4096;
        let mut inb = Inbound::default();
        let (mut forwarded, mut pos, mut busy) = (Vec::new(), 0, 0);
        let mut buf = Vec::with_capacity(buf_size);
        while pos < stream.len() {
            if inb.at_rest() {
                inb = Inbound::default();
            } else {
                busy += 1;
            }
            let start = inb.prepare(&mut buf);
            let want = read.min(buf_size - start).min(stream.len() - pos);
            buf.extend_from_slice(&stream[pos..pos + want]);
            pos += want;
            let mut segs = Vec::new();
            inb.decode(&mut buf, Some(7), LIMITS, &mut segs);
            for (a, b) in segs {
                forwarded.extend_from_slice(&buf[a..b]);
            }
        }
        assert_eq!(server_messages(&forwarded), expected, "read {read}");
        if read < 100 {
            assert!(
                busy > 0,
                "read {read}: a cut frame left the decoder at rest"
            );
        }
    }
}
