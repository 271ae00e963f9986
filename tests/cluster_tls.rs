//! The node-to-node link over TLS (`cluster.tls_*`, docs/cluster.md "TLS on the link"), with
//! real relay nodes and a real redis-server on loopback, on both drivers:
//!
//! * a TCP forwarder of the test's own sits between the carrying node and the owner and
//!   records every byte that crosses. With TLS off the carried request's token and the pair's
//!   messages are in those bytes (so the check below can fail); with TLS on, neither is, while
//!   the same pair talks through the same forwarder;
//! * a node whose certificate the cluster CA did not sign, a node without TLS, and an owner
//!   without TLS are each refused (503 `owner_unreachable`, counted), and no fallback to clear
//!   happens, while a pair on the owner keeps talking.
//!
//! Without redis-server the tests say so and pass, unless RINGRELAY_REQUIRE_REDIS=1 (CI).

mod common;
use common::cluster::*;
use common::*;
use ringrelay::auth::{mint, unix_now, MintClaims};
use ringrelay::config::JwtAlgorithm;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::Message;

const JWT_SECRET: &str = "cluster-tls-test-jwt-secret-0123456789";
/// What the carried peer's token is recognised by in the recorded bytes.
const MARK: &str = "the-carried-message-";

fn prefix(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

/// A cluster CA, another CA, and node certificates for 127.0.0.1 (every test node's
/// internal address), as PEM files in a directory of their own.
struct Pki {
    dir: PathBuf,
    cluster: (rcgen::Certificate, rcgen::KeyPair),
    other: (rcgen::Certificate, rcgen::KeyPair),
    ca_file: String,
}

struct NodeFiles {
    cert: String,
    key: String,
    ca: String,
}

fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    (p.self_signed(&key).unwrap(), key)
}

/// Written aside and renamed, as a deploy tool would: a reload never reads half a file.
fn write_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Pki {
    /// With three nodes' files: n1 and n2 signed by the cluster CA, and a stranger that
    /// trusts the cluster CA but whose own certificate another CA signed.
    fn new(tag: &str) -> (Pki, [NodeFiles; 3]) {
        let dir = std::env::temp_dir().join(format!(
            "ringrelay-cluster-tls-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = make_ca("cluster CA");
        let ca_file = dir.join("ca.pem");
        write_file(&ca_file, &cluster.0.pem());
        let pki = Pki {
            dir,
            cluster,
            other: make_ca("not the cluster's CA"),
            ca_file: ca_file.to_string_lossy().into_owned(),
        };
        let files = [
            pki.node("n1", true),
            pki.node("n2", true),
            pki.node("stranger", false),
        ];
        (pki, files)
    }

    /// `tag`'s certificate and key, signed by the cluster CA or by the other one.
    fn node(&self, tag: &str, by_cluster: bool) -> NodeFiles {
        let (signer, signer_key) = if by_cluster {
            (&self.cluster.0, &self.cluster.1)
        } else {
            (&self.other.0, &self.other.1)
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, signer, signer_key)
            .unwrap();
        let (cert_file, key_file) = (
            self.dir.join(format!("{tag}.pem")),
            self.dir.join(format!("{tag}.key")),
        );
        write_file(&cert_file, &cert.pem());
        write_file(&key_file, &key.serialize_pem());
        NodeFiles {
            cert: cert_file.to_string_lossy().into_owned(),
            key: key_file.to_string_lossy().into_owned(),
            ca: self.ca_file.clone(),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_env(f: &NodeFiles) -> Vec<(&'static str, String)> {
    vec![
        ("RINGRELAY_CLUSTER_TLS_CERT_FILE", f.cert.clone()),
        ("RINGRELAY_CLUSTER_TLS_KEY_FILE", f.key.clone()),
        ("RINGRELAY_CLUSTER_TLS_CA_FILE", f.ca.clone()),
    ]
}

fn node(
    driver: &str,
    redis: &Redis,
    p: &str,
    id: &str,
    mut extra: Vec<(&'static str, String)>,
) -> TestServer {
    extra.push(("RINGRELAY_AUTH_JWT_SECRET", JWT_SECRET.to_string()));
    let env: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    node_of(driver, 2, redis, p, id, "eu", &env)
}

/// The same token for a session all through a test (the check looks for the one sent).
fn token(sid: &str) -> String {
    static EXP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let claims = MintClaims {
        sid: sid.into(),
        exp: *EXP.get_or_init(|| unix_now() + 600),
        ..MintClaims::default()
    };
    mint(JWT_SECRET.as_bytes(), JwtAlgorithm::Hs256, &claims)
}

fn join(srv: &TestServer, session: &str, role: &str) -> Result<Ws, (u16, String, String)> {
    let t = token(session);
    try_upgrade(
        tcp_from("127.0.0.1", srv.addr),
        srv.addr,
        &format!("/v1/relay/{session}?role={role}"),
        &[("Authorization", &format!("Bearer {t}"))],
    )
}

fn exchange(a: &mut Ws, b: &mut Ws, from: u32, n: u32) {
    for i in from..from + n {
        a.send(Message::text(format!("{MARK}a{i}"))).unwrap();
        b.send(Message::text(format!("{MARK}b{i}"))).unwrap();
        assert_eq!(recv_text(b), format!("{MARK}a{i}"));
        assert_eq!(recv_text(a), format!("{MARK}b{i}"));
    }
}

/// A TCP forwarder on a loopback port to `to`, recording what crosses it each way.
struct Tap {
    addr: SocketAddr,
    to_owner: Arc<Mutex<Vec<u8>>>,
    to_carrier: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, record: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 16 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(n) if n > 0 => {
                record.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Tap {
    fn start(to: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let tap = Tap {
            addr: listener.local_addr().unwrap(),
            to_owner: Arc::default(),
            to_carrier: Arc::default(),
            stop: Arc::default(),
        };
        let (up, down, stop) = (
            tap.to_owner.clone(),
            tap.to_carrier.clone(),
            tap.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((carrier, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                carrier.set_nonblocking(false).unwrap();
                let owner = TcpStream::connect(to).unwrap();
                let (c2, o2) = (carrier.try_clone().unwrap(), owner.try_clone().unwrap());
                let (up, down) = (up.clone(), down.clone());
                std::thread::spawn(move || pump(carrier, owner, up));
                std::thread::spawn(move || pump(o2, c2, down));
            }
        });
        tap
    }

    fn recorded(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.to_owner.lock().unwrap().clone(),
            self.to_carrier.lock().unwrap().clone(),
        )
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Makes `carrier` reach `owner`'s internal listener through `tap`: the owner's registry entry
/// is rewritten to name the tap (the owner's heartbeat is long, so it does not write it back
/// meanwhile) until the carrier's view of the fleet shows it.
fn route_through(redis: &Redis, p: &str, owner_id: &str, tap: &Tap, carrier: &TestServer) {
    let key = format!("{p}:node:{owner_id}");
    let want = tap.addr.to_string();
    wait_until(
        Duration::from_secs(10),
        "the carrier to see the tap",
        || {
            let entry: Option<String> = redis.query(redis::cmd("GET").arg(&key));
            if let Some(entry) = entry {
                let mut v: serde_json::Value = serde_json::from_str(&entry).unwrap();
                if v["internal"] != want.as_str() {
                    v["internal"] = want.clone().into();
                    let _: () = redis.query(
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(v.to_string())
                            .arg("PX")
                            .arg(60_000),
                    );
                }
            }
            let s = stats(carrier);
            s["cluster"]["nodes"].as_array().is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n["node_id"] == owner_id && n["internal"] == want.as_str())
            })
        },
    );
}

/// Two nodes, n1 owning a session and n2 carrying its second peer to n1 through a tap; returns
/// what crossed the tap each way once the pair exchanged messages.
fn carried_through_a_tap(driver: &str, tls: bool) -> Option<(Vec<u8>, Vec<u8>)> {
    let redis = Redis::start(None)?;
    let (_pki, files) = Pki::new("tap");
    let p = prefix(if tls { "tap-tls" } else { "tap-clear" });
    let env = |f: &NodeFiles| if tls { tls_env(f) } else { Vec::new() };
    // n1 writes its entry once at start, then not for 20 s: the tap's address stays in it.
    let mut slow = env(&files[0]);
    slow.extend([
        ("RINGRELAY_CLUSTER_HEARTBEAT", "20s".to_string()),
        ("RINGRELAY_CLUSTER_NODE_TTL", "60s".to_string()),
        ("RINGRELAY_CLUSTER_SESSION_TTL", "60s".to_string()),
    ]);
    let n1 = node(driver, &redis, &p, "n1", slow);
    let n2 = node(driver, &redis, &p, "n2", env(&files[1]));
    let tap = Tap::start(n1.internal.unwrap());
    route_through(&redis, &p, "n1", &tap, &n2);
    let mut a = join(&n1, "tapped", "a").expect("a joins its owner");
    let mut b = join(&n2, "tapped", "b").expect("b is carried to n1 through the tap");
    exchange(&mut a, &mut b, 0, 20);
    // Messages larger than a read buffer and a TLS record, both ways.
    let big = |i: u32| {
        Message::binary(
            (0..200_000u32)
                .map(|k| (k * 7 + i) as u8)
                .collect::<Vec<_>>(),
        )
    };
    a.send(big(1)).unwrap();
    b.send(big(2)).unwrap();
    assert!(recv(&mut b) == big(1), "a 200 kB message arrived whole");
    assert!(recv(&mut a) == big(2), "a 200 kB message arrived whole");
    exchange(&mut a, &mut b, 20, 5);
    assert_eq!(counter(&n2, "cluster_carried_out"), 1);
    assert_eq!(counter(&n1, "cluster_carried_in"), 1);
    assert_eq!(counter(&n2, "cluster_carry_tls_failed"), 0);
    assert_eq!(counter(&n1, "cluster_link_tls_failed"), 0);
    drop((a, b));
    let (up, down) = tap.recorded();
    // The opening and the request did cross the tap, either way.
    assert!(
        up.len() > 300,
        "nothing crossed the tap: {} bytes",
        up.len()
    );
    Some((up, down))
}

fn without_tls_the_tap_sees_the_token_and_the_messages(driver: &str) {
    let Some((up, down)) = carried_through_a_tap(driver, false) else {
        return;
    };
    // The control: what the TLS test below must not find is there without TLS, so that test
    // can fail.
    let t = token("tapped");
    assert!(contains(&up, &t), "the carried request's token, in clear");
    assert!(contains(&up, "RRLINK/2") || contains(&down, "RRLINK/2"));
    assert!(contains(&up, "GET /v1/relay/tapped"));
    assert!(
        contains(&down, &format!("{MARK}a0")),
        "a's message, in clear"
    );
}

fn with_tls_the_token_and_messages_never_cross_in_clear(driver: &str) {
    let Some((up, down)) = carried_through_a_tap(driver, true) else {
        return;
    };
    // Before: the link was always in clear (the test above), so the token and every message
    // crossed the network as they are. Now both directions are TLS records from the first byte.
    let t = token("tapped");
    // The JWT's parts (header, claims, signature) each, not only the whole token.
    for part in t.split('.') {
        assert!(!contains(&up, part), "a part of the token crossed in clear");
    }
    for clear in [
        "GET /v1/relay/tapped",
        "RRLINK/2",
        "Authorization",
        MARK,
        "tapped",
    ] {
        assert!(
            !contains(&up, clear),
            "{clear:?} crossed to the owner in clear"
        );
        assert!(
            !contains(&down, clear),
            "{clear:?} crossed to the carrier in clear"
        );
    }
    assert_eq!(
        up[0], 0x16,
        "the carrier's first byte opens a TLS handshake"
    );
    assert_eq!(down[0], 0x16, "the owner's first byte answers one");
}

fn nodes_outside_the_cluster_ca_or_in_clear_are_refused(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let (pki, files) = Pki::new("refused");
    let p = prefix("refused");
    // Carriers give up first (1 s), so the plain one sees its own timeout, not n1's close.
    let quick = |mut v: Vec<(&'static str, String)>| {
        v.push(("RINGRELAY_LIMITS_HANDSHAKE_TIMEOUT", "2500ms".to_string()));
        v.push(("RINGRELAY_CLUSTER_LOOKUP_TIMEOUT", "1s".to_string()));
        v
    };
    let n1 = node(driver, &redis, &p, "n1", quick(tls_env(&files[0])));
    // The stranger trusts the cluster CA, but the cluster CA did not sign its certificate.
    let stranger = node(driver, &redis, &p, "n2", quick(tls_env(&files[2])));
    let plain = node(driver, &redis, &p, "n3", quick(Vec::new()));
    wait_until(Duration::from_secs(10), "the fleet", || {
        [&n1, &stranger, &plain]
            .iter()
            .all(|n| stats(n)["cluster"]["nodes"].as_array().map(Vec::len) == Some(3))
    });
    let mut a = join(&n1, "control", "a").unwrap();
    let mut b = join(&n1, "control", "b").unwrap();
    exchange(&mut a, &mut b, 0, 5);
    let _owner_peer = join(&n1, "held", "a").unwrap();
    // Before: any node holding the secret was carried to n1 in clear. Now n1 wants the cluster
    // CA's certificate first: the stranger's is refused in the handshake.
    assert_refused(join(&stranger, "held", "b"), 503, "owner_unreachable");
    assert_eq!(counter(&stranger, "cluster_carry_tls_failed"), 1);
    assert_eq!(counter(&stranger, "cluster_carry_failed"), 1);
    stats_when(&n1, |s| s["totals"]["cluster_link_tls_bad_cert"] == 1);
    assert_eq!(counter(&n1, "cluster_link_tls_bad_cert"), 1);
    exchange(&mut a, &mut b, 5, 5);
    // A node without TLS waits for a challenge in clear that n1 never sends: no fallback, the
    // client gets 503 at its lookup timeout and n1 counts the handshake that never came.
    assert_refused(join(&plain, "held", "b"), 503, "owner_unreachable");
    assert_eq!(counter(&plain, "cluster_carry_failed"), 1);
    assert!(plain.log_contains("set it here too"));
    stats_when(&n1, |s| s["totals"]["cluster_link_tls_failed"] == 2);
    assert_eq!(counter(&n1, "cluster_link_tls_failed"), 2);
    assert_eq!(counter(&n1, "cluster_carried_in"), 0);
    // n1 (TLS) carrying to an owner in clear: the owner's challenge is not a TLS record, so
    // n1 sends nothing more (its client's request least of all) and answers 503.
    let _plain_peer = join(&plain, "clear-owned", "a").unwrap();
    assert_refused(join(&n1, "clear-owned", "b"), 503, "owner_unreachable");
    assert_eq!(counter(&n1, "cluster_carry_tls_failed"), 1);
    assert!(n1.log_contains("the owner answered in clear"));
    assert_eq!(counter(&plain, "cluster_carried_in"), 0);
    exchange(&mut a, &mut b, 10, 5);
    drop(pki);
}

fn sighup(srv: &TestServer) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGHUP) };
}

/// Sends SIGHUP and waits until /stats counts `ok` applied and `refused` refused reloads.
fn reload(srv: &TestServer, ok: u64, refused: u64) {
    sighup(srv);
    let v = stats_when(srv, |v| {
        v["reload"]["reloads_ok"] == ok && v["reload"]["reloads_refused"] == refused
    });
    assert_eq!(v["reload"]["reloads_ok"], ok, "{}", v["reload"]);
    assert_eq!(v["reload"]["reloads_refused"], refused, "{}", v["reload"]);
}

fn a_reload_replaces_the_link_certificate_and_never_turns_tls_off(driver: &str) {
    let Some(redis) = Redis::start(None) else {
        return;
    };
    let (pki, files) = Pki::new("reload");
    let p = prefix("reload");
    let n1 = node(driver, &redis, &p, "n1", tls_env(&files[0]));
    // n2's link TLS comes from its config file, which the test rewrites; its certificate
    // starts as the stranger's (another CA's).
    let config = pki.dir.join("n2.toml");
    let tls_lines = format!(
        "[cluster]\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n",
        files[2].cert, files[2].key, files[2].ca
    );
    write_file(&config, &tls_lines);
    let conf = ("RINGRELAY_CONFIG", config.to_string_lossy().into_owned());
    let n2 = node(driver, &redis, &p, "n2", vec![conf]);
    wait_until(Duration::from_secs(10), "n2 to see n1", || {
        stats(&n2)["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    });
    let mut a = join(&n1, "rotated", "a").unwrap();
    assert_refused(join(&n2, "rotated", "b"), 503, "owner_unreachable");
    assert_eq!(counter(&n2, "cluster_carry_tls_failed"), 1);
    // The cluster CA issues n2 a certificate, written over the old files; SIGHUP. Before: the
    // link's TLS did not exist, and no reload read a certificate for it.
    pki.node("stranger", true);
    reload(&n2, 1, 0);
    let mut b = join(&n2, "rotated", "b").expect("carried with the new certificate");
    exchange(&mut a, &mut b, 0, 5);
    assert_eq!(counter(&n2, "cluster_carried_out"), 1);
    // A config without the link's TLS is refused whole: the link is never put back in clear
    // by a reload, and the pair carried before keeps talking.
    write_file(&config, "[cluster]\n");
    reload(&n2, 1, 1);
    assert!(n2.log_contains("would put the node-to-node link in clear"));
    exchange(&mut a, &mut b, 5, 5);
    let mut c = join(&n1, "after", "a").unwrap();
    let mut d = join(&n2, "after", "b").expect("still carried over TLS");
    exchange(&mut c, &mut d, 0, 3);
    assert_eq!(counter(&n2, "cluster_carry_tls_failed"), 1);
    assert_eq!(counter(&n1, "cluster_link_tls_bad_cert"), 1);
}

both_drivers!(
    a_reload_replaces_the_link_certificate_and_never_turns_tls_off,
    without_tls_the_tap_sees_the_token_and_the_messages,
    with_tls_the_token_and_messages_never_cross_in_clear,
    nodes_outside_the_cluster_ca_or_in_clear_are_refused,
);
