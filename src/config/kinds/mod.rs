//! The `parse:` column of the table in `keys.rs`: how each kind of value is read from any
//! layer (with its range and the reason an operator sees), written back by `--print-config`,
//! and shown by `Debug`. A new key with a new format adds a kind here.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::apply::{Input, Raw, Secrecy, MIN_SECRET_BYTES};
use super::render::{self, Out};
use super::{has_password, redact_url, ConfigError, DemoMode};

mod grants;
mod keys;
pub(super) mod proxy;
mod text;

pub(super) use grants::Grants;
pub(super) use keys::Keys;
pub(super) use proxy::Routes;

pub(super) use text::{HeaderNames, LogFilter, Methods, Origins, RegistryName, Role, Trimmed};

/// How one kind of value is read, written back and shown.
pub(super) trait Kind<T> {
    fn parse(&self, input: &Input<'_>) -> Result<T, ConfigError>;

    /// The value as TOML; `None` when it is unset.
    fn toml(&self, value: &T) -> Option<String>;

    /// The `--print-config` lines of the key called `name` in its table. An unset key has
    /// none.
    fn render(&self, name: &str, value: &T, out: &mut Out) {
        if let Some(text) = self.toml(value) {
            out.key(name, text);
        }
    }

    /// The bounds of an integer, inclusive, for the docs test.
    fn range(&self) -> Option<(usize, usize)> {
        None
    }

    /// How an error shows a bad value.
    fn secrecy(&self) -> Secrecy {
        Secrecy::Shown
    }

    fn debug(&self, value: &T, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        T: fmt::Debug,
    {
        value.fmt(f)
    }
}

/// A value written back as the text it was read from.
pub(super) trait Named {
    fn name(&self) -> String;
}

impl Named for super::AccessTarget {
    fn name(&self) -> String {
        super::AccessTarget::name(self)
    }
}

macro_rules! named_by_as_str {
    ($($t:ty),*) => {
        $(impl Named for $t {
            fn name(&self) -> String {
                self.as_str().to_string()
            }
        })*
    };
}
named_by_as_str!(
    super::DriverChoice,
    super::LogFormat,
    super::Overflow,
    super::EchoRoute,
    super::ClientIpHeader,
    super::JwtAlgorithm,
    super::TlsVersion,
    super::ClientAuth
);

impl Named for super::IpNet {
    fn name(&self) -> String {
        self.to_string()
    }
}

/// `IP:port`, IPv6 in brackets; host names are not resolved.
pub(super) struct Addr;

impl Kind<SocketAddr> for Addr {
    fn parse(&self, i: &Input<'_>) -> Result<SocketAddr, ConfigError> {
        i.addr()
    }
    fn toml(&self, v: &SocketAddr) -> Option<String> {
        Some(render::string(&v.to_string()))
    }
}

/// An address, or empty for none; printed as `""` then, so the line stays in the output.
pub(super) struct OptionalAddr;

impl Kind<Option<SocketAddr>> for OptionalAddr {
    fn parse(&self, i: &Input<'_>) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(s) = i.optional_string()? else {
            return Ok(None);
        };
        let hint = "expected an address like 10.0.0.5:7000";
        s.parse().map(Some).map_err(|_| i.fail(hint))
    }
    fn toml(&self, v: &Option<SocketAddr>) -> Option<String> {
        v.map(|a| render::string(&a.to_string()))
    }
    fn render(&self, name: &str, v: &Option<SocketAddr>, out: &mut Out) {
        let text = v.map(|a| a.to_string()).unwrap_or_default();
        out.key(name, render::string(&text));
    }
}

/// A whole number from the first to the second, inclusive (bytes, counts, percentages).
pub(super) struct Int(pub usize, pub usize);

impl Kind<usize> for Int {
    fn parse(&self, i: &Input<'_>) -> Result<usize, ConfigError> {
        i.size(self.0, self.1)
    }
    fn toml(&self, v: &usize) -> Option<String> {
        Some(v.to_string())
    }
    fn range(&self) -> Option<(usize, usize)> {
        Some((self.0, self.1))
    }
}

impl Kind<u32> for Int {
    fn parse(&self, i: &Input<'_>) -> Result<u32, ConfigError> {
        let n = i.size(self.0, self.1.min(u32::MAX as usize))?;
        // In range: the maximum fits.
        Ok(n as u32)
    }
    fn toml(&self, v: &u32) -> Option<String> {
        Some(v.to_string())
    }
    fn range(&self) -> Option<(usize, usize)> {
        Some((self.0, self.1.min(u32::MAX as usize)))
    }
}

/// A duration with one unit (`"500ms"`), at most a year.
pub(super) struct Dur {
    allow_zero: bool,
}

impl Dur {
    /// `"0s"` allowed, usually meaning "at once" or "off".
    pub const ANY: Dur = Dur { allow_zero: true };
    /// More than zero.
    pub const POSITIVE: Dur = Dur { allow_zero: false };
}

impl Kind<Duration> for Dur {
    fn parse(&self, i: &Input<'_>) -> Result<Duration, ConfigError> {
        i.duration(self.allow_zero)
    }
    fn toml(&self, v: &Duration) -> Option<String> {
        Some(render::duration(*v))
    }
}

/// Whole seconds, as `exp` and `iat` are; `"0s"` (off) is the only value under a second.
pub(super) struct TokenLifetime;

impl Kind<Duration> for TokenLifetime {
    fn parse(&self, i: &Input<'_>) -> Result<Duration, ConfigError> {
        let d = i.duration(true)?;
        if !d.is_zero() && d < Duration::from_secs(1) {
            return Err(i.fail("must be \"0s\" (off) or at least 1s"));
        }
        Ok(d)
    }
    fn toml(&self, v: &Duration) -> Option<String> {
        Some(render::duration(*v))
    }
}

/// `true` or `false` (in the environment also `1`/`0`, `yes`/`no`, `on`/`off`).
pub(super) struct Flag;

impl Kind<bool> for Flag {
    fn parse(&self, i: &Input<'_>) -> Result<bool, ConfigError> {
        i.boolean()
    }
    fn toml(&self, v: &bool) -> Option<String> {
        Some(v.to_string())
    }
}

/// One of an enum's names, as its `FromStr` takes them.
pub(super) struct Choice;

impl<T: FromStr<Err = String> + Named> Kind<T> for Choice {
    fn parse(&self, i: &Input<'_>) -> Result<T, ConfigError> {
        i.choice()
    }
    fn toml(&self, v: &T) -> Option<String> {
        Some(render::string(&v.name()))
    }
}

/// A list of names an item type parses (a TOML array, or comma-separated text);
/// `if_empty` refuses an empty one with that reason.
pub(super) struct List {
    pub if_empty: Option<&'static str>,
}

impl<T: FromStr<Err = String> + Named> Kind<Vec<T>> for List {
    fn parse(&self, i: &Input<'_>) -> Result<Vec<T>, ConfigError> {
        let items: Vec<T> = i.parsed_list()?;
        match self.if_empty {
            Some(reason) if items.is_empty() => Err(i.fail(reason)),
            _ => Ok(items),
        }
    }
    fn toml(&self, v: &Vec<T>) -> Option<String> {
        Some(render::list(v.iter().map(Named::name)))
    }
}

/// `true`, `false` or `"auto"`.
pub(super) struct Demo;

impl Kind<DemoMode> for Demo {
    fn parse(&self, i: &Input<'_>) -> Result<DemoMode, ConfigError> {
        let text = match i.raw {
            Raw::Toml(toml::Value::String(s)) => Some(s.as_str()),
            Raw::Text(s) => Some(s),
            Raw::Toml(_) => None,
        };
        let hint = "expected true, false or \"auto\"";
        match text.map(str::trim) {
            Some("auto") => Ok(DemoMode::Auto),
            _ if matches!(i.raw, Raw::Toml(toml::Value::String(_))) => Err(i.fail(hint)),
            _ => match i.boolean() {
                Ok(true) => Ok(DemoMode::On),
                Ok(false) => Ok(DemoMode::Off),
                Err(_) => Err(i.fail(hint)),
            },
        }
    }
    fn toml(&self, v: &DemoMode) -> Option<String> {
        Some(match v {
            DemoMode::Auto => render::string("auto"),
            mode => mode.as_str().to_string(),
        })
    }
}

/// Text that is unset when empty (`auth.audience`).
pub(super) struct OptionalText;

impl Kind<Option<String>> for OptionalText {
    fn parse(&self, i: &Input<'_>) -> Result<Option<String>, ConfigError> {
        i.optional_string()
    }
    fn toml(&self, v: &Option<String>) -> Option<String> {
        v.as_deref().map(render::string)
    }
}

/// A path to a file read at start; empty is refused.
pub(super) struct FilePath;

impl Kind<Option<PathBuf>> for FilePath {
    fn parse(&self, i: &Input<'_>) -> Result<Option<PathBuf>, ConfigError> {
        i.path().map(Some)
    }
    fn toml(&self, v: &Option<PathBuf>) -> Option<String> {
        v.as_ref().map(|p| render::string(&p.to_string_lossy()))
    }
}

/// An inline HMAC secret, at least [`MIN_SECRET_BYTES`]: never printed, shown or echoed.
pub(super) struct Secret;

impl Kind<Option<String>> for Secret {
    fn parse(&self, i: &Input<'_>) -> Result<Option<String>, ConfigError> {
        let s = i.string()?;
        if s.len() < MIN_SECRET_BYTES {
            let n = s.len();
            return Err(i.fail(format!(
                "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes; this one has {n}"
            )));
        }
        Ok(Some(s.to_string()))
    }
    fn toml(&self, _: &Option<String>) -> Option<String> {
        None
    }
    fn render(&self, name: &str, v: &Option<String>, out: &mut Out) {
        if v.is_some() {
            out.comment(&format!("{name} is set but not printed"));
        }
    }
    fn secrecy(&self) -> Secrecy {
        Secrecy::Hidden
    }
    fn debug(&self, v: &Option<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&v.as_ref().map(|_| "<redacted>"), f)
    }
}

/// `redis://...` (or `rediss://`, `unix://`); empty means cluster mode off. A password in it
/// is shown as `<redacted>` everywhere.
pub(super) struct RedisUrl;

impl Kind<Option<String>> for RedisUrl {
    fn parse(&self, i: &Input<'_>) -> Result<Option<String>, ConfigError> {
        let Some(url) = i.optional_string()? else {
            return Ok(None);
        };
        if !["redis://", "rediss://", "unix://"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            return Err(i.fail("expected a redis://host:port URL"));
        }
        Ok(Some(url))
    }
    fn toml(&self, v: &Option<String>) -> Option<String> {
        v.as_deref().map(|url| render::string(&redact_url(url)))
    }
    fn render(&self, name: &str, v: &Option<String>, out: &mut Out) {
        let url = v.as_deref().unwrap_or("");
        if has_password(url) {
            out.comment(&format!("the password in {name} is not printed"));
        }
        out.key(name, render::string(&redact_url(url)));
    }
    fn secrecy(&self) -> Secrecy {
        Secrecy::UrlPassword
    }
    fn debug(&self, v: &Option<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&v.as_deref().map(redact_url), f)
    }
}

/// `tls.certificates`: in TOML an array of tables `{ cert_file = "...", key_file = "..." }`;
/// in the environment `cert.pem:key.pem,cert2.pem:key2.pem` (a path holding `:` or `,` needs
/// the file).
pub(super) struct CertList;

impl CertList {
    fn pair(i: &Input<'_>, cert: &str, key: &str) -> Result<super::CertPair, ConfigError> {
        let (cert, key) = (cert.trim(), key.trim());
        if cert.is_empty() || key.is_empty() {
            return Err(i.fail("each certificate needs a cert_file and a key_file"));
        }
        Ok(super::CertPair {
            cert_file: PathBuf::from(cert),
            key_file: PathBuf::from(key),
        })
    }

    fn table(i: &Input<'_>, v: &toml::Value) -> Result<super::CertPair, ConfigError> {
        let hint = "expected { cert_file = \"...\", key_file = \"...\" }";
        let t = v.as_table().ok_or_else(|| i.fail(hint))?;
        if let Some(k) = t.keys().find(|k| *k != "cert_file" && *k != "key_file") {
            return Err(i.fail(format!("unknown key {k:?} in a certificate: {hint}")));
        }
        let field = |name: &str| t.get(name).and_then(toml::Value::as_str).unwrap_or("");
        Self::pair(i, field("cert_file"), field("key_file"))
    }
}

impl Kind<Vec<super::CertPair>> for CertList {
    fn parse(&self, i: &Input<'_>) -> Result<Vec<super::CertPair>, ConfigError> {
        match i.raw {
            Raw::Toml(toml::Value::Array(items)) => {
                items.iter().map(|v| Self::table(i, v)).collect()
            }
            Raw::Toml(_) => Err(i.fail("expected an array of { cert_file, key_file } tables")),
            Raw::Text(s) if s.trim().is_empty() => Ok(Vec::new()),
            Raw::Text(s) => s
                .split(',')
                .map(|item| match item.split_once(':') {
                    Some((c, k)) => Self::pair(i, c, k),
                    None => Err(i.fail("expected cert.pem:key.pem, comma-separated")),
                })
                .collect(),
        }
    }
    fn toml(&self, v: &Vec<super::CertPair>) -> Option<String> {
        let items = v.iter().map(|p| {
            format!(
                "{{ cert_file = {}, key_file = {} }}",
                render::string(&p.cert_file.to_string_lossy()),
                render::string(&p.key_file.to_string_lossy())
            )
        });
        Some(format!("[{}]", items.collect::<Vec<_>>().join(", ")))
    }
}

/// A port range, `"first-last"` (`tunnel.ports`).
pub(super) struct Ports;

impl Kind<super::PortRange> for Ports {
    fn parse(&self, i: &Input<'_>) -> Result<super::PortRange, ConfigError> {
        i.string()?.parse().map_err(|hint: &str| i.fail(hint))
    }
    fn toml(&self, v: &super::PortRange) -> Option<String> {
        Some(render::string(&v.to_string()))
    }
}

/// An IP address without a port (`tunnel.bind`); host names are not resolved.
pub(super) struct Ip;

impl Kind<std::net::IpAddr> for Ip {
    fn parse(&self, i: &Input<'_>) -> Result<std::net::IpAddr, ConfigError> {
        let hint = "expected an IP address like 127.0.0.1 or ::";
        i.string()?.trim().parse().map_err(|_| i.fail(hint))
    }
    fn toml(&self, v: &std::net::IpAddr) -> Option<String> {
        Some(render::string(&v.to_string()))
    }
}
