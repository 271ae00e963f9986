//! /metrics as Prometheus wants it, from the real binary: `promtool check metrics` on a scrape
//! taken under load, a help text of its own for every family, the `process_*` figures,
//! histograms (not summaries) with fixed bounds, message sizes counted exactly, and every
//! metric the Grafana dashboard (contrib/grafana/ringrelay.json) queries present.
//!
//! Without promtool (Debian's `prometheus` package) the promtool check says so and passes,
//! unless RINGRELAY_REQUIRE_PROMTOOL=1 (set by .ci/run), which makes that a failure.

mod common;
use common::*;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use tungstenite::Message;

/// The families' HELP texts, by name.
fn helps(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect()
}

/// Every sample's metric name (with `_bucket`, `_sum`, `_count` as written).
fn sample_names(text: &str) -> BTreeSet<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect()
}

fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var("RINGRELAY_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
        "promtool is required (RINGRELAY_REQUIRE_PROMTOOL=1): apt-get install prometheus"
    );
    eprintln!("promtool not found (apt-get install prometheus): the promtool check is skipped");
    None
}

/// `promtool check metrics` on stdin: its exit status and what it said.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let tool = promtool()?;
    let mut child = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), said))
}

/// A scrape taken while `ringrelay load` drives pairs through the relay (the relay latency
/// histogram then holds thousands of samples across its buckets), checked by promtool and
/// for help texts.
fn a_scrape_under_load_passes_promtool_and_every_family_has_its_own_help(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let load = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["load", "--url", &format!("ws://{}", srv.addr)])
        .args(["--mode", "pairs", "--pairs", "4", "--duration", "2s"])
        .args(["--warmup", "0s", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let forwarded = || {
        stats(&srv)["totals"]["messages_forwarded"]
            .as_u64()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    while forwarded() < 1_000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _, text) = get(srv.admin, "/metrics");
    assert_eq!(status, 200);
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ringrelay_relay_latency_seconds_count ")
                && l.split(' ').nth(1).unwrap().parse::<u64>().unwrap() > 0),
        "the scrape was taken under load"
    );
    // Before: the latencies were summaries and `ringrelay_rate_limit_pause_ms_total` named its
    // unit abbreviated, which promtool refuses ("metric names should not contain
    // abbreviated units").
    if let Some((ok, said)) = promtool_check(&text) {
        assert!(
            ok && said.trim().is_empty(),
            "promtool check metrics: {said}"
        );
    }
    assert!(!text.contains("quantile="), "no summaries are left");
    // Before: a gauge without a help text of its own got "A current value.".
    let helps = helps(&text);
    assert!(helps.len() > 50, "{}", helps.len());
    for (name, help) in &helps {
        let bare = name.replace('_', " ");
        assert!(
            !help.trim().is_empty()
                && *help != *name
                && !help.eq_ignore_ascii_case(&bare)
                && *help != "A current value.",
            "{name} has no help text of its own: {help:?}"
        );
    }
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(types, helps.len(), "one TYPE per HELP");
    // Before: there were no process_* figures at all.
    let names = sample_names(&text);
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(names.contains(name), "{name} missing");
    }
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.unwrap().split(' ').nth(1).unwrap().parse().unwrap()
    };
    // The relay's own descriptors: at least its listeners and the load's connections.
    assert!(value("process_open_fds") >= 8.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_resident_memory_bytes") > 1e6);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now && now - started < 120.0,
        "{started} vs {now}"
    );
}

/// Messages of known sizes land in the buckets their sizes say, counted once each, and the
/// latency and size families are histograms with the documented fixed bounds.
fn message_sizes_are_counted_in_their_buckets(driver: &str) {
    let srv = TestServer::start(driver, 2, &[]);
    let mut a = srv.connect("/v1/relay/sizes?role=desktop");
    let mut b = srv.connect("/v1/relay/sizes?role=mobile");
    // 0, 64 (the first bound exactly), 65, 5,000 and 100,000 bytes.
    let sizes = [0usize, 64, 65, 5_000, 100_000];
    for n in sizes {
        a.send(Message::binary(vec![7u8; n])).unwrap();
        assert_eq!(recv(&mut b).len(), n);
    }
    // A control pair on the same relay keeps flowing and is counted too.
    let mut c = srv.connect("/v1/relay/control?role=desktop");
    let mut d = srv.connect("/v1/relay/control?role=mobile");
    c.send(Message::text("x".repeat(300))).unwrap();
    assert_eq!(recv_text(&mut d).len(), 300);
    let (_, _, text) = get(srv.admin, "/metrics");
    let sample = |series: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{series} ")));
        let line = line.unwrap_or_else(|| panic!("{series} missing"));
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    let bucket = |le: &str| {
        sample(&format!(
            "ringrelay_message_size_bytes_bucket{{le=\"{le}\"}}"
        ))
    };
    assert!(text.contains("# TYPE ringrelay_message_size_bytes histogram\n"));
    assert_eq!(bucket("64"), 2, "0 and 64 bytes");
    assert_eq!(bucket("256"), 3, "and 65");
    assert_eq!(bucket("1024"), 4, "and the control's 300");
    assert_eq!(bucket("16384"), 5, "and 5,000");
    assert_eq!(bucket("262144"), 6, "and 100,000");
    assert_eq!(bucket("+Inf"), 6);
    assert_eq!(sample("ringrelay_message_size_bytes_count"), 6);
    let sum: usize = sizes.iter().sum::<usize>() + 300;
    assert_eq!(sample("ringrelay_message_size_bytes_sum"), sum as u64);
    // The latency bounds are the same on every relay, whatever it measured.
    let les: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ringrelay_relay_latency_seconds_bucket{le=\""))
        .map(|l| l.split('"').next().unwrap())
        .collect();
    assert_eq!(les.first(), Some(&"0.00005"));
    assert_eq!(les.len(), 20);
    assert_eq!(les.last(), Some(&"+Inf"));
    assert!(sample("ringrelay_relay_latency_seconds_count") >= 6);
    assert_eq!(sample("ringrelay_handshake_latency_seconds_count"), 4);
}

both_drivers!(
    a_scrape_under_load_passes_promtool_and_every_family_has_its_own_help,
    message_sizes_are_counted_in_their_buckets
);

/// Every `ringrelay_*` and `process_*` name the dashboard's queries use is in a live scrape
/// of a plain relay (no cluster, no TLS): a renamed metric fails here, not on a dashboard.
#[test]
fn every_metric_the_grafana_dashboard_uses_is_in_a_live_scrape() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana/ringrelay.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_queries(&dash, &mut exprs);
    assert!(exprs.len() > 20, "{}", exprs.len());
    let mut used = BTreeSet::new();
    for e in &exprs {
        for start in e
            .match_indices("ringrelay_")
            .chain(e.match_indices("process_"))
        {
            let name: String = e[start.0..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    let srv = TestServer::start("auto", 2, &[]);
    let mut e = srv.connect("/v1/echo");
    e.send(Message::text("m")).unwrap();
    recv(&mut e);
    let (_, _, text) = get(srv.admin, "/metrics");
    let names = sample_names(&text);
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard names not in a scrape: {missing:?}"
    );
    assert!(used.contains("ringrelay_relay_latency_seconds_bucket"));
    assert!(used.contains("process_cpu_seconds_total"));
}

/// The `expr` of every target and the query of every template variable.
fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}
