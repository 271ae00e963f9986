use super::*;

/// Asserts the error names `key` (in `key()` and in the message) and contains `fragment`.
fn assert_names(err: &ConfigError, key: &str, fragment: &str) {
    assert_eq!(err.key(), Some(key), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(key), "message lacks {key}: {text}");
    assert!(
        text.contains(fragment),
        "message lacks {fragment:?}: {text}"
    );
}

#[test]
fn env_errors_name_the_key_and_the_variable() {
    let cases = [
        (
            "session.idle_timeout",
            "abc",
            "expected a duration like 500ms, 30s, 5m, 1h",
        ),
        ("session.idle_timeout", "9000h", "at most 8760h"),
        ("session.idle_timeout", "0s", "greater than 0s"),
        (
            "auth.max_token_lifetime",
            "500ms",
            "\"0s\" (off) or at least 1s",
        ),
        ("auth.max_token_lifetime", "9000h", "at most 8760h"),
        ("auth.max_token_lifetime", "1d", "expected a duration"),
        ("workers", "0", "between 1 and 1024"),
        ("workers", "1025", "between 1 and 1024"),
        ("workers", "four", "non-negative integer"),
        ("workers", "-1", "non-negative integer"),
        ("workers", "", "non-negative integer"),
        ("driver", "uring", "auto, io_uring, epoll"),
        ("listen", "localhost:8080", "expected an address"),
        ("admin_listen", "127.0.0.1", "expected an address"),
        ("shutdown_grace", "-1s", "negative"),
        ("limits.max_message_bytes", "124", "at least 125"),
        ("limits.handshake_timeout", "0s", "greater than 0s"),
        ("limits.max_header_bytes", "255", "between 256 and 1048576"),
        (
            "limits.max_header_bytes",
            "1048577",
            "between 256 and 1048576",
        ),
        ("limits.max_headers", "7", "between 8 and 1024"),
        ("limits.max_headers", "1025", "between 8 and 1024"),
        (
            "limits.read_buffer_bytes",
            "4095",
            "between 4096 and 16777216",
        ),
        (
            "limits.read_buffer_bytes",
            "16777217",
            "between 4096 and 16777216",
        ),
        ("limits.pool_buffers", "0", "between 1 and 1000000"),
        ("limits.pool_buffers", "1000001", "between 1 and 1000000"),
        ("limits.max_read_buffers", "0", "between 1 and 1000000"),
        ("limits.handoff_queue", "0", "between 1 and 1000000"),
        ("limits.handoff_queue", "1000001", "between 1 and 1000000"),
        (
            "limits.max_connections_per_worker",
            "0",
            "between 1 and 10000000",
        ),
        (
            "limits.max_connections_per_worker",
            "10000001",
            "between 1 and 10000000",
        ),
        ("session.ping_interval", "0s", "greater than 0s"),
        (
            "session.peer_timeout",
            "30s",
            "greater than session.ping_interval (30s)",
        ),
        (
            "session.peer_timeout",
            "5s",
            "greater than session.ping_interval",
        ),
        (
            "session.ping_interval",
            "2m",
            "less than session.peer_timeout (75s)",
        ),
        (
            "limits.blocked_write_grace",
            "1m",
            "shorter than limits.write_timeout (1m)",
        ),
        ("limits.blocked_write_grace", "0s", "greater than 0s"),
        (
            "limits.max_blocked_writes_per_ip",
            "1000001",
            "between 0 and 1000000",
        ),
        (
            "limits.max_blocked_writes_per_session",
            "-2",
            "non-negative integer",
        ),
        ("limits.pool_reserve_percent", "51", "between 0 and 50"),
        ("session.linger", "5", "missing unit"),
        ("session.buffer_bytes", "1MB", "non-negative integer"),
        ("session.close_timeout", "5 s", "expected a duration"),
        ("bridge.agent_role", "Agent", "[a-z0-9_-]"),
        ("bridge.agent_role", "", "1 to 32"),
        (
            "bridge.agent_role",
            "abcdefghijklmnopqrstuvwxyz0123456",
            "1 to 32",
        ),
        ("bridge.timeout", "0ms", "greater than 0s"),
        ("bridge.max_body_bytes", "-1", "non-negative integer"),
        ("bridge.allowed_methods", "get", "upper-case"),
        ("bridge.allowed_methods", "GET, PO ST", "upper-case"),
        ("bridge.max_in_flight", "0", "between 1 and"),
        (
            "bridge.allow_active_content",
            "sometimes",
            "expected true or false",
        ),
        ("bridge.pass_cookies", "2", "expected true or false"),
        ("auth.jwt_secret", "short", "at least 32 bytes"),
        ("auth.jwt_secret_file", "", "expected a file path"),
        (
            "security.allowed_origins",
            "https://a.example/",
            "trailing slash",
        ),
        ("security.allowed_origins", "https://a.example/app", "path"),
        (
            "security.allowed_origins",
            "https://*.example.com",
            "lone \"*\"",
        ),
        ("security.allowed_origins", "a.example", "not an origin"),
        ("security.allowed_origins", "null", "not an origin"),
        (
            "security.allowed_origins",
            "https://a.example,,https://b.example",
            "not an origin",
        ),
        ("security.allowed_origins", "https://", "not an origin"),
        ("log.level", "ringrelay=loud", "not a log filter"),
        ("log.level", " ", "expected a filter"),
        ("log.format", "xml", "text or json"),
        ("cluster.max_pending_links_per_ip", "0", "between 1 and"),
        ("cluster.max_pending_links", "0", "between 1 and"),
    ];
    for (key, value, fragment) in cases {
        let var = apply::env_var_name(key);
        let err = load_env(&[(&var, value)]).expect_err(&format!("{var}={value:?}"));
        assert_names(&err, key, fragment);
        assert!(err.to_string().contains(&var), "message lacks {var}: {err}");
    }
}

#[test]
fn secrets_are_never_echoed() {
    let err = load_env(&[("RINGRELAY_AUTH_JWT_SECRET", "hunter2")]).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    let err = load_toml("[auth]\njwt_secret = \"hunter2\"").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn cli_errors_name_the_key_and_the_flag() {
    let flags = [
        (
            "listen",
            "--listen",
            CliOverrides {
                listen: Some("nope".into()),
                ..Default::default()
            },
        ),
        (
            "admin_listen",
            "--admin-listen",
            CliOverrides {
                admin_listen: Some("nope".into()),
                ..Default::default()
            },
        ),
        (
            "workers",
            "--workers",
            CliOverrides {
                workers: Some("0".into()),
                ..Default::default()
            },
        ),
        (
            "driver",
            "--driver",
            CliOverrides {
                driver: Some("kqueue".into()),
                ..Default::default()
            },
        ),
    ];
    for (key, flag, cli) in flags {
        let err = Config::load(None, &[], &cli).unwrap_err();
        assert_names(&err, key, flag);
    }
}

#[test]
fn file_errors_name_the_key_and_the_file() {
    let cases = [
        ("workers = \"4\"", "workers", "expected an integer"),
        ("workers = 4.5", "workers", "expected an integer"),
        ("listen = 8080", "listen", "expected a string"),
        (
            "shutdown_grace = 10",
            "shutdown_grace",
            "strings with a unit",
        ),
        (
            "shutdown_grace = true",
            "shutdown_grace",
            "expected a duration",
        ),
        (
            "[session]\nidle_timeout = \"abc\"",
            "session.idle_timeout",
            "expected a duration",
        ),
        ("session = 5", "session", "expected a [session] table"),
        (
            "[limits]\nmax_message_bytes = -5",
            "limits.max_message_bytes",
            "must not be negative",
        ),
        (
            "[security]\nallowed_origins = \"*\"",
            "security.allowed_origins",
            "expected a list",
        ),
        (
            "[security]\nallowed_origins = [1]",
            "security.allowed_origins",
            "list of strings",
        ),
        ("[log]\nformat = \"JSON\"", "log.format", "text or json"),
        ("driver = \"IO_URING\"", "driver", "auto, io_uring, epoll"),
    ];
    for (text, key, fragment) in cases {
        let err = load_toml(text).expect_err(text);
        assert_names(&err, key, fragment);
        assert!(err.to_string().contains("config file"), "{err}");
        assert!(
            err.to_string().contains("ringrelay-config-test"),
            "no path: {err}"
        );
    }
}

#[test]
fn unknown_keys_are_refused_with_their_section() {
    let cases = [
        ("listn = \"127.0.0.1:1\"", "listn", Some("listen")),
        (
            "[session]\nidle_timout = \"5m\"",
            "session.idle_timout",
            Some("session.idle_timeout"),
        ),
        ("[sesion]\nidle_timeout = \"5m\"", "sesion", Some("session")),
        ("[session.extra]\nx = 1", "session.extra", None),
        ("[log]\ncolour = true", "log.colour", None),
        (
            "[limits]\nmax_message_size = 5",
            "limits.max_message_size",
            None,
        ),
        ("idle_timeout = \"5m\"", "idle_timeout", None),
        ("[server]\nlisten = \"127.0.0.1:1\"", "server", None),
    ];
    for (text, key, suggestion) in cases {
        let err = load_toml(text).expect_err(text);
        match &err {
            ConfigError::UnknownKey {
                key: k,
                suggestion: s,
                path,
            } => {
                assert_eq!(k, key);
                assert_eq!(s.as_deref(), suggestion, "{text}");
                assert!(path.to_string_lossy().contains("ringrelay-config-test"));
            }
            other => panic!("{text}: expected UnknownKey, got {other:?}"),
        }
        assert!(
            err.to_string().contains(&format!("unknown key {key} in ")),
            "{err}"
        );
    }
}

#[test]
fn toml_syntax_errors_carry_the_path_and_position() {
    let err = load_toml("listen = \n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("ringrelay-config-test"), "{text}");
    assert!(text.contains("line 1"), "{text}");
    assert_eq!(err.key(), None);

    let err = load_toml("workers = 2\nworkers = 3\n").unwrap_err();
    assert!(
        matches!(err, ConfigError::Parse { .. }),
        "duplicate keys: {err:?}"
    );
}

#[test]
fn a_missing_config_file_is_an_io_error() {
    let path = std::env::temp_dir().join("ringrelay-config-test-no-such-file.toml");
    let err = Config::load(Some(&path), &[], &CliOverrides::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Io { key: None, .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-file"), "{err}");
}

#[test]
fn cross_key_errors() {
    let err = load_env(&[("RINGRELAY_ADMIN_LISTEN", "127.0.0.1:8080")]).unwrap_err();
    assert_names(&err, "admin_listen", "same port as listen");
    let err = load_env(&[("RINGRELAY_LISTEN", "0.0.0.0:9090")]).unwrap_err();
    assert_names(&err, "admin_listen", "same port as listen (0.0.0.0:9090)");
    assert!(err.to_string().contains("the default"), "{err}");

    // Both secret keys, from different layers: refused, naming both.
    let file = TempFile::new(format!("[auth]\njwt_secret = \"{SECRET}\"").as_bytes());
    let vars = env(&[("RINGRELAY_AUTH_JWT_SECRET_FILE", "/run/secret")]);
    let err = Config::load(Some(file.path()), &vars, &CliOverrides::default()).unwrap_err();
    assert_names(&err, "auth.jwt_secret_file", "auth.jwt_secret");
    assert!(
        err.to_string().contains("RINGRELAY_AUTH_JWT_SECRET_FILE"),
        "{err}"
    );
    assert!(!err.to_string().contains(SECRET), "{err}");

    // PROXY protocol with nobody to believe it from.
    let err = load_env(&[("RINGRELAY_SECURITY_CLIENT_IP_HEADER", "proxy-protocol")]).unwrap_err();
    assert_names(
        &err,
        "security.client_ip_header",
        "security.trusted_proxies",
    );
    let ok = load_env(&[
        ("RINGRELAY_SECURITY_CLIENT_IP_HEADER", "PROXY-protocol"),
        ("RINGRELAY_SECURITY_TRUSTED_PROXIES", "10.0.0.0/8"),
    ]);
    assert_eq!(
        ok.unwrap().security.client_ip_header,
        ClientIpHeader::ProxyProtocol
    );
    let err = load_env(&[("RINGRELAY_SECURITY_CLIENT_IP_HEADER", "x-real-ip")]).unwrap_err();
    assert_names(&err, "security.client_ip_header", "proxy-protocol");

    // Address lists: each entry an address or a block of its family, the key named.
    for key in [
        "RINGRELAY_SECURITY_ALLOWED_CIDRS",
        "RINGRELAY_SECURITY_DENIED_CIDRS",
        "RINGRELAY_ADMIN_ALLOWED_CIDRS",
    ] {
        for bad in ["10.0.0.0/33", "::1/129", "example.com", "10.0.0.0/8, nope"] {
            let err = load_env(&[(key, bad)]).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={bad}: {err}");
        }
    }
    let both = load_env(&[(
        "RINGRELAY_SECURITY_DENIED_CIDRS",
        "10.0.0.0/8, 2001:db8::/32",
    )]);
    assert_eq!(both.unwrap().security.denied_cidrs.len(), 2);

    // A valid pair in different layers is fine.
    let c = load_env(&[
        ("RINGRELAY_SESSION_PING_INTERVAL", "2m"),
        ("RINGRELAY_SESSION_PEER_TIMEOUT", "5m"),
    ]);
    assert_eq!(format_duration(c.unwrap().session.peer_timeout), "5m");

    // A write timeout shorter than the default grace is fine (it is the bound then); a grace
    // set at or past it is refused, naming both keys.
    let c = load_env(&[("RINGRELAY_LIMITS_WRITE_TIMEOUT", "500ms")]).unwrap();
    assert_eq!(format_duration(c.limits.write_timeout), "500ms");
    let err = load_env(&[
        ("RINGRELAY_LIMITS_WRITE_TIMEOUT", "2s"),
        ("RINGRELAY_LIMITS_BLOCKED_WRITE_GRACE", "2s"),
    ])
    .unwrap_err();
    assert_names(
        &err,
        "limits.blocked_write_grace",
        "shorter than limits.write_timeout (2s)",
    );
}

#[test]
fn the_first_bad_value_stops_loading() {
    // Even an overridden bad value is reported: it is still a mistake in that layer.
    let file = TempFile::new(b"workers = 0");
    let vars = env(&[("RINGRELAY_WORKERS", "4")]);
    let err = Config::load(Some(file.path()), &vars, &CliOverrides::default()).unwrap_err();
    assert_names(&err, "workers", "config file");
}

#[test]
fn cluster_link_needs_a_secret_and_never_shows_it() {
    let err = load_toml(
        "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\ninternal_listen = \"127.0.0.1:7000\"",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cluster.internal_listen"), "{err}");
    assert!(err.contains("cluster.secret"), "{err}");
    let err = load_toml("[cluster]\nsecret = \"hunter2-but-short\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 32 bytes"), "{err}");
    assert!(!err.contains("hunter2"), "the secret is redacted: {err}");
    // A Redis URL the loader refuses is shown without its password.
    for text in [
        "[cluster]\nredis_url = \"http://ops:hunter2-pw@10.0.0.2\"",
        "[cluster]\nredis_url = \"tcp://:hunter2-pw@10.0.0.2\"",
    ] {
        let err = load_toml(text).unwrap_err().to_string();
        assert!(err.contains("cluster.redis_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("<redacted>"), "{err}");
    }
    let var = "RINGRELAY_CLUSTER_REDIS_URL";
    let err = load_env(&[(var, "ftp://:hunter2-pw@h")]).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    let err = load_toml("[cluster]\nsession_ttl = \"1s\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster.session_ttl"), "{err}");
}

#[test]
fn tls_errors_name_the_key_at_fault() {
    let cert = [
        ("RINGRELAY_TLS_CERT_FILE", "/etc/relay.pem"),
        ("RINGRELAY_TLS_KEY_FILE", "/etc/relay.key"),
    ];
    let same = [("RINGRELAY_TLS_LISTEN", "127.0.0.1:8080")];
    let err = load_env(&[&cert[..], &same[..]].concat()).unwrap_err();
    assert_names(&err, "tls.listen", "same port as listen");
    let err = load_env(&[("RINGRELAY_TLS_MIN_VERSION", "1.1")]).unwrap_err();
    assert_names(&err, "tls.min_version", "expected 1.2 or 1.3");
    let err = load_env(&[("RINGRELAY_TLS_CERTIFICATES", "a.pem")]).unwrap_err();
    assert_names(&err, "tls.certificates", "cert.pem:key.pem");
    let ok = load_env(&[&cert[..], &[("RINGRELAY_TLS_LISTEN", "127.0.0.1:8443")][..]].concat());
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn tls_certificates_read_from_a_table_array() {
    let toml = b"[tls]\ncertificates = [{ cert_file = \"a.pem\", key_file = \"a.key\" }, { key_file = \"b.key\", cert_file = \"b.pem\" }]\n";
    let file = TempFile::new(toml);
    let c = Config::load(Some(file.path()), &env(&[]), &CliOverrides::default()).unwrap();
    let files: Vec<_> = c
        .tls
        .certificates
        .iter()
        .map(|p| (p.cert_file.to_str().unwrap(), p.key_file.to_str().unwrap()))
        .collect();
    assert_eq!(files, [("a.pem", "a.key"), ("b.pem", "b.key")]);
    let bad =
        TempFile::new(b"[tls]\ncertificates = [{ cert_file = \"a.pem\", keyfile = \"a.key\" }]\n");
    let err = Config::load(Some(bad.path()), &env(&[]), &CliOverrides::default()).unwrap_err();
    assert_names(&err, "tls.certificates", "unknown key \"keyfile\"");
}

#[test]
fn cluster_tls_server_name_must_be_checkable() {
    let err = load_toml("[cluster]\ntls_server_name = \"not a name!\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster.tls_server_name"), "{err}");
    assert!(err.contains("DNS name or IP address"), "{err}");
    for ok in ["nodes.cluster.internal", "10.0.0.7", ""] {
        let c = load_toml(&format!("[cluster]\ntls_server_name = \"{ok}\"")).unwrap();
        assert_eq!(c.cluster.tls_server_name, ok);
    }
}

#[test]
fn cluster_mode_needs_the_cluster_feature() {
    let r = load_toml("[cluster]\nredis_url = \"rediss://:hunter2-pw@127.0.0.1:6380\"");
    if cfg!(feature = "cluster") {
        // `rediss://` is TLS on the redis crate's rustls: accepted like `redis://`.
        assert!(r.is_ok(), "{:?}", r.err());
        return;
    }
    // Before: a build without the Redis client would have started as a single node.
    let err = r.unwrap_err().to_string();
    assert!(err.contains("cluster.redis_url"), "{err}");
    assert!(err.contains("`cluster` cargo feature"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
