//! The value types of config keys that are not plain numbers, strings or durations: what
//! each accepts (`FromStr`, with the reason an operator sees) and how it is written back.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

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

/// Where the access log goes (`log.access`, docs/observability.md "Access log"): nowhere,
/// stderr beside the main log, or a file of its own (appended to, reopened on SIGUSR1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessTarget {
    #[default]
    Off,
    Stderr,
    File(PathBuf),
}

impl AccessTarget {
    pub fn name(&self) -> String {
        match self {
            AccessTarget::Off => "off".to_string(),
            AccessTarget::Stderr => "stderr".to_string(),
            AccessTarget::File(p) => format!("file:{}", p.to_string_lossy()),
        }
    }
}

impl FromStr for AccessTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(AccessTarget::Off),
            "stderr" => Ok(AccessTarget::Stderr),
            _ => match s.strip_prefix("file:").map(str::trim) {
                Some("") => {
                    Err("file: needs a path, as in \"file:/var/log/ringrelay/access.log\"".into())
                }
                Some(path) => Ok(AccessTarget::File(PathBuf::from(path))),
                None => Err("expected \"off\", \"stderr\" or \"file:PATH\"".to_string()),
            },
        }
    }
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

/// One of several token secrets (`auth.keys`): a token whose header names `kid` is checked
/// against this key only. The secret is read from `secret_file` at start and on every reload,
/// never written inline, so a rotation is a file change plus SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKey {
    /// 1 to 64 of `[A-Za-z0-9._-]`, unique among the keys.
    pub kid: String,
    pub secret_file: std::path::PathBuf,
}

/// The most keys `auth.keys` may hold: a token without a `kid` is tried against each, so
/// this bounds the HMACs one forged token costs.
pub const MAX_AUTH_KEYS: usize = 8;

impl AuthKey {
    /// Whether `kid` is a valid key id.
    pub fn valid_kid(kid: &str) -> bool {
        (1..=64).contains(&kid.len())
            && kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }
}

/// The oldest TLS version the TLS listener accepts (`tls.min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

impl FromStr for TlsVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            _ => Err("expected 1.2 or 1.3 (older versions are not offered)".to_string()),
        }
    }
}

/// Whether the TLS listener asks for client certificates (`tls.client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    Off,
    Optional,
    Required,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Off => "off",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

impl FromStr for ClientAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(ClientAuth::Off),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            _ => Err("expected off, optional or required".to_string()),
        }
    }
}

/// One certificate of `tls.certificates`: a PEM chain and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// One grant of `tls.client_grants`: what a client whose verified certificate names
/// `subject` (its common name or one of its subject alternative names) may open without a
/// token, as a token with these `sid` and `role` claims would (docs/auth.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientGrant {
    /// 1 to [`MAX_SUBJECT_BYTES`] bytes of printable text, matched exactly (a DNS name
    /// ASCII-case-insensitively).
    pub subject: String,
    /// A session id, or `*` for any session.
    pub sid: String,
    /// When set, the grant admits this role only, as a token's `role` claim does.
    pub role: Option<String>,
}

/// The most grants `tls.client_grants` may hold: each admission by certificate scans them.
pub const MAX_CLIENT_GRANTS: usize = 1024;

/// The longest `subject` of a grant (a common name is at most 64 characters; a SAN may be
/// longer).
pub const MAX_SUBJECT_BYTES: usize = 255;

impl ClientGrant {
    /// Whether `subject` may be matched against a certificate: not empty, not too long, no
    /// control characters or surrounding spaces.
    pub fn valid_subject(subject: &str) -> bool {
        (1..=MAX_SUBJECT_BYTES).contains(&subject.len())
            && subject.trim() == subject
            && !subject.chars().any(char::is_control)
    }
}

/// `tunnel.ports`: the public ports tunnels are given, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How many ports the range holds.
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Never empty (parsing refuses `last < first`); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<PortRange, &'static str> {
        let hint = "expected a port range like \"20000-20999\" (1 to 65535, first <= last)";
        let (a, b) = s.trim().split_once('-').unwrap_or((s.trim(), s.trim()));
        let port = |t: &str| t.trim().parse::<u16>().ok().filter(|p| *p > 0);
        match (port(a), port(b)) {
            (Some(first), Some(last)) if first <= last => Ok(PortRange { first, last }),
            _ => Err(hint),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}
