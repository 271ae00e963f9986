//! A core's connections held still for a binary upgrade (issue 25, `relay::handover`): while
//! the worker's share is described and sent to the new process, no connection reads, and
//! each waits here at a point where nothing it read is half processed, until the upgrade's
//! outcome is known. Only this core's thread touches it.

use local_sync::semaphore::Semaphore;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// How a parked connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// The new process holds the connection: its task ends without a word to its client.
    Released,
    /// The upgrade failed: read on as before.
    Resumed,
}

/// The core's park: asked for by `relay::handover::export`, answered by `settle`.
#[derive(Default)]
pub struct Park {
    /// Parking asked for and not answered yet.
    requested: Cell<bool>,
    /// The last answer (read by the tasks the answer wakes).
    answer: Cell<Option<Resolved>>,
    /// Waiters wait for permits that never come: the answer closes it, which wakes them all.
    /// A new one for each upgrade.
    wake: RefCell<Option<Rc<Semaphore>>>,
    /// The peers whose write gates the export holds, given back if the upgrade fails.
    pub gated: RefCell<Vec<Rc<super::Peer>>>,
}

impl Park {
    /// Asks every connection of the core to park at its next point of rest.
    pub fn request(&self) {
        self.requested.set(true);
        self.answer.set(None);
        *self.wake.borrow_mut() = Some(Rc::new(Semaphore::new(0)));
    }

    /// Parking is asked for: a connection at rest must not read.
    pub fn requested(&self) -> bool {
        self.requested.get()
    }

    /// A connection at rest must not read: parking is asked for, or the connections were
    /// released to another process (a task still waiting for readiness then must never read
    /// again: the new process reads that socket now).
    pub fn holds(&self) -> bool {
        self.requested.get() || self.released()
    }

    /// Released once: the core's connections belong to another process from now on.
    pub fn released(&self) -> bool {
        self.answer.get() == Some(Resolved::Released)
    }

    /// Wakes every parked connection with `answer`.
    pub fn resolve(&self, answer: Resolved) {
        self.requested.set(false);
        self.answer.set(Some(answer));
        if let Some(w) = self.wake.borrow_mut().take() {
            w.close();
        }
    }

    /// Waits for the answer (at once when there is one, or no parking was asked for).
    pub async fn wait(&self) -> Resolved {
        let wake = self.wake.borrow().clone();
        if let Some(w) = wake.filter(|_| self.requested.get()) {
            // Never granted: `resolve` closes it, and the wait ends with an error.
            let _ = w.acquire().await;
        }
        self.answer.get().unwrap_or(Resolved::Resumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test_all(timer_enabled = true)]
    async fn waiters_wake_with_the_answer_and_a_second_upgrade_parks_again() {
        let park = Rc::new(Park::default());
        assert_eq!(park.wait().await, Resolved::Resumed);
        park.request();
        let p = park.clone();
        let waiter = monoio::spawn(async move { p.wait().await });
        monoio::time::sleep(std::time::Duration::from_millis(5)).await;
        park.resolve(Resolved::Resumed);
        assert_eq!(waiter.await, Resolved::Resumed);
        assert!(!park.requested());
        park.request();
        let p = park.clone();
        let waiter = monoio::spawn(async move { p.wait().await });
        monoio::time::sleep(std::time::Duration::from_millis(5)).await;
        park.resolve(Resolved::Released);
        assert_eq!(waiter.await, Resolved::Released);
        assert!(park.released());
    }
}
