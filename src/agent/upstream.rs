//! The agent's HTTP/1.1 client for the local API, on monoio, with the crate's incremental
//! response reader (`crate::http::client`). It keeps a few idle connections for the next
//! requests, because a new TCP connection per request costs the local API more than the
//! request itself.
//!
//! Why not monoio-http's client: its response decoder (0.3) reads a body after a HEAD
//! answer's Content-Length (the request hangs), takes a response with neither Content-Length
//! nor chunked as bodiless (the body is lost), has no body limit, and stops at 96 headers.
//! A proxy meets all four; the crate's reader already handles them and is fuzz-tested.
//!
//! A kept connection can be closed by the server at any moment. Before reuse it is checked
//! with a non-blocking peek (a FIN already received shows as end of stream), it is not kept
//! longer than [`IDLE_KEEP`] (under the shortest keep-alive timeouts of common servers), and
//! an idempotent request that finds it dead before any byte of answer is sent once more on a
//! new connection. A non-idempotent one is not resent: it fails with 502, as nginx does.

use super::target::Target;
use crate::http::client::{ResponseReader, ResponseSink, WireError};
use crate::runtime::socket::Socket;
use monoio::buf::IoBufMut;
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// Longest a connection is kept idle for reuse.
pub const IDLE_KEEP: Duration = Duration::from_secs(1);
/// Bytes asked of each read.
const READ_CHUNK: usize = 16 << 10;

/// The target's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub status: u16,
    /// As the target sent them; values that are not UTF-8 are left out (counted below), as
    /// they cannot go into the JSON answer unchanged.
    pub headers: Vec<(String, String)>,
    pub dropped_headers: usize,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to the target: {0}")]
    Connect(std::io::Error),
    #[error("write to the target: {0}")]
    Write(std::io::Error),
    #[error("read from the target: {0}")]
    Read(std::io::Error),
    #[error("the target closed the connection before answering")]
    Closed,
    #[error("the target's answer: {0}")]
    Wire(#[from] WireError),
}

#[derive(Default)]
struct Collect {
    headers: Vec<(String, String)>,
    dropped: usize,
    body: Vec<u8>,
}

impl ResponseSink for Collect {
    fn head(&mut self, _status: u16, headers: &[httparse::Header<'_>]) {
        for h in headers {
            match std::str::from_utf8(h.value) {
                Ok(v) => self.headers.push((h.name.to_string(), v.to_string())),
                Err(_) => self.dropped += 1,
            }
        }
    }

    fn body(&mut self, data: &[u8]) {
        self.body.extend_from_slice(data);
    }
}

/// How one attempt on one connection ended.
enum Attempt {
    /// The answer, and whether the connection may carry another request.
    Done(Fetched, bool),
    /// The connection ended before any byte of answer: a kept connection the server closed.
    Stale(UpstreamError),
    Failed(UpstreamError),
}

pub struct Upstream {
    target: Target,
    max_body: u64,
    max_idle: usize,
    idle: RefCell<Vec<(Socket, Instant)>>,
}

/// Whether the connection is still open and quiet: no FIN, no stray bytes.
fn still_open(s: &Socket) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    let peek =
        socket2::SockRef::from(s).recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
    matches!(peek, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl Upstream {
    pub fn new(target: Target, max_body: usize, max_idle: usize) -> Upstream {
        Upstream {
            target,
            max_body: max_body as u64,
            max_idle,
            idle: RefCell::new(Vec::new()),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn take_idle(&self) -> Option<Socket> {
        let mut idle = self.idle.borrow_mut();
        // Newest last: a connection used recently is the likeliest to be alive.
        while let Some((s, since)) = idle.pop() {
            if since.elapsed() < IDLE_KEEP && still_open(&s) {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, s: Socket) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|(_, since)| since.elapsed() < IDLE_KEEP);
        if idle.len() < self.max_idle {
            idle.push((s, Instant::now()));
        }
    }

    /// Sends `request` (a whole HTTP/1.1 request) and reads the whole answer. The caller
    /// bounds it in time.
    pub async fn fetch(
        &self,
        request: &[u8],
        head_request: bool,
        idempotent: bool,
    ) -> Result<Fetched, UpstreamError> {
        if let Some(s) = self.take_idle() {
            match self.attempt(&s, request, head_request).await {
                Attempt::Done(f, reusable) => {
                    if reusable {
                        self.put_idle(s);
                    }
                    return Ok(f);
                }
                Attempt::Stale(_) if idempotent => {}
                Attempt::Stale(e) | Attempt::Failed(e) => return Err(e),
            }
        }
        let stream = TcpStream::connect_addr(self.target.addr)
            .await
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let s = Socket::new(stream);
        match self.attempt(&s, request, head_request).await {
            Attempt::Done(f, reusable) => {
                if reusable {
                    self.put_idle(s);
                }
                Ok(f)
            }
            Attempt::Stale(e) | Attempt::Failed(e) => Err(e),
        }
    }

    async fn attempt(&self, s: &Socket, request: &[u8], head_request: bool) -> Attempt {
        let (r, _) = s.write_all(request.to_vec()).await;
        if let Err(e) = r {
            return Attempt::Stale(UpstreamError::Write(e));
        }
        let mut reader = ResponseReader::with_body_limit(head_request, self.max_body);
        let mut sink = Collect::default();
        let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut received = false;
        let (answer, eof) = loop {
            match reader.feed(&buf, &mut sink) {
                Ok((used, Some(a))) => {
                    buf.drain(..used);
                    break (a, false);
                }
                Ok((used, None)) => {
                    buf.drain(..used);
                }
                Err(e) => return Attempt::Failed(e.into()),
            }
            let len = buf.len();
            buf.reserve(READ_CHUNK);
            let (r, b) = s.read(buf.slice_mut(len..)).await;
            buf = b.into_inner();
            match r {
                Ok(0) if !received => return Attempt::Stale(UpstreamError::Closed),
                Ok(0) => match reader.finish() {
                    Ok(a) => break (a, true),
                    Err(e) => return Attempt::Failed(e.into()),
                },
                Ok(_) => received = true,
                Err(e) if !received => return Attempt::Stale(UpstreamError::Read(e)),
                Err(e) => return Attempt::Failed(UpstreamError::Read(e)),
            }
        };
        // Bytes after the answer would be an answer to nothing: such a connection is dropped.
        let reusable = !answer.close && !eof && buf.is_empty();
        Attempt::Done(
            Fetched {
                status: answer.status,
                headers: sink.headers,
                dropped_headers: sink.dropped,
                body: sink.body,
            },
            reusable,
        )
    }
}
