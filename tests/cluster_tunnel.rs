//! Tunnels across a fleet (docs/tunnels.md#fleet): two nodes on a real redis-server, each
//! node's tunnels in its registry entry, `GET /fleet` summing them, a node over its share
//! answering `moved` with the least loaded node, the client (`ringrelay tunnel expose`)
//! following it and coming back to the other node when its node is killed, and Redis down
//! leaving each node to serve tunnels on its own.
//!
//! Before: the registry entry had no tunnel in it, `/fleet` was 404, and a tunnel asked of
//! a node opened there whatever the rest of the fleet held.

mod common;
use common::cluster::{node_of, wait_until, Redis};
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// 50 ranges of 40 from 17000 (by pid), apart from the other tunnel tests' bands.
const PORTS: common::tunnel::TunnelPorts = common::tunnel::TunnelPorts {
    base: 17000,
    slots: 50,
};

/// A one-worker node with tunnels on, at most 10, margin 0 (any imbalance moves a tunnel);
/// node-a takes the first half of this process's ports, node-b the second, so a tunnel's
/// address says which node holds it.
fn node(driver: &str, redis: &Redis, prefix: &str, id: &str) -> TestServer {
    let first: u32 = PORTS.range().split('-').next().unwrap().parse().unwrap();
    let first = if id == "node-a" { first } else { first + 20 };
    let range = format!("{}-{}", first, first + 19);
    node_of(
        driver,
        1,
        redis,
        prefix,
        id,
        "eu",
        &[
            ("RINGRELAY_TUNNEL_ENABLED", "true"),
            ("RINGRELAY_TUNNEL_PORTS", range.as_str()),
            ("RINGRELAY_TUNNEL_MAX_TUNNELS", "10"),
            ("RINGRELAY_TUNNEL_RESERVED_PERCENT", "0"),
            ("RINGRELAY_TUNNEL_MAX_TUNNELS_PER_SUBJECT", "10"),
            ("RINGRELAY_TUNNEL_REDIRECT_MARGIN_PERCENT", "0"),
        ],
    )
}

fn fleet_of(srv: &TestServer) -> Value {
    let (status, _, body) = get(srv.admin, "/fleet");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `srv`'s /fleet shows these loads per node id (and nothing else), then
/// returns it.
fn fleet_when(srv: &TestServer, loads: &[(&str, u64)]) -> Value {
    let mut last = Value::Null;
    wait_until(Duration::from_secs(8), "the fleet's loads", || {
        last = fleet_of(srv);
        let servers = last["servers"].as_array().unwrap();
        servers.len() == loads.len()
            && loads.iter().all(|(id, load)| {
                servers
                    .iter()
                    .any(|s| s["node_id"] == *id && s["load"] == *load)
            })
    });
    last
}

/// A control connection and its first event.
fn control(srv: &TestServer, query: &str) -> (Ws, Value) {
    let mut ws = srv.connect(&format!("/v1/tunnel{query}"));
    let ev = recv_event(&mut ws);
    (ws, ev)
}

fn url_of(srv: &TestServer) -> String {
    format!("ws://{}", srv.addr)
}

/// One public connection through the tunnel `open` names, joined by hand on `srv`, and a
/// round of bytes each way: (public side, data side).
fn bytes_cross(srv: &TestServer, ws: &mut Ws, open: &Value) -> (TcpStream, TcpStream) {
    let port = open["port"].as_u64().unwrap() as u16;
    let mut public = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    public.set_read_timeout(Some(TIMEOUT)).unwrap();
    let ev = recv_event(ws);
    assert_eq!(ev["type"], "tunnel_connection", "{ev}");
    let mut data = TcpStream::connect(srv.addr).unwrap();
    data.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        data,
        "GET /v1/tunnel/accept/{} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ringrelay-tunnel\r\n\r\n",
        ev["id"].as_str().unwrap()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && data.read(&mut b).unwrap() == 1 {
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    public.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    data.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    data.write_all(b"pong").unwrap();
    public.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    (public, data)
}

/// A pair on `srv` beside the tunnels, with a first message across.
fn pair(srv: &TestServer, session: &str) -> (Ws, Ws) {
    let mut a = srv.connect(&format!("/v1/relay/{session}"));
    let mut b = srv.connect(&format!("/v1/relay/{session}"));
    flows(&mut a, &mut b);
    (a, b)
}

fn flows(a: &mut Ws, b: &mut Ws) {
    a.send(tungstenite::Message::text("hello")).unwrap();
    assert_eq!(recv_text(b), "hello");
}

fn tunnels_spread_and_the_fleet_sums_them(driver: &str) {
    let Some(mut redis) = Redis::start(None) else {
        return;
    };
    let prefix = format!("ct{}", std::process::id());
    let a = node(driver, &redis, &prefix, "node-a");
    let b = node(driver, &redis, &prefix, "node-b");
    fleet_when(&a, &[("node-a", 0), ("node-b", 0)]);

    // Level: the first tunnel stays where it was asked.
    let (_t1, open) = control(&a, "");
    assert_eq!(open["type"], "tunnel_open", "{open}");
    fleet_when(&a, &[("node-a", 1), ("node-b", 0)]);

    // A second on node-a would put it over the fleet: it names node-b, with close 1013.
    let (mut ws, ev) = control(&a, "");
    assert_eq!(
        (ev["type"].as_str(), ev["code"].as_str()),
        (Some("error"), Some("moved")),
        "{ev}"
    );
    assert_eq!(ev["node"], url_of(&b), "{ev}");
    assert_eq!(recv_close(&mut ws), Some(1013));
    assert_eq!(counter(&a, "tunnels_moved"), 1);

    // Followed there (`moved=1`), it opens, and bytes cross it.
    let (mut t2, open) = control(&b, "?moved=1");
    assert_eq!(open["type"], "tunnel_open", "{open}");
    let (mut public, mut data) = bytes_cross(&b, &mut t2, &open);
    let f = fleet_when(&a, &[("node-a", 1), ("node-b", 1)]);
    assert_eq!(f["server_count"], 2, "{f}");
    assert_eq!(f["total_capacity"], 20, "{f}");
    assert_eq!(f["total_load"], 2, "{f}");
    assert_eq!(f["utilization_percent"], 10.0, "{f}");
    assert_eq!(f["source"], "redis", "{f}");
    // Both nodes read the same fleet.
    fleet_when(&b, &[("node-a", 1), ("node-b", 1)]);
    // Bytes spliced on node-b show as its bandwidth within a heartbeat or two.
    wait_until(Duration::from_secs(5), "node-b's tunnel bandwidth", || {
        public.write_all(&[7; 1000]).unwrap();
        data.read_exact(&mut [0; 1000]).unwrap();
        fleet_of(&a)["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["node_id"] == "node-b" && s["bandwidth"].as_u64() > Some(0))
    });
    // `ringrelay cluster status` shows the same.
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args([
            "cluster",
            "status",
            "--redis",
            &redis.url(),
            "--prefix",
            &prefix,
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("tunnels 2/20 (10%)"), "{table}");

    // Level again: stays. Then node-a is over again and would send the next one on, but not
    // a client that already followed a `moved`: one hop at most.
    let (_t3, open) = control(&a, "");
    assert_eq!(open["type"], "tunnel_open", "{open}");
    fleet_when(&a, &[("node-a", 2), ("node-b", 1)]);
    let (_, ev) = control(&a, "");
    assert_eq!(ev["code"], "moved", "{ev}");
    let (_t4, open) = control(&a, "?moved=1");
    assert_eq!(open["type"], "tunnel_open", "{open}");
    assert_eq!(counter(&a, "tunnels_moved"), 2);

    // Redis down: node-a serves tunnels on its own, sends nobody anywhere, and counts it,
    // while a pair seated before keeps talking (a new session needs Redis: docs/cluster.md).
    let (mut p1, mut p2) = pair(&a, "beside-the-tunnels");
    redis.kill();
    wait_until(Duration::from_secs(8), "node-a to see Redis down", || {
        fleet_of(&a)["redis"] == "down"
    });
    let (_t5, open) = control(&a, "");
    assert_eq!(open["type"], "tunnel_open", "{open}");
    assert!(counter(&a, "tunnels_placed_alone") >= 1);
    assert_eq!(counter(&a, "tunnels_moved"), 2);
    flows(&mut p2, &mut p1);
}

/// An echo service for the tunnel client, on a thread; its address.
fn echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `ringrelay tunnel expose --json` and its stdout, line by line.
struct Expose {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Expose {
    fn start(relay: &str, local: SocketAddr, driver: &str) -> Expose {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
            .args(["tunnel", "expose", "--relay", relay, "--json"])
            .args(["--local", &local.to_string(), "--driver", driver])
            .args(["--backoff-initial", "100ms", "--backoff-max", "300ms"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Expose { child, lines }
    }

    /// The next public address printed.
    fn public(&self) -> SocketAddr {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(15))
            .expect("a public address");
        let v: Value = serde_json::from_str(&line).unwrap();
        v["public"].as_str().unwrap().parse().unwrap()
    }
}

impl Drop for Expose {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echoes(public: SocketAddr, what: &[u8]) {
    let mut s = TcpStream::connect(public).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(what).unwrap();
    let mut got = vec![0u8; what.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, what);
}

fn the_client_follows_moved_and_comes_back_when_its_node_dies(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let prefix = format!("cc{}", std::process::id());
    let a = node(driver, &redis, &prefix, "node-a");
    let b = node(driver, &redis, &prefix, "node-b");
    // node-a holds one tunnel already, so the client asking it is sent to node-b.
    let (_held, open) = control(&a, "");
    assert_eq!(open["type"], "tunnel_open", "{open}");
    fleet_when(&a, &[("node-a", 1), ("node-b", 0)]);

    let client = Expose::start(&url_of(&a), echo_service(), driver);
    let first = client.public();
    echoes(first, b"through node-b");
    fleet_when(&a, &[("node-a", 1), ("node-b", 1)]);
    assert_eq!(counter(&a, "tunnels_moved"), 1);

    let (mut p1, mut p2) = pair(&a, "beside-the-client");
    // node-b dies: the client cannot reach it and goes back to --relay, node-a, which opens
    // the tunnel there (node-b's entry, until it lapses, is no less loaded).
    drop(b);
    let second = client.public();
    echoes(second, b"through node-a");
    let f = fleet_when(&a, &[("node-a", 2)]);
    assert_eq!(
        (f["server_count"].as_u64(), f["total_load"].as_u64()),
        (Some(1), Some(2))
    );
    flows(&mut p1, &mut p2);
}

/// Before: the registry entry's `max_tunnels` stayed the start value until a restart, so
/// `/fleet`, `cluster status` and the placement of new tunnels went on counting a capacity the
/// node no longer held to after a reload (SIGHUP). Now each heartbeat takes it from the
/// workers' config in force.
fn the_registry_entry_follows_a_reload(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let prefix = format!("cr{}", std::process::id());
    let dir = common::dir::Dir::new("cluster_tunnel", &format!("reload-{driver}"));
    let file = dir.write("ringrelay.toml", "[tunnel]\nmax_tunnels = 10\n");
    let range = PORTS.range();
    let a = node_of(
        driver,
        1,
        &redis,
        &prefix,
        "node-a",
        "eu",
        &[
            ("RINGRELAY_CONFIG", file.to_str().unwrap()),
            ("RINGRELAY_TUNNEL_ENABLED", "true"),
            ("RINGRELAY_TUNNEL_PORTS", range.as_str()),
        ],
    );
    let capacity = |srv: &TestServer| {
        let f = fleet_of(srv);
        (
            f["total_capacity"].clone(),
            f["servers"][0]["capacity"].clone(),
        )
    };
    wait_until(Duration::from_secs(8), "the start capacity", || {
        capacity(&a) == (10.into(), 10.into())
    });
    dir.write("ringrelay.toml", "[tunnel]\nmax_tunnels = 30\n");
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(a.pid() as i32, libc::SIGHUP) };
    stats_when(&a, |v| v["reload"]["reloads_ok"] == 1);
    wait_until(Duration::from_secs(8), "the reloaded capacity", || {
        capacity(&a) == (30.into(), 30.into())
    });
    drop(a);
    drop(redis);
}

/// Before: a node without a cluster showed tunnel bandwidth 0 in `/fleet` whatever went
/// through (only the cluster's heartbeat measured it). Now each worker's tick samples it.
fn a_single_node_is_a_fleet_of_one(driver: &str) {
    let srv = PORTS.server(driver, &[("RINGRELAY_TUNNEL_MAX_TUNNELS", "7")]);
    let (mut t, open) = control(&srv, "");
    assert_eq!(open["type"], "tunnel_open", "{open}");
    let (mut public, mut data) = bytes_cross(&srv, &mut t, &open);
    let chunk = vec![7u8; 64 << 10];
    let mut back = vec![0u8; chunk.len()];
    for _ in 0..16 {
        public.write_all(&chunk).unwrap();
        data.read_exact(&mut back).unwrap();
    }
    let mut seen = Value::Null;
    wait_until(Duration::from_secs(4), "bandwidth in /fleet", || {
        seen = fleet_of(&srv);
        seen["total_bandwidth"].as_u64().unwrap_or(0) > 0
            && seen["servers"][0]["bandwidth"] == seen["total_bandwidth"]
    });
    let f = fleet_of(&srv);
    assert_eq!(f["source"], "local", "{f}");
    assert_eq!(f["server_count"], 1, "{f}");
    assert_eq!(f["total_capacity"], 7, "{f}");
    assert_eq!(f["total_load"], 1, "{f}");
    assert_eq!(f["utilization_percent"], 14.3, "{f}");
    assert_eq!(f["servers"][0]["public_url"], url_of(&srv), "{f}");
    // The admin listener's alone: the public one answers 404.
    let (status, _, _) = get(srv.addr, "/fleet");
    assert_eq!(status, 404);
}

both_drivers!(
    a_single_node_is_a_fleet_of_one,
    the_registry_entry_follows_a_reload,
    tunnels_spread_and_the_fleet_sums_them,
    the_client_follows_moved_and_comes_back_when_its_node_dies,
);
