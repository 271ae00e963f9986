//! Moving bytes from one TCP socket to another without copying them through user space:
//! splice from the source into a pipe, then from the pipe into the destination. A tunnel's
//! public connection joined to its data connection (on the relay and in the tunnel client)
//! and a WebSocket (or other upgrade) joined to its upstream through a proxy route use
//! it, so all get the same backpressure: a direction reads at most what one pipe holds and
//! empties the pipe before it reads again, so a slow reader holds its sender back and a pipe
//! holds nothing once its direction is over.
//!
//! Two pumps: [`pump`] makes each slice with the driver's splice operation (the relay's
//! joins); [`pump_now`] makes it a `splice(2)` at once on non-blocking descriptors
//! (`socket::splice_now`), with a readiness wait through the driver only when the source had
//! nothing more or after [`SLICES_IN_A_ROW`] slices (the tunnel client): io_uring's own
//! splice operation always runs in the kernel's worker pool, which costs a worker thread's
//! wake-up per slice (docs/tunnels.md, "How it is built"). `pump_now` takes its pipe from a
//! small per-thread pool of empty pipes ([`IDLE_PIPES`]) only while a slice is in flight.
#![forbid(unsafe_code)]

use super::socket::splice_now;
use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::net::unix::new_pipe;
use monoio::net::TcpStream;
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// What one splice moves at most: a pipe's default capacity (16 pages).
pub const SLICE: u32 = 64 * 1024;

/// Full slices made at once in a row before the next goes through the driver's readiness
/// wait, where the task yields: a direction whose source keeps up cannot hold its core
/// (256 KiB, like the relay's `READS_NOW_IN_A_ROW` reads).
pub const SLICES_IN_A_ROW: u32 = 4;

/// What a direction asks of its owner around each slice: a tunnel shapes its bandwidth and
/// counts bytes; the proxy only counts.
pub trait Pace {
    /// How many bytes the next slice may take, at most `want` (a shaper may wait here).
    fn allow(&self, want: u32) -> impl Future<Output = u32>;
    /// Bytes allowed by `allow` that the slice did not take.
    fn unused(&self, n: u32);
    /// Bytes read from the source into the pipe (`passed` false), then the same bytes once
    /// they all reached the destination (`passed` true).
    fn moved(&self, n: u32, passed: bool);
}

/// A [`Pace`] that only counts the bytes a direction delivered (no shaping).
#[derive(Default)]
pub struct Count(pub Cell<u64>);

impl Pace for Count {
    async fn allow(&self, want: u32) -> u32 {
        want
    }
    fn unused(&self, _: u32) {}
    fn moved(&self, n: u32, passed: bool) {
        if passed {
            self.0.set(self.0.get() + u64::from(n));
        }
    }
}

/// A socket's two descriptors (a `dup`), one per direction, so the two directions are
/// separate tasks' own streams with no shared borrow between them.
pub fn halves(s: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let std = super::socket::into_std(s);
    let twin = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, TcpStream::from_std(twin)?))
}

/// What the last splice from the source says about the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Splice again at once: the slice was full and fewer than [`SLICES_IN_A_ROW`] were.
    Again(u32),
    /// Wait for readiness first: the source had less than asked (likely empty now), had
    /// nothing (`WouldBlock`), or gave enough full slices in a row.
    Wait,
}

impl After {
    /// After a splice that moved `got` of `want` bytes, the `row`th full one in a row before.
    pub fn slice(row: u32, got: u32, want: u32) -> After {
        if got < want || row + 1 >= SLICES_IN_A_ROW {
            After::Wait
        } else {
            After::Again(row + 1)
        }
    }
}

/// Splices `src` into a pipe and the pipe into `dst`, emptying the pipe each time, until
/// `src` ends (`Ok`: the caller passes the FIN on). `Err`: either side failed. Each slice is
/// the driver's splice operation (on io_uring it runs in the kernel's worker pool). The
/// relay's joins use this one: with [`pump_now`] the relay showed stalls of tens of ms to
/// seconds under concurrent connects on a loaded machine, not yet explained
/// (docs/tunnels.md).
pub async fn pump(src: &mut TcpStream, dst: &mut TcpStream, pace: &impl Pace) -> io::Result<()> {
    let (mut pipe_r, mut pipe_w) = new_pipe()?;
    let mut drained = true;
    loop {
        if drained {
            // On io_uring a splice runs in the kernel's worker pool and would hold a worker
            // blocked on an idle socket: wait for data first (a PollAdd), only after a read
            // that emptied the socket.
            src.readable(false).await?;
        }
        let want = pace.allow(SLICE).await;
        let n = match src.splice_to_pipe(&mut pipe_w, want).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pace.unused(want);
                drained = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        pace.unused(want - n);
        drained = n < want;
        pace.moved(n, false);
        let mut left = n;
        while left > 0 {
            match dst.splice_from_pipe(&mut pipe_r, left).await {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable(false).await?,
                Err(e) => return Err(e),
            }
        }
        pace.moved(n, true);
    }
}

/// Ends when nothing has moved for `idle`: `last` is when a byte last moved, in the
/// milliseconds of `now_ms` (the worker's clock).
pub async fn idle_for(last: &Cell<u64>, idle: Duration, now_ms: impl Fn() -> u64) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let since = now_ms().saturating_sub(last.get());
        if since >= idle_ms {
            return;
        }
        monoio::time::sleep(Duration::from_millis(idle_ms - since)).await;
    }
}

/// Empty pipes kept per thread for [`pump_now`]: at most this many wait for reuse, more are
/// closed. A pipe costs a `pipe2` and two `close`s to make and drop (with the kernel's inode,
/// two files and the per-user pipe-page accounting), which was a tenth of the tunnel client's
/// system calls per short connection; taken from here it costs nothing. An idle empty pipe
/// holds no data pages, only its descriptors and the kernel's small structures, and counts
/// its 16 pages against the user's `fs.pipe-user-pages-soft`: 64 of them are 1,024 of the
/// default 16,384 pages.
pub const IDLE_PIPES: usize = 64;

/// A pipe: its read end and its write end.
type Pipe = (io::PipeReader, io::PipeWriter);

thread_local! {
    static PIPES: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty pipe from this thread's pool, or a new one.
fn take_pipe() -> io::Result<Pipe> {
    match PIPES.with(|p| p.borrow_mut().pop()) {
        Some(pipe) => Ok(pipe),
        None => io::pipe(),
    }
}

/// Gives an *empty* pipe back to this thread's pool (closed when the pool is full). A pipe
/// that may hold bytes (a slice cut short by an error or a cancel) is dropped instead, never
/// given back: the next direction would deliver another connection's bytes.
fn give_back_pipe(pipe: Pipe) {
    PIPES.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < IDLE_PIPES {
            pool.push(pipe);
        }
    });
}

/// Pipes waiting in this thread's pool.
#[cfg(test)]
fn idle_pipes() -> usize {
    PIPES.with(|p| p.borrow().len())
}

/// Makes a socket non-blocking (a flag of the open file, so every descriptor of it), which
/// [`pump_now`]'s splices need. Use it then only with `pump_now`, `readable` and `writable`
/// (on io_uring a read or write operation on a non-blocking socket answers `WouldBlock`).
pub fn set_nonblocking(s: &TcpStream) -> io::Result<()> {
    super::socket::set_nonblocking_fd(s.as_raw_fd())
}

/// Like [`pump`], but each slice is a `splice(2)` made at once; both streams must be
/// non-blocking ([`set_nonblocking`]). The tunnel client uses it. The streams are shared,
/// not owned: the other direction of the same pair pumps the other way on the same two
/// sockets (it waits for `src`'s readability where this one waits for `dst`'s writability,
/// which both drivers keep apart), so no descriptor is duplicated.
///
/// The pipe is taken from the thread's pool when a slice starts and given back once it is
/// empty and the source has nothing more for now: a direction waiting for its source holds
/// no pipe, so an idle connection costs none and a short one makes none.
pub async fn pump_now(src: &TcpStream, dst: &TcpStream, pace: &impl Pace) -> io::Result<()> {
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut pipe: Option<Pipe> = None;
    let mut next = After::Wait;
    loop {
        let row = match next {
            After::Wait => {
                if let Some(p) = pipe.take() {
                    give_back_pipe(p);
                }
                // On io_uring this is a PollAdd: nothing is held while the source is idle.
                src.readable(false).await?;
                0
            }
            After::Again(row) => row,
        };
        let want = pace.allow(SLICE).await;
        let (pr, pw) = match &pipe {
            Some((r, w)) => (r.as_raw_fd(), w.as_raw_fd()),
            None => {
                let p = take_pipe()?;
                let fds = (p.0.as_raw_fd(), p.1.as_raw_fd());
                pipe = Some(p);
                fds
            }
        };
        let n = match splice_now(s, pw, want as usize) {
            Ok(0) => {
                if let Some(p) = pipe.take() {
                    give_back_pipe(p);
                }
                return Ok(());
            }
            Ok(n) => n as u32,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pace.unused(want);
                next = After::Wait;
                continue;
            }
            Err(e) => return Err(e),
        };
        pace.unused(want - n);
        next = After::slice(row, n, want);
        pace.moved(n, false);
        let mut left = n as usize;
        while left > 0 {
            match splice_now(pr, d, left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable(false).await?,
                Err(e) => return Err(e),
            }
        }
        pace.moved(n, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_slice_waits_for_readiness() {
        assert_eq!(After::slice(0, 100, SLICE), After::Wait);
        assert_eq!(After::slice(2, SLICE - 1, SLICE), After::Wait);
    }

    #[test]
    fn full_slices_go_on_at_once_until_the_row_is_long_enough() {
        let mut row = 0;
        let mut at_once = 0;
        while let After::Again(r) = After::slice(row, SLICE, SLICE) {
            row = r;
            at_once += 1;
        }
        // The first slice came after a wait; then at most SLICES_IN_A_ROW - 1 more at once.
        assert_eq!(at_once, SLICES_IN_A_ROW - 1);
    }

    /// Two connected sockets over loopback: (the end the test drives, the end a pump uses).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (c, a) = monoio::join!(TcpStream::connect_addr(addr), l.accept());
        (c.unwrap(), a.unwrap().0)
    }

    /// Sends `n` bytes into `a`, then its FIN, through a pump from `b` to `c`, and reads them
    /// all from `d`.
    async fn one_connection(n: usize) {
        use monoio::io::{AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};
        let ((mut a, b), (c, mut d)) = (pair().await, pair().await);
        set_nonblocking(&b).unwrap();
        set_nonblocking(&c).unwrap();
        let count = Count(Cell::new(0));
        let send = async {
            let (r, _) = a.write_all(vec![7u8; n]).await;
            r.unwrap();
            a.shutdown().await.unwrap();
        };
        let recv = async {
            let (r, got) = d.read_exact(vec![0u8; n]).await;
            r.unwrap();
            got
        };
        let (pumped, (), got) = monoio::join!(pump_now(&b, &c, &count), send, recv);
        pumped.unwrap();
        assert_eq!(got, vec![7u8; n]);
        assert_eq!(count.0.get(), n as u64);
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn connections_one_after_another_reuse_one_pipe() {
        let before = idle_pipes();
        for n in [64, 300 * 1024, 10] {
            one_connection(n).await;
            // The pipe came back empty; the next connection takes it instead of a new one.
            assert_eq!(idle_pipes(), before.max(1), "after {n} bytes");
        }
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn a_pipe_cut_short_is_closed_not_given_back() {
        use monoio::io::AsyncWriteRentExt;
        let ((mut a, b), (c, _d)) = (pair().await, pair().await);
        set_nonblocking(&b).unwrap();
        set_nonblocking(&c).unwrap();
        let before = idle_pipes();
        let count = Count(Cell::new(0));
        // Nobody reads `_d`: the pump fills the socket buffers and waits, a pipe in hand.
        let writer = monoio::spawn(async move {
            for _ in 0..64 {
                let (r, _) = a.write_all(vec![1u8; 256 * 1024]).await;
                if r.is_err() {
                    break;
                }
            }
        });
        let stuck =
            monoio::time::timeout(Duration::from_millis(300), pump_now(&b, &c, &count)).await;
        assert!(stuck.is_err(), "the pump waits for the destination");
        // The pump was dropped holding a pipe that may hold bytes: that pipe is not pooled.
        assert_eq!(idle_pipes(), before.saturating_sub(1));
        drop((b, c));
        drop(writer);
    }

    #[test]
    fn the_pool_keeps_at_most_idle_pipes() {
        for _ in 0..IDLE_PIPES + 10 {
            give_back_pipe(io::pipe().unwrap());
        }
        assert_eq!(idle_pipes(), IDLE_PIPES);
        PIPES.with(|p| p.borrow_mut().clear());
    }
}
