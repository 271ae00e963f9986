//! TCP tunnels against the real server (docs/tunnels.md): a tungstenite control connection,
//! std `TcpStream`s for the data connections and for the public clients. Bytes both ways,
//! half-closes both ways, ids that live on the other worker (the handoff), the routes off by
//! default, unknown ids, a data connection that never comes.
//!
//! Before: `/v1/tunnel` and `/v1/tunnel/accept/{id}` did not exist (404 `not_found`).

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// 250 ranges of 40 from 21000, apart from other processes' (by pid).
const PORTS: common::tunnel::TunnelPorts = common::tunnel::TunnelPorts {
    base: 21000,
    slots: 250,
};

fn server(driver: &str, env: &[(&str, &str)]) -> TestServer {
    PORTS.server(driver, env)
}

/// A control connection and its `tunnel_open`.
fn control(srv: &TestServer, query: &str) -> (Ws, Value) {
    let mut ws = srv.connect(&format!("/v1/tunnel{query}"));
    let open = recv_event(&mut ws);
    (ws, open)
}

fn public(open: &Value) -> TcpStream {
    let port = open["port"].as_u64().unwrap() as u16;
    let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// The data connection for `id`, past its 101.
fn data(srv: &TestServer, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET /v1/tunnel/accept/{id} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ringrelay-tunnel\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("upgrade: ringrelay-tunnel"),
        "{head}"
    );
    s
}

/// Reads a response head byte by byte, so nothing after it is taken.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    s.read_exact(&mut out).unwrap();
    out
}

fn at_eof(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
}

/// One public connection joined: (public side, data side, the event).
fn joined(srv: &TestServer, ws: &mut Ws, open: &Value) -> (TcpStream, TcpStream, Value) {
    let p = public(open);
    let ev = recv_event(ws);
    assert_eq!(ev["type"], "tunnel_connection", "{ev}");
    let id = ev["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{ev}");
    assert_eq!(
        ev["peer"].as_str().unwrap(),
        p.local_addr().unwrap().to_string()
    );
    let d = data(srv, &id);
    (p, d, ev)
}

fn bytes_flow_both_ways_with_half_closes(driver: &str) {
    let srv = server(driver, &[]);
    let (mut ws, open) = control(&srv, "");
    assert_eq!(open["type"], "tunnel_open", "{open}");
    let port = open["port"].as_u64().unwrap();
    assert_eq!(open["public"], format!("127.0.0.1:{port}"), "{open}");
    assert_eq!(open["resume"].as_str().unwrap().len(), 32, "{open}");
    assert_eq!(open["grace_ms"], 30000, "{open}");
    // Several connections, so ids land on both workers (the data connection is handed to
    // the one holding its public connection).
    for i in 0..6u8 {
        let (mut p, mut d, _) = joined(&srv, &mut ws, &open);
        p.write_all(&[b'p', i]).unwrap();
        assert_eq!(read_n(&mut d, 2), [b'p', i]);
        d.write_all(b"from the service").unwrap();
        assert_eq!(read_n(&mut p, 16), b"from the service");
        // The public client's FIN reaches the service; the service still answers after it.
        p.shutdown(Shutdown::Write).unwrap();
        assert!(at_eof(&mut d));
        d.write_all(b"after your fin").unwrap();
        assert_eq!(read_n(&mut p, 14), b"after your fin");
        d.shutdown(Shutdown::Write).unwrap();
        assert!(at_eof(&mut p));
    }
    // And the other way round: the service ends first, the client keeps sending.
    let (mut p, mut d, _) = joined(&srv, &mut ws, &open);
    d.shutdown(Shutdown::Write).unwrap();
    assert!(at_eof(&mut p));
    p.write_all(b"still here").unwrap();
    assert_eq!(read_n(&mut d, 10), b"still here");
    p.shutdown(Shutdown::Write).unwrap();
    assert!(at_eof(&mut d));
    let v = stats_when(&srv, |v| v["totals"]["tunnel_connections_joined"] == 7);
    assert_eq!(v["totals"]["tunnel_connections_joined"], 7, "{v}");
    assert_eq!(v["totals"]["tunnels_opened"], 1);
}

fn megabytes_cross_both_ways_at_once(driver: &str) {
    let srv = server(driver, &[]);
    let (mut ws, open) = control(&srv, "");
    let (mut p, mut d, _) = joined(&srv, &mut ws, &open);
    let n = 4 << 20;
    let up: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let down: Vec<u8> = (0..n).map(|i| (i * 13 % 241) as u8).collect();
    let (mut p2, mut d2) = (p.try_clone().unwrap(), d.try_clone().unwrap());
    let (up2, down2) = (up.clone(), down.clone());
    let w1 = std::thread::spawn(move || {
        p2.write_all(&up2).unwrap();
        p2.shutdown(Shutdown::Write).unwrap();
    });
    let w2 = std::thread::spawn(move || {
        d2.write_all(&down2).unwrap();
        d2.shutdown(Shutdown::Write).unwrap();
    });
    let mut got_up = Vec::new();
    let r1 = std::thread::spawn(move || {
        d.read_to_end(&mut got_up).unwrap();
        got_up
    });
    let mut got_down = Vec::new();
    p.read_to_end(&mut got_down).unwrap();
    assert!(got_down == down, "public side got {} bytes", got_down.len());
    assert!(r1.join().unwrap() == up);
    w1.join().unwrap();
    w2.join().unwrap();
    let v = stats(&srv);
    assert_eq!(v["totals"]["tunnel_bytes_in"], n as u64, "{v}");
    assert_eq!(v["totals"]["tunnel_bytes_out"], n as u64, "{v}");
}

fn bytes_sent_with_the_data_request_come_first(driver: &str) {
    let srv = server(driver, &[]);
    let (mut ws, open) = control(&srv, "");
    let mut p = public(&open);
    let id = recv_event(&mut ws)["id"].as_str().unwrap().to_string();
    let mut d = TcpStream::connect(srv.addr).unwrap();
    d.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        d,
        "GET /v1/tunnel/accept/{id} HTTP/1.1\r\nHost: x\r\nconnection: upgrade\r\nupgrade: RINGRELAY-TUNNEL\r\n\r\nearly bytes"
    )
    .unwrap();
    assert!(read_head(&mut d).starts_with("HTTP/1.1 101 "));
    assert_eq!(read_n(&mut p, 11), b"early bytes");
}

fn off_by_default_and_unknown_ids_are_404(driver: &str) {
    // Before: and still, with tunnel.enabled unset, both routes are no route at all.
    let off = TestServer::start(driver, 1, &[]);
    let (status, _, body) = get(off.addr, "/v1/tunnel");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not_found"), "{body}");
    drop(off);
    let srv = server(driver, &[]);
    let req = |id: &str| {
        format!("GET /v1/tunnel/accept/{id} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ringrelay-tunnel\r\n\r\n")
    };
    for id in ["0123456789abcdef0123456789abcdef", "nope"] {
        let (status, _, body) = http(srv.addr, &req(id));
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("tunnel_connection_unknown"), "{body}");
    }
    // An id is good once: the second data connection for it is unknown.
    let (mut ws, open) = control(&srv, "");
    let (_p, _d, ev) = joined(&srv, &mut ws, &open);
    let (status, _, body) = http(srv.addr, &req(ev["id"].as_str().unwrap()));
    assert_eq!(
        (status, body.contains("tunnel_connection_unknown")),
        (404, true),
        "{body}"
    );
    assert_eq!(counter(&srv, "tunnel_unknown_refused"), 3);
}

fn a_data_connection_that_never_comes_is_timed_out(driver: &str) {
    let srv = server(driver, &[("RINGRELAY_TUNNEL_ACCEPT_TIMEOUT", "300ms")]);
    let (mut ws, open) = control(&srv, "");
    let mut p = public(&open);
    let ev = recv_event(&mut ws);
    // Before: nothing bounded the wait. Now the public connection is closed after 300 ms.
    let v = stats_when(&srv, |v| v["totals"]["tunnel_accept_timeouts"] == 1);
    assert_eq!(v["totals"]["tunnel_accept_timeouts"], 1, "{v}");
    let mut b = [0u8; 1];
    assert!(matches!(p.read(&mut b), Ok(0) | Err(_)));
    // Its id is gone with it.
    let id = ev["id"].as_str().unwrap();
    let (status, _, _) = http(
        srv.addr,
        &format!("GET /v1/tunnel/accept/{id} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ringrelay-tunnel\r\n\r\n"),
    );
    assert_eq!(status, 404);
}

fn a_bad_port_is_refused_with_an_error_event(driver: &str) {
    let srv = server(driver, &[]);
    let mut ws = srv.connect("/v1/tunnel?port=80");
    let ev = recv_event(&mut ws);
    assert_eq!(
        (ev["type"].as_str(), ev["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{ev}"
    );
    assert_eq!(recv_close(&mut ws), Some(1008));
    assert_eq!(counter(&srv, "tunnels_refused_bad_request"), 1);
    // A port asked for and free is given; asked again while held, port_unavailable (1013).
    let (_ws1, open) = control(&srv, "");
    let port = open["port"].as_u64().unwrap();
    let mut ws2 = srv.connect(&format!("/v1/tunnel?port={port}"));
    let ev = recv_event(&mut ws2);
    assert_eq!(ev["code"], "port_unavailable", "{ev}");
    assert_eq!(recv_close(&mut ws2), Some(1013));
}

fn close_1000_releases_the_port(driver: &str) {
    let srv = server(driver, &[]);
    let (mut ws, open) = control(&srv, "");
    let port = open["port"].as_u64().unwrap();
    close(&mut ws, 1000);
    let v = stats_when(&srv, |v| v["totals"]["tunnels_closed"] == 1);
    assert_eq!(v["totals"]["tunnels_closed"], 1, "{v}");
    // Free again: the next tunnel may ask for it.
    std::thread::sleep(Duration::from_millis(50));
    let (_ws, again) = control(&srv, &format!("?port={port}"));
    assert_eq!(again["port"], port, "{again}");
}

/// Before: a control connection that dropped took its tunnel with it. Now the port and the
/// joined connections stay for `tunnel.reconnect_grace`; `?resume=KEY` takes them back.
fn a_dropped_control_connection_resumes_its_port(driver: &str) {
    let srv = server(driver, &[]);
    let (mut ws, open) = control(&srv, "");
    let (mut p, mut d, _) = joined(&srv, &mut ws, &open);
    let key = open["resume"].as_str().unwrap().to_string();
    // Dropped without a close frame: the tunnel enters its grace.
    drop(ws);
    std::thread::sleep(Duration::from_millis(100));
    // The joined connection keeps flowing while the control connection is away.
    p.write_all(b"during the grace").unwrap();
    assert_eq!(read_n(&mut d, 16), b"during the grace");
    d.write_all(b"ok").unwrap();
    assert_eq!(read_n(&mut p, 2), b"ok");
    // A public connection now has nobody to be announced to: closed at accept.
    let mut lost = public(&open);
    let mut b = [0u8; 1];
    assert!(matches!(lost.read(&mut b), Ok(0) | Err(_)));
    // The same client resumes: same port, same key, and new connections are announced.
    let (mut ws, again) = control(&srv, &format!("?resume={key}"));
    assert_eq!(again["type"], "tunnel_open", "{again}");
    assert_eq!(
        (&again["port"], &again["resume"]),
        (&open["port"], &open["resume"])
    );
    let (mut p2, mut d2, _) = joined(&srv, &mut ws, &again);
    p2.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut d2, 1), b"x");
    p.write_all(b"still").unwrap();
    assert_eq!(read_n(&mut d, 5), b"still");
    let v = stats(&srv);
    assert_eq!(v["totals"]["tunnels_resumed"], 1, "{v}");
    assert_eq!(v["totals"]["tunnels_opened"], 1, "{v}");
}

/// Before: a resume that came while the relay still held the old control connection (it had
/// not yet seen it drop: a client whose network changed reconnects within a ping interval)
/// found no tunnel in its grace and got a new tunnel on another port. Now it takes the tunnel
/// over: the same port and key, the old control connection closed with 4001, a joined
/// connection flowing throughout, new public connections announced to the new one only.
fn a_resume_takes_over_a_control_connection_not_yet_seen_to_drop(driver: &str) {
    let srv = server(driver, &[]);
    let (mut old, open) = control(&srv, "");
    let (mut p, mut d, _) = joined(&srv, &mut old, &open);
    let key = open["resume"].as_str().unwrap();
    let (mut ws, again) = control(&srv, &format!("?resume={key}"));
    assert_eq!(again["type"], "tunnel_open", "{again}");
    assert_eq!(
        (&again["port"], &again["resume"]),
        (&open["port"], &open["resume"])
    );
    assert_eq!(recv_close(&mut old), Some(4001));
    p.write_all(b"flowing").unwrap();
    assert_eq!(read_n(&mut d, 7), b"flowing");
    // The old connection's end neither ended the tunnel nor started its grace: the new
    // control connection gets the next public connection.
    std::thread::sleep(Duration::from_millis(100));
    let (mut p2, mut d2, _) = joined(&srv, &mut ws, &again);
    d2.write_all(b"new").unwrap();
    assert_eq!(read_n(&mut p2, 3), b"new");
    let v = stats(&srv);
    let t = &v["totals"];
    assert_eq!(
        (
            &t["tunnels_opened"],
            &t["tunnels_resumed"],
            &t["tunnels_taken_over"],
            &t["tunnels_closed"],
            &t["tunnels"]
        ),
        (&1.into(), &1.into(), &1.into(), &0.into(), &1.into()),
        "{t}"
    );
    // The tunnel is the new connection's to end: close 1000 releases the port.
    close(&mut ws, 1000);
    let v = stats_when(&srv, |v| v["totals"]["tunnels_closed"] == 1);
    assert_eq!(v["totals"]["tunnels"], 0, "{v}");
}

fn the_grace_ends_and_the_port_is_released(driver: &str) {
    let srv = server(driver, &[("RINGRELAY_TUNNEL_RECONNECT_GRACE", "300ms")]);
    let (ws, open) = control(&srv, "");
    assert_eq!(open["grace_ms"], 300, "{open}");
    drop(ws);
    let v = stats_when(&srv, |v| v["totals"]["tunnels_closed"] == 1);
    assert_eq!(v["totals"]["tunnels_closed"], 1, "{v}");
    // Its key is stale now: a resume gets a new tunnel (the port is free again).
    let key = open["resume"].as_str().unwrap();
    let (_ws, again) = control(&srv, &format!("?resume={key}&port={}", open["port"]));
    assert_eq!(again["port"], open["port"], "{again}");
    assert_ne!(again["resume"], open["resume"], "{again}");
    assert_eq!(counter(&srv, "tunnels_opened"), 2);
}

fn only_the_same_subject_resumes(driver: &str) {
    use ringrelay::auth::{sign_parts, unix_now};
    let secret = "tunnel-resume-secret-0123456789abcdef";
    let srv = server(driver, &[("RINGRELAY_AUTH_JWT_SECRET", secret)]);
    let tok = |sub: &str| {
        let c = serde_json::json!({"sid": "*", "sub": sub, "exp": unix_now() + 600});
        sign_parts(
            secret.as_bytes(),
            ringrelay::config::JwtAlgorithm::Hs256,
            br#"{"alg":"HS256","typ":"JWT"}"#,
            c.to_string().as_bytes(),
        )
    };
    let (mut ws, open) = control(&srv, &format!("?token={}", tok("alice")));
    let key = open["resume"].as_str().unwrap();
    // While Alice's control connection is up, Mallory's resume takes nothing over either.
    let (_m, other) = control(&srv, &format!("?token={}&resume={key}", tok("mallory")));
    assert_ne!(other["port"], open["port"], "{other}");
    ws.send(tungstenite::Message::Ping(b"still mine".to_vec().into()))
        .unwrap();
    loop {
        match ws.read().expect("Alice's control connection is still up") {
            tungstenite::Message::Pong(p) => break assert_eq!(&p[..], b"still mine"),
            other => assert!(other.is_ping(), "{other:?}"),
        }
    }
    drop(ws);
    std::thread::sleep(Duration::from_millis(100));
    // Mallory has the key but not the subject: a tunnel of her own, not Alice's port.
    let (_m, other) = control(&srv, &format!("?token={}&resume={key}", tok("mallory")));
    assert_eq!(other["type"], "tunnel_open", "{other}");
    assert_ne!(other["port"], open["port"], "{other}");
    let (_a, back) = control(&srv, &format!("?token={}&resume={key}", tok("alice")));
    assert_eq!(back["port"], open["port"], "{back}");
}

/// Before: nothing bounded a tunnel's rate. Now `tunnel.max_bandwidth` shapes it: a sender
/// at full speed is read at the configured rate (within 10% over 5 s), nothing dropped.
fn bandwidth_is_shaped_to_the_configured_rate(driver: &str) {
    let rate: u64 = 4_000_000;
    let srv = server(driver, &[("RINGRELAY_TUNNEL_MAX_BANDWIDTH", "4000000")]);
    let (mut ws, open) = control(&srv, "");
    let (p, mut d, _) = joined(&srv, &mut ws, &open);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut p2 = p.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match p2.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        sent
    });
    let mut buf = vec![0u8; 256 * 1024];
    let first = d.read(&mut buf).unwrap() as u64;
    assert!(first > 0);
    let started = std::time::Instant::now();
    let window = Duration::from_secs(5);
    let mut got = 0u64;
    d.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while started.elapsed() < window {
        if let Ok(n) = d.read(&mut buf) {
            got += n as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    p.shutdown(Shutdown::Both).unwrap();
    let sent = sender.join().unwrap();
    let measured = got as f64 / secs;
    assert!(
        (measured - rate as f64).abs() <= 0.1 * rate as f64,
        "{measured:.0} B/s against {rate} (sent {sent})"
    );
    assert!(counter(&srv, "tunnel_shaped_waits") > 0);
}

/// Before: tunnels did not show anywhere. Now /stats and /metrics carry their gauges and
/// counters, and /health's capacity says how many tunnels the server holds of how many.
fn tunnels_show_in_stats_metrics_and_health(driver: &str) {
    let srv = server(driver, &[("RINGRELAY_TUNNEL_MAX_TUNNELS", "20")]);
    let (mut ws, open) = control(&srv, "");
    let _waiting = public(&open);
    let _ev = recv_event(&mut ws);
    let (_p, _d, _) = joined(&srv, &mut ws, &open);
    let v = stats_when(&srv, |v| v["totals"]["tunnel_connections_open"] == 1);
    let t = &v["totals"];
    assert_eq!(
        (
            &t["tunnels"],
            &t["tunnel_connections_waiting"],
            &t["tunnel_connections_open"]
        ),
        (&1.into(), &1.into(), &1.into()),
        "{t}"
    );
    let (_, _, health) = get(srv.addr, "/health");
    let h: Value = serde_json::from_str(&health).unwrap();
    let cap = &h["capacity"]["tunnels"];
    assert_eq!(
        (&cap["active"], &cap["limit"]),
        (&1.into(), &20.into()),
        "{h}"
    );
    assert_eq!(h["capacity"]["tunnel_reserve"], 2, "{h}");
    let (_, _, metrics) = get(srv.admin, "/metrics");
    assert!(
        metrics.contains("ringrelay_tunnels_opened_total"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ringrelay_tunnel_connections_open{")),
        "{metrics}"
    );
}

/// Before: /health's tunnel limit and reserve were the values the relay started with, while
/// the limit a reload set was already the one enforced. Now /health says the one in force.
fn the_health_capacity_follows_a_reload(driver: &str) {
    let dir = common::dir::Dir::new("tunnel", &format!("health-reload-{driver}"));
    let file = dir.write("ringrelay.toml", "[tunnel]\nmax_tunnels = 20\n");
    let srv = server(driver, &[("RINGRELAY_CONFIG", file.to_str().unwrap())]);
    let (_ws, _open) = control(&srv, "");
    let capacity = || {
        let (_, _, health) = get(srv.addr, "/health");
        let h: Value = serde_json::from_str(&health).unwrap();
        h["capacity"].clone()
    };
    let c = capacity();
    assert_eq!(
        (&c["tunnels"]["limit"], &c["tunnel_reserve"]),
        (&20.into(), &2.into()),
        "{c}"
    );
    dir.write("ringrelay.toml", "[tunnel]\nmax_tunnels = 50\n");
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGHUP) };
    stats_when(&srv, |v| v["reload"]["reloads_ok"] == 1);
    // Each worker answers from its own config: ask a few times to meet both.
    for _ in 0..4 {
        let c = capacity();
        assert_eq!(
            (
                &c["tunnels"]["active"],
                &c["tunnels"]["limit"],
                &c["tunnel_reserve"]
            ),
            (&1.into(), &50.into(), &5.into()),
            "{c}"
        );
    }
}

both_drivers!(
    a_resume_takes_over_a_control_connection_not_yet_seen_to_drop,
    the_health_capacity_follows_a_reload,
    tunnels_show_in_stats_metrics_and_health,
    bandwidth_is_shaped_to_the_configured_rate,
    a_dropped_control_connection_resumes_its_port,
    the_grace_ends_and_the_port_is_released,
    only_the_same_subject_resumes,
    bytes_flow_both_ways_with_half_closes,
    megabytes_cross_both_ways_at_once,
    bytes_sent_with_the_data_request_come_first,
    off_by_default_and_unknown_ids_are_404,
    a_data_connection_that_never_comes_is_timed_out,
    a_bad_port_is_refused_with_an_error_event,
    close_1000_releases_the_port,
);
