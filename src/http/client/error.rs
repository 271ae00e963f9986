//! What can be wrong with the bytes of an HTTP/1.1 message, either side's. Typed, so that a
//! caller can answer each kind differently (the load generator counts them, the agent turns
//! them into the status it answers with).

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
