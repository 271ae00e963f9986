//! The Durable Object relay's events on `/desktop/{id}` and `/mobile/{id}` (issue 24, item
//! 3), against the real binary on both drivers, with a `/v1/relay` pair beside them that keeps
//! today's events.
//!
//! Before: these paths sent our names (`connected` {session, role}, `peer_connected`,
//! `peer_disconnected`) and nothing at all when a message was sent while the other side was
//! away, so the Durable Object relay's apps (which wait for `mobile_connected` and show
//! "Mobile device not connected") never saw the events they were written against.

mod common;
use common::*;
use std::time::{Duration, Instant};
use tungstenite::Message;

fn key_of(e: &serde_json::Value) -> String {
    e["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {e}"))
        .to_string()
}

/// The relay's next event (checked against the connection's key), skipping nothing: the
/// tests below know exactly what comes.
fn event(ws: &mut Ws, key: &str) -> serde_json::Value {
    let e = recv_event(ws);
    assert_eq!(e["key"], key, "not this connection's event: {e}");
    let (ts, stamp) = (e["ts"].as_u64(), e["timestamp"].as_u64());
    assert!(
        stamp.is_some_and(|t| t > 1_600_000_000_000) && stamp == ts,
        "every event carries timestamp (ms since the epoch): {e}"
    );
    e
}

/// Connects on a compatible path and reads its `connected`: the Durable Object relay's
/// fields, with ours riding along.
fn join(srv: &TestServer, role: &str, session: &str) -> (Ws, String) {
    let mut ws = srv.connect(&format!("/{role}/{session}"));
    let e = recv_event(&mut ws);
    let key = key_of(&e);
    assert_eq!(e["timestamp"], e["ts"], "{e}");
    assert_eq!(
        (
            e["type"].as_str(),
            e["clientType"].as_str(),
            e["sessionId"].as_str()
        ),
        (Some("connected"), Some(role), Some(session)),
        "{e}"
    );
    assert!(e["timestamp"].as_u64().unwrap() > 1_600_000_000_000, "{e}");
    (ws, key)
}

/// A `/v1/relay` pair: today's events, and its messages keep flowing.
fn control_pair(srv: &TestServer) -> (Ws, Ws) {
    let mut a = srv.connect("/v1/relay/ctl?role=desktop&events=1");
    let mut b = srv.connect("/v1/relay/ctl?role=mobile&events=1");
    let e = recv_event(&mut a);
    assert_eq!(e["type"], "connected");
    assert!(e.get("clientType").is_none(), "{e}");
    assert_eq!(recv_event(&mut a)["type"], "peer_connected");
    assert_eq!(recv_event(&mut b)["type"], "connected");
    (a, b)
}

fn control_flows(a: &mut Ws, b: &mut Ws, i: usize) {
    a.send(Message::text(format!("ctl {i}"))).unwrap();
    assert_eq!(recv_text(b), format!("ctl {i}"));
}

fn connect_and_leave_events(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let (mut ca, mut cb) = control_pair(&srv);
    let (mut d, kd) = join(&srv, "desktop", "abc123");
    let (mut m, km) = join(&srv, "mobile", "abc123");
    // The mobile joins a desktop already there: told at once, after `connected`.
    let e = event(&mut m, &km);
    assert_eq!(e["type"], "desktop_connected", "{e}");
    let e = event(&mut d, &kd);
    assert_eq!(e["type"], "mobile_connected", "{e}");
    control_flows(&mut ca, &mut cb, 1);
    m.send(Message::text("from mobile")).unwrap();
    assert_eq!(recv_text(&mut d), "from mobile");
    close(&mut m, 1000);
    let e = event(&mut d, &kd);
    assert_eq!(e["type"], "mobile_disconnected", "{e}");
    let (mut m2, km2) = join(&srv, "mobile", "abc123");
    assert_eq!(event(&mut m2, &km2)["type"], "desktop_connected");
    assert_eq!(event(&mut d, &kd)["type"], "mobile_connected");
    close(&mut d, 1000);
    let e = event(&mut m2, &km2);
    assert_eq!(e["type"], "desktop_disconnected", "{e}");
    // The /v1/relay pair kept today's names throughout.
    close(&mut cb, 1000);
    assert_eq!(recv_event(&mut ca)["type"], "peer_disconnected");
}

/// Reads the desktop's events until `mobile_connected`, counting the away errors.
fn away_errors_until_mobile(d: &mut Ws, kd: &str) -> usize {
    let mut errors = 0;
    loop {
        let e = event(d, kd);
        match e["type"].as_str() {
            Some("mobile_connected") => return errors,
            Some("error") => {
                assert_eq!(e["error"], "Mobile device not connected", "{e}");
                errors += 1;
            }
            _ => panic!("unexpected event {e}"),
        }
    }
}

fn sender_is_told_the_other_side_is_away_once_a_second(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let (mut ca, mut cb) = control_pair(&srv);
    let (mut d, kd) = join(&srv, "desktop", "away1");
    // A burst, a pause over a second, one more: two notices, not twenty-one.
    let started = Instant::now();
    for i in 0..20 {
        d.send(Message::text(format!("m{i}"))).unwrap();
    }
    let burst = started.elapsed();
    std::thread::sleep(Duration::from_millis(1100));
    d.send(Message::text("m20")).unwrap();
    let span = started.elapsed();
    control_flows(&mut ca, &mut cb, 2);
    // Every message was kept as usual, and comes in order after the greeting.
    let (mut m, km) = join(&srv, "mobile", "away1");
    assert_eq!(event(&mut m, &km)["type"], "desktop_connected");
    for i in 0..21 {
        assert_eq!(recv_text(&mut m), format!("m{i}"));
    }
    let errors = away_errors_until_mobile(&mut d, &kd);
    // At most one a second: the server's clock may straddle a second boundary more than the
    // client's did, hence the one extra allowed.
    let most = 2 + span.as_secs() as usize;
    assert!(
        (2..=most).contains(&errors),
        "{errors} notices for 21 messages over {span:?} (burst {burst:?})"
    );
    assert!(counter(&srv, "peer_away_notices") >= 2);
    // The mobile alone is told in its own words.
    close(&mut d, 1000);
    assert_eq!(event(&mut m, &km)["type"], "desktop_disconnected");
    m.send(Message::binary(vec![1, 2, 3])).unwrap();
    let e = event(&mut m, &km);
    assert_eq!(
        (e["type"].as_str(), e["error"].as_str()),
        (Some("error"), Some("Desktop not connected")),
        "{e}"
    );
    // A /v1/relay peer alone is told nothing while its message is kept, as today.
    close(&mut cb, 1000);
    assert_eq!(recv_event(&mut ca)["type"], "peer_disconnected");
    ca.send(Message::text("kept quietly")).unwrap();
    let mut b2 = srv.connect("/v1/relay/ctl?role=mobile");
    assert_eq!(recv_text(&mut b2), "kept quietly");
    assert_eq!(recv_event(&mut ca)["type"], "peer_connected");
}

both_drivers!(
    connect_and_leave_events,
    sender_is_told_the_other_side_is_away_once_a_second,
);
