//! Stopping: a latch any task can wait on, set once by SIGTERM or SIGINT.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Set once, waited on by any number of tasks. Waiting is cancel-safe: a wait dropped in a
/// `select!` loses nothing, and a task that waits again is not registered twice.
#[derive(Default)]
pub struct Latch {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Latch {
    pub fn set(&self) {
        self.set.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.get() {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Sets `latch` on the first SIGTERM or SIGINT. The handlers write to a socket pair that a
/// task on this runtime reads, so nothing runs in the signal handler but a write.
pub fn on_signals(latch: Rc<Latch>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    for sig in [SIGTERM, SIGINT] {
        signal_hook::low_level::pipe::register(sig, theirs.try_clone()?)?;
    }
    ours.set_nonblocking(true)?;
    let mut ours = monoio::net::UnixStream::from_std(ours)?;
    monoio::spawn(async move {
        use monoio::io::AsyncReadRent;
        let (_, _) = ours.read(vec![0u8; 16]).await;
        latch.set();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_waiter_wakes_once_set() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let latch = Rc::new(Latch::default());
            let woke = Rc::new(Cell::new(0));
            for _ in 0..3 {
                let (l, w) = (latch.clone(), woke.clone());
                monoio::spawn(async move {
                    // A wait given up in a select, then waited again, is not lost.
                    monoio::select! {
                        _ = l.wait() => {}
                        _ = monoio::time::sleep(std::time::Duration::from_millis(1)) => {}
                    }
                    l.wait().await;
                    w.set(w.get() + 1);
                });
            }
            monoio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert_eq!(woke.get(), 0);
            latch.set();
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(woke.get(), 3);
            assert!(latch.waiters.borrow().is_empty());
            latch.wait().await;
        });
    }
}
