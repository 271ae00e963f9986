//! The result of a load run: one JSON object, or a few lines for a person.

use super::attack::AttackCounts;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;

/// Latency of the messages sent after the warm-up, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        LatencySummary {
            count: h.len(),
            min: if h.is_empty() { 0 } else { h.min() },
            mean: if h.is_empty() { 0.0 } else { h.mean() },
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What the attackers (`--attackers`) got. They run from the start of the warm-up to the end
/// of the measured time, so their counts cover both.
#[derive(Debug, Clone, Serialize)]
pub struct AttackReport {
    pub attackers: usize,
    /// Threads of their own (`--attack-threads`); 0 when they share the load's threads.
    pub threads: usize,
    /// The address every attack connection came from.
    pub source: String,
    /// Attempts per second over the warm-up and the measured time.
    pub attempts_per_s: f64,
    /// attempts, status_101, status_429, status_503, status_other, errors, error_samples;
    /// `attempts` is the sum of the five counts.
    #[serde(flatten)]
    pub counts: AttackCounts,
}

/// How long connections took to set up, step by step, in microseconds: in `connect` mode
/// the cycles after the warm-up, otherwise the connections opened before the start.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    /// The TCP connect.
    pub tcp_connect: LatencySummary,
    /// The TLS handshake (`wss://` only).
    pub tls_handshake: Option<LatencySummary>,
    /// From the upgrade request to its whole answer.
    pub upgrade: LatencySummary,
    /// `connect` mode: a whole cycle, from the connect to the relay's close.
    pub cycle: Option<LatencySummary>,
}

/// The TLS a `wss://` run spoke.
#[derive(Debug, Clone, Serialize)]
pub struct TlsReport {
    /// `--insecure`: the relay's certificate was not verified.
    pub insecure: bool,
    /// The name asked for (SNI) and checked against the certificate.
    pub server_name: String,
    /// The TLS version negotiated (`"1.3"` or `"1.2"`; null when no connection was made,
    /// and in `--mode http`).
    pub version: Option<String>,
    /// Of the handshakes timed in `setup_us.tls_handshake`, those that resumed a session
    /// (only with `--tls-resume`); null in `--mode http`.
    pub resumed_handshakes: Option<u64>,
}

/// Whether every stream arrived whole, once and in order: what `--fail-on-loss` gates on.
/// A message that skipped ahead and the ones it skipped arriving late count in both `lost`
/// and `out_of_order`; either makes the run fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OrderCounts {
    /// Messages a receiver never got: sequence numbers skipped on arrival, and the shortfall
    /// an end marker revealed.
    pub lost: u64,
    /// Messages that arrived with a sequence number already passed: repeated or reordered.
    pub out_of_order: u64,
    /// Streams whose receiver stopped before the end marker (the connection was cut, or the
    /// run's deadline came first), so what they lost cannot be counted.
    pub unfinished: u64,
}

impl OrderCounts {
    pub fn merge(&mut self, o: OrderCounts) {
        self.lost += o.lost;
        self.out_of_order += o.out_of_order;
        self.unfinished += o.unfinished;
    }

    /// Every message of every stream arrived once and in order.
    pub fn intact(&self) -> bool {
        *self == OrderCounts::default()
    }

    /// Counts a message numbered `seq` arriving where `next` was expected.
    pub fn arrived(&mut self, seq: u64, next: u64) {
        if seq > next {
            self.lost += seq - next;
        } else if seq < next {
            self.out_of_order += 1;
        }
    }

    /// Counts an end marker saying `total` were sent where `next` was expected.
    pub fn ended(&mut self, total: u64, next: u64) {
        if total > next {
            self.lost += total - next;
        } else if total < next {
            self.out_of_order += next - total;
        }
    }
}

impl std::fmt::Display for OrderCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lost, {} repeated or out of order, {} stream(s) cut before their end",
            self.lost, self.out_of_order, self.unfinished
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    /// The address connected to.
    pub target: String,
    /// `websocket` or `raw` (frames behind a one-line prefix, for a TCP forwarder).
    pub transport: String,
    /// Sessions (pairs, churn loops) or echo connections.
    pub conns: usize,
    pub size: usize,
    pub window: u32,
    /// Fixed-rate mode: messages per second asked for, over all senders.
    pub rate: Option<f64>,
    pub both_ways: bool,
    pub threads: usize,
    pub warmup_s: f64,
    /// The time rates are over: the measured duration (without warm-up and drain), or in
    /// count mode the time from the start to the last arrival.
    pub duration_s: f64,
    /// Messages sent after the warm-up.
    pub sent: u64,
    /// Of those, messages that arrived.
    pub delivered: u64,
    /// Connection failures, messages missing or out of order, protocol errors, streams cut short.
    pub errors: u64,
    pub connect_errors: u64,
    /// Messages lost, repeated or reordered, and streams cut short (all messages, warm-up
    /// included): `--fail-on-loss` fails the run unless all are 0.
    pub order: OrderCounts,
    /// delivered / sent (0 when nothing was sent).
    pub success_rate: f64,
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second delivered.
    pub mb_per_s: f64,
    /// Churn: connect-send-close cycles completed cleanly (started after the warm-up).
    /// Connect: connections opened and closed (started after the warm-up).
    pub cycles: Option<u64>,
    pub cycles_per_s: Option<f64>,
    /// Connection setup times (null when no connection was set up).
    pub setup_us: Option<SetupReport>,
    /// `wss://`: the TLS spoken; null over plain ws://.
    pub tls: Option<TlsReport>,
    /// From the time a message was due (fixed rate) or sent (closed loop) to its arrival.
    pub latency_us: LatencySummary,
    /// Fixed rate: how late messages left after their due time. This is the client's own
    /// delay (monoio's timers tick in milliseconds, so up to about 1 ms of it is the timer);
    /// it is part of `latency_us`, as it must be for a stall not to hide.
    pub send_lag_us: Option<LatencySummary>,
    /// The first few errors, for a person to read.
    pub error_samples: Vec<String>,
    /// The connection flood beside the load (`--attackers`), or null without one.
    pub attack: Option<AttackReport>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// A few lines for a terminal: what was run, what came of it, and the flood beside it.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write_plan(&mut s);
        self.write_results(&mut s);
        if let Some(a) = &self.attack {
            write_attack(&mut s, a);
        }
        s
    }

    /// The first line says what was run, so a pasted result carries its own command's gist.
    fn write_plan(&self, s: &mut String) {
        let how = match self.rate {
            Some(r) => format!("fixed rate {r} msgs/s"),
            None => format!("closed loop, window {}", self.window),
        };
        let unit = if self.mode == "echo" {
            "connections"
        } else {
            "sessions"
        };
        let transport = match &self.tls {
            Some(t) => format!(
                "{} over TLS {} to {}",
                self.transport,
                t.version.as_deref().unwrap_or("?"),
                t.server_name
            ),
            None => self.transport.clone(),
        };
        if self.mode == "connect" {
            let _ = writeln!(
                s,
                "ringrelay load: connect to {} ({transport}), {} loops, {} thread(s), {:.1}s measured after {:.1}s warm-up",
                self.target, self.conns, self.threads, self.duration_s, self.warmup_s,
            );
        } else {
            let _ = writeln!(
            s,
            "ringrelay load: {} to {} ({transport}), {} {unit}{}, {} B messages, {how}, {} thread(s), {:.1}s measured after {:.1}s warm-up",
            self.mode,
            self.target,
            self.conns,
            if self.both_ways { " both ways" } else { "" },
            self.size,
            self.threads,
            self.duration_s,
            self.warmup_s,
        );
        }
        if self.tls.as_ref().is_some_and(|t| t.insecure) {
            let _ = writeln!(
                s,
                "  WARNING     --insecure: the relay's certificate was not verified"
            );
        }
    }

    /// Throughput, delivery, latency (and the sender's own lateness at a fixed rate), then
    /// the first errors: the figures a reader compares between runs.
    fn write_results(&self, s: &mut String) {
        if self.mode == "connect" {
            self.write_connect(s);
            return;
        }
        let _ = writeln!(
            s,
            "  throughput  {:.0} msgs/s, {:.2} MB/s payload",
            self.msgs_per_s, self.mb_per_s
        );
        if let (Some(c), Some(r)) = (self.cycles, self.cycles_per_s) {
            let _ = writeln!(s, "  cycles      {c} ({r:.1}/s)");
        }
        let _ = writeln!(
            s,
            "  delivered   {} of {} sent ({:.4} %), errors {}",
            self.delivered,
            self.sent,
            self.success_rate * 100.0,
            self.errors
        );
        if !self.order.intact() {
            let _ = writeln!(s, "  order       {}", self.order);
        }
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "  latency µs  p50 {}  p95 {}  p99 {}  p99.9 {}  max {}  (mean {:.1}, {} samples)",
            l.p50, l.p95, l.p99, l.p999, l.max, l.mean, l.count
        );
        if let Some(l) = &self.send_lag_us {
            let _ = writeln!(
                s,
                "  send lag µs p50 {}  p99 {}  max {}  (client's lateness against the schedule, included above)",
                l.p50, l.p99, l.max
            );
        }
        for e in &self.error_samples {
            let _ = writeln!(s, "  error: {e}");
        }
    }

    /// `connect` mode: the rate of new connections, then each step's time.
    fn write_connect(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "  connections {} ({:.1}/s), errors {}",
            self.cycles.unwrap_or(0),
            self.cycles_per_s.unwrap_or(0.0),
            self.errors
        );
        if let Some(n) = self.tls.as_ref().and_then(|t| t.resumed_handshakes) {
            if n > 0 {
                let _ = writeln!(s, "  resumed     {n} TLS handshakes resumed a session");
            }
        }
        if let Some(u) = &self.setup_us {
            let steps = [
                ("tcp connect", Some(&u.tcp_connect)),
                ("tls handshake", u.tls_handshake.as_ref()),
                ("upgrade", Some(&u.upgrade)),
                ("whole cycle", u.cycle.as_ref()),
            ];
            for (name, l) in steps {
                if let Some(l) = l {
                    let _ = writeln!(
                        s,
                        "  {name:<13} µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.1}, {} samples)",
                        l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
                    );
                }
            }
        }
        for e in &self.error_samples {
            let _ = writeln!(s, "  error: {e}");
        }
    }
}

/// The flood's answers counted by status, so an operator sees how much the relay refused.
fn write_attack(s: &mut String, a: &AttackReport) {
    let c = &a.counts;
    let _ = writeln!(
        s,
        "  attack      {} attempts, 101: {}, 429: {}, 503: {}, other: {}, errors: {}  ({} attacker(s) from {} on {}, {:.0}/s over warm-up and run)",
        c.attempts,
        c.status_101,
        c.status_429,
        c.status_503,
        c.status_other,
        c.errors,
        a.attackers,
        a.source,
        match a.threads {
            0 => "the load's threads".to_string(),
            n => format!("{n} thread(s) of their own"),
        },
        a.attempts_per_s,
    );
    for e in &c.error_samples {
        let _ = writeln!(s, "  attack error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::OrderCounts;

    #[test]
    fn in_order_arrivals_and_a_matching_end_are_intact() {
        let mut o = OrderCounts::default();
        for seq in 0..5 {
            o.arrived(seq, seq);
        }
        o.ended(5, 5);
        assert!(o.intact());
    }

    #[test]
    fn a_gap_counts_every_skipped_message_as_lost() {
        let mut o = OrderCounts::default();
        o.arrived(7, 3);
        assert_eq!(o.lost, 4);
        assert_eq!(o.out_of_order, 0);
        assert!(!o.intact());
    }

    #[test]
    fn a_repeat_or_a_late_message_is_out_of_order() {
        let mut o = OrderCounts::default();
        o.arrived(2, 3);
        o.arrived(0, 3);
        assert_eq!((o.lost, o.out_of_order), (0, 2));
    }

    #[test]
    fn an_end_marker_reveals_a_missing_tail() {
        let mut o = OrderCounts::default();
        o.ended(10, 8);
        assert_eq!(o.lost, 2);
        let mut extra = OrderCounts::default();
        extra.ended(8, 10);
        assert_eq!(extra.out_of_order, 2);
    }

    #[test]
    fn merge_adds_and_display_names_each_count() {
        let mut a = OrderCounts {
            lost: 1,
            out_of_order: 2,
            unfinished: 3,
        };
        a.merge(a);
        assert_eq!((a.lost, a.out_of_order, a.unfinished), (2, 4, 6));
        let text = a.to_string();
        assert!(
            text.contains("2 lost") && text.contains("4 repeated") && text.contains("6 stream")
        );
    }
}
