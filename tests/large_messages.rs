//! Large messages from a sender that streams faster than they are forwarded (issue 17): the
//! relay reads such a stream into large buffers (`limits.large_read_buffer_bytes`), fewer
//! and larger reads and writes per MB, and every message still arrives whole, in order, byte
//! for byte, on both drivers.
//!
//! Before: every read went into a normal 64 KiB buffer, so a 64 KiB message (65,550 bytes
//! framed) never fitted one read, and there was no `large_reads` counter (these tests fail
//! on main's binary at `counter(.., "large_reads")`).
//!
//! A large buffer is read at once (recv(2) without waiting) when the socket holds bytes, so
//! they are unmasked and written on while still in the core's cache; only when it holds none
//! does the read go through the ring. Before: every large read went through the ring, and
//! there was no `large_reads_now` counter (the first test fails on main22's binary at
//! `counter(.., "large_reads_now")`).

mod common;
use common::*;
use std::io::Write;

/// The messages the sender streams: 64 KiB binary ones, a small text one after every 8th,
/// and one of 1 MiB (the default `limits.max_message_bytes`), more than a large buffer.
fn messages() -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..48u32 {
        let m: Vec<u8> = (0..65536u32)
            .map(|k| (k.wrapping_mul(31) ^ i) as u8)
            .collect();
        out.push((2, m));
        if i % 8 == 7 {
            out.push((1, format!("text {i}").into_bytes()));
        }
    }
    out.push((2, (0..1u32 << 20).map(|k| (k % 251) as u8).collect()));
    out
}

/// Streams `messages()` from role a to role b in one write and checks what b gets: each
/// message reassembled from whatever fragments the relay cut it into.
fn stream_to_receiver(srv: &TestServer, session: &str) {
    let mut b = Raw::upgrade(srv.addr, &format!("/v1/relay/{session}?role=b"));
    let mut a = Raw::upgrade(srv.addr, &format!("/v1/relay/{session}?role=a"));
    let want = messages();
    let wire: Vec<u8> = want
        .iter()
        .flat_map(|(op, m)| frame(true, *op, m))
        .collect();
    let sender = std::thread::spawn(move || {
        a.s.write_all(&wire).expect("send");
        a
    });
    for (k, (op, m)) in want.iter().enumerate() {
        let mut got = Vec::new();
        let (mut fin, first_op, p) = b.frame().expect("a frame");
        assert_eq!(first_op, *op, "message {k}'s opcode");
        got.extend_from_slice(&p);
        while !fin {
            let (f, op, p) = b.frame().expect("a continuation");
            assert_eq!(op, 0, "message {k}: a new message inside it");
            got.extend_from_slice(&p);
            fin = f;
        }
        assert!(got == *m, "message {k} ({} bytes) arrived changed", m.len());
    }
    drop(sender.join().expect("sender"));
}

fn large_frames_go_through_large_buffers_whole(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    stream_to_receiver(&srv, "large");
    // A control pair after it: small messages both ways, as ever.
    let mut a = srv.connect("/v1/relay/control?role=a");
    let mut b = srv.connect("/v1/relay/control?role=b");
    a.send(tungstenite::Message::text("ping-a")).unwrap();
    assert_eq!(recv_text(&mut b), "ping-a");
    b.send(tungstenite::Message::binary(vec![7u8; 1024]))
        .unwrap();
    assert_eq!(recv(&mut a).into_data().len(), 1024);
    let large = counter(&srv, "large_reads");
    assert!(large > 0, "no read went into a large buffer");
    // The sender wrote the whole stream at once: a large buffer's read finds bytes waiting.
    let now = counter(&srv, "large_reads_now");
    assert!(
        now > 0 && now <= large,
        "large reads made at once: {now} of {large}"
    );
    let st = stats(&srv);
    assert_eq!(st["totals"]["read_buffers_in_use"], 0, "{st}");
}

fn large_buffers_off_reads_in_normal_buffers(driver: &str) {
    // At the normal size large buffers are off: the same stream, in 64 KiB reads.
    let env = [("RINGRELAY_LIMITS_LARGE_READ_BUFFER_BYTES", "65536")];
    let srv = TestServer::start(driver, 1, &env);
    stream_to_receiver(&srv, "normal");
    assert_eq!(counter(&srv, "large_reads"), 0);
    assert_eq!(
        counter(&srv, "large_reads_now"),
        0,
        "normal buffers use the ring"
    );
}

both_drivers!(
    large_frames_go_through_large_buffers_whole,
    large_buffers_off_reads_in_normal_buffers,
);
