//! The control connection's events, as JSON text (docs/tunnels.md): I/O-free.

use serde_json::json;

/// `tunnel_open`: the public address, the port, the key to resume with, and the grace.
pub fn open(public: &str, port: u16, resume: &str, grace_ms: u64) -> String {
    json!({
        "type": "tunnel_open",
        "public": public,
        "port": port,
        "resume": resume,
        "grace_ms": grace_ms,
    })
    .to_string()
}

/// `tunnel_connection`: one public connection waiting for its data connection.
pub fn connection(id: &str, peer: &str) -> String {
    json!({"type": "tunnel_connection", "id": id, "peer": peer}).to_string()
}

/// Why a tunnel was refused, sent before the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    #[allow(dead_code)] // the limits come with the next commit
    AtCapacity,
    #[allow(dead_code)]
    QuotaExceeded,
    PortUnavailable,
    BadRequest(&'static str),
}

impl Refused {
    pub fn code(self) -> &'static str {
        match self {
            Refused::AtCapacity => "at_capacity",
            Refused::QuotaExceeded => "quota_exceeded",
            Refused::PortUnavailable => "port_unavailable",
            Refused::BadRequest(_) => "bad_request",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refused::AtCapacity => "this server holds all the tunnels it may; try again later",
            Refused::QuotaExceeded => "this credential holds all the tunnels it may",
            Refused::PortUnavailable => "the port asked for is taken, or no port is free",
            Refused::BadRequest(why) => why,
        }
    }

    /// 1013 ("try again later") when waiting may help, 1008 when it will not.
    pub fn close_code(self) -> u16 {
        match self {
            Refused::AtCapacity | Refused::PortUnavailable => 1013,
            Refused::QuotaExceeded | Refused::BadRequest(_) => 1008,
        }
    }

    /// The `error` event.
    pub fn event(self) -> String {
        json!({"type": "error", "code": self.code(), "message": self.message()}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let v: serde_json::Value = serde_json::from_str(&open("h:1", 1, "k", 30000)).unwrap();
        assert_eq!(v["type"], "tunnel_open");
        assert_eq!(v["public"], "h:1");
        assert_eq!(v["grace_ms"], 30000);
        let v: serde_json::Value = serde_json::from_str(&connection("ab", "1.2.3.4:5")).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["peer"].as_str()),
            (Some("ab"), Some("1.2.3.4:5"))
        );
        let e: serde_json::Value = serde_json::from_str(&Refused::AtCapacity.event()).unwrap();
        assert_eq!(e["code"], "at_capacity");
        assert_eq!(Refused::AtCapacity.close_code(), 1013);
        assert_eq!(Refused::QuotaExceeded.close_code(), 1008);
        assert_eq!(Refused::BadRequest("x").message(), "x");
    }
}
