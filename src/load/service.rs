//! What the load generator's stand-in services (`--mode http-target`, `--mode tunnel-echo`)
//! share: the listener they bind and how starting one can fail.

use crate::runtime::driver::UringUnavailable;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Driver(#[from] UringUnavailable),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// A non-blocking listener on `addr` with a deep backlog (a benchmark opens many
/// connections at once); `Listen` names the address when it cannot be had.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServiceError> {
    use socket2::{Domain, Socket, Type};
    let listen = || -> std::io::Result<std::net::TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        Ok(s.into())
    };
    listen().map_err(|source| ServiceError::Listen { addr, source })
}
