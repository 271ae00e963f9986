//! Cluster membership (docs/cluster.md) against the real binary and a real redis-server
//! started here on a loopback port: nodes register with a TTL, read the fleet, leave at once
//! on SIGTERM and lapse within the TTL when killed; with Redis down a node keeps forwarding
//! and re-registers when Redis is back. Without redis-server the tests say so and pass,
//! unless RINGRELAY_REQUIRE_REDIS=1 (set by .ci/run), which makes that a failure.

mod common;
use common::cluster::*;
use common::*;
use std::time::{Duration, Instant};
use tungstenite::Message;

fn ids(fleet: &[(String, String)]) -> Vec<&str> {
    fleet.iter().map(|(id, _)| id.as_str()).collect()
}

fn node(driver: &str, redis: &str, id: &str, region: &str, ttl: &str) -> TestServer {
    TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_CLUSTER_REDIS_URL", redis),
            ("RINGRELAY_CLUSTER_NODE_ID", id),
            ("RINGRELAY_CLUSTER_REGION", region),
            ("RINGRELAY_CLUSTER_HEARTBEAT", "200ms"),
            ("RINGRELAY_CLUSTER_NODE_TTL", ttl),
            (
                "RINGRELAY_CLUSTER_KEY_PREFIX",
                &format!("t{}", std::process::id()),
            ),
        ],
    )
}

fn health_cluster(srv: &TestServer) -> serde_json::Value {
    let (status, _, body) = get(srv.addr, "/health");
    assert_eq!(status, 200);
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["cluster"].clone()
}

fn nodes_register_read_the_fleet_and_leave(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let url = redis.url();
    let prefix = format!("t{}", std::process::id());
    let n1 = node(driver, &url, "n1", "eu", "5s");
    let mut n2 = node(driver, &url, "n2", "us", "5s");
    let n3 = node(driver, &url, "n3", "eu", "5s");
    wait_until(
        Duration::from_secs(5),
        "three nodes in the registry",
        || ids(&fleet(&url, &prefix)) == ["n1", "n2", "n3"],
    );
    assert_eq!(
        fleet(&url, &prefix),
        [("n1", "eu"), ("n2", "us"), ("n3", "eu")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    for n in [&n1, &n2, &n3] {
        wait_until(
            Duration::from_secs(3),
            "every node to see the fleet",
            || health_cluster(n)["nodes"] == 3,
        );
        let c = health_cluster(n);
        assert_eq!(
            (c["redis"].as_str(), c["breaker"].as_str()),
            (Some("up"), Some("closed"))
        );
    }
    let s = stats(&n1)["cluster"].clone();
    assert_eq!(s["node_id"], "n1");
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(s["nodes"][1]["public_url"], format!("ws://{}", n2.addr));
    // SIGTERM: the entry goes at once, long before its 5 s TTL.
    let t = Instant::now();
    assert_eq!(n2.terminate(), Some(0));
    wait_until(Duration::from_secs(2), "n2 to leave the registry", || {
        ids(&fleet(&url, &prefix)) == ["n1", "n3"]
    });
    assert!(t.elapsed() < Duration::from_secs(4));
    // SIGKILL: nobody removes the entry; it lapses after the TTL.
    drop(n3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ids(&fleet(&url, &prefix)),
        ["n1", "n3"],
        "a killed node is listed until its TTL"
    );
    wait_until(Duration::from_secs(8), "n3's entry to lapse", || {
        ids(&fleet(&url, &prefix)) == ["n1"]
    });
    wait_until(
        Duration::from_secs(3),
        "n1 to see the smaller fleet",
        || health_cluster(&n1)["nodes"] == 1,
    );
}

fn with_redis_down_a_node_keeps_forwarding_and_comes_back(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let (url, port) = (redis.url(), redis.port);
    let prefix = format!("t{}", std::process::id());
    let n1 = node(driver, &url, "solo", "eu", "2s");
    wait_until(Duration::from_secs(5), "solo registered", || {
        health_cluster(&n1)["registered"] == true
    });
    let mut a = n1.connect("/v1/relay/keep?role=a");
    let mut b = n1.connect("/v1/relay/keep?role=b");
    // No Redis work per message: the commands sent grow with heartbeats, not messages.
    let before = stats(&n1)["cluster"]["redis_commands"].as_u64().unwrap();
    let t = Instant::now();
    for i in 0..2000 {
        a.send(Message::text(format!("m{i}"))).unwrap();
    }
    for i in 0..2000 {
        assert_eq!(recv_text(&mut b), format!("m{i}"));
    }
    let sent = stats(&n1)["cluster"]["redis_commands"].as_u64().unwrap() - before;
    // A round is SET, SCAN, MGET and one renewal per session held.
    let heartbeats = t.elapsed().as_millis() as u64 / 200 + 2;
    assert!(
        sent <= heartbeats * 4,
        "{sent} Redis commands for 2000 messages"
    );
    drop(redis);
    wait_until(
        Duration::from_secs(5),
        "the node to notice Redis is gone",
        || health_cluster(&n1)["redis"] == "down",
    );
    wait_until(Duration::from_secs(5), "the breaker to open", || {
        health_cluster(&n1)["breaker"] == "open"
    });
    // Forwarding never waited for Redis: the pair goes on, and its peers may even rejoin (the
    // session lives here, so no lookup is needed). A new session's owner cannot be looked
    // up, so its first peer is told to come back.
    for i in 0..100 {
        b.send(Message::text(format!("back {i}"))).unwrap();
        assert_eq!(recv_text(&mut a), format!("back {i}"));
    }
    close(&mut b, 1000);
    let mut b = n1.connect("/v1/relay/keep?role=b");
    a.send(Message::text("rejoined")).unwrap();
    assert_eq!(recv_text(&mut b), "rejoined");
    let head = assert_refused(
        try_upgrade(
            tcp_from("127.0.0.1", n1.addr),
            n1.addr,
            "/v1/relay/new?role=a",
            &[],
        ),
        503,
        "cluster_unavailable",
    );
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 2"),
        "{head}"
    );
    let errors = stats(&n1)["cluster"]["redis_errors"].as_u64().unwrap();
    assert!(errors >= 2, "{errors}");
    // Redis back on the same port, empty: the node registers itself again.
    let redis = Redis::start(Some(port)).unwrap();
    wait_until(Duration::from_secs(15), "solo to register again", || {
        ids(&fleet(&redis.url(), &prefix)) == ["solo"]
    });
    wait_until(Duration::from_secs(3), "the breaker to close", || {
        let c = health_cluster(&n1);
        c["redis"] == "up" && c["breaker"] == "closed" && c["registered"] == true
    });
    // Its session was re-asserted, and new sessions join again.
    let owner: Option<String> =
        redis.query(redis::cmd("GET").arg(format!("{prefix}:session:keep")));
    assert_eq!(owner.as_deref(), Some("solo"));
    let mut c = n1.connect("/v1/relay/new?role=a");
    let mut d = n1.connect("/v1/relay/new?role=b");
    c.send(Message::text("new pair")).unwrap();
    assert_eq!(recv_text(&mut d), "new pair");
}

fn a_single_node_has_no_cluster_at_all(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    assert!(health_cluster(&srv).is_null());
    assert!(stats(&srv)["cluster"].is_null());
    // The per-core cluster counters are there (at zero) like every counter; the fleet's
    // figures are not.
    let (_, _, metrics) = get(srv.admin, "/metrics");
    for fleet_metric in ["ringrelay_cluster_nodes", "ringrelay_cluster_redis"] {
        assert!(!metrics.contains(fleet_metric), "{fleet_metric}");
    }
    assert!(metrics.contains("ringrelay_cluster_carried_out_total{core=\"0\"} 0"));
}

both_drivers!(
    nodes_register_read_the_fleet_and_leave,
    with_redis_down_a_node_keeps_forwarding_and_comes_back,
    a_single_node_has_no_cluster_at_all,
);
