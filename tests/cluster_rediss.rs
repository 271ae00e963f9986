//! `cluster.redis_url = "rediss://..."`: cluster mode's Redis over TLS (docs/cluster.md "Redis
//! over TLS"), against the real binary and a real redis-server started here with TLS only
//! (`--port 0 --tls-port P`), on both drivers. The server's certificate comes from a CA of the
//! test's own, which the relay trusts through `SSL_CERT_FILE` (rustls-native-certs reads it).
//!
//! Before: the redis crate was built without TLS, so every `rediss://` connection failed with
//! "can't connect with TLS, the feature is not enabled": the node started, served, and never
//! joined its fleet.
//!
//! Without redis-server the tests say so and pass, unless RINGRELAY_REQUIRE_REDIS=1 (CI).

mod common;
use common::cluster::*;
use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tungstenite::Message;

/// A redis-server that speaks TLS only, with a certificate for 127.0.0.1 from its own CA.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsRedis {
    fn start() -> Option<TlsRedis> {
        // One directory per server: both drivers' tests run at once in this process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rr-rediss-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "rediss test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("redis.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("redis.key"), key.serialize_pem()).unwrap();
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        // A free port can be taken again before redis-server binds it (tests run in
        // parallel): a server that exits at once is started again on another.
        for _ in 0..3 {
            let port = free_port();
            let spawned = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--tls-cert-file", &file("redis.pem")])
                .args(["--tls-key-file", &file("redis.key")])
                .args(["--tls-ca-cert-file", &file("ca.pem")])
                .args(["--tls-auth-clients", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match spawned {
                Ok(c) => c,
                Err(_) if std::env::var("RINGRELAY_REQUIRE_REDIS").as_deref() != Ok("1") => {
                    eprintln!("skipped: no redis-server (apt-get install redis-server)");
                    let _ = std::fs::remove_dir_all(&dir);
                    return None;
                }
                Err(e) => panic!("redis-server is required here: {e}"),
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(TlsRedis { child, port, dir });
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server with TLS did not listen in three attempts");
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").to_string_lossy().into_owned()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ringrelay cluster status --json` over TLS, trusting `ca` (or only the system's roots).
fn status(url: &str, prefix: &str, ca: Option<&str>) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
    cmd.args(["cluster", "status", "--redis", url, "--prefix", prefix]);
    cmd.arg("--json").env_remove("SSL_CERT_FILE");
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let out = cmd.output().unwrap();
    match out.status.success() {
        true => Ok(serde_json::from_slice(&out.stdout).unwrap()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

fn node(driver: &str, url: &str, prefix: &str, id: &str, ca: &str) -> TestServer {
    let env = [
        ("RINGRELAY_CLUSTER_REDIS_URL", url),
        ("RINGRELAY_CLUSTER_NODE_ID", id),
        ("RINGRELAY_CLUSTER_HEARTBEAT", "200ms"),
        ("RINGRELAY_CLUSTER_NODE_TTL", "1500ms"),
        ("RINGRELAY_CLUSTER_KEY_PREFIX", prefix),
        ("SSL_CERT_FILE", ca),
    ];
    TestServer::start(driver, 1, &env)
}

fn redis_state(srv: &TestServer) -> serde_json::Value {
    let (_, _, body) = get(srv.addr, "/health");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["cluster"]["redis"].clone()
}

fn a_rediss_url_joins_the_fleet_over_tls(driver: &str) {
    let Some(redis) = TlsRedis::start() else {
        return;
    };
    let (url, prefix) = (redis.url(), format!("t{}-{driver}", std::process::id()));
    let srv = node(driver, &url, &prefix, "tls-node", &redis.ca());
    wait_until(Duration::from_secs(5), "the node to register", || {
        status(&url, &prefix, Some(&redis.ca()))
            .is_ok_and(|v| v["nodes"][0]["node_id"] == "tls-node")
    });
    assert_eq!(redis_state(&srv), "up");
    // A session's ownership is claimed in Redis (over TLS) before its first peer is seated:
    // a pair that talks shows the claim went through.
    let mut a = srv.connect("/v1/relay/rediss-pair");
    let mut b = srv.connect("/v1/relay/rediss-pair");
    a.send(Message::text("over a fleet on rediss")).unwrap();
    assert_eq!(recv_text(&mut b), "over a fleet on rediss");
    // The same server, trusted only through the system's roots, is refused by name: the
    // certificate is checked, never skipped.
    let err = status(&url, &prefix, None).unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains("rediss://127.0.0.1"), "{err}");
}

fn an_untrusted_redis_certificate_keeps_the_node_out(driver: &str) {
    let Some(redis) = TlsRedis::start() else {
        return;
    };
    let (url, prefix) = (redis.url(), format!("t{}-{driver}-x", std::process::id()));
    // A CA file that does not hold the server's issuer: the node's own certificate.
    let wrong = redis.dir.join("redis.pem");
    let srv = node(
        driver,
        &url,
        &prefix,
        "untrusting",
        &wrong.to_string_lossy(),
    );
    // Said once in the log, with the reason (before, a node that never reached Redis said
    // nothing at all).
    wait_until(Duration::from_secs(5), "the failure to be logged", || {
        srv.log_contains("redis unreachable")
    });
    assert!(srv.log_contains("UnknownIssuer"), "{:?}", srv.log.lock());
    assert_eq!(redis_state(&srv), "down");
    // Nothing registered: no clear-text fallback or skipped check let it in.
    let v = status(&url, &prefix, Some(&redis.ca())).unwrap();
    assert_eq!(v["nodes"], serde_json::json!([]), "{v}");
    // And no session is served on an ownership nobody could record: a new one is refused
    // with the contract's 503, as with Redis down, rather than seated unclaimed.
    let stream = std::net::TcpStream::connect(srv.addr).unwrap();
    let r = try_upgrade(stream, srv.addr, "/v1/relay/unclaimed", &[]);
    assert_refused(r, 503, "cluster_unavailable");
}

both_drivers!(
    a_rediss_url_joins_the_fleet_over_tls,
    an_untrusted_redis_certificate_keeps_the_node_out,
);
