//! A data connection, `GET /v1/tunnel/accept/{id}` upgraded to raw bytes: matched with the
//! public connection waiting under that id on this worker (the handoff brought it here), then
//! given to that connection's task, which joins the two.

use super::book;
use super::join::DataConn;
use crate::context::Core;
use crate::http::{RequestHead, Response};
use crate::limits::{IpCharge, Refusal};
use crate::runtime::stream::ServerStream;
use monoio::io::AsyncWriteRentExt;

/// The upgrade token of a data connection.
pub const UPGRADE: &str = "ringrelay-tunnel";

const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ringrelay-tunnel\r\nConnection: Upgrade\r\n\r\n";

/// Whether `head` asks for the data connection's upgrade: `Connection` naming `upgrade` and
/// `Upgrade: ringrelay-tunnel` (any case), on a GET.
pub fn asks_upgrade(head: &RequestHead) -> bool {
    let has_token = |name: &str, token: &str| {
        head.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    head.method == "GET" && has_token("connection", "upgrade") && has_token("upgrade", UPGRADE)
}

/// A data connection's request, admitted and charged.
pub struct DataRequest {
    pub head: RequestHead,
    pub id: String,
    pub extra: Vec<u8>,
    pub charge: IpCharge,
}

/// Serves a data connection admitted (and charged) for its id.
pub async fn serve_data(core: &Core, mut stream: ServerStream, req: DataRequest) {
    let DataRequest {
        head,
        id,
        extra,
        charge,
    } = req;
    if !asks_upgrade(&head) {
        let resp = Response::error(
            426,
            "upgrade_required",
            "a tunnel data connection upgrades to ringrelay-tunnel",
        )
        .with_header("Upgrade", UPGRADE);
        return Refusal::Upgrade(resp).write(&core.stats, &mut stream).await;
    }
    if stream.tls().is_some() {
        let resp = Response::error(
            400,
            "tunnel_tls_unsupported",
            "tunnel data connections are spliced: connect to the plain listener",
        );
        return Refusal::Upgrade(resp).write(&core.stats, &mut stream).await;
    }
    let Some(tx) = book::with(|b| b.pending.remove(&id)) else {
        return Refusal::TunnelUnknown.write(&core.stats, &mut stream).await;
    };
    let (mut tcp, _) = stream.into_parts();
    let (r, _) = tcp.write_all(SWITCHING.to_vec()).await;
    if r.is_err() {
        return;
    }
    let _ = tcp.set_nodelay(true);
    // The waiting connection may have timed out meanwhile: then this one just closes.
    let _ = tx.send(DataConn {
        stream: tcp,
        extra,
        charge,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upgrade_is_asked_for_in_any_case() {
        let h = |hs: &[(&str, &str)]| RequestHead::with_headers("GET", "/v1/tunnel/accept/x", hs);
        assert!(asks_upgrade(&h(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "RingRelay-Tunnel")
        ])));
        assert!(!asks_upgrade(&h(&[("upgrade", "ringrelay-tunnel")])));
        assert!(!asks_upgrade(&h(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket")
        ])));
    }
}
