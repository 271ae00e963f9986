//! The checks that need the merged config: one key against another. Each error names the key
//! the operator set (and the other one), with where its value came from.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::layers::Origins;
use super::{format_duration, ClientAuth, ClientIpHeader, Config, ConfigError};

/// Builds the errors, blaming a key with the layer that set it.
struct Blame<'a>(&'a Origins);

impl Blame<'_> {
    fn origin_of(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn invalid(&self, key: &str, value: String, reason: String) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            value,
            reason,
            origin: self
                .origin_of(key)
                .unwrap_or_else(|| "the default".to_string()),
        }
    }
}

pub(super) fn validate(cfg: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let blame = Blame(origins);
    session(cfg, &blame)?;
    limits(cfg, &blame)?;
    cluster(cfg, &blame)?;
    secrets(cfg, &blame)?;
    security(cfg, &blame)?;
    cors(cfg, &blame)?;
    tls(cfg, &blame)?;
    listeners(cfg, &blame)
}

/// A TLS listener cannot share a port with the plain or admin listener. (Whether it has a
/// certificate, and each certificate its key, is checked when the files are read at start,
/// `tls::server_config`, so that each key here loads on its own.)
fn tls(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let t = &cfg.tls;
    grants(cfg, blame)?;
    let Some(listen) = t.listen else {
        return Ok(());
    };
    for (other, addr) in [("listen", cfg.listen), ("admin_listen", cfg.admin_listen)] {
        if overlaps(listen, addr) {
            let reason = format!("must not use the same port as {other} ({addr})");
            return Err(blame.invalid("tls.listen", format!("\"{listen}\""), reason));
        }
    }
    Ok(())
}

/// Grants admit by a client certificate, which only the TLS listener asks for: without it, or
/// with `tls.client_auth = "off"`, they would never match yet still turn auth on.
fn grants(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let t = &cfg.tls;
    let reason = if t.client_grants.is_empty() {
        return Ok(());
    } else if t.listen.is_none() {
        "needs tls.listen: a client certificate only comes on the TLS listener"
    } else if t.client_auth == ClientAuth::Off {
        "needs tls.client_auth = \"optional\" or \"required\": with \"off\" no client \
         certificate is asked for"
    } else {
        return Ok(());
    };
    let value = format!("{} grants", t.client_grants.len());
    Err(blame.invalid("tls.client_grants", value, reason.to_string()))
}

fn session(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let s = &cfg.session;
    if s.peer_timeout > s.ping_interval {
        return Ok(());
    }
    let (ping, peer) = (
        format_duration(s.ping_interval),
        format_duration(s.peer_timeout),
    );
    // Blame the key the operator set; both are named either way.
    Err(if blame.origin_of("session.peer_timeout").is_some() {
        let reason = format!("must be greater than session.ping_interval ({ping})");
        blame.invalid("session.peer_timeout", format!("{peer:?}"), reason)
    } else {
        let reason = format!("must be less than session.peer_timeout ({peer})");
        blame.invalid("session.ping_interval", format!("{ping:?}"), reason)
    })
}

/// A write timeout no longer than the default grace is itself the bound (it ends blocked
/// writes first); only a grace set explicitly at or past it is a mistake worth naming.
fn limits(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let l = &cfg.limits;
    let key = "limits.blocked_write_grace";
    if l.blocked_write_grace < l.write_timeout || blame.origin_of(key).is_none() {
        return Ok(());
    }
    let reason = format!(
        "must be shorter than limits.write_timeout ({})",
        format_duration(l.write_timeout)
    );
    let grace = format_duration(l.blocked_write_grace);
    Err(blame.invalid(key, format!("{grace:?}"), reason))
}

fn cluster(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let c = &cfg.cluster;
    if let (Some(url), false) = (&c.redis_url, cfg!(feature = "cluster")) {
        // Refused here, not when the cluster thread would start: a node that cannot join its
        // fleet must not come up looking like a single node.
        let reason = "cluster mode needs the `cluster` cargo feature, which this build was \
                      made without (build with the default features)";
        let url = super::redact::redact_url(url);
        return Err(blame.invalid("cluster.redis_url", format!("{url:?}"), reason.to_string()));
    }
    let heartbeat = format_duration(c.heartbeat);
    if c.node_ttl <= c.heartbeat {
        let reason = format!(
            "must be longer than cluster.heartbeat ({heartbeat}), or a live node's entry would lapse"
        );
        let ttl = format_duration(c.node_ttl);
        return Err(blame.invalid("cluster.node_ttl", format!("{ttl:?}"), reason));
    }
    if c.session_ttl <= c.heartbeat {
        let reason =
            format!("must be longer than cluster.heartbeat ({heartbeat}), which renews ownership");
        let ttl = format_duration(c.session_ttl);
        return Err(blame.invalid("cluster.session_ttl", format!("{ttl:?}"), reason));
    }
    if c.redis_url.is_some()
        && c.internal_listen.is_some()
        && c.secret.is_none()
        && c.secret_file.is_none()
    {
        // Without it anybody who reaches the port could inject peers into any session.
        let reason = "needs cluster.secret or cluster.secret_file, which authenticates the link";
        let addr = c.internal_listen.map(|a| a.to_string()).unwrap_or_default();
        let key = "cluster.internal_listen";
        return Err(blame.invalid(key, format!("{addr:?}"), reason.to_string()));
    }
    cluster_tls(cfg, blame)
}

/// `cluster.tls_server_name` must be a name TLS can check a certificate against. (That the
/// three files go together is checked where they are read, `tls::link_tls`, like `tls.*`.)
fn cluster_tls(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let name = &cfg.cluster.tls_server_name;
    if !name.is_empty() && rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
        let reason = "not a DNS name or IP address a certificate can be checked against";
        return Err(blame.invalid(
            "cluster.tls_server_name",
            format!("{name:?}"),
            reason.into(),
        ));
    }
    Ok(())
}

/// Each secret is given inline or as a file, not both (even from different layers).
fn secrets(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let shown = |path: &Option<std::path::PathBuf>| {
        let path = path.as_deref().unwrap_or(Path::new(""));
        format!("{:?}", path.display().to_string())
    };
    let c = &cfg.cluster;
    if c.secret.is_some() && c.secret_file.is_some() {
        let reason = "set only one of cluster.secret and this key".to_string();
        return Err(blame.invalid("cluster.secret_file", shown(&c.secret_file), reason));
    }
    let a = &cfg.auth;
    if a.jwt_secret.is_some() && a.jwt_secret_file.is_some() {
        let other = blame.origin_of("auth.jwt_secret").unwrap_or_default();
        let reason = format!("set only one of auth.jwt_secret (set by {other}) and this key");
        let key = "auth.jwt_secret_file";
        return Err(blame.invalid(key, shown(&a.jwt_secret_file), reason));
    }
    Ok(())
}

/// No proxy would ever be believed: every connection would be read as HTTP and a real
/// PROXY header answered 400, which is a mistake to report now rather than in production.
fn security(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let sec = &cfg.security;
    if sec.client_ip_header != ClientIpHeader::ProxyProtocol || !sec.trusted_proxies.is_empty() {
        return Ok(());
    }
    let reason = "needs security.trusted_proxies: the PROXY header is read only from them";
    Err(blame.invalid(
        "security.client_ip_header",
        "\"proxy-protocol\"".to_string(),
        reason.to_string(),
    ))
}

/// A CORS origin must also pass `security.allowed_origins`, or its page's preflight would be
/// answered and every request after it refused 403: a config that cannot work.
fn cors(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    let allowed = &cfg.security.allowed_origins;
    if allowed.iter().any(|o| o == "*") {
        return Ok(());
    }
    let Some(lost) = cfg
        .cors
        .allowed_origins
        .iter()
        .find(|o| !allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
    else {
        return Ok(());
    };
    let reason = format!(
        "{lost:?} is not in security.allowed_origins, so its requests would be refused 403"
    );
    let value = format!("{:?}", cfg.cors.allowed_origins);
    Err(blame.invalid("cors.allowed_origins", value, reason))
}

/// With SO_REUSEPORT on both listeners the kernel would spread connections between them.
fn listeners(cfg: &Config, blame: &Blame<'_>) -> Result<(), ConfigError> {
    if !overlaps(cfg.listen, cfg.admin_listen) {
        return Ok(());
    }
    let reason = format!("must not use the same port as listen ({})", cfg.listen);
    let value = format!("\"{}\"", cfg.admin_listen);
    Err(blame.invalid("admin_listen", value, reason))
}

/// Same port, and one address covers the other: equal, or a wildcard of the same family, or
/// `[::]`, which is dual-stack by default. Port 0 asks the kernel for a free port each time.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |x: IpAddr, y: IpAddr| x == y || (x.is_unspecified() && (x.is_ipv6() || y.is_ipv4()));
    a.port() != 0 && a.port() == b.port() && (covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}
