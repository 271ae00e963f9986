//! `ringrelay load` options.

use super::attack::{Attack, DEFAULT_SOURCE};
use super::client::{Rng, Target, Transport};
use super::engine::{Mode, Plan, Stop};
use crate::config::{parse_duration, DriverChoice};
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

/// How long after the end senders and receivers may take to finish.
pub const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// N sessions of two peers; messages from a to b (and back with --both-ways).
    Pairs,
    /// N connections to /v1/echo.
    Echo,
    /// N loops that connect a pair, exchange --churn-messages, close, and start over.
    Churn,
}

/// Generate load against a relay and report throughput and latency.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Relay base URL (ws:// only; a path is put in front of the routes).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, value_enum, default_value_t = ModeArg::Pairs)]
    pub mode: ModeArg,
    /// Sessions (pairs, churn loops), or connections for echo.
    #[arg(long, default_value_t = 4)]
    pub pairs: usize,
    /// Message size in bytes (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages in flight per sender (closed loop, without --rate).
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before measuring starts (its messages are not counted).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Fixed rate: messages per second over all senders, each on its own schedule; latency
    /// counts from when a message was due, so stalls are not hidden.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Client threads, each its own monoio runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pairs and churn: also send from b to a.
    #[arg(long)]
    pub both_ways: bool,
    /// Churn: messages per cycle (per direction).
    #[arg(long, default_value_t = 10)]
    pub churn_messages: u64,
    /// No HTTP upgrade: send a line naming the session, then frames (for a plain TCP forwarder
    /// that pairs connections by that line).
    #[arg(long)]
    pub raw: bool,
    /// The client's I/O driver: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    pub driver: DriverChoice,
    /// Print one JSON object at the end instead of text.
    #[arg(long)]
    pub json: bool,
    /// Connection flood beside the load: tasks that, from the start of the warm-up to the end
    /// of the run, open a connection from --attack-source, ask for an upgrade of a random
    /// session, read the status line and close, back to back. Their answers are counted by
    /// status in the report.
    #[arg(long, default_value_t = 0)]
    pub attackers: usize,
    /// The address attack connections are bound to (the honest ones keep the default).
    #[arg(long, default_value_t = DEFAULT_SOURCE)]
    pub attack_source: IpAddr,
    /// 0: attackers share the load's threads (and delay its tasks with their own work).
    /// N: they run on N threads of their own instead.
    #[arg(long, default_value_t = 0)]
    pub attack_threads: usize,
}

impl LoadArgs {
    /// The connection flood asked for, if any.
    pub fn attack(&self) -> Option<Attack> {
        (self.attackers > 0).then_some(Attack {
            attackers: self.attackers,
            source: self.attack_source,
            threads: self.attack_threads,
        })
    }

    /// Resolves the URL and turns the options into an engine plan.
    pub fn plan(&self) -> Result<Plan, String> {
        let rest = self
            .url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("--url {}: only ws:// URLs are supported", self.url))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(format!("--url {}: no host", self.url));
        }
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("--url {}: {e}", self.url))?
            .next()
            .ok_or_else(|| format!("--url {}: no address", self.url))?;
        let mut run = Rng::from_entropy(std::process::id() as u64);
        Ok(Plan {
            target: Target {
                addr,
                host: host.to_string(),
                prefix: path.trim_end_matches('/').to_string(),
                transport: if self.raw {
                    Transport::Raw
                } else {
                    Transport::WebSocket
                },
            },
            mode: match self.mode {
                ModeArg::Pairs => Mode::Pairs,
                ModeArg::Echo => Mode::Echo,
                ModeArg::Churn => Mode::Churn,
            },
            conns: self.pairs,
            size: self.size,
            window: self.window,
            stop: Stop::Time {
                warmup: self.warmup,
                duration: self.duration,
            },
            rate: self.rate,
            both_ways: self.both_ways,
            churn_messages: self.churn_messages,
            threads: self.threads,
            progress: true,
            run_id: format!("{:08x}", run.next_u64() as u32),
            drain: DRAIN,
            connect_timeout: Duration::from_secs(5),
            driver: self.driver,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut v = vec!["load"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .load
            .plan()
    }

    #[test]
    fn defaults_and_url() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.target.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(p.target.host, "127.0.0.1:8080");
        assert_eq!(p.target.prefix, "");
        assert_eq!(p.window, 16);
        assert!(
            matches!(p.stop, Stop::Time { warmup, duration } if warmup == Duration::from_secs(2) && duration == Duration::from_secs(10))
        );
        let p = plan(&[
            "--url",
            "ws://127.0.0.1:9/base/",
            "--mode",
            "echo",
            "--duration",
            "500ms",
        ])
        .unwrap();
        assert_eq!(p.target.prefix, "/base");
        assert_eq!(p.mode, Mode::Echo);
        assert!(plan(&["--url", "http://127.0.0.1:9"]).is_err());
        assert!(plan(&["--duration", "5"]).is_err());
    }

    fn attack(args: &[&str]) -> Result<Option<Attack>, String> {
        let mut v = vec!["load"];
        v.extend_from_slice(args);
        Ok(Cli::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .load
            .attack())
    }

    #[test]
    fn attack_options() {
        assert!(attack(&[]).unwrap().is_none());
        assert!(attack(&["--attackers", "0"]).unwrap().is_none());
        let a = attack(&["--attackers", "8"]).unwrap().unwrap();
        assert_eq!((a.attackers, a.source, a.threads), (8, DEFAULT_SOURCE, 0));
        let a = attack(&["--attackers", "8", "--attack-threads", "2"])
            .unwrap()
            .unwrap();
        assert_eq!(a.threads, 2);
        assert_eq!(a.source.to_string(), "127.0.0.2");
        let a = attack(&["--attackers", "2", "--attack-source", "127.0.0.9"])
            .unwrap()
            .unwrap();
        assert_eq!(a.source.to_string(), "127.0.0.9");
        assert!(attack(&["--attackers", "2", "--attack-source", "nope"]).is_err());
    }
}
