//! Verifies the binary's command line: config errors exit 2 naming the key, `--print-config`
//! round-trips, and systemd's READY=1/STOPPING=1 arrive on NOTIFY_SOCKET.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let out = bin()
        .args(["serve", "--print-config"])
        .env("RINGRELAY_SESSION_IDLE_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("session.idle_timeout") && err.contains("RINGRELAY_SESSION_IDLE_TIMEOUT"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("rr-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[limits]\nmax_mesage_bytes = 10\n").unwrap();
    let out = bin()
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_mesage_bytes"));

    let out = bin()
        .args(["--workers", "0", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workers"));
}

#[test]
fn print_config_shows_defaults_and_overrides_and_reads_back() {
    let out = bin()
        .args(["serve", "--print-config", "--listen", "127.0.0.1:7000"])
        .env("RINGRELAY_LIMITS_MAX_MESSAGE_BYTES", "4096")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["listen"].as_str(), Some("127.0.0.1:7000"));
    assert_eq!(v["admin_listen"].as_str(), Some("127.0.0.1:9090"));
    assert_eq!(v["limits"]["max_message_bytes"].as_integer(), Some(4096));
    assert_eq!(v["session"]["idle_timeout"].as_str(), Some("30m"));
    let dir = std::env::temp_dir().join(format!("rr-cli-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("printed.toml");
    std::fs::write(&file, &text).unwrap();
    let again = bin()
        .args(["--print-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        text,
        "the printed config loads back unchanged"
    );
}

#[test]
fn print_config_never_shows_the_redis_password_or_the_cluster_secret() {
    let secret = "cluster-secret-of-more-than-32-bytes!";
    let out = bin()
        .args(["serve", "--print-config"])
        .env(
            "RINGRELAY_CLUSTER_REDIS_URL",
            "redis://ops:hunter2-pw@10.0.0.2:6379/0",
        )
        .env("RINGRELAY_CLUSTER_SECRET", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Before: `redis_url = "redis://ops:hunter2-pw@10.0.0.2:6379/0"` was printed as given.
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(secret), "{text}");
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(
        v["cluster"]["redis_url"].as_str(),
        Some("redis://ops:<redacted>@10.0.0.2:6379/0")
    );
    assert!(text.contains("# the password in redis_url is not printed"));
    assert!(text.contains("# secret is set but not printed"));
}

#[test]
fn cluster_status_never_shows_the_redis_password() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("redis://:hunter2-pw@127.0.0.1:{port}");
    // Before: "ringrelay cluster status: redis://:hunter2-pw@127.0.0.1:...: Connection refused".
    let by_flag = bin()
        .args(["cluster", "status", "--redis", &url])
        .env_remove("RINGRELAY_CLUSTER_REDIS_URL")
        .output()
        .unwrap();
    // The URL may also come from the environment, where `ps` does not show it.
    let by_env = bin()
        .args(["cluster", "status"])
        .env("RINGRELAY_CLUSTER_REDIS_URL", &url)
        .output()
        .unwrap();
    for out in [by_flag, by_env] {
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            err.contains(&format!("redis://:<redacted>@127.0.0.1:{port}")),
            "{err}"
        );
    }
}

#[test]
fn systemd_is_told_ready_then_stopping() {
    let dir = std::env::temp_dir().join(format!("rr-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "2",
        ])
        .env("NOTIFY_SOCKET", &path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // SAFETY: kill(2) on the pid of our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // The supervisor's status lines (server::watchdog) may come first.
    let stopping = std::iter::repeat_with(|| {
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .take(10)
    .find(|m| !m.starts_with("STATUS="));
    assert!(stopping.is_some_and(|m| m.contains("STOPPING=1")));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_second_relay_on_the_same_port_refuses_to_start() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let listen = format!("127.0.0.1:{port}");
    let mut first = bin()
        .args([
            "--listen",
            &listen,
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(first.stderr.take().unwrap()));
    assert!(lines.any(|l| l.unwrap().contains("ringrelay listening")));
    let second = bin()
        .args(["--listen", &listen, "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains(&listen));
    // SAFETY: kill(2) on the pid of our own unreaped child.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    assert_eq!(first.wait().unwrap().code(), Some(0));
}
