//! Sessions routed to their owner node (docs/cluster.md), with three real relay nodes and a
//! real redis-server on loopback: pairs split across nodes, the internal listener's
//! authentication, Redis killed and restarted, a node SIGKILLed, graceful shutdown, region
//! hints. Without redis-server the tests say so and pass, unless RINGRELAY_REQUIRE_REDIS=1
//! (set by .ci/run).

mod common;
use common::cluster::*;
use common::haproxy::{self, Haproxy};
use common::*;
use std::time::{Duration, Instant};
use tungstenite::Message;

const HEARTBEAT_MS: u64 = 200;
const NODE_TTL: Duration = Duration::from_millis(1500);

fn prefix(test: &str) -> String {
    format!("r{}-{test}", std::process::id())
}

fn node(driver: &str, redis: &Redis, prefix: &str, id: &str, region: &str) -> TestServer {
    node_with(driver, redis, prefix, id, region, &[])
}

fn node_with(
    driver: &str,
    redis: &Redis,
    prefix: &str,
    id: &str,
    region: &str,
    extra: &[(&str, &str)],
) -> TestServer {
    node_of(driver, 2, redis, prefix, id, region, extra)
}

fn cluster_health(srv: &TestServer) -> serde_json::Value {
    let (status, _, body) = get(srv.addr, "/health");
    assert_eq!(status, 200);
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["cluster"].clone()
}

fn wait_for_fleet(nodes: &[&TestServer]) {
    for n in nodes {
        wait_until(
            Duration::from_secs(5),
            "every node to see the fleet",
            || {
                let c = cluster_health(n);
                c["nodes"] == nodes.len() && c["registered"] == true
            },
        );
    }
}

fn owner_of(redis: &Redis, prefix: &str, session: &str) -> Option<String> {
    redis.query(redis::cmd("GET").arg(format!("{prefix}:session:{session}")))
}

fn total(nodes: &[&TestServer], counter_name: &str) -> u64 {
    nodes.iter().map(|n| counter(n, counter_name)).sum()
}

/// Joins `session` with `role` on `srv`, retrying while the answer is 503 (an owner not
/// found yet), for at most `limit`.
fn join_retrying(srv: &TestServer, path: &str, limit: Duration) -> Ws {
    let deadline = Instant::now() + limit;
    loop {
        match try_upgrade(tcp_from("127.0.0.1", srv.addr), srv.addr, path, &[]) {
            Ok(ws) => return ws,
            Err((503, _, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("joining {path}: {e:?}"),
        }
    }
}

/// The message numbered `i` from `from`: mostly short text, every 997th a binary message
/// larger than a read buffer, so hops carry messages split over many reads.
fn numbered(from: &str, i: u32) -> Message {
    if i.is_multiple_of(997) {
        let mut v = format!("{from}:{i}:").into_bytes();
        v.resize(70_000, (i % 251) as u8);
        Message::binary(v)
    } else {
        Message::text(format!("{from}:{i}"))
    }
}

fn check(m: Message, from: &str, i: u32) {
    let want = numbered(from, i);
    assert!(m == want, "expected {from}:{i} in order, got {:.60?}", m);
}

/// Sends `n` numbered messages each way, in windows, checking every one arrives once and in
/// order. `start` numbers on from an earlier exchange.
fn exchange(a: &mut Ws, b: &mut Ws, start: u32, n: u32) {
    const WINDOW: u32 = 50;
    let mut i = start;
    while i < start + n {
        let end = (i + WINDOW).min(start + n);
        for k in i..end {
            a.send(numbered("a", k)).unwrap();
            b.send(numbered("b", k)).unwrap();
        }
        for k in i..end {
            check(recv(b), "a", k);
            check(recv(a), "b", k);
        }
        i = end;
    }
}

/// For each `(session, first, second)`: role a joins on `first` (which becomes the owner),
/// then role b on `second`.
fn connect_pairs(plan: &[(&str, &TestServer, &TestServer)]) -> Vec<(Ws, Ws)> {
    plan.iter()
        .map(|(s, first, second)| {
            let a = first.connect(&format!("/v1/relay/{s}?role=a"));
            let b = second.connect(&format!("/v1/relay/{s}?role=b"));
            (a, b)
        })
        .collect()
}

/// Redis and one node per `(node_id, region)`, each seeing the whole fleet; `None` when
/// there is no redis-server.
fn fleet_of<const N: usize>(
    driver: &str,
    test: &str,
    ids: [(&str, &str); N],
) -> Option<(Redis, String, [TestServer; N])> {
    fleet_with(driver, test, ids, &[])
}

/// As [`fleet_of`], every node started with `extra` settings too.
fn fleet_with<const N: usize>(
    driver: &str,
    test: &str,
    ids: [(&str, &str); N],
    extra: &[(&str, &str)],
) -> Option<(Redis, String, [TestServer; N])> {
    let redis = Redis::start(None)?;
    let p = prefix(test);
    let nodes = ids.map(|(id, region)| node_with(driver, &redis, &p, id, region, extra));
    wait_for_fleet(&nodes.iter().collect::<Vec<_>>());
    Some((redis, p, nodes))
}

/// Redis and three nodes n1, n2, n3 in region eu.
fn three_nodes(driver: &str, test: &str) -> Option<(Redis, String, [TestServer; 3])> {
    fleet_of(driver, test, [("n1", "eu"), ("n2", "eu"), ("n3", "eu")])
}

fn split_pairs_exchange_10000_messages_each_way(driver: &str) {
    let Some((redis, p, [n1, n2, n3])) = three_nodes(driver, "split") else {
        return;
    };
    let nodes = [&n1, &n2, &n3];
    // Each session's first peer lands on its owner, the second on another node.
    let plan = [("s12", &n1, &n2), ("s23", &n2, &n3), ("s31", &n3, &n1)];
    let mut pairs = connect_pairs(&plan);
    for ((s, first, _), (a, b)) in plan.iter().zip(pairs.iter_mut()) {
        exchange(a, b, 0, 10);
        let owner = owner_of(&redis, &p, s);
        let want = cluster_health(first)["node_id"].as_str().map(String::from);
        assert_eq!(owner, want, "{s} is owned by its first peer's node");
    }
    let redis_before = redis.commands_processed();
    let t = Instant::now();
    const MESSAGES: u32 = 10_000;
    std::thread::scope(|scope| {
        for (a, b) in pairs.iter_mut() {
            scope.spawn(move || exchange(a, b, 10, MESSAGES));
        }
    });
    let redis_commands = redis.commands_processed() - redis_before;
    // No Redis work per message: every node's rounds (SET, SCAN, MGET, one renewal per
    // session it holds) are the only commands, and 60,000 messages add none.
    let rounds = t.elapsed().as_millis() as u64 / HEARTBEAT_MS + 2;
    let budget = nodes.len() as u64 * rounds * (3 + 3) + 1;
    assert!(
        redis_commands <= budget,
        "{redis_commands} Redis commands during the run; heartbeats alone allow {budget}"
    );
    assert!(
        redis_commands * 100 < 6 * MESSAGES as u64,
        "{redis_commands} commands"
    );
    assert_eq!(total(&nodes, "cluster_cross_node_pairs"), 3);
    assert_eq!(total(&nodes, "cluster_carried_out"), 3);
    assert_eq!(total(&nodes, "cluster_carried_in"), 3);
    assert_eq!(total(&nodes, "cluster_carry_failed"), 0);
    for n in nodes {
        let s = stats(n);
        assert_eq!(
            s["totals"]["carried_connections"], 1,
            "one carried peer per node"
        );
        assert!(s["latency_us"]["hop"]["count"].as_u64().unwrap() > 0);
        assert_eq!(s["latency_us"]["carry"]["count"], 1);
        assert_eq!(s["cluster"]["owned_sessions"], 1);
        let metrics = get(n.admin, "/metrics").2;
        assert!(metrics.contains("ringrelay_hop_latency_seconds_count"));
        assert!(metrics.contains("ringrelay_cluster_redis_rtt_seconds_count"));
    }
    // Ending the sessions frees their keys at once.
    for (a, b) in pairs.iter_mut() {
        close(a, 1000);
        close(b, 1000);
    }
    wait_until(Duration::from_secs(3), "keys to be released", || {
        plan.iter()
            .all(|(s, _, _)| owner_of(&redis, &p, s).is_none())
    });
    // Every pooled buffer the hops used went back.
    for n in nodes {
        wait_until(Duration::from_secs(3), "the links to end", || {
            let t = &stats(n)["totals"];
            t["carried_connections"] == 0 && t["read_buffers_in_use"] == 0
        });
    }
}

/// Reads the owner's challenge from a fresh connection to `internal`.
fn challenge(internal: std::net::SocketAddr) -> (std::net::TcpStream, [u8; 16]) {
    challenge_from("127.0.0.1", internal)
}

/// The same, connecting from the loopback address `source`.
fn challenge_from(source: &str, internal: std::net::SocketAddr) -> (std::net::TcpStream, [u8; 16]) {
    let mut s = tcp_from(source, internal);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let line = read_line(&mut s);
    let nonce = ringrelay::cluster::link::parse_challenge(line.trim_end().as_bytes())
        .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (s, nonce)
}

/// One line, read a byte at a time so nothing after it is consumed.
fn read_line(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn read_all(mut s: std::net::TcpStream) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// What a carrier sends as its own nonce in these hand-made openings.
const CARRIER_NONCE: [u8; 16] = [5; 16];

fn the_internal_listener_refuses_unauthenticated_connections(driver: &str) {
    use ringrelay::cluster::link::{answer, Carried};
    use std::io::Write;
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let p = prefix("auth");
    let n1 = node(driver, &redis, &p, "n1", "eu");
    let other = "another-secret-of-more-than-32-bytes";
    let n2 = node_with(
        driver,
        &redis,
        &p,
        "n2",
        "eu",
        &[("RINGRELAY_CLUSTER_SECRET", other)],
    );
    wait_for_fleet(&[&n1, &n2]);
    let internal = n1.internal.expect("n1 has an internal listener");
    let mut a = n1.connect("/v1/relay/victim?role=a&events=1");
    assert_eq!(recv_event(&mut a)["type"], "connected");
    let carried = Carried {
        from: "n9".into(),
        session: "victim".into(),
        ip: "127.0.0.1".parse().unwrap(),
        role: Some("b".into()),
        region: "eu".into(),
    };
    // A plain client speaking HTTP to the internal port.
    let (mut s, _) = challenge(internal);
    s.write_all(upgrade_request("/v1/relay/victim?role=b").as_bytes())
        .unwrap();
    let answer_text = read_all(s);
    assert!(
        answer_text.starts_with("RRLINK/2 refused"),
        "{answer_text:?}"
    );
    assert!(!answer_text.contains("HTTP/1.1 101"));
    // A proof made with the wrong secret: refused, and no proof of n1's comes back.
    let (mut s, nonce) = challenge(internal);
    let (mut hello, _) = answer(other.as_bytes(), &nonce, &CARRIER_NONCE, &carried);
    hello.extend_from_slice(upgrade_request("/v1/relay/victim?role=b").as_bytes());
    s.write_all(&hello).unwrap();
    assert_eq!(read_all(s), "RRLINK/2 refused bad_proof\n");
    // A proof made for another challenge (a replayed opening).
    let (mut s, _) = challenge(internal);
    s.write_all(&hello).unwrap();
    assert_eq!(read_all(s), "RRLINK/2 refused bad_proof\n");
    assert_eq!(counter(&n1, "cluster_link_refused"), 3);
    // Nobody joined the victim's session: the next real peer is the first.
    let mut b = n1.connect("/v1/relay/victim?role=b&events=1");
    assert_eq!(recv_event(&mut b)["peer_present"], true);
    assert_eq!(recv_event(&mut a)["type"], "peer_connected");
    close(&mut b, 1000);
    assert_eq!(recv_event(&mut a)["type"], "peer_disconnected");
    // The honest opening with the right secret is accepted (the control for the above), and
    // n1 proves the secret back before the request is sent.
    let (mut s, nonce) = challenge(internal);
    let (hello, owner_proof) = answer(SECRET.as_bytes(), &nonce, &CARRIER_NONCE, &carried);
    s.write_all(&hello).unwrap();
    let ok = read_line(&mut s);
    assert_eq!(
        owner_proof.check_verdict(ok.trim_end().as_bytes()),
        Ok(()),
        "{ok:?}"
    );
    s.write_all(upgrade_request("/v1/relay/victim?role=b").as_bytes())
        .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut s, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    assert_eq!(recv_event(&mut a)["type"], "peer_connected");
    drop(s);
    // A node with another secret cannot carry peers to n1.
    let r = try_upgrade(
        tcp_from("127.0.0.1", n2.addr),
        n2.addr,
        "/v1/relay/victim?role=b",
        &[],
    );
    assert_refused(r, 503, "owner_unreachable");
    assert_eq!(counter(&n2, "cluster_carry_failed"), 1);
    assert_eq!(counter(&n1, "cluster_link_refused"), 4);
}

/// Something that took an owner's address: it speaks the link's challenge but does not hold
/// the secret, so the `ok` it sends carries a made-up proof. Returns every byte the carrier
/// sent it.
fn fake_owner(listener: std::net::TcpListener) -> std::thread::JoinHandle<Vec<u8>> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("RRLINK/2 {}\n", "ab".repeat(16)).as_bytes())
            .unwrap();
        // The carrier's description and proof lines.
        let mut got = Vec::new();
        while got.iter().filter(|&&b| b == b'\n').count() < 2 {
            let line = read_line(&mut s);
            if line.is_empty() {
                return got;
            }
            got.extend_from_slice(line.as_bytes());
        }
        let _ = s.write_all(format!("RRLINK/2 ok {}\n", "00".repeat(32)).as_bytes());
        // Whatever else comes before the carrier closes: the client's request, if it were
        // sent (RRLINK/1 sent it with the carrier's answer).
        let _ = s.read_to_end(&mut got);
        got
    })
}

fn a_carrier_refuses_an_owner_that_cannot_prove_the_secret(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let p = prefix("fakeowner");
    let n1 = node(driver, &redis, &p, "n1", "eu");
    wait_for_fleet(&[&n1]);
    // A fake node n9 in the registry, whose internal address is the fake owner, and a session
    // it "owns".
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = listener.local_addr().unwrap().to_string();
    let fake = fake_owner(listener);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let entry = serde_json::json!({
        "node_id": "n9", "region": "eu", "public_url": "ws://127.0.0.1:1",
        "internal": fake_addr, "version": "0.1.0", "workers": 1,
        "max_connections": 100, "max_sessions": 100, "connections": 0, "sessions": 0,
        "started_ms": now, "written_ms": now,
    });
    let _: () = redis.query(
        redis::cmd("SET")
            .arg(format!("{p}:node:n9"))
            .arg(entry.to_string())
            .arg("PX")
            .arg(60_000),
    );
    let _: () = redis.query(
        redis::cmd("SET")
            .arg(format!("{p}:session:stolen"))
            .arg("n9")
            .arg("PX")
            .arg(60_000),
    );
    wait_until(Duration::from_secs(5), "n1 to see n9", || {
        cluster_health(&n1)["nodes"] == 2
    });
    // A control pair on n1 talking throughout.
    let mut a = n1.connect("/v1/relay/control?role=a");
    let mut b = n1.connect("/v1/relay/control?role=b");
    exchange(&mut a, &mut b, 0, 20);
    // Before: n1 took the fake's bare `RRLINK/1 ok` and carried the client there (101), its
    // request and token included. Now the fake's proof does not verify: 503, and the
    // client's request never left n1.
    let r = try_upgrade(
        tcp_from("127.0.0.1", n1.addr),
        n1.addr,
        "/v1/relay/stolen?role=b&token=not-for-strangers",
        &[],
    );
    assert_refused(r, 503, "owner_unreachable");
    let seen = String::from_utf8_lossy(&fake.join().unwrap()).into_owned();
    assert!(seen.contains("\"session\":\"stolen\""), "{seen:?}");
    assert!(
        !seen.contains("GET ") && !seen.contains("not-for-strangers"),
        "the client's request reached the fake owner: {seen:?}"
    );
    assert_eq!(counter(&n1, "cluster_owner_unproved"), 1);
    assert_eq!(counter(&n1, "cluster_carry_failed"), 1);
    assert_eq!(counter(&n1, "cluster_carried_out"), 0);
    assert!(n1.log_contains("did not prove it holds cluster.secret"));
    exchange(&mut a, &mut b, 20, 20);
}

fn unproved_openings_are_capped_per_address_and_per_worker(driver: &str) {
    use std::io::Read;
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let p = prefix("pending");
    // n1 has one worker, so every opening meets the same counts.
    let caps = [
        ("RINGRELAY_CLUSTER_MAX_PENDING_LINKS_PER_IP", "4"),
        ("RINGRELAY_CLUSTER_MAX_PENDING_LINKS", "8"),
    ];
    let n1 = node_of(driver, 1, &redis, &p, "n1", "eu", &caps);
    let n2 = node(driver, &redis, &p, "n2", "eu");
    wait_for_fleet(&[&n1, &n2]);
    let internal = n1.internal.unwrap();
    let mut a = n1.connect("/v1/relay/pair?role=a");
    // One host opens 4 connections and never answers its challenges.
    let mut held: Vec<_> = (0..4)
        .map(|_| challenge_from("127.0.0.5", internal).0)
        .collect();
    // Before: the 5th got a challenge too and was held for limits.handshake_timeout, like
    // any number after it. Now it is closed at once, without a byte.
    let closed_at_once = |source: &str| {
        let mut s = tcp_from(source, internal);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        // EOF or a reset, and nothing read; a timeout would mean it was held open.
        let closed = match &r {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(
            closed && got.is_empty(),
            "from {source}: {r:?} {:?}",
            String::from_utf8_lossy(&got)
        );
    };
    closed_at_once("127.0.0.5");
    assert_eq!(counter(&n1, "cluster_link_pending_ip_refused"), 1);
    // A real carried peer (n2 connects from 127.0.0.1) still pairs and talks.
    let mut b = n2.connect("/v1/relay/pair?role=b");
    exchange(&mut a, &mut b, 0, 20);
    assert_eq!(counter(&n2, "cluster_carried_out"), 1);
    // Another host fills the worker's total (4 + 4 = 8); the next address is closed at once.
    held.extend((0..4).map(|_| challenge_from("127.0.0.6", internal).0));
    closed_at_once("127.0.0.7");
    assert_eq!(counter(&n1, "cluster_link_pending_refused"), 1);
    // While full, a new carried peer cannot reach n1 either (the cap is the point: the flood
    // costs at most this), but the pair already carried keeps talking.
    exchange(&mut a, &mut b, 20, 20);
    // Once the openings go, pending openings are given back and carrying works again.
    drop(held);
    wait_until(
        Duration::from_secs(5),
        "the held openings to be refused",
        || counter(&n1, "cluster_link_refused") >= 8,
    );
    let mut c = n1.connect("/v1/relay/pair2?role=a");
    let mut d = n2.connect("/v1/relay/pair2?role=b");
    exchange(&mut c, &mut d, 0, 5);
    assert_eq!(counter(&n2, "cluster_carried_out"), 2);
    assert_eq!(counter(&n1, "cluster_link_pending_ip_refused"), 1);
    assert_eq!(counter(&n1, "cluster_link_pending_refused"), 1);
}

fn redis_killed_and_restarted_mid_run(driver: &str) {
    let Some((mut redis, p, [n1, n2, n3])) = three_nodes(driver, "restart") else {
        return;
    };
    let port = redis.port;
    let nodes = [&n1, &n2, &n3];
    // Two pairs on one node each, two split across nodes.
    let plan = [
        ("same1", &n1, &n1),
        ("same2", &n2, &n2),
        ("cross12", &n1, &n2),
        ("cross32", &n3, &n2),
    ];
    let mut pairs = connect_pairs(&plan);
    let run = |pairs: &mut Vec<(Ws, Ws)>, start: u32| {
        std::thread::scope(|scope| {
            for (a, b) in pairs.iter_mut() {
                scope.spawn(move || exchange(a, b, start, 500));
            }
        });
    };
    run(&mut pairs, 0);
    redis.kill();
    for n in nodes {
        wait_until(
            Duration::from_secs(5),
            "every node to see Redis down",
            || cluster_health(n)["redis"] == "down",
        );
    }
    // Same-node pairs lose nothing; the split pairs' links do not depend on Redis either, so
    // they keep flowing rather than closing.
    run(&mut pairs, 500);
    let head = assert_refused(
        try_upgrade(
            tcp_from("127.0.0.1", n3.addr),
            n3.addr,
            "/v1/relay/late?role=a",
            &[],
        ),
        503,
        "cluster_unavailable",
    );
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    let redis = Redis::start(Some(port)).unwrap();
    for n in nodes {
        wait_until(
            Duration::from_secs(15),
            "every node to register again",
            || {
                let c = cluster_health(n);
                c["registered"] == true && c["nodes"] == 3
            },
        );
    }
    // Every session is re-asserted by the one node that holds it, and by no other.
    wait_until(
        Duration::from_secs(5),
        "every session to be re-asserted",
        || {
            plan.iter().all(|(s, x, _)| {
                owner_of(&redis, &p, s) == cluster_health(x)["node_id"].as_str().map(String::from)
            })
        },
    );
    let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg(format!("{p}:session:*")));
    assert_eq!(keys.len(), plan.len(), "{keys:?}");
    let owned: u64 = nodes
        .iter()
        .map(|n| stats(n)["cluster"]["owned_sessions"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, plan.len() as u64);
    run(&mut pairs, 1000);
    // Had another node taken a session while this one could not say it held it, the holder
    // gives it up (1012) at its next renewal instead of both serving it.
    let _: () = redis.query(
        redis::cmd("SET")
            .arg(format!("{p}:session:same2"))
            .arg("n1"),
    );
    let (a, b) = &mut pairs[1];
    assert_eq!(recv_close(a), Some(1012));
    assert_eq!(recv_close(b), Some(1012));
    assert_eq!(counter(&n2, "cluster_sessions_evicted"), 1);
    // Its peers come back and are carried to the owner.
    let mut a = n2.connect("/v1/relay/same2?role=a");
    let mut b = n3.connect("/v1/relay/same2?role=b");
    exchange(&mut a, &mut b, 0, 100);
    assert_eq!(counter(&n1, "cluster_carried_in"), 3);
}

fn a_killed_node_s_partners_are_told_and_re_pair(driver: &str) {
    let Some((redis, p, [n1, mut n2, n3])) = three_nodes(driver, "kill") else {
        return;
    };
    // The owner dies: the partner on another node is told at once (1012), and the pair
    // forms again once the dead node's entry lapses.
    let mut a = n1.connect("/v1/relay/k?role=a");
    let mut b = n2.connect("/v1/relay/k?role=b");
    exchange(&mut a, &mut b, 0, 100);
    drop(a);
    let t = Instant::now();
    // SAFETY: kill(2) on the pid of a child process this test spawned.
    unsafe { libc::kill(n1.pid() as i32, libc::SIGKILL) };
    assert_eq!(recv_close(&mut b), Some(1012));
    assert!(t.elapsed() < NODE_TTL, "told in {:?}", t.elapsed());
    let limit = NODE_TTL + Duration::from_secs(3);
    let mut b = join_retrying(&n2, "/v1/relay/k?role=b", limit);
    let mut a = join_retrying(&n3, "/v1/relay/k?role=a", limit);
    exchange(&mut a, &mut b, 100, 100);
    assert_eq!(owner_of(&redis, &p, "k").as_deref(), Some("n2"));
    assert!(t.elapsed() < limit, "re-paired in {:?}", t.elapsed());
    // A carrying node dies: the session lives on at its owner, which keeps what the absent
    // peer misses, and the peer resumes through another node losing nothing.
    let mut owner_side = n3.connect("/v1/relay/r?role=a&resume=0");
    let mut carried = n2.connect("/v1/relay/r?role=b&resume=0");
    for i in 0..50 {
        owner_side.send(numbered("a", i)).unwrap();
    }
    for i in 0..50 {
        check(recv(&mut carried), "a", i);
    }
    // SAFETY: as above.
    unsafe { libc::kill(n2.pid() as i32, libc::SIGKILL) };
    let _ = n2.terminate();
    for i in 50..100 {
        owner_side.send(numbered("a", i)).unwrap();
    }
    let mut back = n3.connect("/v1/relay/r?role=b&resume=50");
    for i in 50..100 {
        check(recv(&mut back), "a", i);
    }
    exchange(&mut owner_side, &mut back, 100, 100);
}

fn graceful_shutdown_closes_with_1001_and_frees_the_sessions(driver: &str) {
    let Some((redis, p, [mut n1, mut n2])) = fleet_of(driver, "term", [("n1", "eu"), ("n2", "eu")])
    else {
        return;
    };
    let mut a = n1.connect("/v1/relay/g?role=a");
    let mut b = n2.connect("/v1/relay/g?role=b");
    exchange(&mut a, &mut b, 0, 20);
    // The carrying node stops: its client is told 1001, the session stays with its owner.
    assert_eq!(n2.terminate(), Some(0));
    assert_eq!(recv_close(&mut b), Some(1001));
    assert_eq!(owner_of(&redis, &p, "g").as_deref(), Some("n1"));
    // The owner stops: its peer is told 1001 and the key is gone at once, so the session's
    // next peers can start it elsewhere straight away.
    let n3 = node(driver, &redis, &p, "n3", "eu");
    wait_for_fleet(&[&n1, &n3]);
    let mut c = n3.connect("/v1/relay/g?role=b");
    exchange(&mut a, &mut c, 20, 20);
    assert_eq!(n1.terminate(), Some(0));
    assert_eq!(recv_close(&mut a), Some(1001));
    assert_eq!(recv_close(&mut c), Some(1001));
    assert_eq!(owner_of(&redis, &p, "g"), None);
    let mut a = n3.connect("/v1/relay/g?role=a");
    let mut c = n3.connect("/v1/relay/g?role=b");
    exchange(&mut a, &mut c, 0, 20);
}

fn region_hints_choose_the_owner_and_cross_region_pairs_are_counted(driver: &str) {
    let Some((redis, p, [eu, us])) = fleet_of(driver, "region", [("eu1", "eu"), ("us1", "us")])
    else {
        return;
    };
    // A first peer landing in eu but hinting us: the session is owned in us.
    let mut a = eu.connect("/v1/relay/h1?role=a&region=us");
    assert_eq!(owner_of(&redis, &p, "h1").as_deref(), Some("us1"));
    let mut b = us.connect("/v1/relay/h1?role=b");
    exchange(&mut a, &mut b, 0, 10);
    assert_eq!(counter(&us, "cluster_cross_region_pairs"), 0);
    // No hint: owned where it landed; a peer from the other region makes a cross-region pair.
    let mut c = eu.connect("/v1/relay/h2?role=a");
    let mut d = try_upgrade(
        tcp_from("127.0.0.1", us.addr),
        us.addr,
        "/v1/relay/h2?role=b",
        &[("x-region", "us")],
    )
    .unwrap();
    exchange(&mut c, &mut d, 0, 10);
    assert_eq!(owner_of(&redis, &p, "h2").as_deref(), Some("eu1"));
    assert_eq!(counter(&eu, "cluster_cross_region_pairs"), 1);
    assert_eq!(total(&[&eu, &us], "cluster_cross_node_pairs"), 2);
}

fn a_bridged_request_is_carried_to_the_node_of_its_agent(driver: &str) {
    let Some((_redis, _, [n1, n2])) = fleet_of(driver, "bridge", [("n1", "eu"), ("n2", "eu")])
    else {
        return;
    };
    let mut agent = n1.connect("/v1/relay/desk?role=agent");
    // curl, as a page's fetch would, on the node the agent is not on.
    let url = format!("http://{}/v1/http/desk/api/items?x=1", n2.addr);
    let call = std::thread::spawn(move || {
        std::process::Command::new("curl")
            .args(["-s", "-i", "--max-time", "10", "-d", "hello", &url])
            .output()
            .expect("curl runs")
    });
    let req: serde_json::Value = serde_json::from_str(&recv_text(&mut agent)).unwrap();
    assert_eq!(req["type"], "http_request", "{req}");
    assert_eq!(req["method"], "POST");
    assert_eq!(req["path"], "/api/items?x=1");
    let id = req["id"].as_str().unwrap();
    agent
        .send(Message::text(format!(
            r#"{{"type":"http_response","id":"{id}","status":201,"headers":[["x-from","agent"]],"body_b64":"Y2FycmllZA=="}}"#
        )))
        .unwrap();
    let out = call.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-from: agent"),
        "{text}"
    );
    assert!(text.ends_with("carried"), "{text}");
    assert_eq!(counter(&n2, "cluster_carried_out"), 1);
    assert_eq!(counter(&n1, "bridge_responses_2xx"), 1);
}

/// A "Redis" that accepts connections and never answers: a partition that TCP cannot see.
fn black_hole() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", l.local_addr().unwrap());
    (l, url)
}

fn a_partitioned_redis_never_holds_a_new_peer_past_the_lookup_timeout(driver: &str) {
    let (hole, url) = black_hole();
    let srv = TestServer::start(
        driver,
        2,
        &[
            ("RINGRELAY_CLUSTER_REDIS_URL", url.as_str()),
            ("RINGRELAY_CLUSTER_NODE_ID", "lonely"),
            ("RINGRELAY_CLUSTER_HEARTBEAT", "200ms"),
            ("RINGRELAY_CLUSTER_NODE_TTL", "1s"),
            ("RINGRELAY_CLUSTER_SESSION_TTL", "2s"),
            ("RINGRELAY_CLUSTER_LOOKUP_TIMEOUT", "300ms"),
            ("RINGRELAY_CLUSTER_REQUEST_QUEUE", "1"),
        ],
    );
    const PEERS: usize = 8;
    let answers: Vec<(u16, String, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PEERS)
            .map(|i| {
                let addr = srv.addr;
                scope.spawn(move || {
                    let t = Instant::now();
                    let path = format!("/v1/relay/partitioned{i}?role=a");
                    match try_upgrade(tcp_from("127.0.0.1", addr), addr, &path, &[]) {
                        Ok(_) => panic!("joined without an owner"),
                        Err((status, _, body)) => (status, body, t.elapsed()),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body, took) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains("cluster_unavailable"), "{body}");
        // The lookup timeout bounds the wait, not Redis's 1 s I/O timeout.
        assert!(
            *took < Duration::from_millis(900),
            "answered after {took:?}"
        );
    }
    let s = stats(&srv);
    let t = &s["totals"];
    assert_eq!(t["cluster_unavailable"], PEERS);
    assert!(t["cluster_queue_full"].as_u64().unwrap() >= 1, "{t}");
    assert!(t["cluster_lookup_timeouts"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(s["cluster"]["redis"], "down");
    drop(hole);
}

/// FNV-1a, as the relay picks a session's core, to choose sessions that share one.
fn core_of(session: &str, workers: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in session.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % workers
}

fn a_carrying_node_counts_carried_peers_against_its_limits(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let p = prefix("carrylimit");
    let n1 = node(driver, &redis, &p, "n1", "eu");
    // One open connection per client address (held exactly, on the address's home core).
    let n2 = node_with(
        driver,
        &redis,
        &p,
        "n2",
        "eu",
        &[("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP", "1")],
    );
    wait_for_fleet(&[&n1, &n2]);
    let sessions: Vec<String> = (0..100)
        .map(|i| format!("lim{i}"))
        .filter(|s| core_of(s, 2) == 0)
        .take(2)
        .collect();
    let _owners: Vec<Ws> = sessions
        .iter()
        .map(|s| n1.connect(&format!("/v1/relay/{s}?role=a")))
        .collect();
    let mut first = n2.connect(&format!("/v1/relay/{}?role=b", sessions[0]));
    let second = try_upgrade(
        tcp_from("127.0.0.1", n2.addr),
        n2.addr,
        &format!("/v1/relay/{}?role=b", sessions[1]),
        &[],
    );
    assert_refused(second, 429, "too_many_connections");
    assert_eq!(counter(&n2, "cluster_carried_out"), 1);
    assert_eq!(counter(&n2, "ip_open_refused"), 1);
    // Another address is its own client.
    let mut other = try_upgrade(
        tcp_from("127.0.0.2", n2.addr),
        n2.addr,
        &format!("/v1/relay/{}?role=b", sessions[1]),
        &[],
    )
    .unwrap();
    // The first one's seat is given back when it ends.
    close(&mut first, 1000);
    close(&mut other, 1000);
    wait_until(Duration::from_secs(3), "the carries to end", || {
        stats(&n2)["totals"]["carried_connections"] == 0
    });
    let _again = n2.connect(&format!("/v1/relay/{}?role=b", sessions[1]));
}

fn haproxy_sends_both_peers_of_a_session_to_one_node(driver: &str) {
    // The nodes take the client's address from the PROXY header the shipped config sends.
    let Some((redis, p, [n1, n2, mut n3])) = fleet_with(
        driver,
        "haproxy",
        [("n1", "eu"), ("n2", "eu"), ("n3", "eu")],
        &haproxy::RELAY_ENV,
    ) else {
        return;
    };
    let Some(proxy) = Haproxy::start(&[n1.addr, n2.addr, n3.addr]) else {
        return;
    };
    const SESSIONS: usize = 30;
    let session = |i: usize| format!("hp{i}");
    // Two spellings of the same session: the hash must see one id in both.
    let pair = |i: usize| {
        let a = proxy.connect(&format!("/v1/relay/{}?role=desktop", session(i)));
        let mut b = proxy.connect(&format!("/mobile/{}", session(i)));
        assert_eq!(recv_event(&mut b)["peer_present"], true);
        // The compatible path also says the desktop is there (tests/durable_events.rs).
        assert_eq!(recv_event(&mut b)["type"], "desktop_connected");
        (a, b)
    };
    let mut pairs: Vec<(Ws, Ws)> = (0..SESSIONS).map(pair).collect();
    for (a, b) in pairs.iter_mut() {
        exchange(a, b, 0, 20);
    }
    let nodes = [&n1, &n2, &n3];
    assert_eq!(
        total(&nodes, "cluster_carried_out"),
        0,
        "no pair needed a hop"
    );
    assert_eq!(total(&nodes, "cluster_cross_node_pairs"), 0);
    let owners: Vec<String> = (0..SESSIONS)
        .map(|i| owner_of(&redis, &p, &session(i)).unwrap())
        .collect();
    let used = ["n1", "n2", "n3"]
        .iter()
        .filter(|n| owners.iter().any(|o| o == *n))
        .count();
    assert!(used >= 2, "sessions spread over the nodes: {owners:?}");
    // A node leaves: only its sessions move; the others still land where they are owned.
    drop(pairs);
    assert_eq!(n3.terminate(), Some(0));
    std::thread::sleep(Duration::from_millis(500));
    let kept: Vec<usize> = (0..SESSIONS).filter(|i| owners[*i] != "n3").collect();
    for &i in &kept {
        let (mut a, mut b) = pair(i);
        exchange(&mut a, &mut b, 0, 5);
        assert_eq!(
            owner_of(&redis, &p, &session(i)).as_deref(),
            Some(owners[i].as_str())
        );
    }
    assert_eq!(total(&[&n1, &n2], "cluster_carried_out"), 0);
}

both_drivers!(
    a_carrier_refuses_an_owner_that_cannot_prove_the_secret,
    unproved_openings_are_capped_per_address_and_per_worker,
    a_bridged_request_is_carried_to_the_node_of_its_agent,
    a_partitioned_redis_never_holds_a_new_peer_past_the_lookup_timeout,
    a_carrying_node_counts_carried_peers_against_its_limits,
    haproxy_sends_both_peers_of_a_session_to_one_node,
    split_pairs_exchange_10000_messages_each_way,
    the_internal_listener_refuses_unauthenticated_connections,
    redis_killed_and_restarted_mid_run,
    a_killed_node_s_partners_are_told_and_re_pair,
    graceful_shutdown_closes_with_1001_and_frees_the_sessions,
    region_hints_choose_the_owner_and_cross_region_pairs_are_counted,
);
