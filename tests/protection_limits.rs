//! Per-IP limits, capacity, per-connection rates and hostile clients, each against the real
//! server with real clients. Per-IP figures here use one worker; tests/protection_ip.rs shows
//! them exact with 2 and 4.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::Message;

fn upgrade_from(srv: &TestServer, source: &str, path: &str) -> Result<Ws, (u16, String, String)> {
    try_upgrade(tcp_from(source, srv.addr), srv.addr, path, &[])
}

fn retry_after(head: &str) -> u64 {
    head.lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap_or_else(|| panic!("no Retry-After in {head}"))
        .trim()
        .parse()
        .unwrap()
}

fn connection_rate_per_ip(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_LIMITS_IP_CONNECT_RATE", "60"),
            ("RINGRELAY_LIMITS_IP_CONNECT_BURST", "3"),
            ("RINGRELAY_SECURITY_TRUSTED_PROXIES", "127.0.0.9"),
        ],
    );
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(upgrade_from(&srv, "127.0.0.1", "/v1/echo").unwrap());
    }
    let head = assert_refused(
        upgrade_from(&srv, "127.0.0.1", "/v1/echo"),
        429,
        "rate_limited",
    );
    // One per second refills: the wait is at most a second.
    assert_eq!(retry_after(&head), 1);
    // Another address has its own allowance.
    open.push(upgrade_from(&srv, "127.0.0.2", "/v1/echo").unwrap());
    // Behind a trusted proxy, the client named in its header is the one counted...
    let via_proxy = |client: &str| {
        let xff = [("X-Forwarded-For", client)];
        try_upgrade(tcp_from("127.0.0.9", srv.addr), srv.addr, "/v1/echo", &xff)
    };
    for _ in 0..3 {
        open.push(via_proxy("203.0.113.5").unwrap());
    }
    assert_refused(via_proxy("203.0.113.5"), 429, "rate_limited");
    open.push(via_proxy("203.0.113.6").unwrap());
    // ...but from anyone else the header is ignored: 127.0.0.1 is still out of allowance.
    let forged = [("X-Forwarded-For", "198.51.100.1")];
    let r = try_upgrade(
        tcp_from("127.0.0.1", srv.addr),
        srv.addr,
        "/v1/echo",
        &forged,
    );
    assert_refused(r, 429, "rate_limited");
    assert_eq!(counter(&srv, "ip_rate_refused"), 3);
    // After the refill, 127.0.0.1 connects again.
    std::thread::sleep(Duration::from_millis(1100));
    open.push(upgrade_from(&srv, "127.0.0.1", "/v1/echo").unwrap());
}

fn open_connections_per_ip(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP", "2")],
    );
    let mut a = upgrade_from(&srv, "127.0.0.3", "/v1/relay/ip-a").unwrap();
    let _b = upgrade_from(&srv, "127.0.0.3", "/v1/echo").unwrap();
    let head = assert_refused(
        upgrade_from(&srv, "127.0.0.3", "/v1/relay/ip-b"),
        429,
        "too_many_connections",
    );
    assert!(retry_after(&head) >= 1);
    let _c = upgrade_from(&srv, "127.0.0.4", "/v1/relay/ip-b").unwrap();
    close(&mut a, 1000);
    stats_when(&srv, |v| v["totals"]["active_connections"] == 2);
    let _d = upgrade_from(&srv, "127.0.0.3", "/v1/relay/ip-b").unwrap();
    assert_eq!(counter(&srv, "ip_open_refused"), 1);
}

fn per_ip_tables_are_bounded(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_LIMITS_IP_TABLE_SIZE", "16"),
            ("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP", "5"),
        ],
    );
    let clients: Vec<Ws> = (1..=24)
        .map(|i| upgrade_from(&srv, &format!("127.0.1.{i}"), "/v1/echo").unwrap())
        .collect();
    let st = stats(&srv);
    assert_eq!(st["totals"]["ip_table_entries"], 16);
    assert_eq!(st["totals"]["ip_table_evictions"], 24 - 16);
    drop(clients);
}

fn capacity_keeps_a_reserve_for_paired_sessions(driver: &str) {
    // 3 connections, 34 % (one) kept for peers rejoining a paired session; 2 sessions.
    let srv = TestServer::start(
        driver,
        2,
        &[
            ("RINGRELAY_LIMITS_MAX_CONNECTIONS", "3"),
            ("RINGRELAY_LIMITS_RECONNECT_RESERVE_PERCENT", "34"),
            ("RINGRELAY_LIMITS_MAX_SESSIONS", "2"),
        ],
    );
    let tcp = || TcpStream::connect(srv.addr).unwrap();
    let _a = srv.connect("/v1/relay/cap-a?role=a");
    let _b = srv.connect("/v1/relay/cap-a?role=b");
    stats_when(&srv, |v| v["totals"]["active_connections"] == 2);
    let head = assert_refused(
        try_upgrade(tcp(), srv.addr, "/v1/relay/cap-b", &[]),
        503,
        "at_capacity",
    );
    assert!(retry_after(&head) >= 1);
    // The paired session's peer comes back (replacing its old connection): it may use the
    // reserve.
    let _b2 = try_upgrade(tcp(), srv.addr, "/v1/relay/cap-a?role=b", &[]).unwrap();
    // The replaced connection is closed with 4001; then the count settles back to two.
    stats_when(&srv, |v| v["totals"]["active_connections"] == 2);
    let (status, _, body) = get(srv.addr, "/health");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let c = &health["capacity"]["connections"];
    assert_eq!(
        (c["limit"].as_u64(), c["active"].as_u64()),
        (Some(3), Some(2)),
        "{health}"
    );
    assert_eq!(c["available"], 1);
    assert_eq!(health["capacity"]["sessions"]["limit"], 2);
    assert_eq!(counter(&srv, "capacity_refused"), 1);
}

fn a_rate_limited_connection_delivers_everything_later(driver: &str) {
    let (rate, burst, batch, batches) = (50u64, 10u64, 50u64, 3u64);
    let srv = TestServer::start(
        driver,
        2,
        &[
            ("RINGRELAY_LIMITS_MESSAGE_RATE", &rate.to_string()),
            ("RINGRELAY_LIMITS_MESSAGE_BURST", &burst.to_string()),
        ],
    );
    let mut rx = srv.connect("/v1/relay/slow-lane?role=rx");
    let mut tx = srv.connect("/v1/relay/slow-lane?role=tx");
    let started = Instant::now();
    let mut next = 0;
    for _ in 0..batches {
        let first = next;
        for _ in 0..batch {
            tx.send(Message::text(format!("m{next}"))).unwrap();
            next += 1;
        }
        for i in first..next {
            assert_eq!(recv_text(&mut rx), format!("m{i}"));
        }
    }
    // A read is forwarded, then its debt paid before the next read: by the time the last
    // batch (one read at most) goes out, everything before it beyond the burst waited.
    let least = Duration::from_millis((batch * (batches - 1) - burst) * 1000 / rate);
    assert!(
        started.elapsed() >= least.mul_f64(0.95),
        "{:?}",
        started.elapsed()
    );
    let st = stats(&srv);
    assert!(st["totals"]["rate_limit_pauses"].as_u64() > Some(0));
    assert_eq!(st["totals"]["messages_forwarded"], batch * batches);
    assert_eq!(st["totals"]["messages_dropped_peer_absent"], 0);
}

fn a_byte_rate_paces_large_messages(driver: &str) {
    let (rate, burst) = (256 * 1024u64, 64 * 1024u64);
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_LIMITS_BYTE_RATE", &rate.to_string()),
            ("RINGRELAY_LIMITS_BYTE_BURST", &burst.to_string()),
        ],
    );
    let mut rx = srv.connect("/v1/relay/bytes?role=rx");
    let mut tx = srv.connect("/v1/relay/bytes?role=tx");
    let body: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    tx.send(Message::binary(body.clone())).unwrap();
    match recv(&mut rx) {
        Message::Binary(b) => assert!(b[..] == body[..]),
        other => panic!("{other:?}"),
    }
    let least = Duration::from_millis((body.len() as u64 - burst) * 1000 / rate);
    // The last read's debt is paid after it was forwarded: allow for one read buffer.
    let slack = Duration::from_millis(65_536 * 1000 / rate);
    let least = least.saturating_sub(slack).mul_f64(0.95);
    assert!(started.elapsed() >= least, "{:?}", started.elapsed());
}

fn tiny_fragment_floods_are_cut_off(driver: &str) {
    let srv = TestServer::start(
        driver,
        1,
        &[("RINGRELAY_LIMITS_MAX_FRAMES_PER_MESSAGE", "8")],
    );
    let mut a = srv.connect("/v1/relay/frag?role=a");
    let mut b = Raw::upgrade(srv.addr, "/v1/relay/frag?role=b");
    // Eight frames make one message...
    let mut msg = frame(false, 1, b"0");
    for i in 1..8 {
        msg.extend(frame(i == 7, 0, b"1"));
    }
    b.send(&msg);
    assert_eq!(recv_text(&mut a), "01111111");
    // ...nine do not. The flood goes on well past the ninth frame: the relay must still get
    // its close frame to the client rather than reset the connection under unread data.
    let mut flood = frame(false, 1, b"x");
    for _ in 0..20_000 {
        flood.extend(frame(false, 0, b""));
    }
    let more: Vec<u8> = (0..200_000).flat_map(|_| frame(false, 0, b"")).collect();
    let mut w = b.s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&flood);
        let _ = w.write_all(&more);
    });
    assert_eq!(b.close_code(), Some(1008));
    writer.join().unwrap();
    drop(b);
    assert_eq!(counter(&srv, "fragment_floods"), 1);
    // The other peer is untouched and still in its session.
    let mut b2 = Raw::upgrade(srv.addr, "/v1/relay/frag?role=b");
    b2.send(&frame(true, 1, b"again"));
    assert_eq!(recv_text(&mut a), "again");
}

fn a_ping_flood_is_answered_within_the_pong_bound(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut c = Raw::upgrade(srv.addr, "/v1/echo");
    let n = 2000;
    let pings: Vec<u8> = (0..n)
        .flat_map(|i: u32| frame(true, 9, &i.to_be_bytes()))
        .collect();
    c.send(&pings);
    c.send(&frame(true, 1, b"after"));
    let mut pongs = Vec::new();
    loop {
        let (_, op, p) = c.frame().expect("frame");
        match op {
            0xA => pongs.push(u32::from_be_bytes(p[..4].try_into().unwrap())),
            1 => break,
            other => panic!("unexpected opcode {other}"),
        }
    }
    // The last ping is answered; no ping is answered twice or out of order; at most
    // `limits.max_pending_pongs` (16) pongs per read, so the flood is coalesced.
    assert_eq!(pongs.last(), Some(&(n - 1)));
    assert!(
        pongs.len() < n as usize,
        "{} pongs for {n} pings",
        pongs.len()
    );
    assert!(pongs.windows(2).all(|w| w[0] < w[1]), "{pongs:?}");
    let st = stats(&srv);
    let answered = st["totals"]["pongs_sent"].as_u64().unwrap();
    let coalesced = st["totals"]["pings_coalesced"].as_u64().unwrap();
    assert_eq!(answered, pongs.len() as u64);
    assert_eq!(answered + coalesced, n as u64);
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn a_reader_that_stops_reading_is_dropped_and_costs_no_memory(driver: &str) {
    let buffer = 16 * 1024usize;
    let pool = 4usize;
    let kept = 256 * 1024usize;
    let srv = TestServer::start(
        driver,
        1,
        &[
            ("RINGRELAY_LIMITS_WRITE_TIMEOUT", "2s"),
            ("RINGRELAY_LIMITS_READ_BUFFER_BYTES", &buffer.to_string()),
            ("RINGRELAY_LIMITS_POOL_BUFFERS", &pool.to_string()),
            ("RINGRELAY_SESSION_BUFFER_BYTES", &kept.to_string()),
        ],
    );
    let pid = srv.pid();
    // The stuck reader upgrades, then never reads again.
    let stuck = Raw::upgrade(srv.addr, "/v1/relay/stuck?role=rx");
    let mut tx = srv.connect("/v1/relay/stuck?role=tx&events=1");
    assert_eq!(recv_event(&mut tx)["type"], "connected");
    // The first /stats answer makes the allocator commit a region of its own (about 4 MiB
    // with mimalloc): scraped once before the baseline, so that only forwarding is measured.
    let _ = stats(&srv);
    let before = vm_rss_kib(pid);
    // 64 MiB offered in 64 KiB messages from a thread: it blocks once the relay stops reading
    // it, which is the point.
    let mut raw_tx = tx.get_ref().try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let msg = frame(true, 2, &vec![7u8; 64 * 1024]);
        raw_tx
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        for _ in 0..1024 {
            if raw_tx.write_all(&msg).is_err() {
                break;
            }
        }
    });
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(15);
    while counter(&srv, "peers_dropped_write_timeout") == 0 && Instant::now() < deadline {
        peak = peak.max(vm_rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counter(&srv, "peers_dropped_write_timeout"), 1);
    // What the relay may hold for this: its pooled buffers, one more in flight, what it keeps
    // for the reader once it is dropped (up to twice `session.buffer_bytes` allocated; it
    // fills within the poll above), and room for allocator rounding; nowhere near the 64 MiB
    // the sender offered.
    let allowed_kib = ((pool + 2) * buffer / 1024 + 2 * kept / 1024 + 4096) as u64;
    assert!(
        peak - before <= allowed_kib,
        "RSS grew by {} KiB (allowed {allowed_kib})",
        peak - before
    );
    drop(stuck);
    // The sender stayed in its session: told the reader left, it keeps its connection.
    let ev = loop {
        let v = recv_event(&mut tx);
        if v["type"] == "peer_disconnected" {
            break v;
        }
    };
    assert_eq!(ev["role"], "rx");
    // What it sends now is kept for the absent reader (then it is backpressured); a new
    // reader gets it, so the writer can finish, and then the sender's next message.
    let mut rx2 = srv.connect("/v1/relay/stuck?role=rx");
    let reader = std::thread::spawn(move || {
        let mut binaries = 0;
        loop {
            match recv(&mut rx2) {
                Message::Text(t) if t.as_str() == "still here" => return binaries,
                Message::Binary(b) => {
                    assert!(b.len() == 64 * 1024 && b.iter().all(|&x| x == 7));
                    binaries += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    writer.join().unwrap();
    tx.send(Message::text("still here")).unwrap();
    let binaries = reader.join().unwrap();
    assert!(binaries > 0, "nothing kept for the new reader");
}

fn a_head_sent_a_byte_at_a_time_is_read_once(driver: &str) {
    let srv = TestServer::start(driver, 1, &[]);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let req = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n\r\n";
    for b in req.bytes() {
        s.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Too many header lines: refused as soon as they are seen, before the head ends.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    s.write_all(format!("GET /health HTTP/1.1\r\n{many}").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
}

fn out_of_descriptors_backs_off_instead_of_spinning(driver: &str) {
    use std::os::unix::process::CommandExt;
    let limit: u64 = 64;
    let backoff_max = Duration::from_millis(200);
    let env = [
        ("RINGRELAY_LIMITS_HANDSHAKE_TIMEOUT", "30s"),
        ("RINGRELAY_LIMITS_ACCEPT_BACKOFF_MAX", "200ms"),
        // One address holding more handshakes than this would be closed at once and give its
        // descriptor back: off, so the idle connections below exhaust descriptors.
        ("RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP", "0"),
    ];
    let srv = TestServer::start_with(driver, 1, &env, |cmd| {
        // SAFETY: setrlimit is async-signal-safe and touches only the child being started.
        unsafe {
            cmd.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    });
    let started = Instant::now();
    // More idle connections than the relay has descriptors for: accept starts failing.
    let hold: Vec<TcpStream> = (0..limit + 16)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    drop(hold);
    // Once descriptors are free again it serves as before, and says what happened.
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let (status, _, body) = get(srv.admin, "/stats");
        if status == 200 {
            break serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no /stats after descriptors were freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let errors = st["totals"]["accept_errors"].as_u64().unwrap();
    // Backing off from 5 ms, doubling up to 200 ms, each listener (public and admin) fails at
    // most this often in the time that passed; a loop retrying at once fails thousands of
    // times.
    let doublings = (backoff_max.as_millis() as f64 / 5.0).log2().ceil() as u64 + 1;
    let at_max = (started.elapsed().as_millis() / backoff_max.as_millis()) as u64 + 1;
    let bound = 2 * (doublings + at_max);
    assert!(
        errors > 0,
        "accept never failed: the test did not exhaust descriptors"
    );
    assert!(
        errors <= bound,
        "{errors} accept errors, at most {bound} with back-off"
    );
    let mut e = srv.connect("/v1/echo");
    e.send(Message::text("back")).unwrap();
    assert_eq!(recv_text(&mut e), "back");
}

both_drivers!(
    out_of_descriptors_backs_off_instead_of_spinning,
    connection_rate_per_ip,
    open_connections_per_ip,
    per_ip_tables_are_bounded,
    capacity_keeps_a_reserve_for_paired_sessions,
    a_rate_limited_connection_delivers_everything_later,
    a_byte_rate_paces_large_messages,
    tiny_fragment_floods_are_cut_off,
    a_ping_flood_is_answered_within_the_pong_bound,
    a_reader_that_stops_reading_is_dropped_and_costs_no_memory,
    a_head_sent_a_byte_at_a_time_is_read_once,
);
