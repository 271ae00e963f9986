//! Picking an upstream: among the region's healthy upstreams (all regions' when the route
//! falls back), power of two choices by outstanding requests over weight. Ejection after
//! consecutive failures, with back-off. One `Upstreams` per worker: no sharing, no locks.

use crate::config::{ProxyConfig, ProxyRoute};
use std::time::{Duration, Instant};

/// One upstream's state on this worker.
#[derive(Debug, Default, Clone)]
pub struct Health {
    /// Requests sent to it and not yet answered in full.
    pub outstanding: u32,
    /// Failures in a row.
    pub failures: u32,
    /// Ejections in a row (the back-off doubles with each, up to 64 times).
    pub ejections: u32,
    pub ejected_until: Option<Instant>,
    /// Out of rotation until active checks pass (`health::apply`); only on routes with
    /// `health_path`.
    pub down: bool,
    /// Active checks passed, and failed, in a row.
    pub check_passes: u32,
    pub check_fails: u32,
}

impl Health {
    pub fn healthy(&self, now: Instant) -> bool {
        !self.down && self.ejected_until.is_none_or(|t| now >= t)
    }

    /// A failure; `true` when it ejects the upstream.
    pub fn failed(&mut self, cfg: &ProxyConfig, now: Instant) -> bool {
        self.failures += 1;
        // After an ejection ends, the first failure ejects again (for longer).
        let after_ejection = self.ejections > 0 && self.healthy(now);
        if self.failures < cfg.eject_after as u32 && !after_ejection {
            return false;
        }
        self.ejected_until = Some(now + backoff(cfg, self.ejections));
        self.ejections += 1;
        self.failures = 0;
        true
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.ejections = 0;
        self.ejected_until = None;
    }
}

/// Chooses among `candidates` (indices into `route.upstreams`) by power of two choices with
/// weights: two drawn in proportion to their weights (`r1`, `r2` are random), the one with
/// fewer outstanding requests per unit of weight wins.
pub fn two_choices(
    route: &ProxyRoute,
    health: &[Health],
    candidates: &[usize],
    r1: u64,
    r2: u64,
) -> Option<usize> {
    let total: u64 = candidates
        .iter()
        .map(|&i| u64::from(route.upstreams[i].weight))
        .sum();
    if total == 0 {
        return None;
    }
    let draw = |r: u64| {
        let mut x = r % total;
        for &i in candidates {
            let w = u64::from(route.upstreams[i].weight);
            if x < w {
                return i;
            }
            x -= w;
        }
        candidates[candidates.len() - 1]
    };
    let (a, b) = (draw(r1), draw(r2));
    // Outstanding over weight, compared without division.
    let load =
        |i: usize| u64::from(health[i].outstanding) * 1000 / u64::from(route.upstreams[i].weight);
    Some(if load(b) < load(a) { b } else { a })
}

/// The healthy upstreams a request for `region` may go to, never `except`: the region's, or
/// (no region, or none healthy there and the route falls back) every healthy one.
#[cfg(test)]
pub fn candidates(
    route: &ProxyRoute,
    health: &[Health],
    region: Option<&str>,
    except: Option<usize>,
    now: Instant,
) -> Vec<usize> {
    let mut out = Vec::new();
    candidates_into(route, health, region, except, now, &mut out);
    out
}

/// [`candidates`] into `out` (cleared first): the worker's scratch list, so that picking an
/// upstream allocates nothing per request.
pub fn candidates_into(
    route: &ProxyRoute,
    health: &[Health],
    region: Option<&str>,
    except: Option<usize>,
    now: Instant,
    out: &mut Vec<usize>,
) {
    out.clear();
    let ok = |i: &usize| Some(*i) != except && health[*i].healthy(now);
    let all = 0..route.upstreams.len();
    let Some(region) = region else {
        out.extend(all.filter(ok));
        return;
    };
    out.extend(
        all.clone()
            .filter(|&i| route.upstreams[i].region == region)
            .filter(ok),
    );
    if out.is_empty() && route.fallback {
        out.extend(all.filter(ok));
    }
}

/// The back-off of the `n`th ejection in a row (0-based), for docs and tests.
pub fn backoff(cfg: &ProxyConfig, n: u32) -> Duration {
    cfg.eject_backoff * (1u32 << n.min(6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyUpstream;

    fn route(regions: &[(&str, u32)], fallback: bool) -> ProxyRoute {
        ProxyRoute {
            prefix: "/".into(),
            host: None,
            upstreams: regions
                .iter()
                .enumerate()
                .map(|(i, (r, w))| ProxyUpstream {
                    url: format!("http://127.0.0.1:{}", 4000 + i),
                    addr: format!("127.0.0.1:{}", 4000 + i).parse().unwrap(),
                    authority: format!("127.0.0.1:{}", 4000 + i),
                    region: r.to_string(),
                    weight: *w,
                })
                .collect(),
            strip_prefix: false,
            preserve_host: false,
            fallback,
            auth: false,
            max_concurrent: 0,
            health: None,
        }
    }

    #[test]
    fn region_then_fallback() {
        let now = Instant::now();
        let r = route(&[("1", 1), ("2", 1), ("2", 1)], false);
        let mut h = vec![Health::default(); 3];
        assert_eq!(candidates(&r, &h, Some("2"), None, now), vec![1, 2]);
        assert_eq!(candidates(&r, &h, Some("2"), Some(1), now), vec![2]);
        assert_eq!(candidates(&r, &h, None, None, now), vec![0, 1, 2]);
        h[0].ejected_until = Some(now + Duration::from_secs(5));
        assert!(candidates(&r, &h, Some("1"), None, now).is_empty());
        let r = route(&[("1", 1), ("2", 1), ("2", 1)], true);
        assert_eq!(candidates(&r, &h, Some("1"), None, now), vec![1, 2]);
    }

    #[test]
    fn two_choices_prefers_the_less_loaded_and_follows_weights() {
        let r = route(&[("1", 1), ("1", 3)], false);
        let mut h = vec![Health::default(); 2];
        // Draws 0 and 1 land on upstreams 0 and 1 (weights 1 and 3 over 4).
        h[1].outstanding = 9;
        assert_eq!(two_choices(&r, &h, &[0, 1], 0, 1), Some(0));
        h[1].outstanding = 2; // 2/3 < 1/1
        h[0].outstanding = 1;
        assert_eq!(two_choices(&r, &h, &[0, 1], 0, 1), Some(1));
        // Unloaded: the draws follow the weights exactly.
        let h = vec![Health::default(); 2];
        let picks: Vec<usize> = (0..4)
            .map(|x| two_choices(&r, &h, &[0, 1], x, x).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 1, 1]);
        assert_eq!(two_choices(&r, &h, &[], 0, 0), None);
    }

    #[test]
    fn ejection_after_consecutive_failures_with_doubling_backoff() {
        let cfg = ProxyConfig::default();
        let now = Instant::now();
        let mut h = Health::default();
        for _ in 1..cfg.eject_after {
            assert!(!h.failed(&cfg, now));
        }
        assert!(h.failed(&cfg, now));
        assert!(!h.healthy(now));
        let later = now + backoff(&cfg, 0);
        assert!(h.healthy(later));
        // Back, and failing again at once: ejected for twice as long.
        assert!(h.failed(&cfg, later));
        assert_eq!(h.ejected_until, Some(later + backoff(&cfg, 1)));
        h.succeeded();
        assert!(h.healthy(later) && h.ejections == 0);
    }
}
