//! Tunnel limits against the real server, each refused at its value and allowed below it,
//! with a relay session (two peers) flowing beside: `tunnel.max_tunnels` with
//! `tunnel.reserved_percent` kept for reconnects, `tunnel.max_tunnels_per_subject` and a
//! token's or API key's `tunnels` grant, `tunnel.max_connections_per_tunnel`,
//! `tunnel.idle_timeout`.
//!
//! Before: none of these existed; an authenticated client could hold every port of
//! `tunnel.ports` and open public connections without bound.

mod common;
use common::*;
use ringrelay::auth::{sign_parts, unix_now};
use ringrelay::config::JwtAlgorithm;
use serde_json::Value;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;
use tungstenite::Message;

const SECRET: &str = "tunnel-limits-secret-0123456789abcdef";

/// 40 ranges of 40 from 31000 (by pid), apart from tests/tunnel.rs's.
const PORTS: common::tunnel::TunnelPorts = common::tunnel::TunnelPorts {
    base: 31000,
    slots: 40,
};

fn server(driver: &str, env: &[(&str, &str)]) -> TestServer {
    PORTS.server(driver, env)
}

/// A JWT with `sub` and, when given, a `tunnels` claim.
fn token(sub: &str, tunnels: Option<u32>) -> String {
    let mut claims = serde_json::json!({"sid": "*", "sub": sub, "exp": unix_now() + 600});
    if let Some(n) = tunnels {
        claims["tunnels"] = n.into();
    }
    sign_parts(
        SECRET.as_bytes(),
        JwtAlgorithm::Hs256,
        br#"{"alg":"HS256","typ":"JWT"}"#,
        claims.to_string().as_bytes(),
    )
}

/// The first event of a control connection (`tunnel_open` or `error`), and the connection.
fn ask(srv: &TestServer, query: &str) -> (Ws, Value) {
    let mut ws = srv.connect(&format!("/v1/tunnel{query}"));
    let ev = recv_event(&mut ws);
    (ws, ev)
}

fn refused(srv: &TestServer, query: &str, code: &str, close: u16) {
    let (mut ws, ev) = ask(srv, query);
    assert_eq!(
        (ev["type"].as_str(), ev["code"].as_str()),
        (Some("error"), Some(code)),
        "{query}: {ev}"
    );
    assert_eq!(recv_close(&mut ws), Some(close), "{query}");
}

/// A relay session beside the tunnels: both peers still reach each other.
struct Pair(Ws, Ws);

impl Pair {
    fn new(srv: &TestServer, query: &str) -> Pair {
        let a = srv.connect(&format!("/v1/relay/beside?role=a{query}"));
        let b = srv.connect(&format!("/v1/relay/beside?role=b{query}"));
        Pair(a, b)
    }

    fn flows(&mut self, m: &str) {
        self.0.send(Message::text(m)).unwrap();
        assert_eq!(recv_text(&mut self.1), m);
        self.1.send(Message::text(m)).unwrap();
        assert_eq!(recv_text(&mut self.0), m);
    }
}

fn max_tunnels_keeps_its_reserve_for_reconnects(driver: &str) {
    let srv = server(
        driver,
        &[
            ("RINGRELAY_TUNNEL_MAX_TUNNELS", "5"),
            ("RINGRELAY_TUNNEL_RESERVED_PERCENT", "40"),
        ],
    );
    let mut pair = Pair::new(&srv, "");
    // 5 with 40% reserved: 3 new ones are allowed...
    let mut held: Vec<Ws> = (0..3)
        .map(|_| {
            let (ws, ev) = ask(&srv, "");
            assert_eq!(ev["type"], "tunnel_open", "{ev}");
            ws
        })
        .collect();
    // ...the 4th is refused (1013: try again later)...
    refused(&srv, "", "at_capacity", 1013);
    pair.flows("while refused");
    // ...while a reconnecting client (a resume key whose grace is over) takes the reserve.
    let stale = "?resume=00000000000000000000000000000000";
    for _ in 0..2 {
        let (ws, ev) = ask(&srv, stale);
        assert_eq!(ev["type"], "tunnel_open", "{ev}");
        held.push(ws);
    }
    refused(&srv, stale, "at_capacity", 1013);
    assert_eq!(counter(&srv, "tunnels_refused_capacity"), 2);
    // Three end (close 1000): two are held, below the new ones' share of 3; one fits again.
    for _ in 0..3 {
        close(&mut held.pop().unwrap(), 1000);
    }
    let v = stats_when(&srv, |v| v["totals"]["tunnels_closed"] == 3);
    assert_eq!(v["totals"]["tunnels_closed"], 3);
    let (_ws, ev) = ask(&srv, "");
    assert_eq!(ev["type"], "tunnel_open", "{ev}");
    pair.flows("after");
}

fn the_subject_quota_and_the_tunnels_claim(driver: &str) {
    let srv = server(
        driver,
        &[
            ("RINGRELAY_AUTH_JWT_SECRET", SECRET),
            ("RINGRELAY_TUNNEL_MAX_TUNNELS_PER_SUBJECT", "2"),
        ],
    );
    let alice = token("alice", None);
    let mut pair = Pair::new(&srv, &format!("&token={}", token("pair", None)));
    let q = |t: &str| format!("?token={t}");
    let _a1 = ask(&srv, &q(&alice));
    let (mut a2, ev) = ask(&srv, &q(&alice));
    assert_eq!(ev["type"], "tunnel_open", "{ev}");
    // At the quota: refused with 1008 (waiting will not help).
    refused(&srv, &q(&alice), "quota_exceeded", 1008);
    pair.flows("quota");
    // Another subject is not affected.
    let (_b1, ev) = ask(&srv, &q(&token("bob", None)));
    assert_eq!(ev["type"], "tunnel_open", "{ev}");
    // A trial token says 1: its claim overrides the key both ways.
    let trial = token("trial", Some(1));
    let (_t1, ev) = ask(&srv, &q(&trial));
    assert_eq!(ev["type"], "tunnel_open", "{ev}");
    refused(&srv, &q(&trial), "quota_exceeded", 1008);
    let big = token("big", Some(3));
    let _g: Vec<_> = (0..3)
        .map(|_| {
            let (ws, ev) = ask(&srv, &q(&big));
            assert_eq!(ev["type"], "tunnel_open", "{ev}");
            ws
        })
        .collect();
    refused(&srv, &q(&big), "quota_exceeded", 1008);
    // Alice ends one: she may open another.
    close(&mut a2, 1000);
    stats_when(&srv, |v| v["totals"]["tunnels_closed"] == 1);
    let (_a3, ev) = ask(&srv, &q(&alice));
    assert_eq!(ev["type"], "tunnel_open", "{ev}");
    assert_eq!(counter(&srv, "tunnels_refused_quota"), 3);
    pair.flows("after");
}

fn an_api_keys_tunnels_grant(driver: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args([
            "key",
            "new",
            "--sid",
            "*",
            "--tunnels",
            "1",
            "--name",
            "trial",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let (key, line) = (lines.next().unwrap(), lines.next().unwrap());
    let dir = common::dir::Dir::new("tunnel-keys", driver);
    let file = dir.write("keys", &format!("{line}\n"));
    let srv = server(
        driver,
        &[("RINGRELAY_AUTH_API_KEYS_FILE", file.to_str().unwrap())],
    );
    let (_k1, ev) = ask(&srv, &format!("?key={key}"));
    assert_eq!(ev["type"], "tunnel_open", "{ev}");
    refused(&srv, &format!("?key={key}"), "quota_exceeded", 1008);
}

fn max_connections_per_tunnel(driver: &str) {
    let srv = server(
        driver,
        &[("RINGRELAY_TUNNEL_MAX_CONNECTIONS_PER_TUNNEL", "2")],
    );
    let (mut ws, open) = ask(&srv, "");
    let addr = SocketAddr::from(([127, 0, 0, 1], open["port"].as_u64().unwrap() as u16));
    let c1 = TcpStream::connect(addr).unwrap();
    let _c2 = TcpStream::connect(addr).unwrap();
    for _ in 0..2 {
        assert_eq!(recv_event(&mut ws)["type"], "tunnel_connection");
    }
    // The third is closed at accept, unannounced.
    let mut c3 = TcpStream::connect(addr).unwrap();
    c3.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(c3.read(&mut b), Ok(0) | Err(_)));
    assert_eq!(counter(&srv, "tunnel_connections_refused"), 1);
    // One ends (its data connection never came; it is dropped by the client): room again.
    drop(c1);
    // The relay notices only when its accept timeout passes (10 s by default) or the data
    // connection comes; a short test waits for neither: open a new tunnel instead to show
    // the limit is per tunnel.
    let (mut ws2, open2) = ask(&srv, "");
    let addr2 = SocketAddr::from(([127, 0, 0, 1], open2["port"].as_u64().unwrap() as u16));
    let _d = TcpStream::connect(addr2).unwrap();
    assert_eq!(recv_event(&mut ws2)["type"], "tunnel_connection");
}

fn idle_connections_are_closed(driver: &str) {
    let srv = server(driver, &[("RINGRELAY_TUNNEL_IDLE_TIMEOUT", "1s")]);
    let (mut ws, open) = ask(&srv, "");
    let addr = SocketAddr::from(([127, 0, 0, 1], open["port"].as_u64().unwrap() as u16));
    let mut p = TcpStream::connect(addr).unwrap();
    p.set_read_timeout(Some(TIMEOUT)).unwrap();
    let id = recv_event(&mut ws)["id"].as_str().unwrap().to_string();
    let (status, _d) = {
        use std::io::Write;
        let mut d = TcpStream::connect(srv.addr).unwrap();
        write!(d, "GET /v1/tunnel/accept/{id} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ringrelay-tunnel\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        d.read_exact(&mut head).unwrap();
        (String::from_utf8_lossy(&head).to_string(), d)
    };
    assert!(status.contains("101"), "{status}");
    // No byte either way: closed after about a second (the coarse clock may add one).
    let started = std::time::Instant::now();
    let mut b = [0u8; 1];
    assert!(matches!(p.read(&mut b), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(5));
    let v = stats_when(&srv, |v| v["totals"]["tunnel_idle_timeouts"] == 1);
    assert_eq!(v["totals"]["tunnel_idle_timeouts"], 1);
}

both_drivers!(
    max_tunnels_keeps_its_reserve_for_reconnects,
    the_subject_quota_and_the_tunnels_claim,
    an_api_keys_tunnels_grant,
    max_connections_per_tunnel,
    idle_connections_are_closed,
);
