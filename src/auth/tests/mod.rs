//! Unit tests for auth. Helpers live here; the cases are split by topic.

mod certs;
mod grant;
mod keys;
mod props;
mod request;
mod verify;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;
use crate::config::{AuthConfig, JwtAlgorithm};
use crate::http::{parse_head, RequestHead};

pub(super) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
pub(super) const NOW: u64 = 1_700_000_000;

pub(super) fn config() -> AuthConfig {
    AuthConfig {
        leeway: Duration::from_secs(30),
        ..AuthConfig::default()
    }
}

pub(super) fn authenticator(cfg: &AuthConfig) -> Authenticator {
    Authenticator::new(SECRET.to_vec(), cfg)
}

/// Claims the default config accepts at `NOW`.
pub(super) fn good() -> MintClaims {
    MintClaims {
        sid: "room-1".into(),
        exp: NOW + 60,
        ..MintClaims::default()
    }
}

/// HS256 over the exact header and claims text given.
pub(super) fn signed(header: &str, claims: &str) -> String {
    sign_parts(
        SECRET,
        JwtAlgorithm::Hs256,
        header.as_bytes(),
        claims.as_bytes(),
    )
}

pub(super) const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

pub(super) fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// Signs `signed_part` verbatim, so a test can sign text that is not clean base64url.
pub(super) fn sign_raw(signed_part: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).unwrap();
    mac.update(signed_part.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed_part}.{tag}")
}

/// Verifies with the default config at `NOW`.
pub(super) fn check(token: &str) -> Result<Claims, AuthError> {
    authenticator(&config()).verify(token, NOW)
}

pub(super) fn head(target: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    parse_head(req.as_bytes(), 8192, 32).unwrap().unwrap().0
}
