//! `--attackers N`: a connection flood from one address, run beside the honest load.
//!
//! Each attacker is a task that, from the start of the run (warm-up included) to its end,
//! opens a TCP connection from `source` (bound to that address, port picked by the kernel),
//! sends a WebSocket upgrade for a fresh random session on `/v1/relay/{id}`, reads the status
//! line of the answer and closes, then starts over at once: no pause, one connection open at a
//! time. Nothing an attacker sees counts towards the honest figures; it has its own counts.
//!
//! Every attempt lands in exactly one bucket: the answer's status (101, 429, 503 or any other,
//! including an answer that is not HTTP), or an error when there was no status line at all
//! (connect failed, the connection was reset or closed first, or it timed out).

use super::client::{self, ClientError, Target};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use serde::Serialize;
use std::future::{poll_fn, Future};
use std::net::{IpAddr, SocketAddr};
use std::task::Poll;

/// The default source of the flood: another loopback address than the honest clients' own.
pub const DEFAULT_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
/// Longest status line read; an answer without a line break by then is `other`.
const MAX_STATUS_LINE: usize = 1024;
/// Error messages kept for the report.
const ERROR_SAMPLES: usize = 3;

/// What to flood with.
#[derive(Debug, Clone)]
pub struct Attack {
    /// Attacker tasks.
    pub attackers: usize,
    /// Every attack connection is bound to this address.
    pub source: IpAddr,
    /// 0: the attackers are spread over the load's threads, sharing their runtimes with the
    /// honest connections. Otherwise they run on this many threads of their own (at most one
    /// per attacker), so that their work does not delay the honest connections' tasks.
    pub threads: usize,
}

impl Attack {
    /// Threads that run attackers only.
    pub fn own_threads(&self) -> usize {
        self.threads.min(self.attackers)
    }

    /// The attackers (numbered from 0) that engine thread `index` runs, when the load itself
    /// has `load_threads` threads (numbered first) and the attackers' own come after them.
    pub fn assigned(
        &self,
        index: usize,
        load_threads: usize,
    ) -> std::iter::StepBy<std::ops::Range<usize>> {
        let (first, step) = match self.own_threads() {
            0 if index < load_threads => (index, load_threads),
            0 => (self.attackers, 1),
            own if index >= load_threads => (index - load_threads, own),
            _ => (self.attackers, 1),
        };
        (first..self.attackers.max(first)).step_by(step)
    }

    /// Checks the attack against the target: same address family, and `source` is an address
    /// of this host (bindable), so that the run fails at once rather than counting nothing
    /// but errors.
    pub fn validate(&self, target: &Target) -> Result<(), String> {
        if self.source.is_ipv4() != target.addr.is_ipv4() {
            return Err(format!(
                "--attack-source {} and the target {} are of different address families",
                self.source, target.addr
            ));
        }
        std::net::TcpListener::bind(SocketAddr::new(self.source, 0))
            .map(drop)
            .map_err(|e| format!("--attack-source {}: cannot bind: {e}", self.source))
    }
}

/// The attack's tally. `attempts` is always the sum of the other counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttackCounts {
    pub attempts: u64,
    pub status_101: u64,
    pub status_429: u64,
    pub status_503: u64,
    /// Any other status, or an answer that was not an HTTP status line.
    pub status_other: u64,
    /// No answer: connect failed, reset, closed before a status line, or timed out.
    pub errors: u64,
    /// The first few errors, for a person to read.
    pub error_samples: Vec<String>,
}

impl AttackCounts {
    pub(crate) fn record(&mut self, outcome: &Outcome) {
        self.attempts += 1;
        match outcome {
            Outcome::Status(101) => self.status_101 += 1,
            Outcome::Status(429) => self.status_429 += 1,
            Outcome::Status(503) => self.status_503 += 1,
            Outcome::Status(_) | Outcome::NotHttp => self.status_other += 1,
            Outcome::Error(e) => {
                self.errors += 1;
                if self.error_samples.len() < ERROR_SAMPLES {
                    self.error_samples.push(e.clone());
                }
            }
        }
    }

    pub(crate) fn merge(&mut self, o: AttackCounts) {
        self.attempts += o.attempts;
        self.status_101 += o.status_101;
        self.status_429 += o.status_429;
        self.status_503 += o.status_503;
        self.status_other += o.status_other;
        self.errors += o.errors;
        for s in o.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(s);
            }
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Status(u16),
    NotHttp,
    Error(String),
}

/// One attempt: connect from `source`, ask for an upgrade of `route`, read the status line,
/// close (by dropping the socket). The caller bounds it in time.
pub(crate) async fn attempt(target: &Target, source: IpAddr, route: &str) -> Outcome {
    let err = |e: ClientError| Outcome::Error(e.to_string());
    let std_stream = match client::start_connect(target.addr, Some(source)) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let mut stream = match TcpStream::from_std(std_stream) {
        Ok(s) => s,
        Err(e) => return err(ClientError::Io(e)),
    };
    // A failed connect shows up as the write's error.
    if let Err(e) = stream.writable(false).await {
        return err(ClientError::Io(e));
    }
    let (request, _key) = client::upgrade_request(target, route);
    let (res, _) = stream.write_all(request.into_bytes()).await;
    if let Err(e) = res {
        return err(ClientError::Io(e));
    }
    let mut buf = Vec::with_capacity(MAX_STATUS_LINE);
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status(&buf[..i]);
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Outcome::NotHttp;
        }
        let len = buf.len();
        let (res, slice) = stream.read(buf.slice_mut(len..MAX_STATUS_LINE)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) if buf.is_empty() => return Outcome::Error("closed without an answer".into()),
            Ok(0) => return parse_status(&buf),
            Ok(_) => {}
            Err(e) => return err(ClientError::Io(e)),
        }
    }
}

/// `HTTP/1.x NNN ...` → the status; anything else is not HTTP.
fn parse_status(line: &[u8]) -> Outcome {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/") || code.len() != 3 {
        return Outcome::NotHttp;
    }
    match std::str::from_utf8(code).ok().and_then(|c| c.parse().ok()) {
        Some(c) => Outcome::Status(c),
        None => Outcome::NotHttp,
    }
}

/// Lets every other ready task run once.
pub(crate) fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 101 Switching Protocols"),
            Outcome::Status(101)
        );
        assert_eq!(
            parse_status(b"HTTP/1.1 429 Too Many Requests"),
            Outcome::Status(429)
        );
        assert_eq!(parse_status(b"HTTP/1.0 503"), Outcome::Status(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), Outcome::NotHttp);
        assert_eq!(parse_status(b"HTTP/1.1 4x9 Nope"), Outcome::NotHttp);
        assert_eq!(parse_status(b""), Outcome::NotHttp);
    }

    #[test]
    fn every_attempt_lands_in_one_bucket() {
        let mut c = AttackCounts::default();
        for o in [
            Outcome::Status(101),
            Outcome::Status(429),
            Outcome::Status(429),
            Outcome::Status(503),
            Outcome::Status(404),
            Outcome::NotHttp,
            Outcome::Error("refused".into()),
        ] {
            c.record(&o);
        }
        let mut d = AttackCounts::default();
        d.record(&Outcome::Error("reset".into()));
        c.merge(d);
        assert_eq!(c.attempts, 8);
        assert_eq!(
            (
                c.status_101,
                c.status_429,
                c.status_503,
                c.status_other,
                c.errors
            ),
            (1, 2, 1, 2, 2)
        );
        assert_eq!(
            c.attempts,
            c.status_101 + c.status_429 + c.status_503 + c.status_other + c.errors
        );
        assert_eq!(c.error_samples, vec!["refused", "reset"]);
    }

    #[test]
    fn attackers_are_spread_over_threads() {
        let a = |attackers, threads| Attack {
            attackers,
            source: DEFAULT_SOURCE,
            threads,
        };
        let on = |at: &Attack, index, load| at.assigned(index, load).collect::<Vec<_>>();
        // Sharing the load's 3 threads.
        let shared = a(8, 0);
        assert_eq!(shared.own_threads(), 0);
        assert_eq!(on(&shared, 0, 3), vec![0, 3, 6]);
        assert_eq!(on(&shared, 2, 3), vec![2, 5]);
        // Two threads of their own, after the load's 3.
        let own = a(5, 2);
        assert_eq!(own.own_threads(), 2);
        assert!(on(&own, 0, 3).is_empty());
        assert_eq!(on(&own, 3, 3), vec![0, 2, 4]);
        assert_eq!(on(&own, 4, 3), vec![1, 3]);
        // Never more threads than attackers.
        let few = a(1, 4);
        assert_eq!(few.own_threads(), 1);
        assert_eq!(on(&few, 1, 1), vec![0]);
        // Every attacker exactly once, either way.
        for at in [a(7, 0), a(7, 3), a(2, 5)] {
            let mut all: Vec<usize> = (0..3 + at.own_threads())
                .flat_map(|i| at.assigned(i, 3))
                .collect();
            all.sort();
            assert_eq!(all, (0..at.attackers).collect::<Vec<_>>());
        }
    }

    #[test]
    fn validate_checks_family_and_address() {
        let target = Target {
            addr: "127.0.0.1:9".parse().unwrap(),
            host: "127.0.0.1:9".into(),
            prefix: String::new(),
            transport: client::Transport::WebSocket,
            tls: None,
        };
        let ok = Attack {
            attackers: 1,
            source: DEFAULT_SOURCE,
            threads: 0,
        };
        assert!(ok.validate(&target).is_ok());
        let v6 = Attack {
            attackers: 1,
            source: "::1".parse().unwrap(),
            threads: 0,
        };
        assert!(v6.validate(&target).unwrap_err().contains("address famil"));
        // TEST-NET-1: not an address of this host.
        let foreign = Attack {
            attackers: 1,
            source: "192.0.2.1".parse().unwrap(),
            threads: 0,
        };
        assert!(foreign
            .validate(&target)
            .unwrap_err()
            .contains("cannot bind"));
    }
}
