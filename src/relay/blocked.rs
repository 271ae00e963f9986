//! Read buffers pinned by receivers that do not read.
//!
//! Forwarding writes a sender's bytes from the pooled buffer they were read into, so that
//! buffer stays out of the pool until the write to the receiver ends. A receiver that stops
//! reading pins one buffer per sender stuck behind it until `limits.write_timeout`, and
//! pairs whose receivers never read, opened on one core (the session hash is public), could
//! pin the whole pool and stop every connection on that core from being read. So a write
//! still pending after `limits.blocked_write_grace` counts as blocked, and blocked writes
//! are ended early the way the write timeout ends them (the receiver is dropped; its sender
//! is told `peer_disconnected` with 1006 and keeps its session):
//!
//! - past `limits.max_blocked_writes_per_session` or `limits.max_blocked_writes_per_ip`
//!   buffers held by blocked writes to one session or one client address (the keepalive
//!   tick checks);
//! - at once, while fewer than `limits.pool_reserve_percent` of the buffers are free or
//!   readers wait for one: the receivers of the address holding the most go first, then the
//!   oldest writes, until the reserve is free (a guard task the pool's alarm wakes).
//!
//! The forwarding path's part is two cell updates per forward (`Peer::pinned`) and one
//! comparison per buffer taken; what is blocked is found from the marks writes leave for
//! the write timeout.
//!
//! A node carrying peers to their owner (cluster mode) holds a buffer in each write of a
//! carried link, toward the client and toward the owner (`cluster::carry`). Those writes are
//! marked the same way and counted with the rest, keyed by the carried client's address and
//! its session: a carried client that does not read is dropped like a seated receiver, and
//! a link the owner does not read is ended (its client gets 1012).

use crate::context::Core;
use crate::fleet::carry::{Carry, Dirs};
use crate::session::{Flag, Peer};
use crate::stats::bump;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

/// While the pool stays low the guard looks again this often at most...
const MIN_POLL_MS: u64 = 10;
/// ...and at least four times per grace, so a write that starts blocking is stamped within
/// a quarter of the grace of its start.
const POLLS_PER_GRACE: u64 = 4;

/// A receiver holding pooled buffers behind a write that has waited at least the grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stuck {
    /// Its client address, keyed as the per-IP limits key it (an IPv6 /64).
    pub ip: IpAddr,
    /// Its session, as an index into the sessions of one pass (an echo peer has none).
    pub session: Option<usize>,
    /// When its pending write was first seen.
    pub since_ms: u64,
    /// Buffers waiting to be written to it.
    pub held: usize,
}

/// Why a receiver is dropped, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Session,
    Address,
    Pressure,
}

/// Buffers that blocked writes to one session or one address may hold; 0 for no bound.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub per_session: usize,
    pub per_ip: usize,
}

/// Which of `stuck` to drop, and why. First receivers over their session's bound, then over
/// their address's (within each, the one holding the most first, then the oldest write);
/// then, while `need` buffers are still wanted, the receivers of the address holding the
/// most, oldest write first.
pub fn plan(stuck: &[Stuck], bounds: Bounds, need: usize) -> Vec<(usize, Why)> {
    let mut order: Vec<usize> = (0..stuck.len()).collect();
    order.sort_by_key(|&i| (Reverse(stuck[i].held), stuck[i].since_ms));
    let mut dropped = vec![false; stuck.len()];
    let mut out = Vec::new();
    let mut over = |bound: usize, key: &dyn Fn(&Stuck) -> Option<Key>, why: Why| {
        if bound == 0 {
            return;
        }
        let mut totals = totals(stuck, &dropped, key);
        for &i in &order {
            let Some(k) = key(&stuck[i]).filter(|_| !dropped[i]) else {
                continue;
            };
            let total = totals.entry(k).or_default();
            if *total > bound {
                *total -= stuck[i].held;
                dropped[i] = true;
                out.push((i, why));
            }
        }
    };
    over(
        bounds.per_session,
        &|s| s.session.map(Key::Session),
        Why::Session,
    );
    over(bounds.per_ip, &|s| Some(Key::Ip(s.ip)), Why::Address);
    let freed: usize = out.iter().map(|&(i, _)| stuck[i].held).sum();
    let mut need = need.saturating_sub(freed);
    if need > 0 {
        let by_ip = totals(stuck, &dropped, &|s| Some(Key::Ip(s.ip)));
        let mut rest: Vec<usize> = (0..stuck.len()).filter(|&i| !dropped[i]).collect();
        rest.sort_by_key(|&i| (Reverse(by_ip[&Key::Ip(stuck[i].ip)]), stuck[i].since_ms));
        for i in rest {
            if need == 0 {
                break;
            }
            need = need.saturating_sub(stuck[i].held);
            out.push((i, Why::Pressure));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Session(usize),
    Ip(IpAddr),
}

fn totals<K: Hash + Eq>(
    stuck: &[Stuck],
    dropped: &[bool],
    key: &dyn Fn(&Stuck) -> Option<K>,
) -> HashMap<K, usize> {
    let mut t = HashMap::new();
    for (s, _) in stuck.iter().zip(dropped).filter(|(_, d)| !**d) {
        if let Some(k) = key(s) {
            *t.entry(k).or_default() += s.held;
        }
    }
    t
}

/// Whose blocked writes a `Stuck` entry stands for.
enum Receiver {
    Peer(Rc<Peer>),
    /// A carried link, and which of its writes are blocked.
    Carry(Rc<Carry>, Dirs),
}

/// Carried links' sessions are numbered down from here in a pass, seated ones up from 0
/// (`place_sessions`), so the two never meet.
const CARRIED_SESSIONS: usize = usize::MAX;

/// What one look over a core's peers found.
pub struct Scan {
    grace_ms: u64,
    stuck: Vec<Stuck>,
    receivers: Vec<Receiver>,
    /// Sessions of the carried links seen, numbered for `Stuck::session`.
    carried_sessions: HashMap<Rc<str>, usize>,
    /// Buffers still pinned by peers already dropped: on their way back to the pool.
    releasing: usize,
    /// When the next pending write that pins a buffer counts as blocked.
    next_due_ms: Option<u64>,
}

impl Scan {
    pub fn new(core: &Core) -> Scan {
        Scan {
            grace_ms: core.config().limits.blocked_write_grace.as_millis() as u64,
            stuck: Vec::new(),
            receivers: Vec::new(),
            carried_sessions: HashMap::new(),
            releasing: 0,
            next_due_ms: None,
        }
    }

    /// Looks at one peer, stamping a pending write seen for the first time.
    pub fn look(&mut self, p: &Rc<Peer>, now: u64) {
        let held = p.pinned.get() as usize;
        if held == 0 {
            return;
        }
        if p.flags.get(Flag::DROPPED) {
            self.releasing += held;
            return;
        }
        let Some(since) = p.write_pending_since(now) else {
            return;
        };
        // A peer that gave its charge back has left; its writes are ending.
        let Some(ip) = p.client_ip() else { return };
        if !self.past_grace(since, now) {
            return;
        }
        self.stuck.push(Stuck {
            ip: crate::limits::ip::key(ip),
            session: None,
            since_ms: since,
            held,
        });
        self.receivers.push(Receiver::Peer(p.clone()));
    }

    /// Whether a write pending since `since` is blocked; if not yet, notes when it will be.
    fn past_grace(&mut self, since: u64, now: u64) -> bool {
        let due = since.saturating_add(self.grace_ms);
        if now < due {
            self.next_due_ms = Some(self.next_due_ms.map_or(due, |d| d.min(due)));
            return false;
        }
        true
    }

    /// Looks at a carried link: each of its pending writes holds one buffer.
    pub fn look_carry(&mut self, c: &Rc<Carry>, now: u64) {
        let released = c.released();
        let mut blocked = Dirs::default();
        let mut since_ms = u64::MAX;
        for (mark, gone, flag) in [
            (&c.to_client, released.to_client, &mut blocked.to_client),
            (&c.to_owner, released.to_owner, &mut blocked.to_owner),
        ] {
            let Some(since) = mark.pending_since(now) else {
                continue;
            };
            if gone {
                self.releasing += 1;
            } else if self.past_grace(since, now) {
                *flag = true;
                since_ms = since_ms.min(since);
            }
        }
        let held = blocked.to_client as usize + blocked.to_owner as usize;
        if held == 0 {
            return;
        }
        let next = CARRIED_SESSIONS - self.carried_sessions.len();
        let session = *self
            .carried_sessions
            .entry(c.session.clone())
            .or_insert(next);
        self.stuck.push(Stuck {
            ip: crate::limits::ip::key(c.ip),
            session: Some(session),
            since_ms,
            held,
        });
        self.receivers.push(Receiver::Carry(c.clone(), blocked));
    }

    /// Drops what the bounds (and, under `pressure`, the pool's deficit) call for.
    pub fn enforce(mut self, core: &Core, pressure: bool) {
        if self.stuck.is_empty() {
            return;
        }
        let l = &core.config().limits;
        let bounds = Bounds {
            per_session: l.max_blocked_writes_per_session,
            per_ip: l.max_blocked_writes_per_ip,
        };
        // A session seats two peers: it can only be over its bound if one of them holds
        // more than half of it, so the usual case (a few slow receivers holding one each)
        // skips the walk over the sessions. (Carried links come with their session.)
        let most = self.stuck.iter().map(|s| s.held).max().unwrap_or(0);
        if bounds.per_session > 0 && 2 * most > bounds.per_session {
            self.place_sessions(core);
        }
        let need = if pressure {
            core.pool.deficit().saturating_sub(self.releasing)
        } else {
            0
        };
        let mut counts = [0u64; 3];
        let mut carried = 0u64;
        for (i, why) in plan(&self.stuck, bounds, need) {
            let (n, counter) = match why {
                Why::Session => (0, &core.stats.peers_dropped_blocked_per_session),
                Why::Address => (1, &core.stats.peers_dropped_blocked_per_ip),
                Why::Pressure => (2, &core.stats.peers_dropped_pool_pressure),
            };
            counts[n] += 1;
            bump(counter, 1);
            match &self.receivers[i] {
                Receiver::Peer(p) => p.drop_stuck(),
                Receiver::Carry(c, dirs) => {
                    carried += 1;
                    c.end_blocked(*dirs);
                }
            }
        }
        bump(&core.stats.cluster_carries_dropped_blocked, carried);
        if counts.iter().any(|&n| n > 0) {
            tracing::info!(
                per_session = counts[0],
                per_ip = counts[1],
                pool_pressure = counts[2],
                carried,
                buffers_in_use = core.pool.in_use.get(),
                "dropped receivers whose blocked writes held read buffers"
            );
        }
    }

    fn place_sessions(&mut self, core: &Core) {
        let index: HashMap<u64, usize> = self
            .receivers
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Receiver::Peer(p) => Some((p.id, i)),
                Receiver::Carry(..) => None,
            })
            .collect();
        for (k, s) in core.registry.sessions().iter().enumerate() {
            for id in s.peer_ids().into_iter().flatten() {
                if let Some(&i) = index.get(&id) {
                    self.stuck[i].session = Some(k);
                }
            }
        }
    }
}

/// Waits for the pool's alarm, then ends blocked writes while the pool stays under pressure.
/// A write is stamped the first time a look sees it, so while the pool is low the guard
/// looks at least `POLLS_PER_GRACE` times per grace: a write blocked since the pressure began
/// is ended within about a grace and a quarter.
pub async fn guard(core: Rc<Core>) {
    let grace_ms = core.config().limits.blocked_write_grace.as_millis() as u64;
    let poll_ms = (grace_ms / POLLS_PER_GRACE).max(MIN_POLL_MS);
    loop {
        core.pool.pressure().await;
        while core.pool.under_pressure() && !core.shutting_down() {
            let now = core.clock.tick();
            let mut scan = Scan::new(&core);
            for p in core.registry.peers() {
                scan.look(&p, now);
            }
            for c in core.cluster_local.carried() {
                scan.look_carry(&c, now);
            }
            let wait = scan
                .next_due_ms
                .map_or(poll_ms, |due| due.saturating_sub(now).min(poll_ms))
                .max(MIN_POLL_MS);
            scan.enforce(&core, true);
            monoio::time::sleep(Duration::from_millis(wait)).await;
        }
        core.pool.rearm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn stuck(addr: u8, session: usize, since_ms: u64, held: usize) -> Stuck {
        Stuck {
            ip: ip(addr),
            session: Some(session),
            since_ms,
            held,
        }
    }

    const NONE: Bounds = Bounds {
        per_session: 0,
        per_ip: 0,
    };

    #[test]
    fn nothing_is_dropped_within_the_bounds_and_without_need() {
        let s = [stuck(1, 0, 10, 1), stuck(1, 0, 20, 1), stuck(2, 1, 5, 1)];
        let b = Bounds {
            per_session: 2,
            per_ip: 2,
        };
        assert!(plan(&s, b, 0).is_empty());
        assert!(plan(&s, NONE, 0).is_empty());
    }

    #[test]
    fn an_address_over_its_bound_loses_its_oldest_receivers() {
        let s = [
            stuck(1, 0, 30, 1),
            stuck(1, 1, 10, 1),
            stuck(2, 2, 0, 1),
            stuck(1, 3, 20, 1),
            stuck(1, 4, 40, 1),
        ];
        let b = Bounds {
            per_session: 0,
            per_ip: 2,
        };
        assert_eq!(
            plan(&s, b, 0),
            vec![(1, Why::Address), (3, Why::Address)],
            "address 1 holds four: its two oldest go; address 2 is untouched"
        );
    }

    #[test]
    fn a_session_over_its_bound_loses_the_receiver_holding_the_most() {
        // Senders that replaced each other pile up behind receiver 1.
        let s = [stuck(1, 0, 10, 1), stuck(2, 0, 50, 3)];
        let b = Bounds {
            per_session: 2,
            per_ip: 10,
        };
        assert_eq!(plan(&s, b, 0), vec![(1, Why::Session)]);
    }

    #[test]
    fn a_receiver_dropped_for_its_session_counts_toward_its_address_no_more() {
        let s = [stuck(1, 0, 10, 3), stuck(1, 1, 20, 1), stuck(1, 2, 30, 1)];
        let b = Bounds {
            per_session: 2,
            per_ip: 2,
        };
        assert_eq!(plan(&s, b, 0), vec![(0, Why::Session)]);
    }

    #[test]
    fn pressure_takes_the_busiest_address_first_then_the_oldest() {
        let s = [
            stuck(1, 0, 50, 1),
            stuck(2, 1, 10, 1),
            stuck(2, 2, 40, 1),
            stuck(3, 3, 0, 1),
            stuck(2, 4, 30, 1),
        ];
        assert_eq!(
            plan(&s, NONE, 4),
            vec![
                (1, Why::Pressure),
                (4, Why::Pressure),
                (2, Why::Pressure),
                (3, Why::Pressure)
            ]
        );
        assert_eq!(plan(&s, NONE, 1), vec![(1, Why::Pressure)]);
    }

    #[test]
    fn what_the_bounds_free_counts_toward_the_need() {
        let s = [stuck(1, 0, 10, 1), stuck(1, 1, 20, 1), stuck(2, 2, 0, 1)];
        let b = Bounds {
            per_session: 0,
            per_ip: 1,
        };
        assert_eq!(plan(&s, b, 1), vec![(0, Why::Address)]);
        assert_eq!(plan(&s, b, 2), vec![(0, Why::Address), (2, Why::Pressure)]);
    }

    #[test]
    fn pressure_stops_when_the_need_is_met_or_nothing_is_left() {
        let s = [stuck(1, 0, 10, 3), stuck(2, 1, 20, 1)];
        assert_eq!(plan(&s, NONE, 2), vec![(0, Why::Pressure)]);
        assert_eq!(plan(&s, NONE, 100).len(), 2);
        assert!(plan(&[], NONE, 100).is_empty());
    }
}
