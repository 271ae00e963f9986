//! `Config::to_toml`: written by hand so the key order matches the docs and durations stay
//! human-readable strings.

use std::fmt::Write;
use std::time::Duration;

use super::{format_duration, Config};

fn string(s: &str) -> String {
    // toml's own quoting, so any escape the value needs is right.
    toml::Value::String(s.to_string()).to_string()
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

    let s = &cfg.session;
    out.section("session");
    out.key("ping_interval", duration(s.ping_interval));
    out.key("peer_timeout", duration(s.peer_timeout));
    out.key("idle_timeout", duration(s.idle_timeout));
    out.key("linger", duration(s.linger));
    out.key("buffer_bytes", s.buffer_bytes);
    out.key("close_timeout", duration(s.close_timeout));

    let b = &cfg.bridge;
    out.section("bridge");
    out.key("agent_role", string(&b.agent_role));
    out.key("timeout", duration(b.timeout));
    out.key("max_body_bytes", b.max_body_bytes);

    out.section("auth");
    if cfg.auth.jwt_secret.is_some() {
        out.0.push_str("# jwt_secret is set but not printed\n");
    }
    if let Some(path) = &cfg.auth.jwt_secret_file {
        out.key("jwt_secret_file", string(&path.to_string_lossy()));
    }

    out.section("security");
    let origins: Vec<String> = cfg
        .security
        .allowed_origins
        .iter()
        .map(|o| string(o))
        .collect();
    out.key("allowed_origins", format!("[{}]", origins.join(", ")));

    out.section("log");
    out.key("level", string(&cfg.log.level));
    out.key("format", string(cfg.log.format.as_str()));

    out.section("stats");
    out.key("latency", cfg.stats.latency);
    out.0
}
