//! Setting one key from one raw value, whichever layer (file, environment, flag) it came from,
//! so that every layer parses and range-checks a key the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::duration::DURATION_HINT;
use super::{format_duration, parse_duration, Config, ConfigError};

pub(super) const SECTIONS: &[&str] = &[
    "limits", "session", "bridge", "auth", "security", "log", "stats", "demo", "cluster",
];

/// Every key, dotted. The environment variable names and the unknown-key check derive from it.
pub(super) const KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "workers",
    "driver",
    "shutdown_grace",
    "limits.max_message_bytes",
    "limits.handshake_timeout",
    "limits.max_header_bytes",
    "limits.max_headers",
    "limits.read_buffer_bytes",
    "limits.pool_buffers",
    "limits.max_read_buffers",
    "limits.handoff_queue",
    "limits.max_connections_per_worker",
    "limits.max_connections",
    "limits.max_sessions",
    "limits.reconnect_reserve_percent",
    "limits.max_connections_per_ip",
    "limits.ip_connect_rate",
    "limits.ip_connect_burst",
    "limits.ip_table_size",
    "limits.message_rate",
    "limits.message_burst",
    "limits.byte_rate",
    "limits.byte_burst",
    "limits.max_frames_per_message",
    "limits.write_timeout",
    "limits.blocked_write_grace",
    "limits.max_blocked_writes_per_ip",
    "limits.max_blocked_writes_per_session",
    "limits.pool_reserve_percent",
    "limits.accept_backoff_max",
    "limits.max_handshakes_per_ip",
    "limits.max_handshakes",
    "session.ping_interval",
    "session.peer_timeout",
    "session.idle_timeout",
    "session.linger",
    "session.buffer_bytes",
    "session.buffer_messages",
    "session.overflow",
    "session.core_buffer_budget",
    "session.replay_bytes",
    "session.close_timeout",
    "bridge.agent_role",
    "bridge.timeout",
    "bridge.max_body_bytes",
    "bridge.max_response_bytes",
    "bridge.allowed_methods",
    "bridge.max_in_flight",
    "bridge.allow_active_content",
    "bridge.pass_cookies",
    "auth.jwt_secret",
    "auth.jwt_secret_file",
    "auth.algorithms",
    "auth.audience",
    "auth.issuer",
    "auth.leeway",
    "auth.max_token_bytes",
    "auth.max_token_lifetime",
    "security.allowed_origins",
    "security.require_origin",
    "security.trusted_proxies",
    "security.echo_route",
    "security.client_ip_header",
    "log.level",
    "log.format",
    "stats.latency",
    "demo.enabled",
    "cluster.redis_url",
    "cluster.node_id",
    "cluster.region",
    "cluster.public_url",
    "cluster.internal_listen",
    "cluster.heartbeat",
    "cluster.node_ttl",
    "cluster.key_prefix",
    "cluster.secret",
    "cluster.secret_file",
    "cluster.session_ttl",
    "cluster.lookup_timeout",
    "cluster.request_queue",
    "cluster.max_pending_links_per_ip",
    "cluster.max_pending_links",
];

/// `Instant + d` panics on overflow; no timer here has a use for more than a year.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output.
pub(super) const MIN_SECRET_BYTES: usize = 32;

pub(super) fn known_key(name: &str) -> Option<&'static str> {
    KEYS.iter().copied().find(|k| *k == name)
}

pub(super) fn env_var_name(key: &str) -> String {
    format!("RINGRELAY_{}", key.replace('.', "_").to_ascii_uppercase())
}

#[derive(Clone, Copy)]
pub(super) enum Raw<'a> {
    Toml(&'a toml::Value),
    Text(&'a str),
}

pub(super) struct Input<'a> {
    pub key: &'static str,
    pub raw: Raw<'a>,
    pub origin: &'a str,
}

impl Input<'_> {
    fn fail(&self, reason: impl Into<String>) -> ConfigError {
        let value = match self.raw {
            _ if matches!(self.key, "auth.jwt_secret" | "cluster.secret") => {
                "<redacted>".to_string()
            }
            // A URL may carry a password.
            Raw::Toml(toml::Value::String(s)) if self.key == "cluster.redis_url" => {
                format!("{:?}", super::redact_url(s))
            }
            Raw::Text(s) if self.key == "cluster.redis_url" => {
                format!("{:?}", super::redact_url(s))
            }
            Raw::Toml(v) => v.to_string(),
            Raw::Text(s) => format!("{s:?}"),
        };
        ConfigError::Invalid {
            key: self.key.to_string(),
            value,
            reason: reason.into(),
            origin: self.origin.to_string(),
        }
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        match self.raw {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Text("true" | "1" | "yes" | "on") => Ok(true),
            Raw::Text("false" | "0" | "no" | "off") => Ok(false),
            _ => Err(self.fail("expected true or false")),
        }
    }

    /// `redis://...` (or `rediss://`, `unix://`); empty means cluster mode off.
    fn redis_url(&self) -> Result<Option<String>, ConfigError> {
        let Some(url) = self.optional_string()? else {
            return Ok(None);
        };
        if !["redis://", "rediss://", "unix://"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            return Err(self.fail("expected a redis://host:port URL"));
        }
        Ok(Some(url))
    }

    /// A name for the registry: 1 to 64 of `[A-Za-z0-9._-]` (empty allowed when `may_be_empty`).
    fn name(&self, may_be_empty: bool) -> Result<String, ConfigError> {
        let s = self.string()?.trim();
        let ok = s.len() <= 64
            && (may_be_empty || !s.is_empty())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(self.fail("expected 1 to 64 characters of A-Z a-z 0-9 . _ -"));
        }
        Ok(s.to_string())
    }

    /// `true`, `false` or `"auto"`.
    fn demo_mode(&self) -> Result<crate::config::DemoMode, ConfigError> {
        use crate::config::DemoMode;
        let text = match self.raw {
            Raw::Toml(toml::Value::String(s)) => Some(s.as_str()),
            Raw::Text(s) => Some(s),
            Raw::Toml(_) => None,
        };
        match text.map(str::trim) {
            Some("auto") => Ok(DemoMode::Auto),
            _ if matches!(self.raw, Raw::Toml(toml::Value::String(_))) => {
                Err(self.fail("expected true, false or \"auto\""))
            }
            _ => match self.boolean() {
                Ok(true) => Ok(DemoMode::On),
                Ok(false) => Ok(DemoMode::Off),
                Err(_) => Err(self.fail("expected true, false or \"auto\"")),
            },
        }
    }

    fn string(&self) -> Result<&str, ConfigError> {
        match self.raw {
            Raw::Text(s) => Ok(s),
            Raw::Toml(toml::Value::String(s)) => Ok(s),
            Raw::Toml(_) => Err(self.fail("expected a string")),
        }
    }

    fn size(&self, min: usize, max: usize) -> Result<usize, ConfigError> {
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

    fn duration(&self, allow_zero: bool) -> Result<Duration, ConfigError> {
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

    /// Whole seconds, as `exp` and `iat` are; `"0s"` (off) is the only value under a second.
    fn token_lifetime(&self) -> Result<Duration, ConfigError> {
        let d = self.duration(true)?;
        if !d.is_zero() && d < Duration::from_secs(1) {
            return Err(self.fail("must be \"0s\" (off) or at least 1s"));
        }
        Ok(d)
    }

    fn addr(&self) -> Result<SocketAddr, ConfigError> {
        let hint = "expected an address like 127.0.0.1:8080 or [::1]:8080";
        self.string()?.trim().parse().map_err(|_| self.fail(hint))
    }

    fn choice<T: FromStr<Err = String>>(&self) -> Result<T, ConfigError> {
        self.string()?
            .trim()
            .parse()
            .map_err(|reason| self.fail(reason))
    }

    fn role(&self) -> Result<String, ConfigError> {
        let s = self.string()?;
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if !ok {
            return Err(self.fail("roles are 1 to 32 characters of [a-z0-9_-]"));
        }
        Ok(s.to_string())
    }

    fn secret(&self) -> Result<String, ConfigError> {
        let s = self.string()?;
        if s.len() < MIN_SECRET_BYTES {
            let n = s.len();
            return Err(self.fail(format!(
                "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes; this one has {n}"
            )));
        }
        Ok(s.to_string())
    }

    fn path(&self) -> Result<PathBuf, ConfigError> {
        match self.string()? {
            "" => Err(self.fail("expected a file path")),
            s => Ok(PathBuf::from(s)),
        }
    }

    fn log_level(&self) -> Result<String, ConfigError> {
        let s = self.string()?.trim();
        if s.is_empty() {
            return Err(self.fail("expected a filter like \"info\" or \"ringrelay=debug\""));
        }
        tracing_subscriber::EnvFilter::try_new(s)
            .map_err(|e| self.fail(format!("not a log filter: {e}")))?;
        Ok(s.to_string())
    }

    /// A TOML array of strings, or comma-separated text in the environment.
    fn list(&self) -> Result<Vec<&str>, ConfigError> {
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

    fn parsed_list<T: FromStr<Err = String>>(&self) -> Result<Vec<T>, ConfigError> {
        self.list()?
            .into_iter()
            .map(|item| item.parse().map_err(|reason| self.fail(reason)))
            .collect()
    }

    fn optional_string(&self) -> Result<Option<String>, ConfigError> {
        let s = self.string()?.trim();
        Ok((!s.is_empty()).then(|| s.to_string()))
    }

    /// HTTP method names (tokens), kept upper-case: methods are case-sensitive and every
    /// standard one is upper-case (RFC 9110 section 9.1).
    fn methods(&self) -> Result<Vec<String>, ConfigError> {
        self.list()?
            .into_iter()
            .map(|m| {
                let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
                ok.then(|| m.to_string())
                    .ok_or_else(|| self.fail("methods are upper-case names like GET or POST"))
            })
            .collect()
    }

    fn origins(&self) -> Result<Vec<String>, ConfigError> {
        self.list()?
            .into_iter()
            .map(|o| check_origin(o).map_err(|reason| self.fail(reason)))
            .collect()
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

/// Sets `input.key` on `cfg`. The key must come from [`KEYS`].
pub(super) fn set(cfg: &mut Config, input: &Input<'_>) -> Result<(), ConfigError> {
    let i = input;
    let (l, s, b) = (&mut cfg.limits, &mut cfg.session, &mut cfg.bridge);
    match i.key {
        "listen" => cfg.listen = i.addr()?,
        "admin_listen" => cfg.admin_listen = i.addr()?,
        "workers" => cfg.workers = i.size(1, 1024)?,
        "driver" => cfg.driver = i.choice()?,
        "shutdown_grace" => cfg.shutdown_grace = i.duration(true)?,
        "limits.max_message_bytes" => l.max_message_bytes = i.size(125, usize::MAX)?,
        "limits.handshake_timeout" => l.handshake_timeout = i.duration(false)?,
        "limits.max_header_bytes" => l.max_header_bytes = i.size(256, 1 << 20)?,
        "limits.max_headers" => l.max_headers = i.size(8, 1024)?,
        "limits.read_buffer_bytes" => l.read_buffer_bytes = i.size(4096, 16 << 20)?,
        "limits.pool_buffers" => l.pool_buffers = i.size(1, 1_000_000)?,
        "limits.max_read_buffers" => l.max_read_buffers = i.size(1, 1_000_000)?,
        "limits.handoff_queue" => l.handoff_queue = i.size(1, 1_000_000)?,
        "limits.max_connections_per_worker" => {
            l.max_connections_per_worker = i.size(1, 10_000_000)?
        }
        "limits.max_connections" => l.max_connections = i.size(1, 100_000_000)?,
        "limits.max_sessions" => l.max_sessions = i.size(1, 100_000_000)?,
        "limits.reconnect_reserve_percent" => l.reconnect_reserve_percent = i.size(0, 50)?,
        "limits.max_connections_per_ip" => l.max_connections_per_ip = i.size(0, 100_000_000)?,
        "limits.ip_connect_rate" => l.ip_connect_rate = i.size(0, 100_000_000)?,
        "limits.ip_connect_burst" => l.ip_connect_burst = i.size(1, 100_000_000)?,
        "limits.ip_table_size" => l.ip_table_size = i.size(16, 10_000_000)?,
        "limits.message_rate" => l.message_rate = i.size(0, 1_000_000_000)?,
        "limits.message_burst" => l.message_burst = i.size(1, 1_000_000_000)?,
        "limits.byte_rate" => l.byte_rate = i.size(0, 1 << 40)?,
        "limits.byte_burst" => l.byte_burst = i.size(1, 1 << 40)?,
        "limits.max_frames_per_message" => l.max_frames_per_message = i.size(1, 1 << 30)?,
        "limits.write_timeout" => l.write_timeout = i.duration(false)?,
        "limits.blocked_write_grace" => l.blocked_write_grace = i.duration(false)?,
        "limits.max_blocked_writes_per_ip" => l.max_blocked_writes_per_ip = i.size(0, 1_000_000)?,
        "limits.max_blocked_writes_per_session" => {
            l.max_blocked_writes_per_session = i.size(0, 1_000_000)?
        }
        "limits.pool_reserve_percent" => l.pool_reserve_percent = i.size(0, 50)?,
        "limits.accept_backoff_max" => l.accept_backoff_max = i.duration(false)?,
        "limits.max_handshakes_per_ip" => l.max_handshakes_per_ip = i.size(0, 10_000_000)?,
        "limits.max_handshakes" => l.max_handshakes = i.size(1, 10_000_000)?,
        "session.ping_interval" => s.ping_interval = i.duration(false)?,
        "session.peer_timeout" => s.peer_timeout = i.duration(false)?,
        "session.idle_timeout" => s.idle_timeout = i.duration(false)?,
        "session.linger" => s.linger = i.duration(true)?,
        "session.buffer_bytes" => s.buffer_bytes = i.size(0, usize::MAX)?,
        "session.buffer_messages" => s.buffer_messages = i.size(1, 100_000_000)?,
        "session.overflow" => s.overflow = i.choice()?,
        "session.core_buffer_budget" => s.core_buffer_budget = i.size(0, usize::MAX)?,
        "session.replay_bytes" => s.replay_bytes = i.size(0, usize::MAX)?,
        "session.close_timeout" => s.close_timeout = i.duration(true)?,
        "bridge.agent_role" => b.agent_role = i.role()?,
        "bridge.timeout" => b.timeout = i.duration(false)?,
        "bridge.max_body_bytes" => b.max_body_bytes = i.size(0, usize::MAX)?,
        "bridge.max_response_bytes" => b.max_response_bytes = i.size(0, usize::MAX)?,
        "bridge.allowed_methods" => b.allowed_methods = i.methods()?,
        "bridge.max_in_flight" => b.max_in_flight = i.size(1, u32::MAX as usize)? as u32,
        "bridge.allow_active_content" => b.allow_active_content = i.boolean()?,
        "bridge.pass_cookies" => b.pass_cookies = i.boolean()?,
        "auth.jwt_secret" => cfg.auth.jwt_secret = Some(i.secret()?),
        "auth.jwt_secret_file" => cfg.auth.jwt_secret_file = Some(i.path()?),
        "auth.algorithms" => {
            let algs = i.parsed_list()?;
            if algs.is_empty() {
                return Err(i.fail("at least one algorithm is needed"));
            }
            cfg.auth.algorithms = algs;
        }
        "auth.audience" => cfg.auth.audience = i.optional_string()?,
        "auth.issuer" => cfg.auth.issuer = i.optional_string()?,
        "auth.leeway" => cfg.auth.leeway = i.duration(true)?,
        "auth.max_token_bytes" => cfg.auth.max_token_bytes = i.size(64, 65_536)?,
        "auth.max_token_lifetime" => cfg.auth.max_token_lifetime = i.token_lifetime()?,
        "security.allowed_origins" => cfg.security.allowed_origins = i.origins()?,
        "security.require_origin" => cfg.security.require_origin = i.boolean()?,
        "security.trusted_proxies" => cfg.security.trusted_proxies = i.parsed_list()?,
        "security.echo_route" => cfg.security.echo_route = i.choice()?,
        "security.client_ip_header" => cfg.security.client_ip_header = i.choice()?,
        "log.level" => cfg.log.level = i.log_level()?,
        "log.format" => cfg.log.format = i.choice()?,
        "stats.latency" => cfg.stats.latency = i.boolean()?,
        "demo.enabled" => cfg.demo.enabled = i.demo_mode()?,
        "cluster.redis_url" => cfg.cluster.redis_url = i.redis_url()?,
        "cluster.node_id" => cfg.cluster.node_id = i.name(true)?,
        "cluster.region" => cfg.cluster.region = i.name(false)?,
        "cluster.public_url" => cfg.cluster.public_url = i.string()?.trim().to_string(),
        "cluster.internal_listen" => {
            cfg.cluster.internal_listen = match i.optional_string()? {
                None => None,
                Some(s) => Some(
                    s.parse()
                        .map_err(|_| i.fail("expected an address like 10.0.0.5:7000"))?,
                ),
            }
        }
        "cluster.heartbeat" => cfg.cluster.heartbeat = i.duration(false)?,
        "cluster.node_ttl" => cfg.cluster.node_ttl = i.duration(false)?,
        "cluster.key_prefix" => cfg.cluster.key_prefix = i.name(false)?,
        "cluster.secret" => cfg.cluster.secret = Some(i.secret()?),
        "cluster.secret_file" => cfg.cluster.secret_file = Some(i.path()?),
        "cluster.session_ttl" => cfg.cluster.session_ttl = i.duration(false)?,
        "cluster.lookup_timeout" => cfg.cluster.lookup_timeout = i.duration(false)?,
        "cluster.request_queue" => cfg.cluster.request_queue = i.size(1, 1 << 20)?,
        "cluster.max_pending_links_per_ip" => {
            cfg.cluster.max_pending_links_per_ip = i.size(1, 1_000_000)?
        }
        "cluster.max_pending_links" => cfg.cluster.max_pending_links = i.size(1, 1_000_000)?,
        other => debug_assert!(false, "key {other} is in KEYS but has no setter"),
    }
    Ok(())
}
