//! The systemd watchdog and status line, kept by the main thread while the workers run.
//!
//! Each worker's tick stamps its heartbeat (`CoreGauges::beat`, one relaxed store a tick, off
//! the forwarding path). This thread looks at the stamps a few times per watchdog interval
//! and sends `WATCHDOG=1` only while every worker stamped recently; a worker whose tick has
//! not run for `stale_after` (its thread blocked, or one task never yielding) stops the pings,
//! is logged by index, and systemd restarts the service once `WatchdogSec=` passes without
//! one. `STATUS=` tells `systemctl status` the connections and sessions, when they change.

use super::Running;
use crate::context::Shared;
use sd_notify::NotifyState;
use std::time::{Duration, Instant};

/// How often the status line is refreshed (when the figures changed) without a watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// Stands for the watchdog interval when systemd asked for none.
const UNWATCHED: Duration = Duration::from_secs(20);
/// How often the main thread wakes to see whether the workers have finished.
const POLL: Duration = Duration::from_millis(100);

/// The watchdog interval systemd asks for: `WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` names it or is unset (as libsystemd's `sd_watchdog_enabled` reads them).
pub fn interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => {}
        Some(Ok(p)) if p == me => {}
        Some(_) => return None,
    }
    Some(Duration::from_micros(usec))
}

/// How long a worker may go without a tick before it counts as stuck: half the watchdog
/// interval (systemd's advice for the ping period), but never under four ticks, so a tick
/// that is merely late on a busy machine does not stop the pings.
pub fn stale_after(watchdog: Duration, tick: Duration) -> Duration {
    (watchdog / 2).max(tick * 4)
}

/// The first worker whose last stamp (ms since start) is older than `stale_ms` at `now_ms`,
/// with how long ago it stamped.
pub fn stuck_worker(beats: &[u64], now_ms: u64, stale_ms: u64) -> Option<(usize, u64)> {
    beats
        .iter()
        .map(|b| now_ms.saturating_sub(*b))
        .enumerate()
        .find(|(_, age)| *age > stale_ms)
}

/// The `STATUS=` text.
pub fn status_line(
    connections: u64,
    sessions: u64,
    workers: usize,
    stuck: Option<usize>,
) -> String {
    let mut s = format!("{connections} connections, {sessions} sessions on {workers} workers");
    if let Some(w) = stuck {
        s.push_str(&format!(
            "; worker {w} is not ticking (watchdog pings stopped)"
        ));
    }
    s
}

/// What the supervisor remembers between looks.
struct Supervisor {
    watchdog: Option<Duration>,
    stale_ms: u64,
    stuck: Option<usize>,
    status: String,
}

impl Supervisor {
    fn look(&mut self, shared: &Shared) {
        let now_ms = shared.started.elapsed().as_millis() as u64;
        let beats: Vec<u64> = shared.gauges.iter().map(|g| g.last_beat_ms()).collect();
        let stuck = stuck_worker(&beats, now_ms, self.stale_ms);
        match (stuck, self.stuck) {
            (Some((w, age)), was) if was != Some(w) => tracing::error!(
                worker = w,
                since_ms = age,
                "worker stuck: its tick has not run; the systemd watchdog is no longer pinged"
            ),
            (None, Some(w)) => {
                tracing::warn!(worker = w, "worker ticks again; watchdog pings resume")
            }
            _ => {}
        }
        self.stuck = stuck.map(|(w, _)| w);
        if self.watchdog.is_some() && stuck.is_none() {
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
        }
        let (conns, sessions) = shared
            .gauges
            .iter()
            .fold((0, 0), |(c, s), g| (c + g.connections(), s + g.sessions()));
        let status = status_line(conns, sessions, shared.workers(), self.stuck);
        if status != self.status {
            let _ = sd_notify::notify(false, &[NotifyState::Status(&status)]);
            self.status = status;
        }
    }
}

/// Runs until every worker has finished: pings the watchdog (when systemd asked for one) and
/// refreshes the status line. The caller joins the workers afterwards.
pub fn supervise(running: &Running) {
    let shared = &running.shared;
    let me = std::process::id();
    let env = |k: &str| std::env::var(k).ok();
    let watchdog = interval(
        env("WATCHDOG_USEC").as_deref(),
        env("WATCHDOG_PID").as_deref(),
        me,
    );
    let tick = crate::relay::keepalive::period_of(&shared.config);
    // Without a watchdog a stuck worker is still logged and shown in the status line.
    let stale = stale_after(watchdog.unwrap_or(UNWATCHED), tick);
    // Ping four times an interval: a ping delayed by a busy machine still lands in time.
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 4).max(POLL));
    if let Some(w) = watchdog {
        tracing::info!(
            interval_ms = w.as_millis() as u64,
            stale_ms = stale.as_millis() as u64,
            "systemd watchdog on"
        );
    }
    let mut sup = Supervisor {
        watchdog,
        stale_ms: stale.as_millis() as u64,
        stuck: None,
        status: String::new(),
    };
    let mut next = Instant::now();
    while !running.finished() {
        if Instant::now() >= next {
            sup.look(shared);
            next = Instant::now() + every;
        }
        std::thread::sleep(POLL.min(every));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_ours_only_when_the_pid_is_ours_or_unset() {
        let s = Some("2000000");
        assert_eq!(interval(s, None, 7), Some(Duration::from_secs(2)));
        assert_eq!(interval(s, Some("7"), 7), Some(Duration::from_secs(2)));
        assert_eq!(interval(s, Some("8"), 7), None);
        assert_eq!(interval(s, Some("x"), 7), None);
        assert_eq!(interval(None, Some("7"), 7), None);
        assert_eq!(interval(Some("0"), None, 7), None);
        assert_eq!(interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn stale_is_half_the_interval_but_at_least_four_ticks() {
        let ms = Duration::from_millis;
        assert_eq!(stale_after(ms(30_000), ms(1_000)), ms(15_000));
        assert_eq!(stale_after(ms(2_000), ms(1_000)), ms(4_000));
        assert_eq!(stale_after(ms(2_000), ms(100)), ms(1_000));
    }

    #[test]
    fn the_first_worker_past_the_limit_is_named() {
        assert_eq!(stuck_worker(&[900, 950], 1_000, 500), None);
        assert_eq!(stuck_worker(&[900, 100, 0], 1_000, 500), Some((1, 900)));
        // A stamp taken after `now` was read (a race) is not stale, nor is an ended worker's.
        assert_eq!(stuck_worker(&[1_200], 1_000, 0), None);
        assert_eq!(stuck_worker(&[u64::MAX, 0], 1_000, 500), Some((1, 1_000)));
        assert_eq!(stuck_worker(&[], 1_000, 0), None);
    }

    #[test]
    fn status_names_the_figures_and_a_stuck_worker() {
        assert_eq!(
            status_line(3, 2, 4, None),
            "3 connections, 2 sessions on 4 workers"
        );
        assert!(status_line(0, 0, 2, Some(1))
            .ends_with("worker 1 is not ticking (watchdog pings stopped)"));
    }
}
