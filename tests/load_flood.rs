//! `ringrelay load --attackers`: a connection flood from 127.0.0.2 beside honest pairs, against
//! the real binary. Only accounting is checked here (every honest message arrives, every
//! attack attempt is counted once); how much the flood costs the honest latency is a
//! benchmark's question (scripts/flood_bench.sh), not a test's.

mod common;

use common::{run_load, TestServer};
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn honest_pairs_deliver_everything_and_every_attack_attempt_is_counted() {
    let server = TestServer::start("auto", 2, &[]);
    let url = format!("ws://{}", server.addr);
    let start = Instant::now();
    let out = run_load(
        &url,
        &[
            "--pairs",
            "4",
            "--size",
            "64",
            "--rate",
            "1000",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--threads",
            "2",
            "--attackers",
            "2",
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load failed: {stdout}\n{stderr}");
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));

    // The honest side: nothing lost, nothing out of order.
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0, "{r}");
    assert_eq!(r["delivered"].as_u64(), Some(sent), "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
    assert_eq!(r["connect_errors"].as_u64(), Some(0), "{r}");

    // The attack: it ran, from the address asked, and every attempt is in one bucket.
    let a = &r["attack"];
    assert_eq!(a["attackers"].as_u64(), Some(2), "{r}");
    assert_eq!(a["source"], "127.0.0.2", "{r}");
    let n = |k: &str| a[k].as_u64().unwrap_or_else(|| panic!("no {k}: {r}"));
    let attempts = n("attempts");
    assert!(attempts > 0, "{r}");
    assert_eq!(
        n("status_101") + n("status_429") + n("status_503") + n("status_other") + n("errors"),
        attempts,
        "{r}"
    );
    // The progress line says how far the attack got.
    assert!(stderr.contains("attack attempts"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(20));

    // The text report carries the same line (here with the attackers on a thread of their own).
    let out = run_load(
        &url,
        &[
            "--pairs",
            "1",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--attackers",
            "2",
            "--attack-threads",
            "1",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("attack "))
        .unwrap_or_else(|| panic!("no attack line: {stdout}"));
    assert!(line.contains(" attempts, 101: "), "{line}");
    assert!(
        line.contains("from 127.0.0.2 on 1 thread(s) of their own"),
        "{line}"
    );
}

#[test]
fn without_attackers_the_report_has_no_attack() {
    let server = TestServer::start("auto", 1, &[]);
    let out = run_load(
        &format!("ws://{}", server.addr),
        &[
            "--pairs",
            "1",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--json",
        ],
    );
    assert!(out.status.success());
    let r: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert!(r["attack"].is_null(), "{r}");
}

#[test]
fn an_attack_source_that_is_not_ours_fails_fast() {
    // 192.0.2.1 (TEST-NET-1) is not an address of this host, so nothing can bind to it.
    let out = run_load(
        "ws://127.0.0.1:9",
        &[
            "--duration",
            "1s",
            "--attackers",
            "1",
            "--attack-source",
            "192.0.2.1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--attack-source 192.0.2.1"), "{stderr}");
}
