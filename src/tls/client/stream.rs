//! A TLS client connection over monoio's owned-buffer I/O, split into a reader and a writer
//! that separate tasks may drive at once (the load generator's reader and writer tasks; the
//! agent's reader and its writer task).
//!
//! Both halves share one `rustls::ClientConnection` in a `RefCell`, borrowed only between
//! awaits, never across one. The reader alone reads the socket and feeds rustls; the writer
//! alone writes it. TLS records a read makes rustls want to send (a KeyUpdate's answer) stay
//! in rustls until the writer's next write takes them: the clients write often (the agent
//! pings), and nothing waits for such a record.
//!
//! The transport is behind two small traits, so the same code runs on monoio's split halves
//! (the load generator) and on the relay's shared `Socket` (the agent, which must wait for
//! readiness before a read it cannot cancel).

use super::ClientTls;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ClientConnection;
use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read, Write};
use std::rc::Rc;

/// Ciphertext asked of each socket read.
const CIPHER_READ: usize = 64 << 10;

/// Reads into a vector's spare capacity (its length grows by what was read).
pub trait ReadIo {
    fn read_owned(&mut self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>>;
}

/// Writes a whole vector and hands it back.
pub trait WriteIo {
    fn write_owned(&mut self, buf: Vec<u8>) -> impl Future<Output = BufResult<(), Vec<u8>>>;
}

impl ReadIo for OwnedReadHalf<TcpStream> {
    async fn read_owned(&mut self, buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
        self.read(buf).await
    }
}

impl WriteIo for OwnedWriteHalf<TcpStream> {
    async fn write_owned(&mut self, buf: Vec<u8>) -> BufResult<(), Vec<u8>> {
        let (r, b) = self.write_all(buf).await;
        (r.map(|_| ()), b)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake: i/o: {0}")]
    Io(io::Error),
    #[error("TLS handshake: the server closed the connection (is it a TLS port?)")]
    Closed,
    #[error("TLS handshake: the server's certificate is not trusted: {0} (a private CA: give it with --ca-file)")]
    Untrusted(rustls::Error),
    #[error("TLS handshake: the server's answer is not TLS ({0}): a plain ws:// or http:// port?")]
    NotTls(rustls::Error),
    #[error("TLS handshake: {0}")]
    Tls(rustls::Error),
}

impl HandshakeError {
    fn of(e: rustls::Error) -> HandshakeError {
        match e {
            rustls::Error::InvalidCertificate(_) => HandshakeError::Untrusted(e),
            rustls::Error::InvalidMessage(_) => HandshakeError::NotTls(e),
            e => HandshakeError::Tls(e),
        }
    }
}

/// The read half: ciphertext from the socket in, plaintext out.
pub struct TlsReader<R> {
    io: R,
    conn: Rc<RefCell<ClientConnection>>,
    /// Ciphertext read and not yet taken by rustls: `cipher[pos..]`.
    cipher: Vec<u8>,
    pos: usize,
    /// The socket's end was seen (and told to rustls).
    eof: bool,
}

/// The write half: plaintext in, records out.
pub struct TlsWriter<W> {
    io: W,
    conn: Rc<RefCell<ClientConnection>>,
    out: Vec<u8>,
}

/// Runs the TLS handshake over `r` and `w` (a connected socket's halves) and gives back the
/// two halves of the TLS stream. Bytes the server sent after its part of the handshake are
/// kept for the first read.
pub async fn connect<R: ReadIo, W: WriteIo>(
    tls: &ClientTls,
    r: R,
    w: W,
) -> Result<(TlsReader<R>, TlsWriter<W>), HandshakeError> {
    let mut conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
        .map_err(HandshakeError::Tls)?;
    // Records are taken out after every write, so rustls never needs to hold back plaintext.
    conn.set_buffer_limit(None);
    let conn = Rc::new(RefCell::new(conn));
    let mut reader = TlsReader {
        io: r,
        conn: conn.clone(),
        cipher: Vec::with_capacity(CIPHER_READ),
        pos: 0,
        eof: false,
    };
    let mut writer = TlsWriter {
        io: w,
        conn,
        out: Vec::with_capacity(4096),
    };
    loop {
        writer.send_pending().await.map_err(HandshakeError::Io)?;
        if !writer.conn.borrow().is_handshaking() {
            return Ok((reader, writer));
        }
        if reader.pos == reader.cipher.len() && !reader.fill().await.map_err(HandshakeError::Io)? {
            return Err(HandshakeError::Closed);
        }
        let fed = {
            let mut c = reader.conn.borrow_mut();
            let mut rd = &reader.cipher[reader.pos..];
            let r = c.read_tls(&mut rd);
            r.map(|n| (n, c.process_new_packets()))
        };
        match fed {
            // rustls takes nothing more after the server's close_notify.
            Ok((0, Ok(_))) => return Err(HandshakeError::Closed),
            Ok((n, Ok(_))) => reader.pos += n,
            Ok((_, Err(e))) => {
                // rustls queued an alert saying why: send it, so the server logs the reason.
                let _ = writer.send_pending().await;
                return Err(HandshakeError::of(e));
            }
            Err(e) => return Err(HandshakeError::Io(e)),
        }
    }
}

impl<R: ReadIo> TlsReader<R> {
    /// Reads once from the socket into `cipher` (emptied first). `false` at its end.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut buf = std::mem::take(&mut self.cipher);
        buf.clear();
        buf.reserve(CIPHER_READ);
        let (r, b) = self.io.read_owned(buf).await;
        self.cipher = b;
        self.pos = 0;
        match r {
            Ok(0) => {
                self.eof = true;
                // An empty read tells rustls the stream ended.
                let _ = self.conn.borrow_mut().read_tls(&mut io::empty());
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Whether a read would return without touching the socket: plaintext or ciphertext is
    /// waiting here. A reader that waits for the socket's readiness checks this first.
    pub fn has_buffered(&self) -> bool {
        if self.pos < self.cipher.len() {
            return true;
        }
        let mut c = self.conn.borrow_mut();
        c.process_new_packets()
            .map(|s| s.plaintext_bytes_to_read() > 0 || s.peer_has_closed())
            .unwrap_or(true)
    }

    /// Appends plaintext to `out` (up to its capacity, which must have room) with at most one
    /// socket read: `Some(n)`, `n` possibly 0 when that read held no whole record; `None` at
    /// the end of the stream (the server's close_notify, or the socket's end).
    pub async fn read_some(&mut self, out: &mut Vec<u8>) -> io::Result<Option<usize>> {
        let mut read_once = false;
        loop {
            let (n, closed) = self.take(out)?;
            if n > 0 {
                return Ok(Some(n));
            }
            if closed || self.eof {
                return Ok(None);
            }
            if read_once {
                return Ok(Some(0));
            }
            read_once = true;
            if !self.fill().await? {
                continue;
            }
        }
    }

    /// As [`read_some`](Self::read_some), reading the socket as often as it takes: `Ok(0)` is
    /// the end of the stream.
    pub async fn read(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            match self.read_some(out).await? {
                Some(0) => {}
                Some(n) => return Ok(n),
                None => return Ok(0),
            }
        }
    }

    /// Without I/O: gives rustls the ciphertext already read and moves plaintext into `out`,
    /// until `out` is full or both run dry. Returns the bytes appended and whether the
    /// server has closed (nothing more will come).
    fn take(&mut self, out: &mut Vec<u8>) -> io::Result<(usize, bool)> {
        let room = out.capacity() - out.len();
        if room == 0 {
            return Err(io::Error::other("TLS read into a full buffer"));
        }
        let mut conn = self.conn.borrow_mut();
        let mut appended = 0;
        loop {
            let state = conn.process_new_packets().map_err(tls_io_error)?;
            let ready = state.plaintext_bytes_to_read().min(room - appended);
            if ready > 0 {
                // Only what rustls holds is zeroed and overwritten, never the whole spare room.
                let at = out.len();
                out.resize(at + ready, 0);
                let n = conn.reader().read(&mut out[at..])?;
                out.truncate(at + n);
                appended += n;
            }
            if appended == room {
                return Ok((appended, false));
            }
            if self.pos < self.cipher.len() {
                let mut rd = &self.cipher[self.pos..];
                match conn.read_tls(&mut rd)? {
                    // After the server's close_notify rustls takes nothing more: what
                    // follows it is dropped, as TLS says.
                    0 => self.pos = self.cipher.len(),
                    n => self.pos += n,
                }
                continue;
            }
            let closed = state.peer_has_closed() && state.plaintext_bytes_to_read() == ready;
            return Ok((appended, closed));
        }
    }
}

impl<W: WriteIo> TlsWriter<W> {
    /// Encrypts all of `plain` and writes the records.
    pub async fn write_all(&mut self, plain: &[u8]) -> io::Result<()> {
        self.conn.borrow_mut().writer().write_all(plain)?;
        self.send_pending().await
    }

    /// Sends TLS's close_notify (the end of this side's data); best effort.
    pub async fn close(&mut self) {
        self.conn.borrow_mut().send_close_notify();
        let _ = self.send_pending().await;
    }

    /// Writes whatever records rustls has ready.
    async fn send_pending(&mut self) -> io::Result<()> {
        {
            let mut conn = self.conn.borrow_mut();
            while conn.wants_write() {
                conn.write_tls(&mut self.out)?;
            }
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.out);
        let (r, mut b) = self.io.write_owned(buf).await;
        b.clear();
        self.out = b;
        r
    }

    /// The protocol ALPN settled on, if any.
    #[cfg(test)]
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.conn.borrow().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// Whether the handshake resumed an earlier session (a ticket) rather than a full one.
    pub fn resumed(&self) -> bool {
        self.conn.borrow().handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The TLS version negotiated (`"1.3"`, `"1.2"`), for reports.
    pub fn version(&self) -> Option<&'static str> {
        match self.conn.borrow().protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => Some("1.3"),
            rustls::ProtocolVersion::TLSv1_2 => Some("1.2"),
            _ => Some("other"),
        }
    }
}

fn tls_io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    //! The halves against a rustls server over an in-memory pipe: a handshake, then data both
    //! ways, read through a buffer smaller than what arrives, at cut socket reads.

    use super::*;
    use crate::tls::client::{client_config, Trust};
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::sync::Arc;

    /// One direction of an in-memory socket: what was written, and a cap on each read.
    #[derive(Default)]
    struct Pipe {
        bytes: RefCell<VecDeque<u8>>,
        closed: std::cell::Cell<bool>,
    }

    struct PipeRead(Rc<Pipe>, usize);
    struct PipeWrite(Rc<Pipe>);

    impl ReadIo for PipeRead {
        /// Waits (without a waker: the test polls again after moving bytes) while the pipe is
        /// empty and open, as a socket read would.
        fn read_owned(&mut self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> {
            let (pipe, cap) = (self.0.clone(), self.1);
            let mut buf = Some(buf);
            std::future::poll_fn(move |_| {
                let mut q = pipe.bytes.borrow_mut();
                if q.is_empty() && !pipe.closed.get() {
                    return std::task::Poll::Pending;
                }
                let mut b = buf.take().expect("polled after the end");
                let n = q.len().min(cap).min(b.capacity() - b.len());
                b.extend(q.drain(..n));
                std::task::Poll::Ready((Ok(n), b))
            })
        }
    }

    impl WriteIo for PipeWrite {
        async fn write_owned(&mut self, buf: Vec<u8>) -> BufResult<(), Vec<u8>> {
            self.0.bytes.borrow_mut().extend(buf.iter());
            (Ok(()), buf)
        }
    }

    /// A server: a self-signed certificate for `localhost` and its connection.
    fn server() -> (rustls::ServerConnection, String) {
        let (mut config, cert) = crate::tls::testing::localhost_server();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        (
            rustls::ServerConnection::new(Arc::new(config)).unwrap(),
            cert.pem(),
        )
    }

    /// Moves bytes between the pipes and the server until neither side has anything to do.
    fn pump_server(s: &mut rustls::ServerConnection, to_server: &Pipe, to_client: &Pipe) {
        loop {
            let mut moved = false;
            let pending: Vec<u8> = to_server.bytes.borrow_mut().drain(..).collect();
            if !pending.is_empty() {
                let mut rd = &pending[..];
                while !rd.is_empty() {
                    s.read_tls(&mut rd).unwrap();
                    s.process_new_packets().unwrap();
                }
                moved = true;
            }
            let mut out = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut out).unwrap();
            }
            if !out.is_empty() {
                to_client.bytes.borrow_mut().extend(out);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    type Halves = (TlsReader<PipeRead>, TlsWriter<PipeWrite>);

    /// A client trusting `ca_pem` and its handshake with `server` over in-memory pipes: the
    /// server is driven by hand whenever the client's handshake waits.
    async fn handshake(
        server: &mut rustls::ServerConnection,
        ca_pem: &str,
        up: &Rc<Pipe>,
        down: &Rc<Pipe>,
    ) -> Result<Halves, HandshakeError> {
        let path = std::env::temp_dir().join(format!(
            "ringrelay-stream-ca-{}-{:p}.pem",
            std::process::id(),
            server
        ));
        std::fs::write(&path, ca_pem).unwrap();
        let config = client_config(&Trust::CaFile(path.clone()), false).unwrap();
        let _ = std::fs::remove_file(&path);
        let tls = ClientTls::new(config, "localhost", false).unwrap();
        let hs = connect(&tls, PipeRead(down.clone(), 1000), PipeWrite(up.clone()));
        let mut hs = std::pin::pin!(hs);
        loop {
            let step =
                std::future::poll_fn(|cx| std::task::Poll::Ready(hs.as_mut().poll(cx))).await;
            match step {
                std::task::Poll::Ready(res) => return res,
                std::task::Poll::Pending => pump_server(server, up, down),
            }
        }
    }

    #[test]
    fn a_server_another_ca_signed_is_refused_as_untrusted() {
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build();
        rt.unwrap().block_on(async {
            let (mut srv, _) = server();
            let (_, other_ca) = server();
            let (up, down) = (Rc::new(Pipe::default()), Rc::new(Pipe::default()));
            let e = match handshake(&mut srv, &other_ca, &up, &down).await {
                Err(e) => e,
                Ok(_) => panic!("an untrusted server was taken"),
            };
            assert!(matches!(e, HandshakeError::Untrusted(_)), "{e}");
            assert!(e.to_string().contains("--ca-file"), "{e}");
            // The client told the server why, in an alert.
            let pending: Vec<u8> = up.bytes.borrow_mut().drain(..).collect();
            assert!(!pending.is_empty(), "no alert was sent");
            let _ = srv.read_tls(&mut &pending[..]);
            assert!(srv.process_new_packets().is_err());
        });
    }

    #[test]
    fn a_plain_http_answer_is_named_as_not_tls() {
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build();
        rt.unwrap().block_on(async {
            let (_, ca) = server();
            let path = std::env::temp_dir()
                .join(format!("ringrelay-stream-notls-{}.pem", std::process::id()));
            std::fs::write(&path, ca).unwrap();
            let config = client_config(&Trust::CaFile(path.clone()), false).unwrap();
            let _ = std::fs::remove_file(&path);
            let tls = ClientTls::new(config, "localhost", false).unwrap();
            let (up, down) = (Rc::new(Pipe::default()), Rc::new(Pipe::default()));
            // What a plain relay answers to a ClientHello it cannot parse.
            let answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
            down.bytes.borrow_mut().extend(answer.iter());
            let hs = connect(&tls, PipeRead(down.clone(), 1000), PipeWrite(up.clone()));
            let e = match hs.await {
                Err(e) => e,
                Ok(_) => panic!("a plain answer was taken for TLS"),
            };
            assert!(matches!(e, HandshakeError::NotTls(_)), "{e}");
            assert!(e.to_string().contains("plain ws://"), "{e}");
        });
    }

    #[test]
    fn handshake_then_data_both_ways_through_a_small_buffer() {
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build();
        rt.unwrap().block_on(async {
            let (mut server, ca) = server();
            let (up, down) = (Rc::new(Pipe::default()), Rc::new(Pipe::default()));
            let (r, mut w) = handshake(&mut server, &ca, &up, &down).await.unwrap();
            pump_server(&mut server, &up, &down);
            assert_eq!(w.alpn().as_deref(), Some(&b"http/1.1"[..]));
            // Client to server.
            w.write_all(b"hello over tls").await.unwrap();
            pump_server(&mut server, &up, &down);
            let mut got = [0u8; 64];
            let n = server.reader().read(&mut got).unwrap();
            assert_eq!(&got[..n], b"hello over tls");
            // Server to client: 100 kB, read 7,000 bytes at a time into a 5,000-byte buffer.
            let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
            server.set_buffer_limit(None);
            server.writer().write_all(&big).unwrap();
            pump_server(&mut server, &up, &down);
            let mut r = TlsReader {
                io: PipeRead(down.clone(), 7000),
                ..r
            };
            let mut all = Vec::new();
            while all.len() < big.len() {
                let mut out = Vec::with_capacity(5000);
                match r.read_some(&mut out).await {
                    Ok(Some(_)) => all.extend_from_slice(&out),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(all, big);
            assert!(!r.has_buffered());
            server.send_close_notify();
            pump_server(&mut server, &up, &down);
            // Bytes after the close_notify are dropped, not waited on forever (more than
            // rustls takes in one go, so that some are left over after the close).
            down.bytes
                .borrow_mut()
                .extend(std::iter::repeat_n(23u8, 5000));
            let mut out = Vec::with_capacity(100);
            assert_eq!(r.read(&mut out).await.unwrap(), 0);
            assert!(out.is_empty());
        });
    }
}
