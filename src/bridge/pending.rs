//! Bridged requests waiting for their agent's answer, on the core that owns the session. Only
//! that core's thread touches the table, so it is plain cells; every entry is removed by
//! whichever comes first of the answer, the timeout, the client going away or the agent
//! leaving.

use super::message::HttpResponseMsg;
use local_sync::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// What a waiting request learns.
#[derive(Debug)]
pub enum Answer {
    Reply(HttpResponseMsg),
    /// The agent answered this id with something that breaks the schema.
    Malformed,
    /// The agent's answer carried a body over `bridge.max_response_bytes`.
    TooLarge,
    /// The agent's connection ended before it answered.
    AgentGone,
}

struct Waiter {
    agent: u64,
    tx: oneshot::Sender<Answer>,
}

/// An agent already has `bridge.max_in_flight` requests waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

#[derive(Default)]
pub struct Pending {
    next: Cell<u64>,
    waiting: RefCell<HashMap<u64, Waiter>>,
    /// Requests waiting per agent connection, for `bridge.max_in_flight`.
    per_agent: RefCell<HashMap<u64, u32>>,
}

/// A request's id on the wire: the core's sequence number in hex, unique on this core for the
/// life of the process, so a late answer can never match a newer request.
pub fn wire_id(n: u64) -> String {
    format!("{n:x}")
}

fn parse_wire_id(id: &str) -> Option<u64> {
    if id.is_empty() || id.len() > 16 || id.starts_with('+') {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

impl Pending {
    /// Records a request for `agent`; the receiver yields its answer.
    pub fn register(
        &self,
        agent: u64,
        max_in_flight: u32,
    ) -> Result<(u64, oneshot::Receiver<Answer>), Busy> {
        let mut per = self.per_agent.borrow_mut();
        let count = per.entry(agent).or_insert(0);
        if *count >= max_in_flight {
            if *count == 0 {
                per.remove(&agent);
            }
            return Err(Busy);
        }
        *count += 1;
        let n = self.next.get() + 1;
        self.next.set(n);
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(n, Waiter { agent, tx });
        Ok((n, rx))
    }

    fn take(&self, n: u64) -> Option<Waiter> {
        let w = self.waiting.borrow_mut().remove(&n)?;
        let mut per = self.per_agent.borrow_mut();
        if let Some(c) = per.get_mut(&w.agent) {
            *c -= 1;
            if *c == 0 {
                per.remove(&w.agent);
            }
        }
        Some(w)
    }

    /// Forgets a request whose client gave up or whose time ran out.
    pub fn cancel(&self, n: u64) {
        self.take(n);
    }

    /// Hands `answer` to the request `id` if it is still waiting and was sent to `agent`
    /// (an agent cannot answer another session's requests). False when nobody took it.
    pub fn resolve(&self, agent: u64, id: &str, answer: Answer) -> bool {
        let Some(n) = parse_wire_id(id) else {
            return false;
        };
        if self.waiting.borrow().get(&n).map(|w| w.agent) != Some(agent) {
            return false;
        }
        match self.take(n) {
            Some(w) => w.tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Fails every request sent to `agent` at once: its connection ended. Returns how many.
    pub fn agent_gone(&self, agent: u64) -> usize {
        if self.per_agent.borrow().get(&agent).is_none() {
            return 0;
        }
        let ids: Vec<u64> = self
            .waiting
            .borrow()
            .iter()
            .filter(|(_, w)| w.agent == agent)
            .map(|(n, _)| *n)
            .collect();
        for n in &ids {
            if let Some(w) = self.take(*n) {
                let _ = w.tx.send(Answer::AgentGone);
            }
        }
        ids.len()
    }

    pub fn len(&self) -> usize {
        self.waiting.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: &str) -> Answer {
        Answer::Reply(HttpResponseMsg {
            id: id.into(),
            status: 200,
            headers: vec![],
            body: vec![],
        })
    }

    #[test]
    fn answers_reach_their_own_request_only() {
        let p = Pending::default();
        let (a, mut ra) = p.register(7, 4).unwrap();
        let (b, mut rb) = p.register(7, 4).unwrap();
        assert_ne!(a, b);
        // Another agent cannot answer it, and an unknown or malformed id matches nothing.
        assert!(!p.resolve(8, &wire_id(a), reply("x")));
        assert!(!p.resolve(7, "zz", reply("x")));
        assert!(!p.resolve(7, "", reply("x")));
        assert!(p.resolve(7, &wire_id(b), reply("b")));
        assert!(matches!(rb.try_recv(), Ok(Answer::Reply(r)) if r.id == "b"));
        assert!(ra.try_recv().is_err());
        // A second answer to the same id finds nobody.
        assert!(!p.resolve(7, &wire_id(b), reply("b")));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn in_flight_is_bounded_per_agent_and_released() {
        let p = Pending::default();
        let (a, _ra) = p.register(1, 2).unwrap();
        let (_b, _rb) = p.register(1, 2).unwrap();
        assert_eq!(p.register(1, 2).err(), Some(Busy));
        // Another agent has its own allowance.
        assert!(p.register(2, 2).is_ok());
        p.cancel(a);
        assert!(p.register(1, 2).is_ok());
        assert_eq!(p.register(3, 0).err(), Some(Busy));
        assert!(p.per_agent.borrow().get(&3).is_none());
    }

    #[test]
    fn an_agent_leaving_fails_only_its_requests_at_once() {
        let p = Pending::default();
        let (_a, mut ra) = p.register(1, 8).unwrap();
        let (_b, mut rb) = p.register(1, 8).unwrap();
        let (_c, mut rc) = p.register(2, 8).unwrap();
        assert_eq!(p.agent_gone(1), 2);
        assert!(matches!(ra.try_recv(), Ok(Answer::AgentGone)));
        assert!(matches!(rb.try_recv(), Ok(Answer::AgentGone)));
        assert!(rc.try_recv().is_err());
        assert_eq!(p.len(), 1);
        assert_eq!(p.agent_gone(1), 0);
    }
}
