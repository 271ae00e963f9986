//! A relay written the way fastwebsockets' documentation shows a server (hyper 1 serves the
//! HTTP/1.1 upgrade, `fastwebsockets::upgrade::upgrade` answers it, the upgraded stream is
//! split into a reader and a writer), speaking the part of ringrelay's relay route that
//! `ringrelay load --mode pairs|churn|echo` uses, so that scripts/churn_bench.sh can put it
//! beside ringrelay under the same load.
//!
//!   fastwebsockets-relay [--listen ADDR]
//!
//! One current-thread runtime with a `LocalSet`: the bench pins the process to one core with
//! taskset, as it does ringrelay with one worker, so both get one core and no more.
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod relay;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The upgrade request must arrive within this (ringrelay's default
/// `limits.handshake_timeout`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: fastwebsockets-relay [--listen ADDR]";

fn parse_args() -> Result<SocketAddr, String> {
    let mut listen: SocketAddr = "127.0.0.1:9003".parse().expect("default address");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--listen" => {
                let v = it
                    .next()
                    .ok_or(format!("--listen needs a value\n{USAGE}"))?;
                listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(listen)
}

fn main() {
    let listen = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(listen) {
        eprintln!("fastwebsockets-relay: {e}");
        std::process::exit(1);
    }
}

fn run(listen: SocketAddr) -> Result<(), Box<dyn Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    // A LocalSet lets the session map be an Rc<RefCell<_>>: one thread, no locks.
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        eprintln!("fastwebsockets-relay listening on {addr} (ws, current-thread runtime)");
        let sessions = relay::Sessions::default();
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
            let sessions = sessions.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |req| {
                    let sessions = sessions.clone();
                    async move { Ok::<_, std::convert::Infallible>(relay::route(req, &sessions)) }
                });
                let conn = http1::Builder::new()
                    .header_read_timeout(HANDSHAKE_TIMEOUT)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades();
                let _ = conn.await;
            });
        }
    })
}
