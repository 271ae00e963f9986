//! Runs the server in process through its library entry (`server::run`): listeners the test
//! binds itself, a shutdown signal it fires. On both I/O drivers, with tungstenite clients.

mod common;
use common::*;
use ringrelay::config::{Config, DriverChoice};
use ringrelay::server::{self, Listeners, Shutdown};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;
use tungstenite::Message;

/// How long the server may take to return once told to stop: far above its real time (the
/// clients answer the close at once), far below `shutdown_grace`'s 10 s default.
const RETURN_WITHIN: Duration = Duration::from_secs(8);

fn driver_choice(driver: &str) -> DriverChoice {
    match driver {
        "io_uring" => DriverChoice::IoUring,
        "epoll" => DriverChoice::Epoll,
        other => panic!("unknown driver {other}"),
    }
}

/// One SO_REUSEPORT group of `n` sockets on a port the kernel picks, as a caller with more
/// than one worker binds it.
fn reuseport_group(n: usize) -> Vec<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let bind = |addr: SocketAddr| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.listen(128).unwrap();
        TcpListener::from(s)
    };
    let first = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
    let addr = first.local_addr().unwrap();
    let mut group = vec![first];
    group.extend((1..n).map(|_| bind(addr)));
    group
}

/// A server run in process on `workers` workers: the addresses, its trigger, and where its
/// return value arrives.
struct InProcess {
    public: SocketAddr,
    admin: SocketAddr,
    shutdown: Option<Shutdown>,
    returned: mpsc::Receiver<Result<(), String>>,
}

fn run_in_process(driver: &str, workers: usize) -> InProcess {
    let public = reuseport_group(workers);
    // A plain std listener, blocking as std leaves it: the entry makes it non-blocking.
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (public_addr, admin_addr) = (public[0].local_addr().unwrap(), admin.local_addr().unwrap());
    let config = Config {
        listen: public_addr,
        admin_listen: admin_addr,
        workers,
        driver: driver_choice(driver),
        ..Config::default()
    };
    let listeners = Listeners {
        public,
        admin,
        internal: Vec::new(),
        tls: Vec::new(),
    };
    let (shutdown, signal) = Shutdown::new();
    let (tx, returned) = mpsc::channel();
    std::thread::spawn(move || {
        let r = server::run(config, listeners, signal).map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    InProcess {
        public: public_addr,
        admin: admin_addr,
        shutdown: Some(shutdown),
        returned,
    }
}

/// The listeners are bound before `run` starts, so clients may connect at once: the kernel
/// queues them until a worker accepts. A pair relays both ways, the admin listener answers,
/// then the signal closes both clients with 1001 and `run` returns `Ok`.
fn relays_then_stops_on_signal(driver: &str) {
    let mut srv = run_in_process(driver, 2);
    let mut a = connect(&format!("ws://{}/v1/relay/entry", srv.public));
    let mut b = connect(&format!("ws://{}/v1/relay/entry", srv.public));
    for i in 0..50 {
        a.send(Message::text(format!("a{i}"))).unwrap();
        b.send(Message::binary(vec![i as u8; i + 1])).unwrap();
    }
    for i in 0..50 {
        assert_eq!(recv_text(&mut b), format!("a{i}"));
        assert_eq!(recv(&mut a), Message::binary(vec![i as u8; i + 1]));
    }
    let (status, _, body) = get(srv.admin, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(
        srv.returned.try_recv().is_err(),
        "run returned before its signal"
    );
    let (ta, tb) = (
        std::thread::spawn(move || recv_close(&mut a)),
        std::thread::spawn(move || recv_close(&mut b)),
    );
    srv.shutdown.take().unwrap().trigger();
    assert_eq!(ta.join().unwrap(), Some(1001));
    assert_eq!(tb.join().unwrap(), Some(1001));
    let r = srv.returned.recv_timeout(RETURN_WITHIN);
    assert_eq!(r, Ok(Ok(())), "run did not return after its signal");
}

/// A caller that goes away without triggering (a test that panicked, say) does not leave the
/// server running: dropping the last `Shutdown` fires the signal too.
fn stops_when_every_trigger_is_dropped(driver: &str) {
    let mut srv = run_in_process(driver, 1);
    let mut a = connect(&format!("ws://{}/v1/relay/dropped", srv.public));
    let t = std::thread::spawn(move || recv_close(&mut a));
    drop(srv.shutdown.take());
    assert_eq!(t.join().unwrap(), Some(1001));
    let r = srv.returned.recv_timeout(RETURN_WITHIN);
    assert_eq!(r, Ok(Ok(())));
}

/// Listeners that do not give each worker its own public socket are refused with an error
/// naming the mismatch, before anything runs.
fn refuses_a_listener_count_unlike_the_workers(driver: &str) {
    let config = Config {
        workers: 2,
        driver: driver_choice(driver),
        ..Config::default()
    };
    let listeners = Listeners {
        public: reuseport_group(1),
        admin: TcpListener::bind("127.0.0.1:0").unwrap(),
        internal: Vec::new(),
        tls: Vec::new(),
    };
    let (_shutdown, signal) = Shutdown::new();
    let err = server::run(config, listeners, signal)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 public listener(s) for 2 worker(s)"),
        "{err}"
    );
}

both_drivers!(
    relays_then_stops_on_signal,
    stops_when_every_trigger_is_dropped,
    refuses_a_listener_count_unlike_the_workers,
);
