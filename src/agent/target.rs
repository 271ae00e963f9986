//! The local API the agent forwards to, and the rule that keeps it local: a target that is
//! not a loopback address is refused unless `--allow-remote` is given, so that an agent
//! started with a wrong URL cannot turn the user's machine into a proxy into their network.

use crate::http::client::{parse_url, HttpUrl};
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Resolved once, at start: every request goes to this address, so a name cannot later
    /// resolve somewhere the loopback check never saw.
    pub addr: SocketAddr,
    /// The `Host` header sent to the target (the bridged request's own is the relay's).
    pub host: String,
    /// A base path requests go under (`/api` + `/users` = `/api/users`); empty for none.
    pub base: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    Url(String),
    #[error("the target URL takes no query string (bridged requests bring their own)")]
    Query,
    #[error("{0} is not a loopback address; pass --allow-remote to forward off this machine")]
    NotLoopback(SocketAddr),
}

pub fn parse_target(url: &str, allow_remote: bool) -> Result<Target, TargetError> {
    let HttpUrl { addr, host, path } =
        parse_url(url).map_err(|e| TargetError::Url(e.to_string()))?;
    if path.contains('?') {
        return Err(TargetError::Query);
    }
    if !allow_remote && !addr.ip().to_canonical().is_loopback() {
        return Err(TargetError::NotLoopback(addr));
    }
    Ok(Target {
        addr,
        host,
        base: path.trim_end_matches('/').to_string(),
    })
}

impl Target {
    /// The request target for a bridged path (which starts with `/`).
    pub fn request_target(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_only_unless_allowed() {
        for ok in [
            "http://127.0.0.1:3000",
            "http://127.9.9.9:1/",
            "http://[::1]:3000",
            "http://[::ffff:127.0.0.1]:3000",
        ] {
            assert!(parse_target(ok, false).is_ok(), "{ok}");
        }
        for remote in [
            "http://10.0.0.1:3000",
            "http://[::2]:80",
            "http://0.0.0.0:80",
        ] {
            assert!(
                matches!(
                    parse_target(remote, false),
                    Err(TargetError::NotLoopback(_))
                ),
                "{remote}"
            );
            assert!(parse_target(remote, true).is_ok(), "{remote}");
        }
        assert!(matches!(
            parse_target("https://127.0.0.1", false),
            Err(TargetError::Url(_))
        ));
        assert_eq!(
            parse_target("http://127.0.0.1/x?y", false),
            Err(TargetError::Query)
        );
    }

    #[test]
    fn paths_go_under_the_base() {
        let t = parse_target("http://127.0.0.1:3000", false).unwrap();
        assert_eq!((t.host.as_str(), t.base.as_str()), ("127.0.0.1:3000", ""));
        assert_eq!(t.request_target("/users?x=1"), "/users?x=1");
        let t = parse_target("http://127.0.0.1:3000/api/", false).unwrap();
        assert_eq!(t.request_target("/users?x=1"), "/api/users?x=1");
        assert_eq!(t.request_target("/"), "/api/");
    }
}
