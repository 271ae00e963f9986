//! One raw value from one layer (file, environment, flag), read the same way whichever layer
//! it came from: the readers every kind of value is built on, and the errors that name the
//! key and hide what must not be shown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::declare::Key;
use super::duration::DURATION_HINT;
use super::{format_duration, parse_duration, ConfigError};

pub(super) use super::keys::{NAMES as KEYS, SECTIONS, TABLE};

/// `Instant + d` panics on overflow; no timer here has a use for more than a year.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output.
pub(super) const MIN_SECRET_BYTES: usize = 32;

pub(super) fn known_key(name: &str) -> Option<&'static Key> {
    TABLE.iter().find(|k| k.name == name)
}

pub(super) fn env_var_name(key: &str) -> String {
    format!("RINGRELAY_{}", key.replace('.', "_").to_ascii_uppercase())
}

#[derive(Clone, Copy)]
pub(super) enum Raw<'a> {
    Toml(&'a toml::Value),
    Text(&'a str),
}

/// What an error may show of a bad value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Secrecy {
    Shown,
    /// Nothing: `<redacted>` stands for it.
    Hidden,
    /// A URL without its password.
    UrlPassword,
}

pub(super) struct Input<'a> {
    pub key: &'static str,
    pub raw: Raw<'a>,
    pub origin: &'a str,
    pub secrecy: Secrecy,
}

impl Input<'_> {
    pub fn fail(&self, reason: impl Into<String>) -> ConfigError {
        let value = match (self.secrecy, self.raw) {
            (Secrecy::Hidden, _) => "<redacted>".to_string(),
            (Secrecy::UrlPassword, Raw::Toml(toml::Value::String(s))) => {
                format!("{:?}", super::redact_url(s))
            }
            (Secrecy::UrlPassword, Raw::Text(s)) => format!("{:?}", super::redact_url(s)),
            (_, Raw::Toml(v)) => v.to_string(),
            (_, Raw::Text(s)) => format!("{s:?}"),
        };
        ConfigError::Invalid {
            key: self.key.to_string(),
            value,
            reason: reason.into(),
            origin: self.origin.to_string(),
        }
    }

    pub fn boolean(&self) -> Result<bool, ConfigError> {
        match self.raw {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Text("true" | "1" | "yes" | "on") => Ok(true),
            Raw::Text("false" | "0" | "no" | "off") => Ok(false),
            _ => Err(self.fail("expected true or false")),
        }
    }

    pub fn string(&self) -> Result<&str, ConfigError> {
        match self.raw {
            Raw::Text(s) => Ok(s),
            Raw::Toml(toml::Value::String(s)) => Ok(s),
            Raw::Toml(_) => Err(self.fail("expected a string")),
        }
    }

    pub fn size(&self, min: usize, max: usize) -> Result<usize, ConfigError> {
        let n = match self.raw {
            Raw::Toml(toml::Value::Integer(i)) => {
                usize::try_from(*i).map_err(|_| self.fail("must not be negative"))?
            }
            Raw::Toml(_) => return Err(self.fail("expected an integer")),
            Raw::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| self.fail("expected a non-negative integer"))?,
        };
        if n < min || n > max {
            let reason = if max == usize::MAX {
                format!("must be at least {min}")
            } else {
                format!("must be between {min} and {max}")
            };
            return Err(self.fail(reason));
        }
        Ok(n)
    }

    pub fn duration(&self, allow_zero: bool) -> Result<Duration, ConfigError> {
        let text = match self.raw {
            Raw::Text(s) => s,
            Raw::Toml(toml::Value::String(s)) => s,
            Raw::Toml(toml::Value::Integer(_)) => {
                return Err(self.fail("durations are strings with a unit, like \"30s\""))
            }
            Raw::Toml(_) => return Err(self.fail(DURATION_HINT)),
        };
        let d = parse_duration(text.trim()).map_err(|reason| self.fail(reason))?;
        if !allow_zero && d.is_zero() {
            return Err(self.fail("must be greater than 0s"));
        }
        if d > MAX_DURATION {
            let max = format_duration(MAX_DURATION);
            return Err(self.fail(format!("must be at most {max}")));
        }
        Ok(d)
    }

    pub fn addr(&self) -> Result<SocketAddr, ConfigError> {
        let hint = "expected an address like 127.0.0.1:8080 or [::1]:8080";
        self.string()?.trim().parse().map_err(|_| self.fail(hint))
    }

    pub fn choice<T: FromStr<Err = String>>(&self) -> Result<T, ConfigError> {
        self.string()?
            .trim()
            .parse()
            .map_err(|reason| self.fail(reason))
    }

    pub fn path(&self) -> Result<PathBuf, ConfigError> {
        match self.string()? {
            "" => Err(self.fail("expected a file path")),
            s => Ok(PathBuf::from(s)),
        }
    }

    /// A TOML array of strings, or comma-separated text in the environment.
    pub fn list(&self) -> Result<Vec<&str>, ConfigError> {
        Ok(match self.raw {
            Raw::Text(s) if s.trim().is_empty() => Vec::new(),
            Raw::Text(s) => s.split(',').map(str::trim).collect(),
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| self.fail("expected a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Raw::Toml(_) => return Err(self.fail("expected a list like [\"a\", \"b\"]")),
        })
    }

    pub fn parsed_list<T: FromStr<Err = String>>(&self) -> Result<Vec<T>, ConfigError> {
        self.list()?
            .into_iter()
            .map(|item| item.parse().map_err(|reason| self.fail(reason)))
            .collect()
    }

    pub fn optional_string(&self) -> Result<Option<String>, ConfigError> {
        let s = self.string()?.trim();
        Ok((!s.is_empty()).then(|| s.to_string()))
    }
}
