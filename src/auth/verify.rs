//! The verifier the server builds once and shares with every worker.

use std::fmt;

use super::api_keys::{self, ApiKeys, KeyEntry};
use super::claims::{self, Policy};
use super::jwt::{self, Parts};
use super::{AuthError, CertGrants, Claims};
use crate::config::{AuthConfig, Config, ConfigError, JwtAlgorithm, JwtKey};

/// One secret, with the key id that names it (`None`: `auth.jwt_secret[_file]`).
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    secret: Vec<u8>,
}

/// Holds the secrets and the policy. Immutable once built: a reload builds a new one on the
/// main thread and each worker swaps its own copy in (`context::Core::auth`), so no worker
/// ever reads one while it changes.
#[derive(Clone)]
pub struct Authenticator {
    /// At least one; kids unique (the config loader checks both).
    keys: Vec<Key>,
    /// Whether any key has an id: only then does a token's `kid` choose the key.
    by_kid: bool,
    algorithms: Vec<JwtAlgorithm>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: u64,
    max_token_bytes: usize,
    /// `None`: no limit (`auth.max_token_lifetime = "0s"`).
    max_lifetime_secs: Option<u64>,
    /// What verified client certificates admit to without a token (`tls.client_grants`).
    grants: CertGrants,
    /// The keys of `auth.api_keys_file`, read when this was built.
    api_keys: ApiKeys,
}

impl Authenticator {
    /// `None` when no secret is configured: auth is off. Reads `auth.jwt_secret_file` and the
    /// files of `auth.keys` now, so a missing or short secret stops start-up (or refuses a
    /// reload) instead of failing every request later.
    ///
    /// Auth is on when a token secret or a certificate grant is configured: a relay with
    /// grants and no secret admits verified certificates only (a token then never verifies).
    ///
    /// `auth.api_keys_file` turns auth on too (even empty: every key revoked refuses all), and
    /// is read now: a file that cannot be read or has a bad line stops the start, or refuses
    /// the reload so the keys in force stay.
    pub fn from_config(cfg: &Config) -> Result<Option<Authenticator>, ConfigError> {
        let keys = cfg.jwt_keys()?;
        let grants = CertGrants::new(&cfg.tls.client_grants);
        let api_keys = match &cfg.auth.api_keys_file {
            Some(path) => Some(read_api_keys(path)?),
            None => None,
        };
        if keys.is_empty() && grants.is_empty() && api_keys.is_none() {
            return Ok(None);
        }
        let mut auth = Authenticator::with_keys(keys, &cfg.auth).with_grants(grants);
        auth.api_keys = api_keys.unwrap_or_default();
        Ok(Some(auth))
    }

    /// The API keys in force.
    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    /// The claims of a credential: an API key's entry when it has the key prefix, else a
    /// verified JWT's claims. The entry (for its name, in logs) comes with a key.
    pub fn check(
        &self,
        credential: &str,
        now_unix_secs: u64,
    ) -> Result<(Claims, Option<&KeyEntry>), AuthError> {
        if !api_keys::is_api_key(credential) {
            return self.verify(credential, now_unix_secs).map(|c| (c, None));
        }
        if credential.len() > self.max_token_bytes {
            return Err(AuthError::TooLong);
        }
        match self.api_keys.lookup(credential) {
            Some(entry) => Ok((entry.claims.clone(), Some(entry))),
            None => Err(AuthError::KeyUnknown),
        }
    }

    /// The same, admitting the certificates `grants` names as well.
    pub fn with_grants(mut self, grants: CertGrants) -> Authenticator {
        self.grants = grants;
        self
    }

    /// What verified client certificates admit to.
    pub fn grants(&self) -> &CertGrants {
        &self.grants
    }

    /// Takes the secret as given: the 32-byte minimum is enforced by the config loader, which
    /// [`Authenticator::from_config`] goes through. Tests and the fuzzer call this directly.
    pub fn new(secret: Vec<u8>, auth: &AuthConfig) -> Authenticator {
        Authenticator::with_keys(vec![(None, secret)], auth)
    }

    /// Several secrets, each with its key id (at most one without, `auth.jwt_secret[_file]`),
    /// taken as given like [`Authenticator::new`]'s.
    pub fn with_keys(keys: Vec<JwtKey>, auth: &AuthConfig) -> Authenticator {
        let keys: Vec<Key> = keys
            .into_iter()
            .map(|(kid, secret)| Key { kid, secret })
            .collect();
        Authenticator {
            by_kid: keys.iter().any(|k| k.kid.is_some()),
            keys,
            algorithms: auth.algorithms.clone(),
            audience: auth.audience.clone(),
            issuer: auth.issuer.clone(),
            leeway_secs: auth.leeway.as_secs(),
            max_token_bytes: auth.max_token_bytes,
            max_lifetime_secs: Some(auth.max_token_lifetime.as_secs()).filter(|s| *s > 0),
            grants: CertGrants::default(),
            api_keys: ApiKeys::default(),
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
        let header = jwt::header(parts.header)?;
        let alg = header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(AuthError::Algorithm);
        }
        let tag = jwt::decode(parts.signature)?;
        let signed_by_one = self
            .candidates(header.kid.as_deref())
            .any(|key| jwt::check_signature(&key.secret, alg, &parts, &tag).is_ok());
        if !signed_by_one {
            // An unknown kid is refused as a bad signature: no key here made it.
            return Err(AuthError::Signature);
        }
        let payload = jwt::decode(parts.payload)?;
        let policy = Policy {
            audience: self.audience.as_deref(),
            issuer: self.issuer.as_deref(),
            leeway_secs: self.leeway_secs,
            max_lifetime_secs: self.max_lifetime_secs,
        };
        claims::check(&payload, &policy, now_unix_secs)
    }

    /// The keys a token is checked against. With a `kid`, the key of that id only (none when
    /// no key has it); without one, every key, so a token minted before its issuer knew of
    /// key ids passes under any secret in force. When no key has an id (only
    /// `auth.jwt_secret[_file]` is set), a `kid` is ignored, as it was before keys had ids:
    /// an issuer whose library writes one keeps working.
    fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a Key> + 'a {
        let wanted = kid.filter(|_| self.by_kid);
        self.keys
            .iter()
            .filter(move |k| wanted.is_none() || k.kid.as_deref() == wanted)
    }

    /// The key ids in force, in order (`None` for the secret without one), for the log.
    pub fn key_ids(&self) -> Vec<Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref()).collect()
    }
}

/// Keeps the secret out of logs and panic messages.
impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("secrets", &"<redacted>")
            .field("kids", &self.key_ids())
            .field("algorithms", &self.algorithms)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .field("client_grants", &self.grants.len())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

/// Reads and parses `auth.api_keys_file`; an error names the key, the file and the line.
fn read_api_keys(path: &std::path::Path) -> Result<ApiKeys, ConfigError> {
    const KEY: &str = "auth.api_keys_file";
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        key: Some(KEY.to_string()),
        path: path.to_path_buf(),
        source,
    })?;
    ApiKeys::parse(&text).map_err(|e| ConfigError::Invalid {
        key: KEY.to_string(),
        value: format!("{:?}", path.display().to_string()),
        reason: e.to_string(),
        origin: "the key file".to_string(),
    })
}
