//! `auth.keys`, the one table-of-tables key: its forms in the file and the environment, and
//! each refusal naming the key.

use super::*;

fn keys_of(toml: &str) -> Result<Vec<AuthKey>, ConfigError> {
    load_toml(&format!("[auth]\nkeys = {toml}\n")).map(|c| c.auth.keys)
}

fn key(kid: &str, path: &str) -> AuthKey {
    AuthKey {
        kid: kid.into(),
        secret_file: path.into(),
    }
}

#[test]
fn the_file_and_the_environment_agree() {
    let from_file =
        keys_of(r#"[{ kid = "k1", secret_file = "/a" }, { secret_file = "/b c", kid = "k.2" }]"#)
            .unwrap();
    assert_eq!(from_file, [key("k1", "/a"), key("k.2", "/b c")]);
    let from_env = load_env(&[("RINGRELAY_AUTH_KEYS", " k1 = /a ,k.2=/b c")]).unwrap();
    assert_eq!(from_env.auth.keys, from_file);
    assert!(load_env(&[("RINGRELAY_AUTH_KEYS", "")])
        .unwrap()
        .auth
        .keys
        .is_empty());
    assert!(keys_of("[]").unwrap().is_empty());
}

#[test]
fn print_config_writes_them_back() {
    let cfg = load_env(&[("RINGRELAY_AUTH_KEYS", "k1=/run/k1, k2=/run/k \"2\"")]).unwrap();
    let text = cfg.to_toml();
    assert!(
        text.contains(r#"keys = [{ kid = "k1", secret_file = "/run/k1" }, { kid = "k2", "#),
        "{text}"
    );
    let again = Config::from_toml_str(&text, Path::new("printed"), &[], &CliOverrides::default());
    assert_eq!(again.unwrap().auth.keys, cfg.auth.keys);
}

#[test]
fn bad_keys_are_refused_naming_the_key() {
    let nine: Vec<String> = (0..9)
        .map(|i| format!(r#"{{ kid = "k{i}", secret_file = "/k{i}" }}"#))
        .collect();
    let nine = format!("[{}]", nine.join(", "));
    for (toml, why) in [
        (
            r#"[{ kid = "a", secret_file = "/a" }, { kid = "a", secret_file = "/b" }]"#,
            "twice",
        ),
        (r#"[{ kid = "a b", secret_file = "/a" }]"#, "kid is 1 to 64"),
        (r#"[{ kid = "", secret_file = "/a" }]"#, "kid is 1 to 64"),
        (r#"[{ kid = "a" }]"#, "needs secret_file"),
        (r#"[{ secret_file = "/a" }]"#, "needs kid"),
        (r#"[{ kid = "a", secret_file = "" }]"#, "empty secret_file"),
        (
            r#"[{ kid = "a", secret_file = "/a", secret = "x" }]"#,
            "unknown field",
        ),
        (r#"[{ kid = 1, secret_file = "/a" }]"#, "needs kid"),
        (r#"["k1=/a"]"#, "expected a list like"),
        (r#""k1=/a""#, "expected a list like"),
        (nine.as_str(), "at most 8"),
    ] {
        let e = keys_of(toml).unwrap_err();
        assert_eq!(e.key(), Some("auth.keys"), "{toml}: {e}");
        assert!(e.to_string().contains(why), "{toml}: {e}");
    }
    let e = load_env(&[("RINGRELAY_AUTH_KEYS", "k1")]).unwrap_err();
    assert!(e.to_string().contains("kid=path"), "{e}");
}

#[test]
fn key_files_are_read_like_the_secret_file() {
    let good = TempFile::new(b"0123456789abcdef0123456789abcdef\r\n");
    let short = TempFile::new(b"too short\n");
    let keys = format!(
        r#"[{{ kid = "g", secret_file = "{}" }}]"#,
        good.path().display()
    );
    let cfg = load_toml(&format!("[auth]\nkeys = {keys}\n")).unwrap();
    let read = cfg.jwt_keys().unwrap();
    assert_eq!(
        read,
        [(
            Some("g".to_string()),
            b"0123456789abcdef0123456789abcdef".to_vec()
        )]
    );
    let keys = format!(
        r#"[{{ kid = "s", secret_file = "{}" }}]"#,
        short.path().display()
    );
    let cfg = load_toml(&format!("[auth]\nkeys = {keys}\n")).unwrap();
    let e = cfg.jwt_keys().unwrap_err();
    assert_eq!(e.key(), Some("auth.keys"));
    assert!(e.to_string().contains("at least 32"), "{e}");
    assert!(
        !e.to_string().contains("too short"),
        "the contents are never shown: {e}"
    );
}
