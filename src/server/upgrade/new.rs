//! The new process's side of the upgrade: started with `RINGRELAY_UPGRADE_FD`, it takes its
//! listeners from the socket instead of binding them, and its workers adopt the old
//! process's connections before they accept.

use super::channel::{Channel, ChannelError};
use super::wire::{Message, Totals};
use super::UpgradeError;
use crate::config::Config;
use crate::config::UPGRADE_FD_VAR;
use crate::relay::handover::Handed;
use crate::server::{Listeners, Running, Server, ServerError};
use crate::stats::upgrade::Phases;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// The socket's descriptor when this process was started by an upgrade: the one
/// `RINGRELAY_UPGRADE_FD` names, if it is open. The variable is removed, so nothing takes it
/// twice and a process this one starts later never sees it.
pub fn inherited_fd() -> Option<OwnedFd> {
    let v = std::env::var(UPGRADE_FD_VAR).ok()?;
    std::env::remove_var(UPGRADE_FD_VAR);
    crate::runtime::socket::take_inherited(v.trim().parse().ok()?)
}

/// What the old process handed over before the workers start.
pub struct Inherited {
    channel: Channel,
    pub workers: usize,
    pub totals: Totals,
    started: Instant,
    timeout: Duration,
}

impl Inherited {
    /// Reads `hello` and the listeners. `fd` is the socket's descriptor from
    /// [`inherited_fd`].
    pub fn receive(fd: OwnedFd, timeout: Duration) -> Result<(Inherited, Listeners), UpgradeError> {
        let started = Instant::now();
        let channel = Channel::from_fd(fd);
        let (workers, counts, totals) = match channel.recv(timeout) {
            Ok((
                Message::Hello {
                    workers,
                    listeners,
                    totals,
                },
                _,
            )) => (workers, listeners, totals),
            Ok((m, _)) => return Err(UpgradeError::Unexpected(format!("{m:?}"))),
            Err(e) => {
                // Tell the old process why, when it can still hear it.
                let _ = channel.send(&Message::Failed(e.to_string()), &[], timeout);
                return Err(e.into());
            }
        };
        let mut fds = channel.recv_fds(counts.total(), timeout)?.into_iter();
        let mut take = |n: usize| -> Vec<std::net::TcpListener> {
            fds.by_ref()
                .take(n)
                .map(std::net::TcpListener::from)
                .collect()
        };
        let public = take(counts.public as usize);
        let admin = take(counts.admin as usize)
            .pop()
            .ok_or_else(|| UpgradeError::Other("no admin listener was handed over".into()))?;
        let internal = take(counts.internal as usize);
        let tls = take(counts.tls as usize);
        let listeners = Listeners {
            public,
            admin,
            internal,
            tls,
        };
        let inherited = Inherited {
            channel,
            workers: workers as usize,
            totals,
            started,
            timeout,
        };
        Ok((inherited, listeners))
    }

    /// What the new config must share with the running process: its worker count (each
    /// worker's share is that worker's), and the listeners' addresses it names (the new
    /// process takes the running listeners and binds nothing: moving one takes a restart).
    /// Port 0 in the config matches any port.
    pub fn fits(&self, config: &Config, listeners: &Listeners) -> Result<(), String> {
        if self.workers != config.workers {
            return Err(format!(
                "the new config runs {} worker(s), the running process {}: a binary upgrade keeps the worker count (restart to change it)",
                config.workers, self.workers
            ));
        }
        let same = |key: &str, want: std::net::SocketAddr, l: &std::net::TcpListener| {
            let got = l.local_addr().map_err(|e| format!("{key}: {e}"))?;
            let port_ok = want.port() == 0 || want.port() == got.port();
            if want.ip() == got.ip() && port_ok {
                Ok(())
            } else {
                Err(format!("{key} is {want} in the new config, the running listener {got}: a binary upgrade keeps the listeners (restart to move one)"))
            }
        };
        if let Some(l) = listeners.public.first() {
            same("listen", config.listen, l)?;
        }
        same("admin_listen", config.admin_listen, &listeners.admin)
    }

    /// Refuses the upgrade with `why` (the old process logs it and carries on).
    pub fn refuse(&self, why: &str) {
        let _ = self
            .channel
            .send(&Message::Failed(why.to_string()), &[], self.timeout);
    }

    /// Answers `taken`, then receives every worker's share and hands each to its worker, on
    /// a thread of its own (the workers wait for them while the caller starts the server).
    /// All are received before any is handed on, so a share that cannot be taken whole (this
    /// process out of descriptors) fails the upgrade before any worker adopted anything; the
    /// old process is told why (`failed`) and keeps everything. The thread gives the socket
    /// back once every share is handed on.
    pub fn feed(
        self,
        shares: Vec<flume::Sender<Handed>>,
    ) -> std::thread::JoinHandle<Result<Fed, UpgradeError>> {
        std::thread::spawn(move || {
            let mut times = Times::default();
            let received = self.receive_all(shares.len(), &mut times);
            let received = match received {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "upgrade: cannot take the connections");
                    self.refuse(&e.to_string());
                    return Err(e);
                }
            };
            for (share, tx) in received.into_iter().zip(&shares) {
                let _ = tx.send(share);
            }
            let received = Instant::now();
            Ok(Fed {
                channel: self.channel,
                totals: self.totals,
                started: self.started,
                timeout: self.timeout,
                taken: times.taken.unwrap_or(received),
                first_share: times.first_share.unwrap_or(received),
                received,
            })
        })
    }

    fn receive_all(&self, workers: usize, times: &mut Times) -> Result<Vec<Handed>, UpgradeError> {
        self.channel.send(
            &Message::Taken {
                workers: workers as u32,
            },
            &[],
            self.timeout,
        )?;
        times.taken = Some(Instant::now());
        (0..workers)
            .map(|i| self.receive_share(i as u32, times))
            .collect()
    }

    /// Receives worker `worker`'s share, noting when the first share began to come.
    fn receive_share(&self, worker: u32, times: &mut Times) -> Result<Handed, UpgradeError> {
        let header = self.channel.recv(self.timeout)?;
        times.first_share.get_or_insert_with(Instant::now);
        let (bytes, fds) = match header {
            (
                Message::Share {
                    worker: w,
                    bytes,
                    fds,
                },
                _,
            ) if w == worker => (bytes, fds),
            (m, _) => return Err(UpgradeError::Unexpected(format!("{m:?}"))),
        };
        room_for(worker, fds as usize).map_err(UpgradeError::Other)?;
        let mut data = Vec::with_capacity(bytes.min(1 << 30) as usize);
        while (data.len() as u64) < bytes {
            match self.channel.recv(self.timeout)? {
                (Message::Chunk(c), _) => data.extend_from_slice(&c),
                (m, _) => return Err(UpgradeError::Unexpected(format!("{m:?}"))),
            }
        }
        if data.len() as u64 != bytes {
            return Err(UpgradeError::Other(format!(
                "worker {worker}'s share: {} bytes for {bytes}",
                data.len()
            )));
        }
        let fds = self.channel.recv_fds(fds as usize, self.timeout)?;
        Ok(Handed { bytes: data, fds })
    }
}

/// Descriptors kept free beyond a share's, for what the workers open while they adopt and
/// start accepting.
const HEADROOM: u64 = 64;

/// Whether this process may open `n` more descriptors (a worker's share) under its open-file
/// limit, with [`HEADROOM`] to spare. Checked before the share is read, so a process started
/// with a lower limit than the old one refuses the upgrade with a reason instead of meeting
/// MSG_CTRUNC (which `channel` refuses too).
fn room_for(worker: u32, n: usize) -> Result<(), String> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let Some(limit) = limit else {
        return Ok(());
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
    let need = open + n as u64 + HEADROOM;
    if need > limit {
        return Err(format!(
            "worker {worker}'s share has {n} connection(s), and this process has {open} descriptor(s) open of its open-file limit {limit} (RLIMIT_NOFILE, {HEADROOM} kept free): raise the limit (LimitNOFILE=) and upgrade again"
        ));
    }
    Ok(())
}

/// When the handover's steps happened, as this process saw them ([`Fed::phases`]).
#[derive(Default)]
struct Times {
    /// `taken` sent: the old process stops accepting and exports from here.
    taken: Option<Instant>,
    /// The first share began to come: the old process's export of it ended before.
    first_share: Option<Instant>,
}

/// Every share handed on: what is left to do once the workers listen.
pub struct Fed {
    channel: Channel,
    pub totals: Totals,
    started: Instant,
    timeout: Duration,
    taken: Instant,
    first_share: Instant,
    /// Every share received and handed to its worker.
    received: Instant,
}

impl Fed {
    /// How long the handover took, from `hello` read.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The handover's phases as this process saw them, up to now (every worker adopted).
    pub fn phases(&self) -> Phases {
        let now = Instant::now();
        Phases {
            start: self.taken.saturating_duration_since(self.started),
            export: self.first_share.saturating_duration_since(self.taken),
            transfer: self.received.saturating_duration_since(self.first_share),
            adopt: now.saturating_duration_since(self.received),
        }
    }

    /// Answers `holding` and waits for the old process to let go (`released`, or its end of
    /// the socket closing: it exited). Only then may this process say it is ready. Once
    /// `holding` is sent this process serves whatever comes: the old one may have let go
    /// already, and if it has not it kills this one (its timeout), so giving up here could
    /// only leave nobody serving.
    pub fn holding(self, connections: u64) -> Result<(), UpgradeError> {
        self.channel
            .send(&Message::Holding { connections }, &[], self.timeout)?;
        match self.channel.recv(self.timeout) {
            Ok((Message::Released, _)) | Err(ChannelError::Closed) => {}
            Ok((m, _)) => {
                tracing::warn!(message = ?m, "upgrade: unexpected answer to holding; serving")
            }
            Err(e) => tracing::warn!(error = %e, "upgrade: no release heard; serving"),
        }
        Ok(())
    }
}

/// The new process between taking the listeners and saying it holds everything.
pub struct Adopted {
    feeder: std::thread::JoinHandle<Result<Fed, UpgradeError>>,
    adopted: flume::Receiver<usize>,
}

impl Adopted {
    /// The server on the inherited listeners, its workers waiting for their shares, which a
    /// thread of its own receives from the old process and hands on.
    pub fn prepare(
        config: Config,
        listeners: Listeners,
        inherited: Inherited,
    ) -> Result<(Server, Adopted), ServerError> {
        let (shares, inboxes): (Vec<_>, Vec<_>) =
            (0..config.workers).map(|_| flume::bounded(1)).unzip();
        let (adopted_tx, adopted) = flume::unbounded();
        let server = Server::with_listeners(config, listeners)?.adopting(inboxes, adopted_tx);
        let feeder = inherited.feed(shares);
        Ok((server, Adopted { feeder, adopted }))
    }

    /// Every worker adopted its share and listens: says so to the old process and waits for
    /// it to let go. Counts the upgrade (the old process's totals carried on).
    pub fn finish(self, running: &Running) -> Result<(), UpgradeError> {
        let fed = self
            .feeder
            .join()
            .map_err(|_| UpgradeError::Other("the share thread panicked".into()))??;
        let connections: u64 = self.adopted.try_iter().map(|n| n as u64).sum();
        let ms = fed.elapsed().as_millis() as u64;
        let phases = fed.phases();
        let stats = &running.shared.upgrades;
        stats.took_over(fed.totals, connections, ms, crate::auth::unix_now());
        stats.phases(phases);
        fed.holding(connections)?;
        tracing::info!(
            connections,
            handover_ms = ms,
            start_ms = phases.start.as_secs_f64() * 1e3,
            export_ms = phases.export.as_secs_f64() * 1e3,
            transfer_ms = phases.transfer.as_secs_f64() * 1e3,
            adopt_ms = phases.adopt.as_secs_f64() * 1e3,
            generation = crate::server::health::generation(),
            "upgrade: this process holds everything and serves"
        );
        Ok(())
    }
}
