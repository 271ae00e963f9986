//! Tokens and origins, checked with a real client against the real server: each refusal's
//! status and JSON body, a token for one session that cannot open another, and no token in
//! any log line.

mod common;
use common::*;
use ringrelay::auth::{mint, sign_parts, unix_now, MintClaims};
use ringrelay::config::JwtAlgorithm;
use std::net::TcpStream;
use tungstenite::Message;

const SECRET: &str = "protection-test-secret-0123456789abcdef";

fn token(sid: &str, role: Option<&str>, exp: u64) -> String {
    let claims = MintClaims {
        sid: sid.into(),
        role: role.map(Into::into),
        exp,
        ..MintClaims::default()
    };
    mint(SECRET.as_bytes(), JwtAlgorithm::Hs256, &claims)
}

fn valid(sid: &str, role: Option<&str>) -> String {
    token(sid, role, unix_now() + 600)
}

fn server(driver: &str, extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![("RINGRELAY_AUTH_JWT_SECRET", SECRET), ("RUST_LOG", "debug")];
    env.extend_from_slice(extra);
    TestServer::start(driver, 2, &env)
}

fn tcp(srv: &TestServer) -> TcpStream {
    TcpStream::connect(srv.addr).unwrap()
}

fn upgrade(
    srv: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String, String)> {
    try_upgrade(tcp(srv), srv.addr, path, headers)
}

fn tokens_are_checked_at_the_handshake(driver: &str) {
    let srv = server(driver, &[]);
    let path = "/v1/relay/room-x?role=desktop";
    let head = assert_refused(upgrade(&srv, path, &[]), 401, "token_missing");
    assert!(head.contains("www-authenticate: Bearer"), "{head}");
    let garbage = "not.a.jwt";
    assert_refused(
        upgrade(&srv, &format!("{path}&token={garbage}"), &[]),
        401,
        "token_malformed",
    );
    let forged = mint(
        b"some-other-secret-that-is-long-enough!!",
        JwtAlgorithm::Hs256,
        &MintClaims {
            sid: "room-x".into(),
            exp: unix_now() + 600,
            ..MintClaims::default()
        },
    );
    let head = assert_refused(
        upgrade(&srv, &format!("{path}&token={forged}"), &[]),
        401,
        "token_signature",
    );
    assert!(
        head.contains(r#"www-authenticate: Bearer error="invalid_token""#),
        "{head}"
    );
    let expired = token("room-x", None, unix_now() - 3600);
    assert_refused(
        upgrade(&srv, &format!("{path}&token={expired}"), &[]),
        401,
        "token_expired",
    );
    // `alg: none` with an empty signature, and an algorithm that is not configured.
    let claims = format!(r#"{{"sid":"room-x","exp":{}}}"#, unix_now() + 600);
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims.as_bytes()));
    assert_refused(
        upgrade(&srv, &format!("{path}&token={none}"), &[]),
        401,
        "token_algorithm",
    );
    let hs512 = sign_parts(
        SECRET.as_bytes(),
        JwtAlgorithm::Hs512,
        br#"{"alg":"HS512"}"#,
        claims.as_bytes(),
    );
    assert_refused(
        upgrade(&srv, &format!("{path}&token={hs512}"), &[]),
        401,
        "token_algorithm",
    );
    let oversize = "a".repeat(5000);
    assert_refused(
        upgrade(&srv, &format!("{path}&token={oversize}"), &[]),
        401,
        "token_too_long",
    );

    // A token for session X cannot join session Y, nor take another role.
    let for_x = valid("room-x", Some("desktop"));
    assert_refused(
        upgrade(
            &srv,
            &format!("/v1/relay/room-y?role=desktop&token={for_x}"),
            &[],
        ),
        403,
        "token_wrong_session",
    );
    assert_refused(
        upgrade(
            &srv,
            &format!("/v1/relay/room-x?role=mobile&token={for_x}"),
            &[],
        ),
        403,
        "token_wrong_role",
    );
    assert_refused(
        upgrade(&srv, &format!("/mobile/room-x?token={for_x}"), &[]),
        403,
        "token_wrong_role",
    );

    // The right tokens pair: one in the query, one in the header. A token that names a role
    // gives it to a connection that asks for none.
    let mut a = upgrade(
        &srv,
        &format!("/v1/relay/room-x?events=1&token={for_x}"),
        &[],
    )
    .unwrap();
    let hello = recv_event(&mut a);
    assert_eq!(hello["role"], "desktop", "{hello}");
    let any = valid("*", None);
    let bearer = format!("Bearer {any}");
    let mut b = upgrade(
        &srv,
        "/v1/relay/room-x?role=mobile",
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(recv_event(&mut a)["type"], "peer_connected");
    b.send(Message::text("through")).unwrap();
    assert_eq!(recv_text(&mut a), "through");

    // Echo needs a token too (security.echo_route = "auth"); the bridge route is checked
    // before it looks for the session's agent.
    assert_refused(upgrade(&srv, "/v1/echo", &[]), 401, "token_missing");
    let mut e = upgrade(&srv, &format!("/v1/echo?token={any}"), &[]).unwrap();
    e.send(Message::text("echo")).unwrap();
    assert_eq!(recv_text(&mut e), "echo");
    let (status, _, body) = get(srv.addr, "/v1/http/room-x/api");
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = http(
        srv.addr,
        &format!(
            "GET /v1/http/room-x/api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {for_x}\r\n\r\n"
        ),
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("agent_not_connected"), "{body}");

    // Seven bad tokens, three for the wrong session or role, echo and bridge without one.
    let st = stats(&srv);
    assert_eq!(st["totals"]["auth_refused"], 12, "{}", st["totals"]);
    let by_status = &st["totals"]["handshakes_refused_by_status"];
    assert_eq!(
        (&by_status["401"], &by_status["403"]),
        (&9.into(), &3.into())
    );

    // No token, nor any part of one, in any log line; refusals are logged redacted.
    let log = srv.log.lock().unwrap().join("\n");
    for t in [&for_x, &any, &forged, &expired, &hs512] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token leaked into the log");
    }
    assert!(
        log.contains("token=<redacted>"),
        "refusals are logged, redacted"
    );
}

/// A correctly signed token that is valid for a long time: leaked once (a log, a shared
/// link), it opens its session for as long as its issuer wrote. Before: a 30-day token was
/// accepted like any other. Now `auth.max_token_lifetime` (24 h by default) refuses it with
/// 401 token_lifetime_too_long, counted with the other refusals, while a pair with
/// short-lived tokens keeps talking beside the attempts.
fn long_lived_tokens_are_refused(driver: &str) {
    const DAY: u64 = 24 * 3600;
    let srv = server(driver, &[]);
    let now = unix_now();
    let lived = |sid: &str, iat: Option<u64>, exp: u64| {
        let claims = MintClaims {
            sid: sid.into(),
            iat,
            exp,
            ..MintClaims::default()
        };
        mint(SECRET.as_bytes(), JwtAlgorithm::Hs256, &claims)
    };
    // The control pair, on 1-hour tokens (with iat, as `ringrelay token` mints them).
    let hour = lived("control", Some(now), now + 3600);
    let mut a = upgrade(&srv, &format!("/v1/relay/control?role=a&token={hour}"), &[]).unwrap();
    let mut b = upgrade(&srv, &format!("/v1/relay/control?role=b&token={hour}"), &[]).unwrap();
    let before = stats(&srv)["totals"]["auth_refused"].as_u64().unwrap();
    let month = [
        lived("room-l", Some(now), now + 30 * DAY),
        lived("room-l", None, now + 30 * DAY),
        // Issued "tomorrow" with an hour's validity: still good for a day and an hour.
        lived("room-l", Some(now + DAY), now + DAY + 3600),
    ];
    for (i, t) in month.iter().enumerate() {
        let head = assert_refused(
            upgrade(&srv, &format!("/v1/relay/room-l?token={t}"), &[]),
            401,
            "token_lifetime_too_long",
        );
        assert!(head.contains("error=\"invalid_token\""), "{head}");
        a.send(Message::text(format!("still {i}"))).unwrap();
        assert_eq!(recv_text(&mut b), format!("still {i}"));
    }
    // In the Authorization header too, and on the bridge route.
    let bearer = format!("Bearer {}", month[0]);
    assert_refused(
        upgrade(&srv, "/v1/relay/room-l", &[("Authorization", &bearer)]),
        401,
        "token_lifetime_too_long",
    );
    let (status, _, body) = http(
        srv.addr,
        &format!("GET /v1/http/room-l/x HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\n\r\n"),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token_lifetime_too_long"), "{body}");
    let st = stats(&srv);
    assert_eq!(st["totals"]["auth_refused"].as_u64().unwrap() - before, 5);
    // An hour's token for that session is fine, and the pair still flows.
    let ok = lived("room-l", Some(now), now + 3600);
    upgrade(&srv, &format!("/v1/relay/room-l?token={ok}"), &[]).unwrap();
    b.send(Message::text("done")).unwrap();
    assert_eq!(recv_text(&mut a), "done");

    // An operator who issues month-long tokens on purpose raises the limit, or turns it off.
    for limit in ["720h", "0s"] {
        let srv = server(driver, &[("RINGRELAY_AUTH_MAX_TOKEN_LIFETIME", limit)]);
        upgrade(&srv, &format!("/v1/relay/room-l?token={}", month[0]), &[]).unwrap();
    }
}

fn echo_route_can_be_opened_or_switched_off(driver: &str) {
    let open = server(driver, &[("RINGRELAY_SECURITY_ECHO_ROUTE", "open")]);
    let mut e = upgrade(&open, "/v1/echo", &[]).unwrap();
    e.send(Message::text("hi")).unwrap();
    assert_eq!(recv_text(&mut e), "hi");
    let off = server(driver, &[("RINGRELAY_SECURITY_ECHO_ROUTE", "off")]);
    assert_refused(upgrade(&off, "/v1/echo", &[]), 404, "not_found");
}

/// An echo upgrade carrying `origin`, if any.
fn echo_from_origin(srv: &TestServer, origin: Option<&str>) -> Result<Ws, (u16, String, String)> {
    let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
    upgrade(srv, "/v1/echo", &headers)
}

fn origins_are_checked(driver: &str) {
    let srv = TestServer::start(
        driver,
        2,
        &[("RINGRELAY_SECURITY_ALLOWED_ORIGINS", "https://app.example")],
    );
    let up = |origin| echo_from_origin(&srv, origin);
    assert_refused(up(Some("https://evil.example")), 403, "origin_not_allowed");
    assert_refused(up(Some("null")), 403, "origin_not_allowed");
    assert!(up(Some("https://app.example")).is_ok());
    // Native clients send no Origin.
    assert!(up(None).is_ok());
    assert_eq!(counter(&srv, "origin_refused"), 2);

    let strict = TestServer::start(
        driver,
        2,
        &[
            ("RINGRELAY_SECURITY_ALLOWED_ORIGINS", "*"),
            ("RINGRELAY_SECURITY_REQUIRE_ORIGIN", "true"),
        ],
    );
    assert_refused(echo_from_origin(&strict, None), 403, "origin_not_allowed");
    assert!(echo_from_origin(&strict, Some("https://anything.example")).is_ok());
}

both_drivers!(
    tokens_are_checked_at_the_handshake,
    long_lived_tokens_are_refused,
    echo_route_can_be_opened_or_switched_off,
    origins_are_checked,
);
