//! A TLS session on a server socket: rustls's buffered `Connection`, fed with what a
//! non-blocking recv(2) returns once the socket is readable, and drained with non-blocking
//! sendmsg(2), waiting for writability when the socket is full (docs/tls.md, "The glue").
//! Ciphertext never sits in a buffer of ours between two reads: rustls's own buffers hold
//! the part of a record not yet complete, and one scratch buffer per core lands each read.
//! Used by the HTTP phase (`runtime::stream::ServerStream`) and, once upgraded, by the
//! relay's shared `runtime::socket::Socket`; it crosses cores with its fd in a handoff.
#![forbid(unsafe_code)]

use super::socket::{recv_now, send_now};
use crate::tls::record::{Carried, RecordError, RecordLayer};
use crate::tls::Negotiated;
use monoio::net::TcpStream;
use rustls::Connection;
use std::cell::{Cell, RefCell, RefMut};
use std::io::{self, BufRead, IoSlice, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// What one read from the socket may bring: the size of the pooled read buffers' default,
/// so a 64 KiB message of records arrives in one recv(2).
const SCRATCH_BYTES: usize = 64 * 1024;

/// Plaintext rustls may hold before feeding it stops: it refuses more ciphertext past
/// 16 KiB of unread plaintext, so what is left of a read waits in the session's backlog.
const PLAINTEXT_HIGH: usize = 16 * 1024;

/// The first byte of a TLS handshake record; anything else at the start of a connection to
/// the TLS listener is not TLS (most often a plain HTTP request).
const HANDSHAKE_RECORD: u8 = 0x16;

thread_local! {
    /// One per worker thread: every read is fed to its session before the next one starts.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// One connection's TLS state. `Send`, so it travels with its fd to another core.
pub struct TlsSession {
    conn: RefCell<Engine>,
    /// Ciphertext read but not yet given to rustls (its plaintext buffer was full): rare, and
    /// empty (no allocation) otherwise.
    backlog: RefCell<Vec<u8>>,
    /// Where the ciphertext given to rustls stands in its records: a record begun but not
    /// whole sits inside rustls, where extraction would lose it (`carry`).
    framing: Cell<Framing>,
}

/// Who runs the records: rustls (the handshake was ours), or our own layer on keys a binary
/// upgrade carried (`tls::record`, docs/upgrade.md). rustls's connection stays inline: it is
/// the common case and the session is boxed already, so boxing it would add a pointer to
/// every TLS read and write for nothing.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Rustls(Connection),
    Own(Box<RecordLayer>),
    /// Extraction failed after rustls gave its connection up: nothing can be read or written.
    Gone,
}

/// Why a connection's keys could not be carried: it is closed with 1012 instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCarried {
    /// Plaintext not yet read, records not yet sent, part of a record, or the end.
    NotAtRest,
    /// A version or suite the record layer does not implement, or rustls refused.
    Unsupported,
}

/// The position in a stream of TLS records: header bytes seen of the current one, and its
/// body bytes still to come.
#[derive(Debug, Clone, Copy, Default)]
struct Framing {
    header: [u8; 5],
    have: u8,
    left: usize,
}

impl Framing {
    fn advance(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.have < 5 {
                let k = (5 - usize::from(self.have)).min(b.len());
                let at = usize::from(self.have);
                self.header[at..at + k].copy_from_slice(&b[..k]);
                self.have += k as u8;
                b = &b[k..];
                if self.have == 5 {
                    self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    if self.left == 0 {
                        self.have = 0;
                    }
                }
            } else {
                let k = self.left.min(b.len());
                self.left -= k;
                b = &b[k..];
                if self.left == 0 {
                    self.have = 0;
                }
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0
    }
}

/// An error of the record layer that asks for a restart (a client's key update, sequence
/// numbers spent): the relay closes the connection with 1012 under the current key.
pub fn wants_restart(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<RecordError>())
        .is_some_and(|r| r.wants_restart())
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "TLS session lost at an upgrade",
    )
}

/// Sends what the record layer has sealed until it is all sent or the socket is full.
fn send_own(l: &mut RecordLayer, fd: RawFd) -> io::Result<()> {
    while !l.pending().is_empty() {
        let n = send_now(fd, &[IoSlice::new(l.pending())])?;
        l.sent(n);
    }
    Ok(())
}

/// `read_now` on the record layer.
fn read_own(
    l: &mut RecordLayer,
    fd: RawFd,
    room: usize,
    put: &mut dyn FnMut(&[u8]),
) -> io::Result<usize> {
    loop {
        match l.read_plain(room, put) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => {}
            Err(e) => {
                // Its alert, if it has one, best effort.
                let _ = send_own(l, fd);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        let n = SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let n = recv_now(fd, &mut s)?;
            if n == 0 {
                l.ingest_eof();
            } else {
                l.ingest(&s[..n]);
            }
            Ok::<usize, io::Error>(n)
        });
        match n {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                l.trim();
                return Err(e);
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
}

/// What `TlsSession::write_now` did with the plaintext bytes it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Encrypted and sent.
    Sent(usize),
    /// Encrypted; some of the records wait for the socket (`TlsSession::flush`).
    Queued(usize),
}

/// How a handshake ended without a session.
#[derive(Debug)]
pub enum Refused {
    /// The first byte was not a TLS handshake record.
    NotTls,
    /// The client closed the connection first.
    Closed,
    /// rustls refused the client (its alert has been sent).
    Tls(rustls::Error),
    Io(io::Error),
}

/// `io::Write` onto the socket with non-blocking sends, for `write_tls`.
struct SendNow(RawFd);

impl Write for SendNow {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        send_now(self.0, &[IoSlice::new(b)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send_now(self.0, bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// What went wrong feeding ciphertext to rustls.
enum FeedError {
    Tls(rustls::Error),
    Io(io::Error),
}

impl From<FeedError> for io::Error {
    fn from(e: FeedError) -> io::Error {
        match e {
            FeedError::Tls(e) => invalid(e),
            FeedError::Io(e) => e,
        }
    }
}

impl TlsSession {
    fn new(conn: Connection) -> TlsSession {
        TlsSession {
            conn: RefCell::new(Engine::Rustls(conn)),
            backlog: RefCell::new(Vec::new()),
            framing: Cell::new(Framing::default()),
        }
    }

    /// A session on keys another process carried over a binary upgrade (`carry` there).
    pub fn adopt(carried: &[u8]) -> Result<Box<TlsSession>, crate::tls::record::CarryError> {
        let layer = RecordLayer::from_carried(carried)?;
        Ok(Box::new(TlsSession {
            conn: RefCell::new(Engine::Own(Box::new(layer))),
            backlog: RefCell::new(Vec::new()),
            framing: Cell::new(Framing::default()),
        }))
    }

    /// rustls's connection, while it runs this session.
    fn rustls(&self) -> Option<RefMut<'_, Connection>> {
        RefMut::filter_map(self.conn.borrow_mut(), |e| match e {
            Engine::Rustls(c) => Some(c),
            _ => None,
        })
        .ok()
    }

    /// Runs `f` on the record layer when it runs this session (after an upgrade); `None`
    /// while rustls does. A lost session answers `NotConnected`.
    fn own<R>(&self, f: impl FnOnce(&mut RecordLayer) -> io::Result<R>) -> Option<io::Result<R>> {
        match &mut *self.conn.borrow_mut() {
            Engine::Rustls(_) => None,
            Engine::Own(l) => Some(f(l)),
            Engine::Gone => Some(Err(gone())),
        }
    }

    /// The handshake is still going on.
    fn is_handshaking(&self) -> bool {
        self.rustls().is_some_and(|c| c.is_handshaking())
    }

    /// The connection's record state for a binary upgrade, when it is at rest: nothing read
    /// and not handed out, nothing sealed and not sent, no record begun. rustls's connection
    /// gives its keys up here, and from now on this session runs on the record layer too (so
    /// a failed upgrade carries on with the same state). The secrets cross only the
    /// handover's socketpair (docs/upgrade.md).
    pub fn carry(&self) -> Result<Carried, NotCarried> {
        let mut engine = self.conn.borrow_mut();
        let c = match &mut *engine {
            Engine::Own(l) => return l.carry().ok_or(NotCarried::NotAtRest),
            Engine::Gone => return Err(NotCarried::Unsupported),
            Engine::Rustls(c) => c,
        };
        let plaintext =
            !matches!(c.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        if plaintext
            || c.is_handshaking()
            || c.wants_write()
            || !self.backlog.borrow().is_empty()
            || !self.framing.get().at_boundary()
        {
            return Err(NotCarried::NotAtRest);
        }
        let (Some(version), Some(suite)) = (c.protocol_version(), c.negotiated_cipher_suite())
        else {
            return Err(NotCarried::Unsupported);
        };
        let suite = suite.suite();
        let Engine::Rustls(c) = std::mem::replace(&mut *engine, Engine::Gone) else {
            return Err(NotCarried::Unsupported);
        };
        let layer = c
            .dangerous_extract_secrets()
            .ok()
            .and_then(|s| RecordLayer::from_extracted(version, suite, s).ok())
            .ok_or(NotCarried::Unsupported)?;
        let carried = layer.carry().ok_or(NotCarried::NotAtRest)?;
        *engine = Engine::Own(Box::new(layer));
        Ok(carried)
    }

    /// What the handshake agreed on.
    pub fn negotiated(&self) -> Negotiated {
        match &*self.conn.borrow() {
            Engine::Rustls(c) => Negotiated {
                version: c.protocol_version(),
                suite: c.negotiated_cipher_suite().map(|s| s.suite()),
            },
            Engine::Own(l) => Negotiated {
                version: Some(l.version()),
                suite: Some(l.suite()),
            },
            Engine::Gone => Negotiated {
                version: None,
                suite: None,
            },
        }
    }

    /// The common name of the client certificate the handshake verified (`tls.client_auth`).
    /// Not kept across an upgrade (read at admission only).
    pub fn client_subject(&self) -> Option<String> {
        let c = self.rustls()?;
        let leaf = c.peer_certificates()?.first()?;
        crate::tls::subject_cn(leaf)
    }

    /// The names of the client certificate the handshake verified, for admission by
    /// certificate (`tls.client_grants`); `None` without one.
    pub fn client_names(&self) -> Option<crate::tls::ClientNames> {
        let c = self.rustls()?;
        let leaf = c.peer_certificates()?.first()?;
        Some(crate::tls::client_names(leaf))
    }

    /// Something can be read without waiting for the socket: plaintext, ciphertext in the
    /// backlog, or the end of the stream.
    pub fn has_buffered(&self) -> bool {
        if let Some(r) = self.own(|l| Ok(l.has_buffered())) {
            return r.unwrap_or(true);
        }
        if !self.backlog.borrow().is_empty() {
            return true;
        }
        let Some(mut c) = self.rustls() else {
            return true;
        };
        let r = c.reader().fill_buf().map(|_| ());
        !matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Gives rustls `bytes` of ciphertext and processes them; what it cannot take yet goes to
    /// the backlog.
    fn feed(&self, conn: &mut Connection, mut bytes: &[u8]) -> Result<(), FeedError> {
        while !bytes.is_empty() {
            let offered = bytes;
            match conn.read_tls(&mut bytes) {
                // After the client's close_notify: nothing more is read.
                Ok(0) => return Ok(()),
                Ok(n) => {
                    let mut f = self.framing.get();
                    f.advance(&offered[..n]);
                    self.framing.set(f);
                }
                Err(e) => return Err(FeedError::Io(e)),
            }
            let state = conn.process_new_packets().map_err(FeedError::Tls)?;
            if state.plaintext_bytes_to_read() > PLAINTEXT_HIGH && !bytes.is_empty() {
                self.backlog.borrow_mut().extend_from_slice(bytes);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads what the socket has now into the scratch buffer and feeds it. `Ok(false)`: the
    /// stream ended.
    fn pull(&self, fd: RawFd, check_first: bool) -> Result<bool, Refused> {
        let backlog = std::mem::take(&mut *self.backlog.borrow_mut());
        let Some(mut c) = self.rustls() else {
            return Err(Refused::Io(gone()));
        };
        if !backlog.is_empty() {
            return self.fed(&mut c, fd, &backlog).map(|()| true);
        }
        drop(c);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let n = recv_now(fd, &mut s).map_err(Refused::Io)?;
            let Some(mut c) = self.rustls() else {
                return Err(Refused::Io(gone()));
            };
            if n == 0 {
                // rustls learns of the end, so its reader reports it.
                let _ = c.read_tls(&mut &[][..]);
                return Ok(false);
            }
            if check_first && s[0] != HANDSHAKE_RECORD {
                return Err(Refused::NotTls);
            }
            self.fed(&mut c, fd, &s[..n]).map(|()| true)
        })
    }

    /// Feeds `bytes`, then sends at once what rustls has to say (a handshake flight, a key
    /// update, or the alert of an error).
    fn fed(&self, c: &mut Connection, fd: RawFd, bytes: &[u8]) -> Result<(), Refused> {
        let r = self.feed(c, bytes);
        let _ = send_queued(c, fd);
        match r {
            Ok(()) => Ok(()),
            Err(FeedError::Tls(e)) => Err(Refused::Tls(e)),
            Err(FeedError::Io(e)) => Err(Refused::Io(e)),
        }
    }

    /// Gives `put` up to `room` bytes of plaintext without waiting. `Ok(0)`: the stream
    /// ended; `Err(WouldBlock)`: nothing yet (wait for the socket to be readable).
    pub fn read_now(
        &self,
        fd: RawFd,
        room: usize,
        put: &mut dyn FnMut(&[u8]),
    ) -> io::Result<usize> {
        if let Some(r) = self.own(|l| read_own(l, fd, room, put)) {
            return r;
        }
        loop {
            match self.drain(room, put) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The end, clean (close_notify) or not: the relay reads both as the end.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                r => return r,
            }
            match self.pull(fd, false) {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(Refused::Io(e)) => return Err(e),
                Err(Refused::Tls(e)) => return Err(invalid(e)),
                Err(Refused::NotTls | Refused::Closed) => return Ok(0),
            }
        }
    }

    /// Hands plaintext rustls holds to `put`, up to `room` bytes.
    fn drain(&self, room: usize, put: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        let Some(mut c) = self.rustls() else {
            return Err(gone());
        };
        let mut reader = c.reader();
        let mut got = 0;
        while got < room {
            let r = reader.fill_buf();
            let b = match r {
                Ok(b) => b,
                Err(_) if got > 0 => break,
                Err(e) => return Err(e),
            };
            if b.is_empty() {
                break;
            }
            let k = b.len().min(room - got);
            put(&b[..k]);
            reader.consume(k);
            got += k;
        }
        Ok(got)
    }

    /// Reads up to `room` bytes of plaintext, waiting for the socket as long as it takes.
    pub async fn read(
        &self,
        tcp: &TcpStream,
        room: usize,
        put: &mut dyn FnMut(&[u8]),
    ) -> io::Result<usize> {
        loop {
            match self.read_now(tcp.as_raw_fd(), room, put) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.readable(false).await?,
                r => return r,
            }
        }
    }

    /// Encrypts what rustls takes of `bufs` and sends it all, waiting for the socket when it
    /// is full. Returns the plaintext bytes taken (all of them unless rustls's outgoing
    /// buffer filled first; the caller writes the rest next).
    pub async fn write(&self, tcp: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let n = match self.write_now(tcp.as_raw_fd(), bufs)? {
                Written::Sent(n) => n,
                Written::Queued(n) => {
                    self.flush(tcp).await?;
                    n
                }
            };
            if n > 0 || bufs.iter().all(|b| b.is_empty()) {
                return Ok(n);
            }
        }
    }

    /// `write` without waiting: encrypts what rustls takes of `bufs` and sends what the
    /// socket takes now. A forwarded batch nearly always goes out whole here, so the caller
    /// needs no future for it (`Socket` boxes the one it needs otherwise: no allocation per
    /// TLS write but rustls's own). `Queued`: records are left to send; the caller must
    /// `flush` before the write counts as done.
    pub fn write_now(&self, fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<Written> {
        let own = self.own(|l| {
            let n = l
                .seal(bufs)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match send_own(l, fd) {
                Ok(()) => Ok(Written::Sent(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Written::Queued(n)),
                Err(e) => Err(e),
            }
        });
        if let Some(r) = own {
            return r;
        }
        let Some(mut c) = self.rustls() else {
            return Err(gone());
        };
        let n = c.writer().write_vectored(bufs)?;
        match send_queued(&mut c, fd) {
            Ok(()) => Ok(Written::Sent(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Written::Queued(n)),
            Err(e) => Err(e),
        }
    }

    /// Sends every record rustls has queued, waiting for the socket when it is full.
    pub async fn flush(&self, tcp: &TcpStream) -> io::Result<()> {
        loop {
            let r = self.send_queued(tcp.as_raw_fd());
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable(false).await?,
                r => return r,
            }
        }
    }

    /// Queues the close_notify alert and sends what the socket takes now (before a FIN that
    /// cannot wait).
    pub fn close_notify_now(&self, fd: RawFd) {
        self.queue_close_notify();
        let _ = self.send_queued(fd);
    }

    /// Queues the close_notify alert and sends it (before a FIN).
    pub async fn close_notify(&self, tcp: &TcpStream) -> io::Result<()> {
        self.queue_close_notify();
        self.flush(tcp).await
    }

    fn queue_close_notify(&self) {
        match &mut *self.conn.borrow_mut() {
            Engine::Rustls(c) => c.send_close_notify(),
            Engine::Own(l) => l.close_notify(),
            Engine::Gone => {}
        }
    }

    /// Sends what is queued, by whichever engine runs the session.
    fn send_queued(&self, fd: RawFd) -> io::Result<()> {
        match &mut *self.conn.borrow_mut() {
            Engine::Rustls(c) => send_queued(c, fd),
            Engine::Own(l) => send_own(l, fd),
            Engine::Gone => Err(gone()),
        }
    }
}

/// Sends what rustls has queued until it is all sent or the socket is full.
fn send_queued(c: &mut Connection, fd: RawFd) -> io::Result<()> {
    while c.wants_write() {
        c.write_tls(&mut SendNow(fd))?;
    }
    Ok(())
}

/// Runs a server handshake on `tcp` with `config`. The caller bounds it in time
/// (`limits.handshake_timeout`, with the rest of the HTTP phase).
pub async fn accept(
    tcp: &TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<Box<TlsSession>, Refused> {
    let conn = rustls::ServerConnection::new(config).map_err(Refused::Tls)?;
    handshake(tcp, Box::new(TlsSession::new(conn.into()))).await
}

/// Drives `session`'s handshake on `tcp`, server or client side alike, to its end.
async fn handshake(tcp: &TcpStream, session: Box<TlsSession>) -> Result<Box<TlsSession>, Refused> {
    let mut first = true;
    loop {
        session.flush(tcp).await.map_err(Refused::Io)?;
        if !session.is_handshaking() {
            return Ok(session);
        }
        match session.pull(tcp.as_raw_fd(), first) {
            Ok(true) => first = false,
            Ok(false) => return Err(Refused::Closed),
            Err(Refused::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                tcp.readable(false).await.map_err(Refused::Io)?
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs a client handshake on `tcp` (the cluster link's carrier, `tls::link`): the same
/// session glue as the server side, so the link reads and writes like a TLS client's socket.
/// An answer that does not start with a TLS handshake record is `Refused::NotTls` (an owner
/// whose link is in clear speaks first, in text). The caller bounds it in time.
pub async fn connect(
    tcp: &TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> Result<Box<TlsSession>, Refused> {
    let conn = rustls::ClientConnection::new(config, name).map_err(Refused::Tls)?;
    handshake(tcp, Box::new(TlsSession::new(conn.into()))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }
    }

    /// A server session over one end of a socket pair, and a rustls client over the other,
    /// with the handshake done.
    fn pair() -> (TlsSession, UnixStream, rustls::ClientConnection, UnixStream) {
        let (mut server, cert) = crate::tls::testing::localhost_server();
        server.enable_secret_extraction = true;
        let client = crate::tls::testing::client_trusting(&cert);
        let (s, c) = UnixStream::pair().unwrap();
        c.set_nonblocking(true).unwrap();
        let session = TlsSession::new(
            rustls::ServerConnection::new(Arc::new(server))
                .unwrap()
                .into(),
        );
        let name = "localhost".try_into().unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        for round in 0..50 {
            while client.wants_write() {
                client.write_tls(&mut &c).unwrap();
            }
            match session.pull(s.as_raw_fd(), round == 0) {
                Ok(_) => {}
                Err(Refused::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("handshake: {e:?}"),
            }
            let _ = client.read_tls(&mut &c);
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !session.is_handshaking() {
                return (session, s, client, c);
            }
        }
        panic!("no handshake");
    }

    /// Messages of many sizes, each its own records, come out of `read_now` whole and in
    /// order, whatever room the reader has: one record per read, many per read, records
    /// split across reads, more plaintext than rustls holds at once (the backlog). And
    /// `write_now` sends what it encrypts.
    #[test]
    fn read_now_hands_over_every_byte_in_order() {
        for room in [1, 100, 4096, 70_000] {
            let (session, s, mut client, c) = pair();
            let mut g = Gen(room as u64 + 1);
            let mut sent = Vec::new();
            client.set_buffer_limit(None);
            for i in 0..300 {
                let n = if i % 50 == 7 {
                    40_000 + g.next(30_000)
                } else {
                    g.next(300)
                };
                let msg: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
                client.writer().write_all(&msg).unwrap();
                sent.extend_from_slice(&msg);
            }
            client.send_close_notify();
            let mut got = Vec::new();
            let mut out = Vec::new();
            for _ in 0..1_000_000 {
                if client.wants_write() {
                    match client.write_tls(&mut &c) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("client write: {e}"),
                    }
                }
                let r = session.read_now(s.as_raw_fd(), room, &mut |b| out.extend_from_slice(b));
                match r {
                    Ok(0) => break,
                    Ok(n) => {
                        assert!(n <= room && n == out.len());
                        got.append(&mut out);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read_now: {e}"),
                }
            }
            assert_eq!(got.len(), sent.len(), "room {room}");
            assert!(got == sent, "room {room}: the bytes differ");
            let answer = [IoSlice::new(b"from "), IoSlice::new(b"the server")];
            let w = session.write_now(s.as_raw_fd(), &answer).unwrap();
            assert_eq!(w, Written::Sent(15));
            let mut back = [0u8; 64];
            let mut n = 0;
            for _ in 0..100 {
                let _ = client.read_tls(&mut &c);
                client.process_new_packets().unwrap();
                if let Ok(k) = client.reader().read(&mut back) {
                    n = k;
                    break;
                }
            }
            assert_eq!(&back[..n], b"from the server");
            // Nothing left anywhere.
            assert!(session.backlog.borrow().is_empty());
        }
    }

    /// Sends `msg` from the client and reads it on the server session.
    fn client_to_server(
        session: &TlsSession,
        s: &UnixStream,
        client: &mut rustls::ClientConnection,
        c: &UnixStream,
        msg: &[u8],
    ) -> Vec<u8> {
        client.writer().write_all(msg).unwrap();
        while client.wants_write() {
            client.write_tls(&mut &*c).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..1000 {
            match session.read_now(s.as_raw_fd(), 1 << 20, &mut |b| got.extend_from_slice(b)) {
                Ok(_) if got.len() >= msg.len() => break,
                Ok(0) => break,
                _ => {}
            }
        }
        got
    }

    fn server_to_client(
        session: &TlsSession,
        s: &UnixStream,
        client: &mut rustls::ClientConnection,
        c: &UnixStream,
        msg: &[u8],
    ) -> Vec<u8> {
        assert_eq!(
            session
                .write_now(s.as_raw_fd(), &[IoSlice::new(msg)])
                .unwrap(),
            Written::Sent(msg.len())
        );
        let mut got = Vec::new();
        for _ in 0..1000 {
            let _ = client.read_tls(&mut &*c);
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut got);
            if got.len() >= msg.len() {
                break;
            }
        }
        got
    }

    /// At rest, a session gives its keys up and goes on, on the record layer, with the same
    /// client (a failed upgrade resumes so); a session adopted from the carried keys talks
    /// to that client too. With part of a record read, nothing is carried.
    #[test]
    fn carry_at_rest_then_go_on_on_the_record_layer() {
        let (session, s, mut client, c) = pair();
        assert_eq!(
            client_to_server(&session, &s, &mut client, &c, b"under rustls"),
            b"under rustls"
        );
        assert_eq!(
            server_to_client(&session, &s, &mut client, &c, b"answer"),
            b"answer"
        );
        let carried = session.carry().expect("at rest");
        assert!(matches!(&*session.conn.borrow(), Engine::Own(_)));
        assert_eq!(
            client_to_server(&session, &s, &mut client, &c, b"on our own layer"),
            b"on our own layer"
        );
        assert_eq!(
            server_to_client(&session, &s, &mut client, &c, b"back"),
            b"back"
        );
        // The carried state was taken before the last two records: the layer made from it
        // is behind by one record each way, so carry again, as the next upgrade does.
        drop(carried);
        let carried = session.carry().expect("at rest again");
        let adopted = TlsSession::adopt(&carried.0).unwrap();
        assert_eq!(adopted.negotiated().suite, session.negotiated().suite);
        assert_eq!(
            client_to_server(&adopted, &s, &mut client, &c, b"in the new process"),
            b"in the new process"
        );
        assert_eq!(
            server_to_client(&adopted, &s, &mut client, &c, b"from it"),
            b"from it"
        );

        // Part of a record given to rustls: not at rest.
        let (session, s, mut client, c) = pair();
        client.writer().write_all(b"a record cut in two").unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        use std::io::Write as _;
        (&c).write_all(&wire[..wire.len() - 4]).unwrap();
        let r = session.read_now(s.as_raw_fd(), 100, &mut |_| {});
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(session.carry().err(), Some(NotCarried::NotAtRest));
        // Still rustls's, and whole once the rest comes.
        (&c).write_all(&wire[wire.len() - 4..]).unwrap();
        let mut got = Vec::new();
        session
            .read_now(s.as_raw_fd(), 100, &mut |b| got.extend_from_slice(b))
            .unwrap();
        assert_eq!(got, b"a record cut in two");
        assert!(session.carry().is_ok());
    }
}
