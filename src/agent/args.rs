//! `ringrelay agent`'s command line, and its check into a [`Plan`]: everything that can be
//! wrong with the arguments is found here, before anything connects.

use super::relay_args::{RelayArgs, RelayArgsError};
use super::relay_url::RelayUrl;
use super::target::{parse_target, Target};
use crate::config::{parse_duration, DriverChoice};
use crate::http::route::{valid_role, valid_session_id};
use crate::tls::client::{client_config, ClientTls, Trust};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    #[command(flatten)]
    pub link: RelayArgs,
    /// The session to serve.
    #[arg(long)]
    pub session: String,
    /// The local API bridged requests go to: http://127.0.0.1:PORT[/base].
    #[arg(long)]
    pub target: String,
    /// Token for the relay, sent as `Authorization: Bearer` (also RINGRELAY_AGENT_TOKEN).
    #[arg(long, env = "RINGRELAY_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file instead (keeps it out of the process list).
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The role to join as: the relay's `bridge.agent_role`.
    #[arg(long, default_value = "agent")]
    pub role: String,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Requests performed against the target at once; more get 503 `agent_busy`.
    #[arg(long, default_value_t = 32)]
    pub max_concurrency: usize,
    /// Longest one request to the target may take, connect to last byte (504 past it). Keep
    /// it under the relay's `bridge.timeout` (30s) so the client learns why.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub target_timeout: Duration,
    /// Largest response body taken from the target (502 past it): the relay's
    /// `bridge.max_response_bytes`.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_response_bytes: usize,
    /// Largest message taken from the relay; a request over it gets 413.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_message_bytes: usize,
    /// On SIGTERM, how long requests in flight may take to finish before the agent leaves.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// wss://: trust only the CA certificate(s) in this PEM file (a relay with a private
    /// CA), instead of the system's roots.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// wss://: do not verify the relay's certificate. For tests only: logged loudly.
    #[arg(long)]
    pub insecure: bool,
}

/// The checked arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub relay: RelayUrl,
    pub session: String,
    pub role: String,
    pub target: Target,
    pub token: Option<String>,
    pub max_concurrency: usize,
    pub target_timeout: Duration,
    pub max_response_bytes: usize,
    pub max_message_bytes: usize,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub ping_interval: Duration,
    pub shutdown_grace: Duration,
    pub driver: DriverChoice,
    /// `wss://`: the TLS configuration and the name asked for.
    pub tls: Option<ClientTls>,
}

/// An argument that cannot work, named.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Link(#[from] RelayArgsError),
    #[error("--target {url}: {reason}")]
    Target { url: String, reason: String },
    #[error("--session {0:?}: 1 to 128 characters of A-Z a-z 0-9 . _ ~ -")]
    Session(String),
    #[error("--role {0:?}: 1 to 32 characters of a-z 0-9 _ -")]
    Role(String),
    #[error("--token-file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token holds a character that cannot go in an HTTP header")]
    TokenChars,
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    #[error("{0}")]
    Tls(String),
}

impl Plan {
    /// The relay route the agent joins on.
    pub fn route(&self) -> String {
        format!(
            "{}/v1/relay/{}?role={}",
            self.relay.base, self.session, self.role
        )
    }
}

impl AgentArgs {
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        let relay = self.link.check()?;
        let target =
            parse_target(&self.target, self.allow_remote).map_err(|e| ArgsError::Target {
                url: self.target.clone(),
                reason: e.to_string(),
            })?;
        if !valid_session_id(&self.session) {
            return Err(ArgsError::Session(self.session.clone()));
        }
        if !valid_role(&self.role) {
            return Err(ArgsError::Role(self.role.clone()));
        }
        let token = match (&self.token, &self.token_file) {
            (_, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ArgsError::TokenFile {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            (Some(t), None) => Some(t.trim().to_string()),
            (None, None) => None,
        }
        .filter(|t| !t.is_empty());
        if token
            .as_deref()
            .is_some_and(|t| t.bytes().any(|b| b < b' ' || b == 0x7f))
        {
            return Err(ArgsError::TokenChars);
        }
        for (name, zero) in [
            ("--max-concurrency", self.max_concurrency == 0),
            ("--target-timeout", self.target_timeout.is_zero()),
            ("--max-message-bytes", self.max_message_bytes == 0),
        ] {
            if zero {
                return Err(ArgsError::Zero(name));
            }
        }
        let tls = self.tls(&relay)?;
        Ok(Plan {
            relay,
            session: self.session.clone(),
            role: self.role.clone(),
            target,
            token,
            max_concurrency: self.max_concurrency,
            target_timeout: self.target_timeout,
            max_response_bytes: self.max_response_bytes,
            max_message_bytes: self.max_message_bytes,
            connect_timeout: self.link.connect_timeout,
            backoff_initial: self.link.backoff_initial,
            backoff_max: self.link.backoff_max,
            ping_interval: self.link.ping_interval,
            shutdown_grace: self.shutdown_grace,
            driver: self.link.driver,
            tls,
        })
    }

    /// The TLS a `wss://` relay needs: resumption on, so a reconnect after a short outage
    /// is a quick resumed handshake.
    fn tls(&self, relay: &RelayUrl) -> Result<Option<ClientTls>, ArgsError> {
        if !relay.tls {
            if self.ca_file.is_some() || self.insecure {
                return Err(ArgsError::Tls(
                    "--ca-file and --insecure apply to a wss:// relay only".into(),
                ));
            }
            return Ok(None);
        }
        let err = |e: crate::tls::client::ClientTlsError| ArgsError::Tls(e.to_string());
        let trust = Trust::from_flags(self.ca_file.as_deref(), self.insecure).map_err(err)?;
        let config = client_config(&trust, true).map_err(err)?;
        ClientTls::new(config, &relay.name, self.insecure)
            .map(Some)
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    /// The plan for the three required arguments (replaced when `extra` gives them) and
    /// `extra`.
    fn plan(extra: &[&str]) -> Result<Plan, ArgsError> {
        let mut argv = vec!["agent"];
        for (flag, value) in [
            ("--relay", "ws://127.0.0.1:8080"),
            ("--session", "s1"),
            ("--target", "http://127.0.0.1:3000"),
        ] {
            if !extra.contains(&flag) {
                argv.extend([flag, value]);
            }
        }
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().agent.plan()
    }

    #[test]
    fn defaults_make_a_plan() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.role, "agent");
        assert_eq!(p.max_concurrency, 32);
        assert_eq!(p.target_timeout, Duration::from_secs(25));
        assert_eq!(p.route(), "/v1/relay/s1?role=agent");
        assert!(p.token.is_none());
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = |extra: &[&str]| plan(extra).unwrap_err().to_string();
        assert!(err(&["--session", "a b"]).starts_with("--session"));
        assert!(err(&["--role", "Agent"]).starts_with("--role"));
        assert!(err(&["--max-concurrency", "0"]).contains("--max-concurrency"));
        assert!(err(&["--backoff-initial", "1m"]).contains("--backoff-max"));
        assert!(err(&["--token", "a\r\nX: y"]).contains("token"));
        assert!(err(&["--token-file", "/nonexistent/t"]).starts_with("--token-file"));
    }

    #[test]
    fn wss_takes_the_tls_flags_and_ws_refuses_them() {
        assert!(plan(&[]).unwrap().tls.is_none());
        let p = plan(&["--relay", "wss://127.0.0.1:8443", "--insecure"]).unwrap();
        let tls = p.tls.unwrap();
        assert!(tls.insecure);
        assert_eq!(tls.server_name.to_str(), "127.0.0.1");
        assert_eq!(p.relay.authority, "127.0.0.1:8443");
        let err = |extra: &[&str]| plan(extra).unwrap_err().to_string();
        assert!(err(&["--insecure"]).contains("wss://"));
        assert!(err(&["--ca-file", "/x.pem"]).contains("wss://"));
        let wss = ["--relay", "wss://127.0.0.1:8443"];
        let e = err(&[&wss[..], &["--ca-file", "/nonexistent/ca.pem"]].concat());
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let e = err(&[&wss[..], &["--ca-file", "/x.pem", "--insecure"]].concat());
        assert!(e.contains("--insecure"), "{e}");
    }

    #[test]
    fn the_token_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("rr-agent-token-{}", std::process::id()));
        std::fs::write(&path, "tok.en\n").unwrap();
        let p = plan(&["--token-file", path.to_str().unwrap()]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(p.token.as_deref(), Some("tok.en"));
    }
}
