//! The agent's WebSocket connection to the relay: connect and upgrade (client side of the
//! crate's own codec), a reader that waits for readiness before it reads, and one writer task
//! that masks and writes every outgoing frame in the order it was queued. Over `wss://` the
//! same happens through the TLS halves of `crate::tls::client`, on the same shared socket: the
//! reader still waits for readiness first, unless TLS already holds bytes a read would return.

use super::inbound::{Inbound, WsEvent};
use crate::runtime::socket::Socket;
use crate::tls::client::{
    self as tls, ClientTls, HandshakeError, ReadIo, TlsReader, TlsWriter, WriteIo,
};
use crate::ws::client::{
    self as handshake, encode_client_frame, MaskSource, ProtocolError, UpgradeAnswerError,
};
use crate::ws::OpCode;
use monoio::buf::IoBufMut;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// Largest upgrade answer head accepted.
const MAX_ANSWER_HEAD: usize = 16 << 10;
/// Bytes asked of each read.
const READ_CHUNK: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve the relay's address: {0}")]
    Resolve(std::io::Error),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o during the upgrade: {0}")]
    Io(std::io::Error),
    #[error("no upgrade answer within {0:?}")]
    Timeout(Duration),
    #[error("no TLS handshake and upgrade answer within {0:?} (is the relay's port a TLS one?)")]
    TlsTimeout(Duration),
    #[error("the relay closed the connection during the upgrade")]
    Closed,
    #[error(transparent)]
    Answer(#[from] UpgradeAnswerError),
    #[error(transparent)]
    Tls(#[from] HandshakeError),
}

impl ConnectError {
    /// A refusal that trying again will not change: the arguments or the token are wrong.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ConnectError::Answer(UpgradeAnswerError::Refused {
                status: 400 | 401 | 403 | 404 | 426,
                ..
            })
        )
    }

    /// The relay's `Retry-After`, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectError::Answer(UpgradeAnswerError::Refused {
                retry_after: Some(s),
                ..
            }) => Some(Duration::from_secs(*s)),
            _ => None,
        }
    }
}

/// What the writer task writes.
#[derive(Debug)]
pub enum Out {
    Text(String),
    Ping,
    Pong(Vec<u8>),
    /// The last frame: nothing is written after it.
    Close(u16),
}

/// The shared socket as the TLS halves' transport: the reader's reads and the writer's
/// writes, each from its own task, as over plain TCP.
pub struct SocketIo(Rc<Socket>);

impl ReadIo for SocketIo {
    async fn read_owned(&mut self, buf: Vec<u8>) -> monoio::BufResult<usize, Vec<u8>> {
        self.0.read(buf).await
    }
}

impl WriteIo for SocketIo {
    async fn write_owned(&mut self, buf: Vec<u8>) -> monoio::BufResult<(), Vec<u8>> {
        self.0.write_all(buf).await
    }
}

/// How the writer task writes: straight to the socket, or through TLS.
pub enum Writer {
    Plain(Rc<Socket>),
    Tls(TlsWriter<SocketIo>),
}

impl Writer {
    async fn write_all(&mut self, bytes: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        match self {
            Writer::Plain(s) => s.write_all(bytes).await,
            Writer::Tls(w) => (w.write_all(&bytes).await, bytes),
        }
    }
}

pub struct Link {
    pub socket: Rc<Socket>,
    pub inbound: Inbound,
    /// `wss://`: where the reader's bytes come from.
    tls: Option<TlsReader<SocketIo>>,
    /// Taken by the writer task once the connection is up.
    pub writer: Option<Writer>,
    /// The key the relay gave this connection in its upgrade answer: only requests that carry
    /// it are the relay's (docs/bridge.md). `None` from a relay that gives none.
    pub relay_key: Option<String>,
}

/// The relay's key for this agent connection, from the upgrade answer's head.
fn relay_key(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head).ok()?;
    let v = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(crate::bridge::KEY_HEADER))?
        .value;
    let v = std::str::from_utf8(v).ok()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// Where to connect and how.
pub struct Dial<'a> {
    pub addr: SocketAddr,
    /// `host:port`, the `Host` header.
    pub authority: &'a str,
    pub route: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub max_message: usize,
    /// `wss://`: TLS first.
    pub tls: Option<&'a ClientTls>,
}

/// Connects to `dial.addr` (TLS first for `wss://`), upgrades on its route with its headers.
pub async fn connect(dial: Dial<'_>) -> Result<Link, ConnectError> {
    let addr = dial.addr;
    let stream = TcpStream::connect_addr(addr)
        .await
        .map_err(|source| ConnectError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let socket = Rc::new(Socket::new(stream));
    let (mut reader, mut writer) = match dial.tls {
        None => (None, Writer::Plain(socket.clone())),
        Some(t) => {
            let (r, w) =
                tls::connect(t, SocketIo(socket.clone()), SocketIo(socket.clone())).await?;
            (Some(r), Writer::Tls(w))
        }
    };
    let key = handshake::new_key();
    let request = handshake::upgrade_request(dial.authority, dial.route, &key, dial.headers);
    let (r, _) = writer.write_all(request.into_bytes()).await;
    r.map_err(ConnectError::Io)?;
    let mut buf = Vec::with_capacity(4096);
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_ANSWER_HEAD {
            return Err(UpgradeAnswerError::Bad("answer head too large").into());
        }
        buf.reserve(4096);
        let r = match &mut reader {
            None => {
                let len = buf.len();
                let (r, b) = socket.read(buf.slice_mut(len..)).await;
                buf = b.into_inner();
                r
            }
            Some(t) => t.read(&mut buf).await,
        };
        match r {
            Ok(0) => return Err(ConnectError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
    };
    handshake::check_answer(&buf[..head_len], &key)?;
    Ok(Link {
        socket,
        inbound: Inbound::new(dial.max_message, &buf[head_len..]),
        tls: reader,
        writer: Some(writer),
        relay_key: relay_key(&buf[..head_len]),
    })
}

/// Why the reader stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the relay closed the connection")]
    Eof,
    #[error("read: {0}")]
    Io(std::io::Error),
    #[error("the relay broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
}

impl Link {
    /// The next event already read, if any.
    pub fn buffered_event(&mut self) -> Result<Option<WsEvent>, ReadError> {
        Ok(self.inbound.next_event()?)
    }

    /// Waits until a read would return at once: the socket is readable, or TLS already holds
    /// what the last read brought. Holds no buffer, so it may be cancelled.
    pub async fn readable(&self) -> std::io::Result<()> {
        if self.tls.as_ref().is_some_and(TlsReader::has_buffered) {
            return Ok(());
        }
        self.socket.readable().await
    }

    /// Reads once more; the caller has waited for readiness. Never cancelled midway, so no
    /// bytes the kernel handed over can be lost. Over TLS one socket read may bring no whole
    /// record: that is no error, the caller just waits again.
    pub async fn read_more(&mut self) -> Result<(), ReadError> {
        self.inbound.compact();
        let mut buf = std::mem::take(&mut self.inbound.buf);
        buf.reserve(READ_CHUNK);
        let r = match &mut self.tls {
            None => {
                let len = buf.len();
                let (r, b) = self.socket.read(buf.slice_mut(len..)).await;
                buf = b.into_inner();
                r.map(Some)
            }
            Some(t) => t.read_some(&mut buf).await,
        };
        self.inbound.buf = buf;
        match r {
            Ok(Some(0)) if self.tls.is_none() => Err(ReadError::Eof),
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ReadError::Eof),
            Err(e) => Err(ReadError::Io(e)),
        }
    }
}

/// Writes what is queued, masked, until a close is written, the queue's senders are all
/// gone, or a write fails (the reader then sees the connection end).
pub async fn write_loop(
    socket: Rc<Socket>,
    mut writer: Writer,
    mut rx: local_sync::mpsc::bounded::Rx<Out>,
    mut masks: MaskSource,
) {
    let mut frame = Vec::with_capacity(4096);
    while let Some(out) = rx.recv().await {
        frame.clear();
        let last = matches!(out, Out::Close(_));
        match out {
            Out::Text(t) => {
                encode_client_frame(&mut frame, OpCode::Text, t.as_bytes(), masks.mask())
            }
            Out::Ping => encode_client_frame(&mut frame, OpCode::Ping, b"", masks.mask()),
            Out::Pong(p) => encode_client_frame(&mut frame, OpCode::Pong, &p, masks.mask()),
            Out::Close(code) => {
                encode_client_frame(&mut frame, OpCode::Close, &code.to_be_bytes(), masks.mask())
            }
        }
        let (r, f) = writer.write_all(frame).await;
        frame = f;
        if r.is_err() {
            socket.abort();
            return;
        }
        if last {
            if let Writer::Tls(w) = &mut writer {
                w.close().await;
            }
            return;
        }
    }
}
