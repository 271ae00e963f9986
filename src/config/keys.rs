//! Every config key, declared once: its field and type, its default, how it is parsed (the
//! kinds in `kinds/`, with their ranges) and its doc line. The structs, the file and
//! environment names (`RINGRELAY_<SECTION>_<KEY>`), the unknown-key check, `--print-config`
//! and `Debug` are derived from this table.
//!
//! Adding a key: add its entry here, a row in docs/configuration.md and a line in
//! systemd/ringrelay.toml (the `docs` tests say what is missing and what to write), a sample
//! value in `tests/mod.rs::sample`, and a cross-key check in `validate.rs` if it has one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::kinds::{
    Addr, CertList, Choice, Demo, Dur, FilePath, Flag, Grants, HeaderNames, Int, Ip, Keys, List,
    LogFilter, Methods, OptionalAddr, OptionalText, Origins, Ports, RedisUrl, RegistryName, Role,
    Routes, Secret, TokenLifetime, Trimmed,
};
use super::{
    AccessTarget, AuthKey, CertPair, ClientAuth, ClientGrant, ClientIpHeader, DemoMode,
    DriverChoice, EchoRoute, IpNet, JwtAlgorithm, LogFormat, Overflow, PortRange, ProxyRoute,
    TlsVersion, MAX_WORKERS,
};
use std::net::IpAddr;

const MIB: usize = 1 << 20;
const KIB: usize = 1 << 10;
const UNLIMITED: usize = usize::MAX;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `admin.allowed_cidrs`'s default: the loopback addresses, IPv4 and IPv6.
fn loopback() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1"]
        .iter()
        .map(|s| s.parse().expect("a valid block"))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

config_keys! {
    /// The relay's whole configuration, after every layer.
    Config {
        /// Public listener: WebSocket, HTTP bridge, /health.
        listen: SocketAddr { default: SocketAddr::from(([127, 0, 0, 1], 8080)), parse: Addr }
        /// Admin listener: /health, /stats, /metrics; keep it off the public network.
        admin_listen: SocketAddr { default: SocketAddr::from(([127, 0, 0, 1], 9090)), parse: Addr }
        /// Worker threads, one per core, each with its own ring and listener.
        workers: usize {
            default: cpus().clamp(1, MAX_WORKERS),
            parse: Int(1, MAX_WORKERS),
            shown: "number of CPUs",
        }
        /// io_uring, epoll, or io_uring falling back to epoll where it is unavailable.
        driver: DriverChoice { default: DriverChoice::Auto, parse: Choice }
        /// On SIGTERM, how long in-flight writes get after WebSockets are closed with 1001.
        shutdown_grace: Duration { default: secs(10), parse: Dur::ANY }
        /// On SIGUSR2, how long the new process has to take every listener and connection
        /// and confirm it; past it the new process is killed and this one carries on.
        upgrade_timeout: Duration { default: secs(30), parse: Dur::POSITIVE }
    }

    /// Per-connection, per-address and per-worker bounds (docs/protection.md).
    [limits] LimitsConfig {
        /// Largest WebSocket message: the most one connection makes the relay hold for one.
        max_message_bytes: usize { default: MIB, parse: Int(125, UNLIMITED) }
        /// Time a client has to finish the upgrade request.
        handshake_timeout: Duration { default: secs(10), parse: Dur::POSITIVE }
        /// Largest request head; a bigger one gets 431.
        max_header_bytes: usize { default: 8192, parse: Int(256, MIB) }
        /// Number of header lines, not bytes.
        max_headers: usize { default: 100, parse: Int(8, 1024) }
        /// Size of each pooled read buffer.
        read_buffer_bytes: usize { default: 64 * KIB, parse: Int(4096, 16 * MIB) }
        /// Size of the read buffer a connection takes while a fast sender streams large
        /// frames; holds its size in `read_buffer_bytes` buffers of `max_read_buffers`.
        /// At or below `read_buffer_bytes`: off.
        large_read_buffer_bytes: usize { default: 256 * KIB, parse: Int(4096, 16 * MIB) }
        /// Idle read buffers kept per worker; more are allocated on demand and freed.
        pool_buffers: usize { default: 64, parse: Int(1, 1_000_000) }
        /// Read buffers in use at once per worker; past it, readers wait for one
        /// (backpressure), so a readiness storm cannot allocate a buffer per connection.
        max_read_buffers: usize { default: 1024, parse: Int(1, 1_000_000) }
        /// Bounded cross-core handoff queue per worker.
        handoff_queue: usize { default: 1024, parse: Int(1, 1_000_000) }
        /// Connections one worker holds; each is a file descriptor.
        max_connections_per_worker: usize { default: 100_000, parse: Int(1, 10_000_000) }
        /// Upgraded connections on the whole server; past it new ones get 503.
        max_connections: usize { default: 100_000, parse: Int(1, 100_000_000) }
        /// Sessions on the whole server; past it a connection that would open one gets 503.
        max_sessions: usize { default: 100_000, parse: Int(1, 100_000_000) }
        /// Share of `max_connections` (percent) kept for peers rejoining a session that has
        /// been paired, so a flood of new sessions cannot lock out users already talking.
        reconnect_reserve_percent: usize { default: 10, parse: Int(0, 50) }
        /// Open connections per client IP (0: no limit), held exactly on the address's home
        /// core.
        max_connections_per_ip: usize { default: 1000, parse: Int(0, 100_000_000) }
        /// New connections per minute per client IP (0: no limit), held on the address's home
        /// core.
        ip_connect_rate: usize { default: 1200, parse: Int(0, 100_000_000) }
        /// Connections one IP may open at once before `ip_connect_rate` applies.
        ip_connect_burst: usize { default: 400, parse: Int(1, 100_000_000) }
        /// Entries in each worker's per-IP tables; the least recently used is evicted past it.
        ip_table_size: usize { default: 16_384, parse: Int(16, 10_000_000) }
        /// Messages per second per connection (0: no limit); over it the relay stops reading.
        message_rate: usize { default: 0, parse: Int(0, 1_000_000_000) }
        /// Messages a connection may send at once before `message_rate` applies.
        message_burst: usize { default: 1000, parse: Int(1, 1_000_000_000) }
        /// Payload bytes per second per connection (0: no limit); over it the relay stops
        /// reading.
        byte_rate: usize { default: 0, parse: Int(0, 1 << 40) }
        /// Bytes a connection may send at once before `byte_rate` applies.
        byte_burst: usize { default: MIB, parse: Int(1, 1 << 40) }
        /// Frames one message may be split into; more closes with 1008 (tiny-fragment floods).
        max_frames_per_message: usize { default: 4096, parse: Int(1, 1 << 30) }
        /// Client pings answered each with its own pong per read; past it the later pings
        /// share the latest one's pong (`pings_coalesced`), so a ping flood stays bounded.
        max_pending_pongs: usize { default: 16, parse: Int(1, 1024) }
        /// A peer that takes longer than this to accept one write is dropped.
        write_timeout: Duration { default: secs(60), parse: Dur::POSITIVE }
        /// A write still pending after this long counts as blocked: its receiver is not
        /// reading (for now), and the pooled buffer it holds is what the two bounds below and
        /// the pool reserve count. Set, it must be shorter than `write_timeout`; a
        /// `write_timeout` no longer than the default grace is itself the bound on blocked
        /// writes.
        blocked_write_grace: Duration { default: secs(1), parse: Dur::POSITIVE }
        /// Pooled buffers that blocked writes to one client address's connections may hold
        /// on a worker (0: no limit). Past it, its receivers holding the most are dropped as
        /// the write timeout would drop them: an address cannot pin the pool however many
        /// pairs it opens.
        max_blocked_writes_per_ip: usize { default: 32, parse: Int(0, 1_000_000) }
        /// The same for the peers of one session (0: no limit). Each direction holds at most
        /// one buffer, so more than two means senders that replaced each other piled up
        /// behind one receiver.
        max_blocked_writes_per_session: usize { default: 2, parse: Int(0, 1_000_000) }
        /// Share of `max_read_buffers` (percent) the pool keeps free for connections that
        /// read: when fewer are left, blocked writes are ended at once (the receivers of the
        /// address holding the most first, then the oldest), so that pairs on the same core
        /// keep flowing whoever else opens pairs that never read.
        pool_reserve_percent: usize { default: 10, parse: Int(0, 50) }
        /// Ceiling of the back-off after `accept` fails for lack of file descriptors.
        accept_backoff_max: Duration { default: secs(1), parse: Dur::POSITIVE }
        /// Connections from one address still in their HTTP phase (PROXY header and request
        /// head not yet read and answered); past it a new one is closed at once. 0: no limit.
        /// A trusted proxy is exempt (it is many clients); behind PROXY protocol the declared
        /// client is charged instead.
        max_handshakes_per_ip: usize { default: 32, parse: Int(0, 10_000_000) }
        /// Connections in their HTTP phase on one worker, whoever they are from; past it a
        /// new one is closed at once.
        max_handshakes: usize { default: 4096, parse: Int(1, 10_000_000) }
    }

    /// Keep-alive, timeouts and what is kept for an absent peer (docs/durability.md).
    [session] SessionConfig {
        /// The relay pings each peer this often.
        ping_interval: Duration { default: secs(30), parse: Dur::POSITIVE }
        /// A peer that sends nothing, not even a pong, for this long is dropped.
        peer_timeout: Duration { default: secs(75), parse: Dur::POSITIVE }
        /// No message either way for this long closes the session with 4002.
        idle_timeout: Duration { default: secs(30 * 60), parse: Dur::POSITIVE }
        /// How long a session with no peer and something kept for one stays.
        linger: Duration { default: secs(5 * 60), parse: Dur::ANY }
        /// Bytes of messages kept for an absent peer, per direction; 0 turns buffering off.
        buffer_bytes: usize { default: MIB, parse: Int(0, UNLIMITED) }
        /// Messages kept for an absent peer, per direction.
        buffer_messages: usize { default: 1024, parse: Int(1, 100_000_000) }
        /// What happens to a sender whose buffer is full.
        overflow: Overflow { default: Overflow::Backpressure, parse: Choice }
        /// All buffers of one core together; past it every buffering sender is
        /// backpressured.
        core_buffer_budget: usize { default: 256 * MIB, parse: Int(0, UNLIMITED) }
        /// Delivered messages kept per direction for `resume=`, once its receiver asked for
        /// it.
        replay_bytes: usize { default: 256 * KIB, parse: Int(0, UNLIMITED) }
        /// A connection with `resume=` and events is sent an `ack` once this many of its
        /// messages were accepted since the last one it was told of.
        ack_every: usize { default: 64, parse: Int(1, 1_000_000) }
        /// ... and at the latest this long after the last accepted one.
        ack_delay: Duration { default: millis(50), parse: Dur::POSITIVE }
        /// How long to wait for the peer's close reply after sending a close frame.
        close_timeout: Duration { default: secs(5), parse: Dur::ANY }
        /// Where SIGTERM writes what sessions keep (kept messages, replay windows, acks) and
        /// the per-IP connection-rate buckets for the next start to read back
        /// (docs/upgrade.md); unset: a restart keeps nothing.
        state_dir: Option<PathBuf> { default: None, parse: FilePath }
    }

    /// HTTP requests relayed to an agent peer (docs/bridge.md).
    [bridge] BridgeConfig {
        /// The role whose connection answers `/v1/http/{session}/...` requests.
        agent_role: String { default: "agent".to_string(), parse: Role }
        /// A bridged request without an answer in this time gets 504.
        timeout: Duration { default: secs(30), parse: Dur::POSITIVE }
        /// A bigger bridged request body gets 413.
        max_body_bytes: usize { default: 64 * KIB, parse: Int(0, UNLIMITED) }
        /// Decoded body of an agent's answer; more is 502. It also bounds what an agent's
        /// connection keeps of one answer (`bridge::answers::capture_limit`).
        max_response_bytes: usize { default: MIB, parse: Int(0, UNLIMITED) }
        /// Upper-case method names; any other method is answered 405.
        allowed_methods: Vec<String> {
            default: strings(&["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            parse: Methods,
        }
        /// Requests waiting for one agent's answers; more are answered 503.
        max_in_flight: u32 { default: 64, parse: Int(1, u32::MAX as usize) }
        /// Off (the default), every bridged answer carries `Content-Security-Policy:
        /// sandbox`: an agent's page may not run script or reach storage as the relay's
        /// origin. On for a relay whose origin serves nothing else.
        allow_active_content: bool { default: false, parse: Flag }
        /// Off (the default), an agent's `Set-Cookie` headers are dropped: an agent may not
        /// set cookies for the relay's origin, which every other agent's answers share.
        pass_cookies: bool { default: false, parse: Flag }
    }

    /// CORS on the HTTP bridge, for a page on another origin (docs/bridge.md, "CORS"). Off
    /// while `allowed_origins` is empty: no CORS headers, preflights go to the agent.
    [cors] CorsConfig {
        /// Origins whose pages may call the bridge: `*` (any but `null`) or
        /// `scheme://host[:port]`. Each must also pass `security.allowed_origins`.
        allowed_origins: Vec<String> { default: Vec::new(), parse: Origins }
        /// Request headers a preflight may ask for (names, any case).
        allowed_headers: Vec<String> {
            default: strings(&["authorization", "content-type"]),
            parse: HeaderNames,
        }
        /// Response headers a page may read besides the CORS-safelisted ones.
        expose_headers: Vec<String> { default: Vec::new(), parse: HeaderNames }
        /// How long a browser may reuse a preflight's answer (`Access-Control-Max-Age`).
        max_age: Duration { default: secs(600), parse: Dur::ANY }
    }

    /// Tokens (docs/auth.md). At most one of the two secrets is set (checked by
    /// [`Config::load`]); `Debug` shows neither.
    [auth] AuthConfig {
        /// The HMAC secret inline; when set, every connection needs a token.
        jwt_secret: Option<String> { default: None, parse: Secret }
        /// A file holding that secret, read at start and on every reload.
        jwt_secret_file: Option<PathBuf> { default: None, parse: FilePath }
        /// Several secrets at once, each with a key id, each read from its file at start and
        /// on every reload: a token whose header names a `kid` is checked against that key
        /// only, one without a `kid` against each, so a secret can be rotated with no refused
        /// client.
        keys: Vec<AuthKey> { default: Vec::new(), parse: Keys }
        /// Accepted `alg` values; anything else (`none` above all) is refused.
        algorithms: Vec<JwtAlgorithm> {
            default: vec![JwtAlgorithm::Hs256],
            parse: List { if_empty: Some("at least one algorithm is needed") },
        }
        /// Required `aud` when set.
        audience: Option<String> { default: None, parse: OptionalText }
        /// Required `iss` when set.
        issuer: Option<String> { default: None, parse: OptionalText }
        /// Clock skew allowed on `exp` and `nbf`.
        leeway: Duration { default: secs(30), parse: Dur::ANY }
        /// Longer tokens are refused before any decoding.
        max_token_bytes: usize { default: 4096, parse: Int(64, 65_536) }
        /// API keys (docs/auth.md, "API keys"): one per line, stored as its SHA-256 with what it
        /// grants (`sha256:<hex> sid=<pattern> [role=R] [tunnels=N] [name=L]`); read at start
        /// and on every reload (a file that does not read keeps the keys in force). Setting it
        /// turns auth on.
        api_keys_file: Option<PathBuf> { default: None, parse: FilePath }
        /// Longest a token may be valid: `exp - iat`, and `exp - now` (plus `leeway`), may not
        /// exceed it, so a leaked token is good for a bounded time whatever its issuer wrote.
        /// Zero turns the check off, for issuers that deliberately mint long-lived tokens.
        max_token_lifetime: Duration { default: secs(24 * 3600), parse: TokenLifetime }
    }

    /// Who may connect, and whose word on the client's address is believed.
    [security] SecurityConfig {
        /// Browser origins allowed to connect: `*` or `scheme://host[:port]`.
        allowed_origins: Vec<String> { default: strings(&["*"]), parse: Origins }
        /// Refuse requests without an Origin header (non-browser clients send none).
        require_origin: bool { default: false, parse: Flag }
        /// Direct peers believed when they name the client (in `client_ip_header`).
        trusted_proxies: Vec<IpNet> { default: Vec::new(), parse: List { if_empty: None } }
        /// Client addresses (CIDR blocks, IPv4 or IPv6) that may use the public listeners;
        /// empty: any. Checked on the direct peer at accept (a trusted proxy excepted) and on
        /// the client a PROXY header or trusted proxy names; others get 403 `ip_not_allowed`.
        allowed_cidrs: Vec<IpNet> { default: Vec::new(), parse: List { if_empty: None } }
        /// Client addresses refused on the public listeners, whatever `allowed_cidrs` says
        /// (deny wins): 403 `ip_not_allowed`.
        denied_cidrs: Vec<IpNet> { default: Vec::new(), parse: List { if_empty: None } }
        /// Who may use `/v1/echo`.
        echo_route: EchoRoute { default: EchoRoute::Auth, parse: Choice }
        /// The one place a trusted proxy names the client; the others are ignored, so a
        /// client cannot add its own `Forwarded` behind a proxy that writes only
        /// `X-Forwarded-For`.
        client_ip_header: ClientIpHeader { default: ClientIpHeader::XForwardedFor, parse: Choice }
        /// `Strict-Transport-Security: max-age` on answers over TLS (never over plain TCP,
        /// where a browser ignores it); zero sends none.
        hsts_max_age: Duration { default: secs(365 * 24 * 3600), parse: Dur::ANY }
    }

    /// Native TLS on a public listener of its own (docs/tls.md). Off unless `listen` is set.
    [tls] TlsConfig {
        /// The TLS public listener, serving every route the plain one does; empty for none
        /// (the plain `listen` stays either way).
        listen: Option<SocketAddr> { default: None, parse: OptionalAddr }
        /// PEM certificate chain, leaf first: shorthand for a first entry of `certificates`.
        cert_file: Option<PathBuf> { default: None, parse: FilePath }
        /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519).
        key_file: Option<PathBuf> { default: None, parse: FilePath }
        /// More certificates, chosen by the server name a client asks for (SNI); the first
        /// one (after `cert_file`) answers a client that names none or an unknown one.
        certificates: Vec<CertPair> { default: Vec::new(), parse: CertList }
        /// Oldest TLS version accepted.
        min_version: TlsVersion { default: TlsVersion::V1_2, parse: Choice }
        /// PEM CA certificate(s) that client certificates must chain to.
        client_ca_file: Option<PathBuf> { default: None, parse: FilePath }
        /// Client certificates: `off` (not asked for), `optional` (checked when given) or
        /// `required` (a client without a valid one is refused in the handshake).
        client_auth: ClientAuth { default: ClientAuth::Off, parse: Choice }
        /// What a verified client certificate admits to without a token, as a token's
        /// `sid` and `role` claims would: `[{ subject, sid, role }]`, `subject` matched
        /// against the certificate's common name and subject alternative names. Any grant
        /// (or token secret) makes every public connection need a credential.
        client_grants: Vec<ClientGrant> { default: Vec::new(), parse: Grants }
    }

    /// Who may reach the admin listener (/health, /stats, /metrics; docs/protection.md).
    [admin] AdminConfig {
        /// Direct peers (CIDR blocks) the admin listener answers; any other gets 403
        /// `ip_not_allowed`. Loopback only by default; empty: any address.
        allowed_cidrs: Vec<IpNet> {
            default: loopback(),
            parse: List { if_empty: None },
        }
    }

    /// TLS on the admin listener (/health, /stats, /metrics; docs/tls.md). Off unless
    /// `cert_file` is set; then the admin listener speaks only TLS.
    [admin_tls] AdminTlsConfig {
        /// PEM certificate chain of the admin listener, leaf first.
        cert_file: Option<PathBuf> { default: None, parse: FilePath }
        /// PEM private key of `cert_file`.
        key_file: Option<PathBuf> { default: None, parse: FilePath }
        /// PEM CA certificate(s) that a scraper's client certificate must chain to.
        client_ca_file: Option<PathBuf> { default: None, parse: FilePath }
        /// Client certificates on the admin listener: `off`, `optional` or `required`.
        client_auth: ClientAuth { default: ClientAuth::Off, parse: Choice }
    }

    /// Logging.
    [log] LogConfig {
        /// A tracing `EnvFilter` directive such as `info` or `ringrelay=debug`.
        level: String { default: "info".to_string(), parse: LogFilter }
        /// `text` for people, `json` for log collectors.
        format: LogFormat { default: LogFormat::Text, parse: Choice }
        /// The access log: one line per finished connection, refusal and bridged request,
        /// in `format`, to `off`, `stderr` or `file:PATH` (reopened on SIGUSR1).
        access: AccessTarget { default: AccessTarget::Off, parse: Choice }
    }

    /// What the workers record.
    [stats] StatsConfig {
        /// Record latency histograms; off only to measure what recording costs.
        latency: bool { default: true, parse: Flag }
    }

    /// Several nodes coordinated through Redis (docs/cluster.md). Off unless `redis_url` is
    /// set. `Debug` shows neither `secret` nor a password in `redis_url`.
    [cluster] ClusterConfig {
        /// May hold a password (`redis://:pass@host`); shown only through `redact_url`.
        redis_url: Option<String> { default: None, parse: RedisUrl }
        /// This node's name in the registry; empty means the host name and the listen port.
        node_id: String { default: String::new(), parse: RegistryName::OR_EMPTY }
        /// The node's region, shown in the registry.
        region: String { default: "default".to_string(), parse: RegistryName::REQUIRED }
        /// The public address clients reach this node at; empty means `ws://{listen}`.
        public_url: String { default: String::new(), parse: Trimmed }
        /// The node-to-node listener, registered for other nodes (unset: none).
        internal_listen: Option<SocketAddr> { default: None, parse: OptionalAddr }
        /// How often the node refreshes its registry entry and reads the fleet.
        heartbeat: Duration { default: secs(5), parse: Dur::POSITIVE }
        /// How long an entry outlives its last refresh: a node that dies is gone after this.
        node_ttl: Duration { default: secs(15), parse: Dur::POSITIVE }
        /// Prefix of every Redis key the relay uses.
        key_prefix: String { default: "ringrelay".to_string(), parse: RegistryName::REQUIRED }
        /// The secret nodes prove to each other on the node-to-node link (inline; redacted).
        secret: Option<String> { default: None, parse: Secret }
        /// A file holding that secret (one of the two, when `internal_listen` is set).
        secret_file: Option<PathBuf> { default: None, parse: FilePath }
        /// How long a session's ownership key outlives its last renewal.
        session_ttl: Duration { default: secs(30), parse: Dur::POSITIVE }
        /// Longest a new peer waits for its owner to be found before it is answered 503.
        lookup_timeout: Duration { default: secs(2), parse: Dur::POSITIVE }
        /// Ownership requests waiting for the cluster thread; past it, new peers get 503.
        request_queue: usize { default: 4096, parse: Int(1, 1 << 20) }
        /// Openings on the internal listener from one address that have not proved the
        /// secret yet, per worker; past it a new one is closed at once. A real carrier proves
        /// itself within a round trip, so only a burst of new carried peers from one node
        /// comes near.
        max_pending_links_per_ip: usize { default: 16, parse: Int(1, 1_000_000) }
        /// The same, from all addresses together, per worker.
        max_pending_links: usize { default: 256, parse: Int(1, 1_000_000) }
        /// This node's certificate chain (PEM) for the node-to-node link over TLS. With
        /// `tls_key_file` and `tls_ca_file` it turns TLS on for the link, both ways: the
        /// internal listener then speaks only TLS and this node carries only over TLS.
        tls_cert_file: Option<PathBuf> { default: None, parse: FilePath }
        /// The private key of `tls_cert_file`.
        tls_key_file: Option<PathBuf> { default: None, parse: FilePath }
        /// The cluster CA (PEM): the owner checks the carrier's certificate and the carrier
        /// the owner's against it, and nothing else.
        tls_ca_file: Option<PathBuf> { default: None, parse: FilePath }
        /// The name a carrier checks the owner's certificate for; empty: the IP address of
        /// the owner's registered `internal_listen` (an IP SAN in each node's certificate).
        tls_server_name: String { default: String::new(), parse: Trimmed }
    }

    /// The demo page.
    [demo] DemoConfig {
        /// Whether the public listener serves the demo page at `/demo`.
        enabled: DemoMode { default: DemoMode::Auto, parse: Demo }
    }

    /// TCP tunnels (docs/tunnels.md): a client exposes a local port as a public port here.
    [tunnel] TunnelConfig {
        /// Off (the default), `/v1/tunnel` is 404 and no public port is ever bound.
        enabled: bool { default: false, parse: Flag }
        /// The address public tunnel ports are bound on. Loopback by default, so turning
        /// tunnels on exposes nothing until the operator names a public address.
        bind: IpAddr { default: IpAddr::from([127, 0, 0, 1]), parse: Ip }
        /// The ports tunnels are given, `"first-last"`; a client's `?port=N` must be in it.
        ports: PortRange { default: PortRange { first: 20000, last: 20999 }, parse: Ports }
        /// The host named in `tunnel_open`'s `public`; unset: the control request's Host.
        public_host: Option<String> { default: None, parse: OptionalText }
        /// Tunnels open on this server at once (all workers), resuming ones included.
        max_tunnels: usize { default: 1000, parse: Int(1, 1_000_000) }
        /// Share of `max_tunnels` kept for tunnels resuming within their grace.
        reserved_percent: usize { default: 10, parse: Int(0, 100) }
        /// Tunnels one token subject holds at once; a token's `tunnels` claim overrides it.
        max_tunnels_per_subject: usize { default: 5, parse: Int(1, 1_000_000) }
        /// TCP connections open through one tunnel at once (waiting for their data
        /// connection included); more are closed at accept.
        max_connections_per_tunnel: usize { default: 100, parse: Int(1, 1_000_000) }
        /// A public connection whose data connection has not come in this time is closed.
        accept_timeout: Duration { default: secs(10), parse: Dur::POSITIVE }
        /// A joined connection with no byte either way for this long is closed.
        idle_timeout: Duration { default: secs(3600), parse: Dur::POSITIVE }
        /// How long a tunnel whose control connection ended (other than by close 1000) keeps
        /// its port and its open connections for `?resume=KEY`.
        reconnect_grace: Duration { default: secs(30), parse: Dur::ANY }
        /// Bytes per second per tunnel, both directions together, shaped; 0: unlimited.
        max_bandwidth: usize { default: 0, parse: Int(0, UNLIMITED) }
        /// Cluster mode: a new tunnel that would put this node more than this many points of
        /// utilisation over the fleet's is sent to the least loaded node (`moved`); 100: never.
        redirect_margin_percent: usize { default: 10, parse: Int(0, 100) }
    }
    /// The region-aware reverse proxy (docs/proxy.md): paths none of ringrelay's own routes
    /// take go to upstream HTTP servers.
    [proxy] ProxyConfig {
        /// `[[proxy.routes]]`: prefix, optional host, upstreams `{ url, region, weight }`,
        /// strip_prefix, preserve_host, fallback, auth, max_concurrent, health_path,
        /// health_interval, health_rise, health_fall. Empty: the proxy is off.
        routes: Vec<ProxyRoute> { default: Vec::new(), parse: Routes }
        /// The request header that names the region an upstream is picked in.
        region_header: String { default: "x-region".to_string(), parse: Trimmed }
        /// The query parameter that names it when the header is absent.
        region_query: String { default: "region".to_string(), parse: Trimmed }
        /// The region of a request that names none; unset: `cluster.region`, else any.
        default_region: Option<String> { default: None, parse: OptionalText }
        /// Largest request body (413 over it); 0: no limit, since bodies are streamed.
        max_body_bytes: usize { default: 0, parse: Int(0, UNLIMITED) }
        /// Time to open a connection to an upstream; past it the next upstream or 502.
        connect_timeout: Duration { default: secs(5), parse: Dur::POSITIVE }
        /// Time from the request's last byte to the response head; past it, 504.
        response_timeout: Duration { default: secs(60), parse: Dur::POSITIVE }
        /// Time without a byte while a body streams, either way; past it both are closed.
        idle_timeout: Duration { default: secs(60), parse: Dur::POSITIVE }
        /// Idle keep-alive connections kept per upstream per worker (`[proxy.pool] max_idle`).
        pool_max_idle: usize { default: 16, parse: Int(0, 10_000) }
        /// An idle upstream connection unused this long is closed
        /// (`[proxy.pool] idle_timeout`).
        pool_idle_timeout: Duration { default: secs(30), parse: Dur::POSITIVE }
        /// Consecutive failures (connect, reset, 502-like) that eject an upstream.
        eject_after: usize { default: 3, parse: Int(1, 1000) }
        /// First ejection's length; doubled for each ejection in a row, up to 64 times it.
        eject_backoff: Duration { default: secs(2), parse: Dur::POSITIVE }
        /// A WebSocket (or other upgrade) joined to its upstream with no byte either way for
        /// this long is closed, both sides.
        upgrade_idle_timeout: Duration { default: secs(3600), parse: Dur::POSITIVE }
    }
}
