//! Verifies that `ringrelay token` mints tokens the library's verifier accepts, that bad
//! arguments exit 2 with a message, and that the secret never appears in its output.

use std::path::PathBuf;
use std::process::{Command, Output};

use ringrelay::auth::{unix_now, AuthError, Authenticator, SessionGrant};
use ringrelay::config::{AuthConfig, CliOverrides, Config, JwtAlgorithm};

const SECRET: &str = "tk-cli-secret-0123456789abcdefghijklmnop";

/// A directory of its own per test, so tests can run in parallel; removed on drop, since it
/// holds secrets.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("rr-token-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

fn write(dir: &std::path::Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// The binary with none of the caller's `RINGRELAY_*` variables, which would change what a
/// `--config` run sees.
fn token(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
    c.arg("token").args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RINGRELAY_") {
            c.env_remove(k);
        }
    }
    c.output().unwrap()
}

fn stdout_token(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    assert_no_secret(out);
    text.trim_end().to_string()
}

fn assert_no_secret(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(SECRET), "secret echoed: {text}");
        assert!(
            !text.contains(&SECRET[..16]),
            "part of the secret echoed: {text}"
        );
    }
}

fn verifier(cfg: AuthConfig) -> Authenticator {
    Authenticator::new(SECRET.as_bytes().to_vec(), &cfg)
}

#[test]
fn mints_from_a_secret_file_what_the_library_accepts() {
    let d = dir("file");
    // A trailing newline, as `echo secret > file` leaves, is not part of the secret.
    let file = write(&d, "secret", &format!("{SECRET}\r\n"));
    let before = unix_now();
    let out = token(&[
        "--secret-file",
        file.to_str().unwrap(),
        "--session",
        "room-1",
        "--role",
        "desktop",
        "--ttl",
        "1h",
    ]);
    let t = stdout_token(&out);
    assert!(out.stderr.is_empty());
    let claims = verifier(AuthConfig::default())
        .verify(&t, unix_now())
        .unwrap();
    assert_eq!(claims.sid, SessionGrant::One("room-1".into()));
    assert_eq!(claims.role.as_deref(), Some("desktop"));
    assert!(
        (before + 3600..=unix_now() + 3600).contains(&claims.exp),
        "{}",
        claims.exp
    );
    assert_eq!(
        claims.grant("room-1", Some("mobile")),
        Err(AuthError::WrongRole)
    );
    // Expired once the hour and the default leeway have passed.
    assert_eq!(
        verifier(AuthConfig::default()).verify(&t, claims.exp + 31),
        Err(AuthError::Expired)
    );
}

#[test]
fn algorithm_audience_issuer_and_not_before() {
    let d = dir("opts");
    let file = write(&d, "secret", SECRET);
    let t = stdout_token(&token(&[
        "--secret-file",
        file.to_str().unwrap(),
        "--session",
        "*",
        "--ttl",
        "2h",
        "--alg",
        "hs384",
        "--audience",
        "relay",
        "--issuer",
        "ops",
        "--not-before-in",
        "10m",
    ]));
    let cfg = AuthConfig {
        algorithms: vec![JwtAlgorithm::Hs384],
        audience: Some("relay".into()),
        issuer: Some("ops".into()),
        ..AuthConfig::default()
    };
    let now = unix_now();
    assert_eq!(
        verifier(cfg.clone()).verify(&t, now),
        Err(AuthError::NotYetValid)
    );
    let later = verifier(cfg.clone()).verify(&t, now + 700).unwrap();
    assert_eq!(later.sid, SessionGrant::Any);
    assert_eq!(
        verifier(AuthConfig::default()).verify(&t, now + 700),
        Err(AuthError::Algorithm)
    );
    let other_aud = AuthConfig {
        audience: Some("other".into()),
        ..cfg
    };
    assert_eq!(
        verifier(other_aud).verify(&t, now + 700),
        Err(AuthError::Audience)
    );
}

#[test]
fn takes_secret_and_policy_from_the_server_config() {
    let d = dir("config");
    let file = write(&d, "secret", &format!("{SECRET}\n"));
    let toml = format!(
        "[auth]\njwt_secret_file = {:?}\nalgorithms = [\"HS512\", \"HS256\"]\naudience = \"relay\"\nissuer = \"ops\"\n",
        file.to_str().unwrap()
    );
    let config = write(&d, "ringrelay.toml", &toml);
    let path = config.to_str().unwrap();
    let t = stdout_token(&token(&[
        "--config",
        path,
        "--session",
        "s.1",
        "--ttl",
        "5m",
    ]));
    let cfg = Config::load(Some(&config), &[], &CliOverrides::default()).unwrap();
    let auth = Authenticator::from_config(&cfg).unwrap().unwrap();
    let claims = auth.verify(&t, unix_now()).unwrap();
    assert_eq!(claims.sid, SessionGrant::One("s.1".into()));
    let only_256 = AuthConfig {
        algorithms: vec![JwtAlgorithm::Hs256],
        ..cfg.auth.clone()
    };
    assert_eq!(
        verifier(only_256).verify(&t, unix_now()),
        Err(AuthError::Algorithm),
        "the config's first algorithm is the default"
    );

    // Flags that would mint a token this server refuses are errors, not silent overrides.
    for (flag, value, says) in [
        ("--alg", "HS384", "auth.algorithms"),
        ("--audience", "web", "auth.audience"),
        ("--issuer", "someone", "auth.issuer"),
    ] {
        let out = token(&[
            "--config",
            path,
            "--session",
            "s",
            "--ttl",
            "5m",
            flag,
            value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{flag}"
        );
        assert!(out.stdout.is_empty());
    }
    let same = token(&[
        "--config",
        path,
        "--session",
        "s",
        "--ttl",
        "5m",
        "--alg",
        "HS256",
    ]);
    assert!(auth.verify(&stdout_token(&same), unix_now()).is_ok());
}

#[test]
fn an_inline_config_secret_is_used_and_never_shown() {
    let d = dir("inline");
    let good = write(
        &d,
        "good.toml",
        &format!("[auth]\njwt_secret = {SECRET:?}\n"),
    );
    let t = stdout_token(&token(&[
        "--config",
        good.to_str().unwrap(),
        "--session",
        "a",
        "--ttl",
        "1m",
    ]));
    assert!(verifier(AuthConfig::default())
        .verify(&t, unix_now())
        .is_ok());

    let bad = write(
        &d,
        "bad.toml",
        &format!("[auth]\njwt_secret = {SECRET:?}\nleeway = \"soon\"\n"),
    );
    let out = token(&[
        "--config",
        bad.to_str().unwrap(),
        "--session",
        "a",
        "--ttl",
        "1m",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.leeway"));
    assert_no_secret(&out);
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let d = dir("bad");
    let file = write(&d, "secret", SECRET);
    let f = file.to_str().unwrap();
    let short = write(&d, "short", &SECRET[..20]);
    let s = short.to_str().unwrap();
    let no_auth = write(&d, "plain.toml", "workers = 1\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--secret-file", f, "--ttl", "1h"], "--session"),
        (vec!["--secret-file", f, "--session", "s"], "--ttl"),
        (
            vec!["--secret-file", f, "--session", "a b", "--ttl", "1h"],
            "session",
        ),
        (
            vec!["--secret-file", f, "--session", "", "--ttl", "1h"],
            "session",
        ),
        (
            vec![
                "--secret-file",
                f,
                "--session",
                "s",
                "--role",
                "Admin",
                "--ttl",
                "1h",
            ],
            "role",
        ),
        (
            vec!["--secret-file", f, "--session", "s", "--ttl", "0s"],
            "at least 1s",
        ),
        (
            vec!["--secret-file", f, "--session", "s", "--ttl", "10"],
            "unit",
        ),
        (
            vec![
                "--secret-file",
                f,
                "--session",
                "s",
                "--ttl",
                "1h",
                "--alg",
                "RS256",
            ],
            "RS256",
        ),
        (
            vec![
                "--secret-file",
                f,
                "--session",
                "s",
                "--ttl",
                "1h",
                "--alg",
                "none",
            ],
            "none",
        ),
        (
            vec!["--secret-file", s, "--session", "s", "--ttl", "1h"],
            "at least 32",
        ),
        (
            vec![
                "--secret-file",
                "/nonexistent/rr-secret",
                "--session",
                "s",
                "--ttl",
                "1h",
            ],
            "cannot read",
        ),
        (vec!["--session", "s", "--ttl", "1h"], "no secret"),
        (
            vec![
                "--config",
                no_auth.to_str().unwrap(),
                "--session",
                "s",
                "--ttl",
                "1h",
            ],
            "no secret",
        ),
        (
            vec![
                "--config",
                "/nonexistent/rr.toml",
                "--session",
                "s",
                "--ttl",
                "1h",
            ],
            "--config",
        ),
    ];
    for (args, says) in cases {
        let out = token(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_no_secret(&out);
    }
}

/// The CLI never mints what its own server would refuse (401 token_lifetime_too_long). Before:
/// `--ttl 720h` printed a 30-day token and no server bounded its lifetime.
#[test]
fn ttl_is_bounded_by_the_servers_max_token_lifetime() {
    let d = dir("lifetime");
    let file = write(&d, "secret", SECRET);
    let f = file.to_str().unwrap();
    let mint = |extra: &[&str]| {
        let mut args = vec!["--session", "s"];
        args.extend_from_slice(extra);
        token(&args)
    };
    // Without --config: the server's default, 24 h.
    let out = mint(&["--secret-file", f, "--ttl", "720h"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ttl 720h")
            && err.contains("24h")
            && err.contains("auth.max_token_lifetime"),
        "{err}"
    );
    assert!(err.contains("--config"), "says how to go further: {err}");
    assert!(out.stdout.is_empty());
    assert_no_secret(&out);
    // A day is allowed, carries iat, and the default server accepts it.
    let t = stdout_token(&mint(&["--secret-file", f, "--ttl", "24h"]));
    let auth = verifier(AuthConfig::default());
    let claims = auth.verify(&t, unix_now()).unwrap();
    let payload = t.split('.').nth(1).unwrap();
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        payload["exp"].as_u64().unwrap() - payload["iat"].as_u64().unwrap(),
        24 * 3600
    );
    assert_eq!(claims.exp, payload["exp"].as_u64().unwrap());

    // With --config: that server's limit, longer or off.
    let month = write(&d, "month.toml", "[auth]\nmax_token_lifetime = \"720h\"\n");
    let m = month.to_str().unwrap();
    let t = stdout_token(&mint(&["--secret-file", f, "--config", m, "--ttl", "720h"]));
    let cfg = Config::load(Some(&month), &[], &CliOverrides::default()).unwrap();
    assert!(verifier(cfg.auth.clone()).verify(&t, unix_now()).is_ok());
    assert_eq!(
        verifier(AuthConfig::default()).verify(&t, unix_now()),
        Err(AuthError::LifetimeTooLong)
    );
    let out = mint(&["--secret-file", f, "--config", m, "--ttl", "721h"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in --config"));
    let off = write(&d, "off.toml", "[auth]\nmax_token_lifetime = \"0s\"\n");
    let o = off.to_str().unwrap();
    stdout_token(&mint(&[
        "--secret-file",
        f,
        "--config",
        o,
        "--ttl",
        "8760h",
    ]));
}

/// `--kid` writes the key id into the header; with `--config`, the secret is that key's from
/// `auth.keys`, and the server's verifier (built from the same config) picks it by the id.
#[test]
fn kid_names_a_key_of_the_config() {
    let d = dir("kid");
    let k1 = write(&d, "k1.key", "kid-one-secret-0123456789abcdefghijkl\n");
    let k2 = write(&d, "k2.key", "kid-two-secret-0123456789abcdefghijkl\n");
    let cfg_path = write(
        &d,
        "relay.toml",
        &format!(
            "[auth]\nkeys = [{{ kid = \"k1\", secret_file = \"{}\" }}, {{ kid = \"k2\", secret_file = \"{}\" }}]\n",
            k1.display(),
            k2.display()
        ),
    );
    let cfg_arg = cfg_path.to_str().unwrap();
    let out = token(&[
        "--config",
        cfg_arg,
        "--kid",
        "k2",
        "--session",
        "s",
        "--ttl",
        "1m",
    ]);
    assert_no_secret(&out);
    let t = stdout_token(&out);
    let header = t.split('.').next().unwrap();
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["kid"], "k2");
    let cfg = Config::load(Some(&cfg_path), &[], &CliOverrides::default()).unwrap();
    let auth = Authenticator::from_config(&cfg).unwrap().unwrap();
    assert!(auth.verify(&t, unix_now()).is_ok());
    // Without --kid there is no secret to pick: the config has keys only.
    let out = token(&["--config", cfg_arg, "--session", "s", "--ttl", "1m"]);
    assert_eq!(out.status.code(), Some(2));
    let out = token(&[
        "--config",
        cfg_arg,
        "--kid",
        "k9",
        "--session",
        "s",
        "--ttl",
        "1m",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("k9"));
}
