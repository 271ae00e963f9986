//! Several secrets with key ids (`auth.keys`): which key a token is checked against.

use super::*;

const OLD: &[u8] = b"old-secret-old-secret-old-secret-0";
const NEW: &[u8] = b"new-secret-new-secret-new-secret-1";

fn keyed(keys: &[(Option<&str>, &[u8])]) -> Authenticator {
    let keys = keys
        .iter()
        .map(|(kid, s)| (kid.map(str::to_string), s.to_vec()))
        .collect();
    Authenticator::with_keys(keys, &config())
}

fn token(secret: &[u8], kid: Option<&str>) -> String {
    mint_with_kid(secret, JwtAlgorithm::Hs256, kid, &good())
}

#[test]
fn a_kid_picks_its_key_and_only_that_one() {
    let auth = keyed(&[(Some("k1"), OLD), (Some("k2"), NEW)]);
    assert!(auth.verify(&token(OLD, Some("k1")), NOW).is_ok());
    assert!(auth.verify(&token(NEW, Some("k2")), NOW).is_ok());
    // Signed by a key in force, but named as the other: the named key does not verify it.
    assert_eq!(
        auth.verify(&token(OLD, Some("k2")), NOW).unwrap_err(),
        AuthError::Signature
    );
}

#[test]
fn an_unknown_kid_is_refused_as_a_bad_signature() {
    let auth = keyed(&[(Some("k1"), OLD)]);
    // Even signed with a secret in force: no key of that id made it.
    assert_eq!(
        auth.verify(&token(OLD, Some("k9")), NOW).unwrap_err(),
        AuthError::Signature
    );
}

#[test]
fn a_token_without_kid_tries_each_key() {
    let auth = keyed(&[(Some("k1"), OLD), (Some("k2"), NEW)]);
    assert!(auth.verify(&token(OLD, None), NOW).is_ok());
    assert!(auth.verify(&token(NEW, None), NOW).is_ok());
    let other = b"other-secret-other-secret-other-2";
    assert_eq!(
        auth.verify(&token(other, None), NOW).unwrap_err(),
        AuthError::Signature
    );
}

#[test]
fn the_secret_without_kid_stands_beside_keys_for_tokens_without_kid() {
    let auth = keyed(&[(None, OLD), (Some("k2"), NEW)]);
    assert!(auth.verify(&token(OLD, None), NOW).is_ok());
    assert!(auth.verify(&token(NEW, Some("k2")), NOW).is_ok());
    // A kid names keys with ids only.
    assert_eq!(
        auth.verify(&token(OLD, Some("k1")), NOW).unwrap_err(),
        AuthError::Signature
    );
}

#[test]
fn with_a_single_secret_a_kid_is_ignored_as_before() {
    let auth = keyed(&[(None, OLD)]);
    assert!(auth.verify(&token(OLD, Some("anything")), NOW).is_ok());
    assert!(auth.verify(&token(OLD, None), NOW).is_ok());
}

#[test]
fn rotation_with_two_keys_refuses_nobody() {
    // Before: old only. During: old and new. After: new only.
    let before = keyed(&[(Some("k1"), OLD)]);
    let during = keyed(&[(Some("k1"), OLD), (Some("k2"), NEW)]);
    let after = keyed(&[(Some("k2"), NEW)]);
    let (old, new) = (token(OLD, Some("k1")), token(NEW, Some("k2")));
    assert!(before.verify(&old, NOW).is_ok());
    assert!(during.verify(&old, NOW).is_ok() && during.verify(&new, NOW).is_ok());
    assert!(after.verify(&new, NOW).is_ok());
    assert_eq!(after.verify(&old, NOW).unwrap_err(), AuthError::Signature);
}

#[test]
fn a_kid_that_is_not_a_string_is_malformed() {
    let auth = keyed(&[(Some("k1"), OLD)]);
    for header in [
        r#"{"alg":"HS256","kid":1}"#,
        r#"{"alg":"HS256","kid":null}"#,
        r#"{"alg":"HS256","kid":"k1","kid":"k1"}"#,
    ] {
        let t = sign_parts(
            OLD,
            JwtAlgorithm::Hs256,
            header.as_bytes(),
            br#"{"sid":"room-1","exp":1700000060}"#,
        );
        assert_eq!(
            auth.verify(&t, NOW).unwrap_err(),
            AuthError::Malformed,
            "{header}"
        );
    }
}

#[test]
fn debug_shows_kids_not_secrets() {
    let auth = keyed(&[(None, OLD), (Some("k2"), NEW)]);
    let shown = format!("{auth:?}");
    assert!(shown.contains("k2"));
    assert!(!shown.contains("old-secret") && !shown.contains("new-secret"));
}
