//! `proxy.routes`: the reverse proxy's routes (docs/proxy.md), an array of tables
//! (`[[proxy.routes]]` in TOML). In the environment the same value is written as a TOML
//! inline array: `RINGRELAY_PROXY_ROUTES='[{ prefix = "/", upstreams = [{ url =
//! "http://127.0.0.1:4001" }] }]'`.
//!
//! Refused at start: a prefix ringrelay's own routes would always win over (it could never
//! match), an upstream URL that is not `http://host:port`, a route without upstreams, two
//! routes with the same prefix and host, and an unknown field (a typo would otherwise change
//! routing silently).

use super::Kind;
use crate::config::apply::{Input, Raw};
use crate::config::render;
use crate::config::ConfigError;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Routes at most; each is matched by a scan, so the table stays small.
pub const MAX_ROUTES: usize = 256;
/// Upstreams of one route at most.
pub const MAX_UPSTREAMS: usize = 64;
/// Largest weight of one upstream.
pub const MAX_WEIGHT: u32 = 1000;

/// One upstream server of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUpstream {
    /// As written: `http://host:port`.
    pub url: String,
    /// Resolved once, at start.
    pub addr: SocketAddr,
    /// `host:port` as written, the `Host` sent when the route does not preserve the client's.
    pub authority: String,
    /// Empty: no region (reached only as a fallback, or when no region is asked for).
    pub region: String,
    pub weight: u32,
}

/// One `[[proxy.routes]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    /// Matched against the path, longest first; always starts with `/`.
    pub prefix: String,
    /// When set, the route matches only requests whose Host (without port) is this, case
    /// aside.
    pub host: Option<String>,
    pub upstreams: Vec<ProxyUpstream>,
    /// Remove the prefix from the path sent upstream (the rest keeps a leading `/`).
    pub strip_prefix: bool,
    /// Send the client's Host upstream rather than the upstream's own.
    pub preserve_host: bool,
    /// When the region asked for has no healthy upstream, use another region's.
    pub fallback: bool,
    /// Admit only requests with a valid token (as the relay's own routes).
    pub auth: bool,
    /// Requests in flight through this route per worker; over it, 503 (0: no cap).
    pub max_concurrent: usize,
    /// Active health checks of its upstreams (`health_path` set); `None`: passive only.
    pub health: Option<HealthCheck>,
}

/// A route's active health checks: `GET health_path` to each upstream every `interval`, on
/// each worker; `fall` failures in a row take it out of rotation, `rise` passes bring it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `health_path`: starts with `/`, no space or control character (a query is allowed).
    pub path: String,
    /// `health_interval` (default 5s, 10ms to 1h): also the longest one check may take.
    pub interval: Duration,
    /// `health_rise` (default 2, 1 to 1000): passes in a row that bring a down upstream back.
    pub rise: u32,
    /// `health_fall` (default 3, 1 to 1000): failures in a row that take it out.
    pub fall: u32,
}

/// Defaults of a route's health-check fields.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const HEALTH_RISE: u32 = 2;
pub const HEALTH_FALL: u32 = 3;

/// Paths ringrelay serves itself, exactly.
const OWN_PATHS: [&str; 7] = [
    "/v1", "/health", "/stats", "/metrics", "/demo", "/desktop", "/mobile",
];
/// Namespaces ringrelay serves itself: every path under them is its own.
const OWN_TREES: [&str; 4] = ["/v1/", "/desktop/", "/mobile/", "/demo/"];

/// Whether every path `prefix` matches is one of ringrelay's own routes, which always win:
/// such a route could never be used.
pub fn shadowed(prefix: &str) -> bool {
    OWN_PATHS.contains(&prefix.trim_end_matches('/'))
        || OWN_TREES.iter().any(|t| prefix.starts_with(t))
}

/// Whether a path is ringrelay's own (the proxy never takes it, even through a `/` route).
pub fn own_path(path: &str) -> bool {
    OWN_PATHS.contains(&path) || OWN_TREES.iter().any(|t| path.starts_with(t))
}

/// A region name: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_region(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(in crate::config) struct Routes;

const SHAPE: &str =
    "expected [[proxy.routes]] tables like { prefix = \"/\", upstreams = [{ url = \"http://127.0.0.1:4001\" }] }";

/// `http://host:port` and nothing more (a path, query, user or missing port is refused).
pub fn parse_upstream_url(url: &str) -> Result<(SocketAddr, String), String> {
    let bad = || format!("upstream url {url:?} is not http://host:port");
    let authority = url.strip_prefix("http://").ok_or_else(bad)?;
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad());
    }
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    let addr = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("upstream url {url:?}: cannot resolve {authority}"))?;
    Ok((addr, authority.to_string()))
}

fn text<'a>(t: &'a toml::Table, name: &str) -> Result<Option<&'a str>, String> {
    match t.get(name) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn flag(t: &toml::Table, name: &str) -> Result<bool, String> {
    match t.get(name) {
        None => Ok(false),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(_) => Err(format!("{name} must be true or false")),
    }
}

fn unknown(t: &toml::Table, known: &[&str], what: &str) -> Result<(), String> {
    match t.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown field {k:?} in {what}: expected {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

fn upstream(v: &toml::Value) -> Result<ProxyUpstream, String> {
    let t = v
        .as_table()
        .ok_or("each upstream is a table { url, region, weight }")?;
    unknown(t, &["url", "region", "weight"], "an upstream")?;
    let url = text(t, "url")?.ok_or("each upstream needs a url")?;
    let (addr, authority) = parse_upstream_url(url)?;
    let region = text(t, "region")?.unwrap_or("").to_string();
    if !region.is_empty() && !valid_region(&region) {
        return Err(format!(
            "upstream {url:?}: region {region:?} is not 1 to 64 of A-Z a-z 0-9 _ -"
        ));
    }
    let weight = match t.get("weight") {
        None => 1,
        Some(toml::Value::Integer(w)) if (1..=i64::from(MAX_WEIGHT)).contains(w) => *w as u32,
        Some(_) => {
            return Err(format!(
                "upstream {url:?}: weight must be 1 to {MAX_WEIGHT}"
            ))
        }
    };
    Ok(ProxyUpstream {
        url: url.to_string(),
        addr,
        authority,
        region,
        weight,
    })
}

const ROUTE_FIELDS: [&str; 12] = [
    "prefix",
    "host",
    "upstreams",
    "strip_prefix",
    "preserve_host",
    "fallback",
    "auth",
    "max_concurrent",
    "health_path",
    "health_interval",
    "health_rise",
    "health_fall",
];

/// A count field of a health check, 1 to 1000.
fn count(t: &toml::Table, name: &str, default: u32) -> Result<u32, String> {
    match t.get(name) {
        None => Ok(default),
        Some(toml::Value::Integer(n)) if (1..=1000).contains(n) => Ok(*n as u32),
        Some(_) => Err(format!("{name} must be 1 to 1000")),
    }
}

/// The health-check fields of a route; the others without `health_path` are refused (they
/// would do nothing).
fn health_check(t: &toml::Table) -> Result<Option<HealthCheck>, String> {
    let Some(path) = text(t, "health_path")? else {
        return match ["health_interval", "health_rise", "health_fall"]
            .into_iter()
            .find(|k| t.contains_key(*k))
        {
            Some(k) => Err(format!("{k} needs health_path")),
            None => Ok(None),
        };
    };
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "health_path {path:?} must start with / and hold no space or control character"
        ));
    }
    let interval = match text(t, "health_interval")? {
        None => HEALTH_INTERVAL,
        Some(s) => crate::config::parse_duration(s)
            .ok()
            .filter(|d| (Duration::from_millis(10)..=Duration::from_secs(3600)).contains(d))
            .ok_or_else(|| format!("health_interval {s:?} must be a duration from 10ms to 1h"))?,
    };
    Ok(Some(HealthCheck {
        path: path.to_string(),
        interval,
        rise: count(t, "health_rise", HEALTH_RISE)?,
        fall: count(t, "health_fall", HEALTH_FALL)?,
    }))
}

fn route(v: &toml::Value) -> Result<ProxyRoute, String> {
    let t = v.as_table().ok_or(SHAPE)?;
    unknown(t, &ROUTE_FIELDS, "a route")?;
    let prefix = text(t, "prefix")?.ok_or("each route needs a prefix")?;
    if !prefix.starts_with('/') || prefix.bytes().any(|b| b <= b' ' || b == b'?' || b == 0x7f) {
        return Err(format!(
            "route prefix {prefix:?} must start with / and hold no space or ?"
        ));
    }
    if shadowed(prefix) {
        return Err(format!(
            "route prefix {prefix:?} lies inside ringrelay's own routes (/v1/, /health, /demo, ...), which always win: it could never match"
        ));
    }
    let host = text(t, "host")?.map(|h| h.trim().to_ascii_lowercase());
    let upstreams = match t.get("upstreams") {
        Some(toml::Value::Array(items)) => items.iter().map(upstream).collect::<Result<_, _>>(),
        _ => Err(format!(
            "route {prefix:?} needs upstreams = [{{ url = ... }}]"
        )),
    }
    .map_err(|e| format!("route {prefix:?}: {e}"))?;
    let upstreams: Vec<ProxyUpstream> = upstreams;
    if upstreams.is_empty() || upstreams.len() > MAX_UPSTREAMS {
        return Err(format!(
            "route {prefix:?} needs 1 to {MAX_UPSTREAMS} upstreams"
        ));
    }
    let max_concurrent = match t.get("max_concurrent") {
        None => 0,
        Some(toml::Value::Integer(n)) if (0..=1_000_000).contains(n) => *n as usize,
        Some(_) => {
            return Err(format!(
                "route {prefix:?}: max_concurrent must be 0 to 1000000"
            ))
        }
    };
    Ok(ProxyRoute {
        prefix: prefix.to_string(),
        host: host.filter(|h| !h.is_empty()),
        upstreams,
        strip_prefix: flag(t, "strip_prefix")?,
        preserve_host: flag(t, "preserve_host")?,
        fallback: flag(t, "fallback")?,
        auth: flag(t, "auth")?,
        max_concurrent,
        health: health_check(t).map_err(|e| format!("route {prefix:?}: {e}"))?,
    })
}

/// Parses the routes from a TOML array, checking each and that no two share prefix and host.
pub fn parse_routes(items: &[toml::Value]) -> Result<Vec<ProxyRoute>, String> {
    if items.len() > MAX_ROUTES {
        return Err(format!("at most {MAX_ROUTES} routes"));
    }
    let routes: Vec<ProxyRoute> = items.iter().map(route).collect::<Result<_, _>>()?;
    for (n, r) in routes.iter().enumerate() {
        if routes[..n]
            .iter()
            .any(|o| o.prefix == r.prefix && o.host == r.host)
        {
            return Err(format!(
                "two routes with prefix {:?} and the same host",
                r.prefix
            ));
        }
    }
    Ok(routes)
}

impl Kind<Vec<ProxyRoute>> for Routes {
    fn parse(&self, i: &Input<'_>) -> Result<Vec<ProxyRoute>, ConfigError> {
        let parsed;
        let items = match i.raw {
            Raw::Toml(toml::Value::Array(items)) => items.as_slice(),
            Raw::Toml(_) => return Err(i.fail(SHAPE)),
            Raw::Text(s) if s.trim().is_empty() => return Ok(Vec::new()),
            Raw::Text(s) => {
                parsed = format!("v = {s}")
                    .parse::<toml::Table>()
                    .map_err(|_| i.fail("expected a TOML inline array of route tables"))?;
                match parsed.get("v") {
                    Some(toml::Value::Array(items)) => items.as_slice(),
                    _ => return Err(i.fail(SHAPE)),
                }
            }
        };
        parse_routes(items).map_err(|e| i.fail(e))
    }

    fn toml(&self, v: &Vec<ProxyRoute>) -> Option<String> {
        let routes: Vec<String> = v.iter().map(route_toml).collect();
        Some(format!("[{}]", routes.join(", ")))
    }
}

fn route_toml(r: &ProxyRoute) -> String {
    let ups: Vec<String> = r
        .upstreams
        .iter()
        .map(|u| {
            format!(
                "{{ url = {}, region = {}, weight = {} }}",
                render::string(&u.url),
                render::string(&u.region),
                u.weight
            )
        })
        .collect();
    let host = r
        .host
        .as_deref()
        .map(|h| format!("host = {}, ", render::string(h)))
        .unwrap_or_default();
    let health = r
        .health
        .as_ref()
        .map(|h| {
            format!(
                ", health_path = {}, health_interval = {}, health_rise = {}, health_fall = {}",
                render::string(&h.path),
                render::string(&crate::config::format_duration(h.interval)),
                h.rise,
                h.fall
            )
        })
        .unwrap_or_default();
    format!(
        "{{ prefix = {}, {host}upstreams = [{}], strip_prefix = {}, preserve_host = {}, fallback = {}, auth = {}, max_concurrent = {}{health} }}",
        render::string(&r.prefix),
        ups.join(", "),
        r.strip_prefix,
        r.preserve_host,
        r.fallback,
        r.auth,
        r.max_concurrent
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ProxyRoute>, String> {
        let t: toml::Table = format!("v = {text}").parse().unwrap();
        parse_routes(t["v"].as_array().unwrap())
    }

    #[test]
    fn shadowing_prefixes_are_refused() {
        for p in [
            "/v1/",
            "/v1",
            "/v1/relay/",
            "/health",
            "/demo/",
            "/desktop/x",
            "/mobile/",
        ] {
            assert!(shadowed(p), "{p}");
            let e = parse(&format!(
                "[{{ prefix = {p:?}, upstreams = [{{ url = \"http://127.0.0.1:1\" }}] }}]"
            ))
            .unwrap_err();
            assert!(e.contains(p) && e.contains("never match"), "{e}");
        }
        for p in ["/", "/api", "/v2/", "/healthz", "/v1x"] {
            assert!(!shadowed(p), "{p}");
        }
    }

    #[test]
    fn upstream_urls_must_be_host_and_port() {
        for bad in [
            "https://127.0.0.1:1",
            "http://127.0.0.1",
            "http://127.0.0.1:1/path",
            "http://u@127.0.0.1:1",
            "http://:1",
            "http://127.0.0.1:0",
            "127.0.0.1:1",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
        let (addr, auth) = parse_upstream_url("http://127.0.0.1:4001/").unwrap();
        assert_eq!((addr.port(), auth.as_str()), (4001, "127.0.0.1:4001"));
    }

    #[test]
    fn routes_parse_with_defaults_and_refuse_mistakes() {
        let r = parse(
            r#"[{ prefix = "/", upstreams = [{ url = "http://127.0.0.1:4001", region = "1" }, { url = "http://127.0.0.1:4002", region = "2", weight = 3 }], fallback = true }]"#,
        )
        .unwrap();
        assert_eq!(r[0].upstreams[0].weight, 1);
        assert_eq!(r[0].upstreams[1].weight, 3);
        assert!(r[0].fallback && !r[0].strip_prefix && !r[0].preserve_host && !r[0].auth);
        for bad in [
            r#"[{ prefix = "/", upstreams = [] }]"#,
            r#"[{ prefix = "x", upstreams = [{ url = "http://127.0.0.1:1" }] }]"#,
            r#"[{ prefix = "/", upstreams = [{ url = "http://127.0.0.1:1", region = "a b" }] }]"#,
            r#"[{ prefix = "/", upstreams = [{ url = "http://127.0.0.1:1", weight = 0 }] }]"#,
            r#"[{ prefix = "/", upstream = [{ url = "http://127.0.0.1:1" }] }]"#,
            r#"[{ prefix = "/", upstreams = [{ url = "http://127.0.0.1:1" }] }, { prefix = "/", upstreams = [{ url = "http://127.0.0.1:2" }] }]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let toml = Routes.toml(&r).unwrap();
        assert_eq!(parse(&toml).unwrap(), r);
    }

    #[test]
    fn health_checks_parse_with_defaults_round_trip_and_refuse_mistakes() {
        let up = r#"upstreams = [{ url = "http://127.0.0.1:4001" }]"#;
        let r = parse(&format!(r#"[{{ prefix = "/", {up} }}]"#)).unwrap();
        assert_eq!(r[0].health, None);
        let r = parse(&format!(
            r#"[{{ prefix = "/", {up}, health_path = "/healthz?deep=1" }}, {{ prefix = "/b", {up}, health_path = "/h", health_interval = "250ms", health_rise = 1, health_fall = 5 }}]"#
        ))
        .unwrap();
        let h = r[0].health.as_ref().unwrap();
        assert_eq!(
            (h.interval, h.rise, h.fall),
            (HEALTH_INTERVAL, HEALTH_RISE, HEALTH_FALL)
        );
        assert_eq!(h.path, "/healthz?deep=1");
        let h = r[1].health.as_ref().unwrap();
        assert_eq!(
            (h.interval, h.rise, h.fall),
            (Duration::from_millis(250), 1, 5)
        );
        assert_eq!(parse(&Routes.toml(&r).unwrap()).unwrap(), r);
        for (bad, says) in [
            (r#"health_path = "h""#, "health_path"),
            (r#"health_path = "/a b""#, "health_path"),
            (
                r#"health_interval = "1s""#,
                "health_interval needs health_path",
            ),
            (
                r#"health_path = "/h", health_interval = "1ms""#,
                "health_interval",
            ),
            (
                r#"health_path = "/h", health_interval = "5""#,
                "health_interval",
            ),
            (r#"health_path = "/h", health_rise = 0"#, "health_rise"),
            (r#"health_path = "/h", health_fall = 1001"#, "health_fall"),
        ] {
            let e = parse(&format!(r#"[{{ prefix = "/x", {up}, {bad} }}]"#)).unwrap_err();
            assert!(e.contains(says) && e.contains("\"/x\""), "{bad}: {e}");
        }
    }
}
