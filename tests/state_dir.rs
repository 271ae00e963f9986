//! `session.state_dir` (docs/upgrade.md): a restart keeps what a client can resume, and a
//! state file that is torn, corrupt, another node's or of a newer format is refused and moved
//! aside while the relay starts and serves. Against the real binary, on both drivers.
//!
//! Before: SIGTERM closed every connection with 1001 and everything kept for an absent peer,
//! every replay window and every ack count died with the process: after a restart the
//! resuming receiver below got `resume_ahead` and none of its messages, and the sender was
//! told `acked: 0`.

mod common;

use common::dir::Dir;
use common::{
    assert_refused, counter, recv_close, recv_event, tcp_from, try_upgrade, TestServer, Ws,
};
use std::path::Path;
use std::time::Duration;
use tungstenite::Message;

const STATE: &str = "ringrelay.state";

fn start(driver: &str, dir: &Path, node: &str) -> TestServer {
    TestServer::start(
        driver,
        2,
        &[
            ("RINGRELAY_SESSION_STATE_DIR", dir.to_str().unwrap()),
            ("RINGRELAY_CLUSTER_NODE_ID", node),
            // Clients here answer a close frame only when they read: do not wait 5 s for it.
            ("RINGRELAY_SESSION_CLOSE_TIMEOUT", "200ms"),
        ],
    )
}

fn msg(i: u32) -> Message {
    Message::binary(format!("message {i}").into_bytes())
}

/// The next data message (binary: events are text), skipping events.
fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.read().expect("read") {
            Message::Binary(b) => return b.to_vec(),
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Reads events until an `ack` for `acked` (acks come within `session.ack_delay`).
fn wait_acked(ws: &mut Ws, acked: u64) {
    loop {
        let e = recv_event(ws);
        if e["type"] == "ack" && e["acked"].as_u64() == Some(acked) {
            return;
        }
    }
}

/// Nothing but pings arrives within `wait`.
fn nothing_within(ws: &mut Ws, wait: Duration) {
    ws.get_mut().set_read_timeout(Some(wait)).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(m) => panic!("expected nothing, got {m:?}"),
            Err(_) => break,
        }
    }
    ws.get_mut().set_read_timeout(None).unwrap();
}

/// Two peers of a session of their own exchange a message each way.
fn control_pair_flows(srv: &TestServer, session: &str) {
    let mut x = srv.connect(&format!("/v1/relay/{session}?role=x"));
    let mut y = srv.connect(&format!("/v1/relay/{session}?role=y"));
    x.send(Message::binary(&b"ping"[..])).unwrap();
    assert_eq!(next_binary(&mut y), b"ping");
    y.send(Message::binary(&b"pong"[..])).unwrap();
    assert_eq!(next_binary(&mut x), b"pong");
}

fn restart_keeps_kept_messages_windows_and_acks(driver: &str) {
    let dir = Dir::new("state_dir", &format!("keeps-{driver}"));
    let mut srv = start(driver, &dir.0, "node-a");
    let mut b = srv.connect("/v1/relay/s?role=b&events=1&resume=0");
    assert_eq!(recv_event(&mut b)["next_seq"], 1);
    let mut a = srv.connect("/v1/relay/s?role=a&events=1&resume=0");
    for i in 1..=5 {
        a.send(msg(i)).unwrap();
    }
    for i in 1..=5 {
        assert_eq!(next_binary(&mut b), msg(i).into_data().to_vec());
    }
    // The receiver processed only 3 of the 5 it got, then left; 5 more are kept for it.
    common::close(&mut b, 1000);
    for i in 6..=10 {
        a.send(msg(i)).unwrap();
    }
    wait_acked(&mut a, 10);
    assert_eq!(srv.terminate(), Some(0));
    assert_eq!(
        recv_close(&mut a),
        Some(1012),
        "1012 Service Restart, not 1001"
    );
    let mode = std::fs::metadata(dir.0.join(STATE)).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600,
        "clients' messages at rest are the relay user's only"
    );

    let srv = start(driver, &dir.0, "node-a");
    assert!(!dir.0.join(STATE).exists(), "read back, then removed");
    assert_eq!(counter(&srv, "state_sessions_loaded"), 1);
    assert_eq!(counter(&srv, "state_files_refused"), 0);
    let mut b = srv.connect("/v1/relay/s?role=b&events=1&resume=3");
    let connected = recv_event(&mut b);
    assert_eq!(connected["next_seq"], 4, "{connected}");
    // 4 and 5 from the replay window, 6 to 10 from what was kept, in order, once.
    for i in 4..=10 {
        assert_eq!(
            next_binary(&mut b),
            msg(i).into_data().to_vec(),
            "message {i}"
        );
    }
    // The sender's count came back too: it resends nothing.
    let mut a = srv.connect("/v1/relay/s?role=a&events=1&resume=0");
    let connected = recv_event(&mut a);
    assert_eq!(connected["acked"], 10, "{connected}");
    a.send(msg(11)).unwrap();
    assert_eq!(next_binary(&mut b), msg(11).into_data().to_vec());
    wait_acked(&mut a, 11);
    control_pair_flows(&srv, "control");
}

/// A state file the relay wrote, holding three messages kept for role b of session "kept".
fn written_state(driver: &str, dir: &Path) -> Vec<u8> {
    let mut srv = start(driver, dir, "node-a");
    let mut a = srv.connect("/v1/relay/kept?role=a");
    for i in 1..=3 {
        a.send(msg(i)).unwrap();
    }
    common::stats_when(&srv, |v| v["totals"]["messages_buffered"] == 3);
    assert_eq!(srv.terminate(), Some(0));
    std::fs::read(dir.join(STATE)).unwrap()
}

/// Each bad file is refused with a log line naming why, moved aside under a name saying so,
/// counted, and none of it loaded, while the relay serves; the file unchanged loads whole.
fn refused_files_are_moved_aside_and_the_relay_serves(driver: &str) {
    let dir = Dir::new("state_dir", &format!("refused-{driver}"));
    let good = written_state(driver, &dir.0);
    let mut flipped = good.clone();
    let mid = good.len() / 2;
    flipped[mid] ^= 0x01;
    let mut newer = good.clone();
    newer[8..10].copy_from_slice(&3u16.to_le_bytes());
    let cases: [(&str, Vec<u8>, &str, &str, &str); 5] = [
        (
            "torn",
            good[..good.len() - 3].to_vec(),
            "node-a",
            "corrupt",
            "torn",
        ),
        ("flipped", flipped, "node-a", "corrupt", "checksum"),
        (
            "other node",
            good.clone(),
            "node-b",
            "other-node",
            "not this node",
        ),
        ("newer", newer, "node-a", "version", "newer than this build"),
        (
            "foreign",
            b"not a state file at all".to_vec(),
            "node-a",
            "foreign",
            "magic",
        ),
    ];
    for (what, bytes, node, suffix, said) in cases {
        std::fs::write(dir.0.join(STATE), &bytes).unwrap();
        let mut srv = start(driver, &dir.0, node);
        assert!(
            srv.log_contains("state file refused"),
            "{what}: no log line"
        );
        assert!(
            srv.log_contains(said),
            "{what}: the log does not say {said:?}"
        );
        assert_eq!(counter(&srv, "state_files_refused"), 1, "{what}");
        assert_eq!(counter(&srv, "state_sessions_loaded"), 0, "{what}");
        let aside: Vec<String> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(&format!("{STATE}.refused-{suffix}-")))
            .collect();
        assert_eq!(aside.len(), 1, "{what}: moved aside as {aside:?}");
        let kept = std::fs::read(dir.0.join(&aside[0])).unwrap();
        assert_eq!(kept, bytes, "{what}: moved aside unchanged");
        std::fs::remove_file(dir.0.join(&aside[0])).unwrap();
        control_pair_flows(&srv, "control");
        // Nothing of it was loaded: the receiver it was kept for gets nothing.
        let mut b = srv.connect("/v1/relay/kept?role=b&events=1");
        assert_eq!(recv_event(&mut b)["peer_present"], false);
        nothing_within(&mut b, Duration::from_millis(200));
        drop(b);
        assert_eq!(srv.terminate(), Some(0));
    }
    // The same file unchanged is read whole: the refusals above were the damage's doing.
    std::fs::write(dir.0.join(STATE), &good).unwrap();
    let srv = start(driver, &dir.0, "node-a");
    assert_eq!(counter(&srv, "state_sessions_loaded"), 1);
    let mut b = srv.connect("/v1/relay/kept?role=b");
    for i in 1..=3 {
        assert_eq!(next_binary(&mut b), msg(i).into_data().to_vec());
    }
}

/// A WebSocket to the echo route from the loopback address `source`.
fn echo_from(srv: &TestServer, source: &str) -> Result<Ws, (u16, String, String)> {
    try_upgrade(tcp_from(source, srv.addr), srv.addr, "/v1/echo", &[])
}

/// The per-IP connection rate outlives a restart: an address that spent its burst is still
/// refused after it, one that spent part of it has only the rest, while a newcomer and a
/// control pair get through. Before: the limiter's tables started empty, so a restart gave
/// every address its whole burst again (127.0.0.31 was upgraded at once after the restart,
/// and 127.0.0.32 got 3 connections instead of 2).
fn a_restart_keeps_each_addresss_spent_connection_budget(driver: &str) {
    let dir = Dir::new("state_dir", &format!("limits-{driver}"));
    let dir_s = dir.0.to_str().unwrap();
    // One connection a minute, a burst of 3: nothing refills within the test.
    let env = [
        ("RINGRELAY_SESSION_STATE_DIR", dir_s),
        ("RINGRELAY_CLUSTER_NODE_ID", "node-a"),
        ("RINGRELAY_SESSION_CLOSE_TIMEOUT", "200ms"),
        ("RINGRELAY_LIMITS_IP_CONNECT_RATE", "1"),
        ("RINGRELAY_LIMITS_IP_CONNECT_BURST", "3"),
    ];
    let mut srv = TestServer::start(driver, 2, &env);
    let held: Vec<Ws> = (0..3)
        .map(|i| echo_from(&srv, "127.0.0.31").unwrap_or_else(|e| panic!("{i}: {e:?}")))
        .collect();
    assert_refused(echo_from(&srv, "127.0.0.31"), 429, "rate_limited");
    let one = echo_from(&srv, "127.0.0.32").expect("127.0.0.32's first");
    drop((held, one));
    assert_eq!(srv.terminate(), Some(0));
    assert!(
        dir.0.join(STATE).exists(),
        "the stop wrote the buckets, though no session kept anything"
    );

    let srv = TestServer::start(driver, 2, &env);
    assert_refused(echo_from(&srv, "127.0.0.31"), 429, "rate_limited");
    assert_eq!(counter(&srv, "state_ip_buckets_loaded"), 2);
    for i in 0..2 {
        echo_from(&srv, "127.0.0.32").unwrap_or_else(|e| panic!("{i}: {e:?}"));
    }
    assert_refused(echo_from(&srv, "127.0.0.32"), 429, "rate_limited");
    // An address the last run never saw has its whole burst.
    for _ in 0..3 {
        echo_from(&srv, "127.0.0.33").expect("a newcomer's burst");
    }
    control_pair_flows(&srv, "control");
}

/// Without `session.state_dir` SIGTERM still says 1001 and writes nothing.
fn without_state_dir_shutdown_is_1001(driver: &str) {
    let mut srv = TestServer::start(driver, 1, &[("RINGRELAY_SESSION_CLOSE_TIMEOUT", "200ms")]);
    let mut a = srv.connect("/v1/relay/plain?role=a");
    a.send(msg(1)).unwrap();
    common::stats_when(&srv, |v| v["totals"]["messages_buffered"] == 1);
    assert_eq!(srv.terminate(), Some(0));
    assert_eq!(recv_close(&mut a), Some(1001));
}

/// `/health` names the process and its generation: 0 at a first start, else what the upgrade
/// that started it set in `RINGRELAY_GENERATION`. Before: neither field was there.
fn health_reports_pid_and_generation(driver: &str) {
    for (env, want) in [(None, 0), (Some("3"), 3)] {
        let vars: Vec<(&str, &str)> = env
            .map(|g| ("RINGRELAY_GENERATION", g))
            .into_iter()
            .collect();
        let srv = TestServer::start(driver, 1, &vars);
        let (status, _, body) = common::get(srv.admin, "/health");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["pid"].as_u64(), Some(u64::from(srv.pid())), "{v}");
        assert_eq!(v["generation"].as_u64(), Some(want), "{v}");
        assert!(
            !srv.log_contains("RINGRELAY_GENERATION"),
            "warned as an unknown key"
        );
    }
}

both_drivers!(
    restart_keeps_kept_messages_windows_and_acks,
    refused_files_are_moved_aside_and_the_relay_serves,
    without_state_dir_shutdown_is_1001,
    health_reports_pid_and_generation,
    a_restart_keeps_each_addresss_spent_connection_budget,
);
