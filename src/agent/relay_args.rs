//! The flags `ringrelay agent` and `ringrelay tunnel expose` share, flattened into both
//! commands: where the relay is, how long a connect may take, the reconnect waits, the
//! pings, the I/O driver. Checked here once, so both commands name a bad value alike.

use super::relay_url::{parse_relay_url, RelayUrl};
use crate::config::{parse_duration, DriverChoice};
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// The relay: ws://HOST:PORT, optionally with a base path (ws://HOST:PORT/base);
    /// `ringrelay agent` also takes wss://HOST[:PORT].
    #[arg(long)]
    pub relay: String,
    /// Time allowed to connect to the relay and finish an upgrade.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// First wait before reconnecting; the window doubles up to --backoff-max, and each
    /// wait is drawn at random within it (docs/agent.md, docs/tunnels.md).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub backoff_initial: Duration,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// Pings to the relay this often; a relay silent for twice as long is given up on and
    /// reconnected to.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// I/O driver: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    pub driver: DriverChoice,
}

/// A shared flag that cannot work, named.
#[derive(Debug, thiserror::Error)]
pub enum RelayArgsError {
    #[error("--relay {url}: {reason}")]
    Relay { url: String, reason: String },
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    #[error("--backoff-initial must not be over --backoff-max")]
    Backoff,
}

impl RelayArgs {
    /// The relay's URL, once the other shared flags are found sound.
    pub fn check(&self) -> Result<RelayUrl, RelayArgsError> {
        let relay = parse_relay_url(&self.relay).map_err(|e| RelayArgsError::Relay {
            url: self.relay.clone(),
            reason: e.to_string(),
        })?;
        for (name, zero) in [
            ("--connect-timeout", self.connect_timeout.is_zero()),
            ("--backoff-initial", self.backoff_initial.is_zero()),
            ("--ping-interval", self.ping_interval.is_zero()),
        ] {
            if zero {
                return Err(RelayArgsError::Zero(name));
            }
        }
        if self.backoff_initial > self.backoff_max {
            return Err(RelayArgsError::Backoff);
        }
        Ok(relay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        relay: RelayArgs,
    }

    fn check(extra: &[&str]) -> Result<RelayUrl, RelayArgsError> {
        let mut argv = vec!["x"];
        if !extra.contains(&"--relay") {
            argv.extend(["--relay", "ws://127.0.0.1:8080/base"]);
        }
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().relay.check()
    }

    #[test]
    fn defaults_pass_and_bad_values_are_named() {
        let relay = check(&[]).unwrap();
        assert_eq!(relay.authority, "127.0.0.1:8080");
        assert_eq!(relay.base, "/base");
        let err = |extra: &[&str]| check(extra).unwrap_err().to_string();
        assert!(err(&["--connect-timeout", "0s"]).starts_with("--connect-timeout"));
        assert!(err(&["--backoff-initial", "0s"]).starts_with("--backoff-initial"));
        assert!(err(&["--ping-interval", "0s"]).starts_with("--ping-interval"));
        assert!(err(&["--backoff-initial", "1m"]).contains("--backoff-max"));
        assert!(err(&["--relay", "http://h:1"]).starts_with("--relay http://h:1"));
    }
}
