//! This worker's figures per route and per upstream (`stats::proxy`), kept in its proxy
//! state and read by a scrape on the same thread: recording is a plain add on the
//! worker's own state, never shared.

use super::state;
use crate::config::ProxyConfig;
use crate::context::Core;
use crate::stats::proxy::{class, RouteFigures, UpstreamFigures};
use std::time::{Duration, Instant};

/// Upstream `u` of route `r`'s figures, to update.
pub fn upstream<T>(
    cfg: &ProxyConfig,
    r: usize,
    u: usize,
    f: impl FnOnce(&mut UpstreamFigures) -> T,
) -> T {
    state::with(cfg, |w| f(&mut w.routes[r].fig.upstreams[u]))
}

/// A request of route `r` ended with `status`; `answered`: the upstream that answered it and
/// how long it took from its head to the end of its response.
pub fn finished(cfg: &ProxyConfig, r: usize, status: u16, answered: Option<(usize, Duration)>) {
    state::with(cfg, |w| {
        let fig = &mut w.routes[r].fig;
        fig.requests[class(status)] += 1;
        if let Some((u, took)) = answered {
            fig.upstreams[u].record(took);
        }
    });
}

/// A request of route `r` sent once more.
pub fn retried(cfg: &ProxyConfig, r: usize) {
    state::with(cfg, |w| w.routes[r].fig.retries += 1);
}

/// This worker's figures now, for a scrape (empty without routes).
pub fn figures(core: &Core) -> Vec<RouteFigures> {
    let cfg = core.config();
    if cfg.proxy.routes.is_empty() {
        return Vec::new();
    }
    let now = Instant::now();
    state::with(&cfg.proxy, |w| {
        w.routes
            .iter()
            .map(|st| {
                let mut f = st.fig.clone();
                for (i, u) in f.upstreams.iter_mut().enumerate() {
                    u.idle = st.idle[i].len() as u64;
                    u.healthy = u64::from(st.health[i].healthy(now));
                }
                f
            })
            .collect()
    })
}
