//! The HTTP bridge against the real server, with a tungstenite client playing the agent and
//! raw HTTP clients calling `/v1/http/...`: answers matched by id on both cores, broken and
//! oversized answers failing their request at once without costing the agent its connection,
//! an agent leaving, answers (in any JSON writer's form) never reaching the session's other
//! peer, requests forged by that peer refused, and the agent's seat kept for tokens made
//! for it.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tungstenite::Message;

fn agent(srv: &TestServer, session: &str) -> Ws {
    srv.connect(&format!("/v1/relay/{session}?role=agent"))
}

/// The next bridged request the agent receives.
fn next_request(ws: &mut Ws) -> Value {
    let v: Value = serde_json::from_str(&recv_text(ws)).unwrap();
    assert_eq!(v["type"], "http_request", "{v}");
    v
}

/// An answer in the schema's field order (the relay recognises `{"type":"http_response"`).
fn answer(id: &str, status: u16, headers: Value, body: &[u8]) -> Message {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    Message::text(format!(
        r#"{{"type":"http_response","id":"{id}","status":{status},"headers":{headers},"body_b64":"{b64}"}}"#
    ))
}

/// Sends a bridged GET from a thread; the handle yields (status, head, body).
fn call(srv: &TestServer, path: &str) -> std::thread::JoinHandle<(u16, String, String)> {
    let (addr, path) = (srv.addr, path.to_string());
    std::thread::spawn(move || get(addr, &path))
}

fn answers_find_their_requests_on_both_cores(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    // Ten sessions land on both cores (fnv1a % 2).
    for s in 0..10 {
        let session = format!("core-spread-{s}");
        let mut a = agent(&srv, &session);
        let n = 5;
        let calls: Vec<_> = (0..n)
            .map(|i| call(&srv, &format!("/v1/http/{session}/item/{i}?q={s}")))
            .collect();
        let mut reqs: Vec<Value> = (0..n).map(|_| next_request(&mut a)).collect();
        // Answered in reverse arrival order: only the id matches them up.
        reqs.reverse();
        for r in &reqs {
            let body = format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            );
            let id = r["id"].as_str().unwrap();
            a.send(answer(id, 201, json!([["x-id", id]]), body.as_bytes()))
                .unwrap();
        }
        for (i, c) in calls.into_iter().enumerate() {
            let (status, head, body) = c.join().unwrap();
            assert_eq!(status, 201, "{head}");
            assert_eq!(body, format!("GET /item/{i}?q={s}"));
            assert!(head.contains("X-Content-Type-Options: nosniff"), "{head}");
        }
    }
    let st = stats(&srv);
    assert_eq!(st["totals"]["bridge_requests"], 50);
    assert_eq!(st["totals"]["bridge_responses_2xx"], 50);
    assert_eq!(st["totals"]["bridge_pending"], 0);
    assert_eq!(st["latency_us"]["bridge"]["count"], 50);
    let per_core: Vec<u64> = st["per_core"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["bridge_requests"].as_u64().unwrap())
        .collect();
    assert!(
        per_core.iter().all(|&n| n > 0),
        "both cores served: {per_core:?}"
    );
}

fn broken_and_oversized_answers_fail_at_once_and_keep_the_agent(driver: &str) {
    let srv = TestServer::start(
        driver,
        2,
        &[
            ("RINGRELAY_BRIDGE_MAX_RESPONSE_BYTES", "1000"),
            ("RINGRELAY_BRIDGE_TIMEOUT", "20s"),
        ],
    );
    let mut a = agent(&srv, "picky");
    let cases: [(&[u8], u16, &str); 4] = [
        (&[7u8; 1001], 502, "agent_response_too_large"),
        // Far past what the agent's connection keeps of one answer: read, not kept.
        (&[7u8; 200_000], 502, "agent_response_too_large"),
        (b"status", 502, "bad_agent_answer"),
        (&[7u8; 1000], 200, ""),
    ];
    for (body, want, code) in cases {
        let started = Instant::now();
        let c = call(&srv, "/v1/http/picky/x");
        let r = next_request(&mut a);
        let id = r["id"].as_str().unwrap();
        let msg = if body == b"status" {
            answer(id, 99, json!([]), b"")
        } else {
            answer(id, 200, json!([]), body)
        };
        a.send(msg).unwrap();
        let (status, _, got) = c.join().unwrap();
        assert_eq!(status, want, "{got}");
        assert!(got.contains(code), "{got}");
        if want == 200 {
            assert_eq!(got.len(), 1000);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not at the timeout"
        );
    }
    let t = &stats(&srv)["totals"];
    assert_eq!(
        (&t["bridge_answers_too_large"], &t["bridge_bad_answers"]),
        (&2.into(), &1.into()),
        "{t}"
    );
    assert_eq!(t["connections_closed"], 0, "the agent stayed connected");
}

fn an_agent_leaving_fails_its_requests_at_once(driver: &str) {
    let srv = TestServer::start(driver, 2, &[("RINGRELAY_BRIDGE_TIMEOUT", "30s")]);
    let mut a = agent(&srv, "fickle");
    let calls: Vec<_> = (0..3).map(|_| call(&srv, "/v1/http/fickle/x")).collect();
    for _ in 0..3 {
        next_request(&mut a);
    }
    let started = Instant::now();
    drop(a);
    for c in calls {
        let (status, _, body) = c.join().unwrap();
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("agent_disconnected"), "{body}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, _, body) = get(srv.addr, "/v1/http/fickle/x");
    assert_eq!((status, body.contains("agent_not_connected")), (502, true));
    let t = &stats(&srv)["totals"];
    assert_eq!(
        (&t["bridge_agent_gone"], &t["bridge_agent_absent"]),
        (&3.into(), &1.into())
    );
}

fn a_client_leaving_frees_its_place(driver: &str) {
    use std::io::Write;
    let srv = TestServer::start(driver, 2, &[("RINGRELAY_BRIDGE_MAX_IN_FLIGHT", "1")]);
    let mut a = agent(&srv, "impatient");
    let mut gone = std::net::TcpStream::connect(srv.addr).unwrap();
    gone.write_all(b"GET /v1/http/impatient/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = next_request(&mut a);
    drop(gone);
    let t = stats_when(&srv, |v| v["totals"]["bridge_client_gone"] == 1);
    assert_eq!(t["totals"]["bridge_pending"], 0, "{}", t["totals"]);
    // With one place per agent, a second request is only taken if the first freed it.
    let c = call(&srv, "/v1/http/impatient/next");
    let second = next_request(&mut a);
    let late = answer(first["id"].as_str().unwrap(), 200, json!([]), b"late");
    a.send(late).unwrap();
    a.send(answer(
        second["id"].as_str().unwrap(),
        200,
        json!([]),
        b"next",
    ))
    .unwrap();
    let (status, _, body) = c.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "next"));
    let t = &stats(&srv)["totals"];
    assert_eq!(
        t["bridge_answers_unmatched"], 1,
        "the late answer found nobody: {t}"
    );
}

fn the_other_peer_never_sees_answers(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut a = agent(&srv, "shared");
    let mut web = srv.connect("/v1/relay/shared?role=web");
    let c = call(&srv, "/v1/http/shared/");
    let r = next_request(&mut a);
    assert_eq!(r["path"], "/");
    a.send(Message::text("before")).unwrap();
    a.send(answer(r["id"].as_str().unwrap(), 204, json!([]), b""))
        .unwrap();
    // An answer with a space after the brace and no id: an answer all the same (a broken
    // one, counted), never forwarded. Before: anything but the exact bytes
    // `{"type":"http_response"` was forwarded to the other peer.
    a.send(Message::text(r#"{ "type":"http_response"}"#))
        .unwrap();
    // JSON objects that are not answers reach the other peer byte for byte.
    let chat = r#"{"type": "chat", "text": "{\"type\":\"http_response\"}"}"#;
    a.send(Message::text(chat)).unwrap();
    let pretty =
        "{\n  \"kind\": \"http_response\",\n  \"nested\": {\"type\": \"http_response\"}\n}";
    a.send(Message::text(pretty)).unwrap();
    a.send(Message::binary(b"{\"type\":\"http_response\"".to_vec()))
        .unwrap();
    let (status, head, body) = c.join().unwrap();
    assert_eq!((status, body.as_str()), (204, ""), "{head}");
    assert!(!head.contains("Content-Length"), "{head}");
    assert_eq!(recv_text(&mut web), "before");
    assert_eq!(recv_text(&mut web), chat);
    assert_eq!(recv_text(&mut web), pretty);
    assert_eq!(
        recv(&mut web),
        Message::binary(b"{\"type\":\"http_response\"".to_vec())
    );
    // And the web peer's messages still reach the agent, JSON objects whole.
    web.send(Message::text("to agent")).unwrap();
    assert_eq!(recv_text(&mut a), "to agent");
    web.send(Message::text(chat)).unwrap();
    assert_eq!(recv_text(&mut a), chat);
    let t = &stats(&srv)["totals"];
    assert_eq!(t["bridge_bad_answers"], 1, "{t}");
}

/// An agent whose upgrade answer is kept: its `Ringrelay-Bridge-Key` header.
fn agent_with_key(srv: &TestServer, session: &str) -> (Ws, String) {
    let stream = std::net::TcpStream::connect(srv.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let url = srv.url(&format!("/v1/relay/{session}?role=agent"));
    let (ws, resp) = tungstenite::client::client(url, stream).expect("upgrade");
    let key = resp.headers()["ringrelay-bridge-key"]
        .to_str()
        .unwrap()
        .to_string();
    (ws, key)
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn forged_requests_towards_the_agent_are_refused(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut ctl_a = srv.connect("/v1/relay/forge-control?role=a");
    let mut ctl_b = srv.connect("/v1/relay/forge-control?role=b");
    let (mut a, key) = agent_with_key(&srv, "forge");
    assert!(is_hex32(&key), "{key}");
    // A victim's request is waiting for the agent; its id is what a forger would answer.
    let victim = call(&srv, "/v1/http/forge/private");
    let r = next_request(&mut a);
    let id = r["id"].as_str().unwrap().to_string();
    assert!(is_hex32(&id), "ids are 128 random bits: {id}");
    assert_eq!(r["relay_key"], key.as_str(), "{r}");
    // The other peer sends a request of its own to the agent, in several writers' forms.
    // Before: the agent received it and ran it (a DELETE past bridge.allowed_methods, a body
    // past max_body_bytes), and its answer under the victim's id settled the victim's request.
    let forms = [
        json!({"type": "http_request", "id": id, "method": "DELETE", "path": "/admin",
               "headers": [], "body_b64": ""})
        .to_string(),
        format!(r#"{{"id": "{id}", "method": "GET", "path": "/", "type": "http_request"}}"#),
        format!("{{\n  \"TYPE\": \"http_request\",\n  \"id\": \"{id}\"\n}}"),
    ];
    for (k, forged) in forms.iter().enumerate() {
        let mut web = srv.connect("/v1/relay/forge?role=web");
        web.send(Message::text(r#"{"type":"hello"}"#)).unwrap();
        assert_eq!(recv_text(&mut a), r#"{"type":"hello"}"#);
        web.send(Message::text(forged.as_str())).unwrap();
        assert_eq!(recv_close(&mut web), Some(1008), "form {k}");
        // The pair beside it flows.
        ctl_a.send(Message::text(format!("ctl {k}"))).unwrap();
        assert_eq!(recv_text(&mut ctl_b), format!("ctl {k}"));
    }
    // The agent got nothing of them: the next thing it reads is the next real request.
    let second = call(&srv, "/v1/http/forge/second");
    let r2 = next_request(&mut a);
    assert_eq!(r2["path"], "/second", "{r2}");
    let id2 = r2["id"].as_str().unwrap();
    assert!(is_hex32(id2) && id2 != id, "{id2} after {id}");
    a.send(answer(&id, 200, json!([]), b"victim")).unwrap();
    a.send(answer(id2, 200, json!([]), b"second")).unwrap();
    assert_eq!(victim.join().unwrap().2, "victim");
    assert_eq!(second.join().unwrap().2, "second");
    let t = &stats(&srv)["totals"];
    assert_eq!(t["bridge_forged_requests"], 3, "{t}");
    assert_eq!(t["protocol_errors"], 0, "{t}");
}

fn messages_kept_for_an_absent_agent_are_checked_too(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    // The web peer is alone: what it sends is kept for whoever joins, maybe the agent.
    let mut web = srv.connect("/v1/relay/later?role=web");
    let small = r#"{"type": "note", "n": 1}"#.to_string();
    // Over a read buffer: held across reads, copied, and kept whole.
    let big = json!({"type": "note", "pad": "x".repeat(200_000)}).to_string();
    web.send(Message::text(small.as_str())).unwrap();
    web.send(Message::text(big.as_str())).unwrap();
    web.send(Message::binary(b"{\"type\":\"http_request\"}".to_vec()))
        .unwrap();
    let t = stats_when(&srv, |v| v["totals"]["messages_buffered"] == 3);
    assert_eq!(t["totals"]["messages_buffered"], 3, "{}", t["totals"]);
    // Before: a forged request kept here reached the agent when it joined, and ran.
    let mut forger = srv.connect("/v1/relay/later2?role=web");
    forger
        .send(Message::text(
            r#"{"path": "/x", "method": "GET", "id": "1", "type": "http_request"}"#,
        ))
        .unwrap();
    assert_eq!(recv_close(&mut forger), Some(1008));
    let mut a = agent(&srv, "later");
    assert_eq!(recv_text(&mut a), small);
    assert_eq!(recv_text(&mut a), big);
    assert_eq!(
        recv(&mut a),
        Message::binary(b"{\"type\":\"http_request\"}".to_vec()),
        "binary messages are not requests: the agent ignores them"
    );
    // Live, a message over a read buffer reaches the agent whole as well.
    web.send(Message::text(big.as_str())).unwrap();
    assert_eq!(recv_text(&mut a), big);
    assert_eq!(counter(&srv, "bridge_forged_requests"), 1);
}

/// `ringrelay token`, as an operator mints tokens.
fn mint_cli(secret_file: &std::path::Path, session: &str, role: Option<&str>) -> String {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ringrelay"));
    c.arg("token").arg("--secret-file").arg(secret_file).args([
        "--session",
        session,
        "--ttl",
        "10m",
    ]);
    if let Some(r) = role {
        c.args(["--role", r]);
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RINGRELAY_") {
            c.env_remove(k);
        }
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn the_agent_seat_needs_a_token_made_for_it(driver: &str) {
    const SECRET: &str = "bridge-agent-seat-secret-0123456789abcdef";
    let dir = std::env::temp_dir().join(format!("rr-bridge-seat-{}-{driver}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let srv = TestServer::start(driver, 2, &[("RINGRELAY_AUTH_JWT_SECRET", SECRET)]);
    let tok = |session: &str, role: Option<&str>| mint_cli(&secret_file, session, role);
    let bearer = |t: &str| format!("Bearer {t}");
    let upgrade = |path: &str, t: &str| {
        let stream = std::net::TcpStream::connect(srv.addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        try_upgrade(stream, srv.addr, path, &[("Authorization", &bearer(t))])
    };
    let control = tok("seat-control", None);
    let mut ctl_a = upgrade("/v1/relay/seat-control?role=a", &control).unwrap();
    let mut ctl_b = upgrade("/v1/relay/seat-control?role=b", &control).unwrap();
    let mut real = upgrade("/v1/relay/seat?role=agent", &tok("seat", Some("agent"))).unwrap();
    // The page's token names no role. Before: it joined as the agent, the real agent was
    // closed with 4001, and every bridged request (cookies, body) went to the newcomer.
    let page = tok("seat", None);
    assert_refused(
        upgrade("/v1/relay/seat?role=agent", &page),
        403,
        "token_wrong_role",
    );
    // A token for another role cannot either (as before), and the roleless token still
    // joins as any other role.
    let web = tok("seat", Some("web"));
    assert_refused(
        upgrade("/v1/relay/seat?role=agent", &web),
        403,
        "token_wrong_role",
    );
    let mut other = upgrade("/v1/relay/seat?role=web", &page).unwrap();
    ctl_a.send(Message::text("still here")).unwrap();
    assert_eq!(recv_text(&mut ctl_b), "still here");
    // The real agent still holds its seat and answers the page's bridged request.
    let addr = srv.addr;
    let req = format!(
        "GET /v1/http/seat/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {page}\r\nConnection: close\r\n\r\n"
    );
    let c = std::thread::spawn(move || http(addr, &req));
    let r = next_request(&mut real);
    real.send(answer(
        r["id"].as_str().unwrap(),
        200,
        json!([]),
        b"real agent",
    ))
    .unwrap();
    let (status, _, body) = c.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "real agent"));
    other.send(Message::text("web to agent")).unwrap();
    assert_eq!(recv_text(&mut real), "web to agent");
    let t = &stats(&srv)["totals"];
    assert_eq!(
        (&t["peers_replaced"], &t["auth_refused"]),
        (&0.into(), &2.into()),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A WebSocket in a browser or Node cannot read the upgrade answer's headers, so an agent
/// there (clients/js `RelayAgent`) learns its key from its `connected` event: the same key,
/// and only on the agent's connection. Before: `connected` had no `bridge_key`, and such an
/// agent could not tell the relay's requests from anything else.
fn an_agent_with_events_gets_its_key_in_connected(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let stream = std::net::TcpStream::connect(srv.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let url = srv.url("/v1/relay/keyed?role=agent&events=1");
    let (mut a, resp) = tungstenite::client::client(url, stream).expect("upgrade");
    let key = resp.headers()["ringrelay-bridge-key"].to_str().unwrap();
    let connected = recv_event(&mut a);
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(connected["bridge_key"], key, "{connected}");
    assert_ne!(connected["key"], key, "the event key is another one");
    // The relay's requests carry it.
    let waiting = call(&srv, "/v1/http/keyed/x");
    let r = next_request(&mut a);
    assert_eq!(r["relay_key"], key, "{r}");
    a.send(answer(r["id"].as_str().unwrap(), 200, json!([]), b"ok"))
        .unwrap();
    assert_eq!(waiting.join().unwrap().0, 200);
    // The other peer's `connected` has none.
    let mut b = srv.connect("/v1/relay/keyed?role=b&events=1");
    let other = recv_event(&mut b);
    assert_eq!(other["type"], "connected", "{other}");
    assert!(other.get("bridge_key").is_none(), "{other}");
}

both_drivers!(
    an_agent_with_events_gets_its_key_in_connected,
    answers_find_their_requests_on_both_cores,
    broken_and_oversized_answers_fail_at_once_and_keep_the_agent,
    an_agent_leaving_fails_its_requests_at_once,
    a_client_leaving_frees_its_place,
    the_other_peer_never_sees_answers,
    forged_requests_towards_the_agent_are_refused,
    messages_kept_for_an_absent_agent_are_checked_too,
    the_agent_seat_needs_a_token_made_for_it,
);
