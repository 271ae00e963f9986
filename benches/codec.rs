//! The forwarding codec path, measured without I/O.
//!
//! * `forward/{binary,text}/{64B,1KiB,64KiB}`: one 256 KiB read buffer full of masked client
//!   frames of that payload size is run through `Inbound::decode`, which parses each header,
//!   unmasks the payload in place (validating text as UTF-8) and writes a server header in
//!   front of it. `prepare` and copying the frames in happen in the untimed setup, so only
//!   `decode` is timed. Throughput counts payload bytes.
//! * `mask/64KiB`: `apply_mask` against the byte-at-a-time `apply_mask_reference`.
//! * `utf8/64KiB`: `Utf8Validator::feed` (whole, and in 1000-byte pieces that split
//!   characters) against `std::str::from_utf8`, on mixed text and on JSON-like ASCII.
//!
//! Run: cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use ringrelay::relay::inbound::{DecodeLimits, Inbound, Segment, HEADROOM};
use ringrelay::ws::client::encode_client_frame;
use ringrelay::ws::frame::OpCode;
use ringrelay::ws::mask::{apply_mask, apply_mask_reference};
use ringrelay::ws::Utf8Validator;

const READ_BUFFER: usize = 256 << 10;
const LIMITS: DecodeLimits = DecodeLimits {
    max_message_bytes: 1 << 30,
    max_frames_per_message: u32::MAX,
    max_pending_pongs: 16,
};
const RECEIVER: u64 = 1;

/// Deterministic filler bytes (a small LCG), so runs are comparable.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// Exactly `len` bytes of mixed text (ASCII, 2-, 3- and 4-byte characters).
fn text(len: usize) -> Vec<u8> {
    let pattern = "relay héllo wörld — κόσμε € 𝄞 ";
    let mut s = String::with_capacity(len + pattern.len());
    while s.len() < len {
        s.push_str(pattern);
    }
    let mut cut = len;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    while s.len() < len {
        s.push(' ');
    }
    s.into_bytes()
}

/// As many frames of `payload_len` bytes as fit in one read buffer after its headroom.
/// Returns the wire bytes, the frame count and the payload bytes they carry.
fn wire(op: OpCode, payload_len: usize) -> (Vec<u8>, usize, usize) {
    let mut one = Vec::new();
    let payload = if op == OpCode::Text {
        text(payload_len)
    } else {
        noise(payload_len, 7)
    };
    assert_eq!(payload.len(), payload_len);
    encode_client_frame(&mut one, op, &payload, [0x37, 0xfa, 0x21, 0x3d]);
    let count = (READ_BUFFER - HEADROOM) / one.len();
    let mut out = Vec::with_capacity(count * one.len());
    for k in 0..count {
        let mask = [k as u8, 0x5a, (k >> 8) as u8, 0xa5];
        encode_client_frame(&mut out, op, &payload, mask);
    }
    (out, count, count * payload_len)
}

/// A fresh connection's decoder with a read buffer laid out and filled, as after a read.
fn filled(wire: &[u8], frames: usize) -> (Inbound, Vec<u8>, Vec<Segment>) {
    let mut inbound = Inbound::default();
    let mut buf = Vec::with_capacity(READ_BUFFER);
    inbound.prepare(&mut buf);
    buf.extend_from_slice(wire);
    (inbound, buf, Vec::with_capacity(frames))
}

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward");
    for op in [OpCode::Binary, OpCode::Text] {
        let kind = if op == OpCode::Text { "text" } else { "binary" };
        for (label, size) in [("64B", 64), ("1KiB", 1 << 10), ("64KiB", 64 << 10)] {
            let (bytes, frames, payload) = wire(op, size);
            // Once, untimed: the whole buffer goes through as `frames` whole messages.
            let (mut inb, mut buf, mut segs) = filled(&bytes, frames);
            let out = inb.decode(&mut buf, Some(RECEIVER), LIMITS, &mut segs);
            assert!(out.closing.is_none(), "{kind} {label}: {:?}", out.closing);
            assert_eq!(
                (out.messages_forwarded as usize, segs.len()),
                (frames, frames),
                "{kind} {label}"
            );
            assert!(buf.len() <= READ_BUFFER);

            group.throughput(Throughput::Bytes(payload as u64));
            group.bench_with_input(
                BenchmarkId::new(kind, format!("{label} x{frames}")),
                &bytes,
                |b, bytes| {
                    b.iter_batched(
                        || filled(bytes, frames),
                        |(mut inb, mut buf, mut segs)| {
                            let out = inb.decode(&mut buf, Some(RECEIVER), LIMITS, &mut segs);
                            black_box(out);
                            // Handed back so freeing them falls outside the timing.
                            (buf, segs)
                        },
                        BatchSize::LargeInput,
                    )
                },
            );
        }
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    let len = 64 << 10;
    let key = [0x37, 0xfa, 0x21, 0x3d];
    group.throughput(Throughput::Bytes(len as u64));
    let mut buf = noise(len, 3);
    group.bench_function("apply_mask/64KiB", |b| {
        b.iter(|| apply_mask(black_box(&mut buf), black_box(key), black_box(0)))
    });
    group.bench_function("apply_mask_reference/64KiB", |b| {
        b.iter(|| apply_mask_reference(black_box(&mut buf), black_box(key), black_box(0)))
    });
    group.finish();
}

/// Exactly `len` bytes of JSON-like ASCII, the common case for relayed text.
fn ascii_text(len: usize) -> Vec<u8> {
    let pattern = br#"{"type":"cursor","x":1204,"y":77,"session":"a1b2c3","seq":99812},"#;
    pattern.iter().copied().cycle().take(len).collect()
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (kind, data) in [("mixed", text(64 << 10)), ("ascii", ascii_text(64 << 10))] {
        assert!(std::str::from_utf8(&data).is_ok());
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(format!("std_from_utf8/64KiB {kind}"), |b| {
            b.iter(|| std::str::from_utf8(black_box(&data)).is_ok())
        });
        group.bench_function(format!("validator_feed/64KiB {kind}"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(&data)).is_ok() && v.finish().is_ok()
            })
        });
        group.bench_function(format!("validator_feed_1000B_pieces/64KiB {kind}"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                black_box(&data).chunks(1000).all(|p| v.feed(p).is_ok()) && v.finish().is_ok()
            })
        });
    }
    group.finish();
}

/// What the per-connection rate limits add to a read when they are on: one read holding one
/// 64-byte message (the case where a per-read cost weighs most), decoded alone and decoded
/// then charged to both buckets, as the connection loop does.
fn limits(c: &mut Criterion) {
    use ringrelay::config::LimitsConfig;
    use ringrelay::limits::Throttle;
    let mut group = c.benchmark_group("limits");
    let (bytes, count, _) = wire(OpCode::Binary, 64);
    let one = &bytes[..bytes.len() / count];
    let cfg = LimitsConfig {
        message_rate: 1_000_000_000,
        message_burst: 1_000_000_000,
        byte_rate: 1 << 40,
        byte_burst: 1 << 40,
        ..LimitsConfig::default()
    };
    let mut throttle = Throttle::new(&cfg, 0).expect("rates are on");
    let mut now = 0u64;
    group.bench_function("decode/64B x1", |b| {
        b.iter_batched(
            || filled(one, 1),
            |(mut inb, mut buf, mut segs)| {
                black_box(inb.decode(&mut buf, Some(RECEIVER), LIMITS, &mut segs));
                (buf, segs)
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("decode+throttle/64B x1", |b| {
        b.iter_batched(
            || filled(one, 1),
            |(mut inb, mut buf, mut segs)| {
                let out = inb.decode(&mut buf, Some(RECEIVER), LIMITS, &mut segs);
                now += 1;
                let messages = out.messages_forwarded + out.messages_dropped;
                black_box(throttle.charge(messages, out.payload_bytes, now));
                (buf, segs)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, forward, mask, utf8, limits);
criterion_main!(benches);
