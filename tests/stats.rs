//! Verifies that /stats and /metrics count a scripted scenario exactly, that /metrics parses
//! as Prometheus text, and that both live on the admin listener only.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tungstenite::Message;

fn scripted_scenario_is_counted_exactly(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut a = srv.connect("/v1/relay/counted?role=desktop");
    let mut b = srv.connect("/v1/relay/counted?role=mobile");
    let (n_a, size_a, n_b, size_b) = (10u64, 100usize, 3u64, 7usize);
    for _ in 0..n_a {
        a.send(Message::binary(vec![1u8; size_a])).unwrap();
    }
    for _ in 0..n_a {
        recv(&mut b);
    }
    for _ in 0..n_b {
        b.send(Message::text("x".repeat(size_b))).unwrap();
    }
    for _ in 0..n_b {
        recv(&mut a);
    }
    // One refusal of each kind, and one replaced peer.
    assert_eq!(get(srv.addr, "/nope").0, 404);
    let third = tungstenite::client::client(
        srv.url("/v1/relay/counted?role=agent"),
        std::net::TcpStream::connect(srv.addr).unwrap(),
    );
    assert!(third.is_err());
    let mut b2 = srv.connect("/v1/relay/counted?role=mobile");
    assert_eq!(recv_close(&mut b), Some(4001));
    b2.send(Message::text("after")).unwrap();
    assert_eq!(recv_text(&mut a), "after");

    let v = stats_when(&srv, |v| {
        v["totals"]["connections_closed_by_reason"]["replaced"] == 1
    });
    let t = &v["totals"];
    let msgs = n_a + n_b + 1;
    let bytes = n_a * size_a as u64 + n_b * size_b as u64 + 5;
    assert_eq!(t["messages_forwarded"], msgs);
    assert_eq!(t["messages_received"], msgs);
    assert_eq!(t["bytes_forwarded"], bytes);
    assert_eq!(t["bytes_received"], bytes);
    assert_eq!(t["messages_dropped_peer_absent"], 0);
    assert_eq!(t["handshakes_refused_by_status"]["404"], 1);
    assert_eq!(t["handshakes_refused_by_status"]["409"], 1);
    assert_eq!(t["handshakes_refused"], 2);
    assert_eq!(t["peers_replaced"], 1);
    assert_eq!(t["connections_closed"], 1);
    assert_eq!(t["active_connections"], 2);
    assert_eq!(
        (t["active_sessions"].as_u64(), t["paired_sessions"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        v["latency_us"]["handshake"]["count"], 3,
        "a, b and b2 upgraded"
    );
    let relay = &v["latency_us"]["relay"];
    let count = relay["count"].as_u64().unwrap();
    assert!(
        (1..=msgs).contains(&count),
        "one sample per forwarding write: {count}"
    );
    assert!(relay["p50"].as_u64().unwrap() <= relay["p99"].as_u64().unwrap());
    assert!(relay["p99"].as_u64().unwrap() <= relay["max"].as_u64().unwrap());
    assert_eq!(
        (v["workers"].as_u64(), v["driver"].as_str()),
        (Some(2), Some(driver))
    );
    let per_core = v["per_core"].as_array().unwrap();
    assert_eq!(per_core.len(), 2);
    let sum: u64 = per_core
        .iter()
        .map(|c| c["messages_forwarded"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, msgs, "totals are the sum of the cores");
    // Accepted counts every TCP connection on both listeners, so it is at least what we made.
    assert!(t["connections_accepted"].as_u64().unwrap() >= 5);
}

fn metrics_parse_as_prometheus_text(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut e = srv.connect("/v1/echo");
    e.send(Message::text("m")).unwrap();
    recv(&mut e);
    let (status, head, body) = get(srv.admin, "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
    let find = |name: &str, core: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && core.is_none_or(|c| s.labels.get("core") == Some(c)))
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let fwd: f64 = ["0", "1"]
        .iter()
        .map(
            |c| match find("ringrelay_messages_forwarded_total", Some(c)).value {
                prometheus_parse::Value::Counter(v) => v,
                ref other => panic!("{other:?}"),
            },
        )
        .sum();
    assert_eq!(fwd, 1.0);
    // Before: a summary (quantiles per node, which no query can aggregate across nodes).
    match &find("ringrelay_relay_latency_seconds", None).value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.len() > 10, "{buckets:?}");
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
            assert!(buckets.last().unwrap().count >= 1.0, "the echo was timed");
        }
        other => panic!("relay latency is a histogram: {other:?}"),
    }
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "ringrelay_build_info" && s.labels.get("driver") == Some(driver)));
    assert!(scrape.docs.contains_key("ringrelay_active_connections"));
}

fn admin_routes_are_not_public(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    assert_eq!(get(srv.addr, "/stats").0, 404);
    assert_eq!(get(srv.addr, "/metrics").0, 404);
    assert_eq!(get(srv.admin, "/stats").0, 200);
}

both_drivers!(
    scripted_scenario_is_counted_exactly,
    metrics_parse_as_prometheus_text,
    admin_routes_are_not_public
);

/// /stats answers while eight workers forward under load, and forwarding goes on between
/// scrapes. Every scrape must beat the relay's own 2 s scrape timeout (a core that does not
/// answer in time would make it a 503). How fast a scrape is stays out of the assertions: a
/// busy shared machine moves it tenfold; the median is printed.
#[test]
fn stats_under_load_answers_quickly_and_forwarding_goes_on() {
    let srv = TestServer::start("auto", 8, &[]);
    let load = std::process::Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args([
            "load",
            "--url",
            &format!("ws://{}", srv.addr),
            "--mode",
            "pairs",
            "--pairs",
            "32",
            "--duration",
            "4s",
            "--warmup",
            "0s",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let mut times = Vec::new();
    let mut forwarded = Vec::new();
    // Scrapes are taken only while the load surely runs (it lasts 4 s from its start), so on
    // a slow machine fewer scrapes are taken rather than some after the load ended, where
    // forwarding rightly stops growing.
    while forwarded.len() < 20 && started.elapsed() < Duration::from_millis(3000) {
        let t = Instant::now();
        let v = stats(&srv);
        times.push(t.elapsed());
        forwarded.push(v["totals"]["messages_forwarded"].as_u64().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = load.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        forwarded.len() >= 3,
        "only {} scrapes in 2.5 s",
        forwarded.len()
    );
    times.sort();
    let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
    eprintln!("scrape under load: median {median:?}, max {max:?}");
    assert!(max < Duration::from_secs(2), "slowest scrape {max:?}");
    let grew = forwarded.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        grew >= forwarded.len() / 2,
        "forwarding continued between scrapes: {forwarded:?}"
    );
}
