//! What can go wrong with one HTTP exchange. Typed, so that the report can count connect
//! failures and timeouts apart from the rest and say which step failed.

use std::time::Duration;

/// Bytes that do not make a well-formed HTTP/1.1 message (either side's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("head longer than {0} bytes")]
    HeadTooLarge(usize),
    #[error("malformed head: {0}")]
    Head(httparse::Error),
    #[error("Content-Length is not one non-negative integer")]
    BadLength,
    #[error("both Content-Length and Transfer-Encoding")]
    Ambiguous,
    #[error("a Transfer-Encoding that does not end in chunked")]
    UnsupportedEncoding,
    #[error("bad chunked body: {0}")]
    Chunk(#[from] crate::http::chunked::ChunkedError),
    #[error("body longer than {0} bytes")]
    BodyTooLarge(u64),
    #[error("status 101 to a request that asked for no upgrade")]
    Upgrade,
    #[error("the connection closed inside the {0}")]
    Truncated(&'static str),
}

/// One request that got no complete answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("write: {0}")]
    Write(std::io::Error),
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("response: {0}")]
    Wire(#[from] WireError),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}
