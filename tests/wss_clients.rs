//! `ringrelay agent` and `ringrelay load` over `wss://` (issue 18), against the real binary:
//! a plain relay behind haproxy terminating TLS with a CA and a certificate made here.
//!
//! Before: both clients refused any URL but `ws://` at start ("only ws:// URLs are
//! supported"), so none of this could run: an agent on a user's machine needed a local TLS
//! tunnel to reach a relay behind TLS, and load could not measure TLS at all.
//!
//! Each test skips (saying why) when haproxy is missing, unless RINGRELAY_REQUIRE_HAPROXY=1.

mod common;

use common::cluster::wait_until;
use common::tls_front::{Pki, TlsFront};
use common::TestServer;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A child process whose stderr is collected line by line; killed on drop.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringrelay");
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, log }
    }

    fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn wait_for(&self, needle: &str, times: usize) {
        wait_until(Duration::from_secs(10), needle, || {
            self.count(needle) >= times
        });
    }

    fn text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ringrelay load --mode http-target` as the agent's local API; its address.
fn upstream(driver: &str) -> (Proc, SocketAddr) {
    let p = Proc::spawn(&[
        "load",
        "--mode",
        "http-target",
        "--listen",
        "127.0.0.1:0",
        "--driver",
        driver,
    ]);
    p.wait_for("http-target listening on", 1);
    let line = p.text();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (p, addr)
}

/// curl over https through the TLS front, trusting `ca`: (status, body).
fn curl(url: &str, ca: &std::path::Path, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args([
            "-X",
            "POST",
            "--data-binary",
            body,
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

fn agent(driver: &str, relay: &str, session: &str, target: SocketAddr, extra: &[&str]) -> Proc {
    let target = format!("http://{target}");
    let mut args = vec![
        "agent",
        "--relay",
        relay,
        "--session",
        session,
        "--target",
        &target,
        "--driver",
        driver,
        "--backoff-initial",
        "50ms",
        "--backoff-max",
        "200ms",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args)
}

/// The agent joins over wss, serves a request bridged from curl over https (curl → haproxy
/// → relay → agent → the local API and back), then comes back over wss after the TLS front
/// went away and returned, exactly as over ws: back-off, reconnect, requests served again.
fn agent_over_wss_serves_bridged_requests_and_reconnects(driver: &str) {
    let pki = Pki::new("agent");
    let relay = TestServer::start(driver, 1, &[]);
    let Some(front) = TlsFront::start(&pki, relay.addr) else {
        return;
    };
    let (_api, api) = upstream(driver);
    let ca = pki.ca.to_str().unwrap();
    let a = agent(driver, &front.wss(), "wss-agent", api, &["--ca-file", ca]);
    a.wait_for("connected to the relay", 1);
    let url = format!(
        "https://localhost:{}/v1/http/wss-agent/echo?x=1",
        front.port
    );
    let (status, body) = curl(&url, &pki.ca, "over tls both ways");
    assert_eq!(status, 200, "{body}\n{}", a.text());
    assert_eq!(body, "over tls both ways");
    // The TLS front goes away: the agent loses the relay and retries with its back-off.
    let port = front.port;
    drop(front);
    a.wait_for("reconnecting", 2);
    let _front = TlsFront::start_on(port, &pki, relay.addr).expect("haproxy ran a moment ago");
    a.wait_for("connected to the relay", 2);
    let (status, body) = curl(&url, &pki.ca, "and again");
    assert_eq!((status, body.as_str()), (200, "and again"), "{}", a.text());
}

/// Trusting only another CA, the agent refuses the relay's certificate and says why (and
/// keeps trying: a relay's certificate can be fixed without restarting every agent); with
/// `--insecure` it connects and logs a warning first.
fn agent_refuses_an_untrusted_relay_and_warns_when_insecure(driver: &str) {
    let pki = Pki::new("agent-ca");
    let relay = TestServer::start(driver, 1, &[]);
    let Some(front) = TlsFront::start(&pki, relay.addr) else {
        return;
    };
    let (_api, api) = upstream(driver);
    let other = pki.other_ca.to_str().unwrap();
    let a = agent(
        driver,
        &front.wss(),
        "untrusted",
        api,
        &["--ca-file", other],
    );
    a.wait_for("cannot connect to the relay", 2);
    let log = a.text();
    assert!(log.contains("certificate is not trusted"), "{log}");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert_eq!(a.count("connected to the relay"), 0, "{log}");
    drop(a);
    let a = agent(driver, &front.wss(), "insecure", api, &["--insecure"]);
    a.wait_for("connected to the relay", 1);
    let log = a.text();
    assert!(
        log.contains("WARN") && log.contains("NOT verified"),
        "{log}"
    );
    drop(a);
    // wss:// to the relay's plain port: the relay waits for an HTTP head that a ClientHello
    // never completes, so the attempt times out, and the agent says what to check.
    let plain = format!("wss://{}", relay.addr);
    let a = agent(
        driver,
        &plain,
        "plain",
        api,
        &["--insecure", "--connect-timeout", "300ms"],
    );
    a.wait_for("is the relay's port a TLS one?", 1);
    // The flags are checked at start: both at once, or either with ws://, is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["agent", "--relay", &relay.url(""), "--session", "s"])
        .args(["--target", &format!("http://{api}"), "--insecure"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wss://"));
}

/// Runs `ringrelay load --json` to its end: (success, report, stderr).
fn load(url: &str, args: &[&str]) -> (bool, Value, String) {
    let out = common::run_load(url, &[&["--json", "--warmup", "0s"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (out.status.success(), report, stderr)
}

/// Pairs over wss with 64 B and 64 KiB messages: every message arrives, each connection's
/// TLS handshake is timed, and the report names the TLS spoken.
fn load_pairs_over_wss(driver: &str) {
    let pki = Pki::new("pairs");
    let relay = TestServer::start(driver, 1, &[]);
    let Some(front) = TlsFront::start(&pki, relay.addr) else {
        return;
    };
    let ca = pki.ca.to_str().unwrap();
    for (size, url) in [("64", front.wss()), ("65536", front.wss_by_name())] {
        let args = [
            "--ca-file",
            ca,
            "--pairs",
            "2",
            "--size",
            size,
            "--window",
            "4",
            "--duration",
            "1s",
            "--driver",
            driver,
        ];
        let (ok, r, err) = load(&url, &args);
        assert!(ok, "{r}\n{err}");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["delivered"], r["sent"], "{r}");
        assert_eq!(r["size"].as_u64().unwrap().to_string(), size);
        assert_eq!(r["tls"]["insecure"], false, "{r}");
        let name = if url.contains("localhost") {
            "localhost"
        } else {
            "127.0.0.1"
        };
        assert_eq!(r["tls"]["server_name"], name, "{r}");
        // Two connections per pair, each with its handshake timed.
        assert_eq!(r["setup_us"]["tls_handshake"]["count"], 4, "{r}");
        assert!(!err.contains("WARNING"), "{err}");
    }
}

/// `--mode connect`: new TLS connections back to back (connect, handshake, upgrade, close),
/// counted with each step's percentiles; the same over plain ws has no handshake step.
fn load_connect_mode_counts_new_tls_connections(driver: &str) {
    let pki = Pki::new("connect");
    let relay = TestServer::start(driver, 1, &[]);
    let Some(front) = TlsFront::start(&pki, relay.addr) else {
        return;
    };
    let ca = pki.ca.to_str().unwrap();
    let args = [
        "--mode",
        "connect",
        "--pairs",
        "4",
        "--duration",
        "1s",
        "--driver",
        driver,
    ];
    let (ok, r, err) = load(&front.wss(), &[&args[..], &["--ca-file", ca]].concat());
    assert!(ok, "{r}\n{err}");
    assert_eq!(r["mode"], "connect", "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let cycles = r["cycles"].as_u64().unwrap();
    assert!(cycles > 0, "{r}");
    assert!(r["cycles_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let setup = &r["setup_us"];
    for step in ["tcp_connect", "tls_handshake", "upgrade", "cycle"] {
        assert_eq!(setup[step]["count"].as_u64(), Some(cycles), "{step}: {r}");
        assert!(
            setup[step]["p50"].as_u64() <= setup[step]["p99"].as_u64(),
            "{r}"
        );
    }
    // The relay saw every one of them come and go.
    let (ok, r, err) = load(&relay.url(""), &args);
    assert!(ok, "{r}\n{err}");
    assert!(r["cycles"].as_u64().unwrap() > 0, "{r}");
    assert!(r["setup_us"]["tls_handshake"].is_null(), "{r}");
    assert!(r["tls"].is_null(), "{r}");
}

/// A relay whose certificate the given CA did not sign is refused with the reason, before
/// anything is measured; `--insecure` runs, with a warning at start and in the report.
fn load_refuses_an_untrusted_relay_and_warns_when_insecure(driver: &str) {
    let pki = Pki::new("load-ca");
    let relay = TestServer::start(driver, 1, &[]);
    let Some(front) = TlsFront::start(&pki, relay.addr) else {
        return;
    };
    let other = pki.other_ca.to_str().unwrap();
    let base = ["--pairs", "1", "--duration", "300ms", "--driver", driver];
    let (ok, _, err) = load(&front.wss(), &[&base[..], &["--ca-file", other]].concat());
    assert!(!ok, "{err}");
    assert!(err.contains("certificate is not trusted"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let (ok, r, err) = load(&front.wss(), &[&base[..], &["--insecure"]].concat());
    assert!(ok, "{r}\n{err}");
    assert!(
        err.contains("WARNING") && err.contains("NOT verified"),
        "{err}"
    );
    assert_eq!(r["tls"]["insecure"], true, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    // Both flags at once, or either over ws://, are refused at start.
    let (ok, _, err) = load(
        &front.wss(),
        &[&base[..], &["--insecure", "--ca-file", other]].concat(),
    );
    assert!(!ok && err.contains("--ca-file and --insecure"), "{err}");
    let (ok, _, err) = load(&relay.url(""), &[&base[..], &["--insecure"]].concat());
    assert!(!ok && err.contains("wss://"), "{err}");
}

/// `--mode http` over https: requests to the bridge through the TLS front, a new connection
/// and a full TLS handshake each, answered by an agent that is itself on wss.
fn load_http_over_https_through_the_bridge(driver: &str) {
    let pki = Pki::new("https");
    let relay = TestServer::start(driver, 1, &[]);
    let Some(front) = TlsFront::start(&pki, relay.addr) else {
        return;
    };
    let (_api, api) = upstream(driver);
    let ca = pki.ca.to_str().unwrap();
    let a = agent(driver, &front.wss(), "https-load", api, &["--ca-file", ca]);
    a.wait_for("connected to the relay", 1);
    let url = format!("https://127.0.0.1:{}/v1/http/https-load/x", front.port);
    let args = [
        "--mode",
        "http",
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--ca-file",
        ca,
        "--driver",
        driver,
    ];
    let (ok, r, err) = load(&url, &args);
    assert!(ok, "{r}\n{err}");
    assert_eq!(r["errors"], 0, "{r}");
    let requests = r["requests"].as_u64().unwrap();
    assert!(requests > 0, "{r}");
    assert_eq!(r["status"]["200"].as_u64(), Some(requests), "{r}");
    assert_eq!(r["url"], url, "{r}");
    assert_eq!(r["tls"]["server_name"], "127.0.0.1", "{r}");
    assert_eq!(r["tls"]["insecure"], false, "{r}");
}

/// A relay serving TLS itself (`tls.listen`, issue 18) with the test CA's certificate; its
/// TLS port.
fn native_tls_relay(driver: &str, pki: &Pki) -> (TestServer, u16) {
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let env = [
        ("RINGRELAY_TLS_LISTEN", "127.0.0.1:0"),
        ("RINGRELAY_TLS_CERT_FILE", cert),
        ("RINGRELAY_TLS_KEY_FILE", key),
    ];
    let srv = TestServer::start(driver, 1, &env);
    let port = srv
        .listening_field("tls")
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no tls= in {}", srv.listening))
        .port();
    (srv, port)
}

/// The same clients against the relay's own TLS, no proxy in front: the agent serves a
/// request curl sends over https, load runs pairs over wss, `--mode connect` and `--mode
/// http` over https, and each report names the TLS version the relay negotiated.
fn agent_and_load_against_the_relays_native_tls(driver: &str) {
    let pki = Pki::new("native");
    let (relay, port) = native_tls_relay(driver, &pki);
    let (_api, api) = upstream(driver);
    let ca = pki.ca.to_str().unwrap();
    let wss = format!("wss://127.0.0.1:{port}");
    let a = agent(driver, &wss, "native", api, &["--ca-file", ca]);
    a.wait_for("connected to the relay", 1);
    let url = format!("https://localhost:{port}/v1/http/native/echo");
    let (status, body) = curl(&url, &pki.ca, "straight to the relay");
    assert_eq!(
        (status, body.as_str()),
        (200, "straight to the relay"),
        "{}",
        a.text()
    );
    let base = ["--ca-file", ca, "--duration", "1s", "--driver", driver];
    let (ok, r, err) = load(
        &wss,
        &[&base[..], &["--pairs", "2", "--size", "64"]].concat(),
    );
    assert!(ok, "{r}\n{err}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
    assert!(
        ["1.2", "1.3"].contains(&r["tls"]["version"].as_str().unwrap()),
        "{r}"
    );
    let (ok, r, err) = load(
        &wss,
        &[&base[..], &["--mode", "connect", "--pairs", "2"]].concat(),
    );
    assert!(ok, "{r}\n{err}");
    assert_eq!(r["errors"], 0, "{r}");
    let cycles = r["cycles"].as_u64().unwrap();
    assert!(cycles > 0, "{r}");
    assert_eq!(
        r["setup_us"]["tls_handshake"]["count"].as_u64(),
        Some(cycles),
        "{r}"
    );
    assert_eq!(r["tls"]["resumed_handshakes"], 0, "{r}");
    // With --tls-resume the relay's tickets are used: all but the first few resume.
    let resume = [
        &base[..],
        &["--mode", "connect", "--pairs", "2", "--tls-resume"],
    ]
    .concat();
    let (ok, r, err) = load(&wss, &resume);
    assert!(ok, "{r}\n{err}");
    let cycles = r["cycles"].as_u64().unwrap();
    let resumed = r["tls"]["resumed_handshakes"].as_u64().unwrap();
    assert!(resumed > 0 && resumed < cycles, "{r}");
    // Churn: each cycle's two connections make their handshakes, timed.
    let churn = [
        &base[..],
        &["--mode", "churn", "--pairs", "1", "--churn-messages", "5"],
    ]
    .concat();
    let (ok, r, err) = load(&wss, &churn);
    assert!(ok, "{r}\n{err}");
    assert_eq!(r["errors"], 0, "{r}");
    let cycles = r["cycles"].as_u64().unwrap();
    assert!(cycles > 0, "{r}");
    let handshakes = r["setup_us"]["tls_handshake"]["count"].as_u64();
    assert_eq!(handshakes, Some(2 * cycles), "{r}");
    assert!(r["tls"]["version"].is_string(), "{r}");
    let http = format!("https://127.0.0.1:{port}/v1/http/native/x");
    let (ok, r, err) = load(
        &http,
        &[&base[..], &["--mode", "http", "--concurrency", "2"]].concat(),
    );
    assert!(ok, "{r}\n{err}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    drop(relay);
}

both_drivers!(
    agent_and_load_against_the_relays_native_tls,
    load_http_over_https_through_the_bridge,
    agent_over_wss_serves_bridged_requests_and_reconnects,
    agent_refuses_an_untrusted_relay_and_warns_when_insecure,
    load_pairs_over_wss,
    load_connect_mode_counts_new_tls_connections,
    load_refuses_an_untrusted_relay_and_warns_when_insecure,
);
