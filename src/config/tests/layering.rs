use std::time::Duration;

use super::*;

#[test]
fn file_then_env_then_cli() {
    let file = TempFile::new(
        br#"
listen = "127.0.0.1:1111"
workers = 2
driver = "io_uring"
[session]
idle_timeout = "1m"
[log]
level = "warn"
"#,
    );
    let vars = env(&[
        ("RINGRELAY_LISTEN", "127.0.0.1:2222"),
        ("RINGRELAY_WORKERS", "3"),
        ("RINGRELAY_SESSION_IDLE_TIMEOUT", "2m"),
    ]);
    let cli = CliOverrides {
        listen: Some("127.0.0.1:3333".into()),
        driver: Some("epoll".into()),
        ..CliOverrides::default()
    };

    let only_file = Config::load(Some(file.path()), &[], &CliOverrides::default()).unwrap();
    assert_eq!(only_file.listen.port(), 1111);
    assert_eq!(only_file.workers, 2);
    assert_eq!(only_file.driver, DriverChoice::IoUring);
    assert_eq!(only_file.session.idle_timeout, Duration::from_secs(60));

    let file_env = Config::load(Some(file.path()), &vars, &CliOverrides::default()).unwrap();
    assert_eq!(file_env.listen.port(), 2222);
    assert_eq!(file_env.workers, 3);
    assert_eq!(file_env.driver, DriverChoice::IoUring);
    assert_eq!(file_env.session.idle_timeout, Duration::from_secs(120));

    let all = Config::load(Some(file.path()), &vars, &cli).unwrap();
    assert_eq!(all.listen.port(), 3333);
    assert_eq!(all.workers, 3);
    assert_eq!(all.driver, DriverChoice::Epoll);
    assert_eq!(all.session.idle_timeout, Duration::from_secs(120));
    // Untouched keys keep the file's value, or the default.
    assert_eq!(all.log.level, "warn");
    assert_eq!(all.admin_listen, Config::default().admin_listen);
}

#[test]
fn cli_flags_each_apply() {
    let cli = CliOverrides {
        listen: Some("[::]:8443".into()),
        admin_listen: Some("127.0.0.1:9191".into()),
        workers: Some("7".into()),
        driver: Some("io_uring".into()),
    };
    let c = Config::load(None, &env(&[("RINGRELAY_WORKERS", "5")]), &cli).unwrap();
    assert_eq!(c.listen.to_string(), "[::]:8443");
    assert_eq!(c.admin_listen.port(), 9191);
    assert_eq!(c.workers, 7);
    assert_eq!(c.driver, DriverChoice::IoUring);
}

#[test]
fn every_key_has_an_environment_variable() {
    let default = Config::default();
    for key in apply::KEYS {
        let var = apply::env_var_name(key);
        let mut vars = vec![(var.as_str(), sample(key))];
        if *key == "tls.client_grants" {
            // Grants need the TLS listener asking for client certificates (validate.rs).
            vars.extend([
                ("RINGRELAY_TLS_LISTEN", "127.0.0.1:0"),
                ("RINGRELAY_TLS_CLIENT_AUTH", "optional"),
            ]);
        }
        let c = load_env(&vars).unwrap_or_else(|e| panic!("{var}: {e}"));
        assert_ne!(c, default, "{var} changed nothing");
    }
    assert_eq!(
        apply::env_var_name("session.idle_timeout"),
        "RINGRELAY_SESSION_IDLE_TIMEOUT"
    );
    assert_eq!(apply::env_var_name("workers"), "RINGRELAY_WORKERS");
    assert_eq!(
        apply::env_var_name("limits.max_message_bytes"),
        "RINGRELAY_LIMITS_MAX_MESSAGE_BYTES"
    );
}

#[test]
fn env_values_parse_like_the_file() {
    let c = everything_changed();
    assert_eq!(c.session.close_timeout, Duration::from_millis(500));
    assert_eq!(c.limits.handshake_timeout, Duration::from_millis(2500));
    assert_eq!(
        c.security.allowed_origins,
        vec![
            "https://a.example".to_string(),
            "http://localhost:3000".to_string()
        ]
    );
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.bridge.agent_role, "bot_2");
    // Surrounding spaces are tolerated for typed values.
    let c = load_env(&[("RINGRELAY_WORKERS", " 4 ")]).unwrap();
    assert_eq!(c.workers, 4);
}

#[test]
fn origins_from_env_are_comma_separated_and_lower_cased() {
    let c = load_env(&[(
        "RINGRELAY_SECURITY_ALLOWED_ORIGINS",
        "HTTPS://App.Example.com ,*",
    )]);
    assert_eq!(
        c.unwrap().security.allowed_origins,
        vec!["https://app.example.com", "*"]
    );
    let c = load_env(&[("RINGRELAY_SECURITY_ALLOWED_ORIGINS", "")]).unwrap();
    assert!(
        c.security.allowed_origins.is_empty(),
        "empty means no browser origin"
    );
    let c = load_toml("[security]\nallowed_origins = [\"https://[::1]:8443\", \"app://x\"]");
    assert_eq!(
        c.unwrap().security.allowed_origins,
        vec!["https://[::1]:8443", "app://x"]
    );
}

#[test]
fn unknown_and_reserved_variables_are_ignored() {
    let vars = env(&[
        ("RINGRELAY_CONFIG", "/etc/ringrelay/ringrelay.toml"),
        ("RINGRELAY_SESION_IDLE_TIMEOUT", "1m"),
        ("RINGRELAY_", "x"),
        ("ringrelay_workers", "3"),
        ("PATH", "/usr/bin"),
    ]);
    let c = Config::load(None, &vars, &CliOverrides::default()).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(
        ignored_env_vars(&vars),
        vec![
            "RINGRELAY_SESION_IDLE_TIMEOUT".to_string(),
            "RINGRELAY_".to_string()
        ]
    );
    assert!(ignored_env_vars(&env(&[("RINGRELAY_WORKERS", "2")])).is_empty());
}

#[test]
fn the_last_duplicate_variable_wins() {
    let c = load_env(&[("RINGRELAY_WORKERS", "2"), ("RINGRELAY_WORKERS", "5")]).unwrap();
    assert_eq!(c.workers, 5);
}

#[test]
fn range_bounds_are_inclusive() {
    let ok = [
        ("RINGRELAY_WORKERS", "1"),
        ("RINGRELAY_WORKERS", "1024"),
        ("RINGRELAY_LIMITS_MAX_MESSAGE_BYTES", "125"),
        ("RINGRELAY_LIMITS_MAX_HEADER_BYTES", "256"),
        ("RINGRELAY_LIMITS_MAX_HEADER_BYTES", "1048576"),
        ("RINGRELAY_LIMITS_MAX_HEADERS", "8"),
        ("RINGRELAY_LIMITS_MAX_HEADERS", "1024"),
        ("RINGRELAY_LIMITS_READ_BUFFER_BYTES", "4096"),
        ("RINGRELAY_LIMITS_READ_BUFFER_BYTES", "16777216"),
        ("RINGRELAY_LIMITS_POOL_BUFFERS", "1"),
        ("RINGRELAY_LIMITS_POOL_BUFFERS", "1000000"),
        ("RINGRELAY_LIMITS_HANDOFF_QUEUE", "1"),
        ("RINGRELAY_LIMITS_HANDOFF_QUEUE", "1000000"),
        ("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_WORKER", "1"),
        ("RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_WORKER", "10000000"),
        ("RINGRELAY_SESSION_LINGER", "8760h"),
        ("RINGRELAY_SHUTDOWN_GRACE", "0s"),
        ("RINGRELAY_SESSION_CLOSE_TIMEOUT", "0s"),
        (
            "RINGRELAY_BRIDGE_AGENT_ROLE",
            "abcdefghijklmnopqrstuvwxyz012345",
        ),
    ];
    for (var, value) in ok {
        load_env(&[(var, value)]).unwrap_or_else(|e| panic!("{var}={value}: {e}"));
    }
}

#[test]
fn listeners_may_share_a_port_on_different_addresses() {
    let c = load_env(&[("RINGRELAY_ADMIN_LISTEN", "127.0.0.2:8080")]).unwrap();
    assert_eq!(c.admin_listen.port(), 8080);
    let ok = [
        ("0.0.0.0:8080", "[::1]:8080"),
        ("127.0.0.1:8080", "[::]:8081"),
    ];
    let clash = [
        ("0.0.0.0:8080", "127.0.0.1:8080"),
        ("[::]:8080", "127.0.0.1:8080"),
        ("127.0.0.1:8080", "[::]:8080"),
        ("[::1]:8080", "[::1]:8080"),
        ("[::]:8080", "[::1]:8080"),
    ];
    for (listen, admin) in ok.into_iter().chain(clash) {
        let vars = [
            ("RINGRELAY_LISTEN", listen),
            ("RINGRELAY_ADMIN_LISTEN", admin),
        ];
        let result = load_env(&vars);
        let want_ok = ok.contains(&(listen, admin));
        assert_eq!(result.is_ok(), want_ok, "{listen} / {admin}: {result:?}");
    }
    let cli = CliOverrides {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        ..CliOverrides::default()
    };
    Config::load(None, &[], &cli).expect("port 0 never conflicts");
}

#[test]
fn jwt_secret_sources() {
    assert_eq!(Config::default().jwt_secret().unwrap(), None);

    let c = load_env(&[("RINGRELAY_AUTH_JWT_SECRET", SECRET)]).unwrap();
    assert_eq!(c.jwt_secret().unwrap(), Some(SECRET.as_bytes().to_vec()));

    for contents in [
        format!("{SECRET}\n"),
        format!("{SECRET}\r\n"),
        SECRET.to_string(),
    ] {
        let file = TempFile::new(contents.as_bytes());
        let var = file.path().to_str().unwrap();
        let c = load_env(&[("RINGRELAY_AUTH_JWT_SECRET_FILE", var)]).unwrap();
        assert_eq!(c.auth.jwt_secret_file.as_deref(), Some(file.path()));
        assert_eq!(c.jwt_secret().unwrap(), Some(SECRET.as_bytes().to_vec()));
    }

    // Only trailing line ends go; binary secrets and inner newlines are kept.
    let raw: Vec<u8> = (0u8..=255).chain([b'\n']).collect();
    let file = TempFile::new(&raw);
    let text = format!(
        "[auth]\njwt_secret_file = {:?}",
        file.path().to_str().unwrap()
    );
    let c = load_toml(&text).unwrap();
    assert_eq!(
        c.jwt_secret().unwrap(),
        Some((0u8..=255).collect::<Vec<u8>>())
    );
}

#[test]
fn jwt_secret_file_errors_name_the_key() {
    let missing = std::env::temp_dir().join("ringrelay-config-test-does-not-exist");
    let c = load_env(&[("RINGRELAY_AUTH_JWT_SECRET_FILE", missing.to_str().unwrap())]).unwrap();
    let err = c.jwt_secret().unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert_eq!(err.key(), Some("auth.jwt_secret_file"));
    assert!(err.to_string().contains("auth.jwt_secret_file"), "{err}");
    assert!(err.to_string().contains("does-not-exist"), "{err}");

    let short = TempFile::new(b"too-short\n");
    let c = load_env(&[(
        "RINGRELAY_AUTH_JWT_SECRET_FILE",
        short.path().to_str().unwrap(),
    )]);
    let err = c.unwrap().jwt_secret().unwrap_err();
    assert_eq!(err.key(), Some("auth.jwt_secret_file"));
    assert!(err.to_string().contains("at least 32"), "{err}");
    assert!(
        !err.to_string().contains("too-short"),
        "secret leaked: {err}"
    );

    let mut both = Config::default();
    both.auth.jwt_secret = Some(SECRET.into());
    both.auth.jwt_secret_file = Some(short.path().to_path_buf());
    assert_eq!(
        both.jwt_secret().unwrap_err().key(),
        Some("auth.jwt_secret_file")
    );
}

#[test]
fn debug_output_hides_the_secret() {
    let c = load_env(&[("RINGRELAY_AUTH_JWT_SECRET", SECRET)]).unwrap();
    let shown = format!("{c:?} {:#?}", c.auth);
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn debug_output_hides_the_cluster_secret_and_the_redis_password() {
    let c = load_env(&[
        ("RINGRELAY_CLUSTER_SECRET", SECRET),
        (
            "RINGRELAY_CLUSTER_REDIS_URL",
            "redis://ops:hunter2-pw@10.0.0.2:6379/0",
        ),
    ])
    .unwrap();
    // Before: the derived Debug printed both as they were.
    let shown = format!("{c:?} {:#?}", c.cluster);
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("secret: Some(\"<redacted>\")"), "{shown}");
    assert!(
        shown.contains("redis://ops:<redacted>@10.0.0.2:6379/0"),
        "{shown}"
    );
    // Written by hand, so it must keep up with the struct: every cluster key is shown.
    for key in apply::KEYS
        .iter()
        .filter_map(|k| k.strip_prefix("cluster."))
    {
        assert!(
            shown.contains(&format!("{key}: ")),
            "Debug lacks {key}: {shown}"
        );
    }
}

#[test]
fn text_loads_as_its_file_would() {
    let text = "workers = 2\n[auth]\nleeway = \"5s\"\n";
    let file = TempFile::new(text.as_bytes());
    let env = env(&[("RINGRELAY_AUTH_ISSUER", "ops")]);
    let cli = CliOverrides::default();
    let from_file = Config::load(Some(file.path()), &env, &cli).unwrap();
    let from_text = Config::from_toml_str(text, file.path(), &env, &cli).unwrap();
    assert_eq!(from_text, from_file);
    assert_eq!(from_text.auth.issuer.as_deref(), Some("ops"));
    let err = Config::from_toml_str("[auth\n", Path::new("inline.toml"), &[], &cli).unwrap_err();
    assert!(err.to_string().contains("inline.toml"), "{err}");
}

/// `PORT` (hosting platforms) puts the public listener on every address at that port, below
/// every other layer. Before: it was ignored and the relay listened on 127.0.0.1:8080, where
/// the platform's router could not reach it.
#[test]
fn hosting_port_is_the_lowest_layer() {
    let port = |vars: &[(&str, &str)], cli: &CliOverrides| {
        Config::load(None, &env(vars), cli).map(|c| c.listen.to_string())
    };
    let none = CliOverrides::default();
    assert_eq!(port(&[("PORT", "10000")], &none).unwrap(), "0.0.0.0:10000");
    assert_eq!(port(&[], &none).unwrap(), "127.0.0.1:8080");
    let both = [("PORT", "10000"), ("RINGRELAY_LISTEN", "127.0.0.1:2222")];
    assert_eq!(port(&both, &none).unwrap(), "127.0.0.1:2222");
    let flag = CliOverrides {
        listen: Some("127.0.0.1:3333".into()),
        ..CliOverrides::default()
    };
    assert_eq!(port(&[("PORT", "10000")], &flag).unwrap(), "127.0.0.1:3333");
    let file = TempFile::new(b"listen = \"127.0.0.1:1111\"\n");
    let c = Config::load(Some(file.path()), &env(&[("PORT", "10000")]), &none).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:1111");
    // Garbage is an error naming PORT, unless another layer made it moot.
    for bad in ["0", "65536", "http", ""] {
        let e = port(&[("PORT", bad)], &none).unwrap_err().to_string();
        assert!(e.contains("PORT") && e.contains("listen"), "{bad:?}: {e}");
    }
    assert!(port(&[("PORT", "x"), ("RINGRELAY_LISTEN", "127.0.0.1:2")], &none).is_ok());
}

/// A CORS origin that `security.allowed_origins` refuses could never work (its preflight
/// answered, every request after it 403): refused at load, naming the key.
#[test]
fn cors_origins_must_pass_the_security_origins() {
    let none = CliOverrides::default();
    let ok = env(&[("RINGRELAY_CORS_ALLOWED_ORIGINS", "https://App.example, *")]);
    let c = Config::load(None, &ok, &none).unwrap();
    assert_eq!(c.cors.allowed_origins, ["https://app.example", "*"]);
    let listed = env(&[
        ("RINGRELAY_SECURITY_ALLOWED_ORIGINS", "https://app.example"),
        ("RINGRELAY_CORS_ALLOWED_ORIGINS", "https://APP.example"),
    ]);
    assert!(Config::load(None, &listed, &none).is_ok());
    let lost = env(&[
        ("RINGRELAY_SECURITY_ALLOWED_ORIGINS", "https://app.example"),
        (
            "RINGRELAY_CORS_ALLOWED_ORIGINS",
            "https://app.example, https://other.example",
        ),
    ]);
    let e = Config::load(None, &lost, &none).unwrap_err();
    assert_eq!(e.key(), Some("cors.allowed_origins"));
    assert!(e.to_string().contains("https://other.example"), "{e}");
    let bad = env(&[("RINGRELAY_CORS_ALLOWED_HEADERS", "content type")]);
    let e = Config::load(None, &bad, &none).unwrap_err();
    assert_eq!(e.key(), Some("cors.allowed_headers"));
}
