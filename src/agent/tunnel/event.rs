//! The relay's control events on a tunnel's WebSocket (docs/tunnels.md), read without I/O.
//! Any key order and any extra field is accepted; a message of another `type` is skipped, so
//! a newer relay may add events.

use serde_json::Value;

/// One event from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    /// The public port is bound: `public` is what to tell the world, `resume` gets the same
    /// port back after a reconnect within `grace_ms`.
    Open {
        public: String,
        port: Option<u16>,
        resume: Option<String>,
        grace_ms: Option<u64>,
    },
    /// A TCP connection was accepted on the public port: open the data connection for `id`.
    Connection { id: String, peer: Option<String> },
    /// A refusal; a close follows (1008: for good, 1013: try again later).
    Error { code: String, message: String },
    /// An `error` with code `moved` (close 1013 follows): open the tunnel on `node` (a
    /// `ws://` URL) instead, where there is more room (docs/tunnels.md#fleet).
    Moved { node: String, message: String },
    /// An event of a type this client does not know.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("a {kind} event without a usable {field:?}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
}

/// Longest id taken: the protocol's are 32 hex digits; anything else must still fit in a path.
const MAX_ID: usize = 128;

/// Reads one text message of the control connection.
pub fn parse_event(text: &[u8]) -> Result<TunnelEvent, EventError> {
    let v: Value = serde_json::from_slice(text).map_err(|e| EventError::Json(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Err(EventError::Json("not an object".into()));
    };
    let str_of = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    match obj.get("type").and_then(Value::as_str) {
        Some("tunnel_open") => Ok(TunnelEvent::Open {
            public: str_of("public").ok_or(EventError::Missing {
                kind: "tunnel_open",
                field: "public",
            })?,
            port: obj
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok()),
            resume: str_of("resume").filter(|r| !r.is_empty()),
            grace_ms: obj.get("grace_ms").and_then(Value::as_u64),
        }),
        Some("tunnel_connection") => {
            let id = str_of("id")
                .filter(|id| valid_id(id))
                .ok_or(EventError::Missing {
                    kind: "tunnel_connection",
                    field: "id",
                })?;
            Ok(TunnelEvent::Connection {
                id,
                peer: str_of("peer"),
            })
        }
        Some("error") if str_of("code").as_deref() == Some("moved") && str_of("node").is_some() => {
            Ok(TunnelEvent::Moved {
                node: str_of("node").unwrap_or_default(),
                message: str_of("message").unwrap_or_default(),
            })
        }
        Some("error") => Ok(TunnelEvent::Error {
            code: str_of("code").unwrap_or_else(|| "unknown".into()),
            message: str_of("message").unwrap_or_default(),
        }),
        _ => Ok(TunnelEvent::Other),
    }
}

/// An id that can go into the data route's path as it is.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_in_any_key_order_with_extra_fields() {
        let open =
            br#" { "grace_ms" : 30000, "x": [1], "resume":"k1", "public":"relay.example:20001",
            "type":"tunnel_open", "port":20001 } "#;
        assert_eq!(
            parse_event(open).unwrap(),
            TunnelEvent::Open {
                public: "relay.example:20001".into(),
                port: Some(20001),
                resume: Some("k1".into()),
                grace_ms: Some(30000),
            }
        );
        let conn = br#"{"peer":"127.0.0.1:5555","id":"0123456789abcdef0123456789abcdef","type":"tunnel_connection"}"#;
        assert_eq!(
            parse_event(conn).unwrap(),
            TunnelEvent::Connection {
                id: "0123456789abcdef0123456789abcdef".into(),
                peer: Some("127.0.0.1:5555".into()),
            }
        );
        let err = br#"{"message":"no room","code":"at_capacity","type":"error"}"#;
        assert_eq!(
            parse_event(err).unwrap(),
            TunnelEvent::Error {
                code: "at_capacity".into(),
                message: "no room".into()
            }
        );
        let moved = br#"{"node":"ws://10.0.0.2:8080","code":"moved","type":"error"}"#;
        assert_eq!(
            parse_event(moved).unwrap(),
            TunnelEvent::Moved {
                node: "ws://10.0.0.2:8080".into(),
                message: String::new()
            }
        );
        // A `moved` naming no node is an ordinary refusal.
        assert!(matches!(
            parse_event(br#"{"type":"error","code":"moved"}"#).unwrap(),
            TunnelEvent::Error { .. }
        ));
        assert_eq!(
            parse_event(br#"{"type":"stats","n":1}"#).unwrap(),
            TunnelEvent::Other
        );
        // Only `public` is needed of tunnel_open.
        assert!(matches!(
            parse_event(br#"{"type":"tunnel_open","public":"h:1"}"#).unwrap(),
            TunnelEvent::Open {
                port: None,
                resume: None,
                ..
            }
        ));
    }

    #[test]
    fn unusable_events_are_refused() {
        assert!(matches!(parse_event(b"[1]"), Err(EventError::Json(_))));
        assert!(matches!(parse_event(b"{"), Err(EventError::Json(_))));
        assert!(parse_event(br#"{"type":"tunnel_open"}"#).is_err());
        // An id that would change the data route's path is not used.
        for id in ["", "../x", "a b", "a?b", &"a".repeat(129)] {
            let text = format!(r#"{{"type":"tunnel_connection","id":"{id}"}}"#);
            assert!(parse_event(text.as_bytes()).is_err(), "{id}");
        }
    }
}
