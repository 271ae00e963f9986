//! The binary upgrade (SIGUSR2, docs/upgrade.md): the running relay starts the binary at the
//! path it was started from, with the same arguments and environment, and hands it every
//! listener, then every worker's connections, over a unix socket (`channel`, `wire`).
//!
//! 1. old: starts the new process with `RINGRELAY_UPGRADE_FD` naming its end of the socket and
//!    `RINGRELAY_GENERATION` one higher; sends `hello` and every listener (it keeps accepting);
//! 2. new: loads its config, refuses another worker count, starts its workers on those
//!    listeners (it binds nothing), which wait for their shares; answers `taken`;
//! 3. old: each worker stops accepting (connections wait in the listeners' queues, none is
//!    refused) and exports its connections (`relay::handover::export`); each share is sent;
//! 4. new: each worker adopts its share (`relay::handover::adopt`), then accepts; once every
//!    one listens it answers `holding`;
//! 5. old: lets go (`handover::settle(Released)`), answers `released`, tells systemd the new
//!    main pid, exits 0; new: tells systemd `MAINPID=` and `READY=1`.
//!
//! Anything else before `holding` (the new process exits, answers `failed`, speaks another
//! version, or `upgrade_timeout` passes) and the old process kills the new one, resumes
//! (`settle(Resumed)`, accepting again), logs why and counts it.

pub mod channel;
pub mod gate;
mod new;
mod old;
pub mod wire;

pub use new::{inherited_fd, Adopted, Inherited};
pub use old::{DuringStop, Kept, Upgrader};

/// Why an upgrade failed (old process) or could not go on (new process).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("the new process exited ({0}) before it held everything")]
    Exited(std::process::ExitStatus),
    #[error("the new process refused the upgrade: {0}")]
    Refused(String),
    #[error("no answer within upgrade_timeout ({0:?})")]
    TimedOut(std::time::Duration),
    #[error(transparent)]
    Channel(#[from] channel::ChannelError),
    #[error("unexpected message {0}")]
    Unexpected(String),
    #[error("stopped by SIGTERM or SIGINT before the new process held everything")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}
