//! Verifies pairing, forwarding, events, control frames and shutdown against the real binary
//! with tungstenite clients, on both I/O drivers.

mod common;
use common::*;
use sha1::{Digest, Sha1};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

fn text_and_binary_both_ways(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut a = srv.connect("/v1/relay/tb?role=desktop");
    let mut b = srv.connect("/v1/relay/tb?role=mobile");
    for i in 0..200 {
        a.send(Message::text(format!("a{i}"))).unwrap();
        b.send(Message::binary(vec![i as u8; i + 1])).unwrap();
    }
    for i in 0..200 {
        assert_eq!(recv_text(&mut b), format!("a{i}"));
        assert_eq!(recv(&mut a), Message::binary(vec![i as u8; i + 1]));
    }
}

fn events_tell_who_comes_and_goes(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut a = srv.connect("/v1/relay/ev?events=1");
    let e = recv_event(&mut a);
    assert_eq!(
        (
            e["type"].as_str(),
            e["role"].as_str(),
            e["peer_present"].as_bool()
        ),
        (Some("connected"), Some("a"), Some(false))
    );
    assert_eq!(e["session"], "ev");
    assert!(e["ts"].as_u64().unwrap() > 1_600_000_000_000);
    let mut b = srv.connect("/v1/relay/ev?events=1");
    let e = recv_event(&mut b);
    assert_eq!(
        (e["role"].as_str(), e["peer_present"].as_bool()),
        (Some("b"), Some(true))
    );
    let e = recv_event(&mut a);
    assert_eq!(
        (e["type"].as_str(), e["role"].as_str()),
        (Some("peer_connected"), Some("b"))
    );
    close(&mut b, 1000);
    let e = recv_event(&mut a);
    assert_eq!(
        (e["type"].as_str(), e["role"].as_str(), e["code"].as_u64()),
        (Some("peer_disconnected"), Some("b"), Some(1000))
    );
    // Alone now: a message is kept for the absent peer, without an error.
    a.send(Message::text("kept for b")).unwrap();
    // The session waits for a reconnect, which gets role b again, and the kept message.
    let mut b2 = srv.connect("/v1/relay/ev");
    assert_eq!(recv_event(&mut a)["type"], "peer_connected");
    assert_eq!(recv_text(&mut b2), "kept for b");
    b2.send(Message::text("back")).unwrap();
    assert_eq!(recv_text(&mut a), "back");
}

fn without_events_only_messages_arrive(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut a = srv.connect("/v1/relay/quiet");
    let mut b = srv.connect("/v1/relay/quiet");
    b.send(Message::text("only this")).unwrap();
    assert_eq!(recv_text(&mut a), "only this");
    close(&mut b, 1000);
    let mut b = srv.connect("/v1/relay/quiet");
    b.send(Message::text("and this")).unwrap();
    assert_eq!(recv_text(&mut a), "and this", "no event came first");
}

/// The `key` of an event: 32 lower-case hex digits, or a failure naming the event.
fn key_of(e: &serde_json::Value) -> String {
    let k = e["key"].as_str().unwrap_or_else(|| panic!("no key in {e}"));
    assert!(
        k.len() == 32 && k.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
        "{e}"
    );
    k.to_string()
}

/// Reads events until one of `typ`, checking that each carries `key`.
fn event_with_key(ws: &mut Ws, typ: &str, key: &str) -> serde_json::Value {
    loop {
        let e = recv_event(ws);
        assert_eq!(e["key"], key, "an event without this connection's key: {e}");
        if e["type"] == typ {
            return e;
        }
    }
}

/// A peer can send text that reads exactly like a relay event. Before: events carried no key,
/// so the forged `peer_disconnected` below was byte for byte what the relay sends and a
/// client could not tell them apart. Now `connected` (only the relay can send the first
/// message) gives each connection its own key, every later event to it carries that key, and
/// the peer's text arrives verbatim, without it.
fn events_carry_their_connection_s_key_and_forgeries_do_not(driver: &str) {
    let srv = TestServer::start(
        driver,
        2,
        &[
            ("RINGRELAY_SESSION_OVERFLOW", "drop_oldest"),
            ("RINGRELAY_SESSION_BUFFER_MESSAGES", "1"),
        ],
    );
    let mut a = srv.connect("/v1/relay/keyed?role=a&events=1");
    let hello = recv_event(&mut a);
    assert_eq!(hello["type"], "connected");
    let ka = key_of(&hello);
    // Alone, two messages for one kept: the error event carries the key too.
    a.send(Message::text("k1")).unwrap();
    a.send(Message::text("k2")).unwrap();
    assert_eq!(
        event_with_key(&mut a, "error", &ka)["error"],
        "buffer_overflow"
    );
    let mut b = srv.connect("/v1/relay/keyed?role=b&events=1");
    let kb = key_of(&recv_event(&mut b));
    assert_ne!(ka, kb, "each connection has its own key");
    assert_eq!(recv_text(&mut b), "k2");
    assert_eq!(event_with_key(&mut a, "peer_connected", &ka)["role"], "b");

    // Forgeries: the relay's own shape, b's own key (the only one b knows), a guessed key,
    // pretty-printed. Each reaches a exactly as sent, and none carries a's key.
    let ts = hello["ts"].as_u64().unwrap();
    let forged = [
        format!(r#"{{"code":1000,"role":"b","ts":{ts},"type":"peer_disconnected"}}"#),
        format!(r#"{{"type":"peer_disconnected","ts":{ts},"role":"b","code":1000,"key":"{kb}"}}"#),
        format!(
            r#"{{"type":"error","ts":{ts},"error":"resume_gap","first":1,"key":"{}"}}"#,
            "0".repeat(32)
        ),
        format!("{{\n  \"type\": \"connected\",\n  \"ts\": {ts},\n  \"key\": \"{kb}\"\n}}"),
    ];
    for f in &forged {
        b.send(Message::text(f.as_str())).unwrap();
        let got = recv_text(&mut a);
        assert_eq!(&got, f, "forwarded verbatim");
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_ne!(v["key"], ka.as_str());
    }
    // The control: real messages and real events still flow, each event with a's key.
    b.send(Message::text("real")).unwrap();
    assert_eq!(recv_text(&mut a), "real");

    // A replacement gets a fresh key, never the one of the connection it replaces.
    let mut b2 = srv.connect("/v1/relay/keyed?role=b&events=1");
    let kb2 = key_of(&recv_event(&mut b2));
    assert!(kb2 != kb && kb2 != ka);
    assert_eq!(recv_close(&mut b), Some(4001));
    event_with_key(&mut a, "peer_connected", &ka);
    close(&mut b2, 1000);
    let gone = event_with_key(&mut a, "peer_disconnected", &ka);
    assert_eq!((&gone["role"], &gone["code"]), (&"b".into(), &1000.into()));

    // `resume=` past what was delivered: connected and resume_ahead carry one key.
    let mut r = srv.connect("/v1/relay/keyed-2?role=b&events=1&resume=5");
    let kr = key_of(&recv_event(&mut r));
    assert_eq!(
        event_with_key(&mut r, "error", &kr)["error"],
        "resume_ahead"
    );
    // The compatible paths have events on, so keys too.
    let mut d = srv.connect("/desktop/keyed-3");
    assert!(![&ka, &kb, &kb2, &kr].contains(&&key_of(&recv_event(&mut d))));

    // peer_absent (buffering off) carries the key as well.
    let off = TestServer::start(driver, 1, &[("RINGRELAY_SESSION_BUFFER_BYTES", "0")]);
    let mut alone = off.connect("/v1/relay/keyed?role=a&events=1");
    let k = key_of(&recv_event(&mut alone));
    alone.send(Message::text("nobody")).unwrap();
    assert_eq!(
        event_with_key(&mut alone, "error", &k)["error"],
        "peer_absent"
    );
}

fn same_role_replaces_and_third_peer_is_refused(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut d = srv.connect("/desktop/rep");
    let mut m = srv.connect("/mobile/rep");
    // The compatible paths speak the Durable Object relay's events (tests/durable_events.rs).
    assert_eq!(recv_event(&mut d)["type"], "connected");
    assert_eq!(recv_event(&mut d)["type"], "mobile_connected");
    assert_eq!(recv_event(&mut m)["type"], "connected");
    assert_eq!(recv_event(&mut m)["type"], "desktop_connected");
    let (status, head, body) = get(srv.addr, "/v1/relay/rep?role=agent");
    assert_eq!(status, 400, "a plain GET is no upgrade: {head}");
    let third = tungstenite::client::client(
        srv.url("/v1/relay/rep?role=agent"),
        std::net::TcpStream::connect(srv.addr).unwrap(),
    );
    match third {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status().as_u16(), 409);
            let v: serde_json::Value =
                serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
            assert_eq!(v["code"], "session_full");
        }
        other => panic!("third peer not refused: {:?}", other.map(|_| ())),
    }
    let _ = body;
    let mut m2 = srv.connect("/mobile/rep");
    assert_eq!(recv_close(&mut m), Some(4001));
    assert_eq!(recv_event(&mut m2)["peer_present"], true);
    assert_eq!(recv_event(&mut m2)["type"], "desktop_connected");
    assert_eq!(recv_event(&mut d)["type"], "mobile_connected");
    m2.send(Message::text("from the new phone")).unwrap();
    assert_eq!(recv_text(&mut d), "from the new phone");
    d.send(Message::text("to the new phone")).unwrap();
    assert_eq!(recv_text(&mut m2), "to the new phone");
}

fn fragmented_message_arrives_whole(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut a = srv.connect("/v1/relay/frag");
    let mut b = srv.connect("/v1/relay/frag");
    let parts = ["Grüße, ", "fragmented ", "wörld"];
    a.write(Message::Frame(Frame::message(
        parts[0].as_bytes().to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    a.write(Message::Ping(b"between".to_vec().into())).unwrap();
    a.write(Message::Frame(Frame::message(
        parts[1].as_bytes().to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    a.write(Message::Frame(Frame::message(
        parts[2].as_bytes().to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    a.flush().unwrap();
    assert_eq!(recv_text(&mut b), parts.concat());
    // The ping was answered to `a` and never reached `b`.
    loop {
        match a.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"between");
                break;
            }
            Message::Ping(_) => continue,
            m => panic!("unexpected {m:?}"),
        }
    }
    b.send(Message::text("next")).unwrap();
    assert_eq!(recv_text(&mut a), "next");
}

fn sixteen_mib_message_streams_through(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[("RINGRELAY_LIMITS_MAX_MESSAGE_BYTES", "33554432")],
    );
    let mut a = srv.connect("/v1/relay/big");
    let mut b = srv.connect("/v1/relay/big");
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = Sha1::digest(&data);
    let writer = std::thread::spawn(move || {
        a.send(Message::binary(data)).unwrap();
        a
    });
    let got = match recv(&mut b) {
        Message::Binary(d) => d,
        m => panic!("{m:?}"),
    };
    assert_eq!(got.len(), 16 << 20);
    assert_eq!(Sha1::digest(&got), want);
    let _a = writer.join().unwrap();
}

fn over_limit_message_closes_1009(driver: &str) {
    let srv = TestServer::start(driver, 1, &[("RINGRELAY_LIMITS_MAX_MESSAGE_BYTES", "1000")]);
    let mut a = srv.connect("/v1/relay/lim");
    let mut b = srv.connect("/v1/relay/lim");
    a.send(Message::binary(vec![0; 1000])).unwrap();
    assert_eq!(recv(&mut b), Message::binary(vec![0; 1000]));
    a.send(Message::binary(vec![0; 1001])).unwrap();
    assert_eq!(recv_close(&mut a), Some(1009));
}

fn close_handshake_both_ways(driver: &str) {
    let srv = TestServer::start(driver, 1, &[("RINGRELAY_SESSION_IDLE_TIMEOUT", "1s")]);
    // Client-initiated: the relay echoes the code.
    let mut raw = Raw::upgrade(srv.addr, "/v1/echo");
    raw.send(&frame(true, 8, &[0x0b, 0xb8, b'b', b'y', b'e']));
    assert_eq!(raw.close_code(), Some(3000));
    assert_eq!(raw.frame(), None, "TCP closed after the close handshake");
    // Relay-initiated (idle session): 4002, and the relay waits for our answer.
    let mut a = srv.connect("/v1/relay/idle");
    let mut b = srv.connect("/v1/relay/idle");
    assert_eq!(recv_close(&mut a), Some(4002));
    assert_eq!(recv_close(&mut b), Some(4002));
}

fn relay_pings_and_drops_silent_peers(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_SESSION_PING_INTERVAL", "200ms"),
            ("RINGRELAY_SESSION_PEER_TIMEOUT", "1s"),
        ],
    );
    let mut raw = Raw::upgrade(srv.addr, "/v1/relay/ka");
    let (_, op, _) = raw.frame().expect("a ping");
    assert_eq!(op, 9);
    // We never answer and never send: dropped after the peer timeout.
    let started = std::time::Instant::now();
    while raw.frame().is_some() {}
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

fn echo_and_health(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut e = srv.connect("/v1/echo");
    e.send(Message::text("echo me")).unwrap();
    assert_eq!(recv_text(&mut e), "echo me");
    e.send(Message::binary(vec![7; 70_000])).unwrap();
    assert_eq!(recv(&mut e), Message::binary(vec![7; 70_000]));
    for addr in [srv.addr, srv.admin] {
        let (status, head, body) = get(addr, "/health");
        assert_eq!(status, 200);
        for h in [
            "X-Content-Type-Options: nosniff",
            "X-Frame-Options: DENY",
            "Referrer-Policy: no-referrer",
            "Cache-Control: no-store",
        ] {
            assert!(head.contains(h), "{h} missing: {head}");
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (
                v["status"].as_str(),
                v["service"].as_str(),
                v["driver"].as_str()
            ),
            (Some("ok"), Some("ringrelay"), Some(driver))
        );
        assert_eq!(v["workers"], 2);
        assert_eq!(v["active_connections"], 1, "the echo connection");
        assert!(
            v["uptime_s"].is_u64() && v["version"].is_string() && v["active_sessions"].is_u64()
        );
    }
    let (status, _, body) = get(srv.addr, "/nope");
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"],
        "not_found"
    );
}

fn shutdown_closes_with_1001_and_exits_0(driver: &str) {
    let mut srv = TestServer::start(driver, 2, &[]);
    let mut a = srv.connect("/v1/relay/bye");
    let mut b = srv.connect("/v1/relay/bye");
    a.send(Message::text("hi")).unwrap();
    assert_eq!(recv_text(&mut b), "hi");
    let (ta, tb) = (
        std::thread::spawn(move || recv_close(&mut a)),
        std::thread::spawn(move || recv_close(&mut b)),
    );
    assert_eq!(srv.terminate(), Some(0));
    assert_eq!(ta.join().unwrap(), Some(1001));
    assert_eq!(tb.join().unwrap(), Some(1001));
}

fn peers_accepted_on_different_cores_pair(driver: &str) {
    let srv = TestServer::start(driver, 4, &[]);
    let sessions = 100;
    let mut pairs: Vec<_> = (0..sessions)
        .map(|i| {
            (
                srv.connect(&format!("/v1/relay/x{i}")),
                srv.connect(&format!("/v1/relay/x{i}")),
            )
        })
        .collect();
    for (i, (a, b)) in pairs.iter_mut().enumerate() {
        a.send(Message::text(format!("to b {i}"))).unwrap();
        b.send(Message::text(format!("to a {i}"))).unwrap();
    }
    for (i, (a, b)) in pairs.iter_mut().enumerate() {
        assert_eq!(recv_text(b), format!("to b {i}"));
        assert_eq!(recv_text(a), format!("to a {i}"));
    }
    let (_, _, body) = get(srv.admin, "/health");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["active_sessions"], sessions);
    assert_eq!(v["active_connections"], 2 * sessions);
}

fn violation_closes_the_offender_and_nobody_else(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut a = srv.connect("/v1/relay/good");
    let mut b = srv.connect("/v1/relay/good");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x81, 0x02, b'h', b'i'], 1002),
        (frame(true, 0x3, b""), 1002),
        (frame(true, 0x1, &[0xed, 0xa0, 0x80]), 1007),
        (frame(true, 0x0, b"x"), 1002),
    ];
    for (i, (bytes, code)) in cases.into_iter().enumerate() {
        let session = format!("/v1/relay/bad{i}");
        let mut victim = srv.connect(&session);
        let mut bad = Raw::upgrade(srv.addr, &session);
        bad.send(&bytes);
        assert_eq!(bad.close_code(), Some(code), "case {i}");
        a.send(Message::text(format!("still {i}"))).unwrap();
        assert_eq!(recv_text(&mut b), format!("still {i}"));
        victim.send(Message::text("victim still here")).unwrap();
        let mut again = srv.connect(&session);
        again.send(Message::text("re-paired")).unwrap();
        assert_eq!(recv_text(&mut victim), "re-paired");
    }
}

both_drivers!(
    text_and_binary_both_ways,
    events_tell_who_comes_and_goes,
    without_events_only_messages_arrive,
    events_carry_their_connection_s_key_and_forgeries_do_not,
    same_role_replaces_and_third_peer_is_refused,
    fragmented_message_arrives_whole,
    sixteen_mib_message_streams_through,
    over_limit_message_closes_1009,
    close_handshake_both_ways,
    relay_pings_and_drops_silent_peers,
    echo_and_health,
    shutdown_closes_with_1001_and_exits_0,
    peers_accepted_on_different_cores_pair,
    violation_closes_the_offender_and_nobody_else,
);
