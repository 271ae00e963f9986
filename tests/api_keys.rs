//! API keys (`auth.api_keys_file`) against the real binary: keys made by `ringrelay key new`
//! admit what their line grants (as a Bearer token or `?key=`), an unknown key is refused 401
//! and a key for another session 403, a SIGHUP adds and revokes keys while a pair opened
//! before keeps talking, a file that does not parse on reload keeps the keys in force, and no
//! key reaches a log line.
//!
//! Before: the relay knew only JWTs and client certificates. `auth.api_keys_file` was an
//! unknown key (the start failed), and `Bearer rrk_...` was a malformed token (401
//! token_malformed) on a relay with a secret.

mod common;
use common::dir::Dir;
use common::*;
use ringrelay::auth::api_keys::hash_field;
use std::process::Command;
use tungstenite::Message;

/// `ringrelay key new ARGS`: the key and its line.
fn new_key(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["key", "new"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let key = lines.next().unwrap().to_string();
    let line = lines.next().unwrap().to_string();
    assert!(lines.next().is_none(), "{text}");
    (key, line)
}

fn upgrade(
    srv: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String, String)> {
    let tcp = std::net::TcpStream::connect(srv.addr).unwrap();
    try_upgrade(tcp, srv.addr, path, headers)
}

/// Sends SIGHUP and waits until /stats counts `ok` applied and `refused` refused reloads.
fn reload(srv: &TestServer, ok: u64, refused: u64) {
    // SAFETY: kill(2) on the pid of a child the test spawned and has not reaped.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGHUP) };
    let done = |v: &serde_json::Value| {
        v["reload"]["reloads_ok"].as_u64() == Some(ok)
            && v["reload"]["reloads_refused"].as_u64() == Some(refused)
    };
    let v = stats_when(srv, done);
    assert!(done(&v), "{}", v["reload"]);
}

fn flows(a: &mut Ws, b: &mut Ws, m: &str) {
    a.send(Message::text(m)).unwrap();
    assert_eq!(recv_text(b), m);
    b.send(Message::text(m)).unwrap();
    assert_eq!(recv_text(a), m);
}

fn keys_are_granted_refused_and_reloaded(driver: &str) {
    let (desk, desk_line) = new_key(&["--sid", "room-*", "--role", "desktop", "--name", "d"]);
    let (phone, phone_line) = new_key(&["--sid", "room-1"]);
    let (later, later_line) = new_key(&["--sid", "*", "--tunnels", "2", "--name", "later"]);
    assert!(desk_line.starts_with(&hash_field(&desk)), "{desk_line}");
    assert!(!desk_line.contains(&desk) && desk_line.ends_with("role=desktop name=d"));
    let dir = Dir::new("keys", driver);
    let base = format!("# ops keys\n{desk_line}\n{phone_line}\n");
    let file = dir.write("keys", &base);
    let file = file.to_str().unwrap();
    let env = [
        ("RINGRELAY_AUTH_API_KEYS_FILE", file),
        ("RUST_LOG", "debug"),
    ];
    let srv = TestServer::start(driver, 2, &env);

    // Granted: the desktop key as a Bearer token on any room-*, the phone key as ?key=.
    let bearer = format!("Bearer {desk}");
    let mut a = upgrade(&srv, "/v1/relay/room-1", &[("Authorization", &bearer)]).unwrap();
    let mut b = upgrade(
        &srv,
        &format!("/v1/relay/room-1?role=mobile&key={phone}"),
        &[],
    )
    .unwrap();
    flows(&mut a, &mut b, "pair");
    // Refused: no credential, an unknown key, another session, another role.
    let path = "/v1/relay/room-2?role=mobile";
    assert_refused(upgrade(&srv, path, &[]), 401, "token_missing");
    let unknown = format!("rrk_{}", "5a".repeat(32));
    let refused = assert_refused(
        upgrade(&srv, &format!("{path}&key={unknown}"), &[]),
        401,
        "api_key_unknown",
    );
    assert!(refused.contains("invalid_token"), "{refused}");
    assert_refused(
        upgrade(&srv, &format!("/v1/relay/lobby?key={phone}"), &[]),
        403,
        "token_wrong_session",
    );
    assert_refused(
        upgrade(&srv, path, &[("Authorization", &bearer)]),
        403,
        "token_wrong_role",
    );
    let later_path = format!("/v1/relay/elsewhere?key={later}");
    assert_refused(upgrade(&srv, &later_path, &[]), 401, "api_key_unknown");

    // Added on reload.
    dir.write("keys", &format!("{base}{later_line}\n"));
    reload(&srv, 1, 0);
    upgrade(&srv, &later_path, &[]).unwrap();
    flows(&mut a, &mut b, "after adding");
    // A file that does not parse is refused whole: every key in force stays.
    dir.write("keys", &format!("{base}sha256:0123 sid=*\n"));
    reload(&srv, 1, 1);
    upgrade(&srv, &later_path, &[]).unwrap();
    assert!(srv.log_contains("line 4"), "the log names the bad line");
    // Revoked on reload.
    dir.write("keys", &base);
    reload(&srv, 2, 1);
    assert_refused(upgrade(&srv, &later_path, &[]), 401, "api_key_unknown");
    flows(&mut a, &mut b, "after revoking");

    assert_eq!(counter(&srv, "api_key_admitted"), 4);
    let log = srv.log.lock().unwrap().join("\n");
    for secret in [&desk, &phone, &later, &unknown] {
        assert!(!log.contains(secret.as_str()), "a key reached the log");
    }
    assert!(log.contains("key=<redacted>"), "the refusals were logged");
}

/// A relay that starts with a broken key file does not start, and says which line.
fn a_bad_key_file_stops_the_start(driver: &str) {
    let dir = Dir::new("keys", &format!("bad-{driver}"));
    let (key, _) = new_key(&[]);
    let file = dir.write("keys", &format!("{key} sid=*\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--driver", driver])
        .env("RINGRELAY_AUTH_API_KEYS_FILE", &file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.api_keys_file") && err.contains("line 1"),
        "{err}"
    );
    assert!(!err.contains(&key), "the key itself was printed: {err}");
}

/// A bridged request admitted by a key in `?key=`: the agent's seat needs a key whose role is
/// the agent's, and the client's key is not passed on to the agent (its own `key=` is).
fn a_bridged_request_with_a_key(driver: &str) {
    let (agent_key, agent_line) = new_key(&["--sid", "box-1", "--role", "agent"]);
    let (plain_key, plain_line) = new_key(&["--sid", "box-1"]);
    let dir = Dir::new("keys", &format!("bridge-{driver}"));
    let file = dir.write("keys", &format!("{agent_line}\n{plain_line}\n"));
    let env = [("RINGRELAY_AUTH_API_KEYS_FILE", file.to_str().unwrap())];
    let srv = TestServer::start(driver, 2, &env);
    // A key without the agent's role cannot take the agent's seat.
    let seat = format!("/v1/relay/box-1?role=agent&key={plain_key}");
    assert_refused(upgrade(&srv, &seat, &[]), 403, "token_wrong_role");
    let seat = format!("/v1/relay/box-1?role=agent&key={agent_key}");
    let mut agent = upgrade(&srv, &seat, &[]).unwrap();
    let path = format!("/v1/http/box-1/items?key=7&key={plain_key}");
    let (addr, p) = (srv.addr, path.clone());
    let call = std::thread::spawn(move || get(addr, &p));
    let req: serde_json::Value = serde_json::from_str(&recv_text(&mut agent)).unwrap();
    assert_eq!(req["path"], "/items?key=7", "{req}");
    let id = req["id"].as_str().unwrap();
    let answer = format!(
        r#"{{"type":"http_response","id":"{id}","status":200,"headers":[],"body_b64":"b2s="}}"#
    );
    agent.send(Message::text(answer)).unwrap();
    let (status, _, body) = call.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    let unknown = format!("/v1/http/box-1/items?key=rrk_{}", "0".repeat(64));
    assert_eq!(get(srv.addr, &unknown).0, 401);
    assert_eq!(counter(&srv, "api_key_admitted"), 2);
}

both_drivers!(
    keys_are_granted_refused_and_reloaded,
    a_bridged_request_with_a_key,
    a_bad_key_file_stops_the_start
);
