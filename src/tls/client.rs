//! TLS for the relay's own clients (`ringrelay agent` and `ringrelay load` speaking `wss://`
//! and `https://`): whom they trust, and the name they ask for.
//!
//! * Trust is the system's roots (rustls-native-certs), or only the CA(s) of a PEM file
//!   (`--ca-file`, for a relay with a private CA), or nothing at all (`--insecure`, for tests:
//!   the server's certificate is not checked, only that it signed the handshake with it).
//! * The server name (SNI, and the name the certificate must hold) is the URL's host. An IP
//!   address is checked against the certificate's IP addresses, and sends no SNI (RFC 6066).
//! * ALPN offers `http/1.1` alone: both clients speak HTTP/1.1 and then WebSocket.
//!
//! The stream itself (handshake, then reads and writes on monoio's owned buffers) is in
//! `stream`.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod stream;
pub use stream::{connect, HandshakeError, ReadIo, TlsReader, TlsWriter, WriteIo};

/// Printed (agent: logged) when a client starts with `--insecure`.
pub const INSECURE_WARNING: &str = "--insecure: the server's TLS certificate is NOT verified; \
anyone on the path can read and change this traffic. For tests only: never use it against a \
real relay";

/// Whom a client trusts to vouch for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's root certificates.
    System,
    /// Only the CA certificate(s) in this PEM file.
    CaFile(PathBuf),
    /// Nobody: the certificate is not verified (tests only).
    Insecure,
}

impl Trust {
    /// From the two command-line flags (`--ca-file`, `--insecure`); both at once is an error,
    /// since it is unclear which one the user meant.
    pub fn from_flags(ca_file: Option<&Path>, insecure: bool) -> Result<Trust, ClientTlsError> {
        match (ca_file, insecure) {
            (Some(_), true) => Err(ClientTlsError::Conflict),
            (Some(p), false) => Ok(Trust::CaFile(p.to_path_buf())),
            (None, true) => Ok(Trust::Insecure),
            (None, false) => Ok(Trust::System),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("--ca-file and --insecure together: give one (the CA to trust, or no check at all)")]
    Conflict,
    #[error("--ca-file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("--ca-file {0}: no CA certificate in it (a PEM file of `BEGIN CERTIFICATE` blocks)")]
    CaFileEmpty(String),
    #[error("no system root certificate could be loaded{0}; give the relay's CA with --ca-file")]
    NoSystemRoots(String),
    #[error("{0:?} is not a host name or IP address TLS can check a certificate against")]
    ServerName(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What a client needs to open TLS connections to one server: the configuration (shared by
/// every connection and thread) and the name asked for.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// The certificate is not checked (`--insecure`): reports say so.
    pub insecure: bool,
}

impl ClientTls {
    /// For `host` as written in a URL (a name, an IPv4 address, or an IPv6 one in brackets;
    /// no port).
    pub fn new(
        config: Arc<ClientConfig>,
        host: &str,
        insecure: bool,
    ) -> Result<Self, ClientTlsError> {
        Ok(ClientTls {
            config,
            server_name: server_name(host)?,
            insecure,
        })
    }
}

/// The name TLS asks for and checks: the URL's host, brackets of an IPv6 address removed.
pub fn server_name(host: &str) -> Result<ServerName<'static>, ClientTlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_string()).map_err(|_| ClientTlsError::ServerName(host.into()))
}

/// The rustls client configuration for `trust`: the ring provider, TLS 1.2 and 1.3, ALPN
/// `http/1.1`. `resumption` keeps session tickets for later connections to the same server
/// (the agent's reconnects); the load generator turns it off so that every connection it
/// counts is a full handshake.
pub fn client_config(trust: &Trust, resumption: bool) -> Result<Arc<ClientConfig>, ClientTlsError> {
    let provider = Arc::new(super::provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
            .with_no_client_auth(),
        Trust::System => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(file_roots(path)?)
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// A client configuration that presents a certificate of its own (mutual TLS: the cluster
/// link's carrier, `tls::link`) and trusts only `roots`; ALPN is `alpn` alone, no session
/// resumption (each link is one long connection, opened rarely).
pub fn mutual_config(
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(super::provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file. Every certificate in it must parse, so that a file
/// cut short or of the wrong kind is an error at start, not a refused handshake later.
fn file_roots(path: &Path) -> Result<RootCertStore, ClientTlsError> {
    let shown = path.display().to_string();
    let bad = |reason: String| ClientTlsError::CaFile {
        path: shown.clone(),
        reason,
    };
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| bad(pem_reason(e)))?;
    let mut roots = RootCertStore::empty();
    for cert in iter {
        let cert = cert.map_err(|e| bad(pem_reason(e)))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientTlsError::CaFileEmpty(shown));
    }
    Ok(roots)
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not a PEM file of certificates ({other:?})"),
    }
}

/// The system's roots; those that do not parse are skipped (as browsers do), but none at all
/// is an error.
fn system_roots() -> Result<RootCertStore, ClientTlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(ClientTlsError::NoSystemRoots(why));
    }
    Ok(roots)
}

/// `--insecure`: any certificate is taken, but the handshake's signatures are still checked
/// against the key it carries, so the handshake itself is sound (only who holds the key is
/// unknown).
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        crate::tls::testing::ca("test CA").0.pem()
    }

    fn temp(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "ringrelay-tls-client-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn trust_from_flags() {
        assert_eq!(Trust::from_flags(None, false).unwrap(), Trust::System);
        assert_eq!(Trust::from_flags(None, true).unwrap(), Trust::Insecure);
        let p = Path::new("/x/ca.pem");
        assert_eq!(
            Trust::from_flags(Some(p), false).unwrap(),
            Trust::CaFile(p.into())
        );
        assert!(matches!(
            Trust::from_flags(Some(p), true),
            Err(ClientTlsError::Conflict)
        ));
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("relay.example").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(server_name("bad name").is_err());
        assert!(server_name("").is_err());
    }

    #[test]
    fn a_ca_file_is_read_whole_or_refused() {
        let good = temp("good.pem", &ca_pem());
        let c = client_config(&Trust::CaFile(good.clone()), false).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let two = temp("two.pem", &format!("{}{}", ca_pem(), ca_pem()));
        assert!(client_config(&Trust::CaFile(two.clone()), true).is_ok());
        let empty = temp("empty.pem", "just text\n");
        let e = client_config(&Trust::CaFile(empty.clone()), false).unwrap_err();
        assert!(matches!(e, ClientTlsError::CaFileEmpty(_)), "{e}");
        // A certificate cut in the middle is refused, not skipped.
        let pem = ca_pem();
        let cut = temp("cut.pem", &pem[..pem.len() / 2]);
        let e = client_config(&Trust::CaFile(cut.clone()), false).unwrap_err();
        assert!(e.to_string().contains("cut.pem"), "{e}");
        let e = client_config(&Trust::CaFile("/nonexistent/ca.pem".into()), false).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        for p in [good, two, empty, cut] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn insecure_builds_without_roots() {
        let c = client_config(&Trust::Insecure, false).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
