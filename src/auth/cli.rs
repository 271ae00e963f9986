//! `ringrelay token`: mints a token the server will accept, for tests, scripts and operators.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{mint_with_kid, MintClaims};
use crate::config::{
    format_duration, parse_duration, AuthConfig, CliOverrides, Config, ConfigError, JwtAlgorithm,
};
use crate::http::route::{valid_role, valid_session_id};

#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// File holding the shared secret, read as the server reads auth.jwt_secret_file.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// The server's config file: secret, algorithm, audience and issuer default to its [auth]
    /// settings (RINGRELAY_* variables apply as they do for the server).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Session the token opens, or * for any session.
    #[arg(long, value_parser = session_arg)]
    pub session: String,
    /// Pin the token to this role.
    #[arg(long, value_parser = role_arg)]
    pub role: Option<String>,
    /// How long the token is valid, like 15m or 1h; at most the server's
    /// auth.max_token_lifetime (24h unless --config says otherwise).
    #[arg(long, value_parser = ttl_arg)]
    pub ttl: Duration,
    /// HS256, HS384 or HS512 (default: the config's first algorithm, else HS256).
    #[arg(long, value_parser = alg_arg)]
    pub alg: Option<JwtAlgorithm>,
    /// Set aud (default: the config's auth.audience).
    #[arg(long)]
    pub audience: Option<String>,
    /// Set iss (default: the config's auth.issuer).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Put this key id in the token's header (`kid`). With --config and no --secret-file,
    /// the secret is that key's from auth.keys.
    #[arg(long, value_parser = kid_arg)]
    pub kid: Option<String>,
    /// Set nbf this far in the future (0s: now); without it the token has no nbf.
    #[arg(long, value_parser = parse_duration)]
    pub not_before_in: Option<Duration>,
}

/// Every message names the flag or file at fault and never the secret's bytes.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no secret: pass --secret-file, or --config with auth.jwt_secret or auth.jwt_secret_file set (or --kid naming one of its auth.keys)")]
    NoSecret,
    #[error("--kid {0:?}: no key of that id in the config's auth.keys")]
    UnknownKid(String),
    #[error("--secret-file: {0}")]
    SecretFile(ConfigError),
    #[error("--config: {0}")]
    Config(ConfigError),
    #[error("--alg {alg}: the server accepts only {accepted} (auth.algorithms)")]
    AlgorithmRefused { alg: &'static str, accepted: String },
    #[error("--{flag} {given:?}: the server requires {wanted:?} (auth.{flag})")]
    Mismatch {
        flag: &'static str,
        given: String,
        wanted: String,
    },
    #[error("--ttl {ttl}: the server refuses tokens valid for longer than {max} (auth.max_token_lifetime, {from}){hint}")]
    TtlTooLong {
        ttl: String,
        max: String,
        from: &'static str,
        hint: &'static str,
    },
}

/// Parses nothing itself (clap has done that) and prints: the token on stdout, or the error
/// on stderr with exit status 2, the status the server uses for configuration errors.
pub fn main(args: &TokenArgs) -> ExitCode {
    match token(args, super::unix_now()) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringrelay token: {e}");
            ExitCode::from(2)
        }
    }
}

/// The token `args` ask for, issued at `now` (Unix seconds).
pub fn token(args: &TokenArgs, now: u64) -> Result<String, TokenError> {
    let server = match &args.config {
        Some(path) => {
            let env = ringrelay_env();
            Some(
                Config::load(Some(path), &env, &CliOverrides::default())
                    .map_err(TokenError::Config)?,
            )
        }
        None => None,
    };
    let secret = match (&args.secret_file, &server) {
        (Some(path), _) => read_secret(path).map_err(TokenError::SecretFile)?,
        (None, Some(cfg)) => match &args.kid {
            Some(kid) => cfg
                .jwt_keys()
                .map_err(TokenError::Config)?
                .into_iter()
                .find(|(id, _)| id.as_ref() == Some(kid))
                .map(|(_, secret)| secret)
                .ok_or_else(|| TokenError::UnknownKid(kid.clone()))?,
            None => cfg
                .jwt_secret()
                .map_err(TokenError::Config)?
                .ok_or(TokenError::NoSecret)?,
        },
        (None, None) => return Err(TokenError::NoSecret),
    };
    let auth = server.as_ref().map(|c| &c.auth);
    let alg = match (args.alg, auth) {
        (Some(alg), Some(a)) if !a.algorithms.contains(&alg) => {
            let accepted: Vec<&str> = a.algorithms.iter().map(|x| x.as_str()).collect();
            return Err(TokenError::AlgorithmRefused {
                alg: alg.as_str(),
                accepted: accepted.join(", "),
            });
        }
        (Some(alg), _) => alg,
        (None, Some(a)) => a.algorithms.first().copied().unwrap_or(JwtAlgorithm::Hs256),
        (None, None) => JwtAlgorithm::Hs256,
    };
    let aud = pick(
        "audience",
        &args.audience,
        auth.and_then(|a| a.audience.as_ref()),
    )?;
    let iss = pick("issuer", &args.issuer, auth.and_then(|a| a.issuer.as_ref()))?;
    check_ttl(args.ttl, auth)?;
    let claims = MintClaims {
        sid: args.session.clone(),
        role: args.role.clone(),
        exp: now.saturating_add(args.ttl.as_secs()),
        iat: Some(now),
        nbf: args.not_before_in.map(|d| now.saturating_add(d.as_secs())),
        aud,
        iss,
    };
    Ok(mint_with_kid(&secret, alg, args.kid.as_deref(), &claims))
}

/// A token its server would refuse (401 token_lifetime_too_long) is never minted: the limit is
/// the config's when `--config` is given, else the server's default.
fn check_ttl(ttl: Duration, server: Option<&AuthConfig>) -> Result<(), TokenError> {
    let (max, source, hint) = match server {
        Some(a) => (a.max_token_lifetime, "in --config", ""),
        None => (
            AuthConfig::default().max_token_lifetime,
            "its default",
            "; if the server allows longer, pass its config with --config",
        ),
    };
    // The server compares whole seconds, as `exp` and `iat` are.
    if max.is_zero() || ttl.as_secs() <= max.as_secs() {
        return Ok(());
    }
    Err(TokenError::TtlTooLong {
        ttl: format_duration(ttl),
        max: format_duration(max),
        from: source,
        hint,
    })
}

/// The flag, else the server's setting; both set and different would mint a token the server
/// refuses, which is never what the caller meant.
fn pick(
    flag: &'static str,
    given: &Option<String>,
    wanted: Option<&String>,
) -> Result<Option<String>, TokenError> {
    match (given, wanted) {
        (Some(g), Some(w)) if g != w => Err(TokenError::Mismatch {
            flag,
            given: g.clone(),
            wanted: w.clone(),
        }),
        (Some(v), _) | (None, Some(v)) => Ok(Some(v.clone())),
        (None, None) => Ok(None),
    }
}

/// Through the config's own reader, so the CLI and the server agree on the bytes of a secret
/// (trailing CR/LF dropped) and on the 32-byte minimum.
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let cfg = Config {
        auth: AuthConfig {
            jwt_secret_file: Some(path.to_path_buf()),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    Ok(cfg.jwt_secret()?.unwrap_or_default())
}

/// The `RINGRELAY_*` variables the server would see; non-UTF-8 ones cannot name a key.
fn ringrelay_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("RINGRELAY_"))
        .collect()
}

fn session_arg(s: &str) -> Result<String, String> {
    if s == "*" || valid_session_id(s) {
        Ok(s.to_string())
    } else {
        Err("expected * or 1 to 128 characters of A-Z a-z 0-9 . _ ~ -".to_string())
    }
}

fn role_arg(s: &str) -> Result<String, String> {
    if valid_role(s) {
        Ok(s.to_string())
    } else {
        Err("expected 1 to 32 characters of a-z 0-9 _ -".to_string())
    }
}

/// At least a second, since `exp` counts whole seconds and a zero TTL is expired at birth.
fn ttl_arg(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.as_secs() == 0 {
        return Err("must be at least 1s".to_string());
    }
    Ok(d)
}

fn kid_arg(s: &str) -> Result<String, String> {
    if crate::config::AuthKey::valid_kid(s) {
        Ok(s.to_string())
    } else {
        Err("expected 1 to 64 characters of A-Z a-z 0-9 . _ -".to_string())
    }
}

fn alg_arg(s: &str) -> Result<JwtAlgorithm, String> {
    s.to_ascii_uppercase().parse()
}
