//! Configuration: defaults < TOML file < `RINGRELAY_*` environment < CLI flags.
//!
//! Every key is declared once, in `keys.rs`: its name, field, type, default, parser with its
//! range, and doc line. The structs, the defaults, the file and environment names, the
//! unknown-key check, `--print-config` and `Debug` all come from that table; a test holds
//! docs/configuration.md and systemd/ringrelay.toml to it.
#![forbid(unsafe_code)]

mod apply;
#[macro_use]
mod declare;
mod duration;
mod error;
mod keys;
mod kinds;
mod layers;
mod live;
mod redact;
mod render;
#[cfg(test)]
mod tests;
mod types;
mod validate;

use std::path::Path;

pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use keys::{
    AdminConfig, AdminTlsConfig, AuthConfig, BridgeConfig, ClusterConfig, Config, CorsConfig,
    DemoConfig, LimitsConfig, LogConfig, ProxyConfig, SecurityConfig, SessionConfig, StatsConfig,
    TlsConfig, TunnelConfig,
};
pub use kinds::proxy::{own_path, valid_region, ProxyRoute, ProxyUpstream};
pub use layers::{GENERATION_VAR, UPGRADE_FD_VAR};
pub use live::{is_live, FIXED_KEYS, LIVE_KEYS};
pub use redact::{has_password, redact_url};
pub use types::{
    AccessTarget, AuthKey, CertPair, ClientAuth, ClientGrant, ClientIpHeader, DemoMode,
    DriverChoice, EchoRoute, IpNet, JwtAlgorithm, LogFormat, Overflow, PortRange, TlsVersion,
    MAX_AUTH_KEYS, MAX_CLIENT_GRANTS,
};

/// Bits of a connection id that hold its worker's index (`context::Core::next_conn_id`), so
/// ids are unique across workers without any coordination.
pub const WORKER_INDEX_BITS: u32 = 10;

/// The most workers the relay runs (`workers` is 1 to this): every worker index fits in
/// [`WORKER_INDEX_BITS`] bits (and in the `u16` an open connection keeps of its home core).
pub const MAX_WORKERS: usize = 1 << WORKER_INDEX_BITS;

/// One token secret as read: its key id (`None` for `auth.jwt_secret[_file]`) and its bytes.
pub type JwtKey = (Option<String>, Vec<u8>);

/// CLI flags that override file and environment.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub workers: Option<String>,
    pub driver: Option<String>,
}

impl Config {
    /// Whether `/demo` is served, `auto` resolved against the public listener.
    pub fn demo_enabled(&self) -> bool {
        match self.demo.enabled {
            DemoMode::On => true,
            DemoMode::Off => false,
            DemoMode::Auto => self.listen.ip().is_loopback(),
        }
    }

    /// file (optional) < environment (`RINGRELAY_*`) < CLI overrides. Reads only `env`, never
    /// the process environment, so callers and tests decide what it sees.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        cli: &CliOverrides,
    ) -> Result<Config, ConfigError> {
        layers::load(file, env, cli)
    }

    /// [`Config::load`] with the file's text already in hand; `name` stands for the file in
    /// errors. For callers without a file on disk, such as the fuzzer.
    pub fn from_toml_str(
        text: &str,
        name: &Path,
        env: &[(String, String)],
        cli: &CliOverrides,
    ) -> Result<Config, ConfigError> {
        layers::load_text(Some((text, name)), env, cli)
    }

    /// The effective config as TOML that [`Config::load`] accepts back. An inline
    /// `auth.jwt_secret` is left out (a comment says it is set) so that `--print-config`
    /// output can be pasted into a ticket safely.
    pub fn to_toml(&self) -> String {
        render::to_toml(self)
    }

    /// The HS256 secret, read from `auth.jwt_secret_file` when that is set. Trailing CR/LF is
    /// dropped because `echo secret > file` adds one.
    pub fn jwt_secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let a = &self.auth;
        layers::read_secret("auth", &a.jwt_secret, &a.jwt_secret_file)
    }

    /// Every token secret in force, read now: the one without a key id
    /// (`auth.jwt_secret[_file]`) first, then each of `auth.keys` with its `kid`. Empty: auth
    /// is off.
    pub fn jwt_keys(&self) -> Result<Vec<JwtKey>, ConfigError> {
        let mut keys: Vec<JwtKey> = self.jwt_secret()?.map(|s| (None, s)).into_iter().collect();
        for k in &self.auth.keys {
            let secret = layers::read_secret_file("auth.keys", &k.secret_file)?;
            keys.push((Some(k.kid.clone()), secret));
        }
        Ok(keys)
    }

    /// The node-to-node link's secret (`cluster.secret` or `cluster.secret_file`), read now.
    pub fn cluster_secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let c = &self.cluster;
        layers::read_secret("cluster", &c.secret, &c.secret_file)
    }
}

/// `RINGRELAY_*` variables in `env` that match no key, so the caller can warn about typos
/// (`load` itself ignores them). `RINGRELAY_CONFIG` is the config path and is not listed.
pub fn ignored_env_vars(env: &[(String, String)]) -> Vec<String> {
    layers::ignored_env_vars(env)
}
