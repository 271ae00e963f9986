//! Unit tests for the config module. Helpers live here; the cases are split by topic.

mod docs;
mod duration;
mod errors;
mod grants;
mod keys;
mod layering;
mod live;
mod output;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

pub(super) const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(None, &env(pairs), &CliOverrides::default())
}

/// A file in the temp dir, removed on drop; names are unique per process and call.
pub(super) struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(contents: &[u8]) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ringrelay-config-test-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let file = TempFile::new(text.as_bytes());
    Config::load(Some(file.path()), &[], &CliOverrides::default())
}

/// A non-default value, as environment text, for every key.
pub(super) fn sample(key: &str) -> &'static str {
    match key {
        "listen" => "0.0.0.0:8000",
        "admin_listen" => "[::1]:9999",
        "workers" => "3",
        "driver" => "epoll",
        "shutdown_grace" => "3s",
        "upgrade_timeout" => "7s",
        "limits.max_message_bytes" => "2048",
        "limits.handshake_timeout" => "2500ms",
        "limits.max_header_bytes" => "4096",
        "limits.max_headers" => "32",
        "limits.read_buffer_bytes" => "8192",
        "limits.large_read_buffer_bytes" => "32768",
        "limits.pool_buffers" => "16",
        "limits.max_read_buffers" => "32",
        "limits.handoff_queue" => "64",
        "limits.max_connections_per_worker" => "500",
        "limits.max_connections" => "700",
        "limits.max_sessions" => "300",
        "limits.reconnect_reserve_percent" => "20",
        "limits.max_connections_per_ip" => "9",
        "limits.ip_connect_rate" => "10",
        "limits.ip_connect_burst" => "5",
        "limits.ip_table_size" => "64",
        "limits.message_rate" => "50",
        "limits.message_burst" => "20",
        "limits.byte_rate" => "100000",
        "limits.byte_burst" => "50000",
        "limits.max_frames_per_message" => "16",
        "limits.max_pending_pongs" => "4",
        "limits.write_timeout" => "15s",
        "limits.blocked_write_grace" => "500ms",
        "limits.max_blocked_writes_per_ip" => "5",
        "limits.max_blocked_writes_per_session" => "3",
        "limits.pool_reserve_percent" => "25",
        "limits.accept_backoff_max" => "250ms",
        "limits.max_handshakes_per_ip" => "5",
        "limits.max_handshakes" => "77",
        "session.ping_interval" => "10s",
        "session.peer_timeout" => "100s",
        "session.idle_timeout" => "1h",
        "session.linger" => "0s",
        "session.buffer_bytes" => "0",
        "session.buffer_messages" => "7",
        "session.overflow" => "drop_oldest",
        "session.core_buffer_budget" => "1000000",
        "session.replay_bytes" => "4096",
        "session.ack_every" => "16",
        "session.state_dir" => "/var/lib/ringrelay",
        "session.ack_delay" => "20ms",
        "session.close_timeout" => "500ms",
        "bridge.agent_role" => "bot_2",
        "bridge.timeout" => "90s",
        "bridge.max_body_bytes" => "1024",
        "bridge.max_response_bytes" => "2048",
        "bridge.allowed_methods" => "GET, PROPFIND",
        "bridge.max_in_flight" => "3",
        "bridge.allow_active_content" => "true",
        "bridge.pass_cookies" => "true",
        "cors.allowed_origins" => "https://a.example",
        "cors.allowed_headers" => "authorization, x-trace",
        "cors.expose_headers" => "x-request-id, etag",
        "cors.max_age" => "1h",
        "auth.jwt_secret" => SECRET,
        "auth.jwt_secret_file" => "/run/credentials/ringrelay.service/jwt",
        "auth.keys" => "k1=/run/credentials/ringrelay.service/k1, k-2=/run/k2.key",
        "auth.algorithms" => "HS256, HS512",
        "auth.audience" => "relay.example",
        "auth.issuer" => "https://auth.example",
        "auth.leeway" => "5s",
        "auth.max_token_bytes" => "2048",
        "auth.api_keys_file" => "/etc/ringrelay/api-keys",
        "auth.max_token_lifetime" => "720h",
        "security.allowed_origins" => "https://a.example, http://localhost:3000",
        "security.require_origin" => "true",
        "security.trusted_proxies" => "10.0.0.0/8, ::1, 192.168.1.7",
        "security.allowed_cidrs" => "10.0.0.0/8, 2001:db8::/32",
        "security.denied_cidrs" => "10.9.0.0/16, 2001:db8::7",
        "security.echo_route" => "off",
        "security.client_ip_header" => "forwarded",
        "security.hsts_max_age" => "720h",
        "tls.listen" => "0.0.0.0:8443",
        "tls.cert_file" => "/etc/ringrelay/tls/relay.pem",
        "tls.key_file" => "/etc/ringrelay/tls/relay.key",
        "tls.certificates" => "/etc/ringrelay/tls/b.pem:/etc/ringrelay/tls/b.key",
        "tls.min_version" => "1.3",
        "tls.client_ca_file" => "/etc/ringrelay/tls/clients.pem",
        "tls.client_auth" => "optional",
        "tls.client_grants" => "device-42=s42/agent, ops.example=*",
        "admin.allowed_cidrs" => "127.0.0.1, 192.168.0.0/16",
        "admin_tls.cert_file" => "/etc/ringrelay/tls/admin.pem",
        "admin_tls.key_file" => "/etc/ringrelay/tls/admin.key",
        "admin_tls.client_ca_file" => "/etc/ringrelay/tls/scrapers.pem",
        "admin_tls.client_auth" => "required",
        "log.level" => "warn,ringrelay=debug",
        "log.format" => "json",
        "log.access" => "file:/var/log/ringrelay/access.log",
        "stats.latency" => "false",
        "demo.enabled" => "true",
        "tunnel.enabled" => "true",
        "tunnel.bind" => "0.0.0.0",
        "tunnel.ports" => "30000-30010",
        "tunnel.public_host" => "t.example.com",
        "tunnel.max_tunnels" => "50",
        "tunnel.reserved_percent" => "20",
        "tunnel.max_tunnels_per_subject" => "2",
        "tunnel.max_connections_per_tunnel" => "7",
        "tunnel.accept_timeout" => "3s",
        "tunnel.idle_timeout" => "90s",
        "tunnel.reconnect_grace" => "15s",
        "tunnel.max_bandwidth" => "1000000",
        "tunnel.redirect_margin_percent" => "25",
        "proxy.routes" => {
            r#"[{ prefix = "/api", upstreams = [{ url = "http://127.0.0.1:4001", region = "1", weight = 2 }], strip_prefix = true }]"#
        }
        "proxy.region_header" => "x-zone",
        "proxy.region_query" => "zone",
        "proxy.default_region" => "eu",
        "proxy.max_body_bytes" => "1048576",
        "proxy.connect_timeout" => "2s",
        "proxy.response_timeout" => "20s",
        "proxy.idle_timeout" => "15s",
        "proxy.pool_max_idle" => "4",
        "proxy.pool_idle_timeout" => "10s",
        "proxy.eject_after" => "5",
        "proxy.eject_backoff" => "1s",
        "cluster.redis_url" => "redis://127.0.0.1:6390/",
        "cluster.node_id" => "node-7",
        "cluster.region" => "eu-west",
        "cluster.public_url" => "wss://relay-7.example",
        "cluster.internal_listen" => "10.0.0.7:7000",
        "cluster.heartbeat" => "2s",
        "cluster.node_ttl" => "7s",
        "cluster.key_prefix" => "rr-test",
        "cluster.secret" => SECRET,
        "cluster.secret_file" => "/run/credentials/ringrelay.service/cluster",
        "cluster.session_ttl" => "40s",
        "cluster.lookup_timeout" => "3s",
        "cluster.request_queue" => "100",
        "cluster.max_pending_links_per_ip" => "4",
        "cluster.max_pending_links" => "40",
        "cluster.tls_cert_file" => "/etc/ringrelay/cluster/node.pem",
        "cluster.tls_key_file" => "/etc/ringrelay/cluster/node.key",
        "cluster.tls_ca_file" => "/etc/ringrelay/cluster/ca.pem",
        "cluster.tls_server_name" => "relay-7.cluster.internal",
        other => panic!("no sample for {other}: add one when adding a key"),
    }
}

/// Every key changed at once (through the environment). `auth.jwt_secret` is left out because
/// it excludes `auth.jwt_secret_file`.
pub(super) fn everything_changed() -> Config {
    let vars: Vec<(String, String)> = apply::KEYS
        .iter()
        .filter(|k| !matches!(**k, "auth.jwt_secret" | "cluster.secret"))
        .map(|k| (apply::env_var_name(k), sample(k).to_string()))
        .collect();
    Config::load(None, &vars, &CliOverrides::default()).expect("all samples are valid")
}

#[test]
fn defaults_match_the_contract() {
    let c = Config::default();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9090");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(c.workers, cpus.clamp(1, 1024));
    assert_eq!(c.driver, DriverChoice::Auto);
    assert_eq!(format_duration(c.shutdown_grace), "10s");

    let l = &c.limits;
    assert_eq!(l.max_message_bytes, 1_048_576);
    assert_eq!(format_duration(l.handshake_timeout), "10s");
    assert_eq!(l.max_header_bytes, 8192);
    assert_eq!(l.max_headers, 100);
    assert_eq!(l.read_buffer_bytes, 65_536);
    assert_eq!(l.pool_buffers, 64);
    assert_eq!(l.max_read_buffers, 1024);
    assert_eq!(l.handoff_queue, 1024);
    assert_eq!(l.max_connections_per_worker, 100_000);
    assert_eq!((l.max_connections, l.max_sessions), (100_000, 100_000));
    assert_eq!(l.reconnect_reserve_percent, 10);
    assert_eq!(l.max_connections_per_ip, 1000);
    assert_eq!((l.ip_connect_rate, l.ip_connect_burst), (1200, 400));
    assert_eq!(l.ip_table_size, 16_384);
    assert_eq!((l.message_rate, l.byte_rate), (0, 0));
    assert_eq!(l.max_frames_per_message, 4096);
    assert_eq!(l.max_pending_pongs, 16);
    assert_eq!(format_duration(l.write_timeout), "1m");
    assert_eq!(format_duration(l.blocked_write_grace), "1s");
    assert_eq!(
        (
            l.max_blocked_writes_per_ip,
            l.max_blocked_writes_per_session
        ),
        (32, 2)
    );
    assert_eq!(l.pool_reserve_percent, 10);
    assert_eq!(format_duration(l.accept_backoff_max), "1s");
    assert_eq!((l.max_handshakes_per_ip, l.max_handshakes), (32, 4096));

    let s = &c.session;
    assert_eq!(format_duration(s.ping_interval), "30s");
    assert_eq!(format_duration(s.peer_timeout), "75s");
    assert_eq!(format_duration(s.idle_timeout), "30m");
    assert_eq!(format_duration(s.linger), "5m");
    assert_eq!(s.buffer_bytes, 1_048_576);
    assert_eq!(format_duration(s.close_timeout), "5s");

    assert_eq!(c.bridge.agent_role, "agent");
    assert_eq!(format_duration(c.bridge.timeout), "30s");
    assert_eq!(c.bridge.max_body_bytes, 65_536);
    assert_eq!(c.bridge.max_response_bytes, 1 << 20);
    assert_eq!(
        c.bridge.allowed_methods.join(","),
        "GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS"
    );
    assert_eq!(c.bridge.max_in_flight, 64);
    assert!(!c.bridge.allow_active_content && !c.bridge.pass_cookies);
    assert_eq!(c.auth.jwt_secret, None);
    assert_eq!(c.auth.jwt_secret_file, None);
    assert_eq!(c.auth.algorithms, vec![JwtAlgorithm::Hs256]);
    assert_eq!(
        (c.auth.audience.as_deref(), c.auth.issuer.as_deref()),
        (None, None)
    );
    assert_eq!(format_duration(c.auth.leeway), "30s");
    assert_eq!(c.auth.max_token_bytes, 4096);
    assert_eq!(format_duration(c.auth.max_token_lifetime), "24h");
    assert_eq!(c.security.allowed_origins, vec!["*".to_string()]);
    assert!(!c.security.require_origin);
    assert!(c.security.trusted_proxies.is_empty());
    assert!(c.security.allowed_cidrs.is_empty() && c.security.denied_cidrs.is_empty());
    let admin: Vec<String> = c
        .admin
        .allowed_cidrs
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(admin, ["127.0.0.0/8", "::1"]);
    assert_eq!(c.auth.api_keys_file, None);
    assert_eq!(c.security.echo_route, EchoRoute::Auth);
    assert_eq!(c.security.client_ip_header, ClientIpHeader::XForwardedFor);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn loading_nothing_gives_the_defaults() {
    assert_eq!(load_env(&[]).unwrap(), Config::default());
    assert_eq!(load_toml("").unwrap(), Config::default());
}

#[test]
fn enum_strings() {
    for d in [
        DriverChoice::Auto,
        DriverChoice::IoUring,
        DriverChoice::Epoll,
    ] {
        assert_eq!(d.as_str().parse::<DriverChoice>().unwrap(), d);
        assert_eq!(d.to_string(), d.as_str());
    }
    assert_eq!(DriverChoice::IoUring.as_str(), "io_uring");
    for f in [LogFormat::Text, LogFormat::Json] {
        assert_eq!(f.as_str().parse::<LogFormat>().unwrap(), f);
    }
    assert!("IO_URING".parse::<DriverChoice>().is_err());
    assert!("uring".parse::<DriverChoice>().is_err());
}

#[test]
fn shipped_example_config_loads_to_the_defaults_and_shows_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ringrelay.toml");
    let cfg = Config::load(Some(&path), &[], &CliOverrides::default()).unwrap();
    assert_eq!(cfg, Config::default());

    let text = std::fs::read_to_string(&path).unwrap();
    for key in apply::KEYS {
        let (section, name) = key.split_once('.').unwrap_or(("", key));
        let start = match section {
            "" => 0,
            s => text
                .find(&format!("[{s}]"))
                .unwrap_or_else(|| panic!("no [{s}]")),
        };
        let body = &text[start..];
        let shown =
            body.contains(&format!("\n{name} = ")) || body.contains(&format!("\n# {name} = "));
        assert!(shown, "systemd/ringrelay.toml does not show {key}");
    }
}

#[test]
fn docs_name_every_key_and_variable() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap();
    for key in apply::KEYS {
        assert!(
            text.contains(&format!("`{key}`")),
            "docs/configuration.md lacks `{key}`"
        );
        let var = apply::env_var_name(key);
        assert!(
            text.contains(&format!("`{var}`")),
            "docs/configuration.md lacks `{var}`"
        );
    }
}

#[test]
fn the_demo_is_on_by_default_only_on_loopback() {
    use crate::config::DemoMode;
    assert!(Config::default().demo_enabled());
    let public = load_toml("listen = \"0.0.0.0:8080\"\n").unwrap();
    assert_eq!(public.demo.enabled, DemoMode::Auto);
    assert!(!public.demo_enabled());
    let forced = load_toml("listen = \"0.0.0.0:8080\"\n[demo]\nenabled = true\n").unwrap();
    assert!(forced.demo_enabled());
    let off = load_env(&[("RINGRELAY_DEMO_ENABLED", "false")]).unwrap();
    assert!(!off.demo_enabled());
    let auto = load_toml("[demo]\nenabled = \"auto\"\n").unwrap();
    assert_eq!(auto.demo.enabled, DemoMode::Auto);
    for bad in ["[demo]\nenabled = \"sometimes\"\n", "[demo]\nenabled = 3\n"] {
        let e = load_toml(bad).unwrap_err().to_string();
        assert!(e.contains("demo.enabled") && e.contains("auto"), "{e}");
    }
}
