//! `auth.keys`: a list of `{ kid, secret_file }` tables, the one config value that is a table
//! of tables. In the environment it is `kid=path` pairs separated by commas
//! (`RINGRELAY_AUTH_KEYS="k1=/run/credentials/ringrelay.service/k1, k2=..."`): a kid holds
//! neither `=` nor `,`, so the first `=` ends it.

use super::Kind;
use crate::config::apply::{Input, Raw};
use crate::config::render;
use crate::config::types::{AuthKey, MAX_AUTH_KEYS};
use crate::config::ConfigError;
use std::path::PathBuf;

pub(in crate::config) struct Keys;

const SHAPE: &str = "expected a list like [{ kid = \"k1\", secret_file = \"/path\" }]";

fn key_from_table(i: &Input<'_>, v: &toml::Value) -> Result<AuthKey, ConfigError> {
    let t = v.as_table().ok_or_else(|| i.fail(SHAPE))?;
    if let Some(other) = t
        .keys()
        .find(|k| !matches!(k.as_str(), "kid" | "secret_file"))
    {
        return Err(i.fail(format!(
            "unknown field {other:?} in a key: only kid and secret_file"
        )));
    }
    let text = |name: &str| {
        t.get(name)
            .and_then(toml::Value::as_str)
            .ok_or_else(|| i.fail(format!("each key needs {name} (a string)")))
    };
    Ok(AuthKey {
        kid: text("kid")?.to_string(),
        secret_file: PathBuf::from(text("secret_file")?),
    })
}

fn key_from_text(i: &Input<'_>, item: &str) -> Result<AuthKey, ConfigError> {
    let (kid, path) = item
        .split_once('=')
        .ok_or_else(|| i.fail("expected kid=path pairs separated by commas"))?;
    Ok(AuthKey {
        kid: kid.trim().to_string(),
        secret_file: PathBuf::from(path.trim()),
    })
}

/// Each kid valid and unique, each path given, at most [`MAX_AUTH_KEYS`].
fn check(i: &Input<'_>, keys: &[AuthKey]) -> Result<(), ConfigError> {
    if keys.len() > MAX_AUTH_KEYS {
        return Err(i.fail(format!("at most {MAX_AUTH_KEYS} keys")));
    }
    for (n, k) in keys.iter().enumerate() {
        if !AuthKey::valid_kid(&k.kid) {
            return Err(i.fail("a kid is 1 to 64 characters of A-Z a-z 0-9 . _ -"));
        }
        if k.secret_file.as_os_str().is_empty() {
            return Err(i.fail(format!("key {:?} has an empty secret_file", k.kid)));
        }
        if keys[..n].iter().any(|o| o.kid == k.kid) {
            return Err(i.fail(format!("kid {:?} appears twice", k.kid)));
        }
    }
    Ok(())
}

impl Kind<Vec<AuthKey>> for Keys {
    fn parse(&self, i: &Input<'_>) -> Result<Vec<AuthKey>, ConfigError> {
        let keys = match i.raw {
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| key_from_table(i, v))
                .collect::<Result<Vec<_>, _>>()?,
            Raw::Toml(_) => return Err(i.fail(SHAPE)),
            Raw::Text(s) if s.trim().is_empty() => Vec::new(),
            Raw::Text(s) => s
                .split(',')
                .map(|item| key_from_text(i, item))
                .collect::<Result<Vec<_>, _>>()?,
        };
        check(i, &keys)?;
        Ok(keys)
    }

    fn toml(&self, v: &Vec<AuthKey>) -> Option<String> {
        let items: Vec<String> = v
            .iter()
            .map(|k| {
                format!(
                    "{{ kid = {}, secret_file = {} }}",
                    render::string(&k.kid),
                    render::string(&k.secret_file.to_string_lossy())
                )
            })
            .collect();
        Some(format!("[{}]", items.join(", ")))
    }
}
