//! Why a TLS handshake failed, as counted (`tls_handshake_failed_*`), and what a finished
//! one negotiated, as counted (`tls_version_*`, `tls_cipher_*`).

/// A failed handshake's reason, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client offered nothing the server accepts: cipher suites, key exchange groups or
    /// signature schemes.
    NoSharedCipher,
    /// The client offered only versions older than `tls.min_version` (TLS 1.1 and below are
    /// never accepted).
    Version,
    /// A client certificate was missing or did not verify.
    BadClientCert,
    /// `limits.handshake_timeout` passed first.
    Timeout,
    /// Anything else: a malformed message, a bad record, the client's own alert, or the
    /// connection closed during the handshake.
    Other,
}

impl Failure {
    /// The reason of a rustls error during the handshake.
    pub fn of(e: &rustls::Error) -> Failure {
        use rustls::{Error, PeerIncompatible as P};
        match e {
            Error::PeerIncompatible(
                P::NoCipherSuitesInCommon | P::NoKxGroupsInCommon | P::NoSignatureSchemesInCommon,
            ) => Failure::NoSharedCipher,
            // TLS 1.1 and older have no signature_algorithms extension, so rustls meets its
            // absence before it looks at the version: the same old client either way.
            Error::PeerIncompatible(
                P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled
                | P::SupportedVersionsExtensionRequired
                | P::SignatureAlgorithmsExtensionRequired
                | P::ServerDoesNotSupportTls12Or13,
            ) => Failure::Version,
            Error::NoCertificatesPresented | Error::InvalidCertificate(_) => Failure::BadClientCert,
            _ => Failure::Other,
        }
    }
}

/// What a finished handshake agreed on, for the version and cipher counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub version: Option<rustls::ProtocolVersion>,
    pub suite: Option<rustls::CipherSuite>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{Error, PeerIncompatible};

    #[test]
    fn each_rustls_refusal_lands_on_its_reason() {
        let e = Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon);
        assert_eq!(Failure::of(&e), Failure::NoSharedCipher);
        let e = Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired);
        assert_eq!(Failure::of(&e), Failure::Version);
        assert_eq!(
            Failure::of(&Error::NoCertificatesPresented),
            Failure::BadClientCert
        );
        assert_eq!(Failure::of(&Error::DecryptError), Failure::Other);
    }
}
