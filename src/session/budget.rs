//! The per-core budget for what is kept for absent peers and for resumes
//! (`session.core_buffer_budget`, docs/durability.md): every backlog and every replay window
//! of one core, counted together.
//!
//! No caller computes an amount. Each keeper (a `Backlog`, which is also what a replay window
//! keeps its messages in) carries the `Charge` booked for it; after a keeper changes, `settle`
//! books the difference between its charge and the bytes it holds now, and freeing a keeper
//! hands its whole charge back by value, so it is given back once. The budget is therefore
//! always the sum of the live keepers' charges: a release can never exceed what was charged
//! for that keeper, and bytes moved from one keeper to another are released from the first
//! and charged to the second, never counted twice.
//!
//! Touched only when messages are kept, delivered from a backlog or replayed: the zero-copy
//! forwarding path of a session that keeps nothing never comes here.

use super::Backlog;
use std::cell::Cell;

/// The bytes booked against a `CoreBudget` for one keeper. Only the budget changes it, and it
/// is neither `Clone` nor `Copy`: it cannot be forged or given back twice.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Charge(usize);

impl Charge {
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.0
    }
}

/// One core's bytes kept in backlogs and replay windows. Only that core's thread touches it.
#[derive(Debug, Default)]
pub struct CoreBudget {
    used: Cell<usize>,
    /// A release found more than was charged (a bug) and was reported once.
    reported: Cell<bool>,
}

impl CoreBudget {
    /// Bytes charged now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// The budget `limit` is reached: senders that keep messages wait, windows keep less.
    pub fn is_spent(&self, limit: usize) -> bool {
        self.used.get() >= limit
    }

    /// How far past `limit` the charges are (0 within it).
    pub fn excess(&self, limit: usize) -> usize {
        self.used.get().saturating_sub(limit)
    }

    /// Brings `kept`'s charge to the bytes it holds now: charges what it gained, releases what
    /// it gave back. Called after every change to a keeper, before the budget is looked at.
    pub fn settle(&self, kept: &mut Backlog) {
        let now = kept.bytes();
        let charge = &mut kept.charge;
        if now >= charge.0 {
            self.used.set(self.used.get() + (now - charge.0));
        } else {
            self.take(charge.0 - now);
        }
        charge.0 = now;
    }

    /// Frees a keeper: its whole charge goes back.
    pub fn release(&self, kept: Backlog) {
        debug_assert_eq!(
            kept.charge.0,
            kept.bytes(),
            "a backlog freed with a change never settled"
        );
        self.take(kept.charge.0);
    }

    /// Forgets the keepers in `backlogs` that hold nothing, releasing their charges; the
    /// others keep their order.
    pub fn drop_empty(&self, backlogs: &mut Vec<Backlog>) {
        let mut i = 0;
        while i < backlogs.len() {
            if backlogs[i].is_empty() {
                self.release(backlogs.remove(i));
            } else {
                i += 1;
            }
        }
    }

    /// Removes `n` charged bytes. More than is charged cannot happen while every charge comes
    /// from this budget: if it does, debug builds stop here; release builds log it once and
    /// count from zero rather than wrap round to a budget spent for ever.
    fn take(&self, n: usize) {
        match self.used.get().checked_sub(n) {
            Some(left) => self.used.set(left),
            None => {
                debug_assert!(false, "released {n} bytes, {} charged", self.used.get());
                if !self.reported.replace(true) {
                    tracing::error!(
                        released = n,
                        charged = self.used.get(),
                        "core buffer budget: released more than was charged"
                    );
                }
                self.used.set(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{test_server_frame as frame, OpCode};

    fn kept(messages: &[&[u8]]) -> Backlog {
        let mut b = Backlog::new("a");
        for m in messages {
            b.push_frame(&frame(true, OpCode::Binary, m));
        }
        b
    }

    #[test]
    fn settling_charges_what_a_keeper_gained_and_releases_what_it_gave_back() {
        let budget = CoreBudget::default();
        let (mut a, mut b) = (kept(&[&[1; 10], &[2; 20]]), kept(&[&[3; 30]]));
        budget.settle(&mut a);
        budget.settle(&mut b);
        assert_eq!(budget.used(), 12 + 22 + 32);
        assert_eq!((a.charge.bytes(), b.charge.bytes()), (34, 32));
        // Settling again without a change books nothing.
        budget.settle(&mut a);
        assert_eq!(budget.used(), 66);
        a.consume(1);
        a.push_frame(&frame(false, OpCode::Text, b"open"));
        budget.settle(&mut a);
        assert_eq!(budget.used(), 22 + 6 + 32);
        assert!(budget.is_spent(60) && !budget.is_spent(61));
        assert_eq!(
            (budget.excess(50), budget.excess(60), budget.excess(99)),
            (10, 0, 0)
        );
        a.abandon_open();
        b.drop_oldest();
        budget.settle(&mut a);
        budget.settle(&mut b);
        assert_eq!(budget.used(), 22);
    }

    #[test]
    fn freeing_a_keeper_gives_its_whole_charge_back() {
        let budget = CoreBudget::default();
        let mut all = vec![kept(&[&[1; 10]]), kept(&[]), kept(&[&[2; 5], &[3; 5]])];
        for b in &mut all {
            budget.settle(b);
        }
        assert_eq!(budget.used(), 12 + 14);
        all[0].consume(1);
        budget.settle(&mut all[0]);
        budget.drop_empty(&mut all);
        assert_eq!((all.len(), budget.used()), (1, 14));
        budget.release(all.pop().unwrap());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn bytes_moved_between_keepers_are_counted_once() {
        // A message half forwarded when its receiver dropped goes from the replay window to
        // the sender's backlog (relay::resume::carry).
        let budget = CoreBudget::default();
        let mut window = kept(&[&[1; 10]]);
        window.push_frame(&frame(false, OpCode::Binary, &[2; 100]));
        let mut backlog = Backlog::new("a");
        budget.settle(&mut window);
        assert_eq!(budget.used(), 12 + 102);
        backlog.push_open(&window.take_open());
        budget.settle(&mut window);
        budget.settle(&mut backlog);
        assert_eq!(budget.used(), 12 + 102);
        assert_eq!((window.charge.bytes(), backlog.charge.bytes()), (12, 102));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "released 12 bytes, 0 charged")]
    fn releasing_more_than_was_charged_stops_a_debug_build() {
        let (mine, other) = (CoreBudget::default(), CoreBudget::default());
        let mut b = kept(&[&[1; 10]]);
        mine.settle(&mut b);
        other.release(b);
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn releasing_more_than_was_charged_counts_from_zero_in_a_release_build() {
        let (mine, other) = (CoreBudget::default(), CoreBudget::default());
        let mut b = kept(&[&[1; 10]]);
        mine.settle(&mut b);
        other.release(b);
        assert_eq!(other.used(), 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "never settled")]
    fn freeing_a_keeper_whose_change_was_not_settled_stops_a_debug_build() {
        let budget = CoreBudget::default();
        let mut b = kept(&[&[1; 10]]);
        budget.settle(&mut b);
        b.push_frame(&frame(true, OpCode::Binary, b"late"));
        budget.release(b);
    }

    proptest::proptest! {
        /// Whatever keepers do, settled after each change, the budget is the bytes they hold,
        /// and freeing them all brings it back to zero.
        #[test]
        fn the_budget_is_what_the_keepers_hold(
            ops in proptest::collection::vec((0usize..3, 0u8..6, 1usize..300), 1..200)
        ) {
            let budget = CoreBudget::default();
            let mut keepers: Vec<Backlog> = (0..3).map(|_| Backlog::new("a")).collect();
            for (k, op, n) in ops {
                let b = &mut keepers[k];
                match op {
                    0 => { b.push_frame(&frame(n % 3 != 0, OpCode::Binary, &vec![0; n])); }
                    1 => { b.consume(n % 4); }
                    2 => { b.drop_oldest(); }
                    3 => { b.abandon_open(); }
                    4 => {
                        let frames = b.take_open();
                        let to = &mut keepers[(k + 1) % 3];
                        if !to.has_open() {
                            to.push_open(&frames);
                        }
                        budget.settle(to);
                    }
                    _ => { b.drop_replayed(); }
                }
                budget.settle(&mut keepers[k]);
                let held: usize = keepers.iter().map(Backlog::bytes).sum();
                proptest::prop_assert_eq!(budget.used(), held);
            }
            for b in keepers.drain(..) {
                budget.release(b);
            }
            proptest::prop_assert_eq!(budget.used(), 0);
        }
    }
}
