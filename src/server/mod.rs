//! The server entry: bind, run the workers, shut down.

pub mod accept;
pub mod handshake;
pub mod health;
pub mod scrape;
pub mod steer;
pub mod worker;

/// Where a connection goes is the session layer's decision (`owner_core`); re-exported here
/// where it was first, for the integration tests that name it.
pub use crate::session::handoff;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::runtime::driver::{self, Driver};
use crate::runtime::Shared;
use crate::stats::CoreGauges;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Driver(#[from] driver::UringUnavailable),
    #[error("cannot start worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("worker failed to start: {0}")]
    Worker(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Scrapes waiting per core; more at once are answered with 503.
const SCRAPES_QUEUED: usize = 8;

/// Listeners bound before any worker starts, so port 0 can be resolved and a bind error is
/// reported before anything runs.
pub struct Server {
    config: Arc<Config>,
    driver: Driver,
    listeners: Vec<std::net::TcpListener>,
    admin: std::net::TcpListener,
    /// `cluster.internal_listen`, one per worker like the public listener.
    internal: Vec<std::net::TcpListener>,
    auth: Option<Authenticator>,
    cluster_secret: Option<Arc<Vec<u8>>>,
    steering: Steering,
}

/// How connections reach their client address's home core (`server/steer.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// One worker, or no per-IP limit: the home does not matter.
    Off,
    /// The kernel puts each connection on its home core (the reuseport BPF program).
    Bpf,
    /// The program could not be attached: a connection that lands elsewhere is handed over.
    Handoff,
}

impl Steering {
    pub fn as_str(self) -> &'static str {
        match self {
            Steering::Off => "off",
            Steering::Bpf => "bpf",
            Steering::Handoff => "handoff",
        }
    }
}

/// Attaches the steering program to the public listeners' group when homes matter. A failure
/// is not fatal: each worker then hands a connection that landed on the wrong core to its
/// client's home, which keeps every figure exact at the cost of one more hop.
fn steer(config: &Config, listeners: &[std::net::TcpListener]) -> Steering {
    let per_ip = crate::limits::IpLimits::configured(&config.limits);
    if listeners.len() < 2 || !per_ip {
        return Steering::Off;
    }
    let program = steer::program(listeners.len(), &config.security.trusted_proxies);
    match steer::attach(&listeners[0], &program) {
        Ok(()) => Steering::Bpf,
        Err(e) => {
            tracing::warn!(error = %e, "could not attach the client-address steering program; connections that land on another core than their address's are handed over");
            Steering::Handoff
        }
    }
}

fn bind_listener(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(reuse_port)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// One SO_REUSEPORT listener per worker on `addr` (port 0: the port the first one got), for
/// the public listener and the node-to-node one alike.
fn bind_per_worker(
    addr: SocketAddr,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, ServerError> {
    let bind = |addr: SocketAddr| {
        bind_listener(addr, true).map_err(|source| ServerError::Bind { addr, source })
    };
    // SO_REUSEPORT would let a second relay bind the same port and silently take half the
    // connections (splitting sessions): a plain bind first proves the port is free.
    if addr.port() != 0 {
        drop(bind_listener(addr, false).map_err(|source| ServerError::Bind { addr, source })?);
    }
    let first = bind(addr)?;
    let resolved = first
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind(resolved)?);
    }
    Ok(listeners)
}

/// Stops a running server when triggered; cloneable, usable from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    senders: Arc<Vec<flume::Sender<()>>>,
}

impl ShutdownHandle {
    pub fn trigger(&self) {
        for s in self.senders.iter() {
            let _ = s.try_send(());
        }
    }
}

impl Server {
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        let driver = driver::resolve(config.driver)?;
        let auth = Authenticator::from_config(&config)?;
        let listeners = bind_per_worker(config.listen, config.workers)?;
        let admin =
            bind_listener(config.admin_listen, false).map_err(|source| ServerError::Bind {
                addr: config.admin_listen,
                source,
            })?;
        let internal = match (config.cluster.internal_listen, &config.cluster.redis_url) {
            (Some(addr), Some(_)) => bind_per_worker(addr, config.workers)?,
            _ => Vec::new(),
        };
        let cluster_secret = config.cluster_secret()?.map(Arc::new);
        let steering = steer(&config, &listeners);
        Ok(Server {
            config: Arc::new(config),
            driver,
            listeners,
            admin,
            internal,
            auth,
            cluster_secret,
            steering,
        })
    }

    /// How connections reach their client address's home core.
    pub fn steering(&self) -> Steering {
        self.steering
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0]
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The node-to-node listener's address (cluster mode with `cluster.internal_listen`).
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.first().and_then(|l| l.local_addr().ok())
    }

    pub fn driver(&self) -> &'static str {
        self.driver.name()
    }

    /// Starts the workers; returns once every one listens, with the handle to stop them and
    /// the threads to join.
    pub fn start(self) -> Result<Running, ServerError> {
        let workers = self.listeners.len();
        let mut handoff_tx = Vec::new();
        let mut handoff_rx = Vec::new();
        let mut scrape_tx = Vec::new();
        let mut scrape_rx = Vec::new();
        let mut release_tx = Vec::new();
        let mut release_rx = Vec::new();
        // Room for a release from every connection the server can hold at once (upgraded,
        // handed over, or in its handshake): it cannot fill. The queue allocates only for
        // what waits in it, which is drained at once.
        let l = &self.config.limits;
        let releases = l
            .max_connections
            .saturating_add(workers.saturating_mul(l.handoff_queue + l.max_handshakes));
        for _ in 0..workers {
            let (tx, rx) = flume::bounded(self.config.limits.handoff_queue);
            handoff_tx.push(tx);
            handoff_rx.push(rx);
            let (tx, rx) = flume::bounded(releases);
            release_tx.push(tx);
            release_rx.push(rx);
            let (tx, rx) = flume::bounded(SCRAPES_QUEUED);
            scrape_tx.push(tx);
            scrape_rx.push(rx);
        }
        let listen = self.local_addr();
        let internal_addr = self.internal_addr();
        let cluster_view = self.config.cluster.redis_url.as_ref().map(|_| {
            let mut id = crate::cluster::Identity::of(&self.config, listen);
            // Port 0 resolved: other nodes need the real one.
            id.internal = internal_addr.map(|a| a.to_string());
            Arc::new(crate::cluster::View::new(id))
        });
        let mut command_tx = Vec::new();
        let mut command_rx = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = flume::bounded(crate::cluster::ask::COMMAND_QUEUE);
            command_tx.push(tx);
            command_rx.push(rx);
        }
        let (request_tx, request_rx) = flume::bounded(self.config.cluster.request_queue);
        let cluster_on = cluster_view.is_some();
        let shared = Arc::new(Shared {
            cluster: cluster_view.clone(),
            config: self.config.clone(),
            started: Instant::now(),
            driver: self.driver.name(),
            gauges: (0..workers).map(|_| CoreGauges::default()).collect(),
            handoff: handoff_tx,
            ip_release: release_tx,
            scrape: scrape_tx,
            auth: self.auth,
            cluster_requests: cluster_on.then_some(request_tx),
            cluster_secret: self.cluster_secret,
        });
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut stop = Vec::new();
        let mut threads = Vec::new();
        let mut admin = Some(self.admin);
        let mut internal = self.internal.into_iter();
        let mut commands = command_rx.into_iter();
        let mut releases = release_rx.into_iter();
        let inboxes = handoff_rx.into_iter().zip(scrape_rx);
        for (index, (listener, (handoffs, scrapes))) in
            self.listeners.into_iter().zip(inboxes).enumerate()
        {
            let (stop_tx, stop_rx) = flume::bounded(1);
            stop.push(stop_tx);
            let setup = worker::WorkerSetup {
                index,
                shared: shared.clone(),
                listener,
                admin: admin.take(),
                internal: internal.next(),
                commands: commands.next().filter(|_| cluster_on),
                handoffs,
                releases: releases.next().expect("one per worker"),
                scrapes,
                shutdown: stop_rx,
                ready: ready_tx.clone(),
            };
            let driver = self.driver;
            let t = std::thread::Builder::new()
                .name(format!("ringrelay-w{index}"))
                .spawn(move || {
                    if let Err(e) = monoio::utils::bind_to_cpu_set([index % cpus]) {
                        // Still correct, only slower: say so rather than run unpinned unseen.
                        tracing::warn!(worker = index, error = %e, "could not pin worker to its core");
                    }
                    let ready = setup.ready.clone();
                    if let Err(e) = driver::block_on(driver, worker::run(setup)) {
                        let _ = ready.send(Err(format!("worker {index}: {e}")));
                    }
                })
                .map_err(ServerError::Spawn)?;
            threads.push(t);
        }
        drop(ready_tx);
        let handle = ShutdownHandle {
            senders: Arc::new(stop),
        };
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    handle.trigger();
                    return Err(ServerError::Worker(e));
                }
                Err(_) => {
                    handle.trigger();
                    return Err(ServerError::Worker(
                        "a worker exited during start-up".into(),
                    ));
                }
            }
        }
        // Registered only once every worker listens: the fleet never sees a node that cannot
        // take a connection yet.
        let member = match (&self.config.cluster.redis_url, cluster_view) {
            (Some(url), Some(view)) => {
                let wiring = crate::cluster::Wiring {
                    requests: request_rx,
                    commands: command_tx,
                };
                Some(
                    crate::cluster::Member::start(url, view, shared.clone(), wiring).map_err(
                        |e| {
                            handle.trigger();
                            ServerError::Spawn(e)
                        },
                    )?,
                )
            }
            _ => None,
        };
        Ok(Running {
            handle,
            threads,
            shared,
            member,
        })
    }
}

pub struct Running {
    pub handle: ShutdownHandle,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub shared: Arc<Shared>,
    /// The membership thread (cluster mode).
    member: Option<crate::cluster::Member>,
}

impl Running {
    /// Waits for every worker to finish (after `handle.trigger()`), then leaves the fleet.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(m) = self.member {
            m.stop();
        }
    }
}
