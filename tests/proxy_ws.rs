//! WebSockets (and other upgrades) through a proxy route (docs/proxy.md, "WebSockets and
//! other upgrades"), against the real binary on both drivers, with WebSocket echo backends
//! written here: each greets with who it is, the target and the forwarding header it saw,
//! then echoes every message, checking that the client's messages arrive in order.
//!
//! Before: an upgrade request on a proxy route was answered 501 `upgrade_unsupported` and
//! never reached an upstream, and a proxied connection was not counted among its client's
//! open connections (`limits.max_connections_per_ip`) nor checked for its Origin.

mod common;

use common::{counter, recv_text, stats_when, tcp_from, try_upgrade, TestServer, Ws};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::Message;

const MESSAGES: usize = 10_000;

/// A WebSocket echo server.
struct WsBackend {
    addr: SocketAddr,
    /// Client messages that arrived in order, over all connections.
    in_order: Arc<AtomicUsize>,
    /// Client messages that did not (a gap, a repeat, a swap).
    out_of_order: Arc<AtomicUsize>,
    /// Connections that ended.
    ended: Arc<AtomicUsize>,
}

impl WsBackend {
    fn start(name: &'static str) -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = WsBackend {
            addr: listener.local_addr().unwrap(),
            in_order: Arc::default(),
            out_of_order: Arc::default(),
            ended: Arc::default(),
        };
        let (good, bad, ended) = (b.in_order.clone(), b.out_of_order.clone(), b.ended.clone());
        std::thread::spawn(move || {
            for s in listener.incoming().map_while(Result::ok) {
                let (good, bad, ended) = (good.clone(), bad.clone(), ended.clone());
                std::thread::spawn(move || {
                    echo(name, s, &good, &bad);
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        b
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One backend connection: the greeting, then every message back as it came. A message
/// `m{i}` is in order when `i` is the count of messages before it. (The handshake callback's
/// error type is tungstenite's, large as it is.)
#[allow(clippy::result_large_err)]
fn echo(name: &str, s: TcpStream, good: &AtomicUsize, bad: &AtomicUsize) {
    let mut seen = String::new();
    let callback = |req: &tungstenite::handshake::server::Request, resp| {
        let xff = req
            .headers()
            .get("x-forwarded-for")
            .map_or("-", |v| v.to_str().unwrap_or("?"));
        seen = format!("{name} {} xff={xff}", req.uri());
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(s, callback) else {
        return;
    };
    if ws.send(Message::text(seen)).is_err() {
        return;
    }
    let mut next = 0usize;
    while let Ok(m) = ws.read() {
        if let Message::Text(t) = &m {
            let counter = if t.as_str() == format!("m{next}") {
                good
            } else {
                bad
            };
            counter.fetch_add(1, Ordering::SeqCst);
            next += 1;
        }
        if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
            return;
        }
    }
}

/// A backend that answers every request (an upgrade included) 403 with a body.
fn refusing_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let _ = s.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nnot for you!",
            );
        }
    });
    addr
}

/// A plain HTTP backend: `200 ok` to every request, keep-alive.
fn http_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                    if head.ends_with(b"\r\n\r\n") {
                        head.clear();
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends a GET on `s` and reads its answer's head and body (a Content-Length one).
fn get(s: &mut TcpStream, path: &str, extra: &str) -> String {
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        got.push(b[0]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

fn routes(upstreams: &[(String, &str)]) -> String {
    let ups: Vec<String> = upstreams
        .iter()
        .map(|(url, region)| format!("{{ url = \"{url}\", region = \"{region}\" }}"))
        .collect();
    format!("[{{ prefix = \"/\", upstreams = [{}] }}]", ups.join(", "))
}

fn proxy(driver: &str, routes: &str, env: &[(&str, &str)]) -> TestServer {
    let mut all = vec![("RINGRELAY_PROXY_ROUTES", routes)];
    all.extend_from_slice(env);
    TestServer::start(driver, 2, &all)
}

/// A WebSocket through the proxy from `source`, with extra request headers.
fn through(
    srv: &TestServer,
    source: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String, String)> {
    try_upgrade(tcp_from(source, srv.addr), srv.addr, path, headers)
}

/// Two peers of a relay session from addresses of their own, and a check that they talk.
struct Control {
    a: Ws,
    b: Ws,
    n: u32,
}

impl Control {
    fn new(srv: &TestServer) -> Control {
        let peer = |source: &str, role: &str| {
            let path = format!("/v1/relay/proxy-ws-control?role={role}");
            through(srv, source, &path, &[]).expect("a control peer")
        };
        Control {
            a: peer("127.0.0.2", "a"),
            b: peer("127.0.0.3", "b"),
            n: 0,
        }
    }

    fn flows(&mut self) {
        self.n += 1;
        let m = format!("control {}", self.n);
        self.a.send(Message::text(m.clone())).unwrap();
        assert_eq!(recv_text(&mut self.b), m);
        self.b.send(Message::text(m.clone())).unwrap();
        assert_eq!(recv_text(&mut self.a), m);
    }
}

/// Sends `m0..m{n}` in batches of 100, each batch's echoes read before the next, in order.
fn stream_ordered(ws: &mut Ws, n: usize) {
    for start in (0..n).step_by(100) {
        let end = (start + 100).min(n);
        for i in start..end {
            ws.write(Message::text(format!("m{i}"))).unwrap();
        }
        ws.flush().unwrap();
        for i in start..end {
            assert_eq!(recv_text(ws), format!("m{i}"));
        }
    }
}

/// Before: 501 `upgrade_unsupported` for both. Now the region's backend (by header, then by
/// query) greets the client, 10,000 messages go each way in order, and the control pair
/// flows beside them; the byte counters and the open gauge follow.
fn regions_by_header_and_query_carry_ordered_messages_each_way(driver: &str) {
    let (one, two) = (WsBackend::start("one"), WsBackend::start("two"));
    let srv = proxy(driver, &routes(&[(one.url(), "1"), (two.url(), "2")]), &[]);
    let mut control = Control::new(&srv);
    let mut ws = through(&srv, "127.0.0.1", "/chat?x=1", &[("x-region", "1")]).unwrap();
    let hello = recv_text(&mut ws);
    assert_eq!(hello, "one /chat?x=1 xff=127.0.0.1");
    let started = Instant::now();
    stream_ordered(&mut ws, MESSAGES);
    control.flows();
    eprintln!("{driver}: {MESSAGES} echoes in {:?}", started.elapsed());
    let mut ws2 = through(&srv, "127.0.0.1", "/chat?region=2", &[]).unwrap();
    assert_eq!(recv_text(&mut ws2), "two /chat?region=2 xff=127.0.0.1");
    stream_ordered(&mut ws2, 10);
    assert_eq!(one.in_order.load(Ordering::SeqCst), MESSAGES);
    assert_eq!(two.in_order.load(Ordering::SeqCst), 10);
    assert_eq!(one.out_of_order.load(Ordering::SeqCst), 0);
    let v = stats_when(&srv, |v| v["totals"]["proxy_upgrades_open"] == 2);
    let t = &v["totals"];
    assert_eq!(t["proxy_upgrades_open"], 2, "{t}");
    assert_eq!(t["proxy_upgrades"], 2, "{t}");
    // "m0".."m9999" and their echoes, each in a frame of its own (a masked client frame has
    // 6 bytes of header, the backend's 2).
    let payload: u64 = (0..MESSAGES).map(|i| format!("m{i}").len() as u64).sum();
    let up = t["proxy_upgrade_bytes_up"].as_u64().unwrap();
    let down = t["proxy_upgrade_bytes_down"].as_u64().unwrap();
    assert!(up >= payload + 6 * MESSAGES as u64, "{up} < {payload}");
    assert!(down >= payload + 2 * MESSAGES as u64, "{down} < {payload}");
    // The backend closes first (RFC 6455 section 7.1.1), then each client its socket.
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    drop(ws);
    drop(ws2);
    let v = stats_when(&srv, |v| v["totals"]["proxy_upgrades_open"] == 0);
    assert_eq!(v["totals"]["proxy_upgrades_open"], 0, "{}", v["totals"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while one.ended.load(Ordering::SeqCst) + two.ended.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the backends' connections did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    control.flows();
}

/// Before: 501 `upgrade_unsupported`, the backend never asked. Now its refusal, status and
/// body, is passed on as a normal response, and the connection closes after it.
fn a_backend_refusing_the_upgrade_is_passed_on(driver: &str) {
    let addr = refusing_backend();
    let srv = proxy(driver, &routes(&[(format!("http://{addr}"), "1")]), &[]);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nnot for you!"), "{got}");
    assert!(got.contains("Connection: close\r\n"), "{got}");
    assert_eq!(counter(&srv, "proxy_upgrades_refused"), 1);
    assert_eq!(counter(&srv, "proxy_upgrades"), 0);
}

/// Before: 501. Now a joined WebSocket that moves no byte for `proxy.upgrade_idle_timeout`
/// is closed on both sides, while one that keeps talking stays open.
fn an_idle_upgrade_is_closed_and_a_busy_one_is_not(driver: &str) {
    let one = WsBackend::start("one");
    // The worker's clock is coarse (its tick, up to 1 s): the busy one talks every 200 ms.
    let env = [("RINGRELAY_PROXY_UPGRADE_IDLE_TIMEOUT", "2s")];
    let srv = proxy(driver, &routes(&[(one.url(), "1")]), &env);
    let mut idle = through(&srv, "127.0.0.1", "/idle", &[]).unwrap();
    let mut busy = through(&srv, "127.0.0.1", "/busy", &[]).unwrap();
    recv_text(&mut idle);
    recv_text(&mut busy);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(4500) {
        busy.send(Message::text(format!("m{i}"))).unwrap();
        assert_eq!(recv_text(&mut busy), format!("m{i}"));
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // The idle one was cut (no close frame: the proxy speaks no WebSocket), the busy one talks.
    assert!(idle.read().is_err(), "the idle WebSocket is still open");
    assert_eq!(counter(&srv, "proxy_upgrade_idle_timeouts"), 1);
    busy.send(Message::text(format!("m{i}"))).unwrap();
    assert_eq!(recv_text(&mut busy), format!("m{i}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while one.ended.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "the backend's side stayed open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Before: proxied connections were not counted among their client's open connections, and
/// every upgrade got 501. Now with `limits.max_connections_per_ip = 3` the fourth proxied
/// WebSocket from one address is refused 429 while a control pair from other addresses
/// flows, and one closed gives its place back only once both of its sides are gone.
fn the_per_ip_limit_refuses_the_next_proxied_connection(driver: &str) {
    let one = WsBackend::start("one");
    let env = [("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP", "3")];
    let srv = proxy(driver, &routes(&[(one.url(), "1")]), &env);
    let mut control = Control::new(&srv);
    let mut held: Vec<Ws> = (0..3)
        .map(|_| through(&srv, "127.0.0.4", "/held", &[]).unwrap())
        .collect();
    for ws in &mut held {
        recv_text(ws);
    }
    let Err((status, _, body)) = through(&srv, "127.0.0.4", "/fourth", &[]) else {
        panic!("the fourth is upgraded");
    };
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too_many_connections"), "{body}");
    control.flows();
    let mut gone = held.pop().unwrap();
    gone.close(None).unwrap();
    while gone.read().is_ok() {}
    drop(gone);
    let v = stats_when(&srv, |v| v["totals"]["proxy_upgrades_open"] == 2);
    assert_eq!(v["totals"]["proxy_upgrades_open"], 2, "{}", v["totals"]);
    let mut again = through(&srv, "127.0.0.4", "/again", &[]).unwrap();
    assert_eq!(recv_text(&mut again), "one /again xff=127.0.0.4");
    control.flows();
}

/// Before: a proxied request's Origin was never looked at. Now `security.allowed_origins`
/// applies to proxied upgrades (403 `origin_not_allowed`) as on every public route.
fn origins_apply_to_proxied_upgrades(driver: &str) {
    let one = WsBackend::start("one");
    let env = [("RINGRELAY_SECURITY_ALLOWED_ORIGINS", "https://app.example")];
    let srv = proxy(driver, &routes(&[(one.url(), "1")]), &env);
    let evil = through(
        &srv,
        "127.0.0.1",
        "/o",
        &[("origin", "https://evil.example")],
    );
    let Err((status, _, body)) = evil else {
        panic!("a foreign origin is upgraded");
    };
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("origin_not_allowed"), "{body}");
    let mut ok = through(
        &srv,
        "127.0.0.1",
        "/o",
        &[("origin", "https://app.example")],
    )
    .unwrap();
    assert_eq!(recv_text(&mut ok), "one /o xff=127.0.0.1");
    assert_eq!(counter(&srv, "origin_refused"), 1);
}

/// Before: plain HTTP connections on a proxy route were neither counted among their client's
/// open connections nor checked for their Origin: the third connection here got 200, and so
/// did the foreign Origin. Now, with `limits.max_connections_per_ip = 2`, two kept-alive
/// proxied connections hold the address's allowance (429 for a third) while a control pair
/// flows; a later request with a foreign Origin on a kept-alive connection gets 403 and ends
/// it, which gives its place back.
fn plain_proxied_connections_are_counted_and_checked_too(driver: &str) {
    let addr = http_backend();
    let env = [
        ("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP", "2"),
        ("RINGRELAY_SECURITY_ALLOWED_ORIGINS", "https://app.example"),
    ];
    let srv = proxy(driver, &routes(&[(format!("http://{addr}"), "1")]), &env);
    let mut control = Control::new(&srv);
    let mut held: Vec<TcpStream> = (0..2).map(|_| tcp_from("127.0.0.5", srv.addr)).collect();
    for s in &mut held {
        let r = get(s, "/a", "");
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    }
    let mut third = tcp_from("127.0.0.5", srv.addr);
    let r = get(&mut third, "/b", "");
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    assert!(r.contains("too_many_connections"), "{r}");
    control.flows();
    let r = get(&mut held[0], "/c", "Origin: https://app.example\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = get(&mut held[0], "/d", "Origin: https://evil.example\r\n");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("origin_not_allowed"), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&mut tcp_from("127.0.0.5", srv.addr), "/e", "");
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place was never given back: {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    control.flows();
}

/// Before: 501. Now a joined upgrade takes a place among the server's connections: with
/// `limits.max_connections = 3` (no reconnect reserve), a relay peer and two proxied
/// WebSockets fill it, the third is refused 503 `at_capacity` with Retry-After before any
/// upstream is asked, and /health counts all three.
fn joined_upgrades_count_towards_the_servers_capacity(driver: &str) {
    let one = WsBackend::start("one");
    let env = [
        ("RINGRELAY_LIMITS_MAX_CONNECTIONS", "3"),
        ("RINGRELAY_LIMITS_RECONNECT_RESERVE_PERCENT", "0"),
    ];
    let srv = proxy(driver, &routes(&[(one.url(), "1")]), &env);
    let _relay = through(&srv, "127.0.0.2", "/v1/relay/cap?role=a", &[]).unwrap();
    let mut held: Vec<Ws> = (0..2)
        .map(|_| through(&srv, "127.0.0.1", "/cap", &[]).unwrap())
        .collect();
    for ws in &mut held {
        recv_text(ws);
    }
    let Err((status, head, body)) = through(&srv, "127.0.0.1", "/over", &[]) else {
        panic!("the upgrade over capacity went through");
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("at_capacity"), "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    let (_, _, health) = common::get(srv.admin, "/health");
    let v: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(v["capacity"]["connections"]["active"], 3, "{v}");
}

/// A backend that answers plain requests `200 ok` and upgrades a WebSocket request on the
/// same connection, greeting with which of its connections it is and how many plain
/// requests came on it before. `closing`: it closes each connection after its first plain
/// answer (without saying so, as a server whose keep-alive timeout passed).
fn pooled_backend(closing: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (i, s) in listener.incoming().map_while(Result::ok).enumerate() {
            std::thread::spawn(move || pooled_conn(i, s, closing));
        }
    });
    addr
}

fn pooled_conn(i: usize, mut s: TcpStream, closing: bool) {
    let mut plain = 0;
    loop {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) != 1 {
                return;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let key = head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim())
        });
        let Some(key) = key else {
            plain += 1;
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if s.write_all(ok).is_err() || closing {
                return;
            }
            continue;
        };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let _ = write!(
            s,
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let mut ws =
            tungstenite::WebSocket::from_raw_socket(s, tungstenite::protocol::Role::Server, None);
        if ws
            .send(Message::text(format!("conn {i} after {plain}")))
            .is_err()
        {
            return;
        }
        while let Ok(m) = ws.read() {
            if m.is_text() && ws.send(m).is_err() {
                return;
            }
        }
        return;
    }
}

/// Before: an upgrade always dialled a new upstream connection, and a pooled connection the
/// upstream had closed made the next GET fail over to another upstream (503 `no_upstream`
/// with only one). Now an upgrade on a kept-alive client connection takes the idle pooled
/// connection its GET left, and a stale pooled connection is replaced by a new one to the
/// same upstream, for a GET and an upgrade alike.
fn an_upgrade_takes_an_idle_pooled_connection_and_a_stale_one_is_replaced(driver: &str) {
    let (keep, gone) = (pooled_backend(false), pooled_backend(true));
    let routes = format!(
        "[{{ prefix = \"/keep\", upstreams = [{{ url = \"http://{keep}\" }}] }}, \
         {{ prefix = \"/gone\", upstreams = [{{ url = \"http://{gone}\" }}] }}]"
    );
    // One worker: one pool.
    let srv = TestServer::start(driver, 1, &[("RINGRELAY_PROXY_ROUTES", routes.as_str())]);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let r = get(&mut s, "/keep/a", "");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("ok"),
        "{driver}: {r}"
    );
    let mut ws = try_upgrade(s, srv.addr, "/keep/ws", &[]).unwrap();
    assert_eq!(recv_text(&mut ws), "conn 0 after 1", "{driver}");
    ws.send(Message::text("m0")).unwrap();
    assert_eq!(recv_text(&mut ws), "m0", "{driver}");

    let mut s = TcpStream::connect(srv.addr).unwrap();
    for path in ["/gone/a", "/gone/b"] {
        let r = get(&mut s, path, "");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("ok"),
            "{driver} {path}: {r}"
        );
    }
    let mut ws = try_upgrade(s, srv.addr, "/gone/ws", &[]).unwrap();
    assert_eq!(recv_text(&mut ws), "conn 2 after 0", "{driver}");
    assert_eq!(counter(&srv, "proxy_upstream_stale"), 2, "{driver}");
    assert_eq!(counter(&srv, "proxy_upstream_connects"), 4, "{driver}");
    assert_eq!(counter(&srv, "proxy_ejections"), 0, "{driver}");
}

/// Each test once per driver, as separate tests (they run side by side).
macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $(#[test] fn $name() { super::$name("io_uring") })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name("epoll") })*
        }
    };
}

on_both_drivers!(
    regions_by_header_and_query_carry_ordered_messages_each_way,
    a_backend_refusing_the_upgrade_is_passed_on,
    an_idle_upgrade_is_closed_and_a_busy_one_is_not,
    the_per_ip_limit_refuses_the_next_proxied_connection,
    origins_apply_to_proxied_upgrades,
    plain_proxied_connections_are_counted_and_checked_too,
    joined_upgrades_count_towards_the_servers_capacity,
    an_upgrade_takes_an_idle_pooled_connection_and_a_stale_one_is_replaced,
);
