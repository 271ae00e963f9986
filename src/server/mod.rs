//! The server entry: bind, run the workers, shut down.
#![forbid(unsafe_code)]

pub(crate) mod accept;
mod access;
mod admin;
pub(crate) mod handshake;
pub(crate) mod health;
pub mod reload;
pub(crate) mod scrape;
pub(crate) mod state;
pub(crate) mod steer;
pub(crate) mod tls;
pub mod upgrade;
pub mod watchdog;
pub(crate) mod worker;

/// Where a connection goes is the session layer's decision (`owner_core`); re-exported here
/// where it was first, for the integration tests that name it.
pub use crate::session::handoff;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::context::Shared;
use crate::runtime::driver::{self, Driver};
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
    #[error("listeners: {0}")]
    Listeners(String),
    /// `log.access` names a file that cannot be opened for appending.
    #[error("{0}")]
    AccessLog(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    AdminTls(#[from] crate::tls::AdminTlsError),
    #[error(transparent)]
    LinkTls(#[from] crate::tls::LinkTlsError),
    /// `session.state_dir` cannot be made or written.
    #[error("{0}")]
    State(String),
}

/// Has every worker reopen its `log.access` file at its next write or tick (SIGUSR1: after
/// logrotate renamed it, the old file stops growing and a new one takes the lines).
pub fn reopen_access_logs() {
    crate::stats::access::request_reopen();
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
    /// `tls.listen`, one per worker like the public listener; empty without TLS.
    tls_listeners: Vec<std::net::TcpListener>,
    /// What the TLS listener serves, built (certificates read) before anything runs.
    tls: Option<crate::tls::ServerTls>,
    /// What the admin listener serves TLS with (`admin_tls.*`); `None`: plain.
    admin_tls: Option<crate::tls::ServerTls>,
    auth: Option<Authenticator>,
    cluster_secret: Option<Arc<Vec<u8>>>,
    /// The node-to-node link's TLS (`cluster.tls_*`), built before anything runs.
    cluster_tls: Option<crate::tls::LinkTls>,
    steering: Steering,
    /// New process of a binary upgrade: each worker's share to adopt before it listens, and
    /// where the workers say how many connections they adopted.
    adopting: Option<Adopting>,
}

use crate::relay::handover as relay_handover;

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
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux clones the listener's
    // options into each child): set once here, it saves a setsockopt per connection.
    s.set_nodelay(true)?;
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

/// The caller's way to stop a server run by [`run`]: keep the [`Shutdown`], pass the
/// [`ShutdownSignal`] to the server. A plain channel rather than a future because no runtime
/// runs on the caller's thread: each worker runs its own, so the thread that called `run`
/// waits on the signal and then tells every worker (docs/architecture.md, "The server entry").
#[derive(Clone)]
pub struct Shutdown {
    tx: flume::Sender<()>,
}

/// What [`run`] waits on: fires when any [`Shutdown`] is triggered, or when every one has
/// been dropped (a test that panics does not leave its server running).
pub struct ShutdownSignal {
    rx: flume::Receiver<()>,
}

impl Shutdown {
    /// A trigger and the signal it fires.
    pub fn new() -> (Shutdown, ShutdownSignal) {
        let (tx, rx) = flume::bounded(1);
        (Shutdown { tx }, ShutdownSignal { rx })
    }

    /// Asks the server to stop; more calls change nothing.
    pub fn trigger(&self) {
        let _ = self.tx.try_send(());
    }
}

impl ShutdownSignal {
    /// Blocks until the signal fires.
    fn wait(self) {
        let _ = self.rx.recv();
    }
}

/// The listeners a server runs on, bound by its caller (port 0 allowed: the server uses the
/// ports they got).
pub struct Listeners {
    /// The public listener, one per worker: `config.workers` sockets of one SO_REUSEPORT
    /// group (one plain listener for one worker). Each worker accepts on its own, so the
    /// kernel (and the steering program) can spread connections over the cores.
    pub public: Vec<std::net::TcpListener>,
    /// The admin listener (`/health`, `/stats`, `/metrics`), served by the first worker.
    pub admin: std::net::TcpListener,
    /// `cluster.internal_listen`, one per worker like the public listener; empty when the
    /// node takes no node-to-node links.
    pub internal: Vec<std::net::TcpListener>,
    /// `tls.listen`, one per worker like the public listener (every public route, over
    /// TLS); empty when there is no TLS listener.
    pub tls: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// Binds what `config` names: `listen` and `cluster.internal_listen` once per worker
    /// (SO_REUSEPORT, after proving the port free), `admin_listen` once.
    pub fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let public = bind_per_worker(config.listen, config.workers)?;
        let admin =
            bind_listener(config.admin_listen, false).map_err(|source| ServerError::Bind {
                addr: config.admin_listen,
                source,
            })?;
        let internal = match (config.cluster.internal_listen, &config.cluster.redis_url) {
            (Some(addr), Some(_)) => bind_per_worker(addr, config.workers)?,
            _ => Vec::new(),
        };
        let tls = match config.tls.listen {
            Some(addr) => bind_per_worker(addr, config.workers)?,
            None => Vec::new(),
        };
        Ok(Listeners {
            public,
            admin,
            internal,
            tls,
        })
    }

    /// Refuses a set that does not give each worker its share, and makes every socket
    /// non-blocking (the epoll driver needs it; a caller's `std::net::TcpListener::bind`
    /// leaves it blocking).
    fn check(&self, workers: usize) -> Result<(), ServerError> {
        let per_worker = |what: &str, n: usize| {
            if n == workers {
                Ok(())
            } else {
                Err(ServerError::Listeners(format!(
                    "{n} {what} listener(s) for {workers} worker(s): give one per worker"
                )))
            }
        };
        per_worker("public", self.public.len())?;
        if !self.internal.is_empty() {
            per_worker("internal", self.internal.len())?;
        }
        if !self.tls.is_empty() {
            per_worker("TLS", self.tls.len())?;
        }
        let all = self.public.iter().chain(&self.internal).chain(&self.tls);
        for l in all.chain(std::iter::once(&self.admin)) {
            l.set_nonblocking(true)
                .map_err(|e| ServerError::Listeners(format!("cannot make non-blocking: {e}")))?;
            // Inherited by every accepted socket, as on the listeners bound here.
            socket2::SockRef::from(l)
                .set_nodelay(true)
                .map_err(|e| ServerError::Listeners(format!("cannot set TCP_NODELAY: {e}")))?;
        }
        Ok(())
    }
}

/// Runs a server on listeners the caller bound until `shutdown` fires, then stops it as a
/// SIGTERM does (every connection closed with 1001, up to `shutdown_grace` to finish) and
/// returns. Blocks the calling thread; the workers run on their own threads.
pub fn run(
    config: Config,
    listeners: Listeners,
    shutdown: ShutdownSignal,
) -> Result<(), ServerError> {
    Server::with_listeners(config, listeners)?.run(shutdown)
}

/// Each worker's share to adopt and where it says how many it adopted.
type Adopting = (
    Vec<flume::Receiver<relay_handover::Handed>>,
    flume::Sender<usize>,
);

/// Each worker's ends of the queues other threads reach it through.
struct Inbox {
    handoffs: flume::Receiver<handoff::Handoff>,
    releases: flume::Receiver<std::net::IpAddr>,
    scrapes: flume::Receiver<flume::Sender<crate::stats::CoreSnapshot>>,
    commands: flume::Receiver<crate::fleet::ask::Command>,
    reloads: flume::Receiver<crate::context::reload::ReloadOrder>,
    upgrades: flume::Receiver<upgrade::gate::UpgradeOrder>,
}

/// The sending ends of every worker's inbox, in worker order.
struct Outboxes {
    handoff: Vec<flume::Sender<handoff::Handoff>>,
    ip_release: Vec<flume::Sender<std::net::IpAddr>>,
    scrape: Vec<flume::Sender<flume::Sender<crate::stats::CoreSnapshot>>>,
    commands: Vec<flume::Sender<crate::fleet::ask::Command>>,
    reloads: Vec<flume::Sender<crate::context::reload::ReloadOrder>>,
    upgrades: Vec<flume::Sender<upgrade::gate::UpgradeOrder>>,
}

/// Creates every worker's bounded inboxes before any thread starts, so each worker can be
/// given the senders to all the others.
fn inboxes(config: &Config, workers: usize) -> (Outboxes, Vec<Inbox>) {
    // Room for a release from every connection the server can hold at once (upgraded,
    // handed over, or in its handshake): it cannot fill. The queue allocates only for
    // what waits in it, which is drained at once.
    let l = &config.limits;
    let releases = l
        .max_connections
        .saturating_add(workers.saturating_mul(l.handoff_queue + l.max_handshakes));
    let mut out = Outboxes {
        handoff: Vec::new(),
        ip_release: Vec::new(),
        scrape: Vec::new(),
        commands: Vec::new(),
        reloads: Vec::new(),
        upgrades: Vec::new(),
    };
    let mut ins = Vec::new();
    for _ in 0..workers {
        let (handoff_tx, handoffs) = flume::bounded(l.handoff_queue);
        let (release_tx, releases) = flume::bounded(releases);
        let (scrape_tx, scrapes) = flume::bounded(SCRAPES_QUEUED);
        let (command_tx, commands) = flume::bounded(crate::fleet::ask::COMMAND_QUEUE);
        let (reload_tx, reloads) = flume::bounded(reload::QUEUED);
        let (upgrade_tx, upgrades) = flume::bounded(upgrade::gate::QUEUED);
        out.upgrades.push(upgrade_tx);
        out.handoff.push(handoff_tx);
        out.ip_release.push(release_tx);
        out.scrape.push(scrape_tx);
        out.commands.push(command_tx);
        out.reloads.push(reload_tx);
        ins.push(Inbox {
            handoffs,
            releases,
            scrapes,
            commands,
            reloads,
            upgrades,
        });
    }
    (out, ins)
}

/// Starts one worker thread, pinned to its core, running its own runtime of `driver`. A
/// worker that cannot start says so on `setup.ready`.
fn spawn_worker(
    driver: Driver,
    cpus: usize,
    setup: worker::WorkerSetup,
) -> Result<std::thread::JoinHandle<()>, ServerError> {
    let index = setup.index;
    std::thread::Builder::new()
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
        .map_err(ServerError::Spawn)
}

/// Waits until each of `workers` says it listens; on the first failure stops the others, so
/// start-up either completes or leaves nothing running.
fn await_ready(
    ready: &std::sync::mpsc::Receiver<Result<(), String>>,
    workers: usize,
    handle: &ShutdownHandle,
) -> Result<(), ServerError> {
    for _ in 0..workers {
        let failure = match ready.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => "a worker exited during start-up".into(),
        };
        handle.trigger();
        return Err(ServerError::Worker(failure));
    }
    Ok(())
}

impl Server {
    /// Binds the listeners `config` names, then prepares the server on them.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        Server::prepare(config, Listeners::bind)
    }

    /// Prepares a server on listeners the caller bound (see [`run`]).
    pub fn with_listeners(config: Config, listeners: Listeners) -> Result<Server, ServerError> {
        Server::prepare(config, |config| {
            listeners.check(config.workers)?;
            Ok(listeners)
        })
    }

    /// Resolves the driver and loads the token keys before taking the listeners (so a config
    /// error is reported before a bind error, as always), then the cluster secret, and steers
    /// the public listeners' group.
    fn prepare(
        config: Config,
        listeners: impl FnOnce(&Config) -> Result<Listeners, ServerError>,
    ) -> Result<Server, ServerError> {
        let driver = driver::resolve(config.driver)?;
        let auth = Authenticator::from_config(&config)?;
        if let crate::config::AccessTarget::File(path) = &config.log.access {
            crate::stats::access::check(path).map_err(ServerError::AccessLog)?;
        }
        let listeners = listeners(&config)?;
        let tls = if listeners.tls.is_empty() {
            None
        } else {
            Some(crate::tls::server_config(&config.tls)?)
        };
        let admin_tls = crate::tls::admin_config(&config.admin_tls, config.tls.min_version)?;
        let cluster_secret = config.cluster_secret()?.map(Arc::new);
        let cluster_tls = match config.cluster.redis_url {
            Some(_) => crate::tls::link_tls(&config.cluster)?,
            None => None,
        };
        let steering = steer(&config, &listeners.public);
        if !listeners.tls.is_empty() && steering == Steering::Bpf {
            // The TLS listeners are a reuseport group of their own; a failure here leaves
            // them on handoffs, which keeps every figure exact.
            let _ = steer(&config, &listeners.tls);
        }
        Ok(Server {
            config: Arc::new(config),
            driver,
            listeners: listeners.public,
            admin: listeners.admin,
            internal: listeners.internal,
            tls_listeners: listeners.tls,
            tls,
            admin_tls,
            auth,
            cluster_secret,
            cluster_tls,
            steering,
            adopting: None,
        })
    }

    /// Makes the workers adopt `shares` (one per worker, in order) before they accept or
    /// report ready: the new process of a binary upgrade (`server::upgrade`).
    pub fn adopting(
        mut self,
        shares: Vec<flume::Receiver<relay_handover::Handed>>,
        adopted: flume::Sender<usize>,
    ) -> Server {
        self.adopting = Some((shares, adopted));
        self
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

    /// The TLS listener's address (with `tls.listen`).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listeners.first().and_then(|l| l.local_addr().ok())
    }

    /// The node-to-node listener's address (cluster mode with `cluster.internal_listen`).
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.first().and_then(|l| l.local_addr().ok())
    }

    pub fn driver(&self) -> &'static str {
        self.driver.name()
    }

    /// Starts the server, waits for `shutdown`, stops it gracefully and returns once every
    /// worker has finished.
    pub fn run(self, shutdown: ShutdownSignal) -> Result<(), ServerError> {
        let running = self.start()?;
        shutdown.wait();
        running.handle.trigger();
        running.join();
        Ok(())
    }

    /// This node as the fleet sees it (cluster mode), with the ports actually bound.
    fn cluster_view(&self) -> Option<Arc<crate::fleet::view::View>> {
        self.config.cluster.redis_url.as_ref()?;
        let mut id = crate::fleet::view::Identity::of(&self.config, self.local_addr());
        // Port 0 resolved: other nodes need the real one.
        id.internal = self.internal_addr().map(|a| a.to_string());
        Some(Arc::new(crate::fleet::view::View::new(id)))
    }

    /// Starts the workers; returns once every one listens, with the handle to stop them and
    /// the threads to join.
    pub fn start(self) -> Result<Running, ServerError> {
        crate::runtime::chunk::purge_freed_pages_at_once();
        let workers = self.listeners.len();
        let (out, inboxes) = inboxes(&self.config, workers);
        let cluster_view = self.cluster_view();
        let (request_tx, request_rx) = flume::bounded(self.config.cluster.request_queue);
        let cluster_on = cluster_view.is_some();
        let listen = self.local_addr();
        let shared = Arc::new(Shared {
            cluster: cluster_view.clone(),
            config: self.config.clone(),
            started: Instant::now(),
            driver: self.driver.name(),
            gauges: (0..workers).map(|_| CoreGauges::default()).collect(),
            handoff: out.handoff,
            ip_release: out.ip_release,
            scrape: out.scrape,
            start_auth: self.auth.map(Arc::new),
            reloads: Default::default(),
            upgrades: Default::default(),
            cluster_requests: cluster_on.then_some(request_tx),
            cluster_secret: self.cluster_secret,
            cluster_tls: self.cluster_tls,
            tls: self.tls,
            admin_tls: self.admin_tls,
            tunnels: Default::default(),
            listen,
        });
        // Read back before any worker accepts: a client resuming at once finds its session.
        let me = cluster_view.as_ref().map(|v| &v.identity);
        let mut at_start = state::load(&self.config, workers, me)?;
        let keeper = at_start.keeper.take();
        // Copies of the listeners and the binary's path, for a SIGUSR2 upgrade: resolved now,
        // so a package upgrade that replaces the file is what runs next.
        let kept = upgrade::Kept::of(
            &self.listeners,
            &self.admin,
            &self.internal,
            &self.tls_listeners,
        )
        .map_err(|e| ServerError::Listeners(format!("cannot keep a copy for upgrades: {e}")))?;
        let upgrader = upgrade::Upgrader::new(
            std::env::current_exe().ok(),
            kept,
            out.upgrades.clone(),
            shared.clone(),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, threads) = Self::spawn_workers(
            self.driver,
            &shared,
            (
                self.listeners,
                self.admin,
                self.internal,
                self.tls_listeners,
            ),
            inboxes,
            (cluster_on, at_start, self.adopting),
            ready_tx,
        );
        let handle = ShutdownHandle {
            senders: Arc::new(stop),
        };
        let threads = threads.inspect_err(|_| handle.trigger())?;
        await_ready(&ready_rx, workers, &handle)?;
        if let Some(k) = &keeper {
            k.restored();
        }
        // Registered only once every worker listens: the fleet never sees a node that cannot
        // take a connection yet.
        let member = match (&self.config.cluster.redis_url, cluster_view) {
            (Some(url), Some(view)) => {
                let wiring = crate::cluster::Wiring {
                    requests: request_rx,
                    commands: out.commands,
                };
                let member = crate::cluster::Member::start(url, view, shared.clone(), wiring);
                Some(member.map_err(|e| {
                    handle.trigger();
                    ServerError::Spawn(e)
                })?)
            }
            _ => None,
        };
        Ok(Running {
            handle,
            threads,
            shared,
            member,
            reloads: out.reloads,
            upgrader,
            keeper,
        })
    }

    /// Gives each worker its listeners and inbox and starts its thread. Returns every stop
    /// sender made so far even when a spawn fails, so the caller can stop the ones running.
    #[allow(clippy::type_complexity)]
    fn spawn_workers(
        driver: Driver,
        shared: &Arc<Shared>,
        (public, admin, internal, tls): (
            Vec<std::net::TcpListener>,
            std::net::TcpListener,
            Vec<std::net::TcpListener>,
            Vec<std::net::TcpListener>,
        ),
        inboxes: Vec<Inbox>,
        (cluster_on, at_start, adopting): (bool, state::AtStart, Option<Adopting>),
        ready: std::sync::mpsc::Sender<Result<(), String>>,
    ) -> (
        Vec<flume::Sender<()>>,
        Result<Vec<std::thread::JoinHandle<()>>, ServerError>,
    ) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut stop = Vec::new();
        let mut threads = Vec::new();
        let mut admin = Some(admin);
        let mut internal = internal.into_iter();
        let mut tls = tls.into_iter();
        let mut restored = at_start.per_worker.into_iter();
        let (shares, adopted) = match adopting {
            Some((shares, adopted)) => (shares, Some(adopted)),
            None => (Vec::new(), None),
        };
        let mut shares = shares.into_iter();
        for (index, (listener, inbox)) in public.into_iter().zip(inboxes).enumerate() {
            let (stop_tx, stop_rx) = flume::bounded(1);
            stop.push(stop_tx);
            let setup = worker::WorkerSetup {
                index,
                shared: shared.clone(),
                listener,
                admin: admin.take(),
                internal: internal.next(),
                tls: tls.next(),
                commands: cluster_on.then_some(inbox.commands),
                handoffs: inbox.handoffs,
                releases: inbox.releases,
                scrapes: inbox.scrapes,
                reloads: inbox.reloads,
                shutdown: stop_rx,
                ready: ready.clone(),
                restored: restored.next().unwrap_or_default(),
                state_refused: if index == 0 { at_start.refused } else { 0 },
                snapshots: at_start.snapshots.clone(),
                upgrades: inbox.upgrades,
                adopt: adopted.clone().and_then(|tx| Some((shares.next()?, tx))),
            };
            match spawn_worker(driver, cpus, setup) {
                Ok(t) => threads.push(t),
                Err(e) => return (stop, Err(e)),
            }
        }
        (stop, Ok(threads))
    }
}

pub struct Running {
    pub handle: ShutdownHandle,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub shared: Arc<Shared>,
    /// The membership thread (cluster mode).
    member: Option<crate::cluster::Member>,
    /// Each worker's reload inbox (`Running::reload`).
    reloads: Vec<flume::Sender<crate::context::reload::ReloadOrder>>,
    /// Writes the sessions' state once the workers stopped (`session.state_dir`).
    keeper: Option<state::Keeper>,
    /// What SIGUSR2 runs (`server::upgrade`).
    pub upgrader: upgrade::Upgrader,
}

impl Running {
    /// Every worker thread has ended (the supervisor's cue to stop: server::watchdog).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// In cluster mode, a binary upgrade's new process: waits (up to half of
    /// `upgrade_timeout`) until this node registered and renewed every session its workers
    /// adopted, so that it says `holding` only once Redis names it for each of them
    /// (docs/upgrade.md, "Cluster mode"). False when the round did not end in time.
    pub fn cluster_registered(&self) -> bool {
        let wait = self.shared.config.upgrade_timeout / 2;
        self.member.as_ref().is_none_or(|m| m.first_round(wait))
    }

    /// Waits for every worker to finish (after `handle.trigger()`), writes the sessions'
    /// state (`session.state_dir`), then leaves the fleet.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(k) = self.keeper {
            k.save();
        }
        if let Some(m) = self.member {
            m.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bind_listener;
    use std::net::TcpStream;

    /// The accept loop sets no TCP_NODELAY per connection (before: one setsockopt each): it
    /// relies on the listener's being inherited by what it accepts.
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        listener.set_nonblocking(false).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
        // The client's socket says the option is not on by default.
        assert!(!client.nodelay().unwrap());
    }
}
