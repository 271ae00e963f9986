//! Durations as written in the config: an integer and a unit, like `500ms` or `30s`.

use std::time::Duration;

pub(super) const DURATION_HINT: &str = "expected a duration like 500ms, 30s, 5m, 1h";

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Largest first, so that formatting can stop at the first unit that divides exactly.
/// `us` and `ns` exist so that every `Duration` formats to text that parses back.
const UNITS: [(&str, u128); 6] = [
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"1h"` (also `us`, `ns`). One unit only: a bare
/// number is refused because it is ambiguous, and so are signs, fractions and spaces.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.starts_with('-') {
        return Err("must not be negative".to_string());
    }
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(DURATION_HINT.to_string());
    }
    if unit.is_empty() {
        return Err(format!("missing unit; {DURATION_HINT}"));
    }
    let Some(&(_, per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(DURATION_HINT.to_string());
    };
    let too_large = || "too large".to_string();
    // Only digits remain, so a parse failure can only be overflow.
    let n: u128 = number.parse().map_err(|_| too_large())?;
    let nanos = n.checked_mul(per_unit).ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_large())?;
    // The remainder is below one second, so it fits in u32.
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Writes `d` in the largest unit that represents it exactly (`90s`, not `1m30s`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let (unit, per_unit) = UNITS
        .into_iter()
        .find(|(_, per_unit)| nanos.is_multiple_of(*per_unit))
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / per_unit)
}
