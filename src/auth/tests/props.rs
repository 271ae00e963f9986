use proptest::prelude::*;

use super::*;

fn lenient() -> Authenticator {
    let cfg = AuthConfig {
        algorithms: vec![
            JwtAlgorithm::Hs256,
            JwtAlgorithm::Hs384,
            JwtAlgorithm::Hs512,
        ],
        audience: Some("relay".into()),
        issuer: Some("iss".into()),
        ..config()
    };
    authenticator(&cfg)
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), now in any::<u64>()) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = lenient().verify(&text, now);
    }

    #[test]
    fn random_three_part_tokens_never_panic(
        h in "[A-Za-z0-9_=+/ -]{0,80}",
        p in "[A-Za-z0-9_=-]{0,200}",
        s in "[A-Za-z0-9_-]{0,90}",
        now in any::<u64>(),
    ) {
        let _ = lenient().verify(&format!("{h}.{p}.{s}"), now);
    }

    /// Claims text of any shape, correctly signed, so the checks behind the signature run.
    #[test]
    fn signed_random_claims_never_panic(claims in "\\{[ -~]{0,120}\\}", now in any::<u64>()) {
        let _ = lenient().verify(&signed(HS256, &claims), now);
    }

    /// No single changed character makes a token with other content verify, and a bad
    /// signature never reports anything but a refusal.
    #[test]
    fn one_changed_character_never_verifies(pos in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.=-]") {
        let token = mint(SECRET, JwtAlgorithm::Hs256, &good());
        let i = pos.index(token.len());
        let mut changed = token.clone();
        changed.replace_range(i..i + 1, &c);
        prop_assume!(changed != token);
        prop_assert!(check(&changed).is_err(), "{changed}");
    }
}
