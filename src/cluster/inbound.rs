//! The owner's side of the node-to-node link: every connection to `cluster.internal_listen`
//! must answer a fresh challenge with the cluster secret before a byte of it is read as a
//! request, and gets this node's own proof back only then. Once it has, the request it
//! carries is handled as if the client had connected here, with the carrier's admission
//! decision (so limits are not charged twice). Openings not yet proved are capped per source
//! address and per worker (`cluster.max_pending_links_per_ip`, `cluster.max_pending_links`).
//!
//! With `cluster.tls_*` set, the listener speaks only TLS: the carrier's certificate must chain
//! to the cluster CA before the challenge is even sent, and everything after (the challenge,
//! the carried request, the session's frames) is inside the TLS session. The pending caps and
//! `limits.handshake_timeout` cover the TLS handshake too.

use super::link::{self, Accepted, Carried, NONCE_BYTES};
use crate::context::Core;
use crate::fleet::local::Local;
use crate::fleet::pending::Full;
use crate::runtime::stream::ServerStream;
use crate::runtime::tls::Refused;
use crate::stats::bump;
use crate::tls::Failure;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use std::net::IpAddr;
use std::time::Duration;

/// Why an opening was refused, for the log and the refusal line.
async fn refuse(core: &Core, stream: &mut (impl AsyncReadRent + AsyncWriteRent), code: &str) {
    bump(&core.stats.cluster_link_refused, 1);
    tracing::warn!(code, "refused a connection on the internal listener");
    let _ = stream.write_all(link::refused_line(code)).await;
    let _ = monoio::io::AsyncWriteRent::shutdown(stream).await;
}

/// An opening counted as pending until it is dropped.
struct Pending<'a> {
    local: &'a Local,
    ip: IpAddr,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.local.pending.borrow_mut().close(self.ip);
    }
}

/// Charges an opening from `ip` against the pending caps; `None` (counted) when over one.
fn charge<'a>(core: &'a Core, ip: IpAddr) -> Option<Pending<'a>> {
    let c = &core.config().cluster;
    let opened = core.cluster_local.pending.borrow_mut().open(
        ip,
        c.max_pending_links_per_ip,
        c.max_pending_links,
    );
    match opened {
        Ok(()) => Some(Pending {
            local: &core.cluster_local,
            ip,
        }),
        Err(full) => {
            let counter = match full {
                Full::Address => &core.stats.cluster_link_pending_ip_refused,
                Full::Worker => &core.stats.cluster_link_pending_refused,
            };
            bump(counter, 1);
            // A flood would repeat this line per connection; the counters tell the rate.
            tracing::debug!(%ip, ?full, "closed an opening on the internal listener: too many pending");
            None
        }
    }
}

/// With `cluster.tls_*` set: the TLS handshake, the carrier's certificate checked against the
/// cluster CA, within `left`. A failure is counted and logged (the carrier is another node, or
/// something posing as one: worth a line), and the connection closed without a word in clear.
async fn tls_step(core: &Core, stream: &mut ServerStream, peer: IpAddr, left: Duration) -> bool {
    let Some(tls) = core.cluster_local.tls() else {
        return true;
    };
    // No HSTS on the link: answers on it are for a client of another node.
    let why = match monoio::time::timeout(left, stream.start_tls(tls.server.clone(), 0)).await {
        Ok(Ok(())) => return true,
        Ok(Err(Refused::Tls(e))) => {
            if Failure::of(&e) == Failure::BadClientCert {
                bump(&core.stats.cluster_link_tls_bad_cert, 1);
            }
            e.to_string()
        }
        Ok(Err(Refused::NotTls)) => {
            "not TLS: a node without cluster.tls_* set, or not a node".to_string()
        }
        Ok(Err(Refused::Closed)) => "closed during the handshake".to_string(),
        Ok(Err(Refused::Io(e))) => e.to_string(),
        Err(_) => "timed out (a node without cluster.tls_* set waits for a challenge in clear)"
            .to_string(),
    };
    bump(&core.stats.cluster_link_tls_failed, 1);
    tracing::warn!(%peer, error = %why, "refused a TLS handshake on the internal listener");
    false
}

/// Runs the opening within `limits.handshake_timeout` (the TLS handshake first, when the link
/// has TLS); returns the carried peer and the bytes after the opening (the client's request,
/// if the carrier sent any yet), or `None` after refusing. `peer` is the direct peer's address
/// (the carrying node's).
pub async fn accept_link(
    core: &Core,
    stream: &mut ServerStream,
    peer: IpAddr,
) -> Option<(Carried, Vec<u8>)> {
    // Over a cap the connection is dropped here, before a handshake, challenge or buffer.
    let pending = charge(core, peer)?;
    let started = std::time::Instant::now();
    let timeout = core.config().limits.handshake_timeout;
    if !tls_step(core, stream, peer, timeout).await {
        return None;
    }
    let timeout = timeout.saturating_sub(started.elapsed());
    let Some(secret) = core.shared.cluster_secret.clone() else {
        refuse(core, stream, "no_secret").await;
        return None;
    };
    let nonce: [u8; NONCE_BYTES] = core.rng.bytes();
    let (r, _) = stream.write_all(link::challenge_line(&nonce)).await;
    r.ok()?;
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        loop {
            match link::verify_answer(&secret, &nonce, &buf) {
                Ok(Some(a)) => return Ok((a, buf)),
                Ok(None) => {}
                Err(e) => return Err(e.code()),
            }
            if buf.len() == buf.capacity() {
                buf.reserve(1024);
            }
            let len = buf.len();
            let (r, slice) = stream
                .read(monoio::buf::IoBufMut::slice_mut(buf, len..))
                .await;
            buf = slice.into_inner();
            match r {
                Ok(n) if n > 0 => {}
                _ => return Err("closed"),
            }
        }
    };
    let verdict = match monoio::time::timeout(timeout, read).await {
        Ok(v) => v,
        Err(_) => Err("timeout"),
    };
    match verdict {
        Ok((Accepted { carried, used, ok }, mut buf)) => {
            // Proved: from here it counts as a connection like any other, not as pending.
            drop(pending);
            let (r, _) = stream.write_all(ok).await;
            r.ok()?;
            Some((carried, buf.split_off(used)))
        }
        Err(code) => {
            refuse(core, stream, code).await;
            None
        }
    }
}
