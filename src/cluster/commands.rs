//! A worker's side of the cluster thread's commands: a task per worker, off the forwarding
//! path, like the scrape inbox.

use crate::context::Core;
use crate::fleet::ask::Command;
use crate::stats::bump;
use crate::ws::CloseCode;
use std::rc::Rc;

pub async fn serve(core: Rc<Core>, rx: flume::Receiver<Command>) {
    while let Ok(c) = rx.recv_async().await {
        match c {
            Command::Sessions(reply) => {
                // A session given up to another owner is not renewed while its peers close.
                let ids = core
                    .registry
                    .sessions()
                    .iter()
                    .filter(|s| !s.moved.get())
                    .map(|s| s.id.to_string())
                    .collect();
                let _ = reply.try_send(ids);
            }
            Command::Evict(id) => {
                let Some(session) = core.registry.get(&id).filter(|s| !s.moved.get()) else {
                    continue;
                };
                bump(&core.stats.cluster_sessions_evicted, 1);
                session.moved.set(true);
                let now = core.clock.now_ms();
                for p in session.peers() {
                    monoio::spawn(async move {
                        p.close(
                            CloseCode::SERVICE_RESTART,
                            "the session moved to another node; reconnect",
                            now,
                        )
                        .await
                    });
                }
            }
            Command::NodesGone(ids) => core.cluster_local.nodes_gone(&core, &ids),
            Command::TunnelFigures(reply) => {
                let s = &core.stats;
                let _ = reply.try_send(crate::fleet::ask::TunnelFigures {
                    bytes: s.tunnel_bytes_in.get() + s.tunnel_bytes_out.get(),
                    max_tunnels: core.with_config(|c| c.tunnel.max_tunnels),
                });
            }
        }
    }
}
