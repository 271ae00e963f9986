//! Certificates and configurations the unit tests of `tls` and `runtime::tls` build on, made
//! once here so each test says only what it varies.

use rustls::pki_types::PrivateKeyDer;
use std::sync::Arc;

/// A self-signed certificate for `names` and its key.
pub fn self_signed(names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert, key)
}

/// A certificate authority named `name` (no subject names of its own), and its key.
pub fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

/// A server configuration on `provider()` for a fresh self-signed `localhost` certificate,
/// without client authentication, and that certificate (for a client to trust).
pub fn localhost_server() -> (rustls::ServerConfig, rcgen::Certificate) {
    let (cert, key) = self_signed(&["localhost"]);
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(super::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (server, cert)
}

/// A client configuration on `provider()` that trusts `cert` alone.
pub fn client_trusting(cert: &rcgen::Certificate) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(super::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}
