//! The HTTP bridge against the real server, with a tungstenite client playing the agent and
//! raw HTTP clients calling `/v1/http/...`: answers matched by id on both cores, broken and
//! oversized answers failing their request at once without costing the agent its connection,
//! an agent leaving, and answers never reaching the session's other peer.

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
    // Not an answer (a space after the brace): forwarded like any message.
    a.send(Message::text(r#"{ "type":"http_response"}"#))
        .unwrap();
    a.send(Message::binary(b"{\"type\":\"http_response\"".to_vec()))
        .unwrap();
    let (status, head, body) = c.join().unwrap();
    assert_eq!((status, body.as_str()), (204, ""), "{head}");
    assert!(!head.contains("Content-Length"), "{head}");
    assert_eq!(recv_text(&mut web), "before");
    assert_eq!(recv_text(&mut web), r#"{ "type":"http_response"}"#);
    assert_eq!(
        recv(&mut web),
        Message::binary(b"{\"type\":\"http_response\"".to_vec())
    );
    // And the web peer's messages still reach the agent.
    web.send(Message::text("to agent")).unwrap();
    assert_eq!(recv_text(&mut a), "to agent");
}

both_drivers!(
    answers_find_their_requests_on_both_cores,
    broken_and_oversized_answers_fail_at_once_and_keep_the_agent,
    an_agent_leaving_fails_its_requests_at_once,
    a_client_leaving_frees_its_place,
    the_other_peer_never_sees_answers,
);
