//! The relay's address as the agent is given it: `ws://HOST:PORT[/base]`, or `wss://` for
//! TLS (port 443 by default).

use crate::http::client::parse_url;
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    /// `host:port` as written (the `Host` header), resolved again at every connect, so a
    /// relay that moves to another address is found after the next reconnect.
    pub authority: String,
    /// A path the relay's routes sit under (behind a proxy), without the trailing slash.
    pub base: String,
    /// `wss://`: TLS to the relay.
    pub tls: bool,
    /// The host alone (no port): TLS's server name.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayUrlError {
    #[error("only ws:// and wss:// URLs are supported")]
    Scheme,
    #[error("{0}")]
    Url(String),
    #[error("the relay URL takes no query string")]
    Query,
}

pub fn parse_relay_url(url: &str) -> Result<RelayUrl, RelayUrlError> {
    let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return Err(RelayUrlError::Scheme),
    };
    let http =
        parse_url(&format!("http://{rest}")).map_err(|e| RelayUrlError::Url(e.to_string()))?;
    if http.path.contains('?') {
        return Err(RelayUrlError::Query);
    }
    // As in `parse_url`: `[::1]` has colons but no port; `[::1]:8080` and `a:8080` have one.
    let has_port = http
        .host
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    let (name, authority) = match http.host.rsplit_once(':') {
        Some((h, _)) if has_port => (h.to_string(), http.host.clone()),
        _ => {
            let port = if tls { 443 } else { http.addr.port() };
            (http.host.clone(), format!("{}:{port}", http.host))
        }
    };
    Ok(RelayUrl {
        authority,
        base: http.path.trim_end_matches('/').to_string(),
        tls,
        name,
    })
}

impl RelayUrl {
    /// The relay's first address now.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        self.authority.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let u = parse_relay_url("ws://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.base.as_str()),
            ("127.0.0.1:8080", "")
        );
        assert_eq!(u.resolve().unwrap().to_string(), "127.0.0.1:8080");
        let u = parse_relay_url("ws://127.0.0.1:8080/relay/").unwrap();
        assert_eq!(u.base, "/relay");
        let u = parse_relay_url("ws://127.0.0.1").unwrap();
        assert_eq!(u.authority, "127.0.0.1:80");
        let u = parse_relay_url("ws://[::1]").unwrap();
        assert_eq!(u.authority, "[::1]:80");
        let u = parse_relay_url("ws://[::1]:9").unwrap();
        assert_eq!(u.authority, "[::1]:9");
        assert!(!u.tls);
        assert_eq!(u.name, "[::1]");
        let u = parse_relay_url("wss://127.0.0.1:8443/base").unwrap();
        assert!(u.tls);
        assert_eq!(
            (u.authority.as_str(), u.base.as_str(), u.name.as_str()),
            ("127.0.0.1:8443", "/base", "127.0.0.1")
        );
        let u = parse_relay_url("wss://localhost").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.name.as_str()),
            ("localhost:443", "localhost")
        );
        let u = parse_relay_url("wss://[::1]").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.name.as_str()),
            ("[::1]:443", "[::1]")
        );
        assert_eq!(parse_relay_url("https://r:1"), Err(RelayUrlError::Scheme));
        assert_eq!(parse_relay_url("http://r:1"), Err(RelayUrlError::Scheme));
        assert_eq!(
            parse_relay_url("ws://127.0.0.1:1/?x"),
            Err(RelayUrlError::Query)
        );
        assert!(matches!(
            parse_relay_url("ws:///x"),
            Err(RelayUrlError::Url(_))
        ));
    }
}
