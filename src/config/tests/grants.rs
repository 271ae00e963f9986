//! `tls.client_grants`: its forms in the file and the environment, and each refusal naming
//! the key.

use super::*;

fn grants_of(toml: &str) -> Result<Vec<ClientGrant>, ConfigError> {
    load_toml(&format!("[tls]\nclient_grants = {toml}\n")).map(|c| c.tls.client_grants)
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
    let env = load_env(&[(
        "RINGRELAY_TLS_CLIENT_GRANTS",
        " device-42 = s42/agent ,ops.example=*",
    )])
    .unwrap();
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
    let e = load_env(&[("RINGRELAY_TLS_CLIENT_GRANTS", "device-42")]).unwrap_err();
    assert!(e.to_string().contains("subject=sid"), "{e}");
}
