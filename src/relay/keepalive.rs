//! One coarse tick per core drives every timer: pings, dead peers, unanswered closes, idle
//! sessions, stuck writes (carried links' included) and the bounds on buffers blocked writes
//! hold (`relay::blocked`). Nothing is armed per message or per connection.

use super::blocked;
use crate::context::Core;
use crate::session::{Flag, Peer};
use crate::stats::bump;
use crate::ws::{CloseCode, OpCode};
use std::rc::Rc;
use std::time::Duration;

/// The tick is a quarter of the shortest timer, between 50 ms and 1 s.
pub fn tick_period(core: &Core) -> Duration {
    period_of(&core.config())
}

/// The tick's period for a config (the watchdog's supervisor reads it too).
pub fn period_of(cfg: &crate::config::Config) -> Duration {
    let s = &cfg.session;
    let shortest = s
        .ping_interval
        .min(s.peer_timeout)
        .min(s.idle_timeout)
        .min(s.close_timeout)
        .min(cfg.limits.write_timeout);
    (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Stamps a write the tick sees for the first time; true once one has waited `write_ms`.
fn write_stuck(p: &Peer, now: u64, write_ms: u64) -> bool {
    !p.flags.get(Flag::DROPPED)
        && p.write_pending_since(now)
            .is_some_and(|since| now.saturating_sub(since) >= write_ms)
}

pub async fn run(core: Rc<Core>) {
    let period = tick_period(&core);
    let cfg = &core.shared.config.session;
    let ping_ms = cfg.ping_interval.as_millis() as u64;
    let peer_timeout_ms = cfg.peer_timeout.as_millis() as u64;
    let idle_ms = cfg.idle_timeout.as_millis() as u64;
    let close_ms = cfg.close_timeout.as_millis() as u64;
    // Ends blocked writes at once when the pool runs low, between ticks.
    monoio::spawn(blocked::guard(core.clone()));
    let mut trim = Trim::default();
    loop {
        monoio::time::sleep(period).await;
        let now = core.clock.tick();
        crate::stats::access::flush(&core.stats);
        core.gauges().beat(now);
        let s = &core.stats;
        core.gauges()
            .sample_tunnel_bytes(s.tunnel_bytes_in.get() + s.tunnel_bytes_out.get(), now);
        #[cfg(debug_assertions)]
        crate::runtime::stall::maybe(core.index, now);
        // A reload may change the write timeout (the session timers and the tick's period
        // stay as they started: config::FIXED_KEYS).
        let write_ms = core.config().limits.write_timeout.as_millis() as u64;
        if core.registry.park.requested() || core.registry.park.released() {
            // A binary upgrade holds the connections still (relay::handover): none is
            // written to, timed out or closed until it is settled.
            continue;
        }
        let mut blocked = blocked::Scan::new(&core);
        for p in core.registry.peers() {
            if write_stuck(&p, now, write_ms) {
                // It stopped reading: its sender's write fails at once and the sender stays.
                bump(&core.stats.peers_dropped_write_timeout, 1);
                p.drop_stuck();
            }
            blocked.look(&p, now);
            if p.flags.get(Flag::DROPPED) {
                continue;
            }
            if let Some(since) = p.closing_since() {
                if now.saturating_sub(since) >= close_ms {
                    p.sock.abort();
                }
            } else if now.saturating_sub(p.last_recv_ms.get()) >= peer_timeout_ms {
                bump(&core.stats.peers_dropped_keepalive, 1);
                p.close_code.set(Some(1006));
                p.sock.abort();
            } else if now.saturating_sub(p.last_ping_ms.get()) >= ping_ms {
                p.last_ping_ms.set(now);
                bump(&core.stats.pings_sent, 1);
                monoio::spawn(async move {
                    let _ = p.send_control(OpCode::Ping, b"").await;
                });
            }
        }
        // Carried links (cluster mode): the same write timeout and bounds, both directions.
        for c in core.cluster_local.carried() {
            c.expire_writes(&core, now, write_ms);
            blocked.look_carry(&c, now);
        }
        blocked.enforce(&core, false);
        super::away::expire(&core, now);
        for s in core.registry.sessions() {
            if s.is_empty() {
                continue;
            }
            if now.saturating_sub(s.last_activity_ms.get()) >= idle_ms {
                s.last_activity_ms.set(now);
                bump(&core.stats.sessions_idle_closed, 1);
                for p in s.peers() {
                    monoio::spawn(
                        async move { p.close(CloseCode::IDLE, "session idle", now).await },
                    );
                }
            }
        }
        if trim.due(core.registry.peer_count(), core.pool.allocated.get(), now) {
            bump(&core.stats.memory_trims, 1);
            bump(&core.stats.memory_trims_settled, u64::from(trim.settled));
            core.registry.trim();
            core.pool.shed_idle();
            crate::runtime::chunk::give_back_freed_memory();
        }
    }
}

/// When a core gives its allocator's freed pages back: after its open connections fell by a
/// quarter of their peak (at least [`Trim::MIN_DROP`]), or after the pool freed a burst of
/// read buffers it allocated past its idle keep. Otherwise a core that went quiet after a
/// storm keeps the storm's peak resident (runtime::chunk::give_back_freed_memory). At most
/// once a tick, so steady churn costs one heap walk a tick at worst.
///
/// And once more when a storm is over (nothing moved for [`Trim::SETTLE_MS`]):
/// - after a trim for a fall or a burst of buffers: what was freed after the tick saw the
///   connections gone (their tasks' last steps, the read buffers their ends took and put back
///   in the pool, blocks of this core's heap another core freed, which wait in their pages
///   until this core collects them) would otherwise stay resident for good, since nothing
///   falls any more;
/// - after the open connections grew by [`Trim::MIN_DROP`]: a storm of upgrades leaves the
///   pool's kept buffers and the handshakes' freed pages behind it, which the connections now
///   idle do not need.
#[derive(Default)]
struct Trim {
    /// Most connections open since the last trim.
    peak: usize,
    /// The pool's count of buffers allocated (not reused) at the last trim.
    allocated: u64,
    /// Open connections at the last trim.
    open_at_trim: usize,
    /// A trim for a fall or for buffers asks for a follow-up once the storm settled.
    follow_up: bool,
    /// The last trim was for a storm that was over (`memory_trims_settled`), not for a fall
    /// or for buffers.
    settled: bool,
    /// The open count and the buffers allocated at the last tick, and since when (clock ms)
    /// neither moved.
    last: (usize, u64),
    still_since: u64,
}

impl Trim {
    const MIN_DROP: usize = 256;
    /// Buffers allocated past the pool's free list since the last trim (each freed again
    /// when returned past the keep) that make a trim worth it: 64 of 64 KiB are 4 MiB.
    const MIN_BUFFERS: u64 = 64;
    /// How long nothing must move before a storm counts as over: longer than a close
    /// storm's last connections take to finish (each reads its end and drops), short next to
    /// an operator's look at RSS (scripts/idle_memory.py reads it 3 s after the last close).
    const SETTLE_MS: u64 = 1000;

    fn due(&mut self, open: usize, allocated: u64, now: u64) -> bool {
        if self.last != (open, allocated) {
            self.last = (open, allocated);
            self.still_since = now;
        }
        self.peak = self.peak.max(open);
        let fell = self.peak - open >= Self::MIN_DROP.max(self.peak / 4);
        let buffers = allocated.saturating_sub(self.allocated) >= Self::MIN_BUFFERS;
        let settled = now.saturating_sub(self.still_since) >= Self::SETTLE_MS;
        let grew = open >= self.open_at_trim + Self::MIN_DROP;
        let quiet = settled && (self.follow_up || grew);
        if fell || buffers || quiet {
            self.peak = open;
            self.allocated = allocated;
            self.open_at_trim = open;
            self.follow_up = fell || buffers;
            self.settled = !self.follow_up;
        }
        fell || buffers || quiet
    }
}

#[cfg(test)]
mod tests {
    use super::Trim;

    impl Trim {
        fn due_at0(&mut self, open: usize, allocated: u64) -> bool {
            self.due(open, allocated, 0)
        }
    }

    #[test]
    fn trims_after_a_fall_from_the_peak_not_while_growing_or_wobbling() {
        let mut t = Trim::default();
        assert!(!t.due_at0(1000, 0), "growing");
        assert!(!t.due_at0(10_000, 0), "growing");
        assert!(!t.due_at0(9_000, 0), "a tenth below the peak");
        assert!(t.due_at0(7_000, 0), "a quarter below the peak");
        assert!(!t.due_at0(7_000, 0), "once per fall");
        assert!(!t.due_at0(6_900, 0));
        assert!(t.due_at0(0, 0), "all closed");
        assert!(!t.due_at0(0, 0));
        // Few connections: a fall of fewer than MIN_DROP is not worth a heap walk.
        assert!(!t.due_at0(200, 0));
        assert!(!t.due_at0(0, 0));
    }

    #[test]
    fn trims_after_a_burst_of_buffers_beyond_the_pool() {
        let mut t = Trim::default();
        assert!(!t.due_at0(10, 63));
        assert!(t.due_at0(10, 64));
        assert!(!t.due_at0(10, 100));
        assert!(t.due_at0(10, 128));
    }

    #[test]
    fn a_storm_that_is_over_gets_one_more_trim() {
        let settle = Trim::SETTLE_MS;
        let mut t = Trim::default();
        assert!(!t.due(10_000, 0, 0), "growing");
        assert!(t.due(0, 0, 100), "all closed");
        assert!(
            !t.due(0, 0, 100 + settle - 1),
            "not before the storm settled"
        );
        assert!(
            t.due(0, 0, 100 + settle),
            "what was freed after the first trim"
        );
        assert!(!t.due(0, 0, 100 + 2 * settle), "once, not every tick after");
        assert!(!t.due(0, 0, 100 + 10 * settle));
        // A storm of upgrades, then quiet: the handshakes' leftovers.
        assert!(!t.due(300, 0, 5_000));
        assert!(!t.due(300, 0, 5_000 + settle - 1));
        assert!(
            t.due(300, 0, 5_000 + settle),
            "grew by MIN_DROP, then still"
        );
        assert!(!t.due(300, 0, 5_000 + 2 * settle));
        assert!(!t.due(500, 0, 9_000));
        assert!(!t.due(500, 0, 9_000 + settle), "grew by less than MIN_DROP");
        // A burst of pool buffers is followed up too.
        assert!(t.due(500, 64, 20_000));
        assert!(t.due(500, 64, 20_000 + settle));
        assert!(!t.due(500, 64, 20_000 + 2 * settle));
        // Still moving: the follow-up waits until nothing moved for SETTLE_MS.
        assert!(!t.due(5_000, 64, 30_000));
        assert!(t.due(0, 64, 30_100), "fell");
        assert!(!t.due(3_000, 64, 30_500));
        assert!(!t.due(3_000, 64, 30_500 + settle - 1));
        assert!(t.due(3_000, 64, 30_500 + settle));
        assert!(!t.due(3_000, 64, 30_500 + 5 * settle));
    }
}
