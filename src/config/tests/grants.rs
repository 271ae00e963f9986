//! `tls.client_grants`: its forms in the file and the environment, and each refusal naming
//! the key.

use super::*;

/// The TLS listener and client certificates that grants need, in the file and the
/// environment.
const TLS: &str = "[tls]\nlisten = \"127.0.0.1:0\"\nclient_auth = \"optional\"\n";
const TLS_ENV: [(&str, &str); 2] = [
    ("RINGRELAY_TLS_LISTEN", "127.0.0.1:0"),
    ("RINGRELAY_TLS_CLIENT_AUTH", "required"),
];

fn grants_of(toml: &str) -> Result<Vec<ClientGrant>, ConfigError> {
    load_toml(&format!("{TLS}client_grants = {toml}\n")).map(|c| c.tls.client_grants)
}

fn env_with(grants: &str) -> Result<Config, ConfigError> {
    let mut vars = TLS_ENV.to_vec();
    vars.push(("RINGRELAY_TLS_CLIENT_GRANTS", grants));
    load_env(&vars)
}

fn grant(subject: &str, sid: &str, role: Option<&str>) -> ClientGrant {
    ClientGrant {
        subject: subject.into(),
        sid: sid.into(),
        role: role.map(str::to_string),
    }
}

#[test]
fn the_file_and_the_environment_agree() {
    let from_file = grants_of(
        r#"[{ subject = "device-42", sid = "s42", role = "agent" }, { sid = "*", subject = "ops.example" }]"#,
    )
    .unwrap();
    assert_eq!(
        from_file,
        [
            grant("device-42", "s42", Some("agent")),
            grant("ops.example", "*", None)
        ]
    );
    let env = env_with(" device-42 = s42/agent ,ops.example=*").unwrap();
    assert_eq!(env.tls.client_grants, from_file);
    let again = Config::from_toml_str(
        &env.to_toml(),
        Path::new("printed"),
        &[],
        &CliOverrides::default(),
    );
    assert_eq!(again.unwrap().tls.client_grants, from_file);
    assert!(grants_of("[]").unwrap().is_empty());
}

#[test]
fn bad_grants_are_refused_naming_the_key() {
    let many: Vec<String> = (0..=MAX_CLIENT_GRANTS)
        .map(|i| format!(r#"{{ subject = "d{i}", sid = "s" }}"#))
        .collect();
    let many = format!("[{}]", many.join(", "));
    for (toml, why) in [
        (r#"[{ subject = "d", sid = "a b" }]"#, "sid is a session id"),
        (
            r#"[{ subject = "d", sid = "s", role = "Agent" }]"#,
            "role is 1 to 32",
        ),
        (r#"[{ subject = "", sid = "s" }]"#, "a subject is 1 to 255"),
        (
            r#"[{ subject = " d", sid = "s" }]"#,
            "a subject is 1 to 255",
        ),
        (
            r#"[{ subject = "d\n", sid = "s" }]"#,
            "a subject is 1 to 255",
        ),
        (r#"[{ sid = "s" }]"#, "needs subject"),
        (r#"[{ subject = "d" }]"#, "needs sid"),
        (
            r#"[{ subject = "d", sid = "s", kid = "x" }]"#,
            "unknown field",
        ),
        (r#"[{ subject = "d", sid = 1 }]"#, "sid is a string"),
        (r#""d=s""#, "expected a list like"),
        (many.as_str(), "at most 1024"),
    ] {
        let e = grants_of(toml).unwrap_err();
        assert_eq!(e.key(), Some("tls.client_grants"), "{toml}: {e}");
        assert!(e.to_string().contains(why), "{toml}: {e}");
    }
    let e = env_with("device-42").unwrap_err();
    assert!(e.to_string().contains("subject=sid"), "{e}");
}

#[test]
fn grants_need_the_tls_listener_asking_for_client_certificates() {
    let grant = "RINGRELAY_TLS_CLIENT_GRANTS";
    let e = load_env(&[(grant, "d=s")]).unwrap_err();
    assert_eq!(e.key(), Some("tls.client_grants"));
    assert!(e.to_string().contains("needs tls.listen"), "{e}");
    let e = load_env(&[("RINGRELAY_TLS_LISTEN", "127.0.0.1:0"), (grant, "d=s")]).unwrap_err();
    assert!(e.to_string().contains("tls.client_auth"), "{e}");
    assert!(env_with("d=s").is_ok());
}
