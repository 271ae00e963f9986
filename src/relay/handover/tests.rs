//! `export` on one worker, `adopt` on another and `settle`, within one process: two cores on
//! one thread standing for the old process's worker and the new one's, the descriptors
//! duplicated as SCM_RIGHTS would. Two clients (tungstenite, blocking, on threads of their
//! own) stream both ways throughout. The integration test over two real processes is
//! tests/upgrade_live.rs.

use super::*;
use crate::config::Config;
use crate::context::Shared;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

/// Messages each client sends (and each reads back from the other).
const COUNT: u64 = 3000;

fn shared() -> Arc<Shared> {
    let config = Arc::new(Config::default());
    Arc::new(Shared {
        cluster: None,
        config,
        started: Instant::now(),
        driver: "test",
        gauges: vec![Default::default()],
        handoff: Vec::new(),
        ip_release: Vec::new(),
        scrape: Vec::new(),
        start_auth: None,
        reloads: Default::default(),
        upgrades: Default::default(),
        cluster_requests: None,
        cluster_secret: None,
        cluster_tls: None,
        tls: None,
        admin_tls: None,
        tunnels: Default::default(),
        listen: "127.0.0.1:0".parse().unwrap(),
    })
}

/// A client of one role: a writer thread sending `COUNT` numbered messages (paced, so the
/// handover lands mid-stream) and a reader thread checking the other's arrive all, in order,
/// once, with no close. Each sends its verdict on `done`.
fn client(sock: TcpStream, me: &'static str, other: &'static str, done: mpsc::Sender<String>) {
    let w = sock.try_clone().unwrap();
    let d = done.clone();
    std::thread::spawn(move || {
        let mut ws = WebSocket::from_raw_socket(w, Role::Client, None);
        for i in 1..=COUNT {
            if let Err(e) = ws.send(Message::text(format!("{me} {i}"))) {
                let _ = d.send(format!("{me} writer: {e} at {i}"));
                return;
            }
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = d.send(format!("{me} wrote"));
    });
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut ws = WebSocket::from_raw_socket(sock, Role::Client, None);
        let mut next = 1;
        while next <= COUNT {
            match ws.read() {
                Ok(Message::Text(t)) if t.as_str() == format!("{other} {next}") => next += 1,
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(m) => {
                    let _ = done.send(format!("{me} reader: expected {other} {next}, got {m:?}"));
                    return;
                }
                Err(e) => {
                    let _ = done.send(format!("{me} reader: {e} waiting for {next}"));
                    return;
                }
            }
        }
        let _ = done.send(format!("{me} read all"));
    });
}

/// Seats the server side of `sock` in `session` on `core` as the relay's join would, and
/// starts its task.
fn seat_on(core: &Rc<Core>, session: &Rc<Session>, slot: usize, role: &str, sock: TcpStream) {
    sock.set_nonblocking(true).unwrap();
    let ip = sock.peer_addr().unwrap().ip();
    let stream = monoio::net::TcpStream::from_std(sock).unwrap();
    let now = core.clock.tick();
    let peer = Rc::new(Peer::new(
        core.next_conn_id(),
        role.into(),
        None,
        Socket::new(stream),
        IpCharge::uncounted(ip),
        now,
        core.config(),
    ));
    session.seat(slot, peer.clone());
    core.registry.add_peer(peer.clone());
    monoio::spawn(crate::relay::conn::run(
        core.clone(),
        peer,
        Some(session.clone()),
        Vec::new(),
    ));
}

/// The share as the new process receives it: a duplicate of each descriptor, as SCM_RIGHTS
/// makes.
fn as_sent(export: &Export) -> Handed {
    Handed {
        bytes: export.bytes.clone(),
        fds: export
            .fds
            .iter()
            .map(|l| l.borrow().try_clone_to_owned().unwrap())
            .collect(),
    }
}

/// Two clients streaming both ways through `old`; returns the verdicts' channel.
fn pair_on(old: &Rc<Core>) -> mpsc::Receiver<String> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let a = TcpStream::connect(addr).unwrap();
    let (sa, _) = listener.accept().unwrap();
    let b = TcpStream::connect(addr).unwrap();
    let (sb, _) = listener.accept().unwrap();
    let session = old.registry.session("room", old.clock.tick());
    seat_on(old, &session, 0, "a", sa);
    seat_on(old, &session, 1, "b", sb);
    let (tx, rx) = mpsc::channel();
    client(a, "a", "b", tx.clone());
    client(b, "b", "a", tx);
    rx
}

/// Waits (without blocking the runtime) for the four verdicts.
async fn verdicts(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < 4 && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(v) => out.push(v),
            Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    out.sort();
    out
}

fn all_well() -> Vec<String> {
    vec!["a read all", "a wrote", "b read all", "b wrote"]
        .into_iter()
        .map(String::from)
        .collect()
}

#[monoio::test_all(timer_enabled = true)]
async fn a_pair_streaming_both_ways_crosses_to_another_worker_losing_nothing() {
    let shared = shared();
    let old = Rc::new(Core::new(0, shared.clone()));
    let new = Rc::new(Core::new(0, shared));
    let rx = pair_on(&old);
    monoio::time::sleep(Duration::from_millis(30)).await;
    let export = export(&old).await;
    assert_eq!(export.fds.len(), 2, "both connections cross");
    let adopted = adopt(&new, as_sent(&export)).unwrap();
    assert_eq!(adopted, 2);
    // Seated in the new worker's session as they were.
    assert_eq!(new.registry.get("room").unwrap().peers().len(), 2);
    settle(&old, Outcome::Released).await;
    assert_eq!(old.registry.peer_count(), 0);
    assert_eq!(verdicts(&rx).await, all_well());
    assert_eq!(new.stats.handover_adopted.get(), 2);
    // Mid-stream: each worker forwarded part of it.
    assert!(old.stats.messages_received.get() > 0);
    assert!(new.stats.messages_received.get() > 0);
    assert_eq!(
        old.stats.messages_received.get() + new.stats.messages_received.get(),
        2 * COUNT
    );
    assert_eq!(old.stats.handover_closed.get(), 0);
}

#[monoio::test_all(timer_enabled = true)]
async fn a_failed_upgrade_resumes_the_parked_pair_where_it_stopped() {
    let shared = shared();
    let old = Rc::new(Core::new(0, shared));
    let rx = pair_on(&old);
    monoio::time::sleep(Duration::from_millis(30)).await;
    let export = export(&old).await;
    assert_eq!(export.fds.len(), 2);
    // Parked: the old worker reads nothing while the outcome is awaited.
    monoio::time::sleep(Duration::from_millis(50)).await;
    drop(export);
    settle(&old, Outcome::Resumed).await;
    assert_eq!(verdicts(&rx).await, all_well());
}

#[test]
fn a_share_that_does_not_decode_adopts_nothing() {
    let shared = shared();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let core = Rc::new(Core::new(0, shared));
    let export = Handed {
        bytes: b"not a share".to_vec(),
        fds: vec![OwnedFd::from(a)],
    };
    assert!(matches!(
        adopt(&core, export),
        Err(HandoverError::Format(_))
    ));
    assert_eq!(core.registry.peer_count(), 0);
}
