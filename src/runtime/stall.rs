//! Debug builds only: makes one worker stall, so the tests can show the systemd watchdog stop
//! pinging (tests/watchdog.rs). `RR_DEBUG_STALL=WORKER:AFTER_MS:FOR_MS` blocks that worker's
//! thread, once, for FOR_MS at its first tick AFTER_MS after start. Release builds do not
//! compile it in, whatever the environment says. (Not a `RINGRELAY_*` name: those are config
//! keys, and an unknown one is reported as ignored.)
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

/// The variable's name.
pub const VAR: &str = "RR_DEBUG_STALL";

/// Which worker stalls, from when (ms after start) and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub worker: usize,
    pub after_ms: u64,
    pub for_ms: u64,
}

/// `WORKER:AFTER_MS:FOR_MS`.
pub fn parse(v: &str) -> Option<Plan> {
    let mut it = v.trim().split(':').map(|p| p.trim().parse::<u64>().ok());
    let plan = Plan {
        worker: it.next()?? as usize,
        after_ms: it.next()??,
        for_ms: it.next()??,
    };
    it.next().is_none().then_some(plan)
}

thread_local! {
    static DONE: Cell<bool> = const { Cell::new(false) };
}

/// Called by each worker's tick with its index and the tick's time (ms since start).
pub fn maybe(worker: usize, now_ms: u64) {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    let plan = PLAN.get_or_init(|| std::env::var(VAR).ok().and_then(|v| parse(&v)));
    let Some(p) = plan else { return };
    if p.worker != worker || now_ms < p.after_ms || DONE.with(|d| d.replace(true)) {
        return;
    }
    tracing::warn!(
        worker,
        ms = p.for_ms,
        "{VAR}: stalling this worker's thread"
    );
    std::thread::sleep(Duration::from_millis(p.for_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_three_numbers_only() {
        assert_eq!(
            parse("1:1500:2500"),
            Some(Plan {
                worker: 1,
                after_ms: 1500,
                for_ms: 2500
            })
        );
        assert_eq!(parse("1:1500"), None);
        assert_eq!(parse("1:1500:2500:9"), None);
        assert_eq!(parse("a:1:2"), None);
    }
}
