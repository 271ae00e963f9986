//! The verifier the server builds once and shares with every worker.

use std::fmt;

use super::claims::{self, Policy};
use super::jwt::{self, Parts};
use super::{AuthError, Claims};
use crate::config::{AuthConfig, Config, ConfigError, JwtAlgorithm};

/// Holds the secret and the policy. Immutable after start-up, so workers can share it without
/// locking; cloning copies the secret, so prefer an `Arc`.
#[derive(Clone)]
pub struct Authenticator {
    secret: Vec<u8>,
    algorithms: Vec<JwtAlgorithm>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: u64,
    max_token_bytes: usize,
    /// `None`: no limit (`auth.max_token_lifetime = "0s"`).
    max_lifetime_secs: Option<u64>,
}

impl Authenticator {
    /// `None` when no secret is configured: auth is off. Reads `auth.jwt_secret_file` now, so a
    /// missing or short secret stops start-up instead of failing every request later.
    pub fn from_config(cfg: &Config) -> Result<Option<Authenticator>, ConfigError> {
        Ok(cfg
            .jwt_secret()?
            .map(|secret| Authenticator::new(secret, &cfg.auth)))
    }

    /// Takes the secret as given: the 32-byte minimum is enforced by the config loader, which
    /// [`Authenticator::from_config`] goes through. Tests and the fuzzer call this directly.
    pub fn new(secret: Vec<u8>, auth: &AuthConfig) -> Authenticator {
        Authenticator {
            secret,
            algorithms: auth.algorithms.clone(),
            audience: auth.audience.clone(),
            issuer: auth.issuer.clone(),
            leeway_secs: auth.leeway.as_secs(),
            max_token_bytes: auth.max_token_bytes,
            max_lifetime_secs: Some(auth.max_token_lifetime.as_secs()).filter(|s| *s > 0),
        }
    }

    /// Checks `token` at `now_unix_secs`. The order is chosen so that untrusted bytes are
    /// touched as little as possible before the signature is known good: the length bound
    /// first, then only the header (to learn the algorithm), then the MAC, and only then the
    /// claims.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<Claims, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLong);
        }
        let parts = Parts::split(token)?;
        let alg = jwt::header_alg(parts.header)?;
        if !self.algorithms.contains(&alg) {
            return Err(AuthError::Algorithm);
        }
        jwt::check_signature(&self.secret, alg, &parts)?;
        let payload = jwt::decode(parts.payload)?;
        let policy = Policy {
            audience: self.audience.as_deref(),
            issuer: self.issuer.as_deref(),
            leeway_secs: self.leeway_secs,
            max_lifetime_secs: self.max_lifetime_secs,
        };
        claims::check(&payload, &policy, now_unix_secs)
    }
}

/// Keeps the secret out of logs and panic messages.
impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("secret", &"<redacted>")
            .field("algorithms", &self.algorithms)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .finish()
    }
}
