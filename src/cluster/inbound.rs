//! The owner's side of the node-to-node link: every connection to `cluster.internal_listen`
//! must answer a fresh challenge with the cluster secret before a byte of it is read as a
//! request. Once it has, the request it carries is handled as if the client had connected
//! here, with the carrier's admission decision (so limits are not charged twice).

use super::link::{self, Carried, NONCE_BYTES};
use crate::runtime::Core;
use crate::stats::bump;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Why an opening was refused, for the log and the refusal line.
async fn refuse(core: &Core, stream: &mut TcpStream, code: &str) {
    bump(&core.stats.cluster_link_refused, 1);
    tracing::warn!(code, "refused a connection on the internal listener");
    let _ = stream.write_all(link::refused_line(code)).await;
    let _ = monoio::io::AsyncWriteRent::shutdown(stream).await;
}

/// Runs the opening within `limits.handshake_timeout`; returns the carried peer and the
/// bytes after the opening (the client's request), or `None` after refusing.
pub async fn accept_link(core: &Core, stream: &mut TcpStream) -> Option<(Carried, Vec<u8>)> {
    let Some(secret) = core.shared.cluster_secret.clone() else {
        refuse(core, stream, "no_secret").await;
        return None;
    };
    let nonce: [u8; NONCE_BYTES] = core.rng.bytes();
    let (r, _) = stream.write_all(link::challenge_line(&nonce)).await;
    r.ok()?;
    let timeout = core.config().limits.handshake_timeout;
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        loop {
            match link::verify_answer(&secret, &nonce, &buf) {
                Ok(Some((carried, used))) => return Ok((carried, buf.split_off(used))),
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
        Ok((carried, rest)) => {
            let (r, _) = stream.write_all(link::ACK.to_vec()).await;
            r.ok()?;
            Some((carried, rest))
        }
        Err(code) => {
            refuse(core, stream, code).await;
            None
        }
    }
}
