use super::*;
use AuthError::*;

fn claims_json(extra: &str) -> String {
    format!(r#"{{"sid":"room-1","exp":{}{extra}}}"#, NOW + 60)
}

#[test]
fn round_trip_for_each_algorithm() {
    let all = [
        JwtAlgorithm::Hs256,
        JwtAlgorithm::Hs384,
        JwtAlgorithm::Hs512,
    ];
    for alg in all {
        let only = AuthConfig {
            algorithms: vec![alg],
            ..config()
        };
        let mc = MintClaims {
            role: Some("desktop".into()),
            ..good()
        };
        let token = mint(SECRET, alg, &mc);
        let want = Claims {
            sid: SessionGrant::One("room-1".into()),
            role: Some("desktop".into()),
            exp: NOW + 60,
        };
        assert_eq!(
            authenticator(&only).verify(&token, NOW),
            Ok(want),
            "{alg:?}"
        );
        let every = AuthConfig {
            algorithms: all.to_vec(),
            ..config()
        };
        assert!(authenticator(&every).verify(&token, NOW).is_ok(), "{alg:?}");
        for other in all.into_iter().filter(|a| *a != alg) {
            let cfg = AuthConfig {
                algorithms: vec![other],
                ..config()
            };
            assert_eq!(authenticator(&cfg).verify(&token, NOW), Err(Algorithm));
        }
    }
    let any = mint(
        SECRET,
        JwtAlgorithm::Hs256,
        &MintClaims {
            sid: "*".into(),
            ..good()
        },
    );
    assert_eq!(check(&any).unwrap().sid, SessionGrant::Any);
}

#[test]
fn alg_none_and_foreign_algorithms_are_refused() {
    let body = b64(&claims_json(""));
    for alg in [
        "none", "None", "NONE", "RS256", "ES256", "PS256", "EdDSA", "HS1024", "hs256", "",
    ] {
        let header = b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        assert_eq!(check(&format!("{header}.{body}.")), Err(Algorithm), "{alg}");
        // Even signed with the right key: the header alone decides.
        assert_eq!(
            check(&sign_raw(&format!("{header}.{body}"))),
            Err(Algorithm),
            "{alg}"
        );
    }
    assert_eq!(
        check(&signed(r#"{"typ":"JWT"}"#, &claims_json(""))),
        Err(Algorithm)
    );
    assert_eq!(
        check(&signed(r#"{"alg":null}"#, &claims_json(""))),
        Err(Algorithm)
    );
    assert_eq!(
        check(&signed(r#"{"alg":256}"#, &claims_json(""))),
        Err(Malformed)
    );
}

#[test]
fn header_typ_and_crit() {
    let body = claims_json("");
    for ok in [
        r#"{"alg":"HS256"}"#,
        r#"{"alg":"HS256","typ":"jwt"}"#,
        HS256,
        r#"{"alg":"HS256","kid":"k1"}"#,
    ] {
        assert!(check(&signed(ok, &body)).is_ok(), "{ok}");
    }
    for bad in [
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        r#"{"alg":"HS256","typ":1}"#,
        r#"{"alg":"HS256","typ":null}"#,
        r#"{"alg":"HS256","crit":["exp"]}"#,
        r#"{"alg":"HS256","crit":[]}"#,
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"["HS256"]"#,
        r#"{"alg":"HS256""#,
        "",
    ] {
        assert_eq!(check(&signed(bad, &body)), Err(Malformed), "{bad}");
    }
}

#[test]
fn tampering_and_wrong_keys_fail_the_signature() {
    let token = mint(SECRET, JwtAlgorithm::Hs256, &good());
    let parts: Vec<&str> = token.split('.').collect();
    let other = b64(&claims_json("").replace("room-1", "room-2"));
    assert_eq!(
        check(&format!("{}.{other}.{}", parts[0], parts[2])),
        Err(Signature)
    );
    let mut sig = parts[2].to_string();
    let first = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(..1, first);
    assert_eq!(
        check(&format!("{}.{}.{sig}", parts[0], parts[1])),
        Err(Signature)
    );
    // 40 characters decode cleanly to 30 bytes: a well-formed but truncated tag.
    let short = &parts[2][..40];
    assert_eq!(
        check(&format!("{}.{}.{short}", parts[0], parts[1])),
        Err(Signature)
    );
    assert_eq!(
        check(&format!("{}.{}.", parts[0], parts[1])),
        Err(Signature)
    );
    let wrong = mint(
        b"another secret of thirty-two bytes!",
        JwtAlgorithm::Hs256,
        &good(),
    );
    assert_eq!(check(&wrong), Err(Signature));
    assert!(check(&token).is_ok());
}

#[test]
fn the_signature_is_checked_before_the_claims_are_read() {
    // Garbage claims under a bad signature report the signature, not the claims.
    let forged = format!("{}.{}.{}", b64(HS256), b64("not json"), b64("x"));
    assert_eq!(check(&forged), Err(Signature));
    assert_eq!(check(&signed(HS256, "not json")), Err(Malformed));
}

#[test]
fn exp_and_leeway() {
    // Without a lifetime limit, so that far-off dates reach the expiry arithmetic.
    let unlimited = authenticator(&AuthConfig {
        max_token_lifetime: Duration::ZERO,
        ..config()
    });
    let at = |exp: &str| {
        let token = signed(HS256, &format!(r#"{{"sid":"s","exp":{exp}}}"#));
        unlimited.verify(&token, NOW)
    };
    assert_eq!(at(&(NOW - 31).to_string()), Err(Expired));
    assert_eq!(at(&(NOW - 30).to_string()).map(|c| c.exp), Ok(NOW - 30));
    assert_eq!(at(&format!("{}.5", NOW - 31)), Err(Expired));
    assert_eq!(at(&format!("{}.9", NOW - 30)).map(|c| c.exp), Ok(NOW - 30));
    assert_eq!(at("1e300").map(|c| c.exp), Ok(u64::MAX));
    assert_eq!(at(&u64::MAX.to_string()).map(|c| c.exp), Ok(u64::MAX));
    for expired in ["-1", "-1e300", "0", "0.0"] {
        assert_eq!(at(expired), Err(Expired), "{expired}");
    }
    for bad in ["\"9999999999\"", "null", "true", "[1]", "{}"] {
        assert_eq!(at(bad), Err(Malformed), "{bad}");
    }
    assert_eq!(check(&signed(HS256, r#"{"sid":"s"}"#)), Err(Malformed));
    assert_eq!(
        check(&signed(HS256, r#"{"sid":"s","exp":1e999}"#)),
        Err(Malformed)
    );
    // With the default limit the far-off ones are too long-lived, not malformed.
    assert_eq!(
        check(&signed(HS256, r#"{"sid":"s","exp":1e300}"#)),
        Err(LifetimeTooLong)
    );

    let strict = AuthConfig {
        leeway: Duration::ZERO,
        ..config()
    };
    let token = mint(
        SECRET,
        JwtAlgorithm::Hs256,
        &MintClaims { exp: NOW, ..good() },
    );
    assert!(authenticator(&strict).verify(&token, NOW).is_ok());
    assert_eq!(authenticator(&strict).verify(&token, NOW + 1), Err(Expired));
}

#[test]
fn nbf_and_leeway() {
    let at = |nbf: &str| {
        let body = format!(
            r#"{{"sid":"s","exp":{},"nbf":{nbf},"jti":"ignored"}}"#,
            NOW + 600
        );
        check(&signed(HS256, &body))
    };
    assert_eq!(at(&(NOW + 31).to_string()), Err(NotYetValid));
    assert!(at(&(NOW + 30).to_string()).is_ok());
    assert_eq!(at(&format!("{}.1", NOW + 30)), Err(NotYetValid));
    assert!(at(&NOW.to_string()).is_ok());
    assert!(at("-5").is_ok());
    assert_eq!(at("1e300"), Err(NotYetValid));
    for bad in ["\"0\"", "null", "[]"] {
        assert_eq!(at(bad), Err(Malformed), "{bad}");
    }
}

/// `auth.max_token_lifetime` (24 h by default): `exp - iat` may not exceed it, nor may
/// `exp - now` by more than the leeway, whether or not there is an `iat`.
#[test]
fn lifetime_is_bounded() {
    const DAY: u64 = 24 * 3600;
    let body = |exp: u64, iat: Option<&str>| match iat {
        Some(iat) => format!(r#"{{"sid":"s","exp":{exp},"iat":{iat}}}"#),
        None => format!(r#"{{"sid":"s","exp":{exp}}}"#),
    };
    let at = |exp: u64, iat: Option<&str>| check(&signed(HS256, &body(exp, iat)));
    let now = NOW.to_string();
    // Issued now: a day is the most; a second more is refused, with or without iat.
    assert!(at(NOW + DAY, Some(&now)).is_ok());
    assert_eq!(at(NOW + DAY + 1, Some(&now)), Err(LifetimeTooLong));
    assert_eq!(at(NOW + 30 * DAY, Some(&now)), Err(LifetimeTooLong));
    assert_eq!(at(NOW + 30 * DAY, None), Err(LifetimeTooLong));
    // Without iat only the time left counts, with the leeway for clock skew.
    assert!(at(NOW + DAY + 30, None).is_ok());
    assert_eq!(at(NOW + DAY + 31, None), Err(LifetimeTooLong));
    // A 30-day token issued 29.5 days ago has half a day left, but was minted too long.
    let old = (NOW - 29 * DAY - DAY / 2).to_string();
    assert_eq!(at(NOW + DAY / 2, Some(&old)), Err(LifetimeTooLong));
    // An iat in the future cannot hide a long validity: what is left by our clock counts.
    let later = (NOW + 10 * DAY).to_string();
    assert_eq!(
        at(NOW + 10 * DAY + 3600, Some(&later)),
        Err(LifetimeTooLong)
    );
    // A fractional iat is rounded down (toward refusing); iat must be a NumericDate.
    assert_eq!(
        at(NOW + DAY, Some(&format!("{NOW}.5"))).map(|c| c.exp),
        Ok(NOW + DAY)
    );
    assert_eq!(
        at(NOW + DAY, Some(&format!("{}.5", NOW - 1))),
        Err(LifetimeTooLong)
    );
    for bad in ["\"now\"", "null", "[]", "1e999"] {
        assert_eq!(at(NOW + 60, Some(bad)), Err(Malformed), "{bad}");
    }
    // Expired beats too long: the client learns the more useful reason.
    assert_eq!(at(NOW - 3600, Some("0")), Err(Expired));

    let week = AuthConfig {
        max_token_lifetime: Duration::from_secs(7 * DAY),
        ..config()
    };
    let t = signed(HS256, &body(NOW + 7 * DAY, Some(&now)));
    assert!(authenticator(&week).verify(&t, NOW).is_ok());
    assert_eq!(check(&t), Err(LifetimeTooLong));
    // "0s" turns the check off.
    let off = AuthConfig {
        max_token_lifetime: Duration::ZERO,
        ..config()
    };
    let t = signed(HS256, &body(NOW + 3650 * DAY, Some("0")));
    assert!(authenticator(&off).verify(&t, NOW).is_ok());
    assert_eq!(
        (
            LifetimeTooLong.status(),
            LifetimeTooLong.code(),
            LifetimeTooLong
                .message()
                .contains("auth.max_token_lifetime")
        ),
        (401, "token_lifetime_too_long", true)
    );
}

#[test]
fn audience_when_configured() {
    let cfg = AuthConfig {
        audience: Some("relay".into()),
        ..config()
    };
    let at = |aud: &str| authenticator(&cfg).verify(&signed(HS256, &claims_json(aud)), NOW);
    assert!(at(r#","aud":"relay""#).is_ok());
    assert!(at(r#","aud":["web","relay"]"#).is_ok());
    for bad in [
        r#","aud":"web""#,
        r#","aud":"Relay""#,
        r#","aud":["web"]"#,
        r#","aud":[]"#,
        r#","aud":["relay",5]"#,
        r#","aud":5"#,
        r#","aud":null"#,
        "",
    ] {
        assert_eq!(at(bad), Err(Audience), "{bad}");
    }
    // Not configured: aud is not looked at.
    for any in [r#","aud":"web""#, r#","aud":5"#, ""] {
        assert!(check(&signed(HS256, &claims_json(any))).is_ok(), "{any}");
    }
}

#[test]
fn issuer_when_configured() {
    let cfg = AuthConfig {
        issuer: Some("https://auth.example".into()),
        ..config()
    };
    let at = |iss: &str| authenticator(&cfg).verify(&signed(HS256, &claims_json(iss)), NOW);
    assert!(at(r#","iss":"https://auth.example""#).is_ok());
    for bad in [
        r#","iss":"https://evil.example""#,
        r#","iss":["https://auth.example"]"#,
        "",
    ] {
        assert_eq!(at(bad), Err(Issuer), "{bad}");
    }
    assert!(check(&signed(HS256, &claims_json(r#","iss":7"#))).is_ok());
}

#[test]
fn sid_and_role_shapes() {
    let exp = NOW + 60;
    let with = |members: &str| check(&signed(HS256, &format!(r#"{{"exp":{exp}{members}}}"#)));
    assert!(with(r#","sid":"a.B_~-9""#).is_ok());
    let long = "a".repeat(129);
    for bad in [
        "".to_string(),
        r#","sid":"""#.to_string(),
        r#","sid":"a b""#.to_string(),
        r#","sid":"a/b""#.to_string(),
        r#","sid":"**""#.to_string(),
        r#","sid":5"#.to_string(),
        r#","sid":null"#.to_string(),
        format!(r#","sid":"{long}""#),
        r#","sid":"s","sid":"t""#.to_string(),
        r#","sid":"s","role":"Admin""#.to_string(),
        r#","sid":"s","role":"""#.to_string(),
        r#","sid":"s","role":null"#.to_string(),
    ] {
        assert_eq!(with(&bad), Err(Malformed), "{bad}");
    }
    assert_eq!(
        with(r#","sid":"s","role":"agent_2""#)
            .unwrap()
            .role
            .as_deref(),
        Some("agent_2")
    );
    assert_eq!(
        check(&signed(HS256, &format!(r#"["s",{exp}]"#))),
        Err(Malformed)
    );
}

#[test]
fn encoding_must_be_strict_base64url() {
    let header = b64(HS256);
    let body = b64(&claims_json(""));
    assert!(check(&sign_raw(&format!("{header}.{body}"))).is_ok());
    for bad in [
        format!("{header}=.{body}"),
        format!("{header}.{body}="),
        format!("{header}.{body}=="),
        format!("{header}. {body}"),
        format!("{header}.{body}\n"),
        format!(
            "{header}.{}",
            body.replace('_', "/").replace('-', "+") + "+/"
        ),
    ] {
        assert_eq!(check(&sign_raw(&bad)), Err(Malformed), "{bad}");
    }
    let token = mint(SECRET, JwtAlgorithm::Hs256, &good());
    assert_eq!(check(&format!("{token}=")), Err(Malformed));
    assert_eq!(check(&format!(" {token}")), Err(Malformed));
    assert_eq!(check(&format!("{token} ")), Err(Malformed));
}

#[test]
fn wrong_number_of_parts() {
    let token = mint(SECRET, JwtAlgorithm::Hs256, &good());
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        String::new(),
        "..".to_string(),
        "...".to_string(),
        parts[..2].join("."),
        parts[0].to_string(),
        format!("{token}.{}", parts[2]),
        format!("{token}."),
    ] {
        assert_eq!(check(&bad), Err(Malformed), "{bad}");
    }
}

#[test]
fn length_bound_comes_first() {
    let token = mint(SECRET, JwtAlgorithm::Hs256, &good());
    let exact = AuthConfig {
        max_token_bytes: token.len(),
        ..config()
    };
    assert!(authenticator(&exact).verify(&token, NOW).is_ok());
    let less = AuthConfig {
        max_token_bytes: token.len() - 1,
        ..config()
    };
    assert_eq!(authenticator(&less).verify(&token, NOW), Err(TooLong));
    assert_eq!(check(&"x".repeat(4097)), Err(TooLong));
    assert_eq!(check(&".".repeat(4096)), Err(Malformed));
}

#[test]
fn from_config_reads_the_secret_once() {
    use crate::config::{CliOverrides, Config};
    let off = Config::default();
    assert!(Authenticator::from_config(&off).unwrap().is_none());
    let secret = "s".repeat(40);
    let env = vec![("RINGRELAY_AUTH_JWT_SECRET".to_string(), secret.clone())];
    let on = Config::load(None, &env, &CliOverrides::default()).unwrap();
    let auth = Authenticator::from_config(&on).unwrap().unwrap();
    let token = mint(secret.as_bytes(), JwtAlgorithm::Hs256, &good());
    assert!(auth.verify(&token, NOW).is_ok());
    let shown = format!("{auth:?}");
    assert!(
        !shown.contains(&secret) && shown.contains("<redacted>"),
        "{shown}"
    );

    let missing = Config {
        auth: AuthConfig {
            jwt_secret_file: Some("/nonexistent/ringrelay-secret".into()),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    assert!(Authenticator::from_config(&missing).is_err());
}
