//! Precise wake-ups for fixed-rate senders.
//!
//! monoio's timers tick in whole milliseconds, so a sender that sleeps until a message is due
//! leaves on average more than half a millisecond late, and in fixed-rate mode that lateness
//! is (rightly) part of the latency measured. Instead, each load thread has a helper thread
//! that keeps the senders' due times in a heap and waits for the earliest with a futex
//! timeout (`recv_timeout`, microsecond precision). When one is due it writes the sender's
//! token into a socket pair; a task on the runtime reads the tokens and wakes the senders.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The runtime's side: ask for a wake-up, and the socket the tokens arrive on.
pub struct Alarm {
    tx: mpsc::Sender<(u64, u32)>,
}

impl Alarm {
    /// Starts the helper thread. Times are nanoseconds since `epoch`. The thread ends when
    /// the `Alarm` is dropped.
    pub fn start(epoch: Instant) -> std::io::Result<(Alarm, monoio::net::UnixStream)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        theirs.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("load-alarm".into())
            .spawn(move || run(epoch, rx, ours))?;
        Ok((Alarm { tx }, monoio::net::UnixStream::from_std(theirs)?))
    }

    /// Writes `token` to the socket at `at` (nanoseconds since the epoch), or at once if that
    /// has passed.
    pub fn set(&self, at: u64, token: u32) {
        let _ = self.tx.send((at, token));
    }
}

fn run(epoch: Instant, rx: mpsc::Receiver<(u64, u32)>, mut out: std::os::unix::net::UnixStream) {
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
    let mut due = Vec::with_capacity(256);
    loop {
        let now = epoch.elapsed().as_nanos() as u64;
        while let Some(&Reverse((at, token))) = heap.peek() {
            if at > now {
                break;
            }
            heap.pop();
            due.extend_from_slice(&token.to_le_bytes());
        }
        if !due.is_empty() {
            if out.write_all(&due).is_err() {
                return;
            }
            due.clear();
        }
        let next = match heap.peek() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(&Reverse((at, _))) => rx.recv_timeout(Duration::from_nanos(at - now)),
        };
        match next {
            Ok(item) => heap.push(Reverse(item)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
