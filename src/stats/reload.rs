//! What the reloads (SIGHUP) came to: counts, and the time, outcome and findings of the last
//! one. Written by the main thread once per reload and read by scrapes: never on a worker's
//! forwarding path, so a mutex is fine here. Counts and the last reload change together
//! under it, so a scrape never sees a count without the reload it counts.

use serde_json::{json, Value};
use std::sync::Mutex;

/// The last reload's outcome, as /stats shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Figures {
    ok: u64,
    refused: u64,
    unix_s: u64,
    outcome: Option<Outcome>,
    /// Changed keys a reload cannot apply (left as they were), or why it was refused.
    kept: Vec<String>,
    error: Option<String>,
}

#[derive(Default)]
pub struct ReloadStats {
    figures: Mutex<Figures>,
}

impl ReloadStats {
    /// An applied reload at `unix_s`; `kept` names the changed keys left as they were.
    pub fn applied(&self, unix_s: u64, kept: &[&str]) {
        let mut f = self.lock();
        f.ok += 1;
        f.unix_s = unix_s;
        f.outcome = Some(Outcome::Ok);
        f.kept = kept.iter().map(|k| k.to_string()).collect();
        f.error = None;
    }

    /// A refused reload at `unix_s`: nothing changed, for `reason`.
    pub fn refused(&self, unix_s: u64, reason: &str) {
        let mut f = self.lock();
        f.refused += 1;
        f.unix_s = unix_s;
        f.outcome = Some(Outcome::Refused);
        f.kept = Vec::new();
        f.error = Some(reason.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Figures> {
        // A poisoned lock only means a panic elsewhere mid-write of plain data.
        self.figures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `(ok, refused, last reload's unix seconds (0: none yet), last outcome)`.
    pub fn figures(&self) -> (u64, u64, u64, Option<Outcome>) {
        let f = self.lock();
        (f.ok, f.refused, f.unix_s, f.outcome)
    }

    /// The `reload` object of /stats.
    pub fn json(&self) -> Value {
        let last = self.lock().clone();
        json!({
            "reloads_ok": last.ok,
            "reloads_refused": last.refused,
            "last_reload_unix": last.unix_s,
            "last_reload_outcome": last.outcome.map_or("none", Outcome::as_str),
            "last_reload_kept": last.kept,
            "last_reload_error": last.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_last() {
        let s = ReloadStats::default();
        assert_eq!(s.figures(), (0, 0, 0, None));
        assert_eq!(s.json()["last_reload_outcome"], "none");
        s.applied(100, &["workers"]);
        s.refused(200, "bad toml");
        assert_eq!(s.figures(), (1, 1, 200, Some(Outcome::Refused)));
        let j = s.json();
        assert_eq!(j["last_reload_error"], "bad toml");
        assert_eq!(j["last_reload_kept"], json!([]));
        s.applied(300, &["listen"]);
        assert_eq!(s.json()["last_reload_kept"], json!(["listen"]));
        assert_eq!(s.json()["last_reload_error"], Value::Null);
    }
}
