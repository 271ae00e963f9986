//! The messages of the binary upgrade's unix socket (docs/upgrade.md, "The upgrade's wire
//! format"), without I/O. Each message is one SOCK_SEQPACKET datagram, so a message is read
//! whole or not at all; descriptors ride beside a message (SCM_RIGHTS), at most
//! [`MAX_FDS_PER_MESSAGE`] each.
//!
//! ```text
//! message: magic "RRUP" | version u16 | kind u8 | payload
//! hello    (old -> new) workers u32 | public u16 | admin u8 | internal u16 | tls u16 |
//!                       upgrades u64 | failed u64 | handed over u64 (the old one's totals)
//! fds      (either way) count u16                         (+ `count` descriptors)
//! taken    (new -> old) workers u32
//! share    (old -> new) worker u32 | bytes u64 | fds u32  (then `chunk`s and `fds`)
//! chunk    (old -> new) bytes
//! holding  (new -> old) connections u64
//! released (old -> new) (empty)
//! failed   (either way) reason, UTF-8
//! ```
//! Integers are little-endian. A reader refuses a message of another version whole: the
//! old process never guesses at what a newer build meant, and the reverse.

/// The first bytes of every message.
pub const MAGIC: [u8; 4] = *b"RRUP";
/// The version this build speaks. Both processes must speak the same one.
pub const VERSION: u16 = 1;
/// Descriptors sent beside one message: well under the kernel's SCM_MAX_FD (253).
pub const MAX_FDS_PER_MESSAGE: usize = 200;
/// Bytes of a share sent per `chunk` message: well under a unix socket's send buffer.
pub const CHUNK_BYTES: usize = 60 * 1024;
/// The largest message read: a chunk and its header.
pub const MAX_MESSAGE_BYTES: usize = CHUNK_BYTES + 64;

pub use crate::stats::upgrade::Totals;

const HEADER: usize = MAGIC.len() + 2 + 1;

/// How many listeners of each kind a `hello` carries, in this order, in its `fds` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerCounts {
    pub public: u16,
    pub admin: u8,
    pub internal: u16,
    pub tls: u16,
}

impl ListenerCounts {
    pub fn total(&self) -> usize {
        self.public as usize + self.admin as usize + self.internal as usize + self.tls as usize
    }
}

/// One message of the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello {
        workers: u32,
        listeners: ListenerCounts,
        totals: Totals,
    },
    Fds {
        count: u16,
    },
    Taken {
        workers: u32,
    },
    Share {
        worker: u32,
        bytes: u64,
        fds: u32,
    },
    Chunk(Vec<u8>),
    Holding {
        connections: u64,
    },
    Released,
    Failed(String),
}

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not an upgrade message (bad magic)")]
    Foreign,
    #[error("upgrade format version {0}, this build speaks {VERSION}")]
    Version(u16),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("message kind {0} cut short or too long")]
    Length(u8),
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => 1,
            Message::Fds { .. } => 2,
            Message::Taken { .. } => 3,
            Message::Share { .. } => 4,
            Message::Chunk(_) => 5,
            Message::Holding { .. } => 6,
            Message::Released => 7,
            Message::Failed(_) => 8,
        }
    }

    /// The message's bytes, in this build's version.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(VERSION)
    }

    /// The message's bytes as version `version` would frame them (tests of refusal).
    pub fn encode_as(&self, version: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 16);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.push(self.kind());
        match self {
            Message::Hello {
                workers,
                listeners,
                totals,
            } => {
                out.extend_from_slice(&workers.to_le_bytes());
                out.extend_from_slice(&listeners.public.to_le_bytes());
                out.push(listeners.admin);
                out.extend_from_slice(&listeners.internal.to_le_bytes());
                out.extend_from_slice(&listeners.tls.to_le_bytes());
                for n in [totals.upgrades, totals.failed, totals.handed_over] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
            Message::Fds { count } => out.extend_from_slice(&count.to_le_bytes()),
            Message::Taken { workers } => out.extend_from_slice(&workers.to_le_bytes()),
            Message::Share { worker, bytes, fds } => {
                out.extend_from_slice(&worker.to_le_bytes());
                out.extend_from_slice(&bytes.to_le_bytes());
                out.extend_from_slice(&fds.to_le_bytes());
            }
            Message::Chunk(b) => out.extend_from_slice(b),
            Message::Holding { connections } => out.extend_from_slice(&connections.to_le_bytes()),
            Message::Released => {}
            Message::Failed(why) => out.extend_from_slice(why.as_bytes()),
        }
        out
    }

    /// Reads one whole message.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() < HEADER || bytes[..MAGIC.len()] != MAGIC {
            return Err(WireError::Foreign);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let kind = bytes[6];
        let mut r = Fields {
            rest: &bytes[HEADER..],
            kind,
        };
        let m = match kind {
            1 => Message::Hello {
                workers: r.u32()?,
                listeners: ListenerCounts {
                    public: r.u16()?,
                    admin: r.u8()?,
                    internal: r.u16()?,
                    tls: r.u16()?,
                },
                totals: Totals {
                    upgrades: r.u64()?,
                    failed: r.u64()?,
                    handed_over: r.u64()?,
                },
            },
            2 => Message::Fds { count: r.u16()? },
            3 => Message::Taken { workers: r.u32()? },
            4 => Message::Share {
                worker: r.u32()?,
                bytes: r.u64()?,
                fds: r.u32()?,
            },
            5 => Message::Chunk(std::mem::take(&mut r.rest).to_vec()),
            6 => Message::Holding {
                connections: r.u64()?,
            },
            7 => Message::Released,
            8 => Message::Failed(String::from_utf8_lossy(std::mem::take(&mut r.rest)).into()),
            k => return Err(WireError::Kind(k)),
        };
        if !r.rest.is_empty() {
            return Err(WireError::Length(kind));
        }
        Ok(m)
    }
}

struct Fields<'a> {
    rest: &'a [u8],
    kind: u8,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        if self.rest.len() < N {
            return Err(WireError::Length(self.kind));
        }
        let (head, tail) = self.rest.split_at(N);
        self.rest = tail;
        Ok(head.try_into().expect("split at N"))
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        self.take().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Hello {
                workers: 3,
                listeners: ListenerCounts {
                    public: 3,
                    admin: 1,
                    internal: 0,
                    tls: 3,
                },
                totals: Totals {
                    upgrades: 4,
                    failed: 1,
                    handed_over: 1 << 33,
                },
            },
            Message::Fds { count: 200 },
            Message::Taken { workers: 3 },
            Message::Share {
                worker: 2,
                bytes: 1 << 40,
                fds: 70_000,
            },
            Message::Chunk(vec![7; 1000]),
            Message::Chunk(Vec::new()),
            Message::Holding { connections: 12 },
            Message::Released,
            Message::Failed("worker count differs: 2 here, 4 there".into()),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all() {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    /// A message cut anywhere is refused, never read as another (a chunk or a reason has no
    /// length of its own: the datagram's end is theirs, so cutting one only shortens it).
    #[test]
    fn a_cut_message_is_refused() {
        for m in all() {
            if matches!(
                m,
                Message::Chunk(_) | Message::Failed(_) | Message::Released
            ) {
                continue;
            }
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(Message::decode(&long), Err(WireError::Length(m.kind())));
        }
    }

    #[test]
    fn another_version_or_a_foreign_message_is_refused() {
        let m = Message::Taken { workers: 1 };
        assert_eq!(
            Message::decode(&m.encode_as(VERSION + 1)),
            Err(WireError::Version(VERSION + 1))
        );
        assert_eq!(Message::decode(&m.encode_as(0)), Err(WireError::Version(0)));
        assert_eq!(Message::decode(b"GET / HTTP/1.1"), Err(WireError::Foreign));
        let mut unknown = m.encode();
        unknown[6] = 99;
        assert_eq!(Message::decode(&unknown), Err(WireError::Kind(99)));
    }

    #[test]
    fn a_full_chunk_fits_the_largest_message() {
        let m = Message::Chunk(vec![0; CHUNK_BYTES]);
        assert!(m.encode().len() <= MAX_MESSAGE_BYTES);
    }
}
