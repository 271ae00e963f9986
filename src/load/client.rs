//! A small WebSocket client on monoio for the load generator, built on the crate's own codec.
//!
//! * The upgrade request is written by hand and the answer must be `101` with the right
//!   `Sec-WebSocket-Accept`. In raw mode there is no upgrade at all: the client sends one line
//!   naming its session and then speaks WebSocket frames straight away (for a plain TCP
//!   forwarder that pairs connections by that line).
//! * Every frame the client sends is masked with a fresh mask from a tiny xorshift generator.
//! * The reader accepts masked and unmasked frames alike (so it works through a byte forwarder
//!   whose other end is another client) and parses them incrementally from one read buffer: a
//!   payload is consumed as it arrives, only the first 16 bytes of a message are kept, and
//!   nothing is allocated per message. A header cut by a read is moved to the front of the
//!   buffer (at most 13 bytes).
//! * Over `wss://` the same frames go through TLS (`crate::tls::client`): the reader takes
//!   plaintext into its buffer from the TLS half, the writer hands its batch to the TLS half.
//!   A plain connection pays nothing for it but a branch per read and per write.

use crate::tls::client::{self as tls, ClientTls, HandshakeError, TlsReader, TlsWriter};
use crate::ws::client::{self as handshake, encode_client_frame, UpgradeAnswerError};
pub use crate::ws::client::{MaskSource, ProtocolError, Rng};
use crate::ws::frame::{encode_header, parse_header, OpCode, Sender, MAX_HEADER_LEN};
use crate::ws::mask::apply_mask;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Bytes of every load message that carry the sequence number and the send timestamp.
pub const STAMP_LEN: usize = 16;
/// Largest response head accepted for the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// How the client reaches its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP upgrade to WebSocket (a relay).
    WebSocket,
    /// No upgrade: one line `<path>\n`, then frames (a plain TCP forwarder).
    Raw,
}

/// Where connections go.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header (`host:port` as in the URL).
    pub host: String,
    /// Prepended to every route (a base path from the URL, without a trailing slash).
    pub prefix: String,
    pub transport: Transport,
    /// `wss://`: TLS under the WebSocket (or under the raw line and frames).
    pub tls: Option<ClientTls>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("upgrade refused: {0}")]
    Refused(String),
    #[error("bad upgrade answer: {0}")]
    BadAnswer(&'static str),
    #[error("timed out")]
    Timeout,
    #[error("timed out (TLS handshake and upgrade: is the port a TLS one?)")]
    TlsTimeout,
    #[error(transparent)]
    Tls(#[from] HandshakeError),
}

/// A connected client: its two halves and a duplicate of the socket, kept so that the
/// connection can be shut down from outside whatever its halves are waiting for.
pub struct Connection {
    pub reader: FrameReader,
    pub writer: FrameWriter,
    pub kill: std::net::TcpStream,
    /// How long each step of the setup took.
    pub setup: Setup,
}

/// The steps of setting up a connection, timed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// The TCP connect.
    pub tcp: Duration,
    /// The TLS handshake (`None` without TLS).
    pub tls: Option<Duration>,
    /// The TLS version negotiated (`"1.3"`, `"1.2"`).
    pub tls_version: Option<&'static str>,
    /// The handshake resumed a session (`--tls-resume`).
    pub tls_resumed: bool,
    /// From the upgrade request to its whole answer (or the raw line written).
    pub upgrade: Duration,
}

/// The read side's transport.
enum ReadIo {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(TlsReader<OwnedReadHalf<TcpStream>>),
}

/// The write side's transport.
enum WriteIo {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(TlsWriter<OwnedWriteHalf<TcpStream>>),
}

/// Starts a non-blocking connect to `addr`, from `source` (port chosen by the kernel) when
/// given. The connection is usually still in progress when this returns.
///
/// With a source address the socket is bound with `IP_BIND_ADDRESS_NO_PORT`, so the port is
/// picked at `connect` for the whole 4-tuple rather than at `bind` for the address alone. A
/// client that opens connections in a tight loop then reuses ports whose earlier connection
/// is in TIME_WAIT (where `net.ipv4.tcp_tw_reuse` allows it, as it does on loopback by
/// default). Without it, `bind` searches for a port that no socket on the address holds,
/// TIME_WAIT included: that search grows with every closed connection, burns the client's
/// CPU (measured: 1,300 attempts/s instead of 3,300, and the honest latency of the same
/// client 25 times worse) and fails once the ~28,000 ephemeral ports are taken.
pub(crate) fn start_connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<std::net::TcpStream, ClientError> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let err = |source| ClientError::Connect { addr, source };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.set_nodelay(true).map_err(err)?;
    if let Some(ip) = source {
        if ip.is_ipv4() {
            // Best effort: without it, binding still works, ports just run out sooner.
            let _ = crate::runtime::socket::set_bind_address_no_port(&s);
        }
        s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))
            .map_err(err)?;
    }
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(err(e)),
    }
    Ok(s.into())
}

/// Opens a TCP connection without blocking the runtime: a non-blocking connect, then a wait
/// for writability, then the socket's pending error.
async fn open(addr: SocketAddr) -> Result<(TcpStream, std::net::TcpStream), ClientError> {
    let err = |source| ClientError::Connect { addr, source };
    let std_stream = start_connect(addr, None)?;
    let kill = std_stream.try_clone().map_err(err)?;
    let stream = TcpStream::from_std(std_stream).map_err(err)?;
    stream.writable(false).await.map_err(err)?;
    if let Some(e) = kill.take_error().map_err(err)? {
        return Err(err(e));
    }
    Ok((stream, kill))
}

/// An HTTP upgrade request for `route` with a fresh key; returns the request and the key.
pub(crate) fn upgrade_request(target: &Target, route: &str) -> (String, String) {
    let key = handshake::new_key();
    let path = format!("{}{}", target.prefix, route);
    (
        handshake::upgrade_request(&target.host, &path, &key, &[]),
        key,
    )
}

/// Connects to `target` on `route` (e.g. `/v1/relay/x`) and finishes the upgrade (or sends the
/// raw prefix line). `read_capacity` is the size of the connection's read buffer.
pub async fn connect(
    target: &Target,
    route: &str,
    read_capacity: usize,
) -> Result<Connection, ClientError> {
    let started = Instant::now();
    let (stream, kill) = open(target.addr).await?;
    let mut setup = Setup {
        tcp: started.elapsed(),
        ..Setup::default()
    };
    let (r, w) = stream.into_split();
    let (r, w) = match &target.tls {
        None => (ReadIo::Plain(r), WriteIo::Plain(w)),
        Some(t) => {
            let started = Instant::now();
            let (r, w) = tls::connect(t, r, w).await?;
            setup.tls = Some(started.elapsed());
            setup.tls_version = w.version();
            setup.tls_resumed = w.resumed();
            (ReadIo::Tls(r), WriteIo::Tls(w))
        }
    };
    let started = Instant::now();
    let mut reader = FrameReader::new(r, read_capacity.max(MAX_RESPONSE_HEAD * 2));
    let mut writer = FrameWriter::new(w, MaskSource::new());
    match target.transport {
        Transport::Raw => {
            writer.buf.extend_from_slice(target.prefix.as_bytes());
            writer.buf.extend_from_slice(route.as_bytes());
            writer.buf.push(b'\n');
            writer.flush().await?;
        }
        Transport::WebSocket => {
            let (request, key) = upgrade_request(target, route);
            writer.buf.extend_from_slice(request.as_bytes());
            writer.flush().await?;
            let head_len = reader.read_head().await?;
            check_upgrade(&reader.buf[..head_len], &key)?;
            reader.pos = head_len;
        }
    }
    setup.upgrade = started.elapsed();
    Ok(Connection {
        reader,
        writer,
        kill,
        setup,
    })
}

/// Checks the upgrade answer: status 101, `Upgrade: websocket`, the expected accept key.
fn check_upgrade(head: &[u8], key: &str) -> Result<(), ClientError> {
    handshake::check_answer(head, key).map_err(|e| match e {
        UpgradeAnswerError::Refused { line, .. } => ClientError::Refused(line),
        UpgradeAnswerError::Bad(what) => ClientError::BadAnswer(what),
    })
}

/// A control frame's payload (at most 125 bytes), kept inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub bytes: [u8; 125],
    pub len: u8,
}

impl Control {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// What the reader found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A whole data message: its total length and its first (up to) 16 bytes, unmasked.
    Message {
        len: u64,
        stamp: [u8; STAMP_LEN],
    },
    Ping(Control),
    Pong,
    /// A close frame and its code (1005 when it had none).
    Close(u16),
}

/// Incremental frame parser: it remembers where it is in a frame and a message, and works on
/// whatever bytes the caller's buffer holds, so it needs no I/O to test.
#[derive(Debug, Clone)]
pub struct FrameParser {
    /// Inside a frame's payload: bytes still to come.
    in_payload: bool,
    left: u64,
    frame_mask: Option<[u8; 4]>,
    /// Position in the current frame's payload (for the mask's rotation).
    frame_offset: usize,
    frame_op: OpCode,
    frame_fin: bool,
    /// The data message being received (it may span frames).
    in_message: bool,
    /// It is text: the load only ever sends binary, so a text message is the relay's event
    /// (`--acks`), read and not counted.
    msg_text: bool,
    msg_len: u64,
    stamp: [u8; STAMP_LEN],
    control: Control,
}

impl Default for FrameParser {
    fn default() -> Self {
        FrameParser {
            in_payload: false,
            left: 0,
            frame_mask: None,
            frame_offset: 0,
            frame_op: OpCode::Binary,
            frame_fin: true,
            in_message: false,
            msg_text: false,
            msg_len: 0,
            stamp: [0; STAMP_LEN],
            control: Control {
                bytes: [0; 125],
                len: 0,
            },
        }
    }
}

impl FrameParser {
    /// The next complete event in `buf[*pos..]`, advancing `pos` over what it consumed, or
    /// `None` when more bytes are needed. Payload bytes are consumed as they come; a header
    /// is consumed only once whole, so the caller keeps `buf[*pos..]` for the next call.
    pub fn next_event(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
    ) -> Result<Option<Event>, ProtocolError> {
        loop {
            if !self.in_payload && !self.begin_frame(buf, pos)? {
                return Ok(None);
            }
            let n = self.left.min((buf.len() - *pos) as u64) as usize;
            self.take_payload(&buf[*pos..*pos + n]);
            *pos += n;
            if self.left > 0 {
                return Ok(None);
            }
            self.in_payload = false;
            // The event a complete frame makes is built here, in the return value: a step
            // returning it would copy the 130-byte `Event` once more per message.
            match self.frame_op {
                OpCode::Ping => return Ok(Some(Event::Ping(self.control))),
                OpCode::Pong => return Ok(Some(Event::Pong)),
                OpCode::Close => return Ok(Some(Event::Close(self.close_code()))),
                _ if self.frame_fin && self.msg_text => self.in_message = false,
                _ if self.frame_fin => {
                    self.in_message = false;
                    return Ok(Some(Event::Message {
                        len: self.msg_len,
                        stamp: self.stamp,
                    }));
                }
                // A message's earlier frame: on to the next.
                _ => {}
            }
        }
    }

    /// Reads the next frame's header at `buf[*pos..]` and sets up its payload; `false` when
    /// the header is not whole yet (nothing consumed). Checks the message sequence here, so
    /// the payload steps need not.
    #[inline]
    fn begin_frame(&mut self, buf: &[u8], pos: &mut usize) -> Result<bool, ProtocolError> {
        let avail = &buf[*pos..];
        if avail.len() < 2 {
            return Ok(false);
        }
        // Either side's frames are fine: a relay's are unmasked, a peer's through a byte
        // forwarder are masked.
        let from = if avail[1] & 0x80 != 0 {
            Sender::Client
        } else {
            Sender::Server
        };
        let Some(h) = parse_header(avail, from)? else {
            return Ok(false);
        };
        *pos += h.header_len;
        match h.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.in_message {
                    return Err(ProtocolError::Interleaved);
                }
                self.in_message = true;
                self.msg_text = h.opcode == OpCode::Text;
                self.msg_len = 0;
                self.stamp = [0; STAMP_LEN];
            }
            OpCode::Continuation => {
                if !self.in_message {
                    return Err(ProtocolError::StrayContinuation);
                }
            }
            _ => self.control.len = 0,
        }
        self.in_payload = true;
        self.left = h.payload_len;
        self.frame_mask = h.mask;
        self.frame_offset = 0;
        self.frame_op = h.opcode;
        self.frame_fin = h.fin;
        Ok(true)
    }

    /// Consumes the part of the current frame's payload in `bytes`: a control frame's is kept
    /// (its close code or ping payload is needed), a data frame's only as far as the stamp,
    /// in a copy; the rest is skipped without touching it.
    #[inline]
    fn take_payload(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        if self.frame_op.is_control() {
            let at = self.control.len as usize;
            let dst = &mut self.control.bytes[at..at + n];
            dst.copy_from_slice(bytes);
            if let Some(m) = self.frame_mask {
                apply_mask(dst, m, self.frame_offset);
            }
            self.control.len += n as u8;
        } else {
            let at = self.msg_len.min(STAMP_LEN as u64) as usize;
            let take = (STAMP_LEN - at).min(n);
            if take > 0 {
                let dst = &mut self.stamp[at..at + take];
                dst.copy_from_slice(&bytes[..take]);
                if let Some(m) = self.frame_mask {
                    apply_mask(dst, m, self.frame_offset);
                }
            }
            self.msg_len += n as u64;
        }
        self.left -= n as u64;
        self.frame_offset += n;
    }

    /// A close frame's code, 1005 when it carried none.
    fn close_code(&self) -> u16 {
        let p = self.control.payload();
        if p.len() >= 2 {
            u16::from_be_bytes([p[0], p[1]])
        } else {
            1005
        }
    }
}

/// The read side of a connection: one reusable buffer and the parser over it.
pub struct FrameReader {
    io: ReadIo,
    /// Bytes read so far; `buf.len()` is where the next read goes.
    buf: Vec<u8>,
    /// Parse position in `buf`.
    pos: usize,
    parser: FrameParser,
}

impl FrameReader {
    fn new(io: ReadIo, capacity: usize) -> FrameReader {
        FrameReader {
            io,
            buf: Vec::with_capacity(capacity.max(4096)),
            pos: 0,
            parser: FrameParser::default(),
        }
    }

    /// Reads more bytes after what is buffered; `Ok(0)` is the end of the stream.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            // Payload is always consumed whole, so what is left is a cut header (< 14 bytes).
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.pos = 0;
        }
        match &mut self.io {
            ReadIo::Plain(io) => {
                let buf = std::mem::take(&mut self.buf);
                let end = buf.len();
                let (res, slice) = io.read(buf.slice_mut(end..)).await;
                self.buf = slice.into_inner();
                res
            }
            ReadIo::Tls(io) => io.read(&mut self.buf).await,
        }
    }

    /// Reads until the end of an HTTP response head; returns its length.
    async fn read_head(&mut self) -> Result<usize, ClientError> {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(i + 4);
            }
            if self.buf.len() >= MAX_RESPONSE_HEAD {
                return Err(ClientError::BadAnswer("response head too large"));
            }
            if self.read_more().await? == 0 {
                return Err(ClientError::BadAnswer(
                    "connection closed during the upgrade",
                ));
            }
        }
    }

    /// The next complete event in what has been read, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        self.parser.next_event(&self.buf, &mut self.pos)
    }
}

/// Builds masked frames into one reusable buffer and writes them out in one go.
pub struct FrameWriter {
    io: WriteIo,
    buf: Vec<u8>,
    masks: MaskSource,
}

impl FrameWriter {
    fn new(io: WriteIo, masks: MaskSource) -> FrameWriter {
        FrameWriter {
            io,
            buf: Vec::with_capacity(64 << 10),
            masks,
        }
    }

    /// Bytes waiting for `flush`.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Appends a binary message of `size` bytes (at least 16) carrying `seq` and `ts` in its
    /// first 16 bytes (little endian), zeros after, masked.
    pub fn push_message(&mut self, size: usize, seq: u64, ts: u64) {
        debug_assert!(size >= STAMP_LEN);
        let mask = self.masks.mask();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut hdr, true, OpCode::Binary, size as u64, Some(mask));
        self.buf.extend_from_slice(&hdr[..n]);
        let start = self.buf.len();
        self.buf.resize(start + size, 0);
        let payload = &mut self.buf[start..];
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        payload[8..16].copy_from_slice(&ts.to_le_bytes());
        apply_mask(payload, mask, 0);
    }

    /// Appends a masked control frame (payload at most 125 bytes).
    pub fn push_control(&mut self, op: OpCode, payload: &[u8]) {
        encode_client_frame(&mut self.buf, op, payload, self.masks.mask());
    }

    /// Appends a close frame with `code`.
    pub fn push_close(&mut self, code: u16) {
        self.push_control(OpCode::Close, &code.to_be_bytes());
    }

    /// Writes everything pending.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match &mut self.io {
            WriteIo::Plain(io) => {
                let buf = std::mem::take(&mut self.buf);
                let (res, mut buf) = io.write_all(buf).await;
                buf.clear();
                self.buf = buf;
                res.map(|_| ())
            }
            WriteIo::Tls(io) => {
                let res = io.write_all(&self.buf).await;
                self.buf.clear();
                res
            }
        }
    }

    /// Ends TLS with its close_notify (nothing without TLS); best effort.
    pub async fn close_tls(&mut self) {
        if let WriteIo::Tls(io) = &mut self.io {
            io.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test stream should decode to.
    #[derive(Debug, PartialEq)]
    enum Want {
        Message(u64, Vec<u8>),
        Ping(Vec<u8>),
        Close(u16),
    }

    fn frame(out: &mut Vec<u8>, fin: bool, op: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut hdr, fin, op, payload.len() as u64, mask);
        out.extend_from_slice(&hdr[..n]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(m) = mask {
            apply_mask(&mut out[start..], m, 0);
        }
    }

    /// Messages of varied sizes, masked or not, some split into fragments with a ping in
    /// between, then a close.
    fn stream(seed: u64) -> (Vec<u8>, Vec<Want>) {
        let mut rng = Rng::new(seed);
        let mut out = Vec::new();
        let mut want = Vec::new();
        for i in 0..40u64 {
            let len = match rng.next_u64() % 4 {
                0 => rng.next_u64() % 20,
                1 => 100 + rng.next_u64() % 100,
                2 => 60_000 + rng.next_u64() % 10_000,
                _ => 16,
            } as usize;
            let payload: Vec<u8> = (0..len).map(|j| (j as u64 * 31 + i) as u8).collect();
            let mask = rng
                .next_u64()
                .is_multiple_of(2)
                .then(|| (rng.next_u64() as u32).to_ne_bytes());
            let pieces = 1 + (rng.next_u64() % 3) as usize;
            let mut cut = 0;
            for p in 0..pieces {
                let end = if p + 1 == pieces {
                    len
                } else {
                    cut + (len - cut) / 2
                };
                let op = if p == 0 {
                    OpCode::Binary
                } else {
                    OpCode::Continuation
                };
                frame(&mut out, p + 1 == pieces, op, &payload[cut..end], mask);
                if p + 1 < pieces && rng.next_u64().is_multiple_of(2) {
                    frame(&mut out, true, OpCode::Ping, b"are you there", mask);
                    want.push(Want::Ping(b"are you there".to_vec()));
                }
                cut = end;
            }
            want.push(Want::Message(
                len as u64,
                payload[..len.min(STAMP_LEN)].to_vec(),
            ));
        }
        frame(&mut out, true, OpCode::Close, &4001u16.to_be_bytes(), None);
        want.push(Want::Close(4001));
        (out, want)
    }

    /// Feeds `bytes` in pieces the way `FrameReader` does: what is left unparsed is moved to
    /// the front before the next piece is appended.
    fn decode(bytes: &[u8], cuts: &[usize]) -> Vec<Want> {
        let mut parser = FrameParser::default();
        let (mut buf, mut pos) = (Vec::new(), 0);
        let mut got = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            if pos == buf.len() {
                buf.clear();
            } else {
                buf.drain(..pos);
            }
            pos = 0;
            buf.extend_from_slice(&bytes[last..c]);
            last = c;
            while let Some(ev) = parser.next_event(&buf, &mut pos).unwrap() {
                got.push(match ev {
                    Event::Message { len, stamp } => {
                        Want::Message(len, stamp[..(len as usize).min(STAMP_LEN)].to_vec())
                    }
                    Event::Ping(c) => Want::Ping(c.payload().to_vec()),
                    Event::Pong => panic!("no pong was sent"),
                    Event::Close(code) => Want::Close(code),
                });
            }
            assert!(
                buf.len() - pos < MAX_HEADER_LEN,
                "only a cut header is left"
            );
        }
        got
    }

    #[test]
    fn whole_stream_decodes() {
        let (bytes, want) = stream(7);
        assert_eq!(decode(&bytes, &[]), want);
    }

    #[test]
    fn byte_by_byte_decodes() {
        let (bytes, want) = stream(8);
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(decode(&bytes, &cuts), want);
    }

    proptest::proptest! {
        #[test]
        fn any_read_boundaries_decode_the_same(seed: u64, cut_seed: u64) {
            let (bytes, want) = stream(seed);
            let mut r = Rng::new(cut_seed);
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                at += 1 + (r.next_u64() % 9000) as usize;
                if at < bytes.len() {
                    cuts.push(at);
                }
            }
            proptest::prop_assert_eq!(decode(&bytes, &cuts), want);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut p = FrameParser::default();
        let mut out = Vec::new();
        frame(&mut out, true, OpCode::Continuation, b"x", None);
        assert_eq!(
            p.next_event(&out, &mut 0),
            Err(ProtocolError::StrayContinuation)
        );
        let mut p = FrameParser::default();
        let mut out = Vec::new();
        frame(&mut out, false, OpCode::Binary, b"x", None);
        frame(&mut out, true, OpCode::Text, b"y", None);
        let mut pos = 0;
        assert!(matches!(
            p.next_event(&out, &mut pos),
            Err(ProtocolError::Interleaved)
        ));
    }

    #[test]
    fn upgrade_answer_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_upgrade(ok, key).is_ok());
        let wrong = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        assert!(matches!(
            check_upgrade(wrong, key),
            Err(ClientError::BadAnswer(_))
        ));
        let refused = b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n";
        match check_upgrade(refused, key) {
            Err(ClientError::Refused(line)) => assert_eq!(line, "HTTP/1.1 409 Conflict"),
            other => panic!("{other:?}"),
        }
    }
}
