//! The old process's side of the upgrade: runs on a thread of its own, started by SIGUSR2.

use super::channel::{Channel, ChannelError};
use super::gate::UpgradeOrder;
use super::wire::{ListenerCounts, Message, CHUNK_BYTES};
use super::UpgradeError;
use crate::config::{GENERATION_VAR, UPGRADE_FD_VAR};
use crate::context::Shared;
use crate::relay::handover::{Export, Outcome};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A copy of every listener, kept by the process for the next upgrade (the workers own the
/// originals), in the order `hello` names them.
pub struct Kept {
    fds: Vec<OwnedFd>,
    counts: ListenerCounts,
}

impl Kept {
    /// Duplicates each listener (public per worker, admin, internal per worker, TLS per
    /// worker).
    pub fn of(
        public: &[std::net::TcpListener],
        admin: &std::net::TcpListener,
        internal: &[std::net::TcpListener],
        tls: &[std::net::TcpListener],
    ) -> std::io::Result<Kept> {
        let all = public
            .iter()
            .chain(std::iter::once(admin))
            .chain(internal)
            .chain(tls);
        let fds = all
            .map(|l| l.try_clone().map(OwnedFd::from))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Kept {
            fds,
            counts: ListenerCounts {
                public: public.len() as u16,
                admin: 1,
                internal: internal.len() as u16,
                tls: tls.len() as u16,
            },
        })
    }
}

impl Kept {
    fn borrowed(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(|f| f.as_fd()).collect()
    }
}

/// What SIGUSR2 needs: the binary and arguments resolved at start, the listeners, the
/// workers' upgrade inboxes.
#[derive(Clone)]
pub struct Upgrader {
    inner: Arc<Inner>,
}

struct Inner {
    exe: Option<PathBuf>,
    args: Vec<OsString>,
    kept: Kept,
    orders: Vec<flume::Sender<UpgradeOrder>>,
    shared: Arc<Shared>,
    busy: AtomicBool,
    /// SIGTERM or SIGINT came during the upgrade: abandon it unless the new process already
    /// holds everything.
    interrupt: Arc<AtomicBool>,
    /// The new process said `holding`: it owns everything, nothing turns back.
    committed: AtomicBool,
}

/// What a stop signal met ([`Upgrader::interrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuringStop {
    /// No upgrade under way: stop as usual.
    Idle,
    /// An upgrade was under way and is abandoned: the new process was killed and every
    /// worker resumed; stop as usual now.
    Abandoned,
    /// The new process holds everything: this process exits 0 as the upgrade ends, and the
    /// stop is not for it.
    Committed,
}

/// Slices in which the old process waits for a message, looking between two whether the new
/// process has exited.
const SLICE: Duration = Duration::from_millis(50);

impl Upgrader {
    /// `exe`: `std::env::current_exe()` as resolved at start (a package upgrade that replaced
    /// the file is what runs next), `None` when it could not be read.
    pub(crate) fn new(
        exe: Option<PathBuf>,
        kept: Kept,
        orders: Vec<flume::Sender<UpgradeOrder>>,
        shared: Arc<Shared>,
    ) -> Upgrader {
        Upgrader {
            inner: Arc::new(Inner {
                exe,
                args: std::env::args_os().skip(1).collect(),
                kept,
                orders,
                shared,
                busy: AtomicBool::new(false),
                interrupt: Arc::new(AtomicBool::new(false)),
                committed: AtomicBool::new(false),
            }),
        }
    }

    /// SIGUSR2: starts an upgrade on a thread of its own, unless one runs (then it is
    /// ignored and logged). On success the process exits 0 from that thread.
    pub fn start(&self, timeout: Duration) {
        if self.inner.busy.swap(true, Ordering::AcqRel) {
            tracing::warn!("SIGUSR2 ignored: an upgrade is already under way");
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ringrelay-upgrade".into())
            .spawn(move || me.run(timeout));
        if let Err(e) = spawned {
            self.failed(&UpgradeError::Other(format!("cannot start a thread: {e}")));
        }
    }

    /// SIGTERM or SIGINT: an upgrade under way is abandoned if the new process has not said
    /// `holding` (it is killed and every worker resumes, so the caller's stop then closes
    /// every connection as a stop does, and writes `state_dir`); after `holding` the new
    /// process owns everything and this one just exits. Waits (at most `within`) until the
    /// upgrade has gone one way or the other.
    pub fn interrupt(&self, within: Duration) -> DuringStop {
        if !self.inner.busy.load(Ordering::Acquire) {
            return DuringStop::Idle;
        }
        self.inner.interrupt.store(true, Ordering::Release);
        let deadline = Instant::now() + within;
        loop {
            if self.inner.committed.load(Ordering::Acquire) {
                return DuringStop::Committed;
            }
            if !self.inner.busy.load(Ordering::Acquire) || Instant::now() > deadline {
                return DuringStop::Abandoned;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn failed(&self, e: &UpgradeError) {
        tracing::error!(error = %e, "upgrade failed: this process carries on serving");
        self.inner
            .shared
            .upgrades
            .failed(crate::auth::unix_now(), &e.to_string());
        // systemd heard RELOADING=1 at the signal; the new process may have said MAINPID=.
        let status = format!("upgrade failed: {}", e.to_string().replace('\n', " "));
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::MainPid(std::process::id()),
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ],
        );
        self.inner.busy.store(false, Ordering::Release);
    }

    fn run(&self, timeout: Duration) {
        let started = Instant::now();
        tracing::info!(exe = ?self.inner.exe, "SIGUSR2: upgrading to a new process");
        if self.inner.interrupt.load(Ordering::Acquire) {
            return self.failed(&UpgradeError::Interrupted);
        }
        let mut dance = match Dance::begin(&self.inner, timeout) {
            Ok(d) => d,
            Err(e) => return self.failed(&e),
        };
        match dance.hand_over(&self.inner) {
            Ok(connections) => {
                let pid = dance.child.id();
                tracing::info!(
                    new_pid = pid,
                    connections,
                    ms = started.elapsed().as_millis() as u64,
                    "upgrade done: the new process holds everything; exiting"
                );
                std::process::exit(0);
            }
            Err(e) => {
                dance.abort(&self.inner);
                self.failed(&e);
            }
        }
    }
}

/// One upgrade under way.
struct Dance {
    child: Child,
    channel: Channel,
    deadline: Instant,
    timeout: Duration,
    /// The workers exported: they must be told the outcome.
    exported: bool,
    /// Set by a stop signal (`Inner::interrupt`).
    interrupt: Arc<AtomicBool>,
}

impl Dance {
    /// Starts the new process and hands it the listeners.
    fn begin(inner: &Inner, timeout: Duration) -> Result<Dance, UpgradeError> {
        let deadline = Instant::now() + timeout;
        let exe = inner.exe.clone().ok_or_else(|| {
            UpgradeError::Other("the binary's path was not known at start".into())
        })?;
        let (channel, theirs) = Channel::pair().map_err(|e| UpgradeError::Other(e.to_string()))?;
        // The new process inherits its end at the same number: clear close-on-exec on it.
        rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
            .map_err(|e| UpgradeError::Other(format!("upgrade socket: {e}")))?;
        let generation = crate::server::health::generation() + 1;
        let mut cmd = Command::new(&exe);
        cmd.args(&inner.args)
            .env(GENERATION_VAR, generation.to_string())
            .env(UPGRADE_FD_VAR, theirs.as_raw_fd().to_string());
        // Nothing else of this process's: its connections cross by the socket, or not at all.
        crate::runtime::socket::inherit_only(&mut cmd, theirs.as_raw_fd());
        let child = cmd.spawn().map_err(|source| UpgradeError::Spawn {
            path: exe.display().to_string(),
            source,
        })?;
        drop(theirs);
        let mut dance = Dance {
            child,
            channel,
            deadline,
            timeout,
            exported: false,
            interrupt: inner.interrupt.clone(),
        };
        let hello = Message::Hello {
            workers: inner.orders.len() as u32,
            listeners: inner.kept.counts,
            totals: inner.shared.upgrades.totals(),
        };
        let sent = dance.send(&hello).and_then(|_| {
            Ok(dance
                .channel
                .send_fds(&inner.kept.borrowed(), dance.left())?)
        });
        if let Err(e) = sent {
            dance.abort(inner);
            return Err(dance.why_stopped(e));
        }
        Ok(dance)
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Acquire)
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn send(&self, m: &Message) -> Result<(), UpgradeError> {
        Ok(self.channel.send(m, &[], self.left())?)
    }

    /// The new process's exit, when it has exited, explains a failure better than the
    /// socket's end does.
    fn why_stopped(&mut self, e: UpgradeError) -> UpgradeError {
        if matches!(
            e,
            UpgradeError::Channel(ChannelError::Closed | ChannelError::Io(_))
        ) {
            // It may have said why before it went (a share it could not take).
            if let Ok((Message::Failed(why), _)) = self.channel.recv(Duration::from_millis(1)) {
                return UpgradeError::Refused(why);
            }
            let until = Instant::now() + Duration::from_millis(200);
            while Instant::now() < until {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return UpgradeError::Exited(status);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        e
    }

    /// Waits for the next message, watching the new process and the deadline.
    fn recv(&mut self) -> Result<Message, UpgradeError> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(UpgradeError::Exited(status));
            }
            let left = self.left();
            if left.is_zero() {
                return Err(UpgradeError::TimedOut(self.timeout));
            }
            match self.channel.recv(left.min(SLICE)) {
                Ok((Message::Failed(why), _)) => return Err(UpgradeError::Refused(why)),
                Ok((m, _)) => return Ok(m),
                // Only once nothing is waiting: a `holding` already sent is taken first.
                Err(ChannelError::TimedOut(_)) if self.interrupted() => {
                    return Err(UpgradeError::Interrupted)
                }
                Err(ChannelError::TimedOut(_)) => continue,
                Err(e) => return Err(self.why_stopped(e.into())),
            }
        }
    }

    /// Steps 2 to 4: returns once the new process holds everything, with how many
    /// connections it adopted.
    fn hand_over(&mut self, inner: &Inner) -> Result<u64, UpgradeError> {
        let workers = inner.orders.len() as u32;
        match self.recv()? {
            Message::Taken { workers: w } if w == workers => {}
            Message::Taken { workers: w } => {
                return Err(UpgradeError::Refused(format!(
                    "it runs {w} worker(s), this process {workers}"
                )))
            }
            m => return Err(UpgradeError::Unexpected(format!("{m:?}"))),
        }
        self.exported = true;
        let t0 = Instant::now();
        let shares = export_all(inner, self.left(), &self.interrupt)?;
        let exported = t0.elapsed();
        for (worker, share) in shares.into_iter().enumerate() {
            self.send_share(worker as u32, share)?;
        }
        let sent = t0.elapsed();
        let connections = match self.recv()? {
            Message::Holding { connections } => connections,
            m => return Err(UpgradeError::Unexpected(format!("{m:?}"))),
        };
        tracing::debug!(
            export_ms = exported.as_secs_f64() * 1e3,
            send_ms = (sent - exported).as_secs_f64() * 1e3,
            holding_ms = (t0.elapsed() - sent).as_secs_f64() * 1e3,
            "upgrade: phases from the workers' export on"
        );
        // A stop signal from here on finds the new process serving: this one exits 0.
        inner.committed.store(true, Ordering::Release);
        // From here on the new process serves: nothing turns back.
        settle_all(inner, Outcome::Released, Duration::from_secs(10));
        // systemd hears the new main pid from this one, the main process, before the new one
        // can say READY=1 (it waits for `released`): `NotifyAccess=main` suffices.
        let pid = self.child.id();
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::MainPid(pid)]);
        let _ = self.send(&Message::Released);
        Ok(connections)
    }

    fn send_share(&self, worker: u32, share: Export) -> Result<(), UpgradeError> {
        self.send(&Message::Share {
            worker,
            bytes: share.bytes.len() as u64,
            fds: share.fds.len() as u32,
        })?;
        for chunk in share.bytes.chunks(CHUNK_BYTES) {
            self.send(&Message::Chunk(chunk.to_vec()))?;
        }
        // The connections' own descriptors, lent until `settle` (`handover::Lent`).
        let fds: Vec<BorrowedFd<'_>> = share.fds.iter().map(|l| l.borrow()).collect();
        Ok(self.channel.send_fds(&fds, self.left())?)
    }

    /// The upgrade failed: the new process is killed (it may hold copies of the listeners
    /// and connections, which then close on its side only) and the workers carry on.
    fn abort(&mut self, inner: &Inner) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.exported {
            settle_all(inner, Outcome::Resumed, Duration::from_secs(10));
        }
    }
}

/// Asks every worker to stop accepting and export; returns the shares in worker order.
fn export_all(
    inner: &Inner,
    timeout: Duration,
    interrupt: &AtomicBool,
) -> Result<Vec<Export>, UpgradeError> {
    let n = inner.orders.len();
    let (tx, rx) = flume::bounded(n);
    for o in &inner.orders {
        o.send(UpgradeOrder::Export(tx.clone()))
            .map_err(|_| UpgradeError::Other("a worker has stopped".into()))?;
    }
    let deadline = Instant::now() + timeout;
    let mut shares: Vec<Option<Export>> = (0..n).map(|_| None).collect();
    let mut got = 0;
    while got < n {
        if interrupt.load(Ordering::Acquire) {
            return Err(UpgradeError::Interrupted);
        }
        match rx.recv_deadline(deadline.min(Instant::now() + SLICE)) {
            Ok((i, share)) => {
                shares[i] = Some(share);
                got += 1;
            }
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => {
                return Err(UpgradeError::Other(
                    "a worker did not export in time".into(),
                ))
            }
        }
    }
    Ok(shares.into_iter().map(Option::unwrap_or_default).collect())
}

/// Tells every worker the outcome and waits (bounded) for each to confirm.
fn settle_all(inner: &Inner, outcome: Outcome, timeout: Duration) {
    let (tx, rx) = flume::bounded(inner.orders.len());
    let mut told = 0;
    for o in &inner.orders {
        if o.send(UpgradeOrder::Settle(outcome, tx.clone())).is_ok() {
            told += 1;
        }
    }
    let deadline = Instant::now() + timeout;
    for _ in 0..told {
        if rx.recv_deadline(deadline).is_err() {
            tracing::warn!(?outcome, "a worker did not confirm the upgrade's outcome");
            return;
        }
    }
}
