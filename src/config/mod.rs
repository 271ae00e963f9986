//! Configuration: defaults < TOML file < `RINGRELAY_*` environment < CLI flags.
//! docs/configuration.md is the operator's reference; keep it in step with this module.
#![forbid(unsafe_code)]

mod apply;
mod duration;
mod error;
mod layers;
mod redact;
mod render;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use redact::{has_password, redact_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    #[default]
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub workers: usize,
    pub driver: DriverChoice,
    pub shutdown_grace: Duration,
    pub limits: LimitsConfig,
    pub session: SessionConfig,
    pub bridge: BridgeConfig,
    pub auth: AuthConfig,
    pub security: SecurityConfig,
    pub log: LogConfig,
    pub stats: StatsConfig,
    pub demo: DemoConfig,
    pub cluster: ClusterConfig,
}

/// Several nodes coordinated through Redis (docs/cluster.md). Off unless `redis_url` is set.
/// `Debug` is written by hand: it must show neither `secret` nor a password in `redis_url`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// May hold a password (`redis://:pass@host`); shown only through [`redact_url`].
    pub redis_url: Option<String>,
    /// This node's name in the registry; empty means the host name and the listen port.
    pub node_id: String,
    pub region: String,
    /// The public address clients reach this node at; empty means `ws://{listen}`.
    pub public_url: String,
    /// The node-to-node listener, registered for other nodes (unset: none).
    pub internal_listen: Option<SocketAddr>,
    /// How often the node refreshes its registry entry and reads the fleet.
    pub heartbeat: Duration,
    /// How long an entry outlives its last refresh: a node that dies is gone after this.
    pub node_ttl: Duration,
    /// Prefix of every Redis key the relay uses.
    pub key_prefix: String,
    /// The secret nodes prove to each other on the node-to-node link (inline; redacted).
    pub secret: Option<String>,
    /// A file holding that secret (one of the two, when `internal_listen` is set).
    pub secret_file: Option<std::path::PathBuf>,
    /// How long a session's ownership key outlives its last renewal.
    pub session_ttl: Duration,
    /// Longest a new peer waits for its owner to be found before it is answered 503.
    pub lookup_timeout: Duration,
    /// Ownership requests waiting for the cluster thread; past it, new peers get 503.
    pub request_queue: usize,
    /// Openings on the internal listener from one address that have not proved the secret
    /// yet, per worker; past it a new one is closed at once. A real carrier proves itself
    /// within a round trip, so only a burst of new carried peers from one node comes near.
    pub max_pending_links_per_ip: usize,
    /// The same, from all addresses together, per worker.
    pub max_pending_links: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            node_id: String::new(),
            region: "default".to_string(),
            public_url: String::new(),
            internal_listen: None,
            heartbeat: Duration::from_secs(5),
            node_ttl: Duration::from_secs(15),
            key_prefix: "ringrelay".to_string(),
            secret: None,
            secret_file: None,
            session_ttl: Duration::from_secs(30),
            lookup_timeout: Duration::from_secs(2),
            request_queue: 4096,
            max_pending_links_per_ip: 16,
            max_pending_links: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DemoConfig {
    pub enabled: DemoMode,
}

/// Whether the public listener serves the demo page at `/demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoMode {
    /// On only when the public listener is a loopback address: a relay on a developer's
    /// machine shows it, a deployed one does not unless asked.
    #[default]
    Auto,
    On,
    Off,
}

impl DemoMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DemoMode::Auto => "auto",
            DemoMode::On => "true",
            DemoMode::Off => "false",
        }
    }
}

impl Config {
    /// Whether `/demo` is served, `auto` resolved against the public listener.
    pub fn demo_enabled(&self) -> bool {
        match self.demo.enabled {
            DemoMode::On => true,
            DemoMode::Off => false,
            DemoMode::Auto => self.listen.ip().is_loopback(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// Record latency histograms; off only to measure what recording costs.
    pub latency: bool,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig { latency: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_message_bytes: usize,
    pub handshake_timeout: Duration,
    pub max_header_bytes: usize,
    /// Number of header lines, not bytes.
    pub max_headers: usize,
    /// Size of each pooled read buffer.
    pub read_buffer_bytes: usize,
    /// Idle read buffers kept per worker; more are allocated on demand and freed.
    pub pool_buffers: usize,
    /// Read buffers in use at once per worker; past it, readers wait for one (backpressure),
    /// so a readiness storm cannot allocate a buffer per connection.
    pub max_read_buffers: usize,
    /// Bounded cross-core handoff queue per worker.
    pub handoff_queue: usize,
    pub max_connections_per_worker: usize,
    /// Upgraded connections on the whole server; past it new ones get 503.
    pub max_connections: usize,
    /// Sessions on the whole server; past it a connection that would open one gets 503.
    pub max_sessions: usize,
    /// Share of `max_connections` (percent) kept for peers rejoining a session that has been
    /// paired, so a flood of new sessions cannot lock out users already talking.
    pub reconnect_reserve_percent: usize,
    /// Open connections per client IP (0: no limit), held exactly on the address's home core.
    pub max_connections_per_ip: usize,
    /// New connections per minute per client IP (0: no limit), held on the address's home core.
    pub ip_connect_rate: usize,
    pub ip_connect_burst: usize,
    /// Entries in each worker's per-IP tables; the least recently used is evicted past it.
    pub ip_table_size: usize,
    /// Messages per second per connection (0: no limit); over it the relay stops reading.
    pub message_rate: usize,
    pub message_burst: usize,
    /// Payload bytes per second per connection (0: no limit); over it the relay stops reading.
    pub byte_rate: usize,
    pub byte_burst: usize,
    /// Frames one message may be split into; more closes with 1008 (tiny-fragment floods).
    pub max_frames_per_message: usize,
    /// A peer that takes longer than this to accept one write is dropped.
    pub write_timeout: Duration,
    /// A write still pending after this long counts as blocked: its receiver is not reading
    /// (for now), and the pooled buffer it holds is what the two bounds below and the pool
    /// reserve count. Set, it must be shorter than `write_timeout`; a `write_timeout` no
    /// longer than the default grace is itself the bound on blocked writes.
    pub blocked_write_grace: Duration,
    /// Pooled buffers that blocked writes to one client address's connections may hold on a
    /// worker (0: no limit). Past it, its receivers holding the most are dropped as the
    /// write timeout would drop them: an address cannot pin the pool however many pairs it
    /// opens.
    pub max_blocked_writes_per_ip: usize,
    /// The same for the peers of one session (0: no limit). Each direction holds at most one
    /// buffer, so more than two means senders that replaced each other piled up behind one
    /// receiver.
    pub max_blocked_writes_per_session: usize,
    /// Share of `max_read_buffers` (percent) the pool keeps free for connections that read:
    /// when fewer are left, blocked writes are ended at once (the receivers of the address
    /// holding the most first, then the oldest), so that pairs on the same core keep flowing
    /// whoever else opens pairs that never read.
    pub pool_reserve_percent: usize,
    /// Ceiling of the back-off after `accept` fails for lack of file descriptors.
    pub accept_backoff_max: Duration,
    /// Connections from one address still in their HTTP phase (PROXY header and request head
    /// not yet read and answered); past it a new one is closed at once. 0: no limit. A
    /// trusted proxy is exempt (it is many clients); behind PROXY protocol the declared client
    /// is charged instead.
    pub max_handshakes_per_ip: usize,
    /// Connections in their HTTP phase on one worker, whoever they are from; past it a new one
    /// is closed at once.
    pub max_handshakes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub ping_interval: Duration,
    pub peer_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a session with no peer and something kept for one stays (docs/durability.md).
    pub linger: Duration,
    /// Bytes of messages kept for an absent peer, per direction; 0 turns buffering off.
    pub buffer_bytes: usize,
    /// Messages kept for an absent peer, per direction.
    pub buffer_messages: usize,
    /// What happens to a sender whose buffer is full.
    pub overflow: Overflow,
    /// All buffers of one core together; past it every buffering sender is backpressured.
    pub core_buffer_budget: usize,
    /// Delivered messages kept per direction for `resume=`, once its receiver asked for it.
    pub replay_bytes: usize,
    /// How long to wait for the peer's close reply after sending a close frame.
    pub close_timeout: Duration,
}

/// What the relay does when a sender's buffer for an absent peer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Stop reading the sender until there is room: nothing is lost, TCP slows the sender.
    #[default]
    Backpressure,
    /// Drop the oldest kept messages to make room (counted, announced to the sender).
    DropOldest,
    /// Close the sender with 4005; what was kept is still delivered.
    Close,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Backpressure => "backpressure",
            Overflow::DropOldest => "drop_oldest",
            Overflow::Close => "close",
        }
    }
}

impl FromStr for Overflow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "backpressure" => Ok(Overflow::Backpressure),
            "drop_oldest" => Ok(Overflow::DropOldest),
            "close" => Ok(Overflow::Close),
            _ => Err("expected backpressure, drop_oldest or close".to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub agent_role: String,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// Decoded body of an agent's answer; more is 502. It also bounds what an agent's
    /// connection keeps of one answer (`bridge::answers::capture_limit`).
    pub max_response_bytes: usize,
    /// Upper-case method names; any other method is answered 405.
    pub allowed_methods: Vec<String>,
    /// Requests waiting for one agent's answers; more are answered 503.
    pub max_in_flight: u32,
    /// Off (the default), every bridged answer carries `Content-Security-Policy: sandbox`:
    /// an agent's page may not run script or reach storage as the relay's origin. On for a
    /// relay whose origin serves nothing else.
    pub allow_active_content: bool,
    /// Off (the default), an agent's `Set-Cookie` headers are dropped: an agent may not set
    /// cookies for the relay's origin, which every other agent's answers share.
    pub pass_cookies: bool,
}

/// At most one of the two is set (checked by [`Config::load`]).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub jwt_secret: Option<String>,
    pub jwt_secret_file: Option<PathBuf>,
    /// Accepted `alg` values; anything else (`none` above all) is refused.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Required `aud` when set.
    pub audience: Option<String>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Longer tokens are refused before any decoding.
    pub max_token_bytes: usize,
    /// Longest a token may be valid: `exp - iat`, and `exp - now` (plus `leeway`), may not
    /// exceed it, so a leaked token is good for a bounded time whatever its issuer wrote.
    /// Zero turns the check off, for issuers that deliberately mint long-lived tokens.
    pub max_token_lifetime: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwt_secret_file: None,
            algorithms: vec![JwtAlgorithm::Hs256],
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(30),
            max_token_bytes: 4096,
            max_token_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// The HMAC algorithms a shared secret can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Hs384,
    Hs512,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Hs384 => "HS384",
            JwtAlgorithm::Hs512 => "HS512",
        }
    }
}

impl FromStr for JwtAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "HS256" => Ok(JwtAlgorithm::Hs256),
            "HS384" => Ok(JwtAlgorithm::Hs384),
            "HS512" => Ok(JwtAlgorithm::Hs512),
            _ => Err(format!(
                "{s:?} is not supported; expected HS256, HS384 or HS512"
            )),
        }
    }
}

/// Who may use `/v1/echo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EchoRoute {
    /// Needs a valid token (any session) when auth is on; open otherwise.
    #[default]
    Auth,
    Open,
    /// 404.
    Off,
}

impl EchoRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            EchoRoute::Auth => "auth",
            EchoRoute::Open => "open",
            EchoRoute::Off => "off",
        }
    }
}

impl FromStr for EchoRoute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auth" => Ok(EchoRoute::Auth),
            "open" => Ok(EchoRoute::Open),
            "off" => Ok(EchoRoute::Off),
            _ => Err("expected auth, open or off".to_string()),
        }
    }
}

/// An address block such as `10.0.0.0/8`; a plain address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            let keep = u32::from(prefix.min(width));
            if keep == 0 {
                0
            } else {
                bits >> (u32::from(width) - keep)
            }
        }
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let (a, b) = (u32::from(net) as u128, u32::from(ip) as u128);
                masked(a, self.prefix, 32) == masked(b, self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            "" => width,
            p => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: prefix must be 0 to {width}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == width {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    pub allowed_origins: Vec<String>,
    /// Refuse requests without an Origin header (non-browser clients send none).
    pub require_origin: bool,
    /// Direct peers believed when they name the client (in `client_ip_header`).
    pub trusted_proxies: Vec<IpNet>,
    pub echo_route: EchoRoute,
    /// The one place a trusted proxy names the client; the others are ignored, so a client
    /// cannot add its own `Forwarded` behind a proxy that writes only `X-Forwarded-For`.
    pub client_ip_header: ClientIpHeader,
}

/// Where the client's address comes from when the direct peer is a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIpHeader {
    /// The `X-Forwarded-For` header (what HAProxy's `option forwardfor` and nginx write).
    #[default]
    XForwardedFor,
    /// The RFC 7239 `Forwarded` header's `for=`.
    Forwarded,
    /// A PROXY protocol header (v1 or v2) before the request: no HTTP header is believed.
    ProxyProtocol,
}

impl ClientIpHeader {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
            ClientIpHeader::ProxyProtocol => "proxy-protocol",
        }
    }
}

impl FromStr for ClientIpHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ClientIpHeader::XForwardedFor),
            "forwarded" => Ok(ClientIpHeader::Forwarded),
            "proxy-protocol" => Ok(ClientIpHeader::ProxyProtocol),
            _ => Err("expected x-forwarded-for, forwarded or proxy-protocol".to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive such as `info` or `ringrelay=debug`.
    pub level: String,
    pub format: LogFormat,
}

/// CLI flags that override file and environment.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub workers: Option<String>,
    pub driver: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            workers: cpus.clamp(1, 1024),
            driver: DriverChoice::Auto,
            shutdown_grace: Duration::from_secs(10),
            limits: LimitsConfig::default(),
            session: SessionConfig::default(),
            bridge: BridgeConfig::default(),
            auth: AuthConfig::default(),
            security: SecurityConfig::default(),
            log: LogConfig::default(),
            stats: StatsConfig::default(),
            demo: DemoConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 1 << 20,
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 8192,
            max_headers: 100,
            read_buffer_bytes: 64 << 10,
            pool_buffers: 64,
            max_read_buffers: 1024,
            handoff_queue: 1024,
            max_connections_per_worker: 100_000,
            max_connections: 100_000,
            max_sessions: 100_000,
            reconnect_reserve_percent: 10,
            max_connections_per_ip: 1000,
            ip_connect_rate: 1200,
            ip_connect_burst: 400,
            ip_table_size: 16_384,
            message_rate: 0,
            message_burst: 1000,
            byte_rate: 0,
            byte_burst: 1 << 20,
            max_frames_per_message: 4096,
            write_timeout: Duration::from_secs(60),
            blocked_write_grace: Duration::from_secs(1),
            max_blocked_writes_per_ip: 32,
            max_blocked_writes_per_session: 2,
            pool_reserve_percent: 10,
            accept_backoff_max: Duration::from_secs(1),
            max_handshakes_per_ip: 32,
            max_handshakes: 4096,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ping_interval: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(75),
            idle_timeout: Duration::from_secs(30 * 60),
            linger: Duration::from_secs(5 * 60),
            buffer_bytes: 1 << 20,
            buffer_messages: 1024,
            overflow: Overflow::Backpressure,
            core_buffer_budget: 256 << 20,
            replay_bytes: 256 << 10,
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            agent_role: "agent".to_string(),
            timeout: Duration::from_secs(30),
            max_body_bytes: 64 << 10,
            max_response_bytes: 1 << 20,
            allowed_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            max_in_flight: 64,
            allow_active_content: false,
            pass_cookies: false,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            allowed_origins: vec!["*".to_string()],
            require_origin: false,
            trusted_proxies: Vec::new(),
            echo_route: EchoRoute::Auth,
            client_ip_header: ClientIpHeader::XForwardedFor,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// Keeps the secret, and any password in the Redis URL, out of logs and panic messages.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.secret.as_ref().map(|_| "<redacted>");
        let url = self.redis_url.as_deref().map(redact_url);
        f.debug_struct("ClusterConfig")
            .field("redis_url", &url)
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("public_url", &self.public_url)
            .field("internal_listen", &self.internal_listen)
            .field("heartbeat", &self.heartbeat)
            .field("node_ttl", &self.node_ttl)
            .field("key_prefix", &self.key_prefix)
            .field("secret", &secret)
            .field("secret_file", &self.secret_file)
            .field("session_ttl", &self.session_ttl)
            .field("lookup_timeout", &self.lookup_timeout)
            .field("request_queue", &self.request_queue)
            .field("max_pending_links_per_ip", &self.max_pending_links_per_ip)
            .field("max_pending_links", &self.max_pending_links)
            .finish()
    }
}

/// Keeps the secret out of logs and panic messages.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.jwt_secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &secret)
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("algorithms", &self.algorithms)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .finish()
    }
}

impl Config {
    /// file (optional) < environment (`RINGRELAY_*`) < CLI overrides. Reads only `env`, never
    /// the process environment, so callers and tests decide what it sees.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        cli: &CliOverrides,
    ) -> Result<Config, ConfigError> {
        layers::load(file, env, cli)
    }

    /// [`Config::load`] with the file's text already in hand; `name` stands for the file in
    /// errors. For callers without a file on disk, such as the fuzzer.
    pub fn from_toml_str(
        text: &str,
        name: &Path,
        env: &[(String, String)],
        cli: &CliOverrides,
    ) -> Result<Config, ConfigError> {
        layers::load_text(Some((text, name)), env, cli)
    }

    /// The effective config as TOML that [`Config::load`] accepts back. An inline
    /// `auth.jwt_secret` is left out (a comment says it is set) so that `--print-config`
    /// output can be pasted into a ticket safely.
    pub fn to_toml(&self) -> String {
        render::to_toml(self)
    }

    /// The HS256 secret, read from `auth.jwt_secret_file` when that is set. Trailing CR/LF is
    /// dropped because `echo secret > file` adds one.
    pub fn jwt_secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let a = &self.auth;
        layers::read_secret("auth", &a.jwt_secret, &a.jwt_secret_file)
    }

    /// The node-to-node link's secret (`cluster.secret` or `cluster.secret_file`), read now.
    pub fn cluster_secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let c = &self.cluster;
        layers::read_secret("cluster", &c.secret, &c.secret_file)
    }
}

/// `RINGRELAY_*` variables in `env` that match no key, so the caller can warn about typos
/// (`load` itself ignores them). `RINGRELAY_CONFIG` is the config path and is not listed.
pub fn ignored_env_vars(env: &[(String, String)]) -> Vec<String> {
    layers::ignored_env_vars(env)
}

impl DriverChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverChoice::Auto => "auto",
            DriverChoice::IoUring => "io_uring",
            DriverChoice::Epoll => "epoll",
        }
    }
}

impl FromStr for DriverChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DriverChoice::Auto),
            "io_uring" => Ok(DriverChoice::IoUring),
            "epoll" => Ok(DriverChoice::Epoll),
            _ => Err("expected one of auto, io_uring, epoll".to_string()),
        }
    }
}

impl fmt::Display for DriverChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".to_string()),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
