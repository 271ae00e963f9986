//! Fleet membership: one thread of its own (not a worker) keeps this node's entry in Redis
//! alive and reads the fleet's, with the redis crate's blocking client. Nothing here is on
//! the forwarding path: the workers never wait for it, and it reads their load from the
//! gauges they already publish for /health. What it learns is kept in a [`View`] that /health
//! and /stats read.

use super::breaker::{Breaker, State};
use super::node::{default_node_id, node_key, NodeInfo};
use crate::config::Config;
use crate::runtime::Shared;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every Redis call gives up after this, so a partitioned Redis cannot hold the thread.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Failures in a row that open the breaker, and its first and longest wait.
const BREAKER_THRESHOLD: u32 = 2;
const BREAKER_WAIT: Duration = Duration::from_millis(500);
const BREAKER_MAX_WAIT: Duration = Duration::from_secs(10);
/// How often the thread looks at its stop flag between heartbeats.
const STOP_POLL: Duration = Duration::from_millis(50);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This node's identity in the fleet, resolved from the config.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    pub region: String,
    pub public_url: String,
    pub internal: Option<String>,
    pub prefix: String,
}

impl Identity {
    pub fn of(cfg: &Config, listen: std::net::SocketAddr) -> Identity {
        let c = &cfg.cluster;
        let node_id = if c.node_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            default_node_id(host.trim(), listen.port())
        } else {
            c.node_id.clone()
        };
        let public_url = if c.public_url.is_empty() {
            format!("ws://{listen}")
        } else {
            c.public_url.clone()
        };
        Identity {
            node_id,
            region: c.region.clone(),
            public_url,
            internal: c.internal_listen.map(|a| a.to_string()),
            prefix: c.key_prefix.clone(),
        }
    }
}

/// What the node knows of the fleet, for /health and /stats.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub redis_up: bool,
    pub breaker: &'static str,
    /// This node's entry was written by the last heartbeat.
    pub registered: bool,
    pub nodes: Vec<NodeInfo>,
    pub commands: u64,
    pub errors: u64,
    pub connects: u64,
    pub unreadable_entries: u64,
    pub last_error: Option<String>,
}

/// Written by the membership thread, read by /health and /stats (off the forwarding path).
pub struct View {
    pub identity: Identity,
    inner: Mutex<Snapshot>,
}

impl View {
    pub fn new(identity: Identity) -> View {
        View {
            identity,
            inner: Mutex::new(Snapshot {
                redis_up: false,
                breaker: State::Closed.name(),
                registered: false,
                nodes: Vec::new(),
                commands: 0,
                errors: 0,
                connects: 0,
                unreadable_entries: 0,
                last_error: None,
            }),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        match self.inner.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The short form for /health.
    pub fn health_json(&self) -> serde_json::Value {
        let s = self.snapshot();
        serde_json::json!({
            "node_id": self.identity.node_id,
            "region": self.identity.region,
            "redis": if s.redis_up { "up" } else { "down" },
            "breaker": s.breaker,
            "registered": s.registered,
            "nodes": s.nodes.len(),
        })
    }

    /// The long form for /stats: the fleet as this node last read it.
    pub fn stats_json(&self) -> serde_json::Value {
        let s = self.snapshot();
        serde_json::json!({
            "node_id": self.identity.node_id,
            "region": self.identity.region,
            "public_url": self.identity.public_url,
            "redis": if s.redis_up { "up" } else { "down" },
            "breaker": s.breaker,
            "registered": s.registered,
            "redis_commands": s.commands,
            "redis_errors": s.errors,
            "redis_connects": s.connects,
            "unreadable_entries": s.unreadable_entries,
            "last_error": s.last_error,
            "nodes": s.nodes,
        })
    }
}

/// The running membership thread.
pub struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    /// Starts the thread; `shared` gives it the workers' load gauges.
    pub fn start(url: &str, view: Arc<View>, shared: Arc<Shared>) -> std::io::Result<Member> {
        let client = redis::Client::open(url)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringrelay-cluster".into())
            .spawn(move || run(client, view, shared, flag))?;
        Ok(Member {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread; it removes this node's entry on the way out (best effort).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One open connection and the commands sent on it.
struct Link<'a> {
    con: redis::Connection,
    view: &'a View,
}

impl Link<'_> {
    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        self.view.update(|s| s.commands += 1);
        cmd.query(&mut self.con)
    }

    fn register(&mut self, entry: &NodeInfo, ttl: Duration) -> redis::RedisResult<()> {
        let key = node_key(&self.view.identity.prefix, &self.view.identity.node_id);
        let json = serde_json::to_string(entry).unwrap_or_default();
        self.query(
            redis::cmd("SET")
                .arg(key)
                .arg(json)
                .arg("PX")
                .arg(ttl.as_millis() as u64),
        )
    }

    fn fleet(&mut self) -> redis::RedisResult<(Vec<NodeInfo>, usize)> {
        let read = super::fleet::read(&mut self.con, &self.view.identity.prefix);
        let commands = read.as_ref().map_or(1, |f| f.commands);
        self.view.update(|s| s.commands += commands);
        read.map(|f| (f.nodes, f.unreadable))
    }

    fn deregister(&mut self) {
        let key = node_key(&self.view.identity.prefix, &self.view.identity.node_id);
        let _: redis::RedisResult<()> = self.query(redis::cmd("DEL").arg(key));
    }
}

fn entry(view: &View, shared: &Shared, started_ms: u64) -> NodeInfo {
    let cfg = &shared.config;
    let id = &view.identity;
    NodeInfo {
        node_id: id.node_id.clone(),
        region: id.region.clone(),
        public_url: id.public_url.clone(),
        internal: id.internal.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        workers: shared.workers(),
        max_connections: cfg.limits.max_connections,
        max_sessions: cfg.limits.max_sessions,
        connections: shared.gauges.iter().map(|g| g.connections()).sum(),
        sessions: shared.gauges.iter().map(|g| g.sessions()).sum(),
        started_ms,
        written_ms: now_ms(),
    }
}

fn connect(client: &redis::Client, view: &View) -> redis::RedisResult<redis::Connection> {
    view.update(|s| s.connects += 1);
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

fn run(client: redis::Client, view: Arc<View>, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let cfg = &shared.config.cluster;
    let started_ms = now_ms();
    let mut breaker = Breaker::new(BREAKER_THRESHOLD, BREAKER_WAIT, BREAKER_MAX_WAIT);
    let mut con: Option<redis::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let round_start = Instant::now();
        if breaker.allow(round_start) {
            let result = (|| {
                let c = match con.take() {
                    Some(c) => c,
                    None => connect(&client, &view)?,
                };
                let mut link = Link {
                    con: c,
                    view: &view,
                };
                link.register(&entry(&view, &shared, started_ms), cfg.node_ttl)?;
                let fleet = link.fleet()?;
                Ok::<_, redis::RedisError>((link.con, fleet))
            })();
            match result {
                Ok((c, (nodes, bad))) => {
                    if !breaker_was_closed(&breaker) {
                        tracing::info!(nodes = nodes.len(), "redis reachable again: registered");
                    }
                    breaker.success();
                    con = Some(c);
                    view.update(|s| {
                        s.redis_up = true;
                        s.registered = true;
                        s.nodes = nodes;
                        s.unreadable_entries += bad as u64;
                        s.last_error = None;
                    });
                }
                Err(e) => {
                    breaker.failure(Instant::now());
                    if view.snapshot().redis_up {
                        tracing::warn!(error = %e, "redis unreachable: this node keeps serving its own sessions");
                    }
                    view.update(|s| {
                        s.redis_up = false;
                        s.registered = false;
                        s.errors += 1;
                        s.last_error = Some(e.to_string());
                    });
                }
            }
            view.update(|s| s.breaker = breaker.state().name());
        }
        // Waits out the heartbeat in short steps, so a stop is noticed at once.
        while !stop.load(Ordering::Relaxed) && round_start.elapsed() < cfg.heartbeat {
            std::thread::sleep(STOP_POLL.min(cfg.heartbeat));
        }
    }
    // Leaving: the entry goes now rather than after its TTL, so the fleet learns at once.
    if let Some(c) = con {
        let mut link = Link {
            con: c,
            view: &view,
        };
        link.deregister();
    }
}

fn breaker_was_closed(b: &Breaker) -> bool {
    b.state() == State::Closed
}
