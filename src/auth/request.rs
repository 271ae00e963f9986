//! Where a request carries its token.

use super::api_keys::is_api_key;
use super::AuthError;
use crate::http::RequestHead;

/// The token from `Authorization: Bearer <token>`, or else from `?token=`, which exists because
/// browsers cannot set headers on a WebSocket. An API key may come the same ways, or as
/// `?key=<key>`: a `key` parameter is a credential only when its value has the API key prefix
/// (`rrk_`), so a bridged request keeps its own `key` parameters for its agent. `Ok(None)` when
/// the request carries none.
///
/// Refuses anything a proxy and the relay might read differently: two `Authorization` headers,
/// two credential parameters, a scheme other than Bearer, or a header and a parameter that
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
        .filter(|p| is_credential_param(p))
        .count();
    if params > 1 {
        return Err(AuthError::Malformed);
    }
    // A key is `rrk_` and hex digits: nothing in it is percent-encoded, so it is taken as sent.
    let key = || {
        head.query
            .split('&')
            .find_map(|pair| match pair.split_once('=') {
                Some(("key", v)) if is_api_key(v) => Some(v.to_string()),
                _ => None,
            })
    };
    let param = head.query_param("token").or_else(key);
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

/// Whether one `name=value` pair of a query string is a credential for the relay: any `token`,
/// or a `key` holding an API key. The bridge leaves these out of what its agent sees.
pub fn is_credential_param(pair: &str) -> bool {
    match pair.split_once('=') {
        Some(("token", _)) => true,
        Some(("key", v)) => is_api_key(v),
        None => pair == "token",
        _ => false,
    }
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
