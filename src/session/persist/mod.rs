//! Sessions' state kept across a restart (`session.state_dir`, docs/upgrade.md): taken from a
//! core's registry once its connections are closed, written to one file, read back at the
//! next start and put into the registry of the core that owns each session, before any
//! listener accepts.

pub mod file;
pub mod format;

pub use format::{KeptState, ReplayState, SessionState, StateFile};

use super::{Backlog, Registry, Replay, Session};

/// Takes the state of every session of this core that keeps something for an absent peer or
/// has resume on. A message still arriving is left out (its sender is not credited with it
/// and resends it whole); so are the replayed messages at a backlog's front, which are in
/// their replay window already and are replayed from there.
pub fn snapshot(registry: &Registry) -> Vec<SessionState> {
    registry
        .sessions()
        .iter()
        .map(|s| state_of(s))
        .filter(|st| !st.backlogs.is_empty() || !st.replays.is_empty())
        .collect()
}

/// One session's state as the state file keeps it (the rules of [`snapshot`]); the binary
/// upgrade's share embeds the same (`relay::handover`).
pub fn state_of(s: &Session) -> SessionState {
    let backlogs: Vec<KeptState> = s
        .backlogs
        .borrow()
        .iter()
        .map(|b| KeptState {
            from: b.from.to_string(),
            messages: b
                .messages_iter()
                .skip(b.replayed)
                .map(<[u8]>::to_vec)
                .collect(),
        })
        .filter(|k| !k.messages.is_empty())
        .collect();
    let replays: Vec<ReplayState> = s
        .replays
        .borrow()
        .iter()
        .map(|r| ReplayState {
            role: r.role.to_string(),
            numbered: r.numbered,
            accepted: r.accepted,
            last_from: r.last_from.to_string(),
            window: r.ring.messages_iter().map(<[u8]>::to_vec).collect(),
        })
        .collect();
    SessionState {
        id: s.id.to_string(),
        was_paired: s.was_paired.get(),
        backlogs,
        replays,
    }
}

/// The limits a restore keeps within: the ones that bound the same state in memory.
#[derive(Debug, Clone, Copy)]
pub struct RestoreLimits {
    /// `session.core_buffer_budget`: a session whose messages would take the core past it is
    /// not restored.
    pub core_budget: usize,
    /// `session.replay_bytes`: a window holds at most this (the oldest go first, as in
    /// memory).
    pub replay_bytes: usize,
    /// `session.buffer_bytes == 0`: buffering is off, so no backlog is restored.
    pub buffering: bool,
}

impl RestoreLimits {
    /// The limits the session settings put on the same state in memory.
    pub fn of(s: &crate::config::SessionConfig) -> Self {
        Self {
            core_budget: s.core_buffer_budget,
            replay_bytes: s.replay_bytes,
            buffering: s.buffer_bytes > 0,
        }
    }
}

/// What a restore did, for the counters and the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub sessions: u64,
    pub messages: u64,
    /// Sessions left out to stay within the core's budget.
    pub sessions_left_out: u64,
    /// Kept messages not restored: those of sessions left out, of backlogs with buffering
    /// off, and window messages past `replay_bytes`.
    pub messages_left_out: u64,
}

/// Puts `states` into this core's registry. Each session lingers from `now` (so
/// `session.linger` counts from the restart) with its backlogs and replay windows charged to
/// the core's budget, exactly as if its last peer had just left.
pub fn restore(
    registry: &Registry,
    states: Vec<SessionState>,
    now: u64,
    limits: RestoreLimits,
) -> Restored {
    let mut done = Restored::default();
    let mut used = 0usize;
    for st in states {
        let count = |m: &[Vec<u8>]| m.len() as u64;
        let all: u64 = st.backlogs.iter().map(|b| count(&b.messages)).sum::<u64>()
            + st.replays.iter().map(|r| count(&r.window)).sum::<u64>();
        let bytes: usize = st
            .backlogs
            .iter()
            .flat_map(|b| &b.messages)
            .chain(st.replays.iter().flat_map(|r| &r.window))
            .map(Vec::len)
            .sum();
        if used.saturating_add(bytes) > limits.core_budget || registry.get(&st.id).is_some() {
            done.sessions_left_out += 1;
            done.messages_left_out += all;
            continue;
        }
        used += bytes;
        let session = registry.session(&st.id, now);
        session.was_paired.set(st.was_paired);
        let mut restored = 0u64;
        for k in st.backlogs.into_iter().filter(|_| limits.buffering) {
            let mut b = Backlog::new(&k.from);
            for m in &k.messages {
                b.push_whole(m);
            }
            restored += count(&k.messages);
            registry.budget.settle(&mut b);
            session.backlogs.borrow_mut().push(b);
        }
        for r in st.replays {
            let mut replay = Replay::new(&r.role);
            replay.numbered = r.numbered;
            replay.accepted = r.accepted;
            replay.told = r.accepted;
            for m in &r.window {
                replay.ring.push_whole(m);
            }
            replay.keep_within(limits.replay_bytes, &r.last_from);
            restored += replay.ring.messages() as u64;
            registry.budget.settle(&mut replay.ring);
            session.replays.borrow_mut().push(replay);
        }
        session.resume_on.set(!session.replays.borrow().is_empty());
        session.lingering_since_ms.set(Some(now));
        done.sessions += 1;
        done.messages += restored;
        done.messages_left_out += all - restored;
    }
    done
}

#[cfg(test)]
mod tests;
