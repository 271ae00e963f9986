//! The load engine: connections, senders and receivers on `threads` monoio runtimes.
//!
//! A *stream* is one sender connection and one receiver connection (the same one for echo).
//! Every message carries its stream's sequence number and its send time in nanoseconds since
//! the run's shared `Instant` (for fixed-rate sending, the time it was *meant* to be sent, so
//! that a stall shows up in the latency instead of hiding it). The receiver checks the
//! sequence, records the latency of messages sent after the warm-up and, in closed-loop mode,
//! hands the sender a credit back so that `window` messages stay in flight.
//!
//! When the time is up (or a stream's message count is reached) the sender sends an *end
//! marker* (a 16-byte message whose sequence has the top bit set and holds the count), so the
//! receiver knows when it has everything. Then each side sends a close frame (or, raw, shuts
//! its socket down) and waits for the answer. At `end + drain` every socket still open is shut
//! down from outside, so a run always stops.
//!
//! With an [`Attack`], attackers (see `attack`) run from the start to `end`, counted apart
//! from the honest connections: either spread over the load's threads, sharing their runtimes,
//! or on threads of their own numbered after the load's (which then run nothing else).

mod connect;

use super::alarm::Alarm;
use super::attack::{self, Attack, AttackCounts, Outcome};
use super::client::{
    self, ClientError, Connection, Control, Event, FrameReader, FrameWriter, Rng, Target,
    Transport, STAMP_LEN,
};
use super::report::{AttackReport, LatencySummary, OrderCounts, Report, TlsReport};
use crate::config::DriverChoice;
use crate::runtime::driver::{self, Driver};
use crate::ws::OpCode;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Set in the sequence field of the end marker; the rest is the number of messages sent.
pub const END_FLAG: u64 = 1 << 63;
/// Frames gathered into one write at most (a single larger message still goes whole).
const MAX_BATCH: usize = 256 << 10;
/// Read buffer per connection.
const READ_BUFFER: usize = 64 << 10;
/// Error messages kept for the report.
const ERROR_SAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `conns` sessions of two peers; messages a→b (and b→a with `both_ways`).
    Pairs,
    /// `conns` connections to the echo route.
    Echo,
    /// `conns` loops that each connect a pair, send `churn_messages`, close, and start over.
    Churn,
    /// `conns` loops that each open a connection (TCP, TLS, upgrade), close it, and start
    /// over: the rate of new connections and what each step of one costs.
    Connect,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pairs => "pairs",
            Mode::Echo => "echo",
            Mode::Churn => "churn",
            Mode::Connect => "connect",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Send for `warmup + duration`; only messages sent after the warm-up count.
    Time {
        warmup: Duration,
        duration: Duration,
    },
    /// Each sender sends `messages`, then the run ends once they have arrived. Rates are over
    /// the time from the start to the last arrival. `deadline` bounds the whole run.
    Count { messages: u64, deadline: Duration },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    /// Where the second peer of each pair connects (another node of a cluster); `None`:
    /// `target`.
    pub target_b: Option<Target>,
    pub mode: Mode,
    /// Sessions (pairs, churn loops) or connections (echo).
    pub conns: usize,
    /// Message size in bytes (at least 16).
    pub size: usize,
    /// Messages in flight per sender in closed-loop mode.
    pub window: u32,
    pub stop: Stop,
    /// Fixed-rate mode: messages per second over all senders together.
    pub rate: Option<f64>,
    pub both_ways: bool,
    pub churn_messages: u64,
    pub threads: usize,
    /// A line a second on stderr.
    pub progress: bool,
    /// Makes session ids unique to this run.
    pub run_id: String,
    /// How long after the end senders and receivers may take to finish.
    pub drain: Duration,
    pub connect_timeout: Duration,
    /// The client's I/O driver (`auto` picks io_uring where the kernel has it).
    pub driver: DriverChoice,
    /// Pairs join with `resume=0`, so the relay numbers and keeps what it delivers (to
    /// measure what resume costs).
    pub resume: bool,
    /// ... with `events=1`, so the relay also sends `ack` events (two-way resume).
    pub acks: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("no connection could be set up: {0}")]
    NoConnections(String),
    #[error("a load thread failed: {0}")]
    Thread(String),
    #[error("no request was answered: {0}")]
    NothingAnswered(String),
    #[error(transparent)]
    Target(#[from] super::http::TargetError),
    /// `--fail-on-loss` and the run did not deliver every message once and in order.
    #[error("--fail-on-loss: {0}")]
    Loss(OrderCounts),
}

impl EngineError {
    /// `ringrelay load`'s exit status: 3 when `--fail-on-loss` found loss (the report was
    /// printed), so a script tells it from a run that could not be made at all (1).
    pub fn exit_code(&self) -> u8 {
        match self {
            EngineError::Loss(_) => 3,
            _ => 1,
        }
    }
}

impl Plan {
    /// Where a pair's second peer connects.
    pub fn b(&self) -> &Target {
        self.target_b.as_ref().unwrap_or(&self.target)
    }

    fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: &str| Err(EngineError::Invalid(m.to_string()));
        if self.size < STAMP_LEN {
            return bad("--size must be at least 16 (sequence number and timestamp)");
        }
        if self.conns == 0 || self.threads == 0 || self.window == 0 {
            return bad("--pairs, --threads and --window must be at least 1");
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return bad("--rate must be a positive number of messages per second");
            }
            if matches!(self.mode, Mode::Churn | Mode::Connect) {
                return bad("--rate does not apply to churn or connect");
            }
        }
        if self.mode == Mode::Churn && self.churn_messages == 0 {
            return bad("--churn-messages must be at least 1");
        }
        if matches!(self.mode, Mode::Echo | Mode::Connect)
            && self.target.transport == Transport::Raw
        {
            return bad("echo and connect need a WebSocket server, not a raw forwarder");
        }
        Ok(())
    }

    /// Streams that send, over the whole run (for splitting `rate`).
    fn senders(&self) -> usize {
        match self.mode {
            Mode::Echo => self.conns,
            _ if self.both_ways => self.conns * 2,
            _ => self.conns,
        }
    }
}

/// Wakes one waiting task; a notification that comes while nobody waits is kept for the next
/// wait, so checking state and then waiting cannot miss one.
#[derive(Default)]
struct Signal {
    flag: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// One direction of traffic between a sender connection and a receiver connection.
struct Stream {
    sender_wake: Rc<Signal>,
    receiver_wake: Rc<Signal>,
    /// Closed loop: messages the sender may still put in flight.
    credits: Cell<u32>,
    /// Send exactly this many (count mode, churn); otherwise until the time is up.
    limit: Option<u64>,
    /// Fixed rate: this sender's offset in its schedule, in intervals (spreads the senders).
    phase: f64,
    /// Receiver: the next sequence number expected.
    next: Cell<u64>,
    end_sent: Cell<bool>,
    done: Cell<bool>,
    /// The end marker arrived and every message before it, in order.
    clean: Cell<bool>,
    /// The end marker arrived (whatever came before it).
    ended: Cell<bool>,
}

impl Stream {
    fn new(
        sender: &Rc<Signal>,
        receiver: &Rc<Signal>,
        window: u32,
        limit: Option<u64>,
        phase: f64,
    ) -> Rc<Stream> {
        Rc::new(Stream {
            sender_wake: sender.clone(),
            receiver_wake: receiver.clone(),
            credits: Cell::new(window),
            limit,
            phase,
            next: Cell::new(0),
            end_sent: Cell::new(false),
            done: Cell::new(false),
            clean: Cell::new(false),
            ended: Cell::new(false),
        })
    }

    /// The stream is over (its end marker arrived, or a side of it failed).
    fn finish(&self) {
        self.done.set(true);
        self.sender_wake.notify();
        self.receiver_wake.notify();
    }
}

/// What the reader and the writer of one connection share.
struct ConnCtl {
    id: u64,
    /// Fixed rate: this sender's token for the alarm.
    alarm_token: Option<u32>,
    wake: Rc<Signal>,
    /// A ping's payload to answer.
    pong: Cell<Option<Control>>,
    /// The other end sent a close frame first (code to echo).
    peer_close: Cell<Option<u16>>,
    close_sent: Cell<bool>,
    reader_done: Cell<bool>,
    tasks_left: Cell<u8>,
    /// A duplicate of the socket, to shut it down at the deadline.
    kill: RefCell<Option<std::net::TcpStream>>,
    out: Option<Rc<Stream>>,
    inc: Option<Rc<Stream>>,
}

impl ConnCtl {
    fn streams_done(&self) -> bool {
        self.out.as_ref().is_none_or(|s| s.done.get())
            && self.inc.as_ref().is_none_or(|s| s.done.get())
    }
}

/// What one thread measured.
pub(crate) struct ThreadStats {
    pub sent: u64,
    pub delivered: u64,
    pub bytes: u64,
    pub errors: u64,
    pub connect_errors: u64,
    /// Lost, repeated, reordered messages and streams cut short (`--fail-on-loss`).
    pub order: OrderCounts,
    pub connections: u64,
    pub cycles: u64,
    pub last_end_ns: u64,
    pub hist: Histogram<u64>,
    /// Fixed rate: how late each message left after its due time, in microseconds.
    pub lag: Histogram<u64>,
    pub samples: Vec<String>,
    /// The attackers' tally (kept apart from the honest figures above).
    pub attack: AttackCounts,
    /// How long connections took to set up, step by step.
    pub setup: connect::SetupStats,
}

impl ThreadStats {
    fn new() -> ThreadStats {
        ThreadStats {
            sent: 0,
            delivered: 0,
            bytes: 0,
            errors: 0,
            connect_errors: 0,
            order: OrderCounts::default(),
            connections: 0,
            cycles: 0,
            last_end_ns: 0,
            hist: new_histogram(),
            lag: new_histogram(),
            samples: Vec::new(),
            attack: AttackCounts::default(),
            setup: connect::SetupStats::new(),
        }
    }

    fn error(&mut self, count: u64, what: impl FnOnce() -> String) {
        self.errors += count;
        if self.samples.len() < ERROR_SAMPLES {
            self.samples.push(what());
        }
    }

    fn merge(&mut self, o: ThreadStats) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.connect_errors += o.connect_errors;
        self.order.merge(o.order);
        self.connections += o.connections;
        self.cycles += o.cycles;
        self.last_end_ns = self.last_end_ns.max(o.last_end_ns);
        let _ = self.hist.add(&o.hist);
        let _ = self.lag.add(&o.lag);
        for s in o.samples {
            if self.samples.len() < ERROR_SAMPLES {
                self.samples.push(s);
            }
        }
        self.attack.merge(o.attack);
        self.setup.merge(&o.setup);
    }
}

/// Latency in microseconds, 1 µs to 60 s, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What the threads share.
struct RunShared {
    epoch: Instant,
    t0_ns: AtomicU64,
    barrier: Barrier,
    delivered: AtomicU64,
    errors: AtomicU64,
    /// Attack attempts so far (for the progress line).
    attack_attempts: AtomicU64,
    finished: AtomicUsize,
}

/// One thread's state, shared by its tasks.
struct Ctx {
    plan: Arc<Plan>,
    attack: Option<Arc<Attack>>,
    shared: Arc<RunShared>,
    t0: u64,
    /// Messages sent from here on count.
    warm: u64,
    /// Senders stop here (time mode; `u64::MAX` in count mode).
    end: u64,
    /// Every socket still open is shut down here.
    hard: u64,
    /// Fixed rate: nanoseconds between one sender's messages.
    interval: Option<f64>,
    /// Fixed rate: precise wake-ups, and the signals its tokens stand for.
    alarm: Option<Rc<Alarm>>,
    alarm_targets: RefCell<Vec<Rc<Signal>>>,
    stopping: Cell<bool>,
    aborted: Cell<bool>,
    live: RefCell<HashMap<u64, Rc<ConnCtl>>>,
    next_id: Cell<u64>,
    stats: RefCell<ThreadStats>,
    rng: RefCell<Rng>,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.shared.epoch.elapsed().as_nanos() as u64
    }

    fn instant(&self, ns: u64) -> monoio::time::Instant {
        monoio::time::Instant::from_std(self.shared.epoch + Duration::from_nanos(ns))
    }

    fn error(&self, count: u64, what: impl FnOnce() -> String) {
        self.stats.borrow_mut().error(count, what);
        self.shared.errors.fetch_add(count, Ordering::Relaxed);
    }

    /// The start of cycle `cycle` of a loop that opens connections (churn, connect): its
    /// session route (`tag`, the loop `k` and the cycle make it unique in the run), the time
    /// its connections may take, and a random source of its own. `None`: the measured time is
    /// over, or the run is stopping.
    fn next_cycle(&self, tag: char, k: usize, cycle: u64) -> Option<Cycle> {
        let start = self.now_ns();
        if start >= self.end || self.stopping.get() || self.aborted.get() {
            return None;
        }
        let plan = &self.plan;
        Some(Cycle {
            start,
            route: format!("/v1/relay/load-{}-{tag}{k}-{cycle}", plan.run_id),
            budget: Duration::from_nanos(self.hard.saturating_sub(start)).min(plan.connect_timeout),
        })
    }
}

/// See [`Ctx::next_cycle`].
struct Cycle {
    start: u64,
    route: String,
    budget: Duration,
}

/// Runs the plan to the end and reports.
pub fn run(plan: &Plan) -> Result<Report, EngineError> {
    run_attacked(plan, None)
}

/// Runs the plan with a connection flood beside it (when `attack` has attackers) and reports
/// both.
pub fn run_attacked(plan: &Plan, attack: Option<&Attack>) -> Result<Report, EngineError> {
    plan.validate()?;
    let attack = attack.filter(|a| a.attackers > 0).cloned().map(Arc::new);
    if let Some(a) = &attack {
        if !matches!(plan.stop, Stop::Time { .. }) {
            return Err(EngineError::Invalid(
                "attackers run for a timed run only".into(),
            ));
        }
        if plan.target.transport != Transport::WebSocket {
            return Err(EngineError::Invalid(
                "attackers need a WebSocket server, not a raw forwarder".into(),
            ));
        }
        a.validate(&plan.target).map_err(EngineError::Invalid)?;
    }
    let driver = driver::resolve(plan.driver).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let mut plan = plan.clone();
    plan.threads = plan.threads.min(plan.conns);
    let plan = Arc::new(plan);
    // The load's threads, then the attackers' own (if they have any).
    let threads = plan.threads + attack.as_ref().map_or(0, |a| a.own_threads());
    let shared = Arc::new(RunShared {
        epoch: Instant::now(),
        t0_ns: AtomicU64::new(0),
        barrier: Barrier::new(threads + 1),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        attack_attempts: AtomicU64::new(0),
        finished: AtomicUsize::new(0),
    });
    let mut handles = Vec::new();
    for index in 0..threads {
        let (plan, shared, attack) = (plan.clone(), shared.clone(), attack.clone());
        let name = match index.checked_sub(plan.threads) {
            None => format!("load-{index}"),
            Some(i) => format!("attack-{i}"),
        };
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let stats = thread_main(plan, attack, index, &shared, driver);
                shared.finished.fetch_add(1, Ordering::Release);
                stats
            })
            .map_err(|e| EngineError::Thread(e.to_string()))?;
        handles.push(h);
    }
    // Every thread has connected; time starts now for all of them.
    shared.barrier.wait();
    let t0 = shared.epoch.elapsed().as_nanos() as u64;
    shared.t0_ns.store(t0, Ordering::Release);
    shared.barrier.wait();
    progress(&plan, threads, attack.is_some(), &shared, t0);
    let mut total = ThreadStats::new();
    for h in handles {
        let s = h
            .join()
            .map_err(|_| EngineError::Thread("a load thread panicked".into()))?;
        total.merge(s);
    }
    if total.connections == 0 && total.connect_errors > 0 {
        return Err(EngineError::NoConnections(
            total.samples.first().cloned().unwrap_or_default(),
        ));
    }
    Ok(report(&plan, attack.as_deref(), total, t0))
}

/// Prints a line a second until every thread is done.
fn progress(plan: &Plan, threads: usize, attacked: bool, shared: &RunShared, t0: u64) {
    let start = shared.epoch + Duration::from_nanos(t0);
    let (warmup, duration) = match plan.stop {
        Stop::Time { warmup, duration } => (warmup, Some(duration)),
        Stop::Count { .. } => (Duration::ZERO, None),
    };
    let (mut last_count, mut last_time) = (0, start);
    let mut next_tick = start + Duration::from_secs(1);
    while shared.finished.load(Ordering::Acquire) < threads {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now < next_tick {
            continue;
        }
        let elapsed = now - start;
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let rate = (delivered - last_count) as f64 / (now - last_time).as_secs_f64();
        (last_count, last_time) = (delivered, now);
        next_tick += Duration::from_secs(1);
        if !plan.progress {
            continue;
        }
        let phase = if elapsed < warmup {
            "warm-up"
        } else if duration.is_some_and(|d| elapsed >= warmup + d) {
            "draining"
        } else {
            "running"
        };
        let attack = if attacked {
            format!(
                "  attack attempts {}",
                shared.attack_attempts.load(Ordering::Relaxed)
            )
        } else {
            String::new()
        };
        if plan.mode == Mode::Connect {
            eprintln!(
                "load [{:>4.0}s] {phase:<8} {:>10.0} conns/s  connections {delivered}  errors {}",
                elapsed.as_secs_f64(),
                rate,
                shared.errors.load(Ordering::Relaxed),
            );
            continue;
        }
        eprintln!(
            "load [{:>4.0}s] {phase:<8} {:>10.0} msgs/s {:>9.2} MB/s  delivered {delivered}  errors {}{attack}",
            elapsed.as_secs_f64(),
            rate,
            rate * plan.size as f64 / 1e6,
            shared.errors.load(Ordering::Relaxed),
        );
    }
}

fn report(plan: &Plan, attack: Option<&Attack>, total: ThreadStats, t0: u64) -> Report {
    let (warmup, secs) = match plan.stop {
        Stop::Time { warmup, duration } => (warmup.as_secs_f64(), duration.as_secs_f64()),
        Stop::Count { .. } => (0.0, total.last_end_ns.saturating_sub(t0) as f64 / 1e9),
    };
    let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let latency = LatencySummary::of(&total.hist);
    let send_lag = plan.rate.map(|_| LatencySummary::of(&total.lag));
    let cycles = matches!(plan.mode, Mode::Churn | Mode::Connect);
    let attack = attack.map(|a| {
        // Attackers run from the start to the end of the measured time.
        let window = warmup + secs;
        AttackReport {
            attackers: a.attackers,
            threads: a.own_threads(),
            source: a.source.to_string(),
            attempts_per_s: if window > 0.0 {
                total.attack.attempts as f64 / window
            } else {
                0.0
            },
            counts: total.attack.clone(),
        }
    });
    Report {
        mode: plan.mode.name().to_string(),
        target: format!("{}", plan.target.addr),
        transport: match plan.target.transport {
            Transport::WebSocket => "websocket",
            Transport::Raw => "raw",
        }
        .to_string(),
        conns: plan.conns,
        size: plan.size,
        window: plan.window,
        rate: plan.rate,
        both_ways: plan.both_ways,
        threads: plan.threads,
        warmup_s: warmup,
        duration_s: secs,
        sent: total.sent,
        delivered: total.delivered,
        errors: total.errors,
        connect_errors: total.connect_errors,
        order: total.order,
        success_rate: if total.sent > 0 {
            total.delivered as f64 / total.sent as f64
        } else {
            0.0
        },
        msgs_per_s: per_s(total.delivered as f64),
        mb_per_s: per_s(total.bytes as f64) / 1e6,
        cycles: cycles.then_some(total.cycles),
        cycles_per_s: cycles.then(|| per_s(total.cycles as f64)),
        setup_us: total.setup.summary(),
        tls: plan.target.tls.as_ref().map(|t| TlsReport {
            insecure: t.insecure,
            server_name: t.server_name.to_str().into_owned(),
            version: total.setup.tls_version.map(str::to_string),
            resumed_handshakes: Some(total.setup.tls_resumed),
        }),
        latency_us: latency,
        send_lag_us: send_lag,
        error_samples: total.samples,
        attack,
    }
}

/// Runs one thread's share of the plan on its own monoio runtime.
fn thread_main(
    plan: Arc<Plan>,
    attack: Option<Arc<Attack>>,
    index: usize,
    shared: &Arc<RunShared>,
    driver: Driver,
) -> ThreadStats {
    let fut = thread_run(plan, attack, index, shared.clone());
    let built = if driver == Driver::IoUring {
        crate::runtime::driver::uring_runtime(1024).map(|mut rt| rt.block_on(fut))
    } else {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(fut))
    };
    built.unwrap_or_else(|e| {
        // The others wait for this thread at the start line.
        shared.barrier.wait();
        shared.barrier.wait();
        let mut s = ThreadStats::new();
        s.error(1, || format!("cannot build a runtime: {e}"));
        s
    })
}

/// Connections set up before the start: a pair's two, or an echo connection alone.
struct Ready {
    index: usize,
    a: Connection,
    b: Option<Connection>,
}

async fn connect_one(
    target: &Target,
    route: &str,
    timeout: Duration,
) -> Result<Connection, ClientError> {
    match monoio::time::timeout(timeout, client::connect(target, route, READ_BUFFER)).await {
        Ok(r) => r,
        Err(_) if target.tls.is_some() => Err(ClientError::TlsTimeout),
        Err(_) => Err(ClientError::Timeout),
    }
}

/// One thread's run: connect its share before the start line, start with the others, run
/// every task to its end, hand back the counts.
async fn thread_run(
    plan: Arc<Plan>,
    attack: Option<Arc<Attack>>,
    index: usize,
    shared: Arc<RunShared>,
) -> ThreadStats {
    let rng = Rng::from_entropy(index as u64);
    let mut early = ThreadStats::new();
    // A thread past the load's own runs attackers only.
    let honest = index < plan.threads;
    let ready = connect_share(&plan, index, honest, &mut early).await;
    shared.barrier.wait();
    shared.barrier.wait();
    let t0 = shared.t0_ns.load(Ordering::Acquire);
    let (warm, end, hard) = deadlines(&plan, t0);
    shared.errors.fetch_add(early.errors, Ordering::Relaxed);
    let alarm = start_alarm(&plan, honest, shared.epoch);
    let ctx = Rc::new(Ctx {
        interval: plan.rate.map(|r| plan.senders() as f64 / r * 1e9),
        alarm: alarm.as_ref().map(|a| a.0.clone()),
        alarm_targets: RefCell::new(Vec::new()),
        plan,
        attack,
        shared,
        t0,
        warm,
        end,
        hard,
        stopping: Cell::new(false),
        aborted: Cell::new(false),
        live: RefCell::new(HashMap::new()),
        next_id: Cell::new(0),
        stats: RefCell::new(early),
        rng: RefCell::new(rng),
    });
    let mut tasks = spawn_streams(&ctx, ready);
    spawn_churn_and_attack(&ctx, index, honest, &mut tasks);
    monoio::spawn(controller(ctx.clone()));
    if let Some((_, sock)) = alarm {
        monoio::spawn(alarm_dispatch(ctx.clone(), sock));
    }
    for t in tasks {
        t.await;
    }
    drop(ctx.live.borrow_mut().drain());
    let stats = std::mem::replace(&mut *ctx.stats.borrow_mut(), ThreadStats::new());
    stats
}

/// Opens this thread's pairs (or echo connections) before the start line, so connecting is
/// not timed; a failure is counted in `early` and the rest go on. Bounded as a whole by
/// `connect_timeout`, not per connection.
async fn connect_share(
    plan: &Plan,
    index: usize,
    honest: bool,
    early: &mut ThreadStats,
) -> Vec<Ready> {
    let mut ready = Vec::new();
    let mine = (index..if honest { plan.conns } else { index }).step_by(plan.threads);
    let setup_end = Instant::now() + plan.connect_timeout;
    let left = || setup_end.saturating_duration_since(Instant::now());
    match plan.mode {
        Mode::Pairs => {
            for i in mine {
                let query = match (plan.resume, plan.acks) {
                    (_, true) => "?resume=0&events=1",
                    (true, false) => "?resume=0",
                    _ => "",
                };
                let route = format!("/v1/relay/load-{}-{i}{query}", plan.run_id);
                let pair = async {
                    let a = connect_one(&plan.target, &route, left()).await?;
                    let b = connect_one(plan.b(), &route, left()).await?;
                    Ok::<_, ClientError>((a, b))
                };
                match pair.await {
                    Ok((a, b)) => ready.push(Ready {
                        index: i,
                        a,
                        b: Some(b),
                    }),
                    Err(e) => {
                        early.connect_errors += 1;
                        early.error(1, || format!("pair {i}: {e}"));
                    }
                }
            }
        }
        Mode::Echo => {
            for i in mine {
                match connect_one(&plan.target, "/v1/echo", left()).await {
                    Ok(a) => ready.push(Ready {
                        index: i,
                        a,
                        b: None,
                    }),
                    Err(e) => {
                        early.connect_errors += 1;
                        early.error(1, || format!("echo connection {i}: {e}"));
                    }
                }
            }
        }
        Mode::Churn | Mode::Connect => {}
    }
    for r in &ready {
        early.setup.record(&r.a.setup, None);
        if let Some(b) = &r.b {
            early.setup.record(&b.setup, None);
        }
    }
    ready
}

/// The run's clock marks from the common start `t0`: (counting starts, senders stop, every
/// socket is cut). Count mode counts from the start and only has the hard deadline.
fn deadlines(plan: &Plan, t0: u64) -> (u64, u64, u64) {
    match plan.stop {
        Stop::Time { warmup, duration } => {
            let warm = t0 + warmup.as_nanos() as u64;
            let end = warm + duration.as_nanos() as u64;
            (warm, end, end + plan.drain.as_nanos() as u64)
        }
        Stop::Count { deadline, .. } => (t0, u64::MAX, t0 + deadline.as_nanos() as u64),
    }
}

/// Fixed rate needs wake-ups finer than monoio's millisecond timers: a thread of its own
/// writes each due sender's token to a socket. Without it the run goes on, less precise.
fn start_alarm(
    plan: &Plan,
    honest: bool,
    epoch: Instant,
) -> Option<(Rc<Alarm>, monoio::net::UnixStream)> {
    plan.rate.filter(|_| honest)?;
    match Alarm::start(epoch) {
        Ok((a, sock)) => Some((Rc::new(a), sock)),
        Err(e) => {
            eprintln!("load: no alarm thread ({e}); fixed-rate sends use millisecond timers");
            None
        }
    }
}

/// Starts the reader and writer of every connection set up before the start: a pair's
/// stream a→b (and b→a when both ways), an echo connection's stream to itself. Each stream's
/// phase spreads the fixed-rate senders evenly over one interval.
fn spawn_streams(ctx: &Rc<Ctx>, ready: Vec<Ready>) -> Vec<monoio::task::JoinHandle<()>> {
    let limit = match ctx.plan.stop {
        Stop::Count { messages, .. } => Some(messages),
        Stop::Time { .. } => None,
    };
    let window = ctx.plan.window;
    let dirs = if ctx.plan.both_ways { 2 } else { 1 };
    let senders = ctx.plan.senders() as f64;
    let mut tasks = Vec::new();
    for Ready { index: i, a, b } in ready {
        match b {
            Some(b) => {
                let (wa, wb) = (Rc::new(Signal::default()), Rc::new(Signal::default()));
                let ab = Stream::new(&wa, &wb, window, limit, (i * dirs) as f64 / senders);
                let ba = ctx
                    .plan
                    .both_ways
                    .then(|| Stream::new(&wb, &wa, window, limit, (i * dirs + 1) as f64 / senders));
                tasks.extend(spawn_conn(ctx, a, wa, Some(ab.clone()), ba.clone()));
                tasks.extend(spawn_conn(ctx, b, wb, ba, Some(ab)));
            }
            None => {
                let w = Rc::new(Signal::default());
                let s = Stream::new(&w, &w, window, limit, i as f64 / senders);
                tasks.extend(spawn_conn(ctx, a, w, Some(s.clone()), Some(s)));
            }
        }
    }
    tasks
}

/// The tasks that connect during the run rather than before it: churn cycles (this thread's
/// share of them) and the attackers assigned to this thread.
fn spawn_churn_and_attack(
    ctx: &Rc<Ctx>,
    index: usize,
    honest: bool,
    tasks: &mut Vec<monoio::task::JoinHandle<()>>,
) {
    if ctx.plan.mode == Mode::Churn && honest {
        for k in (index..ctx.plan.conns).step_by(ctx.plan.threads) {
            tasks.push(monoio::spawn(churn_loop(ctx.clone(), k)));
        }
    }
    if ctx.plan.mode == Mode::Connect && honest {
        for k in (index..ctx.plan.conns).step_by(ctx.plan.threads) {
            tasks.push(monoio::spawn(connect::connect_loop(ctx.clone(), k)));
        }
    }
    if let Some(a) = ctx.attack.clone() {
        for k in a.assigned(index, ctx.plan.threads) {
            tasks.push(monoio::spawn(attack_loop(ctx.clone(), k)));
        }
    }
}

/// Wakes the senders whose tokens the alarm thread writes.
async fn alarm_dispatch(ctx: Rc<Ctx>, mut sock: monoio::net::UnixStream) {
    use monoio::buf::IoBufMut;
    use monoio::io::AsyncReadRent;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let len = buf.len();
        let (res, slice) = sock.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        match res {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let whole = buf.len() / 4 * 4;
        let targets = ctx.alarm_targets.borrow();
        for token in buf[..whole].chunks_exact(4) {
            let token = u32::from_le_bytes(token.try_into().expect("4 bytes"));
            if let Some(s) = targets.get(token as usize) {
                s.notify();
            }
        }
        drop(targets);
        buf.drain(..whole);
    }
}

/// Stops the senders at the end and cuts every connection still open at the hard deadline.
async fn controller(ctx: Rc<Ctx>) {
    if ctx.end != u64::MAX {
        monoio::time::sleep_until(ctx.instant(ctx.end)).await;
        ctx.stopping.set(true);
        for c in ctx.live.borrow().values() {
            c.wake.notify();
        }
    }
    monoio::time::sleep_until(ctx.instant(ctx.hard)).await;
    ctx.aborted.set(true);
    let live: Vec<Rc<ConnCtl>> = ctx.live.borrow().values().cloned().collect();
    if !live.is_empty() {
        ctx.error(live.len() as u64, || {
            format!("{} connection(s) still open at the deadline", live.len())
        });
    }
    for c in live {
        if let Some(k) = c.kill.borrow().as_ref() {
            let _ = k.shutdown(std::net::Shutdown::Both);
        }
        c.wake.notify();
    }
}

/// Starts the reader and writer tasks of one connection.
fn spawn_conn(
    ctx: &Rc<Ctx>,
    conn: Connection,
    wake: Rc<Signal>,
    out: Option<Rc<Stream>>,
    inc: Option<Rc<Stream>>,
) -> [monoio::task::JoinHandle<()>; 2] {
    let id = ctx.next_id.get();
    ctx.next_id.set(id + 1);
    ctx.stats.borrow_mut().connections += 1;
    let alarm_token = match (&ctx.alarm, &out) {
        (Some(_), Some(_)) => {
            let mut t = ctx.alarm_targets.borrow_mut();
            t.push(wake.clone());
            Some(t.len() as u32 - 1)
        }
        _ => None,
    };
    let c = Rc::new(ConnCtl {
        id,
        alarm_token,
        wake,
        pong: Cell::new(None),
        peer_close: Cell::new(None),
        close_sent: Cell::new(false),
        reader_done: Cell::new(false),
        tasks_left: Cell::new(2),
        kill: RefCell::new(Some(conn.kill)),
        out,
        inc,
    });
    ctx.live.borrow_mut().insert(id, c.clone());
    [
        monoio::spawn(read_loop(ctx.clone(), c.clone(), conn.reader)),
        monoio::spawn(write_loop(ctx.clone(), c, conn.writer)),
    ]
}

/// Called by each of a connection's two tasks as it ends.
fn task_done(ctx: &Ctx, c: &ConnCtl) {
    c.tasks_left.set(c.tasks_left.get() - 1);
    if c.tasks_left.get() == 0 {
        c.kill.borrow_mut().take();
        ctx.live.borrow_mut().remove(&c.id);
    }
}

/// Puts as many messages as the mode allows into `w`; returns when the next one is due
/// (fixed rate) or `None` (wait for credits, or flush first).
fn fill(ctx: &Ctx, s: &Stream, w: &mut FrameWriter, seq: &mut u64) -> Option<u64> {
    let now = ctx.now_ns();
    let size = ctx.plan.size;
    let end = |w: &mut FrameWriter, seq: u64| {
        w.push_message(STAMP_LEN, END_FLAG | seq, now);
        s.end_sent.set(true);
    };
    // Nothing in here awaits, so the stats stay borrowed throughout.
    let mut st = ctx.stats.borrow_mut();
    loop {
        if s.limit.is_some_and(|l| *seq >= l) {
            end(w, *seq);
            break None;
        }
        if w.pending() >= MAX_BATCH {
            break None;
        }
        let ts = match ctx.interval {
            Some(iv) => {
                let due = ctx.t0 + ((*seq as f64 + s.phase) * iv) as u64;
                if s.limit.is_none() && due >= ctx.end {
                    end(w, *seq);
                    break None;
                }
                if due > now {
                    break Some(due);
                }
                due
            }
            None => {
                if s.limit.is_none() && (now >= ctx.end || ctx.stopping.get()) {
                    end(w, *seq);
                    break None;
                }
                if s.credits.get() == 0 {
                    break None;
                }
                s.credits.set(s.credits.get() - 1);
                now
            }
        };
        w.push_message(size, *seq, ts);
        *seq += 1;
        if ts >= ctx.warm {
            st.sent += 1;
            if ctx.interval.is_some() {
                st.lag.saturating_record(((now - ts) / 1000).max(1));
            }
        }
    }
}

async fn write_loop(ctx: Rc<Ctx>, c: Rc<ConnCtl>, mut w: FrameWriter) {
    let ws = ctx.plan.target.transport == Transport::WebSocket;
    let mut seq = 0u64;
    // The due time the alarm was last set for (one alarm per due time).
    let mut alarm_at = u64::MAX;
    loop {
        if ctx.aborted.get() {
            break;
        }
        if let Some(p) = c.pong.take() {
            w.push_control(OpCode::Pong, p.payload());
        }
        if let Some(code) = c.peer_close.get() {
            // The other end closes first: answer it and stop.
            if ws && !c.close_sent.get() {
                w.push_close(match code {
                    1005 => 1000,
                    c => c,
                });
                c.close_sent.set(true);
            }
            let _ = w.flush().await;
            break;
        }
        let mut due = None;
        if let Some(s) = c.out.as_ref().filter(|s| !s.end_sent.get()) {
            due = fill(&ctx, s, &mut w, &mut seq);
        }
        if c.streams_done() && !c.close_sent.get() {
            if ws {
                w.push_close(1000);
            }
            c.close_sent.set(true);
            if w.flush().await.is_ok() && ws {
                // Keep the socket open until the close answer has been read.
                while !c.reader_done.get() && !ctx.aborted.get() {
                    c.wake.wait().await;
                }
            }
            break;
        }
        if w.pending() > 0 {
            if let Err(e) = w.flush().await {
                if !ctx.aborted.get() {
                    ctx.error(1, || format!("write: {e}"));
                }
                break;
            }
            continue;
        }
        match (due, &ctx.alarm, c.alarm_token) {
            (Some(t), Some(alarm), Some(token)) => {
                if alarm_at != t {
                    alarm.set(t, token);
                    alarm_at = t;
                }
                c.wake.wait().await;
            }
            (Some(t), _, _) => {
                // Without the alarm thread: monoio's millisecond timer.
                let sleep = monoio::time::sleep_until(ctx.instant(t));
                monoio::select! {
                    _ = sleep => {},
                    _ = c.wake.wait() => {},
                }
            }
            (None, _, _) => c.wake.wait().await,
        }
    }
    // However this ended, what this side was sending is over.
    if let Some(s) = c.out.as_ref().filter(|s| !s.end_sent.get()) {
        s.end_sent.set(true);
        if !s.done.get() {
            ctx.error(1, || "a sender stopped before its end marker".into());
            s.finish();
        }
    }
    drop(w);
    task_done(&ctx, &c);
}

async fn read_loop(ctx: Rc<Ctx>, c: Rc<ConnCtl>, mut r: FrameReader) {
    let mut now = ctx.now_ns();
    loop {
        let mut delivered = 0;
        let mut stop = false;
        loop {
            match r.next_event() {
                Ok(None) => break,
                Ok(Some(Event::Message { len, stamp })) => {
                    delivered += on_message(&ctx, &c, len, &stamp, now);
                }
                Ok(Some(Event::Ping(p))) => {
                    c.pong.set(Some(p));
                    c.wake.notify();
                }
                Ok(Some(Event::Pong)) => {}
                Ok(Some(Event::Close(code))) => {
                    if !c.close_sent.get() {
                        if !c.streams_done() {
                            ctx.error(1, || {
                                format!("closed by the server with {code} before the end")
                            });
                        }
                        c.peer_close.set(Some(code));
                    }
                    stop = true;
                    break;
                }
                Err(e) => {
                    ctx.error(1, || format!("protocol: {e}"));
                    stop = true;
                    break;
                }
            }
        }
        if delivered > 0 {
            ctx.shared.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
        if stop {
            break;
        }
        match r.read_more().await {
            Ok(n) if n > 0 => now = ctx.now_ns(),
            res => {
                if !c.streams_done() && !ctx.aborted.get() {
                    let why = match res {
                        Err(e) => e.to_string(),
                        _ => "end of stream".to_string(),
                    };
                    ctx.error(1, || format!("connection lost before the end: {why}"));
                }
                break;
            }
        }
    }
    if c.inc.as_ref().is_some_and(|s| !s.ended.get()) {
        ctx.stats.borrow_mut().order.unfinished += 1;
    }
    if let Some(s) = c.inc.as_ref().filter(|s| !s.done.get()) {
        if !ctx.aborted.get() {
            ctx.error(1, || "a receiver stopped before the end marker".into());
        }
        s.finish();
    }
    c.reader_done.set(true);
    c.wake.notify();
    task_done(&ctx, &c);
}

/// Checks and records one received message; returns 1 if it was a load message.
fn on_message(ctx: &Ctx, c: &ConnCtl, len: u64, stamp: &[u8; STAMP_LEN], now: u64) -> u64 {
    let Some(s) = &c.inc else {
        ctx.error(1, || {
            "a message arrived on a connection that only sends".into()
        });
        return 0;
    };
    if len < STAMP_LEN as u64 {
        ctx.error(1, || {
            format!("a {len}-byte message is too short to be ours")
        });
        return 0;
    }
    let seq = u64::from_le_bytes(stamp[..8].try_into().expect("8 bytes"));
    let ts = u64::from_le_bytes(stamp[8..].try_into().expect("8 bytes"));
    if s.done.get() {
        ctx.error(1, || {
            format!("message {seq:#x} after the end of its stream")
        });
        return 0;
    }
    let next = s.next.get();
    if seq & END_FLAG != 0 {
        let total = seq & !END_FLAG;
        ctx.stats.borrow_mut().order.ended(total, next);
        if total != next {
            ctx.error(total.abs_diff(next), || {
                format!("stream ended after {total} messages; {next} arrived in order")
            });
        }
        let mut st = ctx.stats.borrow_mut();
        st.last_end_ns = st.last_end_ns.max(now);
        drop(st);
        s.clean.set(total == next);
        s.ended.set(true);
        s.finish();
        return 0;
    }
    if len != ctx.plan.size as u64 {
        ctx.error(1, || {
            format!("message {seq} is {len} bytes, not {}", ctx.plan.size)
        });
    }
    if seq != next {
        ctx.stats.borrow_mut().order.arrived(seq, next);
        if seq > next {
            ctx.error(seq - next, || format!("messages {next}..{seq} missing"));
        } else {
            ctx.error(1, || {
                format!("message {seq} out of order (expected {next})")
            });
        }
    }
    s.next.set(next.max(seq + 1));
    if ts >= ctx.warm {
        let mut st = ctx.stats.borrow_mut();
        st.delivered += 1;
        st.bytes += len;
        st.hist
            .saturating_record((now.saturating_sub(ts) / 1000).max(1));
    }
    if ctx.interval.is_none() {
        s.credits.set(s.credits.get() + 1);
        s.sender_wake.notify();
    }
    1
}

/// One attacker: attempts back to back from the start until `end` (warm-up included). An
/// attempt still under way then may finish, within the connect timeout and the hard deadline.
async fn attack_loop(ctx: Rc<Ctx>, k: usize) {
    let Some(a) = ctx.attack.clone() else { return };
    let target = &ctx.plan.target;
    let mut rng = Rng::new(ctx.rng.borrow_mut().next_u64() ^ k as u64);
    loop {
        let now = ctx.now_ns();
        if now >= ctx.end || ctx.aborted.get() {
            break;
        }
        let budget =
            Duration::from_nanos(ctx.hard.saturating_sub(now)).min(ctx.plan.connect_timeout);
        let route = format!("/v1/relay/flood-{:016x}", rng.next_u64());
        let outcome = monoio::time::timeout(budget, attack::attempt(target, a.source, &route))
            .await
            .unwrap_or_else(|_| Outcome::Error("timed out".into()));
        ctx.stats.borrow_mut().attack.record(&outcome);
        ctx.shared.attack_attempts.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::Error(_)) {
            // An error can come back without the attempt ever suspending (a connect refused
            // at once): let the honest tasks on this thread run before the next one.
            attack::yield_now().await;
        }
    }
}

/// Connects a pair, sends `churn_messages` (both ways if asked), closes both, again and again.
async fn churn_loop(ctx: Rc<Ctx>, k: usize) {
    let plan = ctx.plan.clone();
    let mut cycle = 0u64;
    loop {
        cycle += 1;
        let Some(Cycle {
            start,
            route,
            budget,
        }) = ctx.next_cycle('c', k, cycle)
        else {
            break;
        };
        let pair = async {
            let a = connect_one(&plan.target, &route, budget).await?;
            let b = connect_one(plan.b(), &route, budget).await?;
            Ok::<_, ClientError>((a, b))
        };
        let (a, b) = match pair.await {
            Ok(p) => p,
            Err(e) => {
                ctx.stats.borrow_mut().connect_errors += 1;
                ctx.error(1, || format!("churn {k} cycle {cycle}: {e}"));
                // Do not spin on a server that refuses.
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if start >= ctx.warm {
            let mut st = ctx.stats.borrow_mut();
            st.setup.record(&a.setup, None);
            st.setup.record(&b.setup, None);
        }
        let (wa, wb) = (Rc::new(Signal::default()), Rc::new(Signal::default()));
        let limit = Some(plan.churn_messages);
        let ab = Stream::new(&wa, &wb, plan.window, limit, 0.0);
        let ba = plan
            .both_ways
            .then(|| Stream::new(&wb, &wa, plan.window, limit, 0.0));
        let mut tasks = Vec::with_capacity(4);
        tasks.extend(spawn_conn(&ctx, a, wa, Some(ab.clone()), ba.clone()));
        tasks.extend(spawn_conn(&ctx, b, wb, ba.clone(), Some(ab.clone())));
        for t in tasks {
            t.await;
        }
        let clean = ab.clean.get() && ba.as_ref().is_none_or(|s| s.clean.get());
        if start >= ctx.warm && clean {
            ctx.stats.borrow_mut().cycles += 1;
        }
    }
}
