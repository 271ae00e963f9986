//! What can go wrong with one HTTP exchange of the load generator. Typed, so that the report can count connect
//! failures and timeouts apart from the rest and say which step failed.

use crate::http::client::WireError;
use std::time::Duration;

/// One request that got no complete answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect: {0}")]
    Handshake(#[from] crate::tls::client::HandshakeError),
    #[error("write: {0}")]
    Write(std::io::Error),
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("response: {0}")]
    Wire(#[from] WireError),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}
