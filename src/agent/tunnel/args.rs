//! `ringrelay tunnel expose`'s command line and its check into an [`ExposePlan`]: everything
//! that can be wrong with the arguments is found before anything connects.

use crate::agent::relay_args::{RelayArgs, RelayArgsError};
use crate::agent::relay_url::RelayUrl;
use crate::config::{parse_duration, DriverChoice};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// TCP tunnels: a local port reachable through a relay's public port (docs/tunnels.md).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TunnelCommand {
    /// Expose a local TCP service on a public port of the relay; prints the public address.
    Expose(ExposeArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExposeArgs {
    #[command(flatten)]
    pub link: RelayArgs,
    /// The local service each public connection is joined to: HOST:PORT.
    #[arg(long)]
    pub local: String,
    /// Ask for this public port (the relay's `tunnel.ports` range); default: any free one.
    #[arg(long)]
    pub port: Option<u16>,
    /// Token for the relay, sent as `Authorization: Bearer` (also RINGRELAY_TUNNEL_TOKEN).
    #[arg(long, env = "RINGRELAY_TUNNEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// API key for the relay (`rrk_...`), sent as `?key=` (also RINGRELAY_TUNNEL_KEY).
    #[arg(
        long,
        env = "RINGRELAY_TUNNEL_KEY",
        hide_env_values = true,
        conflicts_with = "token"
    )]
    pub key: Option<String>,
    /// Print exactly one JSON line `{"public":"HOST:PORT"}` on stdout (again only if the
    /// public address ever changes); logs go to stderr either way.
    #[arg(long)]
    pub json: bool,
    /// Allow a --local that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Keep the tunnel's resume key here (mode 0600), and read it at start: a client
    /// restarted within the relay's reconnect grace gets its port back.
    #[arg(long, value_name = "PATH")]
    pub resume_file: Option<PathBuf>,
    /// On SIGTERM: no new connections; open ones may go on this long, then the tunnel
    /// closes (1000, which releases the port).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Data connections being opened (connect and upgrade) at once; more public connections
    /// wait their turn. Keep it under the relay's `limits.max_handshakes_per_ip` (32): the
    /// relay refuses upgrades from one address past it.
    #[arg(long, default_value_t = 16)]
    pub max_upgrades: usize,
}

/// The checked arguments.
#[derive(Debug, Clone)]
pub struct ExposePlan {
    pub relay: RelayUrl,
    pub local: SocketAddr,
    pub port: Option<u16>,
    pub credential: Option<Credential>,
    pub json: bool,
    pub resume_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub ping_interval: Duration,
    pub shutdown_grace: Duration,
    pub max_upgrades: usize,
    pub driver: DriverChoice,
}

/// How the client shows who it is, on the control and on every data connection alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Token(String),
    ApiKey(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ExposeArgsError {
    #[error(transparent)]
    Link(#[from] RelayArgsError),
    #[error("--relay {0}: tunnels need a plain ws:// relay for now (the data connections are raw TCP; put TLS in front of the public ports instead)")]
    Wss(String),
    #[error("--local {0}: not HOST:PORT with a resolvable host")]
    Local(String),
    #[error(
        "--local {0} is not a loopback address; pass --allow-remote to forward off this machine"
    )]
    NotLoopback(SocketAddr),
    #[error("--port 0: leave --port out for any free port")]
    PortZero,
    #[error("the token or key holds a character that cannot go in a request")]
    CredentialChars,
    #[error("{0} must be more than zero")]
    Zero(&'static str),
}

impl ExposeArgs {
    pub fn plan(&self) -> Result<ExposePlan, ExposeArgsError> {
        let relay = self.link.check()?;
        if relay.tls {
            return Err(ExposeArgsError::Wss(self.link.relay.clone()));
        }
        let local = self
            .local
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ExposeArgsError::Local(self.local.clone()))?;
        if !self.allow_remote && !local.ip().to_canonical().is_loopback() {
            return Err(ExposeArgsError::NotLoopback(local));
        }
        if self.port == Some(0) {
            return Err(ExposeArgsError::PortZero);
        }
        let credential = match (&self.token, &self.key) {
            (Some(t), _) => Some(Credential::Token(t.trim().to_string())),
            (None, Some(k)) => Some(Credential::ApiKey(k.trim().to_string())),
            (None, None) => None,
        }
        .filter(|c| !c.value().is_empty());
        if credential.as_ref().is_some_and(|c| !c.clean()) {
            return Err(ExposeArgsError::CredentialChars);
        }
        if self.max_upgrades == 0 {
            return Err(ExposeArgsError::Zero("--max-upgrades"));
        }
        Ok(ExposePlan {
            relay,
            local,
            port: self.port,
            credential,
            json: self.json,
            resume_file: self.resume_file.clone(),
            connect_timeout: self.link.connect_timeout,
            backoff_initial: self.link.backoff_initial,
            backoff_max: self.link.backoff_max,
            ping_interval: self.link.ping_interval,
            shutdown_grace: self.shutdown_grace,
            max_upgrades: self.max_upgrades,
            driver: self.link.driver,
        })
    }
}

impl Credential {
    fn value(&self) -> &str {
        match self {
            Credential::Token(v) | Credential::ApiKey(v) => v,
        }
    }

    /// A token goes in a header, a key in the query: no control characters, and a key only
    /// of characters a query carries as they are.
    fn clean(&self) -> bool {
        match self {
            Credential::Token(t) => !t.bytes().any(|b| b < b' ' || b == 0x7f),
            Credential::ApiKey(k) => k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)),
        }
    }

    /// The header this credential is sent in, if any.
    pub fn header(&self) -> Option<(&'static str, String)> {
        match self {
            Credential::Token(t) => Some(("Authorization", format!("Bearer {t}"))),
            Credential::ApiKey(_) => None,
        }
    }

    /// The query parameter this credential is sent in, if any.
    pub fn query(&self) -> Option<String> {
        match self {
            Credential::Token(_) => None,
            Credential::ApiKey(k) => Some(format!("key={k}")),
        }
    }
}

impl ExposePlan {
    /// The control route: the port asked for (or, after a reconnect, the one held), the
    /// resume key when there is one, the API key.
    pub fn control_route(&self, port: Option<u16>, resume: Option<&str>) -> String {
        let mut query: Vec<String> = Vec::new();
        if let Some(p) = port.or(self.port) {
            query.push(format!("port={p}"));
        }
        if let Some(r) = resume {
            query.push(format!("resume={}", query_escape(r)));
        }
        query.extend(self.credential.as_ref().and_then(Credential::query));
        with_query(format!("{}/v1/tunnel", self.relay.base), &query)
    }

    /// The data route for the public connection `id` (checked to be path-safe).
    pub fn accept_route(&self, id: &str) -> String {
        let query: Vec<String> = self
            .credential
            .as_ref()
            .and_then(Credential::query)
            .into_iter()
            .collect();
        with_query(format!("{}/v1/tunnel/accept/{id}", self.relay.base), &query)
    }

    /// Headers for every request to the relay.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.credential
            .as_ref()
            .and_then(Credential::header)
            .into_iter()
            .collect()
    }
}

fn with_query(mut path: String, query: &[String]) -> String {
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    path
}

/// Percent-encodes all but the unreserved characters.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: TunnelCommand,
    }

    fn plan(extra: &[&str]) -> Result<ExposePlan, ExposeArgsError> {
        let mut argv = vec!["tunnel", "expose"];
        for (flag, value) in [
            ("--relay", "ws://127.0.0.1:8080"),
            ("--local", "127.0.0.1:3000"),
        ] {
            if !extra.contains(&flag) {
                argv.extend([flag, value]);
            }
        }
        argv.extend_from_slice(extra);
        let TunnelCommand::Expose(a) = Cli::try_parse_from(argv).unwrap().cmd;
        a.plan()
    }

    #[test]
    fn routes_carry_port_resume_and_key() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.control_route(None, None), "/v1/tunnel");
        assert_eq!(
            p.control_route(Some(20001), Some("a b")),
            "/v1/tunnel?port=20001&resume=a%20b"
        );
        assert_eq!(p.accept_route("ab12"), "/v1/tunnel/accept/ab12");
        assert!(p.headers().is_empty());
        let p = plan(&[
            "--port",
            "20005",
            "--key",
            "rrk_abc",
            "--relay",
            "ws://127.0.0.1:1/base/",
        ])
        .unwrap();
        assert_eq!(
            p.control_route(None, None),
            "/base/v1/tunnel?port=20005&key=rrk_abc"
        );
        assert_eq!(p.accept_route("x"), "/base/v1/tunnel/accept/x?key=rrk_abc");
        let p = plan(&["--token", "t.o.k"]).unwrap();
        assert_eq!(
            p.headers(),
            vec![("Authorization", "Bearer t.o.k".to_string())]
        );
        assert_eq!(p.accept_route("x"), "/v1/tunnel/accept/x");
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = |extra: &[&str]| plan(extra).unwrap_err().to_string();
        assert!(err(&["--local", "10.1.2.3:22"]).contains("--allow-remote"));
        assert!(plan(&["--local", "10.1.2.3:22", "--allow-remote"]).is_ok());
        assert!(plan(&["--local", "[::1]:22"]).is_ok());
        assert!(err(&["--local", "nohostport"]).starts_with("--local"));
        assert!(err(&["--relay", "http://h:1"]).starts_with("--relay"));
        assert!(err(&["--relay", "wss://127.0.0.1:1"]).contains("ws://"));
        assert!(err(&["--port", "0"]).contains("--port"));
        assert!(err(&["--token", "a\r\nX: y"]).contains("token"));
        assert!(err(&["--key", "rrk_a&port=1"]).contains("key"));
        assert!(err(&["--backoff-initial", "1m"]).contains("--backoff-max"));
        assert!(err(&["--connect-timeout", "0s"]).contains("--connect-timeout"));
    }
}
