//! Ending every connection of a worker at once: at a stop (SIGTERM) and, in the fallback
//! handover, before a binary upgrade. Sessions keep what they keep, exactly as when a peer
//! leaves, so a snapshot taken afterwards holds it.

use crate::context::Core;
use crate::ws::CloseCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Closes every peer and carried peer of this worker with `code` and waits, up to
/// `shutdown_grace`, for their close handshakes. Returns how many were still open at the
/// deadline.
pub async fn close_all(core: &Rc<Core>, code: CloseCode, reason: &'static str) -> usize {
    let now = core.clock.tick();
    for p in core.registry.peers() {
        monoio::spawn(async move { p.close(code, reason, now).await });
    }
    // Carried peers are told the same, and their links to the owners end.
    core.cluster_local.end_all(code);
    let deadline = Instant::now() + core.config().shutdown_grace;
    let busy = || core.registry.peer_count() + core.cluster_local.carry_count() > 0;
    while busy() && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    core.registry.peer_count()
}
