//! Token verification over hostile input, with one fixed secret and policy: raw strings, tokens
//! found in a parsed request head, tokens minted from fuzzer-chosen claims (checked against a
//! model of the rules), and correctly signed tokens with arbitrary header and claims bytes, so
//! the checks behind the signature are reached at all.
//!
//! Input layout: 1 byte whose low two bits pick the mode, then:
//! - 0: the token, as UTF-8 (lossy);
//! - 1: the request target's query, request line end and header lines, after
//!   `GET /v1/relay/room-1?`;
//! - 2: bytes drawn by `arbitrary` into claims, algorithm, key choice and clock;
//! - 3: 1 byte of flags. Bit 0 clear: the rest is the claims, under a fixed HS256 header. Bit 0
//!   set: bits 1-2 pick the signing algorithm, then 1 byte gives the header's length, then the
//!   header, then the claims.

#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use ringrelay::auth::{
    mint, redact_query, sign_parts, token_from_request, AuthError, Authenticator, Claims,
    MintClaims, SessionGrant,
};
use ringrelay::config::{AuthConfig, JwtAlgorithm};
use ringrelay::http::parse_head;
use ringrelay::http::route::{valid_role, valid_session_id};
use std::time::Duration;

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef-0123456789";
const NOW: u64 = 1_700_000_000;
const LEEWAY: u64 = 30;
/// Short enough that the clock offsets drawn below cross it both ways.
const MAX_LIFETIME: u64 = 3600;
const MAX_TOKEN: usize = 512;
const ALLOWED: [JwtAlgorithm; 2] = [JwtAlgorithm::Hs256, JwtAlgorithm::Hs384];
const ALL_ERRORS: [AuthError; 12] = [
    AuthError::Missing,
    AuthError::TooLong,
    AuthError::Malformed,
    AuthError::Algorithm,
    AuthError::Signature,
    AuthError::Expired,
    AuthError::NotYetValid,
    AuthError::LifetimeTooLong,
    AuthError::Audience,
    AuthError::Issuer,
    AuthError::WrongSession,
    AuthError::WrongRole,
];
const ALL: [JwtAlgorithm; 3] = [
    JwtAlgorithm::Hs256,
    JwtAlgorithm::Hs384,
    JwtAlgorithm::Hs512,
];

fn authenticator() -> Authenticator {
    let cfg = AuthConfig {
        algorithms: ALLOWED.to_vec(),
        audience: Some("relay".into()),
        issuer: Some("ops".into()),
        leeway: Duration::from_secs(LEEWAY),
        max_token_bytes: MAX_TOKEN,
        max_token_lifetime: Duration::from_secs(MAX_LIFETIME),
        ..AuthConfig::default()
    };
    Authenticator::new(SECRET.to_vec(), &cfg)
}

/// What any answer must satisfy: a refusal is a 401 that says nothing of the token; an
/// acceptance carries only well-formed, unexpired claims.
fn check_answer(token: &str, now: u64, got: &Result<Claims, AuthError>) {
    match got {
        Err(e) => {
            assert_eq!(e.status(), 401, "{e:?} from verify");
            assert!(e.code().starts_with("token_"));
            // A token may happen to be a piece of some fixed message; any other showing of it
            // means the message was built from the request.
            if token.len() >= 12 && !ALL_ERRORS.iter().any(|k| k.message().contains(token)) {
                assert!(!e.message().contains(token), "message echoes the token");
            }
            if token.len() > MAX_TOKEN {
                assert_eq!(*e, AuthError::TooLong);
            }
        }
        Ok(c) => {
            assert!(token.len() <= MAX_TOKEN);
            if let SessionGrant::One(s) = &c.sid {
                assert!(valid_session_id(s), "accepted sid {s:?}");
            }
            if let Some(r) = &c.role {
                assert!(valid_role(r), "accepted role {r:?}");
            }
            assert!(
                u128::from(c.exp) + u128::from(LEEWAY) >= u128::from(now),
                "accepted an expired token"
            );
            assert!(
                u128::from(c.exp) <= u128::from(now) + u128::from(MAX_LIFETIME + LEEWAY),
                "accepted a token valid for longer than auth.max_token_lifetime"
            );
        }
    }
}

fn raw_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let auth = authenticator();
    let got = auth.verify(&token, NOW);
    check_answer(&token, NOW, &got);
}

fn request(data: &[u8]) {
    let mut req = b"GET /v1/relay/room-1?".to_vec();
    req.extend_from_slice(data);
    let Ok(Some((head, _))) = parse_head(&req, 8192, 64) else {
        return;
    };
    let redacted = redact_query(&head.query);
    for (before, after) in head.query.split('&').zip(redacted.split('&')) {
        let key = before.split_once('=').map_or(before, |(k, _)| k);
        if key.to_ascii_lowercase().contains("token") && before.contains('=') {
            assert_eq!(
                after,
                format!("{key}=<redacted>"),
                "token left in a log line"
            );
        }
    }
    assert_eq!(head.query.split('&').count(), redacted.split('&').count());
    match token_from_request(&head) {
        Ok(None) => {
            assert_eq!(head.header_count("authorization"), 0);
            assert_eq!(head.query_param("token"), None);
        }
        Ok(Some(token)) => {
            assert!(!token.is_empty());
            let got = authenticator().verify(&token, NOW);
            check_answer(&token, NOW, &got);
            if let Ok(c) = got {
                let _ = c.grant("room-1", head.query_param("role").as_deref());
            }
        }
        Err(e) => assert!(
            matches!(e, AuthError::Missing | AuthError::Malformed),
            "{e:?}"
        ),
    }
}

/// A string that is often a valid id or role, sometimes not.
fn pick(u: &mut Unstructured<'_>, common: &[&str]) -> String {
    let n: u8 = u.arbitrary().unwrap_or(0);
    match n as usize % (common.len() + 1) {
        i if i < common.len() => common[i].to_string(),
        _ => u.arbitrary::<String>().unwrap_or_default(),
    }
}

fn offset(u: &mut Unstructured<'_>, now: u64) -> u64 {
    if u.arbitrary::<bool>().unwrap_or(false) {
        u.arbitrary().unwrap_or(0)
    } else {
        let d: i16 = u.arbitrary().unwrap_or(0);
        now.saturating_add_signed(i64::from(d))
    }
}

/// The rules, written out as a model of what `verify` must answer, in its order of checks.
fn expected(
    token: &str,
    mc: &MintClaims,
    alg: JwtAlgorithm,
    right_key: bool,
    now: u64,
) -> Result<Claims, AuthError> {
    let (now, leeway) = (u128::from(now), u128::from(LEEWAY));
    let max = u128::from(MAX_LIFETIME);
    if token.len() > MAX_TOKEN {
        Err(AuthError::TooLong)
    } else if !ALLOWED.contains(&alg) {
        Err(AuthError::Algorithm)
    } else if !right_key {
        Err(AuthError::Signature)
    } else if !(mc.sid == "*" || valid_session_id(&mc.sid))
        || mc.role.as_deref().is_some_and(|r| !valid_role(r))
    {
        Err(AuthError::Malformed)
    } else if now > u128::from(mc.exp) + leeway {
        Err(AuthError::Expired)
    } else if mc.nbf.is_some_and(|nbf| now + leeway < u128::from(nbf)) {
        Err(AuthError::NotYetValid)
    } else if mc
        .iat
        .is_some_and(|iat| u128::from(mc.exp).saturating_sub(u128::from(iat)) > max)
        || u128::from(mc.exp).saturating_sub(now) > max + leeway
    {
        Err(AuthError::LifetimeTooLong)
    } else if mc.aud.as_deref() != Some("relay") {
        Err(AuthError::Audience)
    } else if mc.iss.as_deref() != Some("ops") {
        Err(AuthError::Issuer)
    } else {
        Ok(Claims {
            sid: if mc.sid == "*" {
                SessionGrant::Any
            } else {
                SessionGrant::One(mc.sid.clone())
            },
            role: mc.role.clone(),
            exp: mc.exp,
        })
    }
}

fn minted(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let now = if u.arbitrary().unwrap_or(true) {
        NOW
    } else {
        u.arbitrary().unwrap_or(NOW)
    };
    let sid = pick(&mut u, &["room-1", "*", "a.b_c~d-9"]);
    let role = u
        .arbitrary::<bool>()
        .unwrap_or(false)
        .then(|| pick(&mut u, &["desktop", "agent_2"]));
    let exp = offset(&mut u, now);
    let nbf = u
        .arbitrary::<bool>()
        .unwrap_or(false)
        .then(|| offset(&mut u, now));
    let iat = u
        .arbitrary::<bool>()
        .unwrap_or(false)
        .then(|| offset(&mut u, now));
    let aud = u
        .arbitrary::<bool>()
        .unwrap_or(true)
        .then(|| pick(&mut u, &["relay"]));
    let iss = u
        .arbitrary::<bool>()
        .unwrap_or(true)
        .then(|| pick(&mut u, &["ops"]));
    let alg = *u.choose(&ALL).unwrap_or(&JwtAlgorithm::Hs256);
    let right_key = u.ratio(7u8, 8u8).unwrap_or(true);
    let mc = MintClaims {
        sid,
        role,
        exp,
        iat,
        nbf,
        aud,
        iss,
    };
    let key: &[u8] = if right_key {
        SECRET
    } else {
        b"a different key of thirty-two bytes"
    };
    let token = mint(key, alg, &mc);
    let got = authenticator().verify(&token, now);
    check_answer(&token, now, &got);
    assert_eq!(
        got,
        expected(&token, &mc, alg, right_key, now),
        "claims {mc:?}"
    );
    if let Ok(c) = got {
        let asked = if mc.sid == "*" {
            "any"
        } else {
            mc.sid.as_str()
        };
        match c.grant(asked, Some("mobile")) {
            Ok(role) => assert_eq!(role.as_deref(), Some("mobile")),
            Err(e) => assert_eq!(e.status(), 403),
        }
    }
}

fn signed(data: &[u8]) {
    let [flags, len, rest @ ..] = data else {
        return;
    };
    let alg = ALL[usize::from(flags >> 1) % 3];
    let (header, claims): (&[u8], &[u8]) = if flags & 1 == 0 {
        (br#"{"alg":"HS256","typ":"JWT"}"#, &data[1..])
    } else {
        rest.split_at(usize::from(*len).min(rest.len()))
    };
    let alg = if flags & 1 == 0 {
        JwtAlgorithm::Hs256
    } else {
        alg
    };
    let token = sign_parts(SECRET, alg, header, claims);
    let got = authenticator().verify(&token, NOW);
    check_answer(&token, NOW, &got);
    if flags & 1 == 0 && token.len() <= MAX_TOKEN {
        assert!(
            !matches!(
                got,
                Err(AuthError::Signature | AuthError::Algorithm | AuthError::TooLong)
            ),
            "a well-signed HS256 token refused with {got:?}"
        );
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    match mode & 3 {
        0 => raw_token(data),
        1 => request(data),
        2 => minted(data),
        _ => signed(data),
    }
});
