//! `http://host[:port][/path][?query]` URLs, for the clients of HTTP/1.1 (the load
//! generator, the agent's target), and `https://` ones for the load generator (the relay's
//! bridge over TLS). The agent's target stays `http://`: it is on the same machine.

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
    #[error("only http:// and https:// URLs are supported")]
    WebScheme,
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

/// `http://` as [`parse_url`], or `https://host[:port][/path][?query]` (port 443 by
/// default): the URL and, for `https://`, the host TLS checks the certificate against (no
/// port, brackets kept).
pub fn parse_web_url(url: &str) -> Result<(HttpUrl, Option<String>), UrlError> {
    if url.starts_with("http://") {
        return parse_url(url).map(|u| (u, None));
    }
    let rest = url.strip_prefix("https://").ok_or(UrlError::WebScheme)?;
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(split);
    if host.is_empty() || host.contains('@') {
        return Err(UrlError::NoHost);
    }
    let port = host
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    let (name, with_port) = match port {
        Some((h, _)) => (h, host.to_string()),
        None => (host, format!("{host}:443")),
    };
    let mut u = parse_url(&format!("http://{with_port}{path}"))?;
    u.host = host.to_string();
    Ok((u, Some(name.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_urls() {
        let (u, name) = parse_web_url("https://127.0.0.1:8443/v1/http/s/x?y").unwrap();
        assert_eq!(u.addr.to_string(), "127.0.0.1:8443");
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("127.0.0.1:8443", "/v1/http/s/x?y")
        );
        assert_eq!(name.as_deref(), Some("127.0.0.1"));
        let (u, name) = parse_web_url("https://localhost").unwrap();
        assert_eq!(
            (u.addr.port(), u.host.as_str(), u.path.as_str()),
            (443, "localhost", "/")
        );
        assert_eq!(name.as_deref(), Some("localhost"));
        let (u, name) = parse_web_url("https://[::1]/a").unwrap();
        assert_eq!((u.addr.port(), name.as_deref()), (443, Some("[::1]")));
        let (u, name) = parse_web_url("http://127.0.0.1:9/").unwrap();
        assert_eq!((u.addr.port(), name), (9, None));
        assert_eq!(parse_web_url("ws://127.0.0.1:9"), Err(UrlError::WebScheme));
        assert_eq!(parse_web_url("https:///x"), Err(UrlError::NoHost));
    }

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
