//! A real redis-server for the cluster tests, nodes of a fleet on it, and reading the fleet
//! back.

use super::TestServer;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// A fresh redis-server on `port` (a free one when `None`); `None` when there is none.
    pub fn start(port: Option<u16>) -> Option<Redis> {
        let port = port.unwrap_or_else(free_port);
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(_) if std::env::var("RINGRELAY_REQUIRE_REDIS").as_deref() != Ok("1") => {
                eprintln!("skipped: no redis-server (apt-get install redis-server)");
                return None;
            }
            Err(e) => panic!("redis-server is required here: {e}"),
        };
        let r = Redis { child, port };
        wait_until(Duration::from_secs(5), "redis-server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ringrelay cluster status --json`: the node ids and regions registered.
pub fn fleet(url: &str, prefix: &str) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args([
            "cluster", "status", "--redis", url, "--prefix", prefix, "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_string(),
                n["region"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

impl Redis {
    /// One command's answer, through the redis crate.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        cmd.query(&mut con).unwrap()
    }

    /// Commands the server has processed so far (`INFO stats`), this query included.
    pub fn commands_processed(&self) -> u64 {
        let info: String = self.query(redis::cmd("INFO").arg("stats"));
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("INFO stats has total_commands_processed")
    }

    /// Sends SIGKILL and waits; the port is free again afterwards.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The secret every test fleet shares.
pub const SECRET: &str = "a-test-secret-of-more-than-32-bytes!";

/// A node of the fleet `prefix` on `redis`, with `workers` workers, a node-to-node listener and
/// the fleet's secret; heartbeats and time-to-live short enough for tests.
pub fn node_of(
    driver: &str,
    workers: usize,
    redis: &Redis,
    prefix: &str,
    id: &str,
    region: &str,
    extra: &[(&str, &str)],
) -> TestServer {
    let url = redis.url();
    let mut env = vec![
        ("RINGRELAY_CLUSTER_REDIS_URL", url.as_str()),
        ("RINGRELAY_CLUSTER_NODE_ID", id),
        ("RINGRELAY_CLUSTER_REGION", region),
        ("RINGRELAY_CLUSTER_HEARTBEAT", "200ms"),
        ("RINGRELAY_CLUSTER_NODE_TTL", "1500ms"),
        ("RINGRELAY_CLUSTER_SESSION_TTL", "5s"),
        ("RINGRELAY_CLUSTER_KEY_PREFIX", prefix),
        ("RINGRELAY_CLUSTER_INTERNAL_LISTEN", "127.0.0.1:0"),
        ("RINGRELAY_CLUSTER_SECRET", SECRET),
        // Also makes the per-core tick (a quarter of the shortest session timer) 250 ms.
        ("RINGRELAY_SESSION_CLOSE_TIMEOUT", "1s"),
    ];
    env.extend_from_slice(extra);
    TestServer::start(driver, workers, &env)
}
