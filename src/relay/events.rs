//! The JSON events sent to peers that asked for them with `events=1`.

use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

fn ts() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `next_seq` (a connection that asked for `resume=`): the number of the next message it
/// will be delivered.
pub fn connected(session: &str, role: &str, peer_present: bool, next_seq: Option<u64>) -> String {
    let mut v = json!({"type": "connected", "ts": ts(), "session": session, "role": role, "peer_present": peer_present});
    if let Some(n) = next_seq {
        v["next_seq"] = n.into();
    }
    v.to_string()
}

pub fn peer_connected(role: &str) -> String {
    json!({"type": "peer_connected", "ts": ts(), "role": role}).to_string()
}

pub fn peer_disconnected(role: &str, code: u16) -> String {
    json!({"type": "peer_disconnected", "ts": ts(), "role": role, "code": code}).to_string()
}

/// `resume=N` asked for messages no longer kept; delivery goes on from `first`.
pub fn resume_gap(first: u64) -> String {
    let detail = format!("messages before {first} are no longer kept; delivery starts at {first}");
    json!({"type": "error", "ts": ts(), "error": "resume_gap", "detail": detail, "first": first})
        .to_string()
}

/// `resume=N` is past every message delivered to this role.
pub fn resume_ahead(next: u64) -> String {
    let detail = format!(
        "resume is past the {} message(s) delivered; delivery goes on at {next}",
        next - 1
    );
    json!({"type": "error", "ts": ts(), "error": "resume_ahead", "detail": detail, "first": next})
        .to_string()
}

pub fn error(error: &str, detail: &str) -> String {
    json!({"type": "error", "ts": ts(), "error": error, "detail": detail}).to_string()
}
