//! The config loader over arbitrary TOML text and environment values: it must answer with a
//! config or a `ConfigError`, never panic; an accepted config must print (`--print-config`) as
//! TOML that loads back to the same config; an inline secret must never show in an error; and
//! a config with auth on must verify a token minted for its own policy.
//!
//! Input layout: the TOML text, then for each variable of `ENV` in order a NUL byte and its
//! value (UTF-8, lossy). Variables past the last NUL are not set.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::auth::{mint, Authenticator, MintClaims};
use ringrelay::config::{AuthConfig, CliOverrides, Config};
use std::path::Path;

const ENV: &[&str] = &[
    "RINGRELAY_AUTH_JWT_SECRET",
    "RINGRELAY_AUTH_ALGORITHMS",
    "RINGRELAY_AUTH_AUDIENCE",
    "RINGRELAY_AUTH_ISSUER",
    "RINGRELAY_AUTH_LEEWAY",
    "RINGRELAY_AUTH_MAX_TOKEN_BYTES",
    "RINGRELAY_WORKERS",
    "RINGRELAY_LISTEN",
    "RINGRELAY_SESSION_PING_INTERVAL",
    "RINGRELAY_SESSION_PEER_TIMEOUT",
    "RINGRELAY_SECURITY_ALLOWED_ORIGINS",
    "RINGRELAY_SECURITY_TRUSTED_PROXIES",
    "RINGRELAY_LIMITS_MAX_MESSAGE_BYTES",
    "RINGRELAY_LOG_LEVEL",
];

fn check_auth(cfg: &Config) {
    // A secret file would be read from disk: only an inline secret is exercised here.
    if cfg.auth.jwt_secret_file.is_some() || !cfg.auth.keys.is_empty() {
        return;
    }
    let auth = Authenticator::from_config(cfg).expect("an inline secret needs no I/O");
    let Some(auth) = auth else {
        assert!(cfg.auth.jwt_secret.is_none());
        return;
    };
    let secret = cfg.auth.jwt_secret.as_deref().unwrap_or_default();
    assert!(secret.len() >= 32, "a short secret was accepted");
    // Valid for as long as this config allows (the whole test window when unlimited).
    let lifetime = match cfg.auth.max_token_lifetime.as_secs() {
        0 => 100_000_000,
        s => s,
    };
    let claims = MintClaims {
        sid: "room-1".into(),
        exp: 1_900_000_000 + lifetime,
        aud: cfg.auth.audience.clone(),
        iss: cfg.auth.issuer.clone(),
        ..MintClaims::default()
    };
    let token = mint(secret.as_bytes(), cfg.auth.algorithms[0], &claims);
    if token.len() <= cfg.auth.max_token_bytes {
        let got = auth.verify(&token, 1_900_000_000);
        assert!(got.is_ok(), "own token refused: {got:?}");
    }
}

fuzz_target!(|input: &[u8]| {
    let mut pieces = input.split(|b| *b == 0);
    let text = String::from_utf8_lossy(pieces.next().unwrap_or_default());
    let env: Vec<(String, String)> = ENV
        .iter()
        .zip(pieces)
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let cli = CliOverrides::default();
    let load =
        |env: &[(String, String)]| Config::from_toml_str(&text, Path::new("fuzz.toml"), env, &cli);
    match load(&env) {
        Err(e) => {
            let _ = e.key();
            // Only the secret's length may matter: the same error must come back, word for
            // word, with other bytes of that length. Looking for the secret in the message
            // would not do, since a secret may be a piece of the message's fixed text.
            let masked: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "RINGRELAY_AUTH_JWT_SECRET" => (k.clone(), "\u{7f}".repeat(v.len())),
                    _ => (k.clone(), v.clone()),
                })
                .collect();
            let other = load(&masked).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(
                Err(e.to_string()),
                other,
                "the error depends on the secret's bytes"
            );
        }
        Ok(cfg) => {
            // Debug must not depend on the secret's value, only on whether there is one.
            let other = Config {
                auth: AuthConfig {
                    jwt_secret: cfg.auth.jwt_secret.as_ref().map(|_| "x".repeat(40)),
                    ..cfg.auth.clone()
                },
                ..cfg.clone()
            };
            assert_eq!(format!("{cfg:?}"), format!("{other:?}"), "secret in Debug");
            let printed = cfg.to_toml();
            let again = Config::from_toml_str(&printed, Path::new("printed.toml"), &[], &cli)
                .unwrap_or_else(|e| panic!("printed config does not load: {e}\n{printed}"));
            let want = Config {
                auth: AuthConfig {
                    jwt_secret: None,
                    ..cfg.auth.clone()
                },
                ..cfg.clone()
            };
            assert_eq!(
                again, want,
                "printed config loads back different:\n{printed}"
            );
            check_auth(&cfg);
        }
    }
});
