//! `session.state_dir` in cluster mode (docs/upgrade.md): a restarted node restores only the
//! sessions it still owns or can claim again, through the same claim every lookup runs, with a
//! real redis-server started here. Without redis-server the test says so and passes, unless
//! RINGRELAY_REQUIRE_REDIS=1 (set by .ci/run).
//!
//! Before: with `cluster.redis_url` set, `state_dir` was ignored with a warning: the restarted
//! node restored nothing (`state_sessions_loaded` 0), and the receiver of "mine" below got
//! none of the messages kept for it.

mod common;
use common::cluster::*;
use common::dir::Dir;
use common::*;
use std::time::Duration;
use tungstenite::Message;

fn node_a(driver: &str, redis: &Redis, prefix: &str, dir: &Dir) -> TestServer {
    node_of(
        driver,
        2,
        redis,
        prefix,
        "node-a",
        "eu",
        &[("RINGRELAY_SESSION_STATE_DIR", dir.0.to_str().unwrap())],
    )
}

/// The node id owning `session` in Redis (empty when nobody does).
fn owner(redis: &Redis, prefix: &str, session: &str) -> String {
    let v: Option<String> =
        redis.query(redis::cmd("GET").arg(format!("{prefix}:session:{session}")));
    v.unwrap_or_default()
}

fn registered(srv: &TestServer) -> bool {
    let (_, _, body) = get(srv.addr, "/health");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["cluster"]["registered"] == true
}

/// The next data message (binary: events are text).
fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.read().expect("read") {
            Message::Binary(b) => return b.to_vec(),
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

fn a_restarted_node_restores_only_what_it_can_claim_again(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let prefix = format!("sdc{}{driver}", std::process::id());
    let dir = Dir::new("state_dir_cluster", driver);
    let mut a = node_a(driver, &redis, &prefix, &dir);
    let b = node_of(driver, 1, &redis, &prefix, "node-b", "eu", &[]);
    wait_until(Duration::from_secs(5), "both registered", || {
        registered(&a) && registered(&b)
    });
    // Two messages kept on node-a for each of two absent receivers.
    let mut senders = Vec::new();
    for s in ["mine", "taken"] {
        let mut tx = a.connect(&format!("/v1/relay/{s}?role=a"));
        for i in 0..2 {
            tx.send(Message::binary(format!("{s} {i}").into_bytes()))
                .unwrap();
        }
        senders.push(tx);
    }
    stats_when(&a, |v| v["totals"]["messages_buffered"] == 4);
    assert_eq!(owner(&redis, &prefix, "mine"), "node-a");
    assert_eq!(a.terminate(), Some(0));
    for mut tx in senders {
        assert_eq!(recv_close(&mut tx), Some(1012));
    }
    // node-a left and gave its sessions up; while it is away a peer of "taken" comes to
    // node-b, which takes the session and holds it.
    assert_eq!(owner(&redis, &prefix, "mine"), "");
    let mut held_b = b.connect("/v1/relay/taken?role=c");
    wait_until(Duration::from_secs(5), "node-b owns taken", || {
        owner(&redis, &prefix, "taken") == "node-b"
    });

    let a = node_a(driver, &redis, &prefix, &dir);
    assert_eq!(counter(&a, "state_sessions_loaded"), 1);
    assert_eq!(counter(&a, "state_sessions_not_claimed"), 1);
    assert_eq!(owner(&redis, &prefix, "mine"), "node-a", "claimed again");
    assert_eq!(
        owner(&redis, &prefix, "taken"),
        "node-b",
        "left where it is"
    );
    let mut rx = a.connect("/v1/relay/mine?role=b");
    for i in 0..2 {
        assert_eq!(next_binary(&mut rx), format!("mine {i}").into_bytes());
    }
    // node-b's session still works, and a control pair on node-a flows.
    let mut other = b.connect("/v1/relay/taken?role=d");
    other.send(Message::binary(&b"still here"[..])).unwrap();
    assert_eq!(next_binary(&mut held_b), b"still here");
    let mut x = a.connect("/v1/relay/control?role=x");
    let mut y = a.connect("/v1/relay/control?role=y");
    x.send(Message::binary(&b"ping"[..])).unwrap();
    assert_eq!(next_binary(&mut y), b"ping");
}

both_drivers!(a_restarted_node_restores_only_what_it_can_claim_again);
