//! The state file's bytes (docs/upgrade.md, "The state file"), without I/O: what SIGTERM
//! writes with `session.state_dir` and the next start reads back, and what the SIGUSR2
//! upgrade can hand over.
//!
//! ```text
//! header:  magic "RRSTATE\0" | version u16 | node id (u16 length, UTF-8) | CRC-32 of the above
//! record:  kind u8 | length u32 | payload | CRC-32 of kind, length and payload
//! last:    an end record whose payload is the count of records before it
//! ```
//! Version 2 added a second kind of record, one per worker: its per-IP limiter state
//! (`limits::saved`'s encoding). A version 1 file (sessions only) still loads.
//! Integers are little-endian. A file is read whole or not at all: every record's CRC must
//! hold, the end record must be there with the right count, and nothing may follow it, so a
//! file cut anywhere, or with any byte changed, is refused rather than half loaded.

use crate::limits::saved::{self, SavedLimits};

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"RRSTATE\0";
/// The format this build writes and reads. A newer one is refused (moved aside): an older
/// build never guesses at fields it does not know.
pub const VERSION: u16 = 2;
/// The oldest format this build still reads.
pub const OLDEST: u16 = 1;

const KIND_SESSION: u8 = 1;
/// One worker's per-IP limiter state (version 2 on).
const KIND_LIMITS: u8 = 2;
const KIND_END: u8 = 0xff;

/// One session's state: what it keeps for absent peers and what a resuming client resumes
/// from. Plain data, so the file (and a handover) carries it between processes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionState {
    pub id: String,
    /// Both peers have been here at once (`Session::was_paired`).
    pub was_paired: bool,
    /// Whole messages kept per sending role, oldest first.
    pub backlogs: Vec<KeptState>,
    /// Numbering, replay window and acks per receiving role that asked for `resume=`.
    pub replays: Vec<ReplayState>,
}

/// Everything a state file holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateFile {
    pub sessions: Vec<SessionState>,
    /// Each worker's per-IP connection-rate buckets (none in a version 1 file).
    pub limits: Vec<SavedLimits>,
}

/// Whole messages kept from one role, each as the server frames the decoder wrote for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeptState {
    pub from: String,
    pub messages: Vec<Vec<u8>>,
}

/// One receiving role's resume state (`session::Replay`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayState {
    pub role: String,
    /// The last delivered message's number.
    pub numbered: u64,
    /// Messages from this role the relay accepted (`acked`).
    pub accepted: u64,
    /// The role that sent the newest message in the window.
    pub last_from: String,
    /// The newest delivered messages, whole, oldest first: numbered
    /// `numbered - len + 1 ..= numbered`.
    pub window: Vec<Vec<u8>>,
}

/// Why a file is refused. Each names what was wrong and where, for the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a ringrelay state file (its first bytes are not the magic)")]
    Foreign,
    #[error("written in format version {0}, newer than this build's {VERSION}")]
    Newer(u16),
    #[error("written in format version {0}, which this build does not read")]
    Unknown(u16),
    #[error("written by node {found:?}, not this node ({ours:?})")]
    OtherNode { found: String, ours: String },
    #[error("cut short at byte {0}: the file is torn")]
    Torn(usize),
    #[error("checksum mismatch in the record at byte {0}: the file is corrupt")]
    Checksum(usize),
    #[error("malformed record at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
    #[error("{0} byte(s) after the end record")]
    Trailing(usize),
}

/// CRC-32 (IEEE 802.3, the one zip and PNG use), table-driven.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Writes a file's header for `node`.
pub fn header(node: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + node.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    put_str(&mut out, node);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// One session's record (kind, length, payload, CRC).
pub fn session_record(s: &SessionState) -> Vec<u8> {
    let mut p = Vec::new();
    put_str(&mut p, &s.id);
    p.push(s.was_paired as u8);
    p.extend_from_slice(&(s.backlogs.len() as u16).to_le_bytes());
    for b in &s.backlogs {
        put_str(&mut p, &b.from);
        put_messages(&mut p, &b.messages);
    }
    p.extend_from_slice(&(s.replays.len() as u16).to_le_bytes());
    for r in &s.replays {
        put_str(&mut p, &r.role);
        p.extend_from_slice(&r.numbered.to_le_bytes());
        p.extend_from_slice(&r.accepted.to_le_bytes());
        put_str(&mut p, &r.last_from);
        put_messages(&mut p, &r.window);
    }
    record(KIND_SESSION, &p)
}

/// One worker's limiter state's record.
pub fn limits_record(l: &SavedLimits) -> Vec<u8> {
    record(KIND_LIMITS, &saved::encode(l))
}

/// The end record, after `records` records.
pub fn end_record(records: u64) -> Vec<u8> {
    record(KIND_END, &records.to_le_bytes())
}

/// A whole file of sessions only, in memory (the writer, `file::save`, streams it record by
/// record; the handover, `relay::handover::wire`, embeds its records in its own share).
#[cfg(test)]
pub fn encode(node: &str, sessions: &[SessionState]) -> Vec<u8> {
    encode_file(
        node,
        &StateFile {
            sessions: sessions.to_vec(),
            limits: Vec::new(),
        },
    )
}

/// A whole file in memory, sessions and limiter state.
#[cfg(test)]
pub fn encode_file(node: &str, f: &StateFile) -> Vec<u8> {
    let mut out = header(node);
    for s in &f.sessions {
        out.extend(session_record(s));
    }
    for l in &f.limits {
        out.extend(limits_record(l));
    }
    out.extend(end_record((f.sessions.len() + f.limits.len()) as u64));
    out
}

/// The sessions of a whole file written for `node` (its limiter records checked, then left
/// out), or why it is refused.
pub fn decode(bytes: &[u8], node: &str) -> Result<Vec<SessionState>, FormatError> {
    decode_file(bytes, node).map(|f| f.sessions)
}

/// Reads a whole file written for `node`, or says why it is refused. Nothing is returned
/// unless every byte checked out.
pub fn decode_file(bytes: &[u8], node: &str) -> Result<StateFile, FormatError> {
    let mut r = Reader { bytes, at: 0 };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(FormatError::Foreign);
    }
    r.at = MAGIC.len();
    let version = r.u16()?;
    if version > VERSION {
        return Err(FormatError::Newer(version));
    }
    if version < OLDEST {
        return Err(FormatError::Unknown(version));
    }
    let found = r.string()?;
    let header_end = r.at;
    if r.u32()? != crc32(&bytes[..header_end]) {
        return Err(FormatError::Checksum(0));
    }
    if found != node {
        return Err(FormatError::OtherNode {
            found,
            ours: node.to_string(),
        });
    }
    let mut file = StateFile::default();
    loop {
        let at = r.at;
        let (kind, payload) = r.record()?;
        match kind {
            KIND_SESSION => file.sessions.push(session(payload, at)?),
            KIND_LIMITS if version >= 2 => {
                file.limits
                    .push(saved::decode(payload).map_err(|_| FormatError::Malformed {
                        at,
                        what: "limiter state that does not decode",
                    })?)
            }
            KIND_END => {
                let count = Reader::whole(payload, at, |p| p.u64())?;
                if count != (file.sessions.len() + file.limits.len()) as u64 {
                    return Err(FormatError::Malformed {
                        at,
                        what: "the end record's count is not the records before it",
                    });
                }
                let left = bytes.len() - r.at;
                return if left == 0 {
                    Ok(file)
                } else {
                    Err(FormatError::Trailing(left))
                };
            }
            _ => {
                return Err(FormatError::Malformed {
                    at,
                    what: "unknown record kind",
                })
            }
        }
    }
}

fn session(payload: &[u8], at: usize) -> Result<SessionState, FormatError> {
    Reader::whole(payload, at, |p| {
        let id = p.string()?;
        let was_paired = match p.u8()? {
            0 => false,
            1 => true,
            _ => return Err(p.malformed("a flag that is neither 0 nor 1")),
        };
        let mut backlogs = Vec::new();
        for _ in 0..p.u16()? {
            let from = p.string()?;
            let messages = p.messages()?;
            backlogs.push(KeptState { from, messages });
        }
        let mut replays = Vec::new();
        for _ in 0..p.u16()? {
            let role = p.string()?;
            let numbered = p.u64()?;
            let accepted = p.u64()?;
            let last_from = p.string()?;
            let window = p.messages()?;
            if (window.len() as u64) > numbered {
                return Err(p.malformed("a window holding more messages than were numbered"));
            }
            replays.push(ReplayState {
                role,
                numbered,
                accepted,
                last_from,
                window,
            });
        }
        Ok(SessionState {
            id,
            was_paired,
            backlogs,
            replays,
        })
    })
}

fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Session ids and roles are bounded far below 64 KiB by admission.
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_messages(out: &mut Vec<u8>, messages: &[Vec<u8>]) {
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_le_bytes());
        out.extend_from_slice(m);
    }
}

/// Whether `m` is one whole message as the relay writes it to a client: unmasked server
/// frames, a data frame first, continuations after it, the last one (and only it) final.
/// A file that passed its checksum was written by a relay; this keeps a restored backlog
/// from ever writing anything else to a client.
pub fn is_whole_message(m: &[u8]) -> bool {
    let mut at = 0;
    let mut first = true;
    while at < m.len() {
        if at + 2 > m.len() {
            return false;
        }
        let (b0, b1) = (m[at], m[at + 1]);
        let (fin, rsv, op) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0f);
        let data = if first { op == 1 || op == 2 } else { op == 0 };
        if rsv != 0 || b1 & 0x80 != 0 || !data {
            return false;
        }
        let (len, head) = match b1 & 0x7f {
            126 => match m.get(at + 2..at + 4) {
                Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
                None => return false,
            },
            127 => match m.get(at + 2..at + 10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap()), 10),
                None => return false,
            },
            n => (n as u64, 2),
        };
        let end = (at as u64).saturating_add(head).saturating_add(len);
        if end > m.len() as u64 {
            return false;
        }
        at = end as usize;
        if fin {
            return at == m.len();
        }
        first = false;
    }
    false
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads `payload` (of the record at `at`) with `f`, which must use all of it.
    fn whole<T>(
        payload: &[u8],
        at: usize,
        f: impl FnOnce(&mut Reader) -> Result<T, FormatError>,
    ) -> Result<T, FormatError> {
        let mut p = Reader {
            bytes: payload,
            at: 0,
        };
        let out = f(&mut p).map_err(|e| match e {
            // Inside a record whose checksum held, a short field is a malformed record.
            FormatError::Torn(_) => FormatError::Malformed {
                at,
                what: "a field runs past its record",
            },
            FormatError::Malformed { what, .. } => FormatError::Malformed { at, what },
            e => e,
        })?;
        if p.at != payload.len() {
            return Err(FormatError::Malformed {
                at,
                what: "bytes left over in the record",
            });
        }
        Ok(out)
    }

    fn malformed(&self, what: &'static str) -> FormatError {
        FormatError::Malformed { at: self.at, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(FormatError::Torn(self.bytes.len()))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn string(&mut self) -> Result<String, FormatError> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.malformed("a name that is not UTF-8"))
    }

    fn messages(&mut self) -> Result<Vec<Vec<u8>>, FormatError> {
        let count = self.u32()? as usize;
        // Each message takes at least its 4-byte length: a count past that is a lie, and
        // must not size an allocation.
        if count > (self.bytes.len() - self.at) / 4 {
            return Err(self.malformed("a message count larger than its record"));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let n = self.u32()? as usize;
            let m = self.take(n)?;
            if !is_whole_message(m) {
                return Err(self.malformed("a kept message that is not whole server frames"));
            }
            out.push(m.to_vec());
        }
        Ok(out)
    }

    /// One record: its kind and payload, its checksum checked.
    fn record(&mut self) -> Result<(u8, &'a [u8]), FormatError> {
        let start = self.at;
        let kind = self.u8()?;
        let len = self.u32()? as usize;
        let payload = self.take(len)?;
        let crc = self.u32()?;
        if crc != crc32(&self.bytes[start..start + 5 + len]) {
            return Err(FormatError::Checksum(start));
        }
        Ok((kind, payload))
    }
}

#[cfg(test)]
mod tests;
