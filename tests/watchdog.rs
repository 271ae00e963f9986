//! The systemd watchdog on a fake NOTIFY_SOCKET (a unix datagram socket this test binds, with
//! WATCHDOG_USEC set as systemd sets it for `WatchdogSec=`): READY=1, WATCHDOG=1 pings while
//! every worker ticks, STATUS= lines with connections and sessions, and no pings while one
//! worker is stalled (RR_DEBUG_STALL, honoured by debug builds only: runtime::stall), which
//! is logged naming the worker; the pings resume when it ticks again.
//!
//! Before: the relay sent READY=1 and STOPPING=1 only, so `WatchdogSec=` would have killed a
//! healthy relay, and a stuck worker went unnoticed while the process lived.

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use tungstenite::Message;

fn a_stalled_worker_stops_the_watchdog_pings(driver: &str) {
    let dir = std::env::temp_dir().join(format!("rr-watchdog-{}-{driver}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A 1 s watchdog; ticks every 100 ms (a quarter of the 400 ms ping interval), so a worker
    // is stuck after max(1 s / 2, 4 ticks) = 500 ms without one. Worker 1 stalls for 2.5 s
    // from 1.5 s after start.
    let started = Instant::now();
    let srv = TestServer::start_with(driver, 2, &[], |cmd| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "1000000")
            .env("RINGRELAY_SESSION_PING_INTERVAL", "400ms")
            .env("RR_DEBUG_STALL", "1:1500:2500");
    });
    let mut a = srv.connect("/v1/relay/watched?role=desktop");
    let mut b = srv.connect("/v1/relay/watched?role=mobile");
    a.send(Message::text("hi")).unwrap();
    assert_eq!(recv_text(&mut b), "hi");
    let mut got: Vec<(Duration, String)> = Vec::new();
    let mut buf = [0u8; 512];
    while started.elapsed() < Duration::from_millis(6_000) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            got.push((started.elapsed(), msg));
        }
    }
    let all: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert!(all.iter().any(|m| m.contains("READY=1")), "{all:?}");
    assert!(
        all.iter()
            .any(|m| m.starts_with("STATUS=2 connections, 1 sessions on 2 workers")),
        "{all:?}"
    );
    let pings: Vec<Duration> = got
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    let gaps: Vec<(Duration, Duration)> = pings.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
    let (at, longest) = gaps.iter().copied().max_by_key(|g| g.1).expect("pings");
    // The stall (2.5 s, less the 0.5 s before it counts) silences the watchdog for about 2 s,
    // long enough for systemd's 1 s to run out.
    assert!(longest >= Duration::from_millis(1_200), "{gaps:?}");
    assert!(
        at >= Duration::from_millis(1_000),
        "the silence starts with the stall: {gaps:?}"
    );
    // Control: before and after the stall, pings come every 250 ms (a quarter interval).
    let before = pings.iter().filter(|t| **t <= at).count();
    let after = pings.iter().filter(|t| **t > at + longest).count();
    assert!(before >= 2 && after >= 2, "{pings:?}");
    for (t, gap) in &gaps {
        if *t != at {
            assert!(
                *gap < Duration::from_millis(1_000),
                "a healthy gap of {gap:?} at {t:?}"
            );
        }
    }
    let stuck = srv
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("worker stuck") && l.contains("worker=1"));
    assert!(stuck, "the stuck worker is logged by index");
    assert!(srv.log_contains("watchdog pings resume"));
    // The stalled worker came back and the pair still flows.
    a.send(Message::text("after")).unwrap();
    assert_eq!(recv_text(&mut b), "after");
    let _ = std::fs::remove_dir_all(&dir);
}

both_drivers!(a_stalled_worker_stops_the_watchdog_pings);
