//! `--mode http`: `concurrency` slots spread over `threads` monoio runtimes, each sending one
//! request at a time, from the start line to the end of the run: back to back (closed loop),
//! or with `--rate` on a fixed schedule of its own (open loop: slot `i` of `n` is due every
//! `n / rate` seconds, offset by `i / n` of that), its latency counted from when the request
//! was due, so a stalled server shows in the percentiles instead of slowing the load down
//! (no coordinated omission). A slot behind its schedule sends its next request at once.
//!
//! Requests started after the warm-up are counted; those started before the end may finish
//! within `--timeout`. Every request is bounded by that timeout, and by the end of the run
//! plus [`DRAIN`](crate::load::args::DRAIN), so a run always stops. After an error (a refused
//! connect above all) a slot pauses briefly, so a dead target is reported, not spun on.

use super::client::Slot;
use super::error::HttpError;
use super::report::HttpReport;
use super::request::build_request;
use crate::config::DriverChoice;
use crate::http::client::HttpUrl;
use crate::load::alarm::Clock;
use crate::load::engine::{new_histogram, EngineError};
use crate::load::report::LatencySummary;
use crate::runtime::driver::{self, Driver};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Error messages kept for the report.
const ERROR_SAMPLES: usize = 5;
/// A slot's pause after a failed request.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub url: HttpUrl,
    /// `https://`: the TLS every connection speaks.
    pub tls: Option<crate::tls::client::ClientTls>,
    pub method: String,
    /// Request body bytes; `None` sends no body (GET, HEAD).
    pub body: Option<usize>,
    /// Requests in flight over all threads.
    pub concurrency: usize,
    /// Requests per second over all slots (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    pub keep_alive: bool,
    pub warmup: Duration,
    pub duration: Duration,
    /// Longest one request may take, connect to last byte.
    pub timeout: Duration,
    pub threads: usize,
    pub driver: DriverChoice,
    /// A line a second on stderr.
    pub progress: bool,
    pub drain: Duration,
}

/// What one thread counted.
struct Tally {
    requests: u64,
    ok: u64,
    status: BTreeMap<u16, u64>,
    body_bytes: u64,
    errors: u64,
    connect_errors: u64,
    timeouts: u64,
    connections: u64,
    hist: Histogram<u64>,
    samples: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            ok: 0,
            status: BTreeMap::new(),
            body_bytes: 0,
            errors: 0,
            connect_errors: 0,
            timeouts: 0,
            connections: 0,
            hist: new_histogram(),
            samples: Vec::new(),
        }
    }

    fn error(&mut self, e: &HttpError) {
        self.errors += 1;
        match e {
            HttpError::Connect(_) | HttpError::Handshake(_) => self.connect_errors += 1,
            HttpError::Timeout(_) => self.timeouts += 1,
            _ => {}
        }
        if self.samples.len() < ERROR_SAMPLES {
            self.samples.push(e.to_string());
        }
    }

    fn merge(&mut self, o: Tally) {
        self.requests += o.requests;
        self.ok += o.ok;
        for (k, v) in o.status {
            *self.status.entry(k).or_default() += v;
        }
        self.body_bytes += o.body_bytes;
        self.errors += o.errors;
        self.connect_errors += o.connect_errors;
        self.timeouts += o.timeouts;
        self.connections += o.connections;
        let _ = self.hist.add(&o.hist);
        for s in o.samples {
            if self.samples.len() < ERROR_SAMPLES {
                self.samples.push(s);
            }
        }
    }
}

/// What the threads share: the start line and the figures for the progress line.
struct Shared {
    epoch: Instant,
    t0_ns: AtomicU64,
    barrier: Barrier,
    answered: AtomicU64,
    errors: AtomicU64,
    finished: AtomicUsize,
}

/// One thread's state, shared by its slots.
struct Ctx {
    plan: Arc<HttpPlan>,
    shared: Arc<Shared>,
    /// The start line, in nanoseconds since the epoch.
    t0: u64,
    warm: u64,
    end: u64,
    hard: u64,
    tally: RefCell<Tally>,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.shared.epoch.elapsed().as_nanos() as u64
    }
}

/// Runs the plan to the end and reports.
pub fn run(plan: &HttpPlan) -> Result<HttpReport, EngineError> {
    if plan.concurrency == 0 || plan.threads == 0 {
        return Err(EngineError::Invalid(
            "--concurrency and --threads must be at least 1".into(),
        ));
    }
    let driver = driver::resolve(plan.driver).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let mut plan = plan.clone();
    plan.threads = plan.threads.min(plan.concurrency);
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        t0_ns: AtomicU64::new(0),
        barrier: Barrier::new(plan.threads + 1),
        answered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        finished: AtomicUsize::new(0),
    });
    let mut handles = Vec::new();
    for index in 0..plan.threads {
        let (plan, shared) = (plan.clone(), shared.clone());
        let h = std::thread::Builder::new()
            .name(format!("load-http-{index}"))
            .spawn(move || {
                let tally = thread_main(plan, index, &shared, driver);
                shared.finished.fetch_add(1, Ordering::Release);
                tally
            })
            .map_err(|e| EngineError::Thread(e.to_string()))?;
        handles.push(h);
    }
    // Every runtime is built; time starts now for all of them.
    shared.barrier.wait();
    let t0 = shared.epoch.elapsed().as_nanos() as u64;
    shared.t0_ns.store(t0, Ordering::Release);
    shared.barrier.wait();
    progress(&plan, &shared, t0);
    let mut total = Tally::new();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| EngineError::Thread("a load thread panicked".into()))?;
        total.merge(t);
    }
    Ok(report(&plan, total))
}

fn thread_main(plan: Arc<HttpPlan>, index: usize, shared: &Arc<Shared>, driver: Driver) -> Tally {
    let mut out = None;
    let fut = async {
        out = Some(thread_run(plan, index, shared.clone()).await);
    };
    if let Err(e) = driver::block_on(driver, fut) {
        // The others wait for this thread at the start line.
        shared.barrier.wait();
        shared.barrier.wait();
        let mut t = Tally::new();
        t.errors += 1;
        t.samples.push(format!("cannot build a runtime: {e}"));
        return t;
    }
    out.unwrap_or_else(Tally::new)
}

async fn thread_run(plan: Arc<HttpPlan>, index: usize, shared: Arc<Shared>) -> Tally {
    shared.barrier.wait();
    shared.barrier.wait();
    let t0 = shared.t0_ns.load(Ordering::Acquire);
    let warm = t0 + plan.warmup.as_nanos() as u64;
    let end = warm + plan.duration.as_nanos() as u64;
    let hard = end + plan.drain.min(plan.timeout).as_nanos() as u64;
    let request = Rc::new(build_request(
        &plan.method,
        &plan.url,
        plan.body,
        plan.keep_alive,
    ));
    let ctx = Rc::new(Ctx {
        plan,
        shared,
        t0,
        warm,
        end,
        hard,
        tally: RefCell::new(Tally::new()),
    });
    let slots: Vec<usize> = (index..ctx.plan.concurrency)
        .step_by(ctx.plan.threads)
        .collect();
    let clock = match ctx.plan.rate {
        Some(_) => match Clock::start(slots.len()) {
            Ok(c) => Some(c),
            Err(e) => {
                let mut t = Tally::new();
                t.errors += 1;
                t.samples.push(format!("alarm thread: {e}"));
                return t;
            }
        },
        None => None,
    };
    let tasks: Vec<_> = slots
        .iter()
        .enumerate()
        .map(|(local, &global)| {
            let pace = clock.clone().map(|clock| Pace {
                clock,
                local,
                global,
            });
            monoio::spawn(slot_loop(ctx.clone(), request.clone(), pace))
        })
        .collect();
    for t in tasks {
        t.await;
    }
    let tally = std::mem::replace(&mut *ctx.tally.borrow_mut(), Tally::new());
    tally
}

/// A slot's place on the open-loop schedule: its bell on the thread's clock (`local`) and
/// its number among all slots (`global`), which sets its offset.
struct Pace {
    clock: Rc<Clock>,
    local: usize,
    global: usize,
}

/// The slot's first due time and the time between its requests, in nanoseconds: slot `i` of
/// `n` sends every `n / rate` seconds, starting `i / n` of that after the start line.
fn schedule(t0: u64, rate: f64, slot: usize, slots: usize) -> (u64, u64) {
    let interval = (slots as f64 / rate * 1e9).max(1.0);
    let offset = interval * slot as f64 / slots as f64;
    (t0 + offset as u64, interval as u64)
}

/// One slot: a request, its answer, the next request (at once, or when due with `--rate`),
/// until the end.
async fn slot_loop(ctx: Rc<Ctx>, request: Rc<Vec<u8>>, pace: Option<Pace>) {
    let plan = &ctx.plan;
    let (mut due, interval) = match plan.rate {
        Some(rate) => schedule(
            ctx.t0,
            rate,
            pace.as_ref().map_or(0, |p| p.global),
            plan.concurrency,
        ),
        None => (0, 0),
    };
    let mut slot = Slot::new(
        plan.url.addr,
        plan.tls.clone(),
        request,
        plan.method == "HEAD",
        plan.keep_alive,
    );
    loop {
        // Closed loop: now. Open loop: when due, even if that has passed.
        let start = match &pace {
            Some(p) if due < ctx.end => {
                let at = ctx.shared.epoch + Duration::from_nanos(due);
                p.clock.until(p.local, at).await;
                let this = due;
                due += interval;
                this
            }
            _ => ctx.now_ns(),
        };
        if start >= ctx.end {
            break;
        }
        let sent = ctx.now_ns().max(start);
        let deadline = (sent + plan.timeout.as_nanos() as u64).min(ctx.hard);
        let budget = Duration::from_nanos(deadline.saturating_sub(sent));
        let res = monoio::time::timeout(budget, slot.send())
            .await
            .unwrap_or(Err(HttpError::Timeout(budget)));
        let now = ctx.now_ns();
        match res {
            Ok(a) => {
                ctx.shared.answered.fetch_add(1, Ordering::Relaxed);
                if start >= ctx.warm {
                    let mut t = ctx.tally.borrow_mut();
                    t.requests += 1;
                    *t.status.entry(a.status).or_default() += 1;
                    if (200..300).contains(&a.status) {
                        t.ok += 1;
                        t.body_bytes += a.body_len;
                        t.hist.saturating_record(((now - start) / 1000).max(1));
                    }
                }
                let left = Duration::from_nanos(deadline.saturating_sub(now));
                let _ = monoio::time::timeout(left, slot.linger()).await;
            }
            Err(e) => {
                ctx.shared.errors.fetch_add(1, Ordering::Relaxed);
                ctx.tally.borrow_mut().error(&e);
                slot.reset();
                if !matches!(e, HttpError::Timeout(_)) {
                    let pause = Duration::from_nanos(ctx.end.saturating_sub(now)).min(ERROR_PAUSE);
                    monoio::time::sleep(pause).await;
                }
            }
        }
    }
    ctx.tally.borrow_mut().connections += slot.connections;
}

/// Prints a line a second until every thread is done.
fn progress(plan: &HttpPlan, shared: &Shared, t0: u64) {
    let start = shared.epoch + Duration::from_nanos(t0);
    let (mut last_count, mut last_time) = (0, start);
    let mut next_tick = start + Duration::from_secs(1);
    while shared.finished.load(Ordering::Acquire) < plan.threads {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now < next_tick {
            continue;
        }
        next_tick += Duration::from_secs(1);
        let answered = shared.answered.load(Ordering::Relaxed);
        let rate = (answered - last_count) as f64 / (now - last_time).as_secs_f64();
        (last_count, last_time) = (answered, now);
        if !plan.progress {
            continue;
        }
        let elapsed = now - start;
        let phase = if elapsed < plan.warmup {
            "warm-up"
        } else if elapsed >= plan.warmup + plan.duration {
            "draining"
        } else {
            "running"
        };
        eprintln!(
            "load [{:>4.0}s] {phase:<8} {rate:>10.0} req/s  answered {answered}  errors {}",
            elapsed.as_secs_f64(),
            shared.errors.load(Ordering::Relaxed),
        );
    }
}

fn report(plan: &HttpPlan, total: Tally) -> HttpReport {
    let secs = plan.duration.as_secs_f64();
    let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    HttpReport {
        mode: "http".into(),
        target: plan.url.addr.to_string(),
        url: format!(
            "{}://{}{}",
            if plan.tls.is_some() { "https" } else { "http" },
            plan.url.host,
            plan.url.path
        ),
        tls: plan.tls.as_ref().map(|t| crate::load::report::TlsReport {
            insecure: t.insecure,
            server_name: t.server_name.to_str().into_owned(),
            version: None,
            resumed_handshakes: None,
        }),
        method: plan.method.clone(),
        size: plan.body.unwrap_or(0),
        concurrency: plan.concurrency,
        rate: plan.rate,
        keep_alive: plan.keep_alive,
        threads: plan.threads,
        warmup_s: plan.warmup.as_secs_f64(),
        duration_s: secs,
        requests: total.requests,
        ok: total.ok,
        non_2xx: total.requests - total.ok,
        status: total.status,
        errors: total.errors,
        connect_errors: total.connect_errors,
        timeouts: total.timeouts,
        connections: total.connections,
        requests_per_s: per_s(total.ok as f64),
        mb_per_s: per_s(total.body_bytes as f64) / 1e6,
        latency_us: LatencySummary::of(&total.hist),
        error_samples: total.samples,
    }
}

#[cfg(test)]
mod tests {
    use super::schedule;

    #[test]
    fn slots_share_the_rate_on_staggered_schedules() {
        // 4 slots at 1,000 req/s: each every 4 ms, a millisecond apart.
        let firsts: Vec<(u64, u64)> = (0..4).map(|i| schedule(100, 1000.0, i, 4)).collect();
        assert_eq!(
            firsts,
            [
                (100, 4_000_000),
                (1_000_100, 4_000_000),
                (2_000_100, 4_000_000),
                (3_000_100, 4_000_000)
            ]
        );
        // Over one second the slots together are due `rate` times.
        let (rate, slots) = (2_500.0, 7);
        let due: u64 = (0..slots)
            .map(|i| {
                let (first, every) = schedule(0, rate, i, slots);
                (1_000_000_000 - first).div_ceil(every)
            })
            .sum();
        assert!((2_499..=2_501).contains(&due), "{due}");
        // A rate far above what nanoseconds can space still moves forward.
        assert_eq!(schedule(0, 1e12, 0, 1).1, 1);
    }
}
