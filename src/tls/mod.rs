//! Native TLS for the public listener (docs/tls.md): the certificates and keys read from PEM,
//! the rustls server configuration built from `[tls]` (SNI over several certificates, the
//! oldest version, ALPN `http/1.1`, session tickets that rotate), why a handshake failed, and
//! when each certificate expires. No I/O but reading the files named in the config; the glue
//! that runs a session on a socket is `runtime::tls`, a layer up.
#![forbid(unsafe_code)]

mod expiry;
mod failure;
mod server;

pub use expiry::not_after;
pub use failure::{Failure, Negotiated};
pub use server::{server_config, CertInfo, ServerTls, TlsError};
