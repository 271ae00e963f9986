//! The handover's encoding of one worker's share, I/O-free: what `export` writes and `adopt`
//! reads (docs/upgrade.md, "What crosses"). The sessions' kept messages and replay windows
//! are the state file's own records (`session::persist::format`), embedded whole, so one
//! reader checks them both ways; around them, what only a live connection has.
//!
//! ```text
//! MAGIC "RRHANDOV" | version u16 | body length u32 | body | CRC-32 of all before it
//! body:     sessions length u32 | a state file (persist::format) holding the sessions |
//!           per session, in its order: count u16 × (role | told u64) |
//!           connections u32 × connection |
//!           limits length u32 | this worker's per-IP connection-rate buckets (the
//!           `limits::saved` encoding, as in the state file) (version 2 on)
//! connection: fd index u32 | session index u32 (u32::MAX: echo) | slot u8 | role |
//!           flags u8 (1: counts for two-way resume, 2: events, 4: Durable Object shapes,
//!           8: TLS, 16: a bridge agent) | [event key 16 bytes, with events] |
//!           [bridge key, a string, for an agent] | address: 4 | 4 bytes, or 6 | 16
//!           bytes | [with TLS: u16 length | the record state, `tls::record` (traffic keys,
//!           IVs, sequence numbers: secret)]
//! strings:  u16 length | UTF-8
//! ```
//! A reader refuses any version but its own (both processes are of builds that agree, or the
//! upgrade fails): the new process then exits and the old one serves on (docs/upgrade.md).
//! Version 2 added TLS record state, bridge agents' keys and the limits.

use crate::limits::saved::{self, SavedLimits, SavedLimitsError};
use crate::session::persist::format::{self, FormatError, SessionState};
use crate::tls::record::Carried;
use std::net::IpAddr;

pub const MAGIC: [u8; 8] = *b"RRHANDOV";
/// The version this build writes and the only one it reads.
pub const VERSION: u16 = 2;
/// The node name the embedded state file is written for (it never leaves the handover).
const NODE: &str = "handover";
/// No session: an echo connection.
const ECHO: u32 = u32::MAX;

const COUNTS: u8 = 1;
const EVENTS: u8 = 2;
const DURABLE: u8 = 4;
const TLS: u8 = 8;
/// A bridge agent: its key follows the event key.
const BRIDGE: u8 = 16;

/// One worker's share, decoded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Share {
    pub sessions: Vec<LiveSession>,
    pub conns: Vec<ConnState>,
    /// The worker's per-IP connection-rate buckets that are not full: an address that spent
    /// its burst is still refused after the upgrade.
    pub limits: SavedLimits,
}

/// A session with its connections' acks told so far (the state file keeps only `accepted`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveSession {
    pub state: SessionState,
    /// Per receiving role with a replay window: the `acked` its connection was last told.
    pub told: Vec<(String, u64)>,
}

/// One connection handed over: its descriptor is `fds[fd]` of the share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnState {
    pub fd: u32,
    /// Index into [`Share::sessions`]; `None` on the echo route.
    pub session: Option<u32>,
    pub slot: u8,
    pub role: String,
    /// Asked for `resume=`: what it sends is counted for its role.
    pub counts: bool,
    /// With events: its key (the client holds it) and whether they take the Durable Object
    /// relay's shapes.
    pub events: Option<([u8; 16], bool)>,
    /// The client's address, for per-IP accounting.
    pub ip: IpAddr,
    /// A TLS connection's record state (secret; its `Debug` prints none of it).
    pub tls: Option<Carried>,
    /// A bridge agent's key (`Ringrelay-Bridge-Key`), which marks the relay's requests to it.
    pub bridge_key: Option<String>,
}

/// Why a share is refused. Nothing of a refused share is adopted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a handover share")]
    Foreign,
    #[error("handover format version {0}, newer than this build's {VERSION}")]
    Newer(u16),
    #[error(
        "handover format version {0}, older than this build's {VERSION} (it reads only its own)"
    )]
    Older(u16),
    #[error("cut short")]
    Torn,
    #[error("checksum mismatch")]
    Checksum,
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("its sessions: {0}")]
    Sessions(FormatError),
    #[error("its limits: {0}")]
    Limits(SavedLimitsError),
}

/// Encodes a share.
pub fn encode(share: &Share) -> Vec<u8> {
    let mut states = format::header(NODE);
    for s in &share.sessions {
        states.extend(format::session_record(&s.state));
    }
    states.extend(format::end_record(share.sessions.len() as u64));
    let mut body = Vec::with_capacity(states.len() + 64 * share.conns.len() + 16);
    body.extend_from_slice(&(states.len() as u32).to_le_bytes());
    body.extend(states);
    for s in &share.sessions {
        body.extend_from_slice(&(s.told.len() as u16).to_le_bytes());
        for (role, told) in &s.told {
            put_str(&mut body, role);
            body.extend_from_slice(&told.to_le_bytes());
        }
    }
    body.extend_from_slice(&(share.conns.len() as u32).to_le_bytes());
    for c in &share.conns {
        put_conn(&mut body, c);
    }
    let limits = saved::encode(&share.limits);
    body.extend_from_slice(&(limits.len() as u32).to_le_bytes());
    body.extend(limits);
    let mut out = Vec::with_capacity(body.len() + 18);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    let crc = format::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put_conn(out: &mut Vec<u8>, c: &ConnState) {
    out.extend_from_slice(&c.fd.to_le_bytes());
    out.extend_from_slice(&c.session.unwrap_or(ECHO).to_le_bytes());
    out.push(c.slot);
    put_str(out, &c.role);
    let mut flags = if c.counts { COUNTS } else { 0 };
    if let Some((_, durable)) = c.events {
        flags |= EVENTS | if durable { DURABLE } else { 0 };
    }
    if c.tls.is_some() {
        flags |= TLS;
    }
    if c.bridge_key.is_some() {
        flags |= BRIDGE;
    }
    out.push(flags);
    if let Some((key, _)) = c.events {
        out.extend_from_slice(&key);
    }
    if let Some(key) = &c.bridge_key {
        put_str(out, key);
    }
    saved::put_ip(out, c.ip);
    if let Some(t) = &c.tls {
        // A record state is under 128 bytes.
        out.extend_from_slice(&(t.0.len() as u16).to_le_bytes());
        out.extend_from_slice(&t.0);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Roles are bounded far below 64 KiB by admission.
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

/// Decodes a share that came with `fds` descriptors. Every index is checked: a connection
/// names a descriptor of the share (each at most once) and a session of it, and a seat holds
/// at most one connection.
pub fn decode(bytes: &[u8], fds: usize) -> Result<Share, WireError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(WireError::Foreign);
    }
    let mut r = Cursor { bytes, at: 8 };
    let version = r.u16()?;
    if version > VERSION {
        return Err(WireError::Newer(version));
    }
    if version < VERSION && version > 0 {
        return Err(WireError::Older(version));
    }
    if version == 0 {
        return Err(WireError::Malformed("version 0"));
    }
    let len = r.u32()? as usize;
    let body = r.take(len)?;
    let crc = r.u32()?;
    if r.at != bytes.len() {
        return Err(WireError::Malformed("bytes after the checksum"));
    }
    if crc != format::crc32(&bytes[..bytes.len() - 4]) {
        return Err(WireError::Checksum);
    }
    let mut b = Cursor { bytes: body, at: 0 };
    let states_len = b.u32()? as usize;
    let states = format::decode(b.take(states_len)?, NODE).map_err(WireError::Sessions)?;
    let mut sessions = Vec::with_capacity(states.len());
    for state in states {
        let n = b.u16()?;
        let mut told = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            told.push((b.string()?, b.u64()?));
        }
        sessions.push(LiveSession { state, told });
    }
    let count = b.u32()? as usize;
    // Each connection takes at least 16 bytes: a larger count is a lie and must not size an
    // allocation.
    if count > body.len() / 16 {
        return Err(WireError::Malformed(
            "a connection count larger than the share",
        ));
    }
    let mut conns = Vec::with_capacity(count);
    let mut used = vec![false; fds];
    let mut seats = vec![[false; 2]; sessions.len()];
    for _ in 0..count {
        let c = conn(&mut b)?;
        let fd = used
            .get_mut(c.fd as usize)
            .ok_or(WireError::Malformed("a descriptor index past the share's"))?;
        if std::mem::replace(fd, true) {
            return Err(WireError::Malformed("a descriptor named twice"));
        }
        if let Some(s) = c.session {
            let seat = seats
                .get_mut(s as usize)
                .ok_or(WireError::Malformed("a session index past the share's"))?
                .get_mut(usize::from(c.slot))
                .ok_or(WireError::Malformed("a slot past 1"))?;
            if std::mem::replace(seat, true) {
                return Err(WireError::Malformed("two connections in one seat"));
            }
        }
        conns.push(c);
    }
    let limits_len = b.u32()? as usize;
    let limits = saved::decode(b.take(limits_len)?).map_err(WireError::Limits)?;
    if b.at != body.len() {
        return Err(WireError::Malformed("bytes left over"));
    }
    Ok(Share {
        sessions,
        conns,
        limits,
    })
}

fn conn(b: &mut Cursor) -> Result<ConnState, WireError> {
    let fd = b.u32()?;
    let session = Some(b.u32()?).filter(|&s| s != ECHO);
    let slot = b.u8()?;
    let role = b.string()?;
    let flags = b.u8()?;
    if flags & !(COUNTS | EVENTS | DURABLE | TLS | BRIDGE) != 0 {
        return Err(WireError::Malformed("unknown connection flags"));
    }
    let events = match flags & EVENTS {
        0 => None,
        _ => Some((b.take(16)?.try_into().unwrap(), flags & DURABLE != 0)),
    };
    let bridge_key = match flags & BRIDGE {
        0 => None,
        _ => Some(b.string()?),
    };
    let ip = match b.u8()? {
        4 => IpAddr::from(<[u8; 4]>::try_from(b.take(4)?).unwrap()),
        6 => IpAddr::from(<[u8; 16]>::try_from(b.take(16)?).unwrap()),
        _ => return Err(WireError::Malformed("an address family other than 4 or 6")),
    };
    let tls = match flags & TLS {
        0 => None,
        _ => {
            let n = usize::from(b.u16()?);
            Some(Carried(zeroize::Zeroizing::new(b.take(n)?.to_vec())))
        }
    };
    Ok(ConnState {
        fd,
        session,
        slot,
        role,
        counts: flags & COUNTS != 0,
        events,
        ip,
        tls,
        bridge_key,
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(WireError::Torn)?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn string(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| WireError::Malformed("a name that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
