//! The binary upgrade on SIGUSR2 (docs/upgrade.md), its process side: the new process takes
//! every listener over a unix socket and binds nothing, the old one exits 0 once the new one
//! holds everything, and a new binary that fails in any way leaves the old one serving.
//! Against the real binary, on both drivers. What the live connections become is
//! tests/upgrade_live.rs's; these tests hold with either body of `relay::handover`.
//!
//! Before: SIGUSR2 was not handled, so its default action killed the relay: every connection
//! dropped, the port closed until something restarted it (the connector below saw refused
//! connections, and /health never answered again).

mod common;

use common::process::{become_subreaper, exit_code, kill};
use common::{connect, get, Ws};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// A relay started from a binary of its own (so a test can replace the file), whose
/// successive processes it follows through /health.
struct Relay {
    first: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// The pid serving now.
    pid: u32,
    _dir: common::dir::Dir,
    exe: PathBuf,
}

impl Relay {
    fn start(driver: &str, tag: &str, env: &[(&str, &str)]) -> Relay {
        Relay::start_limited(driver, tag, env, None)
    }

    /// `nofile`: the relay's open-file limit (RLIMIT_NOFILE, soft and hard), which the
    /// processes it starts inherit.
    fn start_limited(driver: &str, tag: &str, env: &[(&str, &str)], nofile: Option<u64>) -> Relay {
        become_subreaper();
        let dir = common::dir::Dir::new("upgrade", &format!("{tag}-{driver}"));
        let exe = dir.0.join("ringrelay");
        copy_executable(Path::new(env!("CARGO_BIN_EXE_ringrelay")), &exe);
        let mut cmd = Command::new(&exe);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--driver",
            driver,
        ])
        .env("RUST_LOG", "info")
        .env("RINGRELAY_LIMITS_IP_CONNECT_RATE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if !env.iter().any(|(k, _)| *k == "RINGRELAY_CONFIG") {
            cmd.args(["--workers", "2"]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: between fork and exec only setrlimit(2) runs, which is
            // async-signal-safe, on a value copied into the closure.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let (child, log, line) = common::spawn_listening(&mut cmd);
        let field = |name: &str| common::listening_addr(&line, name);
        let pid = child.id();
        Relay {
            first: Some(child),
            addr: field("listen"),
            admin: field("admin"),
            log,
            pid,
            _dir: dir,
            exe,
        }
    }

    fn health(&self) -> serde_json::Value {
        let admin = self.admin;
        let got = std::thread::spawn(move || get(admin, "/health")).join();
        match got {
            Ok((200, _, body)) => serde_json::from_str(&body).unwrap(),
            other => panic!("/health: {other:?}\nlog: {:#?}", self.log.lock().unwrap()),
        }
    }

    /// /stats's `upgrade` object. A scrape a worker did not answer in time (503 with
    /// Retry-After, on a loaded machine) is tried again.
    fn upgrade_stats(&self) -> serde_json::Value {
        for _ in 0..20 {
            let (status, _, body) = get(self.admin, "/stats");
            if status == 503 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            return v["upgrade"].clone();
        }
        panic!("/stats busy 20 times in a row");
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn count_log(&self, needle: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).count()
    }

    fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log_contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGUSR2, then waits for /health to show another pid; returns the old pid's exit code.
    fn upgrade(&mut self) -> (u32, Option<i32>) {
        let old = self.pid;
        kill(old, libc::SIGUSR2);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pid = self.health()["pid"].as_u64().unwrap() as u32;
            if pid != old {
                self.pid = pid;
                break;
            }
            assert!(Instant::now() < deadline, "no new process: {:?}", self.log);
            std::thread::sleep(Duration::from_millis(20));
        }
        let code = exit_code(old, Duration::from_secs(10));
        (old, code)
    }

    /// Replaces the binary at the path the relay was started from, as a package upgrade does
    /// (a new file renamed over the old one).
    fn replace_binary(&self, script: &str) {
        let src = self.exe.with_extension("src");
        std::fs::write(&src, script).unwrap();
        let tmp = self.exe.with_extension("new");
        copy_executable(&src, &tmp);
        std::fs::rename(&tmp, &self.exe).unwrap();
    }
}

/// Copies an executable through `cp`, so this (multi-threaded) test process never holds it
/// open for writing: a fork of another test's thread would inherit that descriptor for a
/// moment, and exec of the file would then fail with ETXTBSY.
fn copy_executable(from: &Path, to: &Path) {
    let ok = Command::new("cp").arg(from).arg(to).status().unwrap();
    assert!(ok.success());
    let ok = Command::new("chmod").arg("755").arg(to).status().unwrap();
    assert!(ok.success());
}

impl Drop for Relay {
    fn drop(&mut self) {
        kill(self.pid, libc::SIGKILL);
        let _ = exit_code(self.pid, Duration::from_secs(5));
        if let Some(mut c) = self.first.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Opens a WebSocket every 20 ms until stopped, each to a session of its own, and counts
/// the ones that were not upgraded (refused, reset, or no answer within 10 s).
struct Connector {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Connector {
    fn start(addr: SocketAddr) -> Connector {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), opened.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let url = format!("ws://{addr}/v1/relay/c{i}?role=a");
                match try_connect(addr, &url) {
                    Ok(mut ws) => {
                        o.fetch_add(1, Ordering::Relaxed);
                        let _ = ws.close(None);
                    }
                    Err(e) => f.lock().unwrap().push(format!("connection {i}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Connector {
            stop,
            opened,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops; returns how many were opened and the failures.
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().unwrap().join();
        let failed = self.failed.lock().unwrap().clone();
        (self.opened.load(Ordering::Relaxed), failed)
    }
}

fn try_connect(addr: SocketAddr, url: &str) -> Result<Ws, String> {
    let s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tungstenite::client::client(url, s)
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Two peers of a session of their own, connected now.
fn pair(addr: SocketAddr, session: &str) -> (Ws, Ws) {
    let x = connect(&format!("ws://{addr}/v1/relay/{session}?role=x"));
    let y = connect(&format!("ws://{addr}/v1/relay/{session}?role=y"));
    (x, y)
}

fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.read().expect("read") {
            Message::Binary(b) => return b.to_vec(),
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// A message each way.
fn flows(x: &mut Ws, y: &mut Ws, n: u32) {
    let m = format!("ping {n}").into_bytes();
    x.send(Message::binary(m.clone())).unwrap();
    assert_eq!(next_binary(y), m);
    let m = format!("pong {n}").into_bytes();
    y.send(Message::binary(m.clone())).unwrap();
    assert_eq!(next_binary(x), m);
}

fn five_upgrades_in_a_row_refuse_nobody(driver: &str) {
    let mut relay = Relay::start(driver, "five", &[]);
    let first = relay.health();
    assert_eq!(first["generation"], 0);
    let connector = Connector::start(relay.addr);
    std::thread::sleep(Duration::from_millis(100));
    for round in 1..=5u64 {
        let (old, code) = relay.upgrade();
        assert_eq!(code, Some(0), "process {old} exits 0 after round {round}");
        let h = relay.health();
        assert_eq!(h["generation"], round, "{h}");
        assert_ne!(h["pid"].as_u64().unwrap() as u32, old);
        // A pair connected to the new process flows.
        let (mut x, mut y) = pair(relay.addr, &format!("after{round}"));
        flows(&mut x, &mut y, round as u32);
        std::thread::sleep(Duration::from_millis(60));
    }
    let (opened, failed) = connector.finish();
    assert!(failed.is_empty(), "refused during the upgrades: {failed:?}");
    assert!(opened >= 20, "only {opened} connections were tried");
    let u = relay.upgrade_stats();
    assert_eq!(u["upgrades"], 5, "{u}");
    assert_eq!(u["upgrades_failed"], 0, "{u}");
    assert!(u["last_handover_ms"].as_u64().is_some(), "{u}");
    let (_, _, metrics) = get(relay.admin, "/metrics");
    assert!(metrics.contains("ringrelay_upgrades_total 5"), "{metrics}");
}

/// The failures below all leave the first process serving: /health shows it, the pair
/// connected before still flows, a new pair connects, and the failure is counted and logged.
fn still_serving(relay: &Relay, x: &mut Ws, y: &mut Ws, failed: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while relay.upgrade_stats()["upgrades_failed"] != failed {
        assert!(Instant::now() < deadline, "not counted: {:?}", relay.log);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        relay.wait_log(why, Duration::from_secs(5)),
        "{:?}",
        relay.log
    );
    assert!(relay.log_contains("upgrade failed: this process carries on serving"));
    assert_eq!(relay.health()["pid"].as_u64().unwrap() as u32, relay.pid);
    assert_eq!(relay.health()["generation"], 0);
    flows(x, y, failed as u32);
    let (mut a, mut b) = pair(relay.addr, &format!("new{failed}"));
    flows(&mut a, &mut b, 0);
}

fn a_broken_binary_leaves_the_old_process_serving(driver: &str) {
    // Long enough for a Python stand-in to start on a loaded machine.
    // Clients here answer a close frame only when they read: do not wait 5 s for one when the
    // handover's fallback closes the pair at the last, real, upgrade.
    let mut relay = Relay::start(
        driver,
        "broken",
        &[
            ("RINGRELAY_UPGRADE_TIMEOUT", "4s"),
            ("RINGRELAY_SESSION_CLOSE_TIMEOUT", "200ms"),
        ],
    );
    let (mut x, mut y) = pair(relay.addr, "control");
    flows(&mut x, &mut y, 0);
    let connector = Connector::start(relay.addr);
    // 1. A binary that cannot start.
    relay.replace_binary("#!/bin/sh\nexit 1\n");
    kill(relay.pid, libc::SIGUSR2);
    still_serving(&relay, &mut x, &mut y, 1, "exited (exit status: 1)");
    // 2. One that hangs past upgrade_timeout: killed, and the old one carries on.
    relay.replace_binary("#!/bin/sh\nexec sleep 30\n");
    let started = relay.count_log("SIGUSR2: upgrading to a new process");
    kill(relay.pid, libc::SIGUSR2);
    // A second SIGUSR2 while one runs is ignored, and said so. (Sent once the first was
    // taken: two pending at once would be one signal.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.count_log("SIGUSR2: upgrading to a new process") == started {
        assert!(Instant::now() < deadline, "{:?}", relay.log);
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(relay.pid, libc::SIGUSR2);
    still_serving(
        &relay,
        &mut x,
        &mut y,
        2,
        "no answer within upgrade_timeout (4s)",
    );
    assert!(relay.wait_log(
        "SIGUSR2 ignored: an upgrade is already under way",
        Duration::from_secs(5)
    ));
    // 3. One that takes the listeners, then crashes.
    relay.replace_binary(&fake(
        "h, fds = recv(s)\nwhile len(fds) < listeners(h): fds += recv(s)[1]\nos.kill(os.getpid(), signal.SIGSEGV)\n",
    ));
    kill(relay.pid, libc::SIGUSR2);
    still_serving(&relay, &mut x, &mut y, 3, "signal: 11");
    // 4. One that speaks a newer version of the handover.
    relay.replace_binary(&fake(
        "h, fds = recv(s)\nwhile len(fds) < listeners(h): fds += recv(s)[1]\ns.send(b'RRUP' + struct.pack('<HBI', 99, 3, 2))\ntime.sleep(30)\n",
    ));
    kill(relay.pid, libc::SIGUSR2);
    still_serving(&relay, &mut x, &mut y, 4, "upgrade format version 99");
    // 5. One that refuses (as a real one does when the worker count changed).
    relay.replace_binary(&fake(
        "h, fds = recv(s)\ns.send(b'RRUP' + struct.pack('<HB', 1, 8) + b'no thanks')\ntime.sleep(30)\n",
    ));
    kill(relay.pid, libc::SIGUSR2);
    still_serving(&relay, &mut x, &mut y, 5, "refused the upgrade: no thanks");
    let (opened, failed) = connector.finish();
    assert!(failed.is_empty(), "refused during the failures: {failed:?}");
    assert!(opened > 0);
    // And the real binary back at the path upgrades as usual.
    copy_executable(
        Path::new(env!("CARGO_BIN_EXE_ringrelay")),
        &relay.exe.with_extension("new"),
    );
    std::fs::rename(relay.exe.with_extension("new"), &relay.exe).unwrap();
    let (_, code) = relay.upgrade();
    assert_eq!(code, Some(0));
    assert_eq!(relay.upgrade_stats()["upgrades"], 1);
    assert_eq!(relay.upgrade_stats()["upgrades_failed"], 5, "carried over");
}

/// A stand-in for the new binary, in Python: reads the upgrade socket the relay names.
fn fake(body: &str) -> String {
    format!(
        "#!/usr/bin/env python3\nimport os, signal, socket, struct, time\n\
         s = socket.socket(fileno=int(os.environ['RINGRELAY_UPGRADE_FD']))\n\
         def recv(s):\n    m, anc, _, _ = s.recvmsg(70000, socket.CMSG_SPACE(200 * 4))\n    \
         fds = []\n    for lvl, typ, data in anc:\n        \
         fds += list(struct.unpack('<%di' % (len(data) // 4), data[:len(data) - len(data) % 4]))\n    \
         return m, fds\n\
         def listeners(h):\n    p, a, i, t = struct.unpack('<HBHH', h[11:18])\n    return p + a + i + t\n\
         {body}"
    )
}

/// A new process that took the listeners, said `taken` (so every worker of the old one
/// stopped accepting and exported its connections) and then died: the old one's workers are
/// told to resume and accept again, on both drivers (a paused accept loop starts again).
/// What the exported connections became is the handover's (its fallback closed them with
/// 1012), so only pairs connected afterwards are checked here.
fn a_new_process_dying_after_the_export_leaves_the_old_one_accepting(driver: &str) {
    let relay = Relay::start(driver, "exported", &[("RINGRELAY_UPGRADE_TIMEOUT", "5s")]);
    relay.replace_binary(&fake(
        "h, fds = recv(s)\nwhile len(fds) < listeners(h): fds += recv(s)[1]\n\
         s.send(b'RRUP' + struct.pack('<HBI', 1, 3, 2))\nrecv(s)\nos._exit(3)\n",
    ));
    let connector = Connector::start(relay.addr);
    kill(relay.pid, libc::SIGUSR2);
    let deadline = Instant::now() + Duration::from_secs(15);
    while relay.upgrade_stats()["upgrades_failed"] != 1 {
        assert!(Instant::now() < deadline, "not counted: {:?}", relay.log);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(relay.log_contains("upgrade failed: this process carries on serving"));
    for i in 0..3 {
        let (mut a, mut b) = pair(relay.addr, &format!("resumed{i}"));
        flows(&mut a, &mut b, i);
    }
    let (opened, failed) = connector.finish();
    assert!(
        failed.is_empty(),
        "refused around the failed upgrade: {failed:?}"
    );
    assert!(opened > 0);
    assert_eq!(relay.health()["pid"].as_u64().unwrap() as u32, relay.pid);
}

/// A new config with another worker count: the new process refuses, the old carries on.
fn another_worker_count_is_refused(driver: &str) {
    let dir = common::dir::Dir::new("upgrade", &format!("workers-config-{driver}"));
    let config = dir.write("ringrelay.toml", "workers = 2\n");
    let relay = Relay::start(
        driver,
        "workers",
        &[("RINGRELAY_CONFIG", config.to_str().unwrap())],
    );
    let (mut x, mut y) = pair(relay.addr, "control");
    dir.write("ringrelay.toml", "workers = 3\n");
    kill(relay.pid, libc::SIGUSR2);
    still_serving(
        &relay,
        &mut x,
        &mut y,
        1,
        "runs 3 worker(s), the running process 2",
    );
}

/// Under systemd (`Type=notify`, `ExecReload=kill -USR2 $MAINPID`, `NotifyAccess=main`):
/// RELOADING=1 at the signal, MAINPID=<new> from the old (main) process, and only then the
/// new process's READY=1, so systemd follows the new main process and takes its READY=1. (No systemd runs on the test
/// machine: this is its notify socket, as tests/reload.rs does it.)
fn systemd_hears_the_new_main_pid(driver: &str) {
    use std::os::unix::net::UnixDatagram;
    let dir = common::dir::Dir::new("upgrade", &format!("notify-socket-{driver}"));
    let path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let mut relay = Relay::start(
        driver,
        "notify",
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let mut buf = [0u8; 512];
    let mut heard_all = Vec::new();
    let mut next = || loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}: heard only {heard_all:?}"));
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        heard_all.push(got.clone());
        if !got.starts_with("STATUS=") && got != "WATCHDOG=1" {
            return got;
        }
    };
    let first = next();
    assert!(first.contains("READY=1"), "{first}");
    assert!(first.contains(&format!("MAINPID={}", relay.pid)), "{first}");
    let (old, code) = relay.upgrade();
    assert_eq!(code, Some(0));
    let reloading = next();
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    let mut heard = Vec::new();
    let ready = loop {
        let m = next();
        heard.push(m.clone());
        if m.contains("READY=1") {
            break m;
        }
    };
    let new_pid = format!("MAINPID={}", relay.pid);
    assert!(ready.contains(&new_pid), "{heard:?}");
    assert!(
        heard[..heard.len() - 1]
            .iter()
            .any(|m| m.contains(&new_pid)),
        "the old process names the new one before its READY=1: {heard:?}"
    );
    assert_ne!(relay.pid, old);
}

/// Idle connections (pairs that send nothing until checked) on a relay whose open-file
/// limit fits them once, not twice: about 17 descriptors of its own, 180 connections, a
/// limit of 300. The new process needs as many as the old, plus the 64 it keeps free.
const IDLE_PAIRS: usize = 90;
const NOFILE: u64 = 300;

fn idle_pairs(relay: &Relay, tag: &str) -> Vec<(Ws, Ws)> {
    (0..IDLE_PAIRS)
        .map(|i| pair(relay.addr, &format!("{tag}{i}")))
        .collect()
}

/// A message each way on every pair: a connection cut (no close frame: the old process
/// exited holding it) fails the read.
fn all_flow(pairs: &mut [(Ws, Ws)], n: u32) {
    for (x, y) in pairs.iter_mut() {
        flows(x, y, n);
    }
}

/// The old process hands over its connections' own descriptors: it needs none beyond them.
/// Before: it duplicated each one first, so with 180 connections under a limit of 300 about
/// 80 duplicates failed with EMFILE, those connections were left out of the share without a
/// word, and they were cut without a close frame when the old process exited.
fn connections_cross_on_a_limit_that_fits_them_once(driver: &str) {
    let mut relay = Relay::start_limited(driver, "nofile", &[], Some(NOFILE));
    let mut pairs = idle_pairs(&relay, "idle");
    all_flow(&mut pairs, 0);
    let (old, code) = relay.upgrade();
    assert_eq!(code, Some(0), "process {old} exits 0: {:?}", relay.log);
    all_flow(&mut pairs, 1);
    let u = relay.upgrade_stats();
    assert_eq!(
        u["connections_handed_over"],
        2 * IDLE_PAIRS as u64,
        "{u}\n{:?}",
        relay.log
    );
    assert!(!relay.log_contains("could not duplicate"));
}

/// A new process that cannot open the descriptors of the connections (a lower open-file
/// limit than the old one's) refuses the upgrade before any worker adopts anything, saying
/// why; the old one keeps every connection, and every pair flows.
fn a_new_process_short_of_descriptors_leaves_everyone_with_the_old(driver: &str) {
    let relay = Relay::start_limited(driver, "nofile-new", &[], Some(NOFILE));
    let mut pairs = idle_pairs(&relay, "kept");
    all_flow(&mut pairs, 0);
    let real = relay.exe.with_extension("real");
    copy_executable(Path::new(env!("CARGO_BIN_EXE_ringrelay")), &real);
    relay.replace_binary(&format!(
        "#!/bin/sh\nulimit -n 150\nexec {} \"$@\"\n",
        real.display()
    ));
    kill(relay.pid, libc::SIGUSR2);
    let (mut x, mut y) = pairs.pop().unwrap();
    still_serving(&relay, &mut x, &mut y, 1, "open-file limit 150");
    all_flow(&mut pairs, 1);
    assert_eq!(relay.upgrade_stats()["upgrades"], 0);
}

/// SIGTERM while an upgrade waits for the new process (here one that took the listeners and
/// said `taken`, so every worker exported and parked its connections, and then holds the
/// upgrade open without ever saying `holding`): the old process kills it, resumes, and stops
/// as a SIGTERM does: 1012 to every connection (with `state_dir`), the state written, exit
/// 0. Before: the stop ran beside the parked upgrade, and the process waited out
/// `upgrade_timeout` with its connections parked before it stopped.
fn sigterm_during_an_upgrade_abandons_it_and_stops_as_usual(driver: &str) {
    let dir = common::dir::Dir::new("upgrade", &format!("sigterm-state-{driver}"));
    let state = dir.0.join("state");
    let marker = dir.0.join("exported");
    let mut relay = Relay::start(
        driver,
        "sigterm",
        &[
            ("RINGRELAY_UPGRADE_TIMEOUT", "60s"),
            ("RINGRELAY_SESSION_CLOSE_TIMEOUT", "200ms"),
            ("RINGRELAY_SESSION_STATE_DIR", state.to_str().unwrap()),
        ],
    );
    let (mut x, mut y) = pair(relay.addr, "control");
    flows(&mut x, &mut y, 0);
    relay.replace_binary(&fake(&format!(
        "h, fds = recv(s)\nwhile len(fds) < listeners(h): fds += recv(s)[1]\n\
         s.send(b'RRUP' + struct.pack('<HBI', 1, 3, 2))\nrecv(s)\n\
         open({:?}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
        marker.to_str().unwrap()
    )));
    kill(relay.pid, libc::SIGUSR2);
    // The first share arrived: the workers exported (their connections are parked).
    let deadline = Instant::now() + Duration::from_secs(20);
    let child: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "no export: {:?}", relay.log);
        std::thread::sleep(Duration::from_millis(10));
    };
    let started = Instant::now();
    kill(relay.pid, libc::SIGTERM);
    assert_eq!(common::recv_close(&mut x), Some(1012), "{:?}", relay.log);
    assert_eq!(common::recv_close(&mut y), Some(1012));
    let code = exit_code(relay.pid, Duration::from_secs(20));
    assert_eq!(code, Some(0), "{:?}", relay.log);
    relay.first = None;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited out upgrade_timeout"
    );
    assert!(
        !Path::new(&format!("/proc/{child}")).exists(),
        "new process not killed"
    );
    assert!(relay.log_contains("stop signal during an upgrade: the upgrade is abandoned"));
    assert!(relay.log_contains("stopped by SIGTERM or SIGINT before the new process held"));
    assert!(state.join("ringrelay.state").exists(), "{:?}", relay.log);
}

fn echo_from(relay: &Relay, source: &str) -> Result<Ws, (u16, String, String)> {
    common::try_upgrade(
        common::tcp_from(source, relay.addr),
        relay.addr,
        "/v1/echo",
        &[],
    )
}

/// The per-IP connection-rate buckets cross with the share (handover format 2): an address
/// that spent its burst is still refused (429) right after the upgrade, one that spent part
/// of it has the rest, a fresh one its whole burst. Before: the new process started every
/// address with a full bucket, so an upgrade handed an attacker a fresh burst.
fn a_spent_connect_budget_stays_spent_across_an_upgrade(driver: &str) {
    let mut relay = Relay::start(
        driver,
        "connect-rate",
        &[
            ("RINGRELAY_LIMITS_IP_CONNECT_RATE", "1"),
            ("RINGRELAY_LIMITS_IP_CONNECT_BURST", "3"),
        ],
    );
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(echo_from(&relay, "127.0.0.51").expect("within the burst"));
    }
    common::assert_refused(echo_from(&relay, "127.0.0.51"), 429, "rate_limited");
    open.push(echo_from(&relay, "127.0.0.52").expect("a first connection"));
    let (_, code) = relay.upgrade();
    assert_eq!(code, Some(0), "{:?}", relay.log);
    common::assert_refused(echo_from(&relay, "127.0.0.51"), 429, "rate_limited");
    for _ in 0..2 {
        open.push(echo_from(&relay, "127.0.0.52").expect("the rest of its burst"));
    }
    common::assert_refused(echo_from(&relay, "127.0.0.52"), 429, "rate_limited");
    for _ in 0..3 {
        open.push(echo_from(&relay, "127.0.0.53").expect("a fresh address's burst"));
    }
    // The echo connections crossed too, and still answer.
    for ws in open.iter_mut() {
        ws.send(Message::text("still here")).unwrap();
        assert_eq!(common::recv_text(ws), "still here");
    }
}

both_drivers!(
    a_spent_connect_budget_stays_spent_across_an_upgrade,
    sigterm_during_an_upgrade_abandons_it_and_stops_as_usual,
    connections_cross_on_a_limit_that_fits_them_once,
    a_new_process_short_of_descriptors_leaves_everyone_with_the_old,
    systemd_hears_the_new_main_pid,
    five_upgrades_in_a_row_refuse_nobody,
    a_broken_binary_leaves_the_old_process_serving,
    a_new_process_dying_after_the_export_leaves_the_old_one_accepting,
    another_worker_count_is_refused,
);
