//! The agent's WebSocket connection to the relay: connect and upgrade (client side of the
//! crate's own codec), a reader that waits for readiness before it reads, and one writer task
//! that masks and writes every outgoing frame in the order it was queued.

use super::inbound::{Inbound, WsEvent};
use crate::runtime::socket::Socket;
use crate::ws::client::{
    self as handshake, encode_client_frame, ProtocolError, Rng, UpgradeAnswerError,
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
    #[error("the relay closed the connection during the upgrade")]
    Closed,
    #[error(transparent)]
    Answer(#[from] UpgradeAnswerError),
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

pub struct Link {
    pub socket: Rc<Socket>,
    pub inbound: Inbound,
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

/// Connects to `authority` (resolved now), upgrades on `route`, with `headers` added.
pub async fn connect(
    addr: SocketAddr,
    authority: &str,
    route: &str,
    headers: &[(&str, &str)],
    max_message: usize,
    rng: &mut Rng,
) -> Result<Link, ConnectError> {
    let stream = TcpStream::connect_addr(addr)
        .await
        .map_err(|source| ConnectError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let socket = Rc::new(Socket::new(stream));
    let key = handshake::new_key(rng);
    let request = handshake::upgrade_request(authority, route, &key, headers);
    let (r, _) = socket.write_all(request.into_bytes()).await;
    r.map_err(ConnectError::Io)?;
    let mut buf = Vec::with_capacity(4096);
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_ANSWER_HEAD {
            return Err(UpgradeAnswerError::Bad("answer head too large").into());
        }
        let len = buf.len();
        buf.reserve(4096);
        let (r, b) = socket.read(buf.slice_mut(len..)).await;
        buf = b.into_inner();
        match r {
            Ok(0) => return Err(ConnectError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
    };
    handshake::check_answer(&buf[..head_len], &key)?;
    Ok(Link {
        socket,
        inbound: Inbound::new(max_message, &buf[head_len..]),
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

    /// Reads once more; the caller has waited for readiness. Never cancelled midway, so no
    /// bytes the kernel handed over can be lost.
    pub async fn read_more(&mut self) -> Result<(), ReadError> {
        self.inbound.compact();
        let mut buf = std::mem::take(&mut self.inbound.buf);
        let len = buf.len();
        buf.reserve(READ_CHUNK);
        let (r, b) = self.socket.read(buf.slice_mut(len..)).await;
        self.inbound.buf = b.into_inner();
        match r {
            Ok(0) => Err(ReadError::Eof),
            Ok(_) => Ok(()),
            Err(e) => Err(ReadError::Io(e)),
        }
    }
}

/// Writes what is queued, masked, until a close is written, the queue's senders are all
/// gone, or a write fails (the reader then sees the connection end).
pub async fn write_loop(
    socket: Rc<Socket>,
    mut rx: local_sync::mpsc::bounded::Rx<Out>,
    mut rng: Rng,
) {
    let mut frame = Vec::with_capacity(4096);
    while let Some(out) = rx.recv().await {
        frame.clear();
        let last = matches!(out, Out::Close(_));
        match out {
            Out::Text(t) => encode_client_frame(&mut frame, OpCode::Text, t.as_bytes(), rng.mask()),
            Out::Ping => encode_client_frame(&mut frame, OpCode::Ping, b"", rng.mask()),
            Out::Pong(p) => encode_client_frame(&mut frame, OpCode::Pong, &p, rng.mask()),
            Out::Close(code) => {
                encode_client_frame(&mut frame, OpCode::Close, &code.to_be_bytes(), rng.mask())
            }
        }
        let (r, f) = socket.write_all(frame).await;
        frame = f;
        if r.is_err() {
            socket.abort();
            return;
        }
        if last {
            return;
        }
    }
}
