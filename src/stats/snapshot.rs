//! What one core reports to a scrape, and merging the cores' reports.

use super::counters::{CloseReason, RefusedStatus, COUNTERS};
use super::histograms::new_histogram;
use hdrhistogram::Histogram;

/// One core's figures at one moment; `Send`, so it can cross to the scraping core.
#[derive(Debug, Clone)]
pub struct CoreSnapshot {
    pub core: usize,
    /// In the order of `COUNTERS`.
    pub counters: Vec<u64>,
    pub closed_by: Vec<u64>,
    pub refused_by: Vec<u64>,
    pub gauges: Vec<(&'static str, u64)>,
    pub latency: Vec<(&'static str, Histogram<u64>)>,
    /// Whole messages received, by size.
    pub sizes: super::MessageSizes,
    /// The reverse proxy's figures per route and upstream (empty without `proxy.routes`).
    pub proxy: Vec<super::proxy::RouteFigures>,
}

impl CoreSnapshot {
    /// The sum of several cores: counters and gauges add, histograms merge.
    pub fn merge(parts: &[CoreSnapshot]) -> CoreSnapshot {
        let mut total = CoreSnapshot {
            core: usize::MAX,
            counters: vec![0; COUNTERS.len()],
            closed_by: vec![0; CloseReason::ALL.len()],
            refused_by: vec![0; RefusedStatus::ALL.len()],
            gauges: parts
                .first()
                .map(|p| p.gauges.iter().map(|(n, _)| (*n, 0)).collect())
                .unwrap_or_default(),
            latency: parts
                .first()
                .map(|p| {
                    p.latency
                        .iter()
                        .map(|(n, _)| (*n, new_histogram()))
                        .collect()
                })
                .unwrap_or_default(),
            sizes: Default::default(),
            proxy: super::proxy::merge(parts.iter().map(|p| p.proxy.as_slice())),
        };
        for p in parts {
            add(&mut total.counters, &p.counters);
            add(&mut total.closed_by, &p.closed_by);
            add(&mut total.refused_by, &p.refused_by);
            total.sizes.add(&p.sizes);
            for (t, (_, v)) in total.gauges.iter_mut().zip(&p.gauges) {
                t.1 += v;
            }
            for (t, (_, h)) in total.latency.iter_mut().zip(&p.latency) {
                t.1.add(h).expect("histograms share their bounds");
            }
        }
        total
    }
}

fn add(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(core: usize, values: &[u64]) -> CoreSnapshot {
        let mut h = new_histogram();
        for v in values {
            h.record(*v).unwrap();
        }
        CoreSnapshot {
            core,
            counters: vec![core as u64 + 1; COUNTERS.len()],
            closed_by: vec![1; CloseReason::ALL.len()],
            refused_by: vec![2; RefusedStatus::ALL.len()],
            gauges: vec![("active_connections", 3)],
            latency: vec![("relay", h)],
            sizes: Default::default(),
            proxy: Vec::new(),
        }
    }

    proptest::proptest! {
        /// Merging per-core histograms gives the histogram of all values together.
        #[test]
        fn merge_equals_recording_everything_in_one(cores in proptest::collection::vec(proptest::collection::vec(1u64..60_000_000, 0..200), 1..6)) {
            let parts: Vec<CoreSnapshot> = cores.iter().enumerate().map(|(i, v)| snap(i, v)).collect();
            let merged = CoreSnapshot::merge(&parts);
            let mut all = new_histogram();
            for v in cores.iter().flatten() {
                all.record(*v).unwrap();
            }
            let m = &merged.latency[0].1;
            proptest::prop_assert_eq!(m.len(), all.len());
            for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
                proptest::prop_assert_eq!(m.value_at_quantile(q), all.value_at_quantile(q));
            }
            proptest::prop_assert_eq!(m.max(), all.max());
            let n = cores.len() as u64;
            proptest::prop_assert_eq!(merged.counters[0], n * (n + 1) / 2);
            proptest::prop_assert_eq!(merged.gauges[0].1, 3 * n);
            proptest::prop_assert_eq!(merged.refused_by[0], 2 * n);
        }
    }
}
