//! TLS connections on the relay's own TLS listener across binary upgrades (SIGUSR2, issue 25,
//! docs/upgrade.md, "TLS connections"), with rustls clients and tungstenite, against the real
//! binary on both drivers:
//! - pairs over TLS 1.3 (AES-128-GCM, ChaCha20-Poly1305) and TLS 1.2 (AES-256-GCM) trade
//!   numbered messages both ways through three upgrades: after each the old process exits 0,
//!   every message arrives once and in order and nothing is closed; the last process adopted
//!   them all on carried keys (`handover_tls_adopted`);
//! - a client that asks for a TLS 1.3 key update after an upgrade is told 1012 under the
//!   current key (`tls_key_update_closed`): the carried keys cannot follow it.
//!
//! Before: every TLS connection was closed with 1012 at the first upgrade (the pairs test
//! fails with "closed" verdicts), and the key update case could not arise.

mod common;

use common::process::{become_subreaper, try_get, Chain};
use common::tls_front::Pki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tungstenite::{Message, WebSocket};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

struct Relay {
    chain: Chain,
    tls: SocketAddr,
    _pki: Pki,
    ca: PathBufCa,
}

struct PathBufCa(Vec<CertificateDer<'static>>);

impl std::ops::Deref for Relay {
    type Target = Chain;
    fn deref(&self) -> &Chain {
        &self.chain
    }
}

impl std::ops::DerefMut for Relay {
    fn deref_mut(&mut self) -> &mut Chain {
        &mut self.chain
    }
}

impl Relay {
    fn start(driver: &str) -> Relay {
        become_subreaper();
        let pki = Pki::new("upgrade-tls");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringrelay"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen"])
            .args(["127.0.0.1:0", "--driver", driver, "--workers", "2"])
            .env("RUST_LOG", "info")
            .env("RINGRELAY_LIMITS_IP_CONNECT_RATE", "0")
            .env("RINGRELAY_TLS_LISTEN", "127.0.0.1:0")
            .env("RINGRELAY_TLS_CERT_FILE", &pki.cert)
            .env("RINGRELAY_TLS_KEY_FILE", &pki.key)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let chain = Chain::spawn(&mut cmd);
        let ca = CertificateDer::pem_file_iter(&pki.ca)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        Relay {
            tls: chain.listener("tls"),
            chain,
            _pki: pki,
            ca: PathBufCa(ca),
        }
    }

    fn stats(&self) -> serde_json::Value {
        try_get(self.admin, "/stats").expect("/stats")
    }

    /// A WebSocket over TLS with `suite` (and so its version) the only one offered.
    fn wss(&self, session: &str, role: &str, suite: rustls::CipherSuite) -> WebSocket<Tls> {
        // rustls's ring provider (deprecated only for lacking post-quantum key exchange).
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites.retain(|s| s.suite() == suite);
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca.0 {
            roots.add(c.clone()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "localhost".try_into().unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect_timeout(&self.tls, Duration::from_secs(10)).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let url = format!("wss://localhost/v1/relay/{session}?role={role}");
        let (ws, _) = tungstenite::client::client(url, rustls::StreamOwned::new(conn, tcp))
            .expect("upgrade over TLS");
        ws
    }
}

/// A counter of /stats, wherever the document keeps the totals.
fn counter(doc: &serde_json::Value, name: &str) -> u64 {
    let mut stack = vec![doc];
    while let Some(v) = stack.pop() {
        if let Some(n) = v.get(name).and_then(|n| n.as_u64()) {
            return n;
        }
        if let Some(o) = v.as_object() {
            stack.extend(o.values());
        }
    }
    panic!("{name} not in /stats: {doc}")
}

/// Reads the next data message, skipping pings and pongs.
fn next(ws: &mut WebSocket<Tls>) -> Result<Message, String> {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(m) => return Ok(m),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Lockstep rounds until `stop`: a sends n, b must read exactly n and answer n, a must read
/// exactly n. Returns the rounds done, or what went wrong.
fn trade(
    mut a: WebSocket<Tls>,
    mut b: WebSocket<Tls>,
    tag: String,
    stop: Arc<AtomicBool>,
) -> Result<u64, String> {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let m = Message::text(format!("{tag} {n}"));
        a.send(m.clone())
            .map_err(|e| format!("{tag}: a send {n}: {e}"))?;
        let got = next(&mut b).map_err(|e| format!("{tag}: b read {n}: {e}"))?;
        if got != m {
            return Err(format!("{tag}: b expected {n}, got {got:?}"));
        }
        b.send(m.clone())
            .map_err(|e| format!("{tag}: b send {n}: {e}"))?;
        let got = next(&mut a).map_err(|e| format!("{tag}: a read {n}: {e}"))?;
        if got != m {
            return Err(format!("{tag}: a expected {n}, got {got:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(n)
}

const SUITES: [rustls::CipherSuite; 3] = [
    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
];

fn tls_pairs_trade_through_three_upgrades(driver: &str) {
    let mut relay = Relay::start(driver);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, verdicts) = mpsc::channel();
    for (i, suite) in SUITES.into_iter().enumerate() {
        let session = format!("tls-up-{i}");
        let a = relay.wss(&session, "a", suite);
        let b = relay.wss(&session, "b", suite);
        let tag = format!("{suite:?}");
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            let _ = done.send(trade(a, b, tag, stop));
        });
    }
    for round in 1..=3 {
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            relay.upgrade(),
            Some(0),
            "upgrade {round}: the old process's exit"
        );
        if let Ok(v) = verdicts.try_recv() {
            panic!("upgrade {round}: a pair stopped: {v:?}");
        }
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    for _ in SUITES {
        let v = verdicts.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(v.as_ref().is_ok_and(|&n| n > 10), "{v:?}");
    }
    let stats = relay.stats();
    assert_eq!(
        counter(&stats, "handover_tls_adopted"),
        2 * SUITES.len() as u64
    );
    assert_eq!(counter(&stats, "handover_closed"), 0);
}

fn a_key_update_on_carried_keys_gets_1012(driver: &str) {
    let mut relay = Relay::start(driver);
    let mut a = relay.wss("tls-ku", "a", SUITES[0]);
    let mut b = relay.wss("tls-ku", "b", SUITES[0]);
    a.send(Message::text("before")).unwrap();
    assert_eq!(next(&mut b).unwrap(), Message::text("before"));
    assert_eq!(relay.upgrade(), Some(0));
    a.send(Message::text("after")).unwrap();
    assert_eq!(next(&mut b).unwrap(), Message::text("after"));
    // The next record a sends is its KeyUpdate, then this message under the new key.
    a.get_mut().conn.refresh_traffic_keys().unwrap();
    a.send(Message::text("under a new key")).unwrap();
    match next(&mut a) {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1012, "{f:?}"),
        other => panic!("expected a 1012 close, got {other:?}"),
    }
    let stats = relay.stats();
    assert_eq!(counter(&stats, "tls_key_update_closed"), 1);
    // The message under the new key was never forwarded.
    b.get_mut()
        .sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    if let Ok(Message::Text(t)) = next(&mut b) {
        panic!("forwarded after the key update: {t}");
    }
}

both_drivers!(
    tls_pairs_trade_through_three_upgrades,
    a_key_update_on_carried_keys_gets_1012
);
