//! Which keys a reload (SIGHUP) applies to the running workers, and which stay as the relay
//! started: a key is fixed when its value is baked into something built once (a listener, a
//! thread, the buffer pool, a queue's capacity, the tick, the log format, the cluster
//! thread). A reload keeps every fixed key's running value and names each one the new config
//! changed, so the config the workers then read is whole and coherent: live keys new, fixed
//! keys as they started. Every key is in exactly one of the two lists (a test holds them to
//! the table in `keys.rs`, and docs/configuration.md to this file). `log.level` is live but
//! applied by the main process, whose logger it is (main.rs).

use super::Config;

macro_rules! fixed_keys {
    ($($name:literal => $($path:ident).+ ;)*) => {
        /// The keys a reload cannot change, in the table's order.
        pub const FIXED_KEYS: &[&str] = &[$($name),*];

        /// Puts back into `new` the running value of every fixed key it changed and returns
        /// their names.
        fn keep(new: &mut Config, running: &Config) -> Vec<&'static str> {
            let mut changed = Vec::new();
            $(
                if new.$($path).+ != running.$($path).+ {
                    changed.push($name);
                    new.$($path).+ = running.$($path).+.clone();
                }
            )*
            changed
        }
    };
}

fixed_keys! {
    "listen" => listen;
    "admin_listen" => admin_listen;
    "workers" => workers;
    "driver" => driver;
    "limits.read_buffer_bytes" => limits.read_buffer_bytes;
    "limits.large_read_buffer_bytes" => limits.large_read_buffer_bytes;
    "limits.pool_buffers" => limits.pool_buffers;
    "limits.max_read_buffers" => limits.max_read_buffers;
    "limits.handoff_queue" => limits.handoff_queue;
    "limits.max_connections_per_worker" => limits.max_connections_per_worker;
    "limits.max_connections" => limits.max_connections;
    "limits.max_sessions" => limits.max_sessions;
    "limits.reconnect_reserve_percent" => limits.reconnect_reserve_percent;
    "limits.pool_reserve_percent" => limits.pool_reserve_percent;
    "limits.accept_backoff_max" => limits.accept_backoff_max;
    "session.ping_interval" => session.ping_interval;
    "session.peer_timeout" => session.peer_timeout;
    "session.idle_timeout" => session.idle_timeout;
    "session.linger" => session.linger;
    "session.buffer_bytes" => session.buffer_bytes;
    "session.buffer_messages" => session.buffer_messages;
    "session.overflow" => session.overflow;
    "session.core_buffer_budget" => session.core_buffer_budget;
    "session.replay_bytes" => session.replay_bytes;
    "session.close_timeout" => session.close_timeout;
    "session.state_dir" => session.state_dir;
    "bridge.agent_role" => bridge.agent_role;
    "tls.listen" => tls.listen;
    "log.format" => log.format;
    "log.access" => log.access;
    "tunnel.enabled" => tunnel.enabled;
    "tunnel.bind" => tunnel.bind;
    "tunnel.ports" => tunnel.ports;
    "proxy.routes" => proxy.routes;
    "stats.latency" => stats.latency;
    "cluster.redis_url" => cluster.redis_url;
    "cluster.node_id" => cluster.node_id;
    "cluster.region" => cluster.region;
    "cluster.public_url" => cluster.public_url;
    "cluster.internal_listen" => cluster.internal_listen;
    "cluster.heartbeat" => cluster.heartbeat;
    "cluster.node_ttl" => cluster.node_ttl;
    "cluster.key_prefix" => cluster.key_prefix;
    "cluster.secret" => cluster.secret;
    "cluster.secret_file" => cluster.secret_file;
    "cluster.session_ttl" => cluster.session_ttl;
    "cluster.lookup_timeout" => cluster.lookup_timeout;
    "cluster.request_queue" => cluster.request_queue;
    "cluster.max_pending_links_per_ip" => cluster.max_pending_links_per_ip;
    "cluster.max_pending_links" => cluster.max_pending_links;
}

/// The keys a reload applies, in the table's order. Listed rather than taken as "every key
/// not fixed", so that a key added later is in neither list, and fails the test that holds
/// both to the table, until someone decides which it is.
pub const LIVE_KEYS: &[&str] = &[
    "shutdown_grace",
    "upgrade_timeout",
    "limits.max_message_bytes",
    "limits.handshake_timeout",
    "limits.max_header_bytes",
    "limits.max_headers",
    "limits.max_connections_per_ip",
    "limits.ip_connect_rate",
    "limits.ip_connect_burst",
    "limits.ip_table_size",
    "limits.message_rate",
    "limits.message_burst",
    "limits.byte_rate",
    "limits.byte_burst",
    "limits.max_frames_per_message",
    "limits.max_pending_pongs",
    "limits.write_timeout",
    "limits.blocked_write_grace",
    "limits.max_blocked_writes_per_ip",
    "limits.max_blocked_writes_per_session",
    "limits.max_handshakes_per_ip",
    "limits.max_handshakes",
    "session.ack_every",
    "session.ack_delay",
    "bridge.timeout",
    "bridge.max_body_bytes",
    "bridge.max_response_bytes",
    "bridge.allowed_methods",
    "bridge.max_in_flight",
    "bridge.allow_active_content",
    "bridge.pass_cookies",
    "cors.allowed_origins",
    "cors.allowed_headers",
    "cors.expose_headers",
    "cors.max_age",
    "auth.jwt_secret",
    "auth.jwt_secret_file",
    "auth.keys",
    "auth.algorithms",
    "auth.audience",
    "auth.issuer",
    "auth.leeway",
    "auth.max_token_bytes",
    "auth.api_keys_file",
    "auth.max_token_lifetime",
    "security.allowed_origins",
    "security.require_origin",
    "security.trusted_proxies",
    "security.allowed_cidrs",
    "security.denied_cidrs",
    "security.echo_route",
    "security.client_ip_header",
    "security.hsts_max_age",
    "tls.cert_file",
    "tls.key_file",
    "tls.certificates",
    "tls.min_version",
    "tls.client_ca_file",
    "tls.client_auth",
    "tls.client_grants",
    "admin.allowed_cidrs",
    "admin_tls.cert_file",
    "admin_tls.key_file",
    "admin_tls.client_ca_file",
    "admin_tls.client_auth",
    "cluster.tls_cert_file",
    "cluster.tls_key_file",
    "cluster.tls_ca_file",
    "cluster.tls_server_name",
    "log.level",
    "demo.enabled",
    "tunnel.public_host",
    "tunnel.max_tunnels",
    "tunnel.reserved_percent",
    "tunnel.max_tunnels_per_subject",
    "tunnel.max_connections_per_tunnel",
    "tunnel.accept_timeout",
    "tunnel.idle_timeout",
    "tunnel.reconnect_grace",
    "tunnel.max_bandwidth",
    "tunnel.redirect_margin_percent",
    "proxy.region_header",
    "proxy.region_query",
    "proxy.default_region",
    "proxy.max_body_bytes",
    "proxy.connect_timeout",
    "proxy.response_timeout",
    "proxy.idle_timeout",
    "proxy.pool_max_idle",
    "proxy.pool_idle_timeout",
    "proxy.eject_after",
    "proxy.eject_backoff",
];

/// Whether a reload applies `key` (a dotted name from the table).
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.contains(&key)
}

impl Config {
    /// Makes `self` (a config just loaded for a reload) keep `running`'s value of every key
    /// that cannot change live; returns the names of those it had changed, for the operator.
    pub fn keep_fixed(&mut self, running: &Config) -> Vec<&'static str> {
        keep(self, running)
    }
}
