//! The Autobahn|Testsuite cases ringrelay once failed, mirrored with raw frames against the
//! real binary on both drivers: a ping between the fragments of a message is answered in its
//! place (5.6, 5.8, 5.19, 5.20), every ping of an ordinary burst gets its own pong (2.10,
//! 2.11), and a flood past `limits.max_pending_pongs` is coalesced and counted.
//! scripts/autobahn.sh runs the suite itself where Python 2.7 can be had.

mod common;
use common::*;

const TEXT: u8 = 1;
const CONT: u8 = 0;
const PING: u8 = 9;
const PONG: u8 = 10;

/// Frames until (and including) the first one that ends a data message.
fn frames_through_message(raw: &mut Raw) -> Vec<(bool, u8, Vec<u8>)> {
    let mut got = Vec::new();
    while let Some(f) = raw.frame() {
        let end = f.0 && f.1 < 8;
        got.push(f);
        if end {
            return got;
        }
    }
    panic!("connection ended after {got:?}");
}

/// 5.6 and 5.19 in one write: the echo route answers each ping between the fragments it
/// arrived between. Before: both pongs came after the whole echoed message (the decoder kept
/// only the latest ping, answered once the read's frames were written), so the second ping
/// got no pong of its own either.
fn pings_between_fragments_are_answered_in_place_on_echo(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut raw = Raw::upgrade(srv.addr, "/v1/echo");
    let wire = [
        frame(false, TEXT, b"fragment1"),
        frame(false, CONT, b"fragment2"),
        frame(true, PING, b"pongme 1!"),
        frame(false, CONT, b"fragment3"),
        frame(false, CONT, b"fragment4"),
        frame(true, PING, b"pongme 2!"),
        frame(true, CONT, b"fragment5"),
    ]
    .concat();
    raw.send(&wire);
    let got = frames_through_message(&mut raw);
    let ops: Vec<u8> = got.iter().map(|f| f.1).collect();
    assert_eq!(ops, [TEXT, CONT, PONG, CONT, CONT, PONG, CONT], "{got:?}");
    assert_eq!(got[2].2, b"pongme 1!");
    assert_eq!(got[5].2, b"pongme 2!");
    let message: Vec<u8> = got
        .iter()
        .filter(|f| f.1 != PONG)
        .flat_map(|f| f.2.clone())
        .collect();
    assert_eq!(message, b"fragment1fragment2fragment3fragment4fragment5");
}

/// 2.10/2.11: ten pings at once get ten pongs, in order, on the echo route. Before: one.
fn a_burst_of_ten_pings_gets_ten_pongs_on_echo(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut raw = Raw::upgrade(srv.addr, "/v1/echo");
    let mut wire: Vec<u8> = (0..10)
        .flat_map(|k| frame(true, PING, format!("payload-{k}").as_bytes()))
        .collect();
    wire.extend(frame(true, TEXT, b"sync"));
    raw.send(&wire);
    let got = frames_through_message(&mut raw);
    let want: Vec<(bool, u8, Vec<u8>)> = (0..10)
        .map(|k| (true, PONG, format!("payload-{k}").into_bytes()))
        .chain([(true, TEXT, b"sync".to_vec())])
        .collect();
    assert_eq!(got, want);
    assert_eq!(counter(&srv, "pongs_sent"), 10);
    assert_eq!(counter(&srv, "pings_coalesced"), 0);
}

/// The relay route answers toward the sender: a burst of ten and a ping between fragments
/// get a pong each, while the receiver gets the message whole and no pong. A control pair of
/// another session flows beside it. Before: one pong for the ten.
fn pings_on_the_relay_route_are_answered_to_the_sender(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut a = Raw::upgrade(srv.addr, "/v1/relay/conf?role=desktop");
    let mut b = Raw::upgrade(srv.addr, "/v1/relay/conf?role=mobile");
    let mut ctl_a = srv.connect("/v1/relay/control?role=desktop");
    let mut ctl_b = srv.connect("/v1/relay/control?role=mobile");
    let mut wire: Vec<u8> = (0..10)
        .flat_map(|k| frame(true, PING, format!("p{k}").as_bytes()))
        .collect();
    wire.extend(frame(false, TEXT, b"one,"));
    wire.extend(frame(true, PING, b"mid"));
    wire.extend(frame(true, CONT, b"two"));
    a.send(&wire);
    let to_b = frames_through_message(&mut b);
    let ops: Vec<u8> = to_b.iter().map(|f| f.1).collect();
    assert_eq!(ops, [TEXT, CONT], "{to_b:?}");
    let mut pongs = Vec::new();
    while pongs.len() < 11 {
        let (_, op, p) = a.frame().expect("sender's pongs");
        assert_eq!(op, PONG);
        pongs.push(String::from_utf8(p).unwrap());
    }
    let want: Vec<String> = (0..10)
        .map(|k| format!("p{k}"))
        .chain(["mid".into()])
        .collect();
    assert_eq!(pongs, want);
    ctl_a
        .send(tungstenite::Message::text("still flowing"))
        .unwrap();
    assert_eq!(recv_text(&mut ctl_b), "still flowing");
}

/// A flood past the bound: at most `limits.max_pending_pongs` pongs per read, the latest ping
/// answered last, the rest counted as coalesced; the connection and a control pair go on.
fn a_ping_flood_is_coalesced_past_the_bound(driver: &str) {
    let srv = TestServer::start(driver, 1, &[("RINGRELAY_LIMITS_MAX_PENDING_PONGS", "4")]);
    let mut raw = Raw::upgrade(srv.addr, "/v1/echo");
    let mut ctl = Raw::upgrade(srv.addr, "/v1/echo");
    let mut wire: Vec<u8> = (0..40)
        .flat_map(|k| frame(true, PING, format!("{k}").as_bytes()))
        .collect();
    wire.extend(frame(true, TEXT, b"sync"));
    raw.send(&wire);
    let got = frames_through_message(&mut raw);
    let (sync, pongs) = got.split_last().unwrap();
    assert_eq!(sync.2, b"sync");
    assert!(pongs.iter().all(|f| f.1 == PONG), "{got:?}");
    // One write of 40 small pings is one read on loopback; a read split would give 4 more.
    assert!(
        pongs.len() < 40 && pongs.len() % 4 == 0,
        "{} pongs",
        pongs.len()
    );
    assert_eq!(
        pongs.last().unwrap().2,
        b"39",
        "the latest ping is answered"
    );
    let sent = counter(&srv, "pongs_sent");
    assert_eq!(sent, pongs.len() as u64);
    assert_eq!(counter(&srv, "pings_coalesced"), 40 - sent);
    ctl.send(&frame(true, TEXT, b"control"));
    assert_eq!(ctl.frame(), Some((true, TEXT, b"control".to_vec())));
}

both_drivers!(
    pings_between_fragments_are_answered_in_place_on_echo,
    a_burst_of_ten_pings_gets_ten_pongs_on_echo,
    pings_on_the_relay_route_are_answered_to_the_sender,
    a_ping_flood_is_coalesced_past_the_bound,
);
