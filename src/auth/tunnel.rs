//! What a credential says about TCP tunnels (docs/tunnels.md): whose they are (the subject a
//! per-subject quota and a resume are keyed by) and how many it may hold. Read only after the
//! credential was checked by [`Authenticator::check`](super::Authenticator::check), so
//! nothing here judges a signature.

use super::api_keys::KeyEntry;
use super::jwt::{decode, Parts};
use serde_json::Value;

/// The tunnel side of a checked credential.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelGrant {
    /// A JWT's `sub`; `key:` and the key's name (or hash prefix) for an API key; `None`
    /// when the token names no subject (then only the server-wide limits apply to it).
    pub subject: Option<String>,
    /// The `tunnels` claim (JWT) or field (API key): overrides
    /// `tunnel.max_tunnels_per_subject` for this credential.
    pub tunnels: Option<u32>,
}

/// The grant of `credential`, already verified; `key` is the API key entry when it was one.
pub fn tunnel_grant(credential: &str, key: Option<&KeyEntry>) -> TunnelGrant {
    if let Some(key) = key {
        return TunnelGrant {
            subject: Some(format!("key:{}", key.label())),
            tunnels: key.tunnels,
        };
    }
    let Some(payload) = Parts::split(credential)
        .ok()
        .and_then(|p| decode(p.payload).ok())
    else {
        return TunnelGrant::default();
    };
    from_payload(&payload)
}

/// The members of a JWT payload that matter here; a member of the wrong type is ignored (the
/// token was accepted for its other claims; a malformed `tunnels` grants nothing extra).
fn from_payload(json: &[u8]) -> TunnelGrant {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(json) else {
        return TunnelGrant::default();
    };
    let subject = match m.get("sub") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
        _ => None,
    };
    let tunnels = m
        .get("tunnels")
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    TunnelGrant { subject, tunnels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sub_and_tunnels() {
        let g = from_payload(br#"{"exp":1,"sid":"*","sub":"alice","tunnels":1}"#);
        assert_eq!(g.subject.as_deref(), Some("alice"));
        assert_eq!(g.tunnels, Some(1));
        let g = from_payload(br#"{ "tunnels" : "3" , "sub": 7 }"#);
        assert_eq!(g, TunnelGrant::default());
        assert_eq!(from_payload(b"[1]"), TunnelGrant::default());
        let g = from_payload(br#"{"tunnels":99999999999}"#);
        assert_eq!(g.tunnels, Some(u32::MAX));
    }
}
