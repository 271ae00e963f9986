//! Two-way resume (docs/durability.md, "Two-way resume") against the real binary, on both
//! drivers: a connection with `resume=` has the messages it sends counted, learns the count
//! (`acked`) in `connected` and `ack` events, and after a drop resends from `acked + 1`.
//!
//! Before: `connected` had no `acked` and no `ack` event existed, so a sender cut mid-stream
//! could not know what the relay had read: resending everything since its last certainty
//! doubled messages, resending nothing lost them. And a sender replaced mid-message left its
//! receiver holding part of it (the receiver was looked up with `other`, which found the
//! successor), so the successor's next message broke the receiver's stream.

mod common;
use common::cluster::{node_of, wait_until, Redis};
use common::*;
use std::net::Shutdown;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Message `i` (numbered from 0): its number, then filler; every 37th is larger than a read
/// buffer, so the relay forwards it in pieces and a cut can fall inside it.
fn numbered(i: u32) -> Vec<u8> {
    let len = if i.is_multiple_of(37) {
        100_000
    } else {
        8 + (i as usize * 53) % 700
    };
    let mut v = i.to_be_bytes().to_vec();
    v.resize(len, (i % 251) as u8);
    v
}

/// A small xorshift: a new schedule each run (RINGRELAY_TEST_SEED repeats one).
struct Rng(u64);

impl Rng {
    fn seeded() -> (Rng, u64) {
        let seed = std::env::var("RINGRELAY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        (Rng(seed | 1), seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The next `ack` event, past the peer's comings and goings.
fn next_ack(r: &mut Raw) -> serde_json::Value {
    loop {
        let e = next_event(r);
        if e["type"] != "peer_connected" && e["type"] != "peer_disconnected" {
            return e;
        }
    }
}

/// The next binary message, past events.
fn next_binary(ws: &mut Ws) -> Message {
    loop {
        match recv(ws) {
            Message::Text(_) => {}
            m => return m,
        }
    }
}

/// Receives message numbers 0 to `total - 1` as role b, resuming after every drop (a cut,
/// or 4004 when the sender dropped mid-message), and checks each arrives once, in order.
/// Returns how many times it had to reconnect.
fn receive_all(srv_addr: std::net::SocketAddr, session: String, total: u32) -> u32 {
    let url = |n: u32| format!("ws://{srv_addr}/v1/relay/{session}?role=b&events=1&resume={n}");
    let mut processed = 0u32;
    let mut reconnects = 0;
    let mut ws = connect(&url(0));
    let mut key = String::new();
    while processed < total {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                let i = u32::from_be_bytes(b[..4].try_into().unwrap());
                assert_eq!(i, processed, "message out of order or doubled");
                assert_eq!(&b[..], &numbered(i)[..], "message {i} damaged");
                processed += 1;
            }
            Ok(Message::Text(t)) => {
                let e: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if e["type"] == "connected" {
                    assert_eq!(e["next_seq"].as_u64(), Some(u64::from(processed) + 1));
                    key = e["key"].as_str().unwrap().to_string();
                } else {
                    assert_eq!(e["key"].as_str(), Some(key.as_str()), "{e}");
                }
            }
            Ok(Message::Close(_)) | Err(_) => {
                reconnects += 1;
                assert!(reconnects < 1000, "the receiver keeps being dropped");
                ws = connect(&url(processed));
            }
            Ok(_) => {}
        }
    }
    reconnects
}

fn a_sender_cut_mid_frame_resends_from_acked_and_the_receiver_gets_each_message_once(driver: &str) {
    let srv = TestServer::start(
        driver,
        2,
        &[("RINGRELAY_SESSION_REPLAY_BYTES", &(64 << 20).to_string())],
    );
    let total = 3000u32;
    let (addr, session) = (srv.addr, "twoway".to_string());
    let receiver = std::thread::spawn(move || receive_all(addr, session, total));
    let (rng, seed) = Rng::seeded();
    let mut rng = rng;
    let (mut a, connected) = join_sender(&srv, "twoway");
    assert_eq!(connected["acked"], 0, "{connected}");
    let mut next = 0u32; // the next message to send
    let mut cuts = 0;
    while next < total {
        let burst = (1 + rng.below(400) as u32).min(total - next);
        for i in next..next + burst {
            a.send(&frame(true, 2, &numbered(i)));
        }
        next += burst;
        if next == total {
            break;
        }
        // Cut in the middle of the next message's frame: part of it may already have
        // reached the receiver when the cut comes.
        let f = frame(true, 2, &numbered(next));
        let part = 1 + rng.below(f.len() as u64 - 1) as usize;
        a.send(&f[..part]);
        std::thread::sleep(Duration::from_millis(rng.below(20)));
        let _ = a.s.shutdown(Shutdown::Both);
        cuts += 1;
        let (a2, connected) = join_sender(&srv, "twoway");
        a = a2;
        let acked = connected["acked"].as_u64().expect("acked in connected") as u32;
        // Everything the relay credited was sent; what it did not may be resent.
        assert!(
            acked <= next,
            "acked {acked} past the {next} sent, seed {seed}"
        );
        next = acked;
    }
    let reconnects = receiver.join().unwrap();
    assert!(cuts >= 3, "only {cuts} cuts");
    assert!(!srv.log_contains("panicked"), "the relay panicked");
    let v = stats(&srv);
    assert_eq!(v["totals"]["resume_gaps"], 0, "{v}");
    eprintln!(
        "{cuts} sender cuts, {reconnects} receiver reconnects, {} torn",
        v["totals"]["receivers_closed_torn"]
    );
    // The final count: everything, once.
    let (_, connected) = join_sender(&srv, "twoway");
    assert_eq!(connected["acked"], total, "seed {seed}");
}

fn acks_come_every_ack_every_messages_and_after_ack_delay(driver: &str) {
    let delay = Duration::from_millis(600);
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_SESSION_ACK_EVERY", "4"),
            ("RINGRELAY_SESSION_ACK_DELAY", "600ms"),
        ],
    );
    let mut b = srv.connect("/v1/relay/acks?role=b");
    let (mut a, connected) = join_sender(&srv, "acks");
    assert_eq!(connected["acked"], 0);
    assert_eq!(connected["next_seq"], 1);
    let key = connected["key"].as_str().unwrap().to_string();
    // Four in one write: one read, four accepted, an ack at once.
    let four: Vec<u8> = (0..4)
        .flat_map(|i| frame(true, 1, format!("m{i}").as_bytes()))
        .collect();
    let t0 = Instant::now();
    a.send(&four);
    let ack = next_ack(&mut a);
    assert_eq!(
        (&ack["type"], &ack["acked"]),
        (&"ack".into(), &4.into()),
        "{ack}"
    );
    assert_eq!(ack["key"].as_str(), Some(key.as_str()));
    assert!(t0.elapsed() < delay, "the ack every 4 waited for the delay");
    for i in 0..4 {
        assert_eq!(recv_text(&mut b), format!("m{i}"));
    }
    // One more: below ack_every, so it is told after the delay.
    let t1 = Instant::now();
    a.send(&frame(true, 1, b"m4"));
    assert_eq!(recv_text(&mut b), "m4");
    let ack = next_ack(&mut a);
    assert_eq!(
        (&ack["type"], &ack["acked"]),
        (&"ack".into(), &5.into()),
        "{ack}"
    );
    assert!(t1.elapsed() >= delay.mul_f32(0.8), "{:?}", t1.elapsed());
    // Kept for an absent peer counts as accepted too.
    b.close(None).unwrap();
    stats_when(&srv, |v| v["totals"]["active_connections"] == 1);
    a.send(&frame(true, 1, b"kept"));
    let ack = next_ack(&mut a);
    assert_eq!(ack["acked"], 6, "{ack}");
    assert_eq!(counter(&srv, "acks_sent"), 3);
    // A reconnect learns the count.
    let _ = a.s.shutdown(Shutdown::Both);
    let (_, connected) = join_sender(&srv, "acks");
    assert_eq!(connected["acked"], 6, "{connected}");
}

fn a_message_refused_for_a_violation_is_not_counted(driver: &str) {
    let srv = TestServer::start(driver, 1, &[("RINGRELAY_LIMITS_MAX_MESSAGE_BYTES", "1000")]);
    let _b = srv.connect("/v1/relay/bad?role=b");
    let (mut a, _) = join_sender(&srv, "bad");
    let mut bytes = frame(true, 2, b"fine");
    bytes.extend(frame(true, 2, &[7u8; 2000]));
    a.send(&bytes);
    assert_eq!(a.close_code(), Some(1009));
    let (_, connected) = join_sender(&srv, "bad");
    assert_eq!(connected["acked"], 1, "{connected}");
}

fn a_replaced_sender_mid_message_leaves_no_part_and_is_not_credited(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut b = srv.connect("/v1/relay/repl?role=b&events=1&resume=0");
    assert_eq!(recv_event(&mut b)["type"], "connected");
    let (mut a, _) = join_sender(&srv, "repl");
    a.send(&frame(true, 2, b"one"));
    assert_eq!(next_binary(&mut b), Message::binary(b"one".to_vec()));
    a.send(&frame(false, 2, b"first part of two, "));
    stats_when(&srv, |v| v["totals"]["bytes_forwarded"] == 22);
    // A new connection of role a while the old one is still open (its client thinks it is
    // dead): the old one is replaced, and b, which holds part of a message that will now
    // never end, is closed with 4004 rather than handed a new message inside it.
    let (mut a2, connected) = join_sender(&srv, "repl");
    assert_eq!(connected["acked"], 1, "{connected}");
    // The old connection's last frame, after the replacement: not forwarded, not counted.
    a.send(&frame(true, 0, b"second part"));
    loop {
        match b.read() {
            Ok(Message::Close(Some(c))) => {
                assert_eq!(u16::from(c.code), 4004);
                break;
            }
            Ok(Message::Text(_)) => {}
            other => panic!("expected close 4004, got {other:?}"),
        }
    }
    assert_eq!(counter(&srv, "receivers_closed_torn"), 1);
    a2.send(&frame(true, 2, b"first part of two, second part"));
    let mut b = srv.connect("/v1/relay/repl?role=b&events=1&resume=1");
    let e = recv_event(&mut b);
    assert_eq!(e["next_seq"], 2, "{e}");
    assert_eq!(
        next_binary(&mut b),
        Message::binary(b"first part of two, second part".to_vec())
    );
    let (_, connected) = join_sender(&srv, "repl");
    assert_eq!(connected["acked"], 2, "{connected}");
}

fn no_acked_without_resume(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut a = srv.connect("/v1/relay/plain?role=a&events=1");
    let e = recv_event(&mut a);
    assert!(
        e.get("acked").is_none() && e.get("next_seq").is_none(),
        "{e}"
    );
    let mut b = srv.connect("/v1/relay/plain?role=b");
    assert_eq!(recv_event(&mut a)["type"], "peer_connected");
    for i in 0..100 {
        a.send(Message::text(format!("{i}"))).unwrap();
    }
    for i in 0..100 {
        assert_eq!(recv_text(&mut b), format!("{i}"));
    }
    assert_eq!(counter(&srv, "acks_sent"), 0);
}

/// In a cluster, `acked` lives with the session at its owner (docs/durability.md): a sender
/// carried from another node is counted there, gets its acks through the carrying node, and
/// learns the same count when it comes back through the owner itself. Without redis-server
/// the test says so and passes (as tests/cluster_route.rs).
fn in_a_cluster_acked_lives_with_the_session_at_its_owner(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let p = format!("t{}-acked", std::process::id());
    let n1 = node_of(driver, 1, &redis, &p, "n1", "eu", &[]);
    let n2 = node_of(driver, 1, &redis, &p, "n2", "eu", &[]);
    for n in [&n1, &n2] {
        wait_until(Duration::from_secs(5), "the fleet", || {
            let (_, _, body) = get(n.addr, "/health");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["cluster"]["nodes"] == 2 && v["cluster"]["registered"] == true
        });
    }
    // b opens the session on n1, its owner; a is carried there from n2.
    let mut b = n1.connect("/v1/relay/owned?role=b");
    let mut a = Raw::upgrade(n2.addr, "/v1/relay/owned?role=a&events=1&resume=0");
    let connected = next_event(&mut a);
    assert_eq!(connected["acked"], 0, "{connected}");
    let burst: Vec<u8> = (0..30).flat_map(|i| frame(true, 2, &numbered(i))).collect();
    a.send(&burst);
    for i in 0..30 {
        assert_eq!(next_binary(&mut b), Message::binary(numbered(i)));
    }
    // Acks come from the owner, through the carrying node.
    let mut acked = 0;
    while acked < 30 {
        let e = next_ack(&mut a);
        assert_eq!(e["type"], "ack", "{e}");
        acked = e["acked"].as_u64().unwrap();
    }
    assert_eq!(counter(&n2, "acks_sent"), 0);
    assert!(counter(&n1, "acks_sent") > 0);
    let _ = a.s.shutdown(Shutdown::Both);
    // Back through the owner itself: the same count.
    let mut a = Raw::upgrade(n1.addr, "/v1/relay/owned?role=a&events=1&resume=0");
    let connected = next_event(&mut a);
    assert_eq!(connected["acked"], 30, "{connected}");
}

both_drivers!(
    in_a_cluster_acked_lives_with_the_session_at_its_owner,
    a_sender_cut_mid_frame_resends_from_acked_and_the_receiver_gets_each_message_once,
    acks_come_every_ack_every_messages_and_after_ack_delay,
    a_message_refused_for_a_violation_is_not_counted,
    a_replaced_sender_mid_message_leaves_no_part_and_is_not_credited,
    no_acked_without_resume,
);
