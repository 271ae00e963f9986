//! Messages kept for an absent peer (docs/durability.md), against the real binary with
//! tungstenite clients, on both drivers: order, backpressure, the overflow policies, linger,
//! the core budget, and a sender that leaves mid-message.

mod common;
use common::*;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

/// Message `i` of a test stream: its number first, then a size that varies with it (some
/// larger than a read buffer, so they cross the relay in several chunks).
fn numbered(i: u32) -> Message {
    let len = match i % 50 {
        0 => 100_000,
        7 => 0,
        _ => (i as usize * 37) % 3000,
    };
    let mut v = i.to_be_bytes().to_vec();
    v.extend((0..len).map(|k| (k as u32 ^ i) as u8));
    if i.is_multiple_of(3) {
        Message::text(format!("{i}:{}", "t".repeat(len % 500)))
    } else {
        Message::binary(v)
    }
}

/// Reads the next message and checks it is `numbered(i)`.
fn expect_numbered(ws: &mut Ws, i: u32) {
    let got = recv(ws);
    assert!(got == numbered(i), "message {i}: got {:.80?}", got);
}

fn gauge(v: &serde_json::Value, name: &str) -> u64 {
    v["totals"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name}"))
}

fn kept_messages_arrive_in_order_before_newer_ones(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut a = srv.connect("/v1/relay/order?role=a");
    for i in 0..300 {
        a.send(numbered(i)).unwrap();
    }
    // A fragmented message, with a ping between its frames, kept whole.
    for (k, (part, op, fin)) in [
        ("frag-", OpCode::Data(Data::Text), false),
        ("ment", OpCode::Data(Data::Continue), false),
        ("ed", OpCode::Data(Data::Continue), true),
    ]
    .into_iter()
    .enumerate()
    {
        a.write(Message::Frame(Frame::message(
            part.as_bytes().to_vec(),
            op,
            fin,
        )))
        .unwrap();
        if k == 0 {
            a.write(Message::Ping(b"p".to_vec().into())).unwrap();
        }
    }
    a.flush().unwrap();
    let v = stats_when(&srv, |v| v["totals"]["buffered_messages"] == 301);
    assert_eq!(gauge(&v, "buffered_messages"), 301, "{v}");
    assert!(gauge(&v, "buffered_bytes") > 0);
    assert_eq!(gauge(&v, "messages_forwarded"), 0);
    // The receiver joins while the sender goes on: everything arrives once, in order.
    let mut b = srv.connect("/v1/relay/order?role=b");
    let sender = std::thread::spawn(move || {
        for i in 300..500 {
            a.send(numbered(i)).unwrap();
        }
        a
    });
    for i in 0..300 {
        expect_numbered(&mut b, i);
    }
    assert_eq!(recv_text(&mut b), "frag-mented");
    for i in 300..500 {
        expect_numbered(&mut b, i);
    }
    let mut a = sender.join().unwrap();
    let v = stats_when(&srv, |v| v["totals"]["buffered_bytes"] == 0);
    assert_eq!(gauge(&v, "buffered_bytes"), 0, "{v}");
    // Messages sent during the delivery may have gone behind it through the backlog too.
    let buffered = gauge(&v, "messages_buffered");
    assert!(buffered >= 301, "{buffered}");
    assert_eq!(gauge(&v, "messages_delivered_from_buffer"), buffered);
    assert_eq!(gauge(&v, "messages_forwarded"), 501);
    assert_eq!(gauge(&v, "messages_dropped_peer_absent"), 0);
    // Once delivered, the pair forwards directly again, both ways.
    b.send(Message::text("back")).unwrap();
    assert_eq!(recv_text(&mut a), "back");
}

fn a_full_buffer_backpressures_the_sender_and_loses_nothing(driver: &str) {
    let limit = 64 * 1024;
    let srv = TestServer::start(
        driver,
        1,
        &[("RINGRELAY_SESSION_BUFFER_BYTES", &limit.to_string())],
    );
    let mut a = srv.connect("/v1/relay/full?role=a");
    // 16 MiB: more than loopback's socket buffers hold, so the sender must wait.
    let count = 4096u32;
    let sender = std::thread::spawn(move || {
        for i in 0..count {
            let mut m = i.to_be_bytes().to_vec();
            m.resize(4096, (i % 251) as u8);
            a.send(Message::binary(m)).unwrap();
        }
        a
    });
    let v = stats_when(&srv, |v| {
        v["totals"]["buffer_full_pauses"].as_u64() >= Some(1)
    });
    assert!(gauge(&v, "buffer_full_pauses") >= 1, "{v}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!sender.is_finished(), "the sender was never held back");
    // At most the limit plus what one read added past it.
    let read_buffer = 64 * 1024;
    let held = gauge(&stats(&srv), "buffered_bytes");
    assert!(held <= (limit + read_buffer) as u64, "{held} bytes kept");
    let mut b = srv.connect("/v1/relay/full?role=b");
    for i in 0..count {
        match recv(&mut b) {
            Message::Binary(m) => {
                assert_eq!(m.len(), 4096);
                assert_eq!(u32::from_be_bytes(m[..4].try_into().unwrap()), i);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    sender.join().unwrap();
    assert_eq!(counter(&srv, "messages_dropped_peer_absent"), 0);
    assert_eq!(counter(&srv, "buffer_overflow_dropped"), 0);
}

fn drop_oldest_keeps_the_newest_and_says_so(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_SESSION_OVERFLOW", "drop_oldest"),
            ("RINGRELAY_SESSION_BUFFER_MESSAGES", "10"),
        ],
    );
    let mut a = srv.connect("/v1/relay/dropold?role=a&events=1");
    assert_eq!(recv_event(&mut a)["type"], "connected");
    for i in 0..50 {
        a.send(Message::text(format!("m{i}"))).unwrap();
    }
    let v = stats_when(&srv, |v| v["totals"]["buffer_overflow_dropped"] == 40);
    assert_eq!(gauge(&v, "buffer_overflow_dropped"), 40, "{v}");
    assert_eq!(gauge(&v, "buffered_messages"), 10);
    // Told, in one or more error events, of every message dropped.
    let mut told = 0;
    while told < 40 {
        let e = recv_event(&mut a);
        assert_eq!(
            (e["type"].as_str(), e["error"].as_str()),
            (Some("error"), Some("buffer_overflow"))
        );
        let detail = e["detail"].as_str().unwrap();
        told += detail.split(' ').next().unwrap().parse::<u32>().unwrap();
    }
    assert_eq!(told, 40);
    let mut b = srv.connect("/v1/relay/dropold?role=b");
    for i in 40..50 {
        assert_eq!(recv_text(&mut b), format!("m{i}"));
    }
    b.send(Message::text("live")).unwrap();
    assert_eq!(recv_event(&mut a)["type"], "peer_connected");
    assert_eq!(recv_text(&mut a), "live");
}

fn close_policy_closes_the_sender_and_delivers_what_was_kept(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_SESSION_OVERFLOW", "close"),
            ("RINGRELAY_SESSION_BUFFER_MESSAGES", "5"),
        ],
    );
    let mut a = srv.connect("/v1/relay/closepol?role=a&events=1");
    assert_eq!(recv_event(&mut a)["type"], "connected");
    for i in 0..10 {
        a.send(Message::text(format!("m{i}"))).unwrap();
    }
    let e = recv_event(&mut a);
    assert_eq!(
        (e["type"].as_str(), e["error"].as_str()),
        (Some("error"), Some("buffer_overflow"))
    );
    assert_eq!(recv_close(&mut a), Some(4005));
    let v = stats_when(&srv, |v| v["totals"]["buffer_overflow_closed"] == 1);
    assert_eq!(gauge(&v, "buffer_overflow_closed"), 1);
    let kept = gauge(&v, "buffered_messages");
    assert!((6..=10).contains(&kept), "{kept} kept");
    // What was kept before the close is delivered, in order, from the start.
    let mut b = srv.connect("/v1/relay/closepol?role=b");
    for i in 0..kept {
        assert_eq!(recv_text(&mut b), format!("m{i}"));
    }
    let v = stats_when(&srv, |v| {
        v["totals"]["connections_closed_by_reason"]["buffer_full"] == 1
    });
    assert_eq!(
        v["totals"]["connections_closed_by_reason"]["buffer_full"], 1,
        "{v}"
    );
}

fn linger_frees_what_was_kept(driver: &str) {
    let srv = TestServer::start(driver, 1, &[("RINGRELAY_SESSION_LINGER", "1s")]);
    // Kept messages outlive their sender within the linger...
    let mut a = srv.connect("/v1/relay/linger1?role=a");
    a.send(Message::text("from a gone")).unwrap();
    close(&mut a, 1000);
    let v = stats_when(&srv, |v| v["totals"]["lingering_sessions"] == 1);
    assert_eq!(gauge(&v, "lingering_sessions"), 1, "{v}");
    let mut b = srv.connect("/v1/relay/linger1?role=b");
    assert_eq!(recv_text(&mut b), "from a gone");
    close(&mut b, 1000);
    // ...and are freed with their session after it.
    let mut a = srv.connect("/v1/relay/linger2?role=a");
    for i in 0..20 {
        a.send(Message::binary(vec![i; 1000])).unwrap();
    }
    close(&mut a, 1000);
    let v = stats_when(&srv, |v| {
        v["totals"]["buffered_messages"] == 20 && v["totals"]["active_connections"] == 0
    });
    assert!(gauge(&v, "buffered_bytes") >= 20_000, "{v}");
    assert_eq!(gauge(&v, "active_sessions"), 1);
    let t0 = Instant::now();
    let v = stats_when(&srv, |v| v["totals"]["sessions_linger_expired"] == 1);
    assert_eq!(gauge(&v, "sessions_linger_expired"), 1, "{v}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(gauge(&v, "messages_dropped_linger"), 20);
    assert_eq!(gauge(&v, "buffered_bytes"), 0);
    assert_eq!(gauge(&v, "buffered_capacity_bytes"), 0);
    assert_eq!(
        (
            gauge(&v, "active_sessions"),
            gauge(&v, "lingering_sessions")
        ),
        (0, 0)
    );
    // A session that keeps nothing is not kept at all.
    let mut c = srv.connect("/v1/relay/linger3?role=a");
    close(&mut c, 1000);
    let v = stats_when(&srv, |v| v["totals"]["active_connections"] == 0);
    assert_eq!(gauge(&v, "active_sessions"), 0, "{v}");
}

fn the_core_budget_holds_every_sender_back(driver: &str) {
    let budget = 128 * 1024;
    let srv = TestServer::start(
        driver,
        1,
        &[("RINGRELAY_SESSION_CORE_BUFFER_BUDGET", &budget.to_string())],
    );
    let senders: Vec<_> = (0..3)
        .map(|s| {
            let mut a = srv.connect(&format!("/v1/relay/budget{s}?role=a"));
            std::thread::spawn(move || {
                for i in 0..1024u32 {
                    let mut m = i.to_be_bytes().to_vec();
                    m.resize(8192, s as u8);
                    a.send(Message::binary(m)).unwrap();
                }
                a
            })
        })
        .collect();
    let v = stats_when(&srv, |v| {
        v["totals"]["buffer_full_pauses"].as_u64() >= Some(3)
    });
    assert!(gauge(&v, "buffer_full_pauses") >= 3, "{v}");
    std::thread::sleep(Duration::from_millis(300));
    let held = gauge(&stats(&srv), "buffered_bytes");
    // Each of the three may have added one read past the budget before it paused.
    assert!(held <= (budget + 3 * 64 * 1024) as u64, "{held} bytes kept");
    for (s, sender) in senders.into_iter().enumerate() {
        let mut b = srv.connect(&format!("/v1/relay/budget{s}?role=b"));
        for i in 0..1024u32 {
            match recv(&mut b) {
                Message::Binary(m) => assert_eq!(
                    (u32::from_be_bytes(m[..4].try_into().unwrap()), m[4]),
                    (i, s as u8)
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        sender.join().unwrap();
    }
}

fn a_message_larger_than_the_buffer_is_kept_whole(driver: &str) {
    // The limits count whole messages: one still arriving must be read to its end, or
    // neither it nor anything after it could ever be delivered.
    let srv = TestServer::start(driver, 1, &[("RINGRELAY_SESSION_BUFFER_BYTES", "16384")]);
    let mut a = srv.connect("/v1/relay/bigone?role=a");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    a.send(Message::binary(big.clone())).unwrap();
    a.send(Message::text("after")).unwrap();
    // The big message alone is over the limit: "after" may wait in TCP (backpressure).
    let v = stats_when(&srv, |v| {
        v["totals"]["buffered_messages"].as_u64() >= Some(1)
    });
    assert!(gauge(&v, "buffered_messages") >= 1, "{v}");
    let mut b = srv.connect("/v1/relay/bigone?role=b");
    assert_eq!(recv(&mut b), Message::binary(big));
    assert_eq!(recv_text(&mut b), "after");
}

fn a_sender_leaving_mid_message_leaves_no_part_of_it(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut a = Raw::upgrade(srv.addr, "/v1/relay/midleave?role=a");
    a.send(&frame(true, 1, b"whole one"));
    a.send(&frame(false, 1, b"half of a mess"));
    stats_when(&srv, |v| v["totals"]["buffered_messages"] == 1);
    drop(a);
    stats_when(&srv, |v| v["totals"]["active_connections"] == 0);
    // The same role again: its first message must not be glued to the abandoned half.
    let mut a2 = srv.connect("/v1/relay/midleave?role=a");
    a2.send(Message::text("next")).unwrap();
    let mut b = srv.connect("/v1/relay/midleave?role=b");
    assert_eq!(recv_text(&mut b), "whole one");
    assert_eq!(recv_text(&mut b), "next");
    b.send(Message::text("ok")).unwrap();
    assert_eq!(recv_text(&mut a2), "ok");
}

fn buffering_off_drops_and_says_so(driver: &str) {
    let srv = TestServer::start(driver, 1, &[("RINGRELAY_SESSION_BUFFER_BYTES", "0")]);
    let mut a = srv.connect("/v1/relay/off?role=a&events=1");
    assert_eq!(recv_event(&mut a)["type"], "connected");
    a.send(Message::text("nobody")).unwrap();
    let e = recv_event(&mut a);
    assert_eq!(
        (e["type"].as_str(), e["error"].as_str()),
        (Some("error"), Some("peer_absent"))
    );
    assert_eq!(counter(&srv, "messages_dropped_peer_absent"), 1);
    let mut b = srv.connect("/v1/relay/off?role=b");
    assert_eq!(recv_event(&mut a)["type"], "peer_connected");
    a.send(Message::text("live")).unwrap();
    assert_eq!(recv_text(&mut b), "live");
}

both_drivers!(
    kept_messages_arrive_in_order_before_newer_ones,
    a_full_buffer_backpressures_the_sender_and_loses_nothing,
    drop_oldest_keeps_the_newest_and_says_so,
    close_policy_closes_the_sender_and_delivers_what_was_kept,
    linger_frees_what_was_kept,
    the_core_budget_holds_every_sender_back,
    a_message_larger_than_the_buffer_is_kept_whole,
    a_sender_leaving_mid_message_leaves_no_part_of_it,
    buffering_off_drops_and_says_so,
);
