//! Scrapes: the admin listener's core asks every core for its snapshot and merges them. Each
//! core answers between its own tasks, so a scrape never stops another core's forwarding.

use crate::context::Core;
use crate::http::Response;
use crate::stats::render::{metrics_text, stats_json, Meta};
use crate::stats::CoreSnapshot;
use std::rc::Rc;
use std::time::Duration;

/// How long a scrape waits for a busy core before answering 503.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs on every core: answers snapshot requests.
pub async fn answer_scrapes(core: Rc<Core>, rx: flume::Receiver<flume::Sender<CoreSnapshot>>) {
    while let Ok(reply) = rx.recv_async().await {
        let _ = reply.try_send(core.snapshot());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Prometheus,
}

async fn collect(core: &Core) -> Option<Vec<CoreSnapshot>> {
    let workers = core.shared.workers();
    let (tx, rx) = flume::bounded(workers);
    for (i, inbox) in core.shared.scrape.iter().enumerate() {
        if i == core.index {
            let _ = tx.try_send(core.snapshot());
        } else if inbox.try_send(tx.clone()).is_err() {
            return None;
        }
    }
    drop(tx);
    let gather = async {
        let mut all = Vec::with_capacity(workers);
        while all.len() < workers {
            all.push(rx.recv_async().await.ok()?);
        }
        Some(all)
    };
    let mut all = monoio::time::timeout(SCRAPE_TIMEOUT, gather).await.ok()??;
    all.sort_by_key(|s| s.core);
    Some(all)
}

/// The certificates this core's TLS listener and the admin listener serve now, with the
/// seconds each has left; a file both serve is listed once (one series per file).
fn certificates(core: &Core) -> Vec<(String, Option<i64>)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (public, admin) = (core.tls_certificates(), core.admin_tls_certificates());
    let mut out: Vec<(String, Option<i64>)> = Vec::new();
    for c in public
        .iter()
        .chain(admin.iter())
        .flat_map(|certs| certs.iter())
    {
        if !out.iter().any(|(file, _)| *file == c.file) {
            out.push((c.file.clone(), c.not_after.map(|t| t - now)));
        }
    }
    out
}

/// The `process_*` figures, read on a thread of their own: listing /proc/self/fd costs time
/// in proportion to the open connections, which this worker's connections must not wait on.
/// `None` if the thread cannot start or does not answer within the scrape's timeout.
async fn process_figures(core: &Core) -> Option<crate::stats::process::Process> {
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .saturating_sub(core.shared.started.elapsed())
        .as_secs_f64();
    let (tx, rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("ringrelay-proc".into())
        .spawn(move || {
            let _ = tx.send(crate::stats::process::read(started_unix));
        })
        .ok()?;
    monoio::time::timeout(SCRAPE_TIMEOUT, rx.recv_async())
        .await
        .ok()?
        .ok()
}

pub async fn scrape(core: &Core, format: Format) -> Response {
    let Some(cores) = collect(core).await else {
        return Response::error(503, "scrape_busy", "a worker did not answer in time; retry")
            .with_header("Retry-After", "1");
    };
    let meta = Meta {
        version: env!("CARGO_PKG_VERSION"),
        driver: core.shared.driver,
        workers: core.shared.workers(),
        uptime_s: core.shared.started.elapsed().as_secs(),
        cluster: core.shared.cluster.as_ref().map(|v| v.stats_json()),
        cluster_rtt: core.shared.cluster.as_ref().map(|v| v.rtt()),
        reload: Some(core.shared.reloads.json()),
        upgrade: Some(core.shared.upgrades.json()),
        certificates: certificates(core),
        process: match format {
            Format::Prometheus => process_figures(core).await,
            Format::Json => None,
        },
    };
    match format {
        Format::Json => Response::json(200, stats_json(&meta, &cores)),
        Format::Prometheus => Response {
            status: 200,
            headers: vec![(
                "Content-Type",
                "text/plain; version=0.0.4; charset=utf-8".into(),
            )],
            body: metrics_text(&meta, &cores).into_bytes(),
        },
    }
}
