//! The reverse proxy (docs/proxy.md) against the real binary, on both drivers, with real
//! HTTP backends written here: each records the raw bytes it was sent and answers with who it
//! is, the request it saw and the SHA-256 of the body it read.
//!
//! Before: there was no proxy. Every path below other than ringrelay's own was 404
//! `not_found`, and a `[proxy]` section in the config stopped the server as an unknown key.

mod common;

use common::{counter, TestServer};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DRIVERS: [&str; 2] = ["io_uring", "epoll"];
const BIG: usize = 10 << 20;

/// Byte `i` of the deterministic large bodies.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7).wrapping_add(3) % 251) as u8
}

fn big_body() -> Vec<u8> {
    (0..BIG).map(pattern).collect()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// One HTTP/1.1 backend.
struct Backend {
    addr: SocketAddr,
    /// Every byte any connection sent it.
    raw: Arc<Mutex<Vec<u8>>>,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
    dead: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// The SSE handler waits for this before its second event.
    go: Arc<AtomicBool>,
}

impl Backend {
    fn start(name: &'static str) -> Backend {
        Self::start_on(name, "127.0.0.1:0")
    }

    fn start_on(name: &'static str, at: &str) -> Backend {
        let listener = TcpListener::bind(at).expect("bind backend");
        let b = Backend {
            addr: listener.local_addr().unwrap(),
            raw: Arc::default(),
            conns: Arc::default(),
            dead: Arc::default(),
            open: Arc::default(),
            go: Arc::default(),
        };
        let (raw, conns, dead, open, go) = (
            b.raw.clone(),
            b.conns.clone(),
            b.dead.clone(),
            b.open.clone(),
            b.go.clone(),
        );
        std::thread::spawn(move || {
            for s in listener.incoming() {
                if dead.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                conns.fetch_add(1, Ordering::SeqCst);
                open.lock().unwrap().push(s.try_clone().unwrap());
                let (raw, go) = (raw.clone(), go.clone());
                std::thread::spawn(move || serve_conn(name, s, raw, go));
            }
        });
        b
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and drops every connection, as a crashed server would.
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a chunked body (sizes, data, the last chunk and an empty trailer).
fn read_chunked(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            let mut end = String::new();
            r.read_line(&mut end).ok()?;
            return Some(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).ok()?;
    }
}

/// Reads a head up to its blank line; `None` at the end of the connection.
fn read_head(r: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve_conn(name: &str, s: TcpStream, raw: Arc<Mutex<Vec<u8>>>, go: Arc<AtomicBool>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    while let Some(head) = read_head(&mut r) {
        raw.lock().unwrap().extend_from_slice(head.as_bytes());
        let body = if header(&head, "transfer-encoding").is_some() {
            match read_chunked(&mut r) {
                Some(b) => b,
                None => return,
            }
        } else {
            let n: usize = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
            let mut b = vec![0; n];
            if r.read_exact(&mut b).is_err() {
                return;
            }
            b
        };
        raw.lock().unwrap().extend_from_slice(&body);
        let line = head.lines().next().unwrap_or("").to_string();
        let path = line.split(' ').nth(1).unwrap_or("");
        let ok = if path.starts_with("/big") {
            let big = big_body();
            w.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).as_bytes(),
            )
            .and_then(|_| w.write_all(&big))
        } else if path.starts_with("/sse") {
            sse(&mut w, &go)
        } else {
            let text = format!(
                "{name} {line} sha={} len={}\n{head}",
                sha(&body),
                body.len()
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Up-Hop\r\nX-Up-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
            w.write_all(resp.as_bytes())
        };
        if ok.is_err() {
            return;
        }
    }
}

/// Server-sent events: the second only once the client has seen the first (`go`), so a
/// proxy that held the response back would never deliver the first.
fn sse(w: &mut TcpStream, go: &AtomicBool) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    let event = |n: u32| {
        let e = format!("data: event {n}\n\n");
        format!("{:x}\r\n{e}\r\n", e.len())
    };
    w.write_all(event(1).as_bytes())?;
    let until = Instant::now() + Duration::from_secs(10);
    while !go.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    w.write_all(event(2).as_bytes())?;
    w.write_all(b"0\r\n\r\n")
}

/// A client connection to the proxy, kept alive across requests.
struct Client {
    r: BufReader<TcpStream>,
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Client {
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).unwrap();
    }

    fn response(&mut self) -> Resp {
        let head = read_head(&mut self.r).expect("a response head");
        let status = head[9..12].parse().unwrap();
        let body = if header(&head, "transfer-encoding").is_some() {
            read_chunked(&mut self.r).expect("a chunked body")
        } else if let Some(n) = header(&head, "content-length") {
            let mut b = vec![0; n.parse().unwrap()];
            self.r.read_exact(&mut b).unwrap();
            b
        } else {
            let mut b = Vec::new();
            let _ = self.r.read_to_end(&mut b);
            b
        };
        Resp { status, head, body }
    }

    fn get(&mut self, path: &str, extra: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: front.example\r\n{extra}\r\n").as_bytes());
        self.response()
    }
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn routes(upstreams: &[(&Backend, &str)], extra: &str) -> String {
    let ups: Vec<String> = upstreams
        .iter()
        .map(|(b, region)| format!("{{ url = \"{}\", region = \"{region}\" }}", b.url()))
        .collect();
    format!(
        "[{{ prefix = \"/\", upstreams = [{}]{extra} }}]",
        ups.join(", ")
    )
}

fn proxy(driver: &str, routes: &str, env: &[(&str, &str)]) -> TestServer {
    let mut all = vec![("RINGRELAY_PROXY_ROUTES", routes)];
    all.extend_from_slice(env);
    TestServer::start(driver, 2, &all)
}

#[test]
fn regions_by_header_and_query_and_ringrelays_own_routes_still_win() {
    let (one, two) = (Backend::start("r1"), Backend::start("r2"));
    for driver in DRIVERS {
        let srv = proxy(driver, &routes(&[(&one, "1"), (&two, "2")], ""), &[]);
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-H",
                "x-region: 1",
                &format!("http://{}/who", srv.addr),
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("r1 GET /who "),
            "{driver}"
        );
        let out = std::process::Command::new("curl")
            .args(["-s", &format!("http://{}/who?region=2", srv.addr)])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("r2 GET /who?region=2 "),
            "{driver}"
        );
        let mut c = Client::new(srv.addr);
        // The header wins over the query.
        let r = c.get("/who?region=2", "x-region: 1\r\n");
        assert!(text(&r).starts_with("r1 "), "{driver}: {}", text(&r));
        let r = c.get("/who", "x-region: no good!\r\n");
        assert_eq!(r.status, 400, "{driver}");
        assert!(text(&r).contains("invalid_region"), "{driver}");
        // A region nobody serves, without fallback: 503 no_upstream.
        let r = Client::new(srv.addr).get("/who", "x-region: 3\r\n");
        assert_eq!(
            (r.status, text(&r).contains("no_upstream")),
            (503, true),
            "{driver}"
        );
        // ringrelay's own routes are never proxied, even with a `/` route.
        let r = Client::new(srv.addr).get("/health", "");
        assert!(
            r.status == 200 && text(&r).contains("\"status\""),
            "{driver}: {}",
            text(&r)
        );
        let r = Client::new(srv.addr).get("/v1/anything", "");
        assert_eq!(r.status, 404, "{driver}");
        assert!(!text(&r).starts_with("r1") && !text(&r).starts_with("r2"));
        let mut ws = srv.connect("/v1/relay/proxy-control?role=a");
        let mut ws2 = srv.connect("/v1/relay/proxy-control?role=b");
        ws.send(tungstenite::Message::text("still a relay"))
            .unwrap();
        assert_eq!(common::recv_text(&mut ws2), "still a relay");
    }
}

#[test]
fn smuggling_shapes_get_400_and_no_backend_sees_a_byte() {
    let rec = Backend::start("rec");
    let shapes: [&[u8]; 6] = [
        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /s HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ];
    for driver in DRIVERS {
        let srv = proxy(driver, &routes(&[(&rec, "1")], ""), &[]);
        for shape in shapes {
            let mut c = Client::new(srv.addr);
            c.send(shape);
            let r = c.response();
            assert_eq!(
                r.status,
                400,
                "{driver}: {}",
                String::from_utf8_lossy(shape)
            );
        }
        assert!(
            rec.raw.lock().unwrap().is_empty(),
            "{driver}: the backend saw {:?}",
            String::from_utf8_lossy(&rec.raw.lock().unwrap())
        );
        assert!(counter(&srv, "proxy_refused_framing") >= 5, "{driver}");
        // Control: a well-formed request on the same proxy reaches it.
        let r = Client::new(srv.addr).get("/ok", "");
        assert_eq!(r.status, 200, "{driver}");
        rec.raw.lock().unwrap().clear();
    }
}

#[test]
fn hop_by_hop_and_spoofed_forwarding_headers_never_reach_a_backend() {
    let rec = Backend::start("rec");
    for driver in DRIVERS {
        let srv = proxy(driver, &routes(&[(&rec, "1")], ""), &[]);
        let mut c = Client::new(srv.addr);
        let r = c.get(
            "/h",
            "Connection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nForwarded: for=6.6.6.6\r\nX-Kept: yes\r\n",
        );
        let seen = text(&r).to_ascii_lowercase();
        for gone in [
            "x-secret-hop",
            "keep-alive",
            "te:",
            "proxy-authorization",
            "6.6.6.6",
            "evil",
        ] {
            assert!(
                !seen.contains(gone),
                "{driver}: {gone} reached the backend:\n{seen}"
            );
        }
        assert!(seen.contains("x-kept: yes"), "{driver}");
        assert!(
            seen.contains("x-forwarded-for: 127.0.0.1\r\n"),
            "{driver}: {seen}"
        );
        assert!(seen.contains("x-forwarded-host: front.example"), "{driver}");
        assert!(
            seen.contains("forwarded: for=127.0.0.1;host=\"front.example\";proto=http"),
            "{driver}"
        );
        // The upstream's own hop-by-hop headers never reach the client either.
        let head = r.head.to_ascii_lowercase();
        assert!(
            !head.contains("x-up-hop") && !head.contains("keep-alive"),
            "{driver}: {head}"
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn ten_mib_up_and_down_arrive_intact_without_the_proxy_holding_them() {
    let b = Backend::start("big");
    let body = big_body();
    let want = sha(&body);
    for driver in DRIVERS {
        let srv = proxy(driver, &routes(&[(&b, "1")], ""), &[]);
        let mut c = Client::new(srv.addr);
        let _ = c.get("/warm", "");
        let before = rss_kib(srv.pid());
        c.send(format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {BIG}\r\n\r\n").as_bytes());
        c.send(&body);
        let r = c.response();
        assert!(
            text(&r).contains(&format!("sha={want} len={BIG}")),
            "{driver}"
        );
        // Chunked, in uneven chunks, with Expect: 100-continue answered by the proxy.
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        let cont = read_head(&mut c.r).unwrap();
        assert!(cont.starts_with("HTTP/1.1 100"), "{driver}: {cont}");
        for piece in body.chunks(300_007) {
            c.send(format!("{:x}\r\n", piece.len()).as_bytes());
            c.send(piece);
            c.send(b"\r\n");
        }
        c.send(b"0\r\n\r\n");
        let r = c.response();
        assert!(
            text(&r).contains(&format!("sha={want} len={BIG}")),
            "{driver}"
        );
        let r = c.get("/big", "");
        assert_eq!(
            (r.body.len(), sha(&r.body)),
            (BIG, want.clone()),
            "{driver}"
        );
        let grew = rss_kib(srv.pid()).saturating_sub(before);
        assert!(
            grew < 4 * 1024,
            "{driver}: RSS grew {grew} KiB over 30 MiB of bodies"
        );
    }
}

#[test]
fn server_sent_events_arrive_one_by_one() {
    let b = Backend::start("sse");
    for driver in DRIVERS {
        b.go.store(false, Ordering::SeqCst);
        let srv = proxy(driver, &routes(&[(&b, "1")], ""), &[]);
        let mut c = Client::new(srv.addr);
        c.send(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = read_head(&mut c.r).unwrap();
        assert!(head.contains("text/event-stream"), "{driver}: {head}");
        let mut size = String::new();
        c.r.read_line(&mut size).unwrap();
        let mut first = vec![0; usize::from_str_radix(size.trim(), 16).unwrap() + 2];
        c.r.read_exact(&mut first).unwrap();
        assert_eq!(&first[..], b"data: event 1\n\n\r\n", "{driver}");
        b.go.store(true, Ordering::SeqCst);
        let rest = read_chunked(&mut c.r).unwrap();
        assert_eq!(rest, b"data: event 2\n\n", "{driver}");
    }
}

#[test]
fn a_thousand_keep_alive_requests_reuse_a_few_upstream_connections() {
    let b = Backend::start("ka");
    for driver in DRIVERS {
        let before = b.conns.load(Ordering::SeqCst);
        let srv = proxy(driver, &routes(&[(&b, "1")], ""), &[]);
        let mut c = Client::new(srv.addr);
        for i in 0..1000 {
            let r = c.get(&format!("/n{i}"), "");
            assert!(text(&r).starts_with(&format!("ka GET /n{i} ")), "{driver}");
        }
        // Pipelined: three requests in one write, answered in order.
        c.send(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\n\r\n");
        for p in ["/p1", "/p2", "/p3"] {
            assert!(
                text(&c.response()).starts_with(&format!("ka GET {p} ")),
                "{driver}"
            );
        }
        let opened = b.conns.load(Ordering::SeqCst) - before;
        assert!(
            opened <= 3,
            "{driver}: {opened} upstream connections for 1003 requests"
        );
        assert!(counter(&srv, "proxy_upstream_reused") >= 1000, "{driver}");
    }
}

#[test]
fn a_killed_upstream_is_retried_ejected_and_back_after_a_restart() {
    for driver in DRIVERS {
        let (a, b) = (Backend::start("a"), Backend::start("b"));
        let env = [
            ("RINGRELAY_PROXY_EJECT_AFTER", "1"),
            ("RINGRELAY_PROXY_EJECT_BACKOFF", "300ms"),
        ];
        let srv = proxy(driver, &routes(&[(&a, "1"), (&b, "1")], ""), &env);
        let a_addr = a.addr;
        a.kill();
        // Every GET is answered by b: the one that tried a is retried there.
        for i in 0..20 {
            let r = Client::new(srv.addr).get(&format!("/k{i}"), "");
            assert!(
                text(&r).starts_with("b GET"),
                "{driver}: {} {}",
                r.status,
                text(&r)
            );
        }
        assert!(counter(&srv, "proxy_ejections") >= 1, "{driver}");
        assert!(counter(&srv, "proxy_retries") >= 1, "{driver}");
        // A POST with a body is never sent twice: 502 when it met the dead one, else b.
        let a2 = Backend::start_on("a", &a_addr.to_string());
        std::thread::sleep(Duration::from_millis(700));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut back = false;
        while !back && Instant::now() < deadline {
            back = text(&Client::new(srv.addr).get("/again", "")).starts_with("a GET");
        }
        assert!(back, "{driver}: the restarted upstream got no request");
        drop(a2);
    }
}

#[test]
fn a_route_shadowing_ringrelays_own_stops_the_server_at_start() {
    for (routes, says) in [
        (
            r#"[{ prefix = "/v1/", upstreams = [{ url = "http://127.0.0.1:9" }] }]"#,
            "\"/v1/\"",
        ),
        (
            r#"[{ prefix = "/health", upstreams = [{ url = "http://127.0.0.1:9" }] }]"#,
            "\"/health\"",
        ),
        (
            r#"[{ prefix = "/", upstreams = [{ url = "http://127.0.0.1:9/x" }] }]"#,
            "http://host:port",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringrelay"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("RINGRELAY_PROXY_ROUTES", routes)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{routes}");
        assert!(
            err.contains("proxy.routes") && err.contains(says),
            "{routes}: {err}"
        );
    }
}

#[test]
fn an_auth_route_wants_a_token_and_never_passes_it_upstream() {
    use ringrelay::auth::{mint, unix_now, MintClaims};
    const SECRET: &str = "proxy-test-secret-0123456789abcdef012345";
    let rec = Backend::start("rec");
    let claims = MintClaims {
        sid: "*".into(),
        exp: unix_now() + 600,
        ..MintClaims::default()
    };
    let token = mint(
        SECRET.as_bytes(),
        ringrelay::config::JwtAlgorithm::Hs256,
        &claims,
    );
    for driver in DRIVERS {
        let env = [("RINGRELAY_AUTH_JWT_SECRET", SECRET)];
        let srv = proxy(driver, &routes(&[(&rec, "1")], ", auth = true"), &env);
        // Before: the route did not exist; with `auth` parsed but unchecked, this would pass.
        let r = Client::new(srv.addr).get("/private", "");
        assert_eq!(r.status, 401, "{driver}");
        let r = Client::new(srv.addr).get("/private", "Authorization: Bearer not.a.token\r\n");
        assert_eq!(r.status, 401, "{driver}");
        assert!(rec.raw.lock().unwrap().is_empty(), "{driver}");
        let r =
            Client::new(srv.addr).get("/private", &format!("Authorization: Bearer {token}\r\n"));
        assert_eq!(r.status, 200, "{driver}: {}", text(&r));
        assert!(
            !text(&r).to_ascii_lowercase().contains("authorization"),
            "{driver}"
        );
        // The token in the query (as a browser's WebSocket sends it) is ringrelay's too: the
        // rest of the query reaches the backend byte for byte, the token not at all. Before:
        // the query went as sent, token included.
        let r = Client::new(srv.addr).get(&format!("/private?a=1&token={token}&b=%2F+x"), "");
        assert_eq!(r.status, 200, "{driver}: {}", text(&r));
        assert!(
            text(&r).starts_with("rec GET /private?a=1&b=%2F+x HTTP/1.1"),
            "{driver}: {}",
            text(&r)
        );
        let raw = String::from_utf8_lossy(&rec.raw.lock().unwrap()).into_owned();
        assert!(!raw.contains(&token), "{driver}: {raw}");
        rec.raw.lock().unwrap().clear();
    }
}
