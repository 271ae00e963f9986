//! Grants for client certificates (`tls.client_grants`): which grants a certificate's names
//! match, and that they turn auth on like a token secret.

use super::*;
use crate::config::{ClientGrant, Config};
use crate::tls::ClientNames;

fn grants(list: &[(&str, &str, Option<&str>)]) -> Vec<ClientGrant> {
    list.iter()
        .map(|(subject, sid, role)| ClientGrant {
            subject: subject.to_string(),
            sid: sid.to_string(),
            role: role.map(str::to_string),
        })
        .collect()
}

fn names(cn: &str, dns: &[&str]) -> ClientNames {
    ClientNames {
        cn: Some(cn.to_string()),
        dns: dns.iter().map(|d| d.to_string()).collect(),
        uris: Vec::new(),
    }
}

#[test]
fn grants_match_the_cn_or_a_san_and_stand_for_claims() {
    let g = CertGrants::new(&grants(&[
        ("device-1", "s1", None),
        ("Device-1.Example", "*", Some("agent")),
        ("device-2", "s2", None),
    ]));
    let dev1 = names("device-1", &["device-1.example"]);
    let got: Vec<&Claims> = g.matching(&dev1).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].grant("s1", Some("a")), Ok(Some("a".into())));
    assert_eq!(got[0].grant("s2", None), Err(AuthError::WrongSession));
    assert_eq!(got[1].grant("any", None), Ok(Some("agent".into())));
    assert_eq!(got[1].grant("any", Some("b")), Err(AuthError::WrongRole));
    assert_eq!(g.matching(&names("device-3", &[])).count(), 0);
    // A CN is matched exactly: another case is another name.
    assert_eq!(g.matching(&names("DEVICE-1", &[])).count(), 0);
    assert_eq!(
        AuthError::WrongSession.for_certificate(),
        AuthError::CertWrongSession
    );
    assert_eq!(AuthError::CertNotGranted.status(), 401);
    assert_eq!(AuthError::CertWrongRole.status(), 403);
}

#[test]
fn grants_alone_turn_auth_on_and_no_token_verifies_then() {
    let mut cfg = Config::default();
    assert!(Authenticator::from_config(&cfg).unwrap().is_none());
    cfg.tls.client_grants = grants(&[("device-1", "s1", None)]);
    let auth = Authenticator::from_config(&cfg).unwrap().expect("auth on");
    assert_eq!(auth.grants().len(), 1);
    let token = mint(SECRET, JwtAlgorithm::Hs256, &good());
    assert_eq!(auth.verify(&token, NOW), Err(AuthError::Signature));
}
