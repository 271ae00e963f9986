//! A TLS record layer of our own, for a connection whose handshake rustls ran in the process
//! a binary upgrade replaced (issue 25, docs/upgrade.md, "TLS connections"). rustls cannot be
//! given traffic keys it did not negotiate, and kernel TLS is not available everywhere, so a
//! connection whose keys crossed runs here: application data records sealed and opened with
//! `ring::aead` under the carried keys, IVs and sequence numbers.
//!
//! Suites: TLS 1.3 AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305; TLS 1.2 ECDHE with the
//! same three AEADs (an explicit 8-byte nonce with GCM, none with ChaCha20-Poly1305, and the
//! 13-byte additional data of RFC 5246). Nothing else is negotiated by the relay's rustls.
//!
//! What this layer cannot do, and what happens then: a key update (TLS 1.3 `KeyUpdate`) needs
//! the traffic secret, which extraction does not give, so a client's `KeyUpdate` ends the
//! connection with [`RecordError::KeyUpdate`] (the relay closes with 1012 under the current
//! key, so the client reconnects); a sequence number about to wrap, or past the AEAD's
//! confidentiality limit, ends it the same way ([`RecordError::Exhausted`]). Renegotiation
//! and every other handshake message are refused.
//!
//! I/O-free: bytes in ([`RecordLayer::ingest`]), plaintext out ([`RecordLayer::read_plain`]),
//! plaintext in ([`RecordLayer::seal`]), records out ([`RecordLayer::pending`],
//! [`RecordLayer::sent`]). `runtime::tls` drives it on a socket.
#![forbid(unsafe_code)]

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{CipherSuite, ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};
use std::io::IoSlice;
use zeroize::{Zeroize, Zeroizing};

/// The largest plaintext of a record (RFC 8446 5.1, RFC 5246 6.2.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// The largest ciphertext a TLS 1.3 record may carry (RFC 8446 5.2).
const MAX_CIPHERTEXT_13: usize = MAX_PLAINTEXT + 256;
/// The largest ciphertext a TLS 1.2 record may carry (RFC 5246 6.2.3).
const MAX_CIPHERTEXT_12: usize = MAX_PLAINTEXT + 2048;
const HEADER: usize = 5;
const TAG: usize = 16;
/// TLS 1.2 GCM's explicit nonce, sent in each record.
const EXPLICIT: usize = 8;
/// Records sealed but not yet sent past which `seal` takes nothing more (rustls's default
/// limit on its outgoing buffer, the same back-pressure the relay saw before).
pub const OUT_HIGH: usize = 64 * 1024;
/// AES-GCM's confidentiality limit in records (RFC 8446 5.5: 2^24.5; rustls updates the key
/// there, which this layer cannot: it ends the connection instead).
const AES_GCM_RECORDS: u64 = 23_726_566;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
const TLS12: u16 = 0x0303;
const TLS13: u16 = 0x0304;

/// Why the record layer ended a connection. Each is sticky: every read after it answers the
/// same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record larger than the protocol allows")]
    Oversized,
    #[error("record failed authentication")]
    BadRecordMac,
    #[error("malformed record")]
    Decode,
    #[error("unexpected record or message")]
    Unexpected,
    #[error("peer sent fatal alert {0}")]
    Alert(u8),
    #[error("peer asked for a key update, which carried keys cannot follow")]
    KeyUpdate,
    #[error("sequence numbers exhausted for these keys")]
    Exhausted,
}

impl RecordError {
    /// The alert this layer sends for it, if any (RFC 8446 6.2).
    fn alert(self) -> Option<u8> {
        match self {
            RecordError::Oversized => Some(22),
            RecordError::BadRecordMac => Some(20),
            RecordError::Decode => Some(50),
            RecordError::Unexpected => Some(10),
            RecordError::Alert(_) | RecordError::KeyUpdate | RecordError::Exhausted => None,
        }
    }

    /// The connection is sound but cannot go on under these keys: the relay closes it with
    /// 1012 so its client reconnects.
    pub fn wants_restart(self) -> bool {
        matches!(self, RecordError::KeyUpdate | RecordError::Exhausted)
    }
}

/// Why carried keys could not be taken up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarryError {
    #[error("a cipher suite this layer does not implement")]
    Suite,
    #[error("a protocol version this layer does not implement")]
    Version,
    #[error("malformed carried keys")]
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aead {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20,
}

impl Aead {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Aead::Aes128Gcm => &aead::AES_128_GCM,
            Aead::Aes256Gcm => &aead::AES_256_GCM,
            Aead::Chacha20 => &aead::CHACHA20_POLY1305,
        }
    }

    fn code(self) -> u8 {
        match self {
            Aead::Aes128Gcm => 1,
            Aead::Aes256Gcm => 2,
            Aead::Chacha20 => 3,
        }
    }

    fn of_code(c: u8) -> Option<Aead> {
        Some(match c {
            1 => Aead::Aes128Gcm,
            2 => Aead::Aes256Gcm,
            3 => Aead::Chacha20,
            _ => return None,
        })
    }

    /// Records one key may seal or open before it must change.
    fn record_limit(self) -> u64 {
        match self {
            Aead::Chacha20 => u64::MAX,
            _ => AES_GCM_RECORDS,
        }
    }
}

/// One direction's key, IV and next sequence number. The raw key stays (zeroized on drop)
/// so the state can cross the next upgrade too.
struct Direction {
    raw: Zeroizing<Vec<u8>>,
    key: LessSafeKey,
    iv: Zeroizing<[u8; 12]>,
    seq: u64,
}

impl Direction {
    fn new(aead: Aead, raw: &[u8], iv: &[u8], seq: u64) -> Result<Direction, CarryError> {
        let key = UnboundKey::new(aead.algorithm(), raw).map_err(|_| CarryError::Malformed)?;
        let iv: [u8; 12] = iv.try_into().map_err(|_| CarryError::Malformed)?;
        Ok(Direction {
            raw: Zeroizing::new(raw.to_vec()),
            key: LessSafeKey::new(key),
            iv: Zeroizing::new(iv),
            seq,
        })
    }

    fn nonce(&self) -> [u8; 12] {
        self.nonce_at(self.seq)
    }

    /// The IV with `seq` XORed into its last eight bytes (RFC 8446 5.3; TLS 1.2
    /// ChaCha20-Poly1305 and the explicit part of TLS 1.2 GCM alike).
    fn nonce_at(&self, seq: u64) -> [u8; 12] {
        let mut n = *self.iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    /// Refuses a sequence number past the suite's limit (or about to wrap).
    fn check(&self, aead: Aead) -> Result<(), RecordError> {
        if self.seq >= aead.record_limit() || self.seq == u64::MAX {
            return Err(RecordError::Exhausted);
        }
        Ok(())
    }

    /// Takes the next sequence number.
    fn next(&mut self, aead: Aead) -> Result<u64, RecordError> {
        self.check(aead)?;
        let s = self.seq;
        self.seq += 1;
        Ok(s)
    }
}

/// Traffic keys carried across an upgrade, encoded: only ever in memory and on the
/// handover's socketpair, wiped when dropped, never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Carried(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Carried(<{} secret bytes>)", self.0.len())
    }
}

/// One connection's record layer.
pub struct RecordLayer {
    version: u16,
    suite: u16,
    aead: Aead,
    tx: Direction,
    rx: Direction,
    /// Ciphertext received: from `head` on, records not yet opened; before it, plaintext
    /// of the last opened record not yet handed out (`plain`).
    inbuf: Vec<u8>,
    head: usize,
    plain: (usize, usize),
    /// Records sealed, sent up to `out_head`.
    out: Vec<u8>,
    out_head: usize,
    /// The peer's close_notify came (or the stream ended).
    eof: bool,
    failed: Option<RecordError>,
    /// The alert of a failure, queued once.
    alerted: bool,
}

impl RecordLayer {
    /// The layer for keys rustls extracted from a connection after its handshake.
    pub fn from_extracted(
        version: ProtocolVersion,
        suite: CipherSuite,
        s: ExtractedSecrets,
    ) -> Result<RecordLayer, CarryError> {
        let version = u16::from(version);
        if version != TLS12 && version != TLS13 {
            return Err(CarryError::Version);
        }
        let ((tx_seq, tx), (rx_seq, rx)) = (s.tx, s.rx);
        let (aead, tx_key, tx_iv) = parts(&tx)?;
        let (rx_aead, rx_key, rx_iv) = parts(&rx)?;
        if aead != rx_aead {
            return Err(CarryError::Suite);
        }
        Ok(RecordLayer::new(
            version,
            u16::from(suite),
            aead,
            Direction::new(aead, tx_key, tx_iv, tx_seq)?,
            Direction::new(aead, rx_key, rx_iv, rx_seq)?,
        ))
    }

    fn new(version: u16, suite: u16, aead: Aead, tx: Direction, rx: Direction) -> RecordLayer {
        RecordLayer {
            version,
            suite,
            aead,
            tx,
            rx,
            inbuf: Vec::new(),
            head: 0,
            plain: (0, 0),
            out: Vec::new(),
            out_head: 0,
            eof: false,
            failed: None,
            alerted: false,
        }
    }

    pub fn version(&self) -> ProtocolVersion {
        ProtocolVersion::from(self.version)
    }

    pub fn suite(&self) -> CipherSuite {
        CipherSuite::from(self.suite)
    }

    /// Nothing received and not handed out, nothing sealed and not sent, no end and no
    /// failure: the state [`carry`](Self::carry) describes whole.
    pub fn at_rest(&self) -> bool {
        self.inbuf.len() == self.head
            && self.plain.0 == self.plain.1
            && self.out_head == self.out.len()
            && !self.eof
            && self.failed.is_none()
    }

    /// The state to carry across the next upgrade; `None` unless [`at_rest`](Self::at_rest).
    ///
    /// ```text
    /// version u16 | suite u16 | aead u8 | key length u8 |
    /// tx: key | iv 12 | seq u64 | rx: key | iv 12 | seq u64      (integers little-endian)
    /// ```
    pub fn carry(&self) -> Option<Carried> {
        if !self.at_rest() {
            return None;
        }
        let mut b = Zeroizing::new(Vec::with_capacity(6 + 2 * (32 + 12 + 8)));
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.suite.to_le_bytes());
        b.push(self.aead.code());
        b.push(self.tx.raw.len() as u8);
        for d in [&self.tx, &self.rx] {
            b.extend_from_slice(&d.raw);
            b.extend_from_slice(&*d.iv);
            b.extend_from_slice(&d.seq.to_le_bytes());
        }
        Some(Carried(b))
    }

    /// The layer a [`carry`](Self::carry) describes.
    pub fn from_carried(c: &[u8]) -> Result<RecordLayer, CarryError> {
        let bad = CarryError::Malformed;
        if c.len() < 6 {
            return Err(bad);
        }
        let version = u16::from_le_bytes([c[0], c[1]]);
        let suite = u16::from_le_bytes([c[2], c[3]]);
        let aead = Aead::of_code(c[4]).ok_or(CarryError::Suite)?;
        let klen = usize::from(c[5]);
        if version != TLS12 && version != TLS13 {
            return Err(CarryError::Version);
        }
        if klen != aead.algorithm().key_len() || c.len() != 6 + 2 * (klen + 12 + 8) {
            return Err(bad);
        }
        let dir = |at: usize| -> Result<Direction, CarryError> {
            let key = &c[at..at + klen];
            let iv = &c[at + klen..at + klen + 12];
            let seq = u64::from_le_bytes(
                c[at + klen + 12..at + klen + 20]
                    .try_into()
                    .unwrap_or([0; 8]),
            );
            Direction::new(aead, key, iv, seq)
        };
        let tx = dir(6)?;
        let rx = dir(6 + klen + 20)?;
        Ok(RecordLayer::new(version, suite, aead, tx, rx))
    }

    /// The next record can be opened (or the end or a failure reported) without more bytes.
    pub fn has_buffered(&self) -> bool {
        if self.plain.0 < self.plain.1 || self.eof || self.failed.is_some() {
            return true;
        }
        let left = &self.inbuf[self.head..];
        if left.len() < HEADER {
            return false;
        }
        // A whole record, or a header already known to be refused.
        let len = usize::from(u16::from_be_bytes([left[3], left[4]]));
        left.len() >= HEADER + len || len > MAX_CIPHERTEXT_12
    }

    /// Takes received ciphertext.
    pub fn ingest(&mut self, bytes: &[u8]) {
        let keep = if self.plain.0 < self.plain.1 {
            self.plain.0
        } else {
            self.head
        };
        if keep > 0 {
            self.inbuf.drain(..keep);
            self.head -= keep;
            self.plain = if self.plain.0 < self.plain.1 {
                (self.plain.0 - keep, self.plain.1 - keep)
            } else {
                (0, 0)
            };
        }
        self.inbuf.extend_from_slice(bytes);
    }

    /// The stream ended without more bytes (FIN).
    pub fn ingest_eof(&mut self) {
        self.eof = true;
    }

    /// Hands `put` up to `room` bytes of plaintext, opening records as needed. `Ok(Some(n))`
    /// with `n > 0`: plaintext; `Ok(Some(0))`: the end (close_notify or FIN); `Ok(None)`:
    /// more ciphertext is needed.
    pub fn read_plain(
        &mut self,
        room: usize,
        put: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<usize>, RecordError> {
        let mut got = 0;
        loop {
            if self.plain.0 < self.plain.1 {
                let k = (self.plain.1 - self.plain.0).min(room - got);
                put(&self.inbuf[self.plain.0..self.plain.0 + k]);
                self.plain.0 += k;
                got += k;
                if got == room {
                    return Ok(Some(got));
                }
                continue;
            }
            if let Some(e) = self.failed {
                return if got > 0 { Ok(Some(got)) } else { Err(e) };
            }
            match self.open_next() {
                Ok(true) => {}
                Ok(false) if got > 0 => return Ok(Some(got)),
                Ok(false) if self.eof => return Ok(Some(0)),
                Ok(false) => return Ok(None),
                Err(e) => {
                    self.fail(e);
                    if got > 0 {
                        return Ok(Some(got));
                    }
                    return Err(e);
                }
            }
        }
    }

    fn fail(&mut self, e: RecordError) {
        self.failed = Some(e);
        if let (Some(alert), false) = (e.alert(), self.alerted) {
            self.alerted = true;
            let _ = self.seal_record(ALERT, &[&[2, alert]]);
        }
        // Nothing received after a failure is looked at again.
        self.inbuf = Vec::new();
        self.head = 0;
        self.plain = (0, 0);
    }

    /// Opens the next whole record held, if any: `Ok(true)` when it was opened (its
    /// plaintext, possibly none, is in `plain`).
    fn open_next(&mut self) -> Result<bool, RecordError> {
        if self.eof && self.inbuf.len() == self.head {
            return Ok(false);
        }
        let left = &self.inbuf[self.head..];
        if left.len() < HEADER {
            return Ok(false);
        }
        let len = usize::from(u16::from_be_bytes([left[3], left[4]]));
        let max = if self.version == TLS13 {
            MAX_CIPHERTEXT_13
        } else {
            MAX_CIPHERTEXT_12
        };
        // Refused on the header, before any of it is waited for or held.
        if len > max {
            return Err(RecordError::Oversized);
        }
        if left[1] != 3 {
            return Err(RecordError::Decode);
        }
        if left.len() < HEADER + len {
            return Ok(false);
        }
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&left[..HEADER]);
        let start = self.head + HEADER;
        self.head = start + len;
        let (kind, from, to) = if self.version == TLS13 {
            self.open13(header, start, len)?
        } else {
            self.open12(header, start, len)?
        };
        match kind {
            APPLICATION_DATA => self.plain = (from, to),
            ALERT => self.alert(from, to)?,
            HANDSHAKE => {
                let first = self.inbuf.get(from).copied();
                return Err(if self.version == TLS13 && first == Some(KEY_UPDATE) {
                    RecordError::KeyUpdate
                } else {
                    RecordError::Unexpected
                });
            }
            _ => return Err(RecordError::Unexpected),
        }
        Ok(true)
    }

    fn alert(&mut self, from: usize, to: usize) -> Result<(), RecordError> {
        if to - from != 2 {
            return Err(RecordError::Decode);
        }
        match self.inbuf[from + 1] {
            CLOSE_NOTIFY => {
                self.eof = true;
                self.inbuf.truncate(self.head);
                Ok(())
            }
            // A warning that changes nothing (RFC 8446 6.1).
            USER_CANCELED => Ok(()),
            d => Err(RecordError::Alert(d)),
        }
    }

    /// A TLS 1.3 record: additional data is the header, the content type is the last
    /// non-zero byte of the plaintext (padding before it).
    fn open13(
        &mut self,
        header: [u8; HEADER],
        start: usize,
        len: usize,
    ) -> Result<(u8, usize, usize), RecordError> {
        if header[0] != APPLICATION_DATA {
            return Err(RecordError::Unexpected);
        }
        if len < TAG + 1 {
            return Err(RecordError::Decode);
        }
        self.rx.check(self.aead)?;
        let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
        let body = &mut self.inbuf[start..start + len];
        let n = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(header), body)
            .map_err(|_| RecordError::BadRecordMac)?
            .len();
        self.rx.seq += 1;
        let inner = &self.inbuf[start..start + n];
        let Some(at) = inner.iter().rposition(|&b| b != 0) else {
            return Err(RecordError::Unexpected);
        };
        if at > MAX_PLAINTEXT {
            return Err(RecordError::Oversized);
        }
        Ok((inner[at], start, start + at))
    }

    /// A TLS 1.2 record: additional data is the sequence number, type, version and the
    /// plaintext's length; GCM carries its nonce's last eight bytes in front.
    fn open12(
        &mut self,
        header: [u8; HEADER],
        start: usize,
        len: usize,
    ) -> Result<(u8, usize, usize), RecordError> {
        let explicit = if self.aead == Aead::Chacha20 {
            0
        } else {
            EXPLICIT
        };
        if len < explicit + TAG {
            return Err(RecordError::Decode);
        }
        let plain_len = len - explicit - TAG;
        if plain_len > MAX_PLAINTEXT {
            return Err(RecordError::Oversized);
        }
        self.rx.check(self.aead)?;
        let nonce = if explicit > 0 {
            let mut n = [0u8; 12];
            n[..4].copy_from_slice(&self.rx.iv[..4]);
            n[4..].copy_from_slice(&self.inbuf[start..start + EXPLICIT]);
            n
        } else {
            self.rx.nonce()
        };
        let aad = aad12(self.rx.seq, header[0], plain_len);
        let body = &mut self.inbuf[start + explicit..start + len];
        self.rx
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| RecordError::BadRecordMac)?;
        self.rx.seq += 1;
        let from = start + explicit;
        Ok((header[0], from, from + plain_len))
    }

    /// Seals as much of `bufs` as fits under [`OUT_HIGH`] into application data records;
    /// returns the plaintext bytes taken.
    pub fn seal(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, RecordError> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let room = OUT_HIGH.saturating_sub(self.out.len() - self.out_head);
        let mut take = total.min(room);
        let taken = take;
        let mut pieces = bufs.iter().map(|b| &b[..]).filter(|b| !b.is_empty());
        let mut cur: &[u8] = &[];
        while take > 0 {
            let n = take.min(MAX_PLAINTEXT);
            let mut chunk: Vec<&[u8]> = Vec::with_capacity(2);
            let mut need = n;
            while need > 0 {
                if cur.is_empty() {
                    cur = pieces.next().unwrap_or(&[]);
                    if cur.is_empty() {
                        break;
                    }
                }
                let k = need.min(cur.len());
                chunk.push(&cur[..k]);
                cur = &cur[k..];
                need -= k;
            }
            self.seal_record(APPLICATION_DATA, &chunk)?;
            take -= n;
        }
        Ok(taken)
    }

    /// Queues the close_notify alert.
    pub fn close_notify(&mut self) {
        let _ = self.seal_record(ALERT, &[&[1, CLOSE_NOTIFY]]);
    }

    fn seal_record(&mut self, kind: u8, pieces: &[&[u8]]) -> Result<(), RecordError> {
        if self.out_head == self.out.len() {
            self.out.clear();
            self.out_head = 0;
        }
        let seq = self.tx.next(self.aead)?;
        let plain_len: usize = pieces.iter().map(|p| p.len()).sum();
        let at = self.out.len();
        if self.version == TLS13 {
            let len = plain_len + 1 + TAG;
            self.out.push(APPLICATION_DATA);
            self.out.extend_from_slice(&TLS12.to_be_bytes());
            self.out.extend_from_slice(&(len as u16).to_be_bytes());
            for p in pieces {
                self.out.extend_from_slice(p);
            }
            self.out.push(kind);
            let mut header = [0u8; HEADER];
            header.copy_from_slice(&self.out[at..at + HEADER]);
            let nonce = Nonce::assume_unique_for_key(self.tx.nonce_at(seq));
            let tag = self
                .tx
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.out[at + HEADER..])
                .map_err(|_| RecordError::Exhausted)?;
            self.out.extend_from_slice(tag.as_ref());
        } else {
            let explicit = if self.aead == Aead::Chacha20 {
                0
            } else {
                EXPLICIT
            };
            let len = explicit + plain_len + TAG;
            self.out.push(kind);
            self.out.extend_from_slice(&TLS12.to_be_bytes());
            self.out.extend_from_slice(&(len as u16).to_be_bytes());
            let nonce = self.tx.nonce_at(seq);
            if explicit > 0 {
                self.out.extend_from_slice(&nonce[4..]);
            }
            for p in pieces {
                self.out.extend_from_slice(p);
            }
            let aad = aad12(seq, kind, plain_len);
            let tag = self
                .tx
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut self.out[at + HEADER + explicit..],
                )
                .map_err(|_| RecordError::Exhausted)?;
            self.out.extend_from_slice(tag.as_ref());
        }
        Ok(())
    }

    /// Sealed records not yet sent.
    pub fn pending(&self) -> &[u8] {
        &self.out[self.out_head..]
    }

    /// `n` bytes of [`pending`](Self::pending) were sent.
    pub fn sent(&mut self, n: usize) {
        self.out_head = (self.out_head + n).min(self.out.len());
        if self.out_head == self.out.len() {
            self.out.clear();
            self.out_head = 0;
            // A burst's buffer is not kept by an idle connection.
            if self.out.capacity() > OUT_HIGH {
                self.out = Vec::new();
            }
        }
    }

    /// Gives back the receive buffer's memory once it holds nothing (an idle connection
    /// keeps no buffer of ours).
    pub fn trim(&mut self) {
        if self.inbuf.len() == self.head && self.plain.0 == self.plain.1 {
            self.inbuf = Vec::new();
            self.head = 0;
            self.plain = (0, 0);
        }
    }
}

impl Drop for RecordLayer {
    fn drop(&mut self) {
        // Plaintext that passed through stays in these buffers otherwise.
        self.inbuf.zeroize();
    }
}

fn aad12(seq: u64, kind: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = kind;
    a[9..11].copy_from_slice(&TLS12.to_be_bytes());
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

fn parts(s: &ConnectionTrafficSecrets) -> Result<(Aead, &[u8], &[u8]), CarryError> {
    Ok(match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
            (Aead::Aes128Gcm, key.as_ref(), iv.as_ref())
        }
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            (Aead::Aes256Gcm, key.as_ref(), iv.as_ref())
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Aead::Chacha20, key.as_ref(), iv.as_ref())
        }
        _ => return Err(CarryError::Suite),
    })
}

#[cfg(test)]
mod tests;
