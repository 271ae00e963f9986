//! What the binary upgrades (SIGUSR2, docs/upgrade.md) came to. Counts run across processes:
//! the old process hands its totals to the new one in the upgrade's `hello`, so /stats of the
//! process serving now counts every upgrade since the first start. Written by the upgrade's
//! thread, read by scrapes: off every forwarding path, so a mutex is fine.

use serde_json::{json, Value};
use std::sync::Mutex;

/// The totals one process hands the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Upgrades that completed: the new process took over.
    pub upgrades: u64,
    /// Upgrades that failed: the new process was stopped and the old one carried on.
    pub failed: u64,
    /// Connections the new processes adopted, over all upgrades.
    pub handed_over: u64,
}

#[derive(Debug, Clone, Default)]
struct Figures {
    totals: Totals,
    /// The last completed handover: from `hello` read to every worker adopted and listening.
    last_ms: u64,
    last_unix: u64,
    last_error: Option<String>,
}

#[derive(Default)]
pub struct UpgradeStats {
    figures: Mutex<Figures>,
}

impl UpgradeStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Figures> {
        // A poisoned lock only means a panic elsewhere mid-write of plain data.
        self.figures.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn totals(&self) -> Totals {
        self.lock().totals
    }

    /// This process is the new one of an upgrade: it continues the old one's totals and
    /// counts the upgrade that started it, which adopted `connections` in `ms`.
    pub fn took_over(&self, before: Totals, connections: u64, ms: u64, unix_s: u64) {
        let mut f = self.lock();
        f.totals = Totals {
            upgrades: before.upgrades + 1,
            failed: before.failed,
            handed_over: before.handed_over + connections,
        };
        f.last_ms = ms;
        f.last_unix = unix_s;
    }

    /// An upgrade this process started failed; it carries on.
    pub fn failed(&self, unix_s: u64, why: &str) {
        let mut f = self.lock();
        f.totals.failed += 1;
        f.last_unix = unix_s;
        f.last_error = Some(why.to_string());
    }

    /// The `upgrade` object of /stats.
    pub fn json(&self) -> Value {
        let f = self.lock().clone();
        json!({
            "upgrades": f.totals.upgrades,
            "upgrades_failed": f.totals.failed,
            "connections_handed_over": f.totals.handed_over,
            "last_handover_ms": f.last_ms,
            "last_upgrade_unix": f.last_unix,
            "last_upgrade_error": f.last_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_carry_on_from_the_old_process() {
        let s = UpgradeStats::default();
        s.failed(5, "the new process exited with status 1");
        let before = s.totals();
        assert_eq!(before.failed, 1);
        let next = UpgradeStats::default();
        next.took_over(before, 40, 12, 9);
        let j = next.json();
        assert_eq!(j["upgrades"], 1);
        assert_eq!(j["upgrades_failed"], 1);
        assert_eq!(j["connections_handed_over"], 40);
        assert_eq!(j["last_handover_ms"], 12);
        assert_eq!(j["last_upgrade_error"], Value::Null);
    }
}
