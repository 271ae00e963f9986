//! The JSON events sent to peers that asked for them with `events=1`.

use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

fn ts() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn connected(session: &str, role: &str, peer_present: bool) -> String {
    json!({"type": "connected", "ts": ts(), "session": session, "role": role, "peer_present": peer_present}).to_string()
}

pub fn peer_connected(role: &str) -> String {
    json!({"type": "peer_connected", "ts": ts(), "role": role}).to_string()
}

pub fn peer_disconnected(role: &str, code: u16) -> String {
    json!({"type": "peer_disconnected", "ts": ts(), "role": role, "code": code}).to_string()
}

pub fn error(error: &str, detail: &str) -> String {
    json!({"type": "error", "ts": ts(), "error": error, "detail": detail}).to_string()
}
