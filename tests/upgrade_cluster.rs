//! Binary upgrades (SIGUSR2) of a node in a cluster, and of a relay serving a bridge agent
//! (docs/upgrade.md, "Cluster mode" and "Bridge agents"), against the real binary, a real
//! redis-server and a second node, on both drivers. Node-a is upgraded three times while:
//! - 6 pairs on it stream numbered messages both ways: at the end every reader got every
//!   message of its peer once and in order, and no pair connection was closed;
//! - an agent on it answers a bridged request (raw HTTP) before and after each upgrade, on
//!   the same connection, with the key it was given at its upgrade, and hears the page that
//!   shares its session (also on node-a) before and after each;
//! - a session on it has its other peer on node-b, carried over the node-to-node link: that
//!   peer gets 1012 at the first upgrade (links do not cross), comes back through node-b,
//!   and reaches the peer that stayed on node-a, which crossed live;
//! - after each upgrade Redis still names node-a for its sessions, its fleet entry is there,
//!   and a new client on node-b reaches a session whose owner is node-a; and throughout,
//!   Redis never deleted or expired one of those keys (keyspace events): the old process
//!   leaves without `Member::stop`, and the new one renews before it says `holding`.
//!
//! Without redis-server the test says so and passes, unless RINGRELAY_REQUIRE_REDIS=1.
//!
//! Before: every connection of a node in a cluster, and every agent, was closed with 1012 at
//! the upgrade: the pairs' readers saw a close frame, and the agent's connection ended.

mod common;

use common::cluster::{fleet, wait_until, Redis, SECRET};
use common::process::{become_subreaper, Chain};
use common::*;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tungstenite::Message;

const PAIRS: usize = 6;
const UPGRADES: u64 = 3;

/// Node-a as a process of its own, followed through its upgrades.
type Node = Chain;

impl Node {
    /// Node-a of the fleet `prefix`.
    fn start(driver: &str, redis: &Redis, prefix: &str) -> Node {
        let mut cmd = Node::command(driver);
        cmd.env("RINGRELAY_CLUSTER_REDIS_URL", redis.url())
            .env("RINGRELAY_CLUSTER_NODE_ID", "node-a")
            .env("RINGRELAY_CLUSTER_REGION", "eu")
            .env("RINGRELAY_CLUSTER_HEARTBEAT", "200ms")
            .env("RINGRELAY_CLUSTER_NODE_TTL", "1500ms")
            .env("RINGRELAY_CLUSTER_SESSION_TTL", "5s")
            .env("RINGRELAY_CLUSTER_KEY_PREFIX", prefix)
            .env("RINGRELAY_CLUSTER_INTERNAL_LISTEN", "127.0.0.1:0")
            .env("RINGRELAY_CLUSTER_SECRET", SECRET);
        Chain::spawn(&mut cmd)
    }

    /// A relay on its own.
    fn single(driver: &str) -> Node {
        Chain::spawn(&mut Node::command(driver))
    }

    fn command(driver: &str) -> Command {
        become_subreaper();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen"])
            .args(["127.0.0.1:0", "--driver", driver, "--workers", "2"])
            .env("RUST_LOG", "info")
            .env("RINGRELAY_LIMITS_IP_CONNECT_RATE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }
}

/// A WebSocket to `addr`, with the upgrade answer's headers.
fn ws_with(addr: SocketAddr, path: &str) -> (Ws, tungstenite::handshake::client::Response) {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tungstenite::client::client(format!("ws://{addr}{path}"), s).expect("upgrade")
}

fn ws(addr: SocketAddr, path: &str) -> Ws {
    ws_with(addr, path).0
}

/// One side of a pair (as in tests/upgrade_live.rs): a writer sending `"{me} {n}"` every
/// 2 ms until `stop`, then `"{me} end {last}"`; a reader checking the other side's arrive
/// once each, in order, through its end. Verdicts go to `done`.
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

/// An agent on one connection: answers every bridged request `pong {n}` (n counting from 1)
/// after checking it carries the key of its upgrade answer. Each answer, or the reason it
/// stopped, goes to `said`.
fn agent(addr: SocketAddr, session: &str, said: mpsc::Sender<String>) {
    let (mut ws, resp) = ws_with(addr, &format!("/v1/relay/{session}?role=agent"));
    let key = resp.headers()["ringrelay-bridge-key"]
        .to_str()
        .unwrap()
        .to_string();
    std::thread::spawn(move || {
        let mut n = 0;
        loop {
            let text = match ws.read() {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(m) => {
                    let _ = said.send(format!("agent got {m:?}"));
                    return;
                }
                Err(e) => {
                    let _ = said.send(format!("agent's connection ended: {e}"));
                    return;
                }
            };
            if !text.starts_with('{') {
                // The session's other peer (the page) speaks too.
                let _ = said.send(format!("heard {text}"));
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["relay_key"] != key.as_str() {
                let _ = said.send(format!("a request without this agent's key: {v}"));
                return;
            }
            n += 1;
            use base64::Engine;
            let body = base64::engine::general_purpose::STANDARD.encode(format!("pong {n}"));
            let id = v["id"].as_str().unwrap();
            let answer = format!(
                r#"{{"type":"http_response","id":"{id}","status":200,"headers":[],"body_b64":"{body}"}}"#
            );
            if ws.send(Message::text(answer)).is_err() {
                let _ = said.send("agent could not answer".into());
                return;
            }
            let _ = said.send(format!("answered {n}"));
        }
    });
}

/// Sends `text` from `from` and reads it at `to`.
fn exchange(from: &mut Ws, to: &mut Ws, text: &str) {
    from.send(Message::text(text)).unwrap();
    assert_eq!(recv_text(to), text);
}

/// Records every key Redis deletes or expires from now until `stop` (keyspace events), so
/// that a key missing for a moment between two checks is seen too.
fn watch_deletions(
    redis: &Redis,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(String, String)>> {
    let _: () = redis.query(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("Egx"),
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let (ready_tx, ready) = mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let mut con = client.get_connection().unwrap();
        let mut sub = con.as_pubsub();
        sub.psubscribe("__keyevent@0__:*").unwrap();
        sub.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(m) = sub.get_message() {
                let key: String = m.get_payload().unwrap_or_default();
                seen.push((m.get_channel_name().to_string(), key));
            }
        }
        seen
    });
    ready.recv_timeout(TIMEOUT).unwrap();
    watcher
}

fn owner(redis: &Redis, prefix: &str, session: &str) -> String {
    let v: Option<String> =
        redis.query(redis::cmd("GET").arg(format!("{prefix}:session:{session}")));
    v.unwrap_or_default()
}

fn a_cluster_node_upgrades_without_dropping_pairs_agents_or_sessions(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let prefix = format!("upc{}{driver}", std::process::id());
    let mut a = Node::start(driver, &redis, &prefix);
    let b = cluster::node_of(driver, 2, &redis, &prefix, "node-b", "eu", &[]);
    wait_until(Duration::from_secs(10), "both nodes in the fleet", || {
        fleet(&redis.url(), &prefix).len() == 2
    });

    // A session owned by node-a (its first peer came there) whose other peer is on node-b.
    let mut here = ws(a.addr, "/v1/relay/carried?role=a");
    let mut there = ws(b.addr, "/v1/relay/carried?role=b");
    exchange(&mut here, &mut there, "over the link");
    exchange(&mut there, &mut here, "and back");
    assert_eq!(owner(&redis, &prefix, "carried"), "node-a");

    let (said_tx, said) = mpsc::channel();
    agent(a.addr, "bridged", said_tx);
    let a_addr = a.addr;
    let bridged = |n: u32| {
        let (status, head, body) = get(a_addr, "/v1/http/bridged/ping");
        assert_eq!(
            (status, body.as_str()),
            (200, &*format!("pong {n}")),
            "{head}"
        );
        assert_eq!(said.recv_timeout(TIMEOUT).unwrap(), format!("answered {n}"));
    };
    bridged(1);
    // The page beside the agent: what it sends may be a request, so its reader holds it
    // until it knows (relay::held); it crosses all the same.
    let mut page = ws(a.addr, "/v1/relay/bridged?role=page");
    let mut page_says = |n: u64| {
        page.send(Message::text(format!("page {n}"))).unwrap();
        assert_eq!(
            said.recv_timeout(TIMEOUT).unwrap(),
            format!("heard page {n}")
        );
    };
    page_says(0);

    let stop = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = watch_deletions(&redis, watching.clone());
    let (tx, rx) = mpsc::channel();
    for i in 0..PAIRS {
        let session = format!("live-{i}");
        let x = ws(a.addr, &format!("/v1/relay/{session}?role=a"));
        let y = ws(a.addr, &format!("/v1/relay/{session}?role=b"));
        side(
            x,
            format!("a{i}"),
            format!("b{i}"),
            stop.clone(),
            tx.clone(),
        );
        side(
            y,
            format!("b{i}"),
            format!("a{i}"),
            stop.clone(),
            tx.clone(),
        );
    }
    drop(tx);
    std::thread::sleep(Duration::from_millis(200));

    for generation in 1..=UPGRADES {
        let old = a.pid;
        assert_eq!(a.upgrade(), Some(0), "{driver}: old process {old}'s exit");
        assert_eq!(a.get_json("/health")["generation"], generation);
        if generation == 1 {
            // The carried peer's link ended with 1012; it comes back through node-b to the
            // new process, where its session's other peer crossed live.
            assert_eq!(recv_close(&mut there), Some(1012), "{driver}");
            there = ws(b.addr, "/v1/relay/carried?role=b");
            exchange(&mut here, &mut there, "after the upgrade");
            exchange(&mut there, &mut here, "and back again");
        }
        // Node-a still owns its sessions and is in the fleet, under the same id.
        let node_key: bool = redis.query(redis::cmd("EXISTS").arg(format!("{prefix}:node:node-a")));
        assert!(node_key, "{driver}: node-a's entry is gone");
        for s in ["live-0", "carried", "bridged"] {
            assert_eq!(owner(&redis, &prefix, s), "node-a", "{driver}: {s}");
        }
        // The agent answers on the connection it had, with the key it had.
        bridged(generation as u32 + 1);
        page_says(generation);
        // A client of node-b reaches a new session whose owner is node-a.
        let session = format!("fresh-{generation}");
        let mut x = ws(a.addr, &format!("/v1/relay/{session}?role=a"));
        let mut y = ws(b.addr, &format!("/v1/relay/{session}?role=b"));
        exchange(&mut y, &mut x, "to node-a");
        exchange(&mut x, &mut y, "to node-b");
        std::thread::sleep(Duration::from_millis(100));
    }
    let fleet_now = fleet(&redis.url(), &prefix);
    assert!(
        fleet_now.iter().any(|(id, _)| id == "node-a"),
        "{fleet_now:?}"
    );
    let totals = a.get_json("/stats")["totals"].clone();
    // (Stopped before the pairs: their sessions are released as they end.)
    watching.store(true, Ordering::Relaxed);
    // The old processes neither released node-a's sessions nor removed its entry on their
    // way out (`Member::stop`), and nothing lapsed: Redis never lost one of these keys.
    let mut kept: Vec<String> = (0..PAIRS).map(|i| format!("live-{i}")).collect();
    kept.extend(["carried".to_string(), "bridged".to_string()]);
    let mut kept: Vec<String> = kept
        .iter()
        .map(|s| format!("{prefix}:session:{s}"))
        .collect();
    kept.push(format!("{prefix}:node:node-a"));
    let lost: Vec<(String, String)> = watcher
        .join()
        .unwrap()
        .into_iter()
        // `expire` is a renewal (PEXPIRE); `del` and `expired` lose the key.
        .filter(|(event, key)| !event.ends_with(":expire") && kept.contains(key))
        .collect();
    assert!(lost.is_empty(), "{driver}: {lost:?}");
    stop.store(true, Ordering::Relaxed);
    let mut verdicts: Vec<String> = rx.iter().collect();
    verdicts.sort();
    verdicts.dedup();
    assert_eq!(verdicts, ["read", "wrote"], "{driver}");
    // The last upgrade adopted the pairs, the agent and the peer on node-a of "carried".
    let adopted = totals["handover_adopted"].as_u64().unwrap();
    assert!(adopted >= 2 * PAIRS as u64 + 2, "{driver}: {totals}");
    assert!(said.try_recv().is_err(), "{driver}: the agent said more");
}

/// The next bridged request an agent receives.
fn next_request(agent: &mut Ws) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&recv_text(agent)).unwrap();
    assert_eq!(v["type"], "http_request", "{v}");
    v
}

fn answer(id: &str, body: &str) -> Message {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    Message::text(format!(
        r#"{{"type":"http_response","id":"{id}","status":200,"headers":[],"body_b64":"{b64}"}}"#
    ))
}

/// A bridged request still waiting for its agent's answer when SIGUSR2 comes is answered 503
/// `server_upgrading` with `Retry-After: 1`; the agent's connection crosses, its late answer
/// to that request is dropped by the new process, and the next request reaches it there.
/// Before: the agent's connection was closed with 1012 (the last read fails).
fn a_request_waiting_through_an_upgrade_gets_503_and_the_agent_stays(driver: &str) {
    let mut relay = Node::single(driver);
    let (mut agent, resp) = ws_with(relay.addr, "/v1/relay/b503?role=agent");
    let key = resp.headers()["ringrelay-bridge-key"]
        .to_str()
        .unwrap()
        .to_string();
    let addr = relay.addr;
    let waiting = std::thread::spawn(move || get(addr, "/v1/http/b503/slow"));
    let first = next_request(&mut agent);
    assert_eq!(relay.upgrade(), Some(0), "{driver}");
    let (status, head, body) = waiting.join().unwrap();
    assert_eq!(status, 503, "{driver}: {head}\n{body}");
    assert!(head.contains("Retry-After: 1"), "{driver}: {head}");
    assert!(body.contains("server_upgrading"), "{driver}: {body}");
    agent
        .send(answer(first["id"].as_str().unwrap(), "late"))
        .unwrap();
    let next = std::thread::spawn(move || get(addr, "/v1/http/b503/again"));
    let second = next_request(&mut agent);
    assert_eq!(second["relay_key"], key.as_str(), "{driver}");
    assert_eq!(second["path"], "/again", "{driver}");
    agent
        .send(answer(second["id"].as_str().unwrap(), "fresh"))
        .unwrap();
    let (status, head, body) = next.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "fresh"), "{driver}: {head}");
}

both_drivers!(
    a_cluster_node_upgrades_without_dropping_pairs_agents_or_sessions,
    a_request_waiting_through_an_upgrade_gets_503_and_the_agent_stays,
);
