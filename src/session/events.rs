//! The JSON events sent to peers that asked for them with `events=1`.
//!
//! The other peer can send a text message that reads exactly like an event, so an event's
//! shape proves nothing. Each connection with events gets a key of its own, 128 random bits,
//! in its `connected` event; every later event to that connection carries the same `key`,
//! and nothing forwarded from the peer is ever touched, so a client knows a text message is
//! the relay's when its `key` matches. `connected` itself needs no proof: it is the first
//! message after the 101, written together with it before anything forwarded from the other
//! peer (docs/durability.md, "Events").
//!
//! Events are built here without their key and addressed where they are written
//! (`Peer::send_event`, `Peer::event_bytes`), so no event can leave without one.

pub mod durable;

use crate::runtime::rng::{self, CoreRng};
use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// A connection's event key: stored once, as bytes, on its `Peer`; written out as 32
/// lower-case hex digits only when an event is (rare).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventKey([u8; 16]);

impl EventKey {
    /// The placeholder of a connection without events, which is never sent one.
    pub const NONE: EventKey = EventKey([0; 16]);

    /// A fresh key for one connection, from the worker's secure generator.
    pub fn random(rng: &CoreRng) -> EventKey {
        EventKey(rng.bytes())
    }

    /// A key carried across a binary upgrade (`relay::handover`), as [`EventKey::bytes`]
    /// gave it.
    pub fn from_bytes(bytes: [u8; 16]) -> EventKey {
        EventKey(bytes)
    }

    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }

    pub fn hex(&self) -> String {
        rng::hex(&self.0)
    }
}

/// Never printed: a key in a log line would be one more place for it to leak from.
impl std::fmt::Debug for EventKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventKey(<redacted>)")
    }
}

/// An event not yet addressed to a connection.
#[derive(Debug)]
pub struct Event(Map<String, Value>);

impl Event {
    /// An event of type `kind`, stamped now.
    fn new(kind: &str) -> Event {
        let mut m = Map::new();
        m.insert("type".into(), kind.into());
        m.insert("ts".into(), ts().into());
        Event(m)
    }

    fn with(mut self, name: &str, value: impl Into<Value>) -> Event {
        self.0.insert(name.into(), value.into());
        self
    }

    /// The event's text for the connection whose key is `key`.
    pub fn into_json(self, key: &EventKey) -> String {
        Value::Object(self.with("key", key.hex()).0).to_string()
    }

    /// An agent's `connected` also carries the key the relay marks its bridged requests with
    /// (`relay_key`), the `Ringrelay-Bridge-Key` of the upgrade answer: a browser's or Node's
    /// WebSocket cannot read response headers, and `connected` is as much the relay's own (it
    /// is written with the 101, before anything from the peer).
    pub fn with_bridge_key(self, key: &str) -> Event {
        self.with("bridge_key", key)
    }
}

fn ts() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `next_seq` (a connection that asked for `resume=`): the number of the next message it
/// will be delivered.
pub fn connected(session: &str, role: &str, peer_present: bool, next_seq: Option<u64>) -> Event {
    let ev = Event::new("connected")
        .with("session", session)
        .with("role", role)
        .with("peer_present", peer_present);
    match next_seq {
        Some(n) => ev.with("next_seq", n),
        None => ev,
    }
}

impl Event {
    /// `acked` (a connection that asked for `resume=`): messages from its role the relay
    /// has accepted in this session; the client resends from `acked + 1`.
    pub fn with_acked(self, acked: u64) -> Event {
        self.with("acked", acked)
    }
}

/// Two-way resume: messages from this connection's role accepted so far. Sent as written out
/// by [`ack_json`]; this form is the reference its test holds it to.
#[cfg(test)]
pub fn ack(acked: u64) -> Event {
    Event::new("ack").with("acked", acked)
}

/// The text of [`ack`] for the connection whose key is `key`, written without a JSON map or
/// the formatting machinery (the same object; a test holds the two together).
pub fn ack_json(acked: u64, key: &EventKey, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(br#"{"type":"ack","ts":"#);
    push_u64(out, ts());
    out.extend_from_slice(br#","acked":"#);
    push_u64(out, acked);
    out.extend_from_slice(br#","key":""#);
    for b in key.0 {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
    out.extend_from_slice(b"\"}");
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub fn peer_connected(role: &str) -> Event {
    Event::new("peer_connected").with("role", role)
}

pub fn peer_disconnected(role: &str, code: u16) -> Event {
    Event::new("peer_disconnected")
        .with("role", role)
        .with("code", code)
}

/// `resume=N` asked for messages no longer kept; delivery goes on from `first`.
pub fn resume_gap(first: u64) -> Event {
    let detail = format!("messages before {first} are no longer kept; delivery starts at {first}");
    error("resume_gap", &detail).with("first", first)
}

/// `resume=N` is past every message delivered to this role.
pub fn resume_ahead(next: u64) -> Event {
    let detail = format!(
        "resume is past the {} message(s) delivered; delivery goes on at {next}",
        next - 1
    );
    error("resume_ahead", &detail).with("first", next)
}

pub fn error(error: &str, detail: &str) -> Event {
    Event::new("error")
        .with("error", error)
        .with("detail", detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn every_event_carries_the_key_it_is_addressed_with() {
        let rng = CoreRng::new();
        let key = EventKey::random(&rng);
        let hex = key.hex();
        assert_eq!(hex.len(), 32);
        for ev in [
            connected("s", "a", false, Some(3)).with_acked(2),
            ack(7),
            peer_connected("b"),
            peer_disconnected("b", 1000),
            resume_gap(5),
            resume_ahead(9),
            error("peer_absent", "1 message(s) dropped"),
        ] {
            let v = parse(&ev.into_json(&key));
            assert_eq!(v["key"], hex.as_str(), "{v}");
            assert!(v["type"].is_string() && v["ts"].is_u64(), "{v}");
        }
    }

    #[test]
    fn the_written_out_ack_is_the_ack_event() {
        let key = EventKey([0x5c; 16]);
        let mut out = Vec::new();
        ack_json(77, &key, &mut out);
        let mut fast: Value = serde_json::from_slice(&out).unwrap();
        let mut slow = parse(&ack(77).into_json(&key));
        assert!(fast["ts"].is_u64());
        fast["ts"] = 0.into();
        slow["ts"] = 0.into();
        assert_eq!(fast, slow);
        for n in [0, 9, 10, 1234567890123, u64::MAX] {
            let mut out = Vec::new();
            ack_json(n, &key, &mut out);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["acked"], n);
        }
    }

    #[test]
    fn keys_differ_and_stay_out_of_debug_output() {
        let rng = CoreRng::new();
        let (a, b) = (EventKey::random(&rng), EventKey::random(&rng));
        assert_ne!(a, b);
        assert_ne!(a.hex(), b.hex());
        assert!(!format!("{a:?}").contains(&a.hex()));
    }

    #[test]
    fn fields_keep_their_shape() {
        let key = EventKey([0xab; 16]);
        let v = parse(&connected("room", "desktop", true, None).into_json(&key));
        assert_eq!(v["key"], "ab".repeat(16));
        assert_eq!(
            (&v["type"], &v["session"], &v["role"], &v["peer_present"]),
            (
                &"connected".into(),
                &"room".into(),
                &"desktop".into(),
                &true.into()
            )
        );
        assert!(v.get("next_seq").is_none());
        assert!(v.get("acked").is_none());
        let v = parse(
            &connected("r", "a", false, Some(4))
                .with_acked(9)
                .into_json(&key),
        );
        assert_eq!((&v["next_seq"], &v["acked"]), (&4.into(), &9.into()));
        let v = parse(&ack(12).into_json(&key));
        assert_eq!((&v["type"], &v["acked"]), (&"ack".into(), &12.into()));
        let v = parse(&resume_gap(7).into_json(&key));
        assert_eq!(
            (&v["error"], &v["first"]),
            (&"resume_gap".into(), &7.into())
        );
    }
}
