//! A relay written the way a tokio user would write one (tokio + tokio-tungstenite +
//! tokio-rustls), speaking the part of ringrelay's relay route that `ringrelay load` uses, so
//! that scripts/tls_bench.sh can put it beside ringrelay under the same load.
//!
//!   tokio-rustls-relay [--listen ADDR] [--tls-cert PEM --tls-key PEM]
//!
//! With a certificate and key it serves wss:// only; without them ws://. One current-thread
//! runtime: the bench pins the process to one core with taskset, as it does ringrelay with
//! one worker, so both get one core and no more.
use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

mod relay;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// TLS handshake and WebSocket upgrade together must finish within this (ringrelay's default
/// `limits.handshake_timeout`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    listen: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
}

const USAGE: &str = "usage: tokio-rustls-relay [--listen ADDR] [--tls-cert PEM --tls-key PEM]";

fn parse_args() -> Result<Args, String> {
    let mut listen: SocketAddr = "127.0.0.1:9002".parse().expect("default address");
    let (mut cert, mut key) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--tls-key" => key = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".to_string()),
    };
    Ok(Args { listen, tls })
}

/// rustls with the ring provider (as ringrelay uses), TLS 1.2 and 1.3, ALPN http/1.1, and
/// session resumption by both a server-side cache (rustls's default) and tickets, as a
/// production server would offer.
fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, Box<dyn Error>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    // The provider ringrelay uses (deprecated in rustls 0.23.48 for lacking post-quantum key
    // exchange, which neither side offers, so the comparison stays like for like).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("tokio-rustls-relay: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let acceptor = match &args.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    // A LocalSet lets the session map be an Rc<RefCell<_>>: one thread, no locks.
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let scheme = if acceptor.is_some() { "wss" } else { "ws" };
        eprintln!("tokio-rustls-relay listening on {addr} ({scheme}, current-thread runtime)");
        match acceptor {
            Some(tls) => {
                accept_loop(listener, move |tcp| {
                    let tls = tls.clone();
                    async move { tls.accept(tcp).await }
                })
                .await
            }
            None => accept_loop(listener, |tcp| async move { Ok(tcp) }).await,
        }
    })
}

/// Accepts forever; each connection runs `wrap` (the TLS handshake, or nothing) and then the
/// relay's routes, on a task of its own.
async fn accept_loop<S, F, Fut>(listener: TcpListener, wrap: F) -> Result<(), Box<dyn Error>>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>> + 'static,
{
    let sessions = relay::Sessions::<S>::default();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let wrapped = wrap(tcp);
        let sessions = sessions.clone();
        tokio::task::spawn_local(async move {
            let upgraded = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                let stream = wrapped.await.ok()?;
                relay::upgrade(stream, &sessions).await
            })
            .await;
            if let Ok(Some(conn)) = upgraded {
                relay::serve(conn, sessions).await;
            }
        });
    }
}
