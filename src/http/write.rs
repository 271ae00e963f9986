//! Writing an HTTP answer on a connection that ends with it: every answer closes the
//! connection, politely, so the client reads it before the reset an unread request body would
//! otherwise cause. Shared by the HTTP phase, the relay's late refusals, the bridge and the
//! cluster's carrying node, which all sit above this module.

use super::Response;
use crate::stats::{CoreStats, RefusedStatus};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::time::Duration;

/// Writes a refusal and counts it by its status in `refused_by` (the one place that does).
pub async fn refuse(stats: &CoreStats, stream: &mut TcpStream, resp: Response) {
    stats.refused(RefusedStatus::Status(resp.status));
    answer(stream, resp).await;
}

/// Writes an answer that is not a refusal (health, stats, the demo page), then closes.
pub async fn answer(stream: &mut TcpStream, resp: Response) {
    write_and_close(stream, resp.to_bytes()).await
}

/// Writes a whole HTTP response, then closes so the client reads it before any reset an
/// unread request body would cause.
pub async fn write_and_close(stream: &mut TcpStream, bytes: Vec<u8>) {
    let (r, _) = stream.write_all(bytes).await;
    if r.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 4096];
        for _ in 0..16 {
            let (r, b) = stream.read(buf).await;
            buf = b;
            if !matches!(r, Ok(n) if n > 0) {
                break;
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_millis(500), drain).await;
}
