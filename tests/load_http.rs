//! Verifies that `ringrelay load --mode http` counts answers, statuses and errors right, and
//! always stops: against `--mode http-target` (both drivers, both connection modes), against
//! a closed port, a server that never answers, and the relay's own 404 on `/v1/http/...`.
//! Every process is the real binary, on loopback, bounded in time.

mod common;

use common::TestServer;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any one load run may take here (they are all about a second long).
const RUN_BOUND: Duration = Duration::from_secs(60);

/// `ringrelay load --mode http-target` on a free port, killed on drop.
struct Target {
    child: Child,
    addr: SocketAddr,
}

impl Target {
    fn start(driver: &str, size: usize) -> Target {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
            .args(["load", "--mode", "http-target", "--listen", "127.0.0.1:0"])
            .args(["--size", &size.to_string(), "--driver", driver])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the http target");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(common::TIMEOUT)
            .expect("the http target did not start");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Target { child, addr }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ringrelay load --mode http --url URL --json ARGS...`, killed if it outlives
/// `RUN_BOUND`. Returns whether it succeeded, its report, and how long it took.
fn load(url: &str, args: &[&str]) -> (bool, Value, Duration) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["load", "--mode", "http", "--url", url, "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringrelay load");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > RUN_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringrelay load ran past {RUN_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let line = stdout.lines().last().unwrap_or_default();
    let report =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (status.success(), report, start.elapsed())
}

fn u(r: &Value, key: &str) -> u64 {
    r[key].as_u64().unwrap_or_else(|| panic!("no {key} in {r}"))
}

/// Every request answered with 200, nothing else.
fn assert_clean(r: &Value) {
    assert!(u(r, "requests") > 0, "{r}");
    assert_eq!(u(r, "errors"), 0, "{r}");
    assert_eq!(u(r, "non_2xx"), 0, "{r}");
    assert_eq!(u(r, "ok"), u(r, "requests"), "{r}");
    assert_eq!(r["status"]["200"].as_u64(), Some(u(r, "requests")), "{r}");
    assert!(r["requests_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let lat = &r["latency_us"];
    assert_eq!(lat["count"].as_u64(), Some(u(r, "ok")), "{r}");
    assert!(lat["p50"].as_u64() <= lat["p90"].as_u64(), "{r}");
    assert!(lat["p99"].as_u64() <= lat["max"].as_u64(), "{r}");
}

const SHORT: [&str; 4] = ["--duration", "1s", "--warmup", "200ms"];

fn direct(driver: &str) {
    let t = Target::start(driver, 64);
    let url = format!("http://{}/hello", t.addr);
    let mut args = vec!["--concurrency", "8", "--driver", driver];
    args.extend_from_slice(&SHORT);
    let (ok, r, _) = load(&url, &args);
    assert!(ok, "{r}");
    assert_clean(&r);
    assert_eq!(r["keep_alive"], false);
    // A new connection for every request, warm-up included.
    assert!(u(&r, "connections") >= u(&r, "requests"), "{r}");

    args.push("--keep-alive");
    let (ok, r, _) = load(&url, &args);
    assert!(ok, "{r}");
    assert_clean(&r);
    // One connection per slot, for the whole run.
    assert_eq!(u(&r, "connections"), 8, "{r}");
    assert!(u(&r, "requests") > 8, "{r}");
}

#[test]
fn direct_on_io_uring() {
    direct("io_uring");
}

#[test]
fn direct_on_epoll() {
    direct("epoll");
}

#[test]
fn post_bodies_are_sent_and_echoed() {
    let t = Target::start("auto", 64);
    let url = format!("http://{}/upload", t.addr);
    let mut args = vec!["--method", "POST", "--size", "1000", "--concurrency", "4"];
    args.extend_from_slice(&SHORT);
    let (ok, r, _) = load(&url, &args);
    assert!(ok, "{r}");
    assert_clean(&r);
    assert_eq!((u(&r, "size"), r["method"].as_str()), (1000, Some("POST")));
    // The target echoes the body, so every answer is 1000 bytes, not the 64 of filler.
    let mb = r["mb_per_s"].as_f64().unwrap();
    let want = r["requests_per_s"].as_f64().unwrap() * 1000.0 / 1e6;
    assert!((mb - want).abs() < 1e-9 * want.max(1.0), "{r}");
}

#[test]
fn a_closed_port_is_reported_not_waited_on() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The listener is gone: nothing listens on that port now.
    let (ok, r, took) = load(
        &format!("http://{addr}/"),
        &["--concurrency", "4", "--duration", "1s", "--warmup", "0s"],
    );
    assert!(!ok, "a run where nothing was answered fails: {r}");
    assert_eq!(u(&r, "requests"), 0, "{r}");
    assert!(u(&r, "errors") > 0, "{r}");
    assert_eq!(u(&r, "connect_errors"), u(&r, "errors"), "{r}");
    assert!(
        r["error_samples"][0].as_str().unwrap().contains("connect"),
        "{r}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn a_server_that_never_answers_times_out() {
    // Connections complete in the backlog, and nothing ever reads them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let (ok, r, took) = load(
        &format!("http://{}/", silent.local_addr().unwrap()),
        &[
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--timeout",
            "300ms",
        ],
    );
    assert!(!ok, "{r}");
    assert_eq!(u(&r, "requests"), 0, "{r}");
    assert!(u(&r, "timeouts") >= 2, "{r}");
    assert_eq!(u(&r, "timeouts"), u(&r, "errors"), "{r}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn non_2xx_answers_are_counted_apart() {
    // No agent in the session: the relay answers every bridged request 502.
    let relay = TestServer::start("auto", 1, &[]);
    let url = format!("http://{}/v1/http/x/y", relay.addr);
    let mut args = vec!["--concurrency", "4"];
    args.extend_from_slice(&SHORT);
    let (ok, r, _) = load(&url, &args);
    assert!(ok, "answered, if not with 2xx: {r}");
    assert!(u(&r, "requests") > 0, "{r}");
    assert_eq!(u(&r, "errors"), 0, "{r}");
    assert_eq!(u(&r, "ok"), 0, "{r}");
    assert_eq!(u(&r, "non_2xx"), u(&r, "requests"), "{r}");
    assert_eq!(r["status"]["502"].as_u64(), Some(u(&r, "requests")), "{r}");
    assert_eq!(r["requests_per_s"].as_f64(), Some(0.0), "{r}");
    assert_eq!(r["latency_us"]["count"].as_u64(), Some(0), "{r}");
}

/// Sends `request` raw and reads until the target closes: the whole answer text.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the target closes after Connection: close");
    String::from_utf8(out).unwrap()
}

#[test]
fn target_keeps_alive_echoes_and_closes_when_asked() {
    let t = Target::start("auto", 5);
    // Two pipelined requests on one connection; the second asks to close.
    let text = raw(
        t.addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping",
    );
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\nABCDE\
         HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping"
    );
    // A chunked body is echoed decoded; HEAD gets the length and no body; HTTP/1.0 closes.
    let text = raw(
        t.addr,
        b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          HEAD / HTTP/1.0\r\n\r\n",
    );
    assert!(
        text.contains("Content-Length: 3\r\n\r\nabcHTTP/1.1 200"),
        "{text}"
    );
    assert!(
        text.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n"),
        "{text}"
    );
    let text = raw(t.addr, b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
}
