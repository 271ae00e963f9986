//! Address lists against the real binary: `security.allowed_cidrs` / `security.denied_cidrs`
//! on the public listener (the direct peer, the client a trusted proxy names in
//! X-Forwarded-For, the client a PROXY header names), `admin.allowed_cidrs` on the admin
//! listener, and both changed live by SIGHUP. Clients come from 127.0.0.2, 127.0.0.3 and ::1
//! against a dual-stack listener while a control pair from 127.0.0.1 keeps flowing.
//!
//! Before: no list existed. Every address that reached the listener was served (the
//! upgrades refused here were upgraded, `/health` and `/stats` answered 200 to anyone who
//! could reach the port), and the only per-address levers were the rate and count limits.

mod common;
use common::dir::Dir;
use common::*;
use ringrelay::limits::proxy_protocol::encode_v2;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use tungstenite::Message;

/// The listener's port at `ip` (the server listens on `[::]`, which takes both families).
fn at(srv: &TestServer, ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), srv.addr.port())
}

/// A TCP connection from `source` (an IPv4 loopback address, or `::1`) to `addr`.
fn tcp(source: &str, addr: SocketAddr) -> TcpStream {
    if source == "::1" {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        return s;
    }
    tcp_from(source, addr)
}

fn upgrade(
    srv: &TestServer,
    source: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String, String)> {
    let addr = if source == "::1" {
        at(srv, "::1")
    } else {
        at(srv, "127.0.0.1")
    };
    try_upgrade(tcp(source, addr), addr, path, headers)
}

/// Writes `request` raw on `stream` and returns the status and the body.
fn exchange(mut stream: TcpStream, request: &[u8]) -> (u16, String) {
    stream.write_all(request).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

fn get_from(source: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    exchange(tcp(source, addr), req.as_bytes())
}

fn assert_ip_refused(got: (u16, String)) {
    assert_eq!(got.0, 403, "{}", got.1);
    let v: serde_json::Value = serde_json::from_str(&got.1).unwrap();
    assert_eq!(v["code"], "ip_not_allowed", "{}", got.1);
}

/// Two peers of `name` from 127.0.0.1, exchanging a message each way on demand.
struct Control(Ws, Ws, u32);

impl Control {
    fn new(srv: &TestServer, name: &str) -> Control {
        let a = upgrade(srv, "127.0.0.1", &format!("/v1/relay/{name}?role=a"), &[]).unwrap();
        let b = upgrade(srv, "127.0.0.1", &format!("/v1/relay/{name}?role=b"), &[]).unwrap();
        Control(a, b, 0)
    }

    fn flows(&mut self) {
        self.2 += 1;
        let m = format!("control {}", self.2);
        self.0.send(Message::text(m.clone())).unwrap();
        assert_eq!(recv_text(&mut self.1), m);
        self.1.send(Message::text(m.clone())).unwrap();
        assert_eq!(recv_text(&mut self.0), m);
    }
}

fn start(driver: &str, env: &[(&str, &str)]) -> TestServer {
    TestServer::start_at("[::]:0", driver, 2, env, |_| {})
}

/// Deny wins, an allow list admits only its blocks, IPv4 and IPv6 alike; every route of the
/// public listener is refused (`/health` too), and the refusals are counted.
fn allow_and_deny_lists_from_loopback_addresses(driver: &str) {
    let srv = start(
        driver,
        &[
            ("RINGRELAY_SECURITY_ALLOWED_CIDRS", "127.0.0.0/30, ::1"),
            ("RINGRELAY_SECURITY_DENIED_CIDRS", "127.0.0.2"),
        ],
    );
    let mut control = Control::new(&srv, "lists-ctl");
    // Denied though inside the allowed /30: deny wins.
    assert_refused(
        upgrade(&srv, "127.0.0.2", "/v1/echo", &[]),
        403,
        "ip_not_allowed",
    );
    control.flows();
    // Outside the allow list.
    assert_refused(
        upgrade(&srv, "127.0.0.5", "/v1/echo", &[]),
        403,
        "ip_not_allowed",
    );
    assert_ip_refused(get_from("127.0.0.5", at(&srv, "127.0.0.1"), "/health"));
    // Allowed: an address of the /30, and ::1.
    let mut echo = upgrade(&srv, "127.0.0.3", "/v1/echo", &[]).unwrap();
    echo.send(Message::text("v4")).unwrap();
    assert_eq!(recv_text(&mut echo), "v4");
    let mut six = upgrade(&srv, "::1", "/v1/echo", &[]).unwrap();
    six.send(Message::text("v6")).unwrap();
    assert_eq!(recv_text(&mut six), "v6");
    control.flows();
    assert_eq!(counter(&srv, "ip_list_refused"), 3);
    drop(srv);

    // ::1 denied, IPv4 untouched.
    let srv = start(driver, &[("RINGRELAY_SECURITY_DENIED_CIDRS", "::1/128")]);
    let mut control = Control::new(&srv, "lists-ctl6");
    assert_refused(upgrade(&srv, "::1", "/v1/echo", &[]), 403, "ip_not_allowed");
    assert_ip_refused(get_from("::1", at(&srv, "::1"), "/health"));
    upgrade(&srv, "127.0.0.2", "/v1/echo", &[]).unwrap();
    control.flows();
    assert_eq!(counter(&srv, "ip_list_refused"), 2);
}

/// Behind a trusted proxy the lists judge the client it names, not the proxy: the proxy's own
/// address is in neither list and its clients still pass or fail on theirs. A PROXY header's
/// client is judged the same way, before its request is read.
fn the_client_a_trusted_proxy_names_is_judged(driver: &str) {
    let srv = start(
        driver,
        &[
            ("RINGRELAY_SECURITY_TRUSTED_PROXIES", "127.0.0.9"),
            (
                "RINGRELAY_SECURITY_ALLOWED_CIDRS",
                "127.0.0.1, 198.51.100.0/24",
            ),
            ("RINGRELAY_SECURITY_DENIED_CIDRS", "198.51.100.66"),
        ],
    );
    let mut control = Control::new(&srv, "proxy-ctl");
    let via = |client: &str| {
        let addr = at(&srv, "127.0.0.1");
        try_upgrade(
            tcp_from("127.0.0.9", addr),
            addr,
            "/v1/echo",
            &[("X-Forwarded-For", client)],
        )
    };
    via("198.51.100.7").unwrap();
    assert_refused(via("198.51.100.66"), 403, "ip_not_allowed");
    assert_refused(via("203.0.113.5"), 403, "ip_not_allowed");
    // A client naming itself allowed, from an untrusted address, is judged as itself.
    let addr = at(&srv, "127.0.0.1");
    let spoof = try_upgrade(
        tcp_from("127.0.0.4", addr),
        addr,
        "/v1/echo",
        &[("X-Forwarded-For", "198.51.100.7")],
    );
    assert_refused(spoof, 403, "ip_not_allowed");
    control.flows();
    assert_eq!(counter(&srv, "ip_list_refused"), 3);
    drop(srv);

    let srv = start(
        driver,
        &[
            ("RINGRELAY_SECURITY_TRUSTED_PROXIES", "127.0.0.9"),
            ("RINGRELAY_SECURITY_CLIENT_IP_HEADER", "proxy-protocol"),
            ("RINGRELAY_SECURITY_DENIED_CIDRS", "198.51.100.66"),
        ],
    );
    let relay = at(&srv, "127.0.0.1");
    let proxied = |client: &str| {
        let mut req = encode_v2(format!("{client}:40000").parse().unwrap(), relay, &[]);
        req.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n");
        exchange(tcp_from("127.0.0.9", relay), &req)
    };
    assert_eq!(proxied("198.51.100.7").0, 200);
    assert_ip_refused(proxied("198.51.100.66"));
    assert_eq!(counter(&srv, "ip_list_refused"), 1);
}

/// The admin listener answers only its own list (loopback by default, which every other
/// test's scrape comes from).
fn the_admin_listener_has_its_own_list(driver: &str) {
    let srv = start(driver, &[("RINGRELAY_ADMIN_ALLOWED_CIDRS", "127.0.0.1")]);
    assert_ip_refused(get_from("127.0.0.2", srv.admin, "/stats"));
    assert_ip_refused(get_from("127.0.0.2", srv.admin, "/metrics"));
    // The public listener's lists are not the admin one's: 127.0.0.2 may connect there.
    upgrade(&srv, "127.0.0.2", "/v1/echo", &[]).unwrap();
    assert_eq!(get_from("127.0.0.1", srv.admin, "/health").0, 200);
    assert_eq!(counter(&srv, "admin_ip_refused"), 2);
    assert_eq!(counter(&srv, "ip_list_refused"), 0);
    drop(srv);
    // The default: any loopback address.
    let srv = start(driver, &[]);
    assert_eq!(get_from("127.0.0.2", srv.admin, "/health").0, 200);
}

/// Sends SIGHUP and waits until /stats counts `applied` reloads in all.
fn reloaded(srv: &TestServer, applied: u64) {
    // SAFETY: kill(2) on the pid of a child the test spawned and has not reaped.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGHUP) };
    let v = stats_when(srv, |v| v["reload"]["reloads_ok"].as_u64() == Some(applied));
    let r = &v["reload"];
    assert_eq!(r["reloads_ok"].as_u64(), Some(applied), "{r}");
}

/// The lists are live: a SIGHUP denies an address at once and lets it back in, while a pair
/// opened before keeps talking; the admin list changes the same way.
fn lists_change_on_reload(driver: &str) {
    let dir = Dir::new("lists", &format!("reload-{driver}"));
    let config = dir.write("relay.toml", "[security]\ndenied_cidrs = [\"127.0.0.2\"]\n");
    let env = [("RINGRELAY_CONFIG", config.to_str().unwrap())];
    let srv = start(driver, &env);
    let mut control = Control::new(&srv, "reload-ctl");
    assert_refused(
        upgrade(&srv, "127.0.0.2", "/v1/echo", &[]),
        403,
        "ip_not_allowed",
    );
    dir.write(
        "relay.toml",
        "[security]\ndenied_cidrs = [\"127.0.0.3\"]\n[admin]\nallowed_cidrs = [\"127.0.0.1\"]\n",
    );
    reloaded(&srv, 1);
    upgrade(&srv, "127.0.0.2", "/v1/echo", &[]).unwrap();
    assert_refused(
        upgrade(&srv, "127.0.0.3", "/v1/echo", &[]),
        403,
        "ip_not_allowed",
    );
    assert_ip_refused(get_from("127.0.0.2", srv.admin, "/health"));
    control.flows();
}

both_drivers!(
    allow_and_deny_lists_from_loopback_addresses,
    the_client_a_trusted_proxy_names_is_judged,
    the_admin_listener_has_its_own_list,
    lists_change_on_reload,
);
