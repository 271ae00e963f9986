//! Starts the real `ringrelay` binary on loopback port 0 and gives tests clients to talk to it.
#![allow(dead_code)]

pub mod cluster;
pub mod dir;
pub mod haproxy;
pub mod process;
pub mod stuck;
pub mod tls_front;
pub mod tunnel;
pub mod upstream;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The node-to-node listener, when cluster mode has one.
    pub internal: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// The relay's "ringrelay listening" line, which names its listeners and how it runs.
    pub listening: String,
}

impl TestServer {
    pub fn start(driver: &str, workers: usize, env: &[(&str, &str)]) -> TestServer {
        Self::start_with(driver, workers, env, |_| {})
    }

    /// As `start`, letting the test adjust the command (limits, for one) before it runs.
    pub fn start_with(
        driver: &str,
        workers: usize,
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> TestServer {
        Self::start_at("127.0.0.1:0", driver, workers, env, adjust)
    }

    /// As `start_with`, with the public listener on `listen` (`[::]:0` for both families).
    pub fn start_at(
        listen: &str,
        driver: &str,
        workers: usize,
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> TestServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
        cmd.args([
            "serve",
            "--listen",
            listen,
            "--admin-listen",
            "127.0.0.1:0",
            "--driver",
            driver,
            "--workers",
            &workers.to_string(),
        ])
        .env("RUST_LOG", "info")
        // Every test client comes from 127.0.0.1: the per-IP connection rate is off unless
        // a test turns it on (tests/protection.rs does).
        .env("RINGRELAY_LIMITS_IP_CONNECT_RATE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        adjust(&mut cmd);
        let (child, log, line) = spawn_listening(&mut cmd);
        let field = |name: &str| listening_addr(&line, name);
        let internal = line.contains("internal=").then(|| field("internal"));
        TestServer {
            internal,
            addr: field("listen"),
            admin: field("admin"),
            child: Some(child),
            log,
            listening: line,
        }
    }

    /// The value of `name=` in the listening line (`tls`, `steering`, ...), quotes removed.
    pub fn listening_field(&self, name: &str) -> Option<&str> {
        let key = format!("{name}=");
        self.listening
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key.as_str()))
            .map(|v| v.trim_matches('"'))
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn connect(&self, path: &str) -> Ws {
        connect(&self.url(path))
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn http(&self, request: &str) -> (u16, String, String) {
        http(self.addr, request)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

/// Starts `cmd`, whose stderr the caller piped, collects that stderr into a log and waits for
/// its "ringrelay listening" line (every process of an upgrade chain inherits the same pipe):
/// the child, the log, the line.
pub fn spawn_listening(cmd: &mut Command) -> (Child, Arc<Mutex<Vec<String>>>, String) {
    let mut child = cmd.spawn().expect("spawn ringrelay");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ringrelay listening") {
                let _ = tx.send(line.clone());
            }
            log2.lock().unwrap().push(line);
        }
    });
    let line = rx
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
    (child, log, line)
}

/// The address after `name=` in a listening line.
pub fn listening_addr(line: &str, name: &str) -> SocketAddr {
    let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub type Ws = WebSocket<TcpStream>;

pub fn connect(url: &str) -> Ws {
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let (ws, _) = tungstenite::client::client(url, stream).expect("upgrade");
    ws
}

/// Next data message, answering nothing else (tungstenite answers pings itself).
pub fn recv(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("read") {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

pub fn recv_text(ws: &mut Ws) -> String {
    match recv(ws) {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

pub fn recv_event(ws: &mut Ws) -> serde_json::Value {
    serde_json::from_str(&recv_text(ws)).unwrap()
}

/// Reads until the server's close frame; returns its code.
pub fn recv_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(Message::Close(c)) => return c.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return None
            }
            Err(e) => panic!("error before close: {e}"),
        }
    }
}

pub fn close(ws: &mut Ws, code: u16) {
    let _ = ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    }));
    while ws.read().is_ok() {}
}

/// One HTTP request over a raw socket: status, head, body.
pub fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

/// A raw client: does the upgrade by hand, then sends whatever bytes a test wants.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn upgrade(addr: SocketAddr, path: &str) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Raw::upgrade_on(s, path)
    }

    /// As `upgrade`, from the loopback address `source`.
    pub fn upgrade_from(source: &str, addr: SocketAddr, path: &str) -> Raw {
        Raw::upgrade_on(tcp_from(source, addr), path)
    }

    fn upgrade_on(mut s: TcpStream, path: &str) -> Raw {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Raw { s, buf: Vec::new() };
        let head = raw.read_until(b"\r\n\r\n");
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        raw
    }

    fn read_until(&mut self, pat: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(pat.len()).position(|w| w == pat) {
                return self.buf.drain(..i + pat.len()).collect();
            }
            self.fill();
        }
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        let n = self.s.read(&mut tmp).unwrap_or(0);
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    /// Next frame from the server: (fin, opcode, payload), or None at EOF.
    pub fn frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let len7 = (self.buf[1] & 0x7f) as usize;
                let (len, hl) = match len7 {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n, 2),
                };
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are never masked");
                if len != usize::MAX && self.buf.len() >= hl + len {
                    let b0 = self.buf[0];
                    let payload = self.buf[hl..hl + len].to_vec();
                    self.buf.drain(..hl + len);
                    return Some((b0 & 0x80 != 0, b0 & 0x0f, payload));
                }
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// Skips pings and events until a close frame; returns its code.
    pub fn close_code(&mut self) -> Option<u16> {
        while let Some((_, op, p)) = self.frame() {
            if op == 8 {
                return if p.len() >= 2 {
                    Some(u16::from_be_bytes([p[0], p[1]]))
                } else {
                    Some(1005)
                };
            }
        }
        None
    }
}

/// A masked client frame.
/// The next event (text frame) a raw client gets, skipping pings.
pub fn next_event(r: &mut Raw) -> serde_json::Value {
    loop {
        let (_, op, p) = r.frame().expect("connection ended before an event");
        if op == 1 {
            return serde_json::from_slice(&p).unwrap();
        }
    }
}

/// A two-way resume sender, raw: joins `session` as role a with `resume=0` and events, and
/// reads its `connected` (which carries `acked`).
pub fn join_sender(srv: &TestServer, session: &str) -> (Raw, serde_json::Value) {
    let mut a = Raw::upgrade(
        srv.addr,
        &format!("/v1/relay/{session}?role=a&events=1&resume=0"),
    );
    let connected = next_event(&mut a);
    assert_eq!(connected["type"], "connected", "{connected}");
    (a, connected)
}

pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Generates one `#[test]` per driver from a function taking the driver name.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod io_uring { $(#[test] fn $name() { super::$name("io_uring") })* }
        mod epoll { $(#[test] fn $name() { super::$name("epoll") })* }
    };
}

/// The admin /stats document.
pub fn stats(srv: &TestServer) -> serde_json::Value {
    let (status, _, body) = get(srv.admin, "/stats");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A total counter from /stats.
pub fn counter(srv: &TestServer, name: &str) -> u64 {
    stats(srv)["totals"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Polls /stats until `check` holds or 10 s pass; returns the last document either way.
pub fn stats_when(
    srv: &TestServer,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = stats(srv);
        if check(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP connection to `addr` from the loopback address `source` (127.0.0.0/8 is all ours, so
/// tests can be several clients at once).
pub fn tcp_from(source: &str, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// An upgrade request with extra header lines; returns status, head and body when refused,
/// or the WebSocket when it was upgraded.
pub fn try_upgrade(
    stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String, String)> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let head = resp
                .headers()
                .iter()
                .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\r\n");
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, head, body))
        }
        Err(e) => panic!("upgrade to {path} failed oddly: {e}"),
    }
}

/// Asserts a refusal's status and the JSON body's `code` (and that `error` is a sentence).
pub fn assert_refused(r: Result<Ws, (u16, String, String)>, status: u16, code: &str) -> String {
    let (got, head, body) = match r {
        Ok(_) => panic!("expected {status} {code}, got an upgrade"),
        Err(e) => e,
    };
    assert_eq!(got, status, "{head}\n{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(v["code"], code, "{body}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    head
}

/// Runs `ringrelay load --url URL ARGS...` to completion.
pub fn run_load(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["load", "--url", url])
        .args(args)
        .output()
        .expect("run ringrelay load")
}
