//! `http://host[:port][/path][?query]` URLs, for the clients of plain HTTP/1.1 (the load
//! generator, the agent's target). No TLS: both talk to services on the same machine or
//! network.

use std::net::{SocketAddr, ToSocketAddrs};

/// An `http://` URL, resolved: where a client sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    /// The `Host` header: host and port as written in the URL.
    pub host: String,
    /// The request target: path and query, at least `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("only http:// URLs are supported (plain HTTP/1.1, no TLS)")]
    Scheme,
    #[error("no host")]
    NoHost,
    #[error("the path holds a space or a control character")]
    BadPath,
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

/// `http://host[:port][/path][?query]`; the port defaults to 80 and a fragment is dropped.
pub fn parse_url(url: &str) -> Result<HttpUrl, UrlError> {
    let rest = url.strip_prefix("http://").ok_or(UrlError::Scheme)?;
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(split);
    if host.is_empty() || host.contains('@') {
        return Err(UrlError::NoHost);
    }
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(UrlError::BadPath);
    }
    // `[::1]` has colons but no port; `[::1]:8080` and `a:8080` have one.
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    let with_port = if has_port {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let resolve = |reason: String| UrlError::Resolve {
        host: with_port.clone(),
        reason,
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| resolve(e.to_string()))?
        .next()
        .ok_or_else(|| resolve("no address".into()))?;
    Ok(HttpUrl {
        addr,
        host: host.to_string(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:3000/v1/http/s/hello?x=1#frag").unwrap();
        assert_eq!(u.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(u.host, "127.0.0.1:3000");
        assert_eq!(u.path, "/v1/http/s/hello?x=1");
        let u = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (80, "/"));
        assert_eq!(parse_url("http://127.0.0.1:9?q").unwrap().path, "/?q");
        let u = parse_url("http://[::1]:8080/x").unwrap();
        assert_eq!(
            (u.addr.to_string().as_str(), u.host.as_str()),
            ("[::1]:8080", "[::1]:8080")
        );
        assert_eq!(parse_url("http://[::1]/").unwrap().addr.port(), 80);
        assert_eq!(parse_url("ws://127.0.0.1:9"), Err(UrlError::Scheme));
        assert_eq!(parse_url("https://127.0.0.1:9"), Err(UrlError::Scheme));
        assert_eq!(parse_url("http:///x"), Err(UrlError::NoHost));
        assert_eq!(parse_url("http://u@127.0.0.1/"), Err(UrlError::NoHost));
        assert_eq!(parse_url("http://127.0.0.1/a b"), Err(UrlError::BadPath));
        assert_eq!(
            parse_url("http://127.0.0.1/a\r\nX: y"),
            Err(UrlError::BadPath)
        );
        assert!(matches!(
            parse_url("http://127.0.0.1:99999/"),
            Err(UrlError::Resolve { .. })
        ));
    }
}
