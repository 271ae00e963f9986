//! Which route a request takes, and the region it asks for. No I/O.

use crate::auth::is_credential_param;
use crate::config::{own_path, valid_region, ProxyConfig, ProxyRoute};
use crate::http::RequestHead;

/// The route a request takes: the longest prefix that matches its path, among the routes
/// whose `host` (if any) is the request's Host without its port. `None`: no route, or a path
/// ringrelay serves itself (those always win).
pub fn route_for(routes: &[ProxyRoute], head: &RequestHead) -> Option<usize> {
    if routes.is_empty() || own_path(&head.path) {
        return None;
    }
    let host = head.header("host").map(host_only);
    routes
        .iter()
        .enumerate()
        .filter(|(_, r)| head.path.starts_with(&r.prefix))
        .filter(|(_, r)| r.host.as_deref().is_none_or(|h| host.as_deref() == Some(h)))
        // Longest prefix; a route naming the host before one that does not.
        .max_by_key(|(_, r)| (r.prefix.len(), r.host.is_some()))
        .map(|(i, _)| i)
}

/// A Host header's host, lower-cased, without its port (IPv6 brackets kept).
fn host_only(h: &str) -> String {
    let h = h.trim();
    let end = match h.rfind(':') {
        Some(i) if !h[i..].contains(']') => i,
        _ => h.len(),
    };
    h[..end].to_ascii_lowercase()
}

/// The region a request asks for. `Ok(None)`: none named and no default.
/// `Err`: a header or query value that is not a valid region (400).
pub fn region_of(
    cfg: &ProxyConfig,
    cluster_region: Option<&str>,
    head: &RequestHead,
) -> Result<Option<String>, ()> {
    // The head's names are lower-case; the configured one is compared without a copy.
    let header = head
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&cfg.region_header))
        .map(|(_, v)| v.as_str());
    let named = match header {
        Some(v) => Some(v.trim().to_string()),
        None => head.query_param(&cfg.region_query),
    };
    match named {
        Some(r) if valid_region(&r) => Ok(Some(r)),
        Some(_) => Err(()),
        None => Ok(cfg
            .default_region
            .clone()
            .or_else(|| cluster_region.map(str::to_string))),
    }
}

/// The path sent upstream: the request's, less the route's prefix when it strips it (what
/// is left always starts with `/`), with the query as it came, except, on a route that checks
/// ringrelay's own credential (`auth = true`), its `token=` (and API-key `key=rrk_...`)
/// parameters: the rest of the query goes byte for byte, in order.
pub fn upstream_target(route: &ProxyRoute, head: &RequestHead) -> String {
    let mut out = Vec::with_capacity(head.path.len() + head.query.len() + 2);
    push_target(route, head, &mut out);
    // Made of the head's own strings and ASCII separators.
    String::from_utf8(out).unwrap_or_default()
}

/// [`upstream_target`] appended to `out` (the request head being written upstream).
pub fn push_target(route: &ProxyRoute, head: &RequestHead, out: &mut Vec<u8>) {
    if route.strip_prefix {
        let rest = head.path[route.prefix.len()..].trim_start_matches('/');
        out.push(b'/');
        out.extend_from_slice(rest.as_bytes());
    } else {
        out.extend_from_slice(head.path.as_bytes());
    }
    if !route.auth {
        if !head.query.is_empty() {
            out.push(b'?');
            out.extend_from_slice(head.query.as_bytes());
        }
        return;
    }
    if head.query.is_empty() {
        return;
    }
    let mark = out.len();
    out.push(b'?');
    let start = out.len();
    let kept = head.query.split('&').filter(|p| !is_credential_param(p));
    for (i, pair) in kept.enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(pair.as_bytes());
    }
    // A query that was nothing but the credential leaves no `?`.
    if out.len() == start {
        out.truncate(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyUpstream;

    fn r(prefix: &str, host: Option<&str>) -> ProxyRoute {
        ProxyRoute {
            prefix: prefix.into(),
            host: host.map(str::to_string),
            upstreams: vec![ProxyUpstream {
                url: "http://127.0.0.1:1".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                authority: "127.0.0.1:1".into(),
                region: String::new(),
                weight: 1,
            }],
            strip_prefix: false,
            preserve_host: false,
            fallback: false,
            auth: false,
            max_concurrent: 0,
            health: None,
        }
    }

    fn head(path: &str, host: &str) -> RequestHead {
        RequestHead::with_headers("GET", path, &[("host", host)])
    }

    #[test]
    fn longest_prefix_and_host_win_and_own_routes_never_match() {
        let routes = [r("/", None), r("/api", None), r("/api", Some("a.example"))];
        assert_eq!(route_for(&routes, &head("/x", "h")), Some(0));
        assert_eq!(route_for(&routes, &head("/api/v", "h:80")), Some(1));
        assert_eq!(
            route_for(&routes, &head("/api/v", "A.example:8080")),
            Some(2)
        );
        for own in [
            "/health",
            "/v1/relay/s",
            "/v1",
            "/demo",
            "/demo/app.js",
            "/mobile/s",
        ] {
            assert_eq!(route_for(&routes, &head(own, "h")), None, "{own}");
        }
        assert_eq!(route_for(&routes[2..], &head("/api", "b.example")), None);
        assert_eq!(route_for(&[], &head("/x", "h")), None);
    }

    #[test]
    fn region_from_header_then_query_then_default() {
        let mut cfg = ProxyConfig::default();
        let mut h = head("/", "h");
        h.query = "region=2".into();
        assert_eq!(region_of(&cfg, None, &h), Ok(Some("2".into())));
        h.headers.push(("x-region".into(), "1".into()));
        assert_eq!(region_of(&cfg, None, &h), Ok(Some("1".into())));
        h.headers[1].1 = "no good!".into();
        assert_eq!(region_of(&cfg, None, &h), Err(()));
        let plain = head("/", "h");
        assert_eq!(region_of(&cfg, Some("eu"), &plain), Ok(Some("eu".into())));
        cfg.default_region = Some("us".into());
        assert_eq!(region_of(&cfg, Some("eu"), &plain), Ok(Some("us".into())));
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash_and_the_query() {
        let mut route = r("/api", None);
        let mut h = head("/api/items", "h");
        h.query = "a=1".into();
        assert_eq!(upstream_target(&route, &h), "/api/items?a=1");
        route.strip_prefix = true;
        assert_eq!(upstream_target(&route, &h), "/items?a=1");
        assert_eq!(upstream_target(&route, &head("/api", "h")), "/");
    }

    #[test]
    fn an_auth_route_drops_the_relays_credential_from_the_query_and_keeps_the_rest() {
        let mut route = r("/", None);
        let with = |q: &str| {
            let mut h = head("/p", "h");
            h.query = q.into();
            h
        };
        let key = "key=rrk_0123456789abcdef0123456789abcdef";
        let cases = [
            ("token=abc", "/p"),
            ("a=1&token=abc&b=%20x", "/p?a=1&b=%20x"),
            ("token=abc&a=1", "/p?a=1"),
            ("a=1&token", "/p?a=1"),
            ("b=2&&a=1&token=t", "/p?b=2&&a=1"),
            (
                "tokens=1&key=mine&mytoken=2",
                "/p?tokens=1&key=mine&mytoken=2",
            ),
            ("", "/p"),
            ("a=?&token=t", "/p?a=?"),
            ("&a=1&token=t", "/p?&a=1"),
        ];
        route.auth = true;
        for (q, want) in cases {
            assert_eq!(upstream_target(&route, &with(q)), want, "{q}");
        }
        assert_eq!(
            upstream_target(&route, &with(&format!("{key}&z=9"))),
            "/p?z=9"
        );
        // Without auth the route's token parameters are the upstream's own: sent as they came.
        route.auth = false;
        assert_eq!(
            upstream_target(&route, &with("a=1&token=abc")),
            "/p?a=1&token=abc"
        );
    }
}
