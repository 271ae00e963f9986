//! The sessions and connections one core owns. Only that core's thread touches them.

use super::{plan_join, Backlog, CoreBudget, Flag, JoinPlan, Peer, Replay};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

pub struct Session {
    pub id: Rc<str>,
    slots: RefCell<[Option<Rc<Peer>>; 2]>,
    /// Last data frame either way, for the idle timeout.
    pub last_activity_ms: Cell<u64>,
    /// Both peers have been here at once: a peer coming back may use the capacity kept for
    /// reconnects (`limits.reconnect_reserve_percent`).
    pub was_paired: Cell<bool>,
    /// Messages kept for an absent peer, one backlog per sending role (docs/durability.md).
    pub backlogs: RefCell<Vec<Backlog>>,
    /// A task is writing kept messages to a peer that joined.
    pub delivering: Cell<bool>,
    /// Since when the session has had no peer while keeping messages: it is freed
    /// `session.linger` later.
    pub lingering_since_ms: Cell<Option<u64>>,
    /// Numbering and replay windows, one per receiving role that asked for `resume=`.
    pub replays: RefCell<Vec<Replay>>,
    /// Some role asked for `resume=`: the forwarding path numbers and keeps what it
    /// delivers (one flag read per read for sessions that never ask).
    pub resume_on: Cell<bool>,
    /// Another node owns this session now (cluster mode): its peers here are being closed,
    /// and a new peer must look the owner up instead of joining here.
    pub moved: Cell<bool>,
}

impl Session {
    pub fn other(&self, me: u64) -> Option<Rc<Peer>> {
        self.slots
            .borrow()
            .iter()
            .flatten()
            .find(|p| p.id != me)
            .cloned()
    }

    /// The seated peer with this id.
    pub fn peer(&self, id: u64) -> Option<Rc<Peer>> {
        self.slots
            .borrow()
            .iter()
            .flatten()
            .find(|p| p.id == id)
            .cloned()
    }

    /// Holds a seat (was not replaced, has not left).
    pub fn seated(&self, id: u64) -> bool {
        self.peer_ids().contains(&Some(id))
    }

    pub fn peers(&self) -> Vec<Rc<Peer>> {
        self.slots.borrow().iter().flatten().cloned().collect()
    }

    /// The ids of the peers seated now, without cloning them.
    pub fn peer_ids(&self) -> [Option<u64>; 2] {
        let slots = self.slots.borrow();
        [
            slots[0].as_ref().map(|p| p.id),
            slots[1].as_ref().map(|p| p.id),
        ]
    }

    pub fn plan(&self, role: Option<&str>) -> JoinPlan {
        let slots = self.slots.borrow();
        plan_join(
            [
                slots[0].as_ref().map(|p| &*p.role),
                slots[1].as_ref().map(|p| &*p.role),
            ],
            role,
        )
    }

    /// Puts `peer` in `slot`, returning whoever it replaces.
    pub fn seat(&self, slot: usize, peer: Rc<Peer>) -> Option<Rc<Peer>> {
        let mut slots = self.slots.borrow_mut();
        let old = slots[slot].replace(peer);
        if let Some(o) = &old {
            o.flags.set(Flag::UNSEATED, true);
        }
        if slots.iter().all(Option::is_some) {
            self.was_paired.set(true);
        }
        old
    }

    /// The slot `id` is seated in.
    pub fn slot_of(&self, id: u64) -> Option<usize> {
        let slots = self.slots.borrow();
        slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|p| p.id == id))
    }

    /// Removes `id` if it still holds a slot (a replaced peer no longer does).
    pub fn leave(&self, id: u64) -> bool {
        let mut slots = self.slots.borrow_mut();
        for s in slots.iter_mut() {
            if s.as_ref().is_some_and(|p| p.id == id) {
                *s = None;
                return true;
            }
        }
        false
    }

    pub fn is_empty(&self) -> bool {
        self.slots.borrow().iter().all(|s| s.is_none())
    }

    /// Anything kept from the peer with this role, a message still arriving included.
    pub fn keeps_from(&self, role: &str) -> bool {
        self.backlogs
            .borrow()
            .iter()
            .any(|b| &*b.from == role && !b.is_empty())
    }

    /// Whole messages kept for a peer with this role (from any other role).
    pub fn kept_for(&self, role: &str) -> usize {
        self.backlogs
            .borrow()
            .iter()
            .filter(|b| &*b.from != role)
            .map(Backlog::messages)
            .sum()
    }

    /// Bytes kept, allocated, and whole messages, over this session's backlogs.
    pub fn kept(&self) -> (usize, usize, usize) {
        self.backlogs
            .borrow()
            .iter()
            .fold((0, 0, 0), |(b, c, m), x| {
                (b + x.bytes(), c + x.capacity(), m + x.messages())
            })
    }

    /// Bytes kept in this session's replay windows.
    pub fn replay_bytes(&self) -> usize {
        self.replays.borrow().iter().map(|r| r.ring.bytes()).sum()
    }
}

#[derive(Default)]
pub struct Registry {
    sessions: RefCell<HashMap<Rc<str>, Rc<Session>>>,
    peers: RefCell<HashMap<u64, Rc<Peer>>>,
    /// Bytes kept in every backlog and replay window of this core's sessions, for
    /// `session.core_buffer_budget`.
    pub budget: CoreBudget,
    /// Connections held still for a binary upgrade (`relay::handover`).
    pub park: super::park::Park,
}

/// A map keeps the capacity of its largest moment: after a storm of connections closed, the
/// registry's tables would hold their peak's memory for good. Once a map is down to an
/// eighth of its capacity it is shrunk to about twice what it holds, so shrinking is rare
/// (amortised over the removals that got it there) and a map that refills grows only once.
fn shrink_after_burst<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    const SMALL: usize = 1024;
    if map.capacity() > SMALL && map.len() * 8 < map.capacity() {
        map.shrink_to((map.len() * 2).max(SMALL));
    }
}

/// Shrinks a map holding under a quarter of its capacity to twice what it holds.
fn trim_map<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    let target = (map.len() * 2).max(16);
    if map.capacity() > target * 2 {
        map.shrink_to(target);
    }
}

impl Registry {
    pub fn session(&self, id: &str, now_ms: u64) -> Rc<Session> {
        if let Some(s) = self.sessions.borrow().get(id) {
            return s.clone();
        }
        let id: Rc<str> = id.into();
        let s = Rc::new(Session {
            id: id.clone(),
            slots: RefCell::new([None, None]),
            last_activity_ms: Cell::new(now_ms),
            was_paired: Cell::new(false),
            backlogs: RefCell::new(Vec::new()),
            delivering: Cell::new(false),
            lingering_since_ms: Cell::new(None),
            replays: RefCell::new(Vec::new()),
            resume_on: Cell::new(false),
            moved: Cell::new(false),
        });
        self.sessions.borrow_mut().insert(id, s.clone());
        s
    }

    pub fn get(&self, id: &str) -> Option<Rc<Session>> {
        self.sessions.borrow().get(id).cloned()
    }

    /// Forgets the session once nobody is in it; true when it did. A session that keeps
    /// messages is freed through `relay::away::release`, which accounts for them.
    pub fn release_if_empty(&self, s: &Session) -> bool {
        if !s.is_empty() {
            return false;
        }
        let mut sessions = self.sessions.borrow_mut();
        let removed = sessions.remove(&s.id).is_some();
        shrink_after_burst(&mut sessions);
        removed
    }

    /// Gives back what the maps kept of a storm that is over: `shrink_after_burst` leaves a
    /// map at its floor (1,024 entries: about 100 KiB a core for the two maps), which a quiet
    /// core should not keep. Called by the keepalive tick's trim, not per removal, so an
    /// ordinary core's maps are not rebuilt back and forth.
    pub fn trim(&self) {
        trim_map(&mut self.sessions.borrow_mut());
        trim_map(&mut self.peers.borrow_mut());
    }

    pub fn add_peer(&self, p: Rc<Peer>) {
        self.peers.borrow_mut().insert(p.id, p);
    }

    pub fn remove_peer(&self, id: u64) {
        let mut peers = self.peers.borrow_mut();
        peers.remove(&id);
        shrink_after_burst(&mut peers);
    }

    pub fn peers(&self) -> Vec<Rc<Peer>> {
        self.peers.borrow().values().cloned().collect()
    }

    /// Forgets every session and peer at once, without a word to any client: a binary
    /// upgrade's new process holds them now (`relay::handover::settle`).
    pub fn forget_all(&self) {
        let sessions = std::mem::take(&mut *self.sessions.borrow_mut());
        for s in sessions.values() {
            *s.slots.borrow_mut() = [None, None];
        }
        self.peers.borrow_mut().clear();
    }

    pub fn sessions(&self) -> Vec<Rc<Session>> {
        self.sessions.borrow().values().cloned().collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.borrow().len()
    }

    /// Pooled buffers waiting to be written to this core's peers (for /stats).
    pub fn pinned(&self) -> usize {
        self.peers
            .borrow()
            .values()
            .map(|p| p.pinned.get() as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{shrink_after_burst, trim_map};
    use std::collections::HashMap;

    #[test]
    fn a_map_emptied_after_a_burst_gives_its_capacity_back() {
        let mut m: HashMap<u64, u64> = (0..100_000).map(|i| (i, i)).collect();
        let peak = m.capacity();
        for i in 0..100_000 {
            m.remove(&i);
            shrink_after_burst(&mut m);
            // Never below twice what it holds (so refilling does not regrow at once).
            assert!(m.capacity() >= m.len() * 2 || m.capacity() >= 1024);
        }
        assert!(m.capacity() < peak / 16, "{} of {peak}", m.capacity());
        // A small map is left alone: no shrinking churn at ordinary sizes.
        let mut small: HashMap<u64, u64> = (0..500).map(|i| (i, i)).collect();
        for i in 0..500 {
            small.remove(&i);
            shrink_after_burst(&mut small);
        }
        // (Removals leave tombstones, so `capacity` wobbles a little; a shrink would take it
        // to a few buckets.)
        assert!(small.capacity() >= 800, "{}", small.capacity());
    }

    #[test]
    fn a_trim_takes_a_map_below_the_burst_floor() {
        let mut m: HashMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
        for i in 0..10_000 {
            m.remove(&i);
            shrink_after_burst(&mut m);
        }
        assert!(m.capacity() >= 1024, "the floor: {}", m.capacity());
        trim_map(&mut m);
        assert!(m.capacity() < 64, "{}", m.capacity());
        // A map in use keeps room for twice what it holds.
        let mut m: HashMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
        m.retain(|k, _| *k < 1000);
        trim_map(&mut m);
        assert!((2000..4096).contains(&m.capacity()), "{}", m.capacity());
        let cap = m.capacity();
        trim_map(&mut m);
        assert_eq!(m.capacity(), cap, "nothing to give back a second time");
    }
}
