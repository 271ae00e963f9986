use super::*;

fn from(target: &str, headers: &[(&str, &str)]) -> Result<Option<String>, AuthError> {
    token_from_request(&head(target, headers))
}

#[test]
fn bearer_header() {
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} abc.def.ghi");
        assert_eq!(
            from("/v1/relay/s", &[("Authorization", &value)]),
            Ok(Some("abc.def.ghi".into())),
            "{scheme}"
        );
    }
    assert_eq!(
        from("/v1/relay/s", &[("Authorization", "Bearer   t")]),
        Ok(Some("t".into()))
    );
    for other in ["Basic dXNlcjpwYXNz", "Token t", "Bearert", "t"] {
        assert_eq!(
            from("/", &[("Authorization", other)]),
            Err(AuthError::Malformed),
            "{other}"
        );
    }
    for empty in ["Bearer", "Bearer ", "bearer   "] {
        assert_eq!(
            from("/", &[("Authorization", empty)]),
            Err(AuthError::Missing),
            "{empty:?}"
        );
    }
    assert_eq!(
        from("/", &[("Authorization", "")]),
        Err(AuthError::Malformed)
    );
}

#[test]
fn two_authorization_headers_are_ambiguous() {
    let h = [("Authorization", "Bearer a"), ("authorization", "Bearer a")];
    assert_eq!(from("/", &h), Err(AuthError::Malformed));
}

#[test]
fn query_parameter() {
    assert_eq!(
        from("/v1/relay/s?role=a&token=x.y.z", &[]),
        Ok(Some("x.y.z".into()))
    );
    assert_eq!(from("/?token=a%2Eb", &[]), Ok(Some("a.b".into())));
    assert_eq!(from("/?token=", &[]), Err(AuthError::Missing));
    assert_eq!(from("/?token", &[]), Err(AuthError::Missing));
    assert_eq!(from("/?token=a&token=a", &[]), Err(AuthError::Malformed));
    assert_eq!(from("/?tokens=a&access_token=b&Token=c", &[]), Ok(None));
    assert_eq!(from("/", &[]), Ok(None));
    assert_eq!(from("/?role=a", &[("Cookie", "token=x")]), Ok(None));
}

#[test]
fn header_and_parameter_must_agree() {
    let h = [("Authorization", "Bearer x.y.z")];
    assert_eq!(from("/?token=x.y.z", &h), Ok(Some("x.y.z".into())));
    assert_eq!(from("/?token=x.y.w", &h), Err(AuthError::Malformed));
    assert_eq!(from("/?token=", &h), Err(AuthError::Malformed));
    assert_eq!(
        from("/?token=t", &[("Authorization", "Bearer")]),
        Err(AuthError::Malformed)
    );
}

#[test]
fn a_minted_token_survives_the_request_path() {
    let token = mint(SECRET, JwtAlgorithm::Hs512, &good());
    let cfg = AuthConfig {
        algorithms: vec![JwtAlgorithm::Hs512],
        ..config()
    };
    let auth = authenticator(&cfg);
    for found in [
        from(&format!("/v1/relay/room-1?token={token}"), &[]),
        from(
            "/v1/relay/room-1",
            &[("Authorization", &format!("Bearer {token}"))],
        ),
    ] {
        let claims = auth.verify(&found.unwrap().unwrap(), NOW).unwrap();
        assert_eq!(claims.grant("room-1", Some("a")), Ok(Some("a".into())));
    }
}

#[test]
fn an_api_key_comes_as_a_bearer_token_or_either_parameter() {
    let key = "rrk_0a1b";
    let bearer = format!("Bearer {key}");
    assert_eq!(
        from("/", &[("Authorization", &bearer)]),
        Ok(Some(key.into()))
    );
    assert_eq!(from("/?role=a&key=rrk_0a1b", &[]), Ok(Some(key.into())));
    assert_eq!(from("/?token=rrk_0a1b", &[]), Ok(Some(key.into())));
    // The same key in the header and the parameter is one credential; two are ambiguous.
    assert_eq!(
        from("/?key=rrk_0a1b", &[("Authorization", &bearer)]),
        Ok(Some(key.into()))
    );
    assert_eq!(
        from("/?key=rrk_0a1b&token=t", &[]),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        from("/?key=rrk_0a1b&key=rrk_2", &[]),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        from("/?key=rrk_9", &[("Authorization", &bearer)]),
        Err(AuthError::Malformed)
    );
    // A `key` that is no API key is a bridged request's own parameter, not a credential.
    assert_eq!(from("/v1/http/s/items?key=42", &[]), Ok(None));
    assert_eq!(
        from("/v1/http/s/items?key=42&token=t", &[]),
        Ok(Some("t".into()))
    );
}
