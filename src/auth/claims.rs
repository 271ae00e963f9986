//! The claims a verified token carries, and what they grant.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::AuthError;
use crate::http::route::{valid_role, valid_session_id};

/// Which sessions a token opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionGrant {
    /// `sid: "*"`: any session, for trusted back ends and the echo route.
    Any,
    One(String),
    /// Every session whose id starts with this (an API key's `sid=team-*`).
    Prefix(String),
}

/// What a verified token says. Only what the relay decides on is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sid: SessionGrant,
    /// When set, the token admits this role only.
    pub role: Option<String>,
    /// Whole seconds; a fractional `exp` is rounded down, which expires it no later.
    pub exp: u64,
}

impl Claims {
    /// The role the connection joins with: the one requested, else the token's, else none.
    /// A token's role pins it, so a client cannot take over its peer's side by asking for it.
    pub fn grant(
        &self,
        session: &str,
        requested_role: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        match &self.sid {
            SessionGrant::Any => {}
            SessionGrant::One(sid) if sid == session => {}
            SessionGrant::Prefix(p) if session.starts_with(p.as_str()) => {}
            SessionGrant::Prefix(_) => return Err(AuthError::WrongSession),
            SessionGrant::One(_) => return Err(AuthError::WrongSession),
        }
        match (self.role.as_deref(), requested_role) {
            (Some(pinned), Some(asked)) if pinned != asked => Err(AuthError::WrongRole),
            (_, Some(asked)) => Ok(Some(asked.to_string())),
            (pinned, None) => Ok(pinned.map(str::to_string)),
        }
    }
}

/// What the server requires of every token besides its signature.
pub(super) struct Policy<'a> {
    pub audience: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub leeway_secs: u64,
    /// Longest validity accepted; `None`: any.
    pub max_lifetime_secs: Option<u64>,
}

/// Each member is kept as JSON so its type can be judged here with the right error, and so a
/// member written as `null` counts as present (and wrong) rather than absent. serde refuses a
/// repeated member among these.
#[derive(Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    aud: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    sid: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    role: Option<Value>,
}

/// `Some` for any member that is there, `null` included (`Option`'s own impl maps `null` to
/// `None`, which would let `"exp": null` pass for an absent optional claim).
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// serde's derived structs also accept a JSON array, field by field; a JWT part is an object.
pub(super) fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Checks decoded, signature-verified claims against `policy` at `now` (Unix seconds).
/// Shape first (401 token_malformed), then time (expiry, `nbf`, lifetime), then audience and
/// issuer.
pub(super) fn check(json: &[u8], policy: &Policy<'_>, now: u64) -> Result<Claims, AuthError> {
    if !is_object(json) {
        return Err(AuthError::Malformed);
    }
    let raw: Raw = serde_json::from_slice(json).map_err(|_| AuthError::Malformed)?;
    let exp = raw
        .exp
        .as_ref()
        .and_then(|v| numeric_date(v, Round::Down))
        .ok_or(AuthError::Malformed)?;
    let nbf = match &raw.nbf {
        None => None,
        Some(v) => Some(numeric_date(v, Round::Up).ok_or(AuthError::Malformed)?),
    };
    // Rounded down: an earlier issue time makes a longer lifetime, toward refusing.
    let iat = match &raw.iat {
        None => None,
        Some(v) => Some(numeric_date(v, Round::Down).ok_or(AuthError::Malformed)?),
    };
    let sid = match raw.sid {
        Some(Value::String(s)) if s == "*" => SessionGrant::Any,
        Some(Value::String(s)) if valid_session_id(&s) => SessionGrant::One(s),
        _ => return Err(AuthError::Malformed),
    };
    let role = match raw.role {
        None => None,
        Some(Value::String(r)) if valid_role(&r) => Some(r),
        Some(_) => return Err(AuthError::Malformed),
    };

    let (now, leeway) = (i128::from(now), i128::from(policy.leeway_secs));
    if now > exp + leeway {
        return Err(AuthError::Expired);
    }
    if nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(AuthError::NotYetValid);
    }
    if let Some(max) = policy.max_lifetime_secs.map(i128::from) {
        // The lifetime the issuer wrote, and what is left of it by our clock: an `iat` in
        // the future (or none) cannot stretch a token past the limit.
        if iat.is_some_and(|iat| exp - iat > max) || exp - now > max + leeway {
            return Err(AuthError::LifetimeTooLong);
        }
    }
    if let Some(want) = policy.audience {
        let ok = match &raw.aud {
            Some(Value::String(aud)) => aud == want,
            Some(Value::Array(auds)) => {
                auds.iter().all(Value::is_string) && auds.iter().any(|a| a == want)
            }
            _ => false,
        };
        if !ok {
            return Err(AuthError::Audience);
        }
    }
    if let Some(want) = policy.issuer {
        if !matches!(&raw.iss, Some(Value::String(iss)) if iss == want) {
            return Err(AuthError::Issuer);
        }
    }
    Ok(Claims {
        sid,
        role,
        exp: u64::try_from(exp.max(0)).unwrap_or(u64::MAX),
    })
}

/// Which way a fractional date is rounded: each check rounds toward refusing, so that with
/// whole-second `now` the result equals comparing the exact value.
#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// RFC 7519's NumericDate: any JSON number of seconds, integer or not. The result lies within
/// the range of `i64` and `u64` together, so the checks' `i128` sums cannot overflow.
fn numeric_date(v: &Value, round: Round) -> Option<i128> {
    let Value::Number(n) = v else { return None };
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    let f = n.as_f64()?;
    let whole = match round {
        Round::Down => f.floor(),
        Round::Up => f.ceil(),
    };
    // `as` saturates (JSON has no NaN or infinity); `1e300` must not reach the sums above.
    Some((whole as i128).clamp(i128::from(i64::MIN), i128::from(u64::MAX)))
}
