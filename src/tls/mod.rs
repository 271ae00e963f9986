//! TLS with rustls (the ring provider, named explicitly: never the process-wide default).
//!
//! Native TLS for the public listener (docs/tls.md): the certificates and keys read from PEM,
//! the rustls server configuration built from `[tls]` (SNI over several certificates, the
//! oldest version, ALPN `http/1.1`, session tickets that rotate), why a handshake failed, and
//! when each certificate expires. No I/O but reading the files named in the config; the glue
//! that runs a session on a socket is `runtime::tls`, a layer up.
//!
//! `link`: the node-to-node link's mutual TLS with the cluster CA (`cluster.tls_*`).
//!
//! `client`: the relay's own clients (`ringrelay agent`, `ringrelay load`) over `wss://` and
//! `https://`: whom they trust, and their TLS stream over monoio's owned-buffer I/O (which
//! needs only monoio and rustls, so it stays in this layer).
#![forbid(unsafe_code)]

mod admin;
pub mod client;
mod failure;
mod link;
pub mod record;
mod server;
#[cfg(test)]
pub(crate) mod testing;
mod x509;

pub use admin::{admin_config, AdminTlsError};
pub use failure::{Failure, Negotiated};
pub use link::{link_tls, LinkTls, LinkTlsError};
pub use server::{server_config, CertInfo, ServerTls, TlsError};
pub use x509::{client_names, not_after, subject_cn, ClientNames};

use rustls::crypto::ring::kx_group;
use rustls::crypto::CryptoProvider;

/// The ring provider every TLS configuration here is built on, server and client alike, with
/// X25519 as the first key exchange: rustls 0.23's ring default lists P-384 first, so a client
/// sends a P-384 key share and every server (which follows the share it is sent) pays for it:
/// about 0.4 ms more per handshake on a rustls server and 1.6 ms on HAProxy, measured by
/// scripts/tls_bench.sh. Browsers send X25519 first too. rustls marks ring's constructor
/// deprecated only because ring has no post-quantum key exchange.
#[allow(deprecated)]
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..rustls::crypto::ring::default_provider()
    }
}

#[cfg(test)]
mod tests {
    use rustls::{ClientConfig, ClientConnection, NamedGroup, RootCertStore, ServerConfig};
    use rustls::{ServerConnection, SideData};
    use std::sync::Arc;

    /// Moves what `from` has to send into `to`.
    fn pass<A: SideData, B: SideData>(
        from: &mut rustls::ConnectionCommon<A>,
        to: &mut rustls::ConnectionCommon<B>,
    ) {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets().unwrap();
        }
    }

    /// A client built on `provider()` against a server on rustls's own ring default (which
    /// lists P-384 first): the server follows the key share it is sent, so the group agreed on
    /// is the client's first choice.
    #[test]
    fn a_client_on_our_provider_agrees_on_x25519() {
        let (cert, key) = super::testing::self_signed(&["localhost"]);
        #[allow(deprecated)]
        let server_provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(server_provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(super::provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "localhost".try_into().unwrap();
        let mut c = ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..4 {
            pass(&mut c, &mut s);
            pass(&mut s, &mut c);
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        let group = s.negotiated_key_exchange_group().map(|g| g.name());
        assert_eq!(group, Some(NamedGroup::X25519));
    }
}
