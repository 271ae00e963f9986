//! Two-way resume's counts as the writers of `ack` events read them (relay::ack): every
//! writer of an ack reads the count to tell, and records it told, while it holds the
//! connection's write gate, so that the counts a connection is told never go down, whichever
//! writer (the ack task, the delayed ack, an ack riding on forwarded data) gets there first.

use super::Session;

impl Session {
    /// The count of messages from `role` accepted, when at least `min` (1 or more) of them
    /// were not told to its connection yet.
    pub fn untold(&self, role: &str, min: u64) -> Option<u64> {
        let replays = self.replays.borrow();
        let r = replays.iter().find(|r| *r.role == *role)?;
        (r.accepted >= r.told.saturating_add(min.max(1))).then_some(r.accepted)
    }

    /// `role`'s connection was told `k` (written to it whole).
    pub fn tell(&self, role: &str, k: u64) {
        let mut replays = self.replays.borrow_mut();
        if let Some(r) = replays.iter_mut().find(|r| *r.role == *role) {
            r.told = r.told.max(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::session::{Registry, Replay};

    #[test]
    fn untold_needs_min_new_messages_and_told_never_goes_down() {
        let reg = Registry::default();
        let s = reg.session("s", 0);
        assert_eq!(
            s.untold("a", 1),
            None,
            "no replay for the role: nothing to tell"
        );
        s.replays.borrow_mut().push(Replay::new("a"));
        assert_eq!(s.untold("a", 1), None);
        s.replays.borrow_mut()[0].accepted = 5;
        assert_eq!(s.untold("a", 1), Some(5));
        assert_eq!(s.untold("a", 0), Some(5), "min 0 counts as 1");
        assert_eq!(s.untold("a", 5), Some(5));
        assert_eq!(s.untold("a", 6), None);
        assert_eq!(s.untold("b", 1), None);
        s.tell("a", 5);
        assert_eq!(s.untold("a", 1), None);
        s.tell("a", 3);
        assert_eq!(s.replays.borrow()[0].told, 5, "an older count told late");
        s.replays.borrow_mut()[0].accepted = 8;
        assert_eq!((s.untold("a", 3), s.untold("a", 4)), (Some(8), None));
    }
}
