//! Active health checks (docs/proxy.md "Health"): for each route with `health_path`, every
//! worker sends `GET health_path` to each of the route's upstreams every `health_interval`
//! on a connection of its own, and a status of 2xx or 3xx within the interval passes.
//! `health_fall` failures in a row take an upstream out of this worker's rotation,
//! `health_rise` passes in a row bring it back. On a checked route a passive ejection (see
//! `pick`) also takes the upstream out until `health_rise` checks pass: an ejected upstream
//! gets no requests until it answers again.
//!
//! One checker per worker rather than one for the process: each worker decides from what it
//! sees itself, as it does for passive ejection, outstanding counts and pools, so the request
//! path reads only its own thread's state (no lock, atomic or queue between workers) and a
//! worker never sends a request on another's belief. The cost is `workers` checks per
//! upstream per interval; each worker starts at a random point of the first interval so the
//! checks spread over it.

use super::body::write_all;
use super::head::parse_response;
use super::pick::Health;
use super::state;
use crate::config::HealthCheck;
use crate::context::Core;
use crate::stats::bump;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// What a check's result did to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `rise` passes in a row: back in rotation.
    Up,
    /// `fall` failures in a row: out of rotation.
    Down,
}

/// One check's result applied to an upstream's state on this worker. No I/O.
pub fn apply(h: &mut Health, pass: bool, check: &HealthCheck) -> Option<Change> {
    if pass {
        h.check_fails = 0;
        if !h.down {
            return None;
        }
        h.check_passes += 1;
        if h.check_passes < check.rise {
            return None;
        }
        h.down = false;
        h.check_passes = 0;
        // It answers again: a passive ejection ends with it.
        h.succeeded();
        Some(Change::Up)
    } else {
        h.check_passes = 0;
        if h.down {
            return None;
        }
        h.check_fails += 1;
        if h.check_fails < check.fall {
            return None;
        }
        h.down = true;
        h.check_fails = 0;
        Some(Change::Down)
    }
}

/// A passive ejection on a route with checks: out until `rise` checks pass in a row.
pub fn ejected(h: &mut Health) {
    h.down = true;
    h.check_passes = 0;
    h.check_fails = 0;
}

/// Starts this worker's checkers: one task per upstream of each route with `health_path`.
/// Routes are fixed keys, so the set never changes under a running worker.
pub fn spawn(core: &Rc<Core>) {
    let cfg = core.config();
    for (r, route) in cfg.proxy.routes.iter().enumerate() {
        if route.health.is_some() {
            for u in 0..route.upstreams.len() {
                monoio::spawn(watch(core.clone(), r, u));
            }
        }
    }
}

/// Checks upstream `u` of route `r` until the worker shuts down.
async fn watch(core: Rc<Core>, r: usize, u: usize) {
    let Some(interval) = core.config().proxy.routes[r]
        .health
        .as_ref()
        .map(|h| h.interval)
    else {
        return;
    };
    let nanos = interval.as_nanos().max(1) as u64;
    let first = u64::from_le_bytes(core.rng.bytes::<8>()) % nanos;
    monoio::time::sleep(Duration::from_nanos(first)).await;
    while !core.shutting_down() {
        let cfg = core.config();
        let route = &cfg.proxy.routes[r];
        let Some(check) = route.health.as_ref() else {
            return;
        };
        let up = &route.upstreams[u];
        // A check never runs into the next one, nor longer than a request would wait.
        let limit = check
            .interval
            .min(cfg.proxy.connect_timeout + cfg.proxy.response_timeout);
        let pass = monoio::time::timeout(limit, probe(up.addr, &up.authority, &check.path))
            .await
            .unwrap_or(false);
        record(&core, r, u, pass, check);
        monoio::time::sleep(check.interval).await;
    }
}

/// One check: a fresh connection, `GET path`, and whether the answer's status is 2xx or 3xx.
async fn probe(addr: SocketAddr, authority: &str, path: &str) -> bool {
    let Ok(mut conn) = TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ringrelay-health-check\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let n = req.len();
    if write_all(&mut conn, req, n).await.0.is_err() {
        return false;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        match parse_response(&buf, false) {
            Ok(Some((h, n))) if (100..200).contains(&h.status) => {
                buf.drain(..n);
                continue;
            }
            Ok(Some((h, _))) => return (200..400).contains(&h.status),
            Err(_) => return false,
            Ok(None) if buf.len() >= crate::http::client::MAX_HEAD => return false,
            Ok(None) => {}
        }
        if buf.len() == buf.capacity() {
            buf.reserve(1024);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = conn.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        if !matches!(res, Ok(n) if n > 0) {
            return false;
        }
    }
}

fn record(core: &Core, r: usize, u: usize, pass: bool, check: &HealthCheck) {
    let cfg = core.config();
    bump(&core.stats.proxy_health_checks, 1);
    if !pass {
        bump(&core.stats.proxy_health_checks_failed, 1);
    }
    let change = state::with(&cfg.proxy, |w| {
        let st = &mut w.routes[r];
        let fig = &mut st.fig.upstreams[u];
        fig.checks += 1;
        fig.checks_failed += u64::from(!pass);
        let change = apply(&mut st.health[u], pass, check);
        if change == Some(Change::Down) {
            fig.ejections += 1;
        }
        change
    });
    let url = &cfg.proxy.routes[r].upstreams[u].url;
    match change {
        Some(Change::Down) => {
            bump(&core.stats.proxy_upstreams_down, 1);
            tracing::warn!(upstream = %url, fall = check.fall, "upstream down: health checks fail");
        }
        Some(Change::Up) => {
            bump(&core.stats.proxy_upstreams_up, 1);
            tracing::info!(upstream = %url, rise = check.rise, "upstream up: health checks pass");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn check(rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            path: "/h".into(),
            interval: Duration::from_secs(1),
            rise,
            fall,
        }
    }

    #[test]
    fn fall_failures_in_a_row_take_it_out_and_rise_passes_bring_it_back() {
        let c = check(2, 3);
        let now = Instant::now();
        let mut h = Health::default();
        assert!(h.healthy(now), "upstreams start healthy");
        // A pass between failures starts the count again.
        for pass in [false, false, true, false, false] {
            assert_eq!(apply(&mut h, pass, &c), None);
        }
        assert_eq!(apply(&mut h, false, &c), Some(Change::Down));
        assert!(!h.healthy(now));
        assert_eq!(apply(&mut h, false, &c), None, "already down");
        assert_eq!(apply(&mut h, true, &c), None);
        assert_eq!(
            apply(&mut h, false, &c),
            None,
            "a failure starts rise again"
        );
        assert_eq!(apply(&mut h, true, &c), None);
        assert!(!h.healthy(now));
        assert_eq!(apply(&mut h, true, &c), Some(Change::Up));
        assert!(h.healthy(now));
    }

    #[test]
    fn a_passive_ejection_lasts_until_checks_pass_not_until_its_backoff_ends() {
        let c = check(1, 3);
        let cfg = crate::config::ProxyConfig::default();
        let now = Instant::now();
        let mut h = Health::default();
        for _ in 0..cfg.eject_after {
            h.failed(&cfg, now);
        }
        ejected(&mut h);
        let later = now + crate::proxy::pick::backoff(&cfg, 5);
        assert!(
            !h.healthy(later),
            "the back-off alone does not bring it back"
        );
        assert_eq!(apply(&mut h, true, &c), Some(Change::Up));
        assert!(h.healthy(now), "a pass ends the ejection at once");
        assert_eq!(h.ejections, 0);
    }
}
