//! Joining a public connection to its data connection: each direction is spliced through a
//! pipe (`runtime::splice`), so the bytes stay in the kernel, with backpressure both ways,
//! independently, and nothing left in a pipe once its direction is over. A FIN from one side
//! becomes `shutdown(SHUT_WR)` on the other; an error or reset on either side, or
//! `tunnel.idle_timeout` without a byte, ends both. Each socket is used through two
//! descriptors (`runtime::splice::halves`), one per direction.

use super::book::Tunnel;
use crate::context::Core;
use crate::limits::IpCharge;
use crate::runtime::splice::{halves, pump, Pace};
use crate::stats::bump;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

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
    use crate::runtime::socket::shutdown_fd;
    use std::os::fd::AsRawFd;
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let counter = match way {
        Way::In => &core.stats.tunnel_bytes_in,
        Way::Out => &core.stats.tunnel_bytes_out,
    };
    let pace = Shaped {
        core,
        tunnel,
        counter,
        last,
    };
    match pump(&mut src, &mut dst, &pace).await {
        Ok(()) => shutdown_fd(d, std::net::Shutdown::Write),
        Err(_) => {
            shutdown_fd(s, std::net::Shutdown::Both);
            shutdown_fd(d, std::net::Shutdown::Both);
        }
    }
}

/// A relay-side direction's pace: the tunnel's token bucket (`tunnel.max_bandwidth`), its byte
/// counter, and the pair's last-activity time for `tunnel.idle_timeout`.
struct Shaped<'a> {
    core: &'a Core,
    tunnel: &'a Tunnel,
    counter: &'a Cell<u64>,
    last: &'a Cell<u64>,
}

impl Pace for Shaped<'_> {
    async fn allow(&self, want: u32) -> u32 {
        self.tunnel.shape_take(want, &self.core.stats).await
    }

    fn unused(&self, n: u32) {
        self.tunnel.shape_return(n);
    }

    fn moved(&self, n: u32, passed: bool) {
        self.last.set(self.core.clock.now_ms());
        if passed {
            bump(self.counter, u64::from(n));
        }
    }
}
