//! A peer carried to its session's owner node, as this core's table (`Local`) sees it: its
//! two sockets, the write in progress each way and why this node ended it, without I/O. The
//! worker's context holds the table, so the state is defined here, below the context; the
//! carrying itself (opening the link, moving bytes, the write timeout) is `cluster::carry`,
//! which reads the fields marked `pub(crate)`.

use crate::runtime::socket::Socket;
use crate::session::peer::UNSTAMPED;
use crate::ws::CloseCode;
use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;

/// A carried peer, as the core's `Local` table sees it.
pub struct Carry {
    pub owner: Rc<str>,
    /// The session and the client's address, which the bounds on blocked writes key by.
    pub session: Rc<str>,
    pub ip: IpAddr,
    pub(crate) client: Socket,
    pub(crate) link: Socket,
    /// The write toward the client / toward the owner in progress, if any.
    pub to_client: WriteMark,
    pub to_owner: WriteMark,
    /// Why this node ends the link, when it does (what the client is closed with).
    pub(crate) ending: Cell<Option<Ending>>,
    /// The client was dropped for not reading: nothing more is written to it.
    pub(crate) client_dropped: Cell<bool>,
}

/// Why this node ended a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// `code`: the owner left the fleet (1012) or this node is stopping (1001).
    Told(CloseCode),
    /// The owner stopped reading the link (1012).
    OwnerStalled,
}

impl Ending {
    /// The close frame the client gets for it.
    pub(crate) fn close(self) -> (CloseCode, &'static str) {
        match self {
            Ending::Told(CloseCode::GOING_AWAY) => (CloseCode::GOING_AWAY, "server shutting down"),
            Ending::Told(code) => (code, "the session's node is gone; reconnect"),
            Ending::OwnerStalled => (
                CloseCode::SERVICE_RESTART,
                "the session's node stopped reading; reconnect",
            ),
        }
    }
}

impl Carry {
    /// A link just opened to `owner` for a peer of `session` from `ip`: no write pending, not
    /// ended.
    pub fn new(
        owner: Rc<str>,
        session: Rc<str>,
        ip: IpAddr,
        client: Socket,
        link: Socket,
    ) -> Carry {
        Carry {
            owner,
            session,
            ip,
            client,
            link,
            to_client: WriteMark::default(),
            to_owner: WriteMark::default(),
            ending: Cell::new(None),
            client_dropped: Cell::new(false),
        }
    }

    /// Ends the link; the client gets a close frame with `code` if its stream is at a frame
    /// boundary, else its connection is closed.
    pub fn end(&self, code: CloseCode) {
        self.end_for(Ending::Told(code));
    }

    pub(crate) fn end_for(&self, why: Ending) {
        if self.ending.get().is_none() {
            self.ending.set(Some(why));
        }
        self.link.abort();
    }

    /// Drops the client, which is not reading, as the relay drops a seated receiver: its
    /// socket and the link are shut, so both writes fail at once and their buffers go back;
    /// the owner sees its peer disconnect (and tells the other peer 1006).
    pub(crate) fn drop_client(&self) {
        self.client_dropped.set(true);
        self.client.abort();
        self.link.abort();
    }

    /// Ends the blocked writes `dirs` names: a client that does not read is dropped (with
    /// its link); a link the owner does not read is ended, and its client, which reads, gets
    /// 1012 at a frame boundary.
    pub fn end_blocked(&self, dirs: Dirs) {
        if dirs.to_client {
            self.drop_client();
        } else if dirs.to_owner {
            self.end_for(Ending::OwnerStalled);
        }
    }

    /// Whether the write toward the client / the owner can no longer complete: its socket
    /// was shut, so it is failing and its buffer is on its way back to the pool.
    pub fn released(&self) -> Dirs {
        let dropped = self.client_dropped.get();
        Dirs {
            to_client: dropped,
            to_owner: dropped || self.ending.get().is_some(),
        }
    }

    /// This node shut the link or the client (or both).
    pub(crate) fn is_shut(&self) -> bool {
        self.client_dropped.get() || self.ending.get().is_some()
    }

    /// Writes waiting now (each holds one pooled buffer).
    pub fn pinned(&self) -> usize {
        self.to_client.is_pending() as usize + self.to_owner.is_pending() as usize
    }
}

/// The two directions of a carried link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dirs {
    pub to_client: bool,
    pub to_owner: bool,
}

/// A pending write, as `Peer::write_since_ms` marks one: set when the write starts (one cell
/// store, no clock), stamped by the first look of the core's tick or pool guard, cleared when
/// the write ends.
#[derive(Default)]
pub struct WriteMark(Cell<Option<u64>>);

impl WriteMark {
    pub(crate) fn start(&self) {
        self.0.set(Some(UNSTAMPED));
    }

    pub(crate) fn end(&self) {
        self.0.set(None);
    }

    pub fn is_pending(&self) -> bool {
        self.0.get().is_some()
    }

    /// Since when the pending write has waited, if one is pending; a write seen for the first
    /// time is stamped `now_ms`.
    pub fn pending_since(&self, now_ms: u64) -> Option<u64> {
        match self.0.get() {
            None => None,
            Some(UNSTAMPED) => {
                self.0.set(Some(now_ms));
                Some(now_ms)
            }
            since => since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_mark_is_stamped_by_its_first_look_and_cleared_when_the_write_ends() {
        let m = WriteMark::default();
        assert!(!m.is_pending());
        assert_eq!(m.pending_since(100), None);
        m.start();
        assert!(m.is_pending());
        assert_eq!(m.pending_since(250), Some(250), "stamped by the first look");
        assert_eq!(m.pending_since(900), Some(250), "and kept");
        m.end();
        assert_eq!(m.pending_since(1000), None);
        m.start();
        assert_eq!(
            m.pending_since(1200),
            Some(1200),
            "a new write, a new stamp"
        );
    }

    #[test]
    fn the_client_is_told_why_the_link_ended() {
        let stalled = Ending::OwnerStalled.close();
        assert_eq!(stalled.0, CloseCode::SERVICE_RESTART);
        assert!(stalled.1.contains("stopped reading"));
        let gone = Ending::Told(CloseCode::SERVICE_RESTART).close();
        assert_eq!(gone.0, CloseCode::SERVICE_RESTART);
        assert!(gone.1.contains("gone"));
        assert_eq!(
            Ending::Told(CloseCode::GOING_AWAY).close().0,
            CloseCode::GOING_AWAY
        );
        for (_, reason) in [stalled, gone] {
            assert!(reason.len() <= crate::ws::frame::MAX_CONTROL_PAYLOAD - 2);
        }
    }
}
