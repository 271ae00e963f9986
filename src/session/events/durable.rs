//! The event shapes of the Durable Object relay, for clients written against it: what a
//! connection on `/desktop/{id}` or `/mobile/{id}` gets (docs/migrate/durable-objects.md).
//! `/v1/relay` keeps the events of `super`.
//!
//! The events are built once, in our shapes, and reshaped here when they are addressed to a
//! connection that came in on a compatible path, so no caller needs to know which shapes a
//! peer speaks. Reshaping keeps our own fields (`ts`, `key`, `role`, `session`, `next_seq`,
//! ...): the old clients read the fields they know and ignore the rest, and a client that
//! wants to tell events from look-alikes its peer sends still has the `key`.

use super::Event;
use serde_json::Value;

/// Which event shapes a connection is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shapes {
    /// `/v1/relay`: `connected`, `peer_connected`, `peer_disconnected`, `error` {error, detail}.
    #[default]
    Relay,
    /// `/desktop/{id}`, `/mobile/{id}`: the Durable Object relay's names.
    Durable,
}

/// At most one "... not connected" error per sender per this long while its peer is away.
pub const AWAY_NOTICE_EVERY_MS: u32 = 1000;

/// `event` in the Durable Object relay's shape:
/// - `connected` gains `clientType` (the role) and `sessionId`;
/// - `peer_connected` / `peer_disconnected` {role} become `{role}_connected` /
///   `{role}_disconnected` (`mobile_connected`, `desktop_disconnected`, ...);
/// - every event gains `timestamp`, the same milliseconds as `ts`.
pub fn reshape(mut event: Event) -> Event {
    let m = &mut event.0;
    if let Some(ts) = m.get("ts").cloned() {
        m.insert("timestamp".into(), ts);
    }
    let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    let renamed = match kind {
        "connected" => {
            let (role, session) = (m.get("role").cloned(), m.get("session").cloned());
            m.insert("clientType".into(), role.unwrap_or_default());
            m.insert("sessionId".into(), session.unwrap_or_default());
            None
        }
        "peer_connected" => Some(format!("{role}_connected")),
        "peer_disconnected" => Some(format!("{role}_disconnected")),
        _ => None,
    };
    if let Some(name) = renamed {
        m.insert("type".into(), name.into());
    }
    event
}

/// The error a sender on a compatible path gets when it sends while the other side is away:
/// `"Mobile device not connected"` for the desktop, `"Desktop not connected"` for the mobile
/// (the Durable Object relay's sentences). `kept`: the message waits for the other side (it
/// was dropped otherwise: `session.buffer_bytes = 0`); said in `detail`, which rides along.
pub fn peer_away(sender_role: &str, kept: bool) -> Event {
    let sentence = match sender_role {
        "mobile" => "Desktop not connected",
        "desktop" => "Mobile device not connected",
        _ => "Peer not connected",
    };
    let detail = if kept {
        "kept, and delivered when it connects"
    } else {
        "dropped: this relay keeps nothing for an absent peer (session.buffer_bytes = 0)"
    };
    super::error(sentence, detail).with("code", "peer_away")
}

/// Whether a sender last told with stamp `last` (0: never; see [`notice_stamp`]) may be
/// told again at `now_ms`, the low 32 bits of the clock in milliseconds (so the difference
/// wraps).
pub fn notice_due(last: u32, now_ms: u32) -> bool {
    last == 0 || notice_stamp(now_ms).wrapping_sub(last) >= AWAY_NOTICE_EVERY_MS
}

/// The stamp of a notice told at `now_ms`: one past it, so that a notice told while the
/// clock still reads 0 (the first tick after the start has not run) is not taken for
/// "never" and then for a time in the future. Before: the stamp was `now.max(1)`, so at 0 a
/// second notice saw `0 - 1`, wrapped, and was due again: a burst in the server's first
/// moments got one notice per read. Only the 32-bit wrap (every 49 days) lands on 0, and
/// that makes one notice due early.
pub fn notice_stamp(now_ms: u32) -> u32 {
    now_ms.wrapping_add(1)
}

#[cfg(test)]
mod tests {
    use super::super::{connected, error, peer_connected, peer_disconnected, EventKey};
    use super::*;

    fn shaped(ev: Event) -> Value {
        serde_json::from_str(&reshape(ev).into_json(&EventKey([0xcd; 16]))).unwrap()
    }

    #[test]
    fn connected_carries_the_durable_fields_and_keeps_ours() {
        let v = shaped(connected("abc123", "desktop", false, Some(4)));
        assert_eq!(v["type"], "connected");
        assert_eq!(v["clientType"], "desktop");
        assert_eq!(v["sessionId"], "abc123");
        assert!(v["timestamp"].is_u64());
        assert_eq!(v["timestamp"], v["ts"]);
        assert_eq!(
            (&v["next_seq"], &v["key"]),
            (&4.into(), &"cd".repeat(16).into())
        );
    }

    #[test]
    fn peer_events_are_named_after_the_peer() {
        let v = shaped(peer_connected("mobile"));
        assert_eq!(
            (v["type"].as_str(), v["timestamp"].is_u64()),
            (Some("mobile_connected"), true)
        );
        assert_eq!(
            shaped(peer_connected("desktop"))["type"],
            "desktop_connected"
        );
        let v = shaped(peer_disconnected("mobile", 1006));
        assert_eq!(
            (v["type"].as_str(), &v["code"]),
            (Some("mobile_disconnected"), &1006.into())
        );
        assert_eq!(
            shaped(peer_disconnected("desktop", 1000))["type"],
            "desktop_disconnected"
        );
    }

    #[test]
    fn the_away_error_names_the_missing_side() {
        let v = shaped(peer_away("desktop", true));
        assert_eq!(
            (v["type"].as_str(), v["error"].as_str()),
            (Some("error"), Some("Mobile device not connected"))
        );
        assert!(v["timestamp"].is_u64());
        assert_eq!(
            shaped(peer_away("mobile", false))["error"],
            "Desktop not connected"
        );
        // Our other errors keep their codes, with the timestamp added.
        let v = shaped(error("buffer_overflow", "x"));
        assert_eq!(
            (v["error"].as_str(), v["timestamp"].is_u64()),
            (Some("buffer_overflow"), true)
        );
    }

    #[test]
    fn the_notice_is_due_once_a_second() {
        assert!(notice_due(0, 5));
        assert!(!notice_due(notice_stamp(1_000), 1_999));
        assert!(notice_due(notice_stamp(1_000), 2_000));
        assert!(
            !notice_due(notice_stamp(u32::MAX - 100), 400),
            "across the wrap"
        );
        // Told while the clock still reads 0: not due again until a second has passed.
        assert!(!notice_due(notice_stamp(0), 0));
        assert!(!notice_due(notice_stamp(0), 999));
        assert!(notice_due(notice_stamp(0), 1_000));
        assert!(notice_due(u32::MAX - 100, 900));
    }
}
