//! The cluster thread: one thread of its own (not a worker), with the redis crate's blocking
//! client. Every `cluster.heartbeat` it writes this node's registry entry, reads the fleet,
//! and renews (or, after Redis restarted, re-asserts) ownership of the sessions the workers
//! hold. In between it answers the workers' owner lookups, several to a pipeline. The
//! workers never wait for it on the forwarding path: only a new peer's handshake does.

use super::owners::Owners;
use super::redis::{self as store, IO_TIMEOUT};
use crate::context::Shared;
use crate::fleet::ask::{Command, Request};
use crate::fleet::breaker::{Breaker, State};
use crate::fleet::node::{node_key, NodeInfo};
use crate::fleet::view::View;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Failures in a row that open the breaker, and its first and longest wait.
const BREAKER_THRESHOLD: u32 = 2;
const BREAKER_WAIT: Duration = Duration::from_millis(500);
const BREAKER_MAX_WAIT: Duration = Duration::from_secs(10);
/// Rounds in a row this node must have read the fleet before it calls missing nodes gone.
const SETTLE_ROUNDS: u32 = 2;
/// Longest wait for requests before the stop flag is looked at again.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Requests answered with one pipeline at most.
const BATCH: usize = 512;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the cluster thread is given when it starts.
pub struct Wiring {
    pub requests: flume::Receiver<Request>,
    pub commands: Vec<flume::Sender<Command>>,
}

/// The running cluster thread.
pub struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Told once the first round (registration, the fleet, renewals) is over, done or not.
    first_round: flume::Receiver<()>,
}

impl Member {
    /// Starts the thread; `shared` gives it the workers' load gauges.
    pub fn start(
        url: &str,
        view: Arc<View>,
        shared: Arc<Shared>,
        wiring: Wiring,
    ) -> std::io::Result<Member> {
        let client = store::client(url)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (first_tx, first_round) = flume::bounded(1);
        let thread = std::thread::Builder::new()
            .name("ringrelay-cluster".into())
            .spawn(move || {
                let mut t = Thread {
                    client,
                    con: None,
                    // Waits no longer than a heartbeat, so that every node is back within about
                    // one heartbeat of Redis returning (see `Owners::fleet_changed`).
                    breaker: Breaker::new(
                        BREAKER_THRESHOLD,
                        BREAKER_WAIT.min(shared.config.cluster.heartbeat),
                        BREAKER_MAX_WAIT.min(shared.config.cluster.heartbeat),
                    ),
                    good_rounds: 0,
                    owners: Owners::new(&view.identity, &shared.config.cluster, wiring.commands),
                    view,
                    shared,
                    started_ms: now_ms(),
                    bytes_seen: None,
                };
                t.round();
                let _ = first_tx.try_send(());
                t.run(&wiring.requests, &flag);
            })?;
        Ok(Member {
            stop,
            thread: Some(thread),
            first_round,
        })
    }

    /// Waits up to `wait` for the thread's first round: this node registered and renewed (or
    /// claimed again) every session its workers hold. True when the round ended in time,
    /// whether Redis answered or not. A binary upgrade's new process waits for it before it
    /// says `holding` (docs/upgrade.md, "Cluster mode").
    pub fn first_round(&self, wait: Duration) -> bool {
        self.first_round.recv_timeout(wait).is_ok()
    }

    /// Stops the thread; it releases this node's sessions and removes its entry on the way
    /// out (best effort).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Thread {
    client: redis::Client,
    con: Option<redis::Connection>,
    breaker: Breaker,
    owners: Owners,
    view: Arc<View>,
    shared: Arc<Shared>,
    started_ms: u64,
    /// Rounds in a row that read the fleet.
    good_rounds: u32,
    /// Tunnel bytes as last counted, and when: the entry's bandwidth is the rate since.
    bytes_seen: Option<(Instant, u64)>,
}

impl Thread {
    fn run(&mut self, requests: &flume::Receiver<Request>, stop: &AtomicBool) {
        let heartbeat = self.shared.config.cluster.heartbeat;
        // The first round ran before this loop (`Member::first_round`).
        let mut next_round = Instant::now() + heartbeat;
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_round {
                self.round();
                next_round = Instant::now() + heartbeat;
            }
            let wait = next_round
                .saturating_duration_since(Instant::now())
                .min(STOP_POLL);
            match requests.recv_timeout(wait) {
                Ok(first) => {
                    let mut batch = vec![first];
                    batch.extend(requests.try_iter().take(BATCH - 1));
                    self.answer(batch);
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
        }
        self.leave();
    }

    fn failed(&mut self, e: &redis::RedisError) {
        self.con = None;
        self.good_rounds = 0;
        self.breaker.failure(Instant::now());
        // Said when Redis goes away, and on the first failure of all: a node that never
        // reached it (a wrong address, a certificate not trusted) says why once.
        let was = self.view.snapshot();
        if was.redis_up || was.errors == 0 {
            tracing::warn!(error = %e, "redis unreachable: this node keeps serving its own sessions");
        }
        let state = self.breaker.state().name();
        self.view.update(|s| {
            s.redis_up = false;
            s.registered = false;
            s.errors += 1;
            s.last_error = Some(e.to_string());
            s.breaker = state;
        });
    }

    /// Answers a batch of lookups and releases with one pipeline.
    fn answer(&mut self, batch: Vec<Request>) {
        let fleet = self.view.snapshot().nodes;
        let view = self.view.clone();
        // A fresh connection is preceded by a whole round, so that after Redis restarted this
        // node's entry and sessions are back before it answers any lookup.
        if self.con.is_none() && self.breaker.allow(Instant::now()) {
            self.round();
        }
        let Some(con) = self.con.as_mut() else {
            Owners::refuse(batch);
            return;
        };
        let t = Instant::now();
        let result = self.owners.answer(con, &fleet, batch, &view);
        view.record_rtt(t.elapsed());
        if let Err(e) = result {
            self.failed(&e);
        }
    }

    /// One heartbeat: register, read the fleet, renew the sessions the workers hold.
    fn round(&mut self) {
        if self.con.is_none() && !self.breaker.allow(Instant::now()) {
            return;
        }
        let held = self.owners.collect_sessions();
        let mut entry = entry(&self.view, &self.shared, self.started_ms);
        self.tunnel_figures(&mut entry);
        let ttl = self.shared.config.cluster.node_ttl;
        let view = self.view.clone();
        let result = (|| {
            let mut con = match self.con.take() {
                Some(c) => c,
                None => connect(&self.client, &view)?,
            };
            let t = Instant::now();
            register(&mut con, &view, &entry, ttl)?;
            view.record_rtt(t.elapsed());
            let t = Instant::now();
            let read = super::fleet::read(&mut con, &view.identity.prefix)?;
            view.record_rtt(t.elapsed());
            view.update(|s| s.commands += read.commands);
            let t = Instant::now();
            self.owners.renew(&mut con, &held, &view)?;
            view.record_rtt(t.elapsed());
            Ok::<_, redis::RedisError>((con, read))
        })();
        match result {
            Ok((con, read)) => {
                if self.breaker.state() != State::Closed {
                    tracing::info!(
                        nodes = read.nodes.len(),
                        "redis reachable again: registered"
                    );
                }
                self.breaker.success();
                self.con = Some(con);
                self.good_rounds = self.good_rounds.saturating_add(1);
                let settled = self.good_rounds > SETTLE_ROUNDS;
                self.owners.fleet_changed(&view, &read.nodes, settled);
                let state = self.breaker.state().name();
                view.update(|s| {
                    s.redis_up = true;
                    s.registered = true;
                    s.nodes = read.nodes;
                    s.unreadable_entries += read.unreadable as u64;
                    s.last_error = None;
                    s.breaker = state;
                });
            }
            Err(e) => self.failed(&e),
        }
    }

    /// The entry's tunnel figures the workers hold: bytes per second through this node's
    /// tunnels since the last round (0 at the first), and `max_tunnels` as a reload left it
    /// (the start config's until a worker answers). With tunnels off no worker is asked.
    fn tunnel_figures(&mut self, entry: &mut NodeInfo) {
        if !self.shared.config.tunnel.enabled {
            return;
        }
        let (bytes, max_tunnels) = self.owners.tunnel_figures();
        if let Some(m) = max_tunnels {
            entry.max_tunnels = m;
        }
        let now = (Instant::now(), bytes);
        entry.tunnel_bandwidth = match self.bytes_seen {
            Some((at, bytes)) if now.0 > at => {
                let secs = now.0.duration_since(at).as_secs_f64();
                (now.1.saturating_sub(bytes) as f64 / secs) as u64
            }
            _ => 0,
        };
        self.bytes_seen = Some(now);
    }

    /// Leaving: sessions and the entry go now rather than after their TTLs, so the fleet
    /// learns at once and the sessions' next peers can be seated elsewhere straight away.
    fn leave(&mut self) {
        let view = self.view.clone();
        if let Some(con) = self.con.as_mut() {
            self.owners.release_all(con, &view);
            let key = node_key(&view.identity.prefix, &view.identity.node_id);
            view.update(|s| s.commands += 1);
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(con);
        }
    }
}

fn register(
    con: &mut redis::Connection,
    view: &View,
    entry: &NodeInfo,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let key = node_key(&view.identity.prefix, &view.identity.node_id);
    let json = serde_json::to_string(entry).unwrap_or_default();
    view.update(|s| s.commands += 1);
    redis::cmd("SET")
        .arg(key)
        .arg(json)
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query(con)
}

fn entry(view: &View, shared: &Shared, started_ms: u64) -> NodeInfo {
    shared.node_info(&shared.config, &view.identity, started_ms, now_ms())
}

fn connect(client: &redis::Client, view: &View) -> redis::RedisResult<redis::Connection> {
    view.update(|s| s.connects += 1);
    store::connect(client, IO_TIMEOUT)
}
