//! Two-way resume's `ack` events riding on forwarded data (docs/durability.md, "Two-way
//! resume"; relay::ack), against the real binary on both drivers.
//!
//! Before: every ack went out in a write of its own (a syscall and, on loopback, the kernel's
//! whole delivery of a segment), even while data was being written to the same connection a
//! moment later; below `session.ack_every` untold messages an ack waited out
//! `session.ack_delay` whatever went to the connection meanwhile. Now an ack rides in the
//! same writev as data forwarded to its connection once half of `ack_every` is untold, and
//! every writer of an ack reads the count under the connection's write gate, so the counts a
//! client is told never go down.

mod common;
use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// Joins `role` of `session` with two-way resume and events; returns the client and its key.
fn join(srv: &TestServer, session: &str, role: &str) -> (Raw, String) {
    let mut r = Raw::upgrade(
        srv.addr,
        &format!("/v1/relay/{session}?role={role}&events=1&resume=0"),
    );
    let connected = next_text(&mut r);
    assert_eq!(connected["type"], "connected", "{connected}");
    (r, connected["key"].as_str().unwrap().to_string())
}

/// The next text frame (an event), past pings.
fn next_text(r: &mut Raw) -> serde_json::Value {
    loop {
        let (_, op, p) = r.frame().expect("connection ended");
        if op == 1 {
            return serde_json::from_slice(&p).unwrap();
        }
    }
}

/// The next frame that is not a ping or a peer's coming and going: (opcode, payload).
fn next_frame(r: &mut Raw) -> (u8, Vec<u8>) {
    loop {
        let (_, op, p) = r.frame().expect("connection ended");
        if op == 9 {
            continue;
        }
        if op == 1 {
            let e: serde_json::Value = serde_json::from_slice(&p).unwrap();
            if e["type"] == "peer_connected" || e["type"] == "peer_disconnected" {
                continue;
            }
        }
        return (op, p);
    }
}

fn an_ack_rides_on_data_to_its_connection_instead_of_waiting(driver: &str) {
    // A delay no test run waits out: an ack that comes at all came with the data.
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_SESSION_ACK_EVERY", "8"),
            ("RINGRELAY_SESSION_ACK_DELAY", "30s"),
        ],
    );
    let (mut a, key) = join(&srv, "ride", "a");
    let (mut b, _) = join(&srv, "ride", "b");
    // Three from a: under half of ack_every (4), so b's message carries no ack.
    for i in 0..3 {
        a.send(&frame(true, 2, &[i]));
    }
    for i in 0..3 {
        assert_eq!(next_frame(&mut b), (2, vec![i]));
    }
    b.send(&frame(true, 2, b"to-a-1"));
    assert_eq!(next_frame(&mut a), (2, b"to-a-1".to_vec()));
    // One more from a: four untold, so the next data to a brings its ack along.
    a.send(&frame(true, 2, &[3]));
    assert_eq!(next_frame(&mut b), (2, vec![3]));
    let t0 = Instant::now();
    b.send(&frame(true, 2, b"to-a-2"));
    assert_eq!(next_frame(&mut a), (2, b"to-a-2".to_vec()));
    let (op, ack) = next_frame(&mut a);
    assert_eq!(op, 1);
    let ack: serde_json::Value = serde_json::from_slice(&ack).unwrap();
    assert_eq!(
        (&ack["type"], &ack["acked"]),
        (&"ack".into(), &4.into()),
        "{ack}"
    );
    assert_eq!(ack["key"].as_str(), Some(key.as_str()));
    // Before: this ack came only after the 30 s delay.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let v = stats(&srv);
    assert_eq!(v["totals"]["acks_sent"], 1, "{}", v["totals"]);
    assert_eq!(v["totals"]["acks_with_data"], 1, "{}", v["totals"]);
    // Nothing untold: more data to a carries no ack.
    b.send(&frame(true, 2, b"to-a-3"));
    assert_eq!(next_frame(&mut a), (2, b"to-a-3".to_vec()));
    assert_eq!(counter(&srv, "acks_sent"), 1);
}

/// One side's stream: `total` binary messages numbered from 0, written from their own thread
/// in bursts, while the calling thread reads everything the other side sends and every ack.
/// Returns the acks' counts in the order they came.
fn stream(mut me: Raw, total: u32, key: &str) -> Vec<u64> {
    let mut out = me.s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for burst in 0..total / 50 {
            let bytes: Vec<u8> = (0..50)
                .flat_map(|i| frame(true, 2, &(burst * 50 + i).to_be_bytes()))
                .collect();
            out.write_all(&bytes).unwrap();
        }
    });
    let (mut received, mut acks) = (0u32, Vec::new());
    while received < total || acks.last() != Some(&u64::from(total)) {
        match next_frame(&mut me) {
            (2, p) => {
                assert_eq!(p, received.to_be_bytes(), "lost, doubled or out of order");
                received += 1;
            }
            (1, p) => {
                let e: serde_json::Value = serde_json::from_slice(&p).unwrap();
                assert_eq!((&e["type"], e["key"].as_str()), (&"ack".into(), Some(key)));
                acks.push(e["acked"].as_u64().unwrap());
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    writer.join().unwrap();
    acks
}

fn acks_never_go_down_while_both_ways_stream(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_SESSION_ACK_EVERY", "16"),
            ("RINGRELAY_SESSION_ACK_DELAY", "20ms"),
        ],
    );
    let total = 5_000;
    let (a, key_a) = join(&srv, "both", "a");
    let (b, key_b) = join(&srv, "both", "b");
    let t = std::thread::spawn(move || stream(b, total, &key_b));
    let acks_a = stream(a, total, &key_a);
    let acks_b = t.join().unwrap();
    for acks in [&acks_a, &acks_b] {
        // Acks now have two kinds of writer (their own write, and riding on data): each
        // reads the count under the write gate, so an older count never follows a newer.
        assert!(
            acks.windows(2).all(|w| w[0] <= w[1]),
            "an ack went down: {acks:?}"
        );
        assert_eq!(acks.last(), Some(&u64::from(total)));
    }
    let v = stats(&srv);
    let (sent, with_data) = (
        v["totals"]["acks_sent"].as_u64().unwrap(),
        v["totals"]["acks_with_data"].as_u64().unwrap(),
    );
    assert_eq!(sent, (acks_a.len() + acks_b.len()) as u64);
    // How many ride depends on how the reads fall (the test above shows one that must).
    assert!(with_data <= sent, "{with_data} of {sent}");
}

both_drivers!(
    an_ack_rides_on_data_to_its_connection_instead_of_waiting,
    acks_never_go_down_while_both_ways_stream,
);
