//! The reverse proxy's figures per route and per upstream (docs/proxy.md "Observability"):
//! what one worker counted, carried in its [`CoreSnapshot`](super::CoreSnapshot), merged
//! over the workers at a scrape and shown in `/stats` and `/metrics`.
//!
//! The label sets are bounded by the config alone: a route is named by its prefix and host
//! and an upstream by its URL, all fixed at start (`proxy.routes` is not reloaded); nothing a
//! client sends becomes a label. Latency histograms are hdrhistogram at 2 significant digits
//! (about 20 KiB each) and allocated only once their upstream answered a request, so an
//! unused upstream costs nothing.

use super::histograms::MAX_US;
use super::prom::{latency_buckets, Buckets};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write;
use std::time::Duration;

/// Status classes, in the order of the `[u64; 5]` arrays below.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The class index of a status (anything under 200 is 1xx, anything over 499 is 5xx).
pub fn class(status: u16) -> usize {
    match status {
        0..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// A histogram of request durations in microseconds, 1 µs to 60 s, 2 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("static histogram bounds are valid")
}

/// One upstream of one route, on one worker (or merged over several).
#[derive(Debug, Clone, Default)]
pub struct UpstreamFigures {
    pub url: String,
    pub region: String,
    /// Its responses, by status class.
    pub responses: [u64; 5],
    /// Attempts that failed: no connection, broken off, no head in time.
    pub failures: u64,
    /// Request body bytes sent to it, response body bytes read from it.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Connections to it carrying an exchange now.
    pub busy: u64,
    /// Idle keep-alive connections to it now.
    pub idle: u64,
    /// Workers that take it as healthy now (0 or 1 for one worker).
    pub healthy: u64,
    /// Times it was taken out of rotation: passive ejection, or failed checks.
    pub ejections: u64,
    /// Active health checks sent, and those that failed.
    pub checks: u64,
    pub checks_failed: u64,
    /// Head read to response written, for requests it answered.
    pub latency: Option<Box<Histogram<u64>>>,
}

impl UpstreamFigures {
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        self.latency
            .get_or_insert_with(|| Box::new(new_histogram()))
            .saturating_record(us);
    }

    fn add(&mut self, o: &UpstreamFigures) {
        add(&mut self.responses, &o.responses);
        self.failures += o.failures;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
        self.busy += o.busy;
        self.idle += o.idle;
        self.healthy += o.healthy;
        self.ejections += o.ejections;
        self.checks += o.checks;
        self.checks_failed += o.checks_failed;
        merge_into(&mut self.latency, o.latency.as_deref());
    }
}

/// One route, on one worker (or merged over several).
#[derive(Debug, Clone, Default)]
pub struct RouteFigures {
    pub prefix: String,
    pub host: Option<String>,
    /// Every request the route took, by the status it got (the proxy's own refusals too;
    /// a client gone before its answer counts as 499).
    pub requests: [u64; 5],
    /// Requests sent once more, to another upstream.
    pub retries: u64,
    pub upstreams: Vec<UpstreamFigures>,
}

impl RouteFigures {
    fn add(&mut self, o: &RouteFigures) {
        add(&mut self.requests, &o.requests);
        self.retries += o.retries;
        for (a, b) in self.upstreams.iter_mut().zip(&o.upstreams) {
            a.add(b);
        }
    }

    /// The route's latency: its upstreams' merged.
    pub fn latency(&self) -> Histogram<u64> {
        let mut h = None;
        for u in &self.upstreams {
            merge_into(&mut h, u.latency.as_deref());
        }
        h.map_or_else(new_histogram, |b| *b)
    }
}

fn add<const N: usize>(into: &mut [u64; N], from: &[u64; N]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

fn merge_into(into: &mut Option<Box<Histogram<u64>>>, from: Option<&Histogram<u64>>) {
    if let Some(h) = from {
        into.get_or_insert_with(|| Box::new(new_histogram()))
            .add(h)
            .expect("proxy histograms share their bounds");
    }
}

/// The workers' figures added up (every worker has the same routes, from the same config).
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a [RouteFigures]>) -> Vec<RouteFigures> {
    let mut total: Vec<RouteFigures> = Vec::new();
    for part in parts {
        if total.is_empty() {
            total = part.to_vec();
        } else {
            for (a, b) in total.iter_mut().zip(part) {
                a.add(b);
            }
        }
    }
    total
}

fn classes_json(c: &[u64; 5]) -> Value {
    let m: Map<String, Value> = CLASSES
        .iter()
        .zip(c)
        .map(|(k, v)| ((*k).to_string(), (*v).into()))
        .collect();
    Value::Object(m)
}

/// `/stats`' `proxy` object: routes over every worker, each with its upstreams.
pub fn json(routes: &[RouteFigures], workers: usize) -> Value {
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| {
            let ups: Vec<Value> = r
                .upstreams
                .iter()
                .map(|u| {
                    let health = match u.healthy {
                        0 => "down",
                        n if n as usize >= workers => "up",
                        _ => "partial",
                    };
                    let latency = u.latency.as_deref().cloned().unwrap_or_else(new_histogram);
                    json!({
                        "url": u.url,
                        "region": u.region,
                        "health": health,
                        "healthy_workers": u.healthy,
                        "responses": classes_json(&u.responses),
                        "failures": u.failures,
                        "bytes_up": u.bytes_up,
                        "bytes_down": u.bytes_down,
                        "open_connections": u.busy + u.idle,
                        "idle_connections": u.idle,
                        "ejections": u.ejections,
                        "health_checks": u.checks,
                        "health_checks_failed": u.checks_failed,
                        "latency_us": super::render::latency_json(&latency),
                    })
                })
                .collect();
            json!({
                "prefix": r.prefix,
                "host": r.host,
                "requests": classes_json(&r.requests),
                "retries": r.retries,
                "latency_us": super::render::latency_json(&r.latency()),
                "upstreams": ups,
            })
        })
        .collect();
    json!({ "routes": routes })
}

/// A label value, escaped as the text format wants.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn route_labels(r: &RouteFigures) -> String {
    format!(
        "route=\"{}\",host=\"{}\"",
        esc(&r.prefix),
        esc(r.host.as_deref().unwrap_or(""))
    )
}

fn upstream_labels(r: &RouteFigures, u: &UpstreamFigures) -> String {
    format!(
        "{},upstream=\"{}\",region=\"{}\"",
        route_labels(r),
        esc(&u.url),
        esc(&u.region)
    )
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP ringrelay_{name} {help}\n# TYPE ringrelay_{name} {kind}"
    );
}

fn histogram_series(out: &mut String, metric: &str, labels: &str, b: &Buckets) {
    for (le, n) in &b.cumulative {
        let _ = writeln!(out, "{metric}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{metric}_sum{{{labels}}} {}", b.sum);
    let _ = writeln!(out, "{metric}_count{{{labels}}} {}", b.count);
}

/// Per-upstream scalar series: (name, kind, help, value).
type Scalar = (
    &'static str,
    &'static str,
    &'static str,
    fn(&UpstreamFigures) -> u64,
);

const UPSTREAM_SCALARS: [Scalar; 8] = [
    ("proxy_upstream_failures_total", "counter", "Attempts at the upstream that failed: no connection, broken off, or no response head in time.", |u| u.failures),
    ("proxy_upstream_request_bytes_total", "counter", "Request body bytes sent to the upstream.", |u| u.bytes_up),
    ("proxy_upstream_response_bytes_total", "counter", "Response body bytes read from the upstream and sent to clients.", |u| u.bytes_down),
    ("proxy_upstream_open_connections", "gauge", "Connections to the upstream open now, busy or idle in a keep-alive pool.", |u| u.busy + u.idle),
    ("proxy_upstream_idle_connections", "gauge", "Idle keep-alive connections to the upstream (proxy.pool_max_idle per worker).", |u| u.idle),
    ("proxy_upstream_ejections_total", "counter", "Times the upstream was taken out of rotation: passive ejection or failed health checks.", |u| u.ejections),
    ("proxy_upstream_health_checks_total", "counter", "Active health checks sent to the upstream (routes with health_path).", |u| u.checks),
    ("proxy_upstream_health_checks_failed_total", "counter", "Active health checks the upstream failed: no answer in time, or a status outside 2xx and 3xx.", |u| u.checks_failed),
];

/// The `/metrics` families: merged over the workers, but health per worker (each worker has
/// its own view of an upstream).
pub fn write_metrics(out: &mut String, per_core: &[(usize, &[RouteFigures])]) {
    let total = merge(per_core.iter().map(|(_, r)| *r));
    if total.is_empty() {
        return;
    }
    counter_metrics(out, &total);
    health_metrics(out, per_core);
    latency_metrics(out, &total);
}

/// The counters and connection gauges, summed over the workers.
fn counter_metrics(out: &mut String, total: &[RouteFigures]) {
    family(out, "proxy_route_requests_total", "counter", "Requests a proxy route took, by the status class of their answer (the proxy's own refusals included).");
    for r in total {
        for (c, v) in CLASSES.iter().zip(&r.requests) {
            let l = route_labels(r);
            let _ = writeln!(
                out,
                "ringrelay_proxy_route_requests_total{{{l},class=\"{c}\"}} {v}"
            );
        }
    }
    family(
        out,
        "proxy_route_retries_total",
        "counter",
        "Idempotent requests of the route sent once more to another upstream.",
    );
    for r in total {
        let _ = writeln!(
            out,
            "ringrelay_proxy_route_retries_total{{{}}} {}",
            route_labels(r),
            r.retries
        );
    }
    family(
        out,
        "proxy_upstream_responses_total",
        "counter",
        "Responses from the upstream, by status class.",
    );
    for r in total {
        for u in &r.upstreams {
            for (c, v) in CLASSES.iter().zip(&u.responses) {
                let l = upstream_labels(r, u);
                let _ = writeln!(
                    out,
                    "ringrelay_proxy_upstream_responses_total{{{l},class=\"{c}\"}} {v}"
                );
            }
        }
    }
    for (name, kind, help, value) in UPSTREAM_SCALARS {
        family(out, name, kind, help);
        for r in total {
            for u in &r.upstreams {
                let _ = writeln!(
                    out,
                    "ringrelay_{name}{{{}}} {}",
                    upstream_labels(r, u),
                    value(u)
                );
            }
        }
    }
}

/// Each worker's view of each upstream's health.
fn health_metrics(out: &mut String, per_core: &[(usize, &[RouteFigures])]) {
    family(out, "proxy_upstream_healthy", "gauge", "1 while the worker sends the upstream requests (not ejected, health checks passing), per worker.");
    for (core, routes) in per_core {
        for r in routes.iter() {
            for u in &r.upstreams {
                let l = upstream_labels(r, u);
                let _ = writeln!(
                    out,
                    "ringrelay_proxy_upstream_healthy{{{l},core=\"{core}\"}} {}",
                    u.healthy
                );
            }
        }
    }
}

/// The latency histograms, merged over the workers.
fn latency_metrics(out: &mut String, total: &[RouteFigures]) {
    let metric = "ringrelay_proxy_route_latency_seconds";
    family(out, "proxy_route_latency_seconds", "histogram", "Time from a proxied request's head to the end of its response, for requests an upstream answered.");
    for r in total {
        histogram_series(
            out,
            metric,
            &route_labels(r),
            &latency_buckets(&r.latency()),
        );
    }
    let metric = "ringrelay_proxy_upstream_latency_seconds";
    family(out, "proxy_upstream_latency_seconds", "histogram", "Time from a proxied request's head to the end of its response, by the upstream that answered.");
    for r in total {
        for u in &r.upstreams {
            let h = u.latency.as_deref().cloned().unwrap_or_else(new_histogram);
            histogram_series(out, metric, &upstream_labels(r, u), &latency_buckets(&h));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(url_count: usize, healthy: u64) -> Vec<RouteFigures> {
        vec![RouteFigures {
            prefix: "/a\"b".into(),
            host: None,
            requests: [0, 3, 0, 1, 0],
            retries: 1,
            upstreams: (0..url_count)
                .map(|i| UpstreamFigures {
                    url: format!("http://127.0.0.1:{}", 4000 + i),
                    region: "1".into(),
                    responses: [0, 2, 0, 0, 0],
                    busy: 1,
                    idle: 2,
                    healthy,
                    ..Default::default()
                })
                .collect(),
        }]
    }

    #[test]
    fn classes_cover_every_status() {
        assert_eq!(class(101), 0);
        assert_eq!(class(204), 1);
        assert_eq!(class(304), 2);
        assert_eq!(class(499), 3);
        assert_eq!(class(504), 4);
        assert_eq!(class(999), 4);
    }

    #[test]
    fn merging_adds_counts_and_histograms_and_health_by_worker() {
        let mut a = figures(2, 1);
        let mut b = figures(2, 0);
        a[0].upstreams[0].record(Duration::from_micros(100));
        b[0].upstreams[0].record(Duration::from_micros(300));
        b[0].upstreams[1].record(Duration::from_millis(2));
        let total = merge([a.as_slice(), b.as_slice()]);
        assert_eq!(total[0].requests, [0, 6, 0, 2, 0]);
        assert_eq!(total[0].upstreams[0].healthy, 1);
        assert_eq!(total[0].upstreams[1].idle, 4);
        assert_eq!(total[0].upstreams[0].latency.as_ref().unwrap().len(), 2);
        assert_eq!(total[0].latency().len(), 3);
        let v = json(&total, 2);
        let u = &v["routes"][0]["upstreams"][0];
        assert_eq!(u["health"], "partial");
        assert_eq!(u["open_connections"], 6);
        assert_eq!(v["routes"][0]["latency_us"]["count"], 3);
        assert_eq!(json(&a, 1)["routes"][0]["upstreams"][1]["health"], "up");
        assert_eq!(json(&b, 1)["routes"][0]["upstreams"][1]["health"], "down");
    }

    #[test]
    fn metrics_are_labelled_escaped_and_well_formed() {
        let a = figures(1, 1);
        let b = figures(1, 0);
        let mut out = String::new();
        write_metrics(&mut out, &[(0, a.as_slice()), (1, b.as_slice())]);
        let l = "route=\"/a\\\"b\",host=\"\",upstream=\"http://127.0.0.1:4000\",region=\"1\"";
        assert!(out.contains(&format!(
            "ringrelay_proxy_upstream_healthy{{{l},core=\"1\"}} 0\n"
        )));
        assert!(out.contains(&format!(
            "ringrelay_proxy_upstream_open_connections{{{l}}} 6\n"
        )));
        assert!(out.contains(&format!(
            "ringrelay_proxy_upstream_responses_total{{{l},class=\"2xx\"}} 4\n"
        )));
        let helps = out.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = out.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(helps, types);
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("ringrelay_proxy_"), "{line}");
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
        let mut none = String::new();
        let empty: Vec<RouteFigures> = Vec::new();
        write_metrics(&mut none, &[(0, empty.as_slice())]);
        assert!(none.is_empty());
    }
}
