//! `--mode connect`: new connections per second. Each loop opens a connection (TCP connect,
//! the TLS handshake with `wss://`, the WebSocket upgrade on a session of its own), sends a
//! close frame, waits for the relay's close, and starts over at once. Every step is timed;
//! cycles that start after the warm-up count.
//!
//! The relay's close is waited for, so the relay closes its side first and the TIME_WAIT
//! state stays on its side, not on the client's ephemeral ports (as a browser that closes
//! its WebSocket does).

use super::{Ctx, Cycle};
use crate::load::client::{self, ClientError, Event, FrameReader, Setup};
use crate::load::report::{LatencySummary, SetupReport};
use hdrhistogram::Histogram;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Read buffer of a connect loop's connection: room for the upgrade answer and a close.
const READ_BUFFER: usize = 4096;
/// A loop's pause after a failed cycle, so a refusing server is reported, not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Histograms of each step of setting up a connection, in microseconds.
pub struct SetupStats {
    tcp: Histogram<u64>,
    tls: Histogram<u64>,
    upgrade: Histogram<u64>,
    /// Connect mode: the whole cycle, from connect to the relay's close.
    cycle: Histogram<u64>,
    /// The TLS version the last connection negotiated.
    pub tls_version: Option<&'static str>,
    /// Handshakes that resumed a session.
    pub tls_resumed: u64,
}

impl SetupStats {
    pub fn new() -> SetupStats {
        SetupStats {
            tcp: super::new_histogram(),
            tls: super::new_histogram(),
            upgrade: super::new_histogram(),
            cycle: super::new_histogram(),
            tls_version: None,
            tls_resumed: 0,
        }
    }

    pub fn record(&mut self, s: &Setup, cycle: Option<Duration>) {
        let us = |d: Duration| (d.as_micros() as u64).max(1);
        self.tcp.saturating_record(us(s.tcp));
        if let Some(t) = s.tls {
            self.tls.saturating_record(us(t));
        }
        self.tls_version = s.tls_version.or(self.tls_version);
        self.tls_resumed += u64::from(s.tls_resumed);
        self.upgrade.saturating_record(us(s.upgrade));
        if let Some(c) = cycle {
            self.cycle.saturating_record(us(c));
        }
    }

    pub fn merge(&mut self, o: &SetupStats) {
        let _ = self.tcp.add(&o.tcp);
        let _ = self.tls.add(&o.tls);
        let _ = self.upgrade.add(&o.upgrade);
        let _ = self.cycle.add(&o.cycle);
        self.tls_version = self.tls_version.or(o.tls_version);
        self.tls_resumed += o.tls_resumed;
    }

    /// `None` when no connection was set up.
    pub fn summary(&self) -> Option<SetupReport> {
        let of = |h: &Histogram<u64>| (!h.is_empty()).then(|| LatencySummary::of(h));
        Some(SetupReport {
            tcp_connect: of(&self.tcp)?,
            tls_handshake: of(&self.tls),
            upgrade: of(&self.upgrade)?,
            cycle: of(&self.cycle),
        })
    }
}

/// One loop of `--mode connect`, until the end of the measured time.
pub async fn connect_loop(ctx: Rc<Ctx>, k: usize) {
    let plan = ctx.plan.clone();
    let mut cycle = 0u64;
    loop {
        cycle += 1;
        let Some(Cycle {
            start,
            route,
            budget,
        }) = ctx.next_cycle('k', k, cycle)
        else {
            break;
        };
        let once = async {
            let mut c = client::connect(&plan.target, &route, READ_BUFFER).await?;
            c.writer.push_close(1000);
            c.writer.flush().await?;
            wait_close(&mut c.reader).await?;
            c.writer.close_tls().await;
            Ok::<Setup, ClientError>(c.setup)
        };
        let result = monoio::time::timeout(budget, once)
            .await
            .unwrap_or(Err(ClientError::Timeout));
        let setup = match result {
            Ok(s) => s,
            Err(e) => {
                ctx.stats.borrow_mut().connect_errors += 1;
                ctx.error(1, || format!("connect {k} cycle {cycle}: {e}"));
                monoio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        ctx.stats.borrow_mut().connections += 1;
        if start >= ctx.warm {
            let took = Duration::from_nanos(ctx.now_ns() - start);
            let mut st = ctx.stats.borrow_mut();
            st.cycles += 1;
            st.setup.record(&setup, Some(took));
            drop(st);
            ctx.shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads until the relay's close frame (whatever came before it: an event the relay sends a
/// peer that joins) or the end of the stream.
async fn wait_close(r: &mut FrameReader) -> Result<(), ClientError> {
    loop {
        loop {
            match r.next_event() {
                Ok(Some(Event::Close(_))) => return Ok(()),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    return Err(ClientError::BadAnswer(
                        "the relay broke the WebSocket protocol before its close",
                    ))
                }
            }
        }
        if r.read_more().await? == 0 {
            return Ok(());
        }
    }
}
