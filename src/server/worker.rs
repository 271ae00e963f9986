//! One worker thread: its runtime, its listener, its sessions.

use super::accept::{handle, receive_handoffs, Listener};
use super::handoff::Handoff;
use crate::relay::keepalive;
use crate::runtime::{Core, Shared};
use crate::stats::bump;
use crate::ws::CloseCode;
use monoio::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct WorkerSetup {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub listener: std::net::TcpListener,
    pub admin: Option<std::net::TcpListener>,
    pub handoffs: flume::Receiver<Handoff>,
    pub scrapes: flume::Receiver<flume::Sender<crate::stats::CoreSnapshot>>,
    pub shutdown: flume::Receiver<()>,
    /// Told once this worker listens.
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
}

async fn accept_loop(core: Rc<Core>, listener: TcpListener, kind: Listener) {
    let max_conns = core.config().limits.max_connections_per_worker;
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = core.shutdown.acquire() => return,
        };
        match accepted {
            Ok((stream, _addr)) => {
                bump(&core.stats.connections_accepted, 1);
                if core.registry.peer_count() >= max_conns {
                    drop(stream);
                    core.stats.refused(crate::stats::RefusedStatus::Status(503));
                    continue;
                }
                let _ = stream.set_nodelay(true);
                monoio::spawn(handle(
                    core.clone(),
                    stream,
                    kind,
                    Vec::new(),
                    Instant::now(),
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a full fd table.
                tracing::warn!(error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs the worker until shutdown, then closes every connection with 1001 and waits up to
/// `shutdown_grace` for them to finish.
pub async fn run(setup: WorkerSetup) {
    let core = Rc::new(Core::new(setup.index, setup.shared.clone()));
    let listener = match TcpListener::from_std(setup.listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = setup
                .ready
                .send(Err(format!("worker {}: {e}", setup.index)));
            return;
        }
    };
    monoio::spawn(accept_loop(core.clone(), listener, Listener::Public));
    if let Some(admin) = setup.admin {
        match TcpListener::from_std(admin) {
            Ok(l) => {
                monoio::spawn(accept_loop(core.clone(), l, Listener::Admin));
            }
            Err(e) => {
                let _ = setup.ready.send(Err(format!("admin listener: {e}")));
                return;
            }
        }
    }
    monoio::spawn(receive_handoffs(core.clone(), setup.handoffs));
    monoio::spawn(super::scrape::answer_scrapes(core.clone(), setup.scrapes));
    monoio::spawn(keepalive::run(core.clone()));
    let _ = setup.ready.send(Ok(()));
    let _ = setup.shutdown.recv_async().await;
    core.shutdown.close();
    let now = core.clock.tick();
    for p in core.registry.peers() {
        monoio::spawn(async move {
            p.close(CloseCode::GOING_AWAY, "server shutting down", now)
                .await
        });
    }
    let deadline = Instant::now() + core.config().shutdown_grace;
    while core.registry.peer_count() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        worker = core.index,
        left = core.registry.peer_count(),
        "worker stopped"
    );
}
