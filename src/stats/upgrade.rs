//! What the binary upgrades (SIGUSR2, docs/upgrade.md) came to. Counts run across processes:
//! the old process hands its totals to the new one in the upgrade's `hello`, so /stats of the
//! process serving now counts every upgrade since the first start. Written by the upgrade's
//! thread, read by scrapes: off every forwarding path, so a mutex is fine.

use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Duration;

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

/// The last handover's phases, as the new process saw them (docs/upgrade.md, "Benchmark"):
/// where the time between `hello` and `holding` went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// `hello` read to `taken` sent: the config loaded and checked, the workers prepared.
    pub start: Duration,
    /// `taken` sent to the first share coming: the old process stops accepting, waits for
    /// handshakes, parks its connections and describes them.
    pub export: Duration,
    /// Every share's bytes and descriptors received.
    pub transfer: Duration,
    /// The last share received to every worker adopted and listening.
    pub adopt: Duration,
}

#[derive(Debug, Clone, Default)]
struct Figures {
    totals: Totals,
    /// The last completed handover: from `hello` read to every worker adopted and listening.
    last_ms: u64,
    phases: Phases,
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

    /// The phases of the handover that started this process.
    pub fn phases(&self, phases: Phases) {
        self.lock().phases = phases;
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
            "last_handover_phases_ms": {
                "start": tenths_of_ms(f.phases.start),
                "export": tenths_of_ms(f.phases.export),
                "transfer": tenths_of_ms(f.phases.transfer),
                "adopt": tenths_of_ms(f.phases.adopt),
            },
            "last_upgrade_unix": f.last_unix,
            "last_upgrade_error": f.last_error,
        })
    }
}

/// Milliseconds to a tenth: phases are a few milliseconds each.
fn tenths_of_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
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
        assert_eq!(j["last_handover_phases_ms"]["export"], 0.0);
        next.phases(Phases {
            start: Duration::from_micros(3_250),
            export: Duration::from_micros(41_040),
            transfer: Duration::from_millis(9),
            adopt: Duration::from_micros(12_960),
        });
        let p = &next.json()["last_handover_phases_ms"];
        assert_eq!(p["start"], 3.3);
        assert_eq!(p["export"], 41.0);
        assert_eq!(p["transfer"], 9.0);
        assert_eq!(p["adopt"], 13.0);
        assert_eq!(j["last_upgrade_error"], Value::Null);
    }
}
