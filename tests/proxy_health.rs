//! The proxy's active health checks (docs/proxy.md "Health") against the real binary, on
//! both drivers, with upstreams written in the test (tests/common/upstream.rs).
//!
//! Before: there were no active checks. `health_path` was an unknown route field that
//! stopped the server at start; without it, an upstream whose health endpoint failed kept
//! getting requests, and a passively ejected upstream got requests again as soon as its
//! back-off ended, whether or not it answered.

mod common;

use common::upstream::Upstream;
use common::{counter, get, stats, stats_when, TestServer};
use std::time::{Duration, Instant};

/// One route `/` over `ups` (all region "1") with `extra` route fields.
fn routes(ups: &[&Upstream], extra: &str) -> String {
    let ups: Vec<String> = ups
        .iter()
        .map(|u| format!("{{ url = \"{}\", region = \"1\" }}", u.url()))
        .collect();
    format!(
        "[{{ prefix = \"/\", upstreams = [{}]{extra} }}]",
        ups.join(", ")
    )
}

/// Upstream `url`'s object in /stats.
fn upstream_stats(v: &serde_json::Value, url: &str) -> serde_json::Value {
    v["proxy"]["routes"][0]["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["url"] == url))
        .cloned()
        .unwrap_or_else(|| panic!("no upstream {url} in {v}"))
}

fn health_is(srv: &TestServer, url: &str, want: &str) -> serde_json::Value {
    let v = stats_when(srv, |v| upstream_stats(v, url)["health"] == want);
    let u = upstream_stats(&v, url);
    assert_eq!(u["health"], want, "{u}");
    u
}

/// `n` requests, each on a connection of its own; returns the bodies.
fn requests(srv: &TestServer, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (status, _, body) = get(srv.addr, &format!("/r{i}"));
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect()
}

fn a_failing_health_check_takes_an_upstream_out_until_it_passes_again(driver: &str) {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let checks =
        ", health_path = \"/health\", health_interval = \"50ms\", health_rise = 2, health_fall = 2";
    let env = [("RINGRELAY_PROXY_ROUTES", routes(&[&a, &b], checks))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let srv = TestServer::start(driver, 2, &env);
    // Both workers check both upstreams; both start healthy and take requests.
    health_is(&srv, &a.url(), "up");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.checks() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(a.checks() >= 4, "{driver}: {} checks", a.checks());
    // a's health endpoint fails: after two failed checks each worker takes it out.
    a.set_health(503);
    let u = health_is(&srv, &a.url(), "down");
    assert_eq!(u["healthy_workers"], 0, "{driver}: {u}");
    assert!(u["ejections"].as_u64().unwrap() >= 2, "{driver}: {u}");
    assert!(
        u["health_checks_failed"].as_u64().unwrap() >= 4,
        "{driver}: {u}"
    );
    assert!(counter(&srv, "proxy_upstreams_down") >= 2, "{driver}");
    // Control: b takes every request; a gets none while it is down.
    let before = a.requests();
    for body in requests(&srv, 30) {
        assert!(body.starts_with("b GET"), "{driver}: {body}");
    }
    assert_eq!(
        a.requests(),
        before,
        "{driver}: a down upstream got requests"
    );
    // It answers again: two passing checks bring it back, and it takes requests.
    a.set_health(204);
    health_is(&srv, &a.url(), "up");
    assert!(counter(&srv, "proxy_upstreams_up") >= 2, "{driver}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.requests() == before && Instant::now() < deadline {
        requests(&srv, 5);
    }
    assert!(
        a.requests() > before,
        "{driver}: a got no request once back"
    );
    let totals = &stats(&srv)["totals"];
    assert!(
        totals["proxy_health_checks"].as_u64().unwrap() >= 8,
        "{driver}"
    );
}

fn a_passively_ejected_upstream_stays_out_until_its_checks_pass(driver: &str) {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    // Checks every 200 ms, three passes to come back: at least 400 ms after an ejection.
    let checks = ", health_path = \"/health\", health_interval = \"200ms\", health_rise = 3";
    let env = [
        ("RINGRELAY_PROXY_ROUTES", routes(&[&a, &b], checks)),
        ("RINGRELAY_PROXY_RESPONSE_TIMEOUT", "150ms".to_string()),
        ("RINGRELAY_PROXY_EJECT_AFTER", "1".to_string()),
        ("RINGRELAY_PROXY_EJECT_BACKOFF", "10ms".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // One worker: every request and every check is that worker's view.
    let srv = TestServer::start(driver, 1, &env);
    health_is(&srv, &a.url(), "up");
    // a's health endpoint answers, its requests do not (in time): the first one that meets
    // it gets 504 and ejects it.
    a.set_slow(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "{driver}: no request met a");
        let (status, _, body) = get(srv.addr, "/slow");
        if status == 504 {
            break;
        }
        assert!(body.starts_with("b GET"), "{driver}: {status} {body}");
    }
    let ejected_at = Instant::now();
    let before = a.requests();
    // Its 10 ms back-off is long over, but it stays out until three checks pass.
    let mut sent = 0;
    while ejected_at.elapsed() < Duration::from_millis(300) {
        let (status, _, body) = get(srv.addr, "/after");
        assert!(
            status == 200 && body.starts_with("b GET"),
            "{driver}: {status} {body}"
        );
        sent += 1;
    }
    assert!(sent >= 3, "{driver}: only {sent} requests in the window");
    assert_eq!(
        a.requests(),
        before,
        "{driver}: an ejected upstream got requests"
    );
    let u = upstream_stats(&stats(&srv), &a.url());
    assert!(u["ejections"].as_u64().unwrap() >= 1, "{driver}: {u}");
    // It answers in time again: the checks bring it back and it takes requests.
    a.set_slow(false);
    health_is(&srv, &a.url(), "up");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.requests() == before && Instant::now() < deadline {
        requests(&srv, 5);
    }
    assert!(
        a.requests() > before,
        "{driver}: a got no request once back"
    );
}

/// Config only: the same on either driver.
#[test]
fn health_fields_without_a_path_or_out_of_range_stop_the_server_at_start() {
    let a = Upstream::start("a");
    for (extra, says) in [
        (
            ", health_interval = \"1s\"",
            "health_interval needs health_path",
        ),
        (
            ", health_path = \"/h\", health_fall = 0",
            "health_fall must be 1 to 1000",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringrelay"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("RINGRELAY_PROXY_ROUTES", routes(&[&a], extra))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.contains("proxy.routes") && err.contains("route \"/\""),
            "{extra}: {err}"
        );
    }
}

both_drivers!(
    a_failing_health_check_takes_an_upstream_out_until_it_passes_again,
    a_passively_ejected_upstream_stays_out_until_its_checks_pass,
);
