//! Keeping tokens out of log lines.

const REDACTED: &str = "<redacted>";

/// Parameter names whose values are credentials, matched as substrings of the lower-cased
/// name: `token` covers `access_token` and `id_token`, `auth` covers `authorization`.
/// Over-redacting a harmless parameter costs a log reader little; leaking one token costs a
/// session.
const SENSITIVE: &[&str] = &[
    "token", "jwt", "auth", "secret", "password", "passwd", "key",
];

/// `query` with the value of every credential-like parameter replaced by `<redacted>`, for
/// log lines. A value (or bare parameter) that looks like a JWT is redacted whatever its name,
/// since clients put tokens in oddly named parameters too. Everything else is kept as sent.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if sensitive(key) || looks_like_credential(value) => {
                format!("{key}={REDACTED}")
            }
            None if looks_like_credential(pair) => REDACTED.to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE.iter().any(|s| key.contains(s))
}

/// A JWT, or an API key (`rrk_...`), whatever parameter carries it.
fn looks_like_credential(s: &str) -> bool {
    looks_like_jwt(s) || super::api_keys::is_api_key(s)
}

/// A compact JWS header is base64url of a JSON object, so it starts `eyJ` (`{"`), and the
/// token has at least two dots (percent-encoded or not).
fn looks_like_jwt(s: &str) -> bool {
    let dots = s.matches('.').count() + s.to_ascii_lowercase().matches("%2e").count();
    s.starts_with("eyJ") && dots >= 2
}
