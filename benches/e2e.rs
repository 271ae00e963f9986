//! End-to-end relay throughput, ringrelay against two baselines, all on loopback:
//!
//! * `ringrelay`: the relay in-process (`server::run` on listeners bound here, one worker), every protection limit
//!   off;
//! * `ringrelay+limits`: the same with every per-IP and per-connection limit on, set far above
//!   this load, so the difference is what checking them costs;
//! * `tokio-tungstenite`: a relay built here on a current-thread tokio runtime: accept two
//!   WebSocket connections per session path and forward data messages between them with the
//!   usual read-then-`send` loop (tungstenite answers pings and closes itself);
//! * `tcp-forwarder`: no WebSocket at all (`benches/support/forwarder.rs`, also a process of its own:
//!   `examples/tcp_forwarder.rs`): each connection names its session in a first line, the
//!   1st and 2nd of a session are paired and bytes are copied both ways through a 256 KiB
//!   buffer. The clients speak masked WebSocket frames straight through it, so this is the
//!   floor of what moving the bytes costs.
//!
//! Each is driven by the `ringrelay load` engine (as a library, on its own thread): `PAIRS`
//! sessions, messages a→b, closed loop with `WINDOW` in flight per sender. One iteration is a
//! fixed number of messages per pair; the time is from the start line to the last arrival
//! (connecting is not timed). Throughput counts payload bytes.
//!
//! At the end a table gives msgs/s and MB/s per size and the ratios ringrelay+limits /
//! ringrelay, ringrelay / tokio-tungstenite and ringrelay / tcp-forwarder, over the measured
//! samples.
//!
//! Run: cargo bench --bench e2e   (a few minutes on 2 cores; criterion options work as usual)

use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::{SinkExt, StreamExt};
use ringrelay::config::Config;
use ringrelay::load::client::{Target, Transport};
use ringrelay::load::engine::{self, Mode, Plan, Stop};
use ringrelay::server::{self, Listeners, Shutdown};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[path = "support/forwarder.rs"]
mod forwarder;

const PAIRS: usize = 4;
const WINDOW: u32 = 16;
/// (payload bytes, label, messages per pair in one iteration)
const SIZES: [(usize, &str, u64); 3] = [
    (64, "64B", 2000),
    (1024, "1KiB", 1000),
    (65536, "64KiB", 40),
];
const SAMPLES: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Relay {
    Ringrelay,
    /// Every protection limit on, set where this load never reaches it.
    RingrelayLimited,
    Tungstenite,
    Forwarder,
}

impl Relay {
    fn name(self) -> &'static str {
        match self {
            Relay::Ringrelay => "ringrelay",
            Relay::RingrelayLimited => "ringrelay+limits",
            Relay::Tungstenite => "tokio-tungstenite",
            Relay::Forwarder => "tcp-forwarder",
        }
    }
}

// ---- the tokio-tungstenite relay ----

type Ws = WebSocketStream<TcpStream>;
type Waiting<T> = Arc<Mutex<HashMap<String, T>>>;

/// Runs a baseline server on a current-thread tokio runtime of its own: every accepted
/// connection goes to `join` with the map where the first of each session waits.
fn spawn_baseline<T, F, Fut>(name: &str, join: F) -> SocketAddr
where
    T: Send + 'static,
    F: Fn(TcpStream, Waiting<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let waiting: Waiting<T> = Arc::default();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || forwarder::accept_loop(listener, move |sock| join(sock, waiting.clone())))
        .expect("spawn");
    addr
}

fn start_tungstenite_relay() -> SocketAddr {
    spawn_baseline("tungstenite-relay", ws_join)
}

/// Upgrades, then either waits as the first of its session or relays with the first.
// The callback's `Result` type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn ws_join(sock: TcpStream, waiting: Waiting<Ws>) {
    let mut path = String::new();
    let record_path = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(sock, record_path).await else {
        return;
    };
    let first = waiting.lock().unwrap().remove(&path);
    match first {
        None => {
            waiting.lock().unwrap().insert(path, ws);
        }
        Some(a) => {
            let (a_tx, a_rx) = a.split();
            let (b_tx, b_rx) = ws.split();
            tokio::join!(pump(a_rx, b_tx), pump(b_rx, a_tx));
        }
    }
}

/// Forwards data messages until the source ends (reading on after a close lets tungstenite
/// send its close answer).
async fn pump(
    mut rx: futures_util::stream::SplitStream<Ws>,
    mut tx: futures_util::stream::SplitSink<Ws, Message>,
) {
    let mut open = true;
    while let Some(Ok(m)) = rx.next().await {
        if open && (m.is_binary() || m.is_text()) && tx.send(m).await.is_err() {
            open = false;
        }
    }
}

// ---- the benches ----

/// One worker; with `limits` every per-IP and per-connection limit is on (but far above
/// this load), without it every one is off, so the two differ only by the checks' cost.
/// Runs through the library entry (`server::run`) on listeners bound here, on a thread of its
/// own; the returned trigger stops it and the thread ends when it has.
fn start_ringrelay(limits: bool) -> (InProcess, SocketAddr) {
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: 1,
        ..Config::default()
    };
    let l = &mut config.limits;
    if limits {
        l.ip_connect_rate = 100_000_000;
        l.ip_connect_burst = 100_000_000;
        l.max_connections_per_ip = 100_000;
        l.message_rate = 1_000_000_000;
        l.message_burst = 1_000_000_000;
        l.byte_rate = 1 << 40;
        l.byte_burst = 1 << 40;
    } else {
        l.ip_connect_rate = 0;
        l.max_connections_per_ip = 0;
    }
    let listeners = Listeners::bind(&config).expect("bind ringrelay");
    let addr = listeners.public[0].local_addr().expect("bound listener");
    let (shutdown, signal) = Shutdown::new();
    let thread = std::thread::spawn(move || server::run(config, listeners, signal));
    (InProcess { shutdown, thread }, addr)
}

/// A relay run in process: its trigger and the thread `server::run` blocks.
struct InProcess {
    shutdown: Shutdown,
    thread: std::thread::JoinHandle<Result<(), server::ServerError>>,
}

fn plan(addr: SocketAddr, transport: Transport, size: usize, messages: u64, run: u64) -> Plan {
    Plan {
        target_b: None,
        target: Target {
            addr,
            host: addr.to_string(),
            prefix: String::new(),
            transport,
            tls: None,
        },
        mode: Mode::Pairs,
        conns: PAIRS,
        size,
        window: WINDOW,
        stop: Stop::Count {
            messages,
            deadline: Duration::from_secs(120),
        },
        rate: None,
        both_ways: false,
        churn_messages: 0,
        threads: 1,
        progress: false,
        run_id: format!("bench{run}"),
        drain: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        driver: ringrelay::config::DriverChoice::Auto,
        resume: false,
        acks: false,
    }
}

/// (messages delivered, time) of every timed run, per (size, relay).
type Results = RefCell<BTreeMap<(usize, Relay), Vec<(u64, Duration)>>>;

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_millis(2500))
        .configure_from_args();
    let (ringrelay, rr_addr) = start_ringrelay(false);
    let (limited, limited_addr) = start_ringrelay(true);
    let relays = [
        (Relay::Ringrelay, rr_addr, Transport::WebSocket),
        (Relay::RingrelayLimited, limited_addr, Transport::WebSocket),
        (
            Relay::Tungstenite,
            start_tungstenite_relay(),
            Transport::WebSocket,
        ),
        (Relay::Forwarder, forwarder::spawn(), Transport::Raw),
    ];
    let results: Results = RefCell::default();
    let runs = RefCell::new(0u64);
    for (size, label, per_iter) in SIZES {
        let mut g = c.benchmark_group(format!("e2e/{label}"));
        g.throughput(Throughput::Bytes(size as u64 * PAIRS as u64 * per_iter));
        for (relay, addr, transport) in relays {
            g.bench_function(BenchmarkId::from_parameter(relay.name()), |b| {
                b.iter_custom(|iters| {
                    let mut n = runs.borrow_mut();
                    *n += 1;
                    let messages = iters * per_iter;
                    let p = plan(addr, transport, size, messages, *n);
                    let r = engine::run(&p).unwrap_or_else(|e| panic!("{}: {e}", relay.name()));
                    let want = messages * PAIRS as u64;
                    assert!(
                        r.errors == 0 && r.delivered == want,
                        "{} {label}: delivered {} of {want}, errors {}: {:?}",
                        relay.name(),
                        r.delivered,
                        r.errors,
                        r.error_samples
                    );
                    let t = Duration::from_secs_f64(r.duration_s);
                    results
                        .borrow_mut()
                        .entry((size, relay))
                        .or_default()
                        .push((r.delivered, t));
                    t
                })
            });
        }
        g.finish();
    }
    c.final_summary();
    print_table(&results.borrow());
    for r in [ringrelay, limited] {
        r.shutdown.trigger();
        r.thread
            .join()
            .expect("ringrelay thread")
            .expect("ringrelay run");
    }
}

fn print_table(results: &BTreeMap<(usize, Relay), Vec<(u64, Duration)>>) {
    // The last SAMPLES runs of a case are criterion's samples (the earlier ones its warm-up).
    let rate = |size: usize, relay: Relay| -> Option<(f64, f64)> {
        let runs = results.get(&(size, relay))?;
        let measured = &runs[runs.len().saturating_sub(SAMPLES)..];
        let msgs: u64 = measured.iter().map(|r| r.0).sum();
        let secs: f64 = measured.iter().map(|r| r.1.as_secs_f64()).sum();
        (secs > 0.0).then(|| (msgs as f64 / secs, msgs as f64 * size as f64 / secs / 1e6))
    };
    let cell = |v: Option<(f64, f64)>| match v {
        Some((m, b)) => format!("{m:>11.0} {b:>9.1}"),
        None => format!("{:>11} {:>9}", "-", "-"),
    };
    let ratio = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
        (Some(a), Some(b)) if b.0 > 0.0 => format!("{:>7.2}x", a.0 / b.0),
        _ => format!("{:>8}", "-"),
    };
    println!();
    println!(
        "end-to-end: {PAIRS} pairs a->b, closed loop, window {WINDOW}, 1 client thread, 1 relay thread"
    );
    println!(
        "{:<6} | {:^21} | {:^21} | {:^21} | {:^21} | {:>8} | {:>8} | {:>8}",
        "size",
        "ringrelay",
        "ringrelay+limits",
        "tokio-tungstenite",
        "tcp-forwarder",
        "lim/rr",
        "rr/tt",
        "rr/fwd"
    );
    println!(
        "{:<6} | {:>11} {:>9} | {:>11} {:>9} | {:>11} {:>9} | {:>11} {:>9} | {:>8} | {:>8} | {:>8}",
        "", "msgs/s", "MB/s", "msgs/s", "MB/s", "msgs/s", "MB/s", "msgs/s", "MB/s", "", "", ""
    );
    for (size, label, _) in SIZES {
        let rr = rate(size, Relay::Ringrelay);
        let lim = rate(size, Relay::RingrelayLimited);
        let tt = rate(size, Relay::Tungstenite);
        let fw = rate(size, Relay::Forwarder);
        println!(
            "{label:<6} | {} | {} | {} | {} | {} | {} | {}",
            cell(rr),
            cell(lim),
            cell(tt),
            cell(fw),
            ratio(lim, rr),
            ratio(rr, tt),
            ratio(rr, fw)
        );
    }
}
