//! What a control request asks for, judged against the config: I/O-free.

use crate::config::PortRange;
use crate::http::route::TunnelAsk;

/// A control request's options, valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub port: Option<u16>,
    pub resume: Option<String>,
}

/// Why an ask is refused before anything is bound: the `bad_request` event's message.
pub fn judge(ask: &TunnelAsk, ports: PortRange) -> Result<Ask, &'static str> {
    let port = match ask.port.as_deref() {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if ports.contains(n) => Some(n),
            _ => return Err("port must be a number within tunnel.ports"),
        },
    };
    let resume = match ask.resume.as_deref() {
        None => None,
        Some(k) if is_key(k) => Some(k.to_string()),
        Some(_) => return Err("resume must be the key tunnel_open gave"),
    };
    Ok(Ask { port, resume })
}

/// 32 lower-case hex digits: the shape of every id and key made here.
pub fn is_key(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The host part of a `Host` header value: `[v6]:port` and `name:port` lose the port.
pub fn host_part(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: PortRange = PortRange {
        first: 20000,
        last: 20009,
    };

    fn ask(port: Option<&str>, resume: Option<&str>) -> TunnelAsk {
        TunnelAsk {
            port: port.map(str::to_string),
            resume: resume.map(str::to_string),
            moved: false,
        }
    }

    #[test]
    fn ports_and_keys() {
        assert_eq!(
            judge(&ask(Some("20009"), None), PORTS),
            Ok(Ask {
                port: Some(20009),
                resume: None
            })
        );
        for bad in ["19999", "20010", "x", "", "-1", "70000"] {
            assert!(judge(&ask(Some(bad), None), PORTS).is_err(), "{bad}");
        }
        let key = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            judge(&ask(None, Some(key)), PORTS)
                .unwrap()
                .resume
                .as_deref(),
            Some(key)
        );
        for bad in ["", "0123456789ABCDEF0123456789abcdef", &key[1..], "5"] {
            assert!(judge(&ask(None, Some(bad)), PORTS).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host_part("relay.example:8080"), "relay.example");
        assert_eq!(host_part("relay.example"), "relay.example");
        assert_eq!(host_part("[::1]:8080"), "[::1]");
        assert_eq!(host_part("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_part("::1"), "::1");
    }
}
