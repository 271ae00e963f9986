//! Bridged requests waiting for their agent's answer, on the core that owns the session. Only
//! that core's thread touches the table, so it is plain cells; every entry is removed by
//! whichever comes first of the answer, the timeout, the client going away or the agent
//! leaving. Also the key each agent connection was given at its upgrade, which marks the
//! requests the relay sends it (docs/bridge.md, "Only the relay's requests").

use local_sync::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// An agent's answer to one bridged request, decoded (`bridge::message::parse_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponseMsg {
    pub id: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

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
    /// The relay is handing its connections to a new binary (`relay::handover`); the agent
    /// reconnects to it: 503 with `Retry-After`.
    Upgrading,
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
    /// Keyed by the request's random id, so a lookup is one hash of 16 bytes.
    waiting: RefCell<HashMap<u128, Waiter>>,
    /// Requests waiting per agent connection, for `bridge.max_in_flight`.
    per_agent: RefCell<HashMap<u64, u32>>,
    /// The key of each agent connection on this core (`relay_key` in its requests).
    keys: RefCell<HashMap<u64, Rc<str>>>,
    /// Bridged requests' connections open on this core, from admission to their end.
    open: Cell<usize>,
}

/// A request's id on the wire: 128 random bits as 32 lower-case hex digits. Nobody can guess
/// a waiting request's id, and a late answer cannot match a newer request.
pub fn wire_id(n: u128) -> String {
    format!("{n:032x}")
}

fn parse_wire_id(id: &str) -> Option<u128> {
    let b = id.as_bytes();
    if b.len() != 32 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(id, 16).ok()
}

impl Pending {
    /// Records a request for `agent` under an id drawn from `random` (drawn again in the
    /// vanishing case it is taken); the receiver yields its answer.
    pub fn register(
        &self,
        agent: u64,
        max_in_flight: u32,
        mut random: impl FnMut() -> u128,
    ) -> Result<(u128, oneshot::Receiver<Answer>), Busy> {
        let mut per = self.per_agent.borrow_mut();
        let count = per.entry(agent).or_insert(0);
        if *count >= max_in_flight {
            if *count == 0 {
                per.remove(&agent);
            }
            return Err(Busy);
        }
        *count += 1;
        let mut waiting = self.waiting.borrow_mut();
        let n = loop {
            let n = random();
            if !waiting.contains_key(&n) {
                break n;
            }
        };
        let (tx, rx) = oneshot::channel();
        waiting.insert(n, Waiter { agent, tx });
        Ok((n, rx))
    }

    fn take(&self, n: u128) -> Option<Waiter> {
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
    pub fn cancel(&self, n: u128) {
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

    /// Gives an agent connection its key, shown to it alone in its upgrade answer.
    pub fn add_agent(&self, agent: u64, key: String) {
        self.keys.borrow_mut().insert(agent, key.into());
    }

    /// The key of an agent connection, to mark the requests sent to it.
    pub fn agent_key(&self, agent: u64) -> Option<Rc<str>> {
        self.keys.borrow().get(&agent).cloned()
    }

    /// Fails every request sent to `agent` at once: its connection ended. Returns how many.
    pub fn agent_gone(&self, agent: u64) -> usize {
        self.keys.borrow_mut().remove(&agent);
        if self.per_agent.borrow().get(&agent).is_none() {
            return 0;
        }
        self.answer_all(agent, || Answer::AgentGone)
    }

    /// Answers every request waiting for `agent` with [`Answer::Upgrading`]: a binary upgrade
    /// began (`relay::handover`; the agent crosses, its answers would reach a process that no
    /// longer waits for them). Returns how many.
    pub fn agent_upgrading(&self, agent: u64) -> usize {
        self.answer_all(agent, || Answer::Upgrading)
    }

    /// Takes every request waiting for `agent` and answers each with `answer()`.
    fn answer_all(&self, agent: u64, answer: impl Fn() -> Answer) -> usize {
        let ids: Vec<u128> = self
            .waiting
            .borrow()
            .iter()
            .filter(|(_, w)| w.agent == agent)
            .map(|(n, _)| *n)
            .collect();
        for n in &ids {
            if let Some(w) = self.take(*n) {
                let _ = w.tx.send(answer());
            }
        }
        ids.len()
    }

    pub fn len(&self) -> usize {
        self.waiting.borrow().len()
    }

    pub fn connection_opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    pub fn connection_closed(&self) {
        self.open.set(self.open.get() - 1);
    }

    /// Bridged requests' connections open on this core.
    pub fn connections(&self) -> usize {
        self.open.get()
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

    /// A counter standing in for the random source.
    fn seq() -> impl FnMut() -> u128 {
        let mut n = 0u128;
        move || {
            n += 1;
            n << 100 | 0xabc_def0 | n
        }
    }

    #[test]
    fn answers_reach_their_own_request_only() {
        let p = Pending::default();
        let (a, mut ra) = p.register(7, 4, seq()).unwrap();
        let (b, mut rb) = p.register(7, 4, seq()).unwrap();
        assert_ne!(a, b, "a taken id is drawn again");
        // Another agent cannot answer it, and an unknown or malformed id matches nothing.
        assert!(!p.resolve(8, &wire_id(a), reply("x")));
        assert!(!p.resolve(7, "zz", reply("x")));
        assert!(!p.resolve(7, "", reply("x")));
        // Only the exact 32-digit spelling the relay sent matches.
        let id = wire_id(b);
        assert_eq!(id.len(), 32);
        assert!(!p.resolve(7, &id.to_uppercase(), reply("x")));
        assert!(!p.resolve(7, &format!("+{}", &id[1..]), reply("x")));
        assert!(!p.resolve(7, id.trim_start_matches('0'), reply("x")));
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
        let mut ids = seq();
        let (a, _ra) = p.register(1, 2, &mut ids).unwrap();
        let (_b, _rb) = p.register(1, 2, &mut ids).unwrap();
        assert_eq!(p.register(1, 2, &mut ids).err(), Some(Busy));
        // Another agent has its own allowance.
        assert!(p.register(2, 2, &mut ids).is_ok());
        p.cancel(a);
        assert!(p.register(1, 2, &mut ids).is_ok());
        assert_eq!(p.register(3, 0, &mut ids).err(), Some(Busy));
        assert!(p.per_agent.borrow().get(&3).is_none());
    }

    #[test]
    fn an_agent_leaving_fails_only_its_requests_at_once() {
        let p = Pending::default();
        let mut ids = seq();
        p.add_agent(1, "k1".into());
        let (_a, mut ra) = p.register(1, 8, &mut ids).unwrap();
        let (_b, mut rb) = p.register(1, 8, &mut ids).unwrap();
        let (_c, mut rc) = p.register(2, 8, &mut ids).unwrap();
        assert_eq!(p.agent_key(1).as_deref(), Some("k1"));
        assert_eq!(p.agent_gone(1), 2);
        assert!(matches!(ra.try_recv(), Ok(Answer::AgentGone)));
        assert!(matches!(rb.try_recv(), Ok(Answer::AgentGone)));
        assert!(rc.try_recv().is_err());
        assert_eq!(p.len(), 1);
        assert_eq!(p.agent_gone(1), 0);
        assert_eq!(p.agent_key(1), None);
    }
}
