//! Two-way resume's counts as the writers of `ack` events read them (relay::ack): every
//! writer of an ack reads the count to tell, and records it told, while it holds the
//! connection's write gate, so that the counts a connection is told never go down, whichever
//! writer (the ack task, the delayed ack, an ack riding on forwarded data) gets there first.

use super::Session;

impl Session {
    /// The count of messages from `role` accepted, when at least `min` (1 or more) of them
    /// were not told to its connection yet. Notes when it was read (the session's activity
    /// clock, which no later acceptance precedes), for [`Session::tell`].
    pub fn untold(&self, role: &str, min: u64) -> Option<u64> {
        let mut replays = self.replays.borrow_mut();
        let r = replays.iter_mut().find(|r| *r.role == *role)?;
        let k = (r.accepted >= r.told.saturating_add(min.max(1))).then_some(r.accepted)?;
        r.reading_from_ms = r.reading_from_ms.min(self.last_activity_ms.get());
        Some(k)
    }

    /// `role`'s connection was told `k` (written to it whole). The messages still untold were
    /// accepted after the earliest count read since the last tell (`Replay::told_from_ms`).
    pub fn tell(&self, role: &str, k: u64) {
        let mut replays = self.replays.borrow_mut();
        if let Some(r) = replays.iter_mut().find(|r| *r.role == *role) {
            if k > r.told && r.reading_from_ms != u64::MAX {
                r.told_from_ms = r.reading_from_ms;
            }
            r.told = r.told.max(k);
            r.reading_from_ms = u64::MAX;
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

    #[test]
    fn tell_keeps_when_the_count_told_was_read() {
        let reg = Registry::default();
        let s = reg.session("s", 0);
        s.replays.borrow_mut().push(Replay::new("a"));
        s.replays.borrow_mut()[0].accepted = 5;
        s.last_activity_ms.set(100);
        assert_eq!(s.untold("a", 1), Some(5));
        s.last_activity_ms.set(130);
        s.replays.borrow_mut()[0].accepted = 7;
        // A second reading (another writer) before the first one's tell: the earlier wins.
        assert_eq!(s.untold("a", 1), Some(7));
        s.tell("a", 5);
        let r = |f: fn(&Replay) -> u64| f(&s.replays.borrow()[0]);
        assert_eq!((r(|r| r.told), r(|r| r.told_from_ms)), (5, 100));
        // A tell that tells nothing new moves nothing.
        s.last_activity_ms.set(150);
        assert_eq!(s.untold("a", 1), Some(7));
        s.tell("a", 4);
        assert_eq!((r(|r| r.told), r(|r| r.told_from_ms)), (5, 100));
        assert_eq!(s.untold("a", 1), Some(7));
        s.tell("a", 7);
        assert_eq!((r(|r| r.told), r(|r| r.told_from_ms)), (7, 150));
    }
}
