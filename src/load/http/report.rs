//! The result of an HTTP load run: one JSON object, or a few lines for a person. Field names
//! follow the WebSocket modes' report where they mean the same thing.

use crate::load::report::{LatencySummary, TlsReport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    /// Always `http`.
    pub mode: String,
    /// The address connected to.
    pub target: String,
    pub url: String,
    pub method: String,
    /// Request body bytes (0 for GET and HEAD, which send none).
    pub size: usize,
    /// Requests in flight, over all threads.
    pub concurrency: usize,
    /// `--rate`: requests per second asked for over all slots, each on its own schedule, the
    /// latency counted from when a request was due; null for the closed loop.
    pub rate: Option<f64>,
    /// Connections reused (`--keep-alive`) or one per request.
    pub keep_alive: bool,
    pub threads: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Requests started after the warm-up that got a complete answer, whatever its status.
    pub requests: u64,
    /// Of those, 2xx answers.
    pub ok: u64,
    /// Of those, any other status.
    pub non_2xx: u64,
    /// Answers by status code.
    pub status: BTreeMap<u16, u64>,
    /// Requests without a complete answer (connect failed, reset, timed out, malformed),
    /// over the whole run, warm-up included: nothing should ever fail.
    pub errors: u64,
    /// Of the errors, those where the connection could not be opened.
    pub connect_errors: u64,
    /// Of the errors, those that ran out of `--timeout`.
    pub timeouts: u64,
    /// TCP connections opened over the whole run.
    pub connections: u64,
    /// 2xx answers per second of measured time: the throughput.
    pub requests_per_s: f64,
    /// Response body megabytes (10^6 bytes) per second, over the 2xx answers.
    pub mb_per_s: f64,
    /// From just before the connect (or the write, on a kept-alive connection; with `--rate`,
    /// from when the request was due) to the last byte of a 2xx answer, over the requests
    /// started (due) after the warm-up.
    pub latency_us: LatencySummary,
    /// The first few errors, for a person to read.
    pub error_samples: Vec<String>,
    /// `https://`: the TLS spoken (every new connection made a full handshake); null over
    /// http://.
    pub tls: Option<TlsReport>,
}

impl HttpReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// A few lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let conns = if self.keep_alive {
            "kept-alive connections"
        } else {
            "a new connection per request"
        };
        let _ = writeln!(
            s,
            "ringrelay load: http {} {} ({}), {} in flight, {conns}, {} B request body, {} thread(s), {:.1}s measured after {:.1}s warm-up",
            self.method,
            self.url,
            self.target,
            self.concurrency,
            self.size,
            self.threads,
            self.duration_s,
            self.warmup_s,
        );
        if self.tls.as_ref().is_some_and(|t| t.insecure) {
            let _ = writeln!(
                s,
                "  WARNING     --insecure: the server's certificate was not verified"
            );
        }
        if let Some(rate) = self.rate {
            let _ = writeln!(
                s,
                "  open loop   {rate:.0} req/s asked, latency from when each request was due"
            );
        }
        let _ = writeln!(
            s,
            "  throughput  {:.0} req/s (2xx), {:.2} MB/s response bodies",
            self.requests_per_s, self.mb_per_s
        );
        let by_status = self
            .status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            "  answered    {} ({by_status}), non-2xx {}, errors {} (connect {}, timeouts {}), {} connection(s)",
            self.requests, self.non_2xx, self.errors, self.connect_errors, self.timeouts, self.connections
        );
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "  latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.1}, {} samples)",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
        );
        for e in &self.error_samples {
            let _ = writeln!(s, "  error: {e}");
        }
        s
    }
}
