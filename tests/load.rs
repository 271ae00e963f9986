//! `ringrelay load` against the real binary: every mode runs clean, and fixed-rate mode sends
//! at about the rate asked for.

mod common;

use common::{run_load, TestServer};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Runs `ringrelay load ... --json` against `server` and returns the report.
fn load(server: &TestServer, args: &[&str]) -> Value {
    let mut all = vec!["--warmup", "0s", "--json"];
    all.extend_from_slice(args);
    let out = run_load(&format!("ws://{}", server.addr), &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load failed: {stdout}\n{stderr}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"))
}

fn assert_clean(r: &Value) {
    assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
    assert_eq!(r["success_rate"].as_f64(), Some(1.0), "{r}");
    assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let lat = &r["latency_us"];
    assert_eq!(lat["count"], r["delivered"], "{r}");
    assert!(lat["p50"].as_u64().unwrap() >= 1, "{r}");
    assert!(lat["p50"].as_u64() <= lat["p99"].as_u64(), "{r}");
    assert!(lat["p99"].as_u64() <= lat["max"].as_u64(), "{r}");
}

fn server() -> TestServer {
    TestServer::start("auto", 1, &[])
}

#[test]
fn pairs_small_messages() {
    let s = server();
    let r = load(
        &s,
        &[
            "--mode",
            "pairs",
            "--pairs",
            "4",
            "--size",
            "64",
            "--duration",
            "1s",
        ],
    );
    assert_clean(&r);
    assert_eq!(r["mode"], "pairs");
    let mb = r["mb_per_s"].as_f64().unwrap();
    let msgs = r["msgs_per_s"].as_f64().unwrap();
    assert!((mb - msgs * 64.0 / 1e6).abs() < 1e-6 * msgs.max(1.0), "{r}");
}

#[test]
fn pairs_large_messages_both_ways() {
    let s = server();
    let r = load(
        &s,
        &[
            "--mode",
            "pairs",
            "--pairs",
            "2",
            "--size",
            "65536",
            "--both-ways",
            "--window",
            "4",
            "--duration",
            "1s",
        ],
    );
    assert_clean(&r);
}

#[test]
fn echo() {
    let s = server();
    let r = load(
        &s,
        &[
            "--mode",
            "echo",
            "--pairs",
            "3",
            "--size",
            "1024",
            "--duration",
            "1s",
        ],
    );
    assert_clean(&r);
    assert_eq!(r["mode"], "echo");
}

#[test]
fn churn() {
    let s = server();
    let r = load(
        &s,
        &[
            "--mode",
            "churn",
            "--pairs",
            "2",
            "--churn-messages",
            "5",
            "--duration",
            "1s",
        ],
    );
    assert_clean(&r);
    let cycles = r["cycles"].as_u64().unwrap();
    assert!(cycles > 0, "{r}");
    // Every cycle delivers its messages (cycles that straddle the end may add a few more).
    assert!(r["delivered"].as_u64().unwrap() >= cycles * 5, "{r}");
}

#[test]
fn pairs_through_an_epoll_server() {
    let s = TestServer::start("epoll", 1, &[]);
    let r = load(&s, &["--pairs", "2", "--size", "1000", "--duration", "1s"]);
    assert_clean(&r);
}

#[test]
fn epoll_client() {
    let s = server();
    let r = load(
        &s,
        &[
            "--driver",
            "epoll",
            "--pairs",
            "2",
            "--both-ways",
            "--size",
            "4000",
            "--duration",
            "1s",
        ],
    );
    assert_clean(&r);
}

#[test]
fn fixed_rate_sends_at_the_rate_asked() {
    let s = server();
    let rate = 2000.0;
    let r = load(
        &s,
        &[
            "--mode",
            "pairs",
            "--pairs",
            "2",
            "--size",
            "256",
            "--rate",
            "2000",
            "--duration",
            "2s",
        ],
    );
    assert_clean(&r);
    let got = r["msgs_per_s"].as_f64().unwrap();
    assert!(
        got >= 0.5 * rate && got <= 1.1 * rate,
        "asked {rate}/s, got {got}/s: {r}"
    );
    assert_eq!(r["rate"].as_f64(), Some(rate));
}

#[test]
fn bad_options_and_no_server_fail_fast() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let out = run_load(&url, &["--size", "8", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
    // Refused at once, and the run says so.
    let start = Instant::now();
    let out = run_load(&url, &["--duration", "1s", "--warmup", "0s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no connection"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}
