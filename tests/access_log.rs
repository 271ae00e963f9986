//! The access log (`log.access`) against the real binary: a line per finished relay
//! connection with who closed it and its traffic each way, a line per refusal, a line per
//! bridged request, the client as resolved through a trusted proxy, no token, key or query
//! string in any line, and the file reopened on SIGUSR1. (The text format is read here: the
//! test harness reads the main log's start line as text; JSON lines are unit-tested in
//! `stats::access`.)
//!
//! Before: the relay had no access log. `log.access` was an unknown key (refused at start),
//! and the only trace of a connection was the main log's "connection closed" line, without
//! client address, duration or traffic; a refusal left a debug line at most.

mod common;
use common::dir::Dir;
use common::*;
use ringrelay::auth::{mint, unix_now, MintClaims};
use ringrelay::config::JwtAlgorithm;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tungstenite::Message;

const SECRET: &str = "access-log-test-secret-0123456789abcdef";

fn token(sid: &str, role: &str) -> String {
    let claims = MintClaims {
        sid: sid.into(),
        role: Some(role.into()),
        exp: unix_now() + 600,
        ..MintClaims::default()
    };
    mint(SECRET.as_bytes(), JwtAlgorithm::Hs256, &claims)
}

/// The file's lines once `done` holds for them (the log is written within a tick).
fn lines_when(path: &std::path::Path, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if done(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "log never got there: {lines:#?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A text line (`key=value ...`, a value quoted as a JSON string when it is not a plain
/// token) as a JSON object, numbers as numbers.
fn parse_text(line: &str) -> Value {
    let mut map = serde_json::Map::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("no key in {line}"));
        let (value, after) = if after.starts_with('"') {
            let mut end = 1;
            let b = after.as_bytes();
            while b[end] != b'"' {
                end += if b[end] == b'\\' { 2 } else { 1 };
            }
            let v: String = serde_json::from_str(&after[..=end]).unwrap();
            (Value::String(v), &after[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let raw = &after[..end];
            let v = serde_json::from_str::<serde_json::Number>(raw)
                .map(Value::Number)
                .unwrap_or_else(|_| Value::String(raw.to_string()));
            (v, &after[end..])
        };
        map.insert(key.to_string(), value);
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    Value::Object(map)
}

/// The lines of `kind`, parsed.
fn of_kind(lines: &[String], kind: &str) -> Vec<Value> {
    lines
        .iter()
        .map(|l| parse_text(l))
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn find<'a>(lines: &'a [Value], role: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["role"] == role)
        .unwrap_or_else(|| panic!("no line for {role}: {lines:#?}"))
}

fn server(driver: &str, dir: &Dir, extra: &[(&str, &str)]) -> (TestServer, PathBuf) {
    let path = dir.0.join("access.log");
    let target = format!("file:{}", path.display());
    let mut env = vec![
        ("RINGRELAY_LOG_ACCESS", target.as_str()),
        // A short tick, so lines are out quickly (the tick is a quarter of the shortest timer).
        ("RINGRELAY_SESSION_CLOSE_TIMEOUT", "400ms"),
    ];
    env.extend_from_slice(extra);
    (TestServer::start(driver, 2, &env), path)
}

/// Two peers behind a trusted proxy (127.0.0.9, naming 203.0.113.5), one token in the query
/// and one in the header: each peer's line names the resolved client and the proxy, the
/// route, session and role, its messages and bytes each way, and who closed it: `a` itself
/// (1000, client), `b` the relay when a newer `b` took its seat (4001, relay, replaced).
fn a_relay_pair_gets_a_line_per_connection(driver: &str) {
    let dir = Dir::new("access", &format!("pair-{driver}"));
    let (srv, path) = server(
        driver,
        &dir,
        &[
            ("RINGRELAY_AUTH_JWT_SECRET", SECRET),
            ("RINGRELAY_SECURITY_TRUSTED_PROXIES", "127.0.0.9"),
        ],
    );
    let (ta, tb) = (token("pair", "a"), token("pair", "b"));
    let xff = [("X-Forwarded-For", "203.0.113.5")];
    let path_a = format!("/v1/relay/pair?role=a&token={ta}");
    let mut a = try_upgrade(tcp_from("127.0.0.9", srv.addr), srv.addr, &path_a, &xff).unwrap();
    let bearer = format!("Bearer {tb}");
    let hb = [("Authorization", bearer.as_str())];
    let mut b = try_upgrade(
        tcp_from("127.0.0.1", srv.addr),
        srv.addr,
        "/v1/relay/pair?role=b",
        &hb,
    )
    .unwrap();
    for m in ["hello", "0123456789", "twenty bytes of text"] {
        a.send(Message::text(m)).unwrap();
        assert_eq!(recv_text(&mut b), m);
    }
    for m in ["1234567", "abcdefgh"] {
        b.send(Message::binary(m.as_bytes().to_vec())).unwrap();
        assert!(matches!(recv(&mut a), Message::Binary(d) if d == m.as_bytes()));
    }
    close(&mut a, 1000);
    // A newer `b` takes the seat: the relay closes the old one with 4001.
    let tb2 = token("pair", "b");
    let mut b2 = srv.connect(&format!("/v1/relay/pair?role=b&token={tb2}"));
    assert_eq!(recv_close(&mut b), Some(4001));
    let lines = lines_when(&path, |l| l.len() >= 2);
    let conns = of_kind(&lines, "connection");
    let la = find(&conns, "a");
    assert_eq!(la["client"], "203.0.113.5", "{la}");
    assert_eq!(la["proxy"], "127.0.0.9", "{la}");
    assert_eq!(la["route"], "relay");
    assert_eq!(la["session"], "pair");
    assert_eq!(la["path"], "/v1/relay/pair");
    assert_eq!(la["method"], "GET");
    assert_eq!(la["status"], 101);
    assert_eq!(
        (la["code"].clone(), la["closed_by"].clone()),
        (json!(1000), json!("client"))
    );
    assert_eq!(la["reason"], "normal");
    assert_eq!(
        (la["msgs_in"].clone(), la["bytes_in"].clone()),
        (json!(3), json!(35)),
        "{la}"
    );
    assert_eq!(
        (la["msgs_out"].clone(), la["bytes_out"].clone()),
        (json!(2), json!(15)),
        "{la}"
    );
    assert!(la["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{la}");
    assert!(la["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{la}");
    assert!(la.get("tls").is_none(), "plain TCP: {la}");
    let lb = find(&conns, "b");
    assert_eq!(lb["client"], "127.0.0.1", "{lb}");
    assert!(lb.get("proxy").is_none(), "{lb}");
    assert_eq!(
        (lb["code"].clone(), lb["closed_by"].clone()),
        (json!(4001), json!("relay"))
    );
    assert_eq!(lb["reason"], "replaced");
    assert_eq!(
        (lb["msgs_in"].clone(), lb["bytes_in"].clone()),
        (json!(2), json!(15)),
        "{lb}"
    );
    assert_eq!(
        (lb["msgs_out"].clone(), lb["bytes_out"].clone()),
        (json!(3), json!(35)),
        "{lb}"
    );
    // Never a line per message, and never a token.
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [&ta, &tb, &tb2] {
        assert!(
            !text.contains(secret.as_str()),
            "token in the access log: {text}"
        );
    }
    assert!(!text.contains("token="), "{text}");
    close(&mut b2, 1000);
}

/// Refusals of several kinds, with a control pair flowing beside them: a line each with the
/// status and the contract's code, and nothing of the query (a key, a token) in it; text
/// format on stderr, where the main log goes too.
fn refusals_get_a_line_and_nothing_secret(driver: &str) {
    let srv = TestServer::start(
        driver,
        2,
        &[
            ("RINGRELAY_AUTH_JWT_SECRET", SECRET),
            ("RINGRELAY_LOG_ACCESS", "stderr"),
            ("RINGRELAY_SESSION_CLOSE_TIMEOUT", "400ms"),
            ("RUST_LOG", "debug"),
        ],
    );
    let (ta, tb) = (token("ctl", "a"), token("ctl", "b"));
    let mut ca = srv.connect(&format!("/v1/relay/ctl?role=a&token={ta}"));
    let mut cb = srv.connect(&format!("/v1/relay/ctl?role=b&token={tb}"));
    let flows = |ca: &mut Ws, cb: &mut Ws, i: u32| {
        ca.send(Message::text(format!("c{i}"))).unwrap();
        assert_eq!(recv_text(cb), format!("c{i}"));
    };
    // A token signed with another secret, in the query beside an API key: two credentials,
    // so refused as malformed (docs/auth.md), and neither may reach the log.
    let forged = mint(
        b"another-secret-0123456789abcdef-xyz",
        JwtAlgorithm::Hs256,
        &MintClaims {
            sid: "locked".into(),
            exp: unix_now() + 600,
            ..MintClaims::default()
        },
    );
    let q = format!("/v1/relay/locked?role=a&key=rrk_supersecretkey42&token={forged}");
    let tcp = std::net::TcpStream::connect(srv.addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_refused(try_upgrade(tcp, srv.addr, &q, &[]), 401, "token_malformed");
    flows(&mut ca, &mut cb, 1);
    // No token at all, a path no route serves, a session id the contract refuses.
    let (s1, _, _) = get(srv.addr, "/v1/relay/locked?role=a");
    let (s2, _, _) = get(srv.addr, "/nowhere?secret=hunter2");
    let (s3, _, _) = get(srv.addr, "/v1/relay/bad%20id");
    assert_eq!((s1, s2, s3), (401, 404, 400));
    flows(&mut ca, &mut cb, 2);
    let deadline = Instant::now() + TIMEOUT;
    let access = loop {
        let log = srv.log.lock().unwrap().clone();
        let access: Vec<String> = log
            .into_iter()
            .filter(|l| l.contains("kind=refusal"))
            .collect();
        if access.len() >= 4 || Instant::now() > deadline {
            break access;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(access.len(), 4, "{access:#?}");
    let has = |needles: &[&str]| access.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        has(&[
            " client=127.0.0.1 ",
            " path=/v1/relay/locked ",
            " route=relay ",
            " session=locked ",
            " role=a ",
            " status=401 ",
            " error=token_malformed "
        ]),
        "{access:#?}"
    );
    assert!(
        has(&[" status=401 ", " error=token_missing "]),
        "{access:#?}"
    );
    assert!(
        has(&[
            " path=/nowhere ",
            " route=none ",
            " status=404 ",
            " error=not_found "
        ]),
        "{access:#?}"
    );
    assert!(
        has(&[" path=\"/v1/relay/bad%20id\"", " status=400 "])
            || has(&[" path=/v1/relay/bad%20id ", " status=400 "]),
        "{access:#?}"
    );
    // Nothing secret in any line of the process, the main log's included.
    let all = srv.log.lock().unwrap().join("\n");
    for secret in [
        "rrk_supersecretkey42",
        forged.as_str(),
        "hunter2",
        ta.as_str(),
        tb.as_str(),
    ] {
        assert!(!all.contains(secret), "{secret} in the log");
    }
    assert_eq!(counter(&srv, "access_log_dropped"), 0);
    assert!(counter(&srv, "access_log_lines") >= 4);
}

/// A bridged request: one line with its method, path (not its query), session, the agent's
/// status, the body's bytes in and the response's bytes out; the agent's own connection gets
/// its line as route `agent` when it leaves.
fn a_bridged_request_gets_its_line(driver: &str) {
    use base64::Engine;
    let dir = Dir::new("access", &format!("bridge-{driver}"));
    let (srv, path) = server(driver, &dir, &[]);
    let mut agent = srv.connect("/v1/relay/br?role=agent");
    let addr = srv.addr;
    let call = std::thread::spawn(move || {
        http(
            addr,
            "POST /v1/http/br/items?apikey=abc123secret HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nAuthorization: Bearer bridge-secret-token\r\n\r\nhello world",
        )
    });
    let req: Value = serde_json::from_str(&recv_text(&mut agent)).unwrap();
    assert_eq!(req["type"], "http_request");
    let body = base64::engine::general_purpose::STANDARD.encode(b"created!");
    let id = req["id"].as_str().unwrap();
    agent
        .send(Message::text(format!(
            r#"{{"type":"http_response","id":"{id}","status":201,"headers":[],"body_b64":"{body}"}}"#
        )))
        .unwrap();
    let (status, head, got) = call.join().unwrap();
    assert_eq!((status, got.as_str()), (201, "created!"), "{head}");
    close(&mut agent, 1000);
    let lines = lines_when(&path, |l| l.len() >= 2);
    let bridged = of_kind(&lines, "bridge");
    assert_eq!(bridged.len(), 1, "{lines:#?}");
    let l = &bridged[0];
    assert_eq!(l["method"], "POST");
    assert_eq!(l["path"], "/v1/http/br/items");
    assert_eq!(l["route"], "bridge");
    assert_eq!(l["session"], "br");
    assert_eq!(l["status"], 201);
    assert_eq!(l["bytes_in"], 11);
    // The whole response as written: its head and the 8 bytes of body.
    let out = l["bytes_out"].as_u64().unwrap();
    assert!(out > 8 && out < 1024, "{l}");
    let conns = of_kind(&lines, "connection");
    let a = find(&conns, "agent");
    assert_eq!(
        (a["route"].clone(), a["closed_by"].clone()),
        (json!("agent"), json!("client"))
    );
    // The agent got one bridged request (its JSON) and sent one answer.
    assert_eq!(
        (a["msgs_in"].clone(), a["msgs_out"].clone()),
        (json!(1), json!(0)),
        "{a}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in ["abc123secret", "apikey", "bridge-secret-token"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
}

/// logrotate's way: the file is renamed, SIGUSR1 is sent, and the next lines go to a new
/// file at the configured path while the renamed one keeps what it had.
fn sigusr1_reopens_the_file(driver: &str) {
    let dir = Dir::new("access", &format!("rotate-{driver}"));
    let (srv, path) = server(driver, &dir, &[]);
    let mut e = srv.connect("/v1/echo");
    close(&mut e, 1000);
    lines_when(&path, |l| l.len() == 1);
    let rotated = dir.0.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGUSR1) };
    let deadline = Instant::now() + TIMEOUT;
    while !srv.log_contains("SIGUSR1: reopening the access log") {
        assert!(Instant::now() < deadline, "SIGUSR1 not handled");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..2 {
        let mut e = srv.connect("/v1/echo");
        e.send(Message::text("ping")).unwrap();
        assert_eq!(recv_text(&mut e), "ping");
        close(&mut e, 1000);
    }
    let fresh = lines_when(&path, |l| l.len() == 2);
    let v = parse_text(&fresh[0]);
    assert_eq!(
        (v["route"].clone(), v["msgs_in"].clone()),
        (json!("echo"), json!(1))
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
    // The process is alive and well after the signal (its default action would end it).
    let (status, _, _) = get(srv.admin, "/health");
    assert_eq!(status, 200);
}

/// Over the relay's own TLS a line names the version, here for a refusal (404) and an echo
/// connection, with curl and a WebSocket client that trusts the test CA.
fn tls_lines_name_the_version(driver: &str) {
    let dir = Dir::new("access", &format!("tls-{driver}"));
    let pki = common::tls_front::Pki::new(&format!("access-{driver}"));
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let (srv, path) = server(
        driver,
        &dir,
        &[
            ("RINGRELAY_TLS_LISTEN", "127.0.0.1:0"),
            ("RINGRELAY_TLS_CERT_FILE", cert),
            ("RINGRELAY_TLS_KEY_FILE", key),
        ],
    );
    let port = srv
        .listening_field("tls")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .expect("tls= in the listening line")
        .port();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&pki.ca)
        .arg(format!(
            "https://localhost:{port}/nowhere?key=rrk_tlssecret"
        ))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    let lines = lines_when(&path, |l| !l.is_empty());
    let r = &of_kind(&lines, "refusal")[0];
    assert_eq!(
        (r["status"].clone(), r["error"].clone()),
        (json!(404), json!("not_found"))
    );
    assert!(
        // Bare in the text format, as its parse here reads a number.
        ["1.2", "1.3"].contains(&r["tls"].to_string().trim_matches('"')),
        "{r}"
    );
    assert!(!std::fs::read_to_string(&path)
        .unwrap()
        .contains("rrk_tlssecret"));
}

both_drivers!(
    tls_lines_name_the_version,
    a_relay_pair_gets_a_line_per_connection,
    refusals_get_a_line_and_nothing_secret,
    a_bridged_request_gets_its_line,
    sigusr1_reopens_the_file,
);

/// A `log.access` file that cannot be opened stops the relay at start, naming the key.
#[test]
fn an_unopenable_file_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env(
            "RINGRELAY_LOG_ACCESS",
            "file:/nonexistent-dir/rr/access.log",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.access"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["serve", "--print-config"])
        .env("RINGRELAY_LOG_ACCESS", "bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log.access") && err.contains("file:PATH"),
        "{err}"
    );
}
