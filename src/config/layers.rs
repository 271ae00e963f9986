//! The three layers over the defaults, and the checks that need the merged result.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::apply::{self, Input, Raw, KEYS, MIN_SECRET_BYTES, SECTIONS};
use super::{format_duration, CliOverrides, Config, ConfigError};

/// Where each key was last set, for errors found only after merging.
type Origins = HashMap<&'static str, String>;

const CONFIG_PATH_VAR: &str = "RINGRELAY_CONFIG";

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
        if let Some(key) = KEYS
            .iter()
            .copied()
            .find(|k| apply::env_var_name(k) == *name)
        {
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
    for (key, flag, value) in flags {
        if let Some(value) = value {
            set(
                &mut cfg,
                &mut origins,
                key,
                Raw::Text(value),
                format!("flag {flag}"),
            )?;
        }
    }
    validate(&cfg, &origins)?;
    Ok(cfg)
}

fn set(
    cfg: &mut Config,
    origins: &mut Origins,
    key: &'static str,
    raw: Raw<'_>,
    origin: String,
) -> Result<(), ConfigError> {
    apply::set(
        cfg,
        &Input {
            key,
            raw,
            origin: &origin,
        },
    )?;
    origins.insert(key, origin);
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

fn validate(cfg: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let origin_of = |key: &str| origins.get(key).cloned();
    let invalid = |key: &str, value: String, reason: String| ConfigError::Invalid {
        key: key.to_string(),
        value,
        reason,
        origin: origin_of(key).unwrap_or_else(|| "the default".to_string()),
    };

    let s = &cfg.session;
    if s.peer_timeout <= s.ping_interval {
        let (ping, peer) = (
            format_duration(s.ping_interval),
            format_duration(s.peer_timeout),
        );
        // Blame the key the operator set; both are named either way.
        return Err(if origin_of("session.peer_timeout").is_some() {
            let reason = format!("must be greater than session.ping_interval ({ping})");
            invalid("session.peer_timeout", format!("{peer:?}"), reason)
        } else {
            let reason = format!("must be less than session.peer_timeout ({peer})");
            invalid("session.ping_interval", format!("{ping:?}"), reason)
        });
    }

    // A write timeout no longer than the default grace is itself the bound (it ends blocked
    // writes first); only a grace set explicitly at or past it is a mistake worth naming.
    let l = &cfg.limits;
    if l.blocked_write_grace >= l.write_timeout && origin_of("limits.blocked_write_grace").is_some()
    {
        let reason = format!(
            "must be shorter than limits.write_timeout ({})",
            format_duration(l.write_timeout)
        );
        let grace = format_duration(l.blocked_write_grace);
        return Err(invalid(
            "limits.blocked_write_grace",
            format!("{grace:?}"),
            reason,
        ));
    }

    let c = &cfg.cluster;
    if c.node_ttl <= c.heartbeat {
        let reason = format!(
            "must be longer than cluster.heartbeat ({}), or a live node's entry would lapse",
            format_duration(c.heartbeat)
        );
        return Err(invalid(
            "cluster.node_ttl",
            format!("{:?}", format_duration(c.node_ttl)),
            reason,
        ));
    }

    if c.session_ttl <= c.heartbeat {
        let reason = format!(
            "must be longer than cluster.heartbeat ({}), which renews ownership",
            format_duration(c.heartbeat)
        );
        return Err(invalid(
            "cluster.session_ttl",
            format!("{:?}", format_duration(c.session_ttl)),
            reason,
        ));
    }
    if c.redis_url.is_some()
        && c.internal_listen.is_some()
        && c.secret.is_none()
        && c.secret_file.is_none()
    {
        // Without it anybody who reaches the port could inject peers into any session.
        let reason = "needs cluster.secret or cluster.secret_file, which authenticates the link";
        let addr = c.internal_listen.map(|a| a.to_string()).unwrap_or_default();
        return Err(invalid(
            "cluster.internal_listen",
            format!("{addr:?}"),
            reason.to_string(),
        ));
    }
    if c.secret.is_some() && c.secret_file.is_some() {
        let reason = "set only one of cluster.secret and this key".to_string();
        let path = c.secret_file.as_deref().unwrap_or(Path::new(""));
        return Err(invalid(
            "cluster.secret_file",
            format!("{:?}", path.display().to_string()),
            reason,
        ));
    }

    if cfg.auth.jwt_secret.is_some() && cfg.auth.jwt_secret_file.is_some() {
        let other = origin_of("auth.jwt_secret").unwrap_or_default();
        let reason = format!("set only one of auth.jwt_secret (set by {other}) and this key");
        let path = cfg.auth.jwt_secret_file.as_deref().unwrap_or(Path::new(""));
        return Err(invalid(
            "auth.jwt_secret_file",
            format!("{:?}", path.display().to_string()),
            reason,
        ));
    }

    // No proxy would ever be believed: every connection would be read as HTTP and a real
    // PROXY header answered 400, which is a mistake to report now rather than in production.
    let sec = &cfg.security;
    if sec.client_ip_header == super::ClientIpHeader::ProxyProtocol
        && sec.trusted_proxies.is_empty()
    {
        let reason = "needs security.trusted_proxies: the PROXY header is read only from them";
        return Err(invalid(
            "security.client_ip_header",
            "\"proxy-protocol\"".to_string(),
            reason.to_string(),
        ));
    }

    // With SO_REUSEPORT on both listeners the kernel would spread connections between them.
    if overlaps(cfg.listen, cfg.admin_listen) {
        let reason = format!("must not use the same port as listen ({})", cfg.listen);
        return Err(invalid(
            "admin_listen",
            format!("\"{}\"", cfg.admin_listen),
            reason,
        ));
    }
    Ok(())
}

/// Same port, and one address covers the other: equal, or a wildcard of the same family, or
/// `[::]`, which is dual-stack by default. Port 0 asks the kernel for a free port each time.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |x: IpAddr, y: IpAddr| x == y || (x.is_unspecified() && (x.is_ipv6() || y.is_ipv4()));
    a.port() != 0 && a.port() == b.port() && (covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
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
        (None, Some(path)) => {
            let mut bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
                key: Some(key.to_string()),
                path: path.clone(),
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
            Ok(Some(bytes))
        }
    }
}

pub(super) fn ignored_env_vars(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("RINGRELAY_") && name.as_str() != CONFIG_PATH_VAR)
        .filter(|name| !KEYS.iter().any(|k| apply::env_var_name(k) == **name))
        .cloned()
        .collect()
}
