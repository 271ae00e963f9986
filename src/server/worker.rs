//! One worker thread: its runtime, its listener, its sessions.

use super::accept::{self, handle, receive_handoffs, Arrival, Listener};
use super::upgrade::gate::{serve_orders, Gate, UpgradeOrder};
use crate::context::{Core, Shared};
use crate::limits::Refusal;
use crate::relay::handover::{self, Handed};
use crate::relay::keepalive;
use crate::session::handoff::Handoff;
use crate::session::persist::{self, StateFile};
use crate::stats::bump;
use crate::ws::CloseCode;
use monoio::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub struct WorkerSetup {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub listener: std::net::TcpListener,
    pub admin: Option<std::net::TcpListener>,
    /// This worker's share of `cluster.internal_listen`.
    pub internal: Option<std::net::TcpListener>,
    /// This worker's share of `tls.listen`.
    pub tls: Option<std::net::TcpListener>,
    /// The cluster thread's commands (cluster mode).
    pub commands: Option<flume::Receiver<crate::fleet::ask::Command>>,
    pub handoffs: flume::Receiver<Handoff>,
    /// Open-connection counts given back to this core by connections that ended elsewhere.
    pub releases: flume::Receiver<std::net::IpAddr>,
    pub scrapes: flume::Receiver<flume::Sender<crate::stats::CoreSnapshot>>,
    /// Reloads to put in force on this worker (SIGHUP).
    pub reloads: flume::Receiver<crate::context::reload::ReloadOrder>,
    pub shutdown: flume::Receiver<()>,
    /// Told once this worker listens.
    pub ready: std::sync::mpsc::Sender<Result<(), String>>,
    /// This core's sessions and per-IP buckets read back from `session.state_dir`, restored
    /// before it accepts.
    pub restored: super::state::ForWorker,
    /// State files refused at start, counted here (worker 0).
    pub state_refused: u64,
    /// Where this worker's sessions and per-IP buckets go once its connections closed
    /// (`session.state_dir`).
    pub snapshots: Option<std::sync::mpsc::Sender<StateFile>>,
    /// The binary upgrade's orders (SIGUSR2, old process).
    pub upgrades: flume::Receiver<UpgradeOrder>,
    /// New process of an upgrade: this worker's share of the old process's connections,
    /// adopted before it accepts or reports ready, and where to say how many it adopted.
    pub adopt: Option<(flume::Receiver<Handed>, flume::Sender<usize>)>,
}

/// The first back-off after `accept` fails; it doubles up to `limits.accept_backoff_max`.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(5);

/// Accepts on one listener; `tls`: the TLS listener (public routes, after a TLS handshake).
/// A binary upgrade pauses it through `gate` (`server::upgrade::gate`).
async fn accept_loop(
    core: Rc<Core>,
    gate: Rc<Gate>,
    listener: TcpListener,
    (kind, tls): (Listener, bool),
) {
    let max_conns = core.config().limits.max_connections_per_worker;
    let backoff_max = core.config().limits.accept_backoff_max;
    let mut backoff = ACCEPT_BACKOFF_START;
    gate.enter();
    loop {
        if gate.paused() {
            monoio::select! {
                _ = gate.park() => {},
                _ = core.shutdown.acquire() => return,
            }
            continue;
        }
        let accepted = monoio::select! {
            r = listener.cancelable_accept(gate.handle()) => r,
            _ = core.shutdown.acquire() => return,
        };
        if accepted.is_err() && gate.paused() {
            // Cancelled by the pause: nothing was taken.
            continue;
        }
        match accepted {
            Ok((mut stream, addr)) => {
                backoff = ACCEPT_BACKOFF_START;
                bump(&core.stats.connections_accepted, 1);
                // TCP_NODELAY came with it from the listener (`bind_listener`,
                // `Listeners::check`): no setsockopt per connection.
                // Carried peers and bridged requests hold descriptors here too.
                let busy = core.registry.peer_count()
                    + core.cluster_local.carry_count()
                    + core.bridge.connections()
                    + core.proxy_upgrades.get() as usize;
                if busy >= max_conns {
                    // Over TLS no plain answer can be read: the connection is just closed.
                    if !tls {
                        let c = core.clone();
                        monoio::spawn(async move {
                            Refusal::WorkerFull.write(&c.stats, &mut stream).await
                        });
                    }
                    continue;
                }
                if kind == Listener::Public {
                    accept::accepted(&core, stream, addr.ip(), tls);
                } else {
                    let arrival = Arrival::new(kind, addr.ip(), None);
                    // An upgrade waits (bounded) for admin requests to be answered.
                    let serving = (kind == Listener::Admin).then(|| gate.serving_admin());
                    let core = core.clone();
                    monoio::spawn(async move {
                        handle(core, stream.into(), arrival).await;
                        drop(serving);
                    });
                }
            }
            Err(e) => {
                // EMFILE, ENFILE and the like: the error repeats until descriptors free up,
                // so wait (doubling) instead of spinning on it.
                bump(&core.stats.accept_errors, 1);
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                monoio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
}

/// Gives back the counts of connections from this core's client addresses that ended on
/// other cores.
async fn receive_releases(core: Rc<Core>, rx: flume::Receiver<std::net::IpAddr>) {
    while let Ok(ip) = rx.recv_async().await {
        core.ip_limits.close(ip, core.clock.now_ms());
    }
}

/// Runs the worker until shutdown, then closes every connection with 1001 and waits up to
/// `shutdown_grace` for them to finish.
pub async fn run(setup: WorkerSetup) {
    let core = Rc::new(Core::new(setup.index, setup.shared.clone()));
    // A connection's count is given back wherever it ends: here when this is its client's
    // home core, else through the home core's inbox.
    let weak = Rc::downgrade(&core);
    crate::limits::home::route_releases(move |ip, home| {
        if let Some(core) = weak.upgrade() {
            core.release_ip(ip, home);
        }
    });
    restore(&core, setup.restored, setup.state_refused);
    if let Err(e) = adopt(&core, setup.adopt).await {
        let _ = setup.ready.send(Err(format!("worker {}: {e}", core.index)));
        return;
    }
    let gate = Rc::new(Gate::default());
    let listeners = [
        (Some(setup.listener), Listener::Public, false),
        (setup.admin, Listener::Admin, false),
        (setup.internal, Listener::Internal, false),
        (setup.tls, Listener::Public, true),
    ];
    for (listener, kind, tls) in listeners {
        let Some(listener) = listener else { continue };
        match TcpListener::from_std(listener) {
            Ok(l) => {
                monoio::spawn(accept_loop(core.clone(), gate.clone(), l, (kind, tls)));
            }
            Err(e) => {
                let what = match kind {
                    Listener::Public if tls => format!("worker {} (TLS)", setup.index),
                    Listener::Public => format!("worker {}", setup.index),
                    Listener::Admin => "admin listener".to_string(),
                    Listener::Internal => "internal listener".to_string(),
                };
                let _ = setup.ready.send(Err(format!("{what}: {e}")));
                return;
            }
        }
    }
    if let Some(commands) = setup.commands {
        monoio::spawn(crate::cluster::commands::serve(core.clone(), commands));
    }
    monoio::spawn(receive_handoffs(core.clone(), setup.handoffs));
    monoio::spawn(receive_releases(core.clone(), setup.releases));
    monoio::spawn(super::scrape::answer_scrapes(core.clone(), setup.scrapes));
    monoio::spawn(crate::context::reload::receive_reloads(
        core.clone(),
        setup.reloads,
    ));
    monoio::spawn(keepalive::run(core.clone()));
    crate::proxy::health::spawn(&core);
    monoio::spawn(serve_orders(core.clone(), gate, setup.upgrades));
    let _ = setup.ready.send(Ok(()));
    let _ = setup.shutdown.recv_async().await;
    core.shutdown.close();
    // With `session.state_dir` what the sessions keep outlives the process: 1012 (Service
    // Restart) tells clients to come back; without it 1001, as the contract says.
    let (code, reason) = match setup.snapshots {
        Some(_) => (CloseCode::SERVICE_RESTART, "server restarting"),
        None => (CloseCode::GOING_AWAY, "server shutting down"),
    };
    crate::relay::stop::close_all(&core, code, reason).await;
    if let Some(tx) = setup.snapshots {
        let _ = tx.send(take_state(&core));
    }
    crate::stats::access::flush(&core.stats);
    tracing::info!(
        worker = core.index,
        left = core.registry.peer_count(),
        "worker stopped"
    );
    // Ended, not stuck: the watchdog's supervisor no longer waits for this worker's ticks.
    core.gauges().beat(u64::MAX);
}

/// This core's sessions and per-IP connection-rate buckets, for the state file.
fn take_state(core: &Core) -> StateFile {
    let sessions = persist::snapshot(&core.registry);
    bump(&core.stats.state_sessions_written, sessions.len() as u64);
    let buckets = core.ip_limits.export(core.clock.tick());
    bump(&core.stats.state_ip_buckets_written, buckets.len() as u64);
    StateFile {
        sessions,
        limits: vec![crate::limits::saved::SavedLimits {
            taken_unix_ms: super::state::unix_ms(),
            buckets,
        }],
    }
}

/// Puts the sessions and per-IP buckets read back from `session.state_dir` into this core,
/// within the limits that bound them in memory, and counts what happened.
fn restore(core: &Core, restored: super::state::ForWorker, refused: u64) {
    bump(&core.stats.state_files_refused, refused);
    let kept = core
        .ip_limits
        .import(&restored.buckets, restored.rested_ms, core.clock.tick());
    bump(&core.stats.state_ip_buckets_loaded, kept as u64);
    bump(&core.stats.state_sessions_not_claimed, restored.not_claimed);
    let sessions = restored.sessions;
    if sessions.is_empty() {
        return;
    }
    let limits = persist::RestoreLimits::of(&core.config().session);
    let done = persist::restore(&core.registry, sessions, core.clock.tick(), limits);
    bump(&core.stats.state_sessions_loaded, done.sessions);
    bump(
        &core.stats.state_messages_not_loaded,
        done.messages_left_out,
    );
    tracing::info!(
        worker = core.index,
        sessions = done.sessions,
        messages = done.messages,
        sessions_left_out = done.sessions_left_out,
        messages_left_out = done.messages_left_out,
        "sessions restored"
    );
}

/// New process of an upgrade: takes this worker's share of the old process's connections.
async fn adopt(
    core: &Rc<Core>,
    share: Option<(flume::Receiver<Handed>, flume::Sender<usize>)>,
) -> Result<(), String> {
    let Some((share, adopted_tx)) = share else {
        return Ok(());
    };
    let share = share
        .recv_async()
        .await
        .map_err(|_| "the upgrade ended before this worker's share came".to_string())?;
    let started = std::time::Instant::now();
    let adopted = handover::adopt(core, share).map_err(|e| e.to_string())?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(worker = core.index, adopted, ms, "connections adopted");
    let _ = adopted_tx.send(adopted);
    Ok(())
}
