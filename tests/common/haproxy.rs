//! Debian's haproxy running the shipped haproxy/ringrelay.cfg, with only its bind and server
//! lines pointed at loopback, a quicker check interval, and the address it connects from.

use super::cluster::{free_port, wait_until};
use super::{connect, Ws};
use std::net::SocketAddr;
use std::time::Duration;

pub struct Haproxy {
    child: std::process::Child,
    pub addr: SocketAddr,
    config: std::path::PathBuf,
}

/// The address haproxy connects to the relays from in tests: the relays trust it.
pub const SOURCE: &str = "127.0.0.2";

impl Haproxy {
    /// In front of `nodes` (at most the three the shipped file lists); `None` when haproxy is
    /// not installed (a failure when RINGRELAY_REQUIRE_HAPROXY=1).
    pub fn start(nodes: &[SocketAddr]) -> Option<Haproxy> {
        let shipped = include_str!("../../haproxy/ringrelay.cfg");
        let port = free_port();
        let mut cfg = shipped.replace("bind *:80", &format!("bind 127.0.0.1:{port}"));
        assert!(
            nodes.len() <= 3,
            "the shipped config has three server lines"
        );
        for i in 0..3 {
            let sample = format!("10.0.0.1{}:8080", i + 1);
            assert!(cfg.contains(&sample), "the shipped config has {sample}");
            let line = format!("    server relay-{} {sample}\n", i + 1);
            cfg = match nodes.get(i) {
                Some(n) => cfg.replace(&sample, &n.to_string()),
                None => cfg.replace(&line, ""),
            };
        }
        // Health checks every 100 ms, so a stopped node is out of the pool quickly.
        let check = "check inter 2s fall 2 rise 2";
        assert!(cfg.contains(check), "the shipped config has {check}");
        cfg = cfg.replace(check, "check inter 100ms fall 1 rise 1");
        let backend = "backend relay_nodes\n";
        assert!(cfg.contains(backend));
        // A check's answer may take its time on a loaded machine (the default wait for it is
        // `inter`, 100 ms, and every node then looked down: 503); a stopped node still fails
        // its check at once, its connection refused.
        cfg = cfg.replace(
            backend,
            &format!("{backend}    source {SOURCE}\n    timeout check 2s\n"),
        );
        let config = std::env::temp_dir().join(format!(
            "ringrelay-haproxy-{}-{port}.cfg",
            std::process::id()
        ));
        std::fs::write(&config, cfg).unwrap();
        let Some(child) = spawn_haproxy(&config, port) else {
            let _ = std::fs::remove_file(&config);
            return None;
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Some(Haproxy {
            child,
            addr,
            config,
        })
    }

    pub fn connect(&self, path: &str) -> Ws {
        connect(&format!("ws://{}{path}", self.addr))
    }
}

/// Starts haproxy on `config` and waits until it listens on loopback `port`. `None`: there is
/// no haproxy and the run does not require it (`RINGRELAY_REQUIRE_HAPROXY=1` makes that a
/// failure), which the caller reports as a skip.
pub fn spawn_haproxy(config: &std::path::Path, port: u16) -> Option<std::process::Child> {
    let spawned = std::process::Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(_) if std::env::var("RINGRELAY_REQUIRE_HAPROXY").as_deref() != Ok("1") => {
            eprintln!("skipped: no haproxy (apt-get install haproxy)");
            return None;
        }
        Err(e) => panic!("haproxy is required here: {e}"),
    };
    wait_until(Duration::from_secs(5), "haproxy to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(child)
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// What a relay behind [`Haproxy`] is started with: PROXY protocol from the proxy's address.
pub const RELAY_ENV: [(&str, &str); 2] = [
    ("RINGRELAY_SECURITY_TRUSTED_PROXIES", SOURCE),
    ("RINGRELAY_SECURITY_CLIENT_IP_HEADER", "proxy-protocol"),
];
