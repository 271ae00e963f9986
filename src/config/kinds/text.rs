//! Kinds of text value: names, roles, filters, HTTP methods and browser origins.

use super::Kind;
use crate::config::apply::Input;
use crate::config::render;
use crate::config::ConfigError;

/// Text as given, trimmed (`cluster.public_url`).
pub(in crate::config) struct Trimmed;

impl Kind<String> for Trimmed {
    fn parse(&self, i: &Input<'_>) -> Result<String, ConfigError> {
        Ok(i.string()?.trim().to_string())
    }
    fn toml(&self, v: &String) -> Option<String> {
        Some(render::string(v))
    }
}

/// A role as peers name theirs: 1 to 32 of `[a-z0-9_-]`.
pub(in crate::config) struct Role;

impl Kind<String> for Role {
    fn parse(&self, i: &Input<'_>) -> Result<String, ConfigError> {
        let s = i.string()?;
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if !ok {
            return Err(i.fail("roles are 1 to 32 characters of [a-z0-9_-]"));
        }
        Ok(s.to_string())
    }
    fn toml(&self, v: &String) -> Option<String> {
        Some(render::string(v))
    }
}

/// A name for the cluster registry: 1 to 64 of `[A-Za-z0-9._-]`, trimmed.
pub(in crate::config) struct RegistryName {
    may_be_empty: bool,
}

impl RegistryName {
    /// Empty stands for a value worked out at start.
    pub const OR_EMPTY: RegistryName = RegistryName { may_be_empty: true };
    pub const REQUIRED: RegistryName = RegistryName {
        may_be_empty: false,
    };
}

impl Kind<String> for RegistryName {
    fn parse(&self, i: &Input<'_>) -> Result<String, ConfigError> {
        let s = i.string()?.trim();
        let ok = s.len() <= 64
            && (self.may_be_empty || !s.is_empty())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(i.fail("expected 1 to 64 characters of A-Z a-z 0-9 . _ -"));
        }
        Ok(s.to_string())
    }
    fn toml(&self, v: &String) -> Option<String> {
        Some(render::string(v))
    }
}

/// A tracing `EnvFilter` directive, checked at load.
pub(in crate::config) struct LogFilter;

impl Kind<String> for LogFilter {
    fn parse(&self, i: &Input<'_>) -> Result<String, ConfigError> {
        let s = i.string()?.trim();
        if s.is_empty() {
            return Err(i.fail("expected a filter like \"info\" or \"ringrelay=debug\""));
        }
        tracing_subscriber::EnvFilter::try_new(s)
            .map_err(|e| i.fail(format!("not a log filter: {e}")))?;
        Ok(s.to_string())
    }
    fn toml(&self, v: &String) -> Option<String> {
        Some(render::string(v))
    }
}

/// HTTP method names (tokens), kept upper-case: methods are case-sensitive and every
/// standard one is upper-case (RFC 9110 section 9.1).
pub(in crate::config) struct Methods;

impl Kind<Vec<String>> for Methods {
    fn parse(&self, i: &Input<'_>) -> Result<Vec<String>, ConfigError> {
        i.list()?
            .into_iter()
            .map(|m| {
                let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
                ok.then(|| m.to_string())
                    .ok_or_else(|| i.fail("methods are upper-case names like GET or POST"))
            })
            .collect()
    }
    fn toml(&self, v: &Vec<String>) -> Option<String> {
        Some(render::list(v.iter()))
    }
}

/// HTTP header names (tokens, RFC 9110 section 5.1), kept lower-case: names are
/// case-insensitive and browsers send them lower-case in `Access-Control-Request-Headers`.
pub(in crate::config) struct HeaderNames;

impl Kind<Vec<String>> for HeaderNames {
    fn parse(&self, i: &Input<'_>) -> Result<Vec<String>, ConfigError> {
        i.list()?
            .into_iter()
            .map(|h| {
                let ok = !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                ok.then(|| h.to_ascii_lowercase())
                    .ok_or_else(|| i.fail("header names are tokens like content-type"))
            })
            .collect()
    }
    fn toml(&self, v: &Vec<String>) -> Option<String> {
        Some(render::list(v.iter()))
    }
}

/// Browser origins: `*` or `scheme://host[:port]`.
pub(in crate::config) struct Origins;

impl Kind<Vec<String>> for Origins {
    fn parse(&self, i: &Input<'_>) -> Result<Vec<String>, ConfigError> {
        i.list()?
            .into_iter()
            .map(|o| check_origin(o).map_err(|reason| i.fail(reason)))
            .collect()
    }
    fn toml(&self, v: &Vec<String>) -> Option<String> {
        Some(render::list(v.iter()))
    }
}

/// Accepts `*` or `scheme://host[:port]`, lower-cased because browsers send origins that way.
/// A path or trailing slash is refused: the Origin header never has one, so it could never match.
fn check_origin(origin: &str) -> Result<String, String> {
    if origin == "*" {
        return Ok(origin.to_string());
    }
    let shape = "expected \"*\" or scheme://host[:port], like https://app.example.com";
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(format!("{origin:?} is not an origin; {shape}"));
    };
    if authority.contains('/') {
        return Err(format!("{origin:?} has a path or trailing slash; {shape}"));
    }
    if authority.contains('*') {
        return Err(format!(
            "{origin:?}: only a lone \"*\" is supported as a wildcard"
        ));
    }
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let authority_ok = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if !scheme_ok || !authority_ok {
        return Err(format!("{origin:?} is not an origin; {shape}"));
    }
    Ok(origin.to_ascii_lowercase())
}
