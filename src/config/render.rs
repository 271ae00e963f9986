//! `Config::to_toml`: written by hand so the key order matches the docs and durations stay
//! human-readable strings.

use std::fmt::Write;
use std::time::Duration;

use super::{format_duration, Config};

fn string(s: &str) -> String {
    // toml's own quoting, so any escape the value needs is right.
    toml::Value::String(s.to_string()).to_string()
}

fn list<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let quoted: Vec<String> = items.map(|s| string(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

fn duration(d: Duration) -> String {
    string(&format_duration(d))
}

/// Collects `key = value` lines; writing to a String cannot fail, hence the ignored results.
struct Out(String);

impl Out {
    fn key(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{key} = {value}");
    }
    fn section(&mut self, name: &str) {
        let _ = writeln!(self.0, "\n[{name}]");
    }
}

pub(super) fn to_toml(cfg: &Config) -> String {
    let mut out = Out(String::new());
    out.key("listen", string(&cfg.listen.to_string()));
    out.key("admin_listen", string(&cfg.admin_listen.to_string()));
    out.key("workers", cfg.workers);
    out.key("driver", string(cfg.driver.as_str()));
    out.key("shutdown_grace", duration(cfg.shutdown_grace));

    let l = &cfg.limits;
    out.section("limits");
    out.key("max_message_bytes", l.max_message_bytes);
    out.key("handshake_timeout", duration(l.handshake_timeout));
    out.key("max_header_bytes", l.max_header_bytes);
    out.key("max_headers", l.max_headers);
    out.key("read_buffer_bytes", l.read_buffer_bytes);
    out.key("pool_buffers", l.pool_buffers);
    out.key("max_read_buffers", l.max_read_buffers);
    out.key("handoff_queue", l.handoff_queue);
    out.key("max_connections_per_worker", l.max_connections_per_worker);
    out.key("max_connections", l.max_connections);
    out.key("max_sessions", l.max_sessions);
    out.key("reconnect_reserve_percent", l.reconnect_reserve_percent);
    out.key("max_connections_per_ip", l.max_connections_per_ip);
    out.key("ip_connect_rate", l.ip_connect_rate);
    out.key("ip_connect_burst", l.ip_connect_burst);
    out.key("ip_table_size", l.ip_table_size);
    out.key("message_rate", l.message_rate);
    out.key("message_burst", l.message_burst);
    out.key("byte_rate", l.byte_rate);
    out.key("byte_burst", l.byte_burst);
    out.key("max_frames_per_message", l.max_frames_per_message);
    out.key("write_timeout", duration(l.write_timeout));
    out.key("blocked_write_grace", duration(l.blocked_write_grace));
    out.key("max_blocked_writes_per_ip", l.max_blocked_writes_per_ip);
    out.key(
        "max_blocked_writes_per_session",
        l.max_blocked_writes_per_session,
    );
    out.key("pool_reserve_percent", l.pool_reserve_percent);
    out.key("accept_backoff_max", duration(l.accept_backoff_max));
    out.key("max_handshakes_per_ip", l.max_handshakes_per_ip);
    out.key("max_handshakes", l.max_handshakes);

    let s = &cfg.session;
    out.section("session");
    out.key("ping_interval", duration(s.ping_interval));
    out.key("peer_timeout", duration(s.peer_timeout));
    out.key("idle_timeout", duration(s.idle_timeout));
    out.key("linger", duration(s.linger));
    out.key("buffer_bytes", s.buffer_bytes);
    out.key("buffer_messages", s.buffer_messages);
    out.key("overflow", string(s.overflow.as_str()));
    out.key("core_buffer_budget", s.core_buffer_budget);
    out.key("replay_bytes", s.replay_bytes);
    out.key("close_timeout", duration(s.close_timeout));

    let b = &cfg.bridge;
    out.section("bridge");
    out.key("agent_role", string(&b.agent_role));
    out.key("timeout", duration(b.timeout));
    out.key("max_body_bytes", b.max_body_bytes);
    out.key("max_response_bytes", b.max_response_bytes);
    out.key("allowed_methods", list(b.allowed_methods.iter()));
    out.key("max_in_flight", b.max_in_flight);
    out.key("allow_active_content", b.allow_active_content);
    out.key("pass_cookies", b.pass_cookies);

    let a = &cfg.auth;
    out.section("auth");
    if a.jwt_secret.is_some() {
        out.0.push_str("# jwt_secret is set but not printed\n");
    }
    if let Some(path) = &a.jwt_secret_file {
        out.key("jwt_secret_file", string(&path.to_string_lossy()));
    }
    out.key("algorithms", list(a.algorithms.iter().map(|x| x.as_str())));
    if let Some(aud) = &a.audience {
        out.key("audience", string(aud));
    }
    if let Some(iss) = &a.issuer {
        out.key("issuer", string(iss));
    }
    out.key("leeway", duration(a.leeway));
    out.key("max_token_bytes", a.max_token_bytes);
    out.key("max_token_lifetime", duration(a.max_token_lifetime));

    let sec = &cfg.security;
    out.section("security");
    out.key("allowed_origins", list(sec.allowed_origins.iter()));
    out.key("require_origin", sec.require_origin);
    let proxies: Vec<String> = sec.trusted_proxies.iter().map(|p| p.to_string()).collect();
    out.key("trusted_proxies", list(proxies.iter()));
    out.key("echo_route", string(sec.echo_route.as_str()));
    out.key("client_ip_header", string(sec.client_ip_header.as_str()));

    out.section("log");
    out.key("level", string(&cfg.log.level));
    out.key("format", string(cfg.log.format.as_str()));

    out.section("stats");
    out.key("latency", cfg.stats.latency);

    let c = &cfg.cluster;
    out.section("cluster");
    let url = c.redis_url.as_deref().unwrap_or("");
    if super::has_password(url) {
        out.0
            .push_str("# the password in redis_url is not printed\n");
    }
    out.key("redis_url", string(&super::redact_url(url)));
    out.key("node_id", string(&c.node_id));
    out.key("region", string(&c.region));
    out.key("public_url", string(&c.public_url));
    let internal = c.internal_listen.map(|a| a.to_string()).unwrap_or_default();
    out.key("internal_listen", string(&internal));
    out.key("heartbeat", duration(c.heartbeat));
    out.key("node_ttl", duration(c.node_ttl));
    out.key("key_prefix", string(&c.key_prefix));
    if c.secret.is_some() {
        out.0.push_str("# secret is set but not printed\n");
    }
    if let Some(path) = &c.secret_file {
        out.key("secret_file", string(&path.to_string_lossy()));
    }
    out.key("session_ttl", duration(c.session_ttl));
    out.key("lookup_timeout", duration(c.lookup_timeout));
    out.key("request_queue", c.request_queue);
    out.key("max_pending_links_per_ip", c.max_pending_links_per_ip);
    out.key("max_pending_links", c.max_pending_links);

    out.section("demo");
    match cfg.demo.enabled {
        crate::config::DemoMode::Auto => out.key("enabled", string("auto")),
        mode => out.key("enabled", mode.as_str()),
    }
    out.0
}
