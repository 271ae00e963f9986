//! Moving bytes from one TCP socket to another without copying them through user space:
//! splice from the source into a pipe, then from the pipe into the destination. A tunnel's
//! public connection joined to its data connection and a WebSocket (or other upgrade) joined
//! to its upstream through a proxy route use it, so both get the same backpressure: a
//! direction reads at most what one pipe holds and empties the pipe before it reads again, so
//! a slow reader holds its sender back and a pipe holds nothing once its direction is over.
#![forbid(unsafe_code)]

use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::net::unix::new_pipe;
use monoio::net::TcpStream;
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::time::Duration;

/// What one splice moves at most: a pipe's default capacity (16 pages).
pub const SLICE: u32 = 64 * 1024;

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

/// Splices `src` into a pipe and the pipe into `dst`, emptying the pipe each time, until
/// `src` ends (`Ok`: the caller passes the FIN on). `Err`: either side failed.
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
