//! One HTTP client slot on monoio: sends the prepared request on a new connection (or on the
//! kept-alive one) and reads the whole answer.
//!
//! The buffers are owned by the slot and handed to each read and write (monoio takes them for
//! the duration of the operation). A request cut short by its timeout loses the buffer it had
//! lent; the slot then makes a new one, so a timeout costs an allocation and nothing else.
//!
//! Over `https://` each new connection makes its TLS handshake first (a full one: the load
//! generator keeps no session tickets), and the request and answer go through the TLS halves.

use super::error::HttpError;
use crate::http::client::{Answer, ResponseReader, WireError, MAX_HEAD};
use crate::tls::client::{self as tls, ClientTls, TlsReader, TlsWriter};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;

/// Read buffer per slot: room for the longest head and a read's worth of body behind it.
const READ_BUFFER: usize = 64 << 10;

/// One connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(
        TlsReader<OwnedReadHalf<TcpStream>>,
        TlsWriter<OwnedWriteHalf<TcpStream>>,
    ),
}

impl Conn {
    async fn write_request(&mut self, request: &Rc<Vec<u8>>) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(request.clone()).await.0.map(drop),
            Conn::Tls(_, w) => w.write_all(request).await,
        }
    }

    /// Reads into `buf`'s spare capacity; `Ok(0)` at the end.
    async fn read(&mut self, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
        match self {
            Conn::Plain(s) => {
                let len = buf.len();
                let (r, b) = s.read(buf.slice_mut(len..)).await;
                (r, b.into_inner())
            }
            Conn::Tls(r, _) => {
                let mut buf = buf;
                let res = r.read(&mut buf).await;
                (res, buf)
            }
        }
    }
}

pub struct Slot {
    addr: SocketAddr,
    /// `https://`: TLS on every connection.
    tls: Option<ClientTls>,
    request: Rc<Vec<u8>>,
    head_request: bool,
    keep_alive: bool,
    buf: Vec<u8>,
    /// The connection kept for the next request (`--keep-alive`).
    idle: Option<Conn>,
    /// A connection whose answer is complete and which the server is about to close.
    closing: Option<Conn>,
    /// Connections opened so far.
    pub connections: u64,
}

impl Slot {
    pub fn new(
        addr: SocketAddr,
        tls: Option<ClientTls>,
        request: Rc<Vec<u8>>,
        head_request: bool,
        keep_alive: bool,
    ) -> Slot {
        Slot {
            addr,
            tls,
            request,
            head_request,
            keep_alive,
            buf: Vec::with_capacity(READ_BUFFER),
            idle: None,
            closing: None,
            connections: 0,
        }
    }

    /// Drops whatever connection the slot holds (after an error or a timeout, whose state on
    /// the wire is unknown).
    pub fn reset(&mut self) {
        self.idle = None;
        self.closing = None;
    }

    /// Sends the request and reads the answer. When the connection is not to be reused it is
    /// kept in `closing` for [`Slot::linger`], so that the answer's time does not include
    /// waiting for the server's close.
    pub async fn send(&mut self) -> Result<Answer, HttpError> {
        let mut stream = match self.idle.take() {
            Some(s) => s,
            None => {
                let s = TcpStream::connect_addr(self.addr)
                    .await
                    .map_err(HttpError::Connect)?;
                // One write per request, so this only matters for a large body.
                let _ = s.set_nodelay(true);
                self.connections += 1;
                match &self.tls {
                    None => Conn::Plain(s),
                    Some(t) => {
                        let (r, w) = s.into_split();
                        let (r, w) = tls::connect(t, r, w).await?;
                        Conn::Tls(r, w)
                    }
                }
            }
        };
        stream
            .write_request(&self.request)
            .await
            .map_err(HttpError::Write)?;
        let mut reader = ResponseReader::new(self.head_request);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if buf.capacity() < READ_BUFFER {
            buf.reserve(READ_BUFFER);
        }
        let mut eof = false;
        let answer = loop {
            let (used, done) = reader.feed(&buf, &mut ())?;
            if used == buf.len() {
                buf.clear();
            } else if used > 0 {
                buf.copy_within(used.., 0);
                buf.truncate(buf.len() - used);
            }
            if let Some(a) = done {
                break a;
            }
            if buf.len() > MAX_HEAD {
                // Cannot happen (the reader refuses longer heads), but never read into nothing.
                return Err(WireError::HeadTooLarge(MAX_HEAD).into());
            }
            let (res, b) = stream.read(buf).await;
            buf = b;
            match res {
                Ok(0) => {
                    eof = true;
                    break reader.finish()?;
                }
                Ok(_) => {}
                Err(e) => return Err(HttpError::Read(e)),
            }
        };
        // Bytes after the answer would be an answer to nothing: the connection is not reused.
        let reusable = self.keep_alive && !answer.close && !eof && buf.is_empty();
        self.buf = buf;
        if reusable {
            self.idle = Some(stream);
        } else if !eof {
            self.closing = Some(stream);
        }
        Ok(answer)
    }

    /// Reads until the server closes the connection of the last answer, then closes it. The
    /// server is then the side that closes first, and the TIME_WAIT state stays on its side,
    /// as with any client that asks for `Connection: close`, rather than using up the
    /// client's ephemeral ports. The caller bounds it in time.
    pub async fn linger(&mut self) {
        let Some(mut stream) = self.closing.take() else {
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            buf.clear();
            if buf.capacity() < READ_BUFFER {
                buf.reserve(READ_BUFFER);
            }
            let (res, b) = stream.read(buf).await;
            buf = b;
            if !matches!(res, Ok(n) if n > 0) {
                break;
            }
        }
        buf.clear();
        self.buf = buf;
    }
}
