//! The JWS compact form as far as HMAC needs it: splitting, the header, signing and checking.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Sha256, Sha384, Sha512};

use super::AuthError;
use crate::config::JwtAlgorithm;

/// What `ringrelay token` and tests put in a token. Optional claims left `None` are omitted
/// rather than written as `null`, which the verifier would refuse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MintClaims {
    /// A session id or `*` for any session.
    pub sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub exp: u64,
    /// Issued at; the server measures a token's lifetime as `exp - iat` when it is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A signed token carrying `claims`.
pub fn mint(secret: &[u8], alg: JwtAlgorithm, claims: &MintClaims) -> String {
    mint_with_kid(secret, alg, None, claims)
}

/// [`mint`] with a `kid` in the header, naming which of `auth.keys` signed it. `kid` is a
/// valid key id (`config::AuthKey::valid_kid`), so it needs no JSON escaping.
pub fn mint_with_kid(
    secret: &[u8],
    alg: JwtAlgorithm,
    kid: Option<&str>,
    claims: &MintClaims,
) -> String {
    let kid = kid.map_or(String::new(), |k| format!(r#","kid":"{k}""#));
    let header = format!(r#"{{"alg":"{}","typ":"JWT"{kid}}}"#, alg.as_str());
    // Serializing a struct of strings and integers cannot fail.
    let body = serde_json::to_vec(claims).unwrap_or_default();
    sign_parts(secret, alg, header.as_bytes(), &body)
}

/// Signs arbitrary header and claims bytes. [`mint`] is built on it; tests and the fuzzer use it
/// to make correctly signed tokens that no well-behaved issuer would, so that the claim checks
/// behind the signature can be reached at all.
pub fn sign_parts(secret: &[u8], alg: JwtAlgorithm, header: &[u8], claims: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let tag = tag(secret, alg, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut token);
    token
}

/// The three base64url parts of a compact token, still encoded.
pub(super) struct Parts<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header.payload`: what the signature covers.
    pub signed: &'a str,
}

impl<'a> Parts<'a> {
    pub fn split(token: &'a str) -> Result<Parts<'a>, AuthError> {
        let mut it = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(AuthError::Malformed);
        };
        Ok(Parts {
            header,
            payload,
            signature,
            signed: &token[..header.len() + 1 + payload.len()],
        })
    }
}

/// Strict base64url: no padding, no whitespace, no stray trailing bits, so that every token
/// has exactly one spelling and a signature cannot be reused under another.
pub(super) fn decode(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)
}

/// Only the members the verifier acts on. serde refuses a repeated member among these, so two
/// parsers can never disagree about which `alg` a token names.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    #[serde(default, deserialize_with = "super::claims::present")]
    typ: Option<serde_json::Value>,
    /// Extensions the token says must be understood; this verifier understands none.
    #[serde(default, deserialize_with = "super::claims::present")]
    crit: Option<serde::de::IgnoredAny>,
    /// Which of `auth.keys` signed the token; a string when present.
    #[serde(default, deserialize_with = "super::claims::present")]
    kid: Option<String>,
}

/// What the header says about how to check the token.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HeaderFacts {
    pub alg: JwtAlgorithm,
    pub kid: Option<String>,
}

/// The header's algorithm, refusing what RFC 8725 warns about: `none`, anything unknown, and
/// any extension or type that would change how the token is meant to be read.
pub(super) fn header(encoded: &str) -> Result<HeaderFacts, AuthError> {
    let bytes = decode(encoded)?;
    if !super::claims::is_object(&bytes) {
        return Err(AuthError::Malformed);
    }
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    let alg = header
        .alg
        .and_then(|a| a.parse::<JwtAlgorithm>().ok())
        .ok_or(AuthError::Algorithm)?;
    if header.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    match header.typ {
        None => {}
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(AuthError::Malformed),
    }
    Ok(HeaderFacts {
        alg,
        kid: header.kid,
    })
}

/// Checks the tag in constant time (`Mac::verify_slice`), so response timing says nothing about
/// how many leading bytes of a forged signature were right.
/// `tag` is the token's signature, already decoded (once, however many keys are tried).
pub(super) fn check_signature(
    secret: &[u8],
    alg: JwtAlgorithm,
    parts: &Parts<'_>,
    tag: &[u8],
) -> Result<(), AuthError> {
    let signed = parts.signed.as_bytes();
    let ok = match alg {
        JwtAlgorithm::Hs256 => keyed::<Hmac<Sha256>>(secret, signed).verify_slice(tag),
        JwtAlgorithm::Hs384 => keyed::<Hmac<Sha384>>(secret, signed).verify_slice(tag),
        JwtAlgorithm::Hs512 => keyed::<Hmac<Sha512>>(secret, signed).verify_slice(tag),
    };
    ok.map_err(|_| AuthError::Signature)
}

fn tag(secret: &[u8], alg: JwtAlgorithm, signed: &[u8]) -> Vec<u8> {
    match alg {
        JwtAlgorithm::Hs256 => keyed::<Hmac<Sha256>>(secret, signed)
            .finalize()
            .into_bytes()
            .to_vec(),
        JwtAlgorithm::Hs384 => keyed::<Hmac<Sha384>>(secret, signed)
            .finalize()
            .into_bytes()
            .to_vec(),
        JwtAlgorithm::Hs512 => keyed::<Hmac<Sha512>>(secret, signed)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(secret: &[u8], signed: &[u8]) -> M {
    // HMAC hashes a long key and pads a short one, so no key length is refused.
    let mut mac = <M as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(signed);
    mac
}
