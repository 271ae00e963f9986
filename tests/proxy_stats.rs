//! The proxy's figures per route and per upstream in /stats and /metrics, its request log
//! line and its access-log line (docs/proxy.md "Observability"), against the real binary on
//! both drivers, with upstreams written in the test (tests/common/upstream.rs).
//!
//! Before: only process-wide `proxy_*` counters existed: /stats had no `proxy` object and
//! /metrics no per-route or per-upstream series (no latency histogram, no health, no open or
//! idle connections); the access log had no line for a proxied request at all (only the
//! proxy's own refusals, under the first request's path on a kept-alive connection).

mod common;

use common::dir::Dir;
use common::upstream::Upstream;
use common::{get, http, stats_when, TestServer};
use serde_json::Value;
use std::collections::HashMap;
use std::net::TcpListener;

fn route<'a>(v: &'a Value, prefix: &str) -> &'a Value {
    v["proxy"]["routes"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["prefix"] == prefix))
        .unwrap_or_else(|| panic!("no route {prefix} in {v}"))
}

fn upstream<'a>(r: &'a Value, url: &str) -> &'a Value {
    r["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["url"] == url))
        .unwrap_or_else(|| panic!("no upstream {url} in {r}"))
}

/// An address nothing listens on (bound, then let go).
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// The `/metrics` sample line that starts with `series` (labels included), as a number.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}"))
}

fn figures_per_route_and_upstream_in_stats_metrics_and_both_logs(driver: &str) {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let dead = dead_url();
    let routes = format!(
        "[{{ prefix = \"/api\", upstreams = [{{ url = \"{}\", region = \"1\" }}] }}, \
         {{ prefix = \"/\", upstreams = [{{ url = \"{}\", region = \"2\" }}, {{ url = \"{dead}\", region = \"2\" }}] }}]",
        a.url(),
        b.url()
    );
    let logs = Dir::new("proxy_stats", driver);
    let access = logs.0.join("access.log");
    let target = format!("file:{}", access.display());
    let env = [
        ("RINGRELAY_PROXY_ROUTES", routes.as_str()),
        ("RINGRELAY_LOG_ACCESS", target.as_str()),
    ];
    let mut srv = TestServer::start(driver, 2, &env);
    // Route /api: 5 answered 200, 3 answered 404, one upload of 1000 bytes, one download
    // of 5000; a token in a query string is never logged.
    let mut down = 0;
    for i in 0..5 {
        let (status, _, body) = get(srv.addr, &format!("/api/x{i}?token=s3cret&region=1"));
        assert_eq!(status, 200, "{driver}: {body}");
        down += body.len();
    }
    for _ in 0..3 {
        let (status, _, body) = get(srv.addr, "/api/status/404");
        assert_eq!(status, 404, "{driver}");
        down += body.len();
    }
    let body = "u".repeat(1000);
    let post = format!(
        "POST /api/up HTTP/1.1\r\nHost: x\r\nX-Region: 1\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{body}"
    );
    let (status, _, reply) = http(srv.addr, &post);
    assert_eq!(status, 200, "{driver}");
    down += reply.len();
    let (status, _, reply) = get(srv.addr, "/api/bytes/5000");
    assert_eq!((status, reply.len()), (200, 5000), "{driver}");
    down += 5000;
    // A region that is not one: refused by the proxy itself, no upstream.
    let (status, _, _) = get(srv.addr, "/api/x?region=no%20good");
    assert_eq!(status, 400, "{driver}");
    // Route /: its dead upstream fails and the GETs that met it are retried on b.
    for i in 0..20 {
        let (status, _, body) = get(srv.addr, &format!("/other{i}"));
        assert!(
            status == 200 && body.starts_with("b GET"),
            "{driver}: {status} {body}"
        );
    }

    let v = stats_when(&srv, |v| {
        route(v, "/api")["requests"]["2xx"] == 7 && route(v, "/")["requests"]["2xx"] == 20
    });
    let api = route(&v, "/api");
    assert_eq!(api["requests"]["2xx"], 7, "{driver}: {api}");
    assert_eq!(api["requests"]["4xx"], 4, "{driver}: {api}");
    assert_eq!(api["latency_us"]["count"], 10, "{driver}: {api}");
    let ua = upstream(api, &a.url());
    assert_eq!(ua["responses"]["2xx"], 7, "{driver}: {ua}");
    assert_eq!(ua["responses"]["4xx"], 3, "{driver}: {ua}");
    assert_eq!(ua["bytes_up"], 1000, "{driver}: {ua}");
    assert_eq!(ua["bytes_down"], down as u64, "{driver}: {ua}");
    assert_eq!(ua["region"], "1");
    assert_eq!(ua["health"], "up", "{driver}: {ua}");
    assert_eq!(ua["healthy_workers"], 2, "{driver}: {ua}");
    // The pooled keep-alive connection(s) to a: idle now, and counted open.
    let idle = ua["idle_connections"].as_u64().unwrap();
    assert!(idle >= 1, "{driver}: {ua}");
    assert_eq!(
        ua["open_connections"], idle,
        "{driver}: nothing busy now: {ua}"
    );
    let all = route(&v, "/");
    let dead_up = upstream(all, &dead);
    let retries = all["retries"].as_u64().unwrap();
    assert!(retries >= 1, "{driver}: {all}");
    assert_eq!(
        dead_up["failures"].as_u64().unwrap(),
        retries,
        "{driver}: {all}"
    );
    assert!(
        dead_up["ejections"].as_u64().unwrap() >= 1,
        "{driver}: {all}"
    );
    assert_eq!(upstream(all, &b.url())["responses"]["2xx"], 20, "{driver}");

    // /metrics: the same figures, labelled by route and upstream; health per worker.
    let (status, _, text) = get(srv.admin, "/metrics");
    assert_eq!(status, 200);
    let al = format!(
        "route=\"/api\",host=\"\",upstream=\"{}\",region=\"1\"",
        a.url()
    );
    let dl = format!("route=\"/\",host=\"\",upstream=\"{dead}\",region=\"2\"");
    let series = [
        (
            "ringrelay_proxy_route_requests_total{route=\"/api\",host=\"\",class=\"4xx\"}"
                .to_string(),
            4.0,
        ),
        (
            format!("ringrelay_proxy_upstream_responses_total{{{al},class=\"2xx\"}}"),
            7.0,
        ),
        (
            format!("ringrelay_proxy_upstream_request_bytes_total{{{al}}}"),
            1000.0,
        ),
        (
            format!("ringrelay_proxy_upstream_response_bytes_total{{{al}}}"),
            down as f64,
        ),
        (
            format!("ringrelay_proxy_upstream_latency_seconds_count{{{al}}}"),
            10.0,
        ),
        (
            "ringrelay_proxy_route_latency_seconds_count{route=\"/api\",host=\"\"}".to_string(),
            10.0,
        ),
        (
            format!("ringrelay_proxy_upstream_failures_total{{{dl}}}"),
            retries as f64,
        ),
        (
            "ringrelay_proxy_route_retries_total{route=\"/\",host=\"\"}".to_string(),
            retries as f64,
        ),
        (
            format!("ringrelay_proxy_upstream_idle_connections{{{al}}}"),
            idle as f64,
        ),
    ];
    for (s, want) in &series {
        assert_eq!(sample(&text, s), *want, "{driver}: {s}");
    }
    // Health per worker: the workers that met the dead upstream ejected it.
    let healthy: f64 = (0..2)
        .map(|core| {
            sample(
                &text,
                &format!("ringrelay_proxy_upstream_healthy{{{dl},core=\"{core}\"}}"),
            )
        })
        .sum();
    let (_, _, json) = get(srv.admin, "/stats");
    let v: Value = serde_json::from_str(&json).unwrap();
    let dead_now = upstream(route(&v, "/"), &dead);
    assert_eq!(
        healthy,
        dead_now["healthy_workers"].as_f64().unwrap(),
        "{driver}"
    );
    assert!(healthy < 2.0, "{driver}: {dead_now}");
    assert!(text.contains("# TYPE ringrelay_proxy_upstream_latency_seconds histogram\n"));

    // The request log line: method, path without its query, status, duration, region,
    // upstream.
    let line = srv
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("proxied") && l.contains("path=/api/x0"))
        .cloned()
        .unwrap_or_else(|| panic!("{driver}: no proxied line"));
    let f = fields(&line);
    let want = [
        ("method", "GET"),
        ("status", "200"),
        ("region", "1"),
        ("route", "/api"),
    ];
    for (k, v) in want {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "{driver}: {line}");
    }
    assert_eq!(f["upstream"], a.url(), "{driver}: {line}");
    assert!(f["duration_ms"].parse::<u64>().is_ok(), "{driver}: {line}");
    assert!(
        !srv.log_contains("s3cret"),
        "{driver}: a query string was logged"
    );

    // The access log: one `proxy` line per request with the same fields, the proxy's own
    // refusal included (and no second `refusal` line for it). A stop writes out what the
    // workers hold.
    assert_eq!(srv.terminate(), Some(0), "{driver}");
    let text = std::fs::read_to_string(&access).unwrap();
    assert!(!text.contains("s3cret"), "{driver}");
    let lines: Vec<HashMap<String, String>> = text.lines().map(fields).collect();
    let proxied: Vec<_> = lines.iter().filter(|l| l["kind"] == "proxy").collect();
    assert_eq!(proxied.len(), 31, "{driver}: {text}");
    assert!(
        !lines.iter().any(|l| l["kind"] == "refusal"),
        "{driver}: {text}"
    );
    let up = proxied.iter().find(|l| l["path"] == "/api/up").unwrap();
    let want = [
        ("method", "POST"),
        ("status", "200"),
        ("bytes_in", "1000"),
        ("region", "1"),
        ("route", "/api"),
    ];
    for (k, v) in want {
        assert_eq!(up.get(k).map(String::as_str), Some(v), "{driver}: {up:?}");
    }
    assert_eq!(up["upstream"], a.url(), "{driver}: {up:?}");
    assert!(up["duration_ms"].parse::<f64>().is_ok(), "{driver}: {up:?}");
    let big = proxied
        .iter()
        .find(|l| l["path"] == "/api/bytes/5000")
        .unwrap();
    assert_eq!(big["bytes_out"], "5000", "{driver}: {big:?}");
    let bad = proxied.iter().find(|l| l["status"] == "400").unwrap();
    assert_eq!(
        (bad["upstream"].as_str(), bad["path"].as_str()),
        ("-", "/api/x"),
        "{driver}"
    );
    // The proxy's own refusal names the contract's code (before: no `error` field); an
    // upstream's answer has none.
    assert_eq!(
        bad.get("error").map(String::as_str),
        Some("invalid_region"),
        "{driver}: {bad:?}"
    );
    assert!(!up.contains_key("error"), "{driver}: {up:?}");
}

/// A text log line's `key=value` fields (no value here holds a space); quotes dropped.
fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

both_drivers!(figures_per_route_and_upstream_in_stats_metrics_and_both_logs);
