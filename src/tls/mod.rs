//! TLS with rustls (the ring provider, named explicitly: never the process-wide default).
//!
//! Native TLS for the public listener (docs/tls.md): the certificates and keys read from PEM,
//! the rustls server configuration built from `[tls]` (SNI over several certificates, the
//! oldest version, ALPN `http/1.1`, session tickets that rotate), why a handshake failed, and
//! when each certificate expires. No I/O but reading the files named in the config; the glue
//! that runs a session on a socket is `runtime::tls`, a layer up.
//!
//! `client`: the relay's own clients (`ringrelay agent`, `ringrelay load`) over `wss://` and
//! `https://`: whom they trust, and their TLS stream over monoio's owned-buffer I/O (which
//! needs only monoio and rustls, so it stays in this layer).
#![forbid(unsafe_code)]

pub mod client;
mod failure;
mod server;
mod x509;

pub use failure::{Failure, Negotiated};
pub use server::{server_config, CertInfo, ServerTls, TlsError};
pub use x509::{not_after, subject_cn};
