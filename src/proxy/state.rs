//! This worker's proxy state: each upstream's health and idle keep-alive connections, each
//! route's requests in flight, and the body buffers. Owned by the worker's thread (a
//! thread-local of its one thread), borrowed briefly and never across an await.

use super::pick::Health;
use crate::config::ProxyConfig;
use crate::stats::proxy::{RouteFigures, UpstreamFigures};
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::time::Instant;

/// Idle body buffers kept per worker; more are allocated on demand and freed.
const KEEP_BUFFERS: usize = 64;

pub struct RouteState {
    pub health: Vec<Health>,
    /// Idle connections per upstream, most recently used last.
    pub idle: Vec<Vec<(TcpStream, Instant)>>,
    pub in_flight: usize,
    /// Scratch list of the upstreams a request may go to (`pick::candidates_into`).
    pub scratch: Vec<usize>,
    /// This worker's figures for `/stats` and `/metrics` (`proxy::stats`).
    pub fig: RouteFigures,
}

#[derive(Default)]
pub struct Worker {
    pub routes: Vec<RouteState>,
    buffers: Vec<Vec<u8>>,
}

thread_local! {
    static WORKER: RefCell<Worker> = RefCell::new(Worker::default());
}

/// Runs `f` on this worker's state, built from `cfg` the first time (routes are fixed keys:
/// they never change under a running worker).
pub fn with<T>(cfg: &ProxyConfig, f: impl FnOnce(&mut Worker) -> T) -> T {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        if w.routes.len() != cfg.routes.len() {
            w.routes = cfg
                .routes
                .iter()
                .map(|r| RouteState {
                    health: vec![Health::default(); r.upstreams.len()],
                    idle: (0..r.upstreams.len()).map(|_| Vec::new()).collect(),
                    in_flight: 0,
                    scratch: Vec::with_capacity(r.upstreams.len()),
                    fig: RouteFigures {
                        prefix: r.prefix.clone(),
                        host: r.host.clone(),
                        upstreams: r
                            .upstreams
                            .iter()
                            .map(|u| UpstreamFigures {
                                url: u.url.clone(),
                                region: u.region.clone(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    },
                })
                .collect();
        }
        f(&mut w)
    })
}

impl Worker {
    pub fn buffer(&mut self) -> Vec<u8> {
        self.buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(super::body::BODY_BUF))
    }

    pub fn give_back(&mut self, mut b: Vec<u8>) {
        let size = super::body::BODY_BUF..=2 * super::body::BODY_BUF;
        if self.buffers.len() < KEEP_BUFFERS && size.contains(&b.capacity()) {
            b.clear();
            self.buffers.push(b);
        }
    }

    /// An idle connection to upstream `u` of route `r` that has not idled past
    /// `pool_idle_timeout`; older ones are closed on the way.
    pub fn idle_conn(&mut self, cfg: &ProxyConfig, r: usize, u: usize) -> Option<TcpStream> {
        let idle = &mut self.routes[r].idle[u];
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < cfg.pool_idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection that ended its exchange cleanly, within `pool_max_idle` (the
    /// oldest goes when it is full).
    pub fn keep_conn(&mut self, cfg: &ProxyConfig, r: usize, u: usize, conn: TcpStream) {
        let idle = &mut self.routes[r].idle[u];
        if cfg.pool_max_idle == 0 {
            return;
        }
        if idle.len() >= cfg.pool_max_idle {
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }
}
