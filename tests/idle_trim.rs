//! What a storm of connections leaves behind it (issue 17, idle memory): once a storm is
//! over, each worker gives back what it no longer needs (the pool's idle read buffers, the
//! registry's spare capacity, its allocator's freed pages), against the real binary on both
//! I/O drivers, while a pair of another session keeps flowing.
//!
//! Before: a worker trimmed only in the tick that saw its connections fall by a quarter (or
//! its pool allocate a burst of buffers). What was freed after that tick (the last closing
//! connections, their read buffers put back in the pool, this core's blocks another core
//! freed) stayed resident until the next storm, and a storm of upgrades that then sat idle
//! kept the handshakes' leftovers; there was no `memory_trims` counter (this test fails on
//! main23's binary at `counter(.., "memory_trims_settled")`).
//!
//! The memory itself is measured by `scripts/idle_memory.py` (docs/performance.md, "Idle
//! connections"), not here: RSS figures belong in benchmarks, not in timed tests.

mod common;
use common::*;

const SETTLED: &str = "memory_trims_settled";

fn total(v: &serde_json::Value, name: &str) -> u64 {
    v["totals"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn control_flows(c: &mut Raw, d: &mut Raw, i: u8) {
    c.send(&frame(true, 2, &[i]));
    loop {
        let (fin, op, payload) = d.frame().expect("a frame on the control pair");
        if op == 2 {
            assert!(fin);
            assert_eq!(payload, [i], "the control pair flows beside the storm");
            return;
        }
    }
}

fn a_storm_that_is_over_is_trimmed_once_more(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_LIMITS_IP_CONNECT_RATE", "0"),
            ("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP", "0"),
            ("RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP", "0"),
        ],
    );
    let mut c = Raw::upgrade(srv.addr, "/v1/relay/control");
    let mut d = Raw::upgrade(srv.addr, "/v1/relay/control");
    let settled_at_start = counter(&srv, SETTLED);
    // 150 pairs: 300 connections, more than a trim's threshold (256).
    let storm: Vec<(Raw, Raw)> = (0..150)
        .map(|i| {
            let path = format!("/v1/relay/storm{i}");
            (Raw::upgrade(srv.addr, &path), Raw::upgrade(srv.addr, &path))
        })
        .collect();
    // The storm of upgrades is over: once nothing moved for a second, a trim.
    let v = stats_when(&srv, |v| total(v, SETTLED) > settled_at_start);
    assert!(
        total(&v, SETTLED) > settled_at_start,
        "no trim after the upgrades settled: {}",
        v["totals"]
    );
    control_flows(&mut c, &mut d, 1);
    let (trims, settled) = (total(&v, "memory_trims"), total(&v, SETTLED));
    drop(storm);
    // The fall is trimmed in the tick that sees it, and once more when the storm is over.
    let v = stats_when(&srv, |v| {
        total(v, "memory_trims") >= trims + 2 && total(v, SETTLED) > settled
    });
    assert!(
        total(&v, "memory_trims") >= trims + 2 && total(&v, SETTLED) > settled,
        "trims {trims} then {}, settled {settled} then {}",
        total(&v, "memory_trims"),
        total(&v, SETTLED)
    );
    let (_, _, body) = get(srv.admin, "/health");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        health["active_connections"], 2,
        "only the control pair: {health}"
    );
    control_flows(&mut c, &mut d, 2);
}

both_drivers!(a_storm_that_is_over_is_trimmed_once_more);
