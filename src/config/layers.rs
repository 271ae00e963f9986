//! The three layers over the defaults, and the checks that need the merged result.

use std::collections::HashMap;
use std::path::Path;

use super::apply::{self, Raw, KEYS, MIN_SECRET_BYTES, SECTIONS, TABLE};
use super::declare::Key;
use super::validate::validate;
use super::{CliOverrides, Config, ConfigError};

/// Where each key was last set, for errors found only after merging.
pub(super) type Origins = HashMap<&'static str, String>;

const CONFIG_PATH_VAR: &str = "RINGRELAY_CONFIG";
/// Not a key: the upgrade count the SIGUSR2 upgrade hands the process it starts, shown in
/// /health (`server::health::generation`).
pub const GENERATION_VAR: &str = "RINGRELAY_GENERATION";
/// Not a key: the descriptor of the unix socket a SIGUSR2 upgrade hands the process it starts
/// (`server::upgrade`); set, the process takes its listeners from it instead of binding them.
pub const UPGRADE_FD_VAR: &str = "RINGRELAY_UPGRADE_FD";

pub(super) fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<Config, ConfigError> {
    let text = match file {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                key: None,
                path: path.to_path_buf(),
                source,
            })?,
        ),
        None => None,
    };
    load_text(text.as_deref().zip(file), env, cli)
}

/// `file` is the TOML text and the path its errors name.
pub(super) fn load_text(
    file: Option<(&str, &Path)>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    let mut origins = Origins::new();
    if let Some((text, path)) = file {
        apply_file(&mut cfg, &mut origins, text, path)?;
    }
    for (name, value) in env {
        if let Some(key) = TABLE.iter().find(|k| apply::env_var_name(k.name) == *name) {
            let origin = format!("environment variable {name}");
            set(&mut cfg, &mut origins, key, Raw::Text(value), origin)?;
        }
    }
    let flags = [
        ("listen", "--listen", &cli.listen),
        ("admin_listen", "--admin-listen", &cli.admin_listen),
        ("workers", "--workers", &cli.workers),
        ("driver", "--driver", &cli.driver),
    ];
    for (name, flag, value) in flags {
        if let Some(value) = value {
            let key = apply::known_key(name).expect("every flag sets a declared key");
            set(
                &mut cfg,
                &mut origins,
                key,
                Raw::Text(value),
                format!("flag {flag}"),
            )?;
        }
    }
    if !origins.contains_key("listen") {
        hosting_port(&mut cfg, &mut origins, env)?;
    }
    validate(&cfg, &origins)?;
    Ok(cfg)
}

/// The variable hosting platforms (Render, Railway, Heroku, Cloud Run, most container
/// platforms) set to the port they route to.
const PORT_VAR: &str = "PORT";

/// `PORT`, when nothing else named `listen`: the public listener on all IPv4 addresses at that
/// port (the platform's router reaches the container from outside, so loopback would be
/// unreachable; IPv4 because some container networks have no IPv6 at all). The lowest layer
/// above the default: the file, `RINGRELAY_LISTEN` and `--listen` all win. Only read when it
/// would be used, so a stray `PORT` beside an explicit `listen` can never stop the relay.
fn hosting_port(
    cfg: &mut Config,
    origins: &mut Origins,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let Some((_, value)) = env.iter().rev().find(|(name, _)| name == PORT_VAR) else {
        return Ok(());
    };
    let port = value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ConfigError::Invalid {
            key: "listen".to_string(),
            value: format!("{value:?}"),
            reason: "PORT must be a port number from 1 to 65535".to_string(),
            origin: format!("environment variable {PORT_VAR}"),
        })?;
    cfg.listen = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    origins.insert("listen", format!("environment variable {PORT_VAR}"));
    Ok(())
}

fn set(
    cfg: &mut Config,
    origins: &mut Origins,
    key: &'static Key,
    raw: Raw<'_>,
    origin: String,
) -> Result<(), ConfigError> {
    (key.set)(cfg, raw, &origin)?;
    origins.insert(key.name, origin);
    Ok(())
}

fn apply_file(
    cfg: &mut Config,
    origins: &mut Origins,
    text: &str,
    path: &Path,
) -> Result<(), ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
    let origin = format!("config file {}", path.display());
    let unknown = |key: String| ConfigError::UnknownKey {
        suggestion: suggest(&key),
        key,
        path: path.to_path_buf(),
    };
    for (name, value) in &table {
        if let Some(key) = apply::known_key(name) {
            set(cfg, origins, key, Raw::Toml(value), origin.clone())?;
            continue;
        }
        if !SECTIONS.contains(&name.as_str()) {
            return Err(unknown(name.clone()));
        }
        let Some(section) = value.as_table() else {
            return Err(ConfigError::Invalid {
                key: name.clone(),
                value: value.to_string(),
                reason: format!("expected a [{name}] table"),
                origin,
            });
        };
        for (sub, value) in section {
            let dotted = format!("{name}.{sub}");
            let flat_prefix = format!("{dotted}_");
            let flattens = KEYS.iter().any(|k| k.starts_with(&flat_prefix));
            if let (None, Some(inner), true) =
                (apply::known_key(&dotted), value.as_table(), flattens)
            {
                // A sub-table (`[proxy.pool] max_idle`) names the keys `proxy.pool_max_idle`.
                for (leaf, value) in inner {
                    let flat = format!("{name}.{sub}_{leaf}");
                    let key = apply::known_key(&flat)
                        .ok_or_else(|| unknown(format!("{dotted}.{leaf}")))?;
                    set(cfg, origins, key, Raw::Toml(value), origin.clone())?;
                }
                continue;
            }
            let key = apply::known_key(&dotted).ok_or_else(|| unknown(dotted.clone()))?;
            set(cfg, origins, key, Raw::Toml(value), origin.clone())?;
        }
    }
    Ok(())
}

/// The closest known key or section within two edits, to turn a typo into a one-line fix.
fn suggest(key: &str) -> Option<String> {
    let (distance, best) = KEYS
        .iter()
        .chain(SECTIONS)
        .map(|k| (edit_distance(key, k), *k))
        .min_by_key(|(d, _)| *d)?;
    (distance <= 2).then(|| best.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// A secret given inline or as a file (`{section}.jwt_secret[_file]` for auth,
/// `{section}.secret[_file]` for the cluster), at least `MIN_SECRET_BYTES` long.
pub(super) fn read_secret(
    section: &str,
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let (inline_key, key) = match section {
        "auth" => ("auth.jwt_secret", "auth.jwt_secret_file"),
        _ => ("cluster.secret", "cluster.secret_file"),
    };
    match (inline, file) {
        (None, None) => Ok(None),
        (Some(secret), None) => Ok(Some(secret.as_bytes().to_vec())),
        (Some(_), Some(path)) => Err(ConfigError::Invalid {
            key: key.to_string(),
            value: format!("{:?}", path.display().to_string()),
            reason: format!("set only one of {inline_key} and {key}"),
            origin: "the config".to_string(),
        }),
        (None, Some(path)) => read_secret_file(key, path).map(Some),
    }
}

/// A secret in a file, named by `key` in errors: trailing CR/LF dropped (`echo secret > file`
/// adds one), at least `MIN_SECRET_BYTES` left.
pub(super) fn read_secret_file(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        key: Some(key.to_string()),
        path: path.to_path_buf(),
        source,
    })?;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::Invalid {
            key: key.to_string(),
            value: format!("{:?}", path.display().to_string()),
            reason: format!(
                "the file holds {} bytes; an HS256 secret must be at least {MIN_SECRET_BYTES}",
                bytes.len()
            ),
            origin: "the file's contents".to_string(),
        });
    }
    Ok(bytes)
}

pub(super) fn ignored_env_vars(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("RINGRELAY_") && name.as_str() != CONFIG_PATH_VAR)
        .filter(|name| name.as_str() != GENERATION_VAR && name.as_str() != UPGRADE_FD_VAR)
        .filter(|name| !KEYS.iter().any(|k| apply::env_var_name(k) == **name))
        .cloned()
        .collect()
}
