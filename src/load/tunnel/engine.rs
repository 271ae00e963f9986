//! The three tunnel tests (see the module's doc), on `--threads` monoio runtimes.

use crate::config::DriverChoice;
use crate::load::alarm::Clock;
use crate::load::engine::{new_histogram, EngineError};
use crate::load::report::LatencySummary;
use crate::runtime::driver;
use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use serde::Serialize;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes per read.
const READ_BUF: usize = 64 << 10;
/// A loop's pause after a failure, so a dead tunnel is reported rather than spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelTest {
    Bulk,
    Connect,
    Rr,
}

#[derive(Debug, Clone)]
pub struct TunnelPlan {
    pub target: SocketAddr,
    pub test: TunnelTest,
    pub connections: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// `rr`: requests per second over all connections.
    pub rate: Option<f64>,
    /// Longest one step (connect, a round trip) may take before it counts as an error.
    pub timeout: Duration,
    pub threads: usize,
    pub driver: DriverChoice,
}

#[derive(Debug, Clone, Serialize)]
pub struct TunnelReport {
    pub mode: &'static str,
    pub test: TunnelTest,
    pub target: String,
    pub connections: usize,
    pub size: usize,
    pub seconds: f64,
    /// `bulk`: echoed bytes read in the measured time.
    pub bytes: u64,
    pub mb_per_s: f64,
    /// `connect`: cycles done; `rr`: round trips done.
    pub ops: u64,
    pub ops_per_s: f64,
    /// `connect`: one cycle; `rr`: one round trip (from when it was due with --rate), in µs.
    pub latency_us: LatencySummary,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

/// What one thread counted in the measured time.
struct Tally {
    bytes: u64,
    ops: u64,
    errors: u64,
    samples: Vec<String>,
    hist: Histogram<u64>,
}

impl Tally {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.samples.len() < 5 {
            self.samples.push(e.to_string());
        }
    }
}

/// The run's clock: counting starts at `from` and stops at `end`.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    end: Instant,
}

impl Window {
    fn counts(&self, t: Instant) -> bool {
        t >= self.from && t < self.end
    }
}

/// Runs the plan and reports.
pub fn run(plan: &TunnelPlan) -> Result<TunnelReport, EngineError> {
    let drv = driver::resolve(plan.driver).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let start = Instant::now() + Duration::from_millis(50);
    let window = Window {
        from: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    };
    let threads: Vec<_> = (0..plan.threads)
        .map(|t| {
            let plan = plan.clone();
            let mine = (t..plan.connections).step_by(plan.threads).count();
            std::thread::spawn(move || {
                let tally = Rc::new(RefCell::new(Tally {
                    bytes: 0,
                    ops: 0,
                    errors: 0,
                    samples: Vec::new(),
                    hist: new_histogram(),
                }));
                let t2 = tally.clone();
                driver::block_on(drv, async move { thread(&plan, mine, window, t2).await })
                    .map(|()| Rc::try_unwrap(tally).ok().map(RefCell::into_inner))
            })
        })
        .collect();
    let mut all = Tally {
        bytes: 0,
        ops: 0,
        errors: 0,
        samples: Vec::new(),
        hist: new_histogram(),
    };
    for t in threads {
        let got = t
            .join()
            .map_err(|_| EngineError::Invalid("a load thread panicked".into()))?
            .map_err(|e| EngineError::Invalid(format!("runtime: {e}")))?;
        if let Some(t) = got {
            all.bytes += t.bytes;
            all.ops += t.ops;
            all.errors += t.errors;
            all.samples.extend(t.samples);
            let _ = all.hist.add(&t.hist);
        }
    }
    all.samples.truncate(5);
    let secs = plan.duration.as_secs_f64();
    Ok(TunnelReport {
        mode: "tunnel",
        test: plan.test,
        target: plan.target.to_string(),
        connections: plan.connections,
        size: plan.size,
        seconds: secs,
        bytes: all.bytes,
        mb_per_s: all.bytes as f64 / secs / 1e6,
        ops: all.ops,
        ops_per_s: all.ops as f64 / secs,
        latency_us: LatencySummary::of(&all.hist),
        errors: all.errors,
        error_samples: all.samples,
    })
}

/// One thread's share: `n` connections or loops, until the window ends (plus a moment).
async fn thread(plan: &TunnelPlan, n: usize, window: Window, tally: Rc<RefCell<Tally>>) {
    let clock = match plan.rate {
        Some(_) if plan.test == TunnelTest::Rr => match Clock::start(n) {
            Ok(c) => Some(c),
            Err(e) => return tally.borrow_mut().error(format!("alarm thread: {e}")),
        },
        _ => None,
    };
    let mut tasks = Vec::new();
    for i in 0..n {
        let (plan, tally, clock) = (plan.clone(), tally.clone(), clock.clone());
        tasks.push(monoio::spawn(async move {
            match plan.test {
                TunnelTest::Bulk => bulk(&plan, window, &tally).await,
                TunnelTest::Connect => connect_loop(&plan, window, &tally).await,
                TunnelTest::Rr => rr(&plan, (i, n), window, &tally, clock.as_deref()).await,
            }
        }));
    }
    for t in tasks {
        let _ = monoio::time::timeout(plan.timeout + Duration::from_secs(1), t).await;
    }
}

async fn dial(plan: &TunnelPlan) -> std::io::Result<TcpStream> {
    let s = monoio::time::timeout(plan.timeout, TcpStream::connect_addr(plan.target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn bulk(plan: &TunnelPlan, window: Window, tally: &Rc<RefCell<Tally>>) {
    let conn = match dial(plan).await {
        Ok(c) => c,
        Err(e) => return tally.borrow_mut().error(e),
    };
    let (mut rd, mut wr) = conn.into_split();
    let chunk: Vec<u8> = (0..plan.size).map(|i| i as u8).collect();
    let end = window.end;
    let writer = monoio::spawn(async move {
        let mut chunk = chunk;
        while Instant::now() < end {
            let (r, c) = wr.write_all(chunk).await;
            chunk = c;
            if r.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = Vec::with_capacity(READ_BUF);
    loop {
        buf.clear();
        let read = monoio::time::timeout(plan.timeout, rd.read(buf)).await;
        let Ok((r, b)) = read else {
            tally.borrow_mut().error("bulk: no echo within the timeout");
            break;
        };
        buf = b;
        match r {
            Ok(0) => break,
            Ok(n) if window.counts(Instant::now()) => tally.borrow_mut().bytes += n as u64,
            Ok(_) => {}
            Err(e) => {
                tally.borrow_mut().error(e);
                break;
            }
        }
    }
    let _ = writer.await;
}

/// Writes `msg` and reads as many bytes back.
async fn round_trip<S: AsyncReadRent + AsyncWriteRent>(
    s: &mut S,
    msg: Vec<u8>,
    buf: Vec<u8>,
) -> (std::io::Result<()>, Vec<u8>, Vec<u8>) {
    let want = msg.len();
    let (r, msg) = s.write_all(msg).await;
    if let Err(e) = r {
        return (Err(e), msg, buf);
    }
    let mut buf = buf;
    let mut got = 0;
    while got < want {
        buf.clear();
        let (r, b) = s.read(buf).await;
        buf = b;
        match r {
            Ok(0) => return (Err(std::io::ErrorKind::UnexpectedEof.into()), msg, buf),
            Ok(n) => got += n,
            Err(e) => return (Err(e), msg, buf),
        }
    }
    (Ok(()), msg, buf)
}

async fn connect_loop(plan: &TunnelPlan, window: Window, tally: &Rc<RefCell<Tally>>) {
    let mut msg: Vec<u8> = vec![b'c'; plan.size.max(1)];
    let mut buf = Vec::with_capacity(READ_BUF);
    while Instant::now() < window.end {
        let t0 = Instant::now();
        let cycle = async {
            let mut s = dial(plan).await?;
            let (r, m, b) =
                round_trip(&mut s, std::mem::take(&mut msg), std::mem::take(&mut buf)).await;
            (msg, buf) = (m, b);
            r
        };
        match monoio::time::timeout(plan.timeout, cycle).await {
            Ok(Ok(())) => {
                let done = Instant::now();
                if window.counts(t0) && done < window.end {
                    let mut t = tally.borrow_mut();
                    t.ops += 1;
                    let _ = t.hist.record((done - t0).as_micros().max(1) as u64);
                }
            }
            Ok(Err(e)) => {
                tally.borrow_mut().error(e);
                monoio::time::sleep(ERROR_PAUSE).await;
            }
            Err(_) => tally.borrow_mut().error("connect cycle timed out"),
        }
        if msg.is_empty() {
            msg = vec![b'c'; plan.size.max(1)];
        }
    }
}

async fn rr(
    plan: &TunnelPlan,
    (index, of): (usize, usize),
    window: Window,
    tally: &Rc<RefCell<Tally>>,
    clock: Option<&Clock>,
) {
    let mut conn = match dial(plan).await {
        Ok(c) => c,
        Err(e) => return tally.borrow_mut().error(e),
    };
    // Each connection's own schedule, offset so they do not all fire at once.
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.connections as f64 / r));
    let offset = interval.map_or(Duration::ZERO, |i| i.mul_f64(index as f64 / of as f64));
    let mut due = Instant::now() + offset;
    let mut msg: Vec<u8> = vec![b'r'; plan.size.max(1)];
    let mut buf = Vec::with_capacity(READ_BUF);
    while due < window.end {
        if let Some(clock) = clock {
            clock.until(index, due).await;
        } else {
            due = Instant::now();
        }
        let trip = round_trip(&mut conn, msg, buf);
        let Ok((r, m, b)) = monoio::time::timeout(plan.timeout, trip).await else {
            return tally.borrow_mut().error("round trip timed out");
        };
        (msg, buf) = (m, b);
        if let Err(e) = r {
            return tally.borrow_mut().error(e);
        }
        let done = Instant::now();
        if window.counts(due) {
            let mut t = tally.borrow_mut();
            t.ops += 1;
            let _ = t.hist.record((done - due).as_micros().max(1) as u64);
        }
        if let Some(i) = interval {
            due += i;
        }
    }
}

impl TunnelReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    pub fn to_text(&self) -> String {
        let l = &self.latency_us;
        format!(
            "tunnel {:?} to {}: {} connections, {} B, {:.1} s\n  {:.1} MB/s, {:.0} ops/s ({} ops), errors {}\n  latency µs: p50 {} p95 {} p99 {} p99.9 {} max {}\n",
            self.test, self.target, self.connections, self.size, self.seconds,
            self.mb_per_s, self.ops_per_s, self.ops, self.errors,
            l.p50, l.p95, l.p99, l.p999, l.max
        )
    }
}
