use super::*;

fn claims(sid: SessionGrant, role: Option<&str>) -> Claims {
    Claims {
        sid,
        role: role.map(str::to_string),
        exp: NOW,
    }
}

fn one(s: &str) -> SessionGrant {
    SessionGrant::One(s.to_string())
}

#[test]
fn session_must_match_unless_any() {
    let c = claims(one("room-1"), None);
    assert_eq!(c.grant("room-1", None), Ok(None));
    assert_eq!(c.grant("room-2", None), Err(AuthError::WrongSession));
    assert_eq!(c.grant("room-1x", Some("a")), Err(AuthError::WrongSession));
    assert_eq!(c.grant("ROOM-1", None), Err(AuthError::WrongSession));
    let any = claims(SessionGrant::Any, None);
    assert_eq!(any.grant("whatever", Some("a")), Ok(Some("a".into())));
    assert_eq!(any.grant("*", None), Ok(None));
}

#[test]
fn a_token_role_pins_the_role() {
    let c = claims(one("s"), Some("desktop"));
    assert_eq!(c.grant("s", None), Ok(Some("desktop".into())));
    assert_eq!(c.grant("s", Some("desktop")), Ok(Some("desktop".into())));
    assert_eq!(c.grant("s", Some("mobile")), Err(AuthError::WrongRole));
    // The session is judged first: a stranger learns nothing about the role.
    assert_eq!(c.grant("t", Some("mobile")), Err(AuthError::WrongSession));
}

#[test]
fn without_a_token_role_the_request_decides() {
    let c = claims(one("s"), None);
    assert_eq!(c.grant("s", Some("mobile")), Ok(Some("mobile".into())));
    assert_eq!(c.grant("s", None), Ok(None));
}

#[test]
fn statuses_codes_and_messages() {
    use AuthError::*;
    let all = [
        Missing,
        TooLong,
        Malformed,
        Algorithm,
        Signature,
        Expired,
        NotYetValid,
        Audience,
        Issuer,
        WrongSession,
        WrongRole,
    ];
    let mut codes: Vec<&str> = all.iter().map(|e| e.code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len(), "codes are distinct");
    for e in all {
        let want = if matches!(e, WrongSession | WrongRole) {
            403
        } else {
            401
        };
        assert_eq!(e.status(), want, "{e:?}");
        assert!(e.code().starts_with("token_"), "{e:?}");
        assert_eq!(e.to_string(), e.message());
    }
    assert_eq!(Expired.code(), "token_expired");
    assert_eq!(NotYetValid.code(), "token_not_yet_valid");
}

#[test]
fn redaction_hides_credentials_only() {
    let tok = mint(SECRET, JwtAlgorithm::Hs256, &good());
    let cases = [
        (
            "role=a&token=abc&events=1",
            "role=a&token=<redacted>&events=1",
        ),
        (
            "access_token=x&jwt=y&Auth=z",
            "access_token=<redacted>&jwt=<redacted>&Auth=<redacted>",
        ),
        ("token", "token"),
        ("token=", "token=<redacted>"),
        ("", ""),
        ("role=desktop&events=1", "role=desktop&events=1"),
        // API keys: as `key=`, and in a parameter of any name, or bare.
        ("role=a&key=rrk_00ff", "role=a&key=<redacted>"),
        ("x=rrk_00ff&rrk_11ee&y=2", "x=<redacted>&<redacted>&y=2"),
    ];
    for (query, want) in cases {
        assert_eq!(redact_query(query), want, "{query}");
    }
    let odd = format!("t={tok}&x=1&{tok}");
    let out = redact_query(&odd);
    assert!(!out.contains(&tok[10..]), "{out}");
    assert_eq!(out, "t=<redacted>&x=1&<redacted>");
    let encoded = tok.replace('.', "%2E");
    assert_eq!(redact_query(&format!("x={encoded}")), "x=<redacted>");
}
