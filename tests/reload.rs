//! Live reload on SIGHUP against the real binary: live keys reach new connections while a
//! pair opened before keeps exchanging messages; a JWT secret rotated with two keys refuses
//! no client; a broken config changes nothing and the log says why; a key that cannot change
//! live is named and left; systemd hears RELOADING=1 then READY=1.
//!
//! Before: the relay installed no SIGHUP handler, so SIGHUP met its default action and
//! killed the process with every connection on it; a config change needed a restart.

mod common;
use common::dir::Dir;
use common::*;
use ringrelay::auth::{mint_with_kid, unix_now, MintClaims};
use ringrelay::config::JwtAlgorithm;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tungstenite::Message;

fn start(driver: &str, config: &Path) -> TestServer {
    TestServer::start(driver, 2, &[("RINGRELAY_CONFIG", config.to_str().unwrap())])
}

fn sighup(srv: &TestServer) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGHUP) };
}

/// Sends SIGHUP and waits until /stats counts `ok` applied and `refused` refused reloads in
/// all; returns the `reload` object.
fn reload(srv: &TestServer, ok: u64, refused: u64) -> serde_json::Value {
    sighup(srv);
    let v = stats_when(srv, |v| {
        v["reload"]["reloads_ok"] == ok && v["reload"]["reloads_refused"] == refused
    });
    let r = v["reload"].clone();
    assert_eq!(
        (r["reloads_ok"].as_u64(), r["reloads_refused"].as_u64()),
        (Some(ok), Some(refused)),
        "{r}"
    );
    r
}

fn upgrade(
    srv: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String, String)> {
    let stream = TcpStream::connect(srv.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    try_upgrade(stream, srv.addr, path, headers)
}

fn from_origin(srv: &TestServer, origin: &str) -> Result<Ws, (u16, String, String)> {
    upgrade(srv, "/v1/relay/origin-check", &[("Origin", origin)])
}

const ORIGINS_A: &str = "[security]\nallowed_origins = [\"https://a.example\"]\n";
const ORIGINS_B: &str = "[security]\nallowed_origins = [\"https://b.example\"]\n";

fn live_keys_reach_new_connections_while_open_pairs_keep_going(driver: &str) {
    let dir = Dir::new("reload", &format!("live-{driver}"));
    let limits = "[limits]\nmax_message_bytes = 65536\n";
    let config = dir.write("relay.toml", &format!("{ORIGINS_A}{limits}"));
    let srv = start(driver, &config);
    let (mut a, mut b) = stuck::control_pair(&srv, "before", TIMEOUT);
    stuck::keeps_flowing(&mut a, &mut b, 3, TIMEOUT);
    assert!(from_origin(&srv, "https://a.example").is_ok());
    assert_refused(
        from_origin(&srv, "https://b.example"),
        403,
        "origin_not_allowed",
    );

    let smaller = "[limits]\nmax_message_bytes = 1024\n";
    dir.write("relay.toml", &format!("{ORIGINS_B}{smaller}"));
    let r = reload(&srv, 1, 0);
    assert_eq!(r["last_reload_outcome"], "ok");
    assert_eq!(r["last_reload_kept"], serde_json::json!([]));
    assert!(r["last_reload_unix"].as_u64().unwrap() + 60 > unix_now());

    // New connections follow the new allowlist...
    assert!(from_origin(&srv, "https://b.example").is_ok());
    assert_refused(
        from_origin(&srv, "https://a.example"),
        403,
        "origin_not_allowed",
    );
    // ...and the new message limit: a message over it closes a new pair's sender with 1009.
    let (mut c, mut d) = stuck::control_pair(&srv, "after", TIMEOUT);
    stuck::keeps_flowing(&mut c, &mut d, 1, TIMEOUT);
    c.send(Message::binary(vec![7; 2000])).unwrap();
    assert_eq!(recv_close(&mut c), Some(1009));
    // The pair opened before keeps going, under the limits it opened with.
    a.send(Message::binary(vec![7; 2000])).unwrap();
    assert_eq!(recv(&mut b), Message::binary(vec![7; 2000]));
    stuck::keeps_flowing(&mut a, &mut b, 5, TIMEOUT);
}

const OLD: &str = "old-secret-for-the-reload-test-0123456789";
const NEW: &str = "new-secret-for-the-reload-test-9876543210";

fn token(secret: &str, kid: Option<&str>, sid: &str) -> String {
    let claims = MintClaims {
        sid: sid.into(),
        exp: unix_now() + 600,
        ..MintClaims::default()
    };
    mint_with_kid(secret.as_bytes(), JwtAlgorithm::Hs256, kid, &claims)
}

fn with_token(srv: &TestServer, t: &str) -> Result<Ws, (u16, String, String)> {
    upgrade(
        srv,
        "/v1/relay/rotation",
        &[("Authorization", &format!("Bearer {t}"))],
    )
}

fn keys(dir: &Dir, kids: &[&str]) -> String {
    let items: Vec<String> = kids
        .iter()
        .map(|k| {
            let p = dir.0.join(format!("{k}.key"));
            format!("{{ kid = \"{k}\", secret_file = \"{}\" }}", p.display())
        })
        .collect();
    format!("[auth]\nkeys = [{}]\n", items.join(", "))
}

/// A client that keeps connecting with the token `which` names (0: old, 1: new) until told to
/// stop; counts refusals. It proves no client is refused at the instant of a swap.
struct Hammer {
    stop: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hammer {
    fn start(srv: &TestServer, tokens: [String; 2]) -> Hammer {
        let (stop, which) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (refused, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let addr = srv.addr;
        let (s, w, r, d) = (stop.clone(), which.clone(), refused.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most 2000 connections however slow the reloads are.
            for _ in 0..2000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let t = &tokens[w.load(Ordering::Relaxed)];
                let stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                let auth = format!("Bearer {t}");
                match try_upgrade(stream, addr, "/v1/echo", &[("Authorization", &auth)]) {
                    Ok(mut ws) => {
                        let _ = ws.close(None);
                    }
                    Err(_) => {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
                d.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Hammer {
            stop,
            which,
            refused,
            done,
            thread: Some(thread),
        }
    }

    /// Waits until it has made `n` more connections.
    fn more(&self, n: usize) {
        let target = self.done.load(Ordering::Relaxed) + n;
        let deadline = std::time::Instant::now() + TIMEOUT;
        while self.done.load(Ordering::Relaxed) < target && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.done.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

fn rotating_the_jwt_secret_with_two_keys_refuses_no_client(driver: &str) {
    let dir = Dir::new("reload", &format!("rotate-{driver}"));
    dir.write("old.key", &format!("{OLD}\n"));
    dir.write("new.key", &format!("{NEW}\n"));
    let config = dir.write("relay.toml", &keys(&dir, &["old"]));
    let srv = start(driver, &config);
    let old = token(OLD, Some("old"), "rotation");
    let new = token(NEW, Some("new"), "rotation");
    let old_no_kid = token(OLD, None, "rotation");
    assert!(with_token(&srv, &old).is_ok());
    assert!(with_token(&srv, &old_no_kid).is_ok());
    assert_refused(with_token(&srv, &new), 401, "token_signature");
    // A pair admitted with the old key, before any rotation.
    let t = token(OLD, Some("old"), "*");
    let bearer = format!("Bearer {t}");
    let mut a = upgrade(&srv, "/v1/relay/kept?role=a", &[("Authorization", &bearer)]).unwrap();
    let mut b = upgrade(&srv, "/v1/relay/kept?role=b", &[("Authorization", &bearer)]).unwrap();
    stuck::keeps_flowing(&mut a, &mut b, 2, TIMEOUT);

    let echo = |secret: &str, kid: &str| token(secret, Some(kid), "*");
    let hammer = Hammer::start(&srv, [echo(OLD, "old"), echo(NEW, "new")]);
    hammer.more(10);
    // Step 1: both keys. Clients with the old key are still let in across the swap.
    dir.write("relay.toml", &keys(&dir, &["old", "new"]));
    reload(&srv, 1, 0);
    hammer.more(10);
    assert!(with_token(&srv, &old).is_ok());
    assert!(with_token(&srv, &new).is_ok());
    assert!(with_token(&srv, &token(NEW, None, "rotation")).is_ok());
    // Step 2: the issuer moves to the new key; step 3: the old key goes.
    hammer.which.store(1, Ordering::Relaxed);
    hammer.more(10);
    dir.write("relay.toml", &keys(&dir, &["new"]));
    reload(&srv, 2, 0);
    hammer.more(10);
    let (made, refused) = hammer.finish();
    assert_eq!(
        refused, 0,
        "{refused} of {made} clients refused during the rotation"
    );
    assert!(made >= 40, "{made}");
    assert!(with_token(&srv, &new).is_ok());
    assert_refused(with_token(&srv, &old), 401, "token_signature");
    assert_refused(with_token(&srv, &old_no_kid), 401, "token_signature");
    assert_refused(
        with_token(&srv, &token(NEW, Some("nope"), "rotation")),
        401,
        "token_signature",
    );
    // The pair admitted with the old key is not disturbed by its key's removal.
    stuck::keeps_flowing(&mut a, &mut b, 3, TIMEOUT);
    // Removing the last key would turn auth off: refused, tokens still needed.
    dir.write("relay.toml", "");
    let r = reload(&srv, 2, 1);
    assert!(
        r["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("turn auth off"),
        "{r}"
    );
    assert_refused(
        upgrade(&srv, "/v1/relay/rotation", &[]),
        401,
        "token_missing",
    );
    assert!(with_token(&srv, &new).is_ok());
}

fn a_broken_config_changes_nothing_and_says_why(driver: &str) {
    let dir = Dir::new("reload", &format!("broken-{driver}"));
    let config = dir.write("relay.toml", ORIGINS_A);
    let srv = start(driver, &config);
    let (mut a, mut b) = stuck::control_pair(&srv, "control", TIMEOUT);
    let unchanged = |srv: &TestServer| {
        assert!(from_origin(srv, "https://a.example").is_ok());
        assert_refused(
            from_origin(srv, "https://b.example"),
            403,
            "origin_not_allowed",
        );
    };

    // Bad TOML.
    dir.write("relay.toml", &format!("{ORIGINS_B}max_headers = [\n"));
    let r = reload(&srv, 0, 1);
    assert_eq!(r["last_reload_outcome"], "refused");
    assert!(
        r["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("cannot parse"),
        "{r}"
    );
    assert!(srv.log_contains("config reload refused"));
    unchanged(&srv);
    // A value out of range, beside a valid change that is not applied either.
    dir.write(
        "relay.toml",
        &format!("{ORIGINS_B}[limits]\nmax_headers = 1\n"),
    );
    let r = reload(&srv, 0, 2);
    assert!(
        r["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("limits.max_headers"),
        "{r}"
    );
    unchanged(&srv);
    // A key whose secret file is missing: refused before any worker hears of it.
    let missing = dir.0.join("missing.key");
    let keys = format!(
        "[auth]\nkeys = [{{ kid = \"k\", secret_file = \"{}\" }}]\n",
        missing.display()
    );
    dir.write("relay.toml", &format!("{ORIGINS_B}{keys}"));
    let r = reload(&srv, 0, 3);
    assert!(
        r["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("auth.keys"),
        "{r}"
    );
    unchanged(&srv);
    // Auth stayed off: a client without a token still gets in.
    assert!(upgrade(&srv, "/v1/relay/no-token", &[]).is_ok());
    let m = get(srv.admin, "/metrics").2;
    assert!(m.contains("ringrelay_reloads_refused_total 3"), "{m}");
    assert!(m.contains("ringrelay_last_reload_success 0"), "{m}");
    stuck::keeps_flowing(&mut a, &mut b, 3, TIMEOUT);

    // Fixed, it applies.
    dir.write("relay.toml", ORIGINS_B);
    reload(&srv, 1, 3);
    assert!(from_origin(&srv, "https://b.example").is_ok());
    assert!(get(srv.admin, "/metrics")
        .2
        .contains("ringrelay_last_reload_success 1"));
}

fn a_key_that_cannot_change_live_is_named_and_left(driver: &str) {
    let dir = Dir::new("reload", &format!("fixed-{driver}"));
    let fixed = "[limits]\nread_buffer_bytes = 65536\n[session]\nping_interval = \"30s\"\n";
    let config = dir.write("relay.toml", &format!("{fixed}{ORIGINS_A}"));
    let srv = start(driver, &config);
    let changed = "[limits]\nread_buffer_bytes = 8192\n[session]\nping_interval = \"10s\"\n";
    dir.write("relay.toml", &format!("{changed}{ORIGINS_B}"));
    let r = reload(&srv, 1, 0);
    assert_eq!(
        r["last_reload_kept"],
        serde_json::json!(["limits.read_buffer_bytes", "session.ping_interval"]),
        "{r}"
    );
    assert!(srv.log_contains("limits.read_buffer_bytes, session.ping_interval"));
    // The live part of the same file is in force.
    assert!(from_origin(&srv, "https://b.example").is_ok());
    // The next reload compares with the config in force: the fixed keys are reported again
    // (still not applied), nothing else.
    let r = reload(&srv, 2, 0);
    assert_eq!(r["last_reload_kept"].as_array().unwrap().len(), 2, "{r}");
}

/// The per-IP connection rate, turned on by a reload: an address past the new burst is
/// refused, another address and a pair opened before are not.
fn a_per_ip_rate_turned_on_by_reload_applies_at_once(driver: &str) {
    let dir = Dir::new("reload", &format!("rate-{driver}"));
    let config = dir.write("relay.toml", "[limits]\nip_connect_rate = 0\n");
    // The harness turns the rate off in the environment, which would override the file.
    let srv = TestServer::start_with(driver, 2, &[], |cmd| {
        cmd.env_remove("RINGRELAY_LIMITS_IP_CONNECT_RATE")
            .env("RINGRELAY_CONFIG", &config);
    });
    let (mut a, mut b) = stuck::control_pair(&srv, "rate-control", TIMEOUT);
    let from = |source: &str| try_upgrade(tcp_from(source, srv.addr), srv.addr, "/v1/relay/r", &[]);
    for _ in 0..5 {
        assert!(from("127.0.0.5").is_ok(), "no rate before the reload");
    }
    dir.write(
        "relay.toml",
        "[limits]\nip_connect_rate = 60\nip_connect_burst = 2\n",
    );
    reload(&srv, 1, 0);
    assert!(from("127.0.0.6").is_ok());
    assert!(from("127.0.0.6").is_ok());
    assert_refused(from("127.0.0.6"), 429, "rate_limited");
    assert!(
        from("127.0.0.7").is_ok(),
        "another address has its own bucket"
    );
    stuck::keeps_flowing(&mut a, &mut b, 3, TIMEOUT);
}

/// A proxy trusted by a reload: its clients, named in X-Forwarded-For, are counted each on
/// its own from then on (the steering program still dates from the start, so the proxy's
/// connections take one more hop to each client's home core; the counts are exact).
fn a_proxy_trusted_by_reload_names_its_clients(driver: &str) {
    let dir = Dir::new("reload", &format!("proxy-{driver}"));
    let rate = "[limits]\nip_connect_rate = 60\nip_connect_burst = 2\n";
    let config = dir.write("relay.toml", rate);
    let srv = TestServer::start_with(driver, 2, &[], |cmd| {
        cmd.env_remove("RINGRELAY_LIMITS_IP_CONNECT_RATE")
            .env("RINGRELAY_CONFIG", &config);
    });
    let via = |proxy: &str, client: &str| {
        let path = "/v1/relay/p";
        try_upgrade(
            tcp_from(proxy, srv.addr),
            srv.addr,
            path,
            &[("X-Forwarded-For", client)],
        )
    };
    // Not trusted: the header is ignored and the proxy's own address is the client.
    assert!(via("127.0.0.20", "10.1.1.1").is_ok());
    assert!(via("127.0.0.20", "10.1.1.2").is_ok());
    assert_refused(via("127.0.0.20", "10.1.1.3"), 429, "rate_limited");
    let trusted = "[security]\ntrusted_proxies = [\"127.0.0.21\"]\n";
    dir.write("relay.toml", &format!("{rate}{trusted}"));
    reload(&srv, 1, 0);
    // Trusted now: each named client has its own bucket.
    for client in ["10.2.2.1", "10.2.2.2", "10.2.2.3", "10.2.2.4"] {
        assert!(via("127.0.0.21", client).is_ok(), "{client}");
    }
    assert!(via("127.0.0.21", "10.2.2.1").is_ok());
    assert_refused(via("127.0.0.21", "10.2.2.1"), 429, "rate_limited");
}

both_drivers!(
    a_proxy_trusted_by_reload_names_its_clients,
    a_per_ip_rate_turned_on_by_reload_applies_at_once,
    live_keys_reach_new_connections_while_open_pairs_keep_going,
    rotating_the_jwt_secret_with_two_keys_refuses_no_client,
    a_broken_config_changes_nothing_and_says_why,
    a_key_that_cannot_change_live_is_named_and_left,
);

/// systemd (`Type=notify`, `ExecReload=kill -HUP $MAINPID`) hears RELOADING=1 with the
/// monotonic time beside it, then READY=1 once every worker has the new config.
#[test]
fn systemd_hears_reloading_then_ready() {
    use std::os::unix::net::UnixDatagram;
    let dir = Dir::new("reload", "notify");
    let config = dir.write("relay.toml", ORIGINS_A);
    let path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let srv = TestServer::start_with("auto", 2, &[], |cmd| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env("RINGRELAY_CONFIG", &config);
    });
    let mut buf = [0u8; 512];
    // The supervisor's own status lines ("N connections, M sessions ...") come between.
    let mut next = || loop {
        let n = sock.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !(got.starts_with("STATUS=") && got.contains(" connections, ")) {
            return got;
        }
    };
    assert!(next().contains("READY=1"));
    dir.write("relay.toml", ORIGINS_B);
    sighup(&srv);
    let reloading = next();
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC beside RELOADING=1")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready = next();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains("STATUS=config reloaded"), "{ready}");
    assert!(from_origin(&srv, "https://b.example").is_ok());
    // Refused: still READY=1 (the relay runs, on the old config), and the reason on one
    // STATUS= line, though the TOML error quotes the file over several.
    dir.write("relay.toml", "[security\nallowed_origins = 1\n");
    sighup(&srv);
    assert!(next().contains("RELOADING=1"));
    let refused = next();
    let lines: Vec<&str> = refused.lines().collect();
    assert!(lines.contains(&"READY=1"), "{refused}");
    assert_eq!(lines.len(), 2, "one assignment per line: {refused}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STATUS=config reload refused: cannot parse")),
        "{refused}"
    );
}

/// `log.level` is live: debug lines appear after a reload turns them on. (The harness sets
/// RUST_LOG, which overrides `log.level`, so this server runs without it.)
#[test]
fn log_level_changes_on_reload() {
    let dir = Dir::new("reload", "log");
    let config = dir.write(
        "relay.toml",
        &format!("[log]\nlevel = \"info\"\n{ORIGINS_A}"),
    );
    let srv = TestServer::start_with("auto", 1, &[], |cmd| {
        cmd.env_remove("RUST_LOG").env("RINGRELAY_CONFIG", &config);
    });
    assert_refused(
        from_origin(&srv, "https://b.example"),
        403,
        "origin_not_allowed",
    );
    dir.write(
        "relay.toml",
        &format!("[log]\nlevel = \"debug\"\n{ORIGINS_A}"),
    );
    reload(&srv, 1, 0);
    assert!(srv.log_contains("log filter changed"));
    assert!(
        !srv.log_contains("request refused"),
        "at info, a refusal is not logged"
    );
    assert_refused(
        from_origin(&srv, "https://b.example"),
        403,
        "origin_not_allowed",
    );
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !srv.log_contains("request refused") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(srv.log_contains("request refused"), "at debug, it is");
}
