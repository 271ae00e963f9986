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
//! wake-up per slice (docs/tunnels.md, "How it is built").
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

/// A socket's two descriptors (a `dup`), one per direction, so the two directions are
/// separate tasks' own streams with no shared borrow between them.
pub fn halves(s: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let std = super::socket::into_std(s);
    let twin = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, TcpStream::from_std(twin)?))
}

/// [`halves`] for [`pump_now`]: the socket is made non-blocking (both descriptors share that
/// flag), which its splices need; use them only with `pump_now`, `readable` and `writable`
/// (on io_uring a read or write operation on a non-blocking socket answers `WouldBlock`).
pub fn halves_now(s: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let std = super::socket::into_std(s);
    std.set_nonblocking(true)?;
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

/// Like [`pump`], but each slice is a `splice(2)` made at once; both streams must be
/// non-blocking ([`halves_now`] makes them so). The tunnel client uses it.
pub async fn pump_now(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    pace: &impl Pace,
) -> io::Result<()> {
    let (pipe_r, pipe_w) = io::pipe()?;
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let (pr, pw) = (pipe_r.as_raw_fd(), pipe_w.as_raw_fd());
    let mut next = After::Wait;
    loop {
        let row = match next {
            After::Wait => {
                // On io_uring this is a PollAdd: nothing is held while the source is idle.
                src.readable(false).await?;
                0
            }
            After::Again(row) => row,
        };
        let want = pace.allow(SLICE).await;
        let n = match splice_now(s, pw, want as usize) {
            Ok(0) => return Ok(()),
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
}
