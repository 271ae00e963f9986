//! Live connections crossing to a new process on a binary upgrade (SIGUSR2, issue 25,
//! docs/upgrade.md). The server's upgrade (`server::upgrade`) moves the bytes and descriptors
//! between the processes; this module decides what a worker's connections and sessions become
//! on the way: [`export`] on each worker of the old process, [`adopt`] on each worker of the
//! new one before it reports ready, [`settle`] on the old one once the outcome is known.
//!
//! This file is the seam between the two halves. Its bodies here are the fallback: no
//! connection crosses; `export` closes them with 1012 (Service Restart), as a SIGTERM with
//! `session.state_dir` does, and carries what their sessions keep in the state file's format,
//! which `adopt` restores, so an upgrade is at least a restart without loss.

use crate::context::Core;
use crate::session::persist::{self, format};
use crate::stats::bump;
use crate::ws::CloseCode;
use std::os::fd::OwnedFd;
use std::rc::Rc;

/// The name the fallback's state is written under (the state format checks it on reading).
const NODE: &str = "handover";

/// One worker's share of a handover: an encoded description (versioned by this module) and
/// the descriptors it names, by index.
#[derive(Debug, Default)]
pub struct Export {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// What the old process does with its connections once the new one answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new process confirmed that it holds everything: let go without closing anything
    /// a client could see (no close frame, no shutdown(2)); the process exits next.
    Released,
    /// The upgrade failed: carry on serving as if nothing happened.
    Resumed,
}

/// Why a worker could not take its share.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("handover format: {0}")]
    Format(String),
}

/// Called on each worker of the old process once its listeners stopped accepting: parks its
/// connections (nothing more read or written until [`settle`]) and describes them.
pub async fn export(core: &Rc<Core>) -> Export {
    crate::relay::stop::close_all(core, CloseCode::SERVICE_RESTART, "server upgrading").await;
    let sessions = persist::snapshot(&core.registry);
    Export {
        bytes: format::encode(NODE, &sessions),
        fds: Vec::new(),
    }
}

/// Called on each worker of the old process with the upgrade's outcome.
pub async fn settle(_core: &Rc<Core>, _outcome: Outcome) {}

/// Called on each worker of the new process, before it reports ready, with the share the old
/// process's worker of the same index exported. Returns how many connections it adopted.
pub fn adopt(core: &Rc<Core>, export: Export) -> Result<usize, HandoverError> {
    if export.bytes.is_empty() && export.fds.is_empty() {
        return Ok(0);
    }
    let sessions =
        format::decode(&export.bytes, NODE).map_err(|e| HandoverError::Format(e.to_string()))?;
    let limits = persist::RestoreLimits::of(&core.config().session);
    let done = persist::restore(&core.registry, sessions, core.clock.tick(), limits);
    bump(&core.stats.state_sessions_loaded, done.sessions);
    bump(
        &core.stats.state_messages_not_loaded,
        done.messages_left_out,
    );
    Ok(0)
}
