//! `/stats` (JSON) and `/metrics` (Prometheus text format 0.0.4) from the cores' snapshots.
//!
//! Latencies are exported to Prometheus as histograms with fixed bounds in seconds
//! (`prom::LATENCY_BOUNDS`), merged over the cores, so they aggregate across nodes; /stats
//! keeps each node's exact merged quantiles. Names carry base units (`_seconds`, `_bytes`):
//! a counter kept in milliseconds is exported in seconds (`prom_counter`). Every family has
//! a HELP text of its own (a test of a live scrape checks).

use super::counters::{CloseReason, RefusedStatus, COUNTERS};
use super::histograms::Latency;
use super::process::Process;
use super::prom::{latency_buckets, write_histogram};
use super::snapshot::CoreSnapshot;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write;

/// Build and runtime facts shown beside the figures.
pub struct Meta {
    pub version: &'static str,
    pub driver: &'static str,
    pub workers: usize,
    pub uptime_s: u64,
    /// The fleet as this node sees it (cluster mode only, docs/cluster.md).
    pub cluster: Option<Value>,
    /// That node's Redis round trips, in microseconds (cluster mode only).
    pub cluster_rtt: Option<Histogram<u64>>,
    /// The reloads (SIGHUP) so far: `ReloadStats::json`.
    pub reload: Option<Value>,
    /// The binary upgrades (SIGUSR2) so far: `UpgradeStats::json`.
    pub upgrade: Option<Value>,
    /// Each certificate the TLS listener serves: its file and the seconds until it expires
    /// (negative once expired; `None` when its notAfter could not be read).
    pub certificates: Vec<(String, Option<i64>)>,
    /// The `process_*` figures (`None`: not read, e.g. in unit tests).
    pub process: Option<Process>,
}

const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p999", 0.999),
    ("max", 1.0),
];

pub fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = Map::new();
    m.insert("count".into(), h.len().into());
    for (name, q) in QUANTILES {
        let v = if q >= 1.0 {
            h.max()
        } else {
            h.value_at_quantile(q)
        };
        m.insert(name.into(), v.into());
    }
    m.insert("mean".into(), json!((h.mean() * 10.0).round() / 10.0));
    Value::Object(m)
}

/// Whole messages received by size: the count at or under each bound, as in /metrics.
fn sizes_json(s: &super::MessageSizes) -> Value {
    let b = s.buckets();
    let le: Map<String, Value> = b
        .cumulative
        .iter()
        .map(|(l, n)| ((*l).to_string(), (*n).into()))
        .collect();
    json!({ "count": b.count, "sum": s.sum, "le": le })
}

fn figures_json(s: &CoreSnapshot) -> Map<String, Value> {
    let mut m = Map::new();
    for ((name, _), v) in COUNTERS.iter().zip(&s.counters) {
        m.insert((*name).into(), (*v).into());
    }
    let closed: Map<String, Value> = CloseReason::ALL
        .iter()
        .zip(&s.closed_by)
        .map(|(r, v)| (r.label().to_string(), (*v).into()))
        .collect();
    m.insert("connections_closed_by_reason".into(), Value::Object(closed));
    let refused: Map<String, Value> = RefusedStatus::ALL
        .iter()
        .zip(&s.refused_by)
        .map(|(r, v)| (r.label(), (*v).into()))
        .collect();
    m.insert(
        "handshakes_refused_by_status".into(),
        Value::Object(refused),
    );
    for (name, v) in &s.gauges {
        m.insert((*name).into(), (*v).into());
    }
    m
}

pub fn stats_json(meta: &Meta, cores: &[CoreSnapshot]) -> String {
    let total = CoreSnapshot::merge(cores);
    let per_core: Vec<Value> = cores
        .iter()
        .map(|c| {
            let mut m = figures_json(c);
            m.insert("core".into(), c.core.into());
            let lat: Map<String, Value> = c
                .latency
                .iter()
                .map(|(n, h)| ((*n).to_string(), latency_json(h)))
                .collect();
            m.insert("latency_us".into(), Value::Object(lat));
            Value::Object(m)
        })
        .collect();
    let latency: Map<String, Value> = total
        .latency
        .iter()
        .map(|(n, h)| ((*n).to_string(), latency_json(h)))
        .collect();
    let mut v = json!({
        "service": "ringrelay",
        "version": meta.version,
        "driver": meta.driver,
        "workers": meta.workers,
        "uptime_s": meta.uptime_s,
        "totals": Value::Object(figures_json(&total)),
        "per_core": per_core,
        "latency_us": latency,
        "message_size_bytes": sizes_json(&total.sizes),
    });
    if let Some(c) = &meta.cluster {
        v["cluster"] = c.clone();
    }
    if let Some(r) = &meta.reload {
        v["reload"] = r.clone();
    }
    if let Some(u) = &meta.upgrade {
        v["upgrade"] = u.clone();
    }
    if !meta.certificates.is_empty() {
        let certs: Vec<Value> = meta
            .certificates
            .iter()
            .map(|(file, left)| json!({ "file": file, "expires_in_s": left }))
            .collect();
        v["tls"] = json!({ "certificates": certs });
    }
    v.to_string()
}

/// Seconds until each certificate the TLS listener serves expires, by file.
fn certificate_metrics(out: &mut String, meta: &Meta) {
    if meta.certificates.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP ringrelay_tls_certificate_expiry_seconds Seconds until the certificate expires (negative once expired).\n# TYPE ringrelay_tls_certificate_expiry_seconds gauge");
    for (file, left) in &meta.certificates {
        if let Some(left) = left {
            let file = file
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(
                out,
                "ringrelay_tls_certificate_expiry_seconds{{file=\"{file}\"}} {left}"
            );
        }
    }
}

/// The fleet's figures (cluster mode), from the same object /stats shows.
fn cluster_metrics(out: &mut String, c: &Value) {
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let lines = [
        (
            "cluster_nodes",
            "gauge",
            "Nodes in the fleet as this node last read it.",
            c["nodes"].as_array().map_or(0, |a| a.len() as u64),
        ),
        (
            "cluster_redis_up",
            "gauge",
            "1 while Redis answers this node's heartbeats.",
            u64::from(c["redis"] == "up"),
        ),
        (
            "cluster_breaker_open",
            "gauge",
            "1 while the circuit breaker around Redis is open.",
            u64::from(c["breaker"] == "open"),
        ),
        (
            "cluster_redis_commands_total",
            "counter",
            "Redis commands this node sent.",
            n("redis_commands"),
        ),
        (
            "cluster_redis_errors_total",
            "counter",
            "Heartbeats that failed against Redis.",
            n("redis_errors"),
        ),
        (
            "cluster_redis_connects_total",
            "counter",
            "Connections this node opened to Redis.",
            n("redis_connects"),
        ),
        (
            "cluster_owned_sessions",
            "gauge",
            "Sessions this node owned at its last renewal.",
            n("owned_sessions"),
        ),
        (
            "cluster_owner_lookups_total",
            "counter",
            "Owner lookups answered for new peers.",
            n("owner_lookups"),
        ),
        (
            "cluster_sessions_claimed_total",
            "counter",
            "Lookups that claimed a session for this node.",
            n("sessions_claimed"),
        ),
        (
            "cluster_sessions_given_up_total",
            "counter",
            "Sessions closed here (1012) because re-asserting found another owner.",
            n("sessions_given_up"),
        ),
    ];
    for (name, kind, help, value) in lines {
        let _ = writeln!(out, "# HELP ringrelay_{name} {help}\n# TYPE ringrelay_{name} {kind}\nringrelay_{name} {value}");
    }
}

/// Gauges' help texts. A gauge not listed gets the generic text, which the live-scrape test
/// refuses: add a line here with any new gauge.
pub fn gauge_help(name: &str) -> &'static str {
    match name {
        "active_connections" => "Upgraded connections open now.",
        "active_sessions" => "Sessions with at least one peer.",
        "paired_sessions" => "Sessions with two peers.",
        "read_buffers_in_use" => "Read buffers held by connections now.",
        "read_buffers_idle" => "Read buffers pooled for reuse.",
        "read_buffers_pinned" => {
            "Read buffers waiting to be written to a receiver (at its write gate or in the write), or by a carried link."
        }
        "ip_table_entries" => "Client addresses the per-IP limiter tracks on this core (limits.ip_table_size).",
        "handshakes_in_progress" => "Connections in their HTTP phase, before an upgrade or refusal (limits.max_handshakes).",
        "bridge_pending" => "Bridged requests waiting for their agent's answer.",
        "bridge_connections" => "Bridged HTTP requests' connections open now.",
        "buffered_bytes" => "Payload bytes of messages kept for absent or slow peers.",
        "buffered_capacity_bytes" => "Memory the kept messages' buffers hold, in bytes (session.core_buffer_budget).",
        "buffered_messages" => "Messages kept for absent or slow peers.",
        "lingering_sessions" => "Sessions with no peer kept for session.linger.",
        "carried_connections" => "Peers this node carries to their owner on another node now.",
        "replay_bytes" => "Bytes kept for two-way resume (replay to a receiver that reconnects).",
        "tunnels" => "Tunnels held on this core, those in their reconnect grace included.",
        "tunnel_connections_waiting" => "Public tunnel connections waiting for their data connection (tunnel.accept_timeout).",
        "tunnel_connections_open" => "Public tunnel connections joined to their data connection now.",
        _ => GENERIC_GAUGE_HELP,
    }
}

/// What a gauge without a help text of its own gets.
pub const GENERIC_GAUGE_HELP: &str = "A current value.";

/// A counter's Prometheus name and value: base units, so one kept in milliseconds
/// (`*_ms`) is exported as `*_seconds_total` in seconds.
fn prom_counter(name: &str, v: u64) -> (String, f64) {
    match name.strip_suffix("_ms") {
        Some(stem) => (format!("ringrelay_{stem}_seconds_total"), v as f64 / 1000.0),
        None => (format!("ringrelay_{name}_total"), v as f64),
    }
}

/// The Prometheus text of a scrape: what this relay is, each core's counters and gauges (one
/// series per core, so an uneven spread shows), and the latency summaries over all cores.
pub fn metrics_text(meta: &Meta, cores: &[CoreSnapshot]) -> String {
    let mut out = String::with_capacity(8192);
    node_metrics(&mut out, meta);
    if let Some(r) = &meta.reload {
        reload_metrics(&mut out, r);
    }
    if let Some(u) = &meta.upgrade {
        upgrade_metrics(&mut out, u);
    }
    if let Some(c) = &meta.cluster {
        cluster_metrics(&mut out, c);
    }
    certificate_metrics(&mut out, meta);
    if let Some(p) = &meta.process {
        super::process::write(&mut out, p);
    }
    counter_metrics(&mut out, cores);
    gauge_metrics(&mut out, cores);
    latency_metrics(&mut out, meta, cores);
    out
}

/// The reloads, from the same object /stats shows. Before any reload the success gauge is 1:
/// the config in force is the one the relay started with, which loaded.
fn reload_metrics(out: &mut String, r: &Value) {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    let success = u64::from(r["last_reload_outcome"] != "refused");
    let lines = [
        (
            "reloads_ok_total",
            "counter",
            "Reloads (SIGHUP) applied.",
            n("reloads_ok"),
        ),
        (
            "reloads_refused_total",
            "counter",
            "Reloads (SIGHUP) refused: the config did not load or validate, nothing changed.",
            n("reloads_refused"),
        ),
        (
            "last_reload_timestamp_seconds",
            "gauge",
            "Unix time of the last reload, applied or refused (0: none yet).",
            n("last_reload_unix"),
        ),
        (
            "last_reload_success",
            "gauge",
            "1 when the last reload was applied (or none was tried), 0 when it was refused.",
            success,
        ),
    ];
    for (name, kind, help, v) in lines {
        let _ = writeln!(
            out,
            "# HELP ringrelay_{name} {help}\n# TYPE ringrelay_{name} {kind}\nringrelay_{name} {v}"
        );
    }
}

/// The binary upgrades, from the same object /stats shows.
fn upgrade_metrics(out: &mut String, u: &Value) {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let lines = [
        (
            "upgrades_total",
            "counter",
            "Binary upgrades (SIGUSR2) completed since the first start.",
            n("upgrades"),
        ),
        (
            "upgrades_failed_total",
            "counter",
            "Binary upgrades that failed: the new process was stopped, the old one carried on.",
            n("upgrades_failed"),
        ),
        (
            "connections_handed_over_total",
            "counter",
            "Connections the new process adopted, over all upgrades.",
            n("connections_handed_over"),
        ),
    ];
    for (name, kind, help, v) in lines {
        let _ = writeln!(
            out,
            "# HELP ringrelay_{name} {help}\n# TYPE ringrelay_{name} {kind}\nringrelay_{name} {v}"
        );
    }
    let secs = n("last_handover_ms") as f64 / 1000.0;
    let _ = writeln!(
        out,
        "# HELP ringrelay_last_handover_seconds How long the last upgrade's handover took, from the new process reading the listeners to every worker adopted and listening.\n# TYPE ringrelay_last_handover_seconds gauge\nringrelay_last_handover_seconds {secs}"
    );
}

/// Version, driver, workers and uptime: what a dashboard needs to tell relays apart.
fn node_metrics(out: &mut String, meta: &Meta) {
    let _ = writeln!(out, "# HELP ringrelay_build_info Version and I/O driver of this relay.\n# TYPE ringrelay_build_info gauge");
    let _ = writeln!(
        out,
        "ringrelay_build_info{{version=\"{}\",driver=\"{}\"}} 1",
        meta.version, meta.driver
    );
    let _ = writeln!(out, "# HELP ringrelay_workers Worker threads.\n# TYPE ringrelay_workers gauge\nringrelay_workers {}", meta.workers);
    let _ = writeln!(out, "# HELP ringrelay_uptime_seconds Seconds since start.\n# TYPE ringrelay_uptime_seconds gauge\nringrelay_uptime_seconds {}", meta.uptime_s);
}

/// Every counter per core, then the two labelled families (closes by reason, refusals by
/// status), each with its HELP and TYPE once.
fn counter_metrics(out: &mut String, cores: &[CoreSnapshot]) {
    for (i, (name, help)) in COUNTERS.iter().enumerate() {
        let metric = prom_counter(name, 0).0;
        let help = match name.ends_with("_ms") {
            true => help.replace("milliseconds", "seconds"),
            false => help.to_string(),
        };
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for c in cores {
            let v = prom_counter(name, c.counters[i]).1;
            let _ = writeln!(out, "{metric}{{core=\"{}\"}} {v}", c.core);
        }
    }
    let _ = writeln!(out, "# HELP ringrelay_connections_closed_by_reason_total Upgraded connections that ended, by reason.\n# TYPE ringrelay_connections_closed_by_reason_total counter");
    for c in cores {
        for (r, v) in CloseReason::ALL.iter().zip(&c.closed_by) {
            let _ = writeln!(
                out,
                "ringrelay_connections_closed_by_reason_total{{core=\"{}\",reason=\"{}\"}} {v}",
                c.core,
                r.label()
            );
        }
    }
    let _ = writeln!(out, "# HELP ringrelay_handshakes_refused_by_status_total Requests refused before an upgrade, by status.\n# TYPE ringrelay_handshakes_refused_by_status_total counter");
    for c in cores {
        for (r, v) in RefusedStatus::ALL.iter().zip(&c.refused_by) {
            let _ = writeln!(
                out,
                "ringrelay_handshakes_refused_by_status_total{{core=\"{}\",status=\"{}\"}} {v}",
                c.core,
                r.label()
            );
        }
    }
}

/// Every gauge per core; the names come from the first core's snapshot (all cores report the
/// same set).
fn gauge_metrics(out: &mut String, cores: &[CoreSnapshot]) {
    let Some(first) = cores.first() else { return };
    for (i, (name, _)) in first.gauges.iter().enumerate() {
        let _ = writeln!(
            out,
            "# HELP ringrelay_{name} {}\n# TYPE ringrelay_{name} gauge",
            gauge_help(name)
        );
        for c in cores {
            let _ = writeln!(
                out,
                "ringrelay_{name}{{core=\"{}\"}} {}",
                c.core, c.gauges[i].1
            );
        }
    }
}

/// Latency histograms merged over every core, and the Redis round trips in cluster mode.
fn latency_metrics(out: &mut String, meta: &Meta, cores: &[CoreSnapshot]) {
    let total = CoreSnapshot::merge(cores);
    for (name, h) in &total.latency {
        let help = Latency::ALL
            .iter()
            .find(|l| l.name() == *name)
            .map_or("", |l| l.help());
        let metric = format!("ringrelay_{name}_latency_seconds");
        write_histogram(out, &metric, help, &latency_buckets(h));
    }
    let metric = "ringrelay_message_size_bytes";
    let help = "Payload size of whole data messages received from clients.";
    write_histogram(out, metric, help, &total.sizes.buckets());
    if let Some(h) = &meta.cluster_rtt {
        let help = "Redis round trips (one command or one pipeline).";
        let metric = "ringrelay_cluster_redis_rtt_seconds";
        write_histogram(out, metric, help, &latency_buckets(h));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::histograms::new_histogram;

    fn snap(core: usize) -> CoreSnapshot {
        let mut h = new_histogram();
        h.record(100 * (core as u64 + 1)).unwrap();
        CoreSnapshot {
            core,
            counters: (0..COUNTERS.len() as u64).collect(),
            closed_by: vec![1; CloseReason::ALL.len()],
            refused_by: vec![0; RefusedStatus::ALL.len()],
            gauges: vec![("active_connections", 2), ("paired_sessions", 1)],
            latency: vec![("relay", h.clone()), ("handshake", h)],
            sizes: Default::default(),
        }
    }

    const META: Meta = Meta {
        reload: None,
        upgrade: None,
        cluster: None,
        cluster_rtt: None,
        certificates: Vec::new(),
        process: None,
        version: "0.0.0",
        driver: "io_uring",
        workers: 2,
        uptime_s: 5,
    };

    #[test]
    fn json_has_totals_per_core_and_percentiles() {
        let v: Value = serde_json::from_str(&stats_json(&META, &[snap(0), snap(1)])).unwrap();
        assert_eq!(v["workers"], 2);
        assert_eq!(v["per_core"].as_array().unwrap().len(), 2);
        assert_eq!(v["totals"]["active_connections"], 4);
        assert_eq!(v["totals"][COUNTERS[3].0], 6);
        assert_eq!(v["totals"]["connections_closed_by_reason"]["replaced"], 2);
        assert_eq!(v["latency_us"]["relay"]["count"], 2);
        assert_eq!(v["latency_us"]["relay"]["max"], 200);
        assert_eq!(v["per_core"][1]["latency_us"]["relay"]["p50"], 200);
    }

    #[test]
    fn metrics_lines_are_well_formed() {
        let text = metrics_text(&META, &[snap(0), snap(1)]);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("ringrelay_"), "{line}");
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
        // 100 µs and 200 µs: one in each of the buckets up to 0.0001 and 0.00025 s.
        assert!(text.contains("ringrelay_relay_latency_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("ringrelay_relay_latency_seconds_bucket{le=\"0.00025\"} 2\n"));
        assert!(text.contains("ringrelay_relay_latency_seconds_count 2\n"));
        assert!(text.contains("# TYPE ringrelay_relay_latency_seconds histogram\n"));
        assert!(text.contains("ringrelay_messages_forwarded_total{core=\"1\"}"));
    }
}
