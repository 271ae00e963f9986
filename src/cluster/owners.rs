//! Session ownership, the cluster thread's half: answering lookups, renewing and
//! re-asserting what this node holds, releasing what ended, and telling workers when a
//! session must go (another node owns it) or a node left the fleet.

use super::redis::IO_TIMEOUT;
use crate::config::ClusterConfig;
use crate::fleet::ask::{Command, Request};
use crate::fleet::claim::{node_key_prefix, session_key, Owner, Unknown, CLAIM, RELEASE};
use crate::fleet::node::NodeInfo;
use crate::fleet::view::{Identity, View};
use crate::session::handoff::owner_core;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Sessions renewed per pipeline.
const RENEW_BATCH: usize = 1000;

pub struct Owners {
    me: String,
    region: String,
    prefix: String,
    node_prefix: String,
    ttl_ms: u64,
    /// One command queue per worker.
    workers: Vec<flume::Sender<Command>>,
    /// Sessions the workers held at the last round (released on the way out).
    held: HashSet<String>,
    /// Every node seen, with when this node last saw its entry.
    seen: HashMap<String, Instant>,
    node_ttl: Duration,
}

fn claim_cmd(pipe: &mut redis::Pipeline, o: &Owners, session: &str, candidate: &str) {
    pipe.cmd("EVAL")
        .arg(CLAIM)
        .arg(1)
        .arg(session_key(&o.prefix, session))
        .arg(candidate)
        .arg(o.ttl_ms)
        .arg(&o.node_prefix)
        .arg(&o.me);
}

fn release_cmd(pipe: &mut redis::Pipeline, o: &Owners, session: &str) {
    pipe.cmd("EVAL")
        .arg(RELEASE)
        .arg(1)
        .arg(session_key(&o.prefix, session))
        .arg(&o.me)
        .ignore();
}

impl Owners {
    pub fn new(id: &Identity, cfg: &ClusterConfig, workers: Vec<flume::Sender<Command>>) -> Self {
        Owners {
            me: id.node_id.clone(),
            region: id.region.clone(),
            prefix: id.prefix.clone(),
            node_prefix: node_key_prefix(&id.prefix),
            ttl_ms: cfg.session_ttl.as_millis() as u64,
            workers,
            held: HashSet::new(),
            seen: HashMap::new(),
            node_ttl: cfg.node_ttl,
        }
    }

    /// Lookups that cannot reach Redis are answered at once: the peer gets 503.
    pub fn refuse(batch: Vec<Request>) {
        for r in batch {
            if let Request::Claim { reply, .. } = r {
                let _ = reply.try_send(Owner::Unknown(Unknown::RedisDown));
            }
        }
    }

    /// The node a new session should be owned by: this one, unless the client hinted a
    /// region other than this node's and the fleet has a node there that can be carried to
    /// (the least loaded one).
    fn candidate<'a>(&'a self, fleet: &'a [NodeInfo], region: Option<&str>) -> &'a str {
        match region {
            Some(r) if r != self.region => fleet
                .iter()
                .filter(|n| n.region == r && n.internal.is_some() && n.node_id != self.me)
                .min_by_key(|n| n.connections)
                .map_or(&self.me, |n| &n.node_id),
            _ => &self.me,
        }
    }

    fn owner(&self, fleet: &[NodeInfo], node_id: String) -> Owner {
        if node_id == self.me {
            return Owner::Here;
        }
        let known = fleet.iter().find(|n| n.node_id == node_id);
        Owner::Elsewhere {
            internal: known.and_then(|n| n.internal.clone()),
            node_id,
        }
    }

    pub fn answer(
        &mut self,
        con: &mut redis::Connection,
        fleet: &[NodeInfo],
        batch: Vec<Request>,
        view: &View,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        let mut waiting = Vec::new();
        let mut releases = 0;
        for r in batch {
            match r {
                Request::Claim {
                    session,
                    region,
                    reply,
                } => {
                    let candidate = self.candidate(fleet, region.as_deref()).to_string();
                    claim_cmd(&mut pipe, self, &session, &candidate);
                    waiting.push(reply);
                }
                Request::Release { session } => {
                    self.held.remove(&session);
                    release_cmd(&mut pipe, self, &session);
                    releases += 1;
                }
            }
        }
        let sent = (waiting.len() + releases) as u64;
        view.update(|s| s.commands += sent);
        let owners: Vec<String> = match pipe.query(con) {
            Ok(o) => o,
            Err(e) => {
                for reply in waiting {
                    let _ = reply.try_send(Owner::Unknown(Unknown::RedisDown));
                }
                return Err(e);
            }
        };
        let mut here = 0;
        for (reply, owner) in waiting.into_iter().zip(owners) {
            let o = self.owner(fleet, owner);
            if o == Owner::Here {
                here += 1;
            }
            let _ = reply.try_send(o);
        }
        let looked = sent - releases as u64;
        view.update(|s| {
            s.lookups += looked;
            s.claimed_here += here;
            s.releases += releases as u64;
        });
        Ok(())
    }

    /// The ids of every session the workers hold now (a worker that does not answer in time
    /// is skipped this round; its sessions are renewed at the next).
    pub fn collect_sessions(&self) -> Vec<String> {
        let mut all = Vec::new();
        for w in &self.workers {
            let (tx, rx) = flume::bounded(1);
            if w.try_send(Command::Sessions(tx)).is_ok() {
                if let Ok(ids) = rx.recv_timeout(IO_TIMEOUT) {
                    all.extend(ids);
                }
            }
        }
        all
    }

    /// Bytes spliced through this node's tunnels so far, all workers (a worker that does not
    /// answer in time counts nothing this round), and the `tunnel.max_tunnels` the workers
    /// have in force (`None` when none answered).
    pub fn tunnel_figures(&self) -> (u64, Option<usize>) {
        let (mut all, mut max) = (0, None);
        for w in &self.workers {
            let (tx, rx) = flume::bounded(1);
            if w.try_send(Command::TunnelFigures(tx)).is_ok() {
                if let Ok(f) = rx.recv_timeout(IO_TIMEOUT) {
                    all += f.bytes;
                    max = Some(f.max_tunnels);
                }
            }
        }
        (all, max)
    }

    /// Renews (or re-creates) ownership of `held`; a session another live node owns now is
    /// closed here, so that no session is owned twice once Redis is back.
    pub fn renew(
        &mut self,
        con: &mut redis::Connection,
        held: &[String],
        view: &View,
    ) -> redis::RedisResult<()> {
        let mut evicted = 0;
        for chunk in held.chunks(RENEW_BATCH) {
            let mut pipe = redis::pipe();
            for s in chunk {
                claim_cmd(&mut pipe, self, s, &self.me);
            }
            view.update(|s| s.commands += chunk.len() as u64);
            let owners: Vec<String> = pipe.query(con)?;
            for (s, owner) in chunk.iter().zip(owners) {
                if owner != self.me {
                    evicted += 1;
                    tracing::warn!(session = %s, owner = %owner, "another node owns this session now: closing it here");
                    let core = owner_core(s, self.workers.len());
                    self.send(core, Command::Evict(s.clone()), view);
                }
            }
        }
        self.held = held.iter().cloned().collect();
        let owned = held.len() - evicted;
        view.update(|s| {
            s.owned = owned;
            s.evictions += evicted as u64;
        });
        Ok(())
    }

    /// Tells every worker about nodes that left the fleet. A node is gone once its entry has
    /// been missing from this node's reads for `cluster.node_ttl`, so it would have lapsed
    /// anyway, and only once this node's own reads have been going for a while (`settled`):
    /// right after Redis restarted empty, live nodes are missing until they register again,
    /// and ending their links then would be a false alarm.
    pub fn fleet_changed(&mut self, view: &View, nodes: &[NodeInfo], settled: bool) {
        let now = Instant::now();
        for n in nodes {
            self.seen.insert(n.node_id.clone(), now);
        }
        if !settled {
            return;
        }
        let ttl = self.node_ttl;
        let gone: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            self.seen.remove(id);
        }
        tracing::warn!(nodes = ?gone, "nodes left the fleet: ending links to and from them");
        for core in 0..self.workers.len() {
            self.send(core, Command::NodesGone(gone.clone()), view);
        }
    }

    fn send(&self, core: usize, c: Command, view: &View) {
        if self.workers[core].try_send(c).is_err() {
            view.update(|s| s.command_drops += 1);
        }
    }

    pub fn release_all(&mut self, con: &mut redis::Connection, view: &View) {
        if self.held.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for s in &self.held {
            release_cmd(&mut pipe, self, s);
        }
        let n = self.held.len() as u64;
        view.update(|s| {
            s.commands += n;
            s.releases += n;
        });
        let _: redis::RedisResult<()> = pipe.query(con);
        self.held.clear();
    }
}
