//! `ringrelay load` options.

use super::attack::{Attack, DEFAULT_SOURCE};
use super::client::{Rng, Target, Transport};
use super::engine::{Mode, Plan, Stop};
use super::http::request::{sends_body, valid_method};
use super::http::{HttpPlan, TargetPlan};
use super::tunnel::{EchoPlan, TunnelPlan, TunnelTest};
use crate::config::{parse_duration, DriverChoice};
use crate::http::client::parse_web_url;
use crate::tls::client::{client_config, ClientTls, Trust};
use rustls::ClientConfig;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long after the end senders and receivers may take to finish.
pub const DRAIN: Duration = Duration::from_secs(5);
/// Largest request body `--mode http` sends (the request is kept in memory, one per thread).
const MAX_HTTP_BODY: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// N sessions of two peers; messages from a to b (and back with --both-ways).
    Pairs,
    /// N connections to /v1/echo.
    Echo,
    /// N loops that connect a pair, exchange --churn-messages, close, and start over.
    Churn,
    /// N loops that open a connection (TCP, TLS with wss://, the WebSocket upgrade on a
    /// session of its own), close it, and start over: new connections per second, and how
    /// long each step took.
    Connect,
    /// HTTP/1.1 requests to --url (http:// or https://), --concurrency in flight, closed loop.
    Http,
    /// Serve HTTP on --listen: 200 to everything, with the request's body or --size bytes.
    HttpTarget,
    /// Through a TCP tunnel's public address (--url tcp://HOST:PORT) to an echo service:
    /// --tunnel-test bulk, connect or rr (src/load/tunnel).
    Tunnel,
    /// Serve TCP echo on --listen: the local service behind a tunnel.
    TunnelEcho,
}

/// Generate load against a relay and report throughput and latency.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Relay base URL (ws:// or wss://; a path is put in front of the routes). With --mode
    /// http, the whole http:// or https:// URL every request goes to.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// Pairs and churn: the relay the second peer of each pair connects to (default: --url).
    /// Another node of a cluster makes every pair a cross-node pair.
    #[arg(long)]
    pub url_b: Option<String>,
    #[arg(long, value_enum, default_value_t = ModeArg::Pairs)]
    pub mode: ModeArg,
    /// Sessions (pairs, churn loops), connections for echo, or connect loops.
    #[arg(long, default_value_t = 4)]
    pub pairs: usize,
    /// Message size in bytes (at least 16: sequence number and send time). --mode http: the
    /// request body, sent with every method but GET and HEAD. --mode http-target: the body
    /// of answers to requests without one.
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
    /// Fixed rate: messages (--mode http: requests; tunnel rr: round trips) per second over
    /// all senders, each on its own schedule; latency counts from when a message was due, so
    /// stalls are not hidden.
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
    /// Pairs join with `resume=0`: the relay numbers and keeps what it delivers.
    #[arg(long)]
    pub resume: bool,
    /// Pairs join with `resume=0&events=1`: two-way resume with its `ack` events on (implies
    /// --resume). The relay's events (text) are read and not counted as messages.
    #[arg(long)]
    pub acks: bool,
    /// The client's I/O driver: auto, io_uring or epoll.
    #[arg(long, default_value = "auto")]
    pub driver: DriverChoice,
    /// Print one JSON object at the end instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 3 (after printing the report) if any message was lost, repeated or
    /// reordered, or a stream was cut before its end, warm-up included: a gate for scripts.
    /// WebSocket modes only (pairs, echo, churn; connect sends no messages).
    #[arg(long)]
    pub fail_on_loss: bool,
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
    /// HTTP: requests in flight, over all threads; each answer starts the next request.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// HTTP: the request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// HTTP: reuse connections (the default is a new connection per request, with
    /// `Connection: close`, as the relay's bridge answers one request per connection).
    #[arg(long)]
    pub keep_alive: bool,
    /// HTTP: longest one request may take, connect to last byte, before it is an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// --mode tunnel: bulk (MB/s), connect (new connections/s) or rr (request/response
    /// latency; with --rate, from when each request was due).
    #[arg(long, value_enum, default_value_t = TunnelTest::Bulk)]
    pub tunnel_test: TunnelTest,
    /// http-target: the address to serve on (port 0: any free port; the line printed at
    /// start says which).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// wss:// and https://: trust only the CA certificate(s) in this PEM file (a relay with
    /// a private CA), instead of the system's roots.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// wss:// and https://: do not verify the relay's certificate. For tests only: a warning
    /// says so at start and in the report.
    #[arg(long)]
    pub insecure: bool,
    /// wss:// and https://: keep the relay's session tickets and resume with them (the
    /// report counts the resumed handshakes). Without it every connection makes a full
    /// handshake.
    #[arg(long)]
    pub tls_resume: bool,
}

/// A `ws://` or `wss://` URL cut into its parts.
struct WsUrl<'a> {
    tls: bool,
    /// `host[:port]` as written.
    host: &'a str,
    /// The bare host (no port), for TLS's server name.
    name: &'a str,
    with_port: String,
    path: &'a str,
}

fn split_ws_url<'a>(url: &'a str, flag: &str) -> Result<WsUrl<'a>, String> {
    let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => {
            return Err(format!(
                "{flag} {url}: only ws:// and wss:// URLs are supported"
            ))
        }
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(format!("{flag} {url}: no host"));
    }
    // `[::1]` has colons but no port; `[::1]:8080` and `a:8080` have one.
    let (name, with_port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => (h, host.to_string()),
        _ => (host, format!("{host}:{}", if tls { 443 } else { 80 })),
    };
    Ok(WsUrl {
        tls,
        host,
        name,
        with_port,
        path,
    })
}

/// A `ws[s]://host[:port][/base]` URL resolved to where the load connects; `tls` is the
/// configuration a `wss://` URL needs.
fn ws_target(
    url: &str,
    flag: &str,
    transport: Transport,
    tls: Option<&(Arc<ClientConfig>, bool)>,
) -> Result<Target, String> {
    let u = split_ws_url(url, flag)?;
    let addr = u
        .with_port
        .to_socket_addrs()
        .map_err(|e| format!("{flag} {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{flag} {url}: no address"))?;
    let tls = match (u.tls, tls) {
        (false, _) => None,
        (true, Some((config, insecure))) => Some(
            ClientTls::new(config.clone(), u.name, *insecure)
                .map_err(|e| format!("{flag} {url}: {e}"))?,
        ),
        (true, None) => return Err(format!("{flag} {url}: no TLS configuration")),
    };
    Ok(Target {
        addr,
        host: u.host.to_string(),
        prefix: u.path.trim_end_matches('/').to_string(),
        transport,
        tls,
    })
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

    /// `--mode http`: resolves the URL and checks the options.
    pub fn http_plan(&self) -> Result<HttpPlan, String> {
        if self.attackers > 0 || self.raw || self.both_ways {
            return Err("--attackers, --raw and --both-ways do not apply to --mode http".into());
        }
        if self.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
            return Err("--rate must be more than zero".into());
        }
        let (url, name) =
            parse_web_url(&self.url).map_err(|e| format!("--url {}: {e}", self.url))?;
        let tls = match (self.tls_config(name.is_some())?, name) {
            (Some((config, insecure)), Some(name)) => Some(
                ClientTls::new(config, &name, insecure)
                    .map_err(|e| format!("--url {}: {e}", self.url))?,
            ),
            _ => None,
        };
        if !valid_method(&self.method) {
            return Err(format!("--method {:?} is not an HTTP method", self.method));
        }
        if self.concurrency == 0 || self.threads == 0 {
            return Err("--concurrency and --threads must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be more than 0".into());
        }
        let body = sends_body(&self.method).then_some(self.size);
        if body.is_some_and(|n| n > MAX_HTTP_BODY) {
            return Err(format!(
                "--size is at most {MAX_HTTP_BODY} with --mode http"
            ));
        }
        Ok(HttpPlan {
            url,
            tls,
            method: self.method.clone(),
            body,
            concurrency: self.concurrency,
            rate: self.rate,
            keep_alive: self.keep_alive,
            warmup: self.warmup,
            duration: self.duration,
            timeout: self.timeout,
            threads: self.threads,
            driver: self.driver,
            progress: true,
            drain: DRAIN,
        })
    }

    /// `--mode tunnel`: `--url tcp://HOST:PORT` (or `HOST:PORT`), the tunnel's public address.
    pub fn tunnel_plan(&self) -> Result<TunnelPlan, String> {
        let addr = self.url.strip_prefix("tcp://").unwrap_or(&self.url);
        let target = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("--url {}: not tcp://HOST:PORT", self.url))?;
        if self.pairs == 0 || self.threads == 0 || self.duration.is_zero() {
            return Err("--pairs, --threads and --duration must be more than zero".into());
        }
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return Err("--rate must be more than zero".into());
        }
        Ok(TunnelPlan {
            target,
            test: self.tunnel_test,
            connections: self.pairs,
            size: self.size.max(1),
            warmup: self.warmup,
            duration: self.duration,
            rate: self.rate,
            timeout: self.timeout,
            threads: self.threads.min(self.pairs),
            driver: self.driver,
        })
    }

    /// `--mode tunnel-echo`.
    pub fn echo_plan(&self) -> EchoPlan {
        EchoPlan {
            listen: self.listen,
            driver: self.driver,
        }
    }

    /// `--mode http-target`.
    pub fn target_plan(&self) -> TargetPlan {
        TargetPlan {
            listen: self.listen,
            size: self.size,
            driver: self.driver,
        }
    }

    /// The TLS configuration the run's `wss://` URLs need (one for every connection and
    /// thread), and whether it skips the certificate check; `None` without TLS.
    /// Resumption is off unless `--tls-resume`: every connection the load counts makes a
    /// full handshake.
    pub fn tls_config(&self, uses_tls: bool) -> Result<Option<(Arc<ClientConfig>, bool)>, String> {
        if !uses_tls {
            if self.ca_file.is_some() || self.insecure || self.tls_resume {
                return Err(
                    "--ca-file, --insecure and --tls-resume apply to wss:// and https:// URLs only"
                        .into(),
                );
            }
            return Ok(None);
        }
        let trust =
            Trust::from_flags(self.ca_file.as_deref(), self.insecure).map_err(|e| e.to_string())?;
        let config = client_config(&trust, self.tls_resume).map_err(|e| e.to_string())?;
        Ok(Some((config, self.insecure)))
    }

    /// Resolves the URL and turns the options into an engine plan.
    pub fn plan(&self) -> Result<Plan, String> {
        let transport = if self.raw {
            Transport::Raw
        } else {
            Transport::WebSocket
        };
        let uses_tls = std::iter::once(&self.url)
            .chain(&self.url_b)
            .any(|u| u.starts_with("wss://"));
        let tls = self.tls_config(uses_tls)?;
        let target = ws_target(&self.url, "--url", transport, tls.as_ref())?;
        let target_b = match &self.url_b {
            Some(u) => Some(ws_target(u, "--url-b", transport, tls.as_ref())?),
            None => None,
        };
        if uses_tls && self.attackers > 0 {
            return Err("--attackers speak plain ws:// only (the flood is of upgrades)".into());
        }
        let mut run = Rng::from_entropy(std::process::id() as u64);
        Ok(Plan {
            target,
            target_b,
            mode: match self.mode {
                ModeArg::Pairs => Mode::Pairs,
                ModeArg::Echo => Mode::Echo,
                ModeArg::Churn => Mode::Churn,
                ModeArg::Connect => Mode::Connect,
                ModeArg::Http | ModeArg::HttpTarget | ModeArg::Tunnel | ModeArg::TunnelEcho => {
                    return Err("the HTTP modes have plans of their own".into())
                }
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
            resume: self.resume || self.acks,
            acks: self.acks,
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

    #[test]
    fn wss_urls_and_the_tls_flags() {
        assert!(plan(&[]).unwrap().target.tls.is_none());
        let p = plan(&["--url", "wss://127.0.0.1:9/base/", "--insecure"]).unwrap();
        assert_eq!(p.target.addr.to_string(), "127.0.0.1:9");
        assert_eq!(
            (p.target.host.as_str(), p.target.prefix.as_str()),
            ("127.0.0.1:9", "/base")
        );
        let tls = p.target.tls.unwrap();
        assert!(tls.insecure);
        assert_eq!(tls.server_name.to_str(), "127.0.0.1");
        let p = plan(&[
            "--url",
            "wss://127.0.0.1",
            "--insecure",
            "--mode",
            "connect",
        ])
        .unwrap();
        assert_eq!(p.target.addr.port(), 443);
        assert_eq!(p.mode, Mode::Connect);
        // One wss:// URL of two is enough to need the flags; each gets its own name.
        let p = plan(&[
            "--url",
            "ws://127.0.0.1:8",
            "--url-b",
            "wss://localhost:9",
            "--insecure",
        ])
        .unwrap();
        assert!(p.target.tls.is_none());
        assert_eq!(
            p.b().tls.as_ref().unwrap().server_name.to_str(),
            "localhost"
        );
        let err = |a: &[&str]| plan(a).unwrap_err();
        assert!(err(&["--insecure"]).contains("wss://"));
        assert!(
            err(&["--url", "wss://127.0.0.1:9", "--ca-file", "/no/ca.pem"]).contains("/no/ca.pem")
        );
        assert!(err(&[
            "--url",
            "wss://127.0.0.1:9",
            "--insecure",
            "--attackers",
            "1"
        ])
        .contains("--attackers"));
        assert!(err(&["--url", "https://127.0.0.1:9"]).contains("ws://"));
    }

    fn http(args: &[&str]) -> Result<HttpPlan, String> {
        let mut v = vec!["load", "--mode", "http"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .load
            .http_plan()
    }

    #[test]
    fn http_options() {
        let p = http(&["--url", "http://127.0.0.1:3000/hello"]).unwrap();
        assert_eq!(p.url.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(p.url.path, "/hello");
        assert_eq!((p.method.as_str(), p.body), ("GET", None));
        assert_eq!((p.concurrency, p.keep_alive), (32, false));
        assert_eq!(p.timeout, Duration::from_secs(5));
        let p = http(&[
            "--url",
            "http://127.0.0.1:3000/",
            "--method",
            "POST",
            "--size",
            "1024",
            "--concurrency",
            "4",
            "--keep-alive",
            "--timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!((p.body, p.concurrency, p.keep_alive), (Some(1024), 4, true));
        assert_eq!(p.timeout, Duration::from_millis(250));
        assert_eq!(p.rate, None);
        let p = http(&["--url", "http://127.0.0.1:3000/", "--rate", "2500"]).unwrap();
        assert_eq!(p.rate, Some(2500.0));
        // The default URL is the relay's ws:// one.
        assert!(http(&[]).unwrap_err().contains("http://"));
        let u = ["--url", "http://127.0.0.1:3000/"];
        for bad in [
            &["--method", "GE T"][..],
            &["--concurrency", "0"],
            &["--timeout", "0s"],
            &["--rate", "0"],
            &["--rate", "-5"],
            &["--both-ways"],
            &["--method", "PUT", "--size", "999999999"],
        ] {
            let mut a = u.to_vec();
            a.extend_from_slice(bad);
            assert!(http(&a).is_err(), "{bad:?}");
        }
        let t = Cli::try_parse_from(["load", "--mode", "http-target", "--listen", "127.0.0.1:0"])
            .unwrap()
            .load;
        assert_eq!(t.mode, ModeArg::HttpTarget);
        assert_eq!(t.target_plan().listen.to_string(), "127.0.0.1:0");
        assert_eq!(t.target_plan().size, 64);
        assert!(plan(&["--mode", "http"]).is_err());
    }

    #[test]
    fn https_for_the_http_mode() {
        let p = http(&["--url", "https://127.0.0.1:9/v1/http/s/x", "--insecure"]).unwrap();
        assert_eq!(
            (p.url.addr.port(), p.url.path.as_str()),
            (9, "/v1/http/s/x")
        );
        assert_eq!(p.tls.unwrap().server_name.to_str(), "127.0.0.1");
        assert!(http(&["--url", "http://127.0.0.1:9/"])
            .unwrap()
            .tls
            .is_none());
        assert!(http(&["--url", "http://127.0.0.1:9/", "--insecure"])
            .unwrap_err()
            .contains("https://"));
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
