//! The region-aware reverse proxy (docs/proxy.md): requests for paths none of ringrelay's own
//! routes take, matched by `proxy.routes`, are forwarded to an upstream HTTP/1.1 server of
//! the region they ask for, on the worker that read them, with its keep-alive pool. One
//! exchange at a time per client connection, so pipelined requests are answered in order. An
//! upgrade the upstream accepts (101) joins the two connections byte for byte (`upgrade`).
#![forbid(unsafe_code)]

mod body;
mod exchange;
mod head;
pub mod health;
mod pick;
mod state;
pub mod stats;
mod table;
mod upgrade;

pub use table::route_for;

use crate::context::Core;
use crate::http::{parse_head, HeadScan, RequestHead};
use crate::runtime::stream::ServerStream;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use std::net::IpAddr;
use std::rc::Rc;

/// A request the server's dispatch gave the proxy: its head, what was read after it, and
/// who sent it.
pub struct ProxyRequest {
    pub head: RequestHead,
    /// Bytes read after the head: the start of its body (and maybe of the next request).
    pub extra: Vec<u8>,
    /// Index into `proxy.routes`.
    pub route: usize,
    /// The direct peer.
    pub peer: IpAddr,
    /// The client's place in its count of open connections (admission, on its home core),
    /// held until the connection, and any upgrade joined on it, is gone.
    pub charge: Option<crate::limits::IpCharge>,
}

/// Serves a client connection's requests, the first already read, until it closes, a
/// request asks to, or a request needs the connection closed.
pub async fn serve(core: Rc<Core>, mut stream: ServerStream, req: ProxyRequest) {
    let ProxyRequest {
        mut head,
        extra,
        mut route,
        peer,
        charge: _charge,
    } = req;
    let mut pending = extra;
    loop {
        match exchange::exchange(&core, &mut stream, &head, route, peer, &mut pending).await {
            exchange::Step::Keep => {}
            exchange::Step::Close => return,
            exchange::Step::Upgraded(up) => return upgrade::join(&core, stream, *up).await,
        }
        let Some(next) = next_head(&core, &mut stream, &mut pending).await else {
            return;
        };
        head = next;
        route = match route_for(&core.config().proxy.routes, &head) {
            Some(r) => r,
            None => {
                // A keep-alive connection stays with the proxy: one of ringrelay's own
                // routes is asked for on a new connection.
                if let Some(note) = stream.access_mut() {
                    note.set_request(&head.method, &head.path);
                }
                let refusal = crate::limits::Refusal::NotFound;
                refusal.write(&core.stats, &mut stream).await;
                return;
            }
        };
    }
}

/// The next request head on a kept-alive connection, within `proxy.idle_timeout`, under the
/// same head limits as the first. `None`: the client is gone, idle, or sent a bad head
/// (answered 400 or 431).
async fn next_head(
    core: &Core,
    stream: &mut ServerStream,
    pending: &mut Vec<u8>,
) -> Option<RequestHead> {
    let cfg = core.config();
    let (max_bytes, max_headers) = (cfg.limits.max_header_bytes, cfg.limits.max_headers);
    let mut scan = HeadScan::default();
    let mut buf = std::mem::take(pending);
    let deadline = std::time::Instant::now() + cfg.proxy.idle_timeout;
    loop {
        let refused = match scan.feed(&buf, max_bytes, max_headers) {
            Ok(Some(end)) => match parse_head(&buf[..end], max_bytes, max_headers) {
                Ok(Some((head, n))) => {
                    buf.drain(..n);
                    *pending = buf;
                    return Some(head);
                }
                Ok(None) => crate::http::HeadError::Malformed,
                Err(e) => e,
            },
            Ok(None) => {
                if buf.len() == buf.capacity() {
                    buf.reserve(buf.capacity().max(1024));
                }
                let cap = buf.capacity().min(max_bytes.max(buf.len() + 1));
                let len = buf.len();
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let read = stream.read(buf.slice_mut(len..cap));
                let (res, slice) = monoio::time::timeout(left, read).await.ok()?;
                buf = slice.into_inner();
                match res {
                    Ok(n) if n > 0 => continue,
                    _ => return None,
                }
            }
            Err(e) => e,
        };
        crate::limits::Refusal::Head(refused)
            .write(&core.stats, stream)
            .await;
        return None;
    }
}
