//! Prometheus histograms from the cores' figures: fixed bucket bounds in base units (seconds,
//! bytes), the same on every node and every version, so `sum by (le)` over a fleet and
//! `histogram_quantile` over it are meaningful. A summary's quantiles cannot be aggregated
//! across nodes at all; exact merged quantiles of one node stay in `/stats`.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// Latency bucket bounds: in microseconds (what the per-core histograms record) and as the
/// `le` label in seconds. From a loopback relay hop (tens of µs) to the histograms' 60 s top.
pub const LATENCY_BOUNDS: [(u64, &str); 19] = [
    (50, "0.00005"),
    (100, "0.0001"),
    (250, "0.00025"),
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
    (30_000_000, "30"),
    (60_000_000, "60"),
];

/// A histogram ready to print: cumulative counts per bound (the last is `+Inf`, the total).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// `(le, cumulative count)`, ending with `("+Inf", count)`.
    pub cumulative: Vec<(&'static str, u64)>,
    /// The sum of the observations, in the base unit.
    pub sum: f64,
    pub count: u64,
}

/// An hdrhistogram in microseconds as seconds buckets. A recorded value counts in the first
/// bucket whose bound is at least the top of its hdrhistogram bucket, so a value within the
/// histogram's 3 significant digits of a bound may land one bucket up; `_sum` is the count
/// times the mean, exact to the same digits.
pub fn latency_buckets(h: &Histogram<u64>) -> Buckets {
    let mut per = vec![0u64; LATENCY_BOUNDS.len() + 1];
    for v in h.iter_recorded() {
        // Recording clamps to MAX_US, so nothing recorded is above it (its bucket's top is).
        let top = v.value_iterated_to().min(super::histograms::MAX_US);
        let i = LATENCY_BOUNDS.partition_point(|(b, _)| *b < top);
        per[i] += v.count_at_value();
    }
    let labels = LATENCY_BOUNDS.iter().map(|(_, l)| *l).chain(["+Inf"]);
    Buckets {
        cumulative: cumulate(labels, &per),
        sum: h.mean() * h.len() as f64 / 1e6,
        count: h.len(),
    }
}

/// Per-bucket counts as `(label, running total)`.
pub fn cumulate<'a>(labels: impl Iterator<Item = &'a str>, per: &[u64]) -> Vec<(&'a str, u64)> {
    let mut total = 0;
    labels
        .zip(per)
        .map(|(l, n)| {
            total += n;
            (l, total)
        })
        .collect()
}

/// Writes one histogram family: HELP, TYPE, each `_bucket`, `_sum` and `_count`.
pub fn write_histogram(out: &mut String, metric: &str, help: &str, b: &Buckets) {
    let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} histogram");
    for (le, n) in &b.cumulative {
        let _ = writeln!(out, "{metric}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{metric}_sum {}", b.sum);
    let _ = writeln!(out, "{metric}_count {}", b.count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::histograms::new_histogram;

    #[test]
    fn bounds_rise_and_labels_are_the_bounds_in_seconds() {
        for w in LATENCY_BOUNDS.windows(2) {
            assert!(w[0].0 < w[1].0);
        }
        for (us, label) in LATENCY_BOUNDS {
            let s: f64 = label.parse().unwrap();
            assert!((s * 1e6 - us as f64).abs() < 1e-6, "{label} is not {us} µs");
        }
        assert_eq!(
            LATENCY_BOUNDS.last().unwrap().0,
            crate::stats::histograms::MAX_US
        );
    }

    #[test]
    fn values_fall_in_the_first_bucket_at_or_above_them_and_counts_cumulate() {
        let mut h = new_histogram();
        for us in [1, 50, 51, 100, 999, 1_000, 70_000_000] {
            h.saturating_record(us.min(crate::stats::histograms::MAX_US));
        }
        let b = latency_buckets(&h);
        let at = |le: &str| b.cumulative.iter().find(|(l, _)| *l == le).unwrap().1;
        assert_eq!(at("0.00005"), 2, "1 µs and 50 µs");
        assert_eq!(at("0.0001"), 4, "51 µs and 100 µs too");
        assert_eq!(at("0.001"), 6);
        assert_eq!(at("30"), 6);
        assert_eq!(at("60"), 7, "clamped to the top");
        assert_eq!(at("+Inf"), 7);
        assert_eq!(b.count, 7);
        assert_eq!(b.cumulative.len(), LATENCY_BOUNDS.len() + 1);
        let want = (1 + 50 + 51 + 100 + 999 + 1_000) as f64 / 1e6 + 60.0;
        assert!((b.sum - want).abs() / want < 1e-3, "{} vs {want}", b.sum);
    }

    #[test]
    fn an_empty_histogram_prints_zeros() {
        let mut out = String::new();
        write_histogram(
            &mut out,
            "x_seconds",
            "Some time.",
            &latency_buckets(&new_histogram()),
        );
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(out.contains("x_seconds_sum 0\n"));
        assert!(out.contains("x_seconds_count 0\n"));
    }
}
