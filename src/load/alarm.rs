//! Precise wake-ups for fixed-rate senders.
//!
//! monoio's timers tick in whole milliseconds, so a sender that sleeps until a message is due
//! leaves on average more than half a millisecond late, and in fixed-rate mode that lateness
//! is (rightly) part of the latency measured. Instead, each load thread has a helper thread
//! that keeps the senders' due times in a heap and waits for the earliest with a futex
//! timeout (`recv_timeout`, microsecond precision). When one is due it writes the sender's
//! token into a socket pair; a task on the runtime reads the tokens and wakes the senders.

use monoio::io::AsyncReadRent;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::rc::Rc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::{Poll, Waker};
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

/// Fixed-rate senders' wake-ups on one load thread's runtime (`--mode tunnel --tunnel-test rr
/// --rate`, `--mode http --rate`): the alarm thread writes a sender's token when it is due,
/// and a task on the runtime rings that sender's bell.
pub struct Clock {
    epoch: Instant,
    alarm: Alarm,
    bells: Vec<Bell>,
}

#[derive(Default)]
struct Bell {
    rung: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Clock {
    /// Starts the alarm thread and the task that reads its tokens; must run on the
    /// runtime. Senders are numbered `0..senders`.
    pub fn start(senders: usize) -> std::io::Result<Rc<Clock>> {
        let epoch = Instant::now();
        let (alarm, mut tokens) = Alarm::start(epoch)?;
        let clock = Rc::new(Clock {
            epoch,
            alarm,
            bells: (0..senders).map(|_| Bell::default()).collect(),
        });
        let weak = Rc::downgrade(&clock);
        monoio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            loop {
                buf.clear();
                let (r, b) = tokens.read(buf).await;
                buf = b;
                let (Ok(n), Some(clock)) = (r, weak.upgrade()) else {
                    return;
                };
                for t in buf[..n].chunks_exact(4) {
                    let i = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize;
                    if let Some(bell) = clock.bells.get(i) {
                        bell.rung.set(true);
                        if let Some(w) = bell.waker.borrow_mut().take() {
                            w.wake();
                        }
                    }
                }
            }
        });
        Ok(clock)
    }

    /// Waits until `at` for sender `i`.
    pub async fn until(&self, i: usize, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let bell = &self.bells[i];
        bell.rung.set(false);
        self.alarm
            .set((at - self.epoch).as_nanos() as u64, i as u32);
        std::future::poll_fn(|cx| {
            if bell.rung.get() {
                return Poll::Ready(());
            }
            *bell.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
