//! The relay's address as the agent is given it: `ws://HOST:PORT[/base]`.

use crate::http::client::parse_url;
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    /// `host:port` as written (the `Host` header), resolved again at every connect, so a
    /// relay that moves to another address is found after the next reconnect.
    pub authority: String,
    /// A path the relay's routes sit under (behind a proxy), without the trailing slash.
    pub base: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayUrlError {
    #[error("only ws:// URLs are supported: the agent speaks no TLS (put a TLS proxy on the agent's machine in front of wss://)")]
    Scheme,
    #[error("{0}")]
    Url(String),
    #[error("the relay URL takes no query string")]
    Query,
}

pub fn parse_relay_url(url: &str) -> Result<RelayUrl, RelayUrlError> {
    let rest = url.strip_prefix("ws://").ok_or(RelayUrlError::Scheme)?;
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
    let authority = if has_port {
        http.host.clone()
    } else {
        format!("{}:{}", http.host, http.addr.port())
    };
    Ok(RelayUrl {
        authority,
        base: http.path.trim_end_matches('/').to_string(),
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
        assert_eq!(parse_relay_url("wss://r:1"), Err(RelayUrlError::Scheme));
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
