//! Live connections across binary upgrades (SIGUSR2, docs/upgrade.md, "What crosses"): 20
//! pairs stream numbered messages both ways while a new connection opens every 20 ms, and
//! five upgrades follow one another. After each, the old process exited 0 and /health shows
//! the new pid and the next generation; at the end every reader got every message of its
//! peer once and in order, no pair connection was closed, no new connection was refused, and
//! the last process adopted the pairs without a word to their clients. Against the real
//! binary, on both drivers.
//!
//! Before: `relay::handover` handed no connection over (the stub), and its fallback closed
//! every connection with 1012 at each upgrade: each pair's readers saw a close frame at the
//! first upgrade (the test fails with "closed" verdicts), and `handover_adopted` did not exist.

mod common;

use common::process::{become_subreaper, Chain};
use common::Ws;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tungstenite::Message;

const PAIRS: usize = 20;
const UPGRADES: u64 = 5;

/// The relay under test and the processes that follow it.
type Relay = Chain;

impl Relay {
    fn start(driver: &str) -> Relay {
        become_subreaper();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen"])
            .args(["127.0.0.1:0", "--driver", driver, "--workers", "2"])
            .env("RUST_LOG", "info")
            .env("RINGRELAY_LIMITS_IP_CONNECT_RATE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Chain::spawn(&mut cmd)
    }
}

fn ws(addr: SocketAddr, session: &str, role: &str) -> Ws {
    let url = format!("ws://{addr}/v1/relay/{session}?role={role}");
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_nodelay(true).unwrap();
    let (ws, _) = tungstenite::client::client(url, s).expect("upgrade");
    ws
}

/// One side of a pair: a writer sending `"{me} {n}"`, n = 1, 2, ... every 2 ms until `stop`,
/// then `"{me} end {last}"`; a reader checking the other side's arrive each once, in order,
/// with nothing else between, through its end. Each sends its verdict on `done`.
fn side(ws: Ws, me: String, other: String, stop: Arc<AtomicBool>, done: mpsc::Sender<String>) {
    let sock = ws.get_ref().try_clone().unwrap();
    drop(ws);
    let w = sock.try_clone().unwrap();
    let d = done.clone();
    let role = tungstenite::protocol::Role::Client;
    std::thread::spawn(move || {
        let mut ws = tungstenite::WebSocket::from_raw_socket(w, role, None);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            if let Err(e) = ws.send(Message::text(format!("{me} {n}"))) {
                let _ = d.send(format!("{me} writer failed at {n}: {e}"));
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = ws.send(Message::text(format!("{me} end {n}")));
        let _ = d.send("wrote".into());
    });
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut ws = tungstenite::WebSocket::from_raw_socket(sock, role, None);
        let mut next = 1u64;
        loop {
            match ws.read() {
                Ok(Message::Text(t)) if *t == *format!("{other} {next}") => next += 1,
                Ok(Message::Text(t)) if *t == *format!("{other} end {}", next - 1) => break,
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(m) => {
                    let _ = done.send(format!("{other}→ expected {next}, got {m:?}"));
                    return;
                }
                Err(e) => {
                    let _ = done.send(format!("{other}→ closed waiting for {next}: {e}"));
                    return;
                }
            }
        }
        let _ = done.send(if next > 1 {
            "read".into()
        } else {
            format!("{other}→ nothing came")
        });
    });
}

/// Opens a WebSocket every 20 ms until stopped; counts those not upgraded.
fn connector(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut opened, mut failed) = (0, Vec::new());
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let url = format!("ws://{addr}/v1/relay/c{i}?role=a");
            let r = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    tungstenite::client::client(url, s).map_err(|e| e.to_string())
                });
            match r {
                Ok((mut ws, _)) => {
                    opened += 1;
                    let _ = ws.close(None);
                }
                Err(e) => failed.push(format!("connection {i}: {e}")),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (opened, failed)
    })
}

fn pairs_stream_through_five_upgrades(driver: &str) {
    let mut relay = Relay::start(driver);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    for i in 0..PAIRS {
        let session = format!("live-{driver}-{i}");
        let a = ws(relay.addr, &session, "a");
        let b = ws(relay.addr, &session, "b");
        side(
            a,
            format!("a{i}"),
            format!("b{i}"),
            stop.clone(),
            tx.clone(),
        );
        side(
            b,
            format!("b{i}"),
            format!("a{i}"),
            stop.clone(),
            tx.clone(),
        );
    }
    drop(tx);
    let connecting = Arc::new(AtomicBool::new(false));
    let conns = connector(relay.addr, connecting.clone());
    std::thread::sleep(Duration::from_millis(200));
    for generation in 1..=UPGRADES {
        let old = relay.pid;
        assert_eq!(
            relay.upgrade(),
            Some(0),
            "{driver}: old process {old}'s exit"
        );
        let health = relay.get_json("/health");
        assert_eq!(health["generation"], generation, "{driver}: {health}");
        std::thread::sleep(Duration::from_millis(150));
    }
    let adopted = relay.get_json("/stats")["totals"]["handover_adopted"].as_u64();
    stop.store(true, Ordering::Relaxed);
    connecting.store(true, Ordering::Relaxed);
    let mut verdicts: Vec<String> = rx.iter().collect();
    verdicts.sort();
    verdicts.dedup();
    assert_eq!(verdicts, ["read", "wrote"], "{driver}");
    let (opened, failed) = conns.join().unwrap();
    assert!(failed.is_empty(), "{driver}: refused {failed:?}");
    assert!(opened > 0);
    // The last process took every pair connection over (the connector's come and go).
    assert!(
        adopted.is_some_and(|n| n >= 2 * PAIRS as u64),
        "{driver}: adopted {adopted:?}"
    );
    let closed = relay.get_json("/stats")["totals"]["handover_closed"].as_u64();
    assert_eq!(closed, Some(0), "{driver}");
}

#[test]
fn pairs_stream_through_five_upgrades_io_uring() {
    pairs_stream_through_five_upgrades("io_uring");
}

#[test]
fn pairs_stream_through_five_upgrades_epoll() {
    pairs_stream_through_five_upgrades("epoll");
}
