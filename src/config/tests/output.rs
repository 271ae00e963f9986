use super::*;

fn reload(text: &str) -> Config {
    load_toml(text).unwrap_or_else(|e| panic!("{e}\n--- to_toml gave ---\n{text}"))
}

#[test]
fn defaults_round_trip() {
    let c = Config::default();
    assert_eq!(reload(&c.to_toml()), c);
}

#[test]
fn every_changed_key_round_trips() {
    let c = everything_changed();
    let text = c.to_toml();
    assert_eq!(reload(&text), c);
    // And the output is stable: printing the reloaded config gives the same text.
    assert_eq!(reload(&text).to_toml(), text);
}

#[test]
fn durations_are_written_as_readable_strings() {
    let text = everything_changed().to_toml();
    for line in [
        "shutdown_grace = \"3s\"",
        "handshake_timeout = \"2500ms\"",
        "idle_timeout = \"1h\"",
        "linger = \"0s\"",
        "close_timeout = \"500ms\"",
        "timeout = \"90s\"",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let text = Config::default().to_toml();
    for line in [
        "idle_timeout = \"30m\"",
        "linger = \"5m\"",
        "peer_timeout = \"75s\"",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn output_is_sectioned_like_the_docs() {
    let text = Config::default().to_toml();
    let order: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        order,
        [
            "[limits]",
            "[session]",
            "[bridge]",
            "[cors]",
            "[auth]",
            "[security]",
            "[tls]",
            "[admin]",
            "[admin_tls]",
            "[log]",
            "[stats]",
            "[cluster]",
            "[demo]",
            "[tunnel]",
            "[proxy]"
        ]
    );
    assert!(text.starts_with("listen = \"127.0.0.1:8080\"\n"), "{text}");
    assert!(text.contains("\nallowed_origins = [\"*\"]\n"), "{text}");
}

#[test]
fn the_inline_secret_is_not_printed() {
    let c = load_env(&[("RINGRELAY_AUTH_JWT_SECRET", SECRET)]).unwrap();
    let text = c.to_toml();
    assert!(!text.contains(SECRET), "{text}");
    assert!(
        text.contains("# jwt_secret is set but not printed"),
        "{text}"
    );
    let back = reload(&text);
    assert_eq!(back.auth.jwt_secret, None);
    let mut without_secret = c;
    without_secret.auth.jwt_secret = None;
    assert_eq!(back, without_secret);
}

#[test]
fn the_redis_password_is_not_printed() {
    for (url, shown) in [
        (
            "redis://ops:hunter2-pw@10.0.0.2:6379/0",
            "redis://ops:<redacted>@10.0.0.2:6379/0",
        ),
        (
            "redis://:hunter2-pw@10.0.0.2",
            "redis://:<redacted>@10.0.0.2",
        ),
        (
            "unix:///run/redis.sock?pass=hunter2-pw",
            "unix:///run/redis.sock?pass=<redacted>",
        ),
    ] {
        let c = load_env(&[("RINGRELAY_CLUSTER_REDIS_URL", url)]).unwrap();
        let text = c.to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("# the password in redis_url is not printed\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("\nredis_url = \"{shown}\"\n")),
            "{text}"
        );
        // Still a config the loader takes, with the placeholder where the password was.
        assert_eq!(reload(&text).cluster.redis_url.as_deref(), Some(shown));
    }
    let plain = load_env(&[("RINGRELAY_CLUSTER_REDIS_URL", "redis://10.0.0.2:6379")]).unwrap();
    assert!(!plain.to_toml().contains("not printed"));
}

#[test]
fn awkward_strings_are_quoted() {
    let mut c = Config::default();
    c.auth.jwt_secret_file = Some("/tmp/a \"quoted\" \\ back\tslash/ünï".into());
    c.security.allowed_origins = vec![];
    assert_eq!(reload(&c.to_toml()), c);
}
