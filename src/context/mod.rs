//! The worker's context: what each worker owns (`Core`), and the little that all workers
//! share (`Shared`). It holds each lower layer's per-core state (the buffer pool and clock of
//! `runtime`, the session registry and handoff inboxes of `session`, the per-IP tables of
//! `limits`, the token checker of `auth`, the cluster's per-worker state and fleet view of
//! `fleet`), and is handed to everything above it: relay, bridge, cluster and server.
//! Admission (`admit`) lives here because its checks read that state.
#![forbid(unsafe_code)]

pub(crate) mod admit;
pub(crate) mod reload;

use crate::config::Config;
use crate::limits::IpLimits;
use crate::runtime::clock::Clock;
use crate::runtime::pool::BufPool;
use crate::runtime::rng::CoreRng;
use crate::session::handoff::Handoff;
use crate::session::Registry;
use crate::stats::{CoreGauges, CoreHistograms, CoreSnapshot, CoreStats};
use local_sync::semaphore::Semaphore;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Shared by all workers and read off the forwarding path only (handoff, /health).
pub struct Shared {
    /// The config the relay started with. What a reload can change is read from each
    /// worker's own copy instead ([`Core::config`]); read this one only for keys a reload
    /// keeps (`config::FIXED_KEYS`: listeners, pool and queue sizes, the tick's timers).
    pub config: Arc<Config>,
    pub started: Instant,
    pub driver: &'static str,
    pub gauges: Vec<CoreGauges>,
    pub handoff: Vec<flume::Sender<Handoff>>,
    /// Each core's inbox of open-connection counts given back by connections that ended on
    /// another core (`limits::home`): once per connection, never per message.
    pub ip_release: Vec<flume::Sender<std::net::IpAddr>>,
    /// Each core's scrape inbox: a request is the channel to answer on.
    pub scrape: Vec<flume::Sender<flume::Sender<CoreSnapshot>>>,
    /// Token checks as the relay started; `None` when auth is off. Each worker starts its
    /// own copy from it ([`Core::auth`]), which a reload replaces.
    pub start_auth: Option<Arc<crate::auth::Authenticator>>,
    /// What the reloads came to, for /stats and /metrics (written by the main thread).
    pub reloads: crate::stats::ReloadStats,
    /// What the binary upgrades came to (SIGUSR2), for /stats and /metrics.
    pub upgrades: crate::stats::UpgradeStats,
    /// The fleet as the membership thread last read it (cluster mode only); read by /health
    /// and /stats, never by the forwarding path.
    pub cluster: Option<Arc<crate::fleet::view::View>>,
    /// Owner lookups and releases for the cluster thread (cluster mode only): bounded by
    /// `cluster.request_queue`, used at handshake time, never per message.
    pub cluster_requests: Option<flume::Sender<crate::fleet::ask::Request>>,
    /// The node-to-node link's secret (`cluster.secret`), read once at start.
    pub cluster_secret: Option<Arc<Vec<u8>>>,
    /// The node-to-node link's TLS at start (`cluster.tls_*`; `None`: the link is in clear).
    /// Each worker keeps its own current one in `Core::cluster_local`, which a reload
    /// replaces.
    pub cluster_tls: Option<crate::tls::LinkTls>,
    /// What the TLS listener serves at start (`tls.*`); each worker keeps its own current
    /// one in `Core::tls`, which a reload replaces.
    pub tls: Option<crate::tls::ServerTls>,
    /// What the admin listener serves TLS with at start (`admin_tls.*`; `None`: plain); the
    /// admin worker keeps its current one in `Core::admin_tls`, which a reload replaces.
    pub admin_tls: Option<crate::tls::ServerTls>,
    /// Tunnels held on this server, all workers (`tunnel.max_tunnels` and the quotas).
    pub tunnels: crate::limits::tunnels::Tally,
    /// The public listener's address as bound (port 0 resolved), for `/fleet`.
    pub listen: std::net::SocketAddr,
}

impl Shared {
    pub fn workers(&self) -> usize {
        self.gauges.len()
    }

    /// This node's registry entry as of now: what Redis holds for the cluster and what
    /// `/fleet` shows for a node alone, built in one place so the two never drift. Tunnel
    /// bandwidth is left 0 (only the cluster thread measures it).
    pub fn node_info(
        &self,
        cfg: &Config,
        id: &crate::fleet::view::Identity,
        started_ms: u64,
        now_ms: u64,
    ) -> crate::fleet::node::NodeInfo {
        crate::fleet::node::NodeInfo {
            node_id: id.node_id.clone(),
            region: id.region.clone(),
            public_url: id.public_url.clone(),
            internal: id.internal.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            workers: self.workers(),
            max_connections: cfg.limits.max_connections,
            max_sessions: cfg.limits.max_sessions,
            connections: self.gauges.iter().map(|g| g.connections()).sum(),
            sessions: self.gauges.iter().map(|g| g.sessions()).sum(),
            started_ms,
            written_ms: now_ms,
            max_tunnels: if cfg.tunnel.enabled {
                cfg.tunnel.max_tunnels
            } else {
                0
            },
            tunnels: self.tunnels.total() as u64,
            tunnel_bandwidth: 0,
            max_tunnel_bandwidth: cfg.tunnel.max_bandwidth as u64,
        }
    }
}

/// One worker's world. Only its own thread touches it, so everything in it is plain cells.
pub struct Core {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub pool: BufPool,
    pub registry: Registry,
    pub clock: Clock,
    pub stats: CoreStats,
    pub latency: CoreHistograms,
    /// The per-IP limits of the client addresses whose home this core is.
    pub ip_limits: IpLimits,
    /// Connections in their HTTP phase here (`limits.max_handshakes`).
    pub handshakes: Cell<usize>,
    /// Bridged requests waiting for an agent of a session this core owns.
    pub bridge: crate::session::bridged::Pending,
    /// Peers carried to other nodes and where the peers here came from (cluster mode).
    pub cluster_local: crate::fleet::local::Local,
    /// This worker's own secure random source (ids, keys, challenges).
    pub rng: CoreRng,
    /// This worker's tunnels, for /stats (`tunnel/`).
    pub tunnel_gauges: crate::limits::tunnels::TunnelGauges,
    next_id: Cell<u64>,
    /// Closed when the server shuts down; every waiter wakes with an error.
    pub shutdown: Semaphore,
    /// This worker's copy of the config in force: the start config until a reload replaces
    /// it whole (`reload::apply`). Only this thread touches it, so reading it takes no lock
    /// or atomic; a reader holds the `Rc` it got, so a swap never changes a config under it.
    live: RefCell<Rc<Config>>,
    /// This worker's token checker in force (`None`: auth off), swapped with `live`.
    auth: RefCell<Option<Rc<crate::auth::Authenticator>>>,
    /// The TLS configuration new handshakes here use (`None`: no TLS listener). The seam for
    /// a live reload: `set_tls` swaps it; connections already open keep the config they
    /// shook hands with (their session holds it).
    tls: std::cell::RefCell<Option<crate::tls::ServerTls>>,
    /// The same for the admin listener (`admin_tls.*`; `None`: the admin listener is plain).
    admin_tls: RefCell<Option<crate::tls::ServerTls>>,
}

impl Core {
    pub fn new(index: usize, shared: Arc<Shared>) -> Core {
        let cfg = &shared.config;
        Core {
            index,
            pool: BufPool::new(
                cfg.limits.read_buffer_bytes,
                cfg.limits.large_read_buffer_bytes,
                cfg.limits.pool_buffers,
                cfg.limits.max_read_buffers,
                cfg.limits.max_read_buffers * cfg.limits.pool_reserve_percent / 100,
            ),
            registry: Registry::default(),
            clock: Clock::new(shared.started),
            stats: CoreStats {
                access: access_log(&cfg.log),
                ..CoreStats::default()
            },
            latency: CoreHistograms::new(shared.config.stats.latency),
            ip_limits: IpLimits::new(&cfg.limits, index),
            handshakes: Cell::new(0),
            bridge: crate::session::bridged::Pending::default(),
            cluster_local: crate::fleet::local::Local::new(shared.cluster_tls.clone()),
            rng: CoreRng::new(),
            tunnel_gauges: Default::default(),
            next_id: Cell::new(0),
            shutdown: Semaphore::new(0),
            live: RefCell::new(Rc::new(Config::clone(&shared.config))),
            auth: RefCell::new(shared.start_auth.as_deref().cloned().map(Rc::new)),
            tls: std::cell::RefCell::new(shared.tls.clone()),
            admin_tls: RefCell::new(shared.admin_tls.clone()),
            shared,
        }
    }

    /// The config in force on this worker: what a connection or request reads when it
    /// starts. A reload swaps it; whoever holds the one it got keeps it unchanged.
    pub fn config(&self) -> Rc<Config> {
        self.live.borrow().clone()
    }

    /// `f` over the config in force, without taking a reference count: for the checks made
    /// on every read (the forwarding path). `f` cannot await, so no reload lands inside it.
    pub fn with_config<T>(&self, f: impl FnOnce(&Config) -> T) -> T {
        f(&self.live.borrow())
    }

    /// The token checker in force on this worker; `None` when auth is off.
    pub fn auth(&self) -> Option<Rc<crate::auth::Authenticator>> {
        self.auth.borrow().clone()
    }

    /// The rustls config a new TLS handshake here uses.
    pub fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.borrow().as_ref().map(|t| t.config.clone())
    }

    /// The certificates this worker serves now, for /stats and /metrics.
    pub fn tls_certificates(&self) -> Option<Arc<[crate::tls::CertInfo]>> {
        self.tls.borrow().as_ref().map(|t| t.certificates.clone())
    }

    /// The rustls config a new connection to the admin listener shakes hands with; `None`:
    /// the admin listener is plain.
    pub fn admin_tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.admin_tls.borrow().as_ref().map(|t| t.config.clone())
    }

    /// The admin listener's certificates, for /stats and /metrics.
    pub fn admin_tls_certificates(&self) -> Option<Arc<[crate::tls::CertInfo]>> {
        self.admin_tls
            .borrow()
            .as_ref()
            .map(|t| t.certificates.clone())
    }

    /// Replaces what new admin connections shake hands with (a reload).
    pub fn set_admin_tls(&self, tls: Option<crate::tls::ServerTls>) {
        *self.admin_tls.borrow_mut() = tls;
    }

    /// Replaces what new TLS handshakes use (a reload, built and checked on the main thread
    /// with `tls::server_config`); open connections keep theirs.
    pub fn set_tls(&self, tls: crate::tls::ServerTls) {
        *self.tls.borrow_mut() = Some(tls);
    }

    /// Gives back one open connection of `ip`, counted on core `home`: here at once, or by a
    /// message to `home`. The inbox is sized for every connection the server can hold, so it
    /// should never be full; if it is, the count stays taken and that is counted and logged.
    pub fn release_ip(&self, ip: std::net::IpAddr, home: usize) {
        if home == self.index {
            self.ip_limits.close(ip, self.clock.now_ms());
            return;
        }
        if let Err(flume::TrySendError::Full(_)) = self.shared.ip_release[home].try_send(ip) {
            crate::stats::bump(&self.stats.ip_release_overflow, 1);
            tracing::warn!(%ip, home, "per-IP release queue full: the count stays taken");
        }
    }

    /// Connection ids are unique across cores: the core index is in the low
    /// [`crate::config::WORKER_INDEX_BITS`] bits (`workers` is at most
    /// [`crate::config::MAX_WORKERS`]).
    pub fn next_conn_id(&self) -> u64 {
        let n = self.next_id.get() + 1;
        self.next_id.set(n);
        (n << crate::config::WORKER_INDEX_BITS) | self.index as u64
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_closed()
    }

    pub fn gauges(&self) -> &CoreGauges {
        &self.shared.gauges[self.index]
    }

    /// This core's figures now, for a scrape.
    pub fn snapshot(&self) -> CoreSnapshot {
        self.stats.read_buffer_waits.set(self.pool.waits.get());
        self.stats.large_reads.set(self.pool.large_taken.get());
        self.stats
            .ip_table_evictions
            .set(self.ip_limits.evictions.get());
        let sessions = self.registry.sessions();
        let paired = sessions.iter().filter(|s| s.peers().len() == 2).count();
        let lingering = sessions
            .iter()
            .filter(|s| s.lingering_since_ms.get().is_some() && s.is_empty())
            .count();
        let (kept_bytes, kept_capacity, kept_messages) =
            sessions.iter().fold((0, 0, 0), |(b, c, m), s| {
                let (b2, c2, m2) = s.kept();
                (b + b2, c + c2, m + m2)
            });
        CoreSnapshot {
            core: self.index,
            counters: self.stats.values(),
            closed_by: self.stats.closed_by.iter().map(|c| c.get()).collect(),
            refused_by: self.stats.refused_by.iter().map(|c| c.get()).collect(),
            gauges: vec![
                ("active_connections", self.registry.peer_count() as u64),
                ("active_sessions", self.registry.session_count() as u64),
                ("paired_sessions", paired as u64),
                ("read_buffers_in_use", self.pool.in_use.get() as u64),
                ("read_buffers_idle", self.pool.idle() as u64),
                (
                    "read_buffers_pinned",
                    (self.registry.pinned() + self.cluster_local.pinned()) as u64,
                ),
                ("ip_table_entries", self.ip_limits.len() as u64),
                ("handshakes_in_progress", self.handshakes.get() as u64),
                ("bridge_pending", self.bridge.len() as u64),
                ("bridge_connections", self.bridge.connections() as u64),
                ("buffered_bytes", kept_bytes as u64),
                ("buffered_capacity_bytes", kept_capacity as u64),
                ("buffered_messages", kept_messages as u64),
                ("lingering_sessions", lingering as u64),
                (
                    "carried_connections",
                    self.cluster_local.carry_count() as u64,
                ),
                (
                    "replay_bytes",
                    sessions.iter().map(|s| s.replay_bytes()).sum::<usize>() as u64,
                ),
                ("tunnels", self.tunnel_gauges.tunnels.get()),
                (
                    "tunnel_connections_waiting",
                    self.tunnel_gauges.waiting.get(),
                ),
                ("tunnel_connections_open", self.tunnel_gauges.joined.get()),
            ],
            latency: self.latency.snapshot(),
            sizes: crate::stats::sizes::this_core(),
        }
    }

    /// Publishes this core's connection and session counts for /health.
    pub fn publish_gauges(&self) {
        let g = self.gauges();
        g.set(
            self.registry.peer_count() as u64,
            self.registry.session_count() as u64,
        );
    }
}

/// The worker's access log, as `log.access` and `log.format` say.
fn access_log(log: &crate::config::LogConfig) -> crate::stats::access::AccessLog {
    use crate::config::{AccessTarget, LogFormat};
    use crate::stats::access::{AccessLog, Dest};
    let dest = match &log.access {
        AccessTarget::Off => None,
        AccessTarget::Stderr => Some(Dest::Stderr),
        AccessTarget::File(path) => Some(Dest::File(path)),
    };
    AccessLog::open(dest, log.format == LogFormat::Json)
}
