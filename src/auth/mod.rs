//! Bearer tokens that admit a client to a session: JWTs signed with a shared HMAC secret.
//!
//! The server builds one [`Authenticator`] at start-up and, for each upgrade request, finds the
//! token with [`token_from_request`], checks it with [`Authenticator::verify`] and asks
//! [`Claims::grant`] whether it covers the session and role requested. A client certificate
//! verified by the TLS handshake may stand in for a token: [`CertGrants`] turns its names
//! into the claims `tls.client_grants` gives them, and the same [`Claims::grant`] decides. Only HMAC algorithms
//! exist here: a relay that shares one secret with its issuer has no use for public keys, and
//! every algorithm left out is one fewer way to confuse the verifier. docs/auth.md is the
//! operator's account.
#![forbid(unsafe_code)]

pub mod api_keys;
mod claims;
pub mod cli;
mod error;
mod grants;
mod jwt;
pub mod key_cli;
mod redact;
mod request;
#[cfg(test)]
mod tests;
mod tunnel;
mod verify;

pub use api_keys::ApiKeys;
pub use claims::{Claims, SessionGrant};
pub use error::AuthError;
pub use grants::CertGrants;
pub use jwt::{mint, mint_with_kid, sign_parts, MintClaims};
pub use redact::redact_query;
pub use request::{is_credential_param, token_from_request};
pub use tunnel::{tunnel_grant, TunnelGrant};
pub use verify::Authenticator;

/// Seconds since the Unix epoch; a clock set before 1970 reads as 0, which makes every token
/// look too new rather than letting an expired one through.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
