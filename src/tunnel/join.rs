//! Joining a public connection to its data connection: each direction is spliced from one
//! socket into a pipe and from the pipe into the other socket, so the bytes stay in the
//! kernel. A direction reads at most what one pipe holds and empties the pipe before it reads
//! again, so a slow reader holds its sender back (backpressure both ways, independently) and
//! a pipe never holds anything once its direction is over. A FIN from one side becomes
//! `shutdown(SHUT_WR)` on the other; an error or reset on either side, or
//! `tunnel.idle_timeout` without a byte, ends both.
//!
//! Each socket is used through two descriptors (a `dup`), one per direction, so the two
//! directions are separate tasks' own streams with no shared borrow between them.

use super::book::Tunnel;
use crate::context::Core;
use crate::limits::IpCharge;
use crate::stats::bump;
use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::io::AsyncWriteRentExt;
use monoio::net::unix::new_pipe;
use monoio::net::{Pipe, TcpStream};
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// What one splice moves at most: a pipe's default capacity (16 pages).
const SLICE: u32 = 64 * 1024;

/// A data connection, upgraded: its socket, the bytes the client sent after its request
/// head (the start of the stream), and its place in its client's count of connections.
pub struct DataConn {
    pub stream: TcpStream,
    pub extra: Vec<u8>,
    pub charge: IpCharge,
}

/// Which way a direction goes, for its byte counter.
#[derive(Clone, Copy)]
enum Way {
    /// Public connection to data connection.
    In,
    Out,
}

/// Joins `public` and `data` until both directions end.
pub async fn join(core: Rc<Core>, tunnel: Rc<Tunnel>, mut public: TcpStream, data: DataConn) {
    let DataConn {
        stream: data,
        extra,
        charge: _charge,
    } = data;
    if !extra.is_empty() {
        let (r, _) = public.write_all(extra).await;
        if r.is_err() {
            return;
        }
    }
    let (Ok((pub_r, pub_w)), Ok((data_r, data_w))) = (halves(public), halves(data)) else {
        return;
    };
    let last = Cell::new(core.clock.now_ms());
    let idle = core.config().tunnel.idle_timeout;
    let both = async {
        monoio::join!(
            direction(&core, &tunnel, pub_r, data_w, Way::In, &last),
            direction(&core, &tunnel, data_r, pub_w, Way::Out, &last),
        )
    };
    monoio::select! {
        _ = both => {}
        _ = watch_idle(&core, &last, idle) => {
            bump(&core.stats.tunnel_idle_timeouts, 1);
        }
    }
}

/// A socket's two descriptors, one per direction.
fn halves(s: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let std = crate::runtime::socket::into_std(s);
    let twin = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, TcpStream::from_std(twin)?))
}

/// Ends when the pair has moved no byte for `idle`.
async fn watch_idle(core: &Core, last: &Cell<u64>, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let since = core.clock.now_ms().saturating_sub(last.get());
        if since >= idle_ms {
            return;
        }
        monoio::time::sleep(Duration::from_millis(idle_ms - since)).await;
    }
}

/// One direction, `src` to `dst`, until `src`'s FIN (passed on as `dst`'s) or an error (which
/// shuts both sockets both ways, so the other direction ends too).
async fn direction(
    core: &Core,
    tunnel: &Tunnel,
    mut src: TcpStream,
    mut dst: TcpStream,
    way: Way,
    last: &Cell<u64>,
) {
    use std::os::fd::AsRawFd;
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let moved = match new_pipe() {
        Ok((mut r, mut w)) => {
            pump(
                core,
                tunnel,
                &mut src,
                &mut dst,
                (&mut r, &mut w),
                way,
                last,
            )
            .await
        }
        Err(e) => Err(e),
    };
    use crate::runtime::socket::shutdown_fd;
    match moved {
        Ok(()) => shutdown_fd(d, std::net::Shutdown::Write),
        Err(_) => {
            shutdown_fd(s, std::net::Shutdown::Both);
            shutdown_fd(d, std::net::Shutdown::Both);
        }
    }
}

/// Splices `src` into the pipe and the pipe into `dst`, emptying the pipe each time, until
/// `src` ends. `Err`: either side failed.
async fn pump(
    core: &Core,
    tunnel: &Tunnel,
    src: &mut TcpStream,
    dst: &mut TcpStream,
    (pipe_r, pipe_w): (&mut Pipe, &mut Pipe),
    way: Way,
    last: &Cell<u64>,
) -> io::Result<()> {
    let counter = match way {
        Way::In => &core.stats.tunnel_bytes_in,
        Way::Out => &core.stats.tunnel_bytes_out,
    };
    let mut drained = true;
    loop {
        if drained {
            // On io_uring a splice runs in the kernel's worker pool and would hold a worker
            // blocked on an idle socket: wait for data first (a PollAdd), only after a read
            // that emptied the socket.
            src.readable(false).await?;
        }
        let want = tunnel.shape_take(SLICE, &core.stats).await;
        let n = match src.splice_to_pipe(pipe_w, want).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tunnel.shape_return(want);
                drained = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        tunnel.shape_return(want - n);
        drained = n < want;
        last.set(core.clock.now_ms());
        let mut left = n;
        while left > 0 {
            match dst.splice_from_pipe(pipe_r, left).await {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable(false).await?,
                Err(e) => return Err(e),
            }
        }
        bump(counter, u64::from(n));
        last.set(core.clock.now_ms());
    }
}
