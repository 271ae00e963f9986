//! Where a request carries its token.

use super::AuthError;
use crate::http::RequestHead;

/// The token from `Authorization: Bearer <token>`, or else from `?token=`, which exists because
/// browsers cannot set headers on a WebSocket. `Ok(None)` when the request carries neither.
///
/// Refuses anything a proxy and the relay might read differently: two `Authorization` headers,
/// two `token` parameters, a scheme other than Bearer, or a header and a parameter that
/// disagree. A source that is present but empty is [`AuthError::Missing`].
pub fn token_from_request(head: &RequestHead) -> Result<Option<String>, AuthError> {
    let header = match head.header_count("authorization") {
        0 => None,
        1 => Some(bearer(head.header("authorization").unwrap_or_default())?),
        _ => return Err(AuthError::Malformed),
    };
    let params = head
        .query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) == "token")
        .count();
    if params > 1 {
        return Err(AuthError::Malformed);
    }
    let param = head.query_param("token");
    let token = match (header, param) {
        (Some(h), Some(p)) if h != p => return Err(AuthError::Malformed),
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(Some(token))
}

/// The credentials of a Bearer header (RFC 6750: the scheme is case-insensitive). The head
/// parser has already trimmed the value, so `Bearer` alone is an empty token.
fn bearer(value: &str) -> Result<String, AuthError> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(rest.trim_start_matches(' ').to_string())
}
